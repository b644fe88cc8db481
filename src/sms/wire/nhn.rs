//! NHN Cloud: the Notification SMS API's authentication messages (`nhn-sms`, v3.0) and KakaoTalk Bizmessage
//! AlimTalk authentication messages (`nhn-alimtalk`, v2.3), both keyed by an app key in the path and an
//! `X-Secret-Key` header. Both answer HTTP 200 with `header.isSuccessful`, and a per-recipient `resultCode`
//! (0 is success); anything else is a refusal. The `requestId` is kept: delivery receipts name it.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Answer, Wire, join, sender_digits, sms_or_lms};
use crate::sms::{MessageKind, SmsMessage};

/// The public NHN Cloud SMS API.
pub const NHN_SMS_BASE: &str = "https://sms.api.nhncloudservice.com";
/// The public NHN Cloud KakaoTalk Bizmessage API.
pub const NHN_ALIMTALK_BASE: &str = "https://kakaotalk-bizmessage.api.nhncloudservice.com";

const JSON_UTF8: &str = "application/json;charset=UTF-8";

/// NHN Cloud SMS, authentication messages.
pub struct NhnSms {
    base: reqwest::Url,
    app_key: String,
    secret_key: SecretString,
}

impl NhnSms {
    /// Sends through the SMS app `app_key` at `base`.
    pub fn new(base: reqwest::Url, app_key: String, secret_key: SecretString) -> Self {
        Self { base, app_key, secret_key }
    }
}

impl Wire for NhnSms {
    fn name(&self) -> &'static str {
        "nhn-sms"
    }

    fn base(&self) -> &reqwest::Url {
        &self.base
    }

    fn request(&self, client: &reqwest::Client, message: &SmsMessage) -> reqwest::RequestBuilder {
        let path = format!("/sms/v3.0/appKeys/{}/sender/auth/sms", self.app_key);
        let body = json!({
            "body": message.body.expose_secret(),
            "sendNo": sender_digits(&message.from),
            "recipientList": [recipient(message)],
        });
        post(client, join(&self.base, &path), &self.secret_key, &body)
    }

    fn answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Answer {
        read_answer(status, body, &["body", "data"], "sendResultList")
    }
}

/// NHN Cloud KakaoTalk Bizmessage AlimTalk, authentication template messages, with the provider's own SMS
/// fallback (`resendParameter`) for a phone the AlimTalk cannot reach. The lookup notice goes as an ordinary
/// template message (`/messages`) of its own approved template, which takes no parameters.
pub struct NhnAlimTalk {
    base: reqwest::Url,
    app_key: String,
    secret_key: SecretString,
    sender_key: String,
    template_code: String,
    notice_template_code: Option<String>,
}

impl NhnAlimTalk {
    /// Sends template `template_code` from the KakaoTalk channel `sender_key` through the app `app_key`.
    pub fn new(
        base: reqwest::Url,
        app_key: String,
        secret_key: SecretString,
        sender_key: String,
        template_code: String,
    ) -> Self {
        Self { base, app_key, secret_key, sender_key, template_code, notice_template_code: None }
    }

    /// Sends lookup notices with the approved template `code` (its text the notice's, without parameters).
    pub fn with_notice_template(mut self, code: Option<String>) -> Self {
        self.notice_template_code = code;
        self
    }
}

