//! The PostgreSQL backend: any number of `otpd` replicas share it. Sends to one number are serialised by the
//! row lock the first statement of the send transaction takes on `phone_state`; check attempts are reserved by
//! one conditional `UPDATE … RETURNING`, so no replica can evaluate more guesses than the policy allows.

mod delivery;
mod supervision;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;

use super::{
    Approval, CheckRow, CheckState, CodeId, DeliveryOutcome, IssuedCode, NewCode, Reservation, SendState, Store,
    StoreResult, count_u32,
};
use crate::domain::{Channel, PhoneNumber, Policy, Purpose, SendHistory, SendRefusal, SentSms, VerificationId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database a `postgres://` URL names.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("otpd");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
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
        let loopback = options.get_socket().is_some()
            || host.starts_with('/')
            || host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
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

    /// The pool, for tests that inspect the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
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
        let rows: Vec<(String, Option<DateTime<Utc>>, Option<String>)> = sqlx::query_as(
            "SELECT 'lock'::text, locked_until, NULL::text FROM phone_state WHERE phone = $1 AND locked_until > $2
             UNION ALL
             SELECT 'sms', created_at, delivery FROM codes WHERE phone = $1 AND channel = 'sms' AND created_at > $3
             UNION ALL
             SELECT 'newest', NULL::timestamptz, (SELECT c.code_hash FROM codes c JOIN verifications v ON v.id = c.verification_id
                                     WHERE v.phone = $1 AND v.purpose = $4 AND v.status = 'pending'
                                       AND v.expires_at > $2
                                     ORDER BY c.id DESC LIMIT 1)",
        )
        .bind(phone.e164())
        .bind(now)
        .bind(now - TimeDelta::days(1))
        .bind(purpose.as_str())
        .fetch_all(&self.pool)
        .await?;
        SendState::from_rows(rows, Ok)
    }

    #[tracing::instrument(skip_all, fields(phone = %code.phone, purpose = %code.purpose))]
    async fn issue_code(&self, code: NewCode, policy: &Policy) -> StoreResult<Result<IssuedCode, SendRefusal>> {
        let mut tx = self.pool.begin().await?;
        let phone = code.phone.e164();
        // The upsert locks the number's row until commit: concurrent sends to it, from any replica, queue here.
        let locked_until: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO phone_state (phone, updated_at) VALUES ($1, $2)
             ON CONFLICT (phone) DO UPDATE SET updated_at = excluded.updated_at
             RETURNING locked_until",
        )
        .bind(phone)
        .bind(code.now)
        .fetch_one(&mut *tx)
        .await?;
        let history = SendHistory {
            locked_until: locked_until.filter(|until| *until > code.now),
            sent: sent_sms(&mut tx, &code.phone, code.now).await?,
        };
        let allowance = match policy.check_send(&history, code.now) {
            Ok(allowance) => allowance,
            Err(refusal) => return Ok(Err(refusal)),
        };

        let pending: Option<(uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, expires_at FROM verifications WHERE phone = $1 AND purpose = $2 AND status = 'pending'",
        )
        .bind(phone)
        .bind(code.purpose.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let verification = match pending {
            Some((id, expires_at)) if expires_at > code.now => {
                sqlx::query(
                    "UPDATE verifications SET expires_at = GREATEST(expires_at, $2), last_sent_at = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(code.expires_at)
                .bind(code.now)
                .execute(&mut *tx)
                .await?;
                VerificationId(id)
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
                .bind(id.0)
                .bind(phone)
                .bind(code.purpose.as_str())
                .bind(code.now)
                .bind(code.expires_at)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let code_id: i64 = sqlx::query_scalar(
            "INSERT INTO codes (verification_id, phone, channel, code_hash, created_at, expires_at, delivery)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING id",
        )
        .bind(verification.0)
        .bind(phone)
        .bind(code.channel.as_str())
        .bind(&code.hash.0)
        .bind(code.now)
        .bind(code.expires_at)
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
        let mut tx = self.pool.begin().await?;
        match outcome {
            DeliveryOutcome::Delivered { message_id } => {
                let delivered: Option<(uuid::Uuid, String)> = sqlx::query_as(
                    "UPDATE codes SET delivery = 'delivered', provider_message_id = $2 WHERE id = $1
                     RETURNING verification_id, channel",
                )
                .bind(code.0)
                .bind(message_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((verification, channel)) = delivered {
                    trim_live_codes(&mut tx, VerificationId(verification), super::channel(&channel)?, now).await?;
                }
            }
            DeliveryOutcome::Failed => {
                sqlx::query("UPDATE codes SET delivery = 'failed', revoked_at = $2 WHERE id = $1")
                    .bind(code.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(code_id = code.0))]
    async fn withdraw_code(&self, code: CodeId) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The number's row first, as every transaction that changes a verification takes it.
        sqlx::query("SELECT 1 FROM phone_state WHERE phone = (SELECT phone FROM codes WHERE id = $1) FOR UPDATE")
            .bind(code.0)
            .execute(&mut *tx)
            .await?;
        let verification: Option<uuid::Uuid> =
            sqlx::query_scalar("DELETE FROM codes WHERE id = $1 RETURNING verification_id")
                .bind(code.0)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(verification) = verification {
            sqlx::query(
                "DELETE FROM verifications WHERE id = $1
                 AND NOT EXISTS (SELECT 1 FROM codes WHERE codes.verification_id = verifications.id)",
            )
            .bind(verification)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE verifications SET
                     expires_at = COALESCE((SELECT MAX(expires_at) FROM codes WHERE verification_id = $1), expires_at),
                     last_sent_at = COALESCE(
                         (SELECT MAX(created_at) FROM codes WHERE verification_id = $1 AND channel = 'sms'), created_at)
                 WHERE id = $1",
            )
            .bind(verification)
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
        let rows: Vec<(
            i32,
            Option<DateTime<Utc>>,
            Option<uuid::Uuid>,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
        )> = sqlx::query_as(
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
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows.into_iter().map(|(failed, locked_until, pending, channel, hash, approved)| {
            Ok(CheckRow {
                failed_attempts: failed.into(),
                locked_until,
                pending: pending.map(VerificationId),
                code: channel.zip(hash),
                last_approved_at: approved,
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
        let max = i32::try_from(policy.max_failed_attempts).unwrap_or(i32::MAX);
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
        .bind(now)
        .bind(max)
        .bind(now + policy.lockout)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let attempt: i32 = row.try_get(0)?;
            return Ok(Reservation::Granted {
                attempt: count_u32(attempt.into()),
                locks_until: row.try_get(1)?,
                epoch: row.try_get(2)?,
            });
        }
        let locked: Option<Option<DateTime<Utc>>> =
            sqlx::query_scalar("SELECT locked_until FROM phone_state WHERE phone = $1")
                .bind(phone.e164())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match locked {
            None => Reservation::Unknown,
            Some(until) => Reservation::Locked { until: until.unwrap_or(now) },
        })
    }

    #[tracing::instrument(skip_all, fields(phone = %phone, verification_id = %verification))]
    async fn approve(
        &self,
        verification: VerificationId,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<Approval> {
        let mut tx = self.pool.begin().await?;
        // Lock order: the number's row, then the verification (as in issue_code), so a resend racing an
        // approval queues instead of deadlocking.
        sqlx::query("SELECT 1 FROM phone_state WHERE phone = $1 FOR UPDATE")
            .bind(phone.e164())
            .execute(&mut *tx)
            .await?;
        let consumed = sqlx::query(
            "UPDATE verifications SET status = 'approved', approved_at = $2 WHERE id = $1 AND status = 'pending'",
        )
        .bind(verification.0)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if consumed != 1 {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM verifications WHERE id = $1")
                .bind(verification.0)
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
                 failed_attempts = GREATEST(failed_attempts - 1, 0),
                 locked_until = CASE WHEN locked_until = $3 THEN NULL ELSE locked_until END,
                 updated_at = $4
             WHERE phone = $1 AND epoch = $2",
        )
        .bind(phone.e164())
        .bind(epoch)
        .bind(locks_until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let codes = sqlx::query("DELETE FROM codes WHERE created_at < $1").bind(before).execute(&mut *tx).await?;
        let verifications = sqlx::query(
            "DELETE FROM verifications v WHERE created_at < $1 AND (status <> 'pending' OR expires_at < $1)
             AND NOT EXISTS (SELECT 1 FROM codes c WHERE c.verification_id = v.id)",
        )
        .bind(before)
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
async fn forget_idle_numbers(pool: &PgPool, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
    let mut forgotten = 0;
    loop {
        let batch = sqlx::query(
            "DELETE FROM phone_state WHERE phone IN (
               SELECT phone FROM phone_state p
               WHERE p.updated_at < $1
                 AND (p.locked_until IS NULL AND p.failed_attempts = 0 OR p.locked_until <= $2)
                 AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.phone = p.phone)
                 AND NOT EXISTS (SELECT 1 FROM codes c WHERE c.phone = p.phone)
               LIMIT $3
               FOR UPDATE SKIP LOCKED)",
        )
        .bind(before)
        .bind(now)
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
    conn: &mut sqlx::PgConnection,
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
    .bind(verification.0)
    .bind(channel.as_str())
    .bind(now)
    .bind(i64::from(channel.live_codes()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the number's failure count and lock, and bumps its epoch: every reset must, so that releases of
/// attempts reserved before it change nothing.
async fn reset_count(conn: &mut sqlx::PgConnection, phone: &PhoneNumber, now: DateTime<Utc>) -> StoreResult<()> {
    sqlx::query(
        "UPDATE phone_state SET failed_attempts = 0, locked_until = NULL, epoch = epoch + 1, updated_at = $2
         WHERE phone = $1",
    )
    .bind(phone.e164())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The number's lock, if it is still in force at `now`.
async fn active_lock(
    conn: &mut sqlx::PgConnection,
    phone: &PhoneNumber,
    now: DateTime<Utc>,
) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar("SELECT locked_until FROM phone_state WHERE phone = $1 AND locked_until > $2")
        .bind(phone.e164())
        .bind(now)
        .fetch_optional(conn)
        .await?
        .flatten())
}

/// SMS sent to the number in the 24 hours before `now`.
async fn sent_sms(conn: &mut sqlx::PgConnection, phone: &PhoneNumber, now: DateTime<Utc>) -> StoreResult<Vec<SentSms>> {
    let rows: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT created_at, delivery FROM codes WHERE phone = $1 AND channel = 'sms' AND created_at > $2",
    )
    .bind(phone.e164())
    .bind(now - TimeDelta::days(1))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(at, delivery)| SentSms { at, failed: delivery == "failed" }).collect())
}
