//! The one delivery machinery every HTTP provider shares (as arrow-rs object_store has one retry module for all
//! its stores): each attempt has its own timeout; timeouts, connection errors, 5xx and 429 (and what a wire format
//! calls a failure) are retried with jittered exponential backoff (a `Retry-After` is honoured), refusals never;
//! the whole delivery ends by the caller's deadline. A semaphore caps concurrent requests and a [`Breaker`] fails
//! fast while the provider is down. What goes over the wire is a [`Wire`]: the `http:` protocol of
//! docs/sms-gateway.md, or one of the Korean providers' APIs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::breaker::Breaker;
use super::wire::{Answer, GenericHttp, Wire};
use super::{Deadline, Delivery, SmsError, SmsGateway, SmsMessage};
use crate::clock::Clock;
use crate::metrics::{GatewayAttempt, Metrics};

/// The most of a provider's answer that is read: answers are small JSON objects.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Settings of the `http` gateway, besides its URL.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The `Authorization` header value, e.g. `Bearer …`.
    pub auth: Option<SecretString>,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// Attempts per message, the first included.
    pub max_attempts: u32,
    /// The first backoff; each retry doubles it (with full jitter) up to `max_backoff`.
    pub base_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Consecutive failed deliveries that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_cooldown: Duration,
}

/// Delivers SMS through a provider's HTTP API.
pub struct HttpGateway {
    client: reqwest::Client,
    wire: Box<dyn Wire>,
    settings: HttpOptions,
    permits: Semaphore,
    breaker: Breaker,
    requests: AtomicU64,
    metrics: Arc<Metrics>,
}

/// What one attempt came to.
enum Attempt {
    Delivered(Delivery),
    /// Worth retrying, after `retry_after` if the provider said so. `provider_failed` is false when the attempt
    /// only ran out of the caller's deadline, which says nothing about the provider.
    Transient {
        why: String,
        retry_after: Option<Duration>,
        provider_failed: bool,
    },
    /// The provider refused the message; retrying will not help.
    Rejected(String),
}

impl HttpGateway {
    /// A gateway posting the `http:` protocol to `url`; the breaker runs on `clock`.
    pub fn new(url: reqwest::Url, settings: HttpOptions, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let wire = GenericHttp::new(url, settings.auth.clone());
        Self::with_wire(Box::new(wire), settings, clock)
    }

    /// A gateway speaking `wire`; the breaker runs on `clock`.
    pub fn with_wire(wire: Box<dyn Wire>, settings: HttpOptions, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.attempt_timeout)
            // A redirect would re-send the message (its code) and the credential headers to wherever the
            // Location points: a provider, proxy or DNS answer could take both. A 3xx is a refusal instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            wire,
            permits: Semaphore::new(settings.concurrency.max(1)),
            breaker: Breaker::new(settings.breaker_threshold, settings.breaker_cooldown, clock),
            settings,
            requests: AtomicU64::new(0),
            metrics: Arc::default(),
        })
    }

    /// Counts attempts and the breaker's state in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.breaker = self.breaker.with_metrics(Arc::clone(&metrics));
        self.metrics = metrics;
        self
    }

    /// How many HTTP requests this gateway has made.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// One request with `timeout`; `cut_short` says the timeout is the caller's deadline, not ours.
    async fn attempt(&self, message: &SmsMessage, timeout: Duration, cut_short: bool) -> Attempt {
        // Built afresh per attempt: some providers sign the time and a one-time salt.
        // The caller's trace goes on to the provider (W3C traceparent), so its logs can be joined to the call.
        let mut trace = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_trace_context(&mut trace);
        let request = self.wire.request(&self.client, message).headers(trace).timeout(timeout);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = match request.send().await {
            Ok(response) => response,
            // reqwest's error text names the URL, never the body.
            Err(e) if e.is_timeout() => {
                let why = if cut_short { "cut short by the caller's deadline" } else { "timed out" };
                return Attempt::Transient { why: why.into(), retry_after: None, provider_failed: !cut_short };
            }
            Err(e) => {
                // reqwest's own text is only "error sending request": the cause (refused, reset, DNS, TLS) is in
                // its sources.
                return Attempt::Transient {
                    why: crate::telemetry::ErrorChain(&e.without_url()).to_string(),
                    retry_after: None,
                    provider_failed: true,
                };
            }
        };
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).and_then(parse_retry_after);
            return Attempt::Transient {
                why: format!("provider answered {status}"),
                retry_after,
                provider_failed: true,
            };
        }
        if status.is_redirection() {
            // Never followed (see `with_wire`), never retried: the same request would meet the same redirect.
            return Attempt::Rejected(format!("provider answered {status}: redirects are refused"));
        }
        // An unreadable answer is judged as an empty one: for a 2xx the message is taken (a retry could send a
        // second SMS), only its id is lost.
        let body = read_capped(response).await.unwrap_or_default();
        match self.wire.answer(status, &body) {
            Answer::Accepted { provider_id } => Attempt::Delivered(Delivery { message_id: provider_id }),
            Answer::Refused(why) => Attempt::Rejected(why),
            Answer::Failed(why) => Attempt::Transient { why, retry_after: None, provider_failed: true },
        }
    }

    /// The wait before retry number `retry` (1-based): full jitter over an exponential ceiling.
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.settings.base_backoff.saturating_mul(1 << retry.saturating_sub(1).min(16));
        let ceiling = ceiling.min(self.settings.max_backoff);
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }
}

