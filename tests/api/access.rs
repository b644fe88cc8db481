//! Where a supervisor call came from (issue 17, section 3), on loopback against the real service: the admin
//! listener's address allowlist (개인정보의 안전성 확보조치 기준 제6조①), and the access context every audit
//! event of a call records and the chain seals (제8조): the client address, through --trusted-proxies as the
//! front-line limits read it, and the user agent of console (gRPC-Web) calls. The client certificate under mutual
//! TLS is in tests/api/tls.rs, which has the PKI.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use otpd::domain::audit::{AuditAction, AuditOutcome};
use otpd::pb::otp::v1::{self as pb, Purpose};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_console_lookups_events_carry_the_address_and_the_user_agent,
    a_trusted_proxys_forwarded_address_is_recorded_and_an_untrusted_peers_header_ignored,
    the_admin_listener_closes_connections_from_addresses_off_its_allowlist,
);

/// What a real Chromium sends (the console's users are on Chrome or Edge).
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/140.0.0.0 Safari/537.36";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A gRPC-Web frame holding `message`.
fn grpc_web_frame(message: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    body
}

/// A native gRPC channel to `addr` whose connections leave from `from`.
async fn channel_from(addr: SocketAddr, from: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}")).unwrap().local_address(Some(ip(from))).connect().await
}

