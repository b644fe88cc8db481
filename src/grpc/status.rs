//! The one mapping from [`ServiceError`] to `tonic::Status`, with the richer error model's details
//! (`ErrorInfo` in domain `otp.v1`, `BadRequest`, `RetryInfo`, `LocalizedMessage`). Internal causes are logged
//! with their chain and never sent.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::hashing::HashError;
use crate::service::ServiceError;
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "otp.v1";

const LOCKED_KO: &str = "인증번호가 10회 이상 일치하지 않아 24시간 이후 재인증 가능합니다.";
const THIRD_PARTY_KO: &str = "발신 번호가 인증 대상 번호와 다릅니다. 제3자 번호로는 인증번호를 안내할 수 없습니다.";
const PRESS_SEND_KO: &str =
    "최근 발송된 인증번호가 없습니다. 기사님께 앱에서 인증번호 전송을 먼저 누르도록 안내해 주세요.";
const CALL_NOT_FOUND_KO: &str = "통화 정보를 찾을 수 없습니다. 통화 중인 목록에서 다시 선택해 주세요.";
const CALL_NOT_YOURS_KO: &str =
    "상담사님이 받은 통화가 아닙니다. 본인이 받은 통화에서만 인증번호를 안내할 수 있습니다.";
const CALL_ENDED_KO: &str = "통화가 종료되었습니다. 기사님과 다시 통화 연결 후 조회해 주세요.";
const CALL_REQUIRED_KO: &str =
    "통화 중인 전화에서만 인증번호를 조회할 수 있습니다. 통화 중 목록에서 통화를 선택해 주세요.";
const SMS_FAILED_KO: &str =
    "인증번호 문자를 보내지 못했습니다. 잠시 후 다시 시도하시거나, 고객센터로 전화 주시면 인증을 도와드립니다.";
const SIGN_IN_LOCKED_KO: &str =
    "로그인에 여러 번 실패하여 잠시 로그인할 수 없습니다. 표시된 시각 이후 다시 시도해 주세요.";
const SESSION_REQUIRED_KO: &str = "추가 인증으로 로그인한 뒤 이용할 수 있습니다.";
const PASSKEY_REJECTED_KO: &str = "passkey 확인에 실패했습니다. 다시 로그인해 주세요.";
const SESSION_EXPIRED_KO: &str = "로그인 시간이 만료되었습니다. 다시 로그인해 주세요.";
const SIM_MISMATCH_KO: &str = "유심의 전화번호가 기존에 인증된 전화번호와 다릅니다. 다시 한 번 인증해주세요.";

const PUMPING_GUARD_KO: &str = "이 번호 대역으로 요청된 인증번호가 비정상적으로 많아 문자 발송이 잠시 제한되었습니다. \
     잠시 후 다시 시도하시거나 고객센터로 문의해 주세요.";

/// The pumping guard's refusal as `ErrorInfo.metadata` (`limit=pumping_guard` and the figures that tripped it, or
/// the admin's block) and the status message.
fn guard_metadata(refusal: &crate::service::GuardRefusal) -> (HashMap<String, String>, String) {
    use crate::domain::guard::{Counts, Verdict};
    let retry_at = refusal.retry_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut metadata = HashMap::from([("limit".to_owned(), "pumping_guard".to_owned()), ("retry_at".into(), retry_at)]);
    let message = match &refusal.verdict {
        Verdict::Guarded(trip) => {
            let window = humantime::format_duration(trip.window.to_std().unwrap_or_default()).to_string();
            let conversion = Counts { sends: trip.sends, approvals: trip.approvals }.conversion_pct();
            metadata.extend([
                ("scope".to_owned(), trip.scope.as_str().to_owned()),
                ("key".into(), trip.key.clone()),
                ("window".into(), window),
                ("sends".into(), trip.sends.to_string()),
                ("approvals".into(), trip.approvals.to_string()),
                ("conversion_pct".into(), conversion.to_string()),
                ("min_sends".into(), trip.min_sends.to_string()),
                ("min_conversion_pct".into(), trip.min_conversion_pct.to_string()),
            ]);
            format!("pumping guard: {}; re-evaluated at the latest in {}s", trip.explain(), secs(refusal.retry_after))
        }
        Verdict::Blocked(o) => {
            let until = o.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            metadata.extend([
                ("scope".to_owned(), "prefix".to_owned()),
                ("override".into(), "block".into()),
                ("until".into(), until.clone()),
            ]);
            format!("pumping guard: this destination prefix is blocked by an administrator until {until}")
        }
        Verdict::Clear | Verdict::Exempt(_) => "pumping guard".to_owned(),
    };
    (metadata, message)
}

