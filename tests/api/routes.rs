//! Delivery routes (issue 22, sections 3 to 6): `--delivery` as an ordered list of channels on providers
//! (`alimtalk@nhn,sms@nhn,sms@sens`), failover of one code across providers, a breaker per route, the route
//! choice learning from each number's receipts, the status view's checklist, `otp.v1.Delivery` health and
//! `otpctl doctor`. The providers are the stand-ins of `standins.rs` (real HTTP on loopback).

use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult};
use tonic::Code;

use crate::helpers::*;
use crate::receipts::{NHN_SIGNATURE, nhn_hook_at, post};
use crate::standins::*;

const FAST_RETRIES: [&str; 4] = ["--sms-http-backoff", "10ms", "--sms-http-max-backoff", "50ms"];
const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// NHN SMS and SENS credentials, NHN as the `--sms-gateway`, SENS at its stand-in, and `--delivery routes`.
fn nhn_and_sens(nhn: &StandIn, sens: &StandIn, routes: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--delivery",
        routes,
        "--sms-gateway",
        &format!("nhn-sms:{}", nhn.base()),
        "--nhn-sms-app-key",
        APP_KEY,
        "--nhn-sms-secret-key",
        SECRET_KEY,
        "--sens-url",
        &sens.base(),
        "--sens-service-id",
        SERVICE_ID,
        "--sens-access-key",
        ACCESS_KEY,
        "--sens-secret-key",
        SECRET_KEY,
        "--webhook-listen",
        "127.0.0.1:0",
        "--nhn-webhook-signature",
        NHN_SIGNATURE,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(FAST_RETRIES.map(str::to_owned));
    args
}

/// NHN SMS first, then AlimTalk on NHN (the order a deployment that prefers SMS would choose), receipts on.
fn sms_then_alimtalk(nhn: &StandIn) -> Vec<String> {
    let mut args = crate::korea::alimtalk_then_sms(nhn);
    args[1] = "sms@nhn,alimtalk@nhn".into();
    args.extend(["--webhook-listen", "127.0.0.1:0", "--nhn-webhook-signature", NHN_SIGNATURE].map(str::to_owned));
    args
}

async fn spawn(backend: Backend, args: &[String]) -> TestApp {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_app_with(backend, &args).await
}

async fn status_of(app: &TestApp, phone: &str) -> pb::GetPhoneStatusResponse {
    static LEADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = LEADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let kim = app.add_supervisor(&format!("lead.{n}"), "supervisor").await;
    let req = pb::GetPhoneStatusRequest { phone_number: phone.into(), ticket_id: "CS-1".into(), ..Default::default() };
    app.sup.clone().get_phone_status(authed(req, &kim)).await.unwrap().into_inner()
}

fn routes_of(send: &pb::CodeSend) -> Vec<(String, String)> {
    send.attempts.iter().map(|a| (a.route.clone(), a.outcome.clone())).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

crate::both_backends!(
    nhn_refuses_and_sens_delivers_the_same_code,
    a_3012_receipt_makes_the_next_send_start_with_alimtalk
);

/// NHN refuses the SMS: the same code goes to SENS within the call, and the status view shows both attempts with
/// their routes.
async fn nhn_refuses_and_sens_delivers_the_same_code(backend: Backend) {
    let (nhn, sens) = (StandIn::nhn().await, StandIn::sens().await);
    nhn.fail_next(&[Fault::Refuse]);
    let app = spawn(backend, &nhn_and_sens(&nhn, &sens, "sms@nhn,sms@sens")).await;
    app.send(PHONE, Purpose::Login).await.unwrap();

    let (to_nhn, to_sens) = (nhn.seen(), sens.seen());
    assert_eq!((to_nhn.len(), to_sens.len()), (1, 1));
    let code = code_in(to_sens[0].body["content"].as_str().unwrap());
    assert_eq!(code_in(to_nhn[0].body["body"].as_str().unwrap()), code, "one code, whichever provider carries it");
    let status = status_of(&app, PHONE).await;
    let send = &status.pending[0].sends[0];
    assert_eq!(routes_of(send), pairs(&[("sms@nhn", "refused"), ("sms@sens", "accepted")]));
    assert_eq!(send.attempts[1].gateway, "sens");
    let r = app.verify(PHONE, Purpose::Login, &code).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved);
}

