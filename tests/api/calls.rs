//! Lookups the phone system vouches for (issue 21, docs/cti.md): a stand-in phone system signs call events to
//! `POST /calls/events`; a lookup or status read by call id rests on the call's number, never on one typed, and
//! each refusal of the table is audited with the call.

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use otpd::domain::audit::{AuditAction, AuditOutcome};
use otpd::domain::{CallDirection, ContactChannel, Evidence};
use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult};
use serde_json::json;
use sha2::Sha256;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    an_inbound_call_from_the_number_opens_the_lookup_and_the_event_names_the_call,
    every_refusal_of_the_table_is_audited_with_the_call,
    a_transfer_moves_the_call_to_the_new_agent,
    a_call_ended_longer_ago_than_the_grace_vouches_for_nothing,
    forged_stale_replayed_and_malformed_events_change_nothing,
    under_call_evidence_a_typed_lookup_is_refused,
    under_call_or_typed_evidence_a_typed_lookup_is_audited_as_typed,
    the_driver_is_told_of_the_lookup_without_a_code_and_keeps_their_sends,
    with_the_provider_down_a_lookup_by_call_still_issues_a_code,
    the_notice_goes_by_alimtalk_first_then_sms,
    a_failed_send_says_why_in_the_status_view,
    waiting_for_the_send_on_the_line_appends_nothing_to_the_audit_log,
);

pub const CALL_EVENTS_KEY: &str = "call-events-key-0123456789";
pub const OTHER_PHONE: &str = "010-9876-5432";

/// The phone system, as docs/cti.md says it signs: `sha256=hex(HMAC-SHA256(key, "{timestamp}.{body}"))`.
pub struct PhoneSystem {
    pub url: String,
}

impl PhoneSystem {
    pub fn of(app: &TestApp) -> Self {
        Self { url: format!("http://{}/calls/events", app.webhook_addr.expect("the webhook listener is on")) }
    }

