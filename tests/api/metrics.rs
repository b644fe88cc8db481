//! The Prometheus endpoint, scraped over real HTTP after a scripted run: every counter has exactly the value the
//! script implies, every label value is one the code declares, and nothing in the exposition is a phone number
//! (in any spelling), a code, a token, a ticket or a supervisor's name.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::TimeDelta;
use clap::Parser;
use otpd::metrics::labels::*;
use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult as PbVerifyResult};
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;
use crate::provider::{FakeProvider, Reply};

const PHONE2: &str = "010-2222-3333";
const PHONE3: &str = "010-4444-5555";
const PHONE4: &str = "010-6666-7777";
const SUPERVISOR: &str = "kim.minji";
const TICKET: &str = "CS-2026-0001";

/// One series: its labels, sorted.
type Labels = Vec<(String, String)>;

/// A scrape, parsed.
struct Scrape {
    text: String,
    samples: BTreeMap<String, BTreeMap<Labels, f64>>,
}

impl Scrape {
    async fn of(addr: SocketAddr) -> Self {
        let response = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        let text = response.text().await.unwrap();
        assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
        let label = regex::Regex::new(r#"(\w+)="((?:[^"\\]|\\.)*)""#).unwrap();
        let mut samples: BTreeMap<String, BTreeMap<Labels, f64>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest),
                None => (series, ""),
            };
            let mut labels: Labels = label.captures_iter(labels).map(|c| (c[1].to_owned(), c[2].to_owned())).collect();
            labels.sort();
            samples.entry(name.to_owned()).or_default().insert(labels, value.parse().unwrap());
        }
        Self { text, samples }
    }

    /// The non-zero series of one metric (`…_total`, `…_count`), without the constant `rpc_system_name`.
    fn family(&self, name: &str) -> BTreeMap<Labels, f64> {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(_, v)| **v != 0.0)
            .map(|(labels, v)| (labels.iter().filter(|(k, _)| k != "rpc_system_name").cloned().collect(), *v))
            .collect()
    }

    fn value(&self, name: &str) -> f64 {
        self.samples.get(name).and_then(|f| f.get(&Vec::new())).copied().unwrap_or_else(|| panic!("no {name}"))
    }
}

/// A series' labels, as [`Scrape`] keys them.
fn key(labels: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.sort();
    labels
}

/// The expected series: each a list of `label=value` pairs and its count.
fn expect(series: &[(&[(&str, &str)], f64)]) -> BTreeMap<Labels, f64> {
    series.iter().map(|(labels, v)| (key(labels), *v)).collect()
}

/// Every value a label may take, from the types that define them.
fn allowed_label_values() -> BTreeMap<&'static str, HashSet<String>> {
    fn strs<T: Copy>(all: &[T], f: impl Fn(T) -> &'static str) -> Vec<String> {
        all.iter().map(|v| f(*v).to_owned()).collect()
    }
    let mut allowed: BTreeMap<&'static str, HashSet<String>> = BTreeMap::new();
    let mut add = |label: &'static str, values: Vec<String>| allowed.entry(label).or_default().extend(values);
    add("rpc_system_name", strs(RpcSystem::ALL, RpcSystem::as_str));
    add("rpc_method", strs(RpcMethod::ALL, RpcMethod::as_str));
    add("rpc_response_status_code", strs(GrpcStatus::ALL, GrpcStatus::as_str));
    add("purpose", strs(&otpd::domain::Purpose::ALL, otpd::domain::Purpose::as_str));
    add("channel", vec!["sms".into(), "supervisor".into()]);
    add("outcome", strs(SendResult::ALL, SendResult::as_str));
    add("outcome", strs(SupervisorOutcome::ALL, SupervisorOutcome::as_str));
    add("outcome", vec!["granted".into(), "denied".into()]);
    add("result", strs(VerifyResult::ALL, VerifyResult::as_str));
    add("result", strs(GatewayAttempt::ALL, GatewayAttempt::as_str));
    add("action", strs(SupervisorAction::ALL, SupervisorAction::as_str));
    add("action", strs(&otpd::domain::audit::AuditAction::ALL, otpd::domain::audit::AuditAction::as_str));
    add("kind", strs(GatewayFailure::ALL, GatewayFailure::as_str));
    add("kind", strs(DbErrorKind::ALL, DbErrorKind::as_str));
    add("limit", strs(FrontLimit::ALL, FrontLimit::as_str));
    add("operation", strs(HashOperation::ALL, HashOperation::as_str));
    add("operation", strs(StoreOperation::ALL, StoreOperation::as_str));
    add("reason", strs(HashRefusal::ALL, HashRefusal::as_str));
    add("route", strs(Route::ALL, Route::as_str));
    add("outcome", strs(RouteOutcome::ALL, RouteOutcome::as_str));
    add("why", strs(RouteDemotion::ALL, RouteDemotion::as_str));
    add("mode", strs(GuardModeLabel::ALL, GuardModeLabel::as_str));
    add("decision", strs(GuardDecision::ALL, GuardDecision::as_str));
    add("budget", strs(SharedBudget::ALL, SharedBudget::as_str));
    allowed
}

