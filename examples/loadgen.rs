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
//! histogram. Before and after the load, with the server idle, it measures the argon2 ceiling: hashes and checks per
//! second with the server's parameters on `--threads` threads. Each rate is printed as a ratio to the mean of the
//! two. With `--server-pid` it also splits the machine's CPU time during the load between the server, itself and
//! the rest, and estimates argon2's share of the server's time; it also splits the server's time between its
//! hashing threads and the rest, and gives the rest per call made (what a refusal or a health check costs it). `--json` prints the same as one JSON object.
//!
//! `--retry retry-info` (the default): refused calls (`OVERLOADED`) wait as `RetryInfo` says, as a well-behaved
//! client does; in `verify-right` the check is then tried again (the driver still has the code). `--retry
//! immediate`: the storm a proxy, mesh or impatient backend makes: every refused call is made again at once, and in
//! `verify-right` a refused check is retried at once until it is answered or the run ends.
//!
//! Several replicas: `--target` takes a comma-separated list (or is given again); the connections and calls are
//! spread over every target in turn, and `--server-pid` takes every replica's process id. `--idempotency-keys`
//! sends a fresh `idempotency-key` with every SendCode and VerifyCode (what a key costs per call); with
//! `--repeat-keyed` each keyed call is then repeated with its key on the next target, as a backend's retry after a
//! timeout would be, and the repeat must come back replayed and equal to the first answer: the report counts the
//! repeats as `REPEAT replayed` or `REPEAT BROKEN …` (the keys did not hold).
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

/// What a client does with an `OVERLOADED` refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Retry {
    /// Waits as `RetryInfo` says (±25%).
    RetryInfo,
    /// Calls again at once.
    Immediate,
}

#[derive(Debug, Parser)]
#[command(about = "Load otpd over gRPC and compare its rates with the argon2 ceiling measured in the same run")]
struct Args {
    /// What to call.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// The public listeners: one, or several replicas' (comma-separated, or the flag again).
    #[arg(long = "target", default_value = "http://127.0.0.1:50051", value_delimiter = ',')]
    targets: Vec<String>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to load (after the set-up).
    #[arg(long, default_value = "8s")]
    duration: humantime::Duration,
    /// After each call every worker waits this long (a client's think time): the calls then come at about
    /// concurrency ÷ pause a second, so that two kinds of call can be compared at one rate (`health` beside a
    /// refusal storm, whose calls the admission wait paces).
    #[arg(long, default_value = "0s")]
    pause: humantime::Duration,
    /// Numbers the verify scenarios spread their guesses over.
    #[arg(long, default_value_t = 200)]
    numbers: u32,
    /// Where this run's numbers start (010-1000-0000 + N), so that runs on one database do not meet.
    #[arg(long, default_value_t = 0)]
    first_number: u32,
    /// HTTP/2 connections per target the calls spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// A fresh `idempotency-key` on every SendCode and VerifyCode.
    #[arg(long)]
    idempotency_keys: bool,
    /// With `--idempotency-keys`: repeat each call with its key on the next target and check the answer.
    #[arg(long, requires = "idempotency_keys")]
    repeat_keyed: bool,
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
    /// The servers' process ids (comma-separated): the report then splits the machine's CPU time between the
    /// servers, the load generator and the rest (Linux `/proc`).
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// What a refused call does: wait as RetryInfo says, or call again at once.
    #[arg(long, value_enum, default_value = "retry-info")]
    retry: Retry,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The numbers of this run: 010-1000-0000 onwards.
fn number(n: u32) -> (String, String) {
    let (a, b) = (1000 + n / 10_000, n % 10_000);
    (format!("010-{a:04}-{b:04}"), format!("+8210{a:04}{b:04}"))
}

/// What one call came to: `OK …` or the status code and `ErrorInfo.reason`, and `RetryInfo`'s delay if any.
type Answer = (String, Option<Duration>);

fn outcome<T>(result: Result<T, tonic::Status>, ok: impl FnOnce(T) -> String) -> Answer {
    match result {
        Ok(value) => (ok(value), None),
        Err(status) => {
            let details = status.get_error_details();
            let reason = details.error_info().map(|i| i.reason.clone()).unwrap_or_default();
            let retry = details.retry_info().and_then(|r| r.retry_delay);
            (format!("{:?} {reason}", status.code()).trim_end().to_owned(), retry)
        }
    }
}

fn verify_outcome(r: Result<tonic::Response<pb::VerifyCodeResponse>, tonic::Status>) -> Answer {
    outcome(r, |r| format!("OK {}", r.into_inner().result().as_str_name()))
}

/// `message` with `key` as its `idempotency-key`, if any.
fn keyed<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("idempotency-key", key.parse().expect("a UUID is a header value"));
    }
    request
}