    pub fn body(call_id: &str, event: &str, direction: &str, number: &str, agent: &str, at: DateTime<Utc>) -> String {
        json!({
            "call_id": call_id, "event": event, "direction": direction, "number": number, "agent": agent,
            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
        .to_string()
    }

    pub fn sign(key: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{body}").as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Posts `body` signed with `key` at `timestamp`; the status code.
    pub async fn post_signed(&self, key: &str, timestamp: i64, body: &str) -> u16 {
        reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-otpd-timestamp", timestamp.to_string())
            .header("x-otpd-signature", Self::sign(key, timestamp, body))
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// An event, signed as the phone system signs it at `now`.
    #[allow(clippy::too_many_arguments)]
    pub async fn event(
        &self,
        now: DateTime<Utc>,
        call_id: &str,
        event: &str,
        direction: &str,
        number: &str,
        agent: &str,
        at: DateTime<Utc>,
    ) -> u16 {
        let body = Self::body(call_id, event, direction, number, agent, at);
        self.post_signed(CALL_EVENTS_KEY, now.timestamp(), &body).await
    }

    pub async fn answered(&self, now: DateTime<Utc>, call_id: &str, number: &str, agent: &str) -> u16 {
        self.event(now, call_id, "answered", "inbound", number, agent, now).await
    }

    /// The call `C-DOWN` from [`PHONE`], answered by agent 7001 now.
    pub async fn answered_default(&self, app: &TestApp) -> u16 {
        PhoneSystem::of(app).answered(app.now(), "C-DOWN", PHONE, "7001").await
    }

    pub async fn ended(&self, now: DateTime<Utc>, call_id: &str, number: &str, agent: &str) -> u16 {
        self.event(now, call_id, "ended", "inbound", number, agent, now).await
    }
}

pub fn webhook_args(evidence: &str) -> Vec<&str> {
    vec!["--webhook-listen", "127.0.0.1:0", "--call-events-key", CALL_EVENTS_KEY, "--lookup-evidence", evidence]
}

/// A lookup by call only: no number typed.
pub fn call_lookup(call_id: &str) -> pb::LookupCodeRequest {
    pb::LookupCodeRequest {
        ticket_id: "CS-2026-0021".into(),
        reason: pb::LookupReason::StrongComplaint.into(),
        call_id: call_id.into(),
        ..Default::default()
    }
}

fn status_by_call(call_id: &str) -> pb::GetPhoneStatusRequest {
    pb::GetPhoneStatusRequest { ticket_id: "CS-2026-0021".into(), call_id: call_id.into(), ..Default::default() }
}

async fn app_with_kim(backend: Backend, evidence: &str) -> (TestApp, String, PhoneSystem) {
    let app = spawn_app_with(backend, &webhook_args(evidence)).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.set_agent("kim", "7001").await;
    let phone = PhoneSystem::of(&app);
    (app, kim, phone)
}

async fn last_lookup(app: &TestApp) -> otpd::domain::audit::NewAuditEvent {
    let events = app.call_events().await;
    events.into_iter().rev().find(|e| e.event.action == AuditAction::LookupCode).expect("a lookup event").event
}

async fn an_inbound_call_from_the_number_opens_the_lookup_and_the_event_names_the_call(backend: Backend) {
    let (app, kim, phone) = app_with_kim(backend, "call").await;
    let sent = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(phone.answered(app.now(), "C-100", PHONE, "7001").await, 204);

    // The team lead's calls on the line: this one.
    let calls = app.sup.clone().list_my_calls(authed(pb::ListMyCallsRequest {}, &kim)).await.unwrap().into_inner();
    assert_eq!(calls.calls.len(), 1);
    assert_eq!(
        (
            calls.calls[0].call_id.as_str(),
            calls.calls[0].direction.as_str(),
            calls.calls[0].masked_phone_number.as_str()
        ),
        ("C-100", "inbound", "+82 10-****-5678")
    );

    let status = app.sup.clone().get_phone_status(authed(status_by_call("C-100"), &kim)).await.unwrap().into_inner();
    assert_eq!(status.masked_phone_number, "+82 10-****-5678");
    assert_eq!(status.pending[0].verification_id, sent.verification_id);

    let r = app.sup.clone().lookup_code(authed(call_lookup("C-100"), &kim)).await.unwrap().into_inner();
    assert_eq!(r.verification_id, sent.verification_id);
    assert_eq!(r.masked_phone_number, "+82 10-****-5678");
    let ok = app.verify(PHONE, Purpose::Login, &r.code).await.unwrap();
    assert_eq!(ok.result(), VerifyResult::Approved);

    let e = last_lookup(&app).await;
    assert_eq!(e.id.to_string(), r.audit_event_id);
    assert_eq!(e.outcome, AuditOutcome::Granted);
    assert_eq!(
        e.evidence,
        Some(Evidence::Call {
            call_id: "C-100".into(),
            direction: CallDirection::Inbound,
            number_masked: "+82 10-****-5678".into()
        })
    );
    assert_eq!(e.contact_channel, Some(ContactChannel::InboundCall));
    assert_eq!(e.contact_matched, Some(true));
    assert_eq!(e.phone_masked.as_deref(), Some("+82 10-****-5678"));

    // The listing shows the evidence to an auditor, and the chain (with its v3 links) verifies.
    let lee = app.add_supervisor("lee", "auditor").await;
    let req = pb::ListAuditEventsRequest { action: pb::AuditAction::LookupCode.into(), ..Default::default() };
    let listed = app.sup.clone().list_audit_events(authed(req, &lee)).await.unwrap().into_inner();
    let shown = &listed.events[0];
    assert_eq!(
        (shown.evidence.as_str(), shown.call_id.as_str(), shown.call_direction.as_str()),
        ("call", "C-100", "inbound")
    );
    assert_eq!(shown.call_masked_number, "+82 10-****-5678");
    let chain = app.sup.clone().verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), &lee)).await;
    assert!(chain.unwrap().into_inner().intact);
    let who = app.sup.clone().who_am_i(authed(pb::WhoAmIRequest {}, &kim)).await.unwrap().into_inner();
    assert_eq!((who.lookup_evidence.as_str(), who.agent_id.as_str()), ("call", "7001"));
}

/// The denied event of the last lookup, and the status's reason.
async fn refused(
    app: &TestApp,
    token: &str,
    req: pb::LookupCodeRequest,
) -> (tonic::Status, otpd::domain::audit::NewAuditEvent) {
    let err = app.sup.clone().lookup_code(authed(req, token)).await.unwrap_err();
    let event = last_lookup(app).await;
    assert_eq!(event.outcome, AuditOutcome::Denied, "{event:?}");
    (err, event)
}

async fn every_refusal_of_the_table_is_audited_with_the_call(backend: Backend) {
    let (app, kim, phone) = app_with_kim(backend, "call").await;
    let lee = app.add_supervisor("lee", "supervisor").await; // no agent id
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(phone.answered(app.now(), "C-1", PHONE, "7001").await, 204);

    let (err, e) = refused(&app, &kim, call_lookup("C-404")).await;
    assert_eq!((err.code(), reason(&err).as_str()), (Code::NotFound, "CALL_NOT_FOUND"));
    assert!(e.detail.contains("C-404"), "{}", e.detail);

    let (err, e) = refused(&app, &lee, call_lookup("C-1")).await;
    assert_eq!((err.code(), reason(&err).as_str()), (Code::PermissionDenied, "CALL_NOT_YOURS"));
    assert!(matches!(&e.evidence, Some(Evidence::Call { call_id, .. }) if call_id == "C-1"));
    assert_eq!(e.actor_name, "lee");

    // A number named beside the call must be the call's.
    let mut third_party = call_lookup("C-1");
    third_party.phone_number = OTHER_PHONE.into();
    let (err, e) = refused(&app, &kim, third_party).await;
    assert_eq!((err.code(), reason(&err).as_str()), (Code::PermissionDenied, "THIRD_PARTY_NUMBER"));
    assert!(matches!(&e.evidence, Some(Evidence::Call { call_id, .. }) if call_id == "C-1"));
    assert_eq!(e.contact_matched, Some(false));

    // Typed, where a call is required.
    let (err, e) = refused(&app, &kim, lookup_req(PHONE, PHONE)).await;
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "CALL_REQUIRED"));
    assert_eq!(e.evidence, Some(Evidence::Typed));

    // Status by call follows the same table.
    let err = app.sup.clone().get_phone_status(authed(status_by_call("C-1"), &lee)).await.unwrap_err();
    assert_eq!(reason(&err), "CALL_NOT_YOURS");
    // Every one of them was refused before any code was issued.
    let codes = app.stores.supervision.phone_status(&phone_number(), app.now()).await.unwrap();
    assert!(codes.pending[0].codes.iter().all(|c| c.channel == otpd::domain::Channel::Sms));
    // A malformed call id is the caller's mistake, with details.
    let err = app.sup.clone().lookup_code(authed(call_lookup("has space"), &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::InvalidArgument, "INVALID_CALL_ID"));
}

