//! Idempotency keys (issue 18 §3): a SendCode or VerifyCode repeated with the same `idempotency-key` answers the
//! first call's outcome and does nothing else, on either backend and across replicas on one PostgreSQL; a replica
//! killed mid-send is taken over without a second SMS.

use std::time::Duration;

use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult};
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;
use crate::provider::{FakeProvider, Reply};

both_backends!(
    key_claims_are_exclusive_and_a_takeover_fences_the_old_owner,
    a_repeated_send_answers_the_first_and_sends_nothing,
    a_retried_wrong_code_counts_once_and_a_right_one_approves_once,
    refusals_that_a_retry_may_change_free_the_key
);

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("idempotency-key", key.parse().unwrap());
    request.set_timeout(Duration::from_secs(20));
    request
}

fn replayed<T>(response: &tonic::Response<T>) -> bool {
    response.metadata().get("otp-idempotent-replay").is_some()
}

/// Codes stored for `e164`.
async fn codes(db: &TestDb, e164: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM codes WHERE phone = $1";
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).bind(e164).fetch_one(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).bind(e164).fetch_one(&pool).await.unwrap()
        }
    }
}

async fn a_repeated_send_answers_the_first_and_sends_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut otp = app.otp.clone();
    let first = otp.send_code(keyed(send_req(PHONE, Purpose::Login), "press-1")).await.unwrap();
    assert!(!replayed(&first));
    // The same action retried, in another spelling of the same number: the first answer, nothing sent.
    app.advance(chrono::TimeDelta::seconds(40));
    let again = otp.send_code(keyed(send_req(PHONE_INTL, Purpose::Login), "press-1")).await.unwrap();
    assert!(replayed(&again));
    assert_eq!(again.get_ref(), first.get_ref());
    assert!(!again.get_ref().delivery_unconfirmed);
    assert_eq!(app.sms().len(), 1, "one SMS");
    assert_eq!(codes(&app.db, PHONE_E164).await, 1, "one code");

    // The key names one action: another number (or purpose) with it is refused, and nothing is done.
    let err = otp.send_code(keyed(send_req("010-9999-0000", Purpose::Login), "press-1")).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"));
    let err = otp.send_code(keyed(send_req(PHONE, Purpose::Signup), "press-1")).await.unwrap_err();
    assert_eq!(reason(&err), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.sms().len(), 1);

    // A new action (a new key) past the cooldown sends again; a key of the same text for VerifyCode is its own.
    let resend = otp.send_code(keyed(send_req(PHONE, Purpose::Login), "press-2")).await.unwrap();
    assert_eq!(resend.get_ref().verification_id, first.get_ref().verification_id);
    assert_eq!(app.sms().len(), 2);
    let check = otp.verify_code(keyed(verify_req(PHONE, Purpose::Login, &app.last_code()), "press-1")).await;
    assert_eq!(check.unwrap().get_ref().result(), VerifyResult::Approved);

    // A key that is not 1-255 printable ASCII characters is refused before anything is done.
    for bad in [String::new(), "x".repeat(256), "tab\there".into()] {
        let mut request = tonic::Request::new(send_req("010-5555-0000", Purpose::Login));
        request.metadata_mut().insert("idempotency-key", bad.parse().unwrap());
        let err = otp.send_code(request).await.unwrap_err();
        assert_eq!((err.code(), reason(&err).as_str()), (Code::InvalidArgument, "INVALID_IDEMPOTENCY_KEY"), "{bad:?}");
    }
    assert_eq!(app.sms().len(), 2);
    // A day later the key is forgotten: the same key is a new action.
    app.advance(chrono::TimeDelta::hours(25));
    app.stores.verification.purge(app.now() - chrono::TimeDelta::days(2), app.now()).await.unwrap();
    let later = otp.send_code(keyed(send_req("010-9999-0000", Purpose::Login), "press-1")).await.unwrap();
    assert!(!replayed(&later));
    assert_eq!(app.sms().len(), 3);
}

