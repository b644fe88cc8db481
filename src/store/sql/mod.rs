//! The store's operations, written once for both backends: generic over the sqlx [`Database`], with what differs
//! taken from its [`Dialect`] (see `store/mod.rs`).

mod guard;
mod idempotency;
mod signin;
mod steps;
mod supervision;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{ColumnIndex, Database, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type};

use super::dialect::{Column, Db, Dialect, Ts, Uid};
use super::{
    Approval, CheckRow, CheckState, CodeId, DeliveryOutcome, IssuedCode, NewCode, Reservation, SendState, Store,
    StoreResult, carried_by, count_u32,
};
use super::{PastAttemptRow, RouteOutcomes, past_attempt};
use crate::domain::{
    DeliveryAttempt, PastAttempt, PhoneNumber, Policy, Purpose, RECEIPT_CLOCK_SKEW, Receipt, ReceiptOutcome,
    SendHistory, SendRefusal, VerificationId,
};

/// The [`Store`] and [`super::SupervisionStore`] on a pool of `DB`: [`super::PgStore`] or [`super::SqliteStore`].
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

impl<DB: Database> SqlStore<DB> {
    /// Opens a pool of at most `max_connections`, each waited for at most `acquire_timeout`.
    pub(super) async fn open(
        options: <DB::Connection as sqlx::Connection>::Options,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
    ) -> StoreResult<Self> {
        let pool = sqlx::pool::PoolOptions::<DB>::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The pool, for tests that inspect the database.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

/// Opens a transaction that will write, as the dialect opens one.
async fn begin<DB: Dialect>(pool: &Pool<DB>) -> StoreResult<Transaction<'static, DB>> {
    Ok(pool.begin_with(DB::BEGIN_WRITE).await?)
}

// Every generic impl below carries the same `where` clause: what sqlx needs to run a statement on `DB`, bind and
// read the column types, and index rows. Rust implies a trait's supertraits but not its other `where` clauses
// (rust-lang/rust#20671), so the list cannot live once in `Dialect`; [`Column`] keeps each type's part to a line.

#[async_trait::async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    bool: Column<DB>,
    i16: Column<DB>,
    i32: Column<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    Option<bool>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    Option<Ts>: Column<DB>,
{
    async fn migrate(&self) -> StoreResult<()> {
        DB::migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn send_history(&self, phone: &PhoneNumber, purpose: Purpose, now: DateTime<Utc>) -> StoreResult<SendState> {
        // One statement: the lock in force, the day's SMS, and the newest code of the pending verification.
        let rows: Vec<(String, Option<Ts>, Option<String>)> = sqlx::query_as(DB::SQL.send_history)
            .bind(phone.e164())
            .bind(Db(now))
            .bind(Db(now - TimeDelta::days(1)))
            .bind(purpose.as_str())
            .fetch_all(&self.pool)
            .await?;
        SendState::from_rows(rows, |at: Ts| Ok(at.0))
    }

    #[tracing::instrument(skip_all, fields(phone = %code.phone, purpose = %code.purpose))]
    async fn issue_code(&self, code: NewCode, policy: &Policy) -> StoreResult<Result<IssuedCode, SendRefusal>> {
        let mut tx = begin(&self.pool).await?;
        let phone = code.phone.e164();
        // PostgreSQL: the upsert locks the number's row until commit, so concurrent sends to it, from any replica,
        // queue here. SQLite: the transaction already holds the write lock.
        let locked_until: Option<Ts> = sqlx::query_scalar(
            "INSERT INTO phone_state (phone, updated_at) VALUES ($1, $2)
             ON CONFLICT (phone) DO UPDATE SET updated_at = excluded.updated_at
             RETURNING locked_until",
        )
        .bind(phone)
        .bind(Db(code.now))
        .fetch_one(&mut *tx)
        .await?;
        let history = SendHistory {
            locked_until: locked_until.map(|at| at.0).filter(|until| *until > code.now),
            sent: Self::sent_sms(&mut tx, &code.phone, code.now).await?,
        };
        let allowance = match policy.check_send(&history, code.now) {
            Ok(allowance) => allowance,
            Err(refusal) => return Ok(Err(refusal)),
        };

        let pending: Option<(Uid, Ts)> = sqlx::query_as(
            "SELECT id, expires_at FROM verifications WHERE phone = $1 AND purpose = $2 AND status = 'pending'",
        )
        .bind(phone)
        .bind(code.purpose.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let verification = match pending {
            Some((id, expires_at)) if expires_at.0 > code.now => {
                sqlx::query(DB::SQL.extend_verification)
                    .bind(id)
                    .bind(Db(code.expires_at))
                    .bind(Db(code.now))
                    .execute(&mut *tx)
                    .await?;
                VerificationId(id.0)
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
                .bind(Db(id.0))
                .bind(phone)
                .bind(code.purpose.as_str())
                .bind(Db(code.now))
                .bind(Db(code.expires_at))
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let code_id: i64 = sqlx::query_scalar(
            "INSERT INTO codes (verification_id, phone, channel, code_hash, created_at, expires_at, delivery)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING id",
        )
        .bind(Db(verification.0))
        .bind(phone)
        .bind(code.channel.as_str())
        .bind(code.hash.0.as_str())
        .bind(Db(code.now))
        .bind(Db(code.expires_at))
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
    async fn record_delivery(
        &self,
        code: CodeId,
        outcome: DeliveryOutcome,
        attempts: &[DeliveryAttempt],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = begin(&self.pool).await?;
        let carried_by = carried_by(attempts);
        match outcome {
            DeliveryOutcome::Delivered { message_id } => {
                let delivered: Option<(Uid, String)> = sqlx::query_as(
                    "UPDATE codes SET delivery = 'delivered', provider_message_id = $2, delivered_by = $3 WHERE id = $1
                     RETURNING verification_id, channel",
                )
                .bind(code.0)
                .bind(message_id)
                .bind(carried_by)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((verification, channel)) = delivered {
                    let channel = super::channel(&channel)?;
                    Self::trim_live_codes(&mut tx, VerificationId(verification.0), channel, now).await?;
                }
            }
            DeliveryOutcome::Failed => {
                sqlx::query("UPDATE codes SET delivery = 'failed', revoked_at = $2, delivered_by = $3 WHERE id = $1")
                    .bind(code.0)
                    .bind(Db(now))
                    .bind(carried_by)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Self::insert_attempts(&mut tx, code, attempts).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(code_id = code.0))]
    async fn withdraw_code(&self, code: CodeId) -> StoreResult<()> {
        let mut tx = begin(&self.pool).await?;
        // The number's row first, as every transaction that changes a verification takes it.
        if let Some(lock) = DB::SQL.lock_phone_of_code {
            sqlx::query(lock).bind(code.0).execute(&mut *tx).await?;
        }
        let verification: Option<Uid> = sqlx::query_scalar("DELETE FROM codes WHERE id = $1 RETURNING verification_id")
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
        let rows: Vec<(i32, Option<Ts>, Option<Uid>, Option<String>, Option<String>, Option<Ts>)> = sqlx::query_as(
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
        .bind(Db(now))
        .fetch_all(&self.pool)
        .await?;
        let rows = rows.into_iter().map(|(failed, locked_until, pending, channel, hash, approved)| CheckRow {
            failed_attempts: failed.into(),
            locked_until: locked_until.map(|at| at.0),
            pending: pending.map(|id| VerificationId(id.0)),
            code: channel.zip(hash),
            last_approved_at: approved.map(|at| at.0),
        });
        CheckState::from_rows(rows.collect(), now)
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn reserve_attempt(
        &self,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> StoreResult<Reservation> {
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
        .bind(Db(now))
        .bind(i64::from(policy.max_failed_attempts))
        .bind(Db(now + policy.lockout))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let attempt: i32 = row.try_get(0)?;
            let locks_until: Option<Ts> = row.try_get(1)?;
            return Ok(Reservation::Granted {
                attempt: count_u32(attempt.into()),
                locks_until: locks_until.map(|at| at.0),
                epoch: row.try_get(2)?,
            });
        }
        let locked: Option<Option<Ts>> = sqlx::query_scalar("SELECT locked_until FROM phone_state WHERE phone = $1")
            .bind(phone.e164())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match locked {
            None => Reservation::Unknown,
            Some(until) => Reservation::Locked { until: until.map_or(now, |at| at.0) },
        })
    }

    #[tracing::instrument(skip_all, fields(phone = %phone, verification_id = %verification))]
    async fn approve(
        &self,
        verification: VerificationId,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<Approval> {
        let mut tx = begin(&self.pool).await?;
        // Lock order: the number's row, then the verification (as in issue_code), so a resend racing an
        // approval queues instead of deadlocking.
        if let Some(lock) = DB::SQL.lock_phone {
            sqlx::query(lock).bind(phone.e164()).execute(&mut *tx).await?;
        }
        let consumed = sqlx::query(
            "UPDATE verifications SET status = 'approved', approved_at = $2 WHERE id = $1 AND status = 'pending'",
        )
        .bind(Db(verification.0))
        .bind(Db(now))
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&consumed) != 1 {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM verifications WHERE id = $1")
                .bind(Db(verification.0))
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(if status.as_deref() == Some("approved") {
                Approval::AlreadyApproved
            } else {
                Approval::Replaced
            });
        }
        Self::reset_count(&mut tx, phone, now).await?;
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
        sqlx::query(DB::SQL.release_attempt)
            .bind(phone.e164())
            .bind(epoch)
            .bind(locks_until.map(Db))
            .bind(Db(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = begin(&self.pool).await?;
        let codes = sqlx::query("DELETE FROM codes WHERE created_at < $1").bind(Db(before)).execute(&mut *tx).await?;
        let verifications = sqlx::query(
            "DELETE FROM verifications WHERE created_at < $1 AND (status <> 'pending' OR expires_at < $1)
             AND NOT EXISTS (SELECT 1 FROM codes WHERE codes.verification_id = verifications.id)",
        )
        .bind(Db(before))
        .execute(&mut *tx)
        .await?;
        // Calls vouch for lookups only while on the line (and a grace after): a day after their last event they
        // are forgotten.
        let calls = sqlx::query("DELETE FROM calls WHERE updated_at < $1")
            .bind(Db(now - chrono::TimeDelta::days(1)))
            .execute(&mut *tx)
            .await?;
        let notices = sqlx::query("DELETE FROM lookup_notices WHERE sent_at < $1")
            .bind(Db(now - chrono::TimeDelta::days(1)))
            .execute(&mut *tx)
            .await?;
        // Sign-ins in progress (and enrolment codes) a day past their end, and sessions a day past their end (the
        // audit log keeps who signed in).
        let challenges = sqlx::query("DELETE FROM sign_in_challenges WHERE expires_at < $1")
            .bind(Db(now - chrono::TimeDelta::days(1)))
            .execute(&mut *tx)
            .await?;
        let sessions = sqlx::query("DELETE FROM supervisor_sessions WHERE expires_at < $1")
            .bind(Db(now - chrono::TimeDelta::days(1)))
            .execute(&mut *tx)
            .await?;
        // Idempotency keys a day after their claim (issue 18 §3): a retry later than that is a new request.
        let keys =
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1").bind(Db(now)).execute(&mut *tx).await?;
        tx.commit().await?;
        let forgotten = self.forget_idle_numbers(before, now).await?;
        Ok(DB::rows_affected(&codes)
            + DB::rows_affected(&verifications)
            + DB::rows_affected(&calls)
            + DB::rows_affected(&notices)
            + DB::rows_affected(&challenges)
            + DB::rows_affected(&sessions)
            + DB::rows_affected(&keys)
            + forgotten)
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn record_notice(&self, phone: &PhoneNumber, notice: &crate::store::NoticeStatus) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO lookup_notices (phone, sent_at, outcome, gateway, provider_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(phone.e164())
        .bind(Db(notice.sent_at))
        .bind(notice.outcome.as_str())
        .bind(notice.gateway.as_deref())
        .bind(notice.provider_id.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(code_id = code.0))]
    async fn record_attempts(&self, code: CodeId, attempts: &[DeliveryAttempt]) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        Self::insert_attempts(&mut tx, code, attempts).await?;
        sqlx::query("UPDATE codes SET delivered_by = $2 WHERE id = $1")
            .bind(code.0)
            .bind(carried_by(attempts))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(gateway))]
    async fn record_receipt(&self, gateway: &str, provider_id: &str, receipt: &Receipt) -> StoreResult<ReceiptOutcome> {
        // Only a newer receipt moves the result (a replay or a late older one never does), and only one dated
        // after its attempt.
        let updated = sqlx::query(
            "UPDATE delivery_attempts SET receipt = $3, receipt_at = $4, receipt_code = $5
             WHERE gateway = $1 AND provider_id = $2 AND outcome IN ('accepted', 'unconfirmed')
               AND (receipt_at IS NULL OR receipt_at < $4) AND attempted_at <= $6",
        )
        .bind(gateway)
        .bind(provider_id)
        .bind(if receipt.delivered { "delivered" } else { "failed" })
        .bind(Db(receipt.at))
        .bind(receipt.code.as_deref())
        .bind(Db(receipt.at + RECEIPT_CLOCK_SKEW))
        .execute(self.pool())
        .await?;
        if DB::rows_affected(&updated) > 0 {
            return Ok(ReceiptOutcome::Recorded);
        }
        // Not applied: tell a receipt that changes nothing from one for a message otpd never sent (rare, so this
        // second statement costs the ordinary path nothing).
        let known: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM delivery_attempts
             WHERE gateway = $1 AND provider_id = $2 AND outcome IN ('accepted', 'unconfirmed') LIMIT 1",
        )
        .bind(gateway)
        .bind(provider_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(if known.is_some() { ReceiptOutcome::Superseded } else { ReceiptOutcome::Unknown })
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn route_history(&self, phone: &PhoneNumber, since: DateTime<Utc>) -> StoreResult<Vec<PastAttempt>> {
        // The number's SMS codes by their index (phone, created_at), then each one's attempts by theirs.
        let rows: Vec<PastAttemptRow<Ts>> = sqlx::query_as(
            "SELECT a.code_id, a.channel, a.gateway, a.attempted_at, a.outcome, a.provider_id, a.receipt,
                    a.receipt_at, a.receipt_code, a.reason
             FROM codes c JOIN delivery_attempts a ON a.code_id = c.id
             WHERE c.phone = $1 AND c.channel = 'sms' AND c.created_at > $2
             ORDER BY a.id",
        )
        .bind(phone.e164())
        .bind(Db(since))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| past_attempt(row, |at: Ts| Ok(at.0))).collect()
    }

    async fn delivery_outcomes(&self, since: DateTime<Utc>, recent: DateTime<Utc>) -> StoreResult<Vec<RouteOutcomes>> {
        let rows: Vec<(String, String, String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT channel, gateway, outcome, receipt, COUNT(*), SUM(CASE WHEN attempted_at > $2 THEN 1 ELSE 0 END)
             FROM delivery_attempts WHERE attempted_at > $1
             GROUP BY channel, gateway, outcome, receipt ORDER BY channel, gateway, outcome, receipt",
        )
        .bind(Db(since))
        .bind(Db(recent))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(channel, gateway, outcome, receipt, count, recent)| RouteOutcomes {
                route: match crate::domain::DeliveryChannel::from_db(&channel) {
                    Some(channel) => crate::domain::route_label(channel, &gateway),
                    None => format!("{channel}@{gateway}"),
                },
                outcome: match receipt.as_deref() {
                    Some("delivered") => "delivered".into(),
                    Some(_) => "undelivered".into(),
                    None => outcome,
                },
                count,
                recent,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(gateway))]
    async fn record_fallback(&self, gateway: &str, provider_id: &str, fallback: &DeliveryAttempt) -> StoreResult<bool> {
        // One statement: the code is the one the provider's own attempt belongs to, and a repeated webhook finds
        // the fallback already there.
        let inserted = sqlx::query(
            "INSERT INTO delivery_attempts (code_id, channel, gateway, attempted_at, outcome, provider_id, reason)
             SELECT a.code_id, $3, $4, $5, $6, $7, $8 FROM delivery_attempts a
             WHERE a.gateway = $1 AND a.provider_id = $2
               AND NOT EXISTS (SELECT 1 FROM delivery_attempts f WHERE f.gateway = $4 AND f.provider_id = $7)
             LIMIT 1",
        )
        .bind(gateway)
        .bind(provider_id)
        .bind(fallback.channel.as_str())
        .bind(fallback.gateway)
        .bind(Db(fallback.at))
        .bind(fallback.outcome.as_str())
        .bind(fallback.provider_id.as_deref())
        .bind(fallback.reason.map(|r| r.as_str()))
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&inserted) > 0)
    }

    #[tracing::instrument(skip_all, fields(gateway))]
    async fn awaiting_receipts(
        &self,
        gateway: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT provider_id FROM delivery_attempts
             WHERE gateway = $1 AND receipt IS NULL AND provider_id IS NOT NULL
               AND outcome IN ('accepted', 'unconfirmed') AND attempted_at > $2 AND attempted_at <= $3
             ORDER BY attempted_at LIMIT $4",
        )
        .bind(gateway)
        .bind(Db(since))
        .bind(Db(until))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(ids)
    }
}
