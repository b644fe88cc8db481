//! NHN Cloud SMS webhook `MESSAGE_RESULT_UPDATE` (TOAST-DOCS/SMS `ko/webhook.md`): `{"event":
//! "MESSAGE_RESULT_UPDATE", "productName": "SMS", "hooks": [{"requestId", "recipientSeq", "messageStatus":
//! "COMPLETED|FAILED|CANCEL|DUPLICATED|FAILED_AD", "resultCode": "1000", "receiveDate": "yyyy-MM-dd'T'HH:mm:ss"}]}`
//! with times in Korean time, without an offset.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use crate::domain::Receipt;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    event: String,
    hooks: Vec<Hook>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hook {
    request_id: String,
    message_status: String,
    result_code: Option<String>,
    receive_date: Option<String>,
    request_date: Option<String>,
}

/// The receipts a webhook body carries, by request id.
pub(super) fn parse(body: &[u8]) -> Result<Vec<(String, Receipt)>, String> {
    let webhook: Webhook = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if webhook.event != "MESSAGE_RESULT_UPDATE" {
        return Err(format!("event `{}` is not MESSAGE_RESULT_UPDATE", webhook.event));
    }
    if webhook.hooks.is_empty() {
        return Err("no hooks".into());
    }
    webhook
        .hooks
        .into_iter()
        .map(|hook| {
            let delivered = match hook.message_status.as_str() {
                "COMPLETED" => hook.result_code.as_deref().is_none_or(|c| c == "1000"),
                "FAILED" | "CANCEL" | "DUPLICATED" | "FAILED_AD" => false,
                other => return Err(format!("messageStatus `{other}`")),
            };
            let at = hook.receive_date.as_deref().filter(|d| !d.is_empty()).or(hook.request_date.as_deref());
            let at = at.ok_or("no receiveDate")?;
            let code = if delivered { None } else { Some(hook.result_code.unwrap_or(hook.message_status)) };
            if hook.request_id.is_empty() {
                return Err("empty requestId".into());
            }
            Ok((hook.request_id, Receipt { delivered, at: kst(at)?, code }))
        })
        .collect()
}

/// NHN's times are Korean time without an offset.
fn kst(text: &str) -> Result<DateTime<Utc>, String> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .map_err(|_| format!("`{text}` is not yyyy-MM-dd'T'HH:mm:ss"))?;
    let kst = FixedOffset::east_opt(9 * 3600).ok_or("KST offset")?;
    naive.and_local_timezone(kst).single().map(|t| t.to_utc()).ok_or_else(|| format!("`{text}`"))
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
        assert_eq!(receipts[0].0, "r-1");
        assert!(!receipts[0].1.delivered);
        assert_eq!(receipts[0].1.code.as_deref(), Some("3012"));
        assert_eq!(receipts[0].1.at.to_rfc3339(), "2026-11-29T09:00:05+00:00");
        assert!(parse(br#"{"event":"OTHER","hooks":[]}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
