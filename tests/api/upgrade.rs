//! Rolling upgrades (issue 18 §4): the previous release, built from git history by `scripts/previous-release`
//! (cached outside the checkout), serves before this release's migrations and while they run; then this release
//! runs beside it on one PostgreSQL (docs/operations.md, "Upgrading", in that order), through both services: codes
//! sent by one are checked, wrong and right, by the other; lookups on each release issue codes the other approves,
//! and their audit events form one chain that verifies. After the migration the previous release keeps serving, and
//! restarts when it does not migrate at start-up (`--migrate-on-start=false`, as production runs it); its own
//! migrator refuses the newer schema, which docs/operations.md says.
use std::path::{Path, PathBuf};
use std::process::Command;

use otpd::pb::otp::v1::otp_service_client::OtpServiceClient;
use otpd::pb::otp::v1::supervisor_service_client::SupervisorServiceClient;
use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult};
use tonic::transport::Channel;

use crate::helpers::*;

/// The previous release's `otpd`, built once (scripts/test builds it before the tests; a lock makes a test that
/// gets here first build it while others wait).
fn previous_release() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/previous-release");
    let out = Command::new(script).output().unwrap();
    assert!(out.status.success(), "scripts/previous-release failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One running release: its process, clients, and the file its SMS go to.
struct Release {
    process: OtpdProcess,
    otp: OtpServiceClient<Channel>,
    sup: SupervisorServiceClient<Channel>,
    sms: PathBuf,
}

impl Release {
    async fn start(binary: Option<&Path>, dir: &Path, name: &str, db: &TestDb, extra: &[&str]) -> Self {
        let sms = dir.join(format!("{name}.jsonl"));
        let mut args = process_args(&db.url, &sms);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = match binary {
            Some(binary) => OtpdProcess::start_binary(binary, dir, name, &args).await,
            None => OtpdProcess::start(dir, name, &args, &[]).await,
        };
        let otp = process.otp().await;
        let sup = SupervisorServiceClient::new(channel(process.admin_addr).await);
        Self { process, otp, sup, sms }
    }

    fn code_for(&self, national: &str) -> String {
        let e164 = format!("+82{}", national.replace('-', "").trim_start_matches('0'));
        let sms = read_sms(&self.sms);
        let last = sms.iter().rev().find(|m| m.to == e164 && !m.body.contains(LOOKUP_NOTICE_MARK));
        code_in(&last.unwrap_or_else(|| panic!("no code sent to {e164}")).body)
    }

    async fn send(&mut self, phone: &str) {
        self.otp.send_code(send_req(phone, Purpose::Login)).await.unwrap_or_else(|e| panic!("send {phone}: {e:?}"));
    }

    async fn verify(&mut self, phone: &str, code: &str) -> pb::VerifyCodeResponse {
        let request = verify_req(phone, Purpose::Login, code);
        self.otp.verify_code(request).await.unwrap_or_else(|e| panic!("verify {phone}: {e:?}")).into_inner()
    }

    async fn lookup(&mut self, phone: &str, token: &str) -> String {
        let request = authed(lookup_req(phone, phone), token);
        self.sup.lookup_code(request).await.unwrap_or_else(|e| panic!("lookup {phone}: {e:?}")).into_inner().code
    }

    async fn status(&mut self, phone: &str, token: &str) -> pb::GetPhoneStatusResponse {
        let request = pb::GetPhoneStatusRequest {
            phone_number: phone.into(),
            ticket_id: "CS-2026-0042".into(),
            ..Default::default()
        };
        self.sup.get_phone_status(authed(request, token)).await.unwrap().into_inner()
    }
}

/// The `otpd` command line of `binary` (None: this build) on the database, as an operator runs it.
fn operator(binary: Option<&Path>, dir: &Path, db: &TestDb, args: &[&str]) -> std::process::Output {
    let binary = binary.map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_otpd")), Path::to_path_buf);
    Command::new(binary)
        .args(args)
        .args(["--database-url", &db.url, "--pepper", TEST_PEPPER])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Every call across the two releases, numbers `n..n+4`: a send on one checked (a wrong code, then the right
/// one) on the other, both ways; a lookup on each for a send on the other, approved on the first; a status read
/// on each. Returns the audit events it should have appended (two lookups, two status reads).
async fn side_by_side(old: &mut Release, new: &mut Release, token: &str, n: usize) -> usize {
    let phone = |i: usize| format!("010-7{:03}-{:04}", n, i);
    // Sent by the previous release, checked by this one.
    old.send(&phone(0)).await;
    let code = old.code_for(&phone(0));
    let wrong = new.verify(&phone(0), &wrong_code(&code)).await;
    assert_eq!((wrong.result(), wrong.attempts_remaining), (VerifyResult::WrongCode, 9));
    assert_eq!(new.verify(&phone(0), &code).await.result(), VerifyResult::Approved);
    // Sent by this release, checked by the previous one.
    new.send(&phone(1)).await;
    let code = new.code_for(&phone(1));
    assert_eq!(old.verify(&phone(1), &wrong_code(&code)).await.result(), VerifyResult::WrongCode);
    assert_eq!(old.verify(&phone(1), &code).await.result(), VerifyResult::Approved);
    // A team lead's lookup on this release for a send on the previous one, and the other way round.
    old.send(&phone(2)).await;
    let looked_up = new.lookup(&phone(2), token).await;
    assert_eq!(old.verify(&phone(2), &looked_up).await.result(), VerifyResult::Approved);
    new.send(&phone(3)).await;
    let looked_up = old.lookup(&phone(3), token).await;
    assert_eq!(new.verify(&phone(3), &looked_up).await.result(), VerifyResult::Approved);
    // Each reads what the other wrote.
    assert_eq!(old.status(&phone(0), token).await.failed_attempts, 0);
    assert_eq!(new.status(&phone(1), token).await.failed_attempts, 0);
    4
}

/// One release alone: a code sent, checked wrong then right; a lookup's code approved; a status read. Returns the
/// audit events it should have appended (a lookup, a status read).
async fn alone(release: &mut Release, token: &str, n: usize) -> usize {
    let phone = |i: usize| format!("010-7{:03}-{:04}", n, i);
    release.send(&phone(0)).await;
    let code = release.code_for(&phone(0));
    assert_eq!(release.verify(&phone(0), &wrong_code(&code)).await.result(), VerifyResult::WrongCode);
    assert_eq!(release.verify(&phone(0), &code).await.result(), VerifyResult::Approved);
    release.send(&phone(1)).await;
    let looked_up = release.lookup(&phone(1), token).await;
    assert_eq!(release.verify(&phone(1), &looked_up).await.result(), VerifyResult::Approved);
    assert_eq!(release.status(&phone(0), token).await.failed_attempts, 0);
    2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_previous_release_and_this_one_side_by_side_before_and_after_migration() {
    let previous = previous_release();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;

    // The installation as the previous release left it: its schema, a team lead added with its command line.
    let mut old = Release::start(Some(&previous), dir.path(), "old", &db, &[]).await;
    let added =
        operator(Some(&previous), dir.path(), &db, &["supervisors", "add", "--name", "kim", "--role", "supervisor"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let token = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    let mut events = 1;

    // Before this release's migrations: the previous release serves alone.
    events += alone(&mut old, &token, 1).await;

    // The upgrade's first step: this release's migrations, while the previous release serves; then it serves on.
    let migrated = operator(None, dir.path(), &db, &["migrate"]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    events += alone(&mut old, &token, 2).await;

    // The rollout: a replica of this release beside the previous one (not migrating at start-up, as production runs).
    let mut new = Release::start(None, dir.path(), "new", &db, &["--migrate-on-start=false"]).await;
    events += side_by_side(&mut old, &mut new, &token, 3).await;
    // This release's keys work beside the previous release.
    let mut keyed = tonic::Request::new(send_req("010-7009-0000", Purpose::Login));
    keyed.metadata_mut().insert("idempotency-key", "upgrade-1".parse().unwrap());
    new.otp.send_code(keyed).await.unwrap();

    // A previous-release replica restarted after the migration: it serves when it does not migrate at start-up
    // (production's setting); its own migrator refuses a schema with migrations it does not know.
    old.process.terminate().await;
    let refused = operator(Some(&previous), dir.path(), &db, &["migrate"]);
    assert!(!refused.status.success(), "the previous release's migrator refuses the newer schema");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("previously applied but is missing"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut old =
        Release::start(Some(&previous), dir.path(), "old-restarted", &db, &["--migrate-on-start=false"]).await;
    events += side_by_side(&mut old, &mut new, &token, 4).await;

    // One audit chain, appended by both releases, verifies with this release's command (which, like every
    // command of this release, also accepts the schema of a newer one).
    let verified = operator(None, dir.path(), &db, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{stdout} {}", String::from_utf8_lossy(&verified.stderr));
    assert!(stdout.contains(&format!("audit chain intact: {events} events")), "{stdout}");
    old.process.terminate().await;
    new.process.terminate().await;
}

/// This release starts, and migrates, on a database a newer release has migrated further (a migration it does
/// not know is recorded as applied): the next rolling upgrade, and a rollback, need exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn this_release_accepts_migrations_of_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    assert!(operator(None, dir.path(), &db, &["migrate"]).status.success());
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
         VALUES (9999, 'a newer release', now(), true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE a_newer_releases_table (id bigint PRIMARY KEY)").execute(&pool).await.unwrap();
    let migrated = operator(None, dir.path(), &db, &["migrate"]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let mut release = Release::start(None, dir.path(), "otpd", &db, &[]).await;
    release.send(PHONE).await;
    let code = release.code_for(PHONE);
    assert_eq!(release.verify(PHONE, &code).await.result(), VerifyResult::Approved);
    release.process.terminate().await;
}
