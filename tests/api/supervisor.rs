//! The team lead's code lookup, phone status, unlock and the audit log, on both backends.

use chrono::TimeDelta;
use otpd::domain::ContactChannel;
use otpd::domain::audit::{AuditAction, AuditOutcome};
use otpd::pb::otp::v1::{self as pb, Purpose, VerifyResult};
use tonic::Code;
use tonic_types::StatusExt;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    lookup_for_the_callers_own_number_issues_a_code_that_approves,
    the_sms_code_keeps_working_after_a_lookup,
    a_new_lookup_revokes_the_earlier_supervisor_code,
    a_third_partys_number_is_refused_and_audited,
    no_recent_send_is_refused_and_audited,
    locked_number_status_and_unlock,
    bad_requests_and_authentication,
    lookup_quota_per_supervisor,
    if_the_audit_write_fails_no_code_leaves,
    a_disabled_supervisors_call_is_audited,
    audit_log_lists_pages_and_filters,
);

async fn lookup_for_the_callers_own_number_issues_a_code_that_approves(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let sent = app.send(PHONE, Purpose::Login).await.unwrap();
    let now = app.now();

    // The phone system reports the caller as 010-1234-5678; the number being verified is written in E.164.
    let r = app.sup.clone().lookup_code(authed(lookup_req(PHONE_E164, PHONE), &kim)).await.unwrap().into_inner();
    assert_eq!(r.code.len(), 6);
    assert!(r.code.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(r.verification_id, sent.verification_id);
    assert_eq!(r.purpose(), Purpose::Login);
    assert_eq!(r.masked_phone_number, "+82 10-****-5678");
    assert_eq!(r.expires_at.unwrap().seconds, (now + TimeDelta::minutes(3)).timestamp());

    let ok = app.verify(PHONE, Purpose::Login, &r.code).await.unwrap();
    assert_eq!(ok.result(), VerifyResult::Approved);

    let events = app.call_events().await;
    let lookups: Vec<_> = events.iter().filter(|e| e.event.action == AuditAction::LookupCode).collect();
    assert_eq!(lookups.len(), 1);
    let e = &lookups[0].event;
    assert_eq!(e.id.to_string(), r.audit_event_id);
    assert_eq!((e.actor_name.as_str(), e.actor_role.as_str()), ("kim", "supervisor"));
    assert_eq!(e.outcome, AuditOutcome::Granted);
    assert_eq!(e.ticket_id.as_deref(), Some("CS-2026-0001"));
    assert_eq!(e.reason.as_deref(), Some("strong_complaint"));
    assert_eq!(e.contact_channel, Some(ContactChannel::InboundCall));
    assert_eq!(e.contact_matched, Some(true));
    assert_eq!(e.phone_masked.as_deref(), Some("+82 10-****-5678"));
    assert!(!format!("{events:?}").contains(&r.code), "the code is not in the audit log");
    assert!(!format!("{events:?}").contains(PHONE_E164), "nor the number in clear");
}

async fn the_sms_code_keeps_working_after_a_lookup(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let sms_code = app.send_and_read(PHONE, Purpose::Signup).await;
    let mut req = lookup_req(PHONE, PHONE_INTL);
    req.purpose = Purpose::Signup.into();
    req.contact = pb::ContactChannel::OutboundCallback.into();
    let looked_up = app.sup.clone().lookup_code(authed(req, &kim)).await.unwrap().into_inner();
    assert_eq!(looked_up.purpose(), Purpose::Signup);
    assert_eq!(app.verify(PHONE, Purpose::Signup, &sms_code).await.unwrap().result(), VerifyResult::Approved);
}

async fn a_new_lookup_revokes_the_earlier_supervisor_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let sms_code = app.send_and_read(PHONE, Purpose::Login).await;
    let first = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap().into_inner().code;
    let second = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap().into_inner().code;
    if first != second && first != sms_code {
        let r = app.verify(PHONE, Purpose::Login, &first).await.unwrap();
        assert_eq!(r.result(), VerifyResult::WrongCode, "the first looked-up code was revoked by the second");
    }
    // Revoked in the store, as the status view shows, not only passed over when a code is checked.
    let req = pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), ..Default::default() };
    let status = app.sup.clone().get_phone_status(authed(req, &kim)).await.unwrap().into_inner();
    let looked_up: Vec<bool> =
        status.pending[0].sends.iter().filter(|s| s.channel() == pb::CodeChannel::Supervisor).map(|s| s.live).collect();
    assert_eq!(looked_up, [false, true]);
    assert_eq!(app.verify(PHONE, Purpose::Login, &second).await.unwrap().result(), VerifyResult::Approved);
}

