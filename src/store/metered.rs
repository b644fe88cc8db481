//! The store, counted: every failed operation by kind (`otpd_database_errors_total`) and every audit event the
//! database accepted (`otpd_audit_appends_total`), whichever flow wrote it, without touching either backend.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::signin::{
    Challenge, ChallengeStart, CodeLimits, Failure, FailurePolicy, NewChallenge, NewSession, PasskeyRecord, SessionEnd,
    SessionState, SignInAccount,
};

use super::{
    AgentChange, Approval, AuditFilter, CheckState, CodeId, DeliveryOutcome, IssuedCode, LookupIssue, LookupQuota,
    LookupTarget, NewCode, PhoneStatus, Reservation, SendState, SignInStore, Store, StoreResult, Stores,
    SupervisionStore, SupervisorRecord, TokenHolder, Unlocked,
};
use crate::domain::audit::{AuditEvent, AuditKey, NewAuditEvent};
use crate::domain::{
    AgentId, Call, CallEvent, CallId, DeliveryAttempt, PhoneNumber, Policy, Purpose, Receipt, Role, SendRefusal,
    SupervisorName, TokenKind, VerificationId,
};
use crate::metrics::{Metrics, StoreOperation as Op};

/// Both faces of `stores`, counting into `metrics`.
pub fn metered(stores: Stores, metrics: Arc<Metrics>) -> Stores {
    let metered = Arc::new(Metered {
        verification: stores.verification,
        supervision: stores.supervision,
        sign_in: stores.sign_in,
        keys: stores.keys,
        guard: stores.guard,
        metrics,
    });
    Stores {
        verification: metered.clone(),
        supervision: metered.clone(),
        sign_in: metered.clone(),
        keys: metered.clone(),
        guard: metered,
    }
}

struct Metered {
    verification: Arc<dyn Store>,
    supervision: Arc<dyn SupervisionStore>,
    sign_in: Arc<dyn SignInStore>,
    keys: Arc<dyn super::KeyStore>,
    guard: Arc<dyn super::GuardStore>,
    metrics: Arc<Metrics>,
}

impl Metered {
    fn seen<T>(&self, operation: Op, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(error) = &result {
            self.metrics.db_error(operation, error.kind());
        }
        result
    }

    fn appended(&self, event: &AuditEvent) {
        self.metrics.audit_append(event.event.action, event.event.outcome);
    }
}

#[async_trait::async_trait]
impl Store for Metered {
    async fn migrate(&self) -> StoreResult<()> {
        self.seen(Op::Migrate, self.verification.migrate().await)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.seen(Op::Ping, self.verification.ping().await)
    }

    async fn send_history(&self, phone: &PhoneNumber, purpose: Purpose, now: DateTime<Utc>) -> StoreResult<SendState> {
        self.seen(Op::SendHistory, self.verification.send_history(phone, purpose, now).await)
    }

    async fn issue_code(&self, code: NewCode, policy: &Policy) -> StoreResult<Result<IssuedCode, SendRefusal>> {
        self.seen(Op::IssueCode, self.verification.issue_code(code, policy).await)
    }

    async fn record_delivery(
        &self,
        code: CodeId,
        outcome: DeliveryOutcome,
        attempts: &[DeliveryAttempt],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.seen(Op::RecordDelivery, self.verification.record_delivery(code, outcome, attempts, now).await)
    }

    async fn withdraw_code(&self, code: CodeId) -> StoreResult<()> {
        self.seen(Op::WithdrawCode, self.verification.withdraw_code(code).await)
    }

    async fn check_state(&self, phone: &PhoneNumber, purpose: Purpose, now: DateTime<Utc>) -> StoreResult<CheckState> {
        self.seen(Op::CheckState, self.verification.check_state(phone, purpose, now).await)
    }

