//! `otpctl` end to end, as a team lead, an admin and an auditor use it against a running otpd.

use otpd::pb::otp::v1::{Purpose, VerifyResult};

use crate::helpers::*;

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_leads_day_with_otpctl() {
    let app = spawn_app(Backend::Sqlite).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let admin = app.add_supervisor("park", "admin").await;
    let auditor = app.add_supervisor("lee", "auditor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();

    // Readable lookup: the code, large and clear, the masked number, the time left.
    let (code, out, err) =
        otpctl(&app, &kim, &["lookup", "--phone", PHONE, "--ticket", "CS-1", "--caller", PHONE_E164]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("인증번호 / CODE") && out.contains("010-****-5678") && out.contains("min"), "{out}");
    let spaced = out.lines().find(|l| l.contains("CODE")).unwrap().split("CODE").nth(1).unwrap().replace(' ', "");
    assert_eq!(spaced.len(), 6);
    assert_eq!(app.verify(PHONE, Purpose::Login, &spaced).await.unwrap().result(), VerifyResult::Approved);

    // JSON lookup after the driver presses send again.
    app.advance(chrono::TimeDelta::seconds(31));
    app.send(PHONE, Purpose::Login).await.unwrap();
    let (code, out, _) = otpctl(
        &app,
        &kim,
        &["--json", "lookup", "--phone", PHONE, "--ticket", "CS-2", "--callback", "01012345678", "--purpose", "login"],
    )
    .await;
    assert_eq!(code, Some(0));
    let looked_up = json(&out);
    assert_eq!(looked_up["purpose"], "login");
    let the_code = looked_up["code"].as_str().unwrap();
    assert_eq!(app.verify(PHONE, Purpose::Login, the_code).await.unwrap().result(), VerifyResult::Approved);

    // A third party's number: refused, explained in Korean and English.
    app.advance(chrono::TimeDelta::seconds(31));
    app.send(PHONE, Purpose::Login).await.unwrap();
    let (code, _, err) =
        otpctl(&app, &kim, &["lookup", "--phone", PHONE, "--ticket", "CS-3", "--caller", "010-9999-8888"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("제3자") && err.contains("third party"), "{err}");
    let (code, out, _) =
        otpctl(&app, &kim, &["--json", "lookup", "--phone", PHONE, "--ticket", "CS-3", "--caller", "010-9999-8888"])
            .await;
    assert_eq!(code, Some(1));
    assert_eq!(json(&out)["error"]["reason"], "THIRD_PARTY_NUMBER");

    // Lock the number, see why, unlock it.
    let sms_code = app.last_code();
    for _ in 0..10 {
        app.verify(PHONE, Purpose::Login, &wrong_code(&sms_code)).await.unwrap();
    }
    let (code, out, _) = otpctl(&app, &kim, &["status", "--phone", PHONE, "--ticket", "CS-4"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("예 / yes") && out.contains("10"), "{out}");
    // The number as a Korean call centre writes it, and the sends beside their cap (issue 21, section 6).
    assert!(out.contains("010-****-5678") && out.contains("SMS 1시간 / last hour          3/5"), "{out}");
    let (_, out, _) = otpctl(&app, &kim, &["--json", "status", "--phone", PHONE, "--ticket", "CS-4"]).await;
    let status = json(&out);
    assert_eq!(status["failed_attempts"], 10);
    assert!(status["locked_until"].is_string());
    assert_eq!(status["pending"][0]["sends"][0]["channel"], "sms");

    let (code, _, err) =
        otpctl(&app, &kim, &["unlock", "--phone", PHONE, "--ticket", "CS-4", "--reason", "callback verified"]).await;
    assert_eq!(code, Some(1), "a team lead cannot unlock");
    assert!(err.contains("권한"), "{err}");
    let (code, out, _) = otpctl(
        &app,
        &admin,
        &["--json", "unlock", "--phone", PHONE, "--ticket", "CS-4", "--reason", "callback verified"],
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(json(&out)["was_locked"], true);
    assert_eq!(json(&out)["failed_attempts_cleared"], 10);

    // The auditor reads what happened.
    let (code, out, _) = otpctl(&app, &auditor, &["--json", "audit", "--action", "lookup-code", "--since", "1h"]).await;
    assert_eq!(code, Some(0));
    let events = json(&out)["events"].as_array().unwrap().clone();
    let outcomes: Vec<&str> = events.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["denied", "denied", "granted", "granted"], "newest first");
    assert_eq!(events[2]["ticket_id"], "CS-2");
    assert_eq!(events[2]["contact"], "outbound_callback");
    // Where each call came from (제8조): otpctl's own address; no browser, so no user agent.
    assert!(events.iter().all(|e| e["client_address"] == "127.0.0.1" && e["user_agent"] == ""), "{events:?}");
    let (code, out, _) = otpctl(&app, &auditor, &["audit", "--limit", "3"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.ends_with("[접속 / from 127.0.0.1]")), "{out}");

    // Without a token, otpctl says what to do.
    let (code, _, err) = otpctl(&app, "", &["status", "--phone", PHONE, "--ticket", "CS-5"]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("OTPCTL_TOKEN"), "{err}");
    let (code, _, err) = otpctl(&app, "otps_wrong", &["status", "--phone", PHONE, "--ticket", "CS-5"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("token"), "{err}");
}

/// otpctl never sends the bearer token in clear off this machine: a plaintext server that is not on loopback is
/// refused before any connection (`.invalid` never resolves, so nothing could be sent there anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_goes_in_clear_off_loopback() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpctl"))
        .args(["--server", "http://otpd.invalid:50052", "status", "--phone", PHONE, "--ticket", "CS-1"])
        .env("OTPCTL_TOKEN", "otp_sup_never-sent")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("https://") && !err.contains("never-sent"), "{err}");
}
