//! The DNS-rebinding defence: a page on another site can make a browser resolve its own name to this machine
//! and send requests to a listener here, but the request still names that site in its `Host` header (HTTP/1) or
//! `:authority` (HTTP/2). [`HostCheckLayer`] answers `421 Misdirected Request` to any name the listener does not
//! serve, before anything else sees the request. It wraps the admin, webhook and metrics listeners; the public
//! listener sits behind the integrator's backend and answers any name.
//!
//! A listener serves, with its port: its bound address (any IP address of the machine when bound to 0.0.0.0 or
//! [::]: an address literal is no rebinding), `localhost`, `127.0.0.1`, `[::1]`, and the machine's name; and
//! every `--allowed-hosts` entry (`name`, any port, or `name:port`). Native gRPC clients (tonic, grpcurl, grpc-go)
//! send the address they dialled, which is one of those.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::uri::Authority;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};

/// An `--allowed-hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// `name` or `name:port` (an IPv6 address in brackets).
    pub fn parse(text: &str) -> Result<Self, String> {
        let authority: Authority =
            text.trim().parse().map_err(|_| format!("`{}` is not a host name or host:port", text.trim()))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{}` is not a host name or host:port", text.trim()));
        }
        Ok(Self { host: normalise(authority.host()), port: authority.port_u16() })
    }
}

fn normalise(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

/// The names one listener answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    port: u16,
    default_port: u16,
    any_address: bool,
    names: Vec<HostPattern>,
}

/// The machine's name (uname's nodename), when it has one.
fn machine_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_str().ok()?.trim();
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

impl AllowedHosts {
    /// The names of the listener bound to `bound` (`tls`: a Host without a port means 443, else 80), plus `extra`.
    pub fn for_listener(bound: SocketAddr, tls: bool, extra: &[HostPattern]) -> Self {
        let port = bound.port();
        let mut names: Vec<HostPattern> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_owned)
            .chain(machine_name())
            .chain((!bound.ip().is_unspecified()).then(|| bound.ip().to_canonical().to_string()))
            .map(|host| HostPattern { host, port: Some(port) })
            .collect();
        names.extend_from_slice(extra);
        Self { port, default_port: if tls { 443 } else { 80 }, any_address: bound.ip().is_unspecified(), names }
    }

    /// Whether a request naming `authority` is for this listener.
    pub fn allows(&self, authority: &str) -> bool {
        let Ok(authority) = authority.parse::<Authority>() else { return false };
        if authority.as_str().contains('@') {
            return false;
        }
        let host = normalise(authority.host());
        let port = authority.port_u16().unwrap_or(self.default_port);
        // Bound to every address: any address literal names this listener (it may not be one of this machine's
        // addresses, but a literal cannot be rebound: the browser's origin is that address).
        if self.any_address && port == self.port && host.parse::<IpAddr>().is_ok() {
            return true;
        }
        self.names.iter().any(|n| n.host == host && n.port.is_none_or(|p| p == port))
    }

    /// Whether `request` names this listener (HTTP/2 `:authority` or an absolute URI first, then `Host`).
    pub fn allows_request<B>(&self, request: &Request<B>) -> bool {
        if let Some(authority) = request.uri().authority() {
            return self.allows(authority.as_str());
        }
        match request.headers().get(header::HOST).map(HeaderValue::to_str) {
            Some(Ok(host)) => self.allows(host),
            // HTTP/1.1 requires Host; a request without one names no listener.
            _ => false,
        }
    }
}

/// Answers 421 to requests for names the listener does not serve.
#[derive(Debug, Clone)]
pub struct HostCheckLayer {
    hosts: Arc<AllowedHosts>,
}

impl HostCheckLayer {
    /// Checks against `hosts`.
    pub fn new(hosts: AllowedHosts) -> Self {
        Self { hosts: Arc::new(hosts) }
    }
}

impl<S> tower_layer::Layer<S> for HostCheckLayer {
    type Service = HostCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HostCheck { inner, hosts: Arc::clone(&self.hosts) }
    }
}

/// The service of [`HostCheckLayer`].
#[derive(Debug, Clone)]
pub struct HostCheck<S> {
    inner: S,
    hosts: Arc<AllowedHosts>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for HostCheck<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.hosts.allows_request(&request) {
            return Box::pin(self.inner.call(request));
        }
        tracing::debug!(host = ?request.headers().get(header::HOST), authority = ?request.uri().authority(),
            "request for a host this listener does not serve: 421");
        let mut response = Response::new(RB::default());
        *response.status_mut() = StatusCode::MISDIRECTED_REQUEST;
        Box::pin(std::future::ready(Ok(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_answers_to_its_address_loopback_names_its_machine_and_the_allowed_hosts() {
        let extra = [HostPattern::parse("otpd.example.com").unwrap(), HostPattern::parse("Ops.Example:8443").unwrap()];
        let hosts = AllowedHosts::for_listener("10.1.2.3:9464".parse().unwrap(), false, &extra);
        for ok in [
            "10.1.2.3:9464",
            "localhost:9464",
            "LOCALHOST.:9464",
            "127.0.0.1:9464",
            "[::1]:9464",
            "otpd.example.com",
            "otpd.example.com:1",
            "ops.example:8443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        if let Some(name) = machine_name() {
            assert!(hosts.allows(&format!("{name}:9464")));
        }
        for refused in [
            "evil.example:9464",
            "evil.example",
            "localhost",
            "localhost:80",
            "10.1.2.4:9464",
            "ops.example:443",
            "user@localhost:9464",
            "",
            "local host:9464",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        // Bound to every address: any address literal with the port, but still no foreign name.
        let any = AllowedHosts::for_listener("0.0.0.0:50052".parse().unwrap(), true, &[]);
        assert!(any.allows("192.168.0.7:50052") && any.allows("[fe80::1]:50052"));
        assert!(!any.allows("192.168.0.7:50053") && !any.allows("rebind.example:50052"));
        // Port 443 by default with TLS.
        let tls = AllowedHosts::for_listener("127.0.0.1:443".parse().unwrap(), true, &[]);
        assert!(tls.allows("localhost"));
    }

    #[tokio::test]
    async fn foreign_hosts_get_421_and_never_reach_the_service() {
        use tower::{Service, ServiceExt};
        let hosts = AllowedHosts::for_listener("127.0.0.1:8080".parse().unwrap(), false, &[]);
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&reached);
        let inner = tower::service_fn(move |_: Request<()>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(String::from("served"))))
        });
        let mut service = tower_layer::Layer::layer(&HostCheckLayer::new(hosts), inner);
        let request = |host: Option<&str>, uri: &str| {
            let mut builder = Request::builder().uri(uri);
            if let Some(host) = host {
                builder = builder.header(header::HOST, host);
            }
            builder.body(()).unwrap()
        };
        for (req, status) in [
            (request(Some("evil.example"), "/metrics"), StatusCode::MISDIRECTED_REQUEST),
            (request(None, "/metrics"), StatusCode::MISDIRECTED_REQUEST),
            (request(Some("localhost:8080"), "http://evil.example/metrics"), StatusCode::MISDIRECTED_REQUEST),
            (request(Some("localhost:8080"), "/metrics"), StatusCode::OK),
            (request(None, "http://127.0.0.1:8080/x"), StatusCode::OK),
        ] {
            let response = service.ready().await.unwrap().call(req).await.unwrap();
            assert_eq!(response.status(), status);
        }
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
