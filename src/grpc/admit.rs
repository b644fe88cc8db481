//! The front of `otp.v1.OtpService`: a SendCode or VerifyCode passes its per-address limit and takes its place
//! in the hashing queue here, on the HTTP request, before it gets a span and before tonic decodes its body. Only
//! the RPC metrics come before it, so every call is still timed and counted. The body is read (bounded) before
//! the place is taken, so that a body still on its way holds no place. A call refused `OVERLOADED` is answered
//! with a response encoded once ([`super::status::overloaded_http`]): no span, no message decoded, no handler,
//! no status encoded. That is what keeps a refusal's cost below a health
//! check's when clients retry at once (docs/performance.md, "Clients that retry at once").
//!
//! What the front decided reaches the handler in the request's extensions ([`Call::of`]). An admitted call's span
//! starts once it has its place, so a trace does not show the admission wait; `rpc_server_call_duration_seconds`
//! does. A call with an `idempotency-key` takes its place later, once its key is claimed, so that repeats waiting
//! for the first attempt's answer hold none. Refusals at admission are counted by
//! `otpd_hash_queue_refusals_total`: the request's purpose is in the body, which a refusal never decodes.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body_util::{BodyExt, Full};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};

use super::client_ip::{self, TrustedProxies};
use super::{deadline, idempotency, status};
use crate::hashing::{HashError, Slot, Work};
use crate::limits::FrontLimits;
use crate::service::{ServiceError, VerificationService};

const SEND_CODE: &str = "/otp.v1.OtpService/SendCode";
const VERIFY_CODE: &str = "/otp.v1.OtpService/VerifyCode";

/// A SendCode or VerifyCode past the front.
pub(super) struct Call {
    /// The client's address, as the front-line limits keyed it.
    pub client: Option<IpAddr>,
    /// The caller's deadline (`grpc-timeout`).
    pub deadline: Option<tokio::time::Instant>,
    /// How it holds its place in the hashing queue.
    pub entry: Entry,
}

/// How a call holds its place in the hashing queue.
pub(super) enum Entry {
    /// Taken already: an unkeyed call.
    Admitted(Slot),
    /// Taken once the call's `idempotency-key` is claimed.
    Keyed(String),
}

/// A [`Call`] in the request's extensions, which must be `Clone`; a place in the queue must not be, so the
/// handler takes it out.
#[derive(Clone)]
struct Decided(Arc<Mutex<Option<Call>>>);

impl Call {
    /// What the front decided for `request`. A call that did not pass it is a wiring bug (the service served
    /// without [`AdmitFirst`]): `INTERNAL`, and logged.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        let decided = request.extensions().get::<Decided>();
        let call =
            decided.and_then(|Decided(call)| call.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
        call.ok_or_else(|| {
            tracing::error!("an OtpService call reached its handler without passing AdmitFirst");
            Status::internal("internal error")
        })
    }
}

/// Decides SendCode and VerifyCode calls before anything else of the server sees them but the RPC metrics: not
/// the trace context (a refused call has no span: it would cost more than the refusal), not tonic. Every other
/// call passes straight through.
#[derive(Clone)]
pub struct AdmitFirstLayer {
    front: Arc<Front>,
}

impl AdmitFirstLayer {
    /// Calls take their places in `service`'s hashing queue, behind the per-address `limits` (addresses read
    /// through the `trusted` proxies), once their body, of at most `max_request_bytes` and its prefix, is read.
    pub fn new(
        service: VerificationService,
        limits: Arc<FrontLimits>,
        trusted: TrustedProxies,
        max_request_bytes: usize,
    ) -> Self {
        let max_body = max_request_bytes.saturating_add(GRPC_PREFIX);
        Self { front: Arc::new(Front { service, limits, trusted, max_body }) }
    }
}

impl<S> tower_layer::Layer<S> for AdmitFirstLayer {
    type Service = AdmitFirst<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmitFirst { inner, front: Arc::clone(&self.front) }
    }
}

/// A service wrapped by [`AdmitFirstLayer`].
#[derive(Clone)]
pub struct AdmitFirst<S> {
    inner: S,
    front: Arc<Front>,
}