/// Every label of every series is a declared label with a declared value (`le` a bucket bound).
fn assert_bounded_labels(scrape: &Scrape) {
    let allowed = allowed_label_values();
    for (name, series) in &scrape.samples {
        for labels in series.keys() {
            for (label, value) in labels {
                if label == "le" {
                    assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{name}: le={value}");
                    continue;
                }
                let values = allowed.get(label.as_str()).unwrap_or_else(|| panic!("{name}: undeclared label {label}"));
                assert!(values.contains(value), "{name}: {label}={value} is not a declared value");
            }
        }
    }
}

/// A number in any spelling: `010-1234-5678`, `01012345678`, `+82 10 1234 5678`, `821012345678`, `(010) 1234.5678`.
fn any_spelling(phone: &str) -> regex::Regex {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let (middle, last) = (&digits[3..7], &digits[7..11]);
    regex::Regex::new(&format!(r"(?:\+?\s*82[\s.()-]*|\(?0)?10[\s.()-]*{middle}[\s.()-]*{last}")).unwrap()
}

/// No phone number, code, token, ticket or supervisor name anywhere in the exposition.
fn assert_no_secrets(text: &str, phones: &[&str], codes: &[String], token: &str) {
    for phone in phones {
        let re = any_spelling(phone);
        assert!(re.is_match(phone) && re.is_match(&phone.replace('-', "")), "the pattern finds the number itself");
        assert!(!re.is_match(text), "{phone} appears in the metrics");
    }
    for code in codes {
        // Not as a part of a longer number (a histogram's sum can hold any run of digits).
        let re = regex::Regex::new(&format!(r"(?:^|[^0-9.]){code}(?:[^0-9.]|$)")).unwrap();
        assert!(!re.is_match(text), "a code appears in the metrics");
    }
    assert!(!text.contains(token), "a token appears in the metrics");
    assert!(!text.contains(TICKET) && !text.contains(SUPERVISOR), "a ticket or a supervisor's name appears");
}

both_backends!(
    a_scripted_run_has_exactly_the_counts_it_implies,
    parallel_guesses_are_counted_exactly,
    a_failing_statement_is_counted_by_operation_and_kind
);

