//! Sign-in: contacts, challenges, sessions, passkeys and failure counts (see `store/signin.rs`). The failure
//! count and its lock are one upsert, so replicas count one person's failures together; a challenge is spent by
//! one conditional update, so a code signs in once on whichever replica gets it first.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::steps::corrupt;
use super::{SqlStore, begin};
use crate::domain::audit::{AuditEvent, AuditKey, NewAuditEvent};
use crate::domain::{Actor, AgentId, SupervisorName, TokenKind};
use crate::store::dialect::{Column, Db, Dialect, Ts, Uid};
use crate::store::signin::{
    Challenge, ChallengeKind, ChallengeStart, CodeLimits, Failure, FailurePolicy, NewChallenge, NewSession,
    PasskeyRecord, SessionEnd, SessionState, SignInAccount, SignInStore,
};
use crate::store::{StoreResult, count_u32};

/// A supervisor row as sign-in reads it: name, role, disabled at, agent id, kind.
type PersonRow = (String, String, Option<Ts>, Option<String>, String);

fn actor((name, role, _, agent_id, kind): PersonRow, session: Option<uuid::Uuid>) -> StoreResult<Actor> {
    let agent_id = match agent_id {
        Some(id) => Some(id.parse::<AgentId>().map_err(|_| corrupt("agent id", &id))?),
        None => None,
    };
    Ok(Actor {
        role: role.parse().map_err(|_| corrupt("role", &role))?,
        kind: TokenKind::from_db(&kind).ok_or_else(|| corrupt("token kind", &kind))?,
        name,
        agent_id,
        session,
        access: crate::domain::audit::AccessContext::default(),
    })
}

/// Spends an unused, unexpired challenge: one conditional update, so it is spent once on whichever replica gets
/// there first. Whether this call spent it.
async fn spend<DB: Dialect>(conn: &mut DB::Connection, id: uuid::Uuid, now: DateTime<Utc>) -> StoreResult<bool>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let spent =
        sqlx::query("UPDATE sign_in_challenges SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2")
            .bind(Db(id))
            .bind(Db(now))
            .execute(conn)
            .await?;
    Ok(DB::rows_affected(&spent) == 1)
}

