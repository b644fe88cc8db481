//! Delivering codes by SMS. Every message carries the configured sender (1800-3400 by default).

mod file;
mod log;
mod template;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::domain::{PhoneNumber, VerificationId};

pub use file::{FileGateway, FileSms};
pub use log::LogGateway;
pub use template::render_body;

/// One SMS to send. The body holds the code, so it is a secret and is never logged.
pub struct SmsMessage {
    /// The destination.
    pub to: PhoneNumber,
    /// The sender number shown on the phone, e.g. `1800-3400`.
    pub from: String,
    /// The text, including the code.
    pub body: SecretString,
    /// The verification the code belongs to; providers echo it back as a reference.
    pub verification_id: VerificationId,
    /// When the message was handed to the gateway.
    pub sent_at: DateTime<Utc>,
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
    /// The gateway could not take the message (I/O, provider down, timeout).
    #[error("SMS gateway unavailable: {0}")]
    Unavailable(String),
}

/// Something that can deliver an SMS.
#[async_trait::async_trait]
pub trait SmsGateway: Send + Sync + 'static {
    /// Delivers `message`, or says why not.
    async fn send(&self, message: &SmsMessage) -> Result<Delivery, SmsError>;
}

/// Which gateway to use, from `--sms-gateway`: `log` or `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayConfig {
    /// Prints messages on standard output (development only).
    Log,
    /// Appends messages as JSON lines to a file (tests and demos; the file holds codes in clear).
    File(std::path::PathBuf),
}

impl GatewayConfig {
    /// Whether this gateway exposes codes outside a phone, which production mode refuses.
    pub fn is_dev_only(&self) -> bool {
        match self {
            GatewayConfig::Log | GatewayConfig::File(_) => true,
        }
    }

    /// Opens the gateway.
    pub async fn build(&self) -> std::io::Result<Arc<dyn SmsGateway>> {
        Ok(match self {
            GatewayConfig::Log => Arc::new(LogGateway),
            GatewayConfig::File(path) => Arc::new(FileGateway::open(path).await?),
        })
    }
}

impl FromStr for GatewayConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "log" => Ok(GatewayConfig::Log),
            Some(("file", path)) if !path.is_empty() => Ok(GatewayConfig::File(path.into())),
            _ => Err(format!("`{s}` is not a gateway: use `log` or `file:PATH`")),
        }
    }
}

impl fmt::Display for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayConfig::Log => f.write_str("log"),
            GatewayConfig::File(path) => write!(f, "file:{}", path.display()),
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
        assert!("carrier-pigeon".parse::<GatewayConfig>().is_err());
    }
}
