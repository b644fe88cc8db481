//! Hostile bytes in every field of every RPC, on both backends: NUL and other control characters, long strings
//! (under and over the request limit), out-of-range enums, timestamps and page sizes, and messages that are not
//! valid protobuf. Each is the caller's mistake: none may answer INTERNAL or UNKNOWN, panic, or change anything.

use otpd::pb::otp::v1 as pb;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

both_backends!(no_field_of_any_rpc_answers_internal, a_message_that_is_not_protobuf_is_invalid_argument);

/// Sets `$field` of a copy of `$base` to `$value`, makes the call, and checks the answer.
macro_rules! try_fields {
    ($seen:ident, $rpc:literal, $base:expr, [$($field:ident),+], $value:expr, |$req:ident| $call:expr) => {
        $({
            let mut $req = $base.clone();
            $req.$field = $value;
            let case = format!("{}.{} = {:?}", $rpc, stringify!($field), $req.$field);
            let answer = $call.map(|_| ());
            $seen.push(check(&case, answer));
        })+
    };
}

fn check(case: &str, answer: Result<(), tonic::Status>) -> Code {
    let code = answer.as_ref().err().map_or(Code::Ok, tonic::Status::code);
    let message = answer.as_ref().err().map(|s| s.message().to_lowercase()).unwrap_or_default();
    assert!(!matches!(code, Code::Internal | Code::Unknown), "{case}: {answer:?}");
    assert!(!message.contains("panic"), "{case}: {answer:?}");
    code
}

fn hostile_strings() -> Vec<String> {
    let mut strings: Vec<String> =
        ["a\0b", "\0", "\u{1b}[2J", "line\r\nbreak", "\u{7f}", "\u{202e}4321", "%s%n%x", "' OR 1=1 --", "\u{feff}"]
            .map(str::to_owned)
            .into();
    strings.push("9".repeat(3_000)); // under the 4 KiB request limit
    strings.push("가".repeat(1_000)); // 3,000 bytes of Hangul
    strings.push("x".repeat(10_000)); // over it: the transport's OUT_OF_RANGE
    strings
}

