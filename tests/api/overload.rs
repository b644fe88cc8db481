//! Bounded work under overload: a full hashing queue refuses at once with OVERLOADED before anything is counted,
//! and a caller whose deadline passes while queued costs no hash and no counted attempt.

use std::sync::Arc;
use std::time::Duration;

use otpd::pb::otp::v1::{Purpose, VerifyResult};
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

both_backends!(a_full_queue_refuses_at_once_and_counts_only_what_it_checked, a_caller_gone_while_queued_costs_nothing);

fn number(n: usize) -> String {
    format!("010-4444-{n:04}")
}

async fn a_full_queue_refuses_at_once_and_counts_only_what_it_checked(backend: Backend) {
    // One worker, a queue of 4, and hashes slow enough that 50 calls arrive while the first ones are hashed.
    let slow = ["--argon2-memory-kib", "32768", "--argon2-iterations", "2"];
    let mut args = vec!["--hash-workers", "1", "--hash-queue", "4", "--max-failed-attempts", "100"];
    args.extend(slow);
    let app = Arc::new(spawn_app_with(backend, &args).await);
    let mut codes = Vec::new();
    for n in 0..5 {
        codes.push(app.send_and_read(&number(n), Purpose::Login).await);
    }

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (app, wrong) = (Arc::clone(&app), wrong_code(&codes[i % 5]));
        calls.spawn(async move { app.verify(&number(i % 5), Purpose::Login, &wrong).await });
    }
    let (mut wrong, mut overloaded) = (0, 0);
    while let Some(answer) = calls.join_next().await {
        match answer.unwrap() {
            Ok(r) if r.result() == VerifyResult::WrongCode => wrong += 1,
            Ok(r) => panic!("unexpected answer {r:?}"),
            Err(status) => {
                assert_eq!((status.code(), reason(&status).as_str()), (Code::ResourceExhausted, "OVERLOADED"));
                retry_delay(&status);
                overloaded += 1;
            }
        }
    }
    assert!(overloaded > 0 && wrong >= 4, "{wrong} checked, {overloaded} refused");
    let mut counted = 0;
    for n in 0..5 {
        counted += app.db.phone_state(&format!("+82104444{n:04}")).await.0;
    }
    assert_eq!(counted, wrong, "the failures stored are exactly the WRONG_CODE answers");
}

async fn a_caller_gone_while_queued_costs_nothing(backend: Backend) {
    // One worker and a hash that takes far longer than the second caller is willing to wait.
    let args =
        ["--hash-workers", "1", "--hash-queue", "8", "--argon2-memory-kib", "262144", "--argon2-iterations", "3"];
    let app = Arc::new(spawn_app_with(backend, &args).await);
    let first = app.send_and_read(&number(1), Purpose::Login).await;
    let second = app.send_and_read(&number(2), Purpose::Login).await;

    let before = app.hasher.computations();
    let busy = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.verify(&number(1), Purpose::Login, &wrong_code(&first)).await })
    };
    while app.hasher.computations() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut request = tonic::Request::new(verify_req(&number(2), Purpose::Login, &wrong_code(&second)));
    request.set_timeout(Duration::from_millis(200));
    let err = app.otp.clone().verify_code(request).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    assert_eq!(busy.await.unwrap().unwrap().result(), VerifyResult::WrongCode);

    assert_eq!(app.hasher.computations(), before + 1, "the caller who had gone was never hashed");
    assert_eq!(app.db.phone_state("+821044440002").await, (0, false), "nor was its attempt counted");
    assert_eq!(app.db.phone_state("+821044440001").await, (1, false));
}

both_backends!(a_storm_from_one_client_does_not_starve_another);

