//! `otpd healthcheck`: asks a running otpd's `grpc.health.v1` service whether it is SERVING and exits 0 if so,
//! 1 otherwise. The container image's HEALTHCHECK runs it, so the image needs no grpcurl or shell. It reads the
//! same settings as the service (in a container, the same `OTPD_*` environment), so it asks the listener the
//! service was told to bind, over TLS when that listener has a certificate.
//!
//! Over TLS the probe pins the service's own certificate: it accepts exactly the end-entity certificate that is
//! first in the listener's certificate file (DER bytes compared) and still checks the handshake's signatures, so
//! the peer must hold that certificate's key. No CA has to be configured for it, and it is not "skip verification":
//! another server fails the probe. A certificate rotated on disk is loaded by the service within
//! `--tls-watch-interval`: when the served certificate is not the file's, the probe waits that long (plus a margin)
//! and asks once more, so it stays healthy through a rotation and still fails a server that never loads it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use crate::config::{HealthcheckArgs, Listener};

use crate::config::Config;
use crate::tls::PemFile;

/// Added to the watch interval before the second look after a rotation: reading and loading the files.
const RELOAD_MARGIN: Duration = Duration::from_millis(500);

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The listener answered SERVING.
    Serving,
    /// The listener answered, with another status (NOT_SERVING while the database is unreachable).
    NotServing(String),
    /// No answer: nothing listening, a transport error, or the timeout.
    Unreachable(String),
    /// A TLS listener served another certificate than the first in its file.
    OtherCertificate(String),
}

/// How the probe talks to the listener.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Plaintext HTTP/2 (the listener has no certificate).
    Plaintext,
    /// TLS, accepting only this certificate.
    Pinned(Leaf),
}

/// The one certificate a TLS listener must present: the first in its certificate file.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// DER of the end-entity certificate.
    certificate: CertificateDer<'static>,
    /// The file it came from, for the error when another certificate is served.
    file: PemFile,
}

impl Leaf {
    /// Reads the first certificate of `file` (the leaf: a chain is leaf first).
    pub async fn read(file: &PemFile) -> anyhow::Result<Self> {
        let chain = crate::tls::certificates(file).await?;
        let certificate = chain.into_iter().next().with_context(|| format!("--{}: no certificate", file.setting))?;
        Ok(Self { certificate, file: file.clone() })
    }
}

/// The transport for `listener` as `config` sets it up. A listener that asks for client certificates (mutual TLS
/// on the admin listener) is refused: the probe has no client certificate to present.
pub async fn transport(config: &Config, listener: Listener) -> anyhow::Result<Transport> {
    let files = match listener {
        Listener::Public => config.tls.public.as_ref(),
        Listener::Admin => config.tls.admin.as_ref(),
    };
    let Some(files) = files else { return Ok(Transport::Plaintext) };
    if let Some(ca) = &files.client_ca {
        anyhow::bail!(
            "the admin listener takes only clients with a certificate from --{} {} (mutual TLS), and the health \
             check has none to present: check the public listener instead (`otpd healthcheck`, the default \
             `--listener public`)",
            ca.setting,
            ca.path.display()
        );
    }
    Ok(Transport::Pinned(Leaf::read(&files.cert).await?))
}

/// Runs the probe against the configured listener: Ok (printing SERVING) only if it answered SERVING.
pub async fn check(config: &Config, args: &HealthcheckArgs) -> anyhow::Result<()> {
    let addr = match args.listener {
        Listener::Public => config.listen,
        Listener::Admin => config.admin_listen,
    };
    let target = dialable(addr);
    let transport = transport(config, args.listener).await?;
    let mut outcome = probe(target, &transport, &args.service, *args.timeout).await;
    let watching = !config.tls.watch_interval.is_zero();
    if watching && matches!(outcome, Probe::OtherCertificate(_)) {
        // The file was replaced a moment ago (or between reading it and the handshake): the service loads it
        // within one watch interval.
        tokio::time::sleep(config.tls.watch_interval + RELOAD_MARGIN).await;
        let transport = crate::healthcheck::transport(config, args.listener).await?;
        outcome = probe(target, &transport, &args.service, *args.timeout).await;
    }
    match outcome {
        Probe::Serving => {
            println!("{target}: SERVING");
            Ok(())
        }
        Probe::NotServing(status) => anyhow::bail!("{target}: {status}"),
        Probe::Unreachable(why) => anyhow::bail!("{target}: unreachable: {why}"),
        Probe::OtherCertificate(why) => anyhow::bail!("{target}: {why}"),
    }
}

