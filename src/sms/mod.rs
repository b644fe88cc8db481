//! Delivering codes by SMS. Every message carries the configured sender (1800-3400 by default).

mod breaker;
mod file;
mod http;
mod log;
mod notice;
mod settings;
mod template;
mod wire;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::domain::{PhoneNumber, VerificationId};

pub use breaker::BreakerView;
pub use file::{FileGateway, FileSms};
pub use http::{HttpGateway, HttpOptions};
pub use log::LogGateway;
pub use notice::{DEFAULT_NOTICE, LookupNotice};
pub use settings::{
    AlimTalkConfig, Credentials, DeliveryConfig, DeliverySettings, SettingError, TemplateContext,
    optional_header_secret, optional_secret,
};
pub use template::{SmsTemplate, TemplateLimits, euc_kr_len, outside_ks_x_1001, render_body};
pub use wire::{
    Answer, GenericHttp, NHN_ALIMTALK_BASE, NhnAlimTalk, NhnClass, NhnProduct, NhnSms, Sens, Solapi, Wire,
    classify as classify_nhn_result, sender_digits,
};

/// What a message is: a code, or the notice after a lookup (no code; its own AlimTalk template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A code (the SendCode flow).
    Code,
    /// The lookup notice (`--lookup-notice-template`): never a code.
    Notice,
}

/// One SMS to send. The body holds the code, so it is a secret and is never logged.
pub struct SmsMessage {
    /// A code or a notice: AlimTalk sends each with its own approved template.
    pub kind: MessageKind,
    /// The destination.
    pub to: PhoneNumber,
    /// The sender number shown on the phone, e.g. `1800-3400`.
    pub from: String,
    /// The text, including the code.
    pub body: SecretString,
    /// The code alone, for channels that carry it as a template parameter (AlimTalk).
    pub code: SecretString,
    /// The verification the code belongs to; providers echo it back as a reference.
    pub verification_id: VerificationId,
    /// When the message was handed to the gateway.
    pub sent_at: DateTime<Utc>,
    /// Unique per code: a provider that sees it twice (a retried request) must send one SMS.
    pub idempotency_key: String,
}

/// What the gateway reports for a delivered message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The provider's id for the message, when it gives one.
    pub message_id: Option<String>,
}

/// Why a message was not delivered. The text is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The gateway could not take the message in time (I/O, provider down, timeouts, 5xx after retries).
    #[error("SMS gateway unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the message (4xx); retrying the same request will not help.
    #[error("SMS provider rejected the message: {0}")]
    Rejected(String),
    /// The circuit breaker is open: the provider was not called.
    #[error("SMS circuit breaker open")]
    CircuitOpen { retry_after: std::time::Duration },
    /// The deadline passed before the message could be handed to the provider (waiting for a connection, or
    /// before the first attempt): the provider never saw it, so it is no provider failure and no send.
    #[error("SMS not handed to the provider: {0}")]
    NotSent(String),
    /// The message was handed to the provider, but the caller's deadline ended the wait for its answer: it may
    /// well be delivered, and says nothing about the provider's health.
    #[error("SMS handed to the provider, not confirmed before the deadline: {0}")]
    Unconfirmed(String),
}

/// The delivery channels, in the order they are tried, each with its gateway.
pub type Channels = Vec<(crate::domain::DeliveryChannel, Arc<dyn SmsGateway>)>;

/// When a delivery must be over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The instant.
    pub at: Instant,
    /// Whether it is the caller's deadline (less a reserve) rather than our own `--sms-timeout`: an attempt the
    /// caller's deadline cuts short says nothing about the provider, while running out of our own time does.
    pub callers: bool,
}

/// Something that can deliver an SMS.
#[async_trait::async_trait]
pub trait SmsGateway: Send + Sync + 'static {
    /// Delivers `message` before `deadline`, or says why not.
    async fn send(&self, message: &SmsMessage, deadline: Deadline) -> Result<Delivery, SmsError>;

    /// The gateway's name in the delivery record (`nhn-sms`, `sens`, `solapi`, `nhn-alimtalk`, `http`, …).
    fn name(&self) -> &'static str {
        "sms"
    }

    /// Where the provider is, as `host:port` (for the log line of a failed send: never a path, which may hold a
    /// key); None for the gateways that reach no provider.
    fn endpoint(&self) -> Option<String> {
        None
    }

    /// Whether it can carry messages of `kind` (AlimTalk carries a notice only with a notice template).
    fn carries(&self, kind: MessageKind) -> bool {
        let _ = kind;
        true
    }

    /// How long a send would be refused at once from now (an open circuit breaker), so that the caller can give
    /// up before doing any work for it; None when a send may go out.
    fn refusing_for(&self) -> Option<std::time::Duration> {
        None
    }

    /// Its circuit breaker's state and age, for the gateways that have one.
    fn breaker(&self) -> Option<BreakerView> {
        None
    }
}

