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
use std::net::IpAddr;
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
    /// An admin exempted or blocked a destination prefix from the pumping guard, or cleared that.
    PrefixGuardSet,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 16] = [
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
        AuditAction::PrefixGuardSet,
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
            AuditAction::PrefixGuardSet => "prefix_guard_set",
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
            access: None,
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
    /// Where the call came from (a supervisor's calls; None for the service's and operators' events). Sealed
    /// with link v4.
    pub access: Option<AccessContext>,
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
    /// v4: v3 (its evidence absent or present) and then where the call came from ([`AccessContext`]: client
    /// address, client certificate, session, user agent). Only events that carry an access context use it.
    HmacSha256Access,
}

impl ChainLink {
    /// The version stored in the database.
    pub fn version(self) -> i64 {
        match self {
            ChainLink::Sha256 => 1,
            ChainLink::HmacSha256 => 2,
            ChainLink::HmacSha256Evidence => 3,
            ChainLink::HmacSha256Access => 4,
        }
    }

    /// The inverse of [`ChainLink::version`].
    pub fn from_version(version: i64) -> Option<Self> {
        [ChainLink::Sha256, ChainLink::HmacSha256, ChainLink::HmacSha256Evidence, ChainLink::HmacSha256Access]
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
        let link = match (&self.access, &self.evidence) {
            (Some(_), _) => ChainLink::HmacSha256Access,
            (None, Some(_)) => ChainLink::HmacSha256Evidence,
            (None, None) => ChainLink::HmacSha256,
        };
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
        ChainLink::HmacSha256Access => {
            let mut mac = key.mac();
            encode(&mut mac, b"otpd-audit-v4", seq, prev_hash, e);
            encode_evidence(&mut mac, e.evidence.as_ref());
            encode_access(&mut mac, e.access.as_ref());
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

/// v4's extra fields, after v3's: the client address, the client certificate's subject and SHA-256, the session
/// id and the user agent, each absent or present (an event without a context cannot be v4: the verifier refuses
/// it before the seal is computed).
fn encode_access(h: &mut impl Update, access: Option<&AccessContext>) {
    let address = access.and_then(|a| a.client_address).map(|ip| ip.to_string());
    field(h, address.as_deref());
    field(h, access.and_then(AccessContext::certificate).map(|c| c.subject.as_str()));
    field(h, access.and_then(AccessContext::certificate).map(|c| c.sha256.as_str()));
    field(h, access.and_then(AccessContext::session_id));
    field(h, access.and_then(AccessContext::user_agent));
}

/// The longest user agent kept, in characters (browsers send 100 to 300).
pub const USER_AGENT_MAX: usize = 256;
/// The longest certificate subject kept, in characters.
pub const SUBJECT_MAX: usize = 512;
/// The longest session id kept, in characters.
pub const SESSION_ID_MAX: usize = 128;

/// `text` as stored: control characters (which could forge lines in a log or a terminal) replaced by U+FFFD,
/// surrounding white space trimmed, and cut at `max` characters.
fn bounded(text: &str, max: usize) -> String {
    text.trim().chars().map(|c| if c.is_control() { char::REPLACEMENT_CHARACTER } else { c }).take(max).collect()
}

/// A client certificate presented over mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    subject: String,
    sha256: String,
}

impl ClientCertificate {
    /// The certificate whose DER encoding is `der` and whose subject reads `subject` (RFC 4514 style, e.g.
    /// `CN=team-lead-kim`).
    pub fn new(subject: &str, der: &[u8]) -> Self {
        Self { subject: bounded(subject, SUBJECT_MAX), sha256: hex::encode(Sha256::digest(der)) }
    }

    /// The subject's distinguished name.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The SHA-256 fingerprint of the certificate's DER encoding, 64 lower-case hex digits (what
    /// `openssl x509 -noout -fingerprint -sha256` prints, without the colons).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// Where a supervisor's call came from (개인정보의 안전성 확보조치 기준 제8조: the access record holds where the
/// access came from): built once per call at the edge, carried on the caller's [`super::Actor`], recorded in
/// every event of the call and sealed with link v4. Every field is bounded and free of control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessContext {
    client_address: Option<IpAddr>,
    certificate: Option<ClientCertificate>,
    session_id: Option<String>,
    user_agent: Option<String>,
}

impl AccessContext {
    /// A call from `client_address` (the TCP peer, or the address a trusted proxy forwarded).
    pub fn from_address(client_address: Option<IpAddr>) -> Self {
        Self { client_address: client_address.map(|ip| ip.to_canonical()), ..Self::default() }
    }

    /// With the client certificate the TLS handshake verified.
    pub fn with_certificate(mut self, certificate: ClientCertificate) -> Self {
        self.certificate = Some(certificate);
        self
    }

    /// With the sign-in session the call was made under.
    pub fn with_session_id(mut self, session_id: &str) -> Self {
        self.session_id = Some(bounded(session_id, SESSION_ID_MAX)).filter(|s| !s.is_empty());
        self
    }

    /// With the browser's user agent (console calls), cut at [`USER_AGENT_MAX`] characters.
    pub fn with_user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = Some(bounded(user_agent, USER_AGENT_MAX)).filter(|s| !s.is_empty());
        self
    }

    /// A context as stored; refuses any value the builders could not have produced (a row edited by hand).
    pub fn restore(
        client_address: Option<&str>,
        certificate: Option<(&str, &str)>,
        session_id: Option<&str>,
        user_agent: Option<&str>,
    ) -> Result<Self, String> {
        let clean = |what: &str, value: Option<&str>, max| match value {
            Some(v) if v.is_empty() || bounded(v, max) != v => Err(format!("{what} `{}`", v.escape_debug())),
            v => Ok(v.map(str::to_owned)),
        };
        let client_address = match client_address {
            Some(a) => Some(a.parse::<IpAddr>().map_err(|_| format!("client address `{}`", a.escape_debug()))?),
            None => None,
        };
        let certificate = match certificate {
            Some((subject, sha256)) => {
                if sha256.len() != 64 || !sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(format!("certificate fingerprint `{}`", sha256.escape_debug()));
                }
                let subject = clean("certificate subject", Some(subject), SUBJECT_MAX)?.unwrap_or_default();
                Some(ClientCertificate { subject, sha256: sha256.to_owned() })
            }
            None => None,
        };
        Ok(Self {
            client_address,
            certificate,
            session_id: clean("session id", session_id, SESSION_ID_MAX)?,
            user_agent: clean("user agent", user_agent, USER_AGENT_MAX)?,
        })
    }

