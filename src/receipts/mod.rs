//! Delivery receipts (`--webhook-listen`, off by default): an HTTP endpoint where providers report what the
//! carrier did with a message otpd handed them. Each receipt moves the attempt its provider id names from
//! `accepted` to `delivered` or `failed` (with the carrier's result code and time). A request that fails its
//! authentication, names no attempt otpd knows, or is malformed is refused with a 4xx and changes nothing.
//!
//! - `POST /receipts/nhn`: NHN Cloud `MESSAGE_RESULT_UPDATE` webhooks of both products (SMS, and KakaoTalk
//!   Bizmessage for AlimTalk, whose provider-side SMS fallback becomes an attempt of its own), authenticated by
//!   the header `X-Toast-Webhook-Signature`, which carries the signature entered when the webhook was configured
//!   (a shared secret, compared in constant time).
//! - `POST /receipts/http`: the generic form for the `http:` protocol (docs/sms-gateway.md), authenticated by
//!   `X-Otpd-Signature: sha256=hex(HMAC-SHA256(key, "{X-Otpd-Timestamp}.{body}"))` with a timestamp within five
//!   minutes; a `(timestamp, signature)` seen before is answered without being applied again.
//!
//! Receipts arrive late, twice and out of order: one dated in the future (beyond a minute's clock skew) is
//! malformed, and the store keeps the newest receipt of each attempt, so neither a replay (of either form, on any
//! replica) nor an older receipt after a newer one changes what the status view shows.

mod generic;
mod nhn;
mod poll;

pub use poll::{PollSettings, Polled, ResultQuery, poll};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{AllowedCountries, CallEvent};
use crate::domain::{
    AttemptOutcome, AttemptReason, DeliveryAttempt, DeliveryChannel, RECEIPT_CLOCK_SKEW, Receipt, ReceiptOutcome,
};
use crate::store::{Store, SupervisionStore};

/// The largest receipt body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The secrets the receipt endpoints check; an endpoint without its secret answers 404.
#[derive(Debug, Clone, Default)]
pub struct ReceiptKeys {
    /// The NHN webhook's configured signature.
    pub nhn_signature: Option<SecretString>,
    /// The generic form's HMAC key.
    pub hmac_key: Option<SecretString>,
    /// The phone system's call-event HMAC key (POST /calls/events, docs/cti.md).
    pub call_events_key: Option<SecretString>,
    /// Where AlimTalk messages are looked up (the provider's own SMS fallback of one that failed), when
    /// `alimtalk` is a channel.
    pub alimtalk: Option<AlimTalkQuery>,
}

/// The AlimTalk message query (API v2.3, 인증 메시지 > 메시지 단건 조회), for a hook that does not say whether NHN
/// fell back to SMS.
#[derive(Debug, Clone)]
pub struct AlimTalkQuery {
    /// The Bizmessage API's base URL.
    pub base: reqwest::Url,
    /// App key.
    pub app_key: String,
    /// Secret key.
    pub secret_key: SecretString,
}

#[derive(Clone)]
struct Receiver {
    store: Arc<dyn Store>,
    calls: Arc<dyn SupervisionStore>,
    countries: AllowedCountries,
    clock: Arc<dyn Clock>,
    keys: Arc<ReceiptKeys>,
    seen: Arc<generic::SeenSignatures>,
    client: reqwest::Client,
}

/// Why a receipt request was refused.
#[derive(Debug)]
enum Refusal {
    /// The endpoint is not configured.
    Off,
    /// Bad or missing authentication.
    Forged,
    /// Not a receipt.
    Malformed(String),
    /// Not a call event.
    MalformedEvent(String),
    /// It names no attempt otpd knows.
    Unknown,
    /// The database failed.
    Store,
}

impl axum::response::IntoResponse for Refusal {
    fn into_response(self) -> axum::response::Response {
        let (status, text) = match self {
            Refusal::Off => (StatusCode::NOT_FOUND, "receipts of this kind are not enabled".to_owned()),
            Refusal::Forged => (StatusCode::UNAUTHORIZED, "bad signature".to_owned()),
            Refusal::Malformed(why) => (StatusCode::BAD_REQUEST, format!("malformed receipt: {why}")),
            Refusal::MalformedEvent(why) => (StatusCode::BAD_REQUEST, format!("malformed call event: {why}")),
            Refusal::Unknown => (StatusCode::NOT_FOUND, "no such message".to_owned()),
            Refusal::Store => (StatusCode::SERVICE_UNAVAILABLE, "try again later".to_owned()),
        };
        (status, text).into_response()
    }
}

