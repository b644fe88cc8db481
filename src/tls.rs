//! TLS on the listeners (rustls with ring, the provider tonic and reqwest already build): certificates and
//! keys from PEM files, optional mutual TLS on the admin listener, TLS on the delivery-receipt listener, and the
//! files re-read on SIGHUP, and whenever they change (`--tls-watch-interval`), so that a certificate rotates
//! without a restart or a signal.
//!
//! Each TLS listener runs its own accept loop: a connection first takes a place in the listener's connection
//! caps (`crate::listen`), then one of its address's `--max-handshakes-per-address`, and its handshake is a task
//! of its own with a timeout, so a slow or hostile client holds its own places, never the loop. A finished
//! handshake yields a `tokio_rustls` stream, for which tonic's `Connected` reports the TCP peer, so
//! `Request::remote_addr` (and the per-IP limits built on it) sees the same address as without TLS.
//! Reloading swaps the whole `rustls::ServerConfig` (certificate, key and client CA together); connections
//! already open keep the session they negotiated, every new handshake uses the new configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::listen::{Guarded, Incoming};
use crate::setting::{ConfigError, Mode};

/// ALPN of the gRPC listeners: gRPC is HTTP/2 only; clients such as grpc-go refuse a TLS server that does not
/// select h2.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN of the delivery-receipt listener: providers post receipts over HTTP/1.1.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// Finished handshakes waiting for tonic to pick them up.
const READY_QUEUE: usize = 64;

/// The TLS settings, as given on the command line (flattened into `otpd`'s settings).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) of the public listener; with --tls-key the public listener speaks only
    /// TLS. Re-read on SIGHUP. Default: plaintext.
    #[arg(long, env = "OTPD_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert. Re-read on SIGHUP.
    #[arg(long, env = "OTPD_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate chain of the admin listener. Default: --tls-cert (with --tls-key).
    #[arg(long, env = "OTPD_ADMIN_TLS_CERT", global = true)]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of --admin-tls-cert. Default: --tls-key.
    #[arg(long, env = "OTPD_ADMIN_TLS_KEY", global = true)]
    pub admin_tls_key: Option<PathBuf>,
    /// PEM CA certificates for mutual TLS on the admin listener: only clients presenting a certificate that
    /// chains to one of them connect. Needs TLS on the admin listener. Re-read on SIGHUP. Default: no client
    /// certificate asked for.
    #[arg(long, env = "OTPD_ADMIN_CLIENT_CA", global = true)]
    pub admin_client_ca: Option<PathBuf>,
    /// PEM certificate chain of the delivery-receipt listener (--webhook-listen); with --webhook-tls-key it
    /// speaks only TLS (HTTP/1.1). Prod mode needs it off loopback. Re-read on SIGHUP. Default: plaintext.
    #[arg(long, env = "OTPD_WEBHOOK_TLS_CERT", global = true)]
    pub webhook_tls_cert: Option<PathBuf>,
    /// PEM private key of --webhook-tls-cert. Re-read on SIGHUP.
    #[arg(long, env = "OTPD_WEBHOOK_TLS_KEY", global = true)]
    pub webhook_tls_key: Option<PathBuf>,
    /// Longest TLS handshake; a client that has not finished it by then is disconnected.
    #[arg(long, env = "OTPD_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", global = true)]
    pub tls_handshake_timeout: humantime::Duration,
    /// How often the TLS files are read for changes; a change is loaded as on SIGHUP (a renewal on Kubernetes or
    /// by an ACME client needs no signal). 0s: only on SIGHUP.
    #[arg(long, env = "OTPD_TLS_WATCH_INTERVAL", default_value = "2s", global = true)]
    pub tls_watch_interval: humantime::Duration,
}

/// A PEM file and the setting that named it (errors name both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    /// The flag, without `--`.
    pub setting: &'static str,
    /// The file.
    pub path: PathBuf,
}