async fn a_scripted_run_has_exactly_the_counts_it_implies(backend: Backend) {
    // Five SendCode calls from 127.0.0.1 pass the per-IP limit; the sixth is refused.
    let extra = ["--metrics-listen", "127.0.0.1:0", "--send-limit-per-ip", "1/h", "--send-burst-per-ip", "5"];
    let app = spawn_app_with(backend, &extra).await;
    let metrics = app.metrics_addr.expect("the endpoint is bound");
    let mut codes = Vec::new();

    // Sends: delivered, a resend within the cooldown, two more numbers, a malformed number, an IP refusal.
    let login = app.send_and_read(PHONE, Purpose::Login).await;
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "RESEND_COOLDOWN");
    codes.push(app.send_and_read(PHONE2, Purpose::Signup).await);
    codes.push(app.send_and_read(PHONE3, Purpose::Reauth).await);
    let err = app.send("12", Purpose::Login).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = app.send(PHONE4, Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");

    // Checks: one approval, ten wrong codes that lock the number, the right code refused while locked.
    assert_eq!(app.verify(PHONE2, Purpose::Signup, &codes[0]).await.unwrap().result(), PbVerifyResult::Approved);
    for _ in 0..10 {
        let r = app.verify(PHONE, Purpose::Login, &wrong_code(&login)).await.unwrap();
        assert_eq!(r.result(), PbVerifyResult::WrongCode);
    }
    let err = app.verify(PHONE, Purpose::Login, &login).await.unwrap_err();
    assert_eq!(reason(&err), "PHONE_LOCKED");
    codes.push(login);

    // A team lead: a lookup for the driver's own number, one for a third party's, a call without a token.
    let token = app.add_supervisor(SUPERVISOR, "supervisor").await;
    let looked_up = app.sup.clone().lookup_code(authed(lookup_req(PHONE3, PHONE3), &token)).await.unwrap();
    let looked_up = looked_up.into_inner().code;
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE3, PHONE4), &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let status =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: TICKET.into(), ..Default::default() };
    let err = app.sup.clone().get_phone_status(status).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let approved = app.verify(PHONE3, Purpose::Reauth, &looked_up).await.unwrap();
    assert_eq!(approved.result(), PbVerifyResult::Approved);
    codes.push(looked_up);

    // Health, a path no service knows (holding a number: it must not become a label), a watch cancelled.
    assert_eq!(app.health(app.public_addr, "").await, 1);
    let mut grpc = tonic::client::Grpc::new(channel(app.public_addr).await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/otp.v1.OtpService/01066667777");
    let codec = tonic_prost::ProstCodec::<pb::SendCodeRequest, pb::SendCodeResponse>::default();
    let err = grpc.unary(tonic::Request::new(send_req(PHONE4, Purpose::Login)), path, codec).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(app.admin_addr).await);
        let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
        let mut watch = health.watch(request).await.unwrap().into_inner();
        assert!(watch.message().await.unwrap().is_some());
    }

    // The server sees the watch's cancellation when the client's reset arrives: wait for it, boundedly.
    let mut scrape = Scrape::of(metrics).await;
    for _ in 0..200 {
        let settled =
            scrape.family("rpc_server_calls_total").keys().any(|l| l.iter().any(|(_, v)| v.ends_with("Watch")))
                && scrape.value("otpd_hash_queue_depth") == 0.0;
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        scrape = Scrape::of(metrics).await;
    }

    let m = |method: RpcMethod, code: GrpcStatus| {
        [("rpc_method", method.as_str()), ("rpc_response_status_code", code.as_str())]
    };
    let rpc = expect(&[
        (&m(RpcMethod::SendCode, GrpcStatus::Ok), 3.0),
        (&m(RpcMethod::SendCode, GrpcStatus::ResourceExhausted), 2.0),
        (&m(RpcMethod::SendCode, GrpcStatus::InvalidArgument), 1.0),
        (&m(RpcMethod::VerifyCode, GrpcStatus::Ok), 12.0),
        (&m(RpcMethod::VerifyCode, GrpcStatus::ResourceExhausted), 1.0),
        (&m(RpcMethod::LookupCode, GrpcStatus::Ok), 1.0),
        (&m(RpcMethod::LookupCode, GrpcStatus::PermissionDenied), 1.0),
        (&m(RpcMethod::GetPhoneStatus, GrpcStatus::Unauthenticated), 1.0),
        (&m(RpcMethod::HealthCheck, GrpcStatus::Ok), 1.0),
        (&m(RpcMethod::HealthWatch, GrpcStatus::Cancelled), 1.0),
        (&m(RpcMethod::Other, GrpcStatus::Unimplemented), 1.0),
    ]);
    assert_eq!(scrape.family("rpc_server_calls_total"), rpc);
    assert_eq!(scrape.family("rpc_server_call_duration_seconds_count"), rpc, "one observation per call");

    let send = |purpose, channel, outcome| [("purpose", purpose), ("channel", channel), ("outcome", outcome)];
    assert_eq!(
        scrape.family("otpd_sends_total"),
        expect(&[
            (&send("login", "sms", "delivered"), 1.0),
            (&send("login", "sms", "cooldown"), 1.0),
            (&send("signup", "sms", "delivered"), 1.0),
            (&send("reauth", "sms", "delivered"), 1.0),
            (&send("reauth", "supervisor", "delivered"), 1.0),
        ])
    );
    let verify = |purpose, result| [("purpose", purpose), ("result", result)];
    assert_eq!(
        scrape.family("otpd_verifications_total"),
        expect(&[
            (&verify("signup", "approved"), 1.0),
            (&verify("login", "wrong_code"), 10.0),
            (&verify("login", "locked"), 1.0),
            (&verify("reauth", "approved"), 1.0),
        ])
    );
    assert_eq!(scrape.family("otpd_lockouts_total"), expect(&[(&[("purpose", "login")], 1.0)]));
    let call = |action, outcome| [("action", action), ("outcome", outcome)];
    assert_eq!(
        scrape.family("otpd_supervisor_calls_total"),
        expect(&[
            (&call("lookup_code", "granted"), 1.0),
            (&call("lookup_code", "third_party_number"), 1.0),
            (&call("get_phone_status", "unauthenticated"), 1.0),
        ])
    );
    assert_eq!(scrape.family("otpd_front_line_refusals_total"), expect(&[(&[("limit", "send_client_ip")], 1.0)]));
    assert_eq!(
        scrape.family("otpd_audit_appends_total"),
        expect(&[
            (&call("supervisor_added", "granted"), 1.0),
            (&call("phone_locked", "granted"), 1.0),
            (&call("lookup_code", "granted"), 1.0),
            (&call("lookup_code", "denied"), 1.0),
        ])
    );
    assert_eq!(scrape.family("otpd_database_errors_total"), expect(&[]));
    assert_eq!(
        scrape.family("otpd_hash_duration_seconds_count"),
        expect(&[(&[("operation", "hash")], 4.0), (&[("operation", "verify")], 12.0)])
    );
    assert_eq!(scrape.family("otpd_hash_queue_refusals_total"), expect(&[]));
    assert_eq!(scrape.value("otpd_hash_queue_depth"), 0.0);
    assert!(scrape.value("otpd_hash_queue_limit") >= 1.0);
    assert_eq!(scrape.value("otpd_sms_delivery_duration_seconds_count"), 3.0);
    // Each route's attempts: the one route here (`sms`, the file gateway) took the three SMS and the lookup's notice.
    assert_eq!(
        scrape.family("otpd_delivery_route_attempts_total"),
        expect(&[(&[("route", "sms@file"), ("outcome", "accepted")], 4.0)])
    );
    assert_eq!(scrape.family("otpd_sms_gateway_failures_total"), expect(&[]));
    assert_eq!(scrape.value("otpd_sms_breaker_state"), 0.0);

    // The conversion's two counters exist for every purpose from the start, at zero where nothing happened.
    for purpose in otpd::domain::Purpose::ALL {
        let labels = key(&send(purpose.as_str(), "sms", "delivered"));
        assert!(scrape.samples["otpd_sends_total"].contains_key(&labels), "{purpose}");
    }

    assert_bounded_labels(&scrape);
    assert_no_secrets(&scrape.text, &[PHONE, PHONE2, PHONE3, PHONE4], &codes, &token);
}

