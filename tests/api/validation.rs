//! Bad input gets INVALID_ARGUMENT with the offending field named, never INTERNAL, and changes nothing.

use otpd::pb::otp::v1::{Purpose, SendCodeRequest, VerifyCodeRequest, VerifyResult};
use tonic::Code;
use tonic_types::StatusExt;

use crate::both_backends;
use crate::helpers::*;

both_backends!(bad_input_is_rejected_with_the_field_and_changes_nothing);

/// (phone, purpose, sim, app hash) → (status, reason, fields)
type SendCase = (&'static str, i32, &'static str, &'static str, Code, &'static str, &'static [&'static str]);
/// (phone, purpose, code) → (status, reason, fields)
type VerifyCase = (&'static str, i32, &'static str, Code, &'static str, &'static [&'static str]);

const LOGIN: i32 = Purpose::Login as i32;
const UNSPECIFIED: i32 = Purpose::Unspecified as i32;
const INVALID: Code = Code::InvalidArgument;

const SEND_CASES: &[SendCase] = &[
    ("", LOGIN, "", "", INVALID, "INVALID_PHONE_NUMBER", &["phone_number"]),
    ("   ", LOGIN, "", "", INVALID, "INVALID_PHONE_NUMBER", &["phone_number"]),
    ("abc-defg-hijk", LOGIN, "", "", INVALID, "INVALID_PHONE_NUMBER", &["phone_number"]),
    ("010-1234", LOGIN, "", "", INVALID, "INVALID_PHONE_NUMBER", &["phone_number"]),
    ("010-1234-567890123", LOGIN, "", "", INVALID, "INVALID_PHONE_NUMBER", &["phone_number"]),
    ("02-312-3456", LOGIN, "", "", INVALID, "UNSUPPORTED_DESTINATION", &["phone_number"]),
    ("+1 202 555 0100", LOGIN, "", "", INVALID, "UNSUPPORTED_DESTINATION", &["phone_number"]),
    ("+81 90 1234 5678", LOGIN, "", "", INVALID, "UNSUPPORTED_DESTINATION", &["phone_number"]),
    (PHONE, UNSPECIFIED, "", "", INVALID, "INVALID_PURPOSE", &["purpose"]),
    (PHONE, 99, "", "", INVALID, "INVALID_PURPOSE", &["purpose"]),
    (PHONE, LOGIN, "not a number", "", INVALID, "INVALID_PHONE_NUMBER", &["sim_phone_number"]),
    (PHONE, LOGIN, "", "short", INVALID, "INVALID_APP_HASH", &["app_hash"]),
    ("02-312-3456", UNSPECIFIED, "", "", INVALID, "UNSUPPORTED_DESTINATION", &["phone_number", "purpose"]),
];

const VERIFY_CASES: &[VerifyCase] = &[
    (PHONE, LOGIN, "", INVALID, "INVALID_CODE", &["code"]),
    (PHONE, LOGIN, "12a456", INVALID, "INVALID_CODE", &["code"]),
    (PHONE, LOGIN, "12345", INVALID, "INVALID_CODE", &["code"]),
    (PHONE, LOGIN, "1234567", INVALID, "INVALID_CODE", &["code"]),
    (PHONE, LOGIN, "１２３４５６", INVALID, "INVALID_CODE", &["code"]),
    (PHONE, UNSPECIFIED, "123456", INVALID, "INVALID_PURPOSE", &["purpose"]),
    ("", LOGIN, "123456", INVALID, "INVALID_PHONE_NUMBER", &["phone_number"]),
    ("02-312-3456", LOGIN, "123456", INVALID, "UNSUPPORTED_DESTINATION", &["phone_number"]),
    ("", UNSPECIFIED, "x", INVALID, "INVALID_PHONE_NUMBER", &["phone_number", "purpose", "code"]),
];

fn fields(status: &tonic::Status) -> Vec<String> {
    let details = status.get_error_details();
    let bad = details.bad_request().unwrap_or_else(|| panic!("BadRequest in {status:?}"));
    bad.field_violations.iter().map(|v| v.field.clone()).collect()
}

async fn bad_input_is_rejected_with_the_field_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let code = app.send_and_read(PHONE, Purpose::Login).await;
    let mut client = app.otp.clone();

    for &(phone, purpose, sim, hash, want, want_reason, want_fields) in SEND_CASES {
        let req = SendCodeRequest {
            phone_number: phone.into(),
            purpose,
            sim_phone_number: sim.into(),
            app_hash: hash.into(),
        };
        let err = client.send_code(req).await.unwrap_err();
        let case = format!("SendCode({phone:?}, {purpose}, sim {sim:?}, hash {hash:?})");
        assert_eq!(err.code(), want, "{case}: {err:?}");
        assert_eq!(reason(&err), want_reason, "{case}");
        assert_eq!(fields(&err), want_fields, "{case}");
    }
    for &(phone, purpose, code, want, want_reason, want_fields) in VERIFY_CASES {
        let req = VerifyCodeRequest { phone_number: phone.into(), purpose, code: code.into() };
        let err = client.verify_code(req).await.unwrap_err();
        let case = format!("VerifyCode({phone:?}, {purpose}, {code:?})");
        assert_eq!(err.code(), want, "{case}: {err:?}");
        assert_eq!(reason(&err), want_reason, "{case}");
        assert_eq!(fields(&err), want_fields, "{case}");
    }

    // An oversized request is refused by the transport before any handler runs (tonic answers OUT_OF_RANGE).
    let huge = "1".repeat(64 * 1024);
    let err = client.send_code(send_req(&huge, Purpose::Login)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let err = client.verify_code(verify_req(PHONE, Purpose::Login, &huge)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(!err.message().to_lowercase().contains("panic"));

    // Nothing changed: one SMS, no failure counted, the code still approves after one real wrong guess.
    assert_eq!(app.sms().len(), 1);
    assert_eq!(app.db.phone_state(PHONE_E164).await, (0, false));
    let r = app.verify(PHONE, Purpose::Login, &wrong_code(&code)).await.unwrap();
    assert_eq!(r.attempts_remaining, 9);
    assert_eq!(app.verify(PHONE, Purpose::Login, &code).await.unwrap().result(), VerifyResult::Approved);
}
