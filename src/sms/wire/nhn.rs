//! NHN Cloud: the Notification SMS API's authentication messages (`nhn-sms`, v3.0) and KakaoTalk Bizmessage
//! AlimTalk authentication messages (`nhn-alimtalk`, v2.3), both keyed by an app key in the path and an
//! `X-Secret-Key` header. Both answer HTTP 200 with `header.isSuccessful`, `header.resultCode` and a
//! per-recipient `resultCode`. `isSuccessful: false` is not always a refusal: each documented code is classified
//! once, in [`super::nhn_codes::CODES`] (`-2021` queue save failed and `-9999` system error are NHN's failures,
//! retried; AlimTalk's `-1005` is a repeated idempotency key, i.e. already accepted). The `requestId` is kept:
//! delivery receipts name it.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Answer, Wire, join, sender_digits, sms_or_lms};
use crate::sms::{MessageKind, SmsMessage};

/// The public NHN Cloud SMS API.
pub const NHN_SMS_BASE: &str = "https://sms.api.nhncloudservice.com";
/// The public NHN Cloud KakaoTalk Bizmessage API.
pub const NHN_ALIMTALK_BASE: &str = "https://kakaotalk-bizmessage.api.nhncloudservice.com";

const JSON_UTF8: &str = "application/json;charset=UTF-8";

/// Which NHN API answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// Notification > SMS (API v3.0).
    Sms,
    /// KakaoTalk Bizmessage > AlimTalk (API v2.3).
    AlimTalk,
}

/// What an NHN result code means for a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Taken (0), or already taken (AlimTalk `-1005`: the same idempotency key within 10 minutes).
    Accepted,
    /// The request is wrong or not allowed; repeating it cannot help.
    Refused,
    /// NHN failed to take it (a system error, nothing queued): retried, and counted by the breaker.
    Retry,
}

/// The class of `code` from `product` (an undocumented code is a refusal), with the document's meaning.
pub fn classify(product: Product, code: i64) -> (Class, &'static str) {
    super::nhn_codes::CODES
        .iter()
        .find(|(p, c, _, _)| *p == product && *c == code)
        .map_or((Class::Refused, "undocumented result code"), |(_, _, class, meaning)| (*class, *meaning))
}

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
        read_answer(Product::Sms, status, body, &["body", "data"], "sendResultList")
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
        // API v2.3 has no countryCode: a recipient abroad goes as its international digits (at most 15).
        let domestic = message.to.calling_code() == 82;
        let number = if domestic {
            message.to.national_digits().to_owned()
        } else {
            message.to.e164().trim_start_matches('+').to_owned()
        };
        let mut recipient = json!({ "recipientNo": number });
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
        // "국제 대체 발송은 SMS만 지원합니다" (API v2.3, 메시지 발송 요청): abroad the fallback is an SMS, whatever
        // its length.
        let resend_type = if domestic { sms_or_lms(text) } else { "SMS" };
        recipient["resendParameter"] = json!({
            "isResend": true,
            "resendType": resend_type,
            "resendContent": text,
            "resendSendNo": sender_digits(&message.from),
        });
        let body = json!({
            "senderKey": self.sender_key,
            "templateCode": template,
            "recipientList": [recipient],
        });
        // The same key on every retry of this message: NHN answers a repeat within 10 minutes `-1005` instead of
        // sending a second AlimTalk (a retried timeout never delivers twice).
        post(client, join(&self.base, &path), &self.secret_key, &body)
            .header("X-NC-API-IDEMPOTENCY-KEY", &message.idempotency_key)
    }

    fn answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Answer {
        read_answer(Product::AlimTalk, status, body, &["message"], "sendResults")
    }
}

