//! A real HTTP server on loopback that plays the SMS provider (docs/sms-gateway.md): it records every request
//! and answers from a script, then with a default reply.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// How the provider answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with `{"message_id": …}`.
    Accept(&'static str),
    /// This status, empty body.
    Status(u16),
    /// This status with `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Waits this long, then accepts.
    Slow(Duration),
    /// `307 Temporary Redirect` to this URL (which a client that follows redirects re-sends the body to).
    Redirect(String),
}

/// One request the provider received.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: serde_json::Value,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    /// The W3C trace context the request carried.
    pub traceparent: Option<String>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeProvider {
    /// Answers with `script` in order, then with `default`.
    pub async fn start(script: Vec<Reply>, default: Reply) -> Self {
        let inner = Arc::new(Mutex::new(Inner { script: script.into(), default: Some(default), received: vec![] }));
        let app = axum::Router::new().route("/v1/sms", post(handle)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, inner }
    }

    /// The URL this provider takes messages at.
    pub fn url(&self) -> String {
        format!("http://{}/v1/sms", self.addr)
    }

    /// The `--sms-gateway` value for this provider.
    pub fn gateway(&self) -> String {
        format!("http:http://{}/v1/sms", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    pub fn set_default(&self, reply: Reply) {
        self.inner.lock().unwrap().default = Some(reply);
    }
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: String) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.received.push(Received {
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            authorization: header("authorization"),
            idempotency_key: header("idempotency-key"),
            traceparent: header("traceparent"),
        });
        inner.script.pop_front().or_else(|| inner.default.clone()).unwrap()
    };
    match reply {
        Reply::Accept(id) => axum::Json(serde_json::json!({ "message_id": id })).into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::RetryAfter(code, secs) => {
            (StatusCode::from_u16(code).unwrap(), [("retry-after", secs.to_string())]).into_response()
        }
        Reply::Redirect(location) => (StatusCode::TEMPORARY_REDIRECT, [("location", location)]).into_response(),
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            axum::Json(serde_json::json!({ "message_id": "slow" })).into_response()
        }
    }
}