async fn a_retried_wrong_code_counts_once_and_a_right_one_approves_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut otp = app.otp.clone();
    let code = app.send_and_read(PHONE, Purpose::Login).await;
    let wrong = verify_req(PHONE, Purpose::Login, &wrong_code(&code));
    let first = otp.verify_code(keyed(wrong.clone(), "typed-1")).await.unwrap();
    for _ in 0..3 {
        let again = otp.verify_code(keyed(wrong.clone(), "typed-1")).await.unwrap();
        assert!(replayed(&again));
        assert_eq!(again.get_ref(), first.get_ref());
    }
    assert_eq!(first.get_ref().result(), VerifyResult::WrongCode);
    assert_eq!(first.get_ref().attempts_remaining, 9);
    assert_eq!(app.db.phone_state(PHONE_E164).await, (1, false), "counted once");
    // Another code typed under the same key is another request.
    let err = otp.verify_code(keyed(verify_req(PHONE, Purpose::Login, &code), "typed-1")).await.unwrap_err();
    assert_eq!(reason(&err), "IDEMPOTENCY_KEY_REUSED");

    let right = verify_req(PHONE, Purpose::Login, &code);
    let approved = otp.verify_code(keyed(right.clone(), "typed-2")).await.unwrap();
    assert_eq!(approved.get_ref().result(), VerifyResult::Approved);
    // The retry of the approving check is answered APPROVED again (not ALREADY_VERIFIED); an unkeyed one is not.
    let again = otp.verify_code(keyed(right.clone(), "typed-2")).await.unwrap();
    assert!(replayed(&again));
    assert_eq!(again.get_ref(), approved.get_ref());
    let err = otp.verify_code(right).await.unwrap_err();
    assert_eq!(reason(&err), "ALREADY_VERIFIED");
    assert_eq!(app.db.phone_state(PHONE_E164).await, (0, false));
    // Nothing recoverable of the code in the store: the fingerprint is keyed.
    assert!(app.db.dump().await.iter().all(|row| !row.contains(&code)));
}

async fn refusals_that_a_retry_may_change_free_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut otp = app.otp.clone();
    otp.send_code(keyed(send_req(PHONE, Purpose::Login), "a")).await.unwrap();
    // Too soon: refused, and the key is freed, so the same action retried after RetryInfo's delay sends.
    let err = otp.send_code(keyed(send_req(PHONE, Purpose::Login), "b")).await.unwrap_err();
    assert_eq!(reason(&err), "RESEND_COOLDOWN");
    app.advance(chrono::TimeDelta::from_std(retry_delay(&err)).unwrap());
    let sent = otp.send_code(keyed(send_req(PHONE, Purpose::Login), "b")).await.unwrap();
    assert!(!replayed(&sent));
    assert_eq!(app.sms().len(), 2);
    // A refusal a retry would only repeat stands: no pending verification for this purpose.
    let err = otp.verify_code(keyed(verify_req(PHONE, Purpose::Signup, "123456"), "c")).await.unwrap_err();
    assert_eq!(reason(&err), "NO_PENDING_VERIFICATION");
    otp.send_code(keyed(send_req(PHONE, Purpose::Signup), "d")).await.unwrap_err();
    app.advance(chrono::TimeDelta::seconds(31));
    otp.send_code(keyed(send_req(PHONE, Purpose::Signup), "d")).await.unwrap();
    let err = otp.verify_code(keyed(verify_req(PHONE, Purpose::Signup, "123456"), "c")).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::NotFound, "NO_PENDING_VERIFICATION"));
    assert_eq!(err.metadata().get("otp-idempotent-replay").map(|v| v.to_str().unwrap()), Some("true"));
}

/// Settings of a replica that delivers through `provider`, with a short idempotency lease.
fn replica_args(db: &TestDb, provider: &FakeProvider, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--database-url",
        &db.url,
        "--sms-gateway",
        &provider.gateway(),
        "--pepper",
        TEST_PEPPER,
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--idempotency-lease",
        "1s",
    ]
    .map(str::to_owned)
    .into();
    args.extend(NO_FRONT_LIMITS.map(str::to_owned));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

async fn replica(dir: &std::path::Path, name: &str, args: &[String]) -> OtpdProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    OtpdProcess::start(dir, name, &args, &[]).await
}

