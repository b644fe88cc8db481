//! The PostgreSQL dialect: any number of `otpd` replicas share the database. Sends to one number are serialised
//! by the row lock the first statement of the send transaction takes on `phone_state` (and approvals, withdrawals,
//! lookups and unlocks take the same row with `FOR UPDATE`); check attempts are reserved by one conditional
//! `UPDATE … RETURNING`, so no replica can evaluate more guesses than the policy allows. Every transaction that
//! appends to the audit chain first takes one transaction-scoped advisory lock, so appenders on every replica
//! queue for the head and the chain cannot fork; the lookup quota is counted under the same lock.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgQueryResult};

use super::dialect::{CorruptValue, Dialect, Statements};
use super::{SqlStore, StoreResult};

/// This release's migrations. Migrations a newer release applied are ignored, not refused: during a rolling upgrade
/// (and a rollback) this release starts, and runs `otpd migrate`, on a database the next one has expanded.
static MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate::Migrator { ignore_missing: true, ..sqlx::migrate!("migrations/postgres") };

/// PostgreSQL-backed [`super::Store`].
pub type PgStore = SqlStore<Postgres>;

impl PgStore {
    /// Connects to the database a `postgres://` URL names.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("otpd");
        Self::open(options, 16, Duration::from_secs(5)).await
    }

    /// Why prod mode refuses `url`, if it does: a PostgreSQL that is not on this host (loopback or a Unix socket)
    /// must be reached with `sslmode=verify-full` (certificate chained to a trusted CA and naming the host), or with
    /// `sslmode=require` only when `require_acknowledged` (encrypted, but any certificate accepted).
    pub fn prod_tls_refusal(url: &str, require_acknowledged: bool) -> Option<String> {
        use sqlx::postgres::PgSslMode;
        let options = match PgConnectOptions::from_str(url) {
            Ok(options) => options,
            Err(_) => return Some("is not a PostgreSQL URL sqlx understands".to_owned()),
        };
        let host = options.get_host();
        let loopback =
            options.get_socket().is_some() || host.starts_with('/') || crate::transport::is_loopback_host(host);
        match options.get_ssl_mode() {
            _ if loopback => None,
            PgSslMode::VerifyFull => None,
            PgSslMode::Require if require_acknowledged => None,
            PgSslMode::Require | PgSslMode::VerifyCa => Some(format!(
                "PostgreSQL on {host} with an sslmode that does not check the server's name; prod mode needs \
                 sslmode=verify-full (with sslrootcert=PATH unless the CA is a public one), or sslmode=require with \
                 --database-tls-require-acknowledged"
            )),
            PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer => Some(format!(
                "PostgreSQL on {host} without sslmode=verify-full would carry codes' hashes and numbers in clear or \
                 to an unverified server; refused in prod mode (add ?sslmode=verify-full&sslrootcert=PATH)"
            )),
        }
    }
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";

    const SQL: Statements = Statements {
        send_history: "SELECT 'lock'::text, locked_until, NULL::text FROM phone_state WHERE phone = $1 AND locked_until > $2
             UNION ALL
             SELECT 'sms', created_at, delivery FROM codes WHERE phone = $1 AND channel = 'sms' AND created_at > $3
             UNION ALL
             SELECT 'newest', NULL::timestamptz, (SELECT c.code_hash FROM codes c JOIN verifications v ON v.id = c.verification_id
                                     WHERE v.phone = $1 AND v.purpose = $4 AND v.status = 'pending'
                                       AND v.expires_at > $2
                                     ORDER BY c.id DESC LIMIT 1)",
        extend_verification: "UPDATE verifications SET expires_at = GREATEST(expires_at, $2), last_sent_at = $3 WHERE id = $1",
        lock_phone_of_code: Some(
            "SELECT 1 FROM phone_state WHERE phone = (SELECT phone FROM codes WHERE id = $1) FOR UPDATE",
        ),
        lock_phone: Some("SELECT 1 FROM phone_state WHERE phone = $1 FOR UPDATE"),
        release_attempt: "UPDATE phone_state SET
                 failed_attempts = GREATEST(failed_attempts - 1, 0),
                 locked_until = CASE WHEN locked_until = $3 THEN NULL ELSE locked_until END,
                 updated_at = $4
             WHERE phone = $1 AND epoch = $2",
        forget_idle_numbers: "DELETE FROM phone_state WHERE phone IN (
               SELECT phone FROM phone_state p
               WHERE p.updated_at < $1
                 AND (p.locked_until IS NULL AND p.failed_attempts = 0 OR p.locked_until <= $2)
                 AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.phone = p.phone)
                 AND NOT EXISTS (SELECT 1 FROM codes c WHERE c.phone = p.phone)
               LIMIT $3
               FOR UPDATE SKIP LOCKED)",
        lock_audit: Some("SELECT pg_advisory_xact_lock($1)"),
        // An advisory lock (the service's role may not lock `supervisors` rows), keyed by the name's 64-bit hash.
        lock_sign_in: Some("SELECT pg_advisory_xact_lock(hashtextextended('otpd-sign-in:' || $1, 0))"),
        lookup_candidate: "SELECT id, purpose, last_sent_at,
                    (SELECT code_hash FROM codes WHERE verification_id = v.id ORDER BY id DESC LIMIT 1)
             FROM verifications v
             WHERE phone = $1 AND status = 'pending' AND ($2::text IS NULL OR purpose = $2)
             ORDER BY last_sent_at DESC LIMIT 1",
        // Row lock: a concurrent attempt reservation (which may lock the number) waits for this transaction.
        lookup_lock: "SELECT locked_until FROM phone_state WHERE phone = $1 FOR UPDATE",
        extend_for_lookup: "UPDATE verifications SET expires_at = GREATEST(expires_at, $2) WHERE id = $1 AND status = 'pending'",
        sms_counts: "SELECT COUNT(*) FILTER (WHERE created_at > $2), COUNT(*) FROM codes
             WHERE phone = $1 AND channel = 'sms' AND created_at > $3",
        unlock_state: "SELECT failed_attempts, locked_until FROM phone_state WHERE phone = $1 FOR UPDATE",
        audit_filter: "($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)
               AND ($3::text IS NULL OR actor_name = $3) AND ($4::text IS NULL OR phone_key = $4)
               AND ($5::text IS NULL OR action = $5) AND ($6::bigint IS NULL OR seq < $6)",
    };

    type Time = DateTime<Utc>;
    type Uuid = uuid::Uuid;

    fn time(at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    fn from_time(at: DateTime<Utc>) -> Result<DateTime<Utc>, CorruptValue> {
        Ok(at)
    }

    fn uuid(id: uuid::Uuid) -> uuid::Uuid {
        id
    }

    fn from_uuid(id: uuid::Uuid) -> Result<uuid::Uuid, CorruptValue> {
        Ok(id)
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}
