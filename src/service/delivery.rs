//! Carrying one code to the driver over the routes of `--delivery` (a channel on a provider), in order: the next
//! route is tried when one refuses or fails, within the caller's deadline, and every attempt is kept for the
//! record. Each route is its own gateway, so each has its own breaker. One code per send, whichever route carries
//! it. A number's own history reorders the routes for its next code (issue 22, section 4): see
//! [`crate::domain::route_order`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{AttemptOutcome, AttemptReason, DeliveryAttempt, DeliveryChannel, Demotion, PhoneNumber};
use crate::metrics::{Route, RouteDemotion, RouteOutcome};
use crate::sms::{BreakerView, Deadline, Delivery, MessageKind, SmsError, SmsMessage};

use super::VerificationService;

/// How a number's history reorders the routes (`--route-memory`, `--receipt-wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLearning {
    /// How long a route that failed for a number is tried after the others.
    pub memory: TimeDelta,
    /// How long an accepted code may wait for its receipt before the number's next send starts elsewhere.
    pub receipt_wait: TimeDelta,
}

impl Default for RouteLearning {
    fn default() -> Self {
        Self { memory: TimeDelta::days(7), receipt_wait: TimeDelta::seconds(30) }
    }
}

/// What this replica last saw of each route: its last provider error and its last accepted attempt.
#[derive(Debug, Default)]
pub struct RouteBook {
    notes: Mutex<HashMap<String, RouteNote>>,
}

#[derive(Debug, Clone, Default)]
struct RouteNote {
    last_error: Option<(DateTime<Utc>, String)>,
    last_accepted: Option<DateTime<Utc>>,
}

/// One route as `otpd doctor` shows it (this replica's view: breakers and errors are per replica).
#[derive(Debug, Clone)]
pub struct RouteReport {
    /// The route's label (`sms@nhn`).
    pub route: String,
    /// Where its provider is (`host:port`), for the routes that reach one.
    pub endpoint: Option<String>,
    /// Its breaker, for the routes that have one.
    pub breaker: Option<BreakerView>,
    /// The last error a provider gave on it (log text: never a code or a credential), and when.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// When it last took a message.
    pub last_accepted: Option<DateTime<Utc>>,
}

impl RouteBook {
    fn note(&self, route: &str, at: DateTime<Utc>, error: Option<&SmsError>) {
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        let note = notes.entry(route.to_owned()).or_default();
        match error {
            Some(error) => note.last_error = Some((at, error.to_string())),
            None => note.last_accepted = Some(at),
        }
    }

    fn get(&self, route: &str) -> RouteNote {
        self.notes.lock().unwrap_or_else(PoisonError::into_inner).get(route).cloned().unwrap_or_default()
    }
}

/// How long past its deadline a gateway is waited for before it is abandoned.
const GATEWAY_GRACE: Duration = Duration::from_millis(50);

pub use crate::sms::Channels;

impl VerificationService {
    /// How long every channel would refuse a send at once (all breakers open); None when one may go out.
    pub(super) fn channels_refusing_for(&self) -> Option<Duration> {
        self.channels()
            .iter()
            .map(|(_, gateway)| gateway.refusing_for())
            .try_fold(Duration::MAX, |shortest, open| open.map(|open| shortest.min(open)))
    }

    /// Whether some route would take a message now (not every breaker open): `otp.v1.Delivery`'s health.
    pub fn delivery_serving(&self) -> bool {
        self.channels_refusing_for().is_none()
    }

    /// Every route as this replica sees it, in configured order, and publishes each breaker's state as a metric
    /// (`otpd_delivery_route_breaker_state`).
    pub fn route_reports(&self) -> Vec<RouteReport> {
        self.channels()
            .iter()
            .map(|(channel, gateway)| {
                let route = crate::domain::route_label(*channel, gateway.name());
                let breaker = gateway.breaker();
                if let Some(view) = breaker {
                    self.inner.metrics.route_breaker(Route::of(&route), view.state);
                }
                let note = self.book.get(&route);
                RouteReport {
                    endpoint: gateway.endpoint(),
                    breaker,
                    last_error: note.last_error,
                    last_accepted: note.last_accepted,
                    route,
                }
            })
            .collect()
    }

