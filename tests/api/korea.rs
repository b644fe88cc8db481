//! Delivery in Korea: the NHN Cloud, Naver Cloud SENS and Solapi adapters against stand-ins that check each
//! provider's documented authentication; the message template's start-up checks; the origin-bound line.

use otpd::pb::otp::v1::{Purpose, VerifyResult};
use tonic::Code;

use crate::helpers::*;
use crate::standins::*;

/// Fast retries so the tests do not wait on backoff.
const FAST_RETRIES: [&str; 4] = ["--sms-http-backoff", "10ms", "--sms-http-max-backoff", "50ms"];

#[derive(Clone, Copy, Debug)]
pub enum Provider {
    Nhn,
    Sens,
    Solapi,
}

impl Provider {
    pub async fn stand_in(self) -> StandIn {
        match self {
            Provider::Nhn => StandIn::nhn().await,
            Provider::Sens => StandIn::sens().await,
            Provider::Solapi => StandIn::solapi().await,
        }
    }

    /// The settings that point otpd at `stand_in`, with `secret` as the secret key.
    pub fn args(self, stand_in: &StandIn, secret: &str) -> Vec<String> {
        let base = stand_in.base();
        let args: Vec<&str> = match self {
            Provider::Nhn => vec!["--sms-gateway", "nhn-sms", "--nhn-sms-app-key", APP_KEY, "--nhn-sms-secret-key"],
            Provider::Sens => vec![
                "--sms-gateway",
                "sens",
                "--sens-service-id",
                SERVICE_ID,
                "--sens-access-key",
                ACCESS_KEY,
                "--sens-secret-key",
            ],
            Provider::Solapi => vec!["--sms-gateway", "solapi", "--solapi-api-key", ACCESS_KEY, "--solapi-api-secret"],
        };
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args[1] = format!("{}:{base}", args[1]);
        args.push(secret.to_owned());
        args.extend(FAST_RETRIES.map(str::to_owned));
        args
    }
}

async fn app_for(provider: Provider, stand_in: &StandIn, secret: &str) -> TestApp {
    let args = provider.args(stand_in, secret);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_app_with(Backend::Sqlite, &args).await
}

async fn provider_ids(app: &TestApp) -> Vec<Option<String>> {
    let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
    sqlx::query_scalar("SELECT provider_message_id FROM codes ORDER BY id").fetch_all(&pool).await.unwrap()
}

