//! The manual's checklist for "인증번호가 안와요" (the code did not arrive), answered from the number's record: before a
//! team lead reads a code out, the agent walks the driver through four checks — the number typed right; Wi-Fi off,
//! mobile data on; the spam box, spam filters and spam apps; a carrier block on the sender — and the record often
//! already says which one it is (issue 22, section 5). Each check says what the record shows and what to tell the
//! driver, in Korean and English. A lock comes first: while it holds, no check helps.

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};

use crate::domain::{AttemptOutcome, AttemptStatus, Channel, blocked_as_spam, receipt_reason};
use crate::store::{CodeStatus, PhoneStatus};

/// How recent a send must be for the checklist to count it: what the driver is waiting for now (the lookup
/// window's length too).
pub const RECENT: TimeDelta = TimeDelta::minutes(10);

/// Which check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// The number is locked after too many wrong codes.
    Locked,
    /// A code was sent to this number lately (else: the driver did not press send, or typed another number).
    Number,
    /// Wi-Fi off, mobile data on (and KakaoTalk, for an AlimTalk).
    MobileData,
    /// The spam box, spam filters and spam-blocking apps.
    SpamFilter,
    /// The carrier blocks the sender as spam.
    CarrierBlock,
}

impl CheckKind {
    /// The name in GetPhoneStatus.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Locked => "locked",
            CheckKind::Number => "number",
            CheckKind::MobileData => "mobile_data",
            CheckKind::SpamFilter => "spam_filter",
            CheckKind::CarrierBlock => "carrier_block",
        }
    }
}

/// What the record says about a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    /// The record points here: tell the driver the next step.
    Act,
    /// The record rules it out.
    Ok,
    /// The record cannot tell: ask the driver.
    Unknown,
}

impl CheckState {
    /// The name in GetPhoneStatus.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Act => "act",
            CheckState::Ok => "ok",
            CheckState::Unknown => "unknown",
        }
    }
}

/// One check, answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Which.
    pub kind: CheckKind,
    /// What the record says.
    pub state: CheckState,
    /// What the record shows, in Korean.
    pub finding_ko: String,
    /// The same, in English.
    pub finding_en: String,
    /// What to tell the driver, in Korean.
    pub next_ko: String,
    /// The same, in English.
    pub next_en: String,
}

fn check(kind: CheckKind, state: CheckState, finding: (String, String), next: (String, String)) -> Check {
    Check { kind, state, finding_ko: finding.0, finding_en: finding.1, next_ko: next.0, next_en: next.1 }
}

fn owned(ko: &str, en: &str) -> (String, String) {
    (ko.to_owned(), en.to_owned())
}

/// Korean time (KST has no daylight saving), as the call centre reads it.
fn kst(at: DateTime<Utc>) -> String {
    match FixedOffset::east_opt(9 * 3600) {
        Some(seoul) => at.with_timezone(&seoul).format("%H:%M").to_string(),
        None => at.format("%H:%M UTC").to_string(),
    }
}

/// The checklist for `status` at `now`; `sender` is the number SMS come from (`--sms-sender`).
pub fn checklist(status: &PhoneStatus, now: DateTime<Utc>, sender: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(until) = status.locked_until.filter(|until| *until > now) {
        let at = kst(until);
        checks.push(check(
            CheckKind::Locked,
            CheckState::Act,
            (
                format!("오류 횟수 초과로 잠김 ({at}까지)"),
                format!("locked after too many wrong codes (until {at} KST)"),
            ),
            owned(
                "잠금이 풀린 뒤 다시 인증하도록 안내하세요 (긴급하면 관리자에게 잠금 해제 요청)",
                "tell the driver to verify again after the lock ends (an admin can unlock it if urgent)",
            ),
        ));
    }
    // The newest SMS code (a team lead's own lookups are not sends), with the attempt that carried it.
    let newest: Option<&CodeStatus> = status
        .pending
        .iter()
        .flat_map(|v| v.codes.iter())
        .filter(|c| c.channel == Channel::Sms && c.sent_at > now - RECENT)
        .max_by_key(|c| c.sent_at);
    let Some(code) = newest else {
        checks.push(check(
            CheckKind::Number,
            CheckState::Act,
            owned("최근 10분간 발송 없음", "no code sent in the last 10 minutes"),
            owned(
                "앱에서 번호를 확인하고 인증번호 전송을 누르도록 안내하세요",
                "ask the driver to check the number in the app and press send",
            ),
        ));
        return checks;
    };
    let at = kst(code.sent_at);
    let carried = code
        .attempts
        .iter()
        .find(|a| matches!(a.attempt.outcome, AttemptOutcome::Accepted | AttemptOutcome::Unconfirmed));
    let Some(carried) = carried else {
        checks.push(check(
            CheckKind::Number,
            CheckState::Act,
            (
                format!("{at} 발송 실패: 문자 발송 업체가 받지 않음"),
                format!("send at {at} KST failed: no provider took it"),
            ),
            owned(
                "잠시 후 앱에서 다시 전송하도록 안내하세요 (계속되면 운영팀에 알리세요)",
                "ask the driver to press send again shortly (tell operations if it persists)",
            ),
        ));
        return checks;
    };
    checks.push(check(
        CheckKind::Number,
        CheckState::Ok,
        (format!("{at} 이 번호로 발송됨"), format!("sent to this number at {at} KST")),
        owned("앱에 입력한 번호가 이 번호와 같은지 확인하세요", "confirm the number typed in the app is this one"),
    ));
    checks.extend(by_channel(carried, sender));
    checks
}