/// Asks `addr` for the health of `service` over `transport`, the whole exchange bounded by `timeout`.
pub async fn probe(addr: SocketAddr, transport: &Transport, service: &str, timeout: Duration) -> Probe {
    // With TLS the connector below does the handshake, so tonic is given a plain `http` address to connect
    // through it (an `https` one would have it look for a TLS configuration of its own).
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint.connect_timeout(timeout).timeout(timeout),
        Err(error) => return Probe::Unreachable(error.to_string()),
    };
    let request = HealthCheckRequest { service: service.to_owned() };
    let exchange = async {
        let channel = connect(&endpoint, addr, transport).await.map_err(|e| {
            if caused_by_not_pinned(e.as_ref()) {
                Probe::OtherCertificate(causes(e.as_ref()))
            } else {
                Probe::Unreachable(causes(e.as_ref()))
            }
        })?;
        HealthClient::new(channel).check(request).await.map_err(|status| match status.code() {
            // grpc.health.v1's answer for a name it does not serve.
            tonic::Code::NotFound => Probe::NotServing("SERVICE_UNKNOWN".to_owned()),
            code => Probe::Unreachable(format!("{code}: {}", status.message())),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Probe::Unreachable(format!("no answer within {}", humantime::format_duration(timeout))),
        Ok(Err(probe)) => probe,
        Ok(Ok(response)) => match response.into_inner().status() {
            ServingStatus::Serving => Probe::Serving,
            other => Probe::NotServing(other.as_str_name().to_owned()),
        },
    }
}

async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    transport: &Transport,
) -> Result<Channel, Box<dyn std::error::Error + Send + Sync>> {
    let Transport::Pinned(pin) = transport else { return Ok(endpoint.connect().await?) };
    let provider = crate::tls::provider();
    let verifier = Arc::new(PinnedCertificate { pin: pin.clone(), provider: Arc::clone(&provider) });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // gRPC is HTTP/2; the server selects h2 by ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // The name is only sent (as no SNI: an IP address) and never checked: the pin replaces name checks.
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(name, tcp).await.map_err(not_pinned_said_plainly)?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector(tls).await?)
}

/// An error and its causes, `: `-separated, a cause repeating the one before it said once (tonic's connect error
/// displays its cause and also returns it as its source).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if said.last() != Some(&text) {
            said.push(text);
        }
        source = cause.source();
    }
    said.join(": ")
}

/// Whether the pin refused the served certificate, somewhere in `error`'s causes.
fn caused_by_not_pinned(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(cause) = next {
        // An io::Error's source skips the error it wraps, so that one is looked at through get_ref.
        let wrapped = cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if cause.is::<NotPinned>() || wrapped.is_some_and(|inner| inner.is::<NotPinned>()) {
            return true;
        }
        next = cause.source();
    }
    false
}

/// rustls shows a custom certificate error by its `Debug`; the probe's own refusal is said in its own words.
fn not_pinned_said_plainly(error: std::io::Error) -> std::io::Error {
    let refusal = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) => {
            inner.downcast_ref::<NotPinned>().cloned()
        }
        _ => None,
    };
    refusal.map_or(error, std::io::Error::other)
}

/// Accepts exactly the pinned end-entity certificate; the handshake's signatures are verified as usual (ring), so
/// only a server holding that certificate's private key gets through.
#[derive(Debug)]
struct PinnedCertificate {
    pin: Leaf,
    provider: Arc<CryptoProvider>,
}

/// The served certificate is not the pinned one.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the listener's certificate is not the first one in --{setting} {path} (another server, or a certificate \
     file replaced but not loaded within --tls-watch-interval: send otpd SIGHUP)"
)]
struct NotPinned {
    setting: &'static str,
    path: String,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pin.certificate.as_ref() {
            return Ok(ServerCertVerified::assertion());
        }
        let error = NotPinned { setting: self.pin.file.setting, path: self.pin.file.path.display().to_string() };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A listener bound to every address (`0.0.0.0`, `[::]`) is asked on loopback, where a probe inside the same
/// host or container reaches it.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let probe = |s: &str| dialable(s.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(probe("[::]:50052"), "[::1]:50052");
        assert_eq!(probe("10.0.0.7:50051"), "10.0.0.7:50051");
    }
}