/// Serves the receipt endpoints on the admitted connections of `listener` (plain or TLS) until `shutdown` is
/// cancelled, answering only to the names of `hosts`.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S, IO>(
    listener: crate::listen::StreamListener<S>,
    hosts: crate::listen::AllowedHosts,
    store: Arc<dyn Store>,
    calls: Arc<dyn SupervisionStore>,
    countries: AllowedCountries,
    clock: Arc<dyn Clock>,
    keys: ReceiptKeys,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = reqwest::Client::builder()
        .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
        .timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let receiver = Receiver { store, calls, countries, clock, keys: Arc::new(keys), seen: Arc::default(), client };
    let app = axum::Router::new()
        .route("/receipts/nhn", post(nhn_receipt))
        .route("/receipts/http", post(generic_receipt))
        .route("/calls/events", post(call_event))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(receiver)
        .layer(crate::listen::HostCheckLayer::new(hosts));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Binds the receipt listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn nhn_receipt(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, Refusal> {
    let secret = r.keys.nhn_signature.as_ref().ok_or(Refusal::Off)?;
    let given = headers.get("x-toast-webhook-signature").map(|v| v.as_bytes()).unwrap_or_default();
    if !same_secret(given, secret) {
        tracing::warn!("NHN receipt with a bad signature refused");
        return Err(Refusal::Forged);
    }
    let hooks = nhn::parse(&body).map_err(Refusal::Malformed)?;
    let receipts = hooks.iter().map(|h| (h.gateway, h.request_id.clone(), h.receipt.clone())).collect();
    let status = apply(&r, receipts).await?;
    for hook in hooks {
        let fallback = match (&hook.fallback, &r.keys.alimtalk) {
            (Some(fallback), _) => Some(fallback.clone()),
            // The webhook guide lists no fallback fields: for an AlimTalk the phone did not take, the message
            // query says whether NHN sent an SMS instead, and under which request id.
            (None, Some(query)) if hook.gateway == "nhn-alimtalk" && !hook.receipt.delivered => {
                match nhn::query_fallback(&r.client, query, &hook.request_id, hook.recipient_seq).await {
                    Ok(nhn::FallbackState::Made(fallback)) => Some(fallback),
                    Ok(nhn::FallbackState::Pending) => {
                        // RSC02: NHN will fall back, but has not yet: ask again a little later.
                        let (r, query) = (r.clone(), query.clone());
                        let (id, seq, at) = (hook.request_id.clone(), hook.recipient_seq, hook.receipt.at);
                        tokio::spawn(async move { follow_fallback(r, query, id, seq, at).await });
                        None
                    }
                    Ok(nhn::FallbackState::None) => None,
                    Err(why) => {
                        tracing::warn!(provider = %host_port(&query.base), error = %why, "AlimTalk message query failed");
                        None
                    }
                }
            }
            (None, _) => None,
        };
        let Some(fallback) = fallback else { continue };
        if let Err(error) = store_fallback(&r, &hook.request_id, fallback, hook.receipt.at).await {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording a fallback failed");
            return Err(Refusal::Store);
        }
    }
    Ok(status)
}

/// When an AlimTalk's fallback is still to come (RSC02), the message query is asked again after these waits.
const FOLLOW_FALLBACK: [std::time::Duration; 3] =
    [std::time::Duration::from_secs(5), std::time::Duration::from_secs(30), std::time::Duration::from_secs(120)];

/// Asks the message query again until NHN's fallback SMS for AlimTalk `request_id` has a request id (then records
/// it), NHN says there will be none, or [`FOLLOW_FALLBACK`] runs out.
async fn follow_fallback(
    r: Receiver,
    query: AlimTalkQuery,
    request_id: String,
    recipient_seq: i64,
    at: chrono::DateTime<chrono::Utc>,
) {
    for wait in FOLLOW_FALLBACK {
        tokio::time::sleep(wait).await;
        match nhn::query_fallback(&r.client, &query, &request_id, recipient_seq).await {
            Ok(nhn::FallbackState::Made(fallback)) => {
                if let Err(error) = store_fallback(&r, &request_id, fallback, at).await {
                    tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording a fallback failed");
                }
                return;
            }
            Ok(nhn::FallbackState::Pending) => {}
            Ok(nhn::FallbackState::None) => return,
            Err(why) => {
                tracing::warn!(provider = %host_port(&query.base), error = %why, "AlimTalk message query failed");
            }
        }
    }
}

/// Records the SMS NHN sent by itself for the AlimTalk `request_id` as an attempt of its own (once), whose carrier
/// result then arrives as an SMS webhook under its request id.
async fn store_fallback(
    r: &Receiver,
    request_id: &str,
    fallback: nhn::Fallback,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), crate::store::StoreError> {
    let attempt = DeliveryAttempt {
        channel: DeliveryChannel::Sms,
        gateway: "nhn-sms",
        at,
        outcome: if fallback.failed { AttemptOutcome::Failed } else { AttemptOutcome::Accepted },
        provider_id: Some(fallback.request_id),
        reason: fallback.failed.then_some(AttemptReason::ProviderRefused),
    };
    let recorded = r.store.record_fallback("nhn-alimtalk", request_id, &attempt).await?;
    tracing::info!(gateway = "nhn-alimtalk", recorded, "provider-side SMS fallback");
    Ok(())
}

/// `host:port` of a provider's URL, for log lines (never its path, which may hold a key).
fn host_port(url: &reqwest::Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or("?"), url.port_or_known_default().unwrap_or(0))
}

