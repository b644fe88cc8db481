//! The happy paths and the rules around them: resends, purposes, expiry, SIM check, cooldown and caps.

use chrono::{DateTime, TimeDelta, Utc};
use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult};
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    send_then_verify_approves_once,
    resend_keeps_count_and_every_live_code_approves,
    code_only_approves_its_purpose,
    expired_code_is_reported_and_not_counted,
    sim_mismatch_sends_nothing,
    cooldown_and_caps_send_nothing,
    app_hash_is_the_last_line_of_the_sms,
    an_app_hash_not_on_the_allow_list_is_refused,
    only_the_three_newest_sms_codes_stay_live,
    a_wrong_guess_costs_one_argon2_derivation_however_many_codes_are_live,
);

fn ts(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap()).unwrap()
}

async fn send_then_verify_approves_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = app.now();
    let sent = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(sent.sender, "1800-3400");
    assert_eq!(sent.masked_phone_number, "+82 10-****-5678");
    assert_eq!(sent.sends_remaining, 4);
    assert_eq!(ts(sent.expires_at.as_ref().unwrap()), now + TimeDelta::minutes(3));
    assert_eq!(ts(sent.resend_available_at.as_ref().unwrap()), now + TimeDelta::seconds(30));

    let sms = app.sms();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].from, "1800-3400");
    assert_eq!(sms[0].to, PHONE_E164);
    assert_eq!(sms[0].verification_id, sent.verification_id);
    assert!(sms[0].body.contains("타인에게 절대 알려주지 마세요"));
    let code = code_in(&sms[0].body);

    // The same number written another way is the same number.
    let ok = app.verify(PHONE_INTL, Purpose::Login, &code).await.unwrap();
    assert_eq!(ok.result(), VerifyResult::Approved);
    assert_eq!(ok.verification_id, sent.verification_id);

    // Approval consumes the verification: exactly once.
    let again = app.verify(PHONE, Purpose::Login, &code).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "ALREADY_VERIFIED");
    // Long after, there is simply nothing pending.
    app.advance(TimeDelta::hours(1));
    let later = app.verify(PHONE, Purpose::Login, &code).await.unwrap_err();
    assert_eq!(later.code(), Code::NotFound);
    assert_eq!(reason(&later), "NO_PENDING_VERIFICATION");
}

async fn resend_keeps_count_and_every_live_code_approves(backend: Backend) {
    let app = spawn_app(backend).await;
    let first_sent = app.send(PHONE, Purpose::Login).await.unwrap();
    let first = app.last_code();
    let wrong = app.verify(PHONE, Purpose::Login, &wrong_code(&first)).await.unwrap();
    assert_eq!((wrong.result(), wrong.attempts_remaining), (VerifyResult::WrongCode, 9));

    app.advance(TimeDelta::seconds(31));
    let resent = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(resent.verification_id, first_sent.verification_id, "a resend extends the pending verification");
    assert_eq!(resent.sends_remaining, 3);
    let second = app.last_code();
    let wrong = ["000000", "111111", "222222"].into_iter().find(|c| *c != first && *c != second).unwrap();
    let wrong = app.verify(PHONE, Purpose::Login, wrong).await.unwrap();
    assert_eq!((wrong.result(), wrong.attempts_remaining), (VerifyResult::WrongCode, 8), "a resend keeps the count");

    // The late-arriving first SMS still works.
    let ok = app.verify(PHONE, Purpose::Login, &first).await.unwrap();
    assert_eq!(ok.result(), VerifyResult::Approved);
    assert_eq!(app.db.phone_state(PHONE_E164).await, (0, false), "success resets the count");

    // And so does the resent code of a new verification.
    app.advance(TimeDelta::seconds(31));
    app.send(PHONE, Purpose::Login).await.unwrap();
    app.advance(TimeDelta::seconds(31));
    app.send(PHONE, Purpose::Login).await.unwrap();
    let ok = app.verify(PHONE, Purpose::Login, &app.last_code()).await.unwrap();
    assert_eq!(ok.result(), VerifyResult::Approved);
    assert_ne!(ok.verification_id, first_sent.verification_id);
}