async fn a_third_partys_number_is_refused_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, "010-9999-8888"), &kim)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "THIRD_PARTY_NUMBER");
    assert!(err.get_error_details().localized_message().unwrap().message.contains("제3자"));

    let events = app.call_events().await;
    assert_eq!(events.len(), 1);
    let e = &events[0].event;
    assert_eq!((e.action, e.outcome, e.contact_matched), (AuditAction::LookupCode, AuditOutcome::Denied, Some(false)));
    assert!(e.detail.contains("+82 10-****-8888"), "{}", e.detail);

    // No code was issued: the verification still has only its SMS.
    let admin = app.add_supervisor("park", "admin").await;
    let status = app
        .sup
        .clone()
        .get_phone_status(authed(
            pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), ..Default::default() },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.pending.len(), 1);
    assert_eq!(status.pending[0].sends.len(), 1);
    assert_eq!(status.pending[0].sends[0].channel(), pb::CodeChannel::Sms);
}

async fn no_recent_send_is_refused_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "NO_PENDING_VERIFICATION"));
    assert!(err.message().contains("press send"), "{}", err.message());

    app.send(PHONE, Purpose::Login).await.unwrap();
    app.advance(TimeDelta::minutes(11));
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!(reason(&err), "NO_PENDING_VERIFICATION", "the last SMS is older than the 10-minute window");

    // A purpose with nothing pending is refused too, though another purpose has a recent send.
    app.send(PHONE, Purpose::Login).await.unwrap();
    let mut req = lookup_req(PHONE, PHONE);
    req.purpose = Purpose::ChangePhone.into();
    let err = app.sup.clone().lookup_code(authed(req, &kim)).await.unwrap_err();
    assert_eq!(reason(&err), "NO_PENDING_VERIFICATION");

    let denied: Vec<_> =
        app.call_events().await.into_iter().filter(|e| e.event.outcome == AuditOutcome::Denied).collect();
    assert_eq!(denied.len(), 3);
}

async fn locked_number_status_and_unlock(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let admin = app.add_supervisor("park", "admin").await;
    let code = app.send_and_read(PHONE, Purpose::Login).await;
    for _ in 0..10 {
        app.verify(PHONE, Purpose::Login, &wrong_code(&code)).await.unwrap();
    }

    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "PHONE_LOCKED"));
    assert!(err.get_error_details().error_info().unwrap().metadata.contains_key("locked_until"));

    let status_req =
        || pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-7".into(), ..Default::default() };
    let status = app.sup.clone().get_phone_status(authed(status_req(), &kim)).await.unwrap().into_inner();
    assert_eq!((status.failed_attempts, status.attempts_remaining), (10, 0));
    assert_eq!(status.locked_until.unwrap().seconds, (app.now() + TimeDelta::hours(24)).timestamp());
    assert_eq!(status.sms_last_hour, 1);
    let send = &status.pending[0].sends[0];
    assert_eq!(
        (send.channel(), send.delivery(), send.live),
        (pb::CodeChannel::Sms, pb::DeliveryStatus::Delivered, true)
    );

    let unlock = |token: &str| {
        let req = pb::UnlockPhoneRequest {
            phone_number: PHONE.into(),
            ticket_id: "CS-7".into(),
            reason: "driver identity confirmed by callback".into(),
        };
        let mut client = app.sup.clone();
        let request = authed(req, token);
        async move { client.unlock_phone(request).await }
    };
    let err = unlock(&kim).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let unlocked = unlock(&admin).await.unwrap().into_inner();
    assert!(unlocked.was_locked);
    assert_eq!(unlocked.failed_attempts_cleared, 10);
    assert_eq!(app.verify(PHONE, Purpose::Login, &code).await.unwrap().result(), VerifyResult::Approved);

    let events = app.call_events().await;
    let kinds: Vec<_> = events.iter().map(|e| (e.event.action, e.event.outcome, e.event.actor_name.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (AuditAction::PhoneLocked, AuditOutcome::Granted, "system"),
            (AuditAction::LookupCode, AuditOutcome::Denied, "kim"),
            (AuditAction::GetPhoneStatus, AuditOutcome::Granted, "kim"),
            (AuditAction::UnlockPhone, AuditOutcome::Denied, "kim"),
            (AuditAction::UnlockPhone, AuditOutcome::Granted, "park"),
        ]
    );
    assert_eq!(events[4].event.reason.as_deref(), Some("driver identity confirmed by callback"));
    assert!(events[4].event.detail.contains("failures cleared: 10"), "{}", events[4].event.detail);
}

