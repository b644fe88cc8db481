//! Team leads' sign-in with a second factor (issue 17; docs/sign-in.md): a code to the person's own phone
//! through the SMS gateway, an emergency code through a real SMTP server on loopback (aiosmtpd), sessions that
//! expire when idle and at the end of a shift (moved clock), disable ending sessions at once, lockout of the
//! person and the address, the audit log not flooded by a revoked token, and `--require-second-factor`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use chrono::TimeDelta;
use otpd::pb::otp::v1 as pb;
use pb::sign_in_service_client::SignInServiceClient;

use crate::both_backends;
use crate::helpers::*;

/// The team lead's own mobile number (010-9876-5432).
pub(crate) const LEAD_E164: &str = "+821098765432";
const LEAD_EMAIL: &str = "kim.minji@example.com";

pub(crate) async fn client(app: &TestApp) -> SignInServiceClient<tonic::transport::Channel> {
    SignInServiceClient::new(channel(app.admin_addr).await)
}

/// Registers `name`'s phone and e-mail the way `otpd supervisors set-contact` does.
pub(crate) async fn set_contact(app: &TestApp, name: &str) {
    use otpd::domain::audit::{AuditAction, NewAuditEvent};
    let event = NewAuditEvent::by_operator(AuditAction::SupervisorContactSet, app.now(), "contact set");
    let set = app
        .stores
        .sign_in
        .set_contact(&name.parse().unwrap(), Some(Some(LEAD_E164)), Some(Some(LEAD_EMAIL)), event, &test_audit_key())
        .await
        .unwrap();
    assert!(set.is_some());
}

/// The last sign-in code sent to the lead's phone.
pub(crate) fn lead_code(app: &TestApp) -> String {
    let sms = app.sms();
    let to_lead = sms.iter().rev().find(|m| m.to == LEAD_E164).expect("a code went to the lead's phone");
    assert_eq!(to_lead.from, "1800-3400", "sign-in codes come from the service's sender");
    code_in(&to_lead.body)
}

async fn start(app: &TestApp, token: &str, factor: pb::SecondFactor) -> Result<pb::StartSignInResponse, tonic::Status> {
    let req = pb::StartSignInRequest { factor: factor.into() };
    client(app).await.start_sign_in(authed(req, token)).await.map(tonic::Response::into_inner)
}

async fn finish(app: &TestApp, token: &str, id: &str, code: &str) -> Result<pb::FinishSignInResponse, tonic::Status> {
    let req = pb::FinishSignInRequest { sign_in_id: id.into(), code: code.into(), ..Default::default() };
    client(app).await.finish_sign_in(authed(req, token)).await.map(tonic::Response::into_inner)
}

/// Signs in with a code to the phone and returns the session token.
pub(crate) async fn phone_session(app: &TestApp, token: &str) -> String {
    let started = start(app, token, pb::SecondFactor::PhoneCode).await.unwrap();
    finish(app, token, &started.sign_in_id, &lead_code(app)).await.unwrap().session_token
}

async fn who(app: &TestApp, token: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    app.sup.clone().who_am_i(authed(pb::WhoAmIRequest {}, token)).await.map(tonic::Response::into_inner)
}

pub(crate) async fn events(app: &TestApp) -> Vec<otpd::domain::audit::AuditEvent> {
    app.stores.supervision.audit_chain(0, 10_000).await.unwrap()
}

both_backends!(
    a_code_to_the_phone_signs_in_once_and_only_a_session_opens_lookups,
    sessions_end_when_idle_at_the_end_of_a_shift_and_when_disabled,
    failed_sign_ins_lock_the_person_and_the_address,
    a_revoked_token_adds_at_most_five_audit_events,
    the_emergency_email_code_signs_in,
    the_phone_code_goes_through_the_providers_alimtalk_then_sms,
);

