//! What operators and tools see: health and reflection on both listeners, start-up checks, the dev pepper that
//! survives restarts, `otpd migrate`.

use otpd::pb::otp::v1::{Purpose, VerifyResult};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::*;

#[tokio::test]
async fn health_is_serving_on_both_listeners() {
    let app = spawn_app(Backend::Sqlite).await;
    for addr in [app.public_addr, app.admin_addr] {
        for service in ["", "otp.v1.OtpService", "otp.v1.SupervisorService"] {
            assert_eq!(app.health(addr, service).await, ServingStatus::Serving as i32, "{addr} {service:?}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = ServerReflectionClient::new(channel(app.public_addr).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["otp.v1.OtpService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[tokio::test]
async fn prod_mode_refuses_dev_gateways_and_missing_pepper() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("OTPD_PEPPER")
            .output()
            .unwrap()
    };
    let out = run(&["--mode", "prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sms-gateway"), "{out:?}");
    let out = run(&["--mode", "prod", "--sms-gateway", "log", "--pepper", TEST_PEPPER]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--code-ttl", "11m"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--code-ttl"), "{out:?}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "a refused start writes nothing");
}

/// Dev mode generates a pepper file once; codes survive a restart because the next start reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_pepper_is_generated_once_and_codes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("file:{}", dir.path().join("sms.jsonl").display());
    let args = ["--sms-gateway", &gateway, "--argon2-memory-kib", "1024", "--argon2-iterations", "1"];
    let first = OtpdProcess::start(dir.path(), "first", &args, &[]).await;
    first.otp().await.send_code(send_req(PHONE, Purpose::Login)).await.unwrap();
    first.terminate().await;
    let pepper = std::fs::read(dir.path().join("otpd.pepper")).unwrap();
    assert_eq!(pepper.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("otpd.pepper")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the pepper file is private");
    }

    let second = OtpdProcess::start(dir.path(), "second", &args, &[]).await;
    let code = code_in(&read_sms(&dir.path().join("sms.jsonl"))[0].body);
    let r = second.otp().await.verify_code(verify_req(PHONE, Purpose::Login, &code)).await.unwrap().into_inner();
    assert_eq!(r.result(), VerifyResult::Approved);
    assert_eq!(std::fs::read(dir.path().join("otpd.pepper")).unwrap(), pepper, "the pepper is not regenerated");
    second.terminate().await;
}

#[tokio::test]
async fn migrate_subcommand_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(["migrate", "--database-url", &url])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "audit_events",
            "calls",
            "codes",
            "delivery_attempts",
            "guard_counts",
            "guard_overrides",
            "idempotency_keys",
            "lookup_notices",
            "passkeys",
            "phone_state",
            "sign_in_challenges",
            "sign_in_guards",
            "sms_budgets",
            "supervisor_sessions",
            "supervisors",
            "verifications"
        ]
    );
}

/// With the database gone, calls answer UNAVAILABLE with RetryInfo (never INTERNAL with a driver's text) and
/// health turns NOT_SERVING at its next check, but the liveness name stays SERVING (no restart storm during an
/// outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_unavailable_and_not_serving() {
    use sqlx::Connection;
    let app = spawn_app(Backend::Postgres).await;
    app.send(PHONE, otpd::pb::otp::v1::Purpose::Login).await.unwrap();
    let name = app.db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();

    let err = app.send("010-2222-3333", otpd::pb::otp::v1::Purpose::Login).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(!err.message().contains(&name), "no database text reaches the client: {}", err.message());
    retry_delay(&err);

    // The health check runs every 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while app.health(app.public_addr, "otp.v1.OtpService").await != ServingStatus::NotServing as i32 {
        assert!(std::time::Instant::now() < deadline, "health never turned NOT_SERVING");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(app.health(app.public_addr, "").await, ServingStatus::NotServing as i32);
    assert_eq!(app.health(app.admin_addr, otpd::startup::LIVENESS_NAME).await, ServingStatus::Serving as i32);
    assert_eq!(app.health(app.public_addr, otpd::startup::LIVENESS_NAME).await, ServingStatus::Serving as i32);
}
