//! The audit log: an append-only chain of events, each sealed with the SHA-256 of a canonical encoding of its
//! fields and of the previous event's hash, so that changing, removing or reordering any event breaks every
//! hash after it.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::ContactChannel;

/// The previous hash of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The actor of events the service records on its own (lockouts).
pub const SYSTEM_ACTOR: &str = "system";

/// The role of someone running `otpd` on the command line against the database.
pub const OPERATOR_ROLE: &str = "operator";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A supervisor code lookup.
    LookupCode,
    /// A phone status read.
    GetPhoneStatus,
    /// An unlock.
    UnlockPhone,
    /// A read of the audit log.
    ListAuditEvents,
    /// A number was locked by its 10th consecutive wrong code.
    PhoneLocked,
    /// An operator added a supervisor (`otpd supervisors add`).
    SupervisorAdded,
    /// An operator disabled a supervisor.
    SupervisorDisabled,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 7] = [
        AuditAction::LookupCode,
        AuditAction::GetPhoneStatus,
        AuditAction::UnlockPhone,
        AuditAction::ListAuditEvents,
        AuditAction::PhoneLocked,
        AuditAction::SupervisorAdded,
        AuditAction::SupervisorDisabled,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::LookupCode => "lookup_code",
            AuditAction::GetPhoneStatus => "get_phone_status",
            AuditAction::UnlockPhone => "unlock_phone",
            AuditAction::ListAuditEvents => "list_audit_events",
            AuditAction::PhoneLocked => "phone_locked",
            AuditAction::SupervisorAdded => "supervisor_added",
            AuditAction::SupervisorDisabled => "supervisor_disabled",
        }
    }

    /// The inverse of [`AuditAction::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl NewAuditEvent {
    /// An event by the operator running `otpd` on the command line (named by the OS user, when known).
    pub fn by_operator(action: AuditAction, at: DateTime<Utc>, detail: impl Into<String>) -> Self {
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
        Self {
            id: uuid::Uuid::now_v7(),
            at,
            actor_name: format!("cli:{user}"),
            actor_role: OPERATOR_ROLE.to_owned(),
            action,
            phone_masked: None,
            phone_key: None,
            ticket_id: None,
            reason: None,
            contact_channel: None,
            contact_matched: None,
            outcome: AuditOutcome::Granted,
            detail: detail.into(),
        }
    }
}

/// Whether the action was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// Done.
    Granted,
    /// Refused (the detail says why).
    Denied,
}

impl AuditOutcome {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Granted => "granted",
            AuditOutcome::Denied => "denied",
        }
    }

    /// The inverse of [`AuditOutcome::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        [AuditOutcome::Granted, AuditOutcome::Denied].into_iter().find(|o| o.as_str() == s)
    }
}

/// An event to append: everything but its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Identifies the event.
    pub id: uuid::Uuid,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who (a supervisor's name, or `system`).
    pub actor_name: String,
    /// Their role (`system` for the service).
    pub actor_role: String,
    /// What.
    pub action: AuditAction,
    /// The number concerned, masked.
    pub phone_masked: Option<String>,
    /// A keyed hash of the number, so the log can be searched by number without storing it.
    pub phone_key: Option<String>,
    /// The call-centre ticket.
    pub ticket_id: Option<String>,
    /// The stated reason.
    pub reason: Option<String>,
    /// How the team lead was in contact with the driver.
    pub contact_channel: Option<ContactChannel>,
    /// Whether the contact number was the number being verified.
    pub contact_matched: Option<bool>,
    /// Allowed or refused.
    pub outcome: AuditOutcome,
    /// A short explanation (never a code).
    pub detail: String,
}

/// An event in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// 1, 2, 3, … without gaps.
    pub seq: i64,
    /// The event's fields.
    pub event: NewAuditEvent,
    /// The previous event's hash (hex).
    pub prev_hash: String,
    /// This event's hash (hex).
    pub hash: String,
}

impl NewAuditEvent {
    /// Places the event after `prev_hash` at `seq` and computes its hash.
    pub fn seal(self, seq: i64, prev_hash: &str) -> AuditEvent {
        let hash = chain_hash(seq, prev_hash, &self);
        AuditEvent { seq, event: self, prev_hash: prev_hash.to_owned(), hash }
    }
}