/// The console's LookupCode, as the browser sends it over HTTP/1.1: gRPC-Web, the bearer token, the browser's
/// user agent. Returns the code.
async fn console_lookup(app: &TestApp, token: &str, ticket: &str, user_agent: &str) -> String {
    let http = reqwest::Client::builder().http1_only().user_agent(user_agent).build().unwrap();
    let mut req = lookup_req(PHONE, PHONE);
    req.ticket_id = ticket.into();
    let response = http
        .post(format!("http://{}/otp.v1.SupervisorService/LookupCode", app.admin_addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {token}"))
        .body(grpc_web_frame(&req.encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body[0], 0, "a data frame first: {body:?}");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    pb::LookupCodeResponse::decode(&body[5..5 + len]).unwrap().code
}

async fn a_console_lookups_events_carry_the_address_and_the_user_agent(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let lee = app.add_supervisor("lee", "auditor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();

    // A console lookup, then a console refusal (a third party's number), then the same lookup from otpctl-like
    // native gRPC.
    let code = console_lookup(&app, &kim, "CS-WEB-1", CHROME).await;
    assert_eq!(code.len(), 6);
    let http = reqwest::Client::builder().http1_only().user_agent(CHROME).build().unwrap();
    let third_party = lookup_req(PHONE, "010-9999-8888");
    let refused = http
        .post(format!("http://{}/otp.v1.SupervisorService/LookupCode", app.admin_addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {kim}"))
        .body(grpc_web_frame(&third_party.encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["grpc-status"], "7", "PERMISSION_DENIED");
    let mut native = lookup_req(PHONE, PHONE);
    native.ticket_id = "CS-NATIVE-1".into();
    app.sup.clone().lookup_code(authed(native, &kim)).await.unwrap();

    let events = app.call_events().await;
    let lookups: Vec<_> = events.iter().filter(|e| e.event.action == AuditAction::LookupCode).collect();
    assert_eq!(lookups.len(), 3);
    for (e, outcome, browser) in [
        (lookups[0], AuditOutcome::Granted, true),
        (lookups[1], AuditOutcome::Denied, true),
        (lookups[2], AuditOutcome::Granted, false),
    ] {
        assert_eq!(e.event.outcome, outcome);
        let access = e.event.access.as_ref().expect("a supervisor call records where it came from");
        assert_eq!(access.client_address(), Some(ip("127.0.0.1")), "{access:?}");
        assert_eq!(access.certificate(), None, "plaintext: no client certificate");
        // The browser's user agent on console calls only; otpctl's gRPC client is not a browser.
        assert_eq!(access.user_agent(), browser.then_some(CHROME), "{:?}", e.event.ticket_id);
        assert_eq!(e.link.version(), 4, "sealed with the context");
    }

    // ListAuditEvents returns it (the console's audit view and otpctl read these fields).
    let req = pb::ListAuditEventsRequest { actor: "kim".into(), ..Default::default() };
    let listed = app.sup.clone().list_audit_events(authed(req, &lee)).await.unwrap().into_inner().events;
    let by_ticket = |t: &str| listed.iter().find(|e| e.ticket_id == t).unwrap_or_else(|| panic!("{t}: {listed:?}"));
    let web = by_ticket("CS-WEB-1");
    assert_eq!((web.client_address.as_str(), web.user_agent.as_str()), ("127.0.0.1", CHROME));
    assert_eq!((web.client_certificate_subject.as_str(), web.client_certificate_sha256.as_str()), ("", ""));
    let native = by_ticket("CS-NATIVE-1");
    assert_eq!((native.client_address.as_str(), native.user_agent.as_str()), ("127.0.0.1", ""));
    // The auditor's own read is recorded with where it came from too.
    let reads = app.call_events().await;
    let read = reads.iter().rfind(|e| e.event.action == AuditAction::ListAuditEvents).unwrap();
    assert_eq!(read.event.access.as_ref().and_then(|a| a.client_address()), Some(ip("127.0.0.1")));

    // The operator's addition has no context (no call), and the whole chain, v2 and v4 links, verifies.
    assert!(
        app.audit().await.iter().filter(|e| e.event.actor_name.starts_with("cli:")).all(|e| e.event.access.is_none())
    );
    let verified = app.sup.clone().verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), &lee)).await;
    assert!(verified.unwrap().into_inner().intact);
    app.stop().await;
}

async fn a_trusted_proxys_forwarded_address_is_recorded_and_an_untrusted_peers_header_ignored(backend: Backend) {
    // The proxy is 127.0.0.1; 127.0.0.2 is a client on the network that writes the header itself.
    let app = spawn_app_with(backend, &["--trusted-proxies", "127.0.0.1/32"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let status = |ticket: &str, forwarded: &str| {
        let req =
            pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: ticket.into(), ..Default::default() };
        let mut req = authed(req, &kim);
        req.metadata_mut().insert("x-forwarded-for", forwarded.parse().unwrap());
        req
    };
    let via_proxy = channel_from(app.admin_addr, "127.0.0.1").await.unwrap();
    let mut sup = pb::supervisor_service_client::SupervisorServiceClient::new(via_proxy);
    // What the client prepended is not believed: the right-most address the proxy did not add is.
    sup.get_phone_status(status("CS-PROXY", "198.51.100.66, 203.0.113.9")).await.unwrap();
    let direct = channel_from(app.admin_addr, "127.0.0.2").await.unwrap();
    let mut sup = pb::supervisor_service_client::SupervisorServiceClient::new(direct);
    sup.get_phone_status(status("CS-DIRECT", "203.0.113.9")).await.unwrap();

    let events = app.call_events().await;
    let address = |ticket: &str| {
        let e = events.iter().find(|e| e.event.ticket_id.as_deref() == Some(ticket)).unwrap();
        e.event.access.as_ref().and_then(|a| a.client_address())
    };
    assert_eq!(address("CS-PROXY"), Some(ip("203.0.113.9")), "through the trusted proxy: the forwarded client");
    assert_eq!(address("CS-DIRECT"), Some(ip("127.0.0.2")), "an untrusted peer's header is ignored");
    app.stop().await;
}

/// Connects from `from` to `to`, sends an HTTP/1.1 request and returns what came back before the server closed
/// the connection (empty: closed before reading or answering anything).
async fn raw_exchange(from: &str, to: SocketAddr) -> std::io::Result<Vec<u8>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip(from), 0))?;
    let mut stream = socket.connect(to).await?;
    let request = format!("GET /console/ HTTP/1.1\r\nhost: {to}\r\nconnection: close\r\n\r\n");
    // The server may already have closed it: a failed write is as good as an empty answer.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => Ok(answer),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(answer),
        Ok(Err(e)) => Err(e),
        Err(_) => panic!("the connection from {from} was neither answered nor closed"),
    }
}

async fn the_admin_listener_closes_connections_from_addresses_off_its_allowlist(backend: Backend) {
    let app = spawn_app_with(backend, &["--admin-allow", "127.0.0.1/32", "--metrics-listen", "127.0.0.1:0"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;

    // An outsider (127.0.0.2) gets nothing: not the console over HTTP/1.1, not a gRPC call.
    assert_eq!(raw_exchange("127.0.0.2", app.admin_addr).await.unwrap(), b"", "closed before HTTP");
    let req =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-OUT".into(), ..Default::default() };
    let outsider = match channel_from(app.admin_addr, "127.0.0.2").await {
        Ok(channel) => {
            let mut sup = pb::supervisor_service_client::SupervisorServiceClient::new(channel);
            sup.get_phone_status(authed(req.clone(), &kim)).await.map(drop).map_err(|s| s.code())
        }
        Err(_) => Err(tonic::Code::Unavailable),
    };
    // The connection is closed under the client (tonic reports UNAVAILABLE or UNKNOWN, as its transport saw it).
    assert!(
        matches!(outsider, Err(tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)),
        "{outsider:?}"
    );

    // 127.0.0.1 is served, over HTTP/1.1 and gRPC.
    let page = raw_exchange("127.0.0.1", app.admin_addr).await.unwrap();
    assert!(page.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&page));
    let inside = channel_from(app.admin_addr, "127.0.0.1").await.unwrap();
    let mut sup = pb::supervisor_service_client::SupervisorServiceClient::new(inside);
    let mut inside_req = req;
    inside_req.ticket_id = "CS-IN".into();
    sup.get_phone_status(authed(inside_req, &kim)).await.unwrap();
    // The outsider's call never reached the service: only the insider's is audited.
    let tickets: Vec<_> = app.call_events().await.into_iter().filter_map(|e| e.event.ticket_id).collect();
    assert_eq!(tickets, ["CS-IN"]);

    // The public listener is not restricted.
    let public = channel_from(app.public_addr, "127.0.0.2").await.unwrap();
    pb::otp_service_client::OtpServiceClient::new(public).send_code(send_req(PHONE, Purpose::Login)).await.unwrap();

    // Every refused connection is counted (the raw one, and each the gRPC client tried).
    let metrics_addr = app.metrics_addr.unwrap();
    let text = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(r#"otpd_connections_closed_total{listener="admin",reason="address_not_allowed"}"#))
        .unwrap_or_else(|| panic!("no address_not_allowed count:\n{text}"));
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2, "{line}");
    assert!(
        !text.lines().any(|l| l.contains(r#"listener="public",reason="address_not_allowed""#)),
        "only the admin listener has an allowlist"
    );
    app.stop().await;
}

/// A malformed CIDR stops start-up with an error that names the setting and the entry.
#[tokio::test]
async fn a_bad_admin_allow_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("otpd.db").display());
    let mut args = process_args(&db, &dir.path().join("sms.jsonl"));
    args.extend(["--admin-allow", "127.0.0.1/32,10.0.0.0/33"].map(str::to_owned));
    let out = otpd_command(None).args(&args).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("invalid setting --admin-allow: `10.0.0.0/33` is not a CIDR"), "{stderr}");
}