fn phone_number() -> otpd::domain::PhoneNumber {
    otpd::domain::PhoneNumber::parse(PHONE, &otpd::domain::AllowedCountries::default()).unwrap()
}

async fn a_transfer_moves_the_call_to_the_new_agent(backend: Backend) {
    let (app, kim, phone) = app_with_kim(backend, "call").await;
    let choi = app.add_supervisor("choi", "supervisor").await;
    app.set_agent("choi", "7002").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let t0 = app.now();
    assert_eq!(phone.answered(t0, "C-2", PHONE, "7001").await, 204);
    app.advance(TimeDelta::seconds(20));
    assert_eq!(phone.answered(app.now(), "C-2", PHONE, "7002").await, 204);

    let (err, _) = refused(&app, &kim, call_lookup("C-2")).await;
    assert_eq!(reason(&err), "CALL_NOT_YOURS");
    let r = app.sup.clone().lookup_code(authed(call_lookup("C-2"), &choi)).await.unwrap().into_inner();
    assert_eq!(app.verify(PHONE, Purpose::Login, &r.code).await.unwrap().result(), VerifyResult::Approved);
    let mine = app.sup.clone().list_my_calls(authed(pb::ListMyCallsRequest {}, &kim)).await.unwrap().into_inner();
    assert!(mine.calls.is_empty(), "the call left kim's line");
}

