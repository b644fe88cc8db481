//! `otp.v1.SupervisorService`: parses requests (an authenticated caller's malformed request is audited as
//! denied), runs the supervision flows, converts the outcomes.

use base64::Engine;
use tonic::{Request, Response, Status};

use super::convert::{action_from_pb, action_to_pb, optional_purpose, purpose_to_pb};
use super::violations::Violations;
use super::{detached, timestamp};
use crate::domain::audit::{AccessContext, AuditAction, AuditEvent, AuditOutcome};
use crate::domain::{
    Actor, AllowedCountries, CallId, Channel, ContactChannel, Evidence, PhoneNumber, Reason, TicketId,
};
use crate::pb::otp::v1 as pb;
use crate::service::{FieldViolation, ServiceError};
use crate::store::{AuditFilter, CodeStatus, PhoneStatus, VerificationStatus};
use crate::supervision::{LookupCommand, Stated, StatusTarget, SupervisionService};

/// Default and largest page of ListAuditEvents.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// Kept heads one VerifyAuditChain may name (a few recent ones are all an auditor needs).
const MAX_KEPT_HEADS: usize = 16;

/// The supervisor API.
#[derive(Clone)]
pub struct SupervisorApi {
    service: SupervisionService,
    requests: SupervisorRequests,
    sign_in: crate::signin::SignInService,
    /// The delivery side, for Diagnose; None: Diagnose answers UNIMPLEMENTED.
    delivery: Option<crate::service::VerificationService>,
    /// The SMS sender number, for the checklist's "unblock 1800-3400".
    sender: String,
}

/// What the supervisor API accepts: its requests' parsing, collecting every bad field. Public (not an API) so
/// that the fuzz targets in `fuzz/` run the handlers' own parsing.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct SupervisorRequests {
    /// The countries whose mobile numbers may receive codes.
    pub countries: AllowedCountries,
}

/// A request refused by its parsing: what could be read of it (for the audit event) and every bad field.
#[doc(hidden)]
#[derive(Debug)]
pub struct Refusal {
    /// The number, if it was valid.
    pub phone: Option<PhoneNumber>,
    /// The ticket, if it was valid.
    pub ticket: Option<TicketId>,
    /// Every bad field.
    pub violations: Vec<FieldViolation>,
}

/// A parsed ListAuditEvents request.
#[doc(hidden)]
#[derive(Debug)]
pub struct AuditQuery {
    /// Only events about this number.
    pub phone: Option<PhoneNumber>,
    /// Only events at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events before this time.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Continue below this sequence number (the page token).
    pub before_seq: Option<i64>,
    /// The page size.
    pub page: u32,
}

impl SupervisorApi {
    /// Serves `service` for numbers of `countries`.
    pub fn new(
        service: SupervisionService,
        countries: AllowedCountries,
        sign_in: crate::signin::SignInService,
    ) -> Self {
        Self {
            service,
            requests: SupervisorRequests { countries },
            sign_in,
            delivery: None,
            sender: "1800-3400".to_owned(),
        }
    }

    /// Diagnoses `delivery` (Diagnose), whose SMS come from `sender` (the status checklist names it).
    pub fn with_delivery(mut self, delivery: crate::service::VerificationService, sender: &str) -> Self {
        self.delivery = Some(delivery);
        self.sender = sender.to_owned();
        self
    }

    /// Refuses a disabled supervisor's call, auditing the number and ticket it named.
    async fn refuse_disabled(
        &self,
        disabled: crate::domain::DisabledActor,
        action: AuditAction,
        phone: Option<PhoneNumber>,
        ticket: Option<TicketId>,
    ) -> Status {
        let service = self.service.clone();
        let refused = detached(async move {
            Err::<(), _>(service.refuse_disabled(&disabled, action, phone.as_ref(), ticket.as_ref()).await)
        })
        .await;
        refused.err().unwrap_or(ServiceError::SupervisorDisabled).into()
    }

    /// Audits a malformed request from `actor` as denied and returns its error.
    async fn refuse(&self, actor: &Actor, action: AuditAction, refusal: Refusal) -> Status {
        let Refusal { phone, ticket, violations } = refusal;
        let fields: Vec<&str> = violations.iter().map(|v| v.field).collect();
        let detail = format!("invalid request: {}", fields.join(", "));
        let event = self.service.invalid_request_event(actor, action, phone.as_ref(), ticket.as_ref(), detail);
        let error = self.service.deny(event, ServiceError::InvalidArgument(violations)).await;
        self.service.count_refusal(Some(action), &error);
        error.into()
    }
}

