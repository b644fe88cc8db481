//! Statements more than one operation runs: the number's row (its lock, count and SMS), live-code trimming,
//! delivery attempts, and the audit chain's lock and append.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Row, Type};

use super::SqlStore;
use crate::domain::audit::{
    AccessContext, AuditAction, AuditEvent, AuditKey, AuditOutcome, ChainLink, GENESIS_HASH, NewAuditEvent,
};
use crate::domain::{
    AttemptStatus, CallDirection, Channel, ContactChannel, Evidence, PhoneNumber, SentSms, VerificationId,
};
use crate::store::dialect::{AUDIT_LOCK, Column, Db, Dialect, Ts, Uid};
use crate::store::{AttemptRow, PURGE_BATCH, StoreError, StoreResult, attempt_status};

/// The columns of `audit_events`, in the order [`SqlStore::append`] binds them.
pub(super) const EVENT_COLUMNS: &str = "seq, id, at, actor_name, actor_role, action, phone_masked, phone_key, ticket_id, reason, \
                             contact_channel, contact_matched, outcome, detail, prev_hash, hash, chain_link, \
                             evidence, call_id, call_direction, call_number_masked, \
                             client_address, client_cert_subject, client_cert_sha256, session_id, user_agent";

pub(super) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

impl<DB> SqlStore<DB>
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
    /// Deletes, batch by batch, the phone states with nothing to remember (see [`Store::purge`]). An expired
    /// lock restarts the count, so its failures are nothing to remember either. PostgreSQL skips the rows a
    /// concurrent purge on another replica holds.
    pub(super) async fn forget_idle_numbers(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut forgotten = 0;
        loop {
            let batch = sqlx::query(DB::SQL.forget_idle_numbers)
                .bind(Db(before))
                .bind(Db(now))
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await?;
            let batch = DB::rows_affected(&batch);
            forgotten += batch;
            if batch < PURGE_BATCH.unsigned_abs() {
                return Ok(forgotten);
            }
        }
    }

    /// Revokes the codes of `channel` in the verification beyond its newest [`Channel::live_codes`], so that a
    /// wrong guess is compared with a bounded number of codes however often the number is resent or looked up.
    pub(super) async fn trim_live_codes(
        conn: &mut DB::Connection,
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
        .bind(Db(verification.0))
        .bind(channel.as_str())
        .bind(Db(now))
        .bind(i64::from(channel.live_codes()))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Records each channel's attempt to carry `code`, in order.
    pub(super) async fn insert_attempts(
        conn: &mut DB::Connection,
        code: crate::store::CodeId,
        attempts: &[crate::domain::DeliveryAttempt],
    ) -> StoreResult<()> {
        for a in attempts {
            sqlx::query(
                "INSERT INTO delivery_attempts (code_id, channel, gateway, attempted_at, outcome, provider_id, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(code.0)
            .bind(a.channel.as_str())
            .bind(a.gateway)
            .bind(Db(a.at))
            .bind(a.outcome.as_str())
            .bind(a.provider_id.as_deref())
            .bind(a.reason.map(|r| r.as_str()))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Clears the number's failure count and lock, and bumps its epoch: every reset must, so that releases of
    /// attempts reserved before it change nothing.
    pub(super) async fn reset_count(
        conn: &mut DB::Connection,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE phone_state SET failed_attempts = 0, locked_until = NULL, epoch = epoch + 1, updated_at = $2
             WHERE phone = $1",
        )
        .bind(phone.e164())
        .bind(Db(now))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The number's lock, if it is still in force at `now`.
    pub(super) async fn active_lock(
        conn: &mut DB::Connection,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let until: Option<Option<Ts>> =
            sqlx::query_scalar("SELECT locked_until FROM phone_state WHERE phone = $1 AND locked_until > $2")
                .bind(phone.e164())
                .bind(Db(now))
                .fetch_optional(conn)
                .await?;
        Ok(until.flatten().map(|at| at.0))
    }

    /// SMS sent to the number in the 24 hours before `now`.
    pub(super) async fn sent_sms(
        conn: &mut DB::Connection,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SentSms>> {
        let rows: Vec<(Ts, String)> = sqlx::query_as(
            "SELECT created_at, delivery FROM codes WHERE phone = $1 AND channel = 'sms' AND created_at > $2",
        )
        .bind(phone.e164())
        .bind(Db(now - TimeDelta::days(1)))
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().map(|(at, delivery)| SentSms { at: at.0, failed: delivery == "failed" }).collect())
    }

    /// The attempts of one code, in order.
    pub(super) async fn attempts(conn: &mut DB::Connection, code: i64) -> StoreResult<Vec<AttemptStatus>> {
        let rows: Vec<AttemptRow<Ts>> = sqlx::query_as(
            "SELECT channel, gateway, attempted_at, outcome, provider_id, receipt, receipt_at, receipt_code, reason
             FROM delivery_attempts WHERE code_id = $1 ORDER BY id",
        )
        .bind(code)
        .fetch_all(conn)
        .await?;
        rows.into_iter().map(|row| attempt_status(row, |at: Ts| Ok(at.0))).collect()
    }

    pub(super) fn event_from_row(row: &DB::Row) -> StoreResult<AuditEvent> {
        let action: String = row.try_get("action")?;
        let outcome: String = row.try_get("outcome")?;
        let channel: Option<String> = row.try_get("contact_channel")?;
        let link: i16 = row.try_get("chain_link")?;
        let link = i64::from(link);
        let contact_channel = match channel {
            Some(c) => Some(ContactChannel::from_db(&c).ok_or_else(|| corrupt("contact channel", &c))?),
            None => None,
        };
        let evidence: Option<String> = row.try_get("evidence")?;
        let evidence = match evidence.as_deref() {
            None => None,
            Some("typed") => Some(Evidence::Typed),
            Some("call") => {
                let direction: Option<String> = row.try_get("call_direction")?;
                let direction = direction.unwrap_or_default();
                Some(Evidence::Call {
                    call_id: row.try_get::<Option<String>, _>("call_id")?.unwrap_or_default(),
                    direction: CallDirection::from_db(&direction)
                        .ok_or_else(|| corrupt("call direction", &direction))?,
                    number_masked: row.try_get::<Option<String>, _>("call_number_masked")?.unwrap_or_default(),
                })
            }
            Some(other) => return Err(corrupt("lookup evidence", other)),
        };
        let address: Option<String> = row.try_get("client_address")?;
        let subject: Option<String> = row.try_get("client_cert_subject")?;
        let sha256: Option<String> = row.try_get("client_cert_sha256")?;
        let session: Option<String> = row.try_get("session_id")?;
        let user_agent: Option<String> = row.try_get("user_agent")?;
        let access = match (&address, &subject, &sha256, &session, &user_agent) {
            (None, None, None, None, None) => None,
            _ => {
                let certificate = match (subject.as_deref(), sha256.as_deref()) {
                    (Some(subject), Some(sha256)) => Some((subject, sha256)),
                    (None, None) => None,
                    _ => return Err(corrupt("client certificate", "a subject or a fingerprint alone")),
                };
                let context =
                    AccessContext::restore(address.as_deref(), certificate, session.as_deref(), user_agent.as_deref());
                Some(context.map_err(StoreError::Corrupt)?)
            }
        };
        Ok(AuditEvent {
            seq: row.try_get("seq")?,
            event: NewAuditEvent {
                id: row.try_get::<Uid, _>("id")?.0,
                at: row.try_get::<Ts, _>("at")?.0,
                actor_name: row.try_get("actor_name")?,
                actor_role: row.try_get("actor_role")?,
                action: AuditAction::from_db(&action).ok_or_else(|| corrupt("audit action", &action))?,
                phone_masked: row.try_get("phone_masked")?,
                phone_key: row.try_get("phone_key")?,
                ticket_id: row.try_get("ticket_id")?,
                reason: row.try_get("reason")?,
                contact_channel,
                contact_matched: row.try_get("contact_matched")?,
                evidence,
                access,
                outcome: AuditOutcome::from_db(&outcome).ok_or_else(|| corrupt("audit outcome", &outcome))?,
                detail: row.try_get("detail")?,
            },
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
            link: ChainLink::from_version(link).ok_or_else(|| corrupt("audit chain link", &link.to_string()))?,
        })
    }

    /// Takes the lock that serialises appends, where the dialect needs one taken.
    pub(super) async fn lock_chain(conn: &mut DB::Connection) -> StoreResult<()> {
        if let Some(lock) = DB::SQL.lock_audit {
            sqlx::query(lock).bind(AUDIT_LOCK).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Appends `event` after the chain's head. The caller's transaction holds the chain lock.
    pub(super) async fn append(
        conn: &mut DB::Connection,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<AuditEvent> {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *conn)
                .await?;
        let (seq, prev) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
        let sealed = event.seal(seq + 1, &prev, key);
        let e = &sealed.event;
        let access = e.access.as_ref();
        let address = access.and_then(AccessContext::client_address).map(|ip| ip.to_string());
        sqlx::query(&format!(
            "INSERT INTO audit_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)"
        ))
        .bind(sealed.seq)
        .bind(Db(e.id))
        .bind(Db(e.at))
        .bind(&e.actor_name)
        .bind(&e.actor_role)
        .bind(e.action.as_str())
        .bind(&e.phone_masked)
        .bind(&e.phone_key)
        .bind(&e.ticket_id)
        .bind(&e.reason)
        .bind(e.contact_channel.map(ContactChannel::as_str))
        .bind(e.contact_matched)
        .bind(e.outcome.as_str())
        .bind(&e.detail)
        .bind(&sealed.prev_hash)
        .bind(&sealed.hash)
        .bind(i16::try_from(sealed.link.version()).unwrap_or(i16::MAX))
        .bind(e.evidence.as_ref().map(Evidence::kind))
        .bind(match &e.evidence {
            Some(Evidence::Call { call_id, .. }) => Some(call_id.as_str()),
            _ => None,
        })
        .bind(match &e.evidence {
            Some(Evidence::Call { direction, .. }) => Some(direction.as_str()),
            _ => None,
        })
        .bind(match &e.evidence {
            Some(Evidence::Call { number_masked, .. }) => Some(number_masked.as_str()),
            _ => None,
        })
        .bind(address.as_deref())
        .bind(access.and_then(AccessContext::certificate).map(|c| c.subject()))
        .bind(access.and_then(AccessContext::certificate).map(|c| c.sha256()))
        .bind(access.and_then(AccessContext::session_id))
        .bind(access.and_then(AccessContext::user_agent))
        .execute(&mut *conn)
        .await?;
        Ok(sealed)
    }
}
