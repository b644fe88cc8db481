//! Real SMS delivery over HTTP against a loopback provider, and the front-line defences against SMS pumping
//! and brute force: the provider and the hasher count what reaches them.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use std::sync::Arc;

use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult};
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;
use crate::provider::{FakeProvider, Reply};

/// Fast retries so the tests do not wait on backoff.
const FAST_RETRIES: [&str; 4] = ["--sms-http-backoff", "10ms", "--sms-http-max-backoff", "50ms"];

async fn app_with_provider(provider: &FakeProvider, extra: &[&str]) -> TestApp {
    app_with_provider_on(Backend::Sqlite, provider, extra).await
}

async fn app_with_provider_on(backend: Backend, provider: &FakeProvider, extra: &[&str]) -> TestApp {
    let gateway = provider.gateway();
    let mut args = vec!["--sms-gateway", gateway.as_str()];
    args.extend_from_slice(&FAST_RETRIES);
    args.extend_from_slice(extra);
    spawn_app_with(backend, &args).await
}

both_backends!(short_deadlines_cannot_open_the_breaker_or_burn_a_victims_caps, a_send_never_handed_over_is_withdrawn);

/// The caller's deadline ended the call: the server said so, or tonic's own timer (CANCELLED) got there first.
fn gave_up(err: &tonic::Status) -> bool {
    matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled)
}

async fn send_within(app: &TestApp, phone: &str, timeout: Duration) -> Result<pb::SendCodeResponse, tonic::Status> {
    let mut request = tonic::Request::new(send_req(phone, Purpose::Login));
    request.set_timeout(timeout);
    app.otp.clone().send_code(request).await.map(tonic::Response::into_inner)
}

/// The review's attack: SendCode with a 20 ms deadline (`grpcurl -max-time 0.02`), five times at any numbers and
/// ten at a victim's. Before the fix each call hashed and stored a code, the gateway found the deadline gone and
/// reported a provider failure: the breaker opened for everyone, and the victim was out of SMS for a day.
async fn short_deadlines_cannot_open_the_breaker_or_burn_a_victims_caps(backend: Backend) {
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let app = app_with_provider_on(backend, &provider, &[]).await;
    for n in 0..5 {
        let err = send_within(&app, &phone(n), Duration::from_millis(20)).await.unwrap_err();
        assert!(gave_up(&err), "{err:?}");
    }
    for _ in 0..10 {
        let err = send_within(&app, PHONE, Duration::from_millis(20)).await.unwrap_err();
        assert!(gave_up(&err), "{err:?}");
    }
    // The server refuses such calls itself, with the reason, before it hashes or stores anything.
    let err = send_within(&app, PHONE, Duration::from_millis(300)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::DeadlineExceeded, "DEADLINE_TOO_SHORT"));
    // Calls run detached from their client; give any that were still running time to finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.hasher.computations(), 0, "nothing was hashed");
    assert!(app.db.dump().await.is_empty(), "nothing was stored");

    // The breaker is closed: real sends go through, and the victim has every SMS of the hour left.
    app.send(&phone(10), Purpose::Login).await.unwrap();
    let sent = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(sent.sends_remaining, 4);
    assert_eq!(provider.requests(), 2);
}

/// A send whose deadline passes while it waits for a connection to the provider never reaches it: the code is
/// withdrawn (no cap counts it) and the breaker does not count it as the provider's failure.
async fn a_send_never_handed_over_is_withdrawn(backend: Backend) {
    let provider = FakeProvider::start(vec![Reply::Slow(Duration::from_millis(1500))], Reply::Accept("ok")).await;
    let extra = ["--sms-http-concurrency", "1", "--sms-breaker-threshold", "1"];
    let app = Arc::new(app_with_provider_on(backend, &provider, &extra).await);
    let holder = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.send(&phone(1), Purpose::Login).await })
    };
    while provider.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The only connection is busy for 1.5 s; this caller gives up after 1 s.
    let err = send_within(&app, PHONE, Duration::from_secs(1)).await.unwrap_err();
    assert!(gave_up(&err), "{err:?}");
    // Before the slow delivery ends: had the breaker counted that as a failure (threshold 1), it would be open
    // and this send would fail fast instead of waiting for the connection.
    app.send(&phone(2), Purpose::Login).await.unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(provider.requests(), 2, "the withdrawn send never reached the provider");

    let sent = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(sent.sends_remaining, 4, "the withdrawn send counts toward no cap");
    assert_eq!(sent.resend_available_at.unwrap().seconds, (app.now() + TimeDelta::seconds(30)).timestamp());
}

