//! The audit log: an append-only chain of events, each sealed with an HMAC-SHA256, under a key the database never
//! holds, of a canonical encoding of its fields and of the previous event's seal. Changing, removing or reordering
//! any event breaks every seal after it, and only the key's holder can re-seal: whoever owns the table cannot
//! rewrite history and recompute the chain. Cutting off the tail leaves an intact, shorter chain, which only a
//! head kept outside the database reveals: every appended event's sequence and seal go to the `audit` log target,
//! and `otpd audit verify --expect-head SEQ:HASH` checks the chain still reaches it.
//!
//! Chains written before the key existed (link v1, plain SHA-256) keep verifying, but only as far as the operator
//! says they reach (`--accept-unkeyed-through SEQ`, the last event written before the upgrade): anyone who owns the
//! table could rewrite the whole chain with v1 links, so an unkeyed event past that point is a forgery.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::digest::Update;
use sha2::{Digest, Sha256};

use super::{ContactChannel, Evidence};

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
    /// An auditor had the service check the whole chain's links and seals.
    VerifyAuditChain,
    /// An operator set or cleared a supervisor's agent id in the phone system.
    SupervisorAgentSet,
    /// A sign-in: granted with a session, or denied (failures of one person or address within a minute are one
    /// event with their count).
    SignIn,
    /// A session ended by its person (sign-out).
    SignOut,
    /// An operator set a supervisor's phone or e-mail address for sign-in codes.
    SupervisorContactSet,
    /// An admin or operator lifted a person's or an address's sign-in lock.
    SignInLockLifted,
    /// A person enrolled a passkey.
    PasskeyEnrolled,
    /// An operator issued a one-time passkey enrolment code.
    PasskeyEnrolmentCodeIssued,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 15] = [
        AuditAction::LookupCode,
        AuditAction::GetPhoneStatus,
        AuditAction::UnlockPhone,
        AuditAction::ListAuditEvents,
        AuditAction::PhoneLocked,
        AuditAction::SupervisorAdded,
        AuditAction::SupervisorDisabled,
        AuditAction::VerifyAuditChain,
        AuditAction::SupervisorAgentSet,
        AuditAction::SignIn,
        AuditAction::SignOut,
        AuditAction::SupervisorContactSet,
        AuditAction::SignInLockLifted,
        AuditAction::PasskeyEnrolled,
        AuditAction::PasskeyEnrolmentCodeIssued,
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
            AuditAction::VerifyAuditChain => "verify_audit_chain",
            AuditAction::SupervisorAgentSet => "supervisor_agent_set",
            AuditAction::SignIn => "sign_in",
            AuditAction::SignOut => "sign_out",
            AuditAction::SupervisorContactSet => "supervisor_contact_set",
            AuditAction::SignInLockLifted => "sign_in_lock_lifted",
            AuditAction::PasskeyEnrolled => "passkey_enrolled",
            AuditAction::PasskeyEnrolmentCodeIssued => "passkey_enrolment_code_issued",
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
            evidence: None,
            outcome: AuditOutcome::Granted,
            detail: detail.into(),
        }
    }
}

/// Whether the action was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// What a lookup's number rested on: a call the phone system reported, or typed. Sealed with link v3.
    pub evidence: Option<Evidence>,
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
    /// How the hash was computed.
    pub link: ChainLink,
}

/// How an event's hash is computed: the link format, stored with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainLink {
    /// v1: plain SHA-256. Anyone who can write the table can recompute it; kept so that chains written before
    /// v2 still verify.
    Sha256,
    /// v2: HMAC-SHA256 under the [`AuditKey`].
    HmacSha256,
    /// v3: v2 over the event's fields and its evidence (call id, direction, masked number, or typed). Only
    /// events that carry evidence use it, so every event written before keeps its v2 seal.
    HmacSha256Evidence,
}

impl ChainLink {
    /// The version stored in the database.
    pub fn version(self) -> i64 {
        match self {
            ChainLink::Sha256 => 1,
            ChainLink::HmacSha256 => 2,
            ChainLink::HmacSha256Evidence => 3,
        }
    }

    /// The inverse of [`ChainLink::version`].
    pub fn from_version(version: i64) -> Option<Self> {
        [ChainLink::Sha256, ChainLink::HmacSha256, ChainLink::HmacSha256Evidence]
            .into_iter()
            .find(|l| l.version() == version)
    }
}