/// One send reaches the provider once, as its guide documents it, and the provider's id is recorded.
async fn a_send_speaks_the_providers_protocol(provider: Provider) {
    let stand_in = provider.stand_in().await;
    let app = app_for(provider, &stand_in, SECRET_KEY).await;
    app.send(PHONE, Purpose::Login).await.unwrap();

    let seen = stand_in.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (request, body) = (&seen[0], &seen[0].body);
    let header = |name: &str| request.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let text = match provider {
        Provider::Nhn => {
            assert_eq!(request.path, format!("/sms/v3.0/appKeys/{APP_KEY}/sender/auth/sms"));
            assert_eq!(header("x-secret-key").as_deref(), Some(SECRET_KEY));
            assert_eq!(header("content-type").as_deref(), Some("application/json;charset=UTF-8"));
            assert_eq!(body["sendNo"], "18003400");
            assert_eq!(body["recipientList"][0]["recipientNo"], "01012345678");
            body["body"].as_str().unwrap().to_owned()
        }
        Provider::Sens => {
            assert_eq!(request.path, format!("/sms/v2/services/{SERVICE_ID}/messages"));
            assert_eq!(header("x-ncp-iam-access-key").as_deref(), Some(ACCESS_KEY));
            assert!(header("x-ncp-apigw-signature-v2").is_some());
            assert_eq!(
                (&body["type"], &body["contentType"], &body["countryCode"]),
                (&"SMS".into(), &"COMM".into(), &"82".into())
            );
            assert_eq!(body["from"], "18003400");
            assert_eq!(body["messages"][0]["to"], "01012345678");
            body["content"].as_str().unwrap().to_owned()
        }
        Provider::Solapi => {
            assert_eq!(request.path, "/messages/v4/send");
            assert!(header("authorization").unwrap().starts_with(&format!("HMAC-SHA256 apiKey={ACCESS_KEY}, date=")));
            let message = &body["message"];
            assert_eq!(
                (&message["from"], &message["to"], &message["type"]),
                (&"18003400".into(), &"01012345678".into(), &"SMS".into())
            );
            // Solapi reads `to` as national and `country` as its calling code (82 when left out).
            assert_eq!(message["country"], "82");
            message["text"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(request.status / 100, 2, "the stand-in accepted the signature");
    let expected_id = match provider {
        Provider::Nhn => "20261129-nhn-0001",
        Provider::Sens => "RSSA-0001",
        Provider::Solapi => "M4V-0001",
    };
    assert_eq!(provider_ids(&app).await, [Some(expected_id.to_owned())]);
    let r = app.verify(PHONE, Purpose::Login, &code_in(&text)).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved);
}

/// A wrong secret is refused by the provider: the caller gets SMS_DELIVERY_FAILED, and it is not retried.
async fn a_bad_credential_is_refused_without_retry(provider: Provider) {
    let stand_in = provider.stand_in().await;
    let app = app_for(provider, &stand_in, "not-the-secret").await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    let seen = stand_in.seen();
    assert_eq!(seen.len(), 1, "a refusal is not retried: {seen:?}");
    assert!(seen[0].status == 200 || seen[0].status / 100 == 4, "the stand-in refused it: {}", seen[0].status);
    assert_eq!(provider_ids(&app).await, [None]);
}

/// A 5xx is retried (with a fresh signature where the provider signs), and the retry delivers.
async fn a_server_error_is_retried(provider: Provider) {
    let stand_in = provider.stand_in().await;
    stand_in.fail_next(&[Fault::Unavailable]);
    let app = app_for(provider, &stand_in, SECRET_KEY).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let statuses: Vec<u16> = stand_in.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0], 503);
    assert_eq!(statuses[1] / 100, 2);
    assert!(provider_ids(&app).await[0].as_deref().is_some_and(|id| id.contains("0002")));
}

/// The text of the message a stand-in received, whichever provider it plays.
fn text_of(provider: Provider, seen: &Seen) -> String {
    let body = &seen.body;
    let text = match provider {
        Provider::Nhn => &body["body"],
        Provider::Sens => &body["content"],
        Provider::Solapi => &body["message"]["text"],
    };
    text.as_str().unwrap().to_owned()
}

/// A provider (or a proxy, or a DNS answer) that redirects: the message and the credentials are not re-sent to the
/// Location, the send fails SMS_DELIVERY_FAILED at once (a refusal, not retried), and its code never approves.
async fn a_redirect_is_refused_and_never_followed(provider: Provider) {
    let (stand_in, elsewhere) = (provider.stand_in().await, provider.stand_in().await);
    stand_in.redirect_to(&elsewhere);
    let app = app_for(provider, &stand_in, SECRET_KEY).await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    assert!(elsewhere.seen().is_empty(), "the redirect was followed: {:?}", elsewhere.seen());
    let seen = stand_in.seen();
    assert_eq!(seen.iter().map(|s| s.status).collect::<Vec<_>>(), [307], "one request, not retried");
    let code = code_in(&text_of(provider, &seen[0]));
    let check = app.verify(PHONE, Purpose::Login, &code).await;
    assert!(!check.is_ok_and(|r| r.result() == VerifyResult::Approved), "the redirected code must never approve");
}

