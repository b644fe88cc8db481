//! Prometheus metrics, served as OpenMetrics text on `--metrics-listen` (`GET /metrics`), built on
//! prometheus-client (prometheus/client_rust, the Prometheus project's own Rust client: typed label sets, no
//! global registry, OpenMetrics encoding).
//!
//! Every metric is registered here, in one [`Metrics`] per application, and handed explicitly to the parts that
//! count (tests run several applications in one process and expect exact counts). Every label is an enum of
//! [`labels`], so each metric's cardinality is bounded by its type, and no label can carry a phone number, a code,
//! a token, a ticket or a supervisor's name. docs/operations.md lists every metric with its cardinality.

pub mod labels;
mod rpc;
mod serve;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::audit::{AuditAction, AuditOutcome};
use crate::domain::{Channel, Purpose};
pub use labels::*;
pub use rpc::{RpcMetered, RpcMetricsLayer};
pub use serve::{OPENMETRICS_CONTENT_TYPE, router};

/// OpenTelemetry's recommended boundaries for `rpc.server.call.duration` (and every duration in seconds of the
/// semantic conventions), seconds.
pub const OTEL_DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Boundaries for argon2 work and its queue, seconds: one hash takes tens of milliseconds.
const HASH_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn otel_histogram() -> Histogram {
    Histogram::new(OTEL_DURATION_BUCKETS)
}

fn hash_histogram() -> Histogram {
    Histogram::new(HASH_BUCKETS)
}