async fn a_code_to_the_phone_signs_in_once_and_only_a_session_opens_lookups(backend: Backend) {
    let app = spawn_app_with(backend, &["--require-second-factor", "true"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    set_contact(&app, "kim").await;

    let factors = client(&app).await.list_sign_in_factors(authed(pb::ListSignInFactorsRequest {}, &kim)).await;
    let factors = factors.unwrap().into_inner();
    assert_eq!(factors.name, "kim");
    let phone = factors.factors.iter().find(|f| f.factor() == pb::SecondFactor::PhoneCode).unwrap();
    assert!(phone.destination.contains("****") && phone.destination.ends_with("5432"), "{}", phone.destination);
    assert!(
        factors.factors.iter().all(|f| f.factor() != pb::SecondFactor::EmailCode),
        "no mail server configured: no e-mail factor offered"
    );

    let started = start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap();
    let code = lead_code(&app);
    // A wrong code counts, and says how many tries are left.
    let wrong = finish(&app, &kim, &started.sign_in_id, &wrong_code(&code)).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&wrong), "WRONG_SIGN_IN_CODE");
    // A code of another person's sign-in, or an unknown id, opens nothing.
    let unknown = finish(&app, &kim, &uuid::Uuid::now_v7().to_string(), &code).await.unwrap_err();
    assert_eq!(reason(&unknown), "SIGN_IN_EXPIRED");
    let session = finish(&app, &kim, &started.sign_in_id, &code).await.unwrap();
    assert!(session.session_token.starts_with("otpsess_"));
    let idle = session.idle_expires_at.unwrap().seconds - app.now().timestamp();
    assert!((899..=900).contains(&idle), "15 minutes idle by default, got {idle}s");
    // The code works once.
    let again = finish(&app, &kim, &started.sign_in_id, &code).await.unwrap_err();
    assert_eq!(reason(&again), "SIGN_IN_EXPIRED");

    // Under --require-second-factor the bare token no longer looks a code up; the session does.
    app.send(PHONE, pb::Purpose::Login).await.unwrap();
    let bare = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!(bare.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&bare), "SESSION_REQUIRED");
    assert!(bare.message().contains("second factor"), "{}", bare.message());
    let looked_up = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &session.session_token)).await;
    assert_eq!(looked_up.unwrap().into_inner().code.len(), 6);
    // WhoAmI (no driver's data) still answers the bare token.
    assert_eq!(who(&app, &kim).await.unwrap().name, "kim");

    let log = events(&app).await;
    let sign_in =
        log.iter().find(|e| e.event.action.as_str() == "sign_in" && e.event.outcome.as_str() == "granted").unwrap();
    assert_eq!(sign_in.event.actor_name, "kim");
    assert!(sign_in.event.detail.contains(&session.session_id), "{}", sign_in.event.detail);
    assert!(sign_in.event.detail.contains("127.0.0.1"), "where from: {}", sign_in.event.detail);
    // The lookup made with the session records it, with the address, in its sealed access context.
    let granted = log.iter().rev().find(|e| e.event.action.as_str() == "lookup_code").unwrap();
    let access = granted.event.access.as_ref().expect("where the lookup came from");
    assert_eq!(access.session_id(), Some(session.session_id.as_str()));
    assert_eq!(access.client_address(), Some("127.0.0.1".parse().unwrap()));
    let refused = log.iter().rev().find(|e| e.event.detail.starts_with("SESSION_REQUIRED")).unwrap();
    assert_eq!(refused.event.action.as_str(), "lookup_code");

    // Sign-out ends the session at once.
    let out = client(&app).await.sign_out(authed(pb::SignOutRequest {}, &session.session_token)).await;
    out.unwrap();
    let after = who(&app, &session.session_token).await.unwrap_err();
    assert_eq!(reason(&after), "SESSION_EXPIRED");
    // Nothing secret in the store: the session token and the code are kept only as keyed hashes.
    let dump = sign_in_rows(&app).await;
    assert!(!dump.contains(&session.session_token[8..]), "session token in the database");
    assert!(!dump.contains(&format!("\"{code}\"")) && !dump.contains(&format!("|{code}|")), "code in the database");
}

/// Every value of the sign-in tables, as text.
async fn sign_in_rows(app: &TestApp) -> String {
    let mut all = String::new();
    for table in ["supervisor_sessions", "sign_in_challenges"] {
        let rows: Vec<String> = match app.db.backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
                sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                    .fetch_all(&pool)
                    .await
                    .unwrap()
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
                let cols = if table == "supervisor_sessions" { "token_hash" } else { "COALESCE(secret_hash, '')" };
                sqlx::query_scalar(&format!("SELECT '|' || id || '|' || {cols} || '|' FROM {table}"))
                    .fetch_all(&pool)
                    .await
                    .unwrap()
            }
        };
        all.push_str(&rows.join("\n"));
    }
    all
}

