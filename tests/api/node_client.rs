//! examples/node (the Node client docs/integration.md describes: @grpc/grpc-js, from npm with its lockfile,
//! installed by scripts/test) against a real otpd: it sends, verifies, and prints the decoded ErrorInfo, RetryInfo
//! and BadRequest of refusals; and it forwards the driver's address as the client-address contract says.

use serde_json::Value;

use crate::helpers::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/node");

/// Runs `node client.js args…` against `app` as driver `driver_ip`; its one JSON line and exit code.
async fn node(app: &TestApp, driver_ip: &str, args: &[&str]) -> (Value, Option<i32>) {
    assert!(
        std::path::Path::new(EXAMPLE).join("node_modules/@grpc/grpc-js").exists(),
        "examples/node/node_modules is missing: `npm ci` in examples/node (scripts/test does it)"
    );
    let out = tokio::process::Command::new("node")
        .arg("client.js")
        .args(args)
        .current_dir(EXAMPLE)
        .env("OTPD_ADDRESS", app.public_addr.to_string())
        .env("DRIVER_IP", driver_ip)
        .output()
        .await
        .expect("node (Debian's nodejs; scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output: {}", String::from_utf8_lossy(&out.stderr)));
    (serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")), out.status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_sends_verifies_and_decodes_error_details() {
    let app = spawn_app(Backend::Sqlite).await;
    let driver = "203.0.113.7";

    let (sent, exit) = node(&app, driver, &["send", "010-1234-5678"]).await;
    assert_eq!((sent["ok"].as_bool(), exit), (Some(true), Some(0)), "{sent}");
    assert_eq!(sent["response"]["maskedPhoneNumber"], "+82 10-****-5678");
    assert_eq!(sent["response"]["sender"], "1800-3400");

    // A resend at once: RESOURCE_EXHAUSTED with ErrorInfo and RetryInfo, decoded.
    let (refused, exit) = node(&app, driver, &["send", "010-1234-5678"]).await;
    assert_eq!((refused["status"].as_str(), exit), (Some("RESOURCE_EXHAUSTED"), Some(1)), "{refused}");
    assert_eq!(refused["errorInfo"]["reason"], "RESEND_COOLDOWN");
    assert_eq!(refused["errorInfo"]["domain"], "otp.v1");
    assert!(refused["errorInfo"]["metadata"]["retry_at"].is_string(), "{refused}");
    let delay = refused["retryInfo"]["retryDelaySeconds"].as_f64().unwrap();
    assert!(delay > 0.0 && delay <= 30.0, "{refused}");

    // A wrong code is an answer, not an error; the right one approves.
    let (wrong, exit) = node(&app, driver, &["verify", "010-1234-5678", &wrong_code(&app.last_code())]).await;
    assert_eq!(exit, Some(0), "{wrong}");
    assert_eq!(wrong["response"]["result"], "VERIFY_RESULT_WRONG_CODE");
    assert_eq!(wrong["response"]["attemptsRemaining"], 9);
    let (right, _) = node(&app, driver, &["verify", "010-1234-5678", &app.last_code()]).await;
    assert_eq!(right["response"]["result"], "VERIFY_RESULT_APPROVED", "{right}");

    // Bad input: INVALID_ARGUMENT with every field in BadRequest.
    let (bad, exit) = node(&app, driver, &["verify", "010-1234-56", "12"]).await;
    assert_eq!((bad["status"].as_str(), exit), (Some("INVALID_ARGUMENT"), Some(1)), "{bad}");
    assert_eq!(bad["errorInfo"]["reason"], "INVALID_PHONE_NUMBER");
    let fields: Vec<&str> =
        bad["badRequest"]["fieldViolations"].as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["phone_number", "code"]);
    app.stop().await;
}

/// The client-address contract: the backend forwards each driver's address in x-forwarded-for and is listed in
/// --trusted-proxies, so each driver has a per-address budget of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_forwards_the_drivers_address() {
    let limit = ["--send-limit-per-ip", "60/h", "--send-burst-per-ip", "1", "--trusted-proxies", "127.0.0.0/8"];
    let app = spawn_app_with(Backend::Sqlite, &limit).await;
    let (first, _) = node(&app, "203.0.113.7", &["send", "010-1111-0001"]).await;
    assert_eq!(first["ok"], true, "{first}");
    let (again, _) = node(&app, "203.0.113.7", &["send", "010-1111-0002"]).await;
    assert_eq!(again["errorInfo"]["reason"], "RATE_LIMITED", "{again}");
    assert!(again["retryInfo"]["retryDelaySeconds"].as_f64().unwrap() > 0.0, "{again}");
    let (other, _) = node(&app, "198.51.100.9", &["send", "010-1111-0003"]).await;
    assert_eq!(other["ok"], true, "another driver has a budget of their own: {other}");
    app.stop().await;
}