/// Which gateway to use, from `--sms-gateway`: `log`, `file:PATH`, `http:URL`, or a Korean provider
/// (`nhn-sms`, `sens`, `solapi`, each optionally `:BASE_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayConfig {
    /// Prints messages on standard output (development only).
    Log,
    /// Appends messages as JSON lines to a file (tests and demos; the file holds codes in clear).
    File(std::path::PathBuf),
    /// A provider's HTTP API (docs/sms-gateway.md).
    Http(reqwest::Url),
    /// NHN Cloud SMS, authentication messages, at this base URL.
    NhnSms(reqwest::Url),
    /// Naver Cloud SENS, at this base URL.
    Sens(reqwest::Url),
    /// Solapi, at this base URL.
    Solapi(reqwest::Url),
}

impl GatewayConfig {
    /// Whether this gateway exposes codes outside a phone, which production mode refuses.
    pub fn is_dev_only(&self) -> bool {
        match self {
            GatewayConfig::Log | GatewayConfig::File(_) => true,
            GatewayConfig::Http(_) | GatewayConfig::NhnSms(_) | GatewayConfig::Sens(_) | GatewayConfig::Solapi(_) => {
                false
            }
        }
    }

    /// The provider's URL, for the HTTP gateways.
    pub fn url(&self) -> Option<&reqwest::Url> {
        match self {
            GatewayConfig::Log | GatewayConfig::File(_) => None,
            GatewayConfig::Http(url)
            | GatewayConfig::NhnSms(url)
            | GatewayConfig::Sens(url)
            | GatewayConfig::Solapi(url) => Some(url),
        }
    }

    /// The provider's result-query API, for the providers that post no webhook otpd can take (SENS, Solapi);
    /// None for the others (NHN posts webhooks; the generic protocol has its signed receipt).
    pub fn result_query(&self, credentials: &Credentials) -> Option<Arc<dyn crate::receipts::ResultQuery>> {
        match self {
            GatewayConfig::Sens(base) => {
                let (service, access, secret) = credentials.sens.clone()?;
                Some(Arc::new(Sens::new(base.clone(), service, access, secret)))
            }
            GatewayConfig::Solapi(base) => {
                let (key, secret) = credentials.solapi.clone()?;
                Some(Arc::new(Solapi::new(base.clone(), key, secret)))
            }
            GatewayConfig::Log | GatewayConfig::File(_) | GatewayConfig::Http(_) | GatewayConfig::NhnSms(_) => None,
        }
    }

    /// Opens the gateway; the HTTP ones with `http` options, `credentials` and their breaker on `clock`, counting
    /// into `metrics`.
    pub async fn build(
        &self,
        http: &HttpOptions,
        credentials: &Credentials,
        clock: Arc<dyn Clock>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<dyn SmsGateway>, String> {
        let missing = |what: &str| format!("{what} credentials are missing");
        let wire: Box<dyn Wire> = match self {
            GatewayConfig::Log => return Ok(Arc::new(LogGateway)),
            GatewayConfig::File(path) => {
                return Ok(Arc::new(FileGateway::open(path).await.map_err(|e| e.to_string())?));
            }
            GatewayConfig::Http(url) => {
                return Ok(Arc::new(HttpGateway::new(url.clone(), http.clone(), clock)?.with_metrics(metrics)));
            }
            GatewayConfig::NhnSms(base) => {
                let (app_key, secret) = credentials.nhn_sms.clone().ok_or_else(|| missing("nhn-sms"))?;
                Box::new(NhnSms::new(base.clone(), app_key, secret))
            }
            GatewayConfig::Sens(base) => {
                let (service, access, secret) = credentials.sens.clone().ok_or_else(|| missing("sens"))?;
                Box::new(Sens::new(base.clone(), service, access, secret))
            }
            GatewayConfig::Solapi(base) => {
                let (key, secret) = credentials.solapi.clone().ok_or_else(|| missing("solapi"))?;
                Box::new(Solapi::new(base.clone(), key, secret))
            }
        };
        Ok(Arc::new(HttpGateway::with_wire(wire, http.clone(), clock)?.with_metrics(metrics)))
    }
}

impl FromStr for GatewayConfig {
    type Err = String;

