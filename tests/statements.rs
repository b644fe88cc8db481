//! Database statements per RPC, on both backends: what each call costs in round trips (a statement, BEGIN and
//! COMMIT each are one), counted from sqlx's own `sqlx::query` events. docs/performance.md states these figures;
//! a change that adds a statement to a hot path fails here and must update both.
//!
//! Its own test binary, so that the counting subscriber is the process's only one and sees only this test's
//! server.

#[path = "api/helpers.rs"]
mod helpers;

use std::sync::{Arc, Mutex};

use helpers::*;
use otpd::pb::otp::v1::{self as pb, Purpose};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;

/// Collects the summary of every statement sqlx runs.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        struct Summary(String);
        impl tracing::field::Visit for Summary {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "summary" {
                    self.0 = value.to_owned();
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut summary = Summary(String::new());
        event.record(&mut summary);
        // The health check's ping runs on its own timer, not on behalf of any call; a PRAGMA is a new pooled
        // connection's set-up (SQLite's journal mode), whenever the pool happens to open one.
        if summary.0 != "SELECT 1" && !summary.0.starts_with("PRAGMA") {
            self.0.lock().unwrap().push(summary.0);
        }
    }
}

impl Statements {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Runs `call` and returns the statements it ran.
async fn counted<T>(statements: &Statements, call: impl std::future::Future<Output = T>) -> (T, Vec<String>) {
    statements.take();
    let out = call.await;
    (out, statements.take())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_per_rpc_on_both_backends() {
    let statements = Statements::default();
    let filter = tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::DEBUG);
    let subscriber = tracing_subscriber::registry().with(statements.clone().with_filter(filter));
    tracing::subscriber::set_global_default(subscriber).expect("this binary's only subscriber");

    let mut table = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // The lookup notice's one INSERT runs in its own task after the lookup has answered, so it would land in
        // whichever call is counted next: off here, and counted in docs/performance.md.
        // The shared SMS budgets at their defaults (the helpers turn them off) and the pumping guard in its default
        // shadow mode, so that their statements are counted.
        let shared = ["--sms-limit-per-prefix", "100/h", "--global-sms-limit", "20/s"];
        let app = spawn_app_with(backend, &[&["--lookup-notice-template", "off"][..], &shared[..]].concat()).await;
        let kim = app.add_supervisor("kim", "supervisor").await;
        // Let start-up work (migrations, the first purge) finish before counting.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        let (_, send) = counted(&statements, app.send(PHONE, Purpose::Login)).await;
        let code = app.last_code();
        app.advance(chrono::TimeDelta::seconds(30));
        let (_, resend) = counted(&statements, app.send(PHONE, Purpose::Login)).await;
        let (_, wrong) = counted(&statements, app.verify(PHONE, Purpose::Login, &wrong_code(&code))).await;
        let (_, right) = counted(&statements, app.verify(PHONE, Purpose::Login, &code)).await;
        app.send("010-2222-3333", Purpose::Login).await.unwrap();
        let mut sup = app.sup.clone();
        let lookup = sup.lookup_code(authed(lookup_req("010-2222-3333", "010-2222-3333"), &kim));
        let (_, lookup) = counted(&statements, lookup).await;
        let status =
            pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), ..Default::default() };
        let (_, status) = counted(&statements, sup.get_phone_status(authed(status, &kim))).await;
        // With an idempotency key (issue 18 §3): the claim, the send's code recorded before the hand-over, the
        // outcome; a repeat reads the key's row instead of acting.
        let mut otp = app.otp.clone();
        let (_, keyed_send) =
            counted(&statements, otp.send_code(keyed(send_req("010-4444-5555", Purpose::Login), "k1"))).await;
        let (_, keyed_repeat) =
            counted(&statements, otp.send_code(keyed(send_req("010-4444-5555", Purpose::Login), "k1"))).await;
        let guess = verify_req("010-4444-5555", Purpose::Login, &wrong_code(&app.last_code()));
        let (_, keyed_wrong) = counted(&statements, otp.verify_code(keyed(guess, "k2"))).await;
        for (rpc, ran) in [
            ("SendCode (new verification)", send),
            ("SendCode (resend)", resend),
            ("VerifyCode (wrong code)", wrong),
            ("VerifyCode (right code)", right),
            ("LookupCode (granted)", lookup),
            ("GetPhoneStatus", status),
            ("SendCode (keyed)", keyed_send),
            ("SendCode (keyed, repeated)", keyed_repeat),
            ("VerifyCode (wrong code, keyed)", keyed_wrong),
        ] {
            table.push((backend, rpc, ran));
        }
        app.stop().await;
    }
    // A call refused OVERLOADED, after waiting its admission time for a place that never came free, has touched
    // no database: the place is taken before anything is read.
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app_with(backend, &["--hash-queue", "1", "--hash-admission-wait", "20ms"]).await;
        app.send(PHONE, Purpose::Login).await.unwrap();
        let code = app.last_code();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let held = app.hasher.admit(otpd::hashing::Work::Check, None, None).await.unwrap();
        let (refused, ran) = counted(&statements, app.send("010-2222-3333", Purpose::Login)).await;
        assert_eq!(reason(&refused.unwrap_err()), "OVERLOADED");
        assert_eq!(ran, Vec::<String>::new(), "{backend:?}: a refused SendCode ran statements");
        let (refused, ran) = counted(&statements, app.verify(PHONE, Purpose::Login, &code)).await;
        assert_eq!(reason(&refused.unwrap_err()), "OVERLOADED");
        assert_eq!(ran, Vec::<String>::new(), "{backend:?}: a refused VerifyCode ran statements");
        drop(held);
        app.stop().await;
    }
    for (backend, rpc, ran) in &table {
        println!("{backend:?}\t{rpc}\t{}\t{}", ran.len(), ran.join(" | "));
    }
    let counts: Vec<(Backend, &str, usize)> = table.iter().map(|(b, rpc, ran)| (*b, *rpc, ran.len())).collect();
    assert_eq!(counts, EXPECTED, "docs/performance.md states these counts: update both");
}

/// `message` with an `idempotency-key`.
fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("idempotency-key", key.parse().unwrap());
    request
}

/// Statements per call (as sqlx logs them: PostgreSQL's COMMIT but not BEGIN, SQLite neither), as
/// docs/performance.md states them.
const EXPECTED: &[(Backend, &str, usize)] = &[
    (Backend::Sqlite, "SendCode (new verification)", 12),
    (Backend::Sqlite, "SendCode (resend)", 12),
    (Backend::Sqlite, "VerifyCode (wrong code)", 2),
    (Backend::Sqlite, "VerifyCode (right code)", 5),
    (Backend::Sqlite, "LookupCode (granted)", 10),
    (Backend::Sqlite, "GetPhoneStatus", 11),
    (Backend::Sqlite, "SendCode (keyed)", 15),
    (Backend::Sqlite, "SendCode (keyed, repeated)", 2),
    (Backend::Sqlite, "VerifyCode (wrong code, keyed)", 4),
    (Backend::Postgres, "SendCode (new verification)", 14),
    (Backend::Postgres, "SendCode (resend)", 14),
    (Backend::Postgres, "VerifyCode (wrong code)", 2),
    (Backend::Postgres, "VerifyCode (right code)", 7),
    (Backend::Postgres, "LookupCode (granted)", 12),
    (Backend::Postgres, "GetPhoneStatus", 13),
    (Backend::Postgres, "SendCode (keyed)", 17),
    (Backend::Postgres, "SendCode (keyed, repeated)", 2),
    (Backend::Postgres, "VerifyCode (wrong code, keyed)", 4),
];