#[async_trait::async_trait]
impl<DB> SignInStore for SqlStore<DB>
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
    async fn sign_in_account(
        &self,
        token_hash: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SignInAccount>> {
        type Row =
            (String, String, Option<Ts>, Option<String>, String, Option<String>, Option<String>, i64, Option<Ts>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT name, role, disabled_at, agent_id, kind, phone, email,
                    (SELECT COUNT(*) FROM passkeys p WHERE p.supervisor = s.name),
                    (SELECT MAX(g.locked_until) FROM sign_in_guards g
                     WHERE (g.subject = 'person:' || s.name OR g.subject = $2) AND g.locked_until > $3)
             FROM supervisors s WHERE token_hash = $1",
        )
        .bind(token_hash)
        .bind(address)
        .bind(Db(now))
        .fetch_optional(self.pool())
        .await?;
        let Some((name, role, disabled_at, agent_id, kind, phone, email, passkeys, locked_until)) = row else {
            return Ok(None);
        };
        Ok(Some(SignInAccount {
            actor: actor((name, role, disabled_at, agent_id, kind), None)?,
            disabled_at: disabled_at.map(|at| at.0),
            phone,
            email,
            passkeys: count_u32(passkeys),
            locked_until: locked_until.map(|at| at.0),
        }))
    }

    async fn set_contact(
        &self,
        name: &SupervisorName,
        phone: Option<Option<&str>>,
        email: Option<Option<&str>>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let done = sqlx::query(
            "UPDATE supervisors SET phone = CASE WHEN $2 THEN $3 ELSE phone END,
                                    email = CASE WHEN $4 THEN $5 ELSE email END
             WHERE name = $1",
        )
        .bind(name.as_str())
        .bind(phone.is_some())
        .bind(phone.flatten())
        .bind(email.is_some())
        .bind(email.flatten())
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) != 1 {
            return Ok(None);
        }
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn sign_in_lock(&self, subject: &str, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        let until: Option<Option<Ts>> =
            sqlx::query_scalar("SELECT locked_until FROM sign_in_guards WHERE subject = $1 AND locked_until > $2")
                .bind(subject)
                .bind(Db(now))
                .fetch_optional(self.pool())
                .await?;
        Ok(until.flatten().map(|at| at.0))
    }

    async fn record_failure(&self, subject: &str, now: DateTime<Utc>, policy: FailurePolicy) -> StoreResult<Failure> {
        // In an upsert's SET every right-hand side reads the row as it was, on both backends. A failure older
        // than the window starts the count again; a lock in force is kept; the audit side hands over what was
        // held back once a minute.
        let lock_until = now + policy.lock_for;
        let (locked_until, to_audit): (Option<Ts>, i32) = sqlx::query_as(
            "INSERT INTO sign_in_guards (subject, failures, last_failure_at, locked_until, unaudited, audited_at, to_audit)
             VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $5 ELSE NULL END, 0, $2, 1)
             ON CONFLICT (subject) DO UPDATE SET
                 failures = CASE WHEN sign_in_guards.last_failure_at <= $3 THEN 1
                                 ELSE sign_in_guards.failures + 1 END,
                 last_failure_at = $2,
                 locked_until = CASE
                     WHEN sign_in_guards.locked_until > $2 THEN sign_in_guards.locked_until
                     WHEN (CASE WHEN sign_in_guards.last_failure_at <= $3 THEN 1
                                ELSE sign_in_guards.failures + 1 END) >= $4 THEN $5
                     ELSE NULL END,
                 to_audit = CASE WHEN sign_in_guards.audited_at IS NULL OR sign_in_guards.audited_at <= $6
                                 THEN sign_in_guards.unaudited + 1 ELSE 0 END,
                 unaudited = CASE WHEN sign_in_guards.audited_at IS NULL OR sign_in_guards.audited_at <= $6
                                  THEN 0 ELSE sign_in_guards.unaudited + 1 END,
                 audited_at = CASE WHEN sign_in_guards.audited_at IS NULL OR sign_in_guards.audited_at <= $6
                                   THEN $2 ELSE sign_in_guards.audited_at END
             RETURNING locked_until, to_audit",
        )
        .bind(subject)
        .bind(Db(now))
        .bind(Db(now - policy.lock_for))
        .bind(i32::try_from(policy.lock_after).unwrap_or(i32::MAX))
        .bind(Db(lock_until))
        .bind(Db(now - policy.audit_every))
        .fetch_one(self.pool())
        .await?;
        let locked_until = locked_until.map(|at| at.0).filter(|at| *at > now);
        Ok(Failure {
            newly_locked: locked_until == Some(lock_until),
            locked_until,
            to_audit: count_u32(i64::from(to_audit)),
        })
    }

    async fn clear_failures(&self, subject: &str) -> StoreResult<u32> {
        let unaudited: Option<i32> =
            sqlx::query_scalar("DELETE FROM sign_in_guards WHERE subject = $1 RETURNING unaudited")
                .bind(subject)
                .fetch_optional(self.pool())
                .await?;
        Ok(count_u32(i64::from(unaudited.unwrap_or(0))))
    }

    async fn lift_sign_in_lock(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(bool, AuditEvent)> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let lifted = sqlx::query(
            "UPDATE sign_in_guards SET locked_until = NULL, failures = 0 WHERE subject = $1 AND locked_until > $2",
        )
        .bind(subject)
        .bind(Db(now))
        .execute(&mut *tx)
        .await?;
        let was_locked = DB::rows_affected(&lifted) == 1;
        let mut event = event;
        event.detail = format!("{} (was locked: {was_locked})", event.detail);
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok((was_locked, event))
    }

    async fn start_challenge(&self, c: NewChallenge, limits: Option<CodeLimits>) -> StoreResult<ChallengeStart> {
        let mut tx = begin(self.pool()).await?;
        if let Some(limits) = limits {
            if let Some(lock) = DB::SQL.lock_sign_in {
                sqlx::query(lock).bind(c.supervisor.as_str()).execute(&mut *tx).await?;
            }
            let hour_ago = c.created_at - TimeDelta::hours(1);
            let (count, first, last): (i64, Option<Ts>, Option<Ts>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM sign_in_challenges
                 WHERE supervisor = $1 AND kind = $2 AND created_at > $3",
            )
            .bind(c.supervisor.as_str())
            .bind(c.kind.as_str())
            .bind(Db(hour_ago))
            .fetch_one(&mut *tx)
            .await?;
            if let Some(last) = last.map(|at| at.0 + limits.cooldown).filter(|at| *at > c.created_at) {
                return Ok(ChallengeStart::Cooldown(last));
            }
            if count_u32(count) >= limits.per_hour {
                let retry = first.map_or(c.created_at, |at| at.0 + TimeDelta::hours(1));
                return Ok(ChallengeStart::Capped(retry));
            }
        }
        sqlx::query(
            "INSERT INTO sign_in_challenges (id, supervisor, kind, secret_hash, state, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Db(c.id))
        .bind(c.supervisor.as_str())
        .bind(c.kind.as_str())
        .bind(c.secret_hash.as_deref())
        .bind(c.state.as_deref())
        .bind(Db(c.created_at))
        .bind(Db(c.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ChallengeStart::Started)
    }

    async fn challenge(&self, id: uuid::Uuid) -> StoreResult<Option<Challenge>> {
        type Row = (Uid, String, String, Option<String>, Option<String>, Ts, Option<Ts>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, supervisor, kind, secret_hash, state, expires_at, used_at
             FROM sign_in_challenges WHERE id = $1",
        )
        .bind(Db(id))
        .fetch_optional(self.pool())
        .await?;
        let Some((id, supervisor, kind, secret_hash, state, expires_at, used_at)) = row else {
            return Ok(None);
        };
        Ok(Some(Challenge {
            id: id.0,
            supervisor,
            kind: ChallengeKind::from_db(&kind).ok_or_else(|| corrupt("challenge kind", &kind))?,
            secret_hash,
            state,
            expires_at: expires_at.0,
            used_at: used_at.map(|at| at.0),
        }))
    }

    async fn wrong_answer(&self, id: uuid::Uuid, max: u32, now: DateTime<Utc>) -> StoreResult<u32> {
        let wrong: Option<i32> = sqlx::query_scalar(
            "UPDATE sign_in_challenges SET wrong = wrong + 1,
                    used_at = CASE WHEN wrong + 1 >= $2 THEN $3 ELSE used_at END
             WHERE id = $1 AND used_at IS NULL RETURNING wrong",
        )
        .bind(Db(id))
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .bind(Db(now))
        .fetch_optional(self.pool())
        .await?;
        Ok(wrong.map_or(max, |w| count_u32(i64::from(w))))
    }

    async fn spend_challenge(&self, id: uuid::Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
        spend::<DB>(&mut *self.pool().acquire().await?, id, now).await
    }

    async fn open_session(
        &self,
        challenge: uuid::Uuid,
        s: NewSession,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        if !spend::<DB>(&mut tx, challenge, s.created_at).await? {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO supervisor_sessions (id, supervisor, token_hash, factor, created_at, idle_until, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Db(s.id))
        .bind(s.supervisor.as_str())
        .bind(s.token_hash.as_str())
        .bind(s.factor.as_str())
        .bind(Db(s.created_at))
        .bind(Db(s.idle_until))
        .bind(Db(s.expires_at))
        .execute(&mut *tx)
        .await?;
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn use_session(&self, token_hash: &str, now: DateTime<Utc>, idle: TimeDelta) -> StoreResult<SessionState> {
        // One statement checks and moves the idle deadline, so two replicas serving one session agree.
        let live: Option<(Uid, String)> = sqlx::query_as(
            "UPDATE supervisor_sessions SET idle_until = CASE WHEN $3 < expires_at THEN $3 ELSE expires_at END
             WHERE token_hash = $1 AND ended_at IS NULL AND idle_until > $2 AND expires_at > $2
             RETURNING id, supervisor",
        )
        .bind(token_hash)
        .bind(Db(now))
        .bind(Db(now + idle))
        .fetch_optional(self.pool())
        .await?;
        let Some((id, supervisor)) = live else {
            let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM supervisor_sessions WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(self.pool())
                .await?;
            return Ok(if known.is_some() { SessionState::Ended } else { SessionState::Unknown });
        };
        let person: Option<PersonRow> =
            sqlx::query_as("SELECT name, role, disabled_at, agent_id, kind FROM supervisors WHERE name = $1")
                .bind(supervisor.as_str())
                .fetch_optional(self.pool())
                .await?;
        match person {
            Some(row) if row.2.is_none() => Ok(SessionState::Live(Box::new(actor(row, Some(id.0))?))),
            _ => Ok(SessionState::Ended),
        }
    }

    async fn end_session(
        &self,
        id: uuid::Uuid,
        now: DateTime<Utc>,
        end: SessionEnd,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        let ended = sqlx::query(
            "UPDATE supervisor_sessions SET ended_at = $2, end_reason = $3 WHERE id = $1 AND ended_at IS NULL",
        )
        .bind(Db(id))
        .bind(Db(now))
        .bind(end.as_str())
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&ended) != 1 {
            return Ok(None);
        }
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn passkeys(&self, supervisor: &str) -> StoreResult<Vec<PasskeyRecord>> {
        let rows: Vec<(Uid, String, String, String, Ts, Option<Ts>)> = sqlx::query_as(
            "SELECT id, credential_id, passkey, label, created_at, last_used_at FROM passkeys
             WHERE supervisor = $1 ORDER BY created_at",
        )
        .bind(supervisor)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, credential_id, passkey, label, created_at, last_used_at)| PasskeyRecord {
                id: id.0,
                credential_id,
                passkey,
                label,
                created_at: created_at.0,
                last_used_at: last_used_at.map(|at| at.0),
            })
            .collect())
    }

    async fn add_passkey(
        &self,
        challenge: uuid::Uuid,
        supervisor: &str,
        p: PasskeyRecord,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let mut tx = begin(self.pool()).await?;
        Self::lock_chain(&mut tx).await?;
        if !spend::<DB>(&mut tx, challenge, p.created_at).await? {
            return Ok(None);
        }
        let added = sqlx::query(
            "INSERT INTO passkeys (id, supervisor, credential_id, passkey, label, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (credential_id) DO NOTHING",
        )
        .bind(Db(p.id))
        .bind(supervisor)
        .bind(p.credential_id.as_str())
        .bind(p.passkey.as_str())
        .bind(p.label.as_str())
        .bind(Db(p.created_at))
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&added) != 1 {
            return Ok(None);
        }
        let event = Self::append(&mut tx, event, key).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn passkey_used(&self, credential_id: &str, passkey: Option<&str>, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE passkeys SET last_used_at = $2, passkey = COALESCE($3, passkey) WHERE credential_id = $1")
            .bind(credential_id)
            .bind(Db(now))
            .bind(passkey)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
