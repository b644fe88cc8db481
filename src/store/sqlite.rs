//! The embedded SQLite dialect: zero set-up, one `otpd` instance. Times are Unix milliseconds, UUIDs text. Write
//! transactions start with `BEGIN IMMEDIATE`, so they take the database's single write lock up front: concurrent
//! senders queue (up to the busy timeout) instead of failing to upgrade a read lock, and audit appends are
//! serialised, so the chain cannot fork. That lock is why this dialect needs none of PostgreSQL's row and advisory
//! locks.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteQueryResult, SqliteSynchronous};

use super::dialect::{CorruptValue, Dialect, Statements};
use super::{SqlStore, StoreResult};

/// This release's migrations. Migrations a newer release applied are ignored, not refused: during a rolling upgrade
/// (and a rollback) this release starts, and runs `otpd migrate`, on a database the next one has expanded.
static MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate::Migrator { ignore_missing: true, ..sqlx::migrate!("migrations/sqlite") };

/// SQLite-backed [`super::Store`].
pub type SqliteStore = SqlStore<Sqlite>;

impl SqliteStore {
    /// Opens (creating if missing) the database file a `sqlite://PATH` URL names.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::open(options, 8, Duration::from_secs(10)).await
    }
}

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    const SQL: Statements = Statements {
        send_history: "SELECT 'lock', locked_until, NULL FROM phone_state WHERE phone = $1 AND locked_until > $2
             UNION ALL
             SELECT 'sms', created_at, delivery FROM codes WHERE phone = $1 AND channel = 'sms' AND created_at > $3
             UNION ALL
             SELECT 'newest', NULL, (SELECT c.code_hash FROM codes c JOIN verifications v ON v.id = c.verification_id
                                     WHERE v.phone = $1 AND v.purpose = $4 AND v.status = 'pending'
                                       AND v.expires_at > $2
                                     ORDER BY c.id DESC LIMIT 1)",
        extend_verification: "UPDATE verifications SET expires_at = MAX(expires_at, $2), last_sent_at = $3 WHERE id = $1",
        lock_phone_of_code: None,
        lock_phone: None,
        release_attempt: "UPDATE phone_state SET
                 failed_attempts = MAX(failed_attempts - 1, 0),
                 locked_until = CASE WHEN locked_until = $3 THEN NULL ELSE locked_until END,
                 updated_at = $4
             WHERE phone = $1 AND epoch = $2",
        forget_idle_numbers: "DELETE FROM phone_state WHERE phone IN (
               SELECT phone FROM phone_state p
               WHERE p.updated_at < $1
                 AND (p.locked_until IS NULL AND p.failed_attempts = 0 OR p.locked_until <= $2)
                 AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.phone = p.phone)
                 AND NOT EXISTS (SELECT 1 FROM codes c WHERE c.phone = p.phone)
               LIMIT $3)",
        lock_audit: None,
        lock_sign_in: None,
        lookup_candidate: "SELECT id, purpose, last_sent_at,
                    (SELECT code_hash FROM codes WHERE verification_id = v.id ORDER BY id DESC LIMIT 1)
             FROM verifications v
             WHERE phone = $1 AND status = 'pending' AND ($2 IS NULL OR purpose = $2)
             ORDER BY last_sent_at DESC LIMIT 1",
        lookup_lock: "SELECT locked_until FROM phone_state WHERE phone = $1",
        extend_for_lookup: "UPDATE verifications SET expires_at = MAX(expires_at, $2) WHERE id = $1 AND status = 'pending'",
        sms_counts: "SELECT COALESCE(SUM(created_at > $2), 0), COUNT(*) FROM codes
             WHERE phone = $1 AND channel = 'sms' AND created_at > $3",
        unlock_state: "SELECT failed_attempts, locked_until FROM phone_state WHERE phone = $1",
        audit_filter: "($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) AND ($3 IS NULL OR actor_name = $3)
               AND ($4 IS NULL OR phone_key = $4) AND ($5 IS NULL OR action = $5) AND ($6 IS NULL OR seq < $6)",
    };

    type Time = i64;
    type Uuid = String;

    fn time(at: DateTime<Utc>) -> i64 {
        at.timestamp_millis()
    }

    fn from_time(ms: i64) -> Result<DateTime<Utc>, CorruptValue> {
        DateTime::from_timestamp_millis(ms).ok_or_else(|| CorruptValue(format!("timestamp {ms}")))
    }

    fn uuid(id: uuid::Uuid) -> String {
        id.to_string()
    }

    fn from_uuid(text: String) -> Result<uuid::Uuid, CorruptValue> {
        uuid::Uuid::parse_str(&text).map_err(|_| CorruptValue(format!("uuid `{text}`")))
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}