macro_rules! for_each_provider {
    ($($test:ident),*) => {
        $(
            mod $test {
                use super::Provider;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nhn_sms() { super::$test(Provider::Nhn).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sens() { super::$test(Provider::Sens).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn solapi() { super::$test(Provider::Solapi).await }
            }
        )*
    };
}

for_each_provider!(
    a_send_speaks_the_providers_protocol,
    a_bad_credential_is_refused_without_retry,
    a_server_error_is_retried,
    a_redirect_is_refused_and_never_followed
);

/// Runs the real binary with `args` and returns its exit code and standard error; start-up checks fail before
/// anything is bound.
fn start_otpd(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("otpd.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--database-url", &db])
        .args(args)
        .args(["migrate"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("OTPD_PEPPER", TEST_PEPPER)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn templates_are_checked_at_start_up() {
    // 40 Hangul (80 bytes in EUC-KR), a space, the 6-digit code, and full stops.
    let ninety = format!("{} {{code}}...", "인".repeat(40));
    let ninety_one = format!("{} {{code}}....", "인".repeat(40));
    let (code, stderr) = start_otpd(&["--sms-template", &ninety_one]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--sms-template") && stderr.contains("91 bytes"), "{stderr}");
    let (code, stderr) = start_otpd(&["--sms-template", &ninety]);
    assert_eq!(code, Some(0), "exactly 90 bytes is one SMS: {stderr}");
    let (code, stderr) = start_otpd(&["--sms-template", "인증번호 {code} 🔑"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--sms-template") && stderr.contains("EUC-KR"), "{stderr}");
    // The app-hash line counts: 90 bytes of template plus a hash line is too long for one SMS.
    let (code, stderr) = start_otpd(&["--sms-template", &ninety, "--app-hashes", "FA+9qCX9VSu"]);
    assert!(code == Some(2) && stderr.contains("102 bytes"), "{stderr}");
    let (code, stderr) = start_otpd(&["--sms-template", &ninety, "--app-hashes", "FA+9qCX9VSu", "--allow-lms", "true"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = start_otpd(&["--sms-template", "{code} 입니다", "--sms-gateway", "nhn-sms"]);
    assert!(code == Some(2) && stderr.contains("--sms-template") && stderr.contains("인증"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_line_is_last_and_carries_the_same_code() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            "--sms-template",
            "[{brand}] 인증번호 {code} ({minutes}분)",
            "--brand",
            "카카오T",
            // The default notice with this brand is 94 bytes, past one SMS: a brand this long needs its own text.
            "--lookup-notice-template",
            "[{brand}] 고객센터에서 인증번호를 안내했습니다. 문의 {support}",
            "--origin-domain",
            "driver.example.com",
            "--app-hashes",
            "FA+9qCX9VSu",
        ],
    )
    .await;
    let mut request = send_req(PHONE, Purpose::Login);
    request.app_hash = "FA+9qCX9VSu".into();
    app.otp.clone().send_code(request).await.unwrap();
    let body = app.sms().pop().unwrap().body;
    let lines: Vec<&str> = body.lines().collect();
    let code = lines[0].strip_prefix("[카카오T] 인증번호 ").unwrap().strip_suffix(" (3분)").unwrap();
    assert_eq!(lines[1..], ["FA+9qCX9VSu", &format!("@driver.example.com #{code}")]);
    let r = app.verify(PHONE, Purpose::Login, code).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved);
}

/// The settings of `--delivery alimtalk,sms` through NHN Cloud, both channels on `nhn`.
pub fn alimtalk_then_sms(nhn: &StandIn) -> Vec<String> {
    let base = nhn.base();
    let mut args: Vec<String> = [
        "--delivery",
        "alimtalk,sms",
        "--sms-gateway",
        &format!("nhn-sms:{base}"),
        "--nhn-sms-app-key",
        APP_KEY,
        "--nhn-sms-secret-key",
        SECRET_KEY,
        "--alimtalk-gateway",
        &format!("nhn-alimtalk:{base}"),
        "--alimtalk-app-key",
        APP_KEY,
        "--alimtalk-secret-key",
        SECRET_KEY,
        "--alimtalk-sender-key",
        SENDER_KEY,
        "--alimtalk-template-code",
        TEMPLATE_CODE,
        "--alimtalk-notice-template-code",
        crate::standins::NOTICE_TEMPLATE_CODE,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(FAST_RETRIES.map(str::to_owned));
    args
}

async fn spawn_with(backend: Backend, args: &[String]) -> TestApp {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_app_with(backend, &args).await
}

async fn status(app: &TestApp) -> otpd::pb::otp::v1::GetPhoneStatusResponse {
    let kim = app.add_supervisor("kim.minji", "supervisor").await;
    let req = otpd::pb::otp::v1::GetPhoneStatusRequest {
        phone_number: PHONE.into(),
        ticket_id: "CS-1".into(),
        ..Default::default()
    };
    app.sup.clone().get_phone_status(authed(req, &kim)).await.unwrap().into_inner()
}

crate::both_backends!(a_refused_alimtalk_falls_back_to_sms_with_the_same_code);

/// AlimTalk refused (a documented refusal: the sender profile is blocked, -1027; a phone without KakaoTalk is no
/// refusal, NHN falls back itself): the SMS channel carries the same code, and the status view shows both attempts.
async fn a_refused_alimtalk_falls_back_to_sms_with_the_same_code(backend: Backend) {
    let nhn = StandIn::nhn().await;
    nhn.fail_next(&[Fault::Refuse]);
    let app = spawn_with(backend, &alimtalk_then_sms(&nhn)).await;
    app.send(PHONE, Purpose::Login).await.unwrap();

    let seen = nhn.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].path, format!("/alimtalk/v2.3/appkeys/{APP_KEY}/auth/messages"));
    assert_eq!(seen[1].path, format!("/sms/v3.0/appKeys/{APP_KEY}/sender/auth/sms"));
    let alimtalk = &seen[0].body["recipientList"][0];
    let sms_text = seen[1].body["body"].as_str().unwrap();
    let code = code_in(sms_text);
    assert_eq!(alimtalk["templateParameter"]["code"], code.as_str(), "one code, whichever channel carries it");
    assert_eq!(alimtalk["resendParameter"]["resendContent"], sms_text, "the provider's own fallback says the same");
    assert_eq!(alimtalk["recipientNo"], "01012345678");

    let status = status(&app).await;
    let send = &status.pending[0].sends[0];
    assert_eq!(send.delivered_by, "sms");
    let attempts: Vec<(&str, &str, &str)> =
        send.attempts.iter().map(|a| (a.channel.as_str(), a.gateway.as_str(), a.outcome.as_str())).collect();
    assert_eq!(attempts, [("alimtalk", "nhn-alimtalk", "refused"), ("sms", "nhn-sms", "accepted")]);
    assert_eq!(send.attempts[1].provider_id, "20261129-nhn-0002");
    assert_eq!(send.attempts[1].receipt, "", "no receipt yet");
    let r = app.verify(PHONE, Purpose::Login, &code).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved);
}

/// AlimTalk takes it: no SMS goes out from otpd (the provider falls back by itself if it must).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_alimtalk_sends_no_sms() {
    let nhn = StandIn::nhn().await;
    let app = spawn_with(Backend::Sqlite, &alimtalk_then_sms(&nhn)).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let seen = nhn.seen();
    assert_eq!(seen.len(), 1);
    let code = seen[0].body["recipientList"][0]["templateParameter"]["code"].as_str().unwrap().to_owned();
    let status = status(&app).await;
    assert_eq!(status.pending[0].sends[0].delivered_by, "alimtalk");
    assert_eq!(status.pending[0].sends[0].attempts.len(), 1);
    let r = app.verify(PHONE, Purpose::Login, &code).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved);
}

/// Both channels fail: the code is revoked and the caller told SMS_DELIVERY_FAILED; both attempts are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_channel_fails_the_send_fails() {
    let nhn = StandIn::nhn().await;
    nhn.fail_next(&[Fault::Refuse, Fault::Refuse]);
    let app = spawn_with(Backend::Sqlite, &alimtalk_then_sms(&nhn)).await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    let status = status(&app).await;
    let send = &status.pending[0].sends[0];
    assert!(!send.live && send.delivered_by.is_empty());
    let outcomes: Vec<&str> = send.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["refused", "refused"]);
}

crate::both_backends!(attempts_and_receipts_are_stored);

/// Store conformance: attempts are kept in order with the channel that carried the code; a receipt updates the
/// accepted attempt its provider id names, and one for an unknown id changes nothing; the newest receipt wins
/// (a replay, a late older one or one dated before its attempt changes nothing).
async fn attempts_and_receipts_are_stored(backend: Backend) {
    use otpd::domain::{AttemptOutcome, AttemptReason, DeliveryAttempt, DeliveryChannel, Receipt, ReceiptOutcome};
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let stores = otpd::store::connect(&db.url).await.unwrap();
    stores.verification.migrate().await.unwrap();
    let phone = otpd::domain::PhoneNumber::parse(PHONE, &Default::default()).unwrap();
    let now = otpd::clock::to_millis(chrono::Utc::now());
    let code = otpd::store::NewCode {
        phone: phone.clone(),
        purpose: otpd::domain::Purpose::Login,
        hash: otpd::hashing::CodeHash("$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$1".into()),
        channel: otpd::domain::Channel::Sms,
        now,
        expires_at: now + chrono::TimeDelta::minutes(3),
    };
    let issued = stores.verification.issue_code(code, &otpd::domain::Policy::default()).await.unwrap().unwrap();
    let attempt = |channel, gateway, outcome, id: Option<&str>, reason| DeliveryAttempt {
        channel,
        gateway,
        at: now,
        outcome,
        provider_id: id.map(str::to_owned),
        reason,
    };
    // The failed attempt's reason is kept with it (issue 21, section 5), the accepted one has none.
    let attempts = [
        attempt(
            DeliveryChannel::AlimTalk,
            "nhn-alimtalk",
            AttemptOutcome::Failed,
            None,
            Some(AttemptReason::ProviderDown),
        ),
        attempt(DeliveryChannel::Sms, "nhn-sms", AttemptOutcome::Accepted, Some("req-1"), None),
    ];
    stores.verification.record_attempts(issued.code_id, &attempts).await.unwrap();
    let receipt = Receipt { delivered: false, at: now + chrono::TimeDelta::seconds(5), code: Some("3012".into()) };
    let record = |gateway: &'static str, id: &'static str, receipt: Receipt| {
        let store = stores.verification.clone();
        async move { store.record_receipt(gateway, id, &receipt).await.unwrap() }
    };
    assert_eq!(record("nhn-sms", "req-unknown", receipt.clone()).await, ReceiptOutcome::Unknown);
    assert_eq!(record("sens", "req-1", receipt.clone()).await, ReceiptOutcome::Unknown, "another provider's id");
    // Dated before its attempt (beyond the clock skew): refused, whatever it says.
    let before_the_send = Receipt { at: now - chrono::TimeDelta::minutes(2), ..receipt.clone() };
    assert_eq!(record("nhn-sms", "req-1", before_the_send).await, ReceiptOutcome::Superseded);
    // A newer delivered receipt wins over the failure; the failure replayed, or arriving late, changes nothing.
    let delivered = Receipt { delivered: true, at: receipt.at - chrono::TimeDelta::seconds(1), code: None };
    assert_eq!(record("nhn-sms", "req-1", delivered.clone()).await, ReceiptOutcome::Recorded);
    assert_eq!(record("nhn-sms", "req-1", delivered.clone()).await, ReceiptOutcome::Superseded, "replayed");
    assert_eq!(record("nhn-sms", "req-1", receipt.clone()).await, ReceiptOutcome::Recorded, "newer");
    assert_eq!(record("nhn-sms", "req-1", delivered).await, ReceiptOutcome::Superseded, "older, late");

    let status = stores.supervision.phone_status(&phone, now).await.unwrap();
    let code = &status.pending[0].codes[0];
    assert_eq!(code.delivered_by.as_deref(), Some("sms"));
    assert_eq!(code.attempts.len(), 2);
    assert_eq!(code.attempts[0].attempt, attempts[0]);
    assert_eq!(code.attempts[0].receipt, None);
    assert_eq!(code.attempts[1].attempt, attempts[1]);
    assert_eq!(code.attempts[1].receipt, Some(receipt));
}

/// The breaker is per channel: AlimTalk down opens its breaker, after which sends go straight to SMS (no
/// AlimTalk request at all) instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_alimtalk_breaker_leaves_sms_working() {
    let nhn = StandIn::nhn().await;
    nhn.fail_next(&[Fault::Unavailable; 3]);
    let mut args = alimtalk_then_sms(&nhn);
    args.extend(["--sms-breaker-threshold", "1", "--sms-http-max-attempts", "3"].map(str::to_owned));
    let app = spawn_with(Backend::Sqlite, &args).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let paths = |seen: Vec<Seen>| seen.into_iter().map(|s| s.path.contains("alimtalk")).collect::<Vec<_>>();
    assert_eq!(paths(nhn.seen()), [true, true, true, false], "three AlimTalk attempts, then the SMS");

    app.send("010-2222-3333", Purpose::Login).await.unwrap();
    assert_eq!(paths(nhn.seen()), [true, true, true, false, false], "AlimTalk's breaker is open; SMS carries it");
}

/// AlimTalk's wire format too: a redirect of both channels sends nothing elsewhere, and the code never approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alimtalk_redirect_is_refused_and_never_followed() {
    let (nhn, elsewhere) = (StandIn::nhn().await, StandIn::nhn().await);
    nhn.redirect_to(&elsewhere);
    let app = spawn_with(Backend::Sqlite, &alimtalk_then_sms(&nhn)).await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    assert!(elsewhere.seen().is_empty(), "the redirect was followed: {:?}", elsewhere.seen());
    let seen = nhn.seen();
    assert_eq!(seen.iter().map(|s| s.status).collect::<Vec<_>>(), [307, 307], "AlimTalk, then SMS; no retry");
    let code = seen[0].body["recipientList"][0]["templateParameter"]["code"].as_str().unwrap().to_owned();
    let check = app.verify(PHONE, Purpose::Login, &code).await;
    assert!(!check.is_ok_and(|r| r.result() == VerifyResult::Approved), "the redirected code must never approve");
}