fn timestamp(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

async fn no_field_of_any_rpc_answers_internal(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.add_supervisor("park", "admin").await;
    let code = app.send_and_read(PHONE, pb::Purpose::Login).await;
    let before = app.db.dump().await;
    let events_before = app.audit().await.len();

    let send = send_req(PHONE, pb::Purpose::Login);
    let verify = verify_req(PHONE, pb::Purpose::Login, "000000");
    let lookup = lookup_req(PHONE, PHONE);
    let status =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), ..Default::default() };
    let unlock =
        pb::UnlockPhoneRequest { phone_number: "010-7777-0000".into(), ticket_id: "CS-1".into(), reason: "r".into() };
    let list = pb::ListAuditEventsRequest::default();
    let (otp, sup) = (app.otp.clone(), app.sup.clone());
    let mut seen = Vec::new();

    for s in hostile_strings() {
        try_fields!(seen, "SendCode", send, [phone_number, sim_phone_number, app_hash], s.clone(), |req| otp
            .clone()
            .send_code(req)
            .await);
        try_fields!(seen, "VerifyCode", verify, [phone_number, code], s.clone(), |req| otp
            .clone()
            .verify_code(req)
            .await);
        try_fields!(seen, "LookupCode", lookup, [phone_number, ticket_id, contact_number, call_id], s.clone(), |req| {
            sup.clone().lookup_code(authed(req, &admin)).await
        });
        try_fields!(seen, "GetPhoneStatus", status, [phone_number, ticket_id, call_id], s.clone(), |req| sup
            .clone()
            .get_phone_status(authed(req, &admin))
            .await);
        try_fields!(seen, "UnlockPhone", unlock, [phone_number, ticket_id, reason], s.clone(), |req| sup
            .clone()
            .unlock_phone(authed(req, &admin))
            .await);
        try_fields!(seen, "ListAuditEvents", list, [actor, phone_number, page_token], s.clone(), |req| sup
            .clone()
            .list_audit_events(authed(req, &admin))
            .await);
    }
    for n in [-1, 99, i32::MIN, i32::MAX] {
        try_fields!(seen, "SendCode", send, [purpose], n, |req| otp.clone().send_code(req).await);
        try_fields!(seen, "VerifyCode", verify, [purpose], n, |req| otp.clone().verify_code(req).await);
        try_fields!(seen, "LookupCode", lookup, [purpose, reason, contact], n, |req| sup
            .clone()
            .lookup_code(authed(req, &admin))
            .await);
        try_fields!(seen, "ListAuditEvents", list, [action, page_size], n, |req| sup
            .clone()
            .list_audit_events(authed(req, &admin))
            .await);
    }
    for t in [
        timestamp(-5_000_000_000_000, 0),
        timestamp(i64::MIN, 0),
        timestamp(i64::MAX, 0),
        timestamp(-1, 0),
        timestamp(253_402_300_800, 0), // 10000-01-01
        timestamp(0, -1),
        timestamp(0, 2_000_000_000),
    ] {
        try_fields!(seen, "ListAuditEvents", list, [since, until], t, |req| sup
            .clone()
            .list_audit_events(authed(req, &admin))
            .await);
    }
    let chain = pb::VerifyAuditChainRequest::default();
    for n in [-1, i64::MIN, i64::MAX] {
        try_fields!(seen, "VerifyAuditChain", chain, [accept_unkeyed_through], n, |req| sup
            .clone()
            .verify_audit_chain(authed(req, &admin))
            .await);
    }
    assert!(seen.len() > 150, "{} cases", seen.len());
    assert!(seen.contains(&Code::InvalidArgument) && seen.contains(&Code::OutOfRange), "{seen:?}");

    // Nothing changed but the audit log (each supervisor call is audited) and no code was issued: the SMS code
    // still approves, after the one wrong guess each hostile VerifyCode case could not make.
    assert_eq!(app.db.dump().await, before);
    assert!(app.audit().await.len() > events_before);
    assert_eq!(app.verify(PHONE, pb::Purpose::Login, &code).await.unwrap().result(), pb::VerifyResult::Approved);
}

/// A gRPC frame: no compression, the length, the message.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend(u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend(message);
    framed
}

/// Posts `body` as the raw HTTP/2 body of a gRPC call to `path` and returns the status it answers.
async fn raw_call(addr: std::net::SocketAddr, path: &str, body: Vec<u8>, token: &str) -> tonic::Status {
    use tonic::codegen::Service;
    let mut channel = channel(addr).await;
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body))))
        .unwrap();
    let response = channel.call(request).await.unwrap();
    tonic::Status::from_header_map(response.headers()).expect("an error answers with its status in the headers")
}

async fn a_message_that_is_not_protobuf_is_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.add_supervisor("park", "admin").await;
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("a string that is not UTF-8", frame(&[0x0a, 0x03, 0xff, 0xfe, 0xfd])),
        ("a field longer than the message", frame(&[0x0a, 0x10, 0x30])),
        ("a group start, which proto3 has no use for", frame(&[0x0b])),
        ("a tag of 11 bytes", frame(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
        ("no message at all", vec![]),
        ("a frame shorter than its length prefix", vec![0, 0, 0, 0, 10, 0x0a]),
        ("the compressed flag without grpc-encoding", vec![1, 0, 0, 0, 1, 0x00]),
        ("a compression flag that does not exist", vec![2, 0, 0, 0, 0]),
    ];
    for (addr, path) in [
        (app.public_addr, "/otp.v1.OtpService/SendCode"),
        (app.public_addr, "/otp.v1.OtpService/VerifyCode"),
        (app.public_addr, "/grpc.health.v1.Health/Check"),
        (app.admin_addr, "/otp.v1.SupervisorService/LookupCode"),
        (app.admin_addr, "/otp.v1.SupervisorService/ListAuditEvents"),
    ] {
        for (what, body) in &bodies {
            let status = raw_call(addr, path, body.clone(), &admin).await;
            assert_eq!(status.code(), Code::InvalidArgument, "{path}, {what}: {status:?}");
        }
    }
    assert!(app.db.dump().await.is_empty(), "nothing was stored");
}
