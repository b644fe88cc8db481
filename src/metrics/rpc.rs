//! One tower layer, on both listeners, that times every gRPC call and counts it by method and status code: the
//! OtpService, the SupervisorService, health and reflection alike, and paths no service knows (as `other`).
//!
//! The status is read where gRPC puts it: in the response headers of a trailers-only response (every error
//! tonic answers at once), else in the trailers at the end of the body, so a call lasts until its status is sent,
//! streams included (health `Watch`, reflection). A call whose response future or body is dropped before a status
//! was seen is `CANCELLED`: the client went away, or tonic's deadline ended it (which tonic answers `CANCELLED`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};

use super::{GrpcStatus, Metrics, RpcMethod};

/// Times and counts every call of the service it wraps.
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RpcMetricsLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetered { inner, metrics: Arc::clone(&self.metrics) }
    }
}

/// A service wrapped by [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetered<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcMetered<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = Call {
            metrics: Arc::clone(&self.metrics),
            method: RpcMethod::from_path(request.uri().path()),
            started: Instant::now(),
            recorded: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            // Dropped while this awaits (a client gone, tonic's timeout), `call` records CANCELLED.
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    call.finish(GrpcStatus::Unknown);
                    return Err(error);
                }
            };
            let (parts, inner) = response.into_parts();
            let call = match grpc_status(&parts.headers) {
                // Trailers-only: the status is already here, and the body is empty.
                Some(status) => {
                    call.finish(status);
                    None
                }
                None => Some(call),
            };
            Ok(Response::from_parts(parts, MeteredBody { inner, call }))
        })
    }
}

/// The `grpc-status` in `headers` (response headers or trailers), if there is one.
fn grpc_status(headers: &HeaderMap) -> Option<GrpcStatus> {
    let value = headers.get("grpc-status")?;
    Some(value.to_str().ok().and_then(|v| v.trim().parse().ok()).map_or(GrpcStatus::Unknown, GrpcStatus::from_number))
}

/// One call being timed; recorded exactly once, as CANCELLED if dropped unrecorded.
struct Call {
    metrics: Arc<Metrics>,
    method: RpcMethod,
    started: Instant,
    recorded: bool,
}

impl Call {
    fn finish(mut self, status: GrpcStatus) {
        self.record(status);
    }

    fn record(&mut self, status: GrpcStatus) {
        if !self.recorded {
            self.recorded = true;
            self.metrics.rpc_call(self.method, status, self.started.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(GrpcStatus::Cancelled);
    }
}

/// A response body that records its call when the trailers (and their `grpc-status`) go out.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let status = match &polled {
            Poll::Pending => return polled,
            Poll::Ready(Some(Ok(frame))) => {
                frame.trailers_ref().map(|trailers| grpc_status(trailers).unwrap_or(GrpcStatus::Unknown))
            }
            // A body that fails, or ends without trailers, sent no status: the client reads UNKNOWN/INTERNAL.
            Poll::Ready(Some(Err(_)) | None) => Some(GrpcStatus::Unknown),
        };
        // Only a frame that carries the status ends the call (taking it on a data frame would lose it).
        if let Some((status, call)) = status.and_then(|status| this.call.take().map(|call| (status, call))) {
            call.finish(status);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
