//! Delivery receipts (`--webhook-listen`): NHN Cloud's `MESSAGE_RESULT_UPDATE` webhook and the generic signed
//! form mark a send delivered or failed with the carrier's reason; forged, unknown and malformed receipts are
//! refused and change nothing; `otpctl status` shows the reason.

use chrono::Utc;
use hmac::{Hmac, Mac};
use otpd::pb::otp::v1::{self as pb, Purpose};
use serde_json::json;
use sha2::Sha256;

use crate::helpers::*;
use crate::provider::{FakeProvider, Reply};
use crate::standins::*;

pub const NHN_SIGNATURE: &str = "webhook-signature-entered-in-the-console";
const HMAC_KEY: &str = "receipt-hmac-key-0123456789";

pub async fn status(app: &TestApp, token: &str) -> pb::CodeSend {
    let req = pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), ..Default::default() };
    let status = app.sup.clone().get_phone_status(authed(req, token)).await.unwrap().into_inner();
    status.pending[0].sends.last().unwrap().clone()
}

/// An NHN webhook body for one message, as NHN sends it (times in Korean time, no offset).
pub fn nhn_hook(request_id: &str, status: &str, result_code: &str) -> String {
    nhn_hook_at(request_id, status, result_code, Utc::now())
}

/// [`nhn_hook`] for a message received at `at`.
pub fn nhn_hook_at(request_id: &str, status: &str, result_code: &str, at: chrono::DateTime<Utc>) -> String {
    let kst = (at + chrono::TimeDelta::hours(9)).format("%Y-%m-%dT%H:%M:%S").to_string();
    json!({
        "hooksId": "hooks-1", "webhookConfigId": "config-1", "productName": "SMS", "appKey": APP_KEY,
        "event": "MESSAGE_RESULT_UPDATE",
        "hooks": [{
            "hookId": "hook-1", "senderType": "AUTH", "requestId": request_id, "recipientSeq": 1,
            "requestDate": kst, "receiveDate": kst, "sendNo": "18003400", "recipientNo": "01012345678",
            "messageStatus": status, "resultCode": result_code, "messageCount": 1
        }]
    })
    .to_string()
}

pub async fn post(app: &TestApp, path: &str, headers: &[(&str, String)], body: String) -> u16 {
    let url = format!("http://{}{path}", app.webhook_addr.expect("receipts are on"));
    let mut request = reqwest::Client::new().post(url).header("content-type", "application/json").body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

pub fn nhn_args(nhn: &StandIn) -> Vec<String> {
    let mut args = crate::korea::alimtalk_then_sms(nhn);
    args.extend(["--webhook-listen", "127.0.0.1:0", "--nhn-webhook-signature", NHN_SIGNATURE].map(str::to_owned));
    args
}

/// The driver's AlimTalk was refused and otpd sent an SMS, which the carrier then blocked as spam: the team lead
/// sees why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_sms_shows_its_reason_after_an_alimtalk_fallback() {
    let nhn = StandIn::nhn().await;
    nhn.fail_next(&[Fault::Refuse]);
    let args = nhn_args(&nhn);
    let app = spawn_app_with(Backend::Sqlite, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let sms_id = status(&app, &kim).await.attempts[1].provider_id.clone();
    assert_eq!(sms_id, "20261129-nhn-0002");

    let before = otpctl_ok(&app, &kim, &["status", "--phone", PHONE, "--ticket", "CS-1"]).await;
    assert!(before.contains("결과 미수신 / not reported"), "{before}");

    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook(&sms_id, "FAILED", "3012")).await, 200);

    let send = status(&app, &kim).await;
    let sms = &send.attempts[1];
    assert_eq!((sms.receipt.as_str(), sms.receipt_code.as_str()), ("failed", "3012"));
    assert_eq!(
        (sms.reason_ko.as_str(), sms.reason_en.as_str()),
        ("수신 거부/스팸 차단", "refused by the recipient or blocked as spam")
    );
    assert!(sms.receipt_at.is_some());
    let out = otpctl_ok(&app, &kim, &["status", "--phone", PHONE, "--ticket", "CS-1"]).await;
    println!("$ otpctl status --phone {PHONE} --ticket CS-1\n{out}");
    assert!(out.contains("수신 거부/스팸 차단") && out.contains("3012"), "{out}");
    assert!(out.contains("알림톡 / AlimTalk (nhn-alimtalk): 거절 / refused"), "{out}");
}

