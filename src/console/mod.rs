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
            let mut response = page(request.method(), path, accepts_gzip(request.headers()));
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

/// Whether the browser takes a gzip-encoded body (`Accept-Encoding: gzip`, not refused with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused =
                parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)));
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        },
    )
}

/// The answer to a request under `/console`: an embedded file (gzip-encoded for a browser that takes it), a redirect
/// to the console's root, or an error.
fn page(method: &Method, path: &str, gzip: bool) -> Response<Body> {
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
    let gzipped = asset.gzipped().filter(|_| gzip);
    let bytes = gzipped.unwrap_or(asset.served().as_bytes());
    let body = if method == Method::HEAD {
        Body::default()
    } else {
        Body::new(http_body_util::Full::new(bytes::Bytes::from_static(bytes)))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    // Caches (none may keep these: no-store) and the browser both learn that the encoding follows the request's.
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzipped.is_some() {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
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
            let response = page(&Method::GET, asset.path, false);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
        }
        assert_eq!(page(&Method::GET, "/console/../Cargo.toml", true).status(), StatusCode::NOT_FOUND);
        assert_eq!(page(&Method::GET, "/console/nope.js", true).status(), StatusCode::NOT_FOUND);
        assert_eq!(page(&Method::POST, "/console/", true).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(page(&Method::GET, "/console", true).status(), StatusCode::PERMANENT_REDIRECT);
        let root = page(&Method::GET, "/", true);
        assert_eq!(root.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(root.headers()[header::LOCATION], CONSOLE_PATH);
    }

    /// A browser that takes gzip gets each file compressed, which decompresses to the file; one that does not, or
    /// refuses it with `q=0`, gets the file as it is. Either way the answer says it varies with Accept-Encoding.
    #[tokio::test]
    async fn files_go_gzip_encoded_to_a_browser_that_takes_it() {
        use http_body_util::BodyExt;
        use std::io::Read;
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(accept("gzip, deflate, br, zstd") && accept("br;q=1.0, GZIP;q=0.5") && accept("x-gzip"));
        assert!(!accept("br") && !accept("gzip;q=0") && !accept("gzip; q=0.0, br") && !accept("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
        let (mut plain_bytes, mut sent_bytes) = (0, 0);
        for asset in assets::ASSETS {
            let response = page(&Method::GET, asset.path, true);
            assert_eq!(response.headers()[header::VARY], "accept-encoding");
            let gzip = response.headers().get(header::CONTENT_ENCODING).is_some();
            let length: usize = response.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), length, "{}", asset.path);
            let text = if gzip {
                let mut text = String::new();
                flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
                text
            } else {
                String::from_utf8(body.to_vec()).unwrap()
            };
            assert_eq!(text, asset.served(), "{}", asset.path);
            plain_bytes += asset.served().len();
            sent_bytes += length;

            let response = page(&Method::GET, asset.path, false);
            assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
            assert_eq!(response.headers()[header::CONTENT_LENGTH], asset.served().len().to_string().as_str());
            let head = page(&Method::HEAD, asset.path, true);
            assert_eq!(head.headers()[header::CONTENT_LENGTH], length.to_string().as_str());
        }
        assert!(sent_bytes * 2 < plain_bytes, "gzip sends {sent_bytes} of {plain_bytes} bytes");
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
