//! The gRPC edge: request parsing into domain types, the service implementations, and the error mapping.

pub mod access;
mod admit;
mod auth;
pub mod client_ip;
pub mod convert;
pub mod idempotency;
mod malformed;
mod otp;
mod signin;
mod status;
mod supervisor;
mod violations;

pub use admit::AdmitFirstLayer;
pub use auth::AuthLayer;
pub use idempotency::IdempotencyKeys;
pub use malformed::MalformedIsInvalidArgument;
pub use otp::OtpApi;
pub use signin::SignInApi;
pub use status::ERROR_DOMAIN;
pub use supervisor::SupervisorApi;

/// The handlers' request parsing, for the fuzz targets in `fuzz/`: not an API.
#[doc(hidden)]
pub mod edge {
    pub use super::otp::OtpRequests;
    pub use super::supervisor::{AuditQuery, Refusal, SupervisorRequests};
}

use std::future::Future;

use tracing::Instrument;

use crate::service::ServiceError;

/// Runs a flow on its own task, so that a client hanging up mid-call cannot leave it half done (an attempt
/// reserved but not judged, a code issued but its delivery not recorded).
///
/// The task starts here, not when the answer is first awaited, so the handler awaiting it holds only the task's
/// handle: a flow's state holds every nested call it awaits, and a handler that held it would be that large, and
/// move that much, on every call, including the refusals that never get that far.
fn detached<T: Send + 'static, E: From<ServiceError> + Send + 'static>(
    flow: impl Future<Output = Result<T, E>> + Send + 'static,
) -> impl Future<Output = Result<T, E>> + Send + 'static {
    let task = tokio::spawn(flow.in_current_span());
    async move { task.await.map_err(|error| E::from(ServiceError::Task(error)))? }
}

/// The caller's deadline from the `grpc-timeout` header (`\d{1,8}[HMSmun]`), as an instant.
fn deadline(headers: &tonic::codegen::http::HeaderMap) -> Option<tokio::time::Instant> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok().filter(|_| digits.len() <= 8)?;
    let timeout = match unit {
        "H" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    };
    tokio::time::Instant::now().checked_add(timeout)
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}