async fn bad_requests_and_authentication(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let auditor = app.add_supervisor("lee", "auditor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    let mut sup = app.sup.clone();

    type Breakage = fn(&mut pb::LookupCodeRequest);
    let cases: [(Breakage, &str); 5] = [
        (|r| r.ticket_id.clear(), "ticket_id"),
        (|r| r.reason = pb::LookupReason::Unspecified.into(), "reason"),
        (|r| r.contact = pb::ContactChannel::Unspecified.into(), "contact"),
        (|r| r.contact_number.clear(), "contact_number"),
        (|r| r.phone_number = "02-312-3456".into(), "phone_number"),
    ];
    for (break_it, field) in cases {
        let mut req = lookup_req(PHONE, PHONE);
        break_it(&mut req);
        let err = sup.lookup_code(authed(req, &kim)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        let fields: Vec<_> =
            err.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, [field]);
    }

    let err = sup.lookup_code(lookup_req(PHONE, PHONE)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "no token");
    let err = sup.lookup_code(authed(lookup_req(PHONE, PHONE), "otps_not-a-real-token")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "unknown token");
    let mut basic = tonic::Request::new(lookup_req(PHONE, PHONE));
    basic.metadata_mut().insert("authorization", format!("Basic {kim}").parse().unwrap());
    assert_eq!(sup.lookup_code(basic).await.unwrap_err().code(), Code::Unauthenticated, "not a bearer token");

    let err = sup.lookup_code(authed(lookup_req(PHONE, PHONE), &auditor)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "an auditor looks nothing up");
    let list = pb::ListAuditEventsRequest::default();
    assert_eq!(sup.list_audit_events(authed(list, &kim)).await.unwrap_err().code(), Code::PermissionDenied);

    sup.lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
    app.disable_supervisor("kim").await;
    let err = sup.lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "a disabled supervisor's token stops working at once");

    // Health and reflection on the admin listener need no token.
    assert_eq!(app.health(app.admin_addr, "").await, 1);

    // Every call by a known supervisor was audited: 5 invalid, 2 wrong role, 1 granted, 1 after being disabled;
    // and the unknown token as a failed sign-in from its address (docs/sign-in.md).
    let events = app.call_events().await;
    let denied = events.iter().filter(|e| e.event.outcome == AuditOutcome::Denied).count();
    assert_eq!((events.len(), denied), (10, 9));
    // And so were the operator's changes: two supervisors added, one disabled.
    let operator: Vec<_> = app.audit().await.into_iter().filter(|e| e.event.actor_role == "operator").collect();
    let actions: Vec<_> = operator.iter().map(|e| e.event.action).collect();
    assert_eq!(actions, [AuditAction::SupervisorAdded, AuditAction::SupervisorAdded, AuditAction::SupervisorDisabled]);
}

async fn lookup_quota_per_supervisor(backend: Backend) {
    let app = spawn_app_with(backend, &["--supervisor-lookups-per-hour", "2"]).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let choi = app.add_supervisor("choi", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    for _ in 0..2 {
        app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
        app.advance(TimeDelta::minutes(1));
    }
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::ResourceExhausted, "LOOKUP_QUOTA"));
    assert_eq!(retry_delay(&err), std::time::Duration::from_secs(58 * 60), "the first lookup leaves the hour");
    app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &choi)).await.unwrap();
    let last = app.call_events().await.into_iter().rev().nth(1).unwrap();
    assert_eq!((last.event.outcome, last.event.actor_name.as_str()), (AuditOutcome::Denied, "kim"));
}

async fn if_the_audit_write_fails_no_code_leaves(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
            sqlx::query(
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit down'); END",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
            sqlx::query("CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_down()",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "AUDIT_UNAVAILABLE"));
    assert!(!err.message().contains("audit down"), "no internal detail reaches the client");
    assert!(app.call_events().await.is_empty());
    let rows = app.db.dump().await;
    assert!(!rows.iter().any(|r| r.contains("supervisor")), "no supervisor code was recorded: {rows:?}");

    // Nothing a supervisor does goes unrecorded: a call whose event cannot be written, granted or denied,
    // answers UNAVAILABLE rather than its usual answer.
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, "010-9999-8888"), &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "AUDIT_UNAVAILABLE"), "a denial");
    let status =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-1".into(), ..Default::default() };
    let err = app.sup.clone().get_phone_status(authed(status, &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unavailable, "AUDIT_UNAVAILABLE"), "a granted read");
    let err = app.sup.clone().list_audit_events(authed(pb::ListAuditEventsRequest::default(), &kim)).await;
    assert_eq!(reason(&err.unwrap_err()), "AUDIT_UNAVAILABLE", "a wrong role");
    assert!(app.call_events().await.is_empty());
}