/// Attempts that only ran out of the caller's deadline say nothing about the provider, which has the message
/// and may deliver it: they do not move the breaker, and they are sends like any other (the code works, the send
/// counts toward the caps and starts the cooldown), not failures that revoke the code and invite a quick resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_cut_short_by_the_caller_do_not_open_the_breaker() {
    let provider = FakeProvider::start(vec![], Reply::Slow(Duration::from_secs(5))).await;
    let app = app_with_provider(&provider, &["--sms-breaker-threshold", "1", "--sms-http-max-attempts", "1"]).await;
    for n in 0..3 {
        let err = send_within(&app, &phone(n), Duration::from_millis(1500)).await.unwrap_err();
        assert!(gave_up(&err), "{err:?}");
    }
    provider.set_default(Reply::Accept("fine"));
    app.send(&phone(9), Purpose::Login).await.expect("the breaker stayed closed");
    let err = app.send(&phone(1), Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "RESEND_COOLDOWN", "the cut-short send started the cooldown");
    app.advance(TimeDelta::seconds(30));
    let again = app.send(&phone(1), Purpose::Login).await.unwrap();
    assert_eq!(again.sends_remaining, 3, "the cut-short send counted toward the caps");
    let r = app.verify(&phone(0), Purpose::Login, &code_sent(&provider, 0)).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved, "its code works when the SMS arrives");
}

fn code_sent(provider: &FakeProvider, index: usize) -> String {
    code_in(provider.received()[index].body["text"].as_str().unwrap())
}

async fn message_id(app: &TestApp) -> Option<String> {
    let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
    sqlx::query_scalar("SELECT provider_message_id FROM codes ORDER BY id DESC LIMIT 1").fetch_one(&pool).await.unwrap()
}