/// The files one TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PemFile,
    /// The leaf's private key.
    pub key: PemFile,
    /// CA certificates a client's certificate must chain to; None: no client certificate is asked for.
    pub client_ca: Option<PemFile>,
}

/// Validated TLS settings of both listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The public listener's files; None: plaintext.
    pub public: Option<TlsFiles>,
    /// The admin listener's files; None: plaintext.
    pub admin: Option<TlsFiles>,
    /// The delivery-receipt listener's files; None: plaintext.
    pub webhook: Option<TlsFiles>,
    /// Longest handshake.
    pub handshake_timeout: Duration,
    /// How often the files are read for changes; zero: never (SIGHUP only).
    pub watch_interval: Duration,
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { setting, message: message.into() }
}

/// A certificate and key given together, or neither.
fn pair(
    cert: (&'static str, &Option<PathBuf>),
    key: (&'static str, &Option<PathBuf>),
) -> Result<Option<(PemFile, PemFile)>, ConfigError> {
    // clap refuses an empty path, on the command line and in an `OTPD_*` variable alike (an empty variable is not
    // read as unset).
    let file = |setting, path: &PathBuf| PemFile { setting, path: path.clone() };
    match (cert.1, key.1) {
        (Some(c), Some(k)) => Ok(Some((file(cert.0, c), file(key.0, k)))),
        (Some(_), None) => Err(invalid(key.0, format!("--{} needs its private key, --{}", cert.0, key.0))),
        (None, Some(_)) => Err(invalid(cert.0, format!("--{} needs its certificate, --{}", key.0, cert.0))),
        (None, None) => Ok(None),
    }
}

impl TlsArgs {
    /// Pairs certificates with keys, applies the admin listener's defaults, and in prod mode refuses a plaintext
    /// admin listener on any address but loopback (bearer tokens and codes would cross the network in clear), and
    /// a plaintext webhook listener likewise (NHN's receipt header is a static shared secret).
    pub fn validate(
        &self,
        mode: Mode,
        admin_listen: SocketAddr,
        webhook_listen: Option<SocketAddr>,
    ) -> Result<TlsSettings, ConfigError> {
        let public = pair(("tls-cert", &self.tls_cert), ("tls-key", &self.tls_key))?;
        let admin = pair(("admin-tls-cert", &self.admin_tls_cert), ("admin-tls-key", &self.admin_tls_key))?
            .or_else(|| public.clone());
        let client_ca = match &self.admin_client_ca {
            None => None,
            Some(_) if admin.is_none() => {
                return Err(invalid(
                    "admin-client-ca",
                    "mutual TLS needs TLS on the admin listener: give --admin-tls-cert and --admin-tls-key \
                     (or --tls-cert and --tls-key)",
                ));
            }
            Some(path) => Some(PemFile { setting: "admin-client-ca", path: path.clone() }),
        };
        if mode == Mode::Prod && admin.is_none() && !admin_listen.ip().to_canonical().is_loopback() {
            return Err(invalid(
                "admin-listen",
                format!(
                    "prod mode serves the admin listener on {admin_listen}, which is not a loopback address, only \
                     with TLS: give --admin-tls-cert and --admin-tls-key (or --tls-cert and --tls-key)"
                ),
            ));
        }
        let webhook = pair(("webhook-tls-cert", &self.webhook_tls_cert), ("webhook-tls-key", &self.webhook_tls_key))?;
        match webhook_listen {
            None if webhook.is_some() => {
                return Err(invalid("webhook-tls-cert", "there is no webhook listener: give --webhook-listen"));
            }
            Some(addr) if mode == Mode::Prod && webhook.is_none() && !addr.ip().to_canonical().is_loopback() => {
                return Err(invalid(
                    "webhook-listen",
                    format!(
                        "prod mode serves the webhook listener on {addr}, which is not a loopback address, only with \
                         TLS (NHN's receipt signature is a fixed shared value): give --webhook-tls-cert and \
                         --webhook-tls-key, or terminate TLS in front of otpd and listen on loopback"
                    ),
                ));
            }
            _ => {}
        }
        if self.tls_handshake_timeout.is_zero() {
            return Err(invalid("tls-handshake-timeout", "must be positive"));
        }
        Ok(TlsSettings {
            public: public.map(|(cert, key)| TlsFiles { cert, key, client_ca: None }),
            admin: admin.map(|(cert, key)| TlsFiles { cert, key, client_ca }),
            webhook: webhook.map(|(cert, key)| TlsFiles { cert, key, client_ca: None }),
            handshake_timeout: *self.tls_handshake_timeout,
            watch_interval: *self.tls_watch_interval,
        })
    }
}

/// A TLS file could not be used. The message names the setting and the file, never the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("--{setting} {}: cannot read the file: {source}", path.display())]
    Read {
        /// The flag.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but holds nothing usable.
    #[error("--{setting} {}: {message}", path.display())]
    Invalid {
        /// The flag.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl TlsError {
    fn invalid(file: &PemFile, message: impl Into<String>) -> Self {
        Self::Invalid { setting: file.setting, path: file.path.clone(), message: message.into() }
    }
}

/// What is wrong with a PEM file, without quoting it (a key file's lines are secret).
fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "not valid PEM: a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "not valid PEM: a malformed BEGIN line",
        pem::Error::Base64Decode(_) => "not valid PEM: bad base64",
        pem::Error::SectionTooLarge => "not valid PEM: a section is too large",
        pem::Error::NoItemsFound => "holds no PEM item of the expected kind",
        _ => "not valid PEM",
    }
}

async fn read(file: &PemFile) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(&file.path).await.map_err(|source| TlsError::Read {
        setting: file.setting,
        path: file.path.clone(),
        source,
    })
}

