//! Why a carrier did not deliver a message, in words a team lead can read out, from each provider's result code,
//! and what the failure says about the route (blocked as spam, an undeliverable number) for route learning:
//! - NHN Cloud SMS: 수신 결과 코드 (TOAST-DOCS/SMS `ko/error-code.md`);
//! - NHN Cloud AlimTalk: 발송 결과 코드 (TOAST-DOCS/Alimtalk `ko/error-code.md`): the same numbers mean other things
//!   there (3012 is "카카오 통신 실패", not spam);
//! - Solapi: 메시지 상태 코드 (solapi/documents `api-reference/message-status-codes.md`);
//! - Naver Cloud SENS: 메시지 발송 결과 조회's `statusCode` ("0" delivered); SENS's guide names no table of the
//!   failure codes, so each is "기타 실패" with its code shown;
//! - the generic receipt's reasons (docs/sms-gateway.md).

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

/// A failure reason in Korean and English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// For the team lead, in Korean.
    pub ko: &'static str,
    /// In English.
    pub en: &'static str,
    /// What the failure says about the route to this number.
    pub kind: FailureKind,
}

/// What a failed receipt says about the route it came by, for choosing the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The recipient or the carrier blocked it (spam filter, refused sender, AlimTalk blocked): this route will
    /// keep failing for this number; another channel or provider may not.
    Blocked,
    /// No such number, no subscriber, no KakaoTalk: this route cannot reach it.
    Undeliverable,
    /// Phone off, out of coverage, a full inbox, a provider or carrier hiccup: worth trying again.
    Transient,
    /// Our side (sender number, template, account): a configuration problem, not the number's.
    Ours,
    /// Anything else.
    Other,
}

const fn reason(ko: &'static str, en: &'static str, kind: FailureKind) -> Reason {
    Reason { ko, en, kind }
}

const BLOCKED: Reason =
    reason("수신 거부/스팸 차단", "refused by the recipient or blocked as spam", FailureKind::Blocked);
const NO_NUMBER: Reason = reason("번호 없음", "no such number", FailureKind::Undeliverable);
const UNREACHABLE: Reason = reason("전원 꺼짐/음영 지역", "phone off or out of coverage", FailureKind::Transient);
const SUSPENDED: Reason = reason("이용 정지된 번호", "number suspended", FailureKind::Undeliverable);
const SENDER: Reason =
    reason("발신번호 미등록/변작 차단", "sender number not registered or flagged", FailureKind::Ours);
const EXPIRED: Reason = reason("전송 시간 초과", "not delivered in time", FailureKind::Transient);
const CARRIER: Reason = reason("통신사/발송 업체 오류", "carrier or provider error", FailureKind::Transient);
const NOT_KAKAO: Reason = reason(
    "카카오톡 미사용/수신 불가",
    "no KakaoTalk on this number, or it cannot receive",
    FailureKind::Undeliverable,
);
const ALIMTALK_BLOCKED: Reason =
    reason("알림톡 수신 차단", "the recipient blocked AlimTalk messages", FailureKind::Blocked);
const TEMPLATE: Reason =
    reason("템플릿/메시지 형식 오류", "template or message format not accepted", FailureKind::Ours);
const OTHER: Reason = reason("기타 실패", "other failure", FailureKind::Other);

/// The generic receipt's reasons (docs/sms-gateway.md), which NHN's codes map onto too.
pub const GENERIC_REASONS: [&str; 7] =
    ["blocked", "no_such_number", "unreachable", "suspended", "sender_rejected", "expired", "other"];

/// The reason behind result `code` of a receipt from `gateway`.
pub fn receipt_reason(gateway: &str, code: &str) -> Reason {
    match gateway {
        "nhn-sms" => nhn_sms(code),
        "nhn-alimtalk" => nhn_alimtalk(code),
        "solapi" => solapi(code),
        "sens" => OTHER,
        _ => match code {
            "blocked" => BLOCKED,
            "no_such_number" => NO_NUMBER,
            "unreachable" => UNREACHABLE,
            "suspended" => SUSPENDED,
            "sender_rejected" => SENDER,
            "expired" => EXPIRED,
            _ => OTHER,
        },
    }
}

/// Whether a failed receipt from `gateway` with `code` says the message was blocked as spam (or refused by the
/// recipient) on that route: NHN SMS 3006/3012/3013 (and 4008 abroad), Solapi 3054/3055/3047/2254/1060/2060/1061/
/// 2061, AlimTalk 3020, the generic `blocked`.
pub fn blocked_as_spam(gateway: &str, code: &str) -> bool {
    receipt_reason(gateway, code).kind == FailureKind::Blocked
}

/// Whether a failed receipt from `gateway` with `code` says the route cannot reach the number at all (no such
/// number or subscriber, suspended, no KakaoTalk).
pub fn undeliverable(gateway: &str, code: &str) -> bool {
    receipt_reason(gateway, code).kind == FailureKind::Undeliverable
}

