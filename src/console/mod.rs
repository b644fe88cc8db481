//! The web console for team leads, on the admin listener at `/console/`: static pages embedded in the binary,
//! which call `otp.v1.SupervisorService` as a gRPC-Web client (tonic-web translates the calls on this listener),
//! so every call passes the same bearer-token layer and the same audited flows as `otpctl`. This layer serves the
//! pages and sets the browser security headers, in one place, on them and on every gRPC-Web response; native
//! gRPC calls pass through untouched.

mod assets;

use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tonic::codegen::http::{Method, Request, Response, StatusCode};
use tonic::codegen::{BoxFuture, Service};

/// Where the console is served.
pub const CONSOLE_PATH: &str = "/console/";

/// The policy for the console's pages and calls: only this origin's scripts, styles and calls; no inline code, no
/// `eval`, no framing, no form posts, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The headers on every console page and every gRPC-Web response. `no-store`: a response may hold a code,
/// which must not outlive the screen that shows it, in any cache.
const SECURITY_HEADERS: [(&str, &str); 8] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()"),
];

/// Marks a request that arrived as gRPC-Web (the console's calls) before tonic-web turns it into plain gRPC: the
/// access context records the user agent of these calls only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcWebCall;

/// Serves the console and secures its responses; wrap the admin server with it, outside tonic-web's layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleLayer;

impl<S> tower_layer::Layer<S> for ConsoleLayer {
    type Service = ConsoleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConsoleService { inner }
    }
}

/// A service wrapped by [`ConsoleLayer`].
#[derive(Debug, Clone)]
pub struct ConsoleService<S> {
    inner: S,
}

impl<S, ReqBody> Service<Request<ReqBody>> for ConsoleService<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        // `/` too: whoever types the admin listener's address lands on the console (no gRPC path is `/`).
        if path == "/" || path == "/console" || path.starts_with(CONSOLE_PATH) {
            let mut response = page(request.method(), path);
            secure(response.headers_mut());
            return Box::pin(async move { Ok(response) });
        }
        let grpc_web = is_grpc_web(request.headers());
        if grpc_web {
            request.extensions_mut().insert(GrpcWebCall);
        }
        // The clone polled ready serves this call; a fresh clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if grpc_web {
                secure(response.headers_mut());
            }
            Ok(response)
        })
    }
}

/// A gRPC-Web call (the content types tonic-web translates).
fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/grpc-web"))
}

fn secure(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
}

/// The answer to a request under `/console`: an embedded file, a redirect to the console's root, or an error.
fn page(method: &Method, path: &str) -> Response<Body> {
    if path == "/" || path == "/console" {
        return plain(StatusCode::PERMANENT_REDIRECT, "see /console/\n", Some(CONSOLE_PATH));
    }
    let Some(asset) = assets::find(path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n", None);
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n", None);
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let served = asset.served();
    let body = if method == Method::HEAD { String::new() } else { served.to_owned() };
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(served.len()));
    response
}

fn plain(status: StatusCode, text: &'static str, location: Option<&'static str>) -> Response<Body> {
    let mut response = Response::new(Body::new(text.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(location) = location {
        headers.insert(header::LOCATION, HeaderValue::from_static(location));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_is_found_and_nothing_else() {
        for asset in assets::ASSETS {
            let response = page(&Method::GET, asset.path);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
        }
        assert_eq!(page(&Method::GET, "/console/../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(page(&Method::GET, "/console/nope.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(page(&Method::POST, "/console/").status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(page(&Method::GET, "/console").status(), StatusCode::PERMANENT_REDIRECT);
        let root = page(&Method::GET, "/");
        assert_eq!(root.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(root.headers()[header::LOCATION], CONSOLE_PATH);
    }

    #[test]
    fn no_page_carries_inline_script_or_style() {
        for asset in assets::ASSETS.iter().filter(|a| a.content_type.starts_with("text/html")) {
            let html = asset.body.to_ascii_lowercase();
            assert!(!html.contains("<script>") && !html.contains(" style=") && !html.contains("<style"));
            for handler in ["onclick", "onsubmit", "onload", "oninput", "onchange", "onerror", "javascript:"] {
                assert!(!html.contains(handler), "{} holds {handler}", asset.path);
            }
        }
    }
}