/// `OVERLOADED`: nothing was done; retry in a second.
static OVERLOADED: std::sync::LazyLock<Status> = std::sync::LazyLock::new(|| {
    let mut details = ErrorDetails::new();
    details.set_error_info("OVERLOADED", ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(
        Code::ResourceExhausted,
        "the server is overloaded; nothing was done; retry shortly",
        details,
    )
});

/// The `OVERLOADED` answer as HTTP, for a call refused before tonic decoded it ([`super::admit`]): a trailers-only
/// response (`grpc-status`, `grpc-message`, `grpc-status-details-bin`) whose values were encoded once, where
/// `Status::into_http` would percent-encode the message and base64-encode the details every time. The map is made
/// with room for the `date` header hyper adds, so that adding it does not grow the map.
pub(super) fn overloaded_http<B: Default>() -> tonic::codegen::http::Response<B> {
    use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};
    static HEADERS: std::sync::LazyLock<Vec<(HeaderName, HeaderValue)>> = std::sync::LazyLock::new(|| {
        let encoded = OVERLOADED.clone().into_http::<()>().into_parts().0.headers;
        // Static values: a clone is a copy, with no reference count to touch.
        let leaked = |value: &HeaderValue| {
            HeaderValue::from_static(String::from_utf8_lossy(value.as_bytes()).to_string().leak())
        };
        encoded.iter().map(|(name, value)| (name.clone(), leaked(value))).collect()
    });
    let mut headers = HeaderMap::with_capacity(HEADERS.len() + 1);
    for (name, value) in HEADERS.iter() {
        headers.append(name.clone(), value.clone());
    }
    let mut response = tonic::codegen::http::Response::new(B::default());
    *response.headers_mut() = headers;
    response
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        let mut details = ErrorDetails::new();
        let info = |details: &mut ErrorDetails, reason: &str, metadata: HashMap<String, String>| {
            details.set_error_info(reason, ERROR_DOMAIN, metadata);
        };
        let (code, message) = match error {
            ServiceError::InvalidArgument(violations) => {
                let reason = violations.first().map_or("INVALID_ARGUMENT", |v| v.reason);
                info(&mut details, reason, HashMap::new());
                let mut message = String::from("invalid request:");
                for v in &violations {
                    details.add_bad_request_violation(v.field, &v.description);
                    message.push_str(&format!(" {}: {};", v.field, v.description));
                }
                message.pop();
                (Code::InvalidArgument, message)
            }
            ServiceError::SimMismatch => {
                info(&mut details, "SIM_MISMATCH", HashMap::new());
                details.set_localized_message("ko-KR", SIM_MISMATCH_KO);
                (Code::FailedPrecondition, "the SIM's number differs from the number being verified".into())
            }
            ServiceError::NoPendingVerification => {
                info(&mut details, "NO_PENDING_VERIFICATION", HashMap::new());
                (Code::NotFound, "no pending verification for this number and purpose: send a code first".into())
            }
            ServiceError::AlreadyVerified => {
                info(&mut details, "ALREADY_VERIFIED", HashMap::new());
                (Code::FailedPrecondition, "this verification is already approved".into())
            }
            ServiceError::PhoneLocked { until, retry_after } => {
                let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                info(&mut details, "PHONE_LOCKED", HashMap::from([("locked_until".into(), until.clone())]));
                details.set_retry_info(Some(retry_after));
                details.set_localized_message("ko-KR", LOCKED_KO);
                let mut status = Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("too many wrong codes: this number is locked until {until}"),
                    details,
                );
                if let Ok(value) = until.parse() {
                    status.metadata_mut().insert("otp-locked-until", value);
                }
                return status;
            }
            ServiceError::ResendCooldown { retry_at, retry_after } => {
                retry(&mut details, "RESEND_COOLDOWN", retry_at, retry_after);
                (Code::ResourceExhausted, format!("a code was sent moments ago; retry in {}s", secs(retry_after)))
            }
            ServiceError::SendLimit { retry_at, retry_after } => {
                retry(&mut details, "SEND_LIMIT", retry_at, retry_after);
                (
                    Code::ResourceExhausted,
                    format!("too many codes sent to this number; retry in {}s", secs(retry_after)),
                )
            }
            ServiceError::RateLimited { limit, retry_after } => {
                info(&mut details, "RATE_LIMITED", HashMap::from([("limit".into(), limit.into())]));
                details.set_retry_info(Some(retry_after));
                (Code::ResourceExhausted, format!("too many requests ({limit}); retry in {}s", secs(retry_after)))
            }
            ServiceError::PumpingGuard(refusal) => {
                let (metadata, message) = guard_metadata(&refusal);
                info(&mut details, "RATE_LIMITED", metadata);
                details.set_retry_info(Some(refusal.retry_after));
                details.set_localized_message("ko-KR", PUMPING_GUARD_KO);
                (Code::ResourceExhausted, message)
            }
            ServiceError::SmsDeliveryFailed { retry_after } => {
                info(&mut details, "SMS_DELIVERY_FAILED", HashMap::new());
                details.set_retry_info(Some(retry_after));
                details.set_localized_message("ko-KR", SMS_FAILED_KO);
                (Code::Unavailable, "the SMS could not be delivered; no code was sent".into())
            }
            ServiceError::DeadlineTooShort { needed } => {
                let needed = needed.as_millis().to_string();
                info(&mut details, "DEADLINE_TOO_SHORT", HashMap::from([("min_deadline_ms".into(), needed.clone())]));
                (
                    Code::DeadlineExceeded,
                    format!(
                        "the call's deadline leaves no time to send a code (give it at least {needed} ms); nothing was sent or counted"
                    ),
                )
            }
            ServiceError::DeliveryUnconfirmed => {
                info(&mut details, "SMS_NOT_CONFIRMED", HashMap::new());
                (
                    Code::DeadlineExceeded,
                    "the SMS was handed to the provider but not confirmed before the deadline; it may still arrive, \
                     and its code works"
                        .into(),
                )
            }
            ServiceError::Unauthenticated => (Code::Unauthenticated, "a valid bearer token is required".into()),
            ServiceError::SupervisorDisabled => {
                info(&mut details, "SUPERVISOR_DISABLED", HashMap::new());
                (Code::Unauthenticated, "this token's supervisor is disabled".into())
            }
            ServiceError::AuditUnavailable => {
                info(&mut details, "AUDIT_UNAVAILABLE", HashMap::new());
                details.set_retry_info(Some(Duration::from_secs(1)));
                (Code::Unavailable, "the audit log cannot be written, so nothing was done; retry shortly".into())
            }
            ServiceError::WrongRole => {
                info(&mut details, "ROLE_NOT_ALLOWED", HashMap::new());
                (Code::PermissionDenied, "your role does not allow this call".into())
            }
            ServiceError::ThirdPartyNumber => {
                info(&mut details, "THIRD_PARTY_NUMBER", HashMap::new());
                details.set_localized_message("ko-KR", THIRD_PARTY_KO);
                (
                    Code::PermissionDenied,
                    "the contact number is not the number being verified: no code is given for a third party's number"
                        .into(),
                )
            }
            ServiceError::CallNotFound => {
                info(&mut details, "CALL_NOT_FOUND", HashMap::new());
                details.set_localized_message("ko-KR", CALL_NOT_FOUND_KO);
                (Code::NotFound, "the phone system reported no such call".into())
            }
            ServiceError::CallNotYours => {
                info(&mut details, "CALL_NOT_YOURS", HashMap::new());
                details.set_localized_message("ko-KR", CALL_NOT_YOURS_KO);
                (
                    Code::PermissionDenied,
                    "the phone system does not show this call answered by your agent id (or you have none)".into(),
                )
            }
            ServiceError::CallEnded => {
                info(&mut details, "CALL_ENDED", HashMap::new());
                details.set_localized_message("ko-KR", CALL_ENDED_KO);
                (Code::FailedPrecondition, "the call has ended: codes are read out only on a live call".into())
            }
            ServiceError::CallRequired => {
                info(&mut details, "CALL_REQUIRED", HashMap::new());
                details.set_localized_message("ko-KR", CALL_REQUIRED_KO);
                (
                    Code::FailedPrecondition,
                    "this service looks codes up only for a call the phone system reported: name the call".into(),
                )
            }
            ServiceError::CallEvidenceOff => {
                info(&mut details, "CALL_EVIDENCE_OFF", HashMap::new());
                (
                    Code::FailedPrecondition,
                    "this service is not connected to the phone system (--lookup-evidence typed): name the numbers"
                        .into(),
                )
            }
            ServiceError::NoRecentSend => {
                info(&mut details, "NO_PENDING_VERIFICATION", HashMap::new());
                details.set_localized_message("ko-KR", PRESS_SEND_KO);
                (
                    Code::FailedPrecondition,
                    "no code was sent to this number recently: ask the driver to press send in the app first".into(),
                )
            }
            ServiceError::LookupLocked { until } => {
                let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                info(&mut details, "PHONE_LOCKED", HashMap::from([("locked_until".into(), until.clone())]));
                details.set_localized_message("ko-KR", LOCKED_KO);
                (Code::FailedPrecondition, format!("this number is locked until {until}"))
            }
            ServiceError::LookupQuota { retry_after } => {
                info(&mut details, "LOOKUP_QUOTA", HashMap::new());
                details.set_retry_info(Some(retry_after));
                (Code::ResourceExhausted, format!("your lookup quota is used up; retry in {}s", secs(retry_after)))
            }
            ServiceError::SignInLocked { until, retry_after } => {
                let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                info(&mut details, "SIGN_IN_LOCKED", HashMap::from([("locked_until".into(), until.clone())]));
                details.set_retry_info(Some(retry_after));
                details.set_localized_message("ko-KR", format!("{SIGN_IN_LOCKED_KO} ({until})"));
                (Code::Unauthenticated, format!("too many failed sign-ins: sign-in is locked until {until}"))
            }
            ServiceError::SessionRequired => {
                info(&mut details, "SESSION_REQUIRED", HashMap::new());
                details.set_localized_message("ko-KR", SESSION_REQUIRED_KO);
                (
                    Code::Unauthenticated,
                    "this call needs a session: sign in with a second factor (`otpctl login`, or the console)".into(),
                )
            }
            ServiceError::SessionExpired => {
                info(&mut details, "SESSION_EXPIRED", HashMap::new());
                details.set_localized_message("ko-KR", SESSION_EXPIRED_KO);
                (Code::Unauthenticated, "the session has ended: sign in again".into())
            }
            ServiceError::WrongSignInCode { attempts_remaining } => {
                let metadata = HashMap::from([("attempts_remaining".into(), attempts_remaining.to_string())]);
                info(&mut details, "WRONG_SIGN_IN_CODE", metadata);
                (Code::Unauthenticated, format!("wrong code; {attempts_remaining} attempt(s) left for this sign-in"))
            }
            ServiceError::SignInExpired => {
                info(&mut details, "SIGN_IN_EXPIRED", HashMap::new());
                (Code::FailedPrecondition, "this sign-in is unknown, used or expired: start again".into())
            }
            ServiceError::FactorUnavailable(why) => {
                info(&mut details, "FACTOR_NOT_AVAILABLE", HashMap::new());
                (Code::FailedPrecondition, format!("this second factor cannot be used: {why}"))
            }
            ServiceError::EmailDeliveryFailed => {
                info(&mut details, "EMAIL_DELIVERY_FAILED", HashMap::new());
                details.set_retry_info(Some(Duration::from_secs(30)));
                (Code::Unavailable, "the mail server did not take the sign-in code; try again or another factor".into())
            }
            ServiceError::PasskeyRejected => {
                info(&mut details, "PASSKEY_REJECTED", HashMap::new());
                details.set_localized_message("ko-KR", PASSKEY_REJECTED_KO);
                (Code::Unauthenticated, "the passkey's answer was refused: sign in again".into())
            }
            error @ ServiceError::PasskeyFailed(_) => return internal(&error),
            ServiceError::IdempotencyKeyReused => {
                info(&mut details, "IDEMPOTENCY_KEY_REUSED", HashMap::new());
                (
                    Code::FailedPrecondition,
                    "this idempotency-key was first used with another request; use a new key for a new action".into(),
                )
            }
            ServiceError::IdempotencyKeyInUse { retry_after } => {
                info(&mut details, "IDEMPOTENCY_KEY_IN_USE", HashMap::new());
                details.set_retry_info(Some(retry_after));
                (
                    Code::Aborted,
                    format!(
                        "a call with this idempotency-key is still running; retry with the same key in {}s",
                        secs(retry_after)
                    ),
                )
            }
            ServiceError::Store(StoreError::Unavailable(cause)) => {
                tracing::error!(error = %ErrorChain(&cause), "database unavailable");
                details.set_retry_info(Some(Duration::from_secs(1)));
                (Code::Unavailable, "the service is temporarily unavailable".into())
            }
            ServiceError::Store(error @ (StoreError::Query(_) | StoreError::Migrate(_) | StoreError::Corrupt(_))) => {
                return internal(&error);
            }
            // The one answer a storm of retries gets thousands of times a second: built once.
            ServiceError::Hash(HashError::Overloaded) => return OVERLOADED.clone(),
            ServiceError::Hash(HashError::CallerGone) => {
                info(&mut details, "DEADLINE_PASSED_IN_QUEUE", HashMap::new());
                (
                    Code::DeadlineExceeded,
                    "the deadline passed while the call waited its turn; nothing was counted".into(),
                )
            }
            ServiceError::Hash(error @ (HashError::Argon2(_) | HashError::Worker | HashError::Closed)) => {
                return internal(&error);
            }
            ServiceError::Task(error) => return internal(&error),
        };
        Status::with_error_details(code, message, details)
    }
}

fn retry(details: &mut ErrorDetails, reason: &str, at: chrono::DateTime<chrono::Utc>, after: Duration) {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::from([("retry_at".into(), at)]));
    details.set_retry_info(Some(after));
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %ErrorChain(error), "internal error");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prebuilt_refusal_is_what_tonic_would_send() {
        let ours = overloaded_http::<()>();
        let tonics = OVERLOADED.clone().into_http::<()>();
        assert_eq!(ours.status(), tonics.status());
        assert_eq!(ours.headers(), tonics.headers());
        let status = Status::from_header_map(ours.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.get_error_details().error_info().unwrap().reason, "OVERLOADED");
        assert!(status.get_error_details().retry_info().is_some());
    }
}
