//! What team leads' sign-in needs from the store: the person's contact for codes, sessions, the sign-ins in
//! progress, passkeys and the failure counts that lock sign-in. Everything that must hold across replicas (a
//! code used once, a session ended everywhere at once, the failure count and its lock, the codes-per-hour cap)
//! is one statement or one transaction in the shared database.

use chrono::{DateTime, TimeDelta, Utc};

use super::StoreResult;
use crate::domain::audit::{AuditEvent, AuditKey, NewAuditEvent};
use crate::domain::{Actor, SecondFactor, SupervisorName};

/// A person as sign-in sees them: who, and where codes may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInAccount {
    /// The token's holder.
    pub actor: Actor,
    /// Set once they were disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Their registered mobile number (E.164).
    pub phone: Option<String>,
    /// Their emergency e-mail address.
    pub email: Option<String>,
    /// Passkeys enrolled.
    pub passkeys: u32,
    /// The latest sign-in lock in force on the person or on the address asked about, if any.
    pub locked_until: Option<DateTime<Utc>>,
}

/// What a challenge is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A sign-in with a factor.
    SignIn(SecondFactor),
    /// A passkey enrolment in progress.
    PasskeyEnrolment,
    /// A one-time enrolment code an operator issued.
    EnrolmentCode,
}

impl ChallengeKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::SignIn(factor) => factor.as_str(),
            ChallengeKind::PasskeyEnrolment => "passkey_enrolment",
            ChallengeKind::EnrolmentCode => "enrolment_code",
        }
    }

    /// The inverse of [`ChallengeKind::as_str`].
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "passkey_enrolment" => Some(ChallengeKind::PasskeyEnrolment),
            "enrolment_code" => Some(ChallengeKind::EnrolmentCode),
            other => SecondFactor::from_db(other).map(ChallengeKind::SignIn),
        }
    }
}

/// A challenge to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChallenge {
    /// Its id.
    pub id: uuid::Uuid,
    /// Whose.
    pub supervisor: String,
    /// What for.
    pub kind: ChallengeKind,
    /// The keyed hash of its code, for code factors.
    pub secret_hash: Option<String>,
    /// A passkey ceremony's state.
    pub state: Option<String>,
    /// Now.
    pub created_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// How often codes may go to one person by one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLimits {
    /// Between two codes.
    pub cooldown: TimeDelta,
    /// Codes per rolling hour.
    pub per_hour: u32,
}

/// The outcome of [`SignInStore::start_challenge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeStart {
    /// Stored.
    Started,
    /// Too soon after the last code; try again at.
    Cooldown(DateTime<Utc>),
    /// The hour's codes are used up; try again at.
    Capped(DateTime<Utc>),
}

/// A stored challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Its id.
    pub id: uuid::Uuid,
    /// Whose.
    pub supervisor: String,
    /// What for.
    pub kind: ChallengeKind,
    /// The keyed hash of its code.
    pub secret_hash: Option<String>,
    /// A passkey ceremony's state.
    pub state: Option<String>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Set once used (or spent by wrong answers).
    pub used_at: Option<DateTime<Utc>>,
}

/// A session to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Its id.
    pub id: uuid::Uuid,
    /// Whose.
    pub supervisor: String,
    /// The SHA-256 of its token.
    pub token_hash: String,
    /// The factor it was opened with.
    pub factor: SecondFactor,
    /// Now.
    pub created_at: DateTime<Utc>,
    /// When it ends unless used.
    pub idle_until: DateTime<Utc>,
    /// When it ends in any case.
    pub expires_at: DateTime<Utc>,
}

/// What a session token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// A live session of an enabled person (with [`Actor::session`] set); its idle deadline was just moved.
    Live(Box<Actor>),
    /// The session exists but is over (signed out, disabled, idle or past its end).
    Ended,
    /// No session has this token.
    Unknown,
}

/// Why a session ended before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Its person signed out.
    SignedOut,
}

impl SessionEnd {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::SignedOut => "signed_out",
        }
    }
}

/// A failed sign-in, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Set when the subject is locked (by this failure or before).
    pub locked_until: Option<DateTime<Utc>>,
    /// This failure locked the subject.
    pub newly_locked: bool,
    /// Failures to record in the audit log now (this one and those held back since the last event); 0: this
    /// one is held back, an event for this subject was written less than a minute ago.
    pub to_audit: u32,
}