async fn a_call_ended_longer_ago_than_the_grace_vouches_for_nothing(backend: Backend) {
    let (app, kim, phone) = app_with_kim(backend, "call").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(phone.answered(app.now(), "C-3", PHONE, "7001").await, 204);
    assert_eq!(phone.ended(app.now(), "C-3", PHONE, "7001").await, 204);
    // Within the grace (2 minutes), the call still vouches: the team lead may read the code out as it hangs up.
    app.advance(TimeDelta::minutes(1));
    app.sup.clone().lookup_code(authed(call_lookup("C-3"), &kim)).await.unwrap();
    app.advance(TimeDelta::minutes(2));
    let (err, e) = refused(&app, &kim, call_lookup("C-3")).await;
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "CALL_ENDED"));
    assert!(e.detail.contains("C-3"));
    // A late `answered` does not re-open it.
    let late = PhoneSystem::body("C-3", "answered", "inbound", PHONE, "7001", app.now());
    assert_eq!(phone.post_signed(CALL_EVENTS_KEY, app.now().timestamp(), &late).await, 204);
    let (err, _) = refused(&app, &kim, call_lookup("C-3")).await;
    assert_eq!(reason(&err), "CALL_ENDED");
}

async fn forged_stale_replayed_and_malformed_events_change_nothing(backend: Backend) {
    let (app, _kim, phone) = app_with_kim(backend, "call").await;
    let now = app.now();
    let ts = now.timestamp();
    assert_eq!(phone.answered(now, "C-9", PHONE, "7001").await, 204);
    let before = app.db.dump().await;
    assert!(before.iter().any(|row| row.contains("C-9")), "{before:?}");

    let body = PhoneSystem::body("C-9", "ended", "inbound", PHONE, "7001", now);
    // Forged: another key; a signature of another body; no signature.
    assert_eq!(phone.post_signed("another-key-0123456789abc", ts, &body).await, 401);
    let other = PhoneSystem::body("C-9", "answered", "inbound", PHONE, "7002", now);
    let forged = reqwest::Client::new()
        .post(&phone.url)
        .header("x-otpd-timestamp", ts.to_string())
        .header("x-otpd-signature", PhoneSystem::sign(CALL_EVENTS_KEY, ts, &other))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let unsigned = reqwest::Client::new().post(&phone.url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    // Stale: signed six minutes ago.
    assert_eq!(phone.post_signed(CALL_EVENTS_KEY, ts - 360, &body).await, 401);
    // Malformed, though signed: an unknown field, a number that does not parse, `at` in the future, no call id.
    for bad in [
        json!({"call_id": "C-9", "event": "ended", "direction": "inbound", "number": PHONE, "agent": "7001",
               "at": now.to_rfc3339(), "extra": 1})
        .to_string(),
        PhoneSystem::body("C-9", "ended", "inbound", "call me", "7001", now),
        PhoneSystem::body("C-9", "ended", "inbound", PHONE, "7001", now + TimeDelta::minutes(2)),
        PhoneSystem::body("", "ended", "inbound", PHONE, "7001", now),
        PhoneSystem::body("C-9", "hung-up", "inbound", PHONE, "7001", now),
        "not json".to_owned(),
    ] {
        assert_eq!(phone.post_signed(CALL_EVENTS_KEY, ts, &bad).await, 400, "{bad}");
    }
    // Too large.
    let huge = "x".repeat(100 * 1024);
    assert_eq!(phone.post_signed(CALL_EVENTS_KEY, ts, &huge).await, 413);
    // Replayed: the applied event again is taken (204) and changes nothing.
    assert_eq!(phone.answered(now, "C-9", PHONE, "7001").await, 204);
    assert_eq!(app.db.dump().await, before, "nothing changed");
}

async fn under_call_evidence_a_typed_lookup_is_refused(backend: Backend) {
    let (app, kim, _phone) = app_with_kim(backend, "call").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let (err, e) = refused(&app, &kim, lookup_req(PHONE, PHONE)).await;
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "CALL_REQUIRED"));
    assert_eq!(e.evidence, Some(Evidence::Typed));
}