#[async_trait::async_trait]
impl SmsGateway for HttpGateway {
    fn name(&self) -> &'static str {
        self.wire.name()
    }

    fn carries(&self, kind: super::MessageKind) -> bool {
        self.wire.carries(kind)
    }

    fn endpoint(&self) -> Option<String> {
        Some(super::wire::host_port(self.wire.base()))
    }

    fn refusing_for(&self) -> Option<Duration> {
        self.breaker.refusing().map(|open| open.retry_after)
    }

    fn breaker(&self) -> Option<super::BreakerView> {
        Some(self.breaker.view())
    }

    async fn send(&self, message: &SmsMessage, deadline: Deadline) -> Result<Delivery, SmsError> {
        let Deadline { at: deadline, callers } = deadline;
        let admission = self.breaker.admit().map_err(|open| SmsError::CircuitOpen { retry_after: open.retry_after })?;
        // Only what the provider did moves the breaker: waiting for a connection or running out of the caller's
        // deadline is neutral, or anyone could open it for everyone with short deadlines.
        let Ok(permit) = tokio::time::timeout_at(deadline, self.permits.acquire()).await else {
            admission.not_the_providers_doing();
            return Err(SmsError::NotSent("no free connection before the deadline".into()));
        };
        let Ok(_permit) = permit else {
            admission.not_the_providers_doing();
            return Err(SmsError::NotSent("gateway closed".into()));
        };

        let mut provider_failed = false;
        let mut last = None;
        for attempt in 1..=self.settings.max_attempts.max(1) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let cut_short = callers && deadline - now < self.settings.attempt_timeout;
            let timeout = self.settings.attempt_timeout.min(deadline - now);
            let started = Instant::now();
            let attempted = self.attempt(message, timeout, cut_short).await;
            self.metrics.gateway_attempt(attempted.label(), started.elapsed());
            let retry_after = match attempted {
                Attempt::Delivered(delivery) => {
                    admission.provider_answered();
                    return Ok(delivery);
                }
                Attempt::Rejected(why) => {
                    admission.provider_answered();
                    return Err(SmsError::Rejected(why));
                }
                Attempt::Transient { why, retry_after, provider_failed: failed } => {
                    tracing::debug!(
                        gateway = self.wire.name(),
                        provider = %super::wire::host_port(self.wire.base()),
                        attempt,
                        %why,
                        "SMS attempt failed"
                    );
                    provider_failed |= failed;
                    last = Some(why);
                    retry_after
                }
            };
            if attempt == self.settings.max_attempts {
                break;
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
            if Instant::now().checked_add(wait).is_none_or(|resume| resume >= deadline) {
                last = last.map(|why| why + "; no time left to retry");
                break;
            }
            tokio::time::sleep(wait).await;
        }
        if provider_failed {
            admission.provider_failed();
            return Err(SmsError::Unavailable(last.unwrap_or_default()));
        }
        admission.not_the_providers_doing();
        match last {
            Some(why) => Err(SmsError::Unconfirmed(why)),
            None => Err(SmsError::NotSent("the deadline passed before the first attempt".into())),
        }
    }
}

impl Attempt {
    fn label(&self) -> GatewayAttempt {
        match self {
            Attempt::Delivered(_) => GatewayAttempt::Accepted,
            Attempt::Rejected(_) => GatewayAttempt::Rejected,
            Attempt::Transient { provider_failed: true, .. } => GatewayAttempt::Failed,
            Attempt::Transient { provider_failed: false, .. } => GatewayAttempt::CutShort,
        }
    }
}

/// The answer's body, at most [`MAX_ANSWER_BYTES`] of it.
async fn read_capped(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Some(body)
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(value: &reqwest::header::HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let v = |s: &str| reqwest::header::HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_retry_after(&v("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(&v("Wed, 21 Oct 2015 07:28:00 GMT")), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&v("soon")), None);
    }
}
