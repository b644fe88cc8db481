//! The web console (`/console/` on the admin listener). In a real headless browser, Debian's chromium driven by
//! playwright-core (tests/console/console.mjs, one role per run): this side sets the state up, runs the browser,
//! and checks what it did against gRPC and the audit log. Without a browser: WhoAmI against every role's real
//! permissions, and the gRPC-Web edge (the same token layer; headers; native gRPC unchanged).

use std::path::{Path, PathBuf};
use std::time::Duration;

use otpd::domain::audit::{AuditAction, AuditOutcome};
use otpd::pb::otp::v1 as pb;
use pb::{Purpose, VerifyResult};

use crate::helpers::*;

const THIRD_PARTY: &str = "010-9999-8888";

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// Where the browser runs leave their screenshots (the committed ones are copied to docs/console/).
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// A team lead as the console tests need one: added with `role`, their own phone registered for sign-in codes.
async fn lead(app: &TestApp, name: &str, role: &str) -> String {
    let token = app.add_supervisor(name, role).await;
    crate::signin::set_contact(app, name).await;
    token
}

/// The audit events of the console's calls, without its sign-ins and sign-outs.
async fn console_events(app: &TestApp) -> Vec<otpd::domain::audit::AuditEvent> {
    let sign_in = [AuditAction::SignIn, AuditAction::SignOut, AuditAction::PasskeyEnrolled];
    app.call_events().await.into_iter().filter(|e| !sign_in.contains(&e.event.action)).collect()
}

/// Runs tests/console/console.mjs as `scenario` with `token`, and returns what it saw. Each time the page asks for
/// a sign-in code (SIGN_IN_CODE_WANTED_FILE), the code the phone stand-in received for the lead goes into SIGN_IN_CODE_FILE, as the
/// lead would read it off their phone.
async fn browser(app: &TestApp, scenario: &str, token: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    browser_with(app, scenario, token, extra, || crate::signin::lead_code(app)).await
}