    /// The routes in the order `phone`'s next code tries them: the configured order, with the routes that failed
    /// for the number (within `--route-memory`) and the one that left its last code without a receipt (past
    /// `--receipt-wait`) moved last. One read of the number's attempts, only when there is more than one route;
    /// if it fails, the configured order (the send goes on).
    pub(super) async fn routes_for(&self, phone: &PhoneNumber) -> crate::sms::Channels {
        let this = &self.inner;
        let channels = self.channels();
        if channels.len() < 2 {
            return channels;
        }
        let now = this.clock.now();
        let history = match this.store.route_history(phone, now - this.learning.memory).await {
            Ok(history) => history,
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "route history unavailable; configured order");
                return channels;
            }
        };
        let labels: Vec<String> =
            channels.iter().map(|(channel, gateway)| crate::domain::route_label(*channel, gateway.name())).collect();
        let order = crate::domain::route_order(&labels, &history, now, this.learning.receipt_wait);
        for (i, why) in &order {
            let Some(why) = why else { continue };
            let (label, code) = match why {
                Demotion::FailedForNumber { code } => (RouteDemotion::FailedForNumber, code.as_deref()),
                Demotion::NoReceipt => (RouteDemotion::NoReceipt, None),
            };
            tracing::info!(route = %labels[*i], why = label.as_str(), receipt_code = code.unwrap_or("-"),
                "route tried after the others for this number");
            this.metrics.route_demoted(Route::of(&labels[*i]), label);
        }
        order.into_iter().map(|(i, _)| channels[i].clone()).collect()
    }

    /// Each channel with its gateway's name and provider (`host:port`), for the record of a send none of them
    /// was asked to carry.
    pub(super) fn channels_for_record(&self) -> Vec<(DeliveryChannel, &'static str, Option<String>)> {
        self.channels().iter().map(|(channel, gateway)| (*channel, gateway.name(), gateway.endpoint())).collect()
    }

    fn channels(&self) -> Channels {
        let this = &self.inner;
        if this.channels.is_empty() {
            vec![(DeliveryChannel::Sms, Arc::clone(&this.gateway))]
        } else {
            this.channels.clone()
        }
    }

    /// Offers `message` to each channel in turn until one takes it. The error is the last provider's answer, or
    /// when no channel reached a provider, why not (so that the send can be withdrawn).
    pub(super) async fn deliver(
        &self,
        message: &SmsMessage,
        deadline: Deadline,
    ) -> (Result<Delivery, SmsError>, Vec<DeliveryAttempt>) {
        self.deliver_over(self.channels(), message, deadline).await
    }

    /// [`Self::deliver`] over `routes` in the order given (a number's own order, [`Self::routes_for`]).
    pub(super) async fn deliver_by(
        &self,
        routes: crate::sms::Channels,
        message: &SmsMessage,
        deadline: Deadline,
    ) -> (Result<Delivery, SmsError>, Vec<DeliveryAttempt>) {
        self.deliver_over(routes, message, deadline).await
    }

    /// A lookup notice (never a code) to `phone` over the channels of `--delivery` that carry notices, in order
    /// (AlimTalk with its notice template, then SMS), within `--sms-timeout`, charged to the per-destination and
    /// per-replica SMS limits but not to the number's hourly and daily caps (no code row). Recorded for the status
    /// view; never fails the lookup that caused it.
    pub async fn send_notice(&self, phone: &crate::domain::PhoneNumber, text: &str) -> crate::store::NoticeStatus {
        let this = &self.inner;
        let record = |outcome: &str, gateway: Option<&str>, provider_id: Option<String>| crate::store::NoticeStatus {
            sent_at: this.clock.now(),
            outcome: outcome.to_owned(),
            gateway: gateway.map(str::to_owned),
            provider_id,
        };
        let channels: crate::sms::Channels =
            self.channels().into_iter().filter(|(_, gateway)| gateway.carries(MessageKind::Notice)).collect();
        let status = if this.test_numbers.code_for(phone, this.policy.code_length).is_some() {
            tracing::info!(%phone, "lookup notice: test number, not sent");
            record("not_sent", None, None)
        } else if let Err(limited) = this.limits.check_send_destination(phone) {
            tracing::warn!(%phone, limit = limited.limit, "lookup notice held back by an SMS limit");
            record("not_sent", None, None)
        } else if channels.is_empty() {
            tracing::warn!(%phone, "lookup notice not sent: no channel in --delivery carries it");
            record("not_sent", None, None)
        } else {
            let reference = crate::domain::VerificationId::new();
            let message = SmsMessage {
                kind: MessageKind::Notice,
                to: phone.clone(),
                from: this.sender.clone(),
                body: secrecy::SecretString::from(text.to_owned()),
                code: secrecy::SecretString::from(String::new()),
                verification_id: reference,
                sent_at: this.clock.now(),
                idempotency_key: format!("notice-{reference}"),
            };
            let deadline = Deadline { at: tokio::time::Instant::now() + this.delivery_timeout, callers: false };
            let (result, attempts) = self.deliver_over(channels, &message, deadline).await;
            let gateway = attempts.last().map(|a| a.gateway);
            match result {
                Ok(delivery) => record("accepted", gateway, delivery.message_id),
                Err(error) => {
                    tracing::warn!(%phone, error = %error, "lookup notice not delivered");
                    let outcome = match (&error, attempts.last()) {
                        (_, Some(attempt)) => attempt.outcome.as_str(),
                        _ => "not_sent",
                    };
                    record(outcome, gateway, None)
                }
            }
        };
        if let Err(error) = this.store.record_notice(phone, &status).await {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording a lookup notice failed");
        }
        tracing::info!(%phone, outcome = %status.outcome, "lookup notice");
        status
    }

    async fn deliver_over(
        &self,
        channels: Channels,
        message: &SmsMessage,
        deadline: Deadline,
    ) -> (Result<Delivery, SmsError>, Vec<DeliveryAttempt>) {
        let mut attempts = Vec::new();
        let mut last: Option<SmsError> = None;
        for (channel, gateway) in channels {
            if tokio::time::Instant::now() >= deadline.at {
                break;
            }
            // The gateway ends by `deadline` itself; this bound only catches one that does not.
            let result = tokio::time::timeout_at(deadline.at + GATEWAY_GRACE, gateway.send(message, deadline))
                .await
                .unwrap_or_else(|_| Err(SmsError::Unavailable("the gateway overran its deadline".into())));
            let attempt = |outcome, provider_id, reason| DeliveryAttempt {
                channel,
                gateway: gateway.name(),
                at: self.inner.clock.now(),
                outcome,
                provider_id,
                reason,
            };
            // Where the provider is (host:port, never a path, which may hold a key) and why: never the message.
            let endpoint = gateway.endpoint().unwrap_or_else(|| "-".into());
            let route = crate::domain::route_label(channel, gateway.name());
            let now = self.inner.clock.now();
            let counted = match &result {
                Ok(_) => RouteOutcome::Accepted,
                Err(SmsError::Unconfirmed(_)) => RouteOutcome::Unconfirmed,
                Err(SmsError::Rejected(_)) => RouteOutcome::Refused,
                Err(SmsError::Unavailable(_)) => RouteOutcome::Failed,
                Err(SmsError::NotSent(_) | SmsError::CircuitOpen { .. }) => RouteOutcome::NotTried,
            };
            self.inner.metrics.route_attempt(Route::of(&route), counted);
            match &result {
                Ok(_) => self.book.note(&route, now, None),
                Err(error @ (SmsError::Rejected(_) | SmsError::Unavailable(_))) => {
                    self.book.note(&route, now, Some(error));
                }
                Err(_) => {}
            }
            match result {
                Ok(delivery) => {
                    attempts.push(attempt(AttemptOutcome::Accepted, delivery.message_id.clone(), None));
                    return (Ok(delivery), attempts);
                }
                Err(error @ SmsError::Unconfirmed(_)) => {
                    // It may still arrive: a second channel now would only race it.
                    tracing::warn!(
                        %route,
                        gateway = gateway.name(),
                        provider = %endpoint,
                        reason = "no_answer",
                        error = %error,
                        "delivery unconfirmed before the deadline"
                    );
                    attempts.push(attempt(AttemptOutcome::Unconfirmed, None, Some(AttemptReason::NoAnswer)));
                    return (Err(error), attempts);
                }
                Err(error @ (SmsError::Rejected(_) | SmsError::Unavailable(_))) => {
                    let (outcome, reason) = match error {
                        SmsError::Rejected(_) => (AttemptOutcome::Refused, AttemptReason::ProviderRefused),
                        _ => (AttemptOutcome::Failed, AttemptReason::ProviderDown),
                    };
                    tracing::warn!(
                        %route,
                        gateway = gateway.name(),
                        provider = %endpoint,
                        reason = reason.as_str(),
                        error = %error,
                        "delivery channel did not take the code"
                    );
                    attempts.push(attempt(outcome, None, Some(reason)));
                    last = Some(error);
                }
                Err(error @ (SmsError::NotSent(_) | SmsError::CircuitOpen { .. })) => {
                    // Never reached the provider: an earlier channel's answer, if any, stays the one that counts.
                    tracing::info!(
                        %route,
                        gateway = gateway.name(),
                        provider = %endpoint,
                        error = %error,
                        "delivery channel not tried"
                    );
                    last = last.or(Some(error));
                }
            }
        }
        let last = last.unwrap_or_else(|| SmsError::NotSent("the deadline passed before any channel".into()));
        (Err(last), attempts)
    }
}