async fn sessions_end_when_idle_at_the_end_of_a_shift_and_when_disabled(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    set_contact(&app, "kim").await;

    // Idle: each call moves the deadline; 15 minutes without one ends the session.
    let session = phone_session(&app, &kim).await;
    app.advance(TimeDelta::minutes(14));
    who(&app, &session).await.unwrap();
    app.advance(TimeDelta::minutes(14));
    who(&app, &session).await.unwrap();
    app.advance(TimeDelta::minutes(15) + TimeDelta::seconds(1));
    let idle = who(&app, &session).await.unwrap_err();
    assert_eq!(reason(&idle), "SESSION_EXPIRED");

    // The shift: a session in use every 10 minutes still ends 10 hours after sign-in.
    let session = phone_session(&app, &kim).await;
    for _ in 0..59 {
        app.advance(TimeDelta::minutes(10));
        who(&app, &session).await.unwrap();
    }
    app.advance(TimeDelta::minutes(10));
    let shift = who(&app, &session).await.unwrap_err();
    assert_eq!(reason(&shift), "SESSION_EXPIRED", "the absolute lifetime is 10 hours");

    // Disable ends a live session at once.
    app.advance(TimeDelta::minutes(2));
    let session = phone_session(&app, &kim).await;
    who(&app, &session).await.unwrap();
    app.disable_supervisor("kim").await;
    let disabled = who(&app, &session).await.unwrap_err();
    assert_eq!(reason(&disabled), "SESSION_EXPIRED");
}

async fn failed_sign_ins_lock_the_person_and_the_address(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let park = app.add_supervisor("park", "admin").await;
    set_contact(&app, "kim").await;

    // Five wrong codes over two sign-ins (a sign-in takes three tries).
    let mut last = None;
    for round in 0..2 {
        let started = start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap();
        let code = lead_code(&app);
        for _ in 0..(if round == 0 { 3 } else { 2 }) {
            last = Some(finish(&app, &kim, &started.sign_in_id, &wrong_code(&code)).await.unwrap_err());
        }
        app.advance(TimeDelta::seconds(61));
    }
    assert_eq!(reason(&last.unwrap()), "WRONG_SIGN_IN_CODE");
    // The person is locked, and says until when.
    let locked = start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap_err();
    assert_eq!(locked.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&locked), "SIGN_IN_LOCKED");
    let details = tonic_types::StatusExt::get_error_details(&locked);
    let retry = details.retry_info().unwrap().retry_delay.unwrap();
    assert!(retry.as_secs() > 27 * 60 && retry.as_secs() <= 30 * 60, "{retry:?}");
    assert!(details.error_info().unwrap().metadata.contains_key("locked_until"));
    // So is the address: another person's token from it is refused without being checked.
    let from_here = who(&app, &park).await.unwrap_err();
    assert_eq!(reason(&from_here), "SIGN_IN_LOCKED");
    // The lock was audited.
    let log = events(&app).await;
    assert!(log.iter().any(|e| e.event.actor_name == "kim" && e.event.detail.contains("sign-in locked until")));

    // An operator lifts the address's lock: park works again; kim's own lock holds.
    let lift = |subject: &'static str| {
        let event = otpd::domain::audit::NewAuditEvent::by_operator(
            otpd::domain::audit::AuditAction::SignInLockLifted,
            app.now(),
            format!("lifted {subject}"),
        );
        let store = app.stores.sign_in.clone();
        let now = app.now();
        async move { store.lift_sign_in_lock(subject, now, event, &test_audit_key()).await.unwrap() }
    };
    assert!(lift("address:127.0.0.1").await.0);
    who(&app, &park).await.unwrap();
    assert_eq!(reason(&start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap_err()), "SIGN_IN_LOCKED");
    // Only an admin lifts a person's lock over the API, audited either way.
    let lee = app.add_supervisor("lee", "auditor").await;
    let req = pb::LiftSignInLockRequest { supervisor: "kim".into(), ..Default::default() };
    let refused = app.sup.clone().lift_sign_in_lock(authed(req.clone(), &lee)).await.unwrap_err();
    assert_eq!(reason(&refused), "ROLE_NOT_ALLOWED");
    let lifted = app.sup.clone().lift_sign_in_lock(authed(req, &park)).await.unwrap().into_inner();
    assert!(lifted.was_locked);
    let event = events(&app).await.pop().unwrap().event;
    assert_eq!((event.actor_name.as_str(), event.action.as_str()), ("park", "sign_in_lock_lifted"));
    assert_eq!(event.id.to_string(), lifted.audit_event_id);
    phone_session(&app, &kim).await;
    // A lock otherwise ends on its own 30 minutes after it started (an hour on: the hourly code cap is fresh).
    app.advance(TimeDelta::minutes(61));
    for _ in 0..2 {
        let started = start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap();
        let code = lead_code(&app);
        for _ in 0..3 {
            let _ = finish(&app, &kim, &started.sign_in_id, &wrong_code(&code)).await;
        }
        app.advance(TimeDelta::seconds(61));
    }
    assert_eq!(reason(&start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap_err()), "SIGN_IN_LOCKED");
    assert!(lift("address:127.0.0.1").await.0, "the address was locked again too");
    app.advance(TimeDelta::minutes(30));
    phone_session(&app, &kim).await;

    // Five unknown tokens lock the address too.
    for _ in 0..5 {
        assert_eq!(who(&app, "otps_guessed").await.unwrap_err().code(), tonic::Code::Unauthenticated);
    }
    assert_eq!(reason(&who(&app, &park).await.unwrap_err()), "SIGN_IN_LOCKED");
}

