//! The embedded SQLite backend: zero set-up, one `otpd` instance. Times are Unix milliseconds. Write
//! transactions start with `BEGIN IMMEDIATE`, so they take the database's write lock up front and concurrent
//! senders queue (up to the busy timeout) instead of failing to upgrade a read lock.

mod delivery;
mod supervision;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{
    Approval, CheckRow, CheckState, CodeId, DeliveryOutcome, IssuedCode, NewCode, Reservation, SendState, Store,
    StoreError, StoreResult, count_u32,
};
use crate::domain::{Channel, PhoneNumber, Policy, Purpose, SendHistory, SendRefusal, SentSms, VerificationId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

fn opt_from_ms(ms: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    ms.map(from_ms).transpose()
}

fn verification_id(s: &str) -> StoreResult<VerificationId> {
    uuid::Uuid::parse_str(s).map(VerificationId).map_err(|_| StoreError::Corrupt(format!("verification id `{s}`")))
}

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
        Ok(Self { pool })
    }

    /// The pool, for tests that inspect the database.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn send_history(&self, phone: &PhoneNumber, purpose: Purpose, now: DateTime<Utc>) -> StoreResult<SendState> {
        // One statement: the lock in force, the day's SMS, and the newest code of the pending verification.
        let rows: Vec<(String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT 'lock', locked_until, NULL FROM phone_state WHERE phone = $1 AND locked_until > $2
             UNION ALL
             SELECT 'sms', created_at, delivery FROM codes WHERE phone = $1 AND channel = 'sms' AND created_at > $3
             UNION ALL
             SELECT 'newest', NULL, (SELECT c.code_hash FROM codes c JOIN verifications v ON v.id = c.verification_id
                                     WHERE v.phone = $1 AND v.purpose = $4 AND v.status = 'pending'
                                       AND v.expires_at > $2
                                     ORDER BY c.id DESC LIMIT 1)",
        )
        .bind(phone.e164())
        .bind(ms(now))
        .bind(ms(now - TimeDelta::days(1)))
        .bind(purpose.as_str())
        .fetch_all(&self.pool)
        .await?;
        SendState::from_rows(rows, from_ms)
    }

    #[tracing::instrument(skip_all, fields(phone = %code.phone, purpose = %code.purpose))]
    async fn issue_code(&self, code: NewCode, policy: &Policy) -> StoreResult<Result<IssuedCode, SendRefusal>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now = ms(code.now);
        let phone = code.phone.e164();
        let locked_until: Option<i64> = sqlx::query_scalar(
            "INSERT INTO phone_state (phone, updated_at) VALUES ($1, $2)
             ON CONFLICT (phone) DO UPDATE SET updated_at = excluded.updated_at
             RETURNING locked_until",
        )
        .bind(phone)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let history = SendHistory {
            locked_until: opt_from_ms(locked_until)?.filter(|until| *until > code.now),
            sent: sent_sms(&mut tx, &code.phone, code.now).await?,
        };
        let allowance = match policy.check_send(&history, code.now) {
            Ok(allowance) => allowance,
            Err(refusal) => return Ok(Err(refusal)),
        };

        let pending: Option<(String, i64)> = sqlx::query_as(
            "SELECT id, expires_at FROM verifications WHERE phone = $1 AND purpose = $2 AND status = 'pending'",
        )
        .bind(phone)
        .bind(code.purpose.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let verification = match pending {
            Some((id, expires_at)) if expires_at > now => {
                sqlx::query(
                    "UPDATE verifications SET expires_at = MAX(expires_at, $2), last_sent_at = $3 WHERE id = $1",
                )
                .bind(&id)
                .bind(ms(code.expires_at))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                verification_id(&id)?
            }
            stale => {
                if let Some((id, _)) = stale {
                    sqlx::query("UPDATE verifications SET status = 'expired' WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                let id = VerificationId::new();
                sqlx::query(
                    "INSERT INTO verifications (id, phone, purpose, status, created_at, expires_at, last_sent_at)
                     VALUES ($1, $2, $3, 'pending', $4, $5, $4)",
                )
                .bind(id.to_string())
                .bind(phone)
                .bind(code.purpose.as_str())
                .bind(now)
                .bind(ms(code.expires_at))
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let code_id: i64 = sqlx::query_scalar(
            "INSERT INTO codes (verification_id, phone, channel, code_hash, created_at, expires_at, delivery)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING id",
        )
        .bind(verification.to_string())
        .bind(phone)
        .bind(code.channel.as_str())
        .bind(&code.hash.0)
        .bind(now)
        .bind(ms(code.expires_at))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(IssuedCode {
            code_id: CodeId(code_id),
            verification_id: verification,
            expires_at: code.expires_at,
            allowance,
        }))
    }

    #[tracing::instrument(skip_all, fields(code_id = code.0))]
    async fn record_delivery(&self, code: CodeId, outcome: DeliveryOutcome, now: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        match outcome {
            DeliveryOutcome::Delivered { message_id } => {
                let delivered: Option<(String, String)> = sqlx::query_as(
                    "UPDATE codes SET delivery = 'delivered', provider_message_id = $2 WHERE id = $1
                     RETURNING verification_id, channel",
                )
                .bind(code.0)
                .bind(message_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((verification, channel)) = delivered {
                    trim_live_codes(&mut tx, verification_id(&verification)?, super::channel(&channel)?, now).await?;
                }
            }
            DeliveryOutcome::Failed => {
                sqlx::query("UPDATE codes SET delivery = 'failed', revoked_at = $2 WHERE id = $1")
                    .bind(code.0)
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(code_id = code.0))]
    async fn withdraw_code(&self, code: CodeId) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let verification: Option<String> =
            sqlx::query_scalar("DELETE FROM codes WHERE id = $1 RETURNING verification_id")
                .bind(code.0)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(verification) = verification {
            sqlx::query(
                "DELETE FROM verifications WHERE id = $1
                 AND NOT EXISTS (SELECT 1 FROM codes WHERE codes.verification_id = verifications.id)",
            )
            .bind(&verification)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE verifications SET
                     expires_at = COALESCE((SELECT MAX(expires_at) FROM codes WHERE verification_id = $1), expires_at),
                     last_sent_at = COALESCE(
                         (SELECT MAX(created_at) FROM codes WHERE verification_id = $1 AND channel = 'sms'), created_at)
                 WHERE id = $1",
            )
            .bind(&verification)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(phone = %phone, purpose = %purpose))]
    async fn check_state(&self, phone: &PhoneNumber, purpose: Purpose, now: DateTime<Utc>) -> StoreResult<CheckState> {
        // One statement: a row per live code of the pending verification (one row if it has none, none if the
        // number is unknown), each carrying the number's count and lock.
        let rows: Vec<(i64, Option<i64>, Option<String>, Option<String>, Option<String>, Option<i64>)> =
            sqlx::query_as(
                "SELECT p.failed_attempts, p.locked_until, v.id, c.channel, c.code_hash,
                    CASE WHEN v.id IS NULL THEN (SELECT MAX(a.approved_at) FROM verifications a
                                                 WHERE a.phone = p.phone AND a.purpose = $2 AND a.status = 'approved')
                    END
             FROM phone_state p
             LEFT JOIN verifications v ON v.phone = p.phone AND v.purpose = $2 AND v.status = 'pending'
             LEFT JOIN codes c ON c.verification_id = v.id AND c.expires_at > $3 AND c.revoked_at IS NULL
             WHERE p.phone = $1
             ORDER BY c.id DESC",
            )
            .bind(phone.e164())
            .bind(purpose.as_str())
            .bind(ms(now))
            .fetch_all(&self.pool)
            .await?;
        let rows = rows.into_iter().map(|(failed, locked_until, pending, channel, hash, approved)| {
            Ok(CheckRow {
                failed_attempts: failed,
                locked_until: opt_from_ms(locked_until)?,
                pending: pending.as_deref().map(verification_id).transpose()?,
                code: channel.zip(hash),
                last_approved_at: opt_from_ms(approved)?,
            })
        });
        CheckState::from_rows(rows.collect::<StoreResult<_>>()?, now)
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn reserve_attempt(
        &self,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> StoreResult<Reservation> {
        let lock_end = now + policy.lockout;
        let row = sqlx::query(
            "UPDATE phone_state SET
                 failed_attempts = (CASE WHEN locked_until <= $2 THEN 0 ELSE failed_attempts END) + 1,
                 locked_until = CASE WHEN (CASE WHEN locked_until <= $2 THEN 0 ELSE failed_attempts END) + 1 >= $3
                                     THEN $4 ELSE NULL END,
                 epoch = CASE WHEN locked_until <= $2 THEN epoch + 1 ELSE epoch END,
                 updated_at = $2
             WHERE phone = $1 AND (locked_until IS NULL OR locked_until <= $2)
             RETURNING failed_attempts, locked_until, epoch",
        )
        .bind(phone.e164())
        .bind(ms(now))
        .bind(i64::from(policy.max_failed_attempts))
        .bind(ms(lock_end))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Reservation::Granted {
                attempt: count_u32(row.try_get(0)?),
                locks_until: opt_from_ms(row.try_get(1)?)?,
                epoch: row.try_get(2)?,
            });
        }
        let locked: Option<Option<i64>> = sqlx::query_scalar("SELECT locked_until FROM phone_state WHERE phone = $1")
            .bind(phone.e164())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match locked {
            None => Reservation::Unknown,
            Some(until) => Reservation::Locked { until: opt_from_ms(until)?.unwrap_or(now) },
        })
    }

    #[tracing::instrument(skip_all, fields(phone = %phone, verification_id = %verification))]
    async fn approve(
        &self,
        verification: VerificationId,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<Approval> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let consumed = sqlx::query(
            "UPDATE verifications SET status = 'approved', approved_at = $2 WHERE id = $1 AND status = 'pending'",
        )
        .bind(verification.to_string())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if consumed != 1 {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM verifications WHERE id = $1")
                .bind(verification.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(if status.as_deref() == Some("approved") {
                Approval::AlreadyApproved
            } else {
                Approval::Replaced
            });
        }
        reset_count(&mut tx, phone, now).await?;
        tx.commit().await?;
        Ok(Approval::Approved)
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn release_attempt(
        &self,
        phone: &PhoneNumber,
        reservation: Reservation,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let Reservation::Granted { locks_until, epoch, .. } = reservation else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE phone_state SET
                 failed_attempts = MAX(failed_attempts - 1, 0),
                 locked_until = CASE WHEN locked_until = $3 THEN NULL ELSE locked_until END,
                 updated_at = $4
             WHERE phone = $1 AND epoch = $2",
        )
        .bind(phone.e164())
        .bind(epoch)
        .bind(locks_until.map(ms))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let cutoff = ms(before);
        let codes = sqlx::query("DELETE FROM codes WHERE created_at < $1").bind(cutoff).execute(&mut *tx).await?;
        let verifications = sqlx::query(
            "DELETE FROM verifications WHERE created_at < $1 AND (status <> 'pending' OR expires_at < $1)
             AND NOT EXISTS (SELECT 1 FROM codes WHERE codes.verification_id = verifications.id)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let forgotten = forget_idle_numbers(&self.pool, before, now).await?;
        Ok(codes.rows_affected() + verifications.rows_affected() + forgotten)
    }

    #[tracing::instrument(skip_all, fields(code_id = code.0))]
    async fn record_attempts(&self, code: CodeId, attempts: &[crate::domain::DeliveryAttempt]) -> StoreResult<()> {
        self.insert_attempts(code, attempts).await
    }

    #[tracing::instrument(skip_all, fields(gateway))]
    async fn record_receipt(
        &self,
        gateway: &str,
        provider_id: &str,
        receipt: &crate::domain::Receipt,
    ) -> StoreResult<crate::domain::ReceiptOutcome> {
        self.update_receipt(gateway, provider_id, receipt).await
    }
}

/// Deletes, batch by batch, the phone states with nothing to remember (see [`Store::purge`]). An expired lock
/// restarts the count, so its failures are nothing to remember either.
async fn forget_idle_numbers(pool: &SqlitePool, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
    let mut forgotten = 0;
    loop {
        let batch = sqlx::query(
            "DELETE FROM phone_state WHERE phone IN (
               SELECT phone FROM phone_state p
               WHERE p.updated_at < $1
                 AND (p.locked_until IS NULL AND p.failed_attempts = 0 OR p.locked_until <= $2)
                 AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.phone = p.phone)
                 AND NOT EXISTS (SELECT 1 FROM codes c WHERE c.phone = p.phone)
               LIMIT $3)",
        )
        .bind(ms(before))
        .bind(ms(now))
        .bind(super::PURGE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        forgotten += batch;
        if batch < super::PURGE_BATCH.unsigned_abs() {
            return Ok(forgotten);
        }
    }
}

/// Revokes the codes of `channel` in the verification beyond its newest [`Channel::live_codes`], so that a wrong
/// guess is compared with a bounded number of codes however often the number is resent or looked up.
pub(super) async fn trim_live_codes(
    conn: &mut sqlx::SqliteConnection,
    verification: VerificationId,
    channel: Channel,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE codes SET revoked_at = $3
         WHERE verification_id = $1 AND channel = $2 AND revoked_at IS NULL
           AND id NOT IN (SELECT id FROM codes WHERE verification_id = $1 AND channel = $2 AND revoked_at IS NULL
                          ORDER BY id DESC LIMIT $4)",
    )
    .bind(verification.to_string())
    .bind(channel.as_str())
    .bind(ms(now))
    .bind(i64::from(channel.live_codes()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the number's failure count and lock, and bumps its epoch: every reset must, so that releases of
/// attempts reserved before it change nothing.
async fn reset_count(conn: &mut sqlx::SqliteConnection, phone: &PhoneNumber, now: DateTime<Utc>) -> StoreResult<()> {
    sqlx::query(
        "UPDATE phone_state SET failed_attempts = 0, locked_until = NULL, epoch = epoch + 1, updated_at = $2
         WHERE phone = $1",
    )
    .bind(phone.e164())
    .bind(ms(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// The number's lock, if it is still in force at `now`.
async fn active_lock(
    conn: &mut sqlx::SqliteConnection,
    phone: &PhoneNumber,
    now: DateTime<Utc>,
) -> StoreResult<Option<DateTime<Utc>>> {
    let until: Option<i64> =
        sqlx::query_scalar("SELECT locked_until FROM phone_state WHERE phone = $1 AND locked_until > $2")
            .bind(phone.e164())
            .bind(ms(now))
            .fetch_optional(conn)
            .await?
            .flatten();
    opt_from_ms(until)
}

/// SMS sent to the number in the 24 hours before `now`.
async fn sent_sms(
    conn: &mut sqlx::SqliteConnection,
    phone: &PhoneNumber,
    now: DateTime<Utc>,
) -> StoreResult<Vec<SentSms>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT created_at, delivery FROM codes WHERE phone = $1 AND channel = 'sms' AND created_at > $2",
    )
    .bind(phone.e164())
    .bind(ms(now - TimeDelta::days(1)))
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(|(at, delivery)| Ok(SentSms { at: from_ms(at)?, failed: delivery == "failed" })).collect()
}