/// A client that retries a refusal at once (here 32 calls in flight from one address, each retried the moment it
/// is answered) must not take every place in the hashing queue: another client's checks are served in turn.
/// Clients are told apart by address, so the test speaks as two addresses through a trusted proxy (loopback).
async fn a_storm_from_one_client_does_not_starve_another(backend: Backend) {
    let args = [
        "--hash-workers",
        "1",
        "--hash-queue",
        "2",
        "--hash-admission-wait",
        "250ms",
        "--argon2-memory-kib",
        "8192",
        "--argon2-iterations",
        "2",
        "--max-failed-attempts",
        "100",
        "--trusted-proxies",
        "127.0.0.1",
    ];
    let app = Arc::new(spawn_app_with(backend, &args).await);
    let mut codes = Vec::new();
    for n in 0..9 {
        codes.push(app.send_and_read(&number(n), Purpose::Login).await);
    }
    let check_from = |client: &'static str, n: usize, code: &str| {
        let mut request = tonic::Request::new(verify_req(&number(n), Purpose::Login, &wrong_code(code)));
        request.metadata_mut().insert("x-forwarded-for", client.parse().unwrap());
        request.set_timeout(Duration::from_secs(5));
        request
    };

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm_channel = channel(app.public_addr).await;
    let mut storm = tokio::task::JoinSet::new();
    for task in 0..32 {
        let (stop, code) = (Arc::clone(&stop), codes[task % 8].clone());
        let mut otp = otpd::pb::otp::v1::otp_service_client::OtpServiceClient::new(storm_channel.clone());
        storm.spawn(async move {
            let mut answers = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = otp.verify_code(check_from("203.0.113.1", task % 8, &code)).await;
                answers += 1;
            }
            answers
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The other client, on a connection of its own: one check at a time, as a driver's app makes them.
    let mut polite = otpd::pb::otp::v1::otp_service_client::OtpServiceClient::new(channel(app.public_addr).await);
    let (mut served, mut refused) = (0, 0);
    for _ in 0..10 {
        match polite.verify_code(check_from("203.0.113.2", 8, &codes[8])).await {
            Ok(r) => {
                assert_eq!(r.into_inner().result(), VerifyResult::WrongCode);
                served += 1;
            }
            Err(status) => {
                assert_eq!(reason(&status), "OVERLOADED", "{status:?}");
                refused += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut storm_answers = 0;
    while let Some(answers) = storm.join_next().await {
        storm_answers += answers.unwrap();
    }
    assert!(
        served >= 8,
        "the other client got {served} of 10 checks served ({refused} refused) during a storm of {storm_answers} answers"
    );
}

/// A refusal is decided before the request is decoded: the place in the hashing queue is the first thing a
/// SendCode or VerifyCode without an idempotency key asks for once its body is in, before tonic decodes it, so under
/// a full queue even a request that would be invalid is answered `OVERLOADED` (nothing decoded, parsed, spanned or
/// spawned: what keeps a refusal cheap). A body too large to read is `OUT_OF_RANGE` either way. Once there is room
/// the invalid requests get their field violations.
#[tokio::test]
async fn a_refusal_is_decided_before_the_request_is_read() {
    let args = [
        "--hash-workers",
        "1",
        "--hash-queue",
        "1",
        "--hash-admission-wait",
        "0s",
        "--argon2-memory-kib",
        "262144",
        "--argon2-iterations",
        "3",
    ];
    let app = Arc::new(spawn_app_with(Backend::Sqlite, &args).await);
    let code = app.send_and_read(&number(1), Purpose::Login).await;
    let before = app.hasher.computations();
    // A place is given back just after its answer, when the hashing thread is idle again: on a busy machine the
    // next call can still find the queue full (there is no admission wait here), so this check is tried until it
    // gets its place.
    let busy = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            loop {
                match app.verify(&number(1), Purpose::Login, &wrong_code(&code)).await {
                    Err(status) if reason(&status) == "OVERLOADED" => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    answer => return answer,
                }
            }
        })
    };
    while app.hasher.computations() == before {
        assert!(!busy.is_finished(), "the check ended without being hashed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let invalid_send = send_req("not a number", Purpose::Unspecified);
    let invalid_check = verify_req("not a number", Purpose::Login, "12");
    let refused = app.otp.clone().send_code(invalid_send.clone()).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::ResourceExhausted, "OVERLOADED"));
    let refused = app.otp.clone().verify_code(invalid_check.clone()).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::ResourceExhausted, "OVERLOADED"));
    let oversized = send_req(&"1".repeat(64 * 1024), Purpose::Login);
    let refused = app.otp.clone().send_code(oversized.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "read, within its bound, before the place: {refused:?}");

    assert_eq!(busy.await.unwrap().unwrap().result(), VerifyResult::WrongCode);
    // Once there is room (again tried until the place is back), the same requests get their field violations.
    for _ in 0..100 {
        let invalid = app.otp.clone().send_code(invalid_send.clone()).await.unwrap_err();
        if reason(&invalid) == "OVERLOADED" {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
        let invalid = app.otp.clone().verify_code(invalid_check).await.unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
        let oversized = app.otp.clone().send_code(oversized).await.unwrap_err();
        assert_eq!(oversized.code(), Code::OutOfRange, "{oversized:?}");
        return;
    }
    panic!("the queue never had room again");
}

/// A body that never ends: the headers of a call, and then nothing.
struct NeverEnds;

impl http_body::Body for NeverEnds {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// A call whose body has not arrived holds no place in the hashing queue: the front reads the body (bounded)
/// before it takes a place, so clients that send headers and then trickle their bodies cannot keep the queue full
/// while nothing is hashed.
#[tokio::test]
async fn a_call_whose_body_has_not_arrived_holds_no_place() {
    let args = ["--hash-workers", "1", "--hash-queue", "1", "--hash-admission-wait", "0s"];
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    let stream = tokio::net::TcpStream::connect(app.public_addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(connection);
    let mut stalled = Vec::new();
    for path in ["SendCode", "VerifyCode"] {
        let request =
            tonic::codegen::http::Request::post(format!("http://{}/otp.v1.OtpService/{path}", app.public_addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(NeverEnds)
                .unwrap();
        stalled.push(tokio::spawn(sender.send_request(request)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stalled.iter().all(|call| !call.is_finished()), "still waiting for their bodies");
    // The one place is free: a whole call takes it and is served, however many bodies are still to come.
    app.send(&number(7), Purpose::Login).await.expect("served: the stalled calls hold no place");
    for call in stalled {
        call.abort();
    }
}
