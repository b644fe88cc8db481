//! Test harness: a fresh database per test (a SQLite file in a temp dir, or a new PostgreSQL database), the
//! real application on loopback port 0 with a manual clock and the `file` SMS gateway, and typed clients.
//! `TEST_LOG=1` shows the application's logs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use clap::Parser;
use otpd::clock::ManualClock;
use otpd::config::{Cli, Config};
use otpd::pb::otp::v1 as pb;
use otpd::sms::FileSms;
use otpd::startup::Application;
use pb::otp_service_client::OtpServiceClient;
use pb::supervisor_service_client::SupervisorServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

/// A pepper shared by the test servers, so that processes can check each other's codes.
pub const TEST_PEPPER: &str = "test-pepper-0123456789abcdef";
/// The audit key the test servers derive from [`TEST_PEPPER`].
pub fn test_audit_key() -> otpd::domain::audit::AuditKey {
    otpd::hashing::Pepper::new(TEST_PEPPER.as_bytes().to_vec()).unwrap().derive_audit_key()
}

/// A Korean mobile number in three spellings.
/// Words of the lookup notice's default text.
pub const LOOKUP_NOTICE_MARK: &str = "고객센터에서 인증번호를 안내했습니다";
pub const PHONE: &str = "010-1234-5678";
pub const PHONE_E164: &str = "+821012345678";
pub const PHONE_INTL: &str = "+82 10 1234 5678";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` as two tests: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}

pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        otpd::telemetry::init(otpd::telemetry::LogFormat::Pretty);
    }
}

/// The PostgreSQL server tests create databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("OTPD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database; the SQLite file lives in `dir`.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
}

impl TestDb {
    pub async fn new(backend: Backend, dir: &Path) -> Self {
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.join("otpd.db").display()),
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = postgres_admin_url();
                let name = format!("otpd_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is needed for the tests (scripts/test starts it): {e}")
                });
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base).to_owned();
                format!("{base}/{name}")
            }
        };
        Self { url, backend }
    }

    /// Every text value in every table, one string per row, for searching for secrets.
    pub async fn dump(&self) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                let mut rows = Vec::new();
                for table in ["phone_state", "verifications", "codes", "delivery_attempts", "calls"] {
                    let cols: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                    let expr = cols
                        .iter()
                        .map(|c| format!("COALESCE(CAST({c} AS TEXT), '')"))
                        .collect::<Vec<_>>()
                        .join(" || '|' || ");
                    rows.extend(
                        sqlx::query_scalar::<_, String>(&format!("SELECT {expr} FROM {table}"))
                            .fetch_all(&pool)
                            .await
                            .unwrap(),
                    );
                }
                rows
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let mut rows = Vec::new();
                for table in ["phone_state", "verifications", "codes", "delivery_attempts", "calls"] {
                    rows.extend(
                        sqlx::query_scalar::<_, String>(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                            .fetch_all(&pool)
                            .await
                            .unwrap(),
                    );
                }
                rows
            }
        }
    }

    /// The number's stored failure count and lock.
    pub async fn phone_state(&self, e164: &str) -> (i64, bool) {
        let sql = "SELECT failed_attempts, locked_until IS NOT NULL FROM phone_state WHERE phone = $1";
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                sqlx::query_as(sql).bind(e164).fetch_optional(&pool).await.unwrap().unwrap_or((0, false))
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let row: Option<(i32, bool)> = sqlx::query_as(sql).bind(e164).fetch_optional(&pool).await.unwrap();
                row.map_or((0, false), |(n, l)| (n.into(), l))
            }
        }
    }
}

/// Front-line limits off: most tests send many calls from 127.0.0.1. Limit tests set their own.
pub const NO_FRONT_LIMITS: [&str; 8] = [
    "--send-limit-per-ip",
    "off",
    "--verify-limit-per-ip",
    "off",
    "--sms-limit-per-prefix",
    "off",
    "--global-sms-limit",
    "off",
];

/// Settings as a user would give them, with cheap argon2 parameters (the default cost is tested elsewhere)
/// and no front-line limits unless `extra` sets them.
pub fn test_config(db_url: &str, sms_path: &Path, extra: &[&str]) -> Config {
    let sms = format!("file:{}", sms_path.display());
    let mut args = vec![
        "otpd",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--database-url",
        db_url,
        "--sms-gateway",
        &sms,
        "--pepper",
        TEST_PEPPER,
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        // A fixed queue no busy test machine fills (the automatic one follows how slow the hashes get): tests not
        // about shedding load must not shed it. The overload tests set their own.
        "--hash-queue",
        "1000",
    ];
    args.extend_from_slice(&NO_FRONT_LIMITS);
    args.extend_from_slice(extra);
    Cli::try_parse_from(args).unwrap().settings.validate().unwrap()
}

/// A running application.
pub struct TestApp {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The delivery-receipt listener, when `--webhook-listen` is given.
    pub webhook_addr: Option<SocketAddr>,
    pub otp: OtpServiceClient<Channel>,
    pub clock: Arc<ManualClock>,
    pub db: TestDb,
    pub sms_path: PathBuf,
    pub stores: otpd::store::Stores,
    pub hasher: otpd::hashing::CodeHasher,
    pub sup: SupervisorServiceClient<Channel>,
    /// The Prometheus endpoint, when `--metrics-listen` is given.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Spawns the application with extra command-line settings.
pub async fn spawn_app_with(backend: Backend, extra: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    spawn_app_at(db, dir, extra).await
}

/// Spawns the application on an existing database.
pub async fn spawn_app_at(db: TestDb, dir: tempfile::TempDir, extra: &[&str]) -> TestApp {
    spawn_app_on(db, dir, extra, Arc::new(ManualClock::new(Utc::now()))).await
}

/// Spawns the application on an existing database and `clock` (several replicas of one deployment share one).
pub async fn spawn_app_on(db: TestDb, dir: tempfile::TempDir, extra: &[&str], clock: Arc<ManualClock>) -> TestApp {
    init_test_log();
    let sms_path = dir.path().join("sms.jsonl");
    let config = test_config(&db.url, &sms_path, extra);
    let app = Application::build_with_clock(config, clock.clone()).await.unwrap();
    let (public_addr, admin_addr, metrics_addr) = (app.public_addr(), app.admin_addr(), app.metrics_addr());
    let webhook_addr = app.webhook_addr();
    let stores = app.stores();
    let hasher = app.hasher().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until(shutdown.clone().cancelled_owned()));
    let otp = OtpServiceClient::new(channel(public_addr).await);
    let sup = SupervisorServiceClient::new(channel(admin_addr).await);
    TestApp {
        public_addr,
        admin_addr,
        webhook_addr,
        otp,
        clock,
        db,
        sms_path,
        stores,
        hasher,
        sup,
        metrics_addr,
        shutdown,
        server: Some(server),
        dir,
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

pub fn send_req(phone: &str, purpose: pb::Purpose) -> pb::SendCodeRequest {
    pb::SendCodeRequest { phone_number: phone.into(), purpose: purpose.into(), ..Default::default() }
}

pub fn verify_req(phone: &str, purpose: pb::Purpose, code: &str) -> pb::VerifyCodeRequest {
    pb::VerifyCodeRequest { phone_number: phone.into(), purpose: purpose.into(), code: code.into() }
}

/// Every SMS the file gateway at `path` has written.
pub fn read_sms(path: &Path) -> Vec<FileSms> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The code in an SMS body: the only run of 6 to 8 digits.
pub fn code_in(body: &str) -> String {
    let re = regex::Regex::new(r"\b\d{6,8}\b").unwrap();
    let codes: Vec<_> = re.find_iter(body).map(|m| m.as_str().to_owned()).collect();
    assert_eq!(codes.len(), 1, "exactly one code in {body:?}");
    codes[0].clone()
}

/// A code of the right shape that differs from `code`.
pub fn wrong_code(code: &str) -> String {
    code.bytes().map(|b| char::from(b'0' + (b - b'0' + 1) % 10)).collect()
}

impl TestApp {
    pub fn sms(&self) -> Vec<FileSms> {
        read_sms(&self.sms_path)
    }

    /// The code of the last SMS that carried one (a lookup notice carries none).
    pub fn last_code(&self) -> String {
        let sms = self.sms();
        let with_code = sms.iter().rev().find(|m| !m.body.contains(LOOKUP_NOTICE_MARK)).expect("an SMS was sent");
        code_in(&with_code.body)
    }

    pub async fn send(&self, phone: &str, purpose: pb::Purpose) -> Result<pb::SendCodeResponse, tonic::Status> {
        self.otp.clone().send_code(send_req(phone, purpose)).await.map(tonic::Response::into_inner)
    }

    pub async fn verify(
        &self,
        phone: &str,
        purpose: pb::Purpose,
        code: &str,
    ) -> Result<pb::VerifyCodeResponse, tonic::Status> {
        self.otp.clone().verify_code(verify_req(phone, purpose, code)).await.map(tonic::Response::into_inner)
    }

    /// Sends a code and returns it, as read from the SMS.
    pub async fn send_and_read(&self, phone: &str, purpose: pb::Purpose) -> String {
        self.send(phone, purpose).await.unwrap();
        self.last_code()
    }

    pub fn now(&self) -> chrono::DateTime<Utc> {
        otpd::clock::Clock::now(&*self.clock)
    }

    pub fn advance(&self, by: TimeDelta) {
        self.clock.advance(by);
    }

    pub async fn health(&self, addr: SocketAddr, service: &str) -> i32 {
        let mut client = HealthClient::new(channel(addr).await);
        let req = tonic_health::pb::HealthCheckRequest { service: service.into() };
        client.check(req).await.unwrap().into_inner().status
    }

    /// Runs the `otpd` binary's command line on this app's database, as an operator would (`otpd supervisors …`).
    pub fn otpd_command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
            .args(args)
            .args(["--database-url", &self.db.url])
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("OTPD_PEPPER", TEST_PEPPER)
            .output()
            .unwrap()
    }

    /// Adds a supervisor the way `otpd supervisors add` does (audited as the operator) and returns their token.
    pub async fn add_supervisor(&self, name: &str, role: &str) -> String {
        use otpd::domain::audit::{AuditAction, NewAuditEvent};
        use secrecy::ExposeSecret;
        let token = otpd::supervision::token::generate();
        let event =
            NewAuditEvent::by_operator(AuditAction::SupervisorAdded, self.now(), format!("added {name} ({role})"));
        let hash = otpd::supervision::token::hash_secret(&token);
        let added = self
            .stores
            .supervision
            .add_supervisor(
                &name.parse().unwrap(),
                role.parse().unwrap(),
                otpd::domain::TokenKind::Person,
                &hash,
                event,
                &test_audit_key(),
            )
            .await
            .unwrap();
        assert!(added.is_some());
        token.expose_secret().to_owned()
    }

    /// Gives a supervisor an agent id the way `otpd supervisors set-agent` does.
    pub async fn set_agent(&self, name: &str, agent: &str) {
        use otpd::domain::audit::{AuditAction, NewAuditEvent};
        let event = NewAuditEvent::by_operator(AuditAction::SupervisorAgentSet, self.now(), format!("{name}: {agent}"));
        let (key, name, agent) = (test_audit_key(), name.parse().unwrap(), agent.parse().unwrap());
        let set = self.stores.supervision.set_agent(&name, Some(&agent), event, &key).await.unwrap();
        assert!(matches!(set, otpd::store::AgentChange::Set(_)), "{set:?}");
    }

    /// Disables a supervisor the way `otpd supervisors disable` does.
    pub async fn disable_supervisor(&self, name: &str) {
        use otpd::domain::audit::{AuditAction, NewAuditEvent};
        let event = NewAuditEvent::by_operator(AuditAction::SupervisorDisabled, self.now(), format!("disabled {name}"));
        let (key, name) = (test_audit_key(), name.parse().unwrap());
        let disabled = self.stores.supervision.disable_supervisor(&name, self.now(), event, &key);
        assert!(disabled.await.unwrap().is_some());
    }

    /// Every audit event, oldest first.
    pub async fn audit(&self) -> Vec<otpd::domain::audit::AuditEvent> {
        self.stores.supervision.audit_chain(0, 10_000).await.unwrap()
    }

    /// The audit events of service calls and lockouts (not the operator's `otpd supervisors` changes).
    pub async fn call_events(&self) -> Vec<otpd::domain::audit::AuditEvent> {
        self.audit().await.into_iter().filter(|e| e.event.actor_role != otpd::domain::audit::OPERATOR_ROLE).collect()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `msg` with `authorization: Bearer token`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A lookup as a team lead makes it for a driver calling from `contact`.
pub fn lookup_req(phone: &str, contact: &str) -> pb::LookupCodeRequest {
    pb::LookupCodeRequest {
        phone_number: phone.into(),
        purpose: pb::Purpose::Unspecified.into(),
        ticket_id: "CS-2026-0001".into(),
        reason: pb::LookupReason::StrongComplaint.into(),
        contact: pb::ContactChannel::InboundCall.into(),
        contact_number: contact.into(),
        call_id: String::new(),
    }
}

/// The `ErrorInfo.reason` of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "otp.v1");
    info.reason.clone()
}

/// The `RetryInfo.retry_delay` of a status.
pub fn retry_delay(status: &tonic::Status) -> Duration {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_else(|| panic!("RetryInfo in {status:?}"))
}

/// A free loopback port (bound then released: tests that start processes need the number in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The arguments of a test `otpd` process on `db_url`, writing SMS to `sms`: the shared test pepper, cheap
/// argon2, no front-line limits.
pub fn process_args(db_url: &str, sms: &Path) -> Vec<String> {
    let mut args = process_args_with_limits(db_url, sms);
    args.extend(NO_FRONT_LIMITS.map(str::to_owned));
    args
}

/// [`process_args`] with the front-line limits at their defaults.
pub fn process_args_with_limits(db_url: &str, sms: &Path) -> Vec<String> {
    [
        "--database-url",
        db_url,
        "--sms-gateway",
        &format!("file:{}", sms.display()),
        "--pepper",
        TEST_PEPPER,
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        // As in `test_config`: tests not about shedding load must not shed it on a busy machine.
        "--hash-queue",
        "1000",
    ]
    .map(str::to_owned)
    .into()
}

/// The command that runs the `otpd` binary, with at most `descriptors` open files (`ulimit -n`) when given.
pub fn otpd_command(descriptors: Option<u32>) -> tokio::process::Command {
    match descriptors {
        None => tokio::process::Command::new(env!("CARGO_BIN_EXE_otpd")),
        Some(n) => {
            // exec: the process (its pid, the signals it gets) is otpd itself, not a shell around it.
            let mut command = tokio::process::Command::new("bash");
            command.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_otpd")]);
            command
        }
    }
}

/// A real `otpd` process.
pub struct OtpdProcess {
    pub child: tokio::process::Child,
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl OtpdProcess {
    /// Starts the `otpd` binary on free ports with `args`, its output in files under `dir`, and waits for it
    /// to report SERVING. A port found free can be taken by another test before otpd binds it: then it starts
    /// again on other ports.
    pub async fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_limited(dir, name, args, env, None).await
    }

    /// As [`Self::start`], with at most `descriptors` open files.
    pub async fn start_limited(
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        descriptors: Option<u32>,
    ) -> Self {
        Self::start_program(None, dir, name, args, env, descriptors).await
    }

    /// As [`Self::start`], running another build of otpd (the previous release's binary).
    pub async fn start_binary(binary: &Path, dir: &Path, name: &str, args: &[&str]) -> Self {
        Self::start_program(Some(binary), dir, name, args, &[], None).await
    }

    async fn start_program(
        binary: Option<&Path>,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        descriptors: Option<u32>,
    ) -> Self {
        for _ in 0..5 {
            let public_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let stdout = dir.join(format!("{name}.stdout"));
            let stderr = dir.join(format!("{name}.stderr"));
            let mut command = match binary {
                Some(binary) => tokio::process::Command::new(binary),
                None => otpd_command(descriptors),
            };
            let child = command
                .args(["--listen", &public_addr.to_string(), "--admin-listen", &admin_addr.to_string()])
                .args(args)
                .envs(env.iter().copied())
                .env_remove("RUST_LOG")
                .env_remove("OTPD_TEST_POSTGRES_URL")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut process = Self { child, public_addr, admin_addr, stdout, stderr };
            match process.wait_serving().await {
                Ok(()) => return process,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("otpd exited: {log}"),
            }
        }
        panic!("otpd found no free ports in 5 tries");
    }

    /// Waits for SERVING; if otpd exits first, returns its standard error.
    async fn wait_serving(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                return Err(format!("{status}: {log}"));
            }
            if let Ok(channel) = Channel::from_shared(format!("http://{}", self.admin_addr)).unwrap().connect().await {
                let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
                if let Ok(r) = HealthClient::new(channel).check(req).await {
                    if r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                        return Ok(());
                    }
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "otpd did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn otp(&self) -> OtpServiceClient<Channel> {
        OtpServiceClient::new(channel(self.public_addr).await)
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> (String, String) {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "otpd exited with {status}");
        (std::fs::read_to_string(&self.stdout).unwrap(), std::fs::read_to_string(&self.stderr).unwrap())
    }
}

/// Runs `otpctl` against `app`'s admin listener with `token`: its exit code, standard output and standard error.
pub async fn otpctl(app: &TestApp, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpctl"))
        .args(["--server", &format!("http://{}", app.admin_addr)])
        .args(args)
        .env("OTPCTL_TOKEN", token)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`otpctl`] that must succeed: its standard output.
pub async fn otpctl_ok(app: &TestApp, token: &str, args: &[&str]) -> String {
    let (code, out, err) = otpctl(app, token, args).await;
    assert_eq!(code, Some(0), "otpctl {args:?}: {err}");
    out
}
