//! Solapi (CoolSMS) messages v4: `POST /messages/v4/send` with
//! `Authorization: HMAC-SHA256 apiKey=…, date=…, salt=…, signature=hex(HMAC-SHA256(apiSecret, date + salt))`,
//! a fresh salt per request (the provider refuses a reused signature). The recipient goes as its national number
//! with `country`, its calling code (Solapi reads `to` as Korean when `country` is left out). `statusCode` "2000" is accepted and its
//! `messageId` kept; any other status code, or a 4xx, is a refusal.

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Answer, Wire, hmac_sha256, join, sender_digits, sms_or_lms};
use crate::receipts::{Polled, ResultQuery};
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
            // 메시지 상태 코드 (docs.solapi.com, api-reference/message-status-codes): 1024 and 2024 are "서버 오류",
            // Solapi's own failure; every other code is a refusal of this message (1029: a character outside
            // EUC-KR 완성형, 1062: an unregistered sender, …).
            Some(code @ ("1024" | "2024")) => {
                Answer::Failed(format!("statusCode {code}: {}", answer["statusMessage"].as_str().unwrap_or("")))
            }
            Some(other) => {
                Answer::Refused(format!("statusCode {other}: {}", answer["statusMessage"].as_str().unwrap_or("")))
            }
        }
    }
}

/// Solapi's results are read back with 메시지 조회 (`GET /messages/v4/list?messageId=…`, api-reference/messages/
/// getMessageList): `messageList.{id}.statusCode` 4000 is delivered ("발송 처리 완료"), 2000 and 3000 are still on
/// their way (accepted, with the carrier), any other code is the failure (message-status-codes); the time is
/// `dateReceived`, else `dateReported`, else `dateUpdated` (ISO 8601).
#[async_trait::async_trait]
impl ResultQuery for Solapi {
    fn gateway(&self) -> &'static str {
        "solapi"
    }

    fn endpoint(&self) -> String {
        super::host_port(&self.base)
    }

    async fn poll(&self, client: &reqwest::Client, provider_id: &str) -> Result<Polled, String> {
        let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let salt = hex::encode(rand::rng().random::<[u8; 16]>());
        let mut url = join(&self.base, "/messages/v4/list");
        url.query_pairs_mut().append_pair("messageId", provider_id);
        let response = client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, self.authorization(&date, &salt))
            .send()
            .await
            .map_err(|e| crate::telemetry::ErrorChain(&e.without_url()).to_string())?;
        if !response.status().is_success() {
            return Err(format!("provider answered {}", response.status()));
        }
        let list: serde_json::Value =
            response.json().await.map_err(|e| crate::telemetry::ErrorChain(&e.without_url()).to_string())?;
        let message = &list["messageList"][provider_id];
        let Some(code) = message["statusCode"].as_str() else {
            return Ok(Polled::Unknown);
        };
        if matches!(code, "2000" | "3000") {
            return Ok(Polled::Pending);
        }
        let at = ["dateReceived", "dateReported", "dateUpdated"]
            .iter()
            .find_map(|field| message[*field].as_str())
            .ok_or("a final message without a date")?;
        let at = chrono::DateTime::parse_from_rfc3339(at).map_err(|_| format!("`{at}` is not ISO 8601"))?.to_utc();
        let delivered = code == "4000";
        Ok(Polled::Done(crate::domain::Receipt { delivered, at, code: (!delivered).then(|| code.to_owned()) }))
    }
}