async fn generic_receipt(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, Refusal> {
    let key = r.keys.hmac_key.as_ref().ok_or(Refusal::Off)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !generic::authentic(key, header("x-otpd-timestamp"), header("x-otpd-signature"), &body, r.clock.now()) {
        tracing::warn!("receipt with a bad signature refused");
        return Err(Refusal::Forged);
    }
    let (id, receipt) = generic::parse(&body).map_err(Refusal::Malformed)?;
    if !r.seen.first_time(header("x-otpd-timestamp"), header("x-otpd-signature"), r.clock.now()) {
        // The sender may be retrying a receipt whose answer it missed: it was taken, so say so.
        tracing::info!("receipt replayed: already taken, not applied again");
        return Ok(StatusCode::OK);
    }
    apply(&r, vec![("http", id, receipt)]).await
}

/// A call event from the phone system (docs/cti.md): 204 applied (or a repeat, which changes nothing), 401 bad or
/// stale signature, 400 malformed, 413 too large. Nothing is stored unless the whole event is valid.
async fn call_event(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, Refusal> {
    let key = r.keys.call_events_key.as_ref().ok_or(Refusal::Off)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let now = r.clock.now();
    if !generic::authentic(key, header("x-otpd-timestamp"), header("x-otpd-signature"), &body, now) {
        tracing::warn!("call event with a bad or stale signature refused");
        return Err(Refusal::Forged);
    }
    let event = CallEvent::parse(&body, &r.countries, now).map_err(|why| {
        tracing::warn!(%why, "malformed call event refused");
        Refusal::MalformedEvent(why)
    })?;
    match r.calls.record_call_event(&event, now).await {
        Ok(changed) => {
            tracing::info!(
                call_id = %event.call_id,
                event = ?event.kind,
                direction = event.direction.as_str(),
                number = %event.number,
                agent = %event.agent,
                changed,
                "call event"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording a call event failed");
            Err(Refusal::Store)
        }
    }
}

/// Applies each receipt, once all are known to be well dated; 404 when none named a known attempt (so nothing
/// changed).
async fn apply(r: &Receiver, receipts: Vec<(&'static str, String, Receipt)>) -> Result<StatusCode, Refusal> {
    let latest = r.clock.now() + RECEIPT_CLOCK_SKEW;
    if receipts.iter().any(|(_, _, receipt)| receipt.at > latest) {
        return Err(Refusal::Malformed("dated in the future".into()));
    }
    let (mut known, mut superseded) = (0, 0);
    for (gateway, provider_id, receipt) in &receipts {
        match r.store.record_receipt(gateway, provider_id, receipt).await {
            Ok(ReceiptOutcome::Recorded) => known += 1,
            Ok(ReceiptOutcome::Superseded) => superseded += 1,
            Ok(ReceiptOutcome::Unknown) => tracing::warn!(gateway, "receipt for an unknown message"),
            Err(error) => {
                tracing::error!(error = %crate::telemetry::ErrorChain(&error), "recording a receipt failed");
                return Err(Refusal::Store);
            }
        }
    }
    if known == 0 && superseded == 0 {
        return Err(Refusal::Unknown);
    }
    tracing::info!(receipts = known, superseded, "delivery receipts recorded");
    Ok(StatusCode::OK)
}

/// Compares a presented secret with ours in constant time.
fn same_secret(given: &[u8], ours: &SecretString) -> bool {
    use secrecy::ExposeSecret;
    use subtle::ConstantTimeEq;
    let ours = ours.expose_secret().as_bytes();
    given.len() == ours.len() && bool::from(given.ct_eq(ours))
}