/// The three checks that depend on how the code went and what the carrier said.
fn by_channel(carried: &AttemptStatus, sender: &str) -> Vec<Check> {
    let attempt = &carried.attempt;
    if attempt.channel == crate::domain::DeliveryChannel::AlimTalk {
        let delivered = carried.receipt.as_ref().map(|r| r.delivered);
        let finding = match delivered {
            Some(true) => owned("알림톡으로 전달됨", "delivered as a KakaoTalk AlimTalk"),
            Some(false) => {
                owned("알림톡 전달 실패 (문자로 대체 발송될 수 있음)", "AlimTalk not delivered (may fall back to SMS)")
            }
            None => owned("알림톡으로 발송됨 (결과 미수신)", "sent as a KakaoTalk AlimTalk (no result yet)"),
        };
        return vec![
            check(
                CheckKind::MobileData,
                CheckState::Act,
                finding,
                owned(
                    "카카오톡을 확인하도록 안내하세요 (와이파이를 끄고 모바일 데이터를 켠 상태로)",
                    "ask the driver to check KakaoTalk (Wi-Fi off, mobile data on)",
                ),
            ),
            check(
                CheckKind::SpamFilter,
                CheckState::Unknown,
                owned("알림톡은 문자 스팸함을 거치지 않음", "an AlimTalk does not go through the SMS spam box"),
                owned(
                    "카카오톡에서 채널 차단 여부를 확인하도록 안내하세요",
                    "ask the driver whether the KakaoTalk channel is blocked",
                ),
            ),
            check(
                CheckKind::CarrierBlock,
                CheckState::Ok,
                owned("통신사를 거치지 않음 (알림톡)", "not through the carrier (AlimTalk)"),
                owned("해당 없음", "nothing to do"),
            ),
        ];
    }
    let data = check(
        CheckKind::MobileData,
        CheckState::Unknown,
        owned("문자로 발송됨", "sent by SMS"),
        owned(
            "와이파이를 끄고 모바일 데이터를 켠 뒤 문자함을 확인하도록 안내하세요",
            "ask the driver to turn Wi-Fi off and mobile data on, then check messages",
        ),
    );
    let unblock =
        (format!("{sender} 수신 차단 해제를 안내하세요"), format!("ask the driver to unblock sender {sender}"));
    match &carried.receipt {
        Some(receipt) if receipt.delivered => {
            let at = kst(receipt.at);
            vec![
                data,
                check(
                    CheckKind::SpamFilter,
                    CheckState::Act,
                    (format!("{at} 통신사 전달 완료"), format!("the carrier delivered it at {at} KST")),
                    owned(
                        "스팸 메시지함, 스팸 차단 설정과 앱을 확인하도록 안내하세요",
                        "ask the driver to check the spam box, spam filters and spam-blocking apps",
                    ),
                ),
                check(
                    CheckKind::CarrierBlock,
                    CheckState::Ok,
                    owned("통신사 차단 없음 (전달됨)", "no carrier block (delivered)"),
                    owned("해당 없음", "nothing to do"),
                ),
            ]
        }
        Some(receipt) => {
            let code = receipt.code.clone().unwrap_or_default();
            let reason = receipt_reason(attempt.gateway, &code);
            if blocked_as_spam(attempt.gateway, &code) {
                vec![
                    data,
                    check(
                        CheckKind::SpamFilter,
                        CheckState::Ok,
                        owned("휴대폰까지 가지 않음", "it never reached the phone"),
                        owned("해당 없음", "nothing to do"),
                    ),
                    check(
                        CheckKind::CarrierBlock,
                        CheckState::Act,
                        (
                            format!("통신사 스팸 차단으로 실패 ({code})"),
                            format!("blocked as spam by the carrier ({code})"),
                        ),
                        unblock,
                    ),
                ]
            } else {
                vec![
                    check(
                        CheckKind::MobileData,
                        CheckState::Act,
                        (
                            format!("전달 실패: {} ({code})", reason.ko),
                            format!("not delivered: {} ({code})", reason.en),
                        ),
                        owned(
                            "휴대폰 전원과 수신 상태, 모바일 데이터를 확인한 뒤 다시 전송하도록 안내하세요",
                            "ask the driver to check the phone is on and has signal and mobile data, then send again",
                        ),
                    ),
                    check(
                        CheckKind::SpamFilter,
                        CheckState::Ok,
                        owned("휴대폰까지 가지 않음", "it never reached the phone"),
                        owned("해당 없음", "nothing to do"),
                    ),
                    check(
                        CheckKind::CarrierBlock,
                        CheckState::Unknown,
                        owned("스팸 차단은 아님", "not a spam block"),
                        unblock,
                    ),
                ]
            }
        }
        None => vec![
            data,
            check(
                CheckKind::SpamFilter,
                CheckState::Unknown,
                owned("통신사 결과 미수신", "no carrier result"),
                owned(
                    "스팸 메시지함, 스팸 차단 설정과 앱을 확인하도록 안내하세요",
                    "ask the driver to check the spam box, spam filters and spam-blocking apps",
                ),
            ),
            check(
                CheckKind::CarrierBlock,
                CheckState::Unknown,
                owned("통신사 결과 미수신", "no carrier result"),
                unblock,
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AttemptReason, DeliveryAttempt, DeliveryChannel, Purpose, Receipt, VerificationId};
    use crate::store::VerificationStatus;

    fn status(attempts: Vec<AttemptStatus>, now: DateTime<Utc>) -> PhoneStatus {
        let code = CodeStatus {
            sent_at: now - TimeDelta::minutes(1),
            channel: Channel::Sms,
            delivery: "delivered".into(),
            expires_at: now + TimeDelta::minutes(2),
            revoked: false,
            provider_message_id: None,
            delivered_by: Some("sms".into()),
            attempts,
        };
        PhoneStatus {
            pending: vec![VerificationStatus {
                id: VerificationId::new(),
                purpose: Purpose::Login,
                created_at: code.sent_at,
                expires_at: code.expires_at,
                approved_at: None,
                codes: vec![code],
            }],
            ..PhoneStatus::default()
        }
    }

    fn attempt(outcome: AttemptOutcome, receipt: Option<Receipt>, now: DateTime<Utc>) -> AttemptStatus {
        let reason = (outcome != AttemptOutcome::Accepted).then_some(AttemptReason::ProviderDown);
        let attempt = DeliveryAttempt {
            channel: DeliveryChannel::Sms,
            gateway: "nhn-sms",
            at: now,
            outcome,
            provider_id: None,
            reason,
        };
        AttemptStatus { attempt, receipt }
    }

    #[test]
    fn an_undelivered_sms_that_was_no_spam_block_points_at_the_phone() {
        let now = Utc::now();
        let off = Receipt { delivered: false, at: now, code: Some("2001".into()) };
        let checks = checklist(&status(vec![attempt(AttemptOutcome::Accepted, Some(off), now)], now), now, "1800-3400");
        let data = checks.iter().find(|c| c.kind == CheckKind::MobileData).unwrap();
        assert_eq!(data.state, CheckState::Act);
        assert_eq!(data.finding_ko, "전달 실패: 전원 꺼짐/음영 지역 (2001)");
        let carrier = checks.iter().find(|c| c.kind == CheckKind::CarrierBlock).unwrap();
        assert_eq!(carrier.state, CheckState::Unknown, "not a spam block, but the sender may still be blocked");
    }

    #[test]
    fn a_send_no_route_took_says_to_send_again_and_a_delivered_sms_points_at_the_spam_box() {
        let now = Utc::now();
        let failed = status(vec![attempt(AttemptOutcome::Failed, None, now)], now);
        let checks = checklist(&failed, now, "1800-3400");
        assert_eq!(checks.len(), 1);
        assert_eq!((checks[0].kind, checks[0].state), (CheckKind::Number, CheckState::Act));
        assert!(checks[0].finding_ko.ends_with("발송 실패: 문자 발송 업체가 받지 않음"), "{:?}", checks[0]);

        let delivered = Receipt { delivered: true, at: now, code: None };
        let checks =
            checklist(&status(vec![attempt(AttemptOutcome::Accepted, Some(delivered), now)], now), now, "1588-0000");
        let kinds: Vec<(CheckKind, CheckState)> = checks.iter().map(|c| (c.kind, c.state)).collect();
        assert_eq!(
            kinds,
            [
                (CheckKind::Number, CheckState::Ok),
                (CheckKind::MobileData, CheckState::Unknown),
                (CheckKind::SpamFilter, CheckState::Act),
                (CheckKind::CarrierBlock, CheckState::Ok),
            ]
        );
        let no_receipt = checklist(&status(vec![attempt(AttemptOutcome::Accepted, None, now)], now), now, "1588-0000");
        let carrier = no_receipt.iter().find(|c| c.kind == CheckKind::CarrierBlock).unwrap();
        assert_eq!(carrier.next_ko, "1588-0000 수신 차단 해제를 안내하세요", "the configured sender");
    }
}