// A refusal is built at most once per request, on its cold path, and handed straight to the audit: its size costs
// nothing worth a box.
#[allow(clippy::result_large_err)]
impl SupervisorRequests {
    /// A LookupCode request as a command.
    pub fn parse_lookup(&self, req: pb::LookupCodeRequest) -> Result<LookupCommand, Refusal> {
        let mut v = Violations::default();
        let phone = if req.call_id.is_empty() || !req.phone_number.trim().is_empty() {
            v.phone("phone_number", &req.phone_number, &self.countries)
        } else {
            None
        };
        let purpose = v.check("purpose", "INVALID_PURPOSE", optional_purpose(req.purpose));
        let ticket = v.ticket(&req.ticket_id);
        let reason = match pb::LookupReason::try_from(req.reason) {
            Ok(pb::LookupReason::StrongComplaint) => Some(()),
            _ => v.check("reason", "INVALID_REASON", Err::<(), _>("the reason must be STRONG_COMPLAINT")),
        };
        let call_id = call_id(&mut v, &req.call_id);
        let (Some(purpose), Some(ticket), Some(()), true) = (purpose, ticket.clone(), reason, v.is_empty()) else {
            // Parse what else there is, so every bad field is named at once.
            if call_id.is_none() {
                let _ = contact_fields(&mut v, &req, &self.countries);
            }
            return Err(Refusal { phone, ticket, violations: v.0 });
        };
        let stated = match call_id {
            Some(call_id) => {
                // With a call, the numbers are optional: the number is the call's. A contact number named too must be
                // the call's number as well (checked against it).
                let contact_number = if req.contact_number.trim().is_empty() {
                    None
                } else {
                    v.check(
                        "contact_number",
                        "INVALID_PHONE_NUMBER",
                        PhoneNumber::parse_lenient(&req.contact_number, &self.countries),
                    )
                };
                match (&phone, contact_number) {
                    (Some(p), Some(c)) if *p != c => {
                        v.check(
                            "contact_number",
                            "CONTACT_MISMATCH",
                            Err::<(), _>("with a call, a contact number must be the number being verified"),
                        );
                    }
                    _ => {}
                }
                let phone = if req.phone_number.trim().is_empty() { None } else { phone.clone() };
                Stated::Call { call_id, phone }
            }
            None => match contact_fields(&mut v, &req, &self.countries) {
                Some((contact, contact_number)) => match phone.clone() {
                    Some(phone) => Stated::Typed { phone, contact, contact_number },
                    None => return Err(Refusal { phone, ticket: Some(ticket), violations: v.0 }),
                },
                None => return Err(Refusal { phone, ticket: Some(ticket), violations: v.0 }),
            },
        };
        if !v.is_empty() {
            return Err(Refusal { phone, ticket: Some(ticket), violations: v.0 });
        }
        Ok(LookupCommand { purpose, ticket, stated })
    }

    /// A GetPhoneStatus request as its target (a number, or a call and perhaps its number) and ticket.
    pub fn parse_phone_status(&self, req: pb::GetPhoneStatusRequest) -> Result<(StatusTarget, TicketId), Refusal> {
        let mut v = Violations::default();
        let phone = if req.call_id.is_empty() || !req.phone_number.trim().is_empty() {
            v.phone("phone_number", &req.phone_number, &self.countries)
        } else {
            None
        };
        let ticket = v.ticket(&req.ticket_id);
        let call_id = call_id(&mut v, &req.call_id);
        let (Some(ticket), true) = (ticket.clone(), v.is_empty()) else {
            return Err(Refusal { phone, ticket, violations: v.0 });
        };
        let target = match (call_id, phone) {
            (Some(call_id), phone) => StatusTarget::Call { call_id, phone },
            (None, Some(phone)) => StatusTarget::Number(phone),
            (None, None) => return Err(Refusal { phone: None, ticket: Some(ticket), violations: v.0 }),
        };
        Ok((target, ticket))
    }

    /// An UnlockPhone request as its number, ticket and reason.
    pub fn parse_unlock(&self, req: pb::UnlockPhoneRequest) -> Result<(PhoneNumber, TicketId, Reason), Refusal> {
        let mut v = Violations::default();
        let phone = v.phone("phone_number", &req.phone_number, &self.countries);
        let ticket = v.ticket(&req.ticket_id);
        let reason = v.check("reason", "INVALID_REASON", Reason::parse(&req.reason));
        let (Some(phone), Some(ticket), Some(reason), true) = (phone.clone(), ticket.clone(), reason, v.is_empty())
        else {
            return Err(Refusal { phone, ticket, violations: v.0 });
        };
        Ok((phone, ticket, reason))
    }