async fn a_revoked_token_adds_at_most_five_audit_events(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.disable_supervisor("kim").await;
    let before = events(&app).await.len();
    for _ in 0..60 {
        let refused = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(["SUPERVISOR_DISABLED", "SIGN_IN_LOCKED"].contains(&reason(&refused).as_str()));
    }
    let log = events(&app).await;
    let added = &log[before..];
    assert!((1..=5).contains(&added.len()), "60 calls with a revoked token added {} events", added.len());
    // The first refusal still names the number the token went after.
    let first = &added[0].event;
    assert_eq!(first.actor_name, "kim");
    assert!(first.phone_masked.is_some(), "{first:?}");
}

/// A real SMTP server on loopback: aiosmtpd, parsing each message into `out`.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    out: std::path::PathBuf,
}

impl SmtpSink {
    fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = dir.join("mail.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .args([script, &port.to_string(), out.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start (is aiosmtpd installed?)");
        Self { child, port, out }
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn the_emergency_email_code_signs_in(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path());
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let app = spawn_app_with(backend, &["--smtp-url", &url, "--smtp-from", "otpd <no-reply@otpd.example>"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    set_contact(&app, "kim").await;

    let factors = client(&app).await.list_sign_in_factors(authed(pb::ListSignInFactorsRequest {}, &kim)).await;
    let email = factors.unwrap().into_inner().factors.into_iter().find(|f| f.factor() == pb::SecondFactor::EmailCode);
    assert_eq!(email.unwrap().destination, "k***@example.com");

    let mut req = authed(pb::StartSignInRequest { factor: pb::SecondFactor::EmailCode.into() }, &kim);
    req.metadata_mut().insert("user-agent", "otpctl-test/1.0".parse().unwrap());
    let started = client(&app).await.start_sign_in(req).await.unwrap().into_inner();
    assert_eq!(started.destination, "k***@example.com");
    let mail = sink.messages();
    assert_eq!(mail.len(), 1);
    let mail = &mail[0];
    assert_eq!(mail["rcpt_tos"], serde_json::json!([LEAD_EMAIL]));
    assert_eq!(mail["mail_from"], "no-reply@otpd.example");
    assert!(mail["subject"].as_str().unwrap().contains("kim"), "{}", mail["subject"]);
    let text = mail["text"].as_str().unwrap();
    // The message says which sign-in asked for it and from which address.
    assert!(text.contains("kim") && text.contains("127.0.0.1") && text.contains("KST"), "{text}");
    let code = regex::Regex::new(r"인증번호: (\d{6})").unwrap().captures(text).unwrap()[1].to_owned();
    let session = finish(&app, &kim, &started.sign_in_id, &code).await.unwrap();
    assert_eq!(who(&app, &session.session_token).await.unwrap().name, "kim");
    // The code is spent.
    assert_eq!(reason(&finish(&app, &kim, &started.sign_in_id, &code).await.unwrap_err()), "SIGN_IN_EXPIRED");
    // A second code within the cooldown is refused with when to retry.
    let soon = start(&app, &kim, pb::SecondFactor::EmailCode).await.unwrap_err();
    assert_eq!(reason(&soon), "RESEND_COOLDOWN");
}

/// `otpctl login` asks for the code sent to the lead's phone, keeps the session in a 0600 file, later commands
/// use it (the bare token alone is refused a status under `--require-second-factor`), and `otpctl logout` ends
/// it everywhere and forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpctl_logs_in_keeps_the_session_and_logs_out() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(Backend::Sqlite, &["--require-second-factor", "true"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    set_contact(&app, "kim").await;
    let server = format!("http://{}", app.admin_addr);
    let file = app.dir.path().join("state").join("session.json");
    let otpctl = |args: &[&str], token: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpctl"));
        command.args(["--server", &server]).args(args).env("OTPCTL_SESSION_FILE", &file).env_remove("OTPCTL_TOKEN");
        if let Some(token) = token {
            command.env("OTPCTL_TOKEN", token);
        }
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    };
    let status_args = ["status", "--phone", PHONE, "--ticket", "CS-17"];