fn phone(n: u32) -> String {
    format!("010-{:04}-{:04}", 1000 + n / 10_000, n % 10_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_reaches_the_provider_once_with_the_protocol_fields() {
    let provider = FakeProvider::start(vec![], Reply::Accept("msg-42")).await;
    let app = app_with_provider(&provider, &["--sms-http-auth", "Bearer test-key"]).await;
    let sent = app.send(PHONE, Purpose::Login).await.unwrap();

    let received = provider.received();
    assert_eq!(received.len(), 1);
    let body = &received[0].body;
    assert_eq!(body["from"], "1800-3400");
    assert_eq!(body["to"], PHONE_E164);
    assert_eq!(body["reference"], sent.verification_id.as_str());
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("인증번호") && text.contains("타인에게 절대 알려주지 마세요"), "{text}");
    assert_eq!(received[0].authorization.as_deref(), Some("Bearer test-key"));
    assert!(received[0].idempotency_key.as_deref().is_some_and(|k| k.starts_with(&sent.verification_id)));
    assert_eq!(message_id(&app).await.as_deref(), Some("msg-42"));

    let ok = app.verify(PHONE, Purpose::Login, &code_in(text)).await.unwrap();
    assert_eq!(ok.result(), VerifyResult::Approved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_one_delivery() {
    let provider = FakeProvider::start(vec![Reply::Status(500), Reply::Status(500)], Reply::Accept("third")).await;
    let app = app_with_provider(&provider, &[]).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let received = provider.received();
    assert_eq!(received.len(), 3, "500, 500, then 200");
    let keys: Vec<_> = received.iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "a retry is the same message to the provider");
    assert_eq!(message_id(&app).await.as_deref(), Some("third"));
    let code = code_sent(&provider, 2);
    assert_eq!(app.verify(PHONE, Purpose::Login, &code).await.unwrap().result(), VerifyResult::Approved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_provider_is_retried_after_its_retry_after() {
    let provider = FakeProvider::start(vec![Reply::RetryAfter(429, 1)], Reply::Accept("ok")).await;
    let app = app_with_provider(&provider, &[]).await;
    let started = Instant::now();
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(provider.requests(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
}

/// The `http:` protocol's client follows no redirect: a 307 to a second provider sends that one nothing (not the
/// code, not the `Authorization` header), the send fails at once, and its code never approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_refused_and_never_followed() {
    let elsewhere = FakeProvider::start(vec![], Reply::Accept("elsewhere")).await;
    let provider = FakeProvider::start(vec![], Reply::Redirect(elsewhere.url())).await;
    let app = app_with_provider(&provider, &["--sms-http-auth", "Bearer provider-key"]).await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    assert_eq!(elsewhere.requests(), 0, "the redirect was followed: {:?}", elsewhere.received());
    assert_eq!(provider.requests(), 1, "a redirect is a refusal: not retried");
    let r = app.verify(PHONE, Purpose::Login, &code_sent(&provider, 0)).await.unwrap();
    assert_ne!(r.result(), VerifyResult::Approved, "the redirected code is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_not_retried_and_its_code_never_approves() {
    let provider = FakeProvider::start(vec![Reply::Status(400)], Reply::Accept("never")).await;
    let app = app_with_provider(&provider, &[]).await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    retry_delay(&err);
    assert_eq!(provider.requests(), 1, "a 4xx is never retried");

    let r = app.verify(PHONE, Purpose::Login, &code_sent(&provider, 0)).await.unwrap();
    assert_ne!(r.result(), VerifyResult::Approved, "the undelivered code is revoked");
    assert_eq!(app.db.phone_state(PHONE_E164).await, (0, false));
    // A failed send starts no cooldown: the driver may press "send" again at once.
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(
        app.verify(PHONE, Purpose::Login, &code_sent(&provider, 1)).await.unwrap().result(),
        VerifyResult::Approved
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_is_cut_short_by_the_callers_deadline_and_its_code_kept() {
    let provider = FakeProvider::start(vec![], Reply::Slow(Duration::from_secs(5))).await;
    let app = app_with_provider(&provider, &[]).await;

    // The caller's gRPC deadline (2 s) is shorter than --sms-timeout (10 s) and the provider (5 s): the call
    // answers before the deadline. The provider has the message and may deliver it, so its code keeps working.
    let started = Instant::now();
    let err = send_within(&app, PHONE, Duration::from_secs(2)).await.unwrap_err();
    assert!(gave_up(&err), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let r = app.verify(PHONE, Purpose::Login, &code_sent(&provider, 0)).await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved);

    // --sms-timeout bounds a caller without a deadline; running out of our own time is the provider's failure.
    let provider = FakeProvider::start(vec![], Reply::Slow(Duration::from_secs(5))).await;
    let app = app_with_provider(&provider, &["--sms-timeout", "500ms", "--sms-http-attempt-timeout", "500ms"]).await;
    let started = Instant::now();
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    let r = app.verify(PHONE, Purpose::Login, &code_sent(&provider, 0)).await.unwrap();
    assert_ne!(r.result(), VerifyResult::Approved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_fails_fast_after_consecutive_failures_and_recovers() {
    let provider = FakeProvider::start(vec![], Reply::Status(503)).await;
    let extra = ["--sms-http-max-attempts", "1", "--sms-breaker-threshold", "3", "--sms-breaker-cooldown", "30s"];
    let app = app_with_provider(&provider, &extra).await;
    for n in 0..3 {
        let err = app.send(&phone(n), Purpose::Login).await.unwrap_err();
        assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    }
    assert_eq!(provider.requests(), 3);

    let err = app.send(&phone(3), Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    assert_eq!(retry_delay(&err), Duration::from_secs(30), "retry when the breaker will probe");
    assert_eq!(provider.requests(), 3, "an open breaker does not call the provider");
    // Issue 21: the driver's attempt is recorded all the same (a pending verification and the refused send, its
    // code revoked at once), so that a team lead on a call can issue a code; see calls.rs.
    let rows = app.db.dump().await;
    assert!(rows.iter().any(|row| row.contains("+821010000003")), "the attempt is recorded");
    assert!(rows.iter().any(|row| row.contains("refused")), "the breaker's refusal is recorded: {rows:?}");

    provider.set_default(Reply::Accept("back"));
    app.advance(TimeDelta::seconds(30));
    app.send(&phone(4), Purpose::Login).await.unwrap();
    app.send(&phone(5), Purpose::Login).await.unwrap();
    assert_eq!(provider.requests(), 5, "the probe closed the breaker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_over_its_limit_costs_no_sms_and_no_hash() {
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let extra = [
        "--send-limit-per-ip",
        "60/h",
        "--send-burst-per-ip",
        "3",
        "--verify-limit-per-ip",
        "360/h",
        "--verify-burst-per-ip",
        "2",
    ];
    let app = app_with_provider(&provider, &extra).await;
    for n in 0..3 {
        app.send(&phone(n), Purpose::Login).await.unwrap();
    }
    let (requests, hashes) = (provider.requests(), app.hasher.computations());
    assert_eq!((requests, hashes), (3, 3));

    for n in 3..13 {
        let err = app.send(&phone(n), Purpose::Login).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(reason(&err), "RATE_LIMITED");
        assert_eq!(retry_delay(&err), Duration::from_secs(60));
    }
    assert_eq!(provider.requests(), 3, "zero extra requests reach the provider");
    assert_eq!(app.hasher.computations(), 3, "zero hashes for rejected calls");

    let code = code_sent(&provider, 0);
    app.verify(&phone(0), Purpose::Login, &wrong_code(&code)).await.unwrap();
    app.verify(&phone(0), Purpose::Login, &wrong_code(&code)).await.unwrap();
    let hashes = app.hasher.computations();
    let err = app.verify(&phone(0), Purpose::Login, &code).await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert_eq!(app.hasher.computations(), hashes, "a limited check computes no hash");
    assert_eq!(app.db.phone_state("+821010000000").await, (2, false), "and counts no attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_spread_over_one_prefix_are_cut_at_the_prefix_limit() {
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let app = app_with_provider(&provider, &["--sms-limit-per-prefix", "100/h", "--sms-burst-per-prefix", "5"]).await;
    // 010-1234-xxxx: one 7-digit prefix (8210123), five different numbers.
    for n in 0..5 {
        app.send(&format!("010-1234-{n:04}"), Purpose::Signup).await.unwrap();
    }
    let err = app.send("010-1234-0005", Purpose::Signup).await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    {
        use tonic_types::StatusExt;
        assert_eq!(err.get_error_details().error_info().unwrap().metadata["limit"], "destination_prefix");
    }
    assert_eq!(provider.requests(), 5);
    app.send("010-9876-0000", Purpose::Signup).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_resends_do_not_drain_a_prefixs_budget() {
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let app = app_with_provider(&provider, &["--sms-limit-per-prefix", "100/h", "--sms-burst-per-prefix", "2"]).await;
    app.send("010-1234-0001", Purpose::Login).await.unwrap();
    for _ in 0..10 {
        let err = app.send("010-1234-0001", Purpose::Login).await.unwrap_err();
        assert_eq!(reason(&err), "RESEND_COOLDOWN");
    }
    app.send("010-1234-0002", Purpose::Login).await.unwrap();
    assert_eq!(reason(&app.send("010-1234-0003", Purpose::Login).await.unwrap_err()), "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_wide_sms_rate_applies_to_everyone() {
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let app = app_with_provider(&provider, &["--global-sms-limit", "10/h", "--global-sms-burst", "2"]).await;
    app.send("010-1111-0000", Purpose::Login).await.unwrap();
    app.send("010-2222-0000", Purpose::Login).await.unwrap();
    let err = app.send("010-3333-0000", Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert_eq!(provider.requests(), 2);
}

async fn send_from(app: &TestApp, n: u32, forwarded_for: &str) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(send_req(&phone(n), Purpose::Login));
    request.metadata_mut().insert("x-forwarded-for", forwarded_for.parse().unwrap());
    app.otp.clone().send_code(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_honoured_only_from_trusted_proxies() {
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let limit = ["--send-limit-per-ip", "60/h", "--send-burst-per-ip", "2"];

    // No trusted proxy: a client cannot escape its limit by inventing addresses.
    let app = app_with_provider(&provider, &limit).await;
    send_from(&app, 0, "203.0.113.1").await.unwrap();
    send_from(&app, 1, "203.0.113.2").await.unwrap();
    let err = send_from(&app, 2, "203.0.113.3").await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");

    // Behind a trusted proxy (loopback here), each forwarded client has its own bucket; what a client
    // prepends before the proxy's entry is ignored.
    let mut args = limit.to_vec();
    args.extend(["--trusted-proxies", "127.0.0.0/8"]);
    let app = app_with_provider(&provider, &args).await;
    send_from(&app, 10, "203.0.113.1").await.unwrap();
    send_from(&app, 11, "198.51.100.9, 203.0.113.1").await.unwrap();
    let err = send_from(&app, 12, "192.0.2.77, 203.0.113.1").await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    send_from(&app, 13, "203.0.113.2").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_numbers_have_fixed_codes_and_never_reach_the_provider() {
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let app = app_with_provider(&provider, &["--test-numbers", "010-0000-0001=246810"]).await;
    app.send("+82 10 0000 0001", Purpose::Login).await.unwrap();
    assert_eq!(provider.requests(), 0);
    let r = app.verify("010-0000-0001", Purpose::Login, "246810").await.unwrap();
    assert_eq!(r.result(), VerifyResult::Approved);
    // Other numbers are sent as usual.
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(provider.requests(), 1);
}

/// The trap every integrator meets: otpd behind a backend that does not forward its drivers' addresses sees one
/// address for everyone, and after the per-IP burst every new driver is refused. With the documented set-up
/// (x-forwarded-for from a backend listed in --trusted-proxies) every driver has a budget of their own; without
/// it, the operator is warned once, naming the address, and the refusals show in the log (at most once a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_backend_each_driver_has_a_budget_and_the_operator_is_told_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("otpd.db").display());
    let mut args = process_args_with_limits(&db, &dir.path().join("sms.jsonl"));
    // All these numbers share one prefix: only the per-IP limit is under test.
    let more = ["--log-format", "json", "--trusted-proxies", "127.0.0.1", "--sms-limit-per-prefix", "off"];
    args.extend(more.map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let otpd = OtpdProcess::start(dir.path(), "otpd", &args, &[]).await;
    let mut otp = otpd.otp().await;
    let send = |n: u32, forwarded_for: Option<String>| {
        let mut request = tonic::Request::new(send_req(&phone(n), Purpose::Login));
        if let Some(client) = forwarded_for {
            request.metadata_mut().insert("x-forwarded-for", client.parse().unwrap());
        }
        request
    };
    // The backend forwards each driver's address: 15 drivers, more than the default burst of 10, all served.
    for n in 0..15 {
        otp.send_code(send(n, Some(format!("203.0.113.{n}")))).await.unwrap();
    }
    // A backend that forwards nothing: its first 10 drivers pass, the next is refused.
    for n in 100..110 {
        otp.send_code(send(n, None)).await.unwrap();
    }
    let err = otp.send_code(send(110, None)).await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    for n in 111..120 {
        otp.send_code(send(n, None)).await.unwrap_err();
    }
    let (_, log) = otpd.terminate().await;
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).collect::<Vec<_>>();
    let warned = lines("many different numbers");
    assert_eq!(warned.len(), 1, "once, for the backend's own address only: {warned:?}");
    assert!(warned[0].contains("127.0.0.1") && warned[0].contains("--trusted-proxies"), "{}", warned[0]);
    let refused = lines("front-line limit refused");
    assert_eq!(refused.len(), 1, "ten refusals, one line within the minute: {refused:?}");
    assert!(refused[0].contains("send_client_ip") && refused[0].contains("127.0.0.1"), "{}", refused[0]);
}
