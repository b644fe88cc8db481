//! A gRPC load generator for otpd, and the argon2 ceiling it is judged against, measured in the same run.
//!
//! ```sh
//! cargo run --release --example loadgen -- --scenario verify-wrong --concurrency 64 --duration 8s
//! ```
//!
//! Scenarios:
//! - `send`: SendCode to a fresh number every call.
//! - `verify-wrong`: the attacker's path. Every number first gets a code; then wrong guesses spread over them.
//! - `verify-wrong-resent`: the same, each number holding 3 live codes.
//! - `verify-right`: SendCode, read the code from the `file:` gateway's JSON lines (`--sms-file`), VerifyCode.
//! - `rejected`: VerifyCode calls that a front-line limit refuses (run the server with a tight per-IP limit).
//! - `health`: grpc.health.v1 Check.
//!
//! It prints requests per second, the outcomes by status and reason, and p50/p90/p99/max latency from an HDR
//! histogram. Before the load, with the server idle, it measures the argon2 ceiling: hashes and checks per second
//! with the server's parameters on `--threads` threads. Each rate is printed as a ratio to that ceiling. `--json`
//! prints the same as one JSON object.
//!
//! The server must let the load through: front-line limits off; for the verify scenarios `--max-failed-attempts
//! 100`; for `verify-wrong-resent` `--resend-cooldown 0s`. `scripts/perf` starts it so.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use otpd::pb::otp::v1 as pb;
use pb::otp_service_client::OtpServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    Send,
    VerifyWrong,
    VerifyWrongResent,
    VerifyRight,
    Rejected,
    Health,
}

#[derive(Debug, Parser)]
#[command(about = "Load otpd over gRPC and compare its rates with the argon2 ceiling measured in the same run")]
struct Args {
    /// What to call.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// The public listener.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to load (after the set-up).
    #[arg(long, default_value = "8s")]
    duration: humantime::Duration,
    /// Numbers the verify scenarios spread their guesses over.
    #[arg(long, default_value_t = 200)]
    numbers: u32,
    /// Where this run's numbers start (010-1000-0000 + N), so that runs on one database do not meet.
    #[arg(long, default_value_t = 0)]
    first_number: u32,
    /// HTTP/2 connections the calls spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The `file:` gateway's path, for `verify-right`.
    #[arg(long)]
    sms_file: Option<PathBuf>,
    /// The server's argon2 memory (KiB), iterations and lanes, for the ceiling.
    #[arg(long, default_value_t = 19_456)]
    argon2_memory_kib: u32,
    #[arg(long, default_value_t = 2)]
    argon2_iterations: u32,
    #[arg(long, default_value_t = 1)]
    argon2_parallelism: u32,
    /// Threads for the ceiling: as many as the server hashes on (default: this machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The numbers of this run: 010-1000-0000 onwards.
fn number(n: u32) -> (String, String) {
    let (a, b) = (1000 + n / 10_000, n % 10_000);
    (format!("010-{a:04}-{b:04}"), format!("+8210{a:04}{b:04}"))
}

/// What one call came to: `OK …` or the status code and `ErrorInfo.reason`.
fn outcome<T>(result: Result<T, tonic::Status>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(status) => {
            let reason = status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default();
            format!("{:?} {reason}", status.code()).trim_end().to_owned()
        }
    }
}

fn verify_outcome(r: Result<tonic::Response<pb::VerifyCodeResponse>, tonic::Status>) -> String {
    outcome(r, |r| format!("OK {}", r.into_inner().result().as_str_name()))
}

/// Codes the `file:` gateway wrote, by E.164 number, read as the file grows.
#[derive(Clone, Default)]
struct SmsFile(Arc<Mutex<HashMap<String, String>>>);