/// Whether a keyed call's repeat came back as the key promises: replayed, and the first call's answer.
fn repeated<T: PartialEq + std::fmt::Debug>(
    first: &Result<tonic::Response<T>, tonic::Status>,
    again: &Result<tonic::Response<T>, tonic::Status>,
) -> String {
    let replayed = |m: &tonic::metadata::MetadataMap| m.get("otp-idempotent-replay").is_some();
    match (first, again) {
        (Ok(a), Ok(b)) if a.get_ref() == b.get_ref() && replayed(b.metadata()) => "REPEAT replayed".into(),
        (Err(a), Err(b)) if a.code() == b.code() && replayed(b.metadata()) => "REPEAT replayed".into(),
        // A refusal that frees the key (OVERLOADED, …) is judged afresh: not a broken key.
        (Err(a), _) if a.get_error_details().retry_info().is_some() => "REPEAT after a freeing refusal".into(),
        (_, Err(b)) if b.code() == tonic::Code::Aborted || b.get_error_details().retry_info().is_some() => {
            format!("REPEAT refused {:?}", b.code())
        }
        (a, b) => {
            format!("REPEAT BROKEN {:?} / {:?}", a.as_ref().map(|r| r.get_ref()), b.as_ref().map(|r| r.get_ref()))
        }
    }
}

/// Codes the `file:` gateway wrote, by E.164 number, read as the file grows.
#[derive(Clone, Default)]
struct SmsFile(Arc<Mutex<HashMap<String, String>>>);

