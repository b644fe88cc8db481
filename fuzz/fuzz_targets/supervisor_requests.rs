//! The supervisor service's request decoding: arbitrary bytes as the body of a LookupCode, GetPhoneStatus,
//! UnlockPhone, ListAuditEvents or VerifyAuditChain message, then the handler's own parsing. An accepted request holds exactly what
//! it said, in valid values; a refused one is `INVALID_ARGUMENT` naming its own bad fields, and what could be read
//! of it for the audit event (the number, the ticket) is there exactly when that field was valid.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::domain::{AllowedCountries, CallId, PhoneNumber, Reason, TicketId};
use otpd::grpc::convert::{action_from_pb, optional_purpose};
use otpd::grpc::edge::{Refusal, SupervisorRequests};
use otpd::pb::otp::v1 as pb;
use otpd::supervision::{Stated, StatusTarget};
use otpd_fuzz::{Parsed, check_phone, check_refusal, countries, names};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let requests = SupervisorRequests { countries: countries(selector >> 2) };
    match selector % 5 {
        0 => lookup(&requests, body),
        1 => phone_status(&requests, body),
        2 => unlock(&requests, body),
        3 => list_audit(&requests, body),
        _ => verify_chain(&requests, body),
    }
});

/// Decodes `body` as `M`; a message that decodes re-encodes to one that decodes to it again.
fn decode<M: Message + Default + PartialEq>(body: &[u8]) -> Option<M> {
    let message = M::decode(body).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice());
    assert!(again.as_ref() == Ok(&message), "a decoded message survives re-encoding");
    Some(message)
}

/// The number and ticket a refusal carries for the audit event are exactly the valid ones.
fn check_audit_facts(refusal: &Refusal, phone: Option<PhoneNumber>, ticket: Option<TicketId>) {
    assert_eq!(refusal.phone, phone, "the refusal carries the number iff it was valid");
    assert_eq!(refusal.ticket, ticket, "the refusal carries the ticket iff it was valid");
}

fn strict(input: &str, countries: &AllowedCountries) -> Option<PhoneNumber> {
    PhoneNumber::parse(input, countries).ok()
}

fn lookup(requests: &SupervisorRequests, body: &[u8]) {
    let Some(req) = decode::<pb::LookupCodeRequest>(body) else { return };
    let countries = &requests.countries;
    let phone = strict(&req.phone_number, countries);
    let ticket = TicketId::parse(&req.ticket_id).ok();
    let purpose_ok = optional_purpose(req.purpose).is_ok();
    let reason_ok = req.reason == i32::from(pb::LookupReason::StrongComplaint);
    let contact_ok = [pb::ContactChannel::InboundCall, pb::ContactChannel::OutboundCallback]
        .iter()
        .any(|c| req.contact == i32::from(*c));
    let contact_number_ok =
        !req.contact_number.trim().is_empty() && PhoneNumber::parse_lenient(&req.contact_number, countries).is_ok();
    let call_ok = req.call_id.is_empty() || CallId::parse(&req.call_id).is_ok();
    // With a call, the number is optional (the call's); named, it must still be valid.
    let phone_named = req.call_id.is_empty() || !req.phone_number.trim().is_empty();
    match requests.parse_lookup(req.clone()) {
        Ok(cmd) => {
            assert!(purpose_ok && reason_ok && call_ok, "{req:?}");
            assert_eq!(Some(&cmd.ticket), ticket.as_ref());
            assert_eq!(Ok(cmd.purpose), optional_purpose(req.purpose));
            assert_eq!(cmd.ticket.as_str(), req.ticket_id.trim());
            match &cmd.stated {
                Stated::Typed { phone: number, contact_number, .. } => {
                    assert!(req.call_id.is_empty() && contact_ok && contact_number_ok, "{req:?}");
                    assert_eq!(Some(number), phone.as_ref());
                    check_phone(number, countries, Parsed::Strict);
                    check_phone(contact_number, countries, Parsed::Lenient);
                }
                Stated::Call { call_id, phone: number } => {
                    assert_eq!(call_id.as_str(), req.call_id);
                    assert_eq!(number.as_ref(), if phone_named { phone.as_ref() } else { None });
                }
            }
        }
        Err(refusal) => {
            let fields = ["phone_number", "purpose", "ticket_id", "reason", "contact", "contact_number", "call_id"];
            check_refusal(&refusal.violations, &fields);
            let v = &refusal.violations;
            assert_eq!(names(v, "phone_number"), phone_named && phone.is_none(), "{v:?}");
            assert_eq!(names(v, "ticket_id"), ticket.is_none(), "{v:?}");
            assert_eq!(names(v, "purpose"), !purpose_ok, "{v:?}");
            assert_eq!(names(v, "reason"), !reason_ok, "{v:?}");
            assert_eq!(names(v, "call_id"), !call_ok, "{v:?}");
            if req.call_id.is_empty() {
                assert_eq!(names(v, "contact"), !contact_ok, "{v:?}");
                assert_eq!(names(v, "contact_number"), !contact_number_ok, "{v:?}");
            }
            check_audit_facts(&refusal, if phone_named { phone } else { None }, ticket);
        }
    }
}

