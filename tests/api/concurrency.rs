//! Limits hold under parallel requests, and across two `otpd` processes sharing one PostgreSQL database.

use std::collections::BTreeMap;

use otpd::pb::otp::v1::otp_service_client::OtpServiceClient;
use otpd::pb::otp::v1::{Purpose, VerifyResult};
use tonic::transport::Channel;

use crate::helpers::*;

/// Two real `otpd` processes on one fresh PostgreSQL database, sharing the pepper and the SMS file.
struct TwoServers {
    a: OtpdProcess,
    b: OtpdProcess,
    db: TestDb,
    sms: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn two_postgres_servers() -> TwoServers {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let sms = dir.path().join("sms.jsonl");
    let args = process_args(&db.url, &sms);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = OtpdProcess::start(dir.path(), "a", &args, &[]).await;
    let b = OtpdProcess::start(dir.path(), "b", &args, &[]).await;
    TwoServers { a, b, db, sms, _dir: dir }
}

/// Sends `n` checks of `code` in parallel, spread over `clients`; returns (results, error reasons).
async fn parallel_checks(
    clients: &[OtpServiceClient<Channel>],
    n: usize,
    code: &str,
) -> (Vec<(VerifyResult, i32, bool)>, BTreeMap<String, usize>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut client = clients[i % clients.len()].clone();
        let req = verify_req(PHONE, Purpose::Login, code);
        tasks.spawn(async move { client.verify_code(req).await });
    }
    let mut results = Vec::new();
    let mut errors = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(r) => {
                let r = r.into_inner();
                results.push((r.result(), r.attempts_remaining, r.locked_until.is_some()));
            }
            Err(status) => *errors.entry(reason(&status)).or_insert(0) += 1,
        }
    }
    (results, errors)
}

async fn hundred_wrong_guesses_evaluate_exactly_ten(clients: &[OtpServiceClient<Channel>], code: &str, db: &TestDb) {
    let (results, errors) = parallel_checks(clients, 100, &wrong_code(code)).await;
    assert_eq!(results.len(), 10, "exactly 10 guesses are evaluated: {results:?} {errors:?}");
    assert!(results.iter().all(|r| r.0 == VerifyResult::WrongCode));
    let mut remaining: Vec<i32> = results.iter().map(|r| r.1).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..10).collect::<Vec<_>>(), "each reservation got its own slot");
    assert_eq!(results.iter().filter(|r| r.2).count(), 1, "exactly one attempt reports the lock");
    assert_eq!(errors, BTreeMap::from([("PHONE_LOCKED".to_owned(), 90)]));
    assert_eq!(db.phone_state(PHONE_E164).await, (10, true));

    let err = clients[0].clone().verify_code(verify_req(PHONE, Purpose::Login, code)).await.unwrap_err();
    assert_eq!(reason(&err), "PHONE_LOCKED");
}

async fn twenty_correct_submissions_approve_once(clients: &[OtpServiceClient<Channel>], code: &str, db: &TestDb) {
    let (results, errors) = parallel_checks(clients, 20, code).await;
    assert_eq!(results, vec![(VerifyResult::Approved, 0, false)], "exactly one approval: {errors:?}");
    // The other 19 lost the race. With more than 10 in flight at once, the ones past the 10th reservation are
    // refused as locked for that instant (no reservation is ever granted past the limit); never WRONG_CODE.
    let losers: usize = errors.values().sum();
    assert_eq!(losers, 19);
    assert!(errors.keys().all(|r| r == "ALREADY_VERIFIED" || r == "PHONE_LOCKED"), "{errors:?}");
    assert!(errors.get("ALREADY_VERIFIED").copied().unwrap_or(0) >= 9, "{errors:?}");
    assert_eq!(db.phone_state(PHONE_E164).await, (0, false), "the failure count stays 0, no lock remains");
}

mod hundred_parallel_wrong_guesses {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_two_processes() {
        let servers = two_postgres_servers().await;
        servers.a.otp().await.send_code(send_req(PHONE, Purpose::Login)).await.unwrap();
        let code = code_in(&read_sms(&servers.sms)[0].body);
        let clients = [servers.a.otp().await, servers.b.otp().await];
        hundred_wrong_guesses_evaluate_exactly_ten(&clients, &code, &servers.db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_one_server() {
        let app = spawn_app(Backend::Sqlite).await;
        let code = app.send_and_read(PHONE, Purpose::Login).await;
        hundred_wrong_guesses_evaluate_exactly_ten(std::slice::from_ref(&app.otp), &code, &app.db).await;
    }
}

mod twenty_parallel_correct_submissions {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_two_processes() {
        let servers = two_postgres_servers().await;
        servers.b.otp().await.send_code(send_req(PHONE, Purpose::Login)).await.unwrap();
        let code = code_in(&read_sms(&servers.sms)[0].body);
        let clients = [servers.a.otp().await, servers.b.otp().await];
        twenty_correct_submissions_approve_once(&clients, &code, &servers.db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_one_server() {
        let app = spawn_app(Backend::Sqlite).await;
        let code = app.send_and_read(PHONE, Purpose::Login).await;
        twenty_correct_submissions_approve_once(std::slice::from_ref(&app.otp), &code, &app.db).await;
    }
}

mod parallel_sends {
    use super::*;

    /// 20 parallel sends to one number from two processes: the cooldown lets exactly one SMS out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_two_processes() {
        let servers = two_postgres_servers().await;
        let clients = [servers.a.otp().await, servers.b.otp().await];
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let mut client = clients[i % 2].clone();
            tasks.spawn(async move { client.send_code(send_req(PHONE, Purpose::Login)).await });
        }
        let mut ok = 0;
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(status) => assert_eq!(reason(&status), "RESEND_COOLDOWN"),
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(read_sms(&servers.sms).len(), 1);
    }
}