async fn under_call_or_typed_evidence_a_typed_lookup_is_audited_as_typed(backend: Backend) {
    let (app, kim, _phone) = app_with_kim(backend, "call-or-typed").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let r = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap().into_inner();
    assert_eq!(app.verify(PHONE, Purpose::Login, &r.code).await.unwrap().result(), VerifyResult::Approved);
    let e = last_lookup(&app).await;
    assert_eq!((e.outcome, e.evidence), (AuditOutcome::Granted, Some(Evidence::Typed)));
    let lee = app.add_supervisor("lee", "auditor").await;
    let listed = app.sup.clone().list_audit_events(authed(pb::ListAuditEventsRequest::default(), &lee)).await;
    let listed = listed.unwrap().into_inner();
    let lookup = listed.events.iter().find(|e| e.action() == pb::AuditAction::LookupCode).unwrap();
    assert_eq!(lookup.evidence, "typed");
    let who = app.sup.clone().who_am_i(authed(pb::WhoAmIRequest {}, &kim)).await.unwrap().into_inner();
    assert_eq!(who.lookup_evidence, "call-or-typed");
}

async fn the_driver_is_told_of_the_lookup_without_a_code_and_keeps_their_sends(backend: Backend) {
    let (app, kim, phone) = app_with_kim(backend, "call").await;
    let first = app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(first.sends_remaining, 4);
    let sms_code = app.last_code();
    assert_eq!(phone.answered(app.now(), "C-5", PHONE, "7001").await, 204);
    let r = app.sup.clone().lookup_code(authed(call_lookup("C-5"), &kim)).await.unwrap().into_inner();

    // The notice reaches the provider (the file gateway here), from the sender, after the lookup answered.
    let mut waited = 0;
    while app.sms().len() < 2 {
        assert!(waited < 100, "no notice after 5 s: {:?}", app.sms());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    let sms = app.sms();
    let notice = &sms[1];
    assert_eq!((notice.to.as_str(), notice.from.as_str()), (PHONE_E164, "1800-3400"));
    assert_eq!(notice.body, "고객센터에서 인증번호를 안내했습니다. 요청하지 않으셨다면 1800-3400로 연락해 주세요.");
    assert!(!notice.body.contains(&r.code) && !notice.body.contains(&sms_code), "never a code");
    // The status view shows it with its outcome.
    // (Recorded just after the provider took it.)
    let mut status = pb::GetPhoneStatusResponse::default();
    for _ in 0..100 {
        status = app.sup.clone().get_phone_status(authed(status_by_call("C-5"), &kim)).await.unwrap().into_inner();
        if !status.notices.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status.notices.len(), 1);
    assert_eq!((status.notices[0].outcome.as_str(), status.notices[0].gateway.as_str()), ("accepted", "file"));
    assert_eq!(status.sms_last_hour, 1, "the notice is no code send");
    // The driver's caps did not pay for it: the resend still has 3 left after it, as without the notice.
    app.advance(TimeDelta::seconds(31));
    assert_eq!(app.send(PHONE, Purpose::Login).await.unwrap().sends_remaining, 3);
}

/// Issue 21, section 5: the provider is down and the breaker open. SendCode fails as before, but the driver's
/// attempt is recorded, the status shows the refused send, and a lookup by call issues a code that approves.
async fn with_the_provider_down_a_lookup_by_call_still_issues_a_code(backend: Backend) {
    let provider = crate::provider::FakeProvider::start(vec![], crate::provider::Reply::Status(503)).await;
    let gateway = provider.gateway();
    let mut args = webhook_args("call");
    args.extend([
        "--sms-gateway",
        gateway.as_str(),
        "--sms-http-max-attempts",
        "1",
        "--sms-breaker-threshold",
        "1",
        "--sms-breaker-cooldown",
        "10m",
    ]);
    let app = spawn_app_with(backend, &args).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.set_agent("kim", "7001").await;
    // The provider fails once: the breaker opens.
    let err = app.send("010-5555-0000", Purpose::Login).await.unwrap_err();
    assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    let before = provider.requests();
    // The driver presses send: refused by the breaker, the provider never called, the ko-KR message points to the
    // call centre.
    let err = app.send(PHONE, Purpose::Login).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "SMS_DELIVERY_FAILED"));
    let ko = {
        use tonic_types::StatusExt;
        err.get_error_details().localized_message().map(|m| m.message.clone()).unwrap_or_default()
    };
    assert!(ko.contains("고객센터"), "{ko}");
    assert_eq!(provider.requests(), before, "an open breaker calls no provider");

    let phone = PhoneSystem::of(&app);
    assert_eq!(phone.answered_default(&app).await, 204);
    let status = app.sup.clone().get_phone_status(authed(status_by_call("C-DOWN"), &kim)).await.unwrap().into_inner();
    let send = &status.pending[0].sends[0];
    assert_eq!(send.delivery(), pb::DeliveryStatus::Failed);
    assert!(!send.live, "no SMS code is live");
    assert_eq!(send.attempts[0].outcome, "refused", "{send:?}");

    // Why, in the issue's words (section 5): the breaker was open, so the provider is down.
    assert_eq!(send.attempts[0].failure, "circuit_open");
    assert_eq!(send.attempts[0].send_failure_ko, "발송 실패: 문자 발송 업체 장애");
    assert!(send.attempts[0].send_failure_en.contains("outage (breaker open)"), "{send:?}");

    let r = app.sup.clone().lookup_code(authed(call_lookup("C-DOWN"), &kim)).await.unwrap().into_inner();
    assert_eq!(app.verify(PHONE, Purpose::Login, &r.code).await.unwrap().result(), VerifyResult::Approved);
}

