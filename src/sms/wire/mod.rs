//! Wire formats: each maps a message to one provider's request and that provider's answer to an outcome. The
//! retries, deadlines, concurrency limit and breaker around them are written once, in `super::http`.

mod generic;
mod nhn;
mod nhn_codes;
mod sens;
mod solapi;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::SmsMessage;

pub use generic::GenericHttp;
pub use nhn::{
    Class as NhnClass, NHN_ALIMTALK_BASE, NHN_SMS_BASE, NhnAlimTalk, NhnSms, Product as NhnProduct, classify,
};
pub use sens::{SENS_BASE, Sens};
pub use solapi::{SOLAPI_BASE, Solapi};

/// What a provider's answer (anything but a 5xx or 429, which the machinery retries itself) means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The provider took the message; its id for it, when it gave one.
    Accepted {
        /// The provider's message or request id.
        provider_id: Option<String>,
    },
    /// The provider refused this request (bad credential, signature, sender, number): repeating it cannot help.
    Refused(String),
    /// The provider failed to take it this time: worth retrying.
    Failed(String),
}

/// One provider's request and answer format.
pub trait Wire: Send + Sync + 'static {
    /// The gateway's name in the delivery record (`nhn-sms`, `sens`, …).
    fn name(&self) -> &'static str;

    /// The provider's URL (its host and port go into the log line of a failed send; its path may hold a key).
    fn base(&self) -> &reqwest::Url;

    /// Whether it can carry messages of `kind` (all do but an AlimTalk without a notice template).
    fn carries(&self, kind: super::MessageKind) -> bool {
        let _ = kind;
        true
    }

    /// The request for one attempt of `message`; built afresh per attempt, so signatures carry the current time
    /// and a fresh salt.
    fn request(&self, client: &reqwest::Client, message: &SmsMessage) -> reqwest::RequestBuilder;

    /// What the answer `status` with `body` (already known not to be a 5xx or 429) means.
    fn answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Answer;
}

/// `host:port` of a provider's URL.
pub fn host_port(url: &reqwest::Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or("?"), url.port_or_known_default().unwrap_or(0))
}

/// The digits of a sender number: providers take the registered number as digits (`1800-3400` → `18003400`).
pub fn sender_digits(sender: &str) -> String {
    sender.chars().filter(char::is_ascii_digit).collect()
}

/// HMAC-SHA256 of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// `base` with `path` appended to whatever path it already has (a provider behind a path prefix keeps it).
fn join(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// "SMS" when `text` fits one SMS (90 bytes in EUC-KR), else "LMS".
fn sms_or_lms(text: &str) -> &'static str {
    match super::template::euc_kr_len(text) {
        Some(n) if n <= super::template::SMS_BYTES => "SMS",
        _ => "LMS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_go_out_as_digits_and_paths_keep_their_prefix() {
        assert_eq!(sender_digits("1800-3400"), "18003400");
        let base = reqwest::Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(join(&base, "/sms/v2/x").as_str(), "http://127.0.0.1:9/prefix/sms/v2/x");
        let bare = reqwest::Url::parse("https://api.solapi.com").unwrap();
        assert_eq!(join(&bare, "/messages/v4/send").as_str(), "https://api.solapi.com/messages/v4/send");
    }
}