/// The SMS gateway's attempts, failures by kind and the breaker, against a loopback provider that fails, then
/// refuses, then accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_attempts_failures_and_the_breaker_are_counted() {
    let script = vec![Reply::Status(500), Reply::Status(500), Reply::Status(500), Reply::Status(400)];
    let provider = FakeProvider::start(script, Reply::Accept("ok")).await;
    let gateway = provider.gateway();
    let extra = [
        "--sms-gateway",
        gateway.as_str(),
        "--sms-http-backoff",
        "10ms",
        "--sms-http-max-backoff",
        "50ms",
        "--sms-breaker-threshold",
        "1",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let app = spawn_app_with(Backend::Sqlite, &extra).await;
    let metrics = app.metrics_addr.unwrap();

    // Three 500s: the delivery fails and opens the breaker.
    assert_eq!(app.send(PHONE, Purpose::Login).await.unwrap_err().code(), Code::Unavailable);
    let open = Scrape::of(metrics).await;
    assert_eq!(open.value("otpd_sms_breaker_state"), 1.0);
    // While it is open, nothing is handed to the gateway; the refusal is counted as `circuit_open` (issue 21).
    assert_eq!(app.send(PHONE, Purpose::Login).await.unwrap_err().code(), Code::Unavailable);
    // After the cool-down the probe meets a 400 (the provider answers: the breaker closes); then a delivery.
    app.advance(TimeDelta::seconds(31));
    assert_eq!(app.send(PHONE, Purpose::Login).await.unwrap_err().code(), Code::Unavailable);
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(provider.requests(), 5);

    let scrape = Scrape::of(metrics).await;
    assert_eq!(
        scrape.family("otpd_sms_gateway_attempts_total"),
        expect(&[(&[("result", "failed")], 3.0), (&[("result", "rejected")], 1.0), (&[("result", "accepted")], 1.0)])
    );
    assert_eq!(scrape.value("otpd_sms_gateway_attempt_duration_seconds_count"), 5.0);
    assert_eq!(
        scrape.family("otpd_sms_gateway_failures_total"),
        expect(&[
            (&[("kind", "unavailable")], 1.0),
            (&[("kind", "circuit_open")], 1.0),
            (&[("kind", "rejected")], 1.0)
        ])
    );
    assert_eq!(scrape.value("otpd_sms_delivery_duration_seconds_count"), 3.0);
    assert_eq!(scrape.value("otpd_sms_breaker_opened_total"), 1.0);
    assert_eq!(scrape.value("otpd_sms_breaker_state"), 0.0);
    let send = |outcome| [("purpose", "login"), ("channel", "sms"), ("outcome", outcome)];
    assert_eq!(
        scrape.family("otpd_sends_total"),
        // The send the open breaker refused is recorded (issue 21), so it is a failed send, not one never made.
        expect(&[(&send("failed"), 3.0), (&send("delivered"), 1.0)])
    );
    assert_bounded_labels(&scrape);
}