    async fn reserve_attempt(
        &self,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> StoreResult<Reservation> {
        self.seen(Op::ReserveAttempt, self.verification.reserve_attempt(phone, now, policy).await)
    }

    async fn approve(
        &self,
        verification: VerificationId,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> StoreResult<Approval> {
        self.seen(Op::Approve, self.verification.approve(verification, phone, now).await)
    }

    async fn release_attempt(
        &self,
        phone: &PhoneNumber,
        reservation: Reservation,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.seen(Op::ReleaseAttempt, self.verification.release_attempt(phone, reservation, now).await)
    }

    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        self.seen(Op::Purge, self.verification.purge(before, now).await)
    }

    async fn record_attempts(&self, code: CodeId, attempts: &[DeliveryAttempt]) -> StoreResult<()> {
        self.seen(Op::RecordAttempts, self.verification.record_attempts(code, attempts).await)
    }

    async fn record_receipt(
        &self,
        gateway: &str,
        provider_id: &str,
        receipt: &Receipt,
    ) -> StoreResult<crate::domain::ReceiptOutcome> {
        self.seen(Op::RecordReceipt, self.verification.record_receipt(gateway, provider_id, receipt).await)
    }

    async fn record_fallback(&self, gateway: &str, provider_id: &str, fallback: &DeliveryAttempt) -> StoreResult<bool> {
        self.seen(Op::RecordFallback, self.verification.record_fallback(gateway, provider_id, fallback).await)
    }

    async fn awaiting_receipts(
        &self,
        gateway: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        self.seen(Op::AwaitingReceipts, self.verification.awaiting_receipts(gateway, since, until, limit).await)
    }

    async fn record_notice(&self, phone: &PhoneNumber, notice: &super::NoticeStatus) -> StoreResult<()> {
        self.seen(Op::RecordNotice, self.verification.record_notice(phone, notice).await)
    }

    async fn route_history(
        &self,
        phone: &PhoneNumber,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<crate::domain::PastAttempt>> {
        self.seen(Op::RouteHistory, self.verification.route_history(phone, since).await)
    }

    async fn delivery_outcomes(
        &self,
        since: DateTime<Utc>,
        recent: DateTime<Utc>,
    ) -> StoreResult<Vec<super::RouteOutcomes>> {
        self.seen(Op::DeliveryOutcomes, self.verification.delivery_outcomes(since, recent).await)
    }
}

#[async_trait::async_trait]
impl SupervisionStore for Metered {
    async fn add_supervisor(
        &self,
        name: &SupervisorName,
        role: Role,
        kind: TokenKind,
        token_hash: &str,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let added = self.supervision.add_supervisor(name, role, kind, token_hash, event, key).await;
        let added = self.seen(Op::AddSupervisor, added)?;
        added.iter().for_each(|event| self.appended(event));
        Ok(added)
    }

    async fn list_supervisors(&self) -> StoreResult<Vec<SupervisorRecord>> {
        self.seen(Op::ListSupervisors, self.supervision.list_supervisors().await)
    }

    async fn disable_supervisor(
        &self,
        name: &SupervisorName,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let disabled =
            self.seen(Op::DisableSupervisor, self.supervision.disable_supervisor(name, now, event, key).await)?;
        disabled.iter().for_each(|event| self.appended(event));
        Ok(disabled)
    }

    async fn token_holder(&self, token_hash: &str) -> StoreResult<Option<TokenHolder>> {
        self.seen(Op::TokenHolder, self.supervision.token_holder(token_hash).await)
    }

    async fn lookup_target(
        &self,
        phone: &PhoneNumber,
        purpose: Option<Purpose>,
        now: DateTime<Utc>,
    ) -> StoreResult<LookupTarget> {
        self.seen(Op::LookupTarget, self.supervision.lookup_target(phone, purpose, now).await)
    }

    async fn issue_supervisor_code(
        &self,
        verification: VerificationId,
        code: NewCode,
        quota: LookupQuota,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<LookupIssue> {
        let issued = self.supervision.issue_supervisor_code(verification, code, quota, event, key).await;
        let issued = self.seen(Op::IssueSupervisorCode, issued)?;
        match &issued {
            LookupIssue::Issued { event, .. }
            | LookupIssue::QuotaExceeded { event, .. }
            | LookupIssue::Locked { event, .. }
            | LookupIssue::NotPending { event } => self.appended(event),
        }
        Ok(issued)
    }

    async fn append_audit(&self, event: NewAuditEvent, key: &AuditKey) -> StoreResult<AuditEvent> {
        let event = self.seen(Op::AppendAudit, self.supervision.append_audit(event, key).await)?;
        self.appended(&event);
        Ok(event)
    }

    async fn phone_status(&self, phone: &PhoneNumber, now: DateTime<Utc>) -> StoreResult<PhoneStatus> {
        self.seen(Op::PhoneStatus, self.supervision.phone_status(phone, now).await)
    }

    async fn unlock_phone(
        &self,
        phone: &PhoneNumber,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(Unlocked, AuditEvent)> {
        let unlocked = self.seen(Op::UnlockPhone, self.supervision.unlock_phone(phone, now, event, key).await)?;
        self.appended(&unlocked.1);
        Ok(unlocked)
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        self.seen(Op::AuditEvents, self.supervision.audit_events(filter).await)
    }

    async fn audit_chain(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.seen(Op::AuditChain, self.supervision.audit_chain(after, limit).await)
    }

    async fn set_agent(
        &self,
        name: &SupervisorName,
        agent: Option<&AgentId>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<AgentChange> {
        let change = self.seen(Op::SetAgent, self.supervision.set_agent(name, agent, event, key).await)?;
        if let AgentChange::Set(event) = &change {
            self.appended(event);
        }
        Ok(change)
    }

    async fn record_call_event(&self, event: &CallEvent, now: DateTime<Utc>) -> StoreResult<bool> {
        self.seen(Op::RecordCallEvent, self.supervision.record_call_event(event, now).await)
    }

    async fn call(&self, id: &CallId) -> StoreResult<Option<Call>> {
        self.seen(Op::Call, self.supervision.call(id).await)
    }

    async fn agent_calls(&self, agent: &AgentId) -> StoreResult<Vec<crate::store::AgentCall>> {
        self.seen(Op::AgentCalls, self.supervision.agent_calls(agent).await)
    }
}

#[async_trait::async_trait]
impl SignInStore for Metered {
    async fn sign_in_account(
        &self,
        token_hash: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SignInAccount>> {
        self.seen(Op::SignInAccount, self.sign_in.sign_in_account(token_hash, address, now).await)
    }

    async fn set_contact(
        &self,
        name: &SupervisorName,
        phone: Option<Option<&str>>,
        email: Option<Option<&str>>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let set = self.seen(Op::SetContact, self.sign_in.set_contact(name, phone, email, event, key).await)?;
        set.iter().for_each(|event| self.appended(event));
        Ok(set)
    }

    async fn sign_in_lock(&self, subject: &str, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        self.seen(Op::SignInLock, self.sign_in.sign_in_lock(subject, now).await)
    }

    async fn record_failure(&self, subject: &str, now: DateTime<Utc>, policy: FailurePolicy) -> StoreResult<Failure> {
        self.seen(Op::RecordFailure, self.sign_in.record_failure(subject, now, policy).await)
    }

    async fn clear_failures(&self, subject: &str) -> StoreResult<u32> {
        self.seen(Op::ClearFailures, self.sign_in.clear_failures(subject).await)
    }

    async fn lift_sign_in_lock(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(bool, AuditEvent)> {
        let lifted = self.seen(Op::LiftSignInLock, self.sign_in.lift_sign_in_lock(subject, now, event, key).await)?;
        self.appended(&lifted.1);
        Ok(lifted)
    }

    async fn start_challenge(
        &self,
        challenge: NewChallenge,
        limits: Option<CodeLimits>,
    ) -> StoreResult<ChallengeStart> {
        self.seen(Op::StartChallenge, self.sign_in.start_challenge(challenge, limits).await)
    }

    async fn challenge(&self, id: uuid::Uuid) -> StoreResult<Option<Challenge>> {
        self.seen(Op::Challenge, self.sign_in.challenge(id).await)
    }

    async fn wrong_answer(&self, id: uuid::Uuid, max: u32, now: DateTime<Utc>) -> StoreResult<u32> {
        self.seen(Op::WrongAnswer, self.sign_in.wrong_answer(id, max, now).await)
    }

    async fn spend_challenge(&self, id: uuid::Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
        self.seen(Op::SpendChallenge, self.sign_in.spend_challenge(id, now).await)
    }

    async fn open_session(
        &self,
        challenge: uuid::Uuid,
        session: NewSession,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let opened = self.seen(Op::OpenSession, self.sign_in.open_session(challenge, session, event, key).await)?;
        opened.iter().for_each(|event| self.appended(event));
        Ok(opened)
    }

    async fn use_session(&self, token_hash: &str, now: DateTime<Utc>, idle: TimeDelta) -> StoreResult<SessionState> {
        self.seen(Op::UseSession, self.sign_in.use_session(token_hash, now, idle).await)
    }

    async fn end_session(
        &self,
        id: uuid::Uuid,
        now: DateTime<Utc>,
        end: SessionEnd,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let ended = self.seen(Op::EndSession, self.sign_in.end_session(id, now, end, event, key).await)?;
        ended.iter().for_each(|event| self.appended(event));
        Ok(ended)
    }

    async fn passkeys(&self, supervisor: &str) -> StoreResult<Vec<PasskeyRecord>> {
        self.seen(Op::Passkeys, self.sign_in.passkeys(supervisor).await)
    }

    async fn add_passkey(
        &self,
        challenge: uuid::Uuid,
        supervisor: &str,
        passkey: PasskeyRecord,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<Option<AuditEvent>> {
        let added =
            self.seen(Op::AddPasskey, self.sign_in.add_passkey(challenge, supervisor, passkey, event, key).await)?;
        added.iter().for_each(|event| self.appended(event));
        Ok(added)
    }

    async fn passkey_used(&self, credential_id: &str, passkey: Option<&str>, now: DateTime<Utc>) -> StoreResult<()> {
        self.seen(Op::PasskeyUsed, self.sign_in.passkey_used(credential_id, passkey, now).await)
    }
}

#[async_trait::async_trait]
impl super::KeyStore for Metered {
    async fn claim_key(&self, claim: &super::idempotency::KeyClaim) -> StoreResult<super::idempotency::Claimed> {
        self.seen(Op::ClaimKey, self.keys.claim_key(claim).await)
    }

    async fn key_record(&self, scope: &str, key: &str) -> StoreResult<Option<super::idempotency::KeyRecord>> {
        self.seen(Op::KeyRecord, self.keys.key_record(scope, key).await)
    }

    async fn take_over_key(&self, claim: &super::idempotency::KeyClaim) -> StoreResult<bool> {
        self.seen(Op::TakeOverKey, self.keys.take_over_key(claim).await)
    }

    async fn renew_key(&self, scope: &str, key: &str, token: uuid::Uuid, until: DateTime<Utc>) -> StoreResult<bool> {
        self.seen(Op::RenewKey, self.keys.renew_key(scope, key, token, until).await)
    }

    async fn key_progress(
        &self,
        scope: &str,
        key: &str,
        token: uuid::Uuid,
        code: CodeId,
        provisional: &[u8],
    ) -> StoreResult<bool> {
        self.seen(Op::KeyProgress, self.keys.key_progress(scope, key, token, code, provisional).await)
    }

    async fn finish_key(
        &self,
        scope: &str,
        key: &str,
        token: uuid::Uuid,
        outcome: &super::idempotency::KeyOutcome,
    ) -> StoreResult<bool> {
        self.seen(Op::FinishKey, self.keys.finish_key(scope, key, token, outcome).await)
    }

    async fn release_key(&self, scope: &str, key: &str, token: uuid::Uuid) -> StoreResult<()> {
        self.seen(Op::ReleaseKey, self.keys.release_key(scope, key, token).await)
    }
}

#[async_trait::async_trait]
impl super::GuardStore for Metered {
    async fn charge_budgets(
        &self,
        budgets: &[super::guard::Budget],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<super::guard::BudgetRefusal>> {
        self.seen(Op::ChargeBudgets, self.guard.charge_budgets(budgets, now).await)
    }

    async fn guard_figures(&self, query: &super::guard::GuardQuery) -> StoreResult<crate::domain::guard::GuardFigures> {
        self.seen(Op::GuardFigures, self.guard.guard_figures(query).await)
    }

    async fn count_guard(
        &self,
        prefix: &str,
        country: &str,
        bucket_ms: i64,
        sends: u32,
        approvals: u32,
    ) -> StoreResult<()> {
        self.seen(Op::CountGuard, self.guard.count_guard(prefix, country, bucket_ms, sends, approvals).await)
    }

    async fn set_guard_override(
        &self,
        prefix: &str,
        value: Option<&crate::domain::guard::Override>,
        event: NewAuditEvent,
        key: &AuditKey,
    ) -> StoreResult<(Option<crate::domain::guard::Override>, AuditEvent)> {
        let set = self.seen(Op::SetGuardOverride, self.guard.set_guard_override(prefix, value, event, key).await)?;
        self.appended(&set.1);
        Ok(set)
    }

    async fn purge_guard(&self, before_ms: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        self.seen(Op::PurgeGuard, self.guard.purge_guard(before_ms, now).await)
    }
}
