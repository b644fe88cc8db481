//! NHN Cloud's `MESSAGE_RESULT_UPDATE` webhooks, from both products, on one endpoint (same envelope, same
//! `X-Toast-Webhook-Signature` header):
//!
//! - Notification > SMS (TOAST-DOCS/SMS `ko/webhook.md`): `{"event": "MESSAGE_RESULT_UPDATE", "productName": "SMS",
//!   "hooks": [{"requestId", "recipientSeq", "messageStatus": "COMPLETED|FAILED|CANCEL|DUPLICATED|FAILED_AD",
//!   "resultCode": "1000", "receiveDate": "yyyy-MM-dd'T'HH:mm:ss"}]}`;
//! - KakaoTalk Bizmessage (TOAST-DOCS/Alimtalk `ko/webhook-api-guide.md`, 메시지 발송 결과 코드 업데이트):
//!   `"productName": "KakaoTalk Bizmessage"`, hooks without `messageStatus`, with `kakaoMessageType`
//!   (`ALIMTALK_AUTH`, …), `requestId`, `recipientSeq`, `resultCode` (발송 결과 코드: "1000" delivered) and
//!   `receiveDate` / `createDate` / `requestDate`. When a hook carries the provider's own SMS fallback
//!   (`resendStatus` RSC03/RSC04/RSC05 with `resendRequestId`, the fields of the message query API: the webhook
//!   guide does not list them, so they are read when present), that fallback SMS is recorded as an attempt of its
//!   own; its carrier result then arrives as an SMS webhook under that request id.
//!
//! Times are Korean time without an offset.

use chrono::{DateTime, Utc};

use crate::domain::{Receipt, korean_time};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    event: String,
    #[serde(default)]
    product_name: Option<String>,
    hooks: Vec<Hook>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hook {
    request_id: String,
    /// A number (the guides' samples also show it quoted).
    recipient_seq: Option<serde_json::Value>,
    message_status: Option<String>,
    kakao_message_type: Option<String>,
    result_code: Option<String>,
    receive_date: Option<String>,
    create_date: Option<String>,
    request_date: Option<String>,
    resend_status: Option<String>,
    resend_request_id: Option<String>,
}

/// The provider's own SMS fallback for an AlimTalk it could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fallback {
    /// The fallback SMS's request id (the SMS product's webhooks name it).
    pub request_id: String,
    /// Whether NHN reports it failed (RSC05) rather than sent or sending (RSC03, RSC04).
    pub failed: bool,
}

/// One hook: which product's message, its id, the receipt, and the provider-side fallback if one was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NhnReceipt {
    /// `nhn-sms` or `nhn-alimtalk`: the gateway the attempt was recorded under.
    pub gateway: &'static str,
    /// The request id.
    pub request_id: String,
    /// What became of it.
    pub receipt: Receipt,
    /// The provider's own SMS fallback (AlimTalk only), when the hook says.
    pub fallback: Option<Fallback>,
    /// The recipient's sequence number in the request (1 for otpd's one-recipient sends).
    pub recipient_seq: i64,
}

/// The receipts a webhook body carries.
pub(super) fn parse(body: &[u8]) -> Result<Vec<NhnReceipt>, String> {
    let webhook: Webhook = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if webhook.event != "MESSAGE_RESULT_UPDATE" {
        return Err(format!("event `{}` is not MESSAGE_RESULT_UPDATE", webhook.event));
    }
    if webhook.hooks.is_empty() {
        return Err("no hooks".into());
    }
    let kakao = webhook.product_name.as_deref().is_some_and(|p| p.starts_with("KakaoTalk"));
    webhook
        .hooks
        .into_iter()
        .map(|hook| {
            if hook.request_id.is_empty() {
                return Err("empty requestId".into());
            }
            if kakao || (hook.message_status.is_none() && hook.kakao_message_type.is_some()) {
                alimtalk(hook)
            } else {
                sms(hook)
            }
        })
        .collect()
}

fn sms(hook: Hook) -> Result<NhnReceipt, String> {
    let status = hook.message_status.ok_or("no messageStatus")?;
    let delivered = match status.as_str() {
        "COMPLETED" => hook.result_code.as_deref().is_none_or(|c| c == "1000"),
        "FAILED" | "CANCEL" | "DUPLICATED" | "FAILED_AD" => false,
        other => return Err(format!("messageStatus `{other}`")),
    };
    let at = when(&[&hook.receive_date, &hook.request_date])?;
    let code = if delivered { None } else { Some(hook.result_code.unwrap_or(status)) };
    Ok(NhnReceipt {
        gateway: "nhn-sms",
        request_id: hook.request_id,
        receipt: Receipt { delivered, at, code },
        fallback: None,
        recipient_seq: seq(&hook.recipient_seq),
    })
}

fn alimtalk(hook: Hook) -> Result<NhnReceipt, String> {
    if let Some(kind) = hook.kakao_message_type.as_deref().filter(|k| !k.starts_with("ALIMTALK")) {
        return Err(format!("kakaoMessageType `{kind}` is not an AlimTalk"));
    }
    let code = hook.result_code.filter(|c| !c.is_empty()).ok_or("no resultCode")?;
    let delivered = code == "1000";
    let at = when(&[&hook.receive_date, &hook.create_date, &hook.request_date])?;
    let fallback = fallback(hook.resend_status.as_deref(), hook.resend_request_id);
    let receipt = Receipt { delivered, at, code: (!delivered).then_some(code) };
    let recipient_seq = seq(&hook.recipient_seq);
    Ok(NhnReceipt { gateway: "nhn-alimtalk", request_id: hook.request_id, receipt, fallback, recipient_seq })
}

