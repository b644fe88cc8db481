//! The call centre's flows (DESIGN.md, "LookupCode (supervisor)"): code lookup for a strong complaint, phone
//! status, unlock and the audit log. Every call by an authenticated supervisor is audited, granted or denied;
//! a code leaves the service only after its granted event is stored in the same transaction as the code.

pub mod checklist;
mod guard;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::Clock;
use crate::domain::audit::{
    AuditAction, AuditEvent, AuditOutcome, ChainError, ChainVerifier, Expectations, HeadPin, NewAuditEvent,
};
use crate::domain::{
    Actor, Call, CallDirection, CallId, Channel, ContactChannel, DisabledActor, Evidence, EvidencePolicy, OtpCode,
    PhoneNumber, Policy, Purpose, Reason, Role, TicketId, VerificationId,
};
use crate::hashing::{CodeHasher, Work};
use crate::metrics::{Metrics, SendResult, SupervisorAction, SupervisorOutcome};
use crate::service::ServiceError;
use crate::store::{AuditFilter, LookupIssue, LookupQuota, NewCode, PhoneStatus, SupervisionStore, Unlocked};

pub use crate::audit::{AuditLog, trace};
pub use guard::{GuardChange, MAX_OVERRIDE, PrefixGuardView};

/// What a lookup is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupPolicy {
    /// The pending verification's last SMS must be at most this old ("ask the driver to press send").
    pub window: TimeDelta,
    /// Codes per supervisor per window.
    pub quota: LookupQuota,
    /// What a lookup may rest on (`--lookup-evidence`).
    pub evidence: EvidencePolicy,
    /// How long after its end a call still vouches for its number (`--call-grace`).
    pub call_grace: TimeDelta,
}

/// What a team lead says a lookup rests on.
#[derive(Debug, Clone)]
pub enum Stated {
    /// A call the phone system reported: the number is the call's; a number also named must equal it.
    Call { call_id: CallId, phone: Option<PhoneNumber> },
    /// Typed: the number being verified, how the team lead is in contact with the driver and the number the
    /// driver is on.
    Typed { phone: PhoneNumber, contact: ContactChannel, contact_number: PhoneNumber },
}

impl Stated {
    /// The number named, if one was.
    pub fn phone(&self) -> Option<&PhoneNumber> {
        match self {
            Stated::Call { phone, .. } => phone.as_ref(),
            Stated::Typed { phone, .. } => Some(phone),
        }
    }
}

/// Whose status a team lead asks for.
#[derive(Debug, Clone)]
pub enum StatusTarget {
    /// A number they named.
    Number(PhoneNumber),
    /// The number of the call they are on (a number also named must equal it).
    Call { call_id: CallId, phone: Option<PhoneNumber> },
}

/// A team lead's lookup, as stated.
#[derive(Debug, Clone)]
pub struct LookupCommand {
    /// The purpose; None: the most recent pending verification.
    pub purpose: Option<Purpose>,
    /// The ticket.
    pub ticket: TicketId,
    /// What the number rests on.
    pub stated: Stated,
}

/// A looked-up code.
#[derive(Debug)]
pub struct LookupOutcome {
    /// The code to read out.
    pub code: OtpCode,
    /// Its verification.
    pub verification_id: VerificationId,
    /// Its purpose.
    pub purpose: Purpose,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The number, masked.
    pub masked_phone: String,
    /// The granted event.
    pub audit_event_id: uuid::Uuid,
}

/// Tells a driver's number that a team lead looked a code up for it (the lookup notice). Runs after the lookup
/// has answered; its outcome never reaches the team lead.
#[async_trait::async_trait]
pub trait LookupNotifier: Send + Sync + 'static {
    /// Sends the notice to `phone`.
    async fn notify(&self, phone: &PhoneNumber);
}

/// What a check of the whole audit chain found.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// Events that checked out.
    pub checked: i64,
    /// Of them, leading events sealed without a key (accepted as written before keyed chains).
    pub unkeyed: i64,
    /// The seal of the last event that checked out.
    pub head: String,
    /// The first bad event, if any.
    pub broken: Option<ChainError>,
}

/// Events read per page when the chain is verified.
const CHAIN_PAGE: u32 = 1000;