/// Issue 22, section 1: NHN's own failures (`-2021` queue save failed, `-9999` system error, error-code.md "API 결과
/// 코드") arrive as `isSuccessful: false` but are not refusals: they are retried, and a run of them opens the
/// breaker, so the next send fails fast without calling NHN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nhn_system_errors_are_retried_and_open_the_breaker() {
    let nhn = StandIn::nhn().await;
    nhn.fail_next(&[Fault::QueueFailed]);
    let mut args = Provider::Nhn.args(&nhn, SECRET_KEY);
    args.extend(["--sms-breaker-threshold", "1", "--sms-http-max-attempts", "3"].map(str::to_owned));
    let app = spawn_with(Backend::Sqlite, &args).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let seen = nhn.seen();
    assert_eq!(seen.len(), 2, "the -2021 was retried: {seen:?}");
    let code = code_in(seen[1].body["body"].as_str().unwrap());
    assert_eq!(app.verify(PHONE, Purpose::Login, &code).await.unwrap().result(), VerifyResult::Approved);

    nhn.fail_next(&[Fault::SystemError; 3]);
    let err = app.send("010-2222-3333", Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    assert_eq!(nhn.seen().len(), 5, "three attempts at the -9999");
    let err = app.send("010-4444-5555", Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    assert_eq!(nhn.seen().len(), 5, "the breaker is open: NHN was not called");
}

/// Issue 22, section 1: NHN's authentication SMS words are its own (API v3.0 guide: auth, password, verify,
/// にんしょう, 認証, 비밀번호, 인증; -8000 without one). "verification" is not "verify", so such a template must not
/// start; one NHN takes starts and its SMS is taken by the stand-in, which checks the same list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nhn_sms_needs_one_of_nhns_own_authentication_words() {
    let creds = ["--sms-gateway", "nhn-sms", "--nhn-sms-app-key", APP_KEY, "--nhn-sms-secret-key", SECRET_KEY];
    let with = |template: &'static str| {
        let mut args = creds.to_vec();
        args.extend(["--sms-template", template]);
        args
    };
    let (code, stderr) = start_otpd(&with("Your verification code is {code}"));
    assert!(code == Some(2) && stderr.contains("--sms-template") && stderr.contains("verify"), "{stderr}");
    for template in ["Code to verify: {code}", "にんしょう {code}", "[AUTH] {code}", "비밀번호 {code}"] {
        let (code, stderr) = start_otpd(&with(template));
        assert_eq!(code, Some(0), "{template}: {stderr}");
    }

    let nhn = StandIn::nhn().await;
    let mut args = Provider::Nhn.args(&nhn, SECRET_KEY);
    args.extend(["--sms-template", "Code to verify: {code}"].map(str::to_owned));
    let app = spawn_with(Backend::Sqlite, &args).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(nhn.taken().len(), 1, "the stand-in, from NHN's list, took it");
}