/// Every wrong guess is compared with every live code, so the guess budget per lockout period is 10 × the live
/// codes: five resends must not make it 50. The three newest SMS codes stay live (a late first SMS after two
/// resends still works); older ones are revoked.
async fn only_the_three_newest_sms_codes_stay_live(backend: Backend) {
    for newest in 2..5 {
        let app = spawn_app(backend).await;
        let mut codes = Vec::new();
        for i in 0..5 {
            if i > 0 {
                app.advance(TimeDelta::seconds(30));
            }
            codes.push(app.send_and_read(PHONE, Purpose::Login).await);
        }
        let computations = app.hasher.computations();
        for old in &codes[..2] {
            let r = app.verify(PHONE, Purpose::Login, old).await.unwrap();
            assert_eq!(r.result(), VerifyResult::WrongCode, "codes 1 and 2 no longer approve");
        }
        assert_eq!(app.hasher.computations() - computations, 2, "one derivation per guess, for all live codes");

        let admin = app.add_supervisor("park", "admin").await;
        let req =
            pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), ..Default::default() };
        let status = app.sup.clone().get_phone_status(authed(req, &admin)).await.unwrap().into_inner();
        let live: Vec<bool> = status.pending[0].sends.iter().map(|s| s.live).collect();
        assert_eq!(live, [false, false, true, true, true]);

        let r = app.verify(PHONE, Purpose::Login, &codes[newest]).await.unwrap();
        assert_eq!(r.result(), VerifyResult::Approved, "code {} of 5 approves", newest + 1);
    }
}

/// The codes of one verification share its salt, so a guess is derived once and compared with each: three SMS
/// codes and a looked-up one cost one argon2 computation per guess, not four.
async fn a_wrong_guess_costs_one_argon2_derivation_however_many_codes_are_live(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let mut codes = Vec::new();
    for i in 0..3 {
        if i > 0 {
            app.advance(TimeDelta::seconds(30));
        }
        codes.push(app.send_and_read(PHONE, Purpose::Login).await);
    }
    let looked_up = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
    codes.push(looked_up.into_inner().code);

    let salts: std::collections::HashSet<String> = app
        .db
        .dump()
        .await
        .iter()
        .filter_map(|row| regex::Regex::new(r"\$argon2id\$v=19\$[^$]+\$([^$]+)\$").unwrap().captures(row))
        .map(|c| c[1].to_owned())
        .collect();
    assert_eq!(salts.len(), 1, "four codes, one salt: {salts:?}");

    let wrong = ["000000", "111111", "222222", "333333", "444444"].into_iter().find(|c| !codes.iter().any(|k| k == c));
    let before = app.hasher.computations();
    let r = app.verify(PHONE, Purpose::Login, wrong.unwrap()).await.unwrap();
    assert_eq!(r.result(), VerifyResult::WrongCode);
    assert_eq!(app.hasher.computations() - before, 1, "one derivation for four live codes");
    let r = app.verify(PHONE, Purpose::Login, &codes[0]).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved, "the oldest of them still approves");
    assert_eq!(app.hasher.computations() - before, 2);
}

async fn code_only_approves_its_purpose(backend: Backend) {
    let app = spawn_app(backend).await;
    let missing = app.verify(PHONE, Purpose::Signup, "123456").await.unwrap_err();
    assert_eq!((missing.code(), reason(&missing).as_str()), (Code::NotFound, "NO_PENDING_VERIFICATION"));

    let login = app.send_and_read(PHONE, Purpose::Login).await;
    app.advance(TimeDelta::seconds(31));
    let signup = app.send_and_read(PHONE, Purpose::Signup).await;
    if login != signup {
        let r = app.verify(PHONE, Purpose::Signup, &login).await.unwrap();
        assert_eq!(r.result(), VerifyResult::WrongCode, "a LOGIN code must not approve SIGNUP");
    }
    assert_eq!(app.verify(PHONE, Purpose::Login, &login).await.unwrap().result(), VerifyResult::Approved);
    assert_eq!(app.verify(PHONE, Purpose::Signup, &signup).await.unwrap().result(), VerifyResult::Approved);
}

async fn expired_code_is_reported_and_not_counted(backend: Backend) {
    let app = spawn_app(backend).await;
    let sent = app.send(PHONE, Purpose::Reauth).await.unwrap();
    let code = app.last_code();
    app.advance(TimeDelta::minutes(3) + TimeDelta::seconds(1));
    let r = app.verify(PHONE, Purpose::Reauth, &code).await.unwrap();
    assert_eq!((r.result(), r.attempts_remaining), (VerifyResult::Expired, 10));
    assert_eq!(r.verification_id, sent.verification_id);
    assert_eq!(app.db.phone_state(PHONE_E164).await, (0, false), "an expired code is not a failure");

    // A new send starts a new verification; the old code is dead, the new one works.
    let fresh = app.send(PHONE, Purpose::Reauth).await.unwrap();
    assert_ne!(fresh.verification_id, sent.verification_id);
    let new_code = app.last_code();
    if new_code != code {
        let r = app.verify(PHONE, Purpose::Reauth, &code).await.unwrap();
        assert_eq!(r.result(), VerifyResult::WrongCode);
    }
    assert_eq!(app.verify(PHONE, Purpose::Reauth, &new_code).await.unwrap().result(), VerifyResult::Approved);
}