    /// A destination prefix as a SetPrefixGuard or GetPrefixGuard names it: a whole number (its prefix is taken),
    /// or exactly `digits` E.164 digits of an allowed country (a leading `+` allowed). Returns the prefix and its
    /// country calling code.
    pub fn parse_prefix(&self, raw: &str, digits: usize) -> Result<(String, String), String> {
        if let Ok(phone) = PhoneNumber::parse(raw, &self.countries) {
            let prefix: String = phone.e164().chars().filter(char::is_ascii_digit).take(digits).collect();
            return Ok((prefix, phone.calling_code().to_string()));
        }
        let bare = raw.trim().trim_start_matches('+');
        if bare.len() != digits || !bare.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("give a phone number or the first {digits} digits of one in E.164 (e.g. 8210123)"));
        }
        match self.countries.calling_code_of(bare) {
            Some(code) => Ok((bare.to_owned(), code.to_string())),
            None => Err("not a prefix of an allowed country".into()),
        }
    }

    /// A SetPrefixGuard request.
    pub fn parse_set_prefix_guard(
        &self,
        req: pb::SetPrefixGuardRequest,
        digits: usize,
    ) -> Result<((String, String), crate::supervision::GuardChange, TicketId, Reason), Refusal> {
        use crate::domain::guard::OverrideAction;
        use crate::supervision::GuardChange;
        let mut v = Violations::default();
        let prefix = v.check("prefix", "INVALID_ARGUMENT", self.parse_prefix(&req.prefix, digits));
        let ticket = v.ticket(&req.ticket_id);
        let reason = v.check("reason", "INVALID_REASON", Reason::parse(&req.reason));
        let until = req.until.as_ref().map(to_datetime);
        let change = match pb::PrefixGuardAction::try_from(req.action) {
            Ok(pb::PrefixGuardAction::Clear) => Some(GuardChange::Clear),
            Ok(action @ (pb::PrefixGuardAction::Exempt | pb::PrefixGuardAction::Block)) => {
                let action = if action == pb::PrefixGuardAction::Exempt {
                    OverrideAction::Exempt
                } else {
                    OverrideAction::Block
                };
                let until = v.check("until", "INVALID_ARGUMENT", until.unwrap_or(Err("required to exempt or block")));
                until.map(|until| GuardChange::Set(action, until))
            }
            _ => v.check("action", "INVALID_ARGUMENT", Err::<GuardChange, _>("must be EXEMPT, BLOCK or CLEAR")),
        };
        let (Some(prefix), Some(change), Some(ticket), Some(reason), true) =
            (prefix, change, ticket.clone(), reason, v.is_empty())
        else {
            return Err(Refusal { phone: None, ticket, violations: v.0 });
        };
        Ok((prefix, change, ticket, reason))
    }

    /// A VerifyAuditChain request: it takes nothing from the caller. How far unkeyed links are accepted is the
    /// operator's setting (`--accept-unkeyed-through`), so the field must be left at 0.
    pub fn parse_verify_chain(
        &self,
        req: pb::VerifyAuditChainRequest,
    ) -> Result<Vec<crate::domain::audit::HeadPin>, Refusal> {
        let mut v = Violations::default();
        v.check(
            "accept_unkeyed_through",
            "INVALID_SEQUENCE",
            Some(())
                .filter(|()| req.accept_unkeyed_through == 0)
                .ok_or("set by the server's --accept-unkeyed-through, never by the caller: leave it 0"),
        );
        // One violation at most: too many heads, or the first that is not SEQ:HASH.
        let heads: Result<Vec<crate::domain::audit::HeadPin>, String> = if req.expect_heads.len() > MAX_KEPT_HEADS {
            Err(format!("at most {MAX_KEPT_HEADS} kept heads"))
        } else {
            req.expect_heads
                .iter()
                .enumerate()
                .map(|(i, head)| head.parse().map_err(|e: String| format!("head {}: {e}", i + 1)))
                .collect()
        };
        let heads = v.check("expect_heads", "INVALID_SEQUENCE", heads).unwrap_or_default();
        if !v.is_empty() {
            return Err(Refusal { phone: None, ticket: None, violations: v.0 });
        }
        Ok(heads)
    }

    /// A ListAuditEvents request as a query.
    pub fn parse_list_audit(&self, req: pb::ListAuditEventsRequest) -> Result<AuditQuery, Refusal> {
        let mut v = Violations::default();
        let phone = if req.phone_number.trim().is_empty() {
            None
        } else {
            v.check(
                "phone_number",
                "INVALID_PHONE_NUMBER",
                PhoneNumber::parse_lenient(&req.phone_number, &self.countries),
            )
        };
        let since = req.since.as_ref().and_then(|t| v.check("since", "INVALID_TIME", to_datetime(t)));
        let until = req.until.as_ref().and_then(|t| v.check("until", "INVALID_TIME", to_datetime(t)));
        let action = v.check("action", "INVALID_ACTION", action_from_pb(req.action)).flatten();
        let actor = v.check("actor", "INVALID_ACTOR", actor_filter(&req.actor)).flatten();
        let before_seq = v.check("page_token", "INVALID_PAGE_TOKEN", decode_page_token(&req.page_token)).flatten();
        let page = match req.page_size {
            0 => Some(DEFAULT_PAGE),
            n => v.check(
                "page_size",
                "INVALID_PAGE_SIZE",
                u32::try_from(n).ok().filter(|n| *n <= MAX_PAGE).ok_or("page_size must be 0 to 500"),
            ),
        };
        let Some(page) = page.filter(|_| v.is_empty()) else {
            return Err(Refusal { phone, ticket: None, violations: v.0 });
        };
        Ok(AuditQuery { phone, since, until, action, actor, before_seq, page })
    }
}

/// The call id field: empty means none.
fn call_id(v: &mut Violations, input: &str) -> Option<CallId> {
    if input.is_empty() { None } else { v.check("call_id", "INVALID_CALL_ID", CallId::parse(input)) }
}

/// The typed evidence's fields, required without a call.
fn contact_fields(
    v: &mut Violations,
    req: &pb::LookupCodeRequest,
    countries: &AllowedCountries,
) -> Option<(ContactChannel, PhoneNumber)> {
    let contact = match pb::ContactChannel::try_from(req.contact) {
        Ok(pb::ContactChannel::InboundCall) => Some(ContactChannel::InboundCall),
        Ok(pb::ContactChannel::OutboundCallback) => Some(ContactChannel::OutboundCallback),
        _ => v.check(
            "contact",
            "INVALID_CONTACT",
            Err::<ContactChannel, _>("the contact must be INBOUND_CALL or OUTBOUND_CALLBACK (or name a call_id)"),
        ),
    };
    let contact_number = if req.contact_number.trim().is_empty() {
        v.check(
            "contact_number",
            "INVALID_PHONE_NUMBER",
            Err::<PhoneNumber, _>("the contact number is required (or name a call_id)"),
        )
    } else {
        v.check("contact_number", "INVALID_PHONE_NUMBER", PhoneNumber::parse_lenient(&req.contact_number, countries))
    };
    Some((contact?, contact_number?))
}

/// A disabled supervisor's token, let through only to have its refusal audited with what the request named.
fn disabled<T>(request: &Request<T>) -> Option<crate::domain::DisabledActor> {
    request.extensions().get::<crate::domain::DisabledActor>().cloned()
}

fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request.extensions().get::<Actor>().cloned().ok_or_else(|| ServiceError::Unauthenticated.into())
}

fn contact_to_pb(contact: Option<ContactChannel>) -> pb::ContactChannel {
    match contact {
        None => pb::ContactChannel::Unspecified,
        Some(ContactChannel::InboundCall) => pb::ContactChannel::InboundCall,
        Some(ContactChannel::OutboundCallback) => pb::ContactChannel::OutboundCallback,
    }
}

/// A filter time: a valid timestamp from 1970 to 9999 (what both databases store; anything else is a mistake).
fn to_datetime(t: &prost_types::Timestamp) -> Result<chrono::DateTime<chrono::Utc>, &'static str> {
    const LAST_SECOND: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000).ok_or("not a valid timestamp")?;
    if !(0..=LAST_SECOND).contains(&t.seconds) {
        return Err("must be between 1970-01-01 and 9999-12-31");
    }
    chrono::DateTime::from_timestamp(t.seconds, nanos).ok_or("not a valid timestamp")
}

/// The actor filter: a name as the log records it (a supervisor, `system`, `cli:<user>`), at most 128
/// characters, no control characters; empty means any actor.
fn actor_filter(input: &str) -> Result<Option<String>, &'static str> {
    let actor = input.trim();
    if actor.chars().count() > 128 || actor.chars().any(char::is_control) {
        return Err("an actor name is at most 128 characters, without control characters");
    }
    Ok(Some(actor.to_owned()).filter(|a| !a.is_empty()))
}

/// Page tokens are opaque to clients: the sequence number to continue below, encoded.
fn encode_page_token(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{seq}"))
}

fn decode_page_token(token: &str) -> Result<Option<i64>, &'static str> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| "not a page token")?;
    let text = String::from_utf8(bytes).map_err(|_| "not a page token")?;
    text.strip_prefix("v1:").and_then(|n| n.parse().ok()).map(Some).ok_or("not a page token")
}

#[tonic::async_trait]
impl pb::supervisor_service_server::SupervisorService for SupervisorApi {
    #[tracing::instrument(name = "LookupCode", skip_all)]
    async fn lookup_code(
        &self,
        request: Request<pb::LookupCodeRequest>,
    ) -> Result<Response<pb::LookupCodeResponse>, Status> {
        if let Some(disabled) = disabled(&request) {
            let (phone, ticket) = match self.requests.parse_lookup(request.into_inner()) {
                Ok(cmd) => (cmd.stated.phone().cloned(), Some(cmd.ticket)),
                Err(refusal) => (refusal.phone, refusal.ticket),
            };
            return Err(self.refuse_disabled(disabled, AuditAction::LookupCode, phone, ticket).await);
        }
        let actor = actor(&request)?;
        let cmd = match self.requests.parse_lookup(request.into_inner()) {
            Ok(cmd) => cmd,
            Err(refusal) => return Err(self.refuse(&actor, AuditAction::LookupCode, refusal).await),
        };
        let service = self.service.clone();
        let outcome = detached(async move { service.lookup_code(&actor, cmd).await }).await?;
        Ok(Response::new(pb::LookupCodeResponse {
            code: outcome.code.expose().to_owned(),
            verification_id: outcome.verification_id.to_string(),
            purpose: purpose_to_pb(outcome.purpose).into(),
            expires_at: Some(timestamp(outcome.expires_at)),
            masked_phone_number: outcome.masked_phone,
            audit_event_id: outcome.audit_event_id.to_string(),
        }))
    }

