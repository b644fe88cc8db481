//! Domain types: each can only hold a valid value, so the layers below never re-check input.

pub mod audit;
mod call;
mod code;
mod delivery;
pub mod guard;
mod phone;
mod policy;
mod purpose;
mod receipt_reason;
mod signin;
mod supervision;
mod test_numbers;

pub use call::{
    AgentId, CALL_CLOCK_SKEW, Call, CallDirection, CallEvent, CallEventKind, CallId, Evidence, EvidencePolicy,
};
pub use code::{AllowedAppHashes, AppHash, CodeFormatError, CodeLength, OtpCode};
pub use delivery::{
    AttemptOutcome, AttemptReason, AttemptStatus, DeliveryAttempt, DeliveryChannel, DeliveryRoute, DeliveryRoutes,
    Demotion, PastAttempt, RECEIPT_CLOCK_SKEW, Receipt, ReceiptOutcome, RouteProvider, route_label, route_order,
};
pub use phone::{AllowedCountries, PhoneError, PhoneNumber};
pub use policy::{Policy, SendAllowance, SendHistory, SendRefusal, SentSms};
pub use purpose::Purpose;
pub use receipt_reason::{
    FailureKind, GENERIC_REASONS, Reason as ReceiptReason, blocked_as_spam, korean_time, receipt_reason, undeliverable,
};
pub use signin::{EmailAddress, SecondFactor, SignInPolicy, TokenKind};
pub use supervision::{Actor, ContactChannel, DisabledActor, Reason, Role, SupervisorName, TicketId};
pub use test_numbers::TestNumbers;

/// Identifies one verification (a phone number and purpose with its codes); a UUIDv7 so ids sort by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerificationId(pub uuid::Uuid);

impl VerificationId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for VerificationId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for VerificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a code reached the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// An SMS from the configured sender.
    Sms,
    /// Read out by a team lead (supervisor lookup).
    Supervisor,
}

impl Channel {
    /// How many codes of this channel may be live in one verification at once; issuing one more revokes the
    /// oldest. Every wrong guess is compared with every live code, so this bounds an attacker's chance per
    /// lockout period at `max_failed_attempts × (3 + 1)` in 10^6 for 6 digits, not × the number of resends and
    /// lookups. Three SMS codes keep a late-arriving first SMS working after two resends.
    pub fn live_codes(self) -> u32 {
        match self {
            Channel::Sms => 3,
            Channel::Supervisor => 1,
        }
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Supervisor => "supervisor",
        }
    }
}