async fn sim_mismatch_sends_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut req = send_req(PHONE, Purpose::ChangePhone);
    req.sim_phone_number = "010-9999-8888".into();
    let err = app.otp.clone().send_code(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SIM_MISMATCH");
    {
        use tonic_types::StatusExt;
        let details = err.get_error_details();
        let msg = details.localized_message().expect("LocalizedMessage");
        assert_eq!(msg.locale, "ko-KR");
        assert!(msg.message.contains("유심의 전화번호가 기존에 인증된 전화번호와 다릅니다"), "{}", msg.message);
    }
    assert!(app.sms().is_empty(), "nothing is sent on a SIM mismatch");

    let mut req = send_req(PHONE, Purpose::ChangePhone);
    req.sim_phone_number = PHONE_INTL.into();
    app.otp.clone().send_code(req).await.unwrap();
    assert_eq!(app.sms().len(), 1);
}

async fn cooldown_and_caps_send_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RESEND_COOLDOWN");
    assert_eq!(retry_delay(&err), std::time::Duration::from_secs(30));
    // The cooldown is per number, across purposes.
    let err = app.send(PHONE, Purpose::Signup).await.unwrap_err();
    assert_eq!(reason(&err), "RESEND_COOLDOWN");
    assert_eq!(app.sms().len(), 1);

    for _ in 1..5 {
        app.advance(TimeDelta::seconds(31));
        app.send(PHONE, Purpose::Login).await.unwrap();
    }
    app.advance(TimeDelta::seconds(31));
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "SEND_LIMIT");
    // The first of the five sends leaves the hour window 60 min after it was sent: 4 × 31 s + 31 s ago.
    assert_eq!(retry_delay(&err), std::time::Duration::from_secs(3600 - 5 * 31));
    assert_eq!(app.sms().len(), 5, "nothing is sent over the cap");

    // An hour later the hourly cap has room; the daily one (10) stops the 11th send of the day.
    for _ in 0..5 {
        app.advance(TimeDelta::minutes(61));
        app.send(PHONE, Purpose::Login).await.unwrap();
    }
    app.advance(TimeDelta::minutes(61));
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "SEND_LIMIT");
    assert_eq!(app.sms().len(), 10);
    app.advance(TimeDelta::hours(24));
    app.send(PHONE, Purpose::Login).await.unwrap();
}

async fn app_hash_is_the_last_line_of_the_sms(backend: Backend) {
    let app = spawn_app_with(backend, &["--app-hashes", "FA+9qCX9VSu,Zm9vYmFyYmF"]).await;
    let mut req = send_req(PHONE, Purpose::Login);
    req.app_hash = "FA+9qCX9VSu".into();
    app.otp.clone().send_code(req).await.unwrap();
    let body = &app.sms()[0].body;
    assert_eq!(body.lines().last(), Some("FA+9qCX9VSu"));
    code_in(body);
}

/// A zero-permission app on the victim's phone asks for a code with its own SMS Retriever hash, so that Play
/// Services would hand it the SMS: refused, and nothing is sent or counted.
async fn an_app_hash_not_on_the_allow_list_is_refused(backend: Backend) {
    use tonic_types::StatusExt;
    for allowed in [None, Some("FA+9qCX9VSu")] {
        let app = match allowed {
            Some(hash) => spawn_app_with(backend, &["--app-hashes", hash]).await,
            None => spawn_app(backend).await,
        };
        let mut req = send_req(PHONE, Purpose::Login);
        req.app_hash = "EviLApp0000".into();
        let err = app.otp.clone().send_code(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert_eq!(reason(&err), "INVALID_APP_HASH");
        let details = err.get_error_details();
        let fields: Vec<_> = details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, ["app_hash"]);
        assert!(app.sms().is_empty(), "nothing sent");
        assert_eq!(app.send(PHONE, Purpose::Login).await.unwrap().sends_remaining, 4, "nothing counted");
    }
}
