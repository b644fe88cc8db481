//! Persistence. Two backends behind one [`Store`] trait: SQLite (embedded default, one instance) and PostgreSQL
//! (any number of replicas). Every limit that must hold across replicas is one atomic statement or one
//! transaction here, never process memory. The same conformance tests run against both.
//!
//! ## One store, two dialects
//! Every operation is written once, in `sql/`, generic over the sqlx [`sqlx::Database`]: [`SqlStore<DB>`] is the
//! [`Store`] and the [`SupervisionStore`]; [`PgStore`] and [`SqliteStore`] are `SqlStore<Postgres>` and
//! `SqlStore<Sqlite>`. Row mapping, binding, transactions and the statements' order are shared; so is the SQL text
//! wherever both backends accept it. `postgres.rs` and `sqlite.rs` hold only connection options and their
//! [`Dialect`], which holds what really differs, and nothing else:
//!
//! - `BEGIN_WRITE`: how a writing transaction opens. SQLite needs `BEGIN IMMEDIATE` (take the single write lock
//!   up front, so concurrent writers queue instead of failing to upgrade a read lock); PostgreSQL a plain `BEGIN`,
//!   as it serialises with row locks.
//! - `SQL` ([`Statements`]): the statements whose text differs, each binding the same parameters in the same
//!   order: the locks only PostgreSQL takes (`SELECT … FOR UPDATE` on the number's row before an approval, a
//!   withdrawal, a lookup or an unlock; `pg_advisory_xact_lock` before an audit append; `FOR UPDATE SKIP LOCKED`
//!   in the purge), `None` or absent in SQLite, whose write lock already serialises; `GREATEST` / `MAX`;
//!   `COUNT(*) FILTER` / `SUM`; and PostgreSQL's casts where it cannot type a bare `$n IS NULL` or a `UNION` of
//!   literals. A statement not listed there is shared.
//! - `Time` / `Uuid` with their conversions: how a timestamp (`timestamptz`; SQLite integer milliseconds, the
//!   finest both store exactly) and a UUID (`uuid`; SQLite text) are stored. Operations bind and read them as
//!   `Db(DateTime<Utc>)` / `Db(Uuid)` (`Ts`, `Uid`), encoded once through these associated types. The upsert
//!   (`ON CONFLICT … DO UPDATE … RETURNING`) and `$1` placeholders are the same in both, so they are not here.
//! - `migrator()`: the backend's migrations (`migrations/{postgres,sqlite}/`).
//! - `rows_affected()`: sqlx's query results have no backend-independent accessor for it.
//!
//! The sqlx bounds the generic code needs (an executor on `&mut DB::Connection`, arguments, row indexes, and
//! each column type's `Type`/`Encode`/`Decode`) are one `where` clause on each of the three generic impls
//! (`Store`, `SupervisionStore`, and the shared steps): Rust implies a trait's supertraits and its associated
//! types' bounds, but not its other `where` clauses (rust-lang/rust#20671), so they cannot live in `Dialect`
//! itself; `Column` names one type's part. A new table adds its operations to `sql/` once, and its SQL text to
//! `Statements` only where a dialect needs its own.

mod dialect;
pub mod guard;
pub mod idempotency;
mod metered;
mod postgres;
pub mod signin;
mod sql;
mod sqlite;
mod supervision;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::{
    AttemptOutcome, AttemptReason, AttemptStatus, Channel, DeliveryAttempt, DeliveryChannel, PastAttempt, PhoneNumber,
    Policy, Purpose, Receipt, ReceiptOutcome, SendAllowance, SendHistory, SendRefusal, SentSms, VerificationId,
};
use crate::hashing::{CodeHash, CodeSalt};

pub use dialect::{Dialect, Statements};
pub use guard::GuardStore;
pub use idempotency::KeyStore;
pub use metered::metered;
pub use postgres::PgStore;
pub use signin::SignInStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;
pub use supervision::{
    AgentCall, AgentChange, AuditFilter, CodeStatus, LookupCandidate, LookupIssue, LookupQuota, LookupTarget,
    NoticeStatus, PhoneStatus, SupervisionStore, SupervisorRecord, TokenHolder, Unlocked, VerificationStatus,
    locked_detail,
};