/// How failures are counted and locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failures that lock.
    pub lock_after: u32,
    /// The lock's length, and the window failures are counted in.
    pub lock_for: TimeDelta,
    /// At most one audit event per subject per this long.
    pub audit_every: TimeDelta,
}

/// A stored passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// Its id.
    pub id: uuid::Uuid,
    /// The credential id (base64url).
    pub credential_id: String,
    /// The relying-party library's record (JSON).
    pub passkey: String,
    /// The person's name for it.
    pub label: String,
    /// When enrolled.
    pub created_at: DateTime<Utc>,
    /// When last used.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Persistence for sign-in.
#[async_trait::async_trait]
pub trait SignInStore: Send + Sync + 'static {
    /// The person whose personal token hashes to `token_hash`, enabled or not, with the latest lock in force at
    /// `now` on them or on the guard subject `address` (one statement: a bare token costs no more than before).
    async fn sign_in_account(
        &self,
        token_hash: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SignInAccount>>;

    /// Sets a supervisor's phone (E.164) and e-mail address (each: None leaves it, Some(None) clears it) and
    /// appends `event`, in one transaction. None if there is no such supervisor.
    async fn set_contact(
        &self,
        name: &SupervisorName,
        phone: Option<Option<&str>>,
        email: Option<Option<&str>>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>>;

    /// The lock in force on `subject` at `now`, if any.
    async fn sign_in_lock(&self, subject: &str, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>>;

    /// Counts a failed sign-in of `subject` at `now`, locking it at the policy's count, and says how many
    /// failures are due in the audit log (one statement: replicas count together).
    async fn record_failure(&self, subject: &str, now: DateTime<Utc>, policy: FailurePolicy) -> StoreResult<Failure>;

    /// Forgets `subject`'s failures after a good sign-in; returns those not yet in the audit log.
    async fn clear_failures(&self, subject: &str) -> StoreResult<u32>;

    /// Lifts `subject`'s lock and appends `event`, in one transaction; whether there was a lock in force.
    async fn lift_sign_in_lock(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(bool, AuditEvent)>;

    /// Stores a challenge; for codes, under `limits` counted over the person's codes of the same kind (in one
    /// transaction, under a lock on the person's row where the backend needs one).
    async fn start_challenge(&self, challenge: NewChallenge, limits: Option<CodeLimits>)
    -> StoreResult<ChallengeStart>;

    /// A challenge, whatever its state.
    async fn challenge(&self, id: uuid::Uuid) -> StoreResult<Option<Challenge>>;

    /// Counts a wrong answer to an unused challenge, spending it at `max` wrong answers; returns the wrong
    /// answers so far.
    async fn wrong_answer(&self, id: uuid::Uuid, max: u32, now: DateTime<Utc>) -> StoreResult<u32>;

    /// Spends an unused, unexpired challenge (at most once, on any replica); whether this call spent it.
    async fn spend_challenge(&self, id: uuid::Uuid, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Spends the challenge, opens `session` and appends `event`, in one transaction; None (nothing written)
    /// if the challenge was spent meanwhile.
    async fn open_session(
        &self,
        challenge: uuid::Uuid,
        session: NewSession,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>>;

    /// The session a token opens at `now`, moving its idle deadline to `now + idle` (never past its end).
    async fn use_session(&self, token_hash: &str, now: DateTime<Utc>, idle: TimeDelta) -> StoreResult<SessionState>;

    /// Ends a live session and appends `event`, in one transaction; None if it was not live.
    async fn end_session(
        &self,
        id: uuid::Uuid,
        now: DateTime<Utc>,
        end: SessionEnd,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>>;

    /// The person's passkeys.
    async fn passkeys(&self, supervisor: &str) -> StoreResult<Vec<PasskeyRecord>>;

    /// Spends the enrolment challenge, stores the passkey and appends `event`, in one transaction; None if the
    /// challenge was spent meanwhile or the credential is enrolled already.
    async fn add_passkey(
        &self,
        challenge: uuid::Uuid,
        supervisor: &str,
        passkey: PasskeyRecord,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>>;

    /// Records a passkey's use (its updated counter, when the library gave one).
    async fn passkey_used(&self, credential_id: &str, passkey: Option<&str>, now: DateTime<Utc>) -> StoreResult<()>;
}

/// The guard subject of a person.
pub fn person_subject(name: &str) -> String {
    format!("person:{name}")
}

/// The guard subject of a client address.
pub fn address_subject(address: std::net::IpAddr) -> String {
    format!("address:{address}")
}