impl SmsFile {
    fn follow(path: PathBuf) -> Self {
        use tokio::io::AsyncReadExt;
        let codes = Self::default();
        let shared = codes.clone();
        let code = regex::Regex::new(r"\b\d{6,8}\b").unwrap();
        tokio::spawn(async move {
            // Reads only what was appended since the last look, so the load generator's own cost stays flat.
            let (mut file, mut pending) = (None, Vec::new());
            loop {
                if file.is_none() {
                    file = tokio::fs::File::open(&path).await.ok();
                }
                if let Some(file) = file.as_mut() {
                    let _ = file.read_to_end(&mut pending).await;
                    let complete = pending.iter().rposition(|&b| b == b'\n').map_or(0, |end| end + 1);
                    for line in pending[..complete].split(|&b| b == b'\n') {
                        if let Ok(sms) = serde_json::from_slice::<serde_json::Value>(line) {
                            let (to, body) = (sms["to"].as_str().unwrap_or(""), sms["body"].as_str().unwrap_or(""));
                            if let Some(found) = code.find(body) {
                                shared.0.lock().unwrap().insert(to.to_owned(), found.as_str().to_owned());
                            }
                        }
                    }
                    pending.drain(..complete);
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

/// CPU time in the kernel's clock ticks, read from Linux's `/proc`: the whole machine's (busy and all), this
/// process's and the server's. Only ratios of ticks are reported, so the tick rate does not matter.
#[derive(Clone, Default)]
struct CpuTicks {
    machine_busy: u64,
    machine_steal: u64,
    machine_all: u64,
    loadgen: u64,
    server: u64,
    /// The servers' hashing threads (named `otpd-argon2-N`), part of `server`.
    server_hashing: u64,
    /// The servers' other threads (runtime, database driver, …), each thread's time on a CPU in nanoseconds by
    /// the scheduler's own count (`/proc/…/task/…/schedstat`): exact, where the ticks above are a sample taken
    /// 100 times a second, too coarse for a short run's few hundred milliseconds of runtime work. Kept per
    /// thread, so that a thread that ends during the run loses only its time within the run.
    server_rest_ns: BTreeMap<(u32, String), u64>,
}

impl CpuTicks {
    fn read(servers: &[u32]) -> Option<Self> {
        // `cpu  user nice system idle iowait irq softirq steal …`: idle and iowait are the idle part.
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        let machine_all: u64 = fields.iter().take(8).sum();
        let machine_busy = machine_all - fields.get(3)? - fields.get(4)?;
        let machine_steal = *fields.get(7)?;
        // `pid (comm) state …`: utime and stime are the 12th and 13th fields after the comm's closing parenthesis.
        let process = |pid: &str| -> Option<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        };
        let server = servers.iter().map(|pid| process(&pid.to_string())).sum::<Option<u64>>()?;
        // One pass over the servers' threads: the hashing threads' ticks (they live as long as the server, so their
        // ticks are never lost to a thread's exit), and every other thread's time on a CPU.
        let mut server_hashing = 0;
        let mut server_rest_ns = BTreeMap::new();
        for pid in servers {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
            for task in tasks.filter_map(Result::ok) {
                let tid = task.file_name().to_string_lossy().into_owned();
                if std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with("otpd-argon2")) {
                    server_hashing += process(&format!("{pid}/task/{tid}")).unwrap_or(0);
                    continue;
                }
                // `time on a CPU (ns)  time waiting to run (ns)  time slices`
                let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                if let Some(ns) = stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()) {
                    server_rest_ns.insert((*pid, tid), ns);
                }
            }
        }
        Some(Self {
            machine_busy,
            machine_steal,
            machine_all,
            loadgen: process("self")?,
            server,
            server_hashing,
            server_rest_ns,
        })
    }
}

/// How the machine's CPU time was spent during the load, as shares of all of it (every core).
#[derive(serde::Serialize)]
struct CpuShare {
    server: Option<f64>,
    load_generator: f64,
    /// Busy, but neither: the database server, the kernel's own work, anything else running.
    other: f64,
    /// Taken by the hypervisor for other guests (part of `other`): a machine that is slower than it looks.
    steal: f64,
    idle: f64,
    /// The part of `server` spent on the hashing threads.
    server_hashing: Option<f64>,
    /// The rest of the server's CPU time (reactor, parsing, store, answers) per call made, in microseconds: with
    /// the queue full and almost every call refused, what a refusal costs; in `health`, what a health check costs
    /// (a `verify-right` journey counts as one call however often its check was retried).
    server_rest_us_per_call: Option<f64>,
    /// The share of the server's CPU time that the argon2 work it did would take at the ceiling's rate: the
    /// part of its time that went into hashing, the rest being what it adds around the hash.
    argon2_share_of_server: Option<f64>,
}

#[derive(serde::Serialize)]
struct Report {
    scenario: Scenario,
    retry: Retry,
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
    /// The argon2 rate measured before and after the load, and their mean.
    argon2_before: f64,
    argon2_after: f64,
    argon2_per_second: f64,
    ceiling_per_second: Option<f64>,
    ratio_to_ceiling: Option<f64>,
    cpu: Option<CpuShare>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let params = Params::new(args.argon2_memory_kib, args.argon2_iterations, args.argon2_parallelism, None)
        .expect("valid argon2 parameters");
    // Interleaved, so that consecutive workers (and a call and its repeat) go to different targets.
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        for target in &args.targets {
            let endpoint = Channel::from_shared(target.clone()).expect("a URL");
            channels.push(endpoint.connect().await.expect("the server answers"));
        }
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

    // The ceiling, with the server idle: before the load and again after it, because a shared machine's speed
    // drifts; the ratio uses their mean.
    let argon2_before = argon2_rate(&params, threads, Duration::from_secs(2));

    let next = Arc::new(AtomicU64::new(0));
    let span = *args.duration;
    let cpu_before = CpuTicks::read(&args.server_pids);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (mut client, channel) = (otp(w), channels[w % channels.len()].clone());
        // The repeat of a keyed call goes to the next target.
        let mut other = otp(w + 1);
        let (next, sms, scenario, retry) = (Arc::clone(&next), sms.clone(), args.scenario, args.retry);
        let (keys, repeat) = (args.idempotency_keys, args.repeat_keyed);
        let (numbers, first) = (args.numbers.max(1), args.first_number);
        let pause = *args.pause;
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
                        let key = keys.then(|| uuid::Uuid::new_v4().to_string());
                        let first = client.send_code(keyed(request.clone(), key.as_deref())).await;
                        if let (true, Some(key)) = (repeat, &key) {
                            let again = other.send_code(keyed(request, Some(key))).await;
                            *outcomes.entry(repeated(&first, &again)).or_default() += 1;
                        }
                        outcome(first, |_| "OK".into())
                    }
                    Scenario::VerifyWrong | Scenario::VerifyWrongResent | Scenario::Rejected => {
                        let (phone, _) = number(first + u32::try_from(i % u64::from(numbers)).unwrap_or(0));
                        let request =
                            pb::VerifyCodeRequest { phone_number: phone, purpose: login, code: "000000".into() };
                        let key = keys.then(|| uuid::Uuid::new_v4().to_string());
                        let first = client.verify_code(keyed(request.clone(), key.as_deref())).await;
                        if let (true, Some(key)) = (repeat, &key) {
                            let again = other.verify_code(keyed(request, Some(key))).await;
                            *outcomes.entry(repeated(&first, &again)).or_default() += 1;
                        }
                        verify_outcome(first)
                    }
                    Scenario::VerifyRight => {
                        let (phone, e164) = number(first + u32::try_from(i).unwrap_or(u32::MAX));
                        let send =
                            pb::SendCodeRequest { phone_number: phone.clone(), purpose: login, ..Default::default() };
                        match client.send_code(send).await {
                            Err(status) => outcome(Err::<(), _>(status), |()| String::new()),
                            Ok(_) => match sms.as_ref().unwrap().code_for(&e164).await {
                                None => ("no SMS in the file".into(), None),
                                Some(code) => {
                                    // The driver has the code: a refused check is tried again once the server
                                    // says there is room, or the send's hash would be wasted.
                                    let request = pb::VerifyCodeRequest { phone_number: phone, purpose: login, code };
                                    let mut answer = verify_outcome(client.verify_code(request.clone()).await);
                                    for _ in 0..20 {
                                        let Some(wait) = answer.1.filter(|_| answer.0.ends_with("OVERLOADED")) else {
                                            break;
                                        };
                                        if retry == Retry::RetryInfo {
                                            tokio::time::sleep(wait.mul_f64(0.75 + (i % 11) as f64 / 20.0)).await;
                                        }
                                        answer = verify_outcome(client.verify_code(request.clone()).await);
                                    }
                                    // The impatient client keeps at it for as long as the run lasts.
                                    while retry == Retry::Immediate
                                        && answer.0.ends_with("OVERLOADED")
                                        && started.elapsed() < span
                                    {
                                        answer = verify_outcome(client.verify_code(request.clone()).await);
                                    }
                                    answer
                                }
                            },
                        }
                    }
                };
                let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(micros.max(1));
                let shed = answer.0.ends_with("OVERLOADED");
                if shed { &mut shed_latency } else { &mut served_latency }.saturating_record(micros.max(1));
                *outcomes.entry(answer.0).or_default() += 1;
                // A well-behaved client waits as RetryInfo says when the server sheds load, spread by ±25% so
                // that the refused do not all come back at once.
                if let (true, Some(wait), Retry::RetryInfo) = (shed, answer.1, retry) {
                    tokio::time::sleep(wait.mul_f64(0.75 + (i % 11) as f64 / 20.0)).await;
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
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
    let cpu_after = CpuTicks::read(&args.server_pids);
    let argon2_after = argon2_rate(&params, threads, Duration::from_secs(2));
    let argon2_per_second = (argon2_before + argon2_after) / 2.0;
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
    let ratio_to_ceiling = ceiling_per_second.map(|c| useful_per_second / c);
    let cpu = cpu_before.zip(cpu_after).map(|(before, after)| {
        let all = (after.machine_all - before.machine_all).max(1) as f64;
        let share = |a: u64, b: u64| (a - b) as f64 / all;
        let server = (!args.server_pids.is_empty()).then(|| share(after.server, before.server));
        let load_generator = share(after.loadgen, before.loadgen);
        let busy = share(after.machine_busy, before.machine_busy);
        // The ceiling ran on `threads` threads; the machine's time is counted over all its cores.
        let cores = std::thread::available_parallelism().map_or(threads, |n| n.get()) as f64;
        let argon2 = ratio_to_ceiling.map(|r| r * threads as f64 / cores);
        CpuShare {
            server,
            load_generator,
            other: (busy - load_generator - server.unwrap_or(0.0)).max(0.0),
            steal: share(after.machine_steal, before.machine_steal),
            idle: 1.0 - busy,
            server_hashing: server.map(|_| share(after.server_hashing, before.server_hashing)),
            // Threads born during the run count from zero. A kernel without scheduler statistics reads 0: no figure.
            server_rest_us_per_call: (!args.server_pids.is_empty() && after.server_rest_ns.values().any(|ns| *ns > 0))
                .then(|| {
                    let ns: u64 = after
                        .server_rest_ns
                        .iter()
                        .map(|(task, ns)| ns.saturating_sub(before.server_rest_ns.get(task).copied().unwrap_or(0)))
                        .sum();
                    ns as f64 / 1e3 / requests.max(1) as f64
                }),
            argon2_share_of_server: server.zip(argon2).map(|(s, a)| a / s.max(f64::EPSILON)),
        }
    });
    let quantiles = |h: &Histogram<u64>| {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        BTreeMap::from([("p50", ms(0.5)), ("p90", ms(0.9)), ("p99", ms(0.99)), ("max", h.max() as f64 / 1000.0)])
    };
    let report = Report {
        scenario: args.scenario,
        retry: args.retry,
        concurrency: args.concurrency,
        seconds,
        requests,
        requests_per_second,
        useful_per_second,
        outcomes,
        latency_ms: quantiles(&latency),
        shed_latency_ms: quantiles(&shed_latency),
        served_latency_ms: quantiles(&served_latency),
        argon2_before,
        argon2_after,
        argon2_per_second,
        ceiling_per_second,
        ratio_to_ceiling,
        cpu,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap());
        return;
    }
    println!(
        "{:?} (retry {:?}), concurrency {}, {:.1} s: {} calls, {:.1}/s ({:.1}/s useful)",
        report.scenario, report.retry, report.concurrency, seconds, requests, requests_per_second, useful_per_second
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
    print!(
        "  argon2 ceiling ({threads} threads): {argon2_per_second:.1}/s ({argon2_before:.1} before, {argon2_after:.1} after)"
    );
    if let Some(ratio) = report.ratio_to_ceiling {
        print!("; this run is {ratio:.2} of it");
    }
    println!();
    if let Some(cpu) = &report.cpu {
        let server = cpu.server.map_or(String::new(), |s| format!("server {s:.2}, "));
        println!(
            "  CPU share: {server}load generator {:.2}, other {:.2} (steal {:.2}), idle {:.2}",
            cpu.load_generator, cpu.other, cpu.steal, cpu.idle
        );
        if let (Some(hashing), Some(rest)) = (cpu.server_hashing, cpu.server_rest_us_per_call) {
            println!("  server: hashing threads {hashing:.2} of the machine; the rest {rest:.1} µs of CPU per call");
        }
        if let Some(argon2) = cpu.argon2_share_of_server {
            println!("  argon2's share of the server's CPU time: {argon2:.2}");
        }
    }
}