/// A store operation failed. The text is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or has no free connection: the caller may retry.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A statement failed.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// Migrations could not be applied.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds a value the code does not know (a newer schema, or manual edits).
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The error's kind, as `otpd_database_errors_total` counts it.
    pub fn kind(&self) -> crate::metrics::DbErrorKind {
        use crate::metrics::DbErrorKind;
        match self {
            StoreError::Unavailable(_) => DbErrorKind::Unavailable,
            StoreError::Query(_) => DbErrorKind::Query,
            StoreError::Migrate(_) => DbErrorKind::Migrate,
            StoreError::Corrupt(_) => DbErrorKind::Corrupt,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(db) if is_transient(db.as_ref()) => StoreError::Unavailable(e),
            sqlx::Error::ColumnDecode { source, .. } if source.is::<dialect::CorruptValue>() => {
                StoreError::Corrupt(source.to_string())
            }
            // A connection closed (a proxy or server going down) before it answered TLS's SSLRequest: sqlx reads
            // no byte and reports the zero it did not read as a protocol error. It is an outage, not a bug.
            sqlx::Error::Protocol(message) if message.starts_with("unexpected response from SSLRequest: 0x00") => {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Query(e),
        }
    }
}

/// Errors that mean "no usable database right now", which a retry can clear: PostgreSQL serialization
/// failures and deadlocks (class 40), connection exceptions (08), a login refused (28) or a database that is
/// gone (3D000) when the pool opens a connection, insufficient resources (53) and shutdowns (57P); SQLite's
/// BUSY and LOCKED.
fn is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        return ["40", "08", "28", "3D", "53", "57P"].iter().any(|class| code.starts_with(class));
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let primary = db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
        return matches!(primary, Some(5 | 6));
    }
    false
}

/// What [`Store::approve`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// This check consumed the verification.
    Approved,
    /// Another check approved it first.
    AlreadyApproved,
    /// It was replaced by a newer verification (a send after all its codes had expired) or purged.
    Replaced,
}

/// Results of store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A code to record for a number and purpose.
#[derive(Debug)]
pub struct NewCode {
    /// The destination.
    pub phone: PhoneNumber,
    /// What the verification is for.
    pub purpose: Purpose,
    /// The code's argon2id hash.
    pub hash: CodeHash,
    /// How it reaches the driver.
    pub channel: Channel,
    /// When it is issued.
    pub now: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Identifies one code row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeId(pub i64);

/// A code recorded by [`Store::issue_code`].
#[derive(Debug, Clone)]
pub struct IssuedCode {
    /// Its row.
    pub code_id: CodeId,
    /// The pending verification it belongs to (the same across resends).
    pub verification_id: VerificationId,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// What the send policy allows after this send.
    pub allowance: SendAllowance,
}

/// What the gateway did with a code's SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Handed over; the provider's message id if it gave one.
    Delivered { message_id: Option<String> },
    /// Not delivered: the code is revoked and can never approve.
    Failed,
}

/// What a send needs to know before it hashes a code.
#[derive(Debug, Clone, Default)]
pub struct SendState {
    /// The number's lock and recent SMS, for the send policy.
    pub history: SendHistory,
    /// The salt of the pending verification the code would join (None: a new verification, a fresh salt).
    pub salt: Option<CodeSalt>,
}

/// A pending verification and the hashes of its live codes (not expired, not revoked), newest first.
#[derive(Debug, Clone)]
pub struct PendingVerification {
    /// The verification.
    pub id: VerificationId,
    /// Hashes of the codes that may still approve it.
    pub live_codes: Vec<CodeHash>,
}

/// The codes that may approve a verification, from its unrevoked, unexpired codes newest first: at most
/// [`Channel::live_codes`] of each channel. Issuing codes revokes the older ones too; this holds the bound also
/// while a newer SMS is still being delivered.
fn live_codes(newest_first: impl IntoIterator<Item = (Channel, CodeHash)>) -> Vec<CodeHash> {
    let mut taken = std::collections::HashMap::<Channel, u32>::new();
    newest_first
        .into_iter()
        .filter(|(channel, _)| {
            let n = taken.entry(*channel).or_default();
            *n += 1;
            *n <= channel.live_codes()
        })
        .map(|(_, hash)| hash)
        .collect()
}

/// What a check needs to know about a number and purpose before it reserves an attempt.
#[derive(Debug, Clone, Default)]
pub struct CheckState {
    /// Set while the number is locked.
    pub locked_until: Option<DateTime<Utc>>,
    /// Consecutive failures counting toward the lockout (0 once a lock has expired).
    pub failed_attempts: u32,
    /// The pending verification for the purpose, if any.
    pub pending: Option<PendingVerification>,
    /// When the purpose's latest verification was approved, if there is no pending one.
    pub last_approved_at: Option<DateTime<Utc>>,
}

