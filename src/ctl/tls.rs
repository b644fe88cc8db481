//! otpctl's side of TLS: the CA it trusts for an `https://` server and its own certificate for mutual TLS.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The TLS flags of `otpctl`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA certificate(s) that signed the server's certificate, for an `https://` server. Default: the
    /// public web PKI roots.
    #[arg(long, env = "OTPCTL_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for an admin listener that requires mutual TLS (with --key).
    #[arg(long, env = "OTPCTL_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "OTPCTL_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("--{flag} {}: {e}", path.display()))
}

impl ClientTlsArgs {
    /// The TLS to use for `server`: None for `http://`, which refuses the TLS flags rather than ignore them.
    pub fn for_server(&self, server: &str) -> Result<Option<ClientTlsConfig>, String> {
        let https = server.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        if !https {
            return match (&self.ca, &self.cert) {
                (None, None) => Ok(None),
                _ => Err(format!("--ca, --cert and --key need an https:// server, not {server}")),
            };
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read("ca", ca)?)),
            None => tls.with_webpki_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
        }
        Ok(Some(tls))
    }
}
