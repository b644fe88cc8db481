//! Where a supervisor call came from, read once per call from the HTTP request the admin listener received
//! (the one place it is built): the client address as the front-line limits read it (the TCP peer, or through
//! `--trusted-proxies` the forwarded address), the client certificate a mutual-TLS handshake verified, and for
//! console (gRPC-Web) calls the browser's user agent. [`super::AuthLayer`] puts it on the caller's `Actor`, so every
//! audit event of the call records it.

use tonic::codegen::http::{Request, header};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::client_ip::TrustedProxies;
use crate::console::GrpcWebCall;
use crate::domain::audit::{AccessContext, ClientCertificate};

/// Where `request` came from.
pub fn context<B>(request: &Request<B>, trusted: &TrustedProxies) -> AccessContext {
    let extensions = request.extensions();
    let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>();
    let mut context = AccessContext::from_address(super::client_ip::of(request, trusted));
    // The end-entity certificate comes first; rustls has verified the chain before any request is read.
    if let Some(der) = tls.and_then(TlsConnectInfo::peer_certs).and_then(|certs| certs.first().cloned()) {
        context = context.with_certificate(ClientCertificate::new(&subject(&der), &der));
    }
    if extensions.get::<GrpcWebCall>().is_some() {
        if let Some(agent) = request.headers().get(header::USER_AGENT) {
            context = context.with_user_agent(&String::from_utf8_lossy(agent.as_bytes()));
        }
    }
    context
}

/// A service whose calls carry their [`AccessContext`] in the request's extensions (for the sign-in service,
/// which reads the token itself).
#[derive(Clone)]
pub struct WithAccess<S> {
    inner: S,
    trusted: TrustedProxies,
}

impl<S> WithAccess<S> {
    /// Wraps `inner`, reading addresses through `trusted` proxies.
    pub fn new(inner: S, trusted: TrustedProxies) -> Self {
        Self { inner, trusted }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for WithAccess<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<Request<B>> for WithAccess<S>
where
    S: tonic::codegen::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let access = context(&request, &self.trusted);
        request.extensions_mut().insert(access);
        self.inner.call(request)
    }
}

/// The certificate's subject, RFC 4514 style (`CN=team-lead-kim, O=…`).
fn subject(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, certificate)) => certificate.subject().to_string(),
        // rustls verified it, so this is not expected; the fingerprint still names the certificate.
        Err(_) => "(subject unreadable)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn request(peer: &str, headers: &[(&str, &str)], grpc_web: bool) -> Request<()> {
        let mut request = Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(()).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(TcpConnectInfo { local_addr: None, remote_addr: Some(peer) });
        if grpc_web {
            request.extensions_mut().insert(GrpcWebCall);
        }
        request
    }

    #[test]
    fn the_address_is_read_as_the_limits_read_it_and_the_user_agent_only_from_the_console() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let headers = [("x-forwarded-for", "198.51.100.1, 203.0.113.9"), ("user-agent", "Mozilla/5.0 Chrome")];
        let via_proxy = context(&request("10.1.2.3:5000", &headers, true), &trusted);
        assert_eq!(via_proxy.client_address(), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(via_proxy.user_agent(), Some("Mozilla/5.0 Chrome"));
        assert_eq!(via_proxy.certificate(), None);
        let direct = context(&request("192.0.2.7:5000", &headers, false), &trusted);
        assert_eq!(
            direct.client_address(),
            Some("192.0.2.7".parse().unwrap()),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(direct.user_agent(), None, "native gRPC: no user agent recorded");
    }
}