struct Front {
    service: VerificationService,
    limits: Arc<FrontLimits>,
    trusted: TrustedProxies,
    /// The longest body read: one message and its prefix.
    max_body: usize,
}

/// A gRPC message's prefix: its compression flag and its length.
const GRPC_PREFIX: usize = 5;

impl<S, ResBody> Service<Request<Body>> for AdmitFirst<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let work = match request.uri().path() {
            SEND_CODE => Work::Send,
            VERIFY_CODE => Work::Check,
            _ => return Box::pin(self.inner.call(request)),
        };
        let headers = match self.front.read(&request, work) {
            Ok(headers) => headers,
            Err(refusal) => return Box::pin(async move { Ok(refusal) }),
        };
        // The service made ready goes with this call (tower's rule); a clone stays for the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let front = Arc::clone(&self.front);
        // Kept small (under glibc's 1 KiB per-thread cache of freed blocks), as every call allocates one.
        Box::pin(async move {
            // The body is read before the place is taken, so that a body that trickles in holds no place.
            if let Err(refusal) = front.read_body(&mut request).await {
                return Ok(refusal);
            }
            match front.admit(headers, work).await {
                Ok(call) => {
                    request.extensions_mut().insert(Decided(Arc::new(Mutex::new(Some(call)))));
                    inner.call(request).await
                }
                Err(refusal) => Ok(refusal),
            }
        })
    }
}

/// What a refused call is answered: a trailers-only response, its body empty.
type Refusal<B> = Response<B>;

fn refuse<B: Default>(error: ServiceError) -> Refusal<B> {
    match error {
        ServiceError::Hash(HashError::Overloaded) => status::overloaded_http(),
        error => Status::from(error).into_http(),
    }
}

/// What the front reads from a call's headers.
struct Headers {
    client: Option<IpAddr>,
    deadline: Option<tokio::time::Instant>,
    key: Option<String>,
}

impl Front {
    /// The call's client (within its per-address limit for `work`), deadline and key.
    fn read<B, R: Default>(&self, request: &Request<B>, work: Work) -> Result<Headers, Refusal<R>> {
        let client = client_ip::of(request, &self.trusted);
        match work {
            Work::Send => self.limits.check_send_client(client),
            Work::Check => self.limits.check_verify(client),
        }
        .map_err(|limited| refuse(limited.into()))?;
        let key = idempotency::key_of(request.headers()).map_err(refuse)?;
        Ok(Headers { client, deadline: deadline(request.headers()), key })
    }

    /// Reads the request's body whole (at most one message of `--max-request-bytes` and its 5-byte prefix) and
    /// puts it back for tonic to decode. Larger is `OUT_OF_RANGE`, as tonic answers it; a stream the client reset
    /// is `CANCELLED`.
    ///
    /// In place and frame by frame, rather than with `collect` on the request taken apart, whose state would take
    /// the call's future past 1 KiB.
    async fn read_body<R: Default>(&self, request: &mut Request<Body>) -> Result<(), Refusal<R>> {
        let mut body = std::mem::take(request.body_mut());
        let mut read = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(Status::cancelled("the request's body was not received").into_http());
            };
            // Trailers, which a request does not have in gRPC, are not passed on.
            let Ok(data) = frame.into_data() else { continue };
            if read.len() + data.len() > self.max_body {
                let limit = self.max_body - GRPC_PREFIX;
                let message = format!("the request is larger than the {limit} bytes this server reads");
                return Err(Status::out_of_range(message).into_http());
            }
            read.extend_from_slice(&data);
        }
        *request.body_mut() = Body::new(Full::new(read.freeze()));
        Ok(())
    }

    /// An unkeyed call's place for `work`; a keyed call takes it once its key is claimed.
    async fn admit<R: Default>(
        &self,
        Headers { client, deadline, key }: Headers,
        work: Work,
    ) -> Result<Call, Refusal<R>> {
        let entry = match key {
            Some(key) => Entry::Keyed(key),
            None => Entry::Admitted(self.service.admit(work, client, deadline).await.map_err(refuse)?),
        };
        Ok(Call { client, deadline, entry })
    }
}
