//! `otp.v1.OtpService`: parses requests into domain commands (collecting every bad field), runs the flow, and
//! converts the outcome.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::admit::{Call, Entry};
use super::idempotency::{self, IdempotencyKeys};
use super::violations::Violations;
use super::{detached, timestamp};
use crate::domain::{AllowedAppHashes, AllowedCountries, CodeLength, OtpCode, PhoneNumber, Purpose};
use crate::hashing::Work;
use crate::limits::FrontLimits;
use crate::pb::otp::v1 as pb;
use crate::service::{SendCommand, SendOutcome, ServiceError, VerificationService, VerifyCommand, VerifyOutcome};

/// The public API.
#[derive(Clone)]
pub struct OtpApi {
    service: VerificationService,
    requests: OtpRequests,
    limits: Arc<FrontLimits>,
    keys: IdempotencyKeys,
}

/// What the public API accepts: its requests' parsing into commands, collecting every bad field. Public (not an
/// API) so that the fuzz targets in `fuzz/` run the handlers' own parsing.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct OtpRequests {
    /// The countries whose mobile numbers may receive codes.
    pub countries: AllowedCountries,
    /// The digits of a code.
    pub code_length: CodeLength,
    /// The app hashes a SendCode may ask for.
    pub app_hashes: AllowedAppHashes,
}

impl OtpApi {
    /// Serves `service` for numbers of `countries`, noting sends in the front-line `limits`, appending only the
    /// `app_hashes` of the company's own apps, and honouring the `idempotency-key` header with `keys`. Served
    /// behind [`super::AdmitFirstLayer`], whose decisions its handlers take.
    pub fn new(
        service: VerificationService,
        countries: AllowedCountries,
        limits: Arc<FrontLimits>,
        app_hashes: AllowedAppHashes,
        keys: IdempotencyKeys,
    ) -> Self {
        let code_length = service.policy().code_length;
        let requests = OtpRequests { countries, code_length, app_hashes };
        Self { service, requests, limits, keys }
    }
}

impl OtpRequests {
    /// A SendCode request as a command.
    pub fn parse_send(&self, req: pb::SendCodeRequest) -> Result<SendCommand, ServiceError> {
        let mut v = Violations::default();
        let phone = v.phone("phone_number", &req.phone_number, &self.countries);
        let purpose = v.purpose(req.purpose);
        let sim_phone = if req.sim_phone_number.trim().is_empty() {
            None
        } else {
            v.check(
                "sim_phone_number",
                "INVALID_PHONE_NUMBER",
                PhoneNumber::parse_lenient(&req.sim_phone_number, &self.countries),
            )
        };
        let app_hash = if req.app_hash.is_empty() {
            None
        } else {
            v.check("app_hash", "INVALID_APP_HASH", self.app_hashes.check(&req.app_hash))
        };
        match (phone, purpose, v.into_error()) {
            (Some(phone), Some(purpose), None) => {
                Ok(SendCommand { phone, purpose, sim_phone, app_hash, deadline: None, hand_over: None })
            }
            (_, _, error) => Err(error.unwrap_or_else(|| ServiceError::InvalidArgument(vec![]))),
        }
    }

    /// A VerifyCode request as a command.
    pub fn parse_verify(&self, req: pb::VerifyCodeRequest) -> Result<VerifyCommand, ServiceError> {
        let mut v = Violations::default();
        let phone = v.phone("phone_number", &req.phone_number, &self.countries);
        let purpose = v.purpose(req.purpose);
        let code = v.check("code", "INVALID_CODE", OtpCode::parse(&req.code, self.code_length));
        match (phone, purpose, code, v.into_error()) {
            (Some(phone), Some(purpose), Some(code), None) => {
                Ok(VerifyCommand { phone, purpose, code, deadline: None })
            }
            (.., error) => Err(error.unwrap_or_else(|| ServiceError::InvalidArgument(vec![]))),
        }
    }
}

#[tonic::async_trait]
impl pb::otp_service_server::OtpService for OtpApi {
    async fn send_code(&self, request: Request<pb::SendCodeRequest>) -> Result<Response<pb::SendCodeResponse>, Status> {
        // Its per-address limit and its place in the hashing queue were decided before tonic decoded the request.
        let call = Call::of(&request)?;
        // Boxed: the flow's state is made only for a call that goes on, not as part of every call's future.
        Box::pin(self.send_flow(request, call)).await
    }

    async fn verify_code(
        &self,
        request: Request<pb::VerifyCodeRequest>,
    ) -> Result<Response<pb::VerifyCodeResponse>, Status> {
        let call = Call::of(&request)?;
        Box::pin(self.verify_flow(request, call)).await
    }
}