    #[tracing::instrument(name = "GetPhoneStatus", skip_all)]
    async fn get_phone_status(
        &self,
        request: Request<pb::GetPhoneStatusRequest>,
    ) -> Result<Response<pb::GetPhoneStatusResponse>, Status> {
        if let Some(disabled) = disabled(&request) {
            let (phone, ticket) = match self.requests.parse_phone_status(request.into_inner()) {
                Ok((StatusTarget::Number(phone), ticket)) => (Some(phone), Some(ticket)),
                Ok((StatusTarget::Call { phone, .. }, ticket)) => (phone, Some(ticket)),
                Err(refusal) => (refusal.phone, refusal.ticket),
            };
            return Err(self.refuse_disabled(disabled, AuditAction::GetPhoneStatus, phone, ticket).await);
        }
        let actor = actor(&request)?;
        let (target, ticket) = match self.requests.parse_phone_status(request.into_inner()) {
            Ok(parsed) => parsed,
            Err(refusal) => return Err(self.refuse(&actor, AuditAction::GetPhoneStatus, refusal).await),
        };
        let service = self.service.clone();
        let policy = service.policy().clone();
        let (status, event, phone, guard) = detached(async move {
            let (status, event, phone) = service.phone_status(&actor, target, &ticket).await?;
            // The guard's view of the number's prefix: a read more, whose failure costs the status nothing.
            let guard = match service.prefix_of(&phone) {
                Some(prefix) => match service.guard_view(&prefix, &phone.calling_code().to_string()).await {
                    Ok(view) => Some(view),
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "reading the pumping guard failed");
                        None
                    }
                },
                None => None,
            };
            Ok::<_, ServiceError>((status, event, phone, guard))
        })
        .await?;
        let mut answer = status_to_pb(&status, &event, phone.masked().to_owned(), &policy);
        answer.prefix_guard =
            guard.filter(|g| g.policy.mode != crate::domain::guard::GuardMode::Off).map(|g| guard_to_pb(&g));
        answer.checklist = crate::supervision::checklist::checklist(&status, event.event.at, &self.sender)
            .into_iter()
            .map(|c| pb::StatusCheck {
                check: c.kind.as_str().into(),
                state: c.state.as_str().into(),
                finding_ko: c.finding_ko,
                finding_en: c.finding_en,
                next_step_ko: c.next_ko,
                next_step_en: c.next_en,
            })
            .collect();
        Ok(Response::new(answer))
    }

    #[tracing::instrument(name = "UnlockPhone", skip_all)]
    async fn unlock_phone(
        &self,
        request: Request<pb::UnlockPhoneRequest>,
    ) -> Result<Response<pb::UnlockPhoneResponse>, Status> {
        if let Some(disabled) = disabled(&request) {
            let (phone, ticket) = match self.requests.parse_unlock(request.into_inner()) {
                Ok((phone, ticket, _)) => (Some(phone), Some(ticket)),
                Err(refusal) => (refusal.phone, refusal.ticket),
            };
            return Err(self.refuse_disabled(disabled, AuditAction::UnlockPhone, phone, ticket).await);
        }
        let actor = actor(&request)?;
        let (phone, ticket, reason) = match self.requests.parse_unlock(request.into_inner()) {
            Ok(parsed) => parsed,
            Err(refusal) => return Err(self.refuse(&actor, AuditAction::UnlockPhone, refusal).await),
        };
        let service = self.service.clone();
        let masked = phone.masked().to_owned();
        let (unlocked, event) =
            detached(async move { service.unlock_phone(&actor, &phone, &ticket, &reason).await }).await?;
        Ok(Response::new(pb::UnlockPhoneResponse {
            masked_phone_number: masked,
            was_locked: unlocked.was_locked,
            failed_attempts_cleared: i32::try_from(unlocked.failures_cleared).unwrap_or(i32::MAX),
            audit_event_id: event.event.id.to_string(),
        }))
    }

    #[tracing::instrument(name = "LiftSignInLock", skip_all)]
    async fn lift_sign_in_lock(
        &self,
        request: Request<pb::LiftSignInLockRequest>,
    ) -> Result<Response<pb::LiftSignInLockResponse>, Status> {
        let actor = actor(&request)?;
        let body = request.into_inner();
        let subject = match (body.supervisor.trim(), body.client_address.trim()) {
            (name, "") if !name.is_empty() => match name.parse::<crate::domain::SupervisorName>() {
                Ok(name) => crate::store::signin::person_subject(name.as_str()),
                Err(e) => return Err(lift_invalid("supervisor", &e).into()),
            },
            ("", address) if !address.is_empty() => match address.parse::<std::net::IpAddr>() {
                Ok(ip) => crate::store::signin::address_subject(ip.to_canonical()),
                Err(_) => return Err(lift_invalid("client_address", "not an IP address").into()),
            },
            _ => return Err(lift_invalid("supervisor", "give exactly one of supervisor and client_address").into()),
        };
        let sign_in = self.sign_in.clone();
        let (was_locked, event) = detached(async move { sign_in.lift_lock_as(&actor, &subject).await }).await?;
        Ok(Response::new(pb::LiftSignInLockResponse { was_locked, audit_event_id: event.event.id.to_string() }))
    }

    #[tracing::instrument(name = "SetPrefixGuard", skip_all)]
    async fn set_prefix_guard(
        &self,
        request: Request<pb::SetPrefixGuardRequest>,
    ) -> Result<Response<pb::SetPrefixGuardResponse>, Status> {
        if let Some(disabled) = disabled(&request) {
            return Err(self.refuse_disabled(disabled, AuditAction::PrefixGuardSet, None, None).await);
        }
        let actor = actor(&request)?;
        let Some(digits) = self.service.prefix_digits() else {
            return Err(ServiceError::FactorUnavailable("the pumping guard is not configured").into());
        };
        let (prefix, change, ticket, reason) = match self.requests.parse_set_prefix_guard(request.into_inner(), digits)
        {
            Ok(parsed) => parsed,
            Err(refusal) => return Err(self.refuse(&actor, AuditAction::PrefixGuardSet, refusal).await),
        };
        let service = self.service.clone();
        let (view, event) = detached(async move {
            service.set_prefix_guard(&actor, (&prefix.0, &prefix.1), change, &ticket, &reason).await
        })
        .await?;
        Ok(Response::new(pb::SetPrefixGuardResponse {
            guard: Some(guard_to_pb(&view)),
            audit_event_id: event.event.id.to_string(),
        }))
    }

    #[tracing::instrument(name = "GetPrefixGuard", skip_all)]
    async fn get_prefix_guard(
        &self,
        request: Request<pb::GetPrefixGuardRequest>,
    ) -> Result<Response<pb::GetPrefixGuardResponse>, Status> {
        let actor = actor(&request)?;
        let Some(digits) = self.service.prefix_digits() else {
            return Err(ServiceError::FactorUnavailable("the pumping guard is not configured").into());
        };
        let (prefix, country) = self
            .requests
            .parse_prefix(&request.into_inner().prefix, digits)
            .map_err(|e| Status::from(lift_invalid("prefix", &e)))?;
        let service = self.service.clone();
        let view = detached(async move { service.prefix_guard(&actor, &prefix, &country).await }).await?;
        Ok(Response::new(pb::GetPrefixGuardResponse { guard: Some(guard_to_pb(&view)) }))
    }

    #[tracing::instrument(name = "ListAuditEvents", skip_all)]
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let actor = actor(&request)?;
        let AuditQuery { phone, since, until, action, actor: actor_name, before_seq, page } =
            match self.requests.parse_list_audit(request.into_inner()) {
                Ok(query) => query,
                Err(refusal) => return Err(self.refuse(&actor, AuditAction::ListAuditEvents, refusal).await),
            };
        let filter = AuditFilter {
            since,
            until,
            actor: actor_name,
            phone_key: phone.as_ref().map(|p| self.service.phone_key(p)),
            action,
            before_seq,
            limit: page + 1,
        };
        let service = self.service.clone();
        let mut events = detached(async move { service.list_audit(&actor, filter, phone.as_ref()).await }).await?;
        let next_page_token = if events.len() > page as usize {
            events.truncate(page as usize);
            events.last().map(|e| encode_page_token(e.seq)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.iter().map(event_to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(name = "VerifyAuditChain", skip_all)]
    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let actor = actor(&request)?;
        let heads = match self.requests.parse_verify_chain(request.into_inner()) {
            Ok(heads) => heads,
            Err(refusal) => return Err(self.refuse(&actor, AuditAction::VerifyAuditChain, refusal).await),
        };
        let service = self.service.clone();
        let (report, event) = detached(async move { service.verify_audit_chain(&actor, heads).await }).await?;
        Ok(Response::new(pb::VerifyAuditChainResponse {
            intact: report.broken.is_none(),
            events_checked: report.checked,
            unkeyed_events: report.unkeyed,
            head_hash: report.head,
            broken_at_sequence: report.broken.as_ref().map_or(0, |b| b.seq),
            problem: report.broken.map(|b| b.problem).unwrap_or_default(),
            audit_event_id: event.event.id.to_string(),
        }))
    }

    #[tracing::instrument(name = "Diagnose", skip_all)]
    async fn diagnose(&self, request: Request<pb::DiagnoseRequest>) -> Result<Response<pb::DiagnoseResponse>, Status> {
        let actor = actor(&request)?;
        if actor.role != crate::domain::Role::Admin {
            return Err(ServiceError::WrongRole.into());
        }
        let Some(delivery) = self.delivery.clone() else {
            return Err(Status::unimplemented("this server has no delivery to diagnose"));
        };
        let d = detached(async move { Ok::<_, ServiceError>(delivery.diagnose().await) }).await?;
        let (findings_ko, findings_en) = d.findings().into_iter().unzip();
        let counts: std::collections::BTreeMap<(String, String), (i64, i64)> =
            d.outcomes.iter().map(|o| ((o.route.clone(), o.outcome.clone()), (o.recent, o.count))).collect();
        Ok(Response::new(pb::DiagnoseResponse {
            routes: d
                .routes
                .iter()
                .map(|r| pb::RouteDiagnosis {
                    route: r.route.clone(),
                    endpoint: r.endpoint.clone().unwrap_or_default(),
                    breaker: r.breaker.map(|b| b.state.as_str().to_owned()).unwrap_or_default(),
                    breaker_since: r.breaker.map(|b| timestamp(b.since)),
                    breaker_failures: r.breaker.map_or(0, |b| i32::try_from(b.failures).unwrap_or(i32::MAX)),
                    last_error: r.last_error.as_ref().map(|(_, e)| e.clone()).unwrap_or_default(),
                    last_error_at: r.last_error.as_ref().map(|(at, _)| timestamp(*at)),
                    last_accepted_at: r.last_accepted.map(timestamp),
                })
                .collect(),
            outcomes: counts
                .into_iter()
                .map(|((route, outcome), (last_5m, last_15m))| pb::RouteOutcomeCount {
                    route,
                    outcome,
                    last_5m,
                    last_15m,
                })
                .collect(),
            refusals: d
                .refusals
                .iter()
                .map(|(limit, count)| pb::FrontLineRefusals { limit: limit.as_str().into(), count: *count })
                .collect(),
            database_round_trip_ms: match &d.database {
                Ok(took) => i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
                Err(_) => -1,
            },
            database_error: d.database.as_ref().err().cloned().unwrap_or_default(),
            delivery_serving: d.delivery_serving,
            findings_ko,
            findings_en,
            at: Some(timestamp(d.at)),
        }))
    }

    #[tracing::instrument(name = "WhoAmI", skip_all)]
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let actor = actor(&request)?;
        Ok(Response::new(pb::WhoAmIResponse {
            allowed_methods: allowed_methods(&actor).iter().map(|m| (*m).to_owned()).collect(),
            role: actor.role.as_str().to_owned(),
            lookup_evidence: self.service.evidence_policy().as_str().to_owned(),
            agent_id: actor.agent_id.as_ref().map(|a| a.as_str().to_owned()).unwrap_or_default(),
            name: actor.name,
        }))
    }

    #[tracing::instrument(name = "ListMyCalls", skip_all)]
    async fn list_my_calls(
        &self,
        request: Request<pb::ListMyCallsRequest>,
    ) -> Result<Response<pb::ListMyCallsResponse>, Status> {
        let actor = actor(&request)?;
        let service = self.service.clone();
        let calls = detached(async move { service.my_calls(&actor).await }).await?;
        Ok(Response::new(pb::ListMyCallsResponse {
            calls: calls
                .into_iter()
                .map(|(c, sent)| pb::MyCall {
                    call_id: c.call_id.as_str().to_owned(),
                    direction: c.direction.as_str().to_owned(),
                    masked_phone_number: c.number.masked().to_owned(),
                    answered_at: c.answered_at.map(timestamp),
                    send_recorded_at: sent.map(timestamp),
                })
                .collect(),
        }))
    }
}

