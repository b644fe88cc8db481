//! Why a carrier did not deliver a message, in words a team lead can read out, from the provider's result code:
//! NHN Cloud's 수신 결과 코드 (TOAST-DOCS/SMS `ko/error-code.md`) or the generic receipt's reason (docs/sms-gateway.md).

/// A failure reason in Korean and English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// For the team lead, in Korean.
    pub ko: &'static str,
    /// In English.
    pub en: &'static str,
}

const BLOCKED: Reason = Reason { ko: "수신 거부/스팸 차단", en: "refused by the recipient or blocked as spam" };
const NO_NUMBER: Reason = Reason { ko: "번호 없음", en: "no such number" };
const UNREACHABLE: Reason = Reason { ko: "전원 꺼짐/음영 지역", en: "phone off or out of coverage" };
const SUSPENDED: Reason = Reason { ko: "이용 정지된 번호", en: "number suspended" };
const SENDER: Reason =
    Reason { ko: "발신번호 미등록/변작 차단", en: "sender number not registered or flagged" };
const EXPIRED: Reason = Reason { ko: "전송 시간 초과", en: "not delivered in time" };
const OTHER: Reason = Reason { ko: "기타 실패", en: "other failure" };

/// The generic receipt's reasons (docs/sms-gateway.md), which NHN's codes map onto too.
pub const GENERIC_REASONS: [&str; 7] =
    ["blocked", "no_such_number", "unreachable", "suspended", "sender_rejected", "expired", "other"];

/// The reason behind result `code` of a receipt from `gateway`.
pub fn receipt_reason(gateway: &str, code: &str) -> Reason {
    match gateway {
        "nhn-sms" | "nhn-alimtalk" => match code {
            "3006" | "3012" | "3013" => BLOCKED,
            "3001" | "3003" | "1002" => NO_NUMBER,
            "2001" | "2002" | "2003" | "2004" | "2005" | "2007" | "3005" => UNREACHABLE,
            "3004" => SUSPENDED,
            "1003" | "3017" | "3018" | "3019" => SENDER,
            "1019" | "2000" => EXPIRED,
            _ => OTHER,
        },
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

/// Whether a failed receipt from `gateway` with result `code` says the carrier blocked the message as spam (or the
/// recipient refused it): the driver must unblock the sender (issue 22, section 5). Extend [`receipt_reason`] with
/// each provider's codes and this follows.
pub fn blocked_as_spam(gateway: &str, code: &str) -> bool {
    receipt_reason(gateway, code) == BLOCKED
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
    }
}