impl Wire for NhnAlimTalk {
    fn name(&self) -> &'static str {
        "nhn-alimtalk"
    }

    fn base(&self) -> &reqwest::Url {
        &self.base
    }

    fn carries(&self, kind: MessageKind) -> bool {
        kind == MessageKind::Code || self.notice_template_code.is_some()
    }

    fn request(&self, client: &reqwest::Client, message: &SmsMessage) -> reqwest::RequestBuilder {
        let text = message.body.expose_secret();
        let mut recipient = recipient(message);
        let (path, template) = match (message.kind, &self.notice_template_code) {
            (MessageKind::Notice, Some(notice)) => {
                (format!("/alimtalk/v2.3/appkeys/{}/messages", self.app_key), notice)
            }
            // `carries` keeps a notice from a gateway without its template; were one sent, it goes as the code
            // template with an empty code, which the provider refuses: never as a message with a code in it.
            _ => {
                recipient["templateParameter"] = json!({ "code": message.code.expose_secret() });
                (format!("/alimtalk/v2.3/appkeys/{}/auth/messages", self.app_key), &self.template_code)
            }
        };
        recipient["resendParameter"] = json!({
            "isResend": true,
            "resendType": sms_or_lms(text),
            "resendContent": text,
            "resendSendNo": sender_digits(&message.from),
        });
        let body = json!({
            "senderKey": self.sender_key,
            "templateCode": template,
            "recipientList": [recipient],
        });
        post(client, join(&self.base, &path), &self.secret_key, &body)
    }

    fn answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Answer {
        read_answer(status, body, &["message"], "sendResults")
    }
}

/// A domestic recipient as national digits; any other with its country code.
fn recipient(message: &SmsMessage) -> serde_json::Value {
    let mut recipient = json!({ "recipientNo": message.to.national_digits() });
    if message.to.calling_code() != 82 {
        recipient["countryCode"] = json!(message.to.calling_code().to_string());
    }
    recipient
}

fn post(
    client: &reqwest::Client,
    url: reqwest::Url,
    secret_key: &SecretString,
    body: &serde_json::Value,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, JSON_UTF8)
        .header("X-Secret-Key", secret_key.expose_secret())
        .body(body.to_string())
}

/// Reads `{"header": {isSuccessful, resultCode, resultMessage}, <data…>: {requestId, <results>: [{resultCode,
/// resultMessage}]}}`, the data object found by following `data`.
fn read_answer(status: reqwest::StatusCode, body: &[u8], data: &[&str], results: &str) -> Answer {
    if !status.is_success() {
        return Answer::Refused(format!("provider answered {status}"));
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        // Taken: a 2xx without a readable body may still have sent the message, and a retry would send another.
        return Answer::Accepted { provider_id: None };
    };
    let header = &answer["header"];
    if header["isSuccessful"] != json!(true) {
        return Answer::Refused(format!(
            "resultCode {}: {}",
            header["resultCode"],
            header["resultMessage"].as_str().unwrap_or("")
        ));
    }
    let data = data.iter().fold(&answer, |value, key| &value[*key]);
    if let Some(refused) = data[results]
        .as_array()
        .into_iter()
        .flatten()
        .find(|result| result["resultCode"].as_i64().is_some_and(|code| code != 0))
    {
        return Answer::Refused(format!(
            "recipient resultCode {}: {}",
            refused["resultCode"],
            refused["resultMessage"].as_str().unwrap_or("")
        ));
    }
    Answer::Accepted { provider_id: data["requestId"].as_str().map(str::to_owned) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_from_the_header_and_each_recipient() {
        let ok = br#"{"header":{"isSuccessful":true,"resultCode":0,"resultMessage":"SUCCESS"},
            "body":{"data":{"requestId":"r-1","statusCode":"2","sendResultList":[{"resultCode":0}]}}}"#;
        let status = reqwest::StatusCode::OK;
        let data = ["body", "data"];
        assert_eq!(
            read_answer(status, ok, &data, "sendResultList"),
            Answer::Accepted { provider_id: Some("r-1".into()) }
        );
        let refused = br#"{"header":{"isSuccessful":false,"resultCode":-1000,"resultMessage":"bad key"}}"#;
        assert!(matches!(read_answer(status, refused, &data, "sendResultList"), Answer::Refused(_)));
        let recipient = br#"{"header":{"isSuccessful":true},"body":{"data":{"requestId":"r",
            "sendResultList":[{"resultCode":-2019,"resultMessage":"invalid recipient"}]}}}"#;
        assert!(matches!(read_answer(status, recipient, &data, "sendResultList"), Answer::Refused(_)));
        assert!(matches!(read_answer(reqwest::StatusCode::UNAUTHORIZED, ok, &data, "x"), Answer::Refused(_)));
    }
}