/// Every route refuses: the send fails SMS_DELIVERY_FAILED, its code is revoked, and both attempts are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_failing_fails_the_send() {
    let (nhn, sens) = (StandIn::nhn().await, StandIn::sens().await);
    nhn.fail_next(&[Fault::Refuse]);
    sens.fail_next(&[Fault::Refuse]);
    let app = spawn(Backend::Sqlite, &nhn_and_sens(&nhn, &sens, "sms@nhn,sms@sens")).await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    let code = code_in(sens.seen()[0].body["content"].as_str().unwrap());
    let status = status_of(&app, PHONE).await;
    let send = &status.pending[0].sends[0];
    assert!(!send.live);
    assert_eq!(routes_of(send), pairs(&[("sms@nhn", "refused"), ("sms@sens", "refused")]));
    let check = app.verify(PHONE, Purpose::Login, &code).await;
    assert!(!check.is_ok_and(|r| r.result() == VerifyResult::Approved), "a failed send's code never approves");
}

/// Each route has its own breaker: NHN down opens NHN's and sends go straight to SENS; with SENS down too, every
/// breaker is open, `otp.v1.Delivery` turns NOT_SERVING while `otp.v1.OtpService` stays SERVING, and `otpctl
/// doctor` names both routes' open breakers and their last errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_are_per_route_and_delivery_health_follows_them() {
    let (nhn, sens) = (StandIn::nhn().await, StandIn::sens().await);
    let mut args = nhn_and_sens(&nhn, &sens, "sms@nhn,sms@sens");
    args.extend(["--sms-breaker-threshold", "1", "--sms-http-max-attempts", "1"].map(str::to_owned));
    let app = spawn(Backend::Sqlite, &args).await;
    assert_eq!(app.health(app.public_addr, "otp.v1.Delivery").await, SERVING);

    nhn.fail_next(&[Fault::Unavailable]);
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!((nhn.seen().len(), sens.seen().len()), (1, 1), "NHN failed, SENS carried it");
    app.send("010-2222-3333", Purpose::Login).await.unwrap();
    assert_eq!((nhn.seen().len(), sens.seen().len()), (1, 2), "NHN's breaker is open: straight to SENS");
    let status = status_of(&app, "010-2222-3333").await;
    assert_eq!(routes_of(&status.pending[0].sends[0]), pairs(&[("sms@sens", "accepted")]));
    assert_eq!(app.health(app.public_addr, "otp.v1.Delivery").await, SERVING, "SENS still takes codes");

    sens.fail_next(&[Fault::Unavailable]);
    let err = app.send("010-3333-4444", Purpose::Login).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let mut delivery = SERVING;
    for _ in 0..50 {
        delivery = app.health(app.public_addr, "otp.v1.Delivery").await;
        if delivery == NOT_SERVING {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(delivery, NOT_SERVING, "every route's breaker is open");
    assert_eq!(app.health(app.public_addr, "otp.v1.OtpService").await, SERVING, "checks still work");
    assert_eq!(app.health(app.admin_addr, "otp.v1.Delivery").await, NOT_SERVING);

    let admin = app.add_supervisor("park.admin", "admin").await;
    let doctor = app.sup.clone().diagnose(authed(pb::DiagnoseRequest {}, &admin)).await.unwrap().into_inner();
    let routes: Vec<(&str, &str)> = doctor.routes.iter().map(|r| (r.route.as_str(), r.breaker.as_str())).collect();
    assert_eq!(routes, [("sms@nhn", "open"), ("sms@sens", "open")]);
    assert!(doctor.routes.iter().all(|r| !r.last_error.is_empty() && r.last_error_at.is_some()), "{doctor:?}");
    assert!(!doctor.delivery_serving && doctor.database_round_trip_ms >= 0);
    assert!(doctor.findings_en.iter().any(|f| f.contains("every route's breaker is open")), "{doctor:?}");
    let sens_accepted = doctor.outcomes.iter().find(|o| o.route == "sms@sens" && o.outcome == "accepted").unwrap();
    assert_eq!((sens_accepted.last_5m, sens_accepted.last_15m), (2, 2));
    let out = otpctl_ok(&app, &admin, &["doctor"]).await;
    println!("$ otpctl doctor\n{out}");
    assert!(out.contains("otp.v1.Delivery   NOT_SERVING") && out.contains("sms@sens"), "{out}");

    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    let refused = app.sup.clone().diagnose(authed(pb::DiagnoseRequest {}, &kim)).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "ROLE_NOT_ALLOWED"));
}