/// Issue 22, section 1: NHN's authentication API sends SMS only (90 bytes standard; longer text may be cut), so
/// `--allow-lms` with `nhn-sms` is refused at start-up, naming the setting.
#[test]
fn allow_lms_is_refused_with_nhn_sms() {
    let args = ["--sms-gateway", "nhn-sms", "--nhn-sms-app-key", APP_KEY, "--nhn-sms-secret-key", SECRET_KEY];
    let (code, stderr) = start_otpd(&[&args[..], &["--allow-lms", "true"]].concat());
    assert!(code == Some(2) && stderr.contains("--allow-lms") && stderr.contains("SMS only"), "{stderr}");
    let sens = ["--sms-gateway", "sens", "--sens-service-id", SERVICE_ID, "--sens-access-key", ACCESS_KEY];
    let (code, stderr) = start_otpd(&[&sens[..], &["--sens-secret-key", SECRET_KEY, "--allow-lms", "true"]].concat());
    assert_eq!(code, Some(0), "SENS sends LMS by its type: {stderr}");
}

/// Issue 22, section 1: Solapi takes only EUC-KR 완성형 (KS X 1001; 메시지 상태 코드 1029), narrower than the CP949
/// otpd checks for the others: a brand such as 똠양꿍 starts with NHN but not with Solapi.
#[test]
fn solapi_templates_are_checked_against_ks_x_1001() {
    let brand = ["--brand", "똠양꿍", "--sms-template", "[{brand}] 인증번호 {code}"];
    let solapi = ["--sms-gateway", "solapi", "--solapi-api-key", ACCESS_KEY, "--solapi-api-secret", SECRET_KEY];
    let (code, stderr) = start_otpd(&[&solapi[..], &brand[..]].concat());
    assert!(code == Some(2) && stderr.contains("1029") && stderr.contains("'똠'"), "{stderr}");
    let nhn = ["--sms-gateway", "nhn-sms", "--nhn-sms-app-key", APP_KEY, "--nhn-sms-secret-key", SECRET_KEY];
    let (code, stderr) = start_otpd(&[&nhn[..], &brand[..], &["--lookup-notice-template", "off"]].concat());
    assert_eq!(code, Some(0), "CP949 has 똠: {stderr}");
}