/// Forged, unknown and malformed NHN receipts are refused with a 4xx and change nothing; a good one after them
/// marks the send delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_nhn_receipts_change_nothing() {
    let nhn = StandIn::nhn().await;
    let mut args = nhn_args(&nhn);
    args.splice(0..2, []); // SMS only
    let app = spawn_app_with(Backend::Sqlite, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status(&app, &kim).await.attempts[0].provider_id.clone();
    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    let forged = [("x-toast-webhook-signature", "guess".to_owned())];

    assert_eq!(post(&app, "/receipts/nhn", &forged, nhn_hook(&id, "FAILED", "3012")).await, 401);
    assert_eq!(post(&app, "/receipts/nhn", &[], nhn_hook(&id, "FAILED", "3012")).await, 401);
    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook("no-such-request", "FAILED", "3012")).await, 404);
    assert_eq!(post(&app, "/receipts/nhn", &signed, "{\"event\": \"MESSAGE_RESULT_UPDATE\"".into()).await, 400);
    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook(&id, "SOMETHING", "1000")).await, 400);
    assert_eq!(post(&app, "/receipts/http", &[], "{}".into()).await, 404, "generic receipts are not enabled");
    assert_eq!(status(&app, &kim).await.attempts[0].receipt, "", "nothing changed");

    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook(&id, "COMPLETED", "1000")).await, 200);
    let attempt = &status(&app, &kim).await.attempts[0];
    assert_eq!((attempt.receipt.as_str(), attempt.reason_ko.as_str()), ("delivered", ""));
}

/// An otpd on SQLite sending through `provider` and taking generic receipts signed with [`HMAC_KEY`].
async fn with_generic_receipts(provider: &FakeProvider, extra: &[&str]) -> TestApp {
    let gateway = provider.gateway();
    let mut args = vec!["--sms-gateway", &gateway, "--webhook-listen", "127.0.0.1:0", "--receipt-hmac-key", HMAC_KEY];
    args.extend_from_slice(extra);
    spawn_app_with(Backend::Sqlite, &args).await
}

fn sign(timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The generic signed receipt for the `http:` protocol: delivered, then another send failed with a reason;
/// forged, stale, unknown and malformed ones change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_receipts_are_signed_and_checked() {
    let provider = FakeProvider::start(vec![Reply::Accept("msg-1")], Reply::Accept("msg-2")).await;
    let app = with_generic_receipts(&provider, &[]).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let now = Utc::now();
    let ts = now.timestamp().to_string();
    let body = |id: &str, status: &str, reason: &str| {
        json!({ "message_id": id, "status": status, "reason": reason, "at": now.to_rfc3339() }).to_string()
    };
    let signed = |body: &str| vec![("x-otpd-timestamp", ts.clone()), ("x-otpd-signature", sign(&ts, body))];

    let failed = body("msg-1", "failed", "no_such_number");
    let stale_ts = (now.timestamp() - 3600).to_string();
    let stale = vec![("x-otpd-timestamp", stale_ts.clone()), ("x-otpd-signature", sign(&stale_ts, &failed))];
    assert_eq!(post(&app, "/receipts/http", &stale, failed.clone()).await, 401, "replayed an hour later");
    let tampered = body("msg-1", "delivered", "");
    assert_eq!(post(&app, "/receipts/http", &signed(&failed), tampered).await, 401, "body changed after signing");
    let unknown = body("msg-9", "failed", "blocked");
    assert_eq!(post(&app, "/receipts/http", &signed(&unknown), unknown.clone()).await, 404);
    let bad_reason = body("msg-1", "failed", "aliens");
    assert_eq!(post(&app, "/receipts/http", &signed(&bad_reason), bad_reason.clone()).await, 400);
    assert_eq!(post(&app, "/receipts/http", &signed("[]"), "[]".into()).await, 400);
    assert_eq!(status(&app, &kim).await.attempts[0].receipt, "", "nothing changed");

    assert_eq!(post(&app, "/receipts/http", &signed(&failed), failed.clone()).await, 200);
    let attempt = status(&app, &kim).await.attempts[0].clone();
    assert_eq!((attempt.receipt.as_str(), attempt.reason_ko.as_str()), ("failed", "번호 없음"));

    app.advance(chrono::TimeDelta::seconds(30));
    app.send(PHONE, Purpose::Login).await.unwrap();
    let delivered = body("msg-2", "delivered", "");
    assert_eq!(post(&app, "/receipts/http", &signed(&delivered), delivered.clone()).await, 200);
    assert_eq!(status(&app, &kim).await.attempts[0].receipt, "delivered");
}