    let bare = otpctl(&status_args, Some(&kim)).output().await.unwrap();
    assert_eq!(bare.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("SESSION_REQUIRED"), "{bare:?}");

    let mut login = otpctl(&["login"], Some(&kim)).spawn().unwrap();
    let code = loop {
        if app.sms().iter().any(|m| m.to == LEAD_E164) {
            break lead_code(&app);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    login.stdin.take().unwrap().write_all(format!("{code}\n").as_bytes()).await.unwrap();
    let out = login.wait_with_output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("****") && stdout.contains("로그인됨 / signed in"), "{stdout}{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&kim), "only the session is kept, never the token");

    // Later commands use the session, without the personal token.
    let status = otpctl(&status_args, None).output().await.unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stderr));

    let logout = otpctl(&["logout"], None).output().await.unwrap();
    assert_eq!(logout.status.code(), Some(0), "{}", String::from_utf8_lossy(&logout.stderr));
    assert!(!file.exists());
    let after = otpctl(&status_args, None).output().await.unwrap();
    assert_eq!(after.status.code(), Some(2), "no session and no token");
    let log = events(&app).await;
    assert!(log.iter().any(|e| e.event.action.as_str() == "sign_out" && e.event.actor_name == "kim"));
}

/// The operator's commands: contacts registered masked in the audit log, a service token for scripts (auditor
/// only, usable without a session, never signing in), and a lock lifted by address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_register_contacts_and_service_tokens_on_the_command_line() {
    let app = spawn_app_with(Backend::Sqlite, &["--require-second-factor", "true"]).await;
    let otpd = |args: &[&str]| app.otpd_command(args);
    let add = ["supervisors", "add", "--name", "kim", "--role", "supervisor", "--phone", "010-9876-5432"];
    let out = otpd(&[&add[..], &["--email", LEAD_EMAIL]].concat());
    assert!(out.status.success(), "{out:?}");
    let kim = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let factors = client(&app).await.list_sign_in_factors(authed(pb::ListSignInFactorsRequest {}, &kim)).await;
    let factors = factors.unwrap().into_inner().factors;
    assert!(factors.iter().any(|f| f.factor() == pb::SecondFactor::PhoneCode && f.destination.ends_with("5432")));
    let log = events(&app).await;
    let contact = log.iter().find(|e| e.event.action.as_str() == "supervisor_contact_set").unwrap();
    assert!(contact.event.detail.contains("k***@example.com"), "{}", contact.event.detail);
    assert!(!contact.event.detail.contains(LEAD_EMAIL) && !contact.event.detail.contains("9876"), "masked");

    let listed = otpd(&["supervisors", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("+82 10-****-5432") && listed.contains("k***@example.com"), "shown masked: {listed}");
    assert!(!listed.contains(LEAD_EMAIL) && !listed.contains("9876"), "{listed}");

    let cleared = otpd(&["supervisors", "set-contact", "kim", "--phone", "none"]);
    assert!(cleared.status.success(), "{cleared:?}");
    let factors = client(&app).await.list_sign_in_factors(authed(pb::ListSignInFactorsRequest {}, &kim)).await;
    assert!(factors.unwrap().into_inner().factors.iter().all(|f| f.factor() != pb::SecondFactor::PhoneCode));
    let bad = otpd(&["supervisors", "set-contact", "kim", "--email", "not an address"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");

    // Service tokens: auditor role only; used without a session; no sign-in.
    let refused = otpd(&["supervisors", "add", "--name", "bot", "--role", "supervisor", "--service"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("auditor"));
    let out = otpd(&["supervisors", "add", "--name", "bot", "--role", "auditor", "--service"]);
    assert!(out.status.success(), "{out:?}");
    let bot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let listed = app.sup.clone().list_audit_events(authed(pb::ListAuditEventsRequest::default(), &bot)).await;
    assert!(!listed.unwrap().into_inner().events.is_empty());
    let start = start(&app, &bot, pb::SecondFactor::PhoneCode).await.unwrap_err();
    assert_eq!(reason(&start), "FACTOR_NOT_AVAILABLE");

    // Five unknown tokens lock this address; the operator lifts it.
    for _ in 0..5 {
        let _ = who(&app, "otps_guess").await;
    }
    assert_eq!(reason(&who(&app, &kim).await.unwrap_err()), "SIGN_IN_LOCKED");
    let lifted = otpd(&["supervisors", "lift-lock", "--address", "127.0.0.1"]);
    assert!(String::from_utf8_lossy(&lifted.stdout).contains("lock lifted"), "{lifted:?}");
    who(&app, &kim).await.unwrap();
}

/// The code to the lead's phone goes through the configured delivery, as the provider (its stand-in, written from
/// NHN Cloud's documents) receives it: AlimTalk with the code template, and SMS when AlimTalk refuses it.
async fn the_phone_code_goes_through_the_providers_alimtalk_then_sms(backend: Backend) {
    use crate::standins::{APP_KEY, Fault, StandIn};
    let nhn = StandIn::nhn().await;
    let args = crate::korea::alimtalk_then_sms(&nhn);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(backend, &args).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    set_contact(&app, "kim").await;

    let started = start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap();
    let seen = nhn.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, format!("/alimtalk/v2.3/appkeys/{APP_KEY}/auth/messages"));
    let recipient = &seen[0].body["recipientList"][0];
    assert_eq!(recipient["recipientNo"], "01098765432", "the lead's own phone");
    let code = recipient["templateParameter"]["code"].as_str().unwrap().to_owned();
    // A wrong code counts; the right one signs in once.
    assert_eq!(
        reason(&finish(&app, &kim, &started.sign_in_id, &wrong_code(&code)).await.unwrap_err()),
        "WRONG_SIGN_IN_CODE"
    );
    finish(&app, &kim, &started.sign_in_id, &code).await.unwrap();
    assert_eq!(reason(&finish(&app, &kim, &started.sign_in_id, &code).await.unwrap_err()), "SIGN_IN_EXPIRED");

    // AlimTalk refused (no KakaoTalk on the lead's phone): SMS from 1800-3400 carries the same code.
    nhn.fail_next(&[Fault::Refuse]);
    app.advance(TimeDelta::seconds(61));
    let started = start(&app, &kim, pb::SecondFactor::PhoneCode).await.unwrap();
    let seen = nhn.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2].path, format!("/sms/v3.0/appKeys/{APP_KEY}/sender/auth/sms"));
    assert_eq!(seen[2].body["sendNo"], "18003400");
    let code = code_in(seen[2].body["body"].as_str().unwrap());
    assert_eq!(seen[1].body["recipientList"][0]["templateParameter"]["code"], code.as_str());
    let session = finish(&app, &kim, &started.sign_in_id, &code).await.unwrap();
    assert_eq!(who(&app, &session.session_token).await.unwrap().name, "kim");
}