/// Three replicas on one PostgreSQL: 50 duplicates of one SendCode spread over them send one SMS and all answer
/// the same verification; a wrong code retried on the other replicas counts once; the key with another number
/// is refused on any replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_duplicates_across_three_replicas_send_one_sms() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let provider = FakeProvider::start(vec![], Reply::Accept("ok")).await;
    let args = replica_args(&db, &provider, &[]);
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(replica(dir.path(), name, &args).await);
    }
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.otp().await);
    }

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let mut client = clients[i % 3].clone();
        calls.spawn(async move { client.send_code(keyed(send_req(PHONE, Purpose::Login), "action-50")).await });
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut replays = 0;
    while let Some(result) = calls.join_next().await {
        let response = result.unwrap().unwrap_or_else(|status| panic!("a duplicate failed: {status:?}"));
        replays += usize::from(replayed(&response));
        ids.insert(response.into_inner().verification_id);
    }
    assert_eq!(provider.requests(), 1, "one SMS for 50 duplicates");
    assert_eq!(ids.len(), 1, "every duplicate answers the same verification: {ids:?}");
    assert_eq!(replays, 49);

    // The driver typed a wrong code; the backend's call timed out and was retried on each other replica.
    let wrong = verify_req(PHONE, Purpose::Login, "000000");
    let mut answers = Vec::new();
    for client in &mut clients {
        answers.push(client.verify_code(keyed(wrong.clone(), "typed-once")).await.unwrap().into_inner());
    }
    assert!(answers.iter().all(|a| a.result() == VerifyResult::WrongCode && a.attempts_remaining == 9), "{answers:?}");
    assert_eq!(db.phone_state(PHONE_E164).await, (1, false), "one failure counted");

    let err = clients[2].send_code(keyed(send_req("010-2222-3333", Purpose::Login), "action-50")).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"));
    assert_eq!(provider.requests(), 1);
    for r in replicas {
        r.terminate().await;
    }
}

/// A replica killed (SIGKILL) after it handed the SMS to the provider and before the provider answered; the
/// backend retries on another replica with the same key. The other replica waits for the dead one's lease,
/// takes the key over, and answers the first send's verification (its delivery unconfirmed) without a second
/// request to the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_send_is_taken_over_without_a_second_sms() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let provider = FakeProvider::start(vec![Reply::Slow(Duration::from_secs(60))], Reply::Accept("ok")).await;
    // One HTTP attempt that waits long enough for the kill: the first request is the only one.
    let slow = ["--sms-timeout", "30s", "--sms-http-attempt-timeout", "30s"];
    let args = replica_args(&db, &provider, &slow);
    let mut a = replica(dir.path(), "a", &args).await;
    let b = replica(dir.path(), "b", &args).await;

    let mut on_a = a.otp().await;
    let first = tokio::spawn(async move {
        let mut request = keyed(send_req(PHONE, Purpose::Login), "press-send");
        request.set_timeout(Duration::from_secs(40));
        on_a.send_code(request).await
    });
    let waited = tokio::time::Instant::now();
    while provider.requests() == 0 {
        assert!(waited.elapsed() < Duration::from_secs(20), "the SMS never reached the provider");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    first.await.unwrap().unwrap_err();

    let mut on_b = b.otp().await;
    let retried = on_b.send_code(keyed(send_req(PHONE, Purpose::Login), "press-send")).await.unwrap();
    assert!(replayed(&retried));
    let retried = retried.into_inner();
    assert!(retried.delivery_unconfirmed, "the provider never answered the first attempt: {retried:?}");
    let received = provider.received();
    assert_eq!(received.len(), 1, "one request reached the provider");
    assert_eq!(received[0].body["reference"], retried.verification_id, "the first send's verification");
    assert_eq!(codes(&db, PHONE_E164).await, 1);
    // And it stays answered: another retry replays the same.
    let again = on_b.send_code(keyed(send_req(PHONE, Purpose::Login), "press-send")).await.unwrap();
    assert_eq!(again.into_inner(), retried);
    assert_eq!(provider.requests(), 1);
    b.terminate().await;
}

/// A repeat while the first call still runs waits for it within its deadline; a repeat whose deadline is too
/// short for that is told ABORTED with RetryInfo, and gets the outcome when it retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeat_waits_for_the_first_or_is_aborted_with_retry_info() {
    // Slower than the short repeat's deadline, within one HTTP attempt (3 s by default).
    let provider = FakeProvider::start(vec![Reply::Slow(Duration::from_millis(2500))], Reply::Accept("ok")).await;
    let app = spawn_app_with(Backend::Postgres, &["--sms-gateway", &provider.gateway()]).await;
    let mut otp = app.otp.clone();
    let first = {
        let mut otp = otp.clone();
        tokio::spawn(async move { otp.send_code(keyed(send_req(PHONE, Purpose::Login), "k")).await })
    };
    while provider.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut short = keyed(send_req(PHONE, Purpose::Login), "k");
    short.set_timeout(Duration::from_millis(1200));
    let err = otp.send_code(short).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Aborted, "IDEMPOTENCY_KEY_IN_USE"));
    assert!(retry_delay(&err) > Duration::ZERO);
    let waited = otp.send_code(keyed(send_req(PHONE, Purpose::Login), "k")).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert!(replayed(&waited));
    assert_eq!(waited.get_ref(), first.get_ref());
    assert_eq!(provider.requests(), 1);
}