/// Without --webhook-listen the status says the carrier's result is not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_receipts_the_status_says_not_reported() {
    let provider = FakeProvider::start(vec![], Reply::Accept("msg-1")).await;
    let gateway = provider.gateway();
    let app = spawn_app_with(Backend::Sqlite, &["--sms-gateway", &gateway]).await;
    assert!(app.webhook_addr.is_none());
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let out = otpctl_ok(&app, &kim, &["--json", "status", "--phone", PHONE, "--ticket", "CS-1"]).await;
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["pending"][0]["sends"][0]["attempts"][0]["receipt"], "not reported", "{out}");
}

/// Receipts arrive late, twice and out of order, and a captured one can be replayed: a replay of the very same
/// signed request, an older receipt after a newer one, and one dated in the future all leave the status view as the
/// newest genuine receipt set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_older_and_future_receipts_change_nothing() {
    let provider = FakeProvider::start(vec![], Reply::Accept("msg-1")).await;
    let app = with_generic_receipts(&provider, &[]).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let sent = app.now();
    let receipt = |status: &str, reason: &str, after: chrono::TimeDelta| {
        json!({ "message_id": "msg-1", "status": status, "reason": reason, "at": (sent + after).to_rfc3339() })
            .to_string()
    };
    let signed = |ts: i64, body: &str| {
        let ts = ts.to_string();
        vec![("x-otpd-timestamp", ts.clone()), ("x-otpd-signature", sign(&ts, body))]
    };
    let shown = || async { status(&app, &kim).await.attempts[0].clone() };
    let ts = app.now().timestamp();

    let blocked = receipt("failed", "blocked", chrono::TimeDelta::seconds(5));
    let captured = signed(ts, &blocked);
    assert_eq!(post(&app, "/receipts/http", &captured, blocked.clone()).await, 200);
    let delivered = receipt("delivered", "", chrono::TimeDelta::seconds(9));
    assert_eq!(post(&app, "/receipts/http", &signed(ts + 1, &delivered), delivered).await, 200);
    assert_eq!(shown().await.receipt, "delivered");

    // The captured request, replayed as it was (within the five minutes its timestamp allows).
    assert_eq!(post(&app, "/receipts/http", &captured, blocked).await, 200, "answered, not applied");
    assert_eq!(shown().await.receipt, "delivered", "a replay changed the status");
    // An older receipt, freshly signed, arriving after the newer one.
    let late = receipt("failed", "no_such_number", chrono::TimeDelta::seconds(7));
    assert_eq!(post(&app, "/receipts/http", &signed(ts + 2, &late), late).await, 200);
    assert_eq!(shown().await.receipt, "delivered", "an older receipt overwrote a newer one");
    // Dated in the future: malformed.
    let future = receipt("failed", "blocked", chrono::TimeDelta::minutes(10));
    assert_eq!(post(&app, "/receipts/http", &signed(ts + 3, &future), future).await, 400);
    let shown = shown().await;
    assert_eq!((shown.receipt.as_str(), shown.receipt_code.as_str()), ("delivered", ""));

    // NHN's form: a webhook replayed after a newer one, and one dated in the future, change nothing either.
    let nhn = StandIn::nhn().await;
    let mut args = nhn_args(&nhn);
    args.splice(0..2, []); // SMS only
    let app = spawn_app_with(Backend::Sqlite, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status(&app, &kim).await.attempts[0].provider_id.clone();
    let nhn_signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    let hook = |status: &str, code: &str, after: chrono::TimeDelta| nhn_hook_at(&id, status, code, app.now() + after);
    let blocked = hook("FAILED", "3012", chrono::TimeDelta::seconds(2));
    assert_eq!(post(&app, "/receipts/nhn", &nhn_signed, blocked.clone()).await, 200);
    let completed = hook("COMPLETED", "1000", chrono::TimeDelta::seconds(4));
    assert_eq!(post(&app, "/receipts/nhn", &nhn_signed, completed).await, 200);
    assert_eq!(post(&app, "/receipts/nhn", &nhn_signed, blocked).await, 200, "known, superseded");
    let future = hook("FAILED", "3012", chrono::TimeDelta::minutes(10));
    assert_eq!(post(&app, "/receipts/nhn", &nhn_signed, future).await, 400);
    assert_eq!(status(&app, &kim).await.attempts[0].receipt, "delivered");
}