/// The recipient sequence number, 1 when absent or unreadable (otpd sends to one recipient per request).
fn seq(value: &Option<serde_json::Value>) -> i64 {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(1),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(1),
        _ => 1,
    }
}

/// What the message query says about NHN's own SMS fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FallbackState {
    /// None will be made (RSC01 대체 발송 미대상, or no status).
    None,
    /// One will be made, not yet (RSC02 대체 발송 대상, or RSC03 without its request id yet).
    Pending,
    /// Made or being made, with its request id.
    Made(Fallback),
}

/// A fallback SMS NHN made or is making (RSC03 대체 발송 중, RSC04 성공, RSC05 실패), with its request id.
fn fallback(status: Option<&str>, request_id: Option<String>) -> Option<Fallback> {
    match (status, request_id) {
        (Some(status @ ("RSC03" | "RSC04" | "RSC05")), Some(id)) if !id.is_empty() => {
            Some(Fallback { request_id: id, failed: status == "RSC05" })
        }
        _ => None,
    }
}

/// Reads the provider's SMS fallback of one AlimTalk from the message query (API v2.3, 인증 메시지 > 메시지 단건
/// 조회: `GET /alimtalk/v2.3/appkeys/{appkey}/auth/messages/{requestId}/{recipientSeq}`, header `X-Secret-Key`;
/// `message.resendStatus`, `message.resendRequestId`).
pub(super) async fn query_fallback(
    client: &reqwest::Client,
    query: &super::AlimTalkQuery,
    request_id: &str,
    recipient_seq: i64,
) -> Result<FallbackState, String> {
    use secrecy::ExposeSecret;
    let mut url = query.base.clone();
    let path = format!(
        "{}/alimtalk/v2.3/appkeys/{}/auth/messages/{request_id}/{recipient_seq}",
        query.base.path().trim_end_matches('/'),
        query.app_key
    );
    url.set_path(&path);
    let response = client
        .get(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json;charset=UTF-8")
        .header("X-Secret-Key", query.secret_key.expose_secret())
        .send()
        .await
        .map_err(|e| crate::telemetry::ErrorChain(&e.without_url()).to_string())?;
    if !response.status().is_success() {
        return Err(format!("provider answered {}", response.status()));
    }
    let answer: serde_json::Value =
        response.json().await.map_err(|e| crate::telemetry::ErrorChain(&e.without_url()).to_string())?;
    if answer["header"]["isSuccessful"] != serde_json::json!(true) {
        return Err(format!("resultCode {}", answer["header"]["resultCode"]));
    }
    let message = &answer["message"];
    let status = message["resendStatus"].as_str();
    Ok(match fallback(status, message["resendRequestId"].as_str().map(str::to_owned)) {
        Some(fallback) => FallbackState::Made(fallback),
        None if matches!(status, Some("RSC02" | "RSC03")) => FallbackState::Pending,
        None => FallbackState::None,
    })
}

/// The first of `dates` given, as a time.
fn when(dates: &[&Option<String>]) -> Result<DateTime<Utc>, String> {
    let at = dates.iter().find_map(|d| d.as_deref().filter(|d| !d.is_empty())).ok_or("no receiveDate")?;
    korean_time(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_reads_as_receipts_in_korean_time() {
        let body = br#"{"hooksId":"h","webhookConfigId":"w","productName":"SMS","appKey":"k",
            "event":"MESSAGE_RESULT_UPDATE","hooks":[{"hookId":"1","senderType":"AUTH","requestId":"r-1",
            "recipientSeq":1,"requestDate":"2026-11-29T18:00:00","receiveDate":"2026-11-29T18:00:05",
            "messageStatus":"FAILED","resultCode":"3012","messageCount":1}]}"#;
        let receipts = parse(body).unwrap();
        assert_eq!((receipts[0].gateway, receipts[0].request_id.as_str()), ("nhn-sms", "r-1"));
        assert!(!receipts[0].receipt.delivered);
        assert_eq!(receipts[0].receipt.code.as_deref(), Some("3012"));
        assert_eq!(receipts[0].receipt.at.to_rfc3339(), "2026-11-29T09:00:05+00:00");
        assert!(parse(br#"{"event":"OTHER","hooks":[]}"#).is_err());
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn an_alimtalk_hook_has_no_message_status() {
        let body = br#"{"hooksId":"h","webhookConfigId":"w","productName":"KakaoTalk Bizmessage","appKey":"k",
            "event":"MESSAGE_RESULT_UPDATE","hooks":[{"kakaoMessageType":"ALIMTALK_AUTH","requestId":"at-1",
            "recipientSeq":1,"requestDate":"2026-11-29 18:00:00","createDate":"2026-11-29 18:00:00",
            "receiveDate":"2026-11-29 18:00:04","recipientNo":"01012345678","resultCode":"3019",
            "resendStatus":"RSC04","resendRequestId":"sms-9","hookId":"x"}]}"#;
        let receipts = parse(body).unwrap();
        assert_eq!((receipts[0].gateway, receipts[0].receipt.code.as_deref()), ("nhn-alimtalk", Some("3019")));
        assert_eq!(receipts[0].fallback, Some(Fallback { request_id: "sms-9".into(), failed: false }));
    }
}
