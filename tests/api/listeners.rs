//! The listeners under attack (issue 20): half-sent requests that would starve every listener of descriptors, a
//! SIGHUP to a plaintext process, and DNS rebinding (a foreign `Host`). The starvation tests run a real `otpd`
//! process limited to 256 descriptors; the flood comes from 127.0.0.2, the checks from 127.0.0.1 (both loopback).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

const SERVING: i32 = ServingStatus::Serving as i32;
const HMAC_KEY: &str = "receipt-hmac-key-0123456789";
/// The descriptor limit of the starved processes, and the connections thrown at them.
pub const DESCRIPTORS: u32 = 256;
pub const FLOOD: usize = 300;

/// `n` connections to `target` from `source`, each sending `payload` and then nothing. Connections the server
/// closes at once are kept too (their reads see the close).
pub async fn flood(source: &str, target: SocketAddr, n: usize, payload: &[u8]) -> Vec<TcpStream> {
    let source: IpAddr = source.parse().unwrap();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let mut stream = socket.connect(target).await.unwrap();
        // A connection closed at once may refuse the bytes: that is the point.
        let _ = stream.write_all(payload).await;
        streams.push(stream);
    }
    streams
}

/// How many of `streams` the server has closed by `deadline`.
pub async fn closed_by(streams: &mut [TcpStream], deadline: Instant) -> usize {
    let mut closed = 0;
    for stream in streams.iter_mut() {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_still_open) => break,
            }
        }
    }
    closed
}

/// The whole server's health over a new plaintext connection from 127.0.0.1, within `within`.
async fn health_within(addr: SocketAddr, within: Duration) -> Result<i32, String> {
    let call = async {
        let channel =
            Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.map_err(|e| e.to_string())?;
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        HealthClient::new(channel).check(req).await.map(|r| r.into_inner().status).map_err(|s| s.to_string())
    };
    tokio::time::timeout(within, call).await.map_err(|_| format!("no answer within {within:?}"))?
}