/// Issue 22, section 1: abroad, Solapi gets the national number and `country`; AlimTalk v2.3 has no countryCode
/// field (so the number goes with its country code, at most 15 characters) and its fallback must be SMS ("국제 대체
/// 발송은 SMS만 지원합니다"), even for a text that is an LMS at home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_abroad_go_as_each_provider_documents() {
    const US: &str = "+1 650 253 0000";
    let solapi = StandIn::solapi().await;
    let mut args = Provider::Solapi.args(&solapi, SECRET_KEY);
    args.extend(["--allowed-countries", "KR,US"].map(str::to_owned));
    let app = spawn_with(Backend::Sqlite, &args).await;
    app.send(US, Purpose::Login).await.unwrap();
    let message = &solapi.seen()[0].body["message"];
    assert_eq!((&message["to"], &message["country"]), (&"6502530000".into(), &"1".into()));

    let nhn = StandIn::nhn().await;
    let base = nhn.base();
    let long = format!("[인증번호] {{code}} {}", "인증".repeat(40));
    let args = [
        "--delivery",
        "alimtalk",
        "--alimtalk-gateway",
        &format!("nhn-alimtalk:{base}"),
        "--alimtalk-app-key",
        APP_KEY,
        "--alimtalk-secret-key",
        SECRET_KEY,
        "--alimtalk-sender-key",
        SENDER_KEY,
        "--alimtalk-template-code",
        TEMPLATE_CODE,
        "--lookup-notice-template",
        "off",
        "--allow-lms",
        "true",
        "--sms-template",
        &long,
        "--allowed-countries",
        "KR,US",
    ];
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    app.send(US, Purpose::Login).await.unwrap();
    app.send(PHONE, Purpose::Login).await.unwrap();
    let seen = nhn.seen();
    let abroad = &seen[0].body["recipientList"][0];
    assert_eq!(abroad["recipientNo"], "16502530000");
    assert!(abroad.get("countryCode").is_none(), "API v2.3 has no countryCode: {abroad}");
    assert_eq!(abroad["resendParameter"]["resendType"], "SMS", "an SMS fallback abroad");
    let home = &seen[1].body["recipientList"][0];
    assert_eq!((&home["recipientNo"], &home["resendParameter"]["resendType"]), (&"01012345678".into(), &"LMS".into()));
}