/// Off unless asked for; only `GET /metrics` is served; the address may not be a gRPC listener's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_endpoint_is_off_by_default_and_serves_only_get_metrics() {
    let defaults = otpd::config::Cli::try_parse_from(["otpd"]).unwrap().settings.validate().unwrap();
    assert_eq!(defaults.metrics_listen, None);
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(app.metrics_addr, None);
    drop(app);

    let clash = ["otpd", "--listen", "127.0.0.1:9464", "--metrics-listen", "127.0.0.1:9464"];
    let error = otpd::config::Cli::try_parse_from(clash).unwrap().settings.validate().unwrap_err();
    assert_eq!(error.setting, "metrics-listen");

    let app = spawn_app_with(Backend::Sqlite, &["--metrics-listen", "127.0.0.1:0"]).await;
    let addr = app.metrics_addr.unwrap();
    let client = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(client.get(format!("http://{addr}/metrics")).send().await.unwrap()), 200);
    assert_eq!(status(client.get(format!("http://{addr}/")).send().await.unwrap()), 404);
    assert_eq!(status(client.get(format!("http://{addr}/metrics/x")).send().await.unwrap()), 404);
    assert_eq!(status(client.post(format!("http://{addr}/metrics")).send().await.unwrap()), 405);
    assert_eq!(status(client.delete(format!("http://{addr}/metrics")).send().await.unwrap()), 405);
    app.stop().await;
}

