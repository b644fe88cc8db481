//! The audit chain under concurrency and tampering, checked by `otpd audit verify`; the supervisors CLI.

use otpd::domain::audit::{AuditAction, AuditOutcome};
use otpd::pb::otp::v1::supervisor_service_client::SupervisorServiceClient;
use otpd::pb::otp::v1::{self as pb, Purpose};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    concurrent_lookups_and_denials_keep_one_gapless_chain,
    tampering_is_found_and_named,
    a_cut_off_tail_is_caught_by_the_head_published_in_the_logs,
    a_suffix_resealed_without_the_key_is_caught,
    a_chain_from_before_keyed_links_still_verifies,
    the_unkeyed_prefix_is_the_operators_setting_never_the_callers,
    where_a_call_came_from_cannot_be_rewritten,
    verify_audit_chain_over_grpc_checks_the_kept_heads_it_is_given,
);

/// Runs `statements` on a connection that bypasses the append-only triggers, as the table's owner (or a
/// superuser) can.
async fn as_owner_bypassing_triggers(db: &TestDb, statements: Vec<(String, Vec<String>)>) {
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query("DROP TRIGGER IF EXISTS audit_events_no_update").execute(&pool).await.unwrap();
            sqlx::query("DROP TRIGGER IF EXISTS audit_events_no_delete").execute(&pool).await.unwrap();
            for (sql, binds) in statements {
                let mut q = sqlx::query(&sql);
                for b in binds {
                    q = q.bind(b);
                }
                q.execute(&pool).await.unwrap();
            }
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.unwrap();
            for (sql, binds) in statements {
                let mut q = sqlx::query(&sql);
                for b in binds {
                    q = q.bind(b);
                }
                q.execute(&mut *conn).await.unwrap();
            }
        }
    }
}

/// Statements that store `events` in place of the rows with their sequence numbers.
fn rewrite(events: &[otpd::domain::audit::AuditEvent]) -> Vec<(String, Vec<String>)> {
    events
        .iter()
        .map(|e| {
            let sql = format!(
                "UPDATE audit_events SET detail = $1, prev_hash = $2, hash = $3, chain_link = {} WHERE seq = {}",
                e.link.version(),
                e.seq
            );
            (sql, vec![e.event.detail.clone(), e.prev_hash.clone(), e.hash.clone()])
        })
        .collect()
}

/// Re-seals `events` from index `from` on with the unkeyed v1 link, as anyone who can write the table can.
fn reseal_unkeyed(events: &mut [otpd::domain::audit::AuditEvent], from: usize) {
    for i in from..events.len() {
        let prev = if i == 0 { otpd::domain::audit::GENESIS_HASH.to_owned() } else { events[i - 1].hash.clone() };
        events[i] = events[i].event.clone().seal_unkeyed(events[i].seq, &prev);
    }
}

/// The last `audit` event a JSON-logging otpd published: `SEQ:HASH`.
fn published_head(log: &str) -> String {
    let last = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "audit" && v["hash"].is_string())
        .unwrap_or_else(|| panic!("no audit event in the log:\n{log}"));
    format!("{}:{}", last["seq"], last["hash"].as_str().unwrap())
}