/// Issue 21, section 5: every failed send says why, and its log line names the provider's host:port (never the
/// code): a provider answering 503 is an outage, one refusing the message (400) is a refusal.
async fn a_failed_send_says_why_in_the_status_view(backend: Backend) {
    use crate::provider::{FakeProvider, Reply};
    let provider = FakeProvider::start(vec![Reply::Status(503), Reply::Status(400)], Reply::Status(503)).await;
    let gateway = provider.gateway();
    let args = ["--sms-gateway", gateway.as_str(), "--sms-http-max-attempts", "1", "--sms-breaker-threshold", "5"];
    let app = spawn_app_with(backend, &args).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    assert_eq!(reason(&app.send(PHONE, Purpose::Login).await.unwrap_err()), "SMS_DELIVERY_FAILED");
    app.advance(TimeDelta::seconds(31));
    assert_eq!(reason(&app.send(PHONE, Purpose::Login).await.unwrap_err()), "SMS_DELIVERY_FAILED");

    let mut req = pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ..status_by_call("") };
    req.call_id.clear();
    let status = app.sup.clone().get_phone_status(authed(req, &kim)).await.unwrap().into_inner();
    let failures: Vec<(&str, &str, &str)> = status.pending[0]
        .sends
        .iter()
        .flat_map(|s| &s.attempts)
        .map(|a| (a.outcome.as_str(), a.failure.as_str(), a.send_failure_ko.as_str()))
        .collect();
    assert_eq!(
        failures,
        [
            ("failed", "provider_down", "발송 실패: 문자 발송 업체 장애"),
            ("refused", "provider_refused", "발송 실패: 발송 업체가 거절")
        ],
    );
    assert_eq!(status.sms_hour_cap, 5, "the caps ride along, for \"2/5\"");
}

/// Issue 21, section 5: a failed send's log line names the reason and the provider's host:port, never the code
/// or the whole number (a real process, logging JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sends_log_line_names_the_reason_and_the_provider() {
    use crate::provider::{FakeProvider, Reply};
    let provider = FakeProvider::start(vec![Reply::Status(503), Reply::Status(400)], Reply::Status(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("otpd.db").display());
    let gateway = provider.gateway();
    let args = [
        ["--database-url", &db_url, "--sms-gateway", &gateway, "--log-format", "json"].as_slice(),
        &["--sms-http-max-attempts", "1", "--resend-cooldown", "0s"],
    ]
    .concat();
    let otpd = OtpdProcess::start(dir.path(), "otpd", &args, &[]).await;
    let mut client = otpd.otp().await;
    for _ in 0..2 {
        let err = client.send_code(send_req(PHONE, Purpose::Login)).await.unwrap_err();
        assert_eq!(reason(&err), "SMS_DELIVERY_FAILED");
    }
    let codes: Vec<String> = provider.received().iter().map(|r| code_in(&r.body.to_string())).collect();
    assert_eq!(codes.len(), 2);
    let (_, stderr) = otpd.terminate().await;
    let host_port = gateway.trim_start_matches("http:http://").split('/').next().unwrap().to_owned();
    let failures: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.contains("delivery channel did not take the code"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str)> =
        failures.iter().map(|f| (f["provider"].as_str().unwrap_or(""), f["reason"].as_str().unwrap_or(""))).collect();
    assert_eq!(seen, [(host_port.as_str(), "provider_down"), (host_port.as_str(), "provider_refused")], "{stderr}");
    for code in &codes {
        assert!(!stderr.contains(code.as_str()), "a code in the log");
    }
    assert!(!stderr.contains(PHONE_E164), "numbers are logged masked");
}