/// The methods `actor` may call, from the same role rules the flows enforce (admin holds every role).
fn allowed_methods(actor: &Actor) -> Vec<&'static str> {
    use crate::domain::Role;
    [
        ("LookupCode", Role::Supervisor),
        ("GetPhoneStatus", Role::Supervisor),
        ("UnlockPhone", Role::Admin),
        ("ListAuditEvents", Role::Auditor),
        ("VerifyAuditChain", Role::Auditor),
        ("LiftSignInLock", Role::Admin),
        ("Diagnose", Role::Admin),
        ("GetPrefixGuard", Role::Supervisor),
        ("SetPrefixGuard", Role::Admin),
    ]
    .into_iter()
    .filter(|(_, role)| actor.has_any(&[*role]))
    .map(|(method, _)| method)
    .collect()
}

fn event_to_pb(e: &AuditEvent) -> pb::AuditEvent {
    let ev = &e.event;
    let access = ev.access.as_ref();
    let certificate = access.and_then(AccessContext::certificate);
    pb::AuditEvent {
        sequence: e.seq,
        id: ev.id.to_string(),
        time: Some(timestamp(ev.at)),
        actor_name: ev.actor_name.clone(),
        actor_role: ev.actor_role.clone(),
        action: action_to_pb(ev.action).into(),
        masked_phone_number: ev.phone_masked.clone().unwrap_or_default(),
        ticket_id: ev.ticket_id.clone().unwrap_or_default(),
        reason: ev.reason.clone().unwrap_or_default(),
        contact: contact_to_pb(ev.contact_channel).into(),
        contact_matched: ev.contact_matched,
        evidence: ev.evidence.as_ref().map(|e| e.kind().to_owned()).unwrap_or_default(),
        call_id: match &ev.evidence {
            Some(Evidence::Call { call_id, .. }) => call_id.clone(),
            _ => String::new(),
        },
        call_direction: match &ev.evidence {
            Some(Evidence::Call { direction, .. }) => direction.as_str().to_owned(),
            _ => String::new(),
        },
        call_masked_number: match &ev.evidence {
            Some(Evidence::Call { number_masked, .. }) => number_masked.clone(),
            _ => String::new(),
        },
        client_address: access.and_then(AccessContext::client_address).map(|ip| ip.to_string()).unwrap_or_default(),
        client_certificate_subject: certificate.map(|c| c.subject().to_owned()).unwrap_or_default(),
        client_certificate_sha256: certificate.map(|c| c.sha256().to_owned()).unwrap_or_default(),
        session_id: access.and_then(AccessContext::session_id).unwrap_or_default().to_owned(),
        user_agent: access.and_then(AccessContext::user_agent).unwrap_or_default().to_owned(),
        outcome: match ev.outcome {
            AuditOutcome::Granted => pb::AuditOutcome::Granted,
            AuditOutcome::Denied => pb::AuditOutcome::Denied,
        }
        .into(),
        detail: ev.detail.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

fn code_to_pb(c: &CodeStatus, now: chrono::DateTime<chrono::Utc>) -> pb::CodeSend {
    pb::CodeSend {
        sent_at: Some(timestamp(c.sent_at)),
        channel: match c.channel {
            Channel::Sms => pb::CodeChannel::Sms,
            Channel::Supervisor => pb::CodeChannel::Supervisor,
        }
        .into(),
        delivery: match c.delivery.as_str() {
            "pending" => pb::DeliveryStatus::Pending,
            "delivered" => pb::DeliveryStatus::Delivered,
            "failed" => pb::DeliveryStatus::Failed,
            _ => pb::DeliveryStatus::Unspecified,
        }
        .into(),
        expires_at: Some(timestamp(c.expires_at)),
        live: !c.revoked && c.expires_at > now,
        provider_message_id: c.provider_message_id.clone().unwrap_or_default(),
        delivered_by: c.delivered_by.clone().unwrap_or_default(),
        attempts: c.attempts.iter().map(attempt_to_pb).collect(),
    }
}

fn attempt_to_pb(a: &crate::domain::AttemptStatus) -> pb::DeliveryAttempt {
    let (receipt, receipt_at, receipt_code, reason) = match &a.receipt {
        Some(r) if r.delivered => ("delivered", Some(timestamp(r.at)), String::new(), None),
        Some(r) => {
            let code = r.code.clone().unwrap_or_default();
            let reason = crate::domain::receipt_reason(a.attempt.gateway, &code);
            ("failed", Some(timestamp(r.at)), code, Some(reason))
        }
        None => ("", None, String::new(), None),
    };
    pb::DeliveryAttempt {
        channel: a.attempt.channel.as_str().into(),
        gateway: a.attempt.gateway.into(),
        attempted_at: Some(timestamp(a.attempt.at)),
        outcome: a.attempt.outcome.as_str().into(),
        provider_id: a.attempt.provider_id.clone().unwrap_or_default(),
        receipt: receipt.into(),
        receipt_at,
        receipt_code,
        reason_ko: reason.map(|r| r.ko.to_owned()).unwrap_or_default(),
        reason_en: reason.map(|r| r.en.to_owned()).unwrap_or_default(),
        failure: a.attempt.reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        send_failure_ko: a.attempt.reason.map(|r| format!("발송 실패: {}", r.words().0)).unwrap_or_default(),
        send_failure_en: a.attempt.reason.map(|r| format!("send failed: {}", r.words().1)).unwrap_or_default(),
        route: crate::domain::route_label(a.attempt.channel, a.attempt.gateway),
    }
}

fn verification_to_pb(v: &VerificationStatus, now: chrono::DateTime<chrono::Utc>) -> pb::PendingVerification {
    pb::PendingVerification {
        verification_id: v.id.to_string(),
        purpose: purpose_to_pb(v.purpose).into(),
        created_at: Some(timestamp(v.created_at)),
        expires_at: Some(timestamp(v.expires_at)),
        approved_at: v.approved_at.map(timestamp),
        // An approved verification's codes are spent: none would approve again.
        sends: v
            .codes
            .iter()
            .map(|c| pb::CodeSend { live: v.approved_at.is_none() && code_to_pb(c, now).live, ..code_to_pb(c, now) })
            .collect(),
    }
}

fn status_to_pb(
    status: &PhoneStatus,
    event: &AuditEvent,
    masked: String,
    policy: &crate::domain::Policy,
) -> pb::GetPhoneStatusResponse {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let now = event.event.at;
    pb::GetPhoneStatusResponse {
        masked_phone_number: masked,
        failed_attempts: count(status.failed_attempts),
        attempts_remaining: count(policy.max_failed_attempts.saturating_sub(status.failed_attempts)),
        locked_until: status.locked_until.map(timestamp),
        pending: status.pending.iter().map(|v| verification_to_pb(v, now)).collect(),
        sms_last_hour: count(status.sms_last_hour),
        sms_last_day: count(status.sms_last_day),
        sms_hour_cap: count(policy.max_sends_per_hour),
        sms_day_cap: count(policy.max_sends_per_day),
        prefix_guard: None,
        audit_event_id: event.event.id.to_string(),
        notices: status
            .notices
            .iter()
            .map(|n| pb::LookupNotice {
                sent_at: Some(timestamp(n.sent_at)),
                outcome: n.outcome.clone(),
                gateway: n.gateway.clone().unwrap_or_default(),
                provider_id: n.provider_id.clone().unwrap_or_default(),
            })
            .collect(),
        // Filled by the caller, which knows the sender.
        checklist: Vec::new(),
    }
}

/// The pumping guard's view of a prefix, as the API shows it.
fn guard_to_pb(view: &crate::supervision::PrefixGuardView) -> pb::PrefixGuard {
    use crate::domain::guard::{COUNTRY_FACTOR, Counts, Verdict};
    let window = |length: chrono::TimeDelta, counts: Counts, factor: u32, min: u32| pb::GuardWindowFigures {
        window: humantime::format_duration(length.to_std().unwrap_or_default()).to_string(),
        sends: i64::try_from(counts.sends).unwrap_or(i64::MAX),
        approvals: i64::try_from(counts.approvals).unwrap_or(i64::MAX),
        conversion_pct: i32::try_from(counts.conversion_pct()).unwrap_or(100),
        min_sends: i64::from(min.saturating_mul(factor)),
    };
    let p = &view.policy;
    let scope = |counts: &crate::domain::guard::ScopeCounts, factor: u32| {
        vec![
            window(p.short.length, counts.short, factor, p.short.min_sends),
            window(p.long.length, counts.long, factor, p.long.min_sends),
        ]
    };
    let explanation = match &view.verdict {
        Verdict::Clear => "no window has enough sends converting too little".to_owned(),
        Verdict::Guarded(trip) => trip.explain(),
        Verdict::Blocked(o) | Verdict::Exempt(o) => format!(
            "{} by {} until {} (ticket {}): {}",
            if matches!(view.verdict, Verdict::Blocked(_)) { "blocked" } else { "exempted" },
            o.set_by,
            o.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            o.ticket_id,
            o.reason
        ),
    };
    let live = view.figures.override_.as_ref().filter(|o| o.until > view.now);
    pb::PrefixGuard {
        prefix: view.figures.prefix.key.clone(),
        country: view.figures.country.key.clone(),
        mode: p.mode.as_str().to_owned(),
        guarded: view.verdict.refuses(),
        decision: view.verdict.as_str().to_owned(),
        explanation,
        prefix_figures: scope(&view.figures.prefix, 1),
        country_figures: scope(&view.figures.country, COUNTRY_FACTOR),
        min_conversion_pct: i32::try_from(p.min_conversion_pct).unwrap_or(0),
        next_evaluation: Some(timestamp(view.next_evaluation)),
        override_action: live.map(|o| o.action.as_str().to_owned()).unwrap_or_default(),
        override_until: live.map(|o| timestamp(o.until)),
        override_ticket_id: live.map(|o| o.ticket_id.clone()).unwrap_or_default(),
        override_reason: live.map(|o| o.reason.clone()).unwrap_or_default(),
        override_set_by: live.map(|o| o.set_by.clone()).unwrap_or_default(),
    }
}

/// A LiftSignInLock field refused.
fn lift_invalid(field: &'static str, description: &str) -> ServiceError {
    ServiceError::InvalidArgument(vec![crate::service::FieldViolation {
        field,
        reason: "INVALID_ARGUMENT",
        description: description.to_owned(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_page_token(&encode_page_token(42)), Ok(Some(42)));
        assert_eq!(decode_page_token(""), Ok(None));
        assert!(decode_page_token("!!").is_err());
        assert!(decode_page_token("djI6MQ").is_err());
    }
}