/// Every metric of one application, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    rpc_duration: HistogramFamily<RpcLabels>,
    rpc_calls: Family<RpcLabels, Counter>,
    sends: Family<SendLabels, Counter>,
    verifications: Family<VerifyLabels, Counter>,
    lockouts: Family<PurposeLabels, Counter>,
    supervisor_calls: Family<SupervisorLabels, Counter>,
    gateway_attempts: Family<AttemptLabels, Counter>,
    gateway_attempt_duration: Histogram,
    gateway_delivery_duration: Histogram,
    gateway_failures: Family<FailureLabels, Counter>,
    breaker_state: Gauge,
    breaker_opened: Counter,
    route_attempts: Family<RouteLabels, Counter>,
    route_breakers: Family<RouteBreakerLabels, Gauge>,
    route_demotions: Family<RouteDemotionLabels, Counter>,
    refusals: Family<LimitLabels, Counter>,
    hash_queue_depth: Gauge,
    hash_queue_limit: Gauge,
    hash_queue_wait: Histogram,
    hash_duration: HistogramFamily<HashLabels>,
    hash_refusals: Family<HashRefusalLabels, Counter>,
    db_errors: Family<DbErrorLabels, Counter>,
    audit_appends: Family<AuditLabels, Counter>,
    connections_closed: Family<ConnectionLabels, Counter>,
    guard_decisions: Family<GuardLabels, Counter>,
    budget_refusals: Family<BudgetLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            rpc_duration: Family::new_with_constructor(otel_histogram),
            rpc_calls: Family::default(),
            sends: Family::default(),
            verifications: Family::default(),
            lockouts: Family::default(),
            supervisor_calls: Family::default(),
            gateway_attempts: Family::default(),
            gateway_attempt_duration: otel_histogram(),
            gateway_delivery_duration: otel_histogram(),
            gateway_failures: Family::default(),
            breaker_state: Gauge::default(),
            breaker_opened: Counter::default(),
            route_attempts: Family::default(),
            route_breakers: Family::default(),
            route_demotions: Family::default(),
            refusals: Family::default(),
            hash_queue_depth: Gauge::default(),
            hash_queue_limit: Gauge::default(),
            hash_queue_wait: hash_histogram(),
            hash_duration: Family::new_with_constructor(hash_histogram),
            hash_refusals: Family::default(),
            db_errors: Family::default(),
            audit_appends: Family::default(),
            connections_closed: Family::default(),
            guard_decisions: Family::default(),
            budget_refusals: Family::default(),
        };
        metrics.register();
        // The two sides of the conversion exist from the start, so that a ratio is defined at the first scrape.
        for purpose in Purpose::ALL {
            let _ = metrics.sends.get_or_create(&SendLabels {
                purpose,
                channel: Channel::Sms,
                outcome: SendResult::Delivered,
            });
            let _ = metrics.verifications.get_or_create(&VerifyLabels { purpose, result: VerifyResult::Approved });
            let _ = metrics.lockouts.get_or_create(&PurposeLabels { purpose });
        }
        metrics
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        // Named after OpenTelemetry's RPC semantic conventions, as the OpenTelemetry Prometheus exporter names them.
        r.register_with_unit(
            "rpc_server_call_duration",
            "Duration of incoming gRPC calls, until the status is sent (rpc.server.call.duration)",
            Unit::Seconds,
            self.rpc_duration.clone(),
        );
        r.register("rpc_server_calls", "Incoming gRPC calls, by method and status", self.rpc_calls.clone());

        let r = r.sub_registry_with_prefix("otpd");
        r.register(
            "sends",
            "Codes sent (SendCode, supervisor lookups), by purpose, channel and outcome",
            self.sends.clone(),
        );
        r.register(
            "verifications",
            "VerifyCode calls that reached the service, by purpose and result",
            self.verifications.clone(),
        );
        r.register(
            "lockouts",
            "Numbers locked by their last allowed wrong code, by the purpose of that check",
            self.lockouts.clone(),
        );
        r.register("supervisor_calls", "SupervisorService calls, by action and outcome", self.supervisor_calls.clone());
        r.register(
            "sms_gateway_attempts",
            "HTTP requests to the SMS provider, by result",
            self.gateway_attempts.clone(),
        );
        r.register_with_unit(
            "sms_gateway_attempt_duration",
            "Duration of one HTTP request to the SMS provider",
            Unit::Seconds,
            self.gateway_attempt_duration.clone(),
        );
        r.register_with_unit(
            "sms_delivery_duration",
            "Duration of handing one SMS to the gateway, retries included",
            Unit::Seconds,
            self.gateway_delivery_duration.clone(),
        );
        r.register("sms_gateway_failures", "SMS deliveries that failed, by kind", self.gateway_failures.clone());
        r.register(
            "sms_breaker_state",
            "The SMS circuit breaker: 0 closed, 1 open, 2 half-open",
            self.breaker_state.clone(),
        );
        r.register("sms_breaker_opened", "Times the SMS circuit breaker opened", self.breaker_opened.clone());
        r.register(
            "delivery_route_attempts",
            "Each route's attempts to carry a code or notice, by outcome",
            self.route_attempts.clone(),
        );
        r.register(
            "delivery_route_breaker_state",
            "Each route's circuit breaker: 0 closed, 1 open, 2 half-open",
            self.route_breakers.clone(),
        );
        r.register(
            "delivery_route_demotions",
            "Sends that tried a route after the others because of the number's history, by why",
            self.route_demotions.clone(),
        );
        r.register(
            "pumping_guard_decisions",
            "The pumping guard's decision for each send it judged, by mode and decision",
            self.guard_decisions.clone(),
        );
        r.register(
            "shared_budget_refusals",
            "Sends refused by an SMS budget shared across replicas, by budget",
            self.budget_refusals.clone(),
        );
        r.register(
            "front_line_refusals",
            "Calls refused by a per-replica front-line limit, by limit",
            self.refusals.clone(),
        );
        r.register(
            "hash_queue_depth",
            "Places taken in the hashing queue (waiting or running)",
            self.hash_queue_depth.clone(),
        );
        r.register("hash_queue_limit", "The hashing queue's bound", self.hash_queue_limit.clone());
        r.register_with_unit(
            "hash_queue_wait",
            "Time from asking for an argon2 worker to starting on it",
            Unit::Seconds,
            self.hash_queue_wait.clone(),
        );
        r.register_with_unit(
            "hash_duration",
            "Duration of one argon2 job, by operation",
            Unit::Seconds,
            self.hash_duration.clone(),
        );
        r.register("hash_queue_refusals", "Work refused by the hashing queue, by reason", self.hash_refusals.clone());
        r.register("database_errors", "Failed store operations, by operation and kind", self.db_errors.clone());
        r.register("audit_appends", "Audit events appended, by action and outcome", self.audit_appends.clone());
        r.register(
            "connections_closed",
            "Connections otpd closed itself (off the allowlist, over a cap, or no request in time), by listener and reason",
            self.connections_closed.clone(),
        );
    }

    /// The exposition, in OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// A finished gRPC call.
    pub fn rpc_call(&self, method: RpcMethod, status: GrpcStatus, took: Duration) {
        let labels =
            RpcLabels { rpc_system_name: RpcSystem::Grpc, rpc_method: method, rpc_response_status_code: status };
        self.rpc_duration.get_or_create(&labels).observe(took.as_secs_f64());
        self.rpc_calls.get_or_create(&labels).inc();
    }

    /// A send's outcome.
    pub fn send(&self, purpose: Purpose, channel: Channel, outcome: SendResult) {
        self.sends.get_or_create(&SendLabels { purpose, channel, outcome }).inc();
    }

    /// A check's result.
    pub fn verification(&self, purpose: Purpose, result: VerifyResult) {
        self.verifications.get_or_create(&VerifyLabels { purpose, result }).inc();
    }

    /// A number was locked.
    pub fn lockout(&self, purpose: Purpose) {
        self.lockouts.get_or_create(&PurposeLabels { purpose }).inc();
    }

    /// A supervisor call's outcome.
    pub fn supervisor_call(&self, action: SupervisorAction, outcome: SupervisorOutcome) {
        self.supervisor_calls.get_or_create(&SupervisorLabels { action, outcome }).inc();
    }

    /// One HTTP request to the provider.
    pub fn gateway_attempt(&self, result: GatewayAttempt, took: Duration) {
        self.gateway_attempts.get_or_create(&AttemptLabels { result }).inc();
        self.gateway_attempt_duration.observe(took.as_secs_f64());
    }

    /// One SMS handed to the gateway: how long it took, and why it failed if it did.
    pub fn sms_delivery(&self, took: Duration, failure: Option<GatewayFailure>) {
        self.gateway_delivery_duration.observe(took.as_secs_f64());
        if let Some(kind) = failure {
            self.gateway_failures.get_or_create(&FailureLabels { kind }).inc();
        }
    }

    /// A delivery no channel was asked to carry (`circuit_open`): counted as a failure, with no duration.
    pub fn sms_refused(&self, kind: GatewayFailure) {
        self.gateway_failures.get_or_create(&FailureLabels { kind }).inc();
    }

    /// The breaker's state now.
    pub fn breaker(&self, state: BreakerState) {
        let index = BreakerState::ALL.iter().position(|s| *s == state).unwrap_or(0);
        self.breaker_state.set(i64::try_from(index).unwrap_or(0));
    }

    /// One route's attempt and what it came to.
    pub fn route_attempt(&self, route: Route, outcome: RouteOutcome) {
        self.route_attempts.get_or_create(&RouteLabels { route, outcome }).inc();
    }

    /// A route's breaker state now.
    pub fn route_breaker(&self, route: Route, state: BreakerState) {
        let index = BreakerState::ALL.iter().position(|s| *s == state).unwrap_or(0);
        self.route_breakers.get_or_create(&RouteBreakerLabels { route }).set(i64::try_from(index).unwrap_or(0));
    }

    /// A send tried `route` after the others, for `why`.
    pub fn route_demoted(&self, route: Route, why: RouteDemotion) {
        self.route_demotions.get_or_create(&RouteDemotionLabels { route, why }).inc();
    }

    /// Front-line refusals since start, per limit (`otpd doctor`).
    pub fn front_line_refusals(&self) -> Vec<(FrontLimit, u64)> {
        FrontLimit::ALL
            .iter()
            .map(|&limit| (limit, self.refusals.get_or_create(&LimitLabels { limit }).get()))
            .collect()
    }

    /// The breaker opened after failures (not a probe given back).
    pub fn breaker_opened(&self) {
        self.breaker_opened.inc();
    }

    /// A front-line limit refused a call.
    pub fn refused(&self, limit: FrontLimit) {
        self.refusals.get_or_create(&LimitLabels { limit }).inc();
    }

    /// The pumping guard judged a send.
    pub fn guard_decision(&self, mode: GuardModeLabel, decision: GuardDecision) {
        self.guard_decisions.get_or_create(&GuardLabels { mode, decision }).inc();
    }

    /// A shared SMS budget refused a send.
    pub fn budget_refused(&self, budget: SharedBudget) {
        self.budget_refusals.get_or_create(&BudgetLabels { budget }).inc();
    }

    /// The hashing queue's bound.
    pub fn hash_queue_limit(&self, limit: usize) {
        self.hash_queue_limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// A place in the hashing queue was taken (`true`) or given back.
    pub fn hash_queue_place(&self, taken: bool) {
        if taken {
            self.hash_queue_depth.inc();
        } else {
            self.hash_queue_depth.dec();
        }
    }

    /// Work waited this long for an argon2 worker.
    pub fn hash_queue_wait(&self, waited: Duration) {
        self.hash_queue_wait.observe(waited.as_secs_f64());
    }

    /// One argon2 job.
    pub fn hash_duration(&self, operation: HashOperation, took: Duration) {
        self.hash_duration.get_or_create(&HashLabels { operation }).observe(took.as_secs_f64());
    }

    /// The hashing queue refused work.
    pub fn hash_refused(&self, reason: HashRefusal) {
        self.hash_refusals.get_or_create(&HashRefusalLabels { reason }).inc();
    }

    /// A listener closed a connection itself.
    pub fn connection_closed(&self, listener: ListenerName, reason: ConnectionClose) {
        self.connections_closed.get_or_create(&ConnectionLabels { listener, reason }).inc();
    }

    /// A store operation failed.
    pub fn db_error(&self, operation: StoreOperation, kind: DbErrorKind) {
        self.db_errors.get_or_create(&DbErrorLabels { operation, kind }).inc();
    }

    /// An audit event was appended.
    pub fn audit_append(&self, action: AuditAction, outcome: AuditOutcome) {
        self.audit_appends.get_or_create(&AuditLabels { action, outcome }).inc();
    }
}

