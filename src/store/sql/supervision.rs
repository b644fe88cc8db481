//! Supervisors, lookups and the audit chain. Every transaction that appends to the chain first takes the lock
//! that serialises appenders: PostgreSQL's transaction-scoped advisory lock (so appenders on every replica queue
//! for the head and the chain cannot fork, and the lookup quota, counted under it, holds across replicas), or
//! SQLite's write lock, which `BEGIN IMMEDIATE` already holds.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::steps::{EVENT_COLUMNS, corrupt};
use super::{SqlStore, begin};
use crate::domain::audit::{AccessContext, AuditAction, AuditEvent, AuditKey, AuditOutcome, NewAuditEvent};
use crate::domain::{
    Actor, AgentId, AllowedCountries, Call, CallDirection, CallEvent, CallEventKind, CallId, PhoneNumber, Purpose,
    Role, SupervisorName, TokenKind, VerificationId,
};
use crate::store::dialect::{Column, Db, Dialect, Ts, Uid};
use crate::store::supervision::{NOT_PENDING_DETAIL, locked_detail, quota_detail, unlock_detail};
use crate::store::{
    AgentCall, AgentChange, AuditFilter, CodeStatus, LookupCandidate, LookupIssue, LookupQuota, LookupTarget, NewCode,
    NoticeStatus, PhoneStatus, StoreResult, SupervisionStore, SupervisorRecord, TokenHolder, Unlocked,
    VerificationStatus, count_u32,
};

fn purpose(s: &str) -> StoreResult<Purpose> {
    Purpose::from_db(s).ok_or_else(|| corrupt("purpose", s))
}