/// The carrier blocked the number's SMS as spam (NHN 3012): its next code starts with AlimTalk, the route that
/// did not fail for it, and the send counts toward the caps exactly as any other.
async fn a_3012_receipt_makes_the_next_send_start_with_alimtalk(backend: Backend) {
    let nhn = StandIn::nhn().await;
    let app = spawn(backend, &sms_then_alimtalk(&nhn)).await;
    let first = app.send(PHONE, Purpose::Login).await.unwrap();
    assert!(nhn.seen()[0].path.contains("/sender/auth/sms"), "SMS first, as configured");
    let id = status_of(&app, PHONE).await.pending[0].sends[0].attempts[0].provider_id.clone();
    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook_at(&id, "FAILED", "3012", app.now())).await, 200);

    // A resend before the cooldown is still refused: the route choice changes nothing about it.
    let early = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&early), "RESEND_COOLDOWN");
    app.advance(chrono::TimeDelta::seconds(31));
    let second = app.send(PHONE, Purpose::Login).await.unwrap();
    let seen = nhn.seen();
    assert_eq!(seen.len(), 2, "one message per send: {seen:?}");
    assert!(seen[1].path.contains("/alimtalk/"), "the next code went AlimTalk first: {}", seen[1].path);
    assert_eq!(second.sends_remaining, first.sends_remaining - 1, "counted as any send");
    let status = status_of(&app, PHONE).await;
    assert_eq!(routes_of(&status.pending[0].sends[1]), pairs(&[("alimtalk@nhn", "accepted")]));
    assert_eq!(status.sms_last_hour, 2);

    // Another number is not affected: SMS first.
    app.send("010-2222-3333", Purpose::Login).await.unwrap();
    assert!(nhn.seen()[2].path.contains("/sender/auth/sms"));
}

/// A route that accepted a code and reported nothing within `--receipt-wait` lets the number's next send start
/// with the other route; a delivered receipt keeps a route first; the caps count every send as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_no_receipt_in_time_is_skipped_next_time() {
    let (nhn, sens) = (StandIn::nhn().await, StandIn::sens().await);
    let app = spawn(Backend::Sqlite, &nhn_and_sens(&nhn, &sens, "sms@nhn,sms@sens")).await;
    let first = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!((nhn.seen().len(), sens.seen().len()), (1, 0));

    app.advance(chrono::TimeDelta::seconds(31));
    let second = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!((nhn.seen().len(), sens.seen().len()), (1, 1), "NHN said nothing for 30 s: SENS first");
    assert_eq!(second.sends_remaining, first.sends_remaining - 1);

    app.advance(chrono::TimeDelta::seconds(31));
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!((nhn.seen().len(), sens.seen().len()), (2, 1), "now SENS was silent: NHN first again");
    let status = status_of(&app, PHONE).await;
    let id = status.pending[0].sends[2].attempts[0].provider_id.clone();
    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook_at(&id, "COMPLETED", "1000", app.now())).await, 200);

    app.advance(chrono::TimeDelta::seconds(31));
    let fourth = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!((nhn.seen().len(), sens.seen().len()), (3, 1), "NHN delivered: it stays first");
    assert_eq!(fourth.sends_remaining, first.sends_remaining - 3);
    let status = status_of(&app, PHONE).await;
    let routes: Vec<String> = status.pending[0].sends.iter().map(|s| s.attempts[0].route.clone()).collect();
    assert_eq!(routes, ["sms@nhn", "sms@sens", "sms@nhn", "sms@nhn"]);
}

fn check<'a>(status: &'a pb::GetPhoneStatusResponse, name: &str) -> &'a pb::StatusCheck {
    status.checklist.iter().find(|c| c.check == name).unwrap_or_else(|| panic!("no {name}: {:?}", status.checklist))
}

fn line(c: &pb::StatusCheck) -> String {
    format!("{}: {}", c.finding_ko, c.next_step_ko)
}