/// 60 wrong guesses at once on 4 connections: the counters agree exactly with what the clients were told (10
/// evaluated, the rest refused as locked) and with one lockout, however the calls interleave.
async fn parallel_guesses_are_counted_exactly(backend: Backend) {
    let app = spawn_app_with(backend, &["--metrics-listen", "127.0.0.1:0"]).await;
    let code = app.send_and_read(PHONE, Purpose::Login).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(pb::otp_service_client::OtpServiceClient::new(channel(app.public_addr).await));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let mut client = clients[i % clients.len()].clone();
        let request = verify_req(PHONE, Purpose::Login, &wrong_code(&code));
        tasks.spawn(async move { client.verify_code(request).await });
    }
    let (mut wrong, mut locked) = (0.0, 0.0);
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().result(), PbVerifyResult::WrongCode);
                wrong += 1.0;
            }
            Err(status) => {
                assert_eq!(reason(&status), "PHONE_LOCKED");
                locked += 1.0;
            }
        }
    }
    assert_eq!((wrong, locked), (10.0, 50.0));

    let scrape = Scrape::of(app.metrics_addr.unwrap()).await;
    let verify = |result| [("purpose", "login"), ("result", result)];
    assert_eq!(
        scrape.family("otpd_verifications_total"),
        expect(&[(&verify("wrong_code"), wrong), (&verify("locked"), locked)])
    );
    assert_eq!(scrape.family("otpd_lockouts_total"), expect(&[(&[("purpose", "login")], 1.0)]));
    let m = |code: GrpcStatus| {
        [("rpc_method", RpcMethod::VerifyCode.as_str()), ("rpc_response_status_code", code.as_str())]
    };
    let calls = scrape.family("rpc_server_calls_total");
    assert_eq!(calls.get(&key(&m(GrpcStatus::Ok))), Some(&wrong));
    assert_eq!(calls.get(&key(&m(GrpcStatus::ResourceExhausted))), Some(&locked));
    assert_eq!(
        scrape.family("otpd_hash_duration_seconds_count"),
        expect(&[(&[("operation", "hash")], 1.0), (&[("operation", "verify")], 10.0)])
    );
}

/// A statement that fails (its table renamed away under the running service) is counted once, under the store
/// operation that ran it and the error's kind, and the send under `error`; the client gets INTERNAL.
async fn a_failing_statement_is_counted_by_operation_and_kind(backend: Backend) {
    let app = spawn_app_with(backend, &["--metrics-listen", "127.0.0.1:0"]).await;
    let rename = "ALTER TABLE codes RENAME TO codes_elsewhere";
    match backend {
        Backend::Sqlite => {
            sqlx::query(rename).execute(&sqlx::SqlitePool::connect(&app.db.url).await.unwrap()).await.unwrap();
        }
        Backend::Postgres => {
            sqlx::query(rename).execute(&sqlx::PgPool::connect(&app.db.url).await.unwrap()).await.unwrap();
        }
    }
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);

    let scrape = Scrape::of(app.metrics_addr.unwrap()).await;
    let errors = scrape.family("otpd_database_errors_total");
    assert_eq!(errors.get(&key(&[("operation", "send_history"), ("kind", "query")])), Some(&1.0), "{errors:?}");
    // Only the hourly purge, which starts with the service, may have met the renamed table too.
    assert!(
        errors.keys().all(|l| l.contains(&("operation".into(), "send_history".into()))
            || l.contains(&("operation".into(), "purge".into()))),
        "{errors:?}"
    );
    let send = key(&[("purpose", "login"), ("channel", "sms"), ("outcome", "error")]);
    assert_eq!(scrape.family("otpd_sends_total").get(&send), Some(&1.0));
    assert_no_secrets(&scrape.text, &[PHONE], &[], "no token here");
    assert!(!scrape.text.contains("codes_elsewhere"), "no error text in the metrics");
}