/// NHN Cloud SMS 수신 결과 코드 (이통사 and 국제 발송 rows, and ETC).
fn nhn_sms(code: &str) -> Reason {
    match code {
        "3006" | "3012" | "3013" | "4008" | "4007" => BLOCKED,
        "1002" | "3001" | "3003" | "3015" | "3000" | "4003" | "4005" | "4006" => NO_NUMBER,
        "3004" => SUSPENDED,
        "2001" | "2002" | "2003" | "2004" | "2005" | "2007" | "3005" | "3008" | "4004" => UNREACHABLE,
        "1003" | "3017" | "3018" | "3019" | "4001" | "4002" => SENDER,
        "1019" | "2000" | "E919" => EXPIRED,
        "1001" | "3011" | "4009" => CARRIER,
        "3009" | "3010" | "3016" | "E911" | "E913" => TEMPLATE,
        _ => OTHER,
    }
}

/// NHN Cloud AlimTalk 발송 결과 코드.
fn nhn_alimtalk(code: &str) -> Reason {
    match code {
        "3020" => ALIMTALK_BLOCKED,
        "3018" | "3019" | "3021" => NOT_KAKAO,
        "3008" | "1020" => NO_NUMBER,
        "1002" | "1003" | "1006" | "1007" | "1011" | "1021" | "1022" | "1023" | "1024" | "1025" | "1027" | "3015"
        | "3016" | "3013" | "3014" | "3025" | "3027" => TEMPLATE,
        "2001" | "3000" | "3006" | "3010" | "3012" | "2005" => CARRIER,
        "3005" | "3022" => EXPIRED,
        _ => OTHER,
    }
}

/// Solapi 메시지 상태 코드.
fn solapi(code: &str) -> Reason {
    match code {
        "3054" | "3055" | "3047" | "2254" | "1060" | "2060" | "1061" | "2061" | "1064" | "2064" => BLOCKED,
        "3010" | "3032" | "3031" | "3050" | "3058" | "1058" => NO_NUMBER,
        "3045" => SUSPENDED,
        "3041" | "3042" | "3043" | "3044" | "3046" | "3051" | "3056" | "3057" => UNREACHABLE,
        "1062" | "2062" | "3013" | "3059" => SENDER,
        "3040" => EXPIRED,
        "1024" | "2024" | "3012" | "3024" | "3052" | "3053" => CARRIER,
        "3104" | "3107" | "3102" => NOT_KAKAO,
        "1029" | "1031" | "3011" | "2011" | "1011" | "3103" | "3105" => TEMPLATE,
        _ => OTHER,
    }
}

/// A time NHN Cloud or SENS writes in Korean time without an offset (`yyyy-MM-dd HH:mm:ss`, or with a `T`, with
/// or without fractions).
pub fn korean_time(text: &str) -> Result<DateTime<Utc>, String> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .map_err(|_| format!("`{text}` is not yyyy-MM-dd HH:mm:ss"))?;
    let kst = FixedOffset::east_opt(9 * 3600).ok_or("KST offset")?;
    naive.and_local_timezone(kst).single().map(|t| t.to_utc()).ok_or_else(|| format!("`{text}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_codes_read_as_reasons() {
        assert_eq!(receipt_reason("nhn-sms", "3012").ko, "수신 거부/스팸 차단");
        assert_eq!(receipt_reason("nhn-sms", "3003").en, "no such number");
        assert_eq!(receipt_reason("http", "blocked"), receipt_reason("nhn-sms", "3006"));
        assert_eq!(receipt_reason("http", "whatever"), OTHER);
        assert!(blocked_as_spam("nhn-sms", "3012") && blocked_as_spam("http", "blocked"));
        assert!(!blocked_as_spam("nhn-sms", "2001"));
        // The same number means something else on AlimTalk.
        assert_eq!(receipt_reason("nhn-alimtalk", "3012"), CARRIER);
        assert_eq!(receipt_reason("nhn-alimtalk", "3019"), NOT_KAKAO);
        assert_eq!(receipt_reason("solapi", "3054"), BLOCKED);
        assert_eq!(receipt_reason("sens", "3018"), OTHER);
    }

    #[test]
    fn route_learning_reads_spam_and_undeliverable() {
        for (gateway, code) in [("nhn-sms", "3006"), ("nhn-sms", "3012"), ("nhn-sms", "3013"), ("solapi", "3054")] {
            assert!(blocked_as_spam(gateway, code), "{gateway} {code}");
        }
        assert!(blocked_as_spam("nhn-alimtalk", "3020"));
        assert!(!blocked_as_spam("nhn-alimtalk", "3012"), "Kakao's communication failure is no block");
        assert!(undeliverable("nhn-sms", "3001") && undeliverable("solapi", "3032"));
        assert!(undeliverable("nhn-alimtalk", "3019"), "not a KakaoTalk user");
        assert!(!undeliverable("nhn-sms", "2003"), "phone off is transient");
    }

    #[test]
    fn korean_time_is_nine_hours_ahead() {
        assert_eq!(korean_time("2026-11-29 18:00:05").unwrap().to_rfc3339(), "2026-11-29T09:00:05+00:00");
        assert_eq!(korean_time("2026-11-29T18:00:05.123").unwrap().timestamp(), 1_795_942_805);
        assert!(korean_time("yesterday").is_err());
    }
}
