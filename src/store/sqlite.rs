//! The embedded SQLite dialect: zero set-up, one `otpd` instance. Times are Unix milliseconds, UUIDs text. Write
//! transactions start with `BEGIN IMMEDIATE`, so they take the database's single write lock up front: concurrent
//! senders queue (up to the busy timeout) instead of failing to upgrade a read lock, and audit appends are
//! serialised, so the chain cannot fork. That lock is why this dialect needs none of PostgreSQL's row and advisory
//! locks.

use std::str::FromStr;
use std::time::Duration;

use chrono::DateTime;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteSynchronous, SqliteTypeInfo,
    SqliteValueRef,
};
use sqlx::{Database, Decode, Encode, Pool, Sqlite, Type};

use super::dialect::{CorruptValue, Dialect, Migrating, Statements, Ts, Uid};
use super::{SqlStore, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

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
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self::new(pool))
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

    fn migrate(pool: &Pool<Self>) -> Migrating<'_> {
        Box::pin(MIGRATOR.run(pool))
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.0.timestamp_millis(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let ms = <i64 as Decode<Sqlite>>::decode(value)?;
        Ok(Self(DateTime::from_timestamp_millis(ms).ok_or_else(|| CorruptValue(format!("timestamp {ms}")))?))
    }
}

impl Type<Sqlite> for Uid {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Uid {
    fn encode_by_ref(&self, buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Uid {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(uuid::Uuid::parse_str(text).map_err(|_| CorruptValue(format!("uuid `{text}`")))?))
    }
}
