//! Naver Cloud SENS SMS (API v2): `POST /sms/v2/services/{serviceId}/messages`, signed with signature v2:
//! `base64(HMAC-SHA256(secretKey, "POST /sms/v2/services/{serviceId}/messages\n{timestamp ms}\n{accessKey}"))`.
//! A 202 with `statusCode` "202" is accepted and its `requestId` kept; any other 4xx is a refusal.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Answer, Wire, hmac_sha256, join, sender_digits, sms_or_lms};
use crate::receipts::{Polled, ResultQuery};
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

    /// The signature v2 of a `method` request to `uri` (path and query) at `timestamp`.
    fn signature(&self, method: &str, uri: &str, timestamp: &str) -> String {
        let string_to_sign = format!("{method} {uri}\n{timestamp}\n{}", self.access_key);
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
            .header("x-ncp-apigw-signature-v2", self.signature("POST", &path, &timestamp))
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

impl Sens {
    /// A signed `GET` of `path` with `query`, read as JSON (Err: the query failed; None: 404, no such id).
    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<serde_json::Value>, String> {
        let mut url = join(&self.base, path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let uri = match url.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        let timestamp = chrono::Utc::now().timestamp_millis().to_string();
        let response = client
            .get(url)
            .header("x-ncp-apigw-timestamp", &timestamp)
            .header("x-ncp-iam-access-key", &self.access_key)
            .header("x-ncp-apigw-signature-v2", self.signature("GET", &uri, &timestamp))
            .send()
            .await
            .map_err(|e| crate::telemetry::ErrorChain(&e.without_url()).to_string())?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(format!("provider answered {}", response.status()));
        }
        response.json().await.map(Some).map_err(|e| crate::telemetry::ErrorChain(&e.without_url()).to_string())
    }
}

/// SENS gives no webhook for SMS: results are read back with 메시지 발송 요청 조회 (`GET
/// /sms/v2/services/{serviceId}/messages?requestId=…`, the message ids of a request) and 메시지 발송 결과 조회 (`GET
/// /sms/v2/services/{serviceId}/messages/{messageId}`: `status` READY / PROCESSING / COMPLETED, `statusCode` "0"
/// for delivered, else the carrier's failure code, `completeTime` in Korean time), signed as sends are.
#[async_trait::async_trait]
impl ResultQuery for Sens {
    fn gateway(&self) -> &'static str {
        "sens"
    }

    fn endpoint(&self) -> String {
        super::host_port(&self.base)
    }

    async fn poll(&self, client: &reqwest::Client, provider_id: &str) -> Result<Polled, String> {
        let path = format!("/sms/v2/services/{}/messages", self.service_id);
        let Some(request) = self.get(client, &path, &[("requestId", provider_id)]).await? else {
            return Ok(Polled::Unknown);
        };
        let Some(message_id) = request["messages"][0]["messageId"].as_str() else {
            return Ok(Polled::Unknown);
        };
        let Some(result) = self.get(client, &format!("{path}/{message_id}"), &[]).await? else {
            return Ok(Polled::Unknown);
        };
        let message = &result["messages"][0];
        if message["status"].as_str() != Some("COMPLETED") {
            return Ok(Polled::Pending);
        }
        let code = message["statusCode"].as_str().unwrap_or("");
        let at = message["completeTime"].as_str().ok_or("a completed message without completeTime")?;
        let at = crate::domain::korean_time(at)?;
        let delivered = code == "0";
        let code = (!delivered).then(|| if code.is_empty() { "fail".to_owned() } else { code.to_owned() });
        Ok(Polled::Done(crate::domain::Receipt { delivered, at, code }))
    }
}
