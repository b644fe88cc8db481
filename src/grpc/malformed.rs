//! A request that is not a well-formed gRPC message is the caller's mistake, but tonic and prost answer
//! `INTERNAL` for it: an empty body ("Missing request message."), a frame shorter than its length prefix, a bad
//! compression flag, bytes that are not the message (not UTF-8, truncated, a wrong wire type). This layer, on
//! both listeners and so for every unary service (health too), answers those `INVALID_ARGUMENT`
//! instead. It recognises them by tonic's own status, which `Status::into_http` leaves in the response's
//! extensions; an `INTERNAL` of ours ("internal error") passes unchanged.
//!
//! One deliberate difference from the gRPC compression document: a message with the compressed flag but no
//! `grpc-encoding` is `INVALID_ARGUMENT` here, where the document asks for `INTERNAL`, because the mistake is the
//! caller's.

use std::task::{Context, Poll};

use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::{Code, Status};

/// What tonic (and prost's decode error) say when a request cannot be read as a message.
const MALFORMED: [&str; 5] = [
    "Missing request message.",
    "Unexpected EOF decoding stream.",
    "protocol error: received message with",
    "Error decompressing:",
    "failed to decode Protobuf message",
];

/// Answers malformed requests `INVALID_ARGUMENT` rather than `INTERNAL`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MalformedIsInvalidArgument;

impl<S> tower_layer::Layer<S> for MalformedIsInvalidArgument {
    type Service = Malformed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Malformed(inner)
    }
}

/// A service wrapped by [`MalformedIsInvalidArgument`].
#[derive(Debug, Clone)]
pub struct Malformed<S>(S);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Malformed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            match response.extensions().get::<Status>() {
                Some(status) if is_malformed(status) => {
                    let message = format!("the request is not a well-formed message: {}", status.message());
                    Ok(Status::invalid_argument(message).into_http())
                }
                _ => Ok(response),
            }
        })
    }
}

fn is_malformed(status: &Status) -> bool {
    status.code() == Code::Internal && MALFORMED.iter().any(|m| status.message().starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tonics_decode_errors_are_the_callers() {
        assert!(is_malformed(&Status::internal("Missing request message.")));
        assert!(is_malformed(&Status::internal("failed to decode Protobuf message: invalid wire type")));
        assert!(!is_malformed(&Status::internal("internal error")), "ours stays INTERNAL");
        assert!(!is_malformed(&Status::unavailable("Missing request message.")));
    }
}