/// [`browser`], the lead's sign-in codes read by `lead_code` (where the SMS goes to a provider's stand-in).
async fn browser_with(
    app: &TestApp,
    scenario: &str,
    token: &str,
    extra: &[(&str, &str)],
    lead_code: impl Fn() -> String,
) -> serde_json::Value {
    let dir = console_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in tests/console (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: apt-get install chromium (scripts/test does)");
    let result = app.dir.path().join(format!("{scenario}.json"));
    let wanted = app.dir.path().join(format!("{scenario}.code-wanted"));
    let code = app.dir.path().join(format!("{scenario}.code"));
    let mut command = tokio::process::Command::new("node");
    command
        .arg("console.mjs")
        .current_dir(&dir)
        .env("CONSOLE_URL", format!("http://{}/console/", app.admin_addr))
        .env("SCENARIO", scenario)
        .env("TOKEN", token)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .env("RESULT_FILE", &result)
        .env("SIGN_IN_CODE_WANTED_FILE", &wanted)
        .env("SIGN_IN_CODE_FILE", &code)
        .envs(extra.iter().copied())
        .kill_on_drop(true);
    let codes = async {
        loop {
            if wanted.exists() {
                std::fs::remove_file(&wanted).unwrap();
                std::fs::write(&code, lead_code()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let run = tokio::time::timeout(Duration::from_secs(240), command.output());
    let out = tokio::select! {
        out = run => out.unwrap_or_else(|_| panic!("console.mjs {scenario} did not finish in 240 s")).unwrap(),
        () = codes => unreachable!("the code desk runs until the browser is done"),
    };
    let saw = std::fs::read_to_string(&result).unwrap_or_default();
    assert!(
        out.status.success(),
        "console.mjs {scenario} failed:\n{}\n{}\nsaw: {saw}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("console.mjs {scenario}: {saw}");
    serde_json::from_str(&saw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_a_team_lead_looks_up_a_code_and_is_refused_a_third_party() {
    let app = spawn_app(Backend::Sqlite).await;
    let kim = lead(&app, "kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();

    let saw = browser(&app, "supervisor", &kim, &[("PHONE", PHONE), ("THIRD_PARTY", THIRD_PARTY)]).await;

    // The screens a supervisor is offered, and a small page.
    assert_eq!(saw["screens"], serde_json::json!(["lookup", "status"]));
    assert!(saw["page_load_bytes"].as_u64().unwrap() < 64 * 1024, "{}", saw["page_load_bytes"]);

    // The code the page showed last approves over gRPC.
    let code = saw["code"].as_str().unwrap();
    assert_eq!(code.len(), 6);
    assert_eq!(app.verify(PHONE, Purpose::Login, code).await.unwrap().result(), VerifyResult::Approved);

    // The sign-in: the wrong token refused (anonymous), kim's sign-in with the code to her phone, her sign-out.
    let sign_ins: Vec<_> = app
        .call_events()
        .await
        .into_iter()
        .filter(|e| [AuditAction::SignIn, AuditAction::SignOut].contains(&e.event.action))
        .map(|e| (e.event.action, e.event.outcome, e.event.actor_name, e.event.detail))
        .collect();
    assert_eq!(sign_ins.len(), 3, "{sign_ins:?}");
    assert_eq!(
        (sign_ins[0].0, sign_ins[0].1, sign_ins[0].2.as_str()),
        (AuditAction::SignIn, AuditOutcome::Denied, "anonymous")
    );
    assert_eq!(
        (sign_ins[1].0, sign_ins[1].1, sign_ins[1].2.as_str()),
        (AuditAction::SignIn, AuditOutcome::Granted, "kim")
    );
    assert!(sign_ins[1].3.starts_with("signed in with phone_code"), "{}", sign_ins[1].3);
    assert_eq!((sign_ins[2].0, sign_ins[2].2.as_str()), (AuditAction::SignOut, "kim"));

    // Exactly the browser's calls are in the audit log, as from otpctl: two granted lookups with their tickets, the
    // third party's number denied, one status read. WhoAmI is not an event.
    let events = console_events(&app).await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.event.action, e.event.outcome, e.event.ticket_id.clone(), e.event.contact_matched))
        .collect();
    assert_eq!(
        summary,
        vec![
            (AuditAction::LookupCode, AuditOutcome::Granted, Some("CS-CONSOLE-1".into()), Some(true)),
            (AuditAction::LookupCode, AuditOutcome::Denied, Some("CS-CONSOLE-2".into()), Some(false)),
            (AuditAction::GetPhoneStatus, AuditOutcome::Granted, Some("CS-CONSOLE-3".into()), None),
            (AuditAction::LookupCode, AuditOutcome::Granted, Some("CS-CONSOLE-4".into()), Some(true)),
        ]
    );
    assert!(events.iter().all(|e| e.event.actor_name == "kim" && e.event.actor_role == "supervisor"));
    // Where each call came from (제8조), sealed with it: the browser's address and its own user agent.
    for e in &events {
        let access = e.event.access.as_ref().expect("a console call records where it came from");
        assert_eq!(access.client_address(), Some("127.0.0.1".parse().unwrap()));
        assert!(access.user_agent().is_some_and(|ua| ua.contains("Chrome/")), "{access:?}");
        assert_eq!(e.link.version(), 4);
    }
    let denied = &events[1].event;
    assert!(denied.detail.contains("not the number being verified"), "{}", denied.detail);
    assert_eq!(denied.contact_channel, Some(otpd::domain::ContactChannel::InboundCall));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_roles_see_only_their_screens_and_an_admin_unlocks_after_confirming() {
    let app = spawn_app(Backend::Sqlite).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let lee = lead(&app, "lee", "auditor").await;
    let park = lead(&app, "park", "admin").await;

    // A day's events from otpctl-like gRPC clients: a lookup, a third party refused, more than a page of reads.
    app.send(PHONE, Purpose::Login).await.unwrap();
    let mut sup = app.sup.clone();
    let mut granted = lookup_req(PHONE, PHONE_E164);
    granted.ticket_id = "CS-CONSOLE-1".into();
    sup.lookup_code(authed(granted, &kim)).await.unwrap();
    let status = sup.lookup_code(authed(lookup_req(PHONE, THIRD_PARTY), &kim)).await.unwrap_err();
    assert_eq!(reason(&status), "THIRD_PARTY_NUMBER");
    for i in 0..24 {
        let req = pb::GetPhoneStatusRequest {
            phone_number: PHONE.into(),
            ticket_id: format!("CS-READ-{i}"),
            ..Default::default()
        };
        sup.get_phone_status(authed(req, &kim)).await.unwrap();
    }

    // The auditor: the audit list, paged, its links intact; no lookup screen.
    let saw = browser(&app, "auditor", &lee, &[]).await;
    assert_eq!(saw["sections"], serde_json::json!(["audit"]));
    let listed = console_events(&app).await;
    assert!(
        listed.iter().any(|e| e.event.actor_name == "lee" && e.event.action == AuditAction::ListAuditEvents),
        "the auditor's reads are audited"
    );
    let verified: Vec<_> = listed.iter().filter(|e| e.event.action == AuditAction::VerifyAuditChain).collect();
    assert_eq!(verified.len(), 2, "once alone, once against the kept head");
    assert!(verified[0].event.detail.starts_with("chain intact"), "{}", verified[0].event.detail);
    assert!(verified[1].event.detail.contains("1 kept head(s) checked"), "{}", verified[1].event.detail);
    assert!(saw["chain_verify"].as_str().unwrap().contains("whole chain intact"), "{}", saw["chain_verify"]);

    // Locked after ten wrong codes; the admin unlocks it in the browser, after cancelling once and confirming.
    // The driver's code (the auditor's sign-in code went to the lead's phone since; the lookup notice holds none).
    let sms = app.sms();
    let to_driver = sms.iter().rev().find(|m| m.to == PHONE_E164 && !m.body.contains(LOOKUP_NOTICE_MARK)).unwrap();
    let code = code_in(&to_driver.body);
    for _ in 0..10 {
        app.verify(PHONE, Purpose::Login, &wrong_code(&code)).await.unwrap();
    }
    assert_eq!(app.db.phone_state(PHONE_E164).await, (10, true));
    let saw = browser(&app, "admin", &park, &[("PHONE", PHONE)]).await;
    assert_eq!(saw["screens"], serde_json::json!(["lookup", "status", "unlock", "audit"]));
    assert_eq!(app.db.phone_state(PHONE_E164).await, (0, false));
    let unlocks: Vec<_> =
        app.call_events().await.into_iter().filter(|e| e.event.action == AuditAction::UnlockPhone).collect();
    assert_eq!(unlocks.len(), 1, "cancelling sent nothing; confirming sent one");
    let unlock = &unlocks[0].event;
    assert_eq!((unlock.actor_name.as_str(), unlock.outcome), ("park", AuditOutcome::Granted));
    assert_eq!(unlock.ticket_id.as_deref(), Some("CS-CONSOLE-9"));
    assert_eq!(unlock.reason.as_deref(), Some("driver identified on a callback"));
    app.stop().await;
}

/// WhoAmI's `allowed_methods` is what the flows really allow: every method it leaves out is refused
/// `ROLE_NOT_ALLOWED`, every one it lists is not; WhoAmI itself is not audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_who_am_i_matches_what_each_role_may_call() {
    let app = spawn_app(Backend::Sqlite).await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let all = [
        "LookupCode",
        "GetPhoneStatus",
        "UnlockPhone",
        "ListAuditEvents",
        "VerifyAuditChain",
        "LiftSignInLock",
        "Diagnose",
        "GetPrefixGuard",
        "SetPrefixGuard",
    ];
    for (name, role, expected) in [
        ("kim", "supervisor", vec!["LookupCode", "GetPhoneStatus", "GetPrefixGuard"]),
        ("lee", "auditor", vec!["ListAuditEvents", "VerifyAuditChain"]),
        ("park", "admin", all.to_vec()),
    ] {
        let token = app.add_supervisor(name, role).await;
        let before = app.call_events().await.len();
        let me = app.sup.clone().who_am_i(authed(pb::WhoAmIRequest {}, &token)).await.unwrap().into_inner();
        assert_eq!((me.name.as_str(), me.role.as_str()), (name, role));
        assert_eq!(me.allowed_methods, expected);
        assert_eq!(app.call_events().await.len(), before, "WhoAmI is not audited");
        for method in all {
            let refused = match call(&app, method, &token).await {
                Err(status) => status.code() == tonic::Code::PermissionDenied && reason(&status) == "ROLE_NOT_ALLOWED",
                Ok(()) => false,
            };
            assert_eq!(refused, !expected.contains(&method), "{role} calling {method}");
        }
    }
    let unknown = app.sup.clone().who_am_i(authed(pb::WhoAmIRequest {}, "not-a-token")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    let before = console_events(&app).await.len();
    let token = app.add_supervisor("kim2", "supervisor").await;
    app.disable_supervisor("kim2").await;
    let disabled = app.sup.clone().who_am_i(authed(pb::WhoAmIRequest {}, &token)).await.unwrap_err();
    assert_eq!(disabled.code(), tonic::Code::Unauthenticated);
    // Its refusal is a failed sign-in of kim2's (audited as such since issue 17), not a call on a number.
    let last = app.call_events().await.pop().unwrap();
    assert_eq!((last.event.action, last.event.actor_name.as_str()), (AuditAction::SignIn, "kim2"));
    assert_eq!(console_events(&app).await.len(), before, "a disabled token's WhoAmI touches no number");
    app.stop().await;
}

/// One well-formed call of `method` as `token`.
async fn call(app: &TestApp, method: &str, token: &str) -> Result<(), tonic::Status> {
    let mut sup = app.sup.clone();
    match method {
        "LookupCode" => sup.lookup_code(authed(lookup_req(PHONE, PHONE), token)).await.map(drop),
        "GetPhoneStatus" => {
            let req = pb::GetPhoneStatusRequest {
                phone_number: PHONE.into(),
                ticket_id: "CS-1".into(),
                ..Default::default()
            };
            sup.get_phone_status(authed(req, token)).await.map(drop)
        }
        "UnlockPhone" => {
            let req =
                pb::UnlockPhoneRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), reason: "test".into() };
            sup.unlock_phone(authed(req, token)).await.map(drop)
        }
        "ListAuditEvents" => {
            sup.list_audit_events(authed(pb::ListAuditEventsRequest::default(), token)).await.map(drop)
        }
        "VerifyAuditChain" => {
            sup.verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), token)).await.map(drop)
        }
        "LiftSignInLock" => {
            let req = pb::LiftSignInLockRequest { supervisor: "nobody".into(), ..Default::default() };
            sup.lift_sign_in_lock(authed(req, token)).await.map(drop)
        }
        "Diagnose" => sup.diagnose(authed(pb::DiagnoseRequest {}, token)).await.map(drop),
        "GetPrefixGuard" => {
            sup.get_prefix_guard(authed(pb::GetPrefixGuardRequest { prefix: PHONE.into() }, token)).await.map(drop)
        }
        "SetPrefixGuard" => {
            let until = app.now() + chrono::TimeDelta::hours(1);
            let req = pb::SetPrefixGuardRequest {
                prefix: PHONE.into(),
                action: pb::PrefixGuardAction::Exempt.into(),
                until: Some(prost_types::Timestamp { seconds: until.timestamp(), nanos: 0 }),
                ticket_id: "CS-1".into(),
                reason: "test".into(),
            };
            sup.set_prefix_guard(authed(req, token)).await.map(drop)
        }
        other => panic!("unknown method {other}"),
    }
}

/// A gRPC-Web frame holding `message`.
fn grpc_web_frame(message: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    body
}

/// The gRPC-Web edge over plain HTTP/1.1, as a browser speaks it: the same token layer, the headers on every
/// response, nothing else answered on HTTP/1.1, and native gRPC clients on the same listener unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_grpc_web_goes_through_the_same_token_layer_with_the_headers() {
    use prost::Message;
    let app = spawn_app(Backend::Sqlite).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let base = format!("http://{}", app.admin_addr);
    let secured = |headers: &reqwest::header::HeaderMap| {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(get("cache-control"), "no-store");
        assert_eq!(get("x-frame-options"), "DENY");
        assert_eq!(get("referrer-policy"), "no-referrer");
        assert_eq!(get("x-content-type-options"), "nosniff");
        assert_eq!(get("content-security-policy"), otpd::console::CONTENT_SECURITY_POLICY);
    };

    let page = http.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    secured(page.headers());
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/console"))
        .send()
        .await
        .unwrap();
    assert_eq!((redirect.status().as_u16(), redirect.headers()["location"].to_str().unwrap()), (308, "/console/"));

    let web = |token: Option<&str>, body: Vec<u8>| {
        let mut request = http
            .post(format!("{base}/otp.v1.SupervisorService/GetPhoneStatus"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    let status_req =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-WEB-1".into(), ..Default::default() }
            .encode_to_vec();

    // No token: refused by the token layer, as a native call is.
    let refused = web(None, grpc_web_frame(&status_req)).await.unwrap();
    secured(refused.headers());
    assert_eq!(refused.headers()["grpc-status"], "16");

    // With the token: the same flow, audited like otpctl's call.
    let answered = web(Some(&kim), grpc_web_frame(&status_req)).await.unwrap();
    secured(answered.headers());
    let body = answered.bytes().await.unwrap();
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(body[0], 0, "a data frame first");
    let status = pb::GetPhoneStatusResponse::decode(&body[5..5 + len]).unwrap();
    assert_eq!(status.masked_phone_number, "+82 10-****-5678");
    let trailers = String::from_utf8_lossy(&body[5 + len + 5..]).to_string();
    assert!(body[5 + len] & 0x80 != 0 && trailers.contains("grpc-status:0"), "{trailers}");
    let events = app.call_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.ticket_id.as_deref(), Some("CS-WEB-1"));

    // A malformed gRPC-Web message is the caller's mistake, as on native gRPC.
    let garbage = web(Some(&kim), grpc_web_frame(&[0xff, 0xff, 0xff])).await.unwrap();
    let code = garbage.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    let body = garbage.bytes().await.unwrap();
    let code = code.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    assert!(code == "3" || code.contains("grpc-status:3"), "INVALID_ARGUMENT, got {code}");

    // HTTP/1.1 answers only the console and gRPC-Web: a native gRPC content type is refused, not routed.
    let native_over_h1 = http
        .post(format!("{base}/otp.v1.SupervisorService/GetPhoneStatus"))
        .header("content-type", "application/grpc")
        .header("authorization", format!("Bearer {kim}"))
        .body(grpc_web_frame(&status_req))
        .send()
        .await
        .unwrap();
    assert_eq!(native_over_h1.status(), 400);
    assert_eq!(app.call_events().await.len(), 1, "only the authenticated, well-formed gRPC-Web call was served");

    // Native gRPC (HTTP/2) on the same listener: unchanged, and without the browser headers.
    let req =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-NATIVE".into(), ..Default::default() };
    let native = app.sup.clone().get_phone_status(authed(req, &kim)).await.unwrap();
    assert!(native.metadata().get("content-security-policy").is_none());
    assert_eq!(app.health(app.admin_addr, "otp.v1.SupervisorService").await, 1);
    app.stop().await;
}

/// VerifyAuditChain checks links and seals under the key, as `otpd audit verify` does, and names the first bad
/// event of a chain changed behind the service's back; the check itself is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_verify_audit_chain_finds_a_changed_event() {
    let app = spawn_app(Backend::Sqlite).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let lee = app.add_supervisor("lee", "auditor").await;
    for i in 0..3 {
        let req = pb::GetPhoneStatusRequest {
            phone_number: PHONE.into(),
            ticket_id: format!("CS-{i}"),
            ..Default::default()
        };
        app.sup.clone().get_phone_status(authed(req, &kim)).await.unwrap();
    }
    let verify = |through: i64| {
        let mut sup = app.sup.clone();
        let token = lee.clone();
        async move {
            let req = pb::VerifyAuditChainRequest { accept_unkeyed_through: through, ..Default::default() };
            sup.verify_audit_chain(authed(req, &token)).await
        }
    };
    let report = verify(0).await.unwrap().into_inner();
    let chain = app.audit().await;
    assert!(report.intact, "{report:?}");
    assert_eq!(report.events_checked, 5, "two supervisors added, three reads");
    assert_eq!(report.head_hash, chain[4].hash);
    let last = chain.last().unwrap();
    assert_eq!((last.event.action, last.event.actor_name.as_str()), (AuditAction::VerifyAuditChain, "lee"));
    assert_eq!(last.event.id.to_string(), report.audit_event_id);

    let refused = verify(-1).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (tonic::Code::InvalidArgument, "INVALID_SEQUENCE".into()));
    let refused = app.sup.clone().verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), &kim)).await;
    assert_eq!(reason(&refused.unwrap_err()), "ROLE_NOT_ALLOWED");

    // Someone who owns the table changes the third event's ticket (the triggers dropped first).
    let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
    sqlx::query("DROP TRIGGER IF EXISTS audit_events_no_update").execute(&pool).await.unwrap();
    sqlx::query("UPDATE audit_events SET ticket_id = 'FORGED' WHERE seq = 3").execute(&pool).await.unwrap();
    let report = verify(0).await.unwrap().into_inner();
    assert!(!report.intact);
    assert_eq!((report.broken_at_sequence, report.events_checked), (3, 2));
    assert!(report.problem.contains("does not match its seal"), "{}", report.problem);
    assert!(app.audit().await.last().unwrap().event.detail.starts_with("chain broken at audit event 3"));
    app.stop().await;
}