/// The supervisor-facing service.
#[derive(Clone)]
pub struct SupervisionService {
    audit: AuditLog,
    hasher: CodeHasher,
    clock: Arc<dyn Clock>,
    policy: Policy,
    lookup: LookupPolicy,
    metrics: Arc<Metrics>,
    /// The operator's `--accept-unkeyed-through`: never a caller's.
    unkeyed_through: i64,
    /// The lookup notice; None: off.
    notifier: Option<Arc<dyn LookupNotifier>>,
    /// The pumping guard, for its view of a prefix and admins' overrides.
    guard: Option<Arc<crate::service::SendGuard>>,
}

const LOOKUP_REASON: &str = "strong_complaint";

impl SupervisionService {
    /// Assembles the service.
    pub fn new(
        audit: AuditLog,
        hasher: CodeHasher,
        clock: Arc<dyn Clock>,
        policy: Policy,
        lookup: LookupPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { audit, hasher, clock, policy, lookup, metrics, unkeyed_through: 0, notifier: None, guard: None }
    }

    /// Sends `notifier`'s notice after every granted lookup.
    pub fn notifying(mut self, notifier: Arc<dyn LookupNotifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Accepts unkeyed links through audit sequence `seq` when the chain is verified (the operator's setting).
    pub fn accepting_unkeyed_through(mut self, seq: i64) -> Self {
        self.unkeyed_through = seq.max(0);
        self
    }

    /// Counts a supervisor call refused before it reached its flow (no token, a malformed request).
    pub fn count_refusal(&self, action: Option<AuditAction>, error: &ServiceError) {
        self.metrics.supervisor_call(action.into(), SupervisorOutcome::of(Some(error)));
    }

    /// Counts a flow's outcome and passes it on.
    fn counted<T>(&self, action: SupervisorAction, result: Result<T, ServiceError>) -> Result<T, ServiceError> {
        self.metrics.supervisor_call(action, SupervisorOutcome::of(result.as_ref().err()));
        result
    }

    fn store(&self) -> &Arc<dyn SupervisionStore> {
        self.audit.store()
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The keyed hash the log uses for `phone`.
    pub fn phone_key(&self, phone: &PhoneNumber) -> String {
        self.audit.phone_key(phone)
    }

    /// Records a refused call and returns `error`, or `AuditUnavailable` if it cannot be recorded: a refusal
    /// nobody can see later must not look like an ordinary one.
    pub async fn deny(&self, mut event: NewAuditEvent, error: ServiceError) -> ServiceError {
        event.outcome = AuditOutcome::Denied;
        match self.audit.append(event).await {
            Ok(_) => error,
            Err(e) => audit_failed(e),
        }
    }

    /// A denied event for an authenticated call that could not be parsed.
    pub fn invalid_request_event(
        &self,
        actor: &Actor,
        action: AuditAction,
        phone: Option<&PhoneNumber>,
        ticket: Option<&TicketId>,
        detail: String,
    ) -> NewAuditEvent {
        let mut event = self.audit.event(Some(actor), action, phone, AuditOutcome::Denied, detail);
        event.ticket_id = ticket.map(|t| t.as_str().to_owned());
        event
    }

    async fn require(
        &self,
        actor: &Actor,
        roles: &[Role],
        action: AuditAction,
        phone: Option<&PhoneNumber>,
    ) -> Result<(), ServiceError> {
        if actor.has_any(roles) {
            return Ok(());
        }
        let needed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let detail = format!("role {} may not do this (needs {} or admin)", actor.role, needed.join(" or "));
        let event = self.audit.event(Some(actor), action, phone, AuditOutcome::Denied, detail);
        Err(self.deny(event, ServiceError::WrongRole).await)
    }

    /// LookupCode: the contact number must be the number being verified; the number must not be locked; a
    /// pending verification must have had an SMS within the window; the supervisor's quota must allow it.
    /// Then a fresh code is issued for that verification and audited in one transaction.
    pub async fn lookup_code(&self, actor: &Actor, cmd: LookupCommand) -> Result<LookupOutcome, ServiceError> {
        let result = self.lookup(actor, cmd).await;
        self.counted(SupervisorAction::LookupCode, result)
    }

    #[tracing::instrument(
        skip_all,
        fields(actor = %actor.name, phone = tracing::field::Empty, ticket = cmd.ticket.as_str())
    )]
    async fn lookup(&self, actor: &Actor, cmd: LookupCommand) -> Result<LookupOutcome, ServiceError> {
        self.require(actor, &[Role::Supervisor], AuditAction::LookupCode, cmd.stated.phone()).await?;
        let now = self.clock.now();
        let mut event =
            self.audit.event(Some(actor), AuditAction::LookupCode, cmd.stated.phone(), AuditOutcome::Granted, "");
        event.ticket_id = Some(cmd.ticket.as_str().to_owned());
        event.reason = Some(LOOKUP_REASON.to_owned());
        let phone = match &cmd.stated {
            Stated::Call { call_id, phone } => {
                let call = self.vouching_call(actor, call_id, phone.as_ref(), &mut event, now).await?;
                call.number
            }
            Stated::Typed { phone, contact, contact_number } => {
                event.contact_channel = Some(*contact);
                event.evidence = Some(Evidence::Typed);
                if !self.lookup.evidence.allows_typed() {
                    event.detail = "CALL_REQUIRED: a typed number, where only a call the phone system reported \
                                    may vouch for it"
                        .into();
                    return Err(self.deny(event, ServiceError::CallRequired).await);
                }
                let matched = contact_number == phone;
                event.contact_matched = Some(matched);
                if !matched {
                    event.detail =
                        format!("contact number {} is not the number being verified", contact_number.masked());
                    return Err(self.deny(event, ServiceError::ThirdPartyNumber).await);
                }
                phone.clone()
            }
        };
        tracing::Span::current().record("phone", tracing::field::display(&phone));
        let cmd_phone = phone;
        let target = self.store().lookup_target(&cmd_phone, cmd.purpose, now).await?;
        if let Some(until) = target.locked_until {
            event.detail = crate::store::locked_detail(until);
            return Err(self.deny(event, ServiceError::LookupLocked { until }).await);
        }
        let window_start = now - self.lookup.window;
        let Some(pending) = target.pending.filter(|p| p.last_sent_at >= window_start) else {
            let minutes = self.lookup.window.num_minutes();
            event.detail = format!("no pending verification with an SMS in the last {minutes} minutes");
            return Err(self.deny(event, ServiceError::NoRecentSend).await);
        };

        // A driver is on the line: a check's priority, and no deadline of its own (the lookup must finish once begun).
        let slot = match self.hasher.admit(Work::Check, None, None).await {
            Ok(slot) => slot,
            Err(error) => {
                event.detail = "refused: the server is overloaded".into();
                return Err(self.deny(event, error.into()).await);
            }
        };
        let code = OtpCode::generate(self.policy.code_length);
        let hash = self.hasher.hash(slot, &code, pending.salt.clone()).await?;
        let now = self.clock.now();
        let new_code = NewCode {
            phone: cmd_phone.clone(),
            purpose: pending.purpose,
            hash,
            channel: Channel::Supervisor,
            now,
            expires_at: now + self.policy.code_ttl,
        };
        event.at = now;
        event.detail = format!("code issued for the {} verification {}", pending.purpose, pending.id);
        let issued =
            self.store().issue_supervisor_code(pending.id, new_code, self.lookup.quota, event, self.audit.key()).await;
        match issued.map_err(audit_failed)? {
            LookupIssue::Issued { expires_at, event } => {
                trace(&event);
                self.metrics.send(pending.purpose, Channel::Supervisor, SendResult::Delivered);
                if let Some(notifier) = &self.notifier {
                    // Its own task: the code goes back to the team lead now, whatever the notice meets.
                    let (notifier, phone) = (Arc::clone(notifier), cmd_phone.clone());
                    tokio::spawn(async move { notifier.notify(&phone).await });
                }
                Ok(LookupOutcome {
                    code,
                    verification_id: pending.id,
                    purpose: pending.purpose,
                    expires_at,
                    masked_phone: cmd_phone.masked().to_owned(),
                    audit_event_id: event.event.id,
                })
            }
            LookupIssue::QuotaExceeded { retry_at, event } => {
                trace(&event);
                let retry_after = (retry_at - now).to_std().unwrap_or(Duration::ZERO);
                Err(ServiceError::LookupQuota { retry_after })
            }
            LookupIssue::Locked { until, event } => {
                trace(&event);
                Err(ServiceError::LookupLocked { until })
            }
            LookupIssue::NotPending { event } => {
                trace(&event);
                Err(ServiceError::NoRecentSend)
            }
        }
    }

    /// The call `call_id` names, if it vouches for a lookup or status read by `actor` now: known, answered by
    /// the actor's agent id, not ended longer ago than the grace, and of the number named (if one was). Any
    /// other answer is audited as denied (with the call) and returned as its refusal. Completes `event` with the
    /// call's evidence and number.
    async fn vouching_call(
        &self,
        actor: &Actor,
        call_id: &CallId,
        named: Option<&PhoneNumber>,
        event: &mut NewAuditEvent,
        now: DateTime<Utc>,
    ) -> Result<Call, ServiceError> {
        if !self.lookup.evidence.allows_call() {
            let mut event = event.clone();
            event.detail = format!("CALL_EVIDENCE_OFF: call {call_id} named, but --lookup-evidence is typed");
            return Err(self.deny(event, ServiceError::CallEvidenceOff).await);
        }
        let Some(call) = self.store().call(call_id).await? else {
            let mut event = event.clone();
            event.detail = format!("CALL_NOT_FOUND: the phone system reported no call {call_id}");
            return Err(self.deny(event, ServiceError::CallNotFound).await);
        };
        // From here on the event names the call's number, whatever was typed.
        let mut with_call = self.audit.event(
            Some(actor),
            event.action,
            Some(&call.number),
            AuditOutcome::Granted,
            std::mem::take(&mut event.detail),
        );
        with_call.ticket_id = event.ticket_id.take();
        with_call.reason = event.reason.take();
        with_call.contact_channel = Some(match call.direction {
            CallDirection::Inbound => ContactChannel::InboundCall,
            CallDirection::Outbound => ContactChannel::OutboundCallback,
        });
        with_call.evidence = Some(Evidence::Call {
            call_id: call_id.as_str().to_owned(),
            direction: call.direction,
            number_masked: call.number.masked().to_owned(),
        });
        *event = with_call;
        let mine = call.answered_at.is_some() && actor.agent_id.as_ref().is_some_and(|a| *a == call.agent);
        if !mine {
            let mut event = event.clone();
            event.detail = match &actor.agent_id {
                None => format!("CALL_NOT_YOURS: {} has no agent id; call {call_id}", actor.name),
                Some(agent) => {
                    format!("CALL_NOT_YOURS: call {call_id} is answered by agent {}, not {agent}", call.agent)
                }
            };
            return Err(self.deny(event, ServiceError::CallNotYours).await);
        }
        if let Some(ended) = call.ended_at.filter(|ended| now - *ended > self.lookup.call_grace) {
            let mut event = event.clone();
            let ended = ended.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            event.detail = format!("CALL_ENDED: call {call_id} ended at {ended}");
            return Err(self.deny(event, ServiceError::CallEnded).await);
        }
        if event.action == AuditAction::LookupCode {
            event.contact_matched = Some(named.is_none_or(|n| *n == call.number));
        }
        if let Some(named) = named.filter(|n| **n != call.number) {
            let mut event = event.clone();
            event.detail = format!(
                "THIRD_PARTY_NUMBER: {} named, but call {call_id} is with {}",
                named.masked(),
                call.number.masked()
            );
            return Err(self.deny(event, ServiceError::ThirdPartyNumber).await);
        }
        Ok(call)
    }

    /// The agent's answered calls that have not ended (the console's "On the line"), each with when the driver's
    /// latest send was recorded (within the lookup window). Any role with an agent id; not audited: it names only
    /// calls the phone system already gave the caller, and whether a lookup by one could rest on a send, so that
    /// the console can wait for the driver to press send without a denied lookup (or a status read) per poll.
    pub async fn my_calls(&self, actor: &Actor) -> Result<Vec<(Call, Option<DateTime<Utc>>)>, ServiceError> {
        let Some(agent) = &actor.agent_id else { return Ok(Vec::new()) };
        // A send counts only within the lookup window, as the lookup itself judges it.
        let window_start = self.clock.now() - self.lookup.window;
        let calls = self.store().agent_calls(agent).await?;
        Ok(calls.into_iter().map(|c| (c.call, c.last_sent_at.filter(|at| *at >= window_start))).collect())
    }

    /// The evidence policy in force.
    pub fn evidence_policy(&self) -> EvidencePolicy {
        self.lookup.evidence
    }

    /// GetPhoneStatus, audited. Returns the number whose status it is.
    pub async fn phone_status(
        &self,
        actor: &Actor,
        target: StatusTarget,
        ticket: &TicketId,
    ) -> Result<(PhoneStatus, AuditEvent, PhoneNumber), ServiceError> {
        let result = self.status(actor, target, ticket).await;
        self.counted(SupervisorAction::GetPhoneStatus, result)
    }

    #[tracing::instrument(skip_all, fields(actor = %actor.name))]
    async fn status(
        &self,
        actor: &Actor,
        target: StatusTarget,
        ticket: &TicketId,
    ) -> Result<(PhoneStatus, AuditEvent, PhoneNumber), ServiceError> {
        let named = match &target {
            StatusTarget::Number(phone) => Some(phone),
            StatusTarget::Call { phone, .. } => phone.as_ref(),
        };
        self.require(actor, &[Role::Supervisor], AuditAction::GetPhoneStatus, named).await?;
        let now = self.clock.now();
        let mut event = self.audit.event(Some(actor), AuditAction::GetPhoneStatus, named, AuditOutcome::Granted, "");
        event.ticket_id = Some(ticket.as_str().to_owned());
        let phone = match &target {
            StatusTarget::Number(phone) => phone.clone(),
            StatusTarget::Call { call_id, phone } => {
                self.vouching_call(actor, call_id, phone.as_ref(), &mut event, now).await?.number
            }
        };
        let status = self.store().phone_status(&phone, now).await?;
        event.detail = format!(
            "failed attempts {}, locked {}, {} pending verification(s)",
            status.failed_attempts,
            status.locked_until.is_some(),
            status.pending.iter().filter(|v| v.approved_at.is_none()).count()
        );
        let event = self.audit.append(event).await.map_err(audit_failed)?;
        Ok((status, event, phone))
    }

    /// UnlockPhone: admin only, audited in the same transaction.
    pub async fn unlock_phone(
        &self,
        actor: &Actor,
        phone: &PhoneNumber,
        ticket: &TicketId,
        reason: &Reason,
    ) -> Result<(Unlocked, AuditEvent), ServiceError> {
        let result = self.unlock(actor, phone, ticket, reason).await;
        self.counted(SupervisorAction::UnlockPhone, result)
    }

    #[tracing::instrument(skip_all, fields(actor = %actor.name, phone = %phone))]
    async fn unlock(
        &self,
        actor: &Actor,
        phone: &PhoneNumber,
        ticket: &TicketId,
        reason: &Reason,
    ) -> Result<(Unlocked, AuditEvent), ServiceError> {
        self.require(actor, &[Role::Admin], AuditAction::UnlockPhone, Some(phone)).await?;
        let mut event =
            self.audit.event(Some(actor), AuditAction::UnlockPhone, Some(phone), AuditOutcome::Granted, "unlocked");
        event.ticket_id = Some(ticket.as_str().to_owned());
        event.reason = Some(reason.as_str().to_owned());
        let unlocked = self.store().unlock_phone(phone, self.clock.now(), event, self.audit.key()).await;
        let (unlocked, event) = unlocked.map_err(audit_failed)?;
        trace(&event);
        Ok((unlocked, event))
    }

    /// ListAuditEvents: auditor or admin; the read itself is audited.
    pub async fn list_audit(
        &self,
        actor: &Actor,
        filter: AuditFilter,
        phone: Option<&PhoneNumber>,
    ) -> Result<Vec<AuditEvent>, ServiceError> {
        let result = self.audit_events(actor, filter, phone).await;
        self.counted(SupervisorAction::ListAuditEvents, result)
    }

    #[tracing::instrument(skip_all, fields(actor = %actor.name))]
    async fn audit_events(
        &self,
        actor: &Actor,
        filter: AuditFilter,
        phone: Option<&PhoneNumber>,
    ) -> Result<Vec<AuditEvent>, ServiceError> {
        self.require(actor, &[Role::Auditor], AuditAction::ListAuditEvents, phone).await?;
        let events = self.store().audit_events(&filter).await?;
        let detail = format!("listed {} event(s)", events.len());
        let event = self.audit.event(Some(actor), AuditAction::ListAuditEvents, phone, AuditOutcome::Granted, detail);
        self.audit.append(event).await.map_err(audit_failed)?;
        Ok(events)
    }

    /// VerifyAuditChain: auditor or admin. Checks every link and seal from the first event, as `otpd audit verify`
    /// does, then records the check (so the report describes the chain before this call's own event).
    #[tracing::instrument(skip_all, fields(actor = %actor.name))]
    /// VerifyAuditChain, audited: every link and seal, and that the chain still reaches each of `heads` (kept
    /// outside the database) unchanged.
    pub async fn verify_audit_chain(
        &self,
        actor: &Actor,
        heads: Vec<HeadPin>,
    ) -> Result<(ChainReport, AuditEvent), ServiceError> {
        let result = self.check_audit_chain(actor, heads).await;
        self.counted(SupervisorAction::VerifyAuditChain, result)
    }

    async fn check_audit_chain(
        &self,
        actor: &Actor,
        heads: Vec<HeadPin>,
    ) -> Result<(ChainReport, AuditEvent), ServiceError> {
        self.require(actor, &[Role::Auditor], AuditAction::VerifyAuditChain, None).await?;
        let pinned = heads.len();
        let expect = Expectations { heads, unkeyed_through: self.unkeyed_through };
        let mut verifier = ChainVerifier::new(self.audit.key().clone(), expect);
        let mut broken = None;
        'pages: loop {
            let page = self.store().audit_chain(verifier.checked(), CHAIN_PAGE).await?;
            for event in &page {
                if let Err(error) = verifier.check(event) {
                    broken = Some(error);
                    break 'pages;
                }
            }
            if page.len() < CHAIN_PAGE as usize {
                break;
            }
        }
        // A kept head past the end is a cut-off tail.
        if broken.is_none() {
            broken = verifier.finish().err();
        }
        let report = ChainReport {
            checked: verifier.checked(),
            unkeyed: verifier.unkeyed(),
            head: verifier.head().to_owned(),
            broken,
        };
        // What the verdict rested on is part of the record: an unkeyed prefix accepted by the operator's setting
        // is named, so a chain re-sealed without the key cannot pass as plainly "intact".
        let basis = format!(
            "{} unkeyed accepted through seq {}, {pinned} kept head(s) checked",
            report.unkeyed, self.unkeyed_through
        );
        let detail = match &report.broken {
            None => {
                format!("chain intact: {} events ({basis}), head {}:{}", report.checked, report.checked, report.head)
            }
            Some(error) => format!("chain broken at {error} ({basis})"),
        };
        let event = self.audit.event(Some(actor), AuditAction::VerifyAuditChain, None, AuditOutcome::Granted, detail);
        let event = self.audit.append(event).await.map_err(audit_failed)?;
        Ok((report, event))
    }