/// One row of the single statement that reads a check's state: the number's count and lock, its pending
/// verification for the purpose, one of that verification's live codes (newest first), and, when nothing is
/// pending, when the purpose was last approved.
struct CheckRow {
    failed_attempts: i64,
    locked_until: Option<DateTime<Utc>>,
    pending: Option<VerificationId>,
    code: Option<(String, String)>,
    last_approved_at: Option<DateTime<Utc>>,
}

impl CheckState {
    /// Assembles the state from its rows; none when the store has never heard of the number.
    fn from_rows(rows: Vec<CheckRow>, now: DateTime<Utc>) -> StoreResult<Self> {
        let Some(first) = rows.first() else {
            return Ok(Self::default());
        };
        let lock_expired = first.locked_until.is_some_and(|until| until <= now);
        let mut state = Self {
            locked_until: first.locked_until.filter(|until| *until > now),
            failed_attempts: if lock_expired { 0 } else { count_u32(first.failed_attempts) },
            pending: None,
            last_approved_at: first.last_approved_at,
        };
        if let Some(id) = first.pending {
            let codes = rows
                .into_iter()
                .filter_map(|row| row.code)
                .map(|(channel, hash)| Ok((self::channel(&channel)?, CodeHash(hash))))
                .collect::<StoreResult<Vec<_>>>()?;
            state.pending = Some(PendingVerification { id, live_codes: live_codes(codes) });
        }
        Ok(state)
    }
}

impl SendState {
    /// Assembles the state from the single statement that reads what a send needs: `(kind, time, text)` rows for
    /// the number's lock, each SMS of the last day, and the newest code of the pending verification (for its salt),
    /// whatever the backend's time type.
    fn from_rows<T>(
        rows: Vec<(String, Option<T>, Option<String>)>,
        time: impl Fn(T) -> StoreResult<DateTime<Utc>>,
    ) -> StoreResult<Self> {
        let mut state = Self::default();
        for (kind, at, text) in rows {
            match (kind.as_str(), at, text) {
                ("lock", Some(at), _) => state.history.locked_until = Some(time(at)?),
                ("sms", Some(at), Some(delivery)) => {
                    state.history.sent.push(SentSms { at: time(at)?, failed: delivery == "failed" });
                }
                ("newest", _, Some(hash)) => state.salt = CodeHash(hash).salt(),
                // Nothing pending: the subquery's row is NULL.
                ("newest", _, None) => {}
                (kind, ..) => return Err(StoreError::Corrupt(format!("send history row `{kind}`"))),
            }
        }
        Ok(state)
    }
}

/// The outcome of reserving a check attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt may be evaluated. `attempt` is the consecutive failure count including it; `locks_until` is
    /// set when it is the last one allowed (the number is locked unless it matches); `epoch` counts the resets of
    /// the number's failure count, so a release can tell whether a reset has already erased this attempt.
    Granted { attempt: u32, locks_until: Option<DateTime<Utc>>, epoch: i64 },
    /// The number is locked; nothing may be evaluated.
    Locked { until: DateTime<Utc> },
    /// The store has no state for the number (nothing was ever sent to it).
    Unknown,
}