/// A disabled supervisor's token is refused, and the refusal is audited under their name.
async fn a_disabled_supervisors_call_is_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    app.disable_supervisor("kim").await;

    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unauthenticated, "SUPERVISOR_DISABLED"));
    let events = app.call_events().await;
    assert_eq!(events.len(), 1);
    let e = &events[0].event;
    assert_eq!((e.actor_name.as_str(), e.action, e.outcome), ("kim", AuditAction::LookupCode, AuditOutcome::Denied));
    assert!(e.detail.contains("SUPERVISOR_DISABLED"), "{}", e.detail);
    // Which driver the revoked token went after, as the other denials record it.
    assert_eq!(e.phone_masked.as_deref(), Some("+82 10-****-5678"));
    assert_eq!(e.ticket_id.as_deref(), Some("CS-2026-0001"));
    // A disabled person's refusals are audited at most once a minute (docs/sign-in.md).
    app.advance(chrono::TimeDelta::seconds(61));
    let status =
        pb::GetPhoneStatusRequest { phone_number: PHONE.into(), ticket_id: "CS-9".into(), ..Default::default() };
    let err = app.sup.clone().get_phone_status(authed(status, &kim)).await.unwrap_err();
    assert_eq!(reason(&err), "SUPERVISOR_DISABLED");
    let events = app.call_events().await;
    let e = &events.last().unwrap().event;
    assert_eq!((e.action, e.ticket_id.as_deref()), (AuditAction::GetPhoneStatus, Some("CS-9")));
    assert!(e.phone_key.is_some(), "searchable by number");
    // WhoAmI names no number: refused as before.
    let err = app.sup.clone().who_am_i(authed(pb::WhoAmIRequest {}, &kim)).await.unwrap_err();
    assert_eq!(reason(&err), "SUPERVISOR_DISABLED");
    let before = app.call_events().await.len();

    // An unknown token has no name to audit under: the failure is recorded under the address it came from (the
    // address's failures, too, at most once a minute).
    app.advance(chrono::TimeDelta::seconds(61));
    let err = app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), "otps_nobody")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let events = app.call_events().await;
    assert_eq!(events.len(), before + 1);
    let e = &events.last().unwrap().event;
    assert_eq!((e.actor_name.as_str(), e.action, e.outcome), ("anonymous", AuditAction::SignIn, AuditOutcome::Denied));
    assert!(e.detail.contains("127.0.0.1") && e.detail.contains("unknown token"), "{}", e.detail);
}

async fn audit_log_lists_pages_and_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let kim = app.add_supervisor("kim", "supervisor").await;
    let auditor = app.add_supervisor("lee", "auditor").await;
    app.send(PHONE, Purpose::Login).await.unwrap();
    app.send("010-2222-3333", Purpose::Login).await.unwrap();
    for _ in 0..3 {
        app.sup.clone().lookup_code(authed(lookup_req(PHONE, PHONE), &kim)).await.unwrap();
    }
    app.sup.clone().lookup_code(authed(lookup_req("010-2222-3333", "010-2222-3333"), &kim)).await.unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListAuditEventsRequest {
            phone_number: "+82 10-1234-5678".into(),
            action: pb::AuditAction::LookupCode.into(),
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = app.sup.clone().list_audit_events(authed(req, &auditor)).await.unwrap().into_inner();
        seen.extend(page.events.iter().map(|e| e.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 3, "only this number's lookups: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first: {seen:?}");

    let req = pb::ListAuditEventsRequest { actor: "kim".into(), ..Default::default() };
    let all = app.sup.clone().list_audit_events(authed(req, &auditor)).await.unwrap().into_inner();
    assert_eq!(all.events.len(), 4);
    let e = &all.events[0];
    assert_eq!((e.hash.len(), e.prev_hash.len()), (64, 64));
    assert_eq!(e.contact_matched, Some(true));

    let bad = pb::ListAuditEventsRequest { page_token: "garbage!".into(), ..Default::default() };
    let err = app.sup.clone().list_audit_events(authed(bad, &auditor)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