    /// `log`, `file:PATH`, or `http:URL` (also a bare `http://…` / `https://…` URL).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let http_url =
            |u: &str| reqwest::Url::parse(u).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if s == "log" {
            return Ok(GatewayConfig::Log);
        }
        type Provider = fn(reqwest::Url) -> GatewayConfig;
        let providers: [(&str, &str, Provider); 3] = [
            ("nhn-sms", wire::NHN_SMS_BASE, GatewayConfig::NhnSms),
            ("sens", wire::SENS_BASE, GatewayConfig::Sens),
            ("solapi", wire::SOLAPI_BASE, GatewayConfig::Solapi),
        ];
        for (name, default_base, variant) in providers {
            let base = match s.strip_prefix(name) {
                Some("") => default_base,
                Some(rest) => match rest.strip_prefix(':') {
                    Some(base) => base,
                    None => continue,
                },
                None => continue,
            };
            // The value may carry credentials (a key in the path or query): say what is wrong, never echo it.
            let url = http_url(base).ok_or_else(|| format!("the base URL after `{name}:` is not an http(s) URL"))?;
            return Ok(variant(url));
        }
        if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            return Ok(GatewayConfig::File(path.into()));
        }
        let bare = s.starts_with("http://") || s.starts_with("https://");
        if let Some(url) = s.strip_prefix("http:").and_then(http_url).or_else(|| bare.then(|| http_url(s)).flatten()) {
            return Ok(GatewayConfig::Http(url));
        }
        Err("not a gateway: use `log`, `file:PATH`, `http:URL` (or a bare http(s) URL), `nhn-sms[:BASE_URL]`, \
             `sens[:BASE_URL]` or `solapi[:BASE_URL]`"
            .into())
    }
}

impl fmt::Display for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path and query may carry a provider key: show where (scheme, host and port), not what.
        let at = |url: &reqwest::Url| {
            format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or("?"), url.port_or_known_default().unwrap_or(0))
        };
        match self {
            GatewayConfig::Log => f.write_str("log"),
            GatewayConfig::File(path) => write!(f, "file:{}", path.display()),
            GatewayConfig::Http(url) => write!(f, "http:{}", at(url)),
            GatewayConfig::NhnSms(url) => write!(f, "nhn-sms:{}", at(url)),
            GatewayConfig::Sens(url) => write!(f, "sens:{}", at(url)),
            GatewayConfig::Solapi(url) => write!(f, "solapi:{}", at(url)),
        }
    }
}

/// The label of a failed delivery (here rather than in `metrics`, which sits below the flows).
impl crate::metrics::GatewayFailure {
    /// Why a delivery over the channels failed, or None if it was accepted. A gateway that overran its deadline
    /// is reported by the channel loop as unavailable.
    pub fn of_delivery(sent: &Result<Delivery, SmsError>) -> Option<Self> {
        match sent {
            Ok(_) => None,
            Err(SmsError::Unavailable(_)) => Some(Self::Unavailable),
            Err(SmsError::Rejected(_)) => Some(Self::Rejected),
            Err(SmsError::CircuitOpen { .. }) => Some(Self::CircuitOpen),
            Err(SmsError::NotSent(_)) => Some(Self::NotSent),
            Err(SmsError::Unconfirmed(_)) => Some(Self::Unconfirmed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_config_parses() {
        assert_eq!("log".parse::<GatewayConfig>().unwrap(), GatewayConfig::Log);
        assert_eq!(
            "file:/tmp/sms.jsonl".parse::<GatewayConfig>().unwrap(),
            GatewayConfig::File("/tmp/sms.jsonl".into())
        );
        assert!("file:".parse::<GatewayConfig>().is_err());
        let url = reqwest::Url::parse("https://sms.example/v1/send").unwrap();
        assert_eq!(
            "http:https://sms.example/v1/send".parse::<GatewayConfig>().unwrap(),
            GatewayConfig::Http(url.clone())
        );
        assert_eq!("https://sms.example/v1/send".parse::<GatewayConfig>().unwrap(), GatewayConfig::Http(url));
        assert!("http://127.0.0.1:8080/send".parse::<GatewayConfig>().is_ok());
        assert!("http:ftp://x".parse::<GatewayConfig>().is_err());
        assert!("carrier-pigeon".parse::<GatewayConfig>().is_err());
        let nhn = reqwest::Url::parse("https://sms.api.nhncloudservice.com").unwrap();
        assert_eq!("nhn-sms".parse::<GatewayConfig>().unwrap(), GatewayConfig::NhnSms(nhn));
        let local = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!("sens:http://127.0.0.1:9/".parse::<GatewayConfig>().unwrap(), GatewayConfig::Sens(local.clone()));
        assert_eq!("solapi:http://127.0.0.1:9/".parse::<GatewayConfig>().unwrap(), GatewayConfig::Solapi(local));
        assert!("sens:ftp://x".parse::<GatewayConfig>().is_err());
        let with_port: GatewayConfig = "nhn-sms:http://127.0.0.1:9/key/in/path?k=secret".parse().unwrap();
        assert_eq!(with_port.to_string(), "nhn-sms:http://127.0.0.1:9", "the port, never the path or query");
        assert_eq!("solapi".parse::<GatewayConfig>().unwrap().to_string(), "solapi:https://api.solapi.com:443");
        assert!("sensible".parse::<GatewayConfig>().is_err());
    }
}