fn phone_status(requests: &SupervisorRequests, body: &[u8]) {
    let Some(req) = decode::<pb::GetPhoneStatusRequest>(body) else { return };
    let phone = strict(&req.phone_number, &requests.countries);
    let ticket = TicketId::parse(&req.ticket_id).ok();
    let phone_named = req.call_id.is_empty() || !req.phone_number.trim().is_empty();
    let call_ok = req.call_id.is_empty() || CallId::parse(&req.call_id).is_ok();
    match requests.parse_phone_status(req.clone()) {
        Ok((target, id)) => {
            assert!(call_ok);
            assert_eq!(Some(&id), ticket.as_ref());
            match target {
                StatusTarget::Number(number) => {
                    assert!(req.call_id.is_empty());
                    assert_eq!(Some(&number), phone.as_ref());
                    check_phone(&number, &requests.countries, Parsed::Strict);
                }
                StatusTarget::Call { call_id, phone: number } => {
                    assert_eq!(call_id.as_str(), req.call_id);
                    assert_eq!(number.as_ref(), if phone_named { phone.as_ref() } else { None });
                }
            }
        }
        Err(refusal) => {
            check_refusal(&refusal.violations, &["phone_number", "ticket_id", "call_id"]);
            assert_eq!(names(&refusal.violations, "phone_number"), phone_named && phone.is_none());
            assert_eq!(names(&refusal.violations, "ticket_id"), ticket.is_none());
            assert_eq!(names(&refusal.violations, "call_id"), !call_ok);
            check_audit_facts(&refusal, if phone_named { phone } else { None }, ticket);
        }
    }
}

fn unlock(requests: &SupervisorRequests, body: &[u8]) {
    let Some(req) = decode::<pb::UnlockPhoneRequest>(body) else { return };
    let phone = strict(&req.phone_number, &requests.countries);
    let ticket = TicketId::parse(&req.ticket_id).ok();
    let reason = Reason::parse(&req.reason).ok();
    match requests.parse_unlock(req.clone()) {
        Ok((number, id, why)) => {
            assert_eq!((Some(&number), Some(&id), Some(&why)), (phone.as_ref(), ticket.as_ref(), reason.as_ref()));
            assert_eq!(why.as_str(), req.reason.trim());
            assert!(why.as_str().chars().count() <= 500 && !why.as_str().chars().any(char::is_control));
            check_phone(&number, &requests.countries, Parsed::Strict);
        }
        Err(refusal) => {
            check_refusal(&refusal.violations, &["phone_number", "ticket_id", "reason"]);
            assert_eq!(names(&refusal.violations, "phone_number"), phone.is_none());
            assert_eq!(names(&refusal.violations, "ticket_id"), ticket.is_none());
            assert_eq!(names(&refusal.violations, "reason"), reason.is_none());
            check_audit_facts(&refusal, phone, ticket);
        }
    }
}

fn list_audit(requests: &SupervisorRequests, body: &[u8]) {
    let Some(req) = decode::<pb::ListAuditEventsRequest>(body) else { return };
    let countries = &requests.countries;
    let phone_ok =
        req.phone_number.trim().is_empty() || PhoneNumber::parse_lenient(&req.phone_number, countries).is_ok();
    match requests.parse_list_audit(req.clone()) {
        Ok(query) => {
            assert!(phone_ok, "{req:?}");
            match &query.phone {
                None => assert!(req.phone_number.trim().is_empty()),
                Some(number) => check_phone(number, countries, Parsed::Lenient),
            }
            for (time, given) in [(query.since, &req.since), (query.until, &req.until)] {
                match (time, given) {
                    (None, None) => {}
                    (Some(t), Some(g)) => {
                        assert_eq!(
                            (t.timestamp(), i64::from(t.timestamp_subsec_nanos())),
                            (g.seconds, i64::from(g.nanos))
                        );
                        assert!((0..=253_402_300_799).contains(&g.seconds), "a filter time is within 1970..=9999");
                    }
                    other => panic!("a filter time is there iff it was given: {other:?}"),
                }
            }
            assert_eq!(Ok(query.action), action_from_pb(req.action));
            let page = if req.page_size == 0 { 50 } else { i64::from(req.page_size) };
            assert_eq!(i64::from(query.page), page);
            assert!((1..=500).contains(&query.page));
            assert_eq!(query.before_seq.is_some(), !req.page_token.is_empty());
            match &query.actor {
                None => assert!(req.actor.trim().is_empty()),
                Some(actor) => {
                    assert_eq!(actor, req.actor.trim());
                    assert!(actor.chars().count() <= 128 && !actor.chars().any(char::is_control));
                }
            }
        }
        Err(refusal) => {
            let fields = ["phone_number", "since", "until", "action", "actor", "page_token", "page_size"];
            check_refusal(&refusal.violations, &fields);
            assert_eq!(names(&refusal.violations, "phone_number"), !phone_ok);
            assert!(refusal.ticket.is_none(), "ListAuditEvents has no ticket");
            let lenient = if req.phone_number.trim().is_empty() {
                None
            } else {
                PhoneNumber::parse_lenient(&req.phone_number, countries).ok()
            };
            assert_eq!(refusal.phone, lenient);
        }
    }
}

fn verify_chain(requests: &SupervisorRequests, body: &[u8]) {
    let Some(req) = decode::<pb::VerifyAuditChainRequest>(body) else { return };
    let heads_ok = req.expect_heads.len() <= 16
        && req.expect_heads.iter().all(|h| h.parse::<otpd::domain::audit::HeadPin>().is_ok());
    match requests.parse_verify_chain(req.clone()) {
        Ok(heads) => {
            assert_eq!(req.accept_unkeyed_through, 0, "the caller never sets the threshold: {req:?}");
            assert!(heads_ok, "{req:?}");
            // Each kept head is the one the caller wrote, in order.
            let written: Vec<otpd::domain::audit::HeadPin> =
                req.expect_heads.iter().filter_map(|h| h.parse().ok()).collect();
            assert_eq!(heads, written);
        }
        Err(refusal) => {
            check_refusal(&refusal.violations, &["accept_unkeyed_through", "expect_heads"]);
            assert!(req.accept_unkeyed_through != 0 || !heads_ok, "{req:?}");
            check_audit_facts(&refusal, None, None);
        }
    }
}