impl OtpApi {
    /// SendCode past its front-line checks.
    #[tracing::instrument(name = "SendCode", skip_all, fields(phone = tracing::field::Empty, purpose = tracing::field::Empty))]
    async fn send_flow(
        &self,
        request: Request<pb::SendCodeRequest>,
        Call { client, deadline, entry }: Call,
    ) -> Result<Response<pb::SendCodeResponse>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let mut cmd = self.requests.parse_send(request.into_inner())?;
        cmd.deadline = deadline;
        record_span(&cmd.phone, cmd.purpose);
        self.limits.note_send(client, &cmd.phone);
        let service = self.service.clone();
        let key = match entry {
            Entry::Admitted(slot) => {
                let outcome = detached(async move { service.send_code(cmd, slot).await }).await?;
                return Ok(Response::new(outcome.into()));
            }
            Entry::Keyed(key) => key,
        };
        let sim = cmd.sim_phone.as_ref().map_or("", |p| p.e164());
        let app_hash = cmd.app_hash.as_ref().map_or("", |h| h.as_str());
        let keyed = self.keys.keyed(key, "SendCode", peer, &[cmd.phone.e164(), cmd.purpose.as_str(), sim, app_hash]);
        let keys = self.keys.clone();
        let answer = detached(async move {
            let work = move |hand_over| async move {
                cmd.hand_over = Some(hand_over);
                let slot = service.admit(Work::Send, client, deadline).await?;
                service.send_code(cmd, slot).await.map(pb::SendCodeResponse::from)
            };
            keys.run(keyed, deadline, idempotency::recovered_send, work).await
        })
        .await?;
        Ok(respond(answer))
    }

    /// VerifyCode past its front-line checks.
    #[tracing::instrument(name = "VerifyCode", skip_all, fields(phone = tracing::field::Empty, purpose = tracing::field::Empty))]
    async fn verify_flow(
        &self,
        request: Request<pb::VerifyCodeRequest>,
        Call { client, deadline, entry }: Call,
    ) -> Result<Response<pb::VerifyCodeResponse>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let mut cmd = self.requests.parse_verify(request.into_inner())?;
        cmd.deadline = deadline;
        record_span(&cmd.phone, cmd.purpose);
        let service = self.service.clone();
        let key = match entry {
            Entry::Admitted(slot) => {
                let outcome = detached(async move { service.verify_code(cmd, slot).await }).await?;
                return Ok(Response::new(outcome.into()));
            }
            Entry::Keyed(key) => key,
        };
        let keyed =
            self.keys.keyed(key, "VerifyCode", peer, &[cmd.phone.e164(), cmd.purpose.as_str(), cmd.code.expose()]);
        let keys = self.keys.clone();
        let answer = detached(async move {
            let work = move |_| async move {
                let slot = service.admit(Work::Check, client, deadline).await?;
                service.verify_code(cmd, slot).await.map(pb::VerifyCodeResponse::from)
            };
            keys.run(keyed, deadline, |_| None, work).await
        })
        .await?;
        Ok(respond(answer))
    }
}

/// The answer, marked when it was replayed from the key's record.
fn respond<M>(answer: idempotency::Answer<M>) -> Response<M> {
    let mut response = Response::new(answer.message);
    if answer.replayed {
        response.metadata_mut().insert(idempotency::REPLAY_HEADER, tonic::metadata::MetadataValue::from_static("true"));
    }
    response
}

fn record_span(phone: &PhoneNumber, purpose: Purpose) {
    let span = tracing::Span::current();
    span.record("phone", tracing::field::display(phone));
    span.record("purpose", purpose.as_str());
}

impl From<SendOutcome> for pb::SendCodeResponse {
    fn from(o: SendOutcome) -> Self {
        Self {
            verification_id: o.verification_id.to_string(),
            expires_at: Some(timestamp(o.expires_at)),
            resend_available_at: Some(timestamp(o.resend_available_at)),
            sends_remaining: i32::try_from(o.sends_remaining).unwrap_or(i32::MAX),
            sender: o.sender,
            masked_phone_number: o.masked_phone,
            delivery_unconfirmed: false,
        }
    }
}

impl From<VerifyOutcome> for pb::VerifyCodeResponse {
    fn from(o: VerifyOutcome) -> Self {
        let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        match o {
            VerifyOutcome::Approved { verification_id } => Self {
                result: pb::VerifyResult::Approved.into(),
                attempts_remaining: 0,
                locked_until: None,
                verification_id: verification_id.to_string(),
            },
            VerifyOutcome::WrongCode { verification_id, attempts_remaining, locked_until } => Self {
                result: pb::VerifyResult::WrongCode.into(),
                attempts_remaining: count(attempts_remaining),
                locked_until: locked_until.map(timestamp),
                verification_id: verification_id.to_string(),
            },
            VerifyOutcome::Expired { verification_id, attempts_remaining } => Self {
                result: pb::VerifyResult::Expired.into(),
                attempts_remaining: count(attempts_remaining),
                locked_until: None,
                verification_id: verification_id.to_string(),
            },
        }
    }
}