/// Every certificate in a PEM file (other PEM items, such as a key in the same file, are skipped).
pub(crate) async fn certificates(file: &PemFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(file).await?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::invalid(file, pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(TlsError::invalid(file, "holds no PEM CERTIFICATE"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
async fn private_key(file: &PemFile) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(file).await?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::invalid(file, "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"),
        e => TlsError::invalid(file, pem_problem(&e)),
    })
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a gRPC listener's rustls configuration from its files.
pub async fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    server_config_with_alpn(files, ALPN_GRPC).await
}

/// Builds a listener's rustls configuration from its files, offering `alpn`.
pub async fn server_config_with_alpn(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert).await?;
    let key = private_key(&files.key).await?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::invalid(&files.cert, format!("no TLS version available: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_file).await? {
                roots.add(cert).map_err(|e| TlsError::invalid(ca_file, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::invalid(ca_file, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::invalid(
            &files.key,
            format!("does not go with the certificate in {} ({e})", files.cert.path.display()),
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// One listener's TLS: the files it was built from and the configuration every new handshake uses.
pub struct ServerTls {
    listener: &'static str,
    files: TlsFiles,
    alpn: &'static [&'static [u8]],
    current: watch::Sender<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("listener", &self.listener).field("files", &self.files).finish()
    }
}

impl ServerTls {
    /// Reads the files of `listener` ("public", "admin" or "webhook", for the logs), offering `alpn`.
    pub async fn load(
        listener: &'static str,
        files: TlsFiles,
        alpn: &'static [&'static [u8]],
    ) -> Result<Arc<Self>, TlsError> {
        let config = server_config_with_alpn(&files, alpn).await?;
        tracing::info!(listener, cert = %files.cert.path.display(), mutual = files.client_ca.is_some(), "serving TLS");
        Ok(Arc::new(Self { listener, files, alpn, current: watch::Sender::new(Arc::new(config)) }))
    }

    /// Re-reads the files; on any error the configuration in use stays.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let config = server_config_with_alpn(&self.files, self.alpn).await?;
        self.current.send_replace(Arc::new(config));
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.borrow()))
    }

    /// The TLS connections admitted on `incoming`, handshaken concurrently, until `shutdown` or until the stream
    /// is dropped.
    pub fn incoming(
        self: &Arc<Self>,
        incoming: Incoming,
        handshake_timeout: Duration,
        shutdown: CancellationToken,
    ) -> ReceiverStream<std::io::Result<Guarded<TlsStream<TcpStream>>>> {
        let (ready, stream) = mpsc::channel(READY_QUEUE);
        tokio::spawn(Arc::clone(self).accept_loop(incoming, handshake_timeout, shutdown, ready));
        ReceiverStream::new(stream)
    }

    async fn accept_loop(
        self: Arc<Self>,
        mut incoming: Incoming,
        handshake_timeout: Duration,
        shutdown: CancellationToken,
        ready: mpsc::Sender<std::io::Result<Guarded<TlsStream<TcpStream>>>>,
    ) {
        loop {
            // Admission (the listener's and the address's caps) happens in `poll_admitted`: a connection over a
            // cap is closed there, and accepting goes on at once.
            let (tcp, peer, mut permit) = tokio::select! {
                () = shutdown.cancelled() => break,
                () = ready.closed() => break,
                admitted = std::future::poll_fn(|cx| incoming.poll_admitted(cx)) => admitted,
            };
            if !permit.start_handshake() {
                continue;
            }
            let acceptor = self.acceptor();
            let (ready, shutdown, listener) = (ready.clone(), shutdown.clone(), self.listener);
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
                let stream = tokio::select! {
                    () = shutdown.cancelled() => return,
                    done = handshake => done,
                };
                permit.end_handshake();
                match stream {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(Guarded::new(stream, permit))).await;
                    }
                    // Scanners and misconfigured clients are routine: not worth more than debug.
                    Ok(Err(error)) => tracing::debug!(listener, %peer, %error, "TLS handshake failed"),
                    Err(_elapsed) => {
                        permit.handshake_timed_out();
                        tracing::debug!(listener, %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    }
}

/// The TLS of each listener (None where a listener is plaintext).
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// The public listener's.
    pub public: Option<Arc<ServerTls>>,
    /// The admin listener's.
    pub admin: Option<Arc<ServerTls>>,
    /// The delivery-receipt listener's.
    pub webhook: Option<Arc<ServerTls>>,
}

impl Loaded {
    /// Every TLS listener.
    pub fn all(&self) -> Vec<Arc<ServerTls>> {
        [&self.public, &self.admin, &self.webhook].into_iter().flatten().cloned().collect()
    }
}

/// Loads the TLS of every listener.
pub async fn load(settings: &TlsSettings) -> Result<Loaded, TlsError> {
    let one = |listener, files: &Option<TlsFiles>, alpn| {
        let files = files.clone();
        async move {
            match files {
                Some(files) => ServerTls::load(listener, files, alpn).await.map(Some),
                None => Ok(None),
            }
        }
    };
    Ok(Loaded {
        public: one("public", &settings.public, ALPN_GRPC).await?,
        admin: one("admin", &settings.admin, ALPN_GRPC).await?,
        webhook: one("webhook", &settings.webhook, ALPN_HTTP1).await?,
    })
}

/// Re-reads every TLS listener's files on each SIGHUP until `shutdown`, and logs what was reloaded (or that
/// nothing is reloadable). The handler is installed before this returns, and always, with TLS or without: a
/// SIGHUP (`systemctl reload`) must never meet the default action, which ends the process without a drain.
pub fn reload_on_sighup(
    listeners: Vec<Arc<ServerTls>>,
    shutdown: CancellationToken,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        Ok(Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    signal = hangup.recv() => if signal.is_none() { break },
                }
                if listeners.is_empty() {
                    tracing::info!("SIGHUP: nothing to reload (no listener serves TLS)");
                } else {
                    reload_all(&listeners).await;
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = (listeners, shutdown);
        Ok(None)
    }
}

/// Reloads each listener, logging the outcome; a failure keeps that listener's previous configuration.
pub async fn reload_all(listeners: &[Arc<ServerTls>]) {
    for tls in listeners {
        match tls.reload().await {
            Ok(()) => tracing::info!(listener = tls.listener, cert = %tls.files.cert.path.display(),
                key = %tls.files.key.path.display(), "SIGHUP: TLS certificate reloaded"),
            Err(error) => tracing::error!(listener = tls.listener, %error,
                "TLS reload failed; still serving the previous certificate"),
        }
    }
}

/// The bytes of a listener's files (None where unreadable), to notice a change.
async fn contents(files: &TlsFiles) -> Vec<Option<Vec<u8>>> {
    let mut read = Vec::with_capacity(3);
    for file in [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()].into_iter().flatten() {
        read.push(tokio::fs::read(&file.path).await.ok());
    }
    read
}

/// Reads every TLS listener's files each `interval` until `shutdown`, and reloads a listener whose files changed,
/// as SIGHUP does. A change that does not load (a half-written or mismatched pair, an unreadable file) keeps the
/// certificate in use and is logged once; the next change is tried again. Reading the bytes, not the modification
/// time, notices every way of replacing a file: a rename, a copy, Kubernetes' symlink swap of a mounted Secret.
pub fn reload_on_change(
    listeners: Vec<Arc<ServerTls>>,
    interval: Duration,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if listeners.is_empty() || interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut seen = Vec::with_capacity(listeners.len());
        for tls in &listeners {
            seen.push(contents(&tls.files).await);
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            for (tls, seen) in listeners.iter().zip(seen.iter_mut()) {
                let now = contents(&tls.files).await;
                if now == *seen {
                    continue;
                }
                *seen = now;
                match tls.reload().await {
                    Ok(()) => tracing::info!(listener = tls.listener, cert = %tls.files.cert.path.display(),
                        "TLS files changed: certificate reloaded"),
                    Err(error) => tracing::error!(listener = tls.listener, %error,
                        "TLS files changed but do not load; still serving the previous certificate"),
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreadable_and_unparsable_files_are_errors_naming_setting_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.pem");
        for (cert, key, setting, path) in [
            (&missing, &garbage, "tls-cert", &missing),
            (&garbage, &garbage, "tls-cert", &garbage),
            (&empty, &garbage, "tls-cert", &empty),
        ] {
            let files = TlsFiles {
                cert: PemFile { setting: "tls-cert", path: cert.clone() },
                key: PemFile { setting: "tls-key", path: key.clone() },
                client_ca: None,
            };
            let error = server_config(&files).await.unwrap_err().to_string();
            assert!(error.starts_with(&format!("--{setting} {}", path.display())), "{error}");
        }

        // A real certificate with a key file that holds no key, or another certificate's key.
        let signed = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert_pem, _) = signed("localhost");
        let (_, other_key) = signed("other");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, &cert_pem).unwrap();
        let secret_garbage = dir.path().join("secret.key");
        std::fs::write(&secret_garbage, "-----BEGIN PRIVATE KEY-----\nsupersecret!\n-----END PRIVATE KEY-----\n")
            .unwrap();
        let wrong = dir.path().join("wrong.key");
        std::fs::write(&wrong, &other_key).unwrap();
        for key in [&cert, &secret_garbage, &wrong] {
            let files = TlsFiles {
                cert: PemFile { setting: "tls-cert", path: cert.clone() },
                key: PemFile { setting: "tls-key", path: key.clone() },
                client_ca: None,
            };
            let error = server_config(&files).await.unwrap_err().to_string();
            assert!(error.starts_with(&format!("--tls-key {}", key.display())), "{error}");
            assert!(!error.contains("supersecret"), "{error}");
        }
        // A client CA file without a certificate.
        let files = TlsFiles {
            cert: PemFile { setting: "admin-tls-cert", path: cert.clone() },
            key: PemFile { setting: "admin-tls-key", path: wrong.clone() },
            client_ca: Some(PemFile { setting: "admin-client-ca", path: empty.clone() }),
        };
        let error = server_config(&files).await.unwrap_err().to_string();
        assert!(error.starts_with(&format!("--admin-client-ca {}", empty.display())), "{error}");
    }
}