/// A domestic recipient as national digits; any other with its `countryCode` (SMS API v3.0, 인증용 SMS 발송:
/// "recipientNo … countryCode와 조합하여 사용 가능").
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
/// resultMessage}]}}`, the data object found by following `data`; each result code classified for `product`.
fn read_answer(product: Product, status: reqwest::StatusCode, body: &[u8], data: &[&str], results: &str) -> Answer {
    if !status.is_success() {
        return Answer::Refused(format!("provider answered {status}"));
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        // Taken: a 2xx without a readable body may still have sent the message, and a retry would send another.
        return Answer::Accepted { provider_id: None };
    };
    let data = data.iter().fold(&answer, |value, key| &value[*key]);
    let provider_id = data["requestId"].as_str().map(str::to_owned);
    let header = &answer["header"];
    if header["isSuccessful"] != json!(true) {
        let code = header["resultCode"].as_i64().unwrap_or(i64::MIN);
        return judged(product, code, header["resultMessage"].as_str().unwrap_or(""), provider_id, "resultCode");
    }
    for result in data[results].as_array().into_iter().flatten() {
        let Some(code) = result["resultCode"].as_i64().filter(|code| *code != 0) else { continue };
        let message = result["resultMessage"].as_str().unwrap_or("");
        return judged(product, code, message, provider_id, "recipient resultCode");
    }
    Answer::Accepted { provider_id }
}

/// The answer result `code` makes, by the table.
fn judged(product: Product, code: i64, message: &str, provider_id: Option<String>, what: &str) -> Answer {
    let (class, meaning) = classify(product, code);
    let why = format!("{what} {code} ({meaning}): {message}");
    match class {
        Class::Accepted => Answer::Accepted { provider_id },
        Class::Refused => Answer::Refused(why),
        Class::Retry => Answer::Failed(why),
    }
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
        let sms = |body: &[u8]| read_answer(Product::Sms, status, body, &data, "sendResultList");
        assert_eq!(sms(ok), Answer::Accepted { provider_id: Some("r-1".into()) });
        let refused = br#"{"header":{"isSuccessful":false,"resultCode":-1000,"resultMessage":"bad key"}}"#;
        assert!(matches!(sms(refused), Answer::Refused(_)));
        let recipient = br#"{"header":{"isSuccessful":true},"body":{"data":{"requestId":"r",
            "sendResultList":[{"resultCode":-2019,"resultMessage":"invalid recipient"}]}}}"#;
        assert!(matches!(sms(recipient), Answer::Refused(_)));
        assert!(matches!(
            read_answer(Product::Sms, reqwest::StatusCode::UNAUTHORIZED, ok, &data, "x"),
            Answer::Refused(_)
        ));
        // NHN's own failures are retried, not refusals (issue 22, section 1).
        for code in [-2021, -9999] {
            let failed = format!(r#"{{"header":{{"isSuccessful":false,"resultCode":{code},"resultMessage":"x"}}}}"#);
            assert!(matches!(sms(failed.as_bytes()), Answer::Failed(_)), "{code}");
        }
        let repeated = br#"{"header":{"isSuccessful":false,"resultCode":-1005,"resultMessage":"same key"}}"#;
        let alimtalk = read_answer(Product::AlimTalk, status, repeated, &["message"], "sendResults");
        assert_eq!(alimtalk, Answer::Accepted { provider_id: None }, "a repeated idempotency key was taken before");
        assert!(matches!(sms(repeated), Answer::Refused(_)), "-1005 is a bad search condition in the SMS API");
    }

    #[test]
    fn the_table_has_each_code_once_per_product() {
        let mut seen = std::collections::HashSet::new();
        for (product, code, _, _) in super::super::nhn_codes::CODES {
            assert!(seen.insert((*product as u8, *code)), "{product:?} {code} twice");
        }
        assert_eq!(classify(Product::Sms, -8000).0, Class::Refused, "no authentication word");
        assert_eq!(classify(Product::Sms, 0).0, Class::Accepted);
        assert_eq!(classify(Product::AlimTalk, 12345).0, Class::Refused, "undocumented");
    }
}