/// Whoever owns the table can delete the newest events: the shorter chain is intact by itself. The head the
/// service published in its logs, kept outside the database, is what shows the cut.
async fn a_cut_off_tail_is_caught_by_the_head_published_in_the_logs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let sms = dir.path().join("sms.jsonl");
    let mut args = process_args(&db.url, &sms);
    args.extend(["--log-format".to_owned(), "json".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = OtpdProcess::start(dir.path(), "a", &args, &[]).await;
    let kim = add_supervisor(dir.path(), &db.url, "kim", "supervisor");
    server.otp().await.send_code(send_req(PHONE, Purpose::Login)).await.unwrap();
    let mut sup = SupervisorServiceClient::new(channel(server.admin_addr).await);
    for _ in 0..3 {
        sup.lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
    }
    let (_, stderr) = server.terminate().await;
    let head = published_head(&stderr);
    assert!(head.starts_with("4:"), "{head}");
    let out = otpd(dir.path(), &db.url, &["audit", "verify", "--expect-head", &head]);
    assert!(out.status.success(), "{out:?}");

    as_owner_bypassing_triggers(&db, vec![("DELETE FROM audit_events WHERE seq = 4".into(), vec![])]).await;
    let out = otpd(dir.path(), &db.url, &["audit", "verify"]);
    assert!(stdout(&out).starts_with("audit chain intact: 3 events"), "alone, the chain cannot tell: {out:?}");
    let out = otpd(dir.path(), &db.url, &["audit", "verify", "--expect-head", &head]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the chain ends at event 3") && stderr.contains("removed"), "{stderr}");
}

/// Plain SHA-256 let the table's owner change an event and recompute every later hash. Under the key, the
/// first re-sealed event is named, with no expected head needed.
async fn a_suffix_resealed_without_the_key_is_caught(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    for _ in 0..4 {
        app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
    }
    let mut events = app.audit().await;
    assert_eq!(events.len(), 5);
    events[2].event.detail = "nothing was looked up".into();
    reseal_unkeyed(&mut events, 2);
    as_owner_bypassing_triggers(&app.db, rewrite(&events[2..])).await;

    let out = otpd(app.dir.path(), &app.db.url, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit chain broken at audit event 3 ") && stderr.contains("without the key"), "{stderr}");
}

/// Events written before keyed links (v1) keep verifying, and new ones are keyed after them.
async fn a_chain_from_before_keyed_links_still_verifies(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_supervisor("kim", "supervisor").await;
    app.add_supervisor("lee", "auditor").await;
    // As the rows of an installation that ran the earlier version: sealed with v1.
    let mut events = app.audit().await;
    reseal_unkeyed(&mut events, 0);
    as_owner_bypassing_triggers(&app.db, rewrite(&events)).await;

    let park = app.add_supervisor("park", "admin").await;
    let req = pb::ListAuditEventsRequest::default();
    app.sup.clone().list_audit_events(authed(req, &park)).await.unwrap();
    let links: Vec<i64> = app.audit().await.iter().map(|e| e.link.version()).collect();
    // The operator's addition is v2; the admin's read over gRPC records where it came from: v4.
    assert_eq!(links, [1, 1, 2, 4]);
    let dir = app.dir.path();
    let accepting = ["audit", "verify", "--accept-unkeyed-through", "2"];
    let out = otpd(dir, &app.db.url, &accepting);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("4 events") && stdout(&out).contains("2 leading events sealed without a key"));
    // Unless the operator says how far the old chain reaches, unkeyed events are not taken on trust.
    let out = otpd(dir, &app.db.url, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit event 1 "), "{out:?}");

    // The owner rewrites the whole chain without the key, leaving no keyed event to betray it: past the
    // upgrade point, that is a forgery.
    let mut events = app.audit().await;
    events[2].event.detail = "nothing happened".into();
    reseal_unkeyed(&mut events, 0);
    as_owner_bypassing_triggers(&app.db, rewrite(&events)).await;
    let out = otpd(dir, &app.db.url, &accepting);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit event 3 "), "{out:?}");
}

/// Runs the `otpd` binary with `args` against `db_url`.
/// A chain the table's owner re-sealed without the key passed VerifyAuditChain as "intact" for any auditor who
/// sent a large `accept_unkeyed_through`. Now the request may not set it (INVALID_ARGUMENT, audited), only the
/// server's `--accept-unkeyed-through` does, and the appended event records that threshold and the unkeyed count.
async fn the_unkeyed_prefix_is_the_operators_setting_never_the_callers(backend: Backend) {
    let app = spawn_app_with(backend, &["--accept-unkeyed-through", "2"]).await;
    let lee = app.add_supervisor("lee", "auditor").await;
    app.add_supervisor("kim", "supervisor").await;
    app.add_supervisor("park", "supervisor").await;
    let verify = |through: i64| {
        let (mut sup, token) = (app.sup.clone(), lee.clone());
        async move {
            let req = pb::VerifyAuditChainRequest { accept_unkeyed_through: through, ..Default::default() };
            sup.verify_audit_chain(authed(req, &token)).await
        }
    };
    // The owner re-seals the whole chain without the key.
    let mut events = app.audit().await;
    reseal_unkeyed(&mut events, 0);
    as_owner_bypassing_triggers(&app.db, rewrite(&events)).await;

    let refused = verify(1_000_000).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (tonic::Code::InvalidArgument, "INVALID_SEQUENCE".into()));
    let denied = app.audit().await.pop().unwrap().event;
    assert_eq!((denied.action, denied.outcome), (AuditAction::VerifyAuditChain, AuditOutcome::Denied));

    // The server accepts its own threshold (2) and no further: event 3 is the forgery it is.
    let report = verify(0).await.unwrap().into_inner();
    assert!(!report.intact, "{report:?}");
    assert_eq!((report.events_checked, report.unkeyed_events, report.broken_at_sequence), (2, 2, 3));
    let recorded = app.audit().await.pop().unwrap().event;
    assert!(recorded.detail.contains("2 unkeyed accepted through seq 2"), "{}", recorded.detail);
}

/// Issue 21, section 6: the console's "verify the whole chain" takes a kept head, as `otpd audit verify
/// --expect-head` does. A cut-off tail checks out intact alone; against the head kept before the cut it is
/// "missing … removed". A head that is not SEQ:HASH is refused INVALID_ARGUMENT.
async fn verify_audit_chain_over_grpc_checks_the_kept_heads_it_is_given(backend: Backend) {
    let app = spawn_app(backend).await;
    let lee = app.add_supervisor("lee", "auditor").await;
    app.add_supervisor("kim", "supervisor").await;
    let verify = |heads: Vec<String>| {
        let (mut sup, token) = (app.sup.clone(), lee.clone());
        async move {
            let req = pb::VerifyAuditChainRequest { expect_heads: heads, ..Default::default() };
            sup.verify_audit_chain(authed(req, &token)).await
        }
    };
    let first = verify(vec![]).await.unwrap().into_inner();
    assert!(first.intact, "{first:?}");
    // The verification's own event is the head an auditor keeps.
    let last = app.audit().await.pop().unwrap();
    let kept = format!("{}:{}", last.seq, last.hash);
    let report = verify(vec![kept.clone()]).await.unwrap().into_inner();
    assert!(report.intact && report.events_checked == last.seq, "{report:?}");
    let recorded = app.audit().await.pop().unwrap().event;
    assert!(recorded.detail.contains("1 kept head(s) checked"), "{}", recorded.detail);

    // The owner cuts the tail off, the kept head with it.
    let cut = format!("DELETE FROM audit_events WHERE seq >= {}", last.seq);
    as_owner_bypassing_triggers(&app.db, vec![(cut, vec![])]).await;
    let report = verify(vec![kept.clone()]).await.unwrap().into_inner();
    assert!(!report.intact, "{report:?}");
    assert_eq!(report.broken_at_sequence, last.seq);
    assert!(report.problem.contains("removed"), "{}", report.problem);

    let refused = verify(vec!["4:not-a-hash".into()]).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (tonic::Code::InvalidArgument, "INVALID_SEQUENCE".into()));
}

fn otpd(dir: &std::path::Path, db_url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(args)
        .args(["--database-url", db_url])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("OTPD_PEPPER", TEST_PEPPER)
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add_supervisor(dir: &std::path::Path, db_url: &str, name: &str, role: &str) -> String {
    let out = otpd(dir, db_url, &["supervisors", "add", "--name", name, "--role", role]);
    assert!(out.status.success(), "{out:?}");
    stdout(&out).trim().to_owned()
}

async fn concurrent_lookups_and_denials_keep_one_gapless_chain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path()).await;
    let sms = dir.path().join("sms.jsonl");
    let mut args = process_args(&db.url, &sms);
    args.extend(["--supervisor-lookups-per-hour".to_owned(), "100".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // PostgreSQL: two replicas append to one chain. SQLite is one instance by design.
    let a = OtpdProcess::start(dir.path(), "a", &args, &[]).await;
    let b = match backend {
        Backend::Postgres => Some(OtpdProcess::start(dir.path(), "b", &args, &[]).await),
        Backend::Sqlite => None,
    };
    let tokens: Vec<String> =
        ["kim", "choi", "park"].iter().map(|n| add_supervisor(dir.path(), &db.url, n, "supervisor")).collect();

    let phones: Vec<String> = (0..5).map(|i| format!("010-5555-{i:04}")).collect();
    let mut otp = a.otp().await;
    for phone in &phones {
        otp.send_code(send_req(phone, Purpose::Login)).await.unwrap();
    }
    let mut clients = vec![SupervisorServiceClient::new(channel(a.admin_addr).await)];
    if let Some(b) = &b {
        clients.push(SupervisorServiceClient::new(channel(b.admin_addr).await));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let phone = phones[i % phones.len()].clone();
        let contact = if i % 3 == 0 { "010-9999-0000".to_owned() } else { phone.clone() };
        let mut client = clients[i % clients.len()].clone();
        let token = tokens[i % tokens.len()].clone();
        tasks.spawn(async move { client.lookup_code(authed(lookup_req(&phone, &contact), &token)).await.is_ok() });
    }
    let mut granted = 0;
    while let Some(ok) = tasks.join_next().await {
        granted += usize::from(ok.unwrap());
    }
    assert_eq!(granted, 50 - 17, "every third lookup is for a third party's number");

    let out = otpd(dir.path(), &db.url, &["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
    // 50 lookups and the 3 `supervisors add` events.
    assert!(stdout(&out).starts_with("audit chain intact: 53 events"), "{}", stdout(&out));
    a.terminate().await;
    if let Some(b) = b {
        b.terminate().await;
    }
}

async fn tampering_is_found_and_named(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    for _ in 0..5 {
        app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
    }
    let dir = app.dir.path();
    assert!(otpd(dir, &app.db.url, &["audit", "verify"]).status.success());

    // The service's own connection cannot change the log.
    let forge = "UPDATE audit_events SET ticket_id = 'FORGED' WHERE seq = 3";
    let statements = [forge, "DELETE FROM audit_events WHERE seq = 5", "DELETE FROM audit_events"];
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
            for sql in statements {
                let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
                assert!(err.to_string().contains("append-only"), "{sql}: {err}");
            }
            // Someone with the file can drop the trigger; the chain still tells.
            sqlx::query("DROP TRIGGER IF EXISTS audit_events_no_update").execute(&pool).await.unwrap();
            sqlx::query(forge).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
            for sql in statements.iter().copied().chain(["TRUNCATE audit_events"]) {
                let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
                assert!(err.to_string().contains("append-only"), "{sql}: {err}");
            }
            // A superuser can bypass triggers; the chain still tells.
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.unwrap();
            sqlx::query(forge).execute(&mut *conn).await.unwrap();
        }
    }
    let out = otpd(dir, &app.db.url, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit chain broken at audit event 3 "), "{stderr}");
}

/// Run from a directory without the service's development pepper, the CLI refuses rather than make a pepper of
/// its own and seal audit events under a key the service does not have.
#[tokio::test]
async fn the_cli_never_makes_a_pepper_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("otpd.db").display());
    for args in [&["supervisors", "add", "--name", "kim", "--role", "supervisor"][..], &["audit", "verify"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
            .args(args)
            .args(["--database-url", &url])
            .current_dir(dir.path())
            .env_remove("OTPD_PEPPER")
            .env_remove("OTPD_PEPPER_FILE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no pepper at otpd.pepper"), "{out:?}");
        assert!(!dir.path().join("otpd.pepper").exists());
        assert!(!dir.path().join("otpd.db").exists(), "nor a database");
    }

    // Given the audit key's file, the CLI needs no pepper at all.
    std::fs::write(dir.path().join("audit.key"), "an audit key kept apart from the pepper").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(["audit", "verify", "--audit-key-file", "audit.key", "--database-url", &url])
        .current_dir(dir.path())
        .env_remove("OTPD_PEPPER")
        .env_remove("OTPD_PEPPER_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.path().join("otpd.pepper").exists());
}

#[tokio::test]
async fn supervisors_cli_prints_the_token_alone_and_disables() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("otpd.db").display());
    let out = otpd(dir.path(), &url, &["supervisors", "add", "--name", "kim.minji", "--role", "supervisor"]);
    assert!(out.status.success(), "{out:?}");
    let token = stdout(&out);
    assert_eq!(token.lines().count(), 1, "the token alone on stdout: {token:?}");
    assert!(token.starts_with(otpd::supervision::token::PREFIX) && token.trim().len() == 48, "{token:?}");

    let dup = otpd(dir.path(), &url, &["supervisors", "add", "--name", "kim.minji", "--role", "admin"]);
    assert_eq!(dup.status.code(), Some(1));
    let bad = otpd(dir.path(), &url, &["supervisors", "add", "--name", "lee", "--role", "root"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(otpd(dir.path(), &url, &["supervisors", "add", "--name", "lee", "--role", "auditor"]).status.success());

    let list = stdout(&otpd(dir.path(), &url, &["supervisors", "list"]));
    assert!(list.lines().any(|l| l.starts_with("kim.minji") && l.contains("supervisor")), "{list}");
    assert!(!list.contains(token.trim()), "the list never shows tokens");

    let out = otpd(dir.path(), &url, &["supervisors", "disable", "kim.minji"]);
    assert!(out.status.success(), "{out:?}");
    let list = stdout(&otpd(dir.path(), &url, &["supervisors", "list"]));
    let kim = list.lines().find(|l| l.starts_with("kim.minji")).unwrap();
    assert!(!kim.trim_end().ends_with('-'), "disabled shows a time: {kim}");
    assert_eq!(otpd(dir.path(), &url, &["supervisors", "disable", "nobody"]).status.code(), Some(1));
    assert_eq!(
        otpd(dir.path(), &url, &["supervisors", "add", "--name", "system", "--role", "admin"]).status.code(),
        Some(2)
    );

    // Each change is in the audit chain, by the operator.
    let store = otpd::store::connect(&url).await.unwrap().supervision;
    let events = store.audit_chain(0, 100).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.event.action.as_str(), e.event.detail.as_str(), e.event.actor_role.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("supervisor_added", "added kim.minji (supervisor)", "operator"),
            ("supervisor_added", "added lee (auditor)", "operator"),
            ("supervisor_disabled", "disabled kim.minji", "operator"),
        ]
    );
}

/// Where a call came from is sealed with its event (link v4): the table's owner can neither change the recorded
/// address, nor erase the context, nor add a user agent to an event that had none.
async fn where_a_call_came_from_cannot_be_rewritten(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    for _ in 0..3 {
        app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
    }
    let links: Vec<i64> = app.audit().await.iter().map(|e| e.link.version()).collect();
    assert_eq!(links, [2, 4, 4, 4]);
    let dir = app.dir.path();
    assert!(otpd(dir, &app.db.url, &["audit", "verify"]).status.success());
    // Each forgery is earlier than the last, so each is the first broken event verify names.
    for (sql, seq) in [
        ("UPDATE audit_events SET client_address = '192.0.2.1' WHERE seq = 4", 4),
        ("UPDATE audit_events SET client_address = NULL WHERE seq = 3", 3),
        ("UPDATE audit_events SET user_agent = 'Mozilla/5.0' WHERE seq = 2", 2),
    ] {
        as_owner_bypassing_triggers(&app.db, vec![(sql.to_owned(), vec![])]).await;
        let out = otpd(dir, &app.db.url, &["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "{sql}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("audit chain broken at audit event {seq} ")), "{sql}: {stderr}");
    }
}
