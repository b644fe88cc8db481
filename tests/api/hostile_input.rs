//! Hostile bytes in every field of every RPC, on both backends: NUL and other control characters, long strings
//! (under and over the request limit), out-of-range enums, timestamps and page sizes, and messages that are not
//! valid protobuf. Each is the caller's mistake: none may answer INTERNAL or UNKNOWN, panic, or change anything.

use otpd::pb::otp::v1 as pb;
use tonic::Code;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};

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
    let status = pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into() };
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
        try_fields!(seen, "LookupCode", lookup, [phone_number, ticket_id, contact_number], s.clone(), |req| sup
            .clone()
            .lookup_code(authed(req, &admin))
            .await);
        try_fields!(seen, "GetPhoneStatus", status, [phone_number, ticket_id], s.clone(), |req| sup
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
    assert!(seen.len() > 150, "{} cases", seen.len());
    assert!(seen.contains(&Code::InvalidArgument) && seen.contains(&Code::OutOfRange), "{seen:?}");

    // Nothing changed but the audit log (each supervisor call is audited) and no code was issued: the SMS code
    // still approves, after the one wrong guess each hostile VerifyCode case could not make.
    assert_eq!(app.db.dump().await, before);
    assert!(app.audit().await.len() > events_before);
    assert_eq!(app.verify(PHONE, pb::Purpose::Login, &code).await.unwrap().result(), pb::VerifyResult::Approved);
}

/// Sends raw bytes as a request message.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

async fn a_message_that_is_not_protobuf_is_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.add_supervisor("park", "admin").await;
    let messages: [&[u8]; 4] = [
        &[0x0a, 0x03, 0xff, 0xfe, 0xfd], // field 1, a string that is not UTF-8
        &[0x0a, 0x10, 0x30],             // field 1 longer than the message
        &[0x0b],                         // a group start: a wire type proto3 has no use for
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // a varint tag of 11 bytes
    ];
    for (addr, method) in [
        (app.public_addr, "/otp.v1.OtpService/SendCode"),
        (app.public_addr, "/otp.v1.OtpService/VerifyCode"),
        (app.admin_addr, "/otp.v1.SupervisorService/LookupCode"),
        (app.admin_addr, "/otp.v1.SupervisorService/ListAuditEvents"),
    ] {
        for message in messages {
            let mut grpc = tonic::client::Grpc::new(channel(addr).await);
            grpc.ready().await.unwrap();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
            let err = grpc.unary(authed(message.to_vec(), &admin), path, RawCodec).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{method} {message:x?}: {err:?}");
        }
    }
    assert!(app.db.dump().await.is_empty(), "nothing was stored");
}