/// `--webhook-tls-cert`/`--webhook-tls-key`: the receipt listener speaks only TLS (HTTP/1.1), and a signed receipt
/// posted over it is recorded; plaintext to it gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_posted_over_tls_is_recorded() {
    let provider = FakeProvider::start(vec![], Reply::Accept("msg-1")).await;
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let cert = rcgen::CertificateParams::new(names).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (certs.path().join("webhook.crt"), certs.path().join("webhook.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tls = ["--webhook-tls-cert", cert_path.to_str().unwrap(), "--webhook-tls-key", key_path.to_str().unwrap()];
    let app = with_generic_receipts(&provider, &tls).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let now = Utc::now();
    let ts = now.timestamp().to_string();
    let delivered = json!({ "message_id": "msg-1", "status": "delivered", "reason": "", "at": now.to_rfc3339() });
    let delivered = delivered.to_string();
    let webhook = app.webhook_addr.unwrap();

    let plaintext = reqwest::Client::new()
        .post(format!("http://{webhook}/receipts/http"))
        .header("x-otpd-timestamp", &ts)
        .header("x-otpd-signature", sign(&ts, &delivered))
        .body(delivered.clone())
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(plaintext.is_err() || plaintext.unwrap().status() == 400, "plaintext to the TLS listener");
    assert_eq!(status(&app, &kim).await.attempts[0].receipt, "");

    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    // One post only: a receipt seen before is not applied again.
    for host in ["localhost"] {
        let response = tls
            .post(format!("https://{host}:{}/receipts/http", webhook.port()))
            .header("content-type", "application/json")
            .header("x-otpd-timestamp", &ts)
            .header("x-otpd-signature", sign(&ts, &delivered))
            .body(delivered.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "over TLS to {host}");
    }
    assert_eq!(status(&app, &kim).await.attempts[0].receipt, "delivered");
}

/// A KakaoTalk Bizmessage webhook for one AlimTalk, as its guide gives it (TOAST-DOCS/Alimtalk
/// `ko/webhook-api-guide.md`, 메시지 발송 결과 코드 업데이트: the SMS envelope and header, hooks with
/// `kakaoMessageType`, `requestId`, `recipientSeq`, `resultCode` and dates, no `messageStatus`), with the
/// provider's own SMS fallback when given (`resendStatus`, `resendRequestId`: the fields the message query API of
/// `alimtalk-api-guide.md` reports for it).
pub fn alimtalk_hook(
    request_id: &str,
    result_code: &str,
    fallback: Option<(&str, &str)>,
    at: chrono::DateTime<Utc>,
) -> String {
    let kst = (at + chrono::TimeDelta::hours(9)).format("%Y-%m-%d %H:%M:%S").to_string();
    let mut hook = json!({
        "kakaoMessageType": "ALIMTALK_AUTH", "requestId": request_id, "recipientSeq": 1, "requestDate": kst,
        "createDate": kst, "receiveDate": kst, "recipientNo": "01012345678", "resultCode": result_code,
        "senderGroupingKey": null, "recipientGroupingKey": null, "isAddedChannel": null,
        "_links": { "self": { "href": format!("/alimtalk/v2.3/appkeys/{APP_KEY}/messages/{request_id}/1") } },
        "hookId": "hook-at-1"
    });
    if let Some((status, id)) = fallback {
        hook["resendStatus"] = status.into();
        hook["resendRequestId"] = id.into();
    }
    json!({
        "hooksId": "hooks-at-1", "webhookConfigId": "config-1", "productName": "KakaoTalk Bizmessage",
        "appKey": APP_KEY, "event": "MESSAGE_RESULT_UPDATE", "hooks": [hook]
    })
    .to_string()
}

crate::both_backends!(alimtalk_receipts_are_taken_with_the_providers_own_sms_fallback);

/// Issue 22, sections 1 and 2: /receipts/nhn takes KakaoTalk Bizmessage's hooks too. An AlimTalk delivered; one
/// the phone could not take (3019, not a KakaoTalk user) that NHN fell back to SMS for itself (RSC04), whose SMS is
/// recorded as an attempt of its own and then gets its own carrier receipt; one blocked by the recipient (3020).
async fn alimtalk_receipts_are_taken_with_the_providers_own_sms_fallback(backend: Backend) {
    let nhn = StandIn::nhn().await;
    let args = nhn_args(&nhn);
    let app = spawn_app_with(backend, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];

    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status(&app, &kim).await.attempts[0].provider_id.clone();
    assert_eq!(post(&app, "/receipts/nhn", &signed, alimtalk_hook(&id, "1000", None, app.now())).await, 200);
    let attempt = status(&app, &kim).await.attempts[0].clone();
    assert_eq!((attempt.gateway.as_str(), attempt.receipt.as_str()), ("nhn-alimtalk", "delivered"));

    app.advance(chrono::TimeDelta::seconds(31));
    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status(&app, &kim).await.attempts[0].provider_id.clone();
    let no_kakao = alimtalk_hook(&id, "3019", Some(("RSC04", "20261129-fallback-1")), app.now());
    assert_eq!(post(&app, "/receipts/nhn", &signed, no_kakao.clone()).await, 200);
    assert_eq!(post(&app, "/receipts/nhn", &signed, no_kakao).await, 200, "a repeated hook");
    let send = status(&app, &kim).await;
    let attempts: Vec<(&str, &str, &str, &str)> = send
        .attempts
        .iter()
        .map(|a| (a.channel.as_str(), a.gateway.as_str(), a.outcome.as_str(), a.provider_id.as_str()))
        .collect();
    assert_eq!(
        attempts,
        [("alimtalk", "nhn-alimtalk", "accepted", id.as_str()), ("sms", "nhn-sms", "accepted", "20261129-fallback-1")],
        "the provider's own SMS fallback is an attempt of its own, recorded once"
    );
    assert_eq!((send.attempts[0].receipt.as_str(), send.attempts[0].receipt_code.as_str()), ("failed", "3019"));
    assert_eq!(send.attempts[0].reason_ko, "카카오톡 미사용/수신 불가");
    let sms = nhn_hook_at("20261129-fallback-1", "COMPLETED", "1000", app.now() + chrono::TimeDelta::seconds(2));
    assert_eq!(post(&app, "/receipts/nhn", &signed, sms).await, 200);
    assert_eq!(status(&app, &kim).await.attempts[1].receipt, "delivered", "the fallback SMS reached the phone");

    // The number has no KakaoTalk: its next code starts with SMS (route learning, --route-memory).
    app.advance(chrono::TimeDelta::seconds(31));
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(status(&app, &kim).await.attempts[0].channel, "sms", "AlimTalk goes last for this number");

    // Past the route memory (7 days), AlimTalk is tried first again.
    app.advance(chrono::TimeDelta::days(8));
    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status(&app, &kim).await.attempts[0].provider_id.clone();
    assert_eq!(
        post(&app, "/receipts/nhn", &signed, alimtalk_hook(&id, "3020", Some(("RSC01", "")), app.now())).await,
        200
    );
    let send = status(&app, &kim).await;
    assert_eq!(send.attempts.len(), 1, "no fallback was made");
    assert_eq!(
        (send.attempts[0].receipt.as_str(), send.attempts[0].reason_ko.as_str()),
        ("failed", "알림톡 수신 차단")
    );
    let out = otpctl_ok(&app, &kim, &["status", "--phone", PHONE, "--ticket", "CS-1"]).await;
    assert!(out.contains("알림톡 수신 차단") && out.contains("3020"), "{out}");

    // A hook as the webhook guide lists it, without the fallback fields: the message query (메시지 단건 조회) says
    // NHN sent an SMS instead, and under which request id. (Past the route memory again: AlimTalk first.)
    app.advance(chrono::TimeDelta::days(8));
    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status(&app, &kim).await.attempts[0].provider_id.clone();
    nhn.fall_back(&id, "RSC03", "20261129-fallback-2");
    assert_eq!(post(&app, "/receipts/nhn", &signed, alimtalk_hook(&id, "3019", None, app.now())).await, 200);
    assert!(nhn.queries().iter().any(|q| q.ends_with(&format!("/auth/messages/{id}/1"))), "{:?}", nhn.queries());
    let send = status(&app, &kim).await;
    let fallback = send.attempts.get(1).map(|a| (a.gateway.as_str(), a.provider_id.as_str(), a.outcome.as_str()));
    assert_eq!(fallback, Some(("nhn-sms", "20261129-fallback-2", "accepted")));
}

crate::both_backends!(sens_and_solapi_results_are_polled);

/// Issue 22, section 2: SENS and Solapi post no webhook otpd can take; their result-query APIs are polled
/// (`--receipt-poll-interval`), and what the carrier reported shows in the status view with its code and reason.
async fn sens_and_solapi_results_are_polled(backend: Backend) {
    use crate::korea::Provider;
    for (provider, failure, reason_ko, delivered) in
        [(Provider::Sens, "3018", "기타 실패", "0"), (Provider::Solapi, "3054", "수신 거부/스팸 차단", "4000")]
    {
        let stand_in = provider.stand_in().await;
        let mut args = provider.args(&stand_in, SECRET_KEY);
        args.extend(["--receipt-poll-interval", "100ms"].map(str::to_owned));
        let app = spawn_app_with(backend, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let kim = app.add_supervisor("kim.minji", "supervisor").await;
        app.send(PHONE, Purpose::Login).await.unwrap();
        let id = status(&app, &kim).await.attempts[0].provider_id.clone();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(status(&app, &kim).await.attempts[0].receipt, "", "{provider:?}: still on its way");
        assert!(!stand_in.queries().is_empty(), "{provider:?}: asked");
        stand_in.report(&id, failure);
        let attempt = polled_receipt(&app, &kim).await;
        assert_eq!(
            (attempt.receipt.as_str(), attempt.receipt_code.as_str(), attempt.reason_ko.as_str()),
            ("failed", failure, reason_ko),
            "{provider:?}"
        );

        app.advance(chrono::TimeDelta::seconds(31));
        app.send(PHONE, Purpose::Login).await.unwrap();
        let id = status(&app, &kim).await.attempts[0].provider_id.clone();
        stand_in.report(&id, delivered);
        assert_eq!(polled_receipt(&app, &kim).await.receipt, "delivered", "{provider:?}");
    }
}

/// The first attempt of the last send once a receipt is recorded for it (the poller runs in the background).
async fn polled_receipt(app: &TestApp, kim: &str) -> pb::DeliveryAttempt {
    for _ in 0..200 {
        let attempt = status(app, kim).await.attempts[0].clone();
        if !attempt.receipt.is_empty() {
            return attempt;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no receipt polled in 10 s");
}

/// A failed AlimTalk whose fallback NHN has not started yet when its hook comes (RSC02 대체 발송 대상): the message
/// query is asked again a little later, and the fallback SMS then recorded as its own attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alimtalk_fallback_still_to_come_is_asked_about_again() {
    let nhn = StandIn::nhn().await;
    let args = nhn_args(&nhn);
    let app = spawn_app_with(Backend::Sqlite, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    app.send(PHONE, Purpose::Login).await.unwrap();
    let id = status(&app, &kim).await.attempts[0].provider_id.clone();
    nhn.fall_back(&id, "RSC02", "");
    assert_eq!(post(&app, "/receipts/nhn", &signed, alimtalk_hook(&id, "3019", None, app.now())).await, 200);
    assert_eq!(status(&app, &kim).await.attempts.len(), 1, "no fallback yet");
    nhn.fall_back(&id, "RSC04", "20261129-fallback-3");
    for _ in 0..300 {
        let attempts = status(&app, &kim).await.attempts;
        if attempts.len() == 2 {
            assert_eq!(
                (attempts[1].gateway.as_str(), attempts[1].provider_id.as_str()),
                ("nhn-sms", "20261129-fallback-3")
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the fallback was not asked about again: {:?}", nhn.queries());
}
