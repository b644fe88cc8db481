//! The `http:` protocol of docs/sms-gateway.md, for custom adapters: `POST` JSON `{from, to, text, reference}`
//! with an optional `Authorization` header and an `Idempotency-Key`, so a provider can drop the duplicate of a
//! retried request; any 2xx is accepted (with an optional `{"message_id"}`), any other 4xx or 3xx refused.

use secrecy::{ExposeSecret, SecretString};

use super::{Answer, Wire};
use crate::sms::SmsMessage;

/// The `http:` protocol.
pub struct GenericHttp {
    url: reqwest::Url,
    auth: Option<SecretString>,
}

impl GenericHttp {
    /// Posts to `url` with `auth` as the `Authorization` header.
    pub fn new(url: reqwest::Url, auth: Option<SecretString>) -> Self {
        Self { url, auth }
    }
}

#[derive(serde::Serialize)]
struct Request<'a> {
    from: &'a str,
    to: &'a str,
    text: &'a str,
    reference: String,
}

#[derive(serde::Deserialize)]
struct Response {
    message_id: Option<String>,
}

impl Wire for GenericHttp {
    fn name(&self) -> &'static str {
        "http"
    }

    fn base(&self) -> &reqwest::Url {
        &self.url
    }

    fn request(&self, client: &reqwest::Client, message: &SmsMessage) -> reqwest::RequestBuilder {
        let body = Request {
            from: &message.from,
            to: message.to.e164(),
            text: message.body.expose_secret(),
            reference: message.verification_id.to_string(),
        };
        let mut request = client.post(self.url.clone()).header("Idempotency-Key", &message.idempotency_key).json(&body);
        if let Some(auth) = &self.auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth.expose_secret());
        }
        request
    }

    fn answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Answer {
        if status.is_success() {
            let provider_id = serde_json::from_slice::<Response>(body).ok().and_then(|r| r.message_id);
            return Answer::Accepted { provider_id };
        }
        Answer::Refused(format!("provider answered {status}"))
    }
}
