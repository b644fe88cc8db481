//! Naver Cloud SENS SMS (API v2): `POST /sms/v2/services/{serviceId}/messages`, signed with signature v2:
//! `base64(HMAC-SHA256(secretKey, "POST /sms/v2/services/{serviceId}/messages\n{timestamp ms}\n{accessKey}"))`.
//! A 202 with `statusCode` "202" is accepted and its `requestId` kept; any other 4xx is a refusal.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Answer, Wire, hmac_sha256, join, sender_digits, sms_or_lms};
use crate::sms::SmsMessage;

/// The public SENS API.
pub const SENS_BASE: &str = "https://sens.apigw.ntruss.com";

/// Naver Cloud SENS.
pub struct Sens {
    base: reqwest::Url,
    service_id: String,
    access_key: String,
    secret_key: SecretString,
}

impl Sens {
    /// Sends through the SMS project `service_id`, signing as `access_key`.
    pub fn new(base: reqwest::Url, service_id: String, access_key: String, secret_key: SecretString) -> Self {
        Self { base, service_id, access_key, secret_key }
    }

    /// The signature v2 of a `POST` to `path` at `timestamp`.
    fn signature(&self, path: &str, timestamp: &str) -> String {
        let string_to_sign = format!("POST {path}\n{timestamp}\n{}", self.access_key);
        let mac = hmac_sha256(self.secret_key.expose_secret().as_bytes(), string_to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac)
    }
}

impl Wire for Sens {
    fn name(&self) -> &'static str {
        "sens"
    }

    fn base(&self) -> &reqwest::Url {
        &self.base
    }

    fn request(&self, client: &reqwest::Client, message: &SmsMessage) -> reqwest::RequestBuilder {
        let path = format!("/sms/v2/services/{}/messages", self.service_id);
        // The provider's clock, not the service's, judges the timestamp (5 minutes' tolerance).
        let timestamp = chrono::Utc::now().timestamp_millis().to_string();
        let text = message.body.expose_secret();
        let body = json!({
            "type": sms_or_lms(text),
            "contentType": "COMM",
            "countryCode": message.to.calling_code().to_string(),
            "from": sender_digits(&message.from),
            "content": text,
            "messages": [{ "to": message.to.national_digits() }],
        });
        client
            .post(join(&self.base, &path))
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header("x-ncp-apigw-timestamp", &timestamp)
            .header("x-ncp-iam-access-key", &self.access_key)
            .header("x-ncp-apigw-signature-v2", self.signature(&path, &timestamp))
            .body(body.to_string())
    }

    fn answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Answer {
        if !status.is_success() {
            return Answer::Refused(format!("provider answered {status}"));
        }
        let answer = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        match answer["statusCode"].as_str() {
            Some("202") | None => Answer::Accepted { provider_id: answer["requestId"].as_str().map(str::to_owned) },
            Some(other) => Answer::Refused(format!("statusCode {other}")),
        }
    }
}