#[test]
fn the_header_is_named_in_the_proto_and_the_docs() {
    let read =
        |path: &str| std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    assert!(read("proto/otp/v1/otp.proto").contains("`idempotency-key`"));
    assert!(read("docs/integration.md").contains("idempotency-key"));
    assert!(pb::ErrorReason::from_str_name("ERROR_REASON_IDEMPOTENCY_KEY_REUSED").is_some());
}

/// The store's contract for keys, on both backends: of 30 concurrent claims one wins; a takeover is possible only
/// once the lease has run out, happens once however many try, and fences every later write of the old owner.
async fn key_claims_are_exclusive_and_a_takeover_fences_the_old_owner(backend: Backend) {
    use otpd::store::idempotency::{Claimed, KeyClaim, KeyOutcome};
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let stores = otpd::store::connect(&db.url).await.unwrap();
    stores.verification.migrate().await.unwrap();
    let keys = stores.keys;
    let t0 = chrono::Utc::now();
    let claim = |now: chrono::DateTime<chrono::Utc>| KeyClaim {
        scope: "SendCode@127.0.0.1".into(),
        key: "k".into(),
        fingerprint: "f".into(),
        token: uuid::Uuid::new_v4(),
        now,
        lease_until: now + chrono::TimeDelta::seconds(10),
        expires_at: now + chrono::TimeDelta::hours(24),
    };
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let (keys, claim) = (std::sync::Arc::clone(&keys), claim(t0));
        racing.spawn(async move { (keys.claim_key(&claim).await.unwrap(), claim.token) });
    }
    let mut owners = Vec::new();
    while let Some(done) = racing.join_next().await {
        match done.unwrap() {
            (Claimed::Mine, token) => owners.push(token),
            (Claimed::Taken(record), _) => {
                assert_eq!((record.fingerprint.as_str(), record.outcome.is_none()), ("f", true));
            }
        }
    }
    assert_eq!(owners.len(), 1, "one claim wins");
    let first = owners[0];
    let scope = "SendCode@127.0.0.1";
    assert!(keys.renew_key(scope, "k", first, t0 + chrono::TimeDelta::seconds(20)).await.unwrap());

    // Within the lease no one takes over; past it, exactly one of several does.
    assert!(!keys.take_over_key(&claim(t0 + chrono::TimeDelta::seconds(15))).await.unwrap());
    let later = t0 + chrono::TimeDelta::seconds(21);
    let (a, b) = (claim(later), claim(later));
    let (took_a, took_b) = tokio::join!(keys.take_over_key(&a), keys.take_over_key(&b));
    let (took_a, took_b) = (took_a.unwrap(), took_b.unwrap());
    assert!(took_a ^ took_b, "one takeover");
    let other_fingerprint = KeyClaim { fingerprint: "g".into(), ..claim(later + chrono::TimeDelta::hours(1)) };
    assert!(!keys.take_over_key(&other_fingerprint).await.unwrap(), "never for another request");

    // The old owner is fenced: it can neither renew, nor record its code before a hand-over, nor finish.
    let outcome = KeyOutcome { code: 0, message: String::new(), body: vec![1, 2, 3] };
    assert!(!keys.renew_key(scope, "k", first, later).await.unwrap());
    assert!(!keys.key_progress(scope, "k", first, otpd::store::CodeId(1), b"answer").await.unwrap());
    assert!(!keys.finish_key(scope, "k", first, &outcome).await.unwrap());
    keys.release_key(scope, "k", first).await.unwrap();
    let owner = if took_a { a.token } else { b.token };
    assert!(keys.finish_key(scope, "k", owner, &outcome).await.unwrap());
    let record = keys.key_record(scope, "k").await.unwrap().unwrap();
    assert_eq!(record.outcome, Some(outcome.clone()));
    // A kept outcome is never freed, and stays until the row expires; then the key is claimed afresh.
    keys.release_key(scope, "k", owner).await.unwrap();
    assert!(
        matches!(keys.claim_key(&claim(later)).await.unwrap(), Claimed::Taken(r) if r.outcome == Some(outcome.clone()))
    );
    let next_day = t0 + chrono::TimeDelta::hours(25);
    assert_eq!(keys.claim_key(&claim(next_day)).await.unwrap(), Claimed::Mine);
}
