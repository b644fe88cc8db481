//! The emergency sign-in code by e-mail, over SMTP with `lettre`: `--smtp-url` (`smtps://…` implicit TLS,
//! `smtp://…?tls=required` STARTTLS, or plain `smtp://` to a relay on this host only), `--smtp-from`, and
//! `--smtp-ca-file` for a mail server with a private CA. The message says who asked, when, and from where, so a
//! person who did not ask knows to report it.

use std::path::PathBuf;
use std::time::Duration;

use chrono::FixedOffset;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{CodeMailer, SignInMail};
use crate::domain::EmailAddress;
use crate::service::ServiceError;

/// How long one message may take to hand over.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The SMTP settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// The server's URL (credentials, if any, in it; never logged).
    url: url::Url,
    /// The sender.
    from: String,
    /// Extra trusted CA certificates (PEM).
    ca_file: Option<PathBuf>,
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    /// TLS from the first byte (`smtps://`).
    Wrapper,
    /// STARTTLS, required (`smtp://…?tls=required`).
    StartTls,
    /// None: only to a relay on this host.
    Plain,
}

impl MailSettings {
    /// Checks `--smtp-url`, `--smtp-from` and `--smtp-ca-file`. Plain SMTP (no TLS, or opportunistic TLS that an
    /// attacker can strip) is refused off loopback: the message carries a sign-in code.
    pub fn new(url: &str, from: &str, ca_file: Option<PathBuf>) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|_| "--smtp-url is not a URL".to_owned())?;
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or("--smtp-url has no host")?;
        let settings = Self { url: parsed.clone(), from: from.to_owned(), ca_file };
        let protection = settings.protection()?;
        if protection == Protection::Plain && !crate::transport::is_loopback_host(host) {
            return Err("--smtp-url: plain SMTP only to a relay on this host; use smtps:// or ?tls=required".into());
        }
        from.parse::<Mailbox>().map_err(|e| format!("--smtp-from `{from}` is not an address: {e}"))?;
        Ok(settings)
    }

    fn protection(&self) -> Result<Protection, String> {
        let tls = self.url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
        match (self.url.scheme(), tls.as_deref()) {
            ("smtps", None) => Ok(Protection::Wrapper),
            ("smtp", Some("required")) => Ok(Protection::StartTls),
            ("smtp", None) => Ok(Protection::Plain),
            _ => Err("--smtp-url must be smtps://HOST[:PORT], smtp://HOST[:PORT]?tls=required, or plain smtp:// to \
                      this host"
                .into()),
        }
    }

    /// The server's host and port, for logs (never the credentials).
    pub fn server(&self) -> String {
        format!("{}:{}", self.url.host_str().unwrap_or_default(), self.url.port().unwrap_or(self.default_port()))
    }

    fn default_port(&self) -> u16 {
        match self.protection() {
            Ok(Protection::Wrapper) => 465,
            Ok(Protection::StartTls) => 587,
            _ => 25,
        }
    }

    /// Opens the transport (reads the CA file).
    pub async fn open(&self) -> Result<SmtpMailer, String> {
        let host = self.url.host_str().unwrap_or_default().to_owned();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(self.url.port().unwrap_or(self.default_port()))
            .timeout(Some(SEND_TIMEOUT));
        if !self.url.username().is_empty() {
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            let password = decode(self.url.password().unwrap_or_default());
            builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                decode(self.url.username()),
                password,
            ));
        }
        let protection = self.protection()?;
        if protection != Protection::Plain {
            let mut params = TlsParameters::builder(host);
            if let Some(path) = &self.ca_file {
                let pem = tokio::fs::read(path).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| format!("SMTP TLS settings: {e}"))?;
            builder = builder.tls(match protection {
                Protection::Wrapper => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        let from = self.from.parse::<Mailbox>().map_err(|e| e.to_string())?;
        Ok(SmtpMailer { transport: builder.build(), from, server: self.server() })
    }
}

/// Sends sign-in codes through one SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

/// The message's subject and text (Korean first, then English).
pub fn compose(mail: &SignInMail<'_>) -> (String, String) {
    let kst = FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| unreachable!("+09:00 is a valid offset"));
    let at = mail.at.with_timezone(&kst).format("%Y-%m-%d %H:%M:%S KST");
    let minutes = (mail.expires_at - mail.at).num_minutes().max(1);
    let origin = match mail.origin.describe() {
        described if described.is_empty() => "-".to_owned(),
        described => described,
    };
    let code = mail.code.expose();
    let subject = format!("[otpd] 상담 콘솔 긴급 로그인 인증번호 / emergency sign-in code for {}", mail.name);
    let text = format!(
        "{name}님의 상담 콘솔 로그인 인증번호: {code}\n\
         요청 시각: {at}\n\
         요청한 곳: {origin}\n\
         {minutes}분 동안 한 번만 쓸 수 있습니다. 본인이 요청하지 않았다면 입력하지 말고 보안 담당자에게 알려 주세요.\n\
         \n\
         Sign-in code for {name}: {code}\n\
         Asked for at {at} from {origin}.\n\
         It works once, for {minutes} minutes. If you did not ask for it, do not use it and tell your security team.\n",
        name = mail.name,
    );
    (subject, text)
}

#[async_trait::async_trait]
impl CodeMailer for SmtpMailer {
    async fn send(&self, to: &EmailAddress, mail: &SignInMail<'_>) -> Result<(), ServiceError> {
        let (subject, text) = compose(mail);
        let to_box = to.as_str().parse::<Mailbox>().map_err(|_| ServiceError::EmailDeliveryFailed)?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to_box)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|error| {
                tracing::error!(%error, "composing the sign-in e-mail failed");
                ServiceError::EmailDeliveryFailed
            })?;
        match self.transport.send(message).await {
            Ok(response) => {
                tracing::info!(to = %to, server = %self.server, code = response.code().to_string(), "sign-in e-mail sent");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(to = %to, server = %self.server, %error, "sign-in e-mail not sent");
                Err(ServiceError::EmailDeliveryFailed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_refuse_plain_smtp_off_this_host() {
        assert!(MailSettings::new("smtp://127.0.0.1:2525", "otpd@example.com", None).is_ok());
        assert!(MailSettings::new("smtp://localhost", "otpd@example.com", None).is_ok());
        assert!(MailSettings::new("smtp://mail.example.com", "otpd@example.com", None).is_err());
        assert!(MailSettings::new("smtp://mail.example.com?tls=opportunistic", "otpd@example.com", None).is_err());
        let starttls = MailSettings::new("smtp://mail.example.com?tls=required", "otpd@example.com", None).unwrap();
        assert_eq!(starttls.server(), "mail.example.com:587");
        let wrapped = MailSettings::new("smtps://u:p%40ss@mail.example.com", "otpd@example.com", None).unwrap();
        assert_eq!(wrapped.server(), "mail.example.com:465", "credentials never in the server's name");
        assert!(MailSettings::new("http://mail.example.com", "otpd@example.com", None).is_err());
        assert!(MailSettings::new("smtps://mail.example.com", "not an address", None).is_err());
    }
}
