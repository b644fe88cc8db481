//! Issue 18 §1–2 across replicas: the per-prefix SMS budget shared by three `otpd` processes on one PostgreSQL,
//! and the pumping guard replaying a synthetic day through three replicas (enforce and shadow), with an admin's
//! exemption.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use otpd::clock::ManualClock;
use otpd::pb::otp::v1 as pb;
use pb::Purpose;
use tonic_types::StatusExt;

use crate::helpers::*;
use crate::standins::{APP_KEY, SECRET_KEY, StandIn};

/// A number of the prefix `8210{p3}`: `010-{p3}{n / 10000}-{n % 10000}`.
fn number(p3: &str, n: u32) -> String {
    format!("010-{p3}{}-{:04}", n / 10_000, n % 10_000)
}

fn metadata(status: &tonic::Status) -> std::collections::HashMap<String, String> {
    status.get_error_details().error_info().expect("ErrorInfo").metadata.clone()
}

/// Three `otpd` processes on one PostgreSQL, sending through one NHN SMS stand-in, with the default per-prefix
/// limit (100/h, burst 20) and the guard off: 300 sends to 300 numbers of one prefix, spread over the three, reach
/// the provider at most one budget's worth (the burst, plus what the rate refilled meanwhile), where per-replica
/// limits alone let three bursts through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_spend_one_prefix_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let nhn = StandIn::nhn().await;
    let gateway = format!("nhn-sms:{}", nhn.base());
    let args = [
        "--database-url",
        &db.url,
        "--sms-gateway",
        &gateway,
        "--nhn-sms-app-key",
        APP_KEY,
        "--nhn-sms-secret-key",
        SECRET_KEY,
        "--pepper",
        TEST_PEPPER,
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--send-limit-per-ip",
        "off",
        "--verify-limit-per-ip",
        "off",
        "--pumping-guard",
        "off",
        // A queue no busy test machine fills: this test is about the budget, not about shedding load.
        "--hash-queue",
        "1000",
    ];
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(OtpdProcess::start(dir.path(), name, &args, &[]).await);
    }
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.otp().await);
    }
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for n in 0..300u32 {
        let mut client = clients[n as usize % 3].clone();
        tasks.spawn(async move { client.send_code(send_req(&number("123", n), Purpose::Login)).await });
        if tasks.len() >= 30 {
            results.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(result) = tasks.join_next().await {
        results.push(result.unwrap());
    }
    let mut answered = 0;
    let mut limited = 0;
    for result in results {
        match result {
            Ok(_) => answered += 1,
            Err(status) => {
                assert_eq!(reason(&status), "RATE_LIMITED", "{status:?}");
                assert_eq!(metadata(&status)["limit"], "destination_prefix");
                limited += 1;
            }
        }
    }
    // Count from the provider's side too: what it saw is what cost money.
    let seen = nhn.seen().into_iter().filter(|s| s.status == 200).count();
    assert_eq!(seen, answered, "one SMS per answered send");
    let elapsed = started.elapsed();
    // 100/h refills one SMS every 36 s.
    let budget = 20 + usize::try_from(elapsed.as_secs() / 36 + 1).unwrap();
    assert!(seen <= budget, "the provider saw {seen} SMS; one shared budget is at most {budget}");
    assert!(seen >= 20, "the budget's burst is spent, not refused early: {seen}");
    // Each replica refused with the limit's name and a retry time.
    for client in &clients {
        let status = client.clone().send_code(send_req(&number("123", 999), Purpose::Login)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason(&status), "RATE_LIMITED");
        assert_eq!(metadata(&status)["limit"], "destination_prefix");
        assert!(retry_delay(&status) > Duration::ZERO);
    }
    // Another prefix has its own budget.
    clients[0].clone().send_code(send_req(&number("456", 1), Purpose::Login)).await.unwrap();
    assert!(limited > 0 && answered > 0, "{answered} answered, {limited} limited");
    for replica in replicas {
        replica.terminate().await;
    }
}

/// The three replicas of one deployment: in-process applications on one database and one manual clock.
async fn replicas(backend: Backend, extra: &[&str]) -> (Vec<TestApp>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let first_dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, first_dir.path()).await;
    let url = db.url.clone();
    let mut args = vec!["--metrics-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut apps = vec![spawn_app_on(db, first_dir, &args, Arc::clone(&clock)).await];
    for _ in 0..2 {
        let db = TestDb { url: url.clone(), backend };
        apps.push(spawn_app_on(db, tempfile::tempdir().unwrap(), &args, Arc::clone(&clock)).await);
    }
    (apps, clock)
}

/// The prefixes of the synthetic day: three ordinary ones converting 70%, 80% and 90%, each with two busy
/// hours of 60 sends (above the short window's V) and 4 an hour otherwise (208 a day, above the long window's
/// V); and the burst prefix, 200 sends at noon that nobody verifies.
const ORDINARY: [(&str, u32, [i64; 2]); 3] = [("200", 70, [7, 8]), ("300", 80, [12, 13]), ("400", 90, [17, 18])];
const BURST: &str = "999";
const BURST_PREFIX: &str = "8210999";
const BURST_SENDS: u32 = 200;

#[derive(Debug, Default)]
struct Day {
    ordinary_sent: u32,
    ordinary_refused: Vec<tonic::Status>,
    approvals: u32,
    burst_sent: u32,
    burst_refused: Vec<tonic::Status>,
}

/// Replays `steps` of the day (five minutes each, 288 in all) through `apps`, each call on the next replica in
/// turn (a code is checked on another replica than the one that sent it).
async fn replay(apps: &[TestApp], clock: &ManualClock, steps: std::ops::Range<i64>) -> Day {
    let mut day = Day::default();
    let mut turn = 0usize;
    let mut serial = [0u32; 3];
    let mut burst_n = 0u32;
    for step in steps {
        let hour = step / 12;
        for (i, (p3, conversion, busy)) in ORDINARY.iter().enumerate() {
            let sends = if busy.contains(&hour) { 5 } else { u32::from(step % 3 == 0) };
            for _ in 0..sends {
                let k = serial[i];
                serial[i] += 1;
                let phone = number(p3, k);
                let app = &apps[turn % 3];
                turn += 1;
                match app.send(&phone, Purpose::Login).await {
                    Ok(_) => day.ordinary_sent += 1,
                    Err(status) => {
                        day.ordinary_refused.push(status);
                        continue;
                    }
                }
                // Exactly `conversion`% of each prefix's sends are verified, spread evenly.
                if (k + 1) * conversion / 100 > k * conversion / 100 {
                    let code = app.last_code();
                    let answer = apps[turn % 3].verify(&phone, Purpose::Login, &code).await.unwrap();
                    assert_eq!(answer.result, pb::VerifyResult::Approved as i32);
                    day.approvals += 1;
                }
            }
        }
        if hour == 12 && step % 12 == 0 {
            // The burst: within this hour, one number after another, over the three replicas.
            for _ in 0..BURST_SENDS {
                let app = &apps[turn % 3];
                turn += 1;
                match app.send(&number(BURST, burst_n), Purpose::Login).await {
                    Ok(_) => day.burst_sent += 1,
                    Err(status) => day.burst_refused.push(status),
                }
                burst_n += 1;
            }
        }
        clock.advance(TimeDelta::minutes(5));
    }
    day
}

/// `otpd_pumping_guard_decisions_total` of one decision, summed over the replicas.
async fn decisions(apps: &[TestApp], decision: &str) -> u64 {
    let mut total = 0;
    for app in apps {
        let text =
            reqwest::get(format!("http://{}/metrics", app.metrics_addr.unwrap())).await.unwrap().text().await.unwrap();
        total += text
            .lines()
            .filter(|l| l.starts_with("otpd_pumping_guard_decisions_total{"))
            .filter(|l| l.contains(&format!("decision=\"{decision}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

async fn prefix_guard(app: &TestApp, token: &str, prefix: &str) -> pb::PrefixGuard {
    let req = pb::GetPrefixGuardRequest { prefix: prefix.into() };
    app.sup.clone().get_prefix_guard(authed(req, token)).await.unwrap().into_inner().guard.unwrap()
}

/// A synthetic day through three replicas under `--pumping-guard enforce`: the burst prefix is guarded at its 51st
/// send (V = 50 in the hour, no approval), every replica refuses it with the same figures and says so in
/// GetPrefixGuard and GetPhoneStatus, no ordinary prefix is ever refused (their busy hours pass V at 70–90%), and
/// an admin's exemption lifts the guard on every replica and is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_synthetic_day_guards_the_burst_prefix_only() {
    let (apps, clock) = replicas(Backend::Postgres, &["--pumping-guard", "enforce"]).await;
    let admin = apps[0].add_supervisor("park", "admin").await;
    let lead = apps[0].add_supervisor("kim.minji", "supervisor").await;
    // Up to and including noon's first five minutes, when the burst comes.
    let morning = replay(&apps, &clock, 0..145).await;
    assert!(morning.ordinary_refused.is_empty(), "an ordinary prefix was refused: {:?}", morning.ordinary_refused);
    assert_eq!(morning.burst_sent, 50, "guarded within V = 50 sends");
    assert_eq!(morning.burst_refused.len(), 150);
    let first = &morning.burst_refused[0];
    assert_eq!(first.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(first), "RATE_LIMITED");
    let figures = metadata(first);
    for (key, value) in [
        ("limit", "pumping_guard"),
        ("scope", "prefix"),
        ("key", BURST_PREFIX),
        ("window", "1h"),
        ("sends", "50"),
        ("approvals", "0"),
        ("conversion_pct", "0"),
        ("min_sends", "50"),
        ("min_conversion_pct", "35"),
    ] {
        assert_eq!(figures.get(key).map(String::as_str), Some(value), "{key} in {figures:?}");
    }
    let details = first.get_error_details();
    let ko = details.localized_message().expect("a ko-KR message");
    assert_eq!(ko.locale, "ko-KR");
    assert!(ko.message.contains("제한"), "{}", ko.message);
    let retry = retry_delay(first);
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(300), "the next bucket boundary: {retry:?}");

    // Every replica reaches the same decision from the same rows.
    let mut explanations = Vec::new();
    for app in &apps {
        let refused = app.send(&number(BURST, 9_000), Purpose::Login).await.unwrap_err();
        assert_eq!(metadata(&refused)["sends"], "50");
        let view = prefix_guard(app, &lead, BURST_PREFIX).await;
        assert!(view.guarded, "{view:?}");
        assert_eq!(view.decision, "guarded");
        assert_eq!(view.mode, "enforce");
        explanations.push(view.explanation);
        for (p3, ..) in ORDINARY {
            let ordinary = prefix_guard(app, &lead, &format!("8210{p3}")).await;
            assert!(!ordinary.guarded, "{ordinary:?}");
        }
    }
    assert!(explanations.windows(2).all(|w| w[0] == w[1]), "{explanations:?}");
    assert!(explanations[0].starts_with("prefix 8210999: 50 sends, 0 approved (0%) in 1h"), "{}", explanations[0]);
    // The team lead sees it in the number's status too.
    let status_req = pb::GetPhoneStatusRequest {
        phone_number: number(BURST, 9_000),
        ticket_id: "CS-2026-0009".into(),
        call_id: String::new(),
    };
    let status = apps[1].sup.clone().get_phone_status(authed(status_req, &lead)).await.unwrap().into_inner();
    let guard = status.prefix_guard.expect("the prefix's guard");
    assert!(guard.guarded);
    assert_eq!(guard.prefix_figures[0].sends, 50);
    assert_eq!(guard.prefix_figures[0].approvals, 0);

    // A team lead may not lift it; an admin may, with a ticket and a reason.
    let until = apps[0].now() + TimeDelta::hours(2);
    let exempt = |ticket: &str| pb::SetPrefixGuardRequest {
        prefix: BURST_PREFIX.into(),
        action: pb::PrefixGuardAction::Exempt.into(),
        until: Some(prost_types::Timestamp { seconds: until.timestamp(), nanos: 0 }),
        ticket_id: ticket.into(),
        reason: "marketing campaign to new drivers in this range".into(),
    };
    let denied = apps[2].sup.clone().set_prefix_guard(authed(exempt("INC-7"), &lead)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let set = apps[2].sup.clone().set_prefix_guard(authed(exempt("INC-7"), &admin)).await.unwrap().into_inner();
    let view = set.guard.unwrap();
    assert_eq!((view.guarded, view.decision.as_str(), view.override_action.as_str()), (false, "exempt", "exempt"));
    for (i, app) in apps.iter().enumerate() {
        let phone = number(BURST, 9_100 + u32::try_from(i).unwrap());
        app.send(&phone, Purpose::Login).await.unwrap();
    }
    let audited = apps[0].call_events().await;
    let event = audited
        .iter()
        .find(|e| e.event.action == otpd::domain::audit::AuditAction::PrefixGuardSet && e.event.actor_name == "park")
        .expect("the exemption is audited");
    assert_eq!(event.event.ticket_id.as_deref(), Some("INC-7"));
    assert!(event.event.reason.as_deref().unwrap().contains("campaign"));
    assert!(event.event.detail.contains("prefix 8210999: exempt until"), "{}", event.event.detail);
    assert!(event.event.detail.contains("guarded: prefix 8210999: 50 sends"), "{}", event.event.detail);
    assert!(audited.iter().any(|e| e.event.action == otpd::domain::audit::AuditAction::PrefixGuardSet
        && e.event.outcome == otpd::domain::audit::AuditOutcome::Denied));

    // The rest of the day: nothing ordinary is refused.
    let evening = replay(&apps, &clock, 145..288).await;
    assert!(evening.ordinary_refused.is_empty(), "{:?}", evening.ordinary_refused);
    assert!(morning.ordinary_sent + evening.ordinary_sent >= 3 * 200, "each ordinary prefix passes the long V");
    assert_eq!(decisions(&apps, "guarded").await, 150 + 3);
}

/// The same day under `--pumping-guard shadow`: the same decisions (150 of the burst's sends would have been
/// refused), recorded as metrics; nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_mode_decides_alike_and_refuses_nothing() {
    let (apps, clock) = replicas(Backend::Postgres, &["--pumping-guard", "shadow"]).await;
    let lead = apps[0].add_supervisor("kim.minji", "supervisor").await;
    let day = replay(&apps, &clock, 0..145).await;
    assert!(day.ordinary_refused.is_empty() && day.burst_refused.is_empty());
    assert_eq!(day.burst_sent, BURST_SENDS);
    assert_eq!(decisions(&apps, "guarded").await, 150);
    assert_eq!(decisions(&apps, "clear").await, u64::from(day.ordinary_sent + 50));
    let view = prefix_guard(&apps[1], &lead, BURST_PREFIX).await;
    assert!(view.guarded && view.mode == "shadow", "{view:?}");
}

/// On SQLite (one replica), the guard trips at V and an admin's block refuses even an unguarded prefix until it
/// is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_guards_at_v_and_honours_a_block() {
    let app = spawn_app_with(Backend::Sqlite, &["--pumping-guard", "enforce"]).await;
    let admin = app.add_supervisor("park", "admin").await;
    for n in 0..50 {
        app.send(&number(BURST, n), Purpose::Login).await.unwrap();
    }
    let refused = app.send(&number(BURST, 50), Purpose::Login).await.unwrap_err();
    assert_eq!(metadata(&refused)["limit"], "pumping_guard");
    let until = app.now() + TimeDelta::days(1);
    let set = |prefix: &str, action: pb::PrefixGuardAction| pb::SetPrefixGuardRequest {
        prefix: prefix.into(),
        action: action.into(),
        until: Some(prost_types::Timestamp { seconds: until.timestamp(), nanos: 0 }),
        ticket_id: "INC-8".into(),
        reason: "premium-rate range".into(),
    };
    // A whole number names its prefix.
    let blocked = set("010-5550-0000", pb::PrefixGuardAction::Block);
    app.sup.clone().set_prefix_guard(authed(blocked, &admin)).await.unwrap();
    let refused = app.send("010-5550-1234", Purpose::Login).await.unwrap_err();
    assert_eq!(metadata(&refused)["override"], "block");
    let cleared = pb::SetPrefixGuardRequest { until: None, ..set("8210555", pb::PrefixGuardAction::Clear) };
    app.sup.clone().set_prefix_guard(authed(cleared, &admin)).await.unwrap();
    app.send("010-5550-1234", Purpose::Login).await.unwrap();
    // A malformed request names its fields, and is audited as denied.
    let bad = pb::SetPrefixGuardRequest { until: None, ..set("12", pb::PrefixGuardAction::Exempt) };
    let status = app.sup.clone().set_prefix_guard(authed(bad, &admin)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> =
        status.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["prefix", "until"]);
}

/// `otpctl guard`: an admin blocks a range and clears it; a team lead reads the figures but may not change them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpctl_guard_status_block_and_clear() {
    let app = spawn_app_with(Backend::Sqlite, &["--pumping-guard", "enforce"]).await;
    let admin = app.add_supervisor("park", "admin").await;
    let lead = app.add_supervisor("kim", "supervisor").await;
    let block = ["guard", "block", "010-5550-0000", "--until", "2h", "--ticket", "INC-8", "--reason", "premium-rate"];
    let (code, _, err) = otpctl(&app, &lead, &block).await;
    assert_ne!(code, Some(0), "a team lead may not block: {err}");
    let (code, out, err) = otpctl(&app, &admin, &block).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("8210555") && out.contains("block") && out.contains("INC-8"), "{out}");
    assert_eq!(metadata(&app.send("010-5550-1234", Purpose::Login).await.unwrap_err())["override"], "block");
    let (code, out, err) = otpctl(&app, &lead, &["--json", "guard", "status", "8210555"]).await;
    assert_eq!(code, Some(0), "{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((view["guarded"].as_bool(), view["decision"].as_str()), (Some(true), Some("blocked")));
    let clear = ["guard", "clear", "8210555", "--ticket", "INC-9", "--reason", "false alarm"];
    let (code, _, err) = otpctl(&app, &admin, &clear).await;
    assert_eq!(code, Some(0), "{err}");
    app.send("010-5550-1234", Purpose::Login).await.unwrap();
}

/// The shared budget's one statement under concurrency, on both backends: 60 concurrent charges against a burst
/// of 20 grant exactly 20, with the time the next one passes; a budget that passed is given its charge back when
/// the other refuses.
async fn one_statement_holds_a_budget_under_concurrency(backend: Backend) {
    use otpd::store::guard::Budget;
    let app = spawn_app(backend).await;
    let now = app.now();
    let hour_ms = 3_600_000;
    let prefix = Budget { key: "prefix:8210123".into(), interval_ms: hour_ms / 100, burst: 20 };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let (store, budget) = (Arc::clone(&app.stores.guard), prefix.clone());
        tasks.spawn(async move { store.charge_budgets(&[budget], now).await.unwrap() });
    }
    let mut granted = 0;
    let mut retry_at = Vec::new();
    while let Some(refused) = tasks.join_next().await {
        match refused.unwrap().as_slice() {
            [] => granted += 1,
            [r] => retry_at.push(r.retry_at),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(granted, 20);
    // The 21st passes one interval (36 s) after the burst.
    assert!(retry_at.iter().all(|at| *at == now + TimeDelta::seconds(36)), "{retry_at:?}");
    let later = now + TimeDelta::seconds(36);
    assert!(app.stores.guard.charge_budgets(std::slice::from_ref(&prefix), later).await.unwrap().is_empty());

    // A service budget that refuses: the other prefix's charge is given back, so it still has its whole burst.
    let other = Budget { key: "prefix:8210456".into(), interval_ms: hour_ms / 100, burst: 1 };
    let service = Budget { key: "service".into(), interval_ms: 1_000, burst: 1 };
    let store = &app.stores.guard;
    assert!(store.charge_budgets(std::slice::from_ref(&service), later).await.unwrap().is_empty());
    let refused = store.charge_budgets(&[other.clone(), service.clone()], later).await.unwrap();
    assert_eq!(refused.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["service"]);
    let after = later + TimeDelta::seconds(1);
    assert!(store.charge_budgets(&[other, service], after).await.unwrap().is_empty(), "the prefix's burst was kept");
}

crate::both_backends!(one_statement_holds_a_budget_under_concurrency);
