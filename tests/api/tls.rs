//! TLS and mutual TLS on real listeners, with certificates made here by `rcgen`: a CA, a server certificate
//! for 127.0.0.1 and localhost, client certificates from that CA and from another one. The service runs in
//! process (SQLite) for the handshake rules, as a real `otpd` process for the SIGHUP rotation, and is called by
//! the real `otpctl` binary over mutual TLS. The audit log records the client certificate of every mutual-TLS
//! supervisor call (on both backends).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use otpd::clock::ManualClock;
use otpd::pb::otp::v1 as pb;
use otpd::startup::Application;
use pb::otp_service_client::OtpServiceClient;
use pb::supervisor_service_client::SupervisorServiceClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::both_backends;
use crate::helpers::*;

both_backends!(mutual_tls_records_the_client_certificate_in_every_audit_event);

/// A certificate and its key, PEM.
#[derive(Clone)]
struct Pem {
    cert: String,
    key: String,
}

/// A certificate authority that issues server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { pem, issuer: Issuer::new(params, key) }
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pem {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// For 127.0.0.1 and localhost (an IP SAN: clients dial the address).
    fn server(&self) -> Pem {
        self.issue(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, name: &str) -> Pem {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes `text` to `path` the way a rotation should: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// The files of a server with mutual TLS on its admin listener.
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

impl ServerFiles {
    fn write(dir: &Path, server: &Pem, client_ca: &Ca) -> Self {
        let files =
            Self { cert: dir.join("server.crt"), key: dir.join("server.key"), client_ca: dir.join("client-ca.crt") };
        replace(&files.cert, &server.cert);
        replace(&files.key, &server.key);
        replace(&files.client_ca, &client_ca.pem);
        files
    }

    /// TLS on both listeners (the admin listener takes the public pair by default), mutual TLS on the admin one.
    fn args(&self) -> Vec<String> {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
            "--admin-client-ca",
            self.client_ca.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .into()
    }
}

/// A TLS connection to `addr` trusting only `ca`, presenting `identity` if given.
async fn connect(addr: SocketAddr, ca: &str, identity: Option<&Pem>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await
}

/// The whole server's health over `channel`.
async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    HealthClient::new(channel).check(req).await.map(|r| r.into_inner().status)
}

/// Health over a new TLS connection; any failure (handshake, refused certificate, transport) is an `Err`.
async fn health_over_tls(addr: SocketAddr, ca: &str, identity: Option<&Pem>) -> Result<i32, String> {
    let channel = connect(addr, ca, identity).await.map_err(|e| format!("connect: {e:?}"))?;
    health(channel).await.map_err(|s| format!("call: {s:?}"))
}

const SERVING: i32 = ServingStatus::Serving as i32;

/// The application in process with TLS, on SQLite.
struct TlsApp {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    stores: otpd::store::Stores,
    clock: Arc<ManualClock>,
    sms_path: PathBuf,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TlsApp {
    async fn spawn(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::spawn_on(Backend::Sqlite, dir, extra).await
    }

    async fn spawn_on(backend: Backend, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        init_test_log();
        let db = TestDb::new(backend, dir.path()).await;
        let sms_path = dir.path().join("sms.jsonl");
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = Application::build_with_clock(test_config(&db.url, &sms_path, extra), clock.clone()).await.unwrap();
        let (public_addr, admin_addr, stores) = (app.public_addr(), app.admin_addr(), app.stores());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until(shutdown.clone().cancelled_owned()));
        Self { public_addr, admin_addr, stores, clock, sms_path, shutdown, server, _dir: dir }
    }

    /// A supervisor added as `otpd supervisors add` does; returns the token.
    async fn add_supervisor(&self, name: &str, role: &str) -> String {
        use otpd::domain::audit::{AuditAction, NewAuditEvent};
        use secrecy::ExposeSecret;
        let now = otpd::clock::Clock::now(&*self.clock);
        let token = otpd::supervision::token::generate();
        let event = NewAuditEvent::by_operator(AuditAction::SupervisorAdded, now, format!("added {name} ({role})"));
        let hash = otpd::supervision::token::hash_secret(&token);
        let (name, role, key) = (name.parse().unwrap(), role.parse().unwrap(), test_audit_key());
        let added = self.stores.supervision.add_supervisor(&name, role, Default::default(), &hash, event, &key);
        assert!(added.await.unwrap().is_some());
        token.expose_secret().to_owned()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

/// A PKI for one test: the server's CA and certificate, a client of that CA and a client of another CA.
struct Pki {
    ca: Ca,
    server: Pem,
    client: Pem,
    stranger: Pem,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::new("otpd test CA");
        let (server, client) = (ca.server(), ca.client("team-lead-kim"));
        let stranger = Ca::new("some other CA").client("team-lead-kim");
        Self { ca, server, client, stranger }
    }
}

async fn spawn_with_tls(pki: &Pki, extra: &[&str]) -> TlsApp {
    spawn_with_tls_on(Backend::Sqlite, pki, extra).await
}

async fn spawn_with_tls_on(backend: Backend, pki: &Pki, extra: &[&str]) -> TlsApp {
    let dir = tempfile::tempdir().unwrap();
    let files = ServerFiles::write(dir.path(), &pki.server, &pki.ca);
    let mut args = files.args();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TlsApp::spawn_on(backend, dir, &args).await
}

/// Under mutual TLS every audit event of a supervisor call records the client certificate's subject and SHA-256
/// fingerprint with the address (제8조: where the access came from), ListAuditEvents returns them; with
/// --admin-allow the listener closes an outsider's connection before any handshake.
async fn mutual_tls_records_the_client_certificate_in_every_audit_event(backend: Backend) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    let pki = Pki::new();
    let app = spawn_with_tls_on(backend, &pki, &["--admin-allow", "127.0.0.1/32"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let lee = app.add_supervisor("lee", "auditor").await;
    let der = CertificateDer::from_pem_slice(pki.client.cert.as_bytes()).unwrap();
    let fingerprint = hex::encode(sha2::Sha256::digest(der.as_ref()));

    let admin = connect(app.admin_addr, &pki.ca.pem, Some(&pki.client)).await.unwrap();
    let mut sup = SupervisorServiceClient::new(admin);
    let req =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-MTLS-1".into(), ..Default::default() };
    sup.get_phone_status(authed(req, &kim)).await.unwrap();
    let listed = sup.list_audit_events(authed(pb::ListAuditEventsRequest::default(), &lee)).await.unwrap();
    let status = listed.into_inner().events.into_iter().find(|e| e.ticket_id == "CS-MTLS-1").unwrap();
    assert_eq!(status.client_address, "127.0.0.1");
    assert_eq!(status.client_certificate_subject, "CN=team-lead-kim");
    assert_eq!(status.client_certificate_sha256, fingerprint);
    assert_eq!(status.user_agent, "", "native gRPC, not the console");

    // In the store: both calls (the status read and the audit read) carry the certificate, sealed with v4.
    let events = app.stores.supervision.audit_chain(0, 100).await.unwrap();
    let calls: Vec<_> = events.iter().filter(|e| !e.event.actor_name.starts_with("cli:")).collect();
    assert_eq!(calls.len(), 2);
    for e in calls {
        let access = e.event.access.as_ref().unwrap();
        let certificate = access.certificate().unwrap();
        assert_eq!((certificate.subject(), certificate.sha256()), ("CN=team-lead-kim", fingerprint.as_str()));
        assert_eq!(access.client_address(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(e.link.version(), 4);
    }

    // An outsider with a valid certificate is closed before the handshake: the allowlist comes first.
    let outsider = Channel::from_shared(format!("https://{}", app.admin_addr))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca.pem))
                .identity(Identity::from_pem(&pki.client.cert, &pki.client.key)),
        )
        .unwrap()
        .connect()
        .await;
    let outsider = match outsider {
        Ok(channel) => health(channel).await.map_err(|s| s.code()),
        Err(_) => Err(tonic::Code::Unavailable),
    };
    assert_eq!(outsider, Err(tonic::Code::Unavailable));
    assert_eq!(health_over_tls(app.admin_addr, &pki.ca.pem, Some(&pki.client)).await, Ok(SERVING));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_ca_gets_through_and_is_seen_at_its_address() {
    // One SendCode per client IP: the limit only bites if the TCP peer is seen under TLS.
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &["--send-limit-per-ip", "1/h", "--send-burst-per-ip", "1"]).await;

    let public = connect(app.public_addr, &pki.ca.pem, None).await.unwrap();
    assert_eq!(health(public.clone()).await.unwrap(), SERVING);
    let mut otp = OtpServiceClient::new(public);
    otp.send_code(send_req(PHONE, pb::Purpose::Login)).await.unwrap();
    let code = code_in(&read_sms(&app.sms_path).last().unwrap().body);
    let verified = otp.verify_code(verify_req(PHONE, pb::Purpose::Login, &code)).await.unwrap().into_inner();
    assert_eq!(verified.result(), pb::VerifyResult::Approved);
    let limited = otp.send_code(send_req("010-2222-3333", pb::Purpose::Login)).await.unwrap_err();
    assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&limited), "RATE_LIMITED");

    // The admin listener, with the client's certificate: health and a real supervisor call.
    let token = app.add_supervisor("kim", "supervisor").await;
    let admin = connect(app.admin_addr, &pki.ca.pem, Some(&pki.client)).await.unwrap();
    assert_eq!(health(admin.clone()).await.unwrap(), SERVING);
    let req = pb::GetPhoneStatusRequest {
        phone_number: PHONE.into(),
        ticket_id: "CS-2026-0009".into(),
        ..Default::default()
    };
    let status = SupervisorServiceClient::new(admin).get_phone_status(authed(req, &token)).await.unwrap();
    assert_eq!(status.into_inner().masked_phone_number, "+82 10-****-5678");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_a_tls_listener_fails() {
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &[]).await;
    for addr in [app.public_addr, app.admin_addr] {
        // The HTTP/2 preface is no TLS ClientHello: the connection or the call fails, never a plaintext answer.
        let plain = match Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            Ok(channel) => health(channel).await.map_err(|s| s.code()),
            Err(_) => Err(tonic::Code::Unavailable),
        };
        assert!(plain.is_err(), "{addr}: {plain:?}");
    }
    // The listener is unharmed.
    assert_eq!(health_over_tls(app.public_addr, &pki.ca.pem, None).await, Ok(SERVING));
    // A client that does not trust the server's CA refuses it.
    let stranger_ca = Ca::new("not the server's CA").pem;
    assert!(health_over_tls(app.public_addr, &stranger_ca, None).await.is_err());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_from_its_ca() {
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &[]).await;
    let none = health_over_tls(app.admin_addr, &pki.ca.pem, None).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let stranger = health_over_tls(app.admin_addr, &pki.ca.pem, Some(&pki.stranger)).await;
    assert!(stranger.is_err(), "a certificate from another CA: {stranger:?}");
    assert_eq!(health_over_tls(app.admin_addr, &pki.ca.pem, Some(&pki.client)).await, Ok(SERVING));
    // The public listener asks for no certificate.
    assert_eq!(health_over_tls(app.public_addr, &pki.ca.pem, None).await, Ok(SERVING));
    app.stop().await;
}