    /// The client's address.
    pub fn client_address(&self) -> Option<IpAddr> {
        self.client_address
    }

    /// The client certificate, under mutual TLS.
    pub fn certificate(&self) -> Option<&ClientCertificate> {
        self.certificate.as_ref()
    }

    /// The sign-in session's id.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The browser's user agent (console calls only).
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// One line for logs and listings: `203.0.113.9 cert CN=kim (sha256 ab12…) session S ua "…"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ip) = self.client_address {
            parts.push(ip.to_string());
        }
        if let Some(c) = &self.certificate {
            parts.push(format!("cert {} (sha256 {})", c.subject, c.sha256));
        }
        if let Some(s) = &self.session_id {
            parts.push(format!("session {s}"));
        }
        if let Some(ua) = &self.user_agent {
            parts.push(format!("ua {ua:?}"));
        }
        parts.join(" ")
    }
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
            ChainLink::HmacSha256 | ChainLink::HmacSha256Evidence | ChainLink::HmacSha256Access => {
                self.keyed_seen = true;
            }
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
        match (event.link, &event.event.access) {
            (ChainLink::Sha256 | ChainLink::HmacSha256 | ChainLink::HmacSha256Evidence, Some(_)) => {
                return Err(fail(
                    "carries where the call came from, which its seal does not cover (added afterwards)".into(),
                ));
            }
            (ChainLink::HmacSha256Access, None) => {
                return Err(fail("sealed as carrying where the call came from, but that is gone".into()));
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
            access: None,
            outcome: AuditOutcome::Granted,
            detail: detail.into(),
        }
    }

    fn access() -> AccessContext {
        AccessContext::from_address(Some("203.0.113.9".parse().unwrap()))
            .with_certificate(ClientCertificate::new("CN=team-lead-kim", b"a certificate's DER"))
            .with_session_id("s-1")
            .with_user_agent("Mozilla/5.0 (X11; Linux x86_64) Chrome/140")
    }

    #[test]
    fn the_access_context_is_sealed_with_link_v4_and_no_field_can_be_changed_added_or_removed() {
        let verify = |ev: &AuditEvent| ChainVerifier::new(key(), Expectations::default()).check(ev);
        let mut e = event("lookup");
        e.access = Some(access());
        let sealed = e.seal(1, GENESIS_HASH, &key());
        assert_eq!(sealed.link, ChainLink::HmacSha256Access);
        assert_eq!(sealed.link.version(), 4);
        verify(&sealed).unwrap();

        let full = access();
        let other_cert = ClientCertificate::new("CN=team-lead-kim", b"another certificate's DER");
        let other_subject = ClientCertificate::new("CN=team-lead-lee", b"a certificate's DER");
        let without_cert = AccessContext::from_address(full.client_address())
            .with_session_id("s-1")
            .with_user_agent(full.user_agent().unwrap());
        let changes: Vec<(&str, AccessContext)> = vec![
            (
                "address changed",
                AccessContext { client_address: Some("203.0.113.10".parse().unwrap()), ..full.clone() },
            ),
            ("address removed", AccessContext { client_address: None, ..full.clone() }),
            ("certificate changed", full.clone().with_certificate(other_cert)),
            ("subject changed", full.clone().with_certificate(other_subject)),
            ("certificate removed", without_cert),
            ("session changed", full.clone().with_session_id("s-2")),
            ("session removed", AccessContext { session_id: None, ..full.clone() }),
            ("user agent changed", full.clone().with_user_agent("curl/8.0")),
            ("user agent removed", AccessContext { user_agent: None, ..full.clone() }),
        ];
        for (what, changed) in changes {
            let mut tampered = sealed.clone();
            tampered.event.access = Some(changed);
            assert!(verify(&tampered).is_err(), "{what}");
        }
        // Each field added to a context that lacked it.
        let bare = AccessContext::from_address(None).with_user_agent("ua");
        let mut e = event("lookup");
        e.access = Some(bare.clone());
        let sealed_bare = e.seal(1, GENESIS_HASH, &key());
        verify(&sealed_bare).unwrap();
        for (what, added) in [
            ("address added", AccessContext::from_address(Some("192.0.2.1".parse().unwrap())).with_user_agent("ua")),
            ("certificate added", bare.clone().with_certificate(ClientCertificate::new("CN=x", b"der"))),
            ("session added", bare.clone().with_session_id("s-1")),
        ] {
            let mut tampered = sealed_bare.clone();
            tampered.event.access = Some(added);
            assert!(verify(&tampered).is_err(), "{what}");
        }
        // The whole context removed, or added to an event sealed without one.
        let mut removed = sealed.clone();
        removed.event.access = None;
        assert!(verify(&removed).unwrap_err().problem.contains("gone"));
        let plain = event("lookup").seal(1, GENESIS_HASH, &key());
        assert_eq!(plain.link, ChainLink::HmacSha256, "events without a context keep v2");
        let mut added = plain.clone();
        added.event.access = Some(access());
        assert!(verify(&added).unwrap_err().problem.contains("added afterwards"));
        // Relabelling a v4 event as v3 does not help either.
        let mut relabelled = sealed.clone();
        relabelled.link = ChainLink::HmacSha256Evidence;
        assert!(verify(&relabelled).is_err());
    }

    #[test]
    fn v4_seals_evidence_and_context_together_and_old_links_keep_verifying() {
        let mut e = event("lookup");
        e.evidence = Some(Evidence::Typed);
        e.access = Some(access());
        let sealed = e.seal(1, GENESIS_HASH, &key());
        assert_eq!(sealed.link, ChainLink::HmacSha256Access);
        ChainVerifier::new(key(), Expectations::default()).check(&sealed).unwrap();
        let mut changed = sealed.clone();
        changed.event.evidence = None;
        assert!(ChainVerifier::new(key(), Expectations::default()).check(&changed).is_err(), "evidence removed");
        // A chain of v1, v2, v3 and v4 links verifies in one pass.
        let mut prev = GENESIS_HASH.to_owned();
        let mut v = ChainVerifier::new(key(), Expectations { heads: vec![], unkeyed_through: 1 });
        for seq in 1..=4 {
            let mut e = event(&format!("event {seq}"));
            if seq >= 3 {
                e.evidence = Some(Evidence::Typed);
            }
            if seq == 4 {
                e.access = Some(access());
            }
            let sealed = if seq == 1 { e.seal_unkeyed(seq, &prev) } else { e.seal(seq, &prev, &key()) };
            assert_eq!(sealed.link.version(), seq);
            v.check(&sealed).unwrap();
            prev.clone_from(&sealed.hash);
        }
    }

    #[test]
    fn context_fields_are_bounded_and_free_of_control_characters() {
        let long = "x".repeat(10_000);
        let ctx = AccessContext::from_address(Some("::ffff:127.0.0.1".parse().unwrap()))
            .with_user_agent(&format!("evil\r\nX-Forged: 1\u{1b}[31m{long}"))
            .with_session_id(&long);
        assert_eq!(ctx.client_address(), Some("127.0.0.1".parse().unwrap()), "IPv4-mapped shown as IPv4");
        let ua = ctx.user_agent().unwrap();
        assert_eq!(ua.chars().count(), USER_AGENT_MAX);
        assert!(!ua.chars().any(char::is_control), "{ua:?}");
        assert!(ua.starts_with("evil\u{fffd}\u{fffd}X-Forged: 1\u{fffd}[31m"), "{ua:?}");
        assert_eq!(ctx.session_id().unwrap().len(), SESSION_ID_MAX);
        assert_eq!(AccessContext::default().with_user_agent("  ").user_agent(), None);
        let cert = ClientCertificate::new("CN=kim\n", b"der");
        assert_eq!(cert.subject(), "CN=kim");
        assert_eq!(cert.sha256(), hex::encode(Sha256::digest(b"der")));

        // What the builders produce restores; what they could not have produced is refused.
        let full = access();
        let c = full.certificate().unwrap();
        let restored = AccessContext::restore(
            Some("203.0.113.9"),
            Some((c.subject(), c.sha256())),
            full.session_id(),
            full.user_agent(),
        );
        assert_eq!(restored, Ok(full));
        assert!(AccessContext::restore(Some("nowhere"), None, None, None).is_err());
        assert!(AccessContext::restore(None, Some(("CN=x", "abc")), None, None).is_err());
        assert!(AccessContext::restore(None, None, None, Some("a\u{7}b")).is_err());
        assert!(AccessContext::restore(None, None, Some(""), None).is_err());
        assert!(AccessContext::restore(None, None, None, Some(&long)).is_err());
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
