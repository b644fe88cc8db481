//! The pumping guard for the call centre (issue 18 §2): what the guard sees of a prefix, and an admin's exemption or
//! block of one until a time, audited with what it replaced.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::{SupervisionService, audit_failed, trace};
use crate::domain::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::domain::guard::{GuardFigures, GuardPolicy, Override, OverrideAction, Verdict};
use crate::domain::{Actor, PhoneNumber, Reason, Role, TicketId};
use crate::metrics::SupervisorAction;
use crate::service::{SendGuard, ServiceError};

/// The longest an admin's exemption or block may last: long enough for a campaign or an incident, short enough
/// that a forgotten one ends.
pub const MAX_OVERRIDE: TimeDelta = TimeDelta::days(30);

/// What the guard sees of one prefix.
#[derive(Debug, Clone)]
pub struct PrefixGuardView {
    /// The guard's settings.
    pub policy: GuardPolicy,
    /// The figures it read.
    pub figures: GuardFigures,
    /// Its decision now.
    pub verdict: Verdict,
    /// When the figures next move without a new send.
    pub next_evaluation: DateTime<Utc>,
    /// When it was read.
    pub now: DateTime<Utc>,
}

/// What an admin asks for a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardChange {
    /// Exempt or block until a time.
    Set(OverrideAction, DateTime<Utc>),
    /// Remove an exemption or block.
    Clear,
}

impl SupervisionService {
    /// Shows and changes `guard`'s view of prefixes.
    pub fn guarding(mut self, guard: Arc<SendGuard>) -> Self {
        self.guard = Some(guard);
        self
    }

    fn guard(&self) -> Result<&Arc<SendGuard>, ServiceError> {
        self.guard.as_ref().ok_or(ServiceError::FactorUnavailable("the pumping guard is not configured"))
    }

    /// The prefix of a number as the guard keys it.
    pub fn prefix_of(&self, phone: &PhoneNumber) -> Option<String> {
        self.guard.as_ref().map(|g| g.policy().prefix_of(phone.e164()))
    }

    /// How many digits make a prefix, when the guard is set up.
    pub fn prefix_digits(&self) -> Option<usize> {
        self.guard.as_ref().map(|g| g.policy().prefix_digits)
    }

    /// The guard's view of `prefix` (of country `country`) now.
    pub async fn guard_view(&self, prefix: &str, country: &str) -> Result<PrefixGuardView, ServiceError> {
        let guard = self.guard()?;
        let now = self.clock.now();
        let figures = guard.figures(prefix, country, now).await?;
        let policy = *guard.policy();
        Ok(PrefixGuardView {
            verdict: policy.decide(&figures, now),
            next_evaluation: policy.next_evaluation(now),
            figures,
            policy,
            now,
        })
    }

    /// GetPrefixGuard: supervisor or admin; reads counts of a range, no one's number, so not audited.
    pub async fn prefix_guard(
        &self,
        actor: &Actor,
        prefix: &str,
        country: &str,
    ) -> Result<PrefixGuardView, ServiceError> {
        if !actor.has_any(&[Role::Supervisor]) {
            return Err(ServiceError::WrongRole);
        }
        self.guard_view(prefix, country).await
    }

    /// SetPrefixGuard: admin only; the change and its audit event in one transaction.
    pub async fn set_prefix_guard(
        &self,
        actor: &Actor,
        (prefix, country): (&str, &str),
        change: GuardChange,
        ticket: &TicketId,
        reason: &Reason,
    ) -> Result<(PrefixGuardView, AuditEvent), ServiceError> {
        let result = self.change_prefix_guard(actor, (prefix, country), change, ticket, reason).await;
        self.counted(SupervisorAction::SetPrefixGuard, result)
    }

    #[tracing::instrument(skip_all, fields(actor = %actor.name, prefix))]
    async fn change_prefix_guard(
        &self,
        actor: &Actor,
        (prefix, country): (&str, &str),
        change: GuardChange,
        ticket: &TicketId,
        reason: &Reason,
    ) -> Result<(PrefixGuardView, AuditEvent), ServiceError> {
        self.require(actor, &[Role::Admin], AuditAction::PrefixGuardSet, None).await?;
        let guard = self.guard()?;
        let now = self.clock.now();
        let mut event = self.audit.event(Some(actor), AuditAction::PrefixGuardSet, None, AuditOutcome::Granted, "");
        event.ticket_id = Some(ticket.as_str().to_owned());
        event.reason = Some(reason.as_str().to_owned());
        if let GuardChange::Set(_, until) = change {
            if until <= now || until > now + MAX_OVERRIDE {
                event.detail = format!("prefix {prefix}: refused, the end must be in the next 30 days");
                let invalid = ServiceError::InvalidArgument(vec![crate::service::FieldViolation {
                    field: "until",
                    reason: "INVALID_ARGUMENT",
                    description: "must be in the future, at most 30 days ahead".into(),
                }]);
                return Err(self.deny(event, invalid).await);
            }
        }
        let value = match change {
            GuardChange::Set(action, until) => Some(Override {
                action,
                until,
                ticket_id: ticket.as_str().to_owned(),
                reason: reason.as_str().to_owned(),
                set_by: actor.name.clone(),
                set_at: now,
            }),
            GuardChange::Clear => None,
        };
        let what = match &value {
            Some(o) => {
                format!("{} until {}", o.action.as_str(), o.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }
            None => "cleared".to_owned(),
        };
        // What the guard decided just before, so the log shows what the change overruled.
        let before = guard.figures(prefix, country, now).await?;
        let decided = match guard.policy().decide(&before, now) {
            Verdict::Guarded(trip) => format!("guarded: {}", trip.explain()),
            other => other.as_str().to_owned(),
        };
        event.detail = format!("prefix {prefix}: {what} (the guard's decision before: {decided})");
        let (previous, event) = guard
            .store()
            .set_guard_override(prefix, value.as_ref(), event, self.audit.key())
            .await
            .map_err(audit_failed)?;
        if let Some(previous) = previous.filter(|p| p.until > now) {
            tracing::info!(action = previous.action.as_str(), by = %previous.set_by, "replaced an earlier override");
        }
        trace(&event);
        Ok((self.guard_view(prefix, country).await?, event))
    }
}