impl VerificationService {
    /// A team lead's sign-in code to their own registered phone (docs/sign-in.md), over every channel of
    /// `--delivery` in turn (AlimTalk, then SMS) with the code template, from the configured sender, within
    /// `--sms-timeout`. Charged to the per-destination and per-replica SMS limits; the sign-in's own cooldown
    /// and hourly cap are counted by the sign-in service. Err: no channel took it.
    pub async fn send_sign_in_code(
        &self,
        phone: &crate::domain::PhoneNumber,
        code: &crate::domain::OtpCode,
        ttl: chrono::TimeDelta,
    ) -> Result<(), super::ServiceError> {
        let this = &self.inner;
        this.limits.check_send_destination(phone)?;
        let reference = crate::domain::VerificationId::new();
        let message = SmsMessage {
            kind: MessageKind::Code,
            to: phone.clone(),
            from: this.sender.clone(),
            body: this.template.render(code, ttl, None),
            code: secrecy::SecretString::from(code.expose().to_owned()),
            verification_id: reference,
            sent_at: this.clock.now(),
            idempotency_key: format!("sign-in-{reference}"),
        };
        let deadline = Deadline { at: tokio::time::Instant::now() + this.delivery_timeout, callers: false };
        let (result, attempts) = self.deliver(&message, deadline).await;
        let by = attempts.last().map_or("-", |a| a.gateway);
        match result {
            Ok(_) => {
                tracing::info!(%phone, gateway = by, "sign-in code sent");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%phone, gateway = by, %error, "sign-in code not delivered");
                Err(super::ServiceError::SmsDeliveryFailed { retry_after: Duration::from_secs(30) })
            }
        }
    }
}