/// The secret that seals the audit chain: derived from the pepper, or read from `--audit-key-file`. The
/// database never holds it, so whoever owns the table cannot re-seal a rewritten chain.
#[derive(Clone)]
pub struct AuditKey(Arc<SecretSlice<u8>>);

impl AuditKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// Wraps secret bytes of an acceptable length.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < Self::MIN_LEN {
            return Err(format!("must be at least {} bytes, got {}", Self::MIN_LEN, bytes.len()));
        }
        Ok(Self(Arc::new(SecretSlice::from(bytes))))
    }

    fn mac(&self) -> Hmac<Sha256> {
        let Ok(mac) = Hmac::<Sha256>::new_from_slice(self.0.expose_secret()) else {
            unreachable!("HMAC accepts keys of any length");
        };
        mac
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl NewAuditEvent {
    /// Places the event after `prev_hash` at `seq` and seals it with `key`.
    pub fn seal(self, seq: i64, prev_hash: &str, key: &AuditKey) -> AuditEvent {
        let link = if self.evidence.is_some() { ChainLink::HmacSha256Evidence } else { ChainLink::HmacSha256 };
        let hash = chain_hash(link, key, seq, prev_hash, &self);
        AuditEvent { seq, event: self, prev_hash: prev_hash.to_owned(), hash, link }
    }

    /// Seals the event with the unkeyed v1 link, as events were before v2: what anyone with the table could
    /// compute. Only for verifying (and testing against) chains of that time.
    pub fn seal_unkeyed(self, seq: i64, prev_hash: &str) -> AuditEvent {
        let mut h = Sha256::new();
        encode(&mut h, b"otpd-audit-v1", seq, prev_hash, &self);
        let hash = hex::encode(h.finalize());
        AuditEvent { seq, event: self, prev_hash: prev_hash.to_owned(), hash, link: ChainLink::Sha256 }
    }
}

/// The event's seal under `link`.
fn chain_hash(link: ChainLink, key: &AuditKey, seq: i64, prev_hash: &str, e: &NewAuditEvent) -> String {
    match link {
        ChainLink::Sha256 => e.clone().seal_unkeyed(seq, prev_hash).hash,
        ChainLink::HmacSha256 => {
            let mut mac = key.mac();
            encode(&mut mac, b"otpd-audit-v2", seq, prev_hash, e);
            hex::encode(mac.finalize().into_bytes())
        }
        ChainLink::HmacSha256Evidence => {
            let mut mac = key.mac();
            encode(&mut mac, b"otpd-audit-v3", seq, prev_hash, e);
            encode_evidence(&mut mac, e.evidence.as_ref());
            hex::encode(mac.finalize().into_bytes())
        }
    }
}

/// One field of the canonical encoding: length-prefixed, or a marker no length can equal when absent.
fn field(h: &mut impl Update, value: Option<&str>) {
    match value {
        Some(v) => {
            h.update(&(v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        None => h.update(&u64::MAX.to_be_bytes()),
    }
}

/// A canonical encoding: a domain tag, then every field in a fixed order, each length-prefixed (absent fields
/// have their own marker), so no two different events encode alike.
fn encode(h: &mut impl Update, tag: &[u8], seq: i64, prev_hash: &str, e: &NewAuditEvent) {
    h.update(tag);
    h.update(&seq.to_be_bytes());
    field(h, Some(prev_hash));
    field(h, Some(&e.id.to_string()));
    h.update(&e.at.timestamp_millis().to_be_bytes());
    field(h, Some(&e.actor_name));
    field(h, Some(&e.actor_role));
    field(h, Some(e.action.as_str()));
    field(h, e.phone_masked.as_deref());
    field(h, e.phone_key.as_deref());
    field(h, e.ticket_id.as_deref());
    field(h, e.reason.as_deref());
    field(h, e.contact_channel.map(ContactChannel::as_str));
    field(h, e.contact_matched.map(|m| if m { "true" } else { "false" }));
    field(h, Some(e.outcome.as_str()));
    field(h, Some(&e.detail));
}

/// v3's extra fields, after v2's: the evidence kind, then the call's id, direction and masked number (absent for
/// typed evidence). An event without evidence cannot be v3 (the marker differs from any kind's encoding).
fn encode_evidence(h: &mut impl Update, evidence: Option<&Evidence>) {
    field(h, evidence.map(Evidence::kind));
    let (id, direction, number) = match evidence {
        Some(Evidence::Call { call_id, direction, number_masked }) => {
            (Some(call_id.as_str()), Some(direction.as_str()), Some(number_masked.as_str()))
        }
        _ => (None, None, None),
    };
    field(h, id);
    field(h, direction);
    field(h, number);
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

/// An event the operator recorded from the `audit` log target: the chain must still reach it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadPin {
    /// Its sequence number.
    pub seq: i64,
    /// Its hash (hex).
    pub hash: String,
}

impl FromStr for HeadPin {
    type Err = String;

    /// `SEQ:HASH`, as the `audit` log lines give them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not SEQ:HASH (an event's sequence number and 64 hex digits)");
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self { seq, hash: hash.to_ascii_lowercase() })
    }
}

/// What a verification must hold beyond the links and seals themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Events the chain must still reach unchanged.
    pub heads: Vec<HeadPin>,
    /// Events up to this sequence number may carry the unkeyed v1 link (written before keyed chains); 0: none.
    pub unkeyed_through: i64,
}

/// Checks events in sequence order, page by page: feed every event to [`ChainVerifier::check`], then
/// [`ChainVerifier::finish`].
#[derive(Debug)]
pub struct ChainVerifier {
    key: AuditKey,
    expect: Expectations,
    next_seq: i64,
    prev_hash: String,
    unkeyed: i64,
    keyed_seen: bool,
}

impl ChainVerifier {
    /// A verifier for chains sealed with `key`, holding to `expect`.
    pub fn new(key: AuditKey, expect: Expectations) -> Self {
        Self { key, expect, next_seq: 1, prev_hash: GENESIS_HASH.to_owned(), unkeyed: 0, keyed_seen: false }
    }

    /// Checks the next event: its sequence number, its link to the previous one, its seal, and any pin on it.
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
        match event.link {
            ChainLink::HmacSha256 | ChainLink::HmacSha256Evidence => self.keyed_seen = true,
            ChainLink::Sha256 if self.keyed_seen => {
                return Err(fail("sealed without the key after keyed events (re-sealed by someone without it)".into()));
            }
            ChainLink::Sha256 if event.seq > self.expect.unkeyed_through => {
                return Err(fail(format!(
                    "sealed without the key, past the accepted prefix (events up to {}): re-sealed by someone \
                     without the key, unless this installation wrote it before it sealed with one; the upgrade \
                     point is in your logs (the last event before the new version's first `audit` line), never \
                     in this message",
                    self.expect.unkeyed_through
                )));
            }
            ChainLink::Sha256 => self.unkeyed += 1,
        }
        match (event.link, &event.event.evidence) {
            (ChainLink::Sha256 | ChainLink::HmacSha256, Some(_)) => {
                return Err(fail("carries evidence its seal does not cover (added afterwards)".into()));
            }
            (ChainLink::HmacSha256Evidence, None) => {
                return Err(fail("sealed as carrying evidence, but its evidence is gone".into()));
            }
            _ => {}
        }
        let expected = chain_hash(event.link, &self.key, event.seq, &event.prev_hash, &event.event);
        if event.hash != expected {
            return Err(fail("its content does not match its seal (altered, or another audit key)".into()));
        }
        if let Some(pin) = self.expect.heads.iter().find(|p| p.seq == event.seq) {
            if pin.hash != event.hash {
                return Err(fail(format!(
                    "it is not the expected head {}:{} (the chain was rewritten)",
                    pin.seq, pin.hash
                )));
            }
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&event.hash);
        Ok(())
    }

    /// After the last event: every pinned head must have been reached.
    pub fn finish(&self) -> Result<(), ChainError> {
        match self.expect.heads.iter().filter(|p| p.seq >= self.next_seq).min_by_key(|p| p.seq) {
            Some(pin) => Err(ChainError {
                seq: pin.seq,
                id: None,
                problem: format!(
                    "missing: the chain ends at event {}, before the expected head {}:{} (events were removed)",
                    self.checked(),
                    pin.seq,
                    pin.hash
                ),
            }),
            None => Ok(()),
        }
    }

    /// How many events were checked.
    pub fn checked(&self) -> i64 {
        self.next_seq - 1
    }

    /// How many of them carry the unkeyed v1 link (accepted: written before keyed chains).
    pub fn unkeyed(&self) -> i64 {
        self.unkeyed
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
            id: uuid::Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap(),
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
            evidence: None,
            outcome: AuditOutcome::Granted,
            detail: detail.into(),
        }
    }

    #[test]
    fn evidence_is_sealed_with_link_v3_and_cannot_be_changed_added_or_removed() {
        let mut e = event("lookup");
        e.evidence = Some(Evidence::Call {
            call_id: "C-1".into(),
            direction: crate::domain::CallDirection::Inbound,
            number_masked: "+82 10-****-5678".into(),
        });
        let sealed = e.seal(1, GENESIS_HASH, &key());
        assert_eq!(sealed.link, ChainLink::HmacSha256Evidence);
        let verify = |ev: &AuditEvent| ChainVerifier::new(key(), Expectations::default()).check(ev);
        verify(&sealed).unwrap();
        let mut changed = sealed.clone();
        changed.event.evidence = Some(Evidence::Typed);
        assert!(verify(&changed).is_err(), "changed evidence");
        let mut removed = sealed.clone();
        removed.event.evidence = None;
        assert!(verify(&removed).is_err(), "removed evidence");
        let plain = event("lookup").seal(1, GENESIS_HASH, &key());
        assert_eq!(plain.link, ChainLink::HmacSha256, "events without evidence keep v2");
        let mut added = plain.clone();
        added.event.evidence = Some(Evidence::Typed);
        assert!(verify(&added).is_err(), "evidence added to a v2 event");
    }

    fn key() -> AuditKey {
        AuditKey::new(b"an audit key of the test suite".to_vec()).unwrap()
    }

    /// `unkeyed` events sealed with v1, then `keyed` with v2.
    fn chain(unkeyed: usize, keyed: usize) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=unkeyed + keyed)
            .map(|i| {
                let seq = i64::try_from(i).unwrap();
                let e = event(&format!("event {i}"));
                let e = if i <= unkeyed { e.seal_unkeyed(seq, &prev) } else { e.seal(seq, &prev, &key()) };
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    fn verify_with(events: &[AuditEvent], key: AuditKey, heads: Vec<HeadPin>) -> Result<i64, ChainError> {
        let mut v = ChainVerifier::new(key, Expectations { heads, unkeyed_through: 0 });
        for e in events {
            v.check(e)?;
        }
        v.finish()?;
        Ok(v.checked())
    }

    fn verify(events: &[AuditEvent]) -> Result<i64, ChainError> {
        verify_with(events, key(), vec![])
    }

    /// Re-seals `events[from..]` the way someone with the table but not the key can: with the v1 link.
    fn reseal_unkeyed(events: &mut [AuditEvent], from: usize) {
        for i in from..events.len() {
            let prev = if i == 0 { GENESIS_HASH.to_owned() } else { events[i - 1].hash.clone() };
            events[i] = events[i].event.clone().seal_unkeyed(events[i].seq, &prev);
        }
    }

    #[test]
    fn the_v1_link_is_unchanged_so_old_chains_verify() {
        // Computed independently from the v1 encoding (Python hashlib), before v2 existed.
        let e = event("event 1").seal_unkeyed(1, GENESIS_HASH);
        assert_eq!(e.hash, "11d7c2b928431b769a4a0a93f246c64f7202b44f962a962f26cd6503037e25ae");
        let mut v = ChainVerifier::new(key(), Expectations { heads: vec![], unkeyed_through: 3 });
        for e in &chain(3, 0) {
            v.check(e).unwrap();
        }
        assert_eq!(v.unkeyed(), 3);
    }

    #[test]
    fn an_intact_chain_verifies_old_links_first() {
        assert_eq!(verify(&chain(0, 5)), Ok(5));
        let mut v = ChainVerifier::new(key(), Expectations { heads: vec![], unkeyed_through: 2 });
        for e in &chain(2, 3) {
            v.check(e).unwrap();
        }
        assert_eq!((v.checked(), v.unkeyed()), (5, 2));
    }

    #[test]
    fn unkeyed_events_pass_only_as_far_as_the_operator_says() {
        // The owner re-seals the whole chain without the key: no keyed event is left to betray it.
        let mut events = chain(0, 4);
        events[1].event.detail = "nothing happened".into();
        reseal_unkeyed(&mut events, 0);
        let err = verify(&events).unwrap_err();
        assert_eq!(err.seq, 1);
        assert!(err.problem.contains("past the accepted prefix"), "{err}");
        let mut v = ChainVerifier::new(key(), Expectations { heads: vec![], unkeyed_through: 1 });
        v.check(&events[0]).unwrap();
        assert_eq!(v.check(&events[1]).unwrap_err().seq, 2, "past the upgrade point");
    }

    #[test]
    fn any_change_is_found_at_the_changed_event() {
        let mut events = chain(0, 5);
        events[2].event.ticket_id = Some("T-2".into());
        assert_eq!(verify(&events).unwrap_err().seq, 3);

        let mut events = chain(0, 5);
        events[1].event.contact_matched = None;
        assert_eq!(verify(&events).unwrap_err().seq, 2);

        let mut events = chain(0, 5);
        events.remove(3);
        let err = verify(&events).unwrap_err();
        assert_eq!(err.seq, 4);
        assert!(err.problem.contains("missing"));

        // Re-sealing a changed event with the key does not help: the next one no longer links to it.
        let mut events = chain(0, 5);
        let mut changed = events[1].event.clone();
        changed.detail = "nothing happened".into();
        events[1] = changed.seal(2, &events[0].hash, &key());
        assert_eq!(verify(&events).unwrap_err().seq, 3);
    }

    #[test]
    fn a_suffix_resealed_without_the_key_is_found() {
        // Change event 3 and recompute every later hash, as v1 allowed anyone to.
        let mut events = chain(0, 5);
        events[2].event.detail = "nothing happened".into();
        reseal_unkeyed(&mut events, 2);
        let err = verify(&events).unwrap_err();
        assert_eq!(err.seq, 3);
        assert!(err.problem.contains("without the key"), "{err}");

        // Claiming the v2 link for a hash computed without the key fails the seal.
        let mut events = chain(0, 5);
        events[2].event.detail = "nothing happened".into();
        reseal_unkeyed(&mut events, 2);
        for e in &mut events[2..] {
            e.link = ChainLink::HmacSha256;
        }
        assert_eq!(verify(&events).unwrap_err().seq, 3);

        // And another key is not the key.
        let other = AuditKey::new(b"someone else's key, not ours".to_vec()).unwrap();
        assert_eq!(verify_with(&chain(0, 2), other, vec![]).unwrap_err().seq, 1);
    }

    #[test]
    fn a_cut_off_tail_is_found_only_against_a_head_kept_elsewhere() {
        let events = chain(0, 5);
        let head = HeadPin { seq: 5, hash: events[4].hash.clone() };
        assert_eq!(verify(&events[..4]), Ok(4), "a shorter chain is intact by itself");
        let err = verify_with(&events[..4], key(), vec![head.clone()]).unwrap_err();
        assert_eq!(err.seq, 5);
        assert!(err.problem.contains("removed"), "{err}");
        assert_eq!(verify_with(&events, key(), vec![head]), Ok(5));

        let wrong = HeadPin { seq: 3, hash: events[4].hash.clone() };
        assert!(verify_with(&events, key(), vec![wrong]).unwrap_err().problem.contains("rewritten"));
    }

    #[test]
    fn head_pins_parse() {
        let hash = "ab".repeat(32);
        assert_eq!(format!("7:{hash}").parse::<HeadPin>().unwrap(), HeadPin { seq: 7, hash: hash.clone() });
        assert!(format!("0:{hash}").parse::<HeadPin>().is_err());
        assert!("7:abc".parse::<HeadPin>().is_err());
        assert!(hash.parse::<HeadPin>().is_err());
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let mut a = event("x");
        let mut b = event("x");
        a.reason = None;
        b.reason = Some(String::new());
        b.id = a.id;
        assert_ne!(a.seal(1, GENESIS_HASH, &key()).hash, b.seal(1, GENESIS_HASH, &key()).hash);
    }
}