/// The checklist when the carrier blocked the SMS as spam (3012): unblock the sender, in the team lead's words,
/// in GetPhoneStatus and in `otpctl status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checklist_says_to_unblock_the_sender_after_a_spam_block() {
    let nhn = StandIn::nhn().await;
    let mut args = sms_then_alimtalk(&nhn);
    args[1] = "sms@nhn".into();
    let app = spawn(Backend::Sqlite, &args).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status_of(&app, PHONE).await.pending[0].sends[0].attempts[0].provider_id.clone();
    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook_at(&id, "FAILED", "3012", app.now())).await, 200);

    let status = status_of(&app, PHONE).await;
    let kinds: Vec<&str> = status.checklist.iter().map(|c| c.check.as_str()).collect();
    assert_eq!(kinds, ["number", "mobile_data", "spam_filter", "carrier_block"], "the manual's four checks, in order");
    let carrier = check(&status, "carrier_block");
    assert_eq!(carrier.state, "act");
    assert_eq!(line(carrier), "통신사 스팸 차단으로 실패 (3012): 1800-3400 수신 차단 해제를 안내하세요");
    assert_eq!(carrier.finding_en, "blocked as spam by the carrier (3012)");
    assert_eq!(check(&status, "number").state, "ok");

    let kim = app.add_supervisor("lee.lead", "supervisor").await;
    let out = otpctl_ok(&app, &kim, &["status", "--phone", PHONE, "--ticket", "CS-1"]).await;
    println!("$ otpctl status --phone {PHONE} --ticket CS-1\n{out}");
    assert!(out.contains("▶ 통신사 스팸 차단으로 실패 (3012): 1800-3400 수신 차단 해제를 안내하세요"), "{out}");
    assert!(out.contains("[sms@nhn]"), "each attempt names its route: {out}");
}

/// The checklist when an AlimTalk was delivered: check KakaoTalk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checklist_says_to_check_kakaotalk_after_an_alimtalk() {
    let nhn = StandIn::nhn().await;
    let app = spawn(Backend::Sqlite, &crate::korea::alimtalk_then_sms(&nhn)).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let status = status_of(&app, PHONE).await;
    let attempt = &status.pending[0].sends[0].attempts[0];
    assert_eq!(attempt.route, "alimtalk@nhn");
    assert_eq!(
        check(&status, "mobile_data").finding_ko,
        "알림톡으로 발송됨 (결과 미수신)",
        "accepted is not delivered"
    );
    // KakaoTalk's own result (its receipt webhook is another change's): recorded as the receipts module does.
    let receipt = otpd::domain::Receipt { delivered: true, at: app.now(), code: None };
    let recorded = app.stores.verification.record_receipt("nhn-alimtalk", &attempt.provider_id, &receipt).await;
    assert_eq!(recorded.unwrap(), otpd::domain::ReceiptOutcome::Recorded);

    let status = status_of(&app, PHONE).await;
    let data = check(&status, "mobile_data");
    assert_eq!(data.state, "act");
    assert!(line(data).starts_with("알림톡으로 전달됨: 카카오톡을 확인하도록 안내하세요"), "{}", line(data));
    assert_eq!(check(&status, "carrier_block").state, "ok");
}

/// The checklist without a recent send: press send in the app; and for a locked number, the lock first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checklist_says_to_press_send_or_that_the_number_is_locked() {
    let app = spawn_app(Backend::Sqlite).await;
    let status = status_of(&app, PHONE).await;
    assert_eq!(status.checklist.len(), 1, "{:?}", status.checklist);
    let number = check(&status, "number");
    assert_eq!(number.state, "act");
    assert_eq!(line(number), "최근 10분간 발송 없음: 앱에서 번호를 확인하고 인증번호 전송을 누르도록 안내하세요");

    app.send_and_read(PHONE, Purpose::Login).await;
    assert_eq!(check(&status_of(&app, PHONE).await, "number").state, "ok");
    app.advance(chrono::TimeDelta::minutes(11));
    assert_eq!(line(check(&status_of(&app, PHONE).await, "number")).split(':').next(), Some("최근 10분간 발송 없음"));

    let code = app.send_and_read(PHONE, Purpose::Login).await;
    let wrong = wrong_code(&code);
    for _ in 0..10 {
        let _ = app.verify(PHONE, Purpose::Login, &wrong).await;
    }
    let status = status_of(&app, PHONE).await;
    assert!(status.locked_until.is_some());
    let locked = &status.checklist[0];
    assert_eq!((locked.check.as_str(), locked.state.as_str()), ("locked", "act"));
    assert!(locked.finding_ko.starts_with("오류 횟수 초과로 잠김"), "{locked:?}");
}