/// The persistence the service needs. Implementations must make each method atomic across processes.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;

    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// The number's lock and SMS of the last 24 hours, and the salt of the pending verification for `purpose`:
    /// a cheap pre-check before a code is hashed.
    async fn send_history(&self, phone: &PhoneNumber, purpose: Purpose, now: DateTime<Utc>) -> StoreResult<SendState>;

    /// In one transaction that serialises sends to the number: re-checks `policy` against the history, then
    /// creates or extends the pending verification for the purpose and records the code.
    async fn issue_code(&self, code: NewCode, policy: &Policy) -> StoreResult<Result<IssuedCode, SendRefusal>>;

    /// Records what the gateway did with a code's SMS. A failure revokes the code; a delivery revokes the
    /// verification's SMS codes beyond the newest [`Channel::live_codes`].
    ///
    /// In the same transaction, records each channel's attempt (`attempts`, in order) and, from the accepted one,
    /// the channel that carried the code: one commit for the send's whole outcome.
    async fn record_delivery(
        &self,
        code: CodeId,
        outcome: DeliveryOutcome,
        attempts: &[DeliveryAttempt],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Takes back a code whose SMS was never handed to the provider, as if the send had not happened: the code
    /// row is deleted (so it counts toward no cap), and its verification is deleted if it has no other code or
    /// else keeps the expiry and last send time of the codes it has left.
    async fn withdraw_code(&self, code: CodeId) -> StoreResult<()>;

    /// What a check of `purpose` for the number needs: the lock, the count, the live code hashes.
    async fn check_state(&self, phone: &PhoneNumber, purpose: Purpose, now: DateTime<Utc>) -> StoreResult<CheckState>;

    /// Atomically counts one more failed attempt before it is evaluated, unless the number is locked; the
    /// attempt that reaches `policy.max_failed_attempts` sets the lock. An expired lock restarts the count.
    async fn reserve_attempt(
        &self,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> StoreResult<Reservation>;

    /// Consumes the verification if it is still pending and resets the number's failure count, in one
    /// transaction that locks the number's row first (the same order as `issue_code`).
    async fn approve(
        &self,
        verification: VerificationId,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<Approval>;

    /// Gives back a reservation whose check was not a failure (its code matched a verification consumed
    /// meanwhile, or the service failed). Only undoes what that reservation did: nothing if the count has been
    /// reset since (the reset erased it already), and a lock only if this reservation set it.
    async fn release_attempt(
        &self,
        phone: &PhoneNumber,
        reservation: Reservation,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Deletes codes and finished verifications older than `before` (the send caps look back one day), then
    /// forgets numbers with nothing left to remember at `now` (no failures, no lock in force, no verification or
    /// code, untouched since `before`), in batches of [`PURGE_BATCH`] that concurrent purges on other replicas
    /// skip rather than wait for. Returns the rows deleted.
    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Records each channel's attempt to carry a code and, from the accepted one, the channel that carried it,
    /// for a send whose delivery is not recorded (handed over but unconfirmed); [`Store::record_delivery`] records
    /// the attempts of every other send with its outcome.
    async fn record_attempts(&self, code: CodeId, attempts: &[DeliveryAttempt]) -> StoreResult<()>;

    /// Applies a carrier's receipt to the accepted attempt `gateway` knows as `provider_id`, unless the result
    /// stored is as new or newer or the receipt is dated before the attempt (beyond [`RECEIPT_CLOCK_SKEW`]):
    /// receipts arrive late, twice and out of order, and the newest one wins.
    ///
    /// [`RECEIPT_CLOCK_SKEW`]: crate::domain::RECEIPT_CLOCK_SKEW
    async fn record_receipt(&self, gateway: &str, provider_id: &str, receipt: &Receipt) -> StoreResult<ReceiptOutcome>;

    /// Records `fallback`, a message the provider sent on its own for the code whose attempt `gateway` knows as
    /// `provider_id` (AlimTalk's SMS fallback), as an attempt of that code, once: false when that attempt is
    /// unknown or the fallback is already recorded (a repeated webhook).
    async fn record_fallback(&self, gateway: &str, provider_id: &str, fallback: &DeliveryAttempt) -> StoreResult<bool>;

    /// The provider ids of the attempts `gateway` took in `(since, until]` that have no receipt yet, oldest
    /// first, at most `limit` (what a provider without webhooks is asked about).
    async fn awaiting_receipts(
        &self,
        gateway: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<String>>;

    /// Records a lookup notice sent to `phone` (for the status view).
    async fn record_notice(&self, phone: &PhoneNumber, notice: &NoticeStatus) -> StoreResult<()>;

    /// Every delivery attempt of the SMS codes sent to `phone` since `since`, oldest first: what the route choice
    /// learns from (a failed receipt, a refusal, a receipt that never came).
    async fn route_history(&self, phone: &PhoneNumber, since: DateTime<Utc>) -> StoreResult<Vec<PastAttempt>>;

    /// Delivery attempts of every number since `since`, per route and outcome, with how many of them were made
    /// since `recent` too (`otpd doctor`: the last 15 and 5 minutes, across replicas).
    async fn delivery_outcomes(&self, since: DateTime<Utc>, recent: DateTime<Utc>) -> StoreResult<Vec<RouteOutcomes>>;
}

/// How many attempts one route had with one outcome in a window, and in its recent part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOutcomes {
    /// The route's label (`sms@nhn`).
    pub route: String,
    /// `accepted`, `refused`, `failed`, `unconfirmed`; for an accepted one with a receipt, `delivered` or
    /// `undelivered` (the carrier's receipt) instead.
    pub outcome: String,
    /// Attempts in the whole window.
    pub count: i64,
    /// Attempts in its recent part.
    pub recent: i64,
}

/// Phone states forgotten per statement: small, so a purge never holds many row locks or the SQLite write lock
/// for long.
pub const PURGE_BATCH: i64 = 500;

/// Both faces of one database connection pool.
#[derive(Clone)]
pub struct Stores {
    /// Verifications, codes and phone state.
    pub verification: Arc<dyn Store>,
    /// Supervisors and the audit log.
    pub supervision: Arc<dyn SupervisionStore>,
    /// Team leads' sign-in and sessions.
    pub sign_in: Arc<dyn SignInStore>,
    /// Idempotency keys of SendCode and VerifyCode.
    pub keys: Arc<dyn KeyStore>,
    /// The shared SMS budgets and the pumping guard's figures.
    pub guard: Arc<dyn GuardStore>,
}

/// Opens the store a URL names: `sqlite://PATH` (created if missing) or `postgres://…`.
pub async fn connect(url: &str) -> StoreResult<Stores> {
    fn both<T: Store + SupervisionStore + SignInStore + KeyStore + GuardStore>(store: T) -> Stores {
        let store = Arc::new(store);
        Stores {
            verification: store.clone(),
            supervision: store.clone(),
            sign_in: store.clone(),
            keys: store.clone(),
            guard: store,
        }
    }
    if url.starts_with("sqlite:") {
        Ok(both(SqliteStore::connect(url).await?))
    } else {
        Ok(both(PgStore::connect(url).await?))
    }
}

/// Checks that a database URL names a supported backend.
pub fn validate_url(url: &str) -> Result<(), String> {
    if ["sqlite:", "postgres://", "postgresql://"].iter().any(|p| url.starts_with(p)) {
        Ok(())
    } else {
        Err("must start with sqlite:, postgres:// or postgresql://".into())
    }
}

/// The channel a `codes.channel` value names.
fn channel(s: &str) -> StoreResult<Channel> {
    match s {
        "sms" => Ok(Channel::Sms),
        "supervisor" => Ok(Channel::Supervisor),
        _ => Err(StoreError::Corrupt(format!("code channel `{s}`"))),
    }
}

/// The gateway names attempts are stored under: every gateway's name for itself.
const GATEWAYS: [&str; 8] = ["nhn-alimtalk", "nhn-sms", "sens", "solapi", "http", "file", "log", "sms"];

/// One row of [`Store::route_history`]: the code's id, then an attempt row.
pub(crate) type PastAttemptRow<T> =
    (i64, String, String, T, String, Option<String>, Option<String>, Option<T>, Option<String>, Option<String>);

/// Reads back a [`PastAttemptRow`].
fn past_attempt<T>(row: PastAttemptRow<T>, time: impl Fn(T) -> StoreResult<DateTime<Utc>>) -> StoreResult<PastAttempt> {
    let (code_id, channel, gateway, at, outcome, provider_id, receipt, receipt_at, receipt_code, reason) = row;
    let status =
        attempt_status((channel, gateway, at, outcome, provider_id, receipt, receipt_at, receipt_code, reason), time)?;
    Ok(PastAttempt {
        code_id,
        route: crate::domain::route_label(status.attempt.channel, status.attempt.gateway),
        at: status.attempt.at,
        outcome: status.attempt.outcome,
        delivered: status.receipt.as_ref().map(|r| r.delivered),
        receipt_code: status.receipt.and_then(|r| r.code),
    })
}

/// One `delivery_attempts` row as read back, whatever the backend's time type.
pub(crate) type AttemptRow<T> =
    (String, String, T, String, Option<String>, Option<String>, Option<T>, Option<String>, Option<String>);

/// Reads back an attempt row: channel, gateway, attempted at, outcome, provider id, receipt, receipt at, code,
/// reason.
fn attempt_status<T>(row: AttemptRow<T>, time: impl Fn(T) -> StoreResult<DateTime<Utc>>) -> StoreResult<AttemptStatus> {
    let (channel, gateway, at, outcome, provider_id, receipt, receipt_at, receipt_code, reason) = row;
    let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("delivery attempt {what} `{v}`"));
    let attempt = DeliveryAttempt {
        channel: DeliveryChannel::from_db(&channel).ok_or_else(|| corrupt("channel", &channel))?,
        gateway: GATEWAYS.into_iter().find(|g| *g == gateway).ok_or_else(|| corrupt("gateway", &gateway))?,
        at: time(at)?,
        outcome: AttemptOutcome::from_db(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
        provider_id,
        reason: match reason {
            Some(r) => Some(AttemptReason::from_db(&r).ok_or_else(|| corrupt("reason", &r))?),
            None => None,
        },
    };
    let receipt = match (receipt.as_deref(), receipt_at) {
        (Some(kind @ ("delivered" | "failed")), Some(at)) => {
            Some(Receipt { delivered: kind == "delivered", at: time(at)?, code: receipt_code })
        }
        (None, _) => None,
        (Some(other), _) => return Err(corrupt("receipt", other)),
    };
    Ok(AttemptStatus { attempt, receipt })
}

/// The channel that carried a code: that of its accepted or unconfirmed attempt.
fn carried_by(attempts: &[DeliveryAttempt]) -> Option<&'static str> {
    attempts
        .iter()
        .find(|a| matches!(a.outcome, AttemptOutcome::Accepted | AttemptOutcome::Unconfirmed))
        .map(|a| a.channel.as_str())
}

fn count_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_three_sms_and_one_supervisor_code_are_live() {
        let hash = |n: u32| CodeHash(format!("h{n}"));
        let codes = [
            (Channel::Sms, hash(6)),
            (Channel::Supervisor, hash(5)),
            (Channel::Sms, hash(4)),
            (Channel::Sms, hash(3)),
            (Channel::Supervisor, hash(2)),
            (Channel::Sms, hash(1)),
        ];
        assert_eq!(live_codes(codes), [hash(6), hash(5), hash(4), hash(3)]);
    }

    fn row(code: Option<(&str, &str)>) -> CheckRow {
        CheckRow {
            failed_attempts: 4,
            locked_until: None,
            pending: Some(VerificationId(uuid::Uuid::nil())),
            code: code.map(|(c, h)| (c.to_owned(), h.to_owned())),
            last_approved_at: None,
        }
    }

    #[test]
    fn a_check_state_keeps_the_rows_order_and_the_live_code_bound() {
        let now = Utc::now();
        let rows = ["sms h7", "supervisor h6", "sms h5", "sms h4", "sms h3", "supervisor h2"]
            .map(|c| row(c.split_once(' ')))
            .into_iter()
            .collect();
        let state = CheckState::from_rows(rows, now).unwrap();
        assert_eq!(state.failed_attempts, 4);
        let hashes = state.pending.unwrap().live_codes;
        assert_eq!(hashes, ["h7", "h6", "h5", "h4"].map(|h| CodeHash(h.into())));

        let nothing_live = CheckState::from_rows(vec![row(None)], now).unwrap();
        assert!(nothing_live.pending.unwrap().live_codes.is_empty());
        let expired_lock = CheckRow { locked_until: Some(now), ..row(None) };
        let state = CheckState::from_rows(vec![expired_lock], now).unwrap();
        assert_eq!((state.locked_until, state.failed_attempts), (None, 0), "an expired lock restarts the count");
        assert!(CheckState::from_rows(vec![], now).unwrap().pending.is_none());
        assert!(CheckState::from_rows(vec![row(Some(("carrier-pigeon", "h")))], now).is_err());
    }

    #[test]
    fn a_send_state_gathers_its_rows() {
        let now = Utc::now();
        let salt = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let row = |kind: &str, at: Option<DateTime<Utc>>, text: Option<&str>| (kind.into(), at, text.map(Into::into));
        let rows = vec![
            row("sms", Some(now), Some("delivered")),
            row("lock", Some(now), None),
            row("sms", Some(now), Some("failed")),
            row("newest", None, Some(salt)),
        ];
        let state = SendState::from_rows(rows, Ok).unwrap();
        assert_eq!(state.history.locked_until, Some(now));
        assert_eq!(state.history.sent.len(), 2);
        assert_eq!(state.salt, CodeHash(salt.into()).salt());
        assert!(state.salt.is_some());
        assert!(state.history.sent[1].failed);
        assert!(SendState::from_rows(vec![row("newest", None, None)], Ok).unwrap().salt.is_none());
        assert!(SendState::from_rows(vec![row("carrier-pigeon", None, None)], Ok).is_err());
    }
}