#[cfg(test)]
impl Metrics {
    /// The value of the sample `series` (name and labels as encoded), for the tests of the modules that count.
    pub(crate) fn sample(&self, series: &str) -> Option<f64> {
        let text = self.encode().ok()?;
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::audit::{AuditAction, AuditOutcome};

    /// Every family, with one series each (a family without series is not encoded).
    fn everything_once() -> Metrics {
        let m = Metrics::new();
        let second = Duration::from_secs(1);
        m.rpc_call(RpcMethod::SendCode, GrpcStatus::Ok, second);
        m.send(Purpose::Login, Channel::Sms, SendResult::Failed);
        m.verification(Purpose::Login, VerifyResult::WrongCode);
        m.lockout(Purpose::Login);
        m.supervisor_call(SupervisorAction::LookupCode, SupervisorOutcome::Granted);
        m.gateway_attempt(GatewayAttempt::Failed, second);
        m.sms_delivery(second, Some(GatewayFailure::Unavailable));
        m.breaker(BreakerState::Open);
        m.breaker_opened();
        m.route_attempt(Route::SmsNhn, RouteOutcome::Failed);
        m.route_breaker(Route::SmsNhn, BreakerState::Open);
        m.route_demoted(Route::SmsNhn, RouteDemotion::FailedForNumber);
        m.refused(FrontLimit::GlobalSms);
        m.guard_decision(GuardModeLabel::Shadow, GuardDecision::Guarded);
        m.budget_refused(SharedBudget::Prefix);
        m.hash_queue_limit(8);
        m.hash_queue_place(true);
        m.hash_queue_wait(second);
        m.hash_duration(HashOperation::Hash, second);
        m.hash_refused(HashRefusal::Overloaded);
        m.db_error(StoreOperation::Ping, DbErrorKind::Unavailable);
        m.audit_append(AuditAction::PhoneLocked, AuditOutcome::Granted);
        m.connection_closed(ListenerName::Webhook, ConnectionClose::HeaderTimeout);
        m
    }

    #[test]
    fn the_breaker_gauge_holds_the_state_index() {
        let m = Metrics::new();
        m.breaker(BreakerState::HalfOpen);
        assert!(m.encode().unwrap().contains("otpd_sms_breaker_state 2\n"));
    }

    /// docs/operations.md lists every metric, and its queries and alert rules use only metrics that exist.
    #[test]
    fn every_metric_is_documented_and_the_documented_queries_use_real_metrics() {
        let whole = include_str!("../../docs/operations.md");
        // The metrics section only: elsewhere `otpd_…` also names PostgreSQL roles (otpd_app, otpd_owner).
        let start = whole.find("## Metrics and alerts").unwrap();
        let docs = &whole[start..];
        let docs = &docs[..docs[1..].find("\n## ").map_or(docs.len(), |end| end + 1)];
        let text = everything_once().encode().unwrap();
        let mut exposed = HashSet::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
            let (family, kind) = rest.split_once(' ').unwrap();
            let queried = if kind == "counter" { format!("{family}_total") } else { family.to_owned() };
            assert!(docs.contains(&format!("| `{queried}` |")), "{queried} is not in docs/operations.md's table");
            if kind == "histogram" {
                exposed.extend(["_bucket", "_sum", "_count"].map(|s| format!("{family}{s}")));
            }
            exposed.insert(queried);
        }
        assert_eq!(exposed.iter().filter(|n| !n.ends_with("_bucket") && !n.ends_with("_sum")).count(), 31);
        let names = regex::Regex::new(r"\b(?:otpd|rpc_server)_[a-z_]+\b").unwrap();
        for name in names.find_iter(docs).map(|m| m.as_str()) {
            assert!(exposed.contains(name), "docs/operations.md uses {name}, which is not a metric");
        }
    }
}
