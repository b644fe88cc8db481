//! The gRPC edge: request parsing into domain types, the service implementations, and the error mapping.

mod otp;
mod status;

pub use otp::OtpApi;
pub use status::ERROR_DOMAIN;

use std::future::Future;

use tracing::Instrument;

use crate::service::ServiceError;

/// Runs a flow on its own task, so that a client hanging up mid-call cannot leave it half done (an attempt
/// reserved but not judged, a code issued but its delivery not recorded).
async fn detached<T: Send + 'static>(
    flow: impl Future<Output = Result<T, ServiceError>> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::spawn(flow.in_current_span()).await?
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}