    /// Refuses a disabled supervisor's call as `action`, auditing the number and ticket it named (as the other
    /// denials do), so an auditor sees which driver a revoked token went after.
    pub async fn refuse_disabled(
        &self,
        disabled: &DisabledActor,
        action: AuditAction,
        phone: Option<&PhoneNumber>,
        ticket: Option<&TicketId>,
    ) -> ServiceError {
        let mut event = self.audit.event(Some(&disabled.actor), action, phone, AuditOutcome::Denied, "");
        event.ticket_id = ticket.map(|t| t.as_str().to_owned());
        let error = self.refused_disabled(event, disabled.disabled_at, disabled.held_back).await;
        self.count_refusal(Some(action), &error);
        error
    }

    async fn refused_disabled(
        &self,
        mut event: NewAuditEvent,
        disabled_at: DateTime<Utc>,
        held_back: u32,
    ) -> ServiceError {
        let when = disabled_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        event.detail = format!("SUPERVISOR_DISABLED: the token of a supervisor disabled at {when}");
        if held_back > 0 {
            event
                .detail
                .push_str(&format!(" ({held_back} more such call(s) since the last event, not recorded one by one)"));
        }
        self.deny(event, ServiceError::SupervisorDisabled).await
    }
}

/// A write that carries a supervisor call's audit event failed: the call did not happen.
fn audit_failed(error: crate::store::StoreError) -> ServiceError {
    tracing::error!(error = %crate::telemetry::ErrorChain(&error), "could not write a supervisor call's audit event");
    ServiceError::AuditUnavailable
}
