//! What the supervisor service and the audit log need from the store. Every audit append takes the chain's
//! head under a lock that serialises all appenders (a PostgreSQL advisory lock; SQLite's write lock), so
//! concurrent writers, on any replica, can never fork the chain.

use chrono::{DateTime, TimeDelta, Utc};

use super::{NewCode, StoreResult};
use crate::domain::audit::{AuditAction, AuditEvent, AuditKey, NewAuditEvent};
use crate::domain::{
    Actor, AgentId, Call, CallEvent, CallId, Channel, PhoneNumber, Purpose, Role, SupervisorName, TokenKind,
    VerificationId,
};

/// A supervisor as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorRecord {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When they were added.
    pub created_at: DateTime<Utc>,
    /// When they were disabled, if they were.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Their agent id in the phone system.
    pub agent_id: Option<String>,
}

/// The outcome of [`SupervisionStore::set_agent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChange {
    /// Set (or cleared), and the event appended in the same transaction.
    Set(Box<AuditEvent>),
    /// No supervisor has that name; nothing changed.
    NoSuchSupervisor,
    /// Another supervisor holds the agent id; nothing changed.
    Taken {
        /// Who holds it.
        by: String,
    },
}

/// Whose a bearer token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    /// The supervisor.
    pub actor: Actor,
    /// Set once they were disabled: the token no longer works, but whose it was is still known, so the refusal
    /// can be audited under their name.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// The verification a lookup would issue a code for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupCandidate {
    /// The pending verification.
    pub id: VerificationId,
    /// Its purpose.
    pub purpose: Purpose,
    /// When its last SMS was sent.
    pub last_sent_at: DateTime<Utc>,
    /// The salt its codes share.
    pub salt: Option<crate::hashing::CodeSalt>,
}

/// What a lookup needs to know about the number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupTarget {
    /// Set while the number is locked.
    pub locked_until: Option<DateTime<Utc>>,
    /// The pending verification of the purpose (or the most recently sent one, if no purpose was named).
    pub pending: Option<LookupCandidate>,
}

/// How many codes one supervisor may obtain per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupQuota {
    /// Granted lookups allowed in the window.
    pub max: u32,
    /// The rolling window.
    pub window: TimeDelta,
}

/// The outcome of [`SupervisionStore::issue_supervisor_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupIssue {
    /// The code was recorded and the granted event appended, in one transaction.
    Issued { expires_at: DateTime<Utc>, event: AuditEvent },
    /// The supervisor's quota is used up; a denied event was appended instead and no code recorded.
    QuotaExceeded { retry_at: DateTime<Utc>, event: AuditEvent },
    /// The number was locked meanwhile (a 10th wrong code); a denied event was appended, no code recorded.
    Locked { until: DateTime<Utc>, event: AuditEvent },
    /// The verification stopped being pending meanwhile (approved, replaced or purged); a denied event was
    /// appended, no code recorded.
    NotPending { event: AuditEvent },
}

/// One code of a verification, for the status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeStatus {
    /// When it was issued.
    pub sent_at: DateTime<Utc>,
    /// SMS or supervisor.
    pub channel: Channel,
    /// `pending`, `delivered` or `failed`.
    pub delivery: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Revoked (a failed delivery).
    pub revoked: bool,
    /// The provider's message id.
    pub provider_message_id: Option<String>,
    /// The channel that carried it (`alimtalk`, `sms`), when one did.
    pub delivered_by: Option<String>,
    /// Each channel's attempt, in order, with the carrier's receipt.
    pub attempts: Vec<crate::domain::AttemptStatus>,
}

/// A pending verification, for the status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationStatus {
    /// Its id.
    pub id: VerificationId,
    /// Its purpose.
    pub purpose: Purpose,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last code expires.
    pub expires_at: DateTime<Utc>,
    /// Set once approved (the status view keeps approved ones for a day).
    pub approved_at: Option<DateTime<Utc>>,
    /// Its codes, oldest first.
    pub codes: Vec<CodeStatus>,
}

/// A notice sent after a granted lookup (never a code), for the status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeStatus {
    /// When it was handed to the channel (or refused).
    pub sent_at: DateTime<Utc>,
    /// `accepted`, `refused`, `failed`, `unconfirmed` or `not_sent` (a limit or an open breaker kept it back).
    pub outcome: String,
    /// The provider's API that answered.
    pub gateway: Option<String>,
    /// The provider's message id.
    pub provider_id: Option<String>,
}

/// "Why can't I log in?"
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhoneStatus {
    /// Lookup notices sent to the number in the last day, oldest first.
    pub notices: Vec<NoticeStatus>,
    /// Consecutive failures counting toward the lockout (0 once a lock has expired).
    pub failed_attempts: u32,
    /// Set while locked.
    pub locked_until: Option<DateTime<Utc>>,
    /// Pending verifications, newest first.
    pub pending: Vec<VerificationStatus>,
    /// SMS sent in the last hour.
    pub sms_last_hour: u32,
    /// SMS sent in the last day.
    pub sms_last_day: u32,
}

