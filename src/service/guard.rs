//! What a send asks the shared store before any hashing (issue 18 §1–2): the pumping guard's decision, then one
//! charge against the shared SMS budgets; and what it tells the store after: a send handed to a provider, an
//! approval. Every replica decides from the same rows, so every replica decides alike.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::ServiceError;
use super::error::{GuardRefusal, until};
use crate::clock::Clock;
use crate::domain::PhoneNumber;
use crate::domain::guard::{GuardFigures, GuardMode, GuardPolicy, Verdict};
use crate::limits::Limit;
use crate::metrics::{GuardDecision, GuardModeLabel, Metrics, SharedBudget};
use crate::store::GuardStore;
use crate::store::guard::{Budget, GuardQuery};

/// The budget key of the whole service.
pub const SERVICE_BUDGET: &str = "service";

/// The shared budgets and the pumping guard of one replica (its state is all in the store).
pub struct SendGuard {
    store: Arc<dyn GuardStore>,
    policy: GuardPolicy,
    per_prefix: Limit,
    service: Limit,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl SendGuard {
    /// The guard for `policy`, with the per-prefix and service-wide budgets of `--sms-limit-per-prefix` and
    /// `--global-sms-limit` (each replica also keeps them in memory as its first shield).
    pub fn new(
        store: Arc<dyn GuardStore>,
        policy: GuardPolicy,
        per_prefix: Limit,
        service: Limit,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { store, policy, per_prefix, service, clock, metrics }
    }

    /// Where its state is kept.
    pub fn store(&self) -> &Arc<dyn GuardStore> {
        &self.store
    }

    /// The guard's settings.
    pub fn policy(&self) -> &GuardPolicy {
        &self.policy
    }

    /// The guard's figures for a prefix and country at `now`.
    pub async fn figures(&self, prefix: &str, country: &str, now: DateTime<Utc>) -> Result<GuardFigures, ServiceError> {
        let query = GuardQuery {
            prefix: prefix.to_owned(),
            country: country.to_owned(),
            short_since_ms: self.policy.window_start(self.policy.short.length, now),
            long_since_ms: self.policy.window_start(self.policy.long.length, now),
        };
        Ok(self.store.guard_figures(&query).await?)
    }

    /// The decision for `phone`'s prefix at `now`, for a send (the status view decides from `figures` itself).
    async fn verdict(&self, phone: &PhoneNumber, now: DateTime<Utc>) -> Result<Verdict, ServiceError> {
        let prefix = self.policy.prefix_of(phone.e164());
        let figures = self.figures(&prefix, &phone.calling_code().to_string(), now).await?;
        Ok(self.policy.decide(&figures, now))
    }

    /// Before any hashing: the guard (refusing only in enforce mode), then one charge against the shared
    /// budgets.
    pub async fn admit(&self, phone: &PhoneNumber) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let mode = match self.policy.mode {
            GuardMode::Off => None,
            GuardMode::Shadow => Some(GuardModeLabel::Shadow),
            GuardMode::Enforce => Some(GuardModeLabel::Enforce),
        };
        if let Some(mode) = mode {
            let verdict = self.verdict(phone, now).await?;
            self.record(mode, &verdict, now);
            if verdict.refuses() && mode == GuardModeLabel::Enforce {
                let retry_at = match &verdict {
                    Verdict::Blocked(o) => o.until,
                    _ => self.policy.next_evaluation(now),
                };
                let retry_after = until(retry_at, now).max(Duration::from_secs(1));
                return Err(ServiceError::PumpingGuard(Box::new(GuardRefusal { verdict, retry_at, retry_after })));
            }
        }
        self.charge(phone, now).await
    }

    /// A metric for every decision and a log line for each that guards. The line is a root event, outside the
    /// send's span: the prefix beside the masked number would give away all but one digit.
    fn record(&self, mode: GuardModeLabel, verdict: &Verdict, now: DateTime<Utc>) {
        let decision = match verdict {
            Verdict::Clear => GuardDecision::Clear,
            Verdict::Exempt(_) => GuardDecision::Exempt,
            Verdict::Guarded(_) => GuardDecision::Guarded,
            Verdict::Blocked(_) => GuardDecision::Blocked,
        };
        self.metrics.guard_decision(mode, decision);
        match verdict {
            Verdict::Guarded(trip) => tracing::warn!(
                parent: None,
                mode = mode.as_str(),
                scope = trip.scope.as_str(),
                key = %trip.key,
                sends = trip.sends,
                approvals = trip.approvals,
                next_evaluation = %self.policy.next_evaluation(now).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "pumping guard: {}{}",
                trip.explain(),
                if mode == GuardModeLabel::Shadow { " (shadow: sent anyway)" } else { "; send refused" }
            ),
            Verdict::Blocked(o) => tracing::warn!(
                parent: None,
                mode = mode.as_str(),
                until = %o.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ticket = %o.ticket_id,
                "pumping guard: prefix blocked by {}{}",
                o.set_by,
                if mode == GuardModeLabel::Shadow { " (shadow: sent anyway)" } else { "; send refused" }
            ),
            Verdict::Clear | Verdict::Exempt(_) => {}
        }
    }

    /// One atomic statement charges the prefix's and the service's budgets.
    async fn charge(&self, phone: &PhoneNumber, now: DateTime<Utc>) -> Result<(), ServiceError> {
        let prefix = self.policy.prefix_of(phone.e164());
        let budget = |key: String, limit: Limit| {
            limit.rate.map(|rate| Budget {
                key,
                interval_ms: i64::try_from(rate.interval().as_millis()).unwrap_or(i64::MAX),
                burst: limit.burst.max(1),
            })
        };
        let budgets: Vec<Budget> = [
            budget(crate::store::guard::prefix_key(&prefix), self.per_prefix),
            budget(SERVICE_BUDGET.to_owned(), self.service),
        ]
        .into_iter()
        .flatten()
        .collect();
        let refused = self.store.charge_budgets(&budgets, now).await?;
        let Some(refusal) = refused.into_iter().max_by_key(|r| r.retry_at) else {
            return Ok(());
        };
        let (budget, limit) = if refusal.key == SERVICE_BUDGET {
            (SharedBudget::Service, "global_sms")
        } else {
            (SharedBudget::Prefix, "destination_prefix")
        };
        self.metrics.budget_refused(budget);
        Err(ServiceError::RateLimited {
            limit,
            retry_after: until(refusal.retry_at, now).max(Duration::from_millis(1)),
        })
    }

    /// A send handed to a provider: one more in its prefix's and country's bucket. The count is what later
    /// decisions rest on, but losing one costs the send nothing: it is logged, not returned.
    pub async fn count_send(&self, phone: &PhoneNumber) {
        self.count(phone, 1, 0).await;
    }

    /// An approval: one more in its prefix's and country's bucket.
    pub async fn count_approval(&self, phone: &PhoneNumber) {
        self.count(phone, 0, 1).await;
    }

    async fn count(&self, phone: &PhoneNumber, sends: u32, approvals: u32) {
        if self.policy.mode == GuardMode::Off {
            return;
        }
        let prefix = self.policy.prefix_of(phone.e164());
        let bucket = self.policy.bucket(self.clock.now());
        let country = phone.calling_code().to_string();
        if let Err(error) = self.store.count_guard(&prefix, &country, bucket, sends, approvals).await {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "could not count for the pumping guard");
        }
    }
}