/// Issue 22, section 1: AlimTalk sends carry X-NC-API-IDEMPOTENCY-KEY, the same on a retry; NHN answers a repeat
/// within 10 minutes `-1005`, which is "already accepted", so a retried timeout delivers once and the send succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_alimtalk_timeout_delivers_once() {
    let nhn = StandIn::nhn().await;
    nhn.fail_next(&[Fault::Slow(std::time::Duration::from_millis(1500))]);
    let mut args = alimtalk_then_sms(&nhn);
    args.extend(["--sms-http-attempt-timeout", "300ms"].map(str::to_owned));
    let app = spawn_with(Backend::Sqlite, &args).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let seen = nhn.seen();
    assert_eq!(seen.len(), 2, "one timeout, one retry, no SMS: {seen:?}");
    let key = |s: &Seen| s.headers.get("x-nc-api-idempotency-key").map(|v| v.to_str().unwrap().to_owned());
    assert!(key(&seen[0]).is_some_and(|k| !k.is_empty()));
    assert_eq!(key(&seen[0]), key(&seen[1]), "the same key on the retry");
    assert_eq!(nhn.taken().len(), 1, "delivered once");
    let status = status(&app).await;
    assert_eq!(status.pending[0].sends[0].delivered_by, "alimtalk");
    let code = seen[0].body["recipientList"][0]["templateParameter"]["code"].as_str().unwrap().to_owned();
    assert_eq!(app.verify(PHONE, Purpose::Login, &code).await.unwrap().result(), VerifyResult::Approved);
}

