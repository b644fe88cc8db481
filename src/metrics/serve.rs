//! The scrape endpoint: `GET /metrics` answers the exposition in OpenMetrics text; any other path is 404 and any
//! other method 405 (axum's routing). It serves until shutdown, like the gRPC listeners.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// The content type of OpenMetrics text, which Prometheus asks for and prefers.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics` on the admitted connections of `listener` until `shutdown` is cancelled, answering only to
/// the names of `hosts`.
pub async fn serve(
    listener: crate::listen::Incoming,
    hosts: crate::listen::AllowedHosts,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
        .layer(crate::listen::HostCheckLayer::new(hosts));
    let listener = crate::listen::StreamListener::new(listener, local);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