/// What `otpctl doctor` shows: this replica's routes, every route's outcomes (all replicas), this replica's
/// front-line refusals and a database round trip.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Each route, in configured order.
    pub routes: Vec<RouteReport>,
    /// Every route's attempts in the last 15 minutes, with how many of them in the last 5.
    pub outcomes: Vec<crate::store::RouteOutcomes>,
    /// Front-line refusals since start, per limit.
    pub refusals: Vec<(crate::metrics::FrontLimit, u64)>,
    /// The database round trip, or why it failed.
    pub database: Result<Duration, String>,
    /// Whether some route's breaker lets a send through.
    pub delivery_serving: bool,
}

/// The windows `otpctl doctor` counts outcomes over.
pub const DOCTOR_WINDOWS: (TimeDelta, TimeDelta) = (TimeDelta::minutes(5), TimeDelta::minutes(15));

impl VerificationService {
    /// Takes a [`Diagnosis`]. The database's trouble is part of the answer, not an error.
    pub async fn diagnose(&self) -> Diagnosis {
        let this = &self.inner;
        let now = this.clock.now();
        let started = tokio::time::Instant::now();
        let ping = this.store.ping().await;
        let database = match ping {
            Ok(()) => Ok(started.elapsed()),
            Err(error) => Err(crate::telemetry::ErrorChain(&error).to_string()),
        };
        let (recent, window) = DOCTOR_WINDOWS;
        let outcomes = match &database {
            Ok(_) => this.store.delivery_outcomes(now - window, now - recent).await.unwrap_or_else(|error| {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "doctor: outcomes unavailable");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Diagnosis {
            at: now,
            routes: self.route_reports(),
            outcomes,
            refusals: this.metrics.front_line_refusals(),
            database,
            delivery_serving: self.delivery_serving(),
        }
    }
}

impl Diagnosis {
    /// Where the trouble is, one finding a line (Korean, English); none when nothing is wrong.
    pub fn findings(&self) -> Vec<(String, String)> {
        let mut findings = Vec::new();
        if let Err(error) = &self.database {
            findings
                .push((format!("데이터베이스 응답 없음: {error}"), format!("the database does not answer: {error}")));
        }
        if !self.delivery_serving {
            findings.push((
                "모든 발송 경로의 차단기가 열림: 인증번호가 나가지 않습니다".into(),
                "every route's breaker is open: no code goes out".into(),
            ));
        }
        for route in &self.routes {
            let Some(breaker) = route.breaker else { continue };
            if breaker.state != crate::metrics::BreakerState::Closed {
                // Korean time, as the rest of the tools print it (KST has no daylight saving).
                let since = (breaker.since + TimeDelta::hours(9)).format("%H:%M:%S KST");
                let error = route.last_error.as_ref().map_or("-", |(_, e)| e.as_str());
                findings.push((
                    format!("{}: 차단기 {} ({since}부터), 마지막 오류: {error}", route.route, breaker.state.as_str()),
                    format!("{}: breaker {} since {since}, last error: {error}", route.route, breaker.state.as_str()),
                ));
            }
        }
        let mut per_route: std::collections::BTreeMap<&str, (i64, i64)> = std::collections::BTreeMap::new();
        for o in &self.outcomes {
            let entry = per_route.entry(o.route.as_str()).or_default();
            entry.1 += o.recent;
            if matches!(o.outcome.as_str(), "refused" | "failed" | "undelivered") {
                entry.0 += o.recent;
            }
        }
        for (route, (bad, all)) in per_route {
            if all > 0 && bad * 2 > all {
                findings.push((
                    format!("{route}: 최근 5분 {all}건 중 {bad}건 실패"),
                    format!("{route}: {bad} of {all} attempts failed in the last 5 minutes"),
                ));
            }
        }
        let refused: u64 = self.refusals.iter().map(|(_, n)| n).sum();
        if refused > 0 {
            let list: Vec<String> =
                self.refusals.iter().filter(|(_, n)| *n > 0).map(|(l, n)| format!("{}={n}", l.as_str())).collect();
            findings.push((
                format!("이 서버의 앞단 제한 거절 (시작 후): {}", list.join(", ")),
                format!("front-line refusals on this replica since start: {}", list.join(", ")),
            ));
        }
        findings
    }
}
