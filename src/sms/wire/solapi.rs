//! Solapi (CoolSMS) messages v4: `POST /messages/v4/send` with
//! `Authorization: HMAC-SHA256 apiKey=…, date=…, salt=…, signature=hex(HMAC-SHA256(apiSecret, date + salt))`,
//! a fresh salt per request (the provider refuses a reused signature). The recipient goes as its national number
//! with `country`, its calling code (Solapi reads `to` as Korean when `country` is left out). `statusCode` "2000" is accepted and its
//! `messageId` kept; any other status code, or a 4xx, is a refusal.

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Answer, Wire, hmac_sha256, join, sender_digits, sms_or_lms};
use crate::sms::SmsMessage;

/// The public Solapi API.
pub const SOLAPI_BASE: &str = "https://api.solapi.com";

/// Solapi.
pub struct Solapi {
    base: reqwest::Url,
    api_key: String,
    api_secret: SecretString,
}

impl Solapi {
    /// Sends as `api_key`.
    pub fn new(base: reqwest::Url, api_key: String, api_secret: SecretString) -> Self {
        Self { base, api_key, api_secret }
    }

    /// The `Authorization` header for a request at `date` with `salt`.
    fn authorization(&self, date: &str, salt: &str) -> String {
        let signature = hmac_sha256(self.api_secret.expose_secret().as_bytes(), format!("{date}{salt}").as_bytes());
        format!("HMAC-SHA256 apiKey={}, date={date}, salt={salt}, signature={}", self.api_key, hex::encode(signature))
    }
}

impl Wire for Solapi {
    fn name(&self) -> &'static str {
        "solapi"
    }

    fn base(&self) -> &reqwest::Url {
        &self.base
    }

    fn request(&self, client: &reqwest::Client, message: &SmsMessage) -> reqwest::RequestBuilder {
        // The provider's clock judges the date (15 minutes' tolerance), so it is the wall clock's.
        let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let salt = hex::encode(rand::rng().random::<[u8; 16]>());
        let text = message.body.expose_secret();
        let body = json!({
            "message": {
                // Solapi takes the national number and the country calling code (82 when left out), so a
                // number abroad is never read as a Korean one.
                "to": message.to.national_digits(),
                "country": message.to.calling_code().to_string(),
                "from": sender_digits(&message.from),
                "text": text,
                "type": sms_or_lms(text),
            }
        });
        client
            .post(join(&self.base, "/messages/v4/send"))
            .header(reqwest::header::AUTHORIZATION, self.authorization(&date, &salt))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }

    fn answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Answer {
        if !status.is_success() {
            return Answer::Refused(format!("provider answered {status}"));
        }
        let answer = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        match answer["statusCode"].as_str() {
            Some("2000") | None => Answer::Accepted { provider_id: answer["messageId"].as_str().map(str::to_owned) },
            Some(other) => {
                Answer::Refused(format!("statusCode {other}: {}", answer["statusMessage"].as_str().unwrap_or("")))
            }
        }
    }
}