#[async_trait::async_trait]
impl<DB> SupervisionStore for SqlStore<DB>
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
    async fn add_supervisor(
        &self,
        name: &SupervisorName,
        role: Role,
        kind: TokenKind,
        token_hash: &str,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let added = sqlx::query(
            "INSERT INTO supervisors (name, role, token_hash, created_at, kind) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(role.as_str())
        .bind(token_hash)
        .bind(Db(event.at))
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&added) != 1 {
            return Ok(None);
        }
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn list_supervisors(&self) -> StoreResult<Vec<SupervisorRecord>> {
        let rows: Vec<(String, String, Ts, Option<Ts>, Option<String>)> =
            sqlx::query_as("SELECT name, role, created_at, disabled_at, agent_id FROM supervisors ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.into_iter()
            .map(|(name, role, created_at, disabled_at, agent_id)| {
                Ok(SupervisorRecord {
                    role: role.parse().map_err(|_| corrupt("role", &role))?,
                    name,
                    created_at: created_at.0,
                    disabled_at: disabled_at.map(|at| at.0),
                    agent_id,
                })
            })
            .collect()
    }

    async fn disable_supervisor(
        &self,
        name: &SupervisorName,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let done = sqlx::query("UPDATE supervisors SET disabled_at = COALESCE(disabled_at, $2) WHERE name = $1")
            .bind(name.as_str())
            .bind(Db(now))
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) != 1 {
            return Ok(None);
        }
        // Every session of theirs ends with the token, on every replica at once.
        sqlx::query(
            "UPDATE supervisor_sessions SET ended_at = $2, end_reason = 'disabled' WHERE supervisor = $1 AND ended_at IS NULL",
        )
        .bind(name.as_str())
        .bind(Db(now))
        .execute(&mut *tx)
        .await?;
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn token_holder(&self, token_hash: &str) -> StoreResult<Option<TokenHolder>> {
        let row: Option<(String, String, Option<Ts>, Option<String>, String)> =
            sqlx::query_as("SELECT name, role, disabled_at, agent_id, kind FROM supervisors WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(self.pool())
                .await?;
        let Some((name, role, disabled_at, agent_id, kind)) = row else {
            return Ok(None);
        };
        let agent_id = match agent_id {
            Some(id) => Some(id.parse::<AgentId>().map_err(|_| corrupt("agent id", &id))?),
            None => None,
        };
        let actor = Actor {
            role: role.parse().map_err(|_| corrupt("role", &role))?,
            kind: TokenKind::from_db(&kind).ok_or_else(|| corrupt("token kind", &kind))?,
            name,
            agent_id,
            session: None,
            access: AccessContext::default(),
        };
        Ok(Some(TokenHolder { actor, disabled_at: disabled_at.map(|at| at.0) }))
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn lookup_target(
        &self,
        phone: &PhoneNumber,
        purpose_filter: Option<Purpose>,
        now: DateTime<Utc>,
    ) -> StoreResult<LookupTarget> {
        let mut conn = self.pool().acquire().await?;
        let locked_until = Self::active_lock(&mut conn, phone, now).await?;
        let pending: Option<(Uid, String, Ts, Option<String>)> = sqlx::query_as(DB::SQL.lookup_candidate)
            .bind(phone.e164())
            .bind(purpose_filter.map(Purpose::as_str))
            .fetch_optional(&mut *conn)
            .await?;
        let pending = match pending {
            Some((id, p, last_sent_at, newest)) => Some(LookupCandidate {
                id: VerificationId(id.0),
                purpose: purpose(&p)?,
                last_sent_at: last_sent_at.0,
                salt: newest.and_then(|hash| crate::hashing::CodeHash(hash).salt()),
            }),
            None => None,
        };
        Ok(LookupTarget { locked_until, pending })
    }

    #[tracing::instrument(skip_all, fields(verification_id = %verification))]
    async fn issue_supervisor_code(
        &self,
        verification: VerificationId,
        code: NewCode,
        quota: LookupQuota,
        mut event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<LookupIssue> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let granted: Vec<Ts> = sqlx::query_scalar(
            "SELECT at FROM audit_events WHERE actor_name = $1 AND action = 'lookup_code' AND outcome = 'granted'
             AND at > $2 ORDER BY at",
        )
        .bind(&event.actor_name)
        .bind(Db(code.now - quota.window))
        .fetch_all(&mut *tx)
        .await?;
        let max = usize::try_from(quota.max).unwrap_or(usize::MAX);
        if granted.len() >= max {
            let retry_at = granted[granted.len() - max].0 + quota.window;
            event.outcome = AuditOutcome::Denied;
            event.detail = quota_detail(quota);
            let event = Self::append(&mut tx, event, key).await?;
            tx.commit().await?;
            return Ok(LookupIssue::QuotaExceeded { retry_at, event });
        }
        // PostgreSQL: a row lock, so a concurrent attempt reservation (which may lock the number) waits for this
        // transaction.
        let locked_until: Option<Option<Ts>> =
            sqlx::query_scalar(DB::SQL.lookup_lock).bind(code.phone.e164()).fetch_optional(&mut *tx).await?;
        if let Some(until) = locked_until.flatten().map(|at| at.0).filter(|until| *until > code.now) {
            event.outcome = AuditOutcome::Denied;
            event.detail = locked_detail(until);
            let event = Self::append(&mut tx, event, key).await?;
            tx.commit().await?;
            return Ok(LookupIssue::Locked { until, event });
        }
        let extended = sqlx::query(DB::SQL.extend_for_lookup)
            .bind(Db(verification.0))
            .bind(Db(code.expires_at))
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&extended) != 1 {
            event.outcome = AuditOutcome::Denied;
            event.detail = NOT_PENDING_DETAIL.to_owned();
            let event = Self::append(&mut tx, event, key).await?;
            tx.commit().await?;
            return Ok(LookupIssue::NotPending { event });
        }
        sqlx::query(
            "INSERT INTO codes (verification_id, phone, channel, code_hash, created_at, expires_at, delivery)
             VALUES ($1, $2, $3, $4, $5, $6, 'delivered')",
        )
        .bind(Db(verification.0))
        .bind(code.phone.e164())
        .bind(code.channel.as_str())
        .bind(code.hash.0.as_str())
        .bind(Db(code.now))
        .bind(Db(code.expires_at))
        .execute(&mut *tx)
        .await?;
        Self::trim_live_codes(&mut tx, verification, code.channel, code.now).await?;
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(LookupIssue::Issued { expires_at: code.expires_at, event })
    }

    async fn append_audit(&self, event: NewAuditEvent, key: &AuditKey) -> StoreResult<AuditEvent> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(event)
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn phone_status(&self, phone: &PhoneNumber, now: DateTime<Utc>) -> StoreResult<PhoneStatus> {
        let mut conn = self.pool().acquire().await?;
        let state: Option<(i32, Option<Ts>)> =
            sqlx::query_as("SELECT failed_attempts, locked_until FROM phone_state WHERE phone = $1")
                .bind(phone.e164())
                .fetch_optional(&mut *conn)
                .await?;
        let (failed, locked_until) = state.unwrap_or((0, None));
        let locked_until = locked_until.map(|at| at.0);
        let lock_expired = locked_until.is_some_and(|until| until <= now);
        // Pending ones, and those approved in the last day: "인증 완료" is what the team lead on the call needs to see
        // once the driver has entered the code.
        let verifications: Vec<(Uid, String, Ts, Ts, Option<Ts>)> = sqlx::query_as(
            "SELECT id, purpose, created_at, expires_at, approved_at FROM verifications
             WHERE phone = $1 AND (status = 'pending' OR (status = 'approved' AND approved_at > $2))
             ORDER BY created_at DESC",
        )
        .bind(phone.e164())
        .bind(Db(now - TimeDelta::days(1)))
        .fetch_all(&mut *conn)
        .await?;
        let mut pending = Vec::new();
        for (id, p, created_at, expires_at, approved_at) in verifications {
            let rows: Vec<(String, String, Ts, Ts, Option<Ts>, Option<String>, i64, Option<String>)> = sqlx::query_as(
                "SELECT channel, delivery, created_at, expires_at, revoked_at, provider_message_id, id, delivered_by FROM codes
                     WHERE verification_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
            let mut codes = Vec::new();
            for (channel, delivery, sent_at, expires_at, revoked_at, provider_message_id, code_id, delivered_by) in rows
            {
                codes.push(CodeStatus {
                    channel: crate::store::channel(&channel)?,
                    delivery,
                    sent_at: sent_at.0,
                    expires_at: expires_at.0,
                    revoked: revoked_at.is_some(),
                    provider_message_id,
                    delivered_by,
                    attempts: Self::attempts(&mut conn, code_id).await?,
                });
            }
            pending.push(VerificationStatus {
                id: VerificationId(id.0),
                purpose: purpose(&p)?,
                created_at: created_at.0,
                expires_at: expires_at.0,
                approved_at: approved_at.map(|at| at.0),
                codes,
            });
        }
        let (hour, day): (i64, i64) = sqlx::query_as(DB::SQL.sms_counts)
            .bind(phone.e164())
            .bind(Db(now - TimeDelta::hours(1)))
            .bind(Db(now - TimeDelta::days(1)))
            .fetch_one(&mut *conn)
            .await?;
        let notices: Vec<(Ts, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT sent_at, outcome, gateway, provider_id FROM lookup_notices
             WHERE phone = $1 AND sent_at > $2 ORDER BY id",
        )
        .bind(phone.e164())
        .bind(Db(now - TimeDelta::days(1)))
        .fetch_all(&mut *conn)
        .await?;
        let notices = notices
            .into_iter()
            .map(|(sent_at, outcome, gateway, provider_id)| NoticeStatus {
                sent_at: sent_at.0,
                outcome,
                gateway,
                provider_id,
            })
            .collect();
        Ok(PhoneStatus {
            notices,
            failed_attempts: if lock_expired { 0 } else { count_u32(failed.into()) },
            locked_until: locked_until.filter(|until| *until > now),
            pending,
            sms_last_hour: count_u32(hour),
            sms_last_day: count_u32(day),
        })
    }

    #[tracing::instrument(skip_all, fields(phone = %phone))]
    async fn unlock_phone(
        &self,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
        mut event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(Unlocked, AuditEvent)> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let state: Option<(i32, Option<Ts>)> =
            sqlx::query_as(DB::SQL.unlock_state).bind(phone.e164()).fetch_optional(&mut *tx).await?;
        let (failed, locked_until) = state.unwrap_or((0, None));
        let locked_until = locked_until.map(|at| at.0);
        let was_locked = locked_until.is_some_and(|until| until > now);
        let unlocked = Unlocked {
            was_locked,
            failures_cleared: if was_locked || locked_until.is_none() { count_u32(failed.into()) } else { 0 },
        };
        Self::reset_count(&mut tx, phone, now).await?;
        event.detail = unlock_detail(&event.detail, unlocked);
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok((unlocked, event))
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE {} ORDER BY seq DESC LIMIT $7",
            DB::SQL.audit_filter
        ))
        .bind(filter.since.map(Db))
        .bind(filter.until.map(Db))
        .bind(&filter.actor)
        .bind(&filter.phone_key)
        .bind(filter.action.map(AuditAction::as_str))
        .bind(filter.before_seq)
        .bind(i64::from(filter.limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Self::event_from_row).collect()
    }

    async fn audit_chain(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows =
            sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(Self::event_from_row).collect()
    }

    async fn set_agent(
        &self,
        name: &SupervisorName,
        agent: Option<&AgentId>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<AgentChange> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        if let Some(agent) = agent {
            let holder: Option<String> =
                sqlx::query_scalar("SELECT name FROM supervisors WHERE agent_id = $1 AND name <> $2")
                    .bind(agent.as_str())
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(by) = holder {
                return Ok(AgentChange::Taken { by });
            }
        }
        let done = sqlx::query("UPDATE supervisors SET agent_id = $2 WHERE name = $1")
            .bind(name.as_str())
            .bind(agent.map(AgentId::as_str))
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) != 1 {
            return Ok(AgentChange::NoSuchSupervisor);
        }
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(AgentChange::Set(Box::new(event)))
    }

    #[tracing::instrument(skip_all, fields(call_id = %event.call_id, number = %event.number))]
    async fn record_call_event(&self, event: &CallEvent, now: DateTime<Utc>) -> StoreResult<bool> {
        // One statement each, so events for one call applied at once on two replicas cannot interleave: the
        // row's state only moves forward (a later answer, the first end).
        let sql = match event.kind {
            CallEventKind::Answered => {
                "INSERT INTO calls (call_id, direction, phone, agent_id, answered_at, ended_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, NULL, $6)
                 ON CONFLICT (call_id) DO UPDATE SET agent_id = excluded.agent_id, answered_at = excluded.answered_at,
                     updated_at = excluded.updated_at
                 WHERE calls.answered_at IS NULL OR calls.answered_at < excluded.answered_at"
            }
            CallEventKind::Ended => {
                "INSERT INTO calls (call_id, direction, phone, agent_id, answered_at, ended_at, updated_at)
                 VALUES ($1, $2, $3, $4, NULL, $5, $6)
                 ON CONFLICT (call_id) DO UPDATE SET ended_at = excluded.ended_at, updated_at = excluded.updated_at
                 WHERE calls.ended_at IS NULL"
            }
        };
        let done = sqlx::query(sql)
            .bind(event.call_id.as_str())
            .bind(event.direction.as_str())
            .bind(event.number.e164())
            .bind(event.agent.as_str())
            .bind(Db(event.at))
            .bind(Db(now))
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn call(&self, id: &CallId) -> StoreResult<Option<Call>> {
        let row: Option<CallRow> = sqlx::query_as(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(call_from_row).transpose()
    }

    async fn agent_calls(&self, agent: &AgentId) -> StoreResult<Vec<AgentCall>> {
        // The latest send rides along in the same statement: the console polls this every 2 s while it waits for
        // the driver to press send, and that wait costs one indexed read, not an audited status read.
        let rows: Vec<(String, String, String, String, Option<Ts>, Option<Ts>, Option<Ts>)> = sqlx::query_as(&format!(
            "SELECT {CALL_COLUMNS},
                    (SELECT MAX(v.last_sent_at) FROM verifications v
                     WHERE v.phone = calls.phone AND v.status = 'pending')
                 FROM calls WHERE agent_id = $1 AND ended_at IS NULL AND answered_at IS NOT NULL
                 ORDER BY answered_at, call_id"
        ))
        .bind(agent.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(id, direction, phone, agent, answered_at, ended_at, sent)| {
                let call = call_from_row((id, direction, phone, agent, answered_at, ended_at))?;
                Ok(AgentCall { call, last_sent_at: sent.map(|at| at.0) })
            })
            .collect()
    }
}

const CALL_COLUMNS: &str = "call_id, direction, phone, agent_id, answered_at, ended_at";

type CallRow = (String, String, String, String, Option<Ts>, Option<Ts>);

fn call_from_row((id, direction, phone, agent, answered_at, ended_at): CallRow) -> StoreResult<Call> {
    // Stored in E.164, which reads the same whatever the default region.
    let number =
        PhoneNumber::parse_lenient(&phone, &AllowedCountries::default()).map_err(|_| corrupt("call number", &phone))?;
    Ok(Call {
        call_id: CallId::parse(&id).map_err(|_| corrupt("call id", &id))?,
        direction: CallDirection::from_db(&direction).ok_or_else(|| corrupt("call direction", &direction))?,
        number,
        agent: agent.parse().map_err(|_| corrupt("agent id", &agent))?,
        answered_at: answered_at.map(|at| at.0),
        ended_at: ended_at.map(|at| at.0),
    })
}