/// What an unlock changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unlocked {
    /// The number was locked.
    pub was_locked: bool,
    /// The failure count before.
    pub failures_cleared: u32,
}

/// Which audit events to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Actor name.
    pub actor: Option<String>,
    /// Keyed hash of the number.
    pub phone_key: Option<String>,
    /// Action.
    pub action: Option<AuditAction>,
    /// Only events with a smaller sequence number (paging).
    pub before_seq: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Persistence for supervisors, lookups and the audit log.
#[async_trait::async_trait]
pub trait SupervisionStore: Send + Sync + 'static {
    /// Adds a supervisor (a person, or a script's `service` token) with the hash of their token, added at the event's time, and appends `event` sealed with `key`, in one
    /// transaction. Returns the event, or None (and appends nothing) if the name is taken.
    async fn add_supervisor(
        &self,
        name: &SupervisorName,
        role: Role,
        kind: TokenKind,
        token_hash: &str,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>>;

    /// Every supervisor, by name.
    async fn list_supervisors(&self) -> StoreResult<Vec<SupervisorRecord>>;

    /// Disables a supervisor (their token and every session of theirs stop working at once) and appends `event` sealed with `key`, in one
    /// transaction. Returns the event, or None (and appends nothing) if there is no such name.
    async fn disable_supervisor(
        &self,
        name: &SupervisorName,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>>;

    /// The supervisor whose token hashes to `token_hash`, enabled or not.
    async fn token_holder(&self, token_hash: &str) -> StoreResult<Option<TokenHolder>>;

    /// The number's lock and the verification a lookup would issue a code for.
    async fn lookup_target(
        &self,
        phone: &PhoneNumber,
        purpose: Option<Purpose>,
        now: DateTime<Utc>,
    ) -> StoreResult<LookupTarget>;

    /// In one transaction: checks the actor's quota of granted lookups, that the number is still unlocked and
    /// the verification still pending; records `code` for `verification` and appends `event` (granted), or
    /// appends `event` as denied (with the reason as its detail) and records nothing. If the append fails,
    /// nothing is recorded.
    async fn issue_supervisor_code(
        &self,
        verification: VerificationId,
        code: NewCode,
        quota: LookupQuota,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<LookupIssue>;

    /// Appends one event, sealed with `key`.
    async fn append_audit(&self, event: NewAuditEvent, key: &AuditKey) -> StoreResult<AuditEvent>;

    /// The number's state for a supervisor.
    async fn phone_status(&self, phone: &PhoneNumber, now: DateTime<Utc>) -> StoreResult<PhoneStatus>;

    /// Clears the number's lock and failure count and appends `event` (its detail completed with what changed),
    /// in one transaction.
    async fn unlock_phone(
        &self,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(Unlocked, AuditEvent)>;

    /// Events matching `filter`, newest first.
    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;

    /// Up to `limit` events with a sequence number above `after`, oldest first (for verifying the chain).
    async fn audit_chain(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// Gives supervisor `name` the phone system's agent id `agent` (None: clears it) and appends `event`, in one
    /// transaction. An agent id belongs to at most one supervisor.
    async fn set_agent(
        &self,
        name: &SupervisorName,
        agent: Option<&AgentId>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<AgentChange>;

    /// Applies one phone-system event received at `now`, so that the call is in the state its latest event
    /// says: a later `answered` moves the call to its agent (a transfer), the first `ended` ends it for good, an
    /// older or repeated event changes nothing. Returns whether anything changed.
    async fn record_call_event(&self, event: &CallEvent, now: DateTime<Utc>) -> StoreResult<bool>;

    /// The call, as its events left it.
    async fn call(&self, id: &CallId) -> StoreResult<Option<Call>>;

    /// The agent's answered calls that have not ended, oldest first, each with its number's latest send.
    async fn agent_calls(&self, agent: &AgentId) -> StoreResult<Vec<AgentCall>>;
}

/// A call on the line, with when its number was last sent a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCall {
    /// The call.
    pub call: Call,
    /// The newest `last_sent_at` of the number's pending verifications: what a lookup by this call would rest
    /// on (if it is within the lookup window). None before the driver pressed send.
    pub last_sent_at: Option<DateTime<Utc>>,
}

/// The detail an over-quota lookup is recorded with.
pub fn quota_detail(quota: LookupQuota) -> String {
    format!("lookup quota reached: {} codes per {} minutes", quota.max, quota.window.num_minutes())
}

/// The detail of a lookup refused because the number was locked meanwhile.
pub fn locked_detail(until: DateTime<Utc>) -> String {
    format!("number locked until {}", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The detail of a lookup whose verification stopped being pending meanwhile.
pub const NOT_PENDING_DETAIL: &str = "the verification stopped being pending during the lookup";

/// Completes an unlock event's detail with what changed.
pub fn unlock_detail(detail: &str, unlocked: Unlocked) -> String {
    format!("{detail} (was locked: {}, failures cleared: {})", unlocked.was_locked, unlocked.failures_cleared)
}
