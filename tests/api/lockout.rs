//! 10 wrong codes lock the number for 24 hours: nothing is sent and nothing is checked while it is locked.

use chrono::{DateTime, TimeDelta, Utc};
use otpd::pb::otp::v1::{Purpose, VerifyResult};
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

both_backends!(ten_wrong_codes_lock_the_number_for_24_hours, lock_spans_purposes_and_verifications);

async fn ten_wrong_codes_lock_the_number_for_24_hours(backend: Backend) {
    let app = spawn_app(backend).await;
    let code = app.send_and_read(PHONE, Purpose::Login).await;
    let wrong = wrong_code(&code);

    for remaining in (1..=9).rev() {
        let r = app.verify(PHONE, Purpose::Login, &wrong).await.unwrap();
        assert_eq!(r.result(), VerifyResult::WrongCode);
        assert_eq!(r.attempts_remaining, remaining);
        assert!(r.locked_until.is_none());
    }
    let now = app.now();
    let tenth = app.verify(PHONE, Purpose::Login, &wrong).await.unwrap();
    assert_eq!((tenth.result(), tenth.attempts_remaining), (VerifyResult::WrongCode, 0));
    let until = tenth.locked_until.expect("the 10th failure reports the lock");
    let until = DateTime::<Utc>::from_timestamp(until.seconds, u32::try_from(until.nanos).unwrap()).unwrap();
    assert_eq!(until, now + TimeDelta::hours(24));

    // Even the correct code is not evaluated while locked.
    let err = app.verify(PHONE, Purpose::Login, &code).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "PHONE_LOCKED");
    assert_eq!(retry_delay(&err), std::time::Duration::from_secs(24 * 3600));
    assert!(err.metadata().get("otp-locked-until").is_some());
    {
        use tonic_types::StatusExt;
        let details = err.get_error_details();
        assert!(details.error_info().unwrap().metadata.contains_key("locked_until"));
        let msg = details.localized_message().expect("LocalizedMessage");
        assert_eq!(msg.locale, "ko-KR");
        assert!(msg.message.contains("24시간"));
    }

    // No SMS while locked.
    app.advance(TimeDelta::minutes(1));
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::ResourceExhausted, "PHONE_LOCKED"));
    assert_eq!(app.sms().len(), 1, "no SMS is written while locked");

    // 24 hours later: send and verify work, and the count starts again from 0.
    app.advance(TimeDelta::hours(24));
    let code = app.send_and_read(PHONE, Purpose::Login).await;
    let r = app.verify(PHONE, Purpose::Login, &wrong_code(&code)).await.unwrap();
    assert_eq!((r.result(), r.attempts_remaining), (VerifyResult::WrongCode, 9));
    assert_eq!(app.verify(PHONE, Purpose::Login, &code).await.unwrap().result(), VerifyResult::Approved);
    assert_eq!(app.db.phone_state(PHONE_E164).await, (0, false));
}

async fn lock_spans_purposes_and_verifications(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.send_and_read(PHONE, Purpose::Login).await;
    app.advance(TimeDelta::seconds(31));
    let signup = app.send_and_read(PHONE, Purpose::Signup).await;
    let bad = ["000000", "111111", "222222"].into_iter().find(|c| *c != login && *c != signup).unwrap();
    for i in 0..10 {
        let purpose = if i % 2 == 0 { Purpose::Login } else { Purpose::Signup };
        let r = app.verify(PHONE, purpose, bad).await.unwrap();
        assert_eq!(r.attempts_remaining, 9 - i);
    }
    for (purpose, code) in [(Purpose::Login, &login), (Purpose::Signup, &signup)] {
        let err = app.verify(PHONE, purpose, code).await.unwrap_err();
        assert_eq!(reason(&err), "PHONE_LOCKED");
    }
    // Another number is not affected.
    app.send("010-2222-3333", Purpose::Login).await.unwrap();
}