/// One sample of the exposition at `metrics`, 0 when absent.
pub async fn sample(metrics: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// 300 half-sent requests (headers never finished) from one address to the webhook listener of a process with
/// 256 descriptors: the public and admin listeners keep answering, so does the webhook listener for another
/// address, and every half-open connection is closed within the header timeout. Before the connection caps
/// and the header timeout, the flood took every descriptor ("Too many open files") and held it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_to_the_webhook_listener_starve_no_listener() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Sqlite, dir.path()).await;
    let webhook: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut args = process_args(&db.url, &dir.path().join("sms.jsonl"));
    args.extend(["--webhook-listen".into(), webhook.to_string(), "--receipt-hmac-key".into(), HMAC_KEY.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Settings by environment, so that the same test runs against a build without these flags.
    let (metrics_listen, header_timeout) = (metrics.to_string(), Duration::from_secs(3));
    let env = [("OTPD_HEADER_TIMEOUT", "3s"), ("OTPD_METRICS_LISTEN", metrics_listen.as_str())];
    let otpd = OtpdProcess::start_limited(dir.path(), "otpd", &args, &env, Some(DESCRIPTORS)).await;

    let half_sent = format!("POST /receipts/http HTTP/1.1\r\nHost: {webhook}\r\nContent-Type: application/json\r\n");
    let started = Instant::now();
    let mut streams = flood("127.0.0.2", webhook, FLOOD, half_sent.as_bytes()).await;

    for (listener, addr) in [("public", otpd.public_addr), ("admin", otpd.admin_addr)] {
        let health = health_within(addr, Duration::from_secs(2)).await;
        assert_eq!(health, Ok(SERVING), "the {listener} listener during the flood");
    }
    // The webhook listener itself still serves another address: an unsigned receipt is refused, not ignored.
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        reqwest::Client::new().post(format!("http://{webhook}/receipts/http")).body("{}").send(),
    )
    .await
    .expect("the webhook listener answers another address during the flood")
    .unwrap();
    assert_eq!(refused.status(), 401);

    let closed = closed_by(&mut streams, started + header_timeout + Duration::from_secs(3)).await;
    assert_eq!(closed, FLOOD, "half-open connections still open after the header timeout");
    // With 256 descriptors a listener takes 48 connections and an address 12: the rest were closed at once.
    let series = |reason: &str| format!("otpd_connections_closed_total{{listener=\"webhook\",reason=\"{reason}\"}}");
    assert_eq!(sample(metrics, &series("address_full")).await, (FLOOD - 12) as f64);
    assert_eq!(sample(metrics, &series("header_timeout")).await, 12.0);
    assert_eq!(health_within(otpd.public_addr, Duration::from_secs(2)).await, Ok(SERVING));
    otpd.terminate().await;
}

/// SIGHUP (`systemctl reload`) to an otpd without TLS: it logs that there is nothing to reload and keeps
/// serving; it used to die of the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_otpd_survives_sighup_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Sqlite, dir.path()).await;
    let args = process_args(&db.url, &dir.path().join("sms.jsonl"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut otpd = OtpdProcess::start(dir.path(), "otpd", &args, &[]).await;
    let pid = otpd.child.id().unwrap().to_string();
    for _ in 0..2 {
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(otpd.child.try_wait().unwrap().is_none(), "otpd died of SIGHUP");
        assert_eq!(health_within(otpd.public_addr, Duration::from_secs(5)).await, Ok(SERVING));
    }
    let mut otp = otpd.otp().await;
    otp.send_code(send_req("010-1234-5678", otpd::pb::otp::v1::Purpose::Login)).await.unwrap();
    let (stdout, stderr) = otpd.terminate().await;
    let log = format!("{stdout}{stderr}");
    assert_eq!(log.matches("SIGHUP: nothing to reload").count(), 2, "{log}");
}

/// `curl` with a Host header; the status code.
async fn curl(url: &str, host: Option<&str>, method: &str) -> u16 {
    let mut command = tokio::process::Command::new("curl");
    command.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--max-time", "10", url]);
    if let Some(host) = host {
        command.args(["-H", &format!("Host: {host}")]);
    }
    let out = command.output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

async fn health_via(uri: &str, origin: Option<&str>) -> Result<i32, tonic::Status> {
    let mut endpoint = Endpoint::from_shared(uri.to_owned()).unwrap();
    if let Some(origin) = origin {
        endpoint = endpoint.origin(origin.parse().unwrap());
    }
    let channel = endpoint.connect().await.unwrap();
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    HealthClient::new(channel).check(req).await.map(|r| r.into_inner().status)
}

/// DNS rebinding: the admin, webhook and metrics listeners answer 421 to a Host (or HTTP/2 :authority) they do not
/// serve, and serve their own address, localhost, and --allowed-hosts. Native gRPC clients dialling 127.0.0.1 or
/// localhost get through; the public listener answers any name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_get_421_on_the_admin_webhook_and_metrics_listeners() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            "--webhook-listen",
            "127.0.0.1:0",
            "--receipt-hmac-key",
            HMAC_KEY,
            "--metrics-listen",
            "127.0.0.1:0",
            "--allowed-hosts",
            "otpd.example.com,ops.example:8443",
        ],
    )
    .await;
    let (admin, webhook, metrics) = (app.admin_addr, app.webhook_addr.unwrap(), app.metrics_addr.unwrap());
    let cases = [
        (format!("http://{admin}/console/"), admin.port(), "GET", 200),
        (format!("http://{webhook}/receipts/http"), webhook.port(), "POST", 401),
        (format!("http://{metrics}/metrics"), metrics.port(), "GET", 200),
    ];
    for (url, port, method, served) in &cases {
        for foreign in ["rebind.attacker.example", &format!("rebind.attacker.example:{port}"), "ops.example:8080"] {
            assert_eq!(curl(url, Some(foreign), method).await, 421, "{url} with Host {foreign}");
        }
        for own in [
            None,
            Some(format!("localhost:{port}")),
            Some(format!("[::1]:{port}")),
            Some("otpd.example.com".to_owned()),
            Some("ops.example:8443".to_owned()),
        ] {
            assert_eq!(curl(url, own.as_deref(), method).await, *served, "{url} with Host {own:?}");
        }
    }
    // Native gRPC over the admin listener, dialled by address and by name: served. With a foreign :authority:
    // refused.
    assert_eq!(health_via(&format!("http://127.0.0.1:{}", admin.port()), None).await.unwrap(), SERVING);
    assert_eq!(health_via(&format!("http://localhost:{}", admin.port()), None).await.unwrap(), SERVING);
    let foreign = health_via(&format!("http://{admin}"), Some("http://rebind.attacker.example")).await;
    let refused = foreign.unwrap_err();
    assert!(refused.code() == tonic::Code::Unknown && refused.message().contains("421"), "{refused:?}");
    // The public listener sits behind the integrator's backend and answers any name.
    let public = format!("http://{}", app.public_addr);
    assert_eq!(health_via(&public, Some("http://backend.internal")).await.unwrap(), SERVING);
    app.stop().await;
}

/// A gRPC (HTTP/2) connection's request heads are seen through the guard: one that keeps calling outlives the
/// header timeout (as does one connected before its first call), and one left idle is closed at the idle timeout,
/// after which the channel reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_outlive_the_header_timeout_and_close_when_idle() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &["--header-timeout", "500ms", "--idle-timeout", "1500ms", "--metrics-listen", "127.0.0.1:0"],
    )
    .await;
    let metrics = app.metrics_addr.unwrap();
    let series = |reason: &str| format!("otpd_connections_closed_total{{listener=\"public\",reason=\"{reason}\"}}");
    let channel = Channel::from_shared(format!("http://{}", app.public_addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let req = || tonic_health::pb::HealthCheckRequest { service: String::new() };
    for _ in 0..6 {
        assert_eq!(health.check(req()).await.unwrap().into_inner().status, SERVING);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sample(metrics, &series("header_timeout")).await, 0.0);
    // At most the test helper's connection, which has made no call since it connected, is closed by now.
    assert!(sample(metrics, &series("idle_timeout")).await <= 1.0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Now this channel's connection too.
    assert_eq!(sample(metrics, &series("idle_timeout")).await, 2.0);
    assert_eq!(health.check(req()).await.unwrap().into_inner().status, SERVING, "the channel reconnects");
    app.stop().await;
}
