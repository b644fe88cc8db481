//! Everything a flow can answer other than success. The gRPC layer maps each variant to a status in one
//! exhaustive `match` (`grpc::status`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::hashing::HashError;
use crate::store::StoreError;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, as named in the proto.
    pub field: &'static str,
    /// A machine-readable reason, e.g. `INVALID_PHONE_NUMBER`.
    pub reason: &'static str,
    /// What is wrong, for people.
    pub description: String,
}

/// Why a flow did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed; nothing was changed.
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    /// The device's SIM reports another number than the one being verified.
    #[error("SIM number differs from the number being verified")]
    SimMismatch,
    /// There is no pending verification for the number and purpose.
    #[error("no pending verification")]
    NoPendingVerification,
    /// The verification was already approved.
    #[error("already verified")]
    AlreadyVerified,
    /// Too many failed checks: nothing is sent or checked until `until`.
    #[error("phone number locked")]
    PhoneLocked { until: DateTime<Utc>, retry_after: Duration },
    /// The last SMS went out less than the cooldown ago.
    #[error("resend cooldown")]
    ResendCooldown { retry_at: DateTime<Utc>, retry_after: Duration },
    /// The number's hourly or daily SMS cap is reached.
    #[error("send limit reached")]
    SendLimit { retry_at: DateTime<Utc>, retry_after: Duration },
    /// A front-line limit (per client IP, per destination prefix, per replica) refused the call.
    #[error("rate limited")]
    RateLimited { limit: &'static str, retry_after: Duration },
    /// The pumping guard refused the send: its destination prefix (or country) converts too little for its
    /// volume, or an admin blocked the prefix. Nothing was hashed, stored or sent.
    #[error("pumping guard")]
    PumpingGuard(Box<GuardRefusal>),
    /// The gateway did not take the SMS; the code was revoked.
    #[error("SMS delivery failed")]
    SmsDeliveryFailed { retry_after: Duration },
    /// The caller's deadline leaves (or left) no time to hand an SMS to the provider: refused before anything
    /// was hashed or stored, or the code was withdrawn. Nothing was sent or counted.
    #[error("deadline too short to send a code")]
    DeadlineTooShort { needed: Duration },
    /// The SMS was handed to the provider but the caller's deadline passed before it confirmed: the code is
    /// kept (the SMS may well arrive) and the send counts, like any other.
    #[error("SMS not confirmed before the deadline")]
    DeliveryUnconfirmed,
    /// No valid bearer token.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The token belongs to a supervisor who was disabled (the refusal is audited under their name).
    #[error("supervisor disabled")]
    SupervisorDisabled,
    /// The supervisor call's audit event could not be written, so the call was not done (granted or denied):
    /// nothing a supervisor does goes unrecorded.
    #[error("audit log unavailable")]
    AuditUnavailable,
    /// The supervisor's role does not allow the call.
    #[error("role not allowed")]
    WrongRole,
    /// A lookup for a number other than the one the driver is on.
    #[error("contact number is not the number being verified")]
    ThirdPartyNumber,
    /// The call a lookup names is unknown (never reported, or forgotten a day after its last event).
    #[error("no such call")]
    CallNotFound,
    /// The call is answered by another agent, or the supervisor has no agent id.
    #[error("the call is not yours")]
    CallNotYours,
    /// The call ended longer ago than the grace.
    #[error("the call has ended")]
    CallEnded,
    /// The deployment requires a call (`--lookup-evidence call`) and none was named.
    #[error("a call is required")]
    CallRequired,
    /// The deployment takes no call evidence (`--lookup-evidence typed`) and a call was named.
    #[error("call evidence is off")]
    CallEvidenceOff,
    /// A lookup with no SMS sent recently: the driver must press "send" first.
    #[error("no recent send to look up")]
    NoRecentSend,
    /// A lookup for a locked number.
    #[error("phone number locked")]
    LookupLocked { until: DateTime<Utc> },
    /// The supervisor's lookup quota is used up.
    #[error("lookup quota reached")]
    LookupQuota { retry_after: Duration },
    /// Too many failed sign-ins: the person's or the address's sign-in is locked until `until`.
    #[error("sign-in locked")]
    SignInLocked { until: DateTime<Utc>, retry_after: Duration },
    /// A personal token without a session, for a call that needs one (`--require-second-factor`).
    #[error("a session is required")]
    SessionRequired,
    /// The session ended (signed out, disabled, idle too long or past its end).
    #[error("session expired")]
    SessionExpired,
    /// The sign-in code is wrong.
    #[error("wrong sign-in code")]
    WrongSignInCode { attempts_remaining: u32 },
    /// The sign-in is unknown, someone else's, used or expired: start again.
    #[error("sign-in expired")]
    SignInExpired,
    /// The factor cannot be used here (nothing registered, not configured, the wrong kind of token).
    #[error("factor not available")]
    FactorUnavailable(&'static str),
    /// The mail server did not take the emergency code.
    #[error("e-mail delivery failed")]
    EmailDeliveryFailed,
    /// The passkey's answer proves nothing (a bad signature, another origin or challenge, no user verification, an
    /// unknown credential) or does not parse: a failed sign-in or enrolment.
    #[error("passkey refused")]
    PasskeyRejected,
    /// A passkey ceremony failed on the server's side (a stored state or passkey that does not read back).
    #[error("passkey ceremony failed: {0}")]
    PasskeyFailed(String),
    /// The idempotency key was first used with another request.
    #[error("idempotency key reused for another request")]
    IdempotencyKeyReused,
    /// A call with the same idempotency key is still running (or was taken over by another replica).
    #[error("idempotency key in use")]
    IdempotencyKeyInUse { retry_after: Duration },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The flow's task died.
    #[error("flow task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Why the pumping guard refused a send, with the figures that tripped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRefusal {
    /// `Guarded` (the figures) or `Blocked` (an admin's block).
    pub verdict: crate::domain::guard::Verdict,
    /// When the guard next decides otherwise at the earliest: the next bucket boundary, or the block's end.
    pub retry_at: DateTime<Utc>,
    /// How long from now until then.
    pub retry_after: Duration,
}

impl From<crate::limits::Limited> for ServiceError {
    fn from(limited: crate::limits::Limited) -> Self {
        ServiceError::RateLimited { limit: limited.limit, retry_after: limited.retry_after }
    }
}

/// How long from `now` until `at`, never negative.
pub(crate) fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}