/// `otpd serve --help` lists every form --sms-gateway and --alimtalk-gateway take.
#[test]
fn serve_help_lists_every_gateway_form() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otpd")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for form in [
        "`log`",
        "`file:PATH`",
        "`http:URL`",
        "`nhn-sms`",
        "`sens`",
        "`solapi`",
        "`:BASE_URL`",
        "nhn-alimtalk:BASE_URL",
    ] {
        assert!(help.contains(form), "{form} missing from otpd serve --help");
    }
}

/// Issue 22, section 6: a provider's trouble is logged with the gateway, its host:port and the cause (not only
/// reqwest's "error sending request"), never the code, the key or the secret; the start-up line names every
/// channel's gateway with host:port, and no secret (a real process, logging JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_trouble_is_logged_with_the_gateway_its_address_and_the_cause() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("otpd.db").display());
    let gateway = format!("nhn-sms:http://127.0.0.1:{port}/");
    let args = [
        "--database-url",
        &db_url,
        "--sms-gateway",
        &gateway,
        "--nhn-sms-app-key",
        APP_KEY,
        "--nhn-sms-secret-key",
        SECRET_KEY,
        "--log-format",
        "json",
        "--sms-http-max-attempts",
        "1",
    ];
    let otpd = crate::helpers::OtpdProcess::start(dir.path(), "otpd", &args, &[]).await;
    let err = otpd.otp().await.send_code(send_req(PHONE, Purpose::Login)).await.unwrap_err();
    assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    let (_, stderr) = otpd.terminate().await;
    let lines: Vec<serde_json::Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let field = |line: &serde_json::Value, name: &str| {
        line.get(name).or_else(|| line["fields"].get(name)).and_then(|v| v.as_str()).unwrap_or("").to_owned()
    };
    let message = |line: &serde_json::Value| field(line, "message");
    let failed = lines.iter().find(|l| message(l) == "delivery channel did not take the code").expect(&stderr);
    assert_eq!(field(failed, "gateway"), "nhn-sms", "{failed}");
    assert_eq!(field(failed, "provider"), format!("127.0.0.1:{port}"), "{failed}");
    let cause = field(failed, "error");
    assert!(cause.to_lowercase().contains("connection refused"), "the cause, not only the request: {cause}");
    let listening = lines.iter().find(|l| message(l) == "otpd listening").expect(&stderr);
    assert_eq!(field(listening, "routes"), format!("sms@nhn (127.0.0.1:{port})"), "{listening}");
    assert_eq!(field(listening, "sms_gateway"), format!("nhn-sms:http://127.0.0.1:{port}"), "{listening}");
    assert!(!stderr.contains(SECRET_KEY) && !stderr.contains(APP_KEY), "no credential in the log");
}