impl SmsFile {
    fn follow(path: PathBuf) -> Self {
        let codes = Self::default();
        let shared = codes.clone();
        let code = regex::Regex::new(r"\b\d{6,8}\b").unwrap();
        tokio::spawn(async move {
            let mut read = 0;
            loop {
                if let Ok(text) = tokio::fs::read_to_string(&path).await {
                    let fresh = text.get(read..).unwrap_or("");
                    let complete = fresh.rfind('\n').map_or(0, |end| end + 1);
                    for line in fresh[..complete].lines() {
                        if let Ok(sms) = serde_json::from_str::<serde_json::Value>(line) {
                            let (to, body) = (sms["to"].as_str().unwrap_or(""), sms["body"].as_str().unwrap_or(""));
                            if let Some(found) = code.find(body) {
                                shared.0.lock().unwrap().insert(to.to_owned(), found.as_str().to_owned());
                            }
                        }
                    }
                    read += complete;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        codes
    }

    async fn code_for(&self, e164: &str) -> Option<String> {
        for _ in 0..2_500 {
            if let Some(code) = self.0.lock().unwrap().remove(e164) {
                return Some(code);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }
}

/// argon2 computations per second with the server's parameters on `threads` threads, each reusing its memory
/// as the server does, over `span`.
fn argon2_rate(params: &Params, threads: usize, span: Duration) -> f64 {
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let done = &done;
            scope.spawn(move || {
                let argon2 = Argon2::new_with_secret(
                    b"loadgen-ceiling-pepper",
                    Algorithm::Argon2id,
                    Version::V0x13,
                    params.clone(),
                )
                .unwrap();
                let mut memory = vec![argon2::Block::default(); params.block_count()];
                let mut out = [0u8; 32];
                let mut n = 0u32;
                while started.elapsed() < span {
                    let code = format!("{:06}", (t as u32).wrapping_mul(7919).wrapping_add(n) % 1_000_000);
                    argon2
                        .hash_password_into_with_memory(code.as_bytes(), b"a salt of 16 byt", &mut out, &mut memory)
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[derive(serde::Serialize)]
struct Report {
    scenario: Scenario,
    concurrency: usize,
    seconds: f64,
    requests: u64,
    requests_per_second: f64,
    /// Calls answered OK (for `rejected`, the refusals the scenario is about).
    useful_per_second: f64,
    outcomes: BTreeMap<String, u64>,
    latency_ms: BTreeMap<&'static str, f64>,
    /// The same for calls shed with OVERLOADED, and for the rest.
    shed_latency_ms: BTreeMap<&'static str, f64>,
    served_latency_ms: BTreeMap<&'static str, f64>,
    argon2_per_second: f64,
    ceiling_per_second: Option<f64>,
    ratio_to_ceiling: Option<f64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let params = Params::new(args.argon2_memory_kib, args.argon2_iterations, args.argon2_parallelism, None)
        .expect("valid argon2 parameters");
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let endpoint = Channel::from_shared(args.target.clone()).expect("a URL");
        channels.push(endpoint.connect().await.expect("the server answers"));
    }
    let otp = |i: usize| OtpServiceClient::new(channels[i % channels.len()].clone());

    // The set-up the verify scenarios need: codes waiting to be guessed.
    let sends_each = match args.scenario {
        Scenario::VerifyWrong => 1,
        Scenario::VerifyWrongResent => 3,
        _ => 0,
    };
    for round in 0..sends_each {
        let mut set_up = tokio::task::JoinSet::new();
        for n in 0..args.numbers {
            let mut client = otp(n as usize);
            let (phone, _) = number(args.first_number + n);
            set_up.spawn(async move {
                let request = pb::SendCodeRequest {
                    phone_number: phone,
                    purpose: pb::Purpose::Login.into(),
                    ..Default::default()
                };
                loop {
                    match client.send_code(request.clone()).await {
                        Err(status)
                            if status.get_error_details().error_info().is_some_and(|i| i.reason == "OVERLOADED") =>
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        answer => return answer,
                    }
                }
            });
            if set_up.len() >= 8 {
                let answer = set_up.join_next().await.unwrap().unwrap();
                assert!(answer.is_ok(), "set-up send {round} failed (server settings?): {answer:?}");
            }
        }
        while let Some(answer) = set_up.join_next().await {
            assert!(answer.unwrap().is_ok(), "set-up send failed (server settings?)");
        }
    }
    let sms = match args.scenario {
        Scenario::VerifyRight => Some(SmsFile::follow(args.sms_file.clone().expect("verify-right needs --sms-file"))),
        _ => None,
    };

    // The ceiling, with the server idle.
    let argon2_per_second = argon2_rate(&params, threads, Duration::from_secs(2));

    let next = Arc::new(AtomicU64::new(0));
    let span = *args.duration;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (mut client, channel) = (otp(w), channels[w % channels.len()].clone());
        let (next, sms, scenario) = (Arc::clone(&next), sms.clone(), args.scenario);
        let (numbers, first) = (args.numbers.max(1), args.first_number);
        workers.spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let (mut shed_latency, mut served_latency) = (latency.clone(), latency.clone());
            let mut outcomes: HashMap<String, u64> = HashMap::new();
            let mut health = HealthClient::new(channel);
            while started.elapsed() < span {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                let login = pb::Purpose::Login.into();
                let answer = match scenario {
                    Scenario::Health => outcome(
                        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await,
                        |_| "OK".into(),
                    ),
                    Scenario::Send => {
                        let (phone, _) = number(first + u32::try_from(i).unwrap_or(u32::MAX));
                        let request = pb::SendCodeRequest { phone_number: phone, purpose: login, ..Default::default() };
                        outcome(client.send_code(request).await, |_| "OK".into())
                    }
                    Scenario::VerifyWrong | Scenario::VerifyWrongResent | Scenario::Rejected => {
                        let (phone, _) = number(first + u32::try_from(i % u64::from(numbers)).unwrap_or(0));
                        let request =
                            pb::VerifyCodeRequest { phone_number: phone, purpose: login, code: "000000".into() };
                        verify_outcome(client.verify_code(request).await)
                    }
                    Scenario::VerifyRight => {
                        let (phone, e164) = number(first + u32::try_from(i).unwrap_or(u32::MAX));
                        let send =
                            pb::SendCodeRequest { phone_number: phone.clone(), purpose: login, ..Default::default() };
                        match client.send_code(send).await {
                            Err(status) => outcome(Err::<(), _>(status), |()| String::new()),
                            Ok(_) => match sms.as_ref().unwrap().code_for(&e164).await {
                                None => "no SMS in the file".into(),
                                Some(code) => {
                                    let request = pb::VerifyCodeRequest { phone_number: phone, purpose: login, code };
                                    verify_outcome(client.verify_code(request).await)
                                }
                            },
                        }
                    }
                };
                let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(micros.max(1));
                // A well-behaved client waits as RetryInfo says when the server sheds load.
                let shed = answer.ends_with("OVERLOADED");
                if shed { &mut shed_latency } else { &mut served_latency }.saturating_record(micros.max(1));
                *outcomes.entry(answer).or_default() += 1;
                if shed {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            (latency, shed_latency, served_latency, outcomes)
        });
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut shed_latency, mut served_latency) = (latency.clone(), latency.clone());
    let mut outcomes = BTreeMap::new();
    while let Some(done) = workers.join_next().await {
        let (histogram, shed, served, counts) = done.unwrap();
        latency.add(histogram).unwrap();
        shed_latency.add(shed).unwrap();
        served_latency.add(served).unwrap();
        for (answer, n) in counts {
            *outcomes.entry(answer).or_insert(0) += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = latency.len();
    let requests_per_second = requests as f64 / seconds;
    let useful: u64 = match args.scenario {
        Scenario::Rejected => outcomes.iter().filter(|(a, _)| a.contains("RATE_LIMITED")).map(|(_, n)| n).sum(),
        _ => outcomes.iter().filter(|(a, _)| a.starts_with("OK")).map(|(_, n)| n).sum(),
    };
    let useful_per_second = useful as f64 / seconds;
    // A check is one derivation, like a hash; send + right check is two.
    let ceiling_per_second = match args.scenario {
        Scenario::Send | Scenario::VerifyWrong | Scenario::VerifyWrongResent => Some(argon2_per_second),
        Scenario::VerifyRight => Some(argon2_per_second / 2.0),
        Scenario::Rejected | Scenario::Health => None,
    };
    let quantiles = |h: &Histogram<u64>| {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        BTreeMap::from([("p50", ms(0.5)), ("p90", ms(0.9)), ("p99", ms(0.99)), ("max", h.max() as f64 / 1000.0)])
    };
    let report = Report {
        scenario: args.scenario,
        concurrency: args.concurrency,
        seconds,
        requests,
        requests_per_second,
        useful_per_second,
        outcomes,
        latency_ms: quantiles(&latency),
        shed_latency_ms: quantiles(&shed_latency),
        served_latency_ms: quantiles(&served_latency),
        argon2_per_second,
        ceiling_per_second,
        ratio_to_ceiling: ceiling_per_second.map(|c| useful_per_second / c),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap());
        return;
    }
    println!(
        "{:?}, concurrency {}, {:.1} s: {} calls, {:.1}/s ({:.1}/s useful)",
        report.scenario, report.concurrency, seconds, requests, requests_per_second, useful_per_second
    );
    for (answer, n) in &report.outcomes {
        println!("  {n:>8}  {answer}");
    }
    let l = &report.latency_ms;
    println!("  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", l["p50"], l["p90"], l["p99"], l["max"]);
    if !shed_latency.is_empty() {
        let (shed, served) = (&report.shed_latency_ms, &report.served_latency_ms);
        println!(
            "    shed OVERLOADED: p50 {:.2}  p99 {:.2};  served: p50 {:.2}  p99 {:.2}",
            shed["p50"], shed["p99"], served["p50"], served["p99"]
        );
    }
    print!("  argon2 ceiling ({threads} threads): {argon2_per_second:.1}/s");
    if let Some(ratio) = report.ratio_to_ceiling {
        print!("; this run is {ratio:.2} of it");
    }
    println!();
}