/// Issue 21, section 3: with AlimTalk among the channels the notice goes AlimTalk first (its own template, no
/// parameters, so never a code), and falls back to SMS when AlimTalk refuses it, as codes do.
async fn the_notice_goes_by_alimtalk_first_then_sms(backend: Backend) {
    use crate::standins::{APP_KEY, Fault, NOTICE_TEMPLATE_CODE, StandIn};
    let nhn = StandIn::nhn().await;
    let mut args = crate::korea::alimtalk_then_sms(&nhn);
    args.extend(webhook_args("call").into_iter().map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(backend, &args).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.set_agent("kim", "7001").await;
    let phone = PhoneSystem::of(&app);
    app.send(PHONE, Purpose::Login).await.unwrap();
    assert_eq!(phone.answered(app.now(), "C-AT", PHONE, "7001").await, 204);
    let notices = |seen: Vec<crate::standins::Seen>| seen.into_iter().skip(1).collect::<Vec<_>>();
    let wait_for = |n: usize| {
        let nhn = &nhn;
        async move {
            for _ in 0..100 {
                if notices(nhn.seen()).len() >= n {
                    return notices(nhn.seen());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("no notice after 5 s: {:?}", nhn.seen());
        }
    };
    let notice_text = "고객센터에서 인증번호를 안내했습니다. 요청하지 않으셨다면 1800-3400로 연락해 주세요.";

    // AlimTalk takes it: one request, to the template-message API, with the notice template and no code.
    let r = app.sup.clone().lookup_code(authed(call_lookup("C-AT"), &kim)).await.unwrap().into_inner();
    let seen = wait_for(1).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, format!("/alimtalk/v2.3/appkeys/{APP_KEY}/messages"));
    assert_eq!(seen[0].body["templateCode"], NOTICE_TEMPLATE_CODE);
    let recipient = &seen[0].body["recipientList"][0];
    assert_eq!(recipient["resendParameter"]["resendContent"], notice_text);
    assert!(!seen[0].body.to_string().contains(&r.code), "never a code");

    // AlimTalk refuses the next one (no KakaoTalk): SMS carries it.
    nhn.fail_next(&[Fault::Refuse]);
    app.sup.clone().lookup_code(authed(call_lookup("C-AT"), &kim)).await.unwrap();
    let seen = wait_for(3).await;
    assert_eq!(seen[1].path, format!("/alimtalk/v2.3/appkeys/{APP_KEY}/messages"));
    assert!(seen[2].path.starts_with("/sms/"), "{seen:?}");
    assert_eq!(seen[2].body["body"], notice_text);

    let mut status = pb::GetPhoneStatusResponse::default();
    for _ in 0..100 {
        status = app.sup.clone().get_phone_status(authed(status_by_call("C-AT"), &kim)).await.unwrap().into_inner();
        if status.notices.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let gateways: Vec<(&str, &str)> = status.notices.iter().map(|n| (n.outcome.as_str(), n.gateway.as_str())).collect();
    assert_eq!(gateways, [("accepted", "nhn-alimtalk"), ("accepted", "nhn-sms")]);
}

/// Issue 21, section 6: while the driver has not pressed send, the team lead's console waits on ListMyCalls
/// (which says whether a send is recorded) instead of asking for a lookup that would be refused: however often
/// it polls, nothing is appended to the audit log, and the send shows the moment it is recorded.
async fn waiting_for_the_send_on_the_line_appends_nothing_to_the_audit_log(backend: Backend) {
    let (app, kim, phone) = app_with_kim(backend, "call").await;
    assert_eq!(phone.answered(app.now(), "C-WAIT", PHONE, "7001").await, 204);
    let before = app.call_events().await.len();
    let poll = || async {
        let r = app.sup.clone().list_my_calls(authed(pb::ListMyCallsRequest {}, &kim)).await.unwrap().into_inner();
        assert_eq!(r.calls.len(), 1);
        r.calls[0].send_recorded_at
    };
    for _ in 0..10 {
        assert_eq!(poll().await, None, "no send yet");
    }
    app.send(PHONE, Purpose::Login).await.unwrap();
    let sent = poll().await.expect("the send shows at the next poll");
    assert_eq!(sent.seconds, app.now().timestamp());
    assert_eq!(app.call_events().await.len(), before, "polling appends nothing");
    // Past the lookup window the send no longer counts: the console waits again.
    app.advance(TimeDelta::minutes(11));
    assert_eq!(poll().await, None);
    // Another team lead's send does not show: a send for another number is not this call's.
    let r = app.sup.clone().lookup_code(authed(call_lookup("C-WAIT"), &kim)).await.unwrap_err();
    assert_eq!(reason(&r), "NO_PENDING_VERIFICATION");
}

/// Two replicas on one PostgreSQL: the phone system's event reaches one, the team lead's lookup the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_posted_to_one_replica_serves_a_lookup_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path()).await;
    let sms = dir.path().join("sms.jsonl");
    let mut args = process_args(&db.url, &sms);
    args.extend(["--lookup-evidence", "call", "--call-events-key", CALL_EVENTS_KEY].map(str::to_owned));
    let webhook_a = format!("127.0.0.1:{}", free_port());
    let args_a: Vec<&str> = args.iter().map(String::as_str).chain(["--webhook-listen", webhook_a.as_str()]).collect();
    let a = OtpdProcess::start(dir.path(), "a", &args_a, &[]).await;
    let args_b: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = OtpdProcess::start(dir.path(), "b", &args_b, &[]).await;

    let stores = otpd::store::connect(&db.url).await.unwrap();
    let (token, now) = (add_supervisor_with_agent(&stores, "kim", "7001").await, Utc::now());
    a.otp().await.send_code(send_req(PHONE, Purpose::Login)).await.unwrap();
    let phone = PhoneSystem { url: format!("http://{webhook_a}/calls/events") };
    assert_eq!(phone.answered(now, "C-R", PHONE, "7001").await, 204);

    let mut sup =
        otpd::pb::otp::v1::supervisor_service_client::SupervisorServiceClient::new(channel(b.admin_addr).await);
    let r = sup.lookup_code(authed(call_lookup("C-R"), &token)).await.unwrap().into_inner();
    let ok = b.otp().await.verify_code(verify_req(PHONE, Purpose::Login, &r.code)).await.unwrap().into_inner();
    assert_eq!(ok.result(), VerifyResult::Approved);
    a.terminate().await;
    b.terminate().await;
}

/// A team lead added with an agent id, as `otpd supervisors add --agent-id` does; returns the token.
pub async fn add_supervisor_with_agent(stores: &otpd::store::Stores, name: &str, agent: &str) -> String {
    use otpd::domain::audit::NewAuditEvent;
    let token = otpd::supervision::token::generate();
    let now = Utc::now();
    let event = NewAuditEvent::by_operator(AuditAction::SupervisorAdded, now, format!("added {name}"));
    let hash = otpd::supervision::token::hash_secret(&token);
    let name = name.parse().unwrap();
    let key = test_audit_key();
    let added =
        stores.supervision.add_supervisor(&name, "supervisor".parse().unwrap(), Default::default(), &hash, event, &key);
    assert!(added.await.unwrap().is_some());
    let event = NewAuditEvent::by_operator(AuditAction::SupervisorAgentSet, now, "agent");
    let agent = agent.parse().unwrap();
    let set = stores.supervision.set_agent(&name, Some(&agent), event, &test_audit_key()).await.unwrap();
    assert!(matches!(set, otpd::store::AgentChange::Set(_)));
    secrecy::ExposeSecret::expose_secret(&token).to_owned()
}
