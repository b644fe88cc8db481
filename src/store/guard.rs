//! What the shared SMS budgets and the pumping guard keep in the store (issue 18 §1–2): one GCRA row per budget
//! key, sends and approvals per guard key and time bucket, and admins' overrides of a prefix. Written once over
//! both backends in `sql/guard.rs`.

use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::audit::{AuditEvent, AuditKey, NewAuditEvent};
use crate::domain::guard::{GuardFigures, Override};

/// The store's key of a destination prefix (a budget's and the guard's).
pub fn prefix_key(prefix: &str) -> String {
    format!("prefix:{prefix}")
}

/// The store's key of a country calling code (the guard's).
pub fn country_key(country: &str) -> String {
    format!("country:{country}")
}

/// One budget a send is charged against: a key and its GCRA parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// `prefix:<digits>` or `service`.
    pub key: String,
    /// The emission interval (1 / rate), in milliseconds.
    pub interval_ms: i64,
    /// Sends allowed at once.
    pub burst: u32,
}

/// A budget that refused a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRefusal {
    /// Its key.
    pub key: String,
    /// When a send would pass again.
    pub retry_at: DateTime<Utc>,
}

/// Where to read a guard's figures: the keys and the windows' first buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardQuery {
    /// The destination prefix's digits.
    pub prefix: String,
    /// The country calling code.
    pub country: String,
    /// The short window's first bucket (ms).
    pub short_since_ms: i64,
    /// The long window's first bucket (ms).
    pub long_since_ms: i64,
}

/// The store of the shared budgets and the pumping guard.
#[async_trait::async_trait]
pub trait GuardStore: Send + Sync + 'static {
    /// Charges one SMS to every budget in one atomic statement (a conditional upsert per key, GCRA). Returns the
    /// budgets that refused; a budget that passed while another refused is given its charge back (a second
    /// statement, on that path only).
    async fn charge_budgets(&self, budgets: &[Budget], now: DateTime<Utc>) -> StoreResult<Vec<BudgetRefusal>>;

    /// The guard's figures for a prefix and its country over both windows, and the prefix's override: one read.
    async fn guard_figures(&self, query: &GuardQuery) -> StoreResult<GuardFigures>;

    /// Adds `sends` and `approvals` to the prefix's and the country's bucket: one upsert.
    async fn count_guard(
        &self,
        prefix: &str,
        country: &str,
        bucket_ms: i64,
        sends: u32,
        approvals: u32,
    ) -> StoreResult<()>;

    /// Sets (or, with `None`, clears) an admin's override of `prefix` and appends `event` in the same
    /// transaction. Returns the override it replaced.
    async fn set_guard_override(
        &self,
        prefix: &str,
        value: Option<&Override>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(Option<Override>, AuditEvent)>;

    /// Forgets guard buckets older than `before_ms`, overrides ended before `now`, and budgets whose row is at
    /// rest (their arrival time passed before `now`: a fresh row would behave the same).
    async fn purge_guard(&self, before_ms: i64, now: DateTime<Utc>) -> StoreResult<u64>;
}