/// A client that connects and then stays silent, and one that stops half-way through its ClientHello.
async fn stalled_clients(addr: SocketAddr) -> [tokio::net::TcpStream; 2] {
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A handshake record announcing 512 bytes, of which one arrives.
    tokio::io::AsyncWriteExt::write_all(&mut half, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    [silent, half]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_do_not_block_other_clients() {
    // A handshake timeout far beyond the test: only handshakes that run side by side let the others through.
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &["--tls-handshake-timeout", "1h"]).await;
    let _stalled = [stalled_clients(app.public_addr).await, stalled_clients(app.public_addr).await];
    for _ in 0..3 {
        let answer = tokio::time::timeout(Duration::from_secs(30), health_over_tls(app.public_addr, &pki.ca.pem, None));
        assert_eq!(answer.await.expect("a stalled handshake blocked accepting"), Ok(SERVING));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_off_at_the_timeout() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &["--tls-handshake-timeout", "1s"]).await;
    // The server hangs up on both (EOF or a reset); the bound is only there so a regression fails, not hangs.
    for mut stream in stalled_clients(app.public_addr).await {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    }
    assert_eq!(health_over_tls(app.public_addr, &pki.ca.pem, None).await, Ok(SERVING));
    app.stop().await;
}

async fn otpctl(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpctl"))
        .args(args)
        .env_remove("OTPCTL_CA")
        .env_remove("OTPCTL_CERT")
        .env_remove("OTPCTL_KEY")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpctl_works_over_mutual_tls() {
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &[]).await;
    let token = app.add_supervisor("kim", "supervisor").await;
    let public = connect(app.public_addr, &pki.ca.pem, None).await.unwrap();
    OtpServiceClient::new(public).send_code(send_req(PHONE, pb::Purpose::Login)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) =
        (write("ca.crt", &pki.ca.pem), write("kim.crt", &pki.client.cert), write("kim.key", &pki.client.key));
    let (stranger_cert, stranger_key) = (write("x.crt", &pki.stranger.cert), write("x.key", &pki.stranger.key));
    let server = format!("https://{}", app.admin_addr);
    let lookup = ["--json", "lookup", "--phone", PHONE, "--ticket", "CS-2026-0010", "--caller", PHONE_E164];
    let tls_flags = ["--server", &server, "--ca", &ca, "--cert", &cert, "--key", &key];

    // Flags: the team lead looks the code up and it approves.
    let (exit, out, err) = otpctl(&[&tls_flags[..], &lookup[..]].concat(), &[("OTPCTL_TOKEN", &token)]).await;
    assert_eq!(exit, Some(0), "{err}");
    let looked_up: serde_json::Value = serde_json::from_str(&out).unwrap();
    let code = looked_up["code"].as_str().unwrap().to_owned();
    let mut otp = OtpServiceClient::new(connect(app.public_addr, &pki.ca.pem, None).await.unwrap());
    let verified = otp.verify_code(verify_req(PHONE, pb::Purpose::Login, &code)).await.unwrap().into_inner();
    assert_eq!(verified.result(), pb::VerifyResult::Approved);

    // The same through OTPCTL_* variables.
    let status = ["--server", &server, "--json", "status", "--phone", PHONE, "--ticket", "CS-2026-0010"];
    let env = [("OTPCTL_TOKEN", token.as_str()), ("OTPCTL_CA", &ca), ("OTPCTL_CERT", &cert), ("OTPCTL_KEY", &key)];
    let (exit, out, err) = otpctl(&status, &env).await;
    assert_eq!(exit, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["masked_phone_number"], "+82 10-****-5678");

    // Without a client certificate, or with one from another CA: refused, exit code 1.
    let no_cert = ["--server", &server, "--ca", &ca, "status", "--phone", PHONE, "--ticket", "CS-2026-0010"];
    let (exit, _, err) = otpctl(&no_cert, &[("OTPCTL_TOKEN", &token)]).await;
    assert_eq!(exit, Some(1), "{err}");
    let stranger =
        [&["--server", &server, "--ca", &ca, "--cert", &stranger_cert, "--key", &stranger_key][..], &status[2..]]
            .concat();
    let (exit, _, err) = otpctl(&stranger, &[("OTPCTL_TOKEN", &token)]).await;
    assert_eq!(exit, Some(1), "{err}");
    // Usage errors: TLS flags with an http:// server, a certificate without its key.
    let http = format!("http://{}", app.admin_addr);
    let (exit, _, err) = otpctl(
        &["--server", &http, "--ca", &ca, "status", "--phone", PHONE, "--ticket", "T"],
        &[("OTPCTL_TOKEN", &token)],
    )
    .await;
    assert_eq!(exit, Some(2), "{err}");
    assert!(err.contains("https://"), "{err}");
    let (exit, _, err) = otpctl(
        &["--server", &server, "--cert", &cert, "status", "--phone", PHONE, "--ticket", "T"],
        &[("OTPCTL_TOKEN", &token)],
    )
    .await;
    assert_eq!(exit, Some(2), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_a_go_client_speaks_mutual_tls_to_the_admin_listener() {
    let grpcurl = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) =
        (write("ca.crt", &pki.ca.pem), write("kim.crt", &pki.client.cert), write("kim.key", &pki.client.key));
    let admin = app.admin_addr.to_string();
    let grpcurl_with = |tls: &[&str]| {
        let mut command = tokio::process::Command::new(&grpcurl);
        command.args(tls).args([admin.as_str(), "grpc.health.v1.Health/Check"]);
        command
    };
    let out = grpcurl_with(&["-cacert", &ca, "-cert", &cert, "-key", &key]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("SERVING"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // grpc-go retries a refused handshake until its connect timeout.
    let out = grpcurl_with(&["-cacert", &ca, "-connect-timeout", "3"]).output().await.unwrap();
    assert!(!out.status.success(), "no client certificate: {}", String::from_utf8_lossy(&out.stdout));
    app.stop().await;
}

/// A real `otpd` process with TLS on both listeners, mutual TLS on the admin one.
struct TlsProcess {
    child: tokio::process::Child,
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    stderr: PathBuf,
}

impl TlsProcess {
    /// Starts otpd and waits until the admin listener answers SERVING to a client of `ca` holding `client`.
    async fn start(dir: &Path, args: &[String], ca: &str, client: &Pem) -> Self {
        Self::start_limited(dir, args, &[], ca, client, None).await
    }

    /// As [`Self::start`], with `env` and at most `descriptors` open files.
    async fn start_limited(
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
        ca: &str,
        client: &Pem,
        descriptors: Option<u32>,
    ) -> Self {
        let db = TestDb::new(Backend::Sqlite, dir).await;
        for attempt in 0..5 {
            let public_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let stderr = dir.join(format!("otpd-{attempt}.stderr"));
            let child = otpd_command(descriptors)
                .args(["--listen", &public_addr.to_string(), "--admin-listen", &admin_addr.to_string()])
                .args(process_args(&db.url, &dir.join("sms.jsonl")))
                .args(args)
                .envs(env.iter().copied())
                .env_remove("RUST_LOG")
                .env_remove("OTPD_TEST_POSTGRES_URL")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut process = Self { child, public_addr, admin_addr, stderr };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = process.child.try_wait().unwrap() {
                    let log = process.log();
                    assert!(log.contains("Address already in use"), "otpd exited {status}: {log}");
                    break;
                }
                if health_over_tls(admin_addr, ca, Some(client)).await == Ok(SERVING) {
                    return process;
                }
                assert!(tokio::time::Instant::now() < deadline, "otpd did not become healthy: {}", process.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("otpd found no free ports in 5 tries");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args([name, &pid]).status().unwrap().success());
    }

    /// Waits (bounded) until `f` holds, e.g. until a reload took effect.
    async fn until<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !f().await {
            assert!(tokio::time::Instant::now() < deadline, "{what}: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// 300 stalled TLS handshakes (connect, send nothing) from one address to the public listener of a process with
/// 256 descriptors: the admin listener keeps answering, so does the public listener for another address, and
/// every stalled connection is closed within the handshake timeout. Before the per-address handshake cap, 1,024
/// handshakes could wait at once and took every descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_starve_no_listener() {
    use crate::listeners::{DESCRIPTORS, FLOOD, closed_by, flood};
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = ServerFiles::write(dir.path(), &pki.server, &pki.ca);
    let args: Vec<String> = ["--tls-cert", files.cert.to_str().unwrap(), "--tls-key", files.key.to_str().unwrap()]
        .map(str::to_owned)
        .into();
    let handshake_timeout = Duration::from_secs(3);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_listen = metrics.to_string();
    let env = [("OTPD_TLS_HANDSHAKE_TIMEOUT", "3s"), ("OTPD_METRICS_LISTEN", metrics_listen.as_str())];
    let otpd = TlsProcess::start_limited(dir.path(), &args, &env, &pki.ca.pem, &pki.client, Some(DESCRIPTORS)).await;

    let started = tokio::time::Instant::now();
    let mut stalled = flood("127.0.0.2", otpd.public_addr, FLOOD, b"").await;
    for (listener, addr) in [("admin", otpd.admin_addr), ("public", otpd.public_addr)] {
        let health = tokio::time::timeout(Duration::from_secs(2), health_over_tls(addr, &pki.ca.pem, None)).await;
        assert_eq!(health, Ok(Ok(SERVING)), "the {listener} listener during the flood: {}", otpd.log());
    }
    let closed = closed_by(&mut stalled, started + handshake_timeout + Duration::from_secs(3)).await;
    assert_eq!(closed, FLOOD, "stalled handshakes still open after the handshake timeout");
    // With 256 descriptors an address may have 6 handshakes in progress: the rest were closed at once.
    let series = |reason: &str| format!("otpd_connections_closed_total{{listener=\"public\",reason=\"{reason}\"}}");
    assert_eq!(crate::listeners::sample(metrics, &series("handshakes_full")).await, (FLOOD - 6) as f64);
    assert_eq!(crate::listeners::sample(metrics, &series("handshake_timeout")).await, 6.0);
    assert_eq!(health_over_tls(otpd.public_addr, &pki.ca.pem, None).await, Ok(SERVING));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_and_client_ca_are_served_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    // Before: CA "old" issued the server's certificate and the team leads' client certificates.
    let old = Pki::new();
    let files = ServerFiles::write(dir.path(), &old.server, &old.ca);
    // Only the signal reloads here (the files are not watched), so this tests SIGHUP alone.
    let args = [files.args(), vec!["--tls-watch-interval".to_owned(), "0s".to_owned()]].concat();
    let otpd = TlsProcess::start(dir.path(), &args, &old.ca.pem, &old.client).await;
    let (public, admin) = (otpd.public_addr, otpd.admin_addr);
    assert_eq!(health_over_tls(public, &old.ca.pem, None).await, Ok(SERVING));
    let open_before = connect(public, &old.ca.pem, None).await.unwrap();
    assert_eq!(health(open_before.clone()).await.unwrap(), SERVING);

    // Rotate everything to CA "new": server certificate, key and the client CA, then SIGHUP.
    let new = Pki::new();
    ServerFiles::write(dir.path(), &new.server, &new.ca);
    otpd.signal("-HUP");
    otpd.until("the new certificate is served", || async {
        health_over_tls(public, &new.ca.pem, None).await == Ok(SERVING)
    })
    .await;
    // New connections see only the new certificate, on both listeners, and only new client certificates pass.
    assert!(health_over_tls(public, &old.ca.pem, None).await.is_err(), "the old certificate is still served");
    assert!(health_over_tls(admin, &old.ca.pem, Some(&old.client)).await.is_err());
    assert!(health_over_tls(admin, &new.ca.pem, Some(&old.client)).await.is_err(), "the old client CA still passes");
    assert_eq!(health_over_tls(admin, &new.ca.pem, Some(&new.client)).await, Ok(SERVING));
    // A connection opened before the rotation keeps its session: no restart, no dropped calls.
    assert_eq!(health(open_before).await.unwrap(), SERVING);

    // A broken key file: the reload fails, is logged, and the current certificate stays.
    std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n").unwrap();
    otpd.signal("-HUP");
    otpd.until("the failed reload is logged", || async { otpd.log().contains("TLS reload failed") }).await;
    assert!(otpd.log().contains(&files.key.display().to_string()), "the log names the file");
    assert!(!otpd.log().contains("not a key"), "the log quotes no key material");
    assert_eq!(health_over_tls(public, &new.ca.pem, None).await, Ok(SERVING));
    assert_eq!(health_over_tls(admin, &new.ca.pem, Some(&new.client)).await, Ok(SERVING));

    // SIGTERM still stops it cleanly.
    let mut otpd = otpd;
    otpd.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), otpd.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}: {}", otpd.log());
}

/// Files replaced with no signal at all, as a Kubernetes Secret or an ACME client renews them: new connections get
/// the new certificate within the watch interval (2s by default), `otpd healthcheck` passes before, during and
/// after, and a broken new file keeps the certificate in use and is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_served_without_a_signal_and_the_healthcheck_stays_healthy() {
    const WATCH: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let old = Pki::new();
    let files = ServerFiles::write(dir.path(), &old.server, &old.ca);
    let otpd = TlsProcess::start(dir.path(), &files.args(), &old.ca.pem, &old.client).await;
    let public = otpd.public_addr;
    let (cert, key) = (files.cert.to_str().unwrap().to_owned(), files.key.to_str().unwrap().to_owned());
    let probe_args =
        ["--listen".to_owned(), public.to_string(), "--tls-cert".to_owned(), cert, "--tls-key".to_owned(), key];
    let probe = || async {
        let args: Vec<&str> = probe_args.iter().map(String::as_str).collect();
        otpd_healthcheck(&args).await
    };
    let (exit, _, err) = probe().await;
    assert_eq!(exit, Some(0), "before: {err}");

    // Rotate (certificate, key and client CA, each renamed over the old file), and probe at once: the file is new,
    // the served certificate still the old one for up to one interval.
    let new = Pki::new();
    let rotated = tokio::time::Instant::now();
    ServerFiles::write(dir.path(), &new.server, &new.ca);
    let during_args = probe_args.clone();
    let during = tokio::spawn(async move {
        let args: Vec<&str> = during_args.iter().map(String::as_str).collect();
        otpd_healthcheck(&args).await
    });
    otpd.until("the new certificate is served", || async {
        health_over_tls(public, &new.ca.pem, None).await == Ok(SERVING)
    })
    .await;
    let took = rotated.elapsed();
    assert!(took <= WATCH + Duration::from_secs(1), "the new certificate took {took:?}");
    assert!(health_over_tls(public, &old.ca.pem, None).await.is_err(), "the old certificate is still served");
    let (exit, _, err) = during.await.unwrap();
    assert_eq!(exit, Some(0), "during: {err}");
    assert!(otpd.log().contains("TLS files changed: certificate reloaded"), "{}", otpd.log());

    // A broken key: logged, the new certificate stays, the probe stays healthy.
    std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n").unwrap();
    otpd.until("the failed reload is logged", || async { otpd.log().contains("do not load") }).await;
    assert!(!otpd.log().contains("not a key"), "the log quotes no key material");
    assert_eq!(health_over_tls(public, &new.ca.pem, None).await, Ok(SERVING));
    let (exit, _, err) = probe().await;
    assert_eq!(exit, Some(0), "after: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_start_up_naming_setting_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.crt");
    let key = dir.path().join("server.key");
    std::fs::write(&key, Ca::new("x").server().key).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(process_args(&format!("sqlite://{}", dir.path().join("otpd.db").display()), &dir.path().join("sms")))
        .args(["--tls-cert", missing.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--tls-cert {}", missing.display())), "{err}");
    // Half a pair is refused before anything is opened, naming the missing setting (exit code 2).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(["--tls-cert", missing.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

/// `otpd healthcheck` with the given settings, run where nothing else is (it reads and writes no other file).
async fn otpd_healthcheck(args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .arg("healthcheck")
        .args(["--timeout", "5s"])
        .args(args)
        .current_dir(dir.path())
        .env_remove("OTPD_LOG")
        .output()
        .await
        .unwrap();
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the probe writes nothing");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// The image's health check over TLS: it pins the certificate of the listener's own `--tls-cert` file, so it needs
/// no CA, accepts no other certificate (not even one from the same CA), and cannot probe a mutual-TLS listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpd_healthcheck_pins_the_listeners_own_certificate() {
    let pki = Pki::new();
    let app = spawn_with_tls(&pki, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let files = ServerFiles::write(dir.path(), &pki.server, &pki.ca);
    let (cert, key, client_ca) =
        (files.cert.to_str().unwrap(), files.key.to_str().unwrap(), files.client_ca.to_str().unwrap());
    let public = app.public_addr.to_string();
    let admin = app.admin_addr.to_string();
    let tls = ["--tls-cert", cert, "--tls-key", key];

    let (exit, out, err) = otpd_healthcheck(&[&["--listen", &public][..], &tls].concat()).await;
    assert_eq!(exit, Some(0), "{err}");
    assert_eq!(out.trim(), format!("{public}: SERVING"));
    let service = ["--service", "otp.v1.OtpService"];
    let (exit, _, err) = otpd_healthcheck(&[&["--listen", &public][..], &tls, &service].concat()).await;
    assert_eq!(exit, Some(0), "{err}");
    // Without the TLS settings the probe speaks plaintext, which a TLS listener never answers.
    let (exit, _, err) = otpd_healthcheck(&["--listen", &public]).await;
    assert_eq!(exit, Some(1), "{err}");

    // Another certificate in the file, though issued by the same CA for the same names: refused, and said why.
    let other = dir.path().join("other.crt");
    std::fs::write(&other, pki.ca.server().cert).unwrap();
    let other_tls = ["--tls-cert", other.to_str().unwrap(), "--tls-key", key];
    let (exit, _, err) = otpd_healthcheck(&[&["--listen", &public][..], &other_tls].concat()).await;
    assert_eq!(exit, Some(1), "{err}");
    assert!(err.contains(&format!("not the first one in --tls-cert {}", other.display())), "{err}");
    // A certificate file that cannot be read is an error naming it.
    let missing = dir.path().join("missing.crt");
    let missing_tls = ["--tls-cert", missing.to_str().unwrap(), "--tls-key", key];
    let (exit, _, err) = otpd_healthcheck(&[&["--listen", &public][..], &missing_tls].concat()).await;
    assert_eq!(exit, Some(1), "{err}");
    assert!(err.contains(&format!("--tls-cert {}", missing.display())), "{err}");

    // The admin listener with mutual TLS: the probe has no client certificate, and says to check the public one.
    let mutual = ["--admin-listen", &admin, "--admin-client-ca", client_ca, "--listener", "admin"];
    let (exit, _, err) = otpd_healthcheck(&[&tls[..], &mutual].concat()).await;
    assert_eq!(exit, Some(1), "{err}");
    assert!(err.contains("--admin-client-ca") && err.contains("--listener public"), "{err}");

    // Stopped: unreachable.
    app.stop().await;
    let (exit, _, err) = otpd_healthcheck(&[&["--listen", &public][..], &tls].concat()).await;
    assert_eq!(exit, Some(1), "{err}");
    assert!(err.contains("unreachable"), "{err}");
}

/// The admin listener with TLS of its own and no client certificates asked for is probed over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpd_healthcheck_probes_an_admin_listener_with_its_own_certificate() {
    let (public_pki, admin_pki) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key) = (write("public.crt", &public_pki.server.cert), write("public.key", &public_pki.server.key));
    let (admin_cert, admin_key) =
        (write("admin.crt", &admin_pki.server.cert), write("admin.key", &admin_pki.server.key));
    let settings =
        ["--tls-cert", &cert, "--tls-key", &key, "--admin-tls-cert", &admin_cert, "--admin-tls-key", &admin_key];
    let app = TlsApp::spawn(tempfile::tempdir().unwrap(), &settings).await;
    let admin = app.admin_addr.to_string();

    let (exit, out, err) =
        otpd_healthcheck(&[&settings[..], &["--listener", "admin", "--admin-listen", &admin]].concat()).await;
    assert_eq!(exit, Some(0), "{err}");
    assert_eq!(out.trim(), format!("{admin}: SERVING"));
    // The public pair is not what the admin listener serves.
    let (exit, _, err) =
        otpd_healthcheck(&["--tls-cert", &cert, "--tls-key", &key, "--listener", "admin", "--admin-listen", &admin])
            .await;
    assert_eq!(exit, Some(1), "{err}");
    assert!(err.contains("not the first one in --tls-cert"), "{err}");
    app.stop().await;
}