/// A send that went AlimTalk → refused → SMS accepted, and a carrier's receipt then said the SMS was blocked as
/// spam: the status screen shows both attempts, that SMS carried it, and the reason in Korean and English, in
/// otpctl's words (the stand-ins and the receipt are the delivery tests' own, tests/api/receipts.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_status_shows_each_delivery_attempt_and_the_carriers_reason() {
    use crate::receipts::{NHN_SIGNATURE, nhn_args, nhn_hook, post, status};
    use crate::standins::{Fault, StandIn};
    let nhn = StandIn::nhn().await;
    nhn.fail_next(&[Fault::Refuse]);
    let args = nhn_args(&nhn);
    let app = spawn_app_with(Backend::Sqlite, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let kim = lead(&app, "kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let sms_id = status(&app, &kim).await.attempts[1].provider_id.clone();
    let signed = [("x-toast-webhook-signature", NHN_SIGNATURE.to_owned())];
    assert_eq!(post(&app, "/receipts/nhn", &signed, nhn_hook(&sms_id, "FAILED", "3012")).await, 200);

    // The lead's sign-in code went through the NHN stand-in too: AlimTalk's template parameter, or the SMS text.
    let lead_code = || {
        let seen = nhn.seen();
        let to_lead = seen.iter().rev().find(|s| s.body["recipientList"][0]["recipientNo"] == "01098765432").unwrap();
        match to_lead.body["recipientList"][0]["templateParameter"]["code"].as_str() {
            Some(code) => code.to_owned(),
            None => code_in(to_lead.body["body"].as_str().unwrap()),
        }
    };
    let saw = browser_with(&app, "receipts", &kim, &[("PHONE", PHONE)], lead_code).await;

    // The send: carried by SMS (AlimTalk was refused), accepted by the provider but not delivered by the carrier.
    let cell = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
    let send: Vec<String> = saw["send"].as_array().unwrap().iter().map(cell).collect();
    assert_eq!(send[1..4], ["SMS", "수신 실패 / not delivered", "유효 / live"], "{send:?}");
    let attempts: Vec<Vec<String>> =
        saw["attempts"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(cell).collect()).collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    // The refusal says why (issue 21, section 5).
    let refused = "거절 / refused — 발송 실패: 발송 업체가 거절 / send failed: refused by the provider";
    assert_eq!(attempts[0][..4], ["1", "알림톡 / AlimTalk", "alimtalk@nhn", refused], "{attempts:?}");
    assert_eq!(attempts[0][5], "-", "a refused AlimTalk reached no carrier");
    assert_eq!(attempts[1][..4], ["2", "SMS", "sms@nhn", "접수 / accepted"], "{attempts:?}");
    assert!(attempts.iter().all(|a| a[4].ends_with(" KST")), "{attempts:?}");
    let receipt = &attempts[1][5];
    assert!(receipt.starts_with("실패 / failed ") && receipt.contains(" KST: "), "{receipt}");
    assert!(
        receipt.ends_with(": 수신 거부/스팸 차단 / refused by the recipient or blocked as spam (3012)"),
        "{receipt}"
    );
    assert_eq!(saw["receipt_class"], "receipt bad");
    // The checklist (issue 22, section 5): the carrier's spam block is the check to act on.
    let checklist: Vec<Vec<String>> =
        saw["checklist"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(cell).collect()).collect();
    let kinds: Vec<&str> = checklist.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(kinds, ["number", "mobile_data", "spam_filter", "carrier_block"], "{checklist:?}");
    assert_eq!(
        checklist[3][1..],
        ["check act", "통신사 스팸 차단으로 실패 (3012): 1800-3400 수신 차단 해제를 안내하세요"],
        "{checklist:?}"
    );

    // The browser's read is audited like otpctl's.
    let events = console_events(&app).await;
    let read = events.last().unwrap();
    assert_eq!(
        (read.event.action, read.event.ticket_id.as_deref()),
        (AuditAction::GetPhoneStatus, Some("CS-RECEIPT-1"))
    );
    app.stop().await;
}

/// Issue 21: "통화 중 / On the line". The stand-in phone system answers a call for the team lead's agent id after
/// the console is signed in; the console shows it within 3 s; chosen before the driver pressed send, it waits for
/// the send (no lookup asked for, so no denied event per poll) and looks up the moment the send is recorded; the
/// status and a code show, which approves over gRPC; the lookup is audited with the call as its evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_on_the_line_shows_the_call_and_one_choice_looks_the_code_up() {
    use crate::calls::{PhoneSystem, webhook_args};
    let app = spawn_app_with(Backend::Sqlite, &webhook_args("call")).await;
    let kim = lead(&app, "kim", "supervisor").await;
    app.set_agent("kim", "7001").await;
    let ready = app.dir.path().join("ready");
    let posted = app.dir.path().join("posted");
    let (ready_s, posted_s) = (ready.display().to_string(), posted.display().to_string());
    let phone = PhoneSystem::of(&app);
    let answer = async {
        for _ in 0..1200 {
            if ready.exists() {
                assert_eq!(phone.answered(app.now(), "C-CONSOLE", PHONE, "7001").await, 204);
                let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
                std::fs::write(&posted, at.to_string()).unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the console never got ready");
    };
    let send_file = app.dir.path().join("send");
    let send_s = send_file.display().to_string();
    // The driver presses send only after the team lead chose the call.
    let driver_sends = async {
        for _ in 0..2400 {
            if send_file.exists() {
                app.send(PHONE, Purpose::Login).await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the console never chose the call");
    };
    let (code_file, approved) = (app.dir.path().join("code"), app.dir.path().join("approved"));
    let (code_s, approved_s) = (code_file.display().to_string(), approved.display().to_string());
    // The driver types the code the team lead read out: it approves over gRPC, and the console then says so.
    let driver = async {
        for _ in 0..2400 {
            if let Ok(code) = std::fs::read_to_string(&code_file) {
                let r = app.verify(PHONE, Purpose::Login, &code).await.unwrap();
                assert_eq!(r.result(), VerifyResult::Approved);
                std::fs::write(&approved, "approved").unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the console never showed a code");
    };
    let extra = [
        ("READY_FILE", ready_s.as_str()),
        ("POSTED_FILE", posted_s.as_str()),
        ("CODE_FILE", code_s.as_str()),
        ("APPROVED_FILE", approved_s.as_str()),
        ("SEND_FILE", send_s.as_str()),
    ];
    let (saw, (), (), ()) = tokio::join!(browser(&app, "calls", &kim, &extra), answer, driver_sends, driver);
    assert!(saw["shown_after_ms"].as_u64().unwrap() <= 3000, "{}", saw["shown_after_ms"]);
    assert!(saw["code_after_send_ms"].as_u64().unwrap() <= 3000, "{}", saw["code_after_send_ms"]);
    assert!(saw["approved_status"].as_str().unwrap().contains("인증 완료"), "{}", saw["approved_status"]);
    let events = app.call_events().await;
    let lookups: Vec<_> = events.iter().filter(|e| e.event.action == AuditAction::LookupCode).collect();
    assert_eq!(lookups.len(), 1, "waiting for the send asked for no lookup: {lookups:?}");
    // (The scenario first signs in with a wrong token: that failed sign-in is not part of the waiting.)
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.event.outcome != AuditOutcome::Granted && e.event.action != AuditAction::SignIn)
        .collect();
    assert!(denied.is_empty(), "nothing denied while waiting: {denied:?}");
    let lookup = lookups[0];
    assert_eq!(lookup.event.outcome, AuditOutcome::Granted);
    assert_eq!(lookup.event.ticket_id.as_deref(), Some("CS-CALL-1"));
    assert!(
        matches!(&lookup.event.evidence, Some(otpd::domain::Evidence::Call { call_id, .. }) if call_id == "C-CONSOLE"),
        "{:?}",
        lookup.event.evidence
    );
    app.stop().await;
}

/// Issue 17: passkeys in Chromium with its virtual authenticator (CDP WebAuthn, user verification on). The lead signs
/// in with the code to her phone, adds a passkey, signs out, signs in with the token and the passkey alone (the
/// screenshot docs/console/sign-in.png is the factor choice), and looks a code up, under `--require-second-factor`
/// so that only the session opens the lookup. The page is at `localhost`: the relying party is a host name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_a_passkey_enrolled_in_chromium_signs_in_and_looks_a_code_up() {
    let app = spawn_app_with(Backend::Sqlite, &["--require-second-factor", "true"]).await;
    let kim = lead(&app, "kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let url = format!("http://localhost:{}/console/", app.admin_addr.port());

    let saw = browser(&app, "passkey", &kim, &[("CONSOLE_URL", url.as_str()), ("PHONE", PHONE)]).await;

    assert!(saw["factors"][0].as_str().unwrap().starts_with("passkey"), "{}", saw["factors"]);
    assert_eq!(saw["session_prefix"], "otpsess_");
    assert!(
        saw["signed_in_sign_count"].as_u64().unwrap() > saw["enrolled_sign_count"].as_u64().unwrap(),
        "the authenticator signed the sign-in: {saw}"
    );
    let code = saw["code"].as_str().unwrap();
    assert_eq!(app.verify(PHONE, Purpose::Login, code).await.unwrap().result(), VerifyResult::Approved);

    let passkeys = app.stores.sign_in.passkeys("kim").await.unwrap();
    assert_eq!((passkeys.len(), passkeys[0].label.as_str()), (1, "업무용 노트북"));
    assert!(passkeys[0].last_used_at.is_some());
    let events = app.call_events().await;
    let summary: Vec<_> = events
        .iter()
        .filter(|e| e.event.actor_name == "kim")
        .map(|e| (e.event.action, e.event.outcome, e.event.detail.split(" from ").next().unwrap().to_owned()))
        .map(|(action, outcome, detail)| {
            (action, outcome, if action == AuditAction::SignIn { detail } else { String::new() })
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (AuditAction::SignIn, AuditOutcome::Granted, "signed in with phone_code".into()),
            (AuditAction::PasskeyEnrolled, AuditOutcome::Granted, String::new()),
            (AuditAction::SignOut, AuditOutcome::Granted, String::new()),
            (AuditAction::SignIn, AuditOutcome::Granted, "signed in with passkey".into()),
            (AuditAction::LookupCode, AuditOutcome::Granted, String::new()),
            (AuditAction::SignOut, AuditOutcome::Granted, String::new()),
        ]
    );
    let screenshot = screenshot_dir().join("sign-in.png");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "{}", screenshot.display());
    app.stop().await;
}

/// Five failed sign-ins from one address lock it (issue 17, section 2): the console then tells the lead, who has the
/// right token, when she may try again: the lock's end in KST, as the store holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_a_locked_sign_in_says_when_to_try_again() {
    let app = spawn_app(Backend::Sqlite).await;
    let kim = lead(&app, "kim", "supervisor").await;

    let saw = browser(&app, "locked", &kim, &[]).await;

    let until = app.stores.sign_in.sign_in_lock("address:127.0.0.1", app.now()).await.unwrap();
    let until = until.expect("the address is locked");
    let kst = (until + chrono::TimeDelta::hours(9)).format("%Y-%m-%d %H:%M:%S KST").to_string();
    let notice = saw["lock_notice"].as_str().unwrap();
    assert!(notice.contains(&format!("{kst} 이후에 다시 시도하세요")), "{notice} (locked until {kst})");
    assert!(notice.contains("SIGN_IN_LOCKED"), "{notice}");
    app.stop().await;
}

/// A session that ends while the page is open (idle past `--session-idle`, the service's clock moved on): the next
/// call returns the lead to the sign-in page, saying why (issue 17: the standard's automatic disconnection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_an_expired_session_returns_to_the_sign_in_page() {
    let app = spawn_app(Backend::Sqlite).await;
    let kim = lead(&app, "kim", "supervisor").await;
    let (wanted, expired) = (app.dir.path().join("expire-wanted"), app.dir.path().join("expired"));
    let (wanted_s, expired_s) = (wanted.display().to_string(), expired.display().to_string());
    let idle = async {
        for _ in 0..2400 {
            if wanted.exists() {
                app.advance(chrono::TimeDelta::minutes(16));
                std::fs::write(&expired, "expired").unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the console never signed in");
    };
    let extra = [("PHONE", PHONE), ("EXPIRE_WANTED_FILE", wanted_s.as_str()), ("EXPIRED_FILE", expired_s.as_str())];
    let (saw, ()) = tokio::join!(browser(&app, "expired", &kim, &extra), idle);
    let notice = saw["expired_notice"].as_str().unwrap();
    assert!(notice.contains("로그인 시간이 만료되었습니다"), "{notice}");
    // The refused call read nothing: no status event after the sign-in.
    assert!(console_events(&app).await.iter().all(|e| e.event.ticket_id.as_deref() != Some("CS-EXPIRED-1")));
    app.stop().await;
}