/// SHA-256 over a canonical encoding: every field in a fixed order, each length-prefixed (absent fields have
/// their own marker), so no two different events encode alike.
fn chain_hash(seq: i64, prev_hash: &str, e: &NewAuditEvent) -> String {
    fn field(h: &mut Sha256, value: Option<&str>) {
        match value {
            Some(v) => {
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
            None => h.update(u64::MAX.to_be_bytes()),
        }
    }
    let mut h = Sha256::new();
    h.update(b"otpd-audit-v1");
    h.update(seq.to_be_bytes());
    field(&mut h, Some(prev_hash));
    field(&mut h, Some(&e.id.to_string()));
    h.update(e.at.timestamp_millis().to_be_bytes());
    field(&mut h, Some(&e.actor_name));
    field(&mut h, Some(&e.actor_role));
    field(&mut h, Some(e.action.as_str()));
    field(&mut h, e.phone_masked.as_deref());
    field(&mut h, e.phone_key.as_deref());
    field(&mut h, e.ticket_id.as_deref());
    field(&mut h, e.reason.as_deref());
    field(&mut h, e.contact_channel.map(ContactChannel::as_str));
    field(&mut h, e.contact_matched.map(|m| if m { "true" } else { "false" }));
    field(&mut h, Some(e.outcome.as_str()));
    field(&mut h, Some(&e.detail));
    hex::encode(h.finalize())
}

/// Where a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    /// The first bad event's sequence number.
    pub seq: i64,
    /// Its id, if the event exists.
    pub id: Option<uuid::Uuid>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit event {}", self.seq)?;
        if let Some(id) = self.id {
            write!(f, " ({id})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Checks events in sequence order, page by page: feed every event to [`ChainVerifier::check`].
#[derive(Debug)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { next_seq: 1, prev_hash: GENESIS_HASH.to_owned() }
    }
}

impl ChainVerifier {
    /// Checks the next event: its sequence number, its link to the previous one, and its own hash.
    pub fn check(&mut self, event: &AuditEvent) -> Result<(), ChainError> {
        let fail = |problem: String| ChainError { seq: event.seq, id: Some(event.event.id), problem };
        if event.seq != self.next_seq {
            return Err(ChainError {
                seq: self.next_seq,
                id: None,
                problem: format!("missing: the next event found is {}", event.seq),
            });
        }
        if event.prev_hash != self.prev_hash {
            return Err(fail("its previous-hash does not match the event before it".into()));
        }
        let expected = chain_hash(event.seq, &event.prev_hash, &event.event);
        if event.hash != expected {
            return Err(fail("its content does not match its hash (altered)".into()));
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&event.hash);
        Ok(())
    }

    /// How many events were checked.
    pub fn checked(&self) -> i64 {
        self.next_seq - 1
    }

    /// The hash of the last event checked.
    pub fn head(&self) -> &str {
        &self.prev_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail: &str) -> NewAuditEvent {
        NewAuditEvent {
            id: uuid::Uuid::now_v7(),
            at: DateTime::from_timestamp_millis(1_800_000_000_000).unwrap(),
            actor_name: "kim".into(),
            actor_role: "supervisor".into(),
            action: AuditAction::LookupCode,
            phone_masked: Some("+82 10-****-5678".into()),
            phone_key: Some("ab".into()),
            ticket_id: Some("T-1".into()),
            reason: Some("strong_complaint".into()),
            contact_channel: Some(ContactChannel::InboundCall),
            contact_matched: Some(true),
            outcome: AuditOutcome::Granted,
            detail: detail.into(),
        }
    }

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|i| {
                let e = event(&format!("event {i}")).seal(i64::try_from(i).unwrap(), &prev);
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> Result<i64, ChainError> {
        let mut v = ChainVerifier::default();
        for e in events {
            v.check(e)?;
        }
        Ok(v.checked())
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
    }

    #[test]
    fn any_change_is_found_at_the_changed_event() {
        let mut events = chain(5);
        events[2].event.ticket_id = Some("T-2".into());
        assert_eq!(verify(&events).unwrap_err().seq, 3);

        let mut events = chain(5);
        events[1].event.contact_matched = None;
        assert_eq!(verify(&events).unwrap_err().seq, 2);

        let mut events = chain(5);
        events.remove(3);
        let err = verify(&events).unwrap_err();
        assert_eq!(err.seq, 4);
        assert!(err.problem.contains("missing"));

        // Re-sealing a changed event does not help: the next one no longer links to it.
        let mut events = chain(5);
        let mut changed = events[1].event.clone();
        changed.detail = "nothing happened".into();
        events[1] = changed.seal(2, &events[0].hash);
        assert_eq!(verify(&events).unwrap_err().seq, 3);
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let mut a = event("x");
        let mut b = event("x");
        a.reason = None;
        b.reason = Some(String::new());
        b.id = a.id;
        assert_ne!(a.seal(1, GENESIS_HASH).hash, b.seal(1, GENESIS_HASH).hash);
    }
}
