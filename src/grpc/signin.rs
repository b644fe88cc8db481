//! `otp.v1.SignInService`: team leads' sign-in with a second factor (docs/sign-in.md). The personal token is read
//! here, not by the supervisor service's auth layer, because it opens only a sign-in; SignOut takes the session.

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

use super::auth::bearer;
use super::{detached, timestamp};
use crate::domain::SecondFactor;
use crate::domain::audit::AccessContext;
use crate::pb::otp::v1 as pb;
use crate::service::{FieldViolation, ServiceError};
use crate::signin::{Bearer, Proof, SignInService};

/// The gRPC face of [`SignInService`].
#[derive(Clone)]
pub struct SignInApi {
    service: SignInService,
}

impl SignInApi {
    /// Serves `service`; wrap the server in [`super::access::WithAccess`].
    pub fn new(service: SignInService) -> Self {
        Self { service }
    }

    /// The call's token, and where it came from ([`super::access::WithAccess`] put it on the request).
    fn caller<T>(&self, request: &Request<T>) -> Result<(String, AccessContext), Status> {
        let token = bearer(request.metadata().get("authorization").map(|v| v.as_bytes()))?;
        Ok((token, request.extensions().get::<AccessContext>().cloned().unwrap_or_default()))
    }
}

fn factor(value: i32) -> Result<SecondFactor, ServiceError> {
    match pb::SecondFactor::try_from(value) {
        Ok(pb::SecondFactor::Passkey) => Ok(SecondFactor::Passkey),
        Ok(pb::SecondFactor::PhoneCode) => Ok(SecondFactor::PhoneCode),
        Ok(pb::SecondFactor::EmailCode) => Ok(SecondFactor::EmailCode),
        Ok(pb::SecondFactor::Unspecified) | Err(_) => {
            Err(invalid("factor", "INVALID_FACTOR", "choose a second factor"))
        }
    }
}

fn factor_to_pb(factor: SecondFactor) -> pb::SecondFactor {
    match factor {
        SecondFactor::Passkey => pb::SecondFactor::Passkey,
        SecondFactor::PhoneCode => pb::SecondFactor::PhoneCode,
        SecondFactor::EmailCode => pb::SecondFactor::EmailCode,
    }
}

fn invalid(field: &'static str, reason: &'static str, description: &str) -> ServiceError {
    ServiceError::InvalidArgument(vec![FieldViolation { field, reason, description: description.to_owned() }])
}

#[tonic::async_trait]
impl pb::sign_in_service_server::SignInService for SignInApi {
    #[tracing::instrument(name = "ListSignInFactors", skip_all)]
    async fn list_sign_in_factors(
        &self,
        request: Request<pb::ListSignInFactorsRequest>,
    ) -> Result<Response<pb::ListSignInFactorsResponse>, Status> {
        let (token, origin) = self.caller(&request)?;
        let service = self.service.clone();
        let (name, factors) = detached(async move { service.factors(&token, &origin).await }).await?;
        Ok(Response::new(pb::ListSignInFactorsResponse {
            name,
            factors: factors
                .into_iter()
                .map(|f| pb::SignInFactor { factor: factor_to_pb(f.factor).into(), destination: f.destination })
                .collect(),
        }))
    }

    #[tracing::instrument(name = "StartSignIn", skip_all)]
    async fn start_sign_in(
        &self,
        request: Request<pb::StartSignInRequest>,
    ) -> Result<Response<pb::StartSignInResponse>, Status> {
        let (token, origin) = self.caller(&request)?;
        let factor = factor(request.get_ref().factor)?;
        let service = self.service.clone();
        let started = detached(async move { service.start(&token, factor, &origin).await }).await?;
        Ok(Response::new(pb::StartSignInResponse {
            sign_in_id: started.id.to_string(),
            destination: started.destination,
            expires_at: Some(timestamp(started.expires_at)),
            passkey_request_options_json: started.passkey_options.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "FinishSignIn", skip_all)]
    async fn finish_sign_in(
        &self,
        request: Request<pb::FinishSignInRequest>,
    ) -> Result<Response<pb::FinishSignInResponse>, Status> {
        let (token, origin) = self.caller(&request)?;
        let body = request.into_inner();
        let id = uuid::Uuid::parse_str(body.sign_in_id.trim())
            .map_err(|_| invalid("sign_in_id", "INVALID_SIGN_IN_ID", "StartSignIn's sign_in_id is required"))?;
        let proof = match (body.code.is_empty(), body.passkey_credential_json.is_empty()) {
            (false, true) => Proof::Code(SecretString::from(body.code)),
            (true, false) => Proof::Passkey(body.passkey_credential_json),
            _ => return Err(invalid("code", "INVALID_CODE", "give the code or the passkey's answer, not both").into()),
        };
        let service = self.service.clone();
        let session = detached(async move { service.finish(&token, id, proof, &origin).await }).await?;
        Ok(Response::new(pb::FinishSignInResponse {
            session_token: session.token.expose_secret().to_owned(),
            session_id: session.id.to_string(),
            idle_expires_at: Some(timestamp(session.idle_until)),
            expires_at: Some(timestamp(session.expires_at)),
        }))
    }

    #[tracing::instrument(name = "SignOut", skip_all)]
    async fn sign_out(&self, request: Request<pb::SignOutRequest>) -> Result<Response<pb::SignOutResponse>, Status> {
        let (token, origin) = self.caller(&request)?;
        let service = self.service.clone();
        detached(async move {
            match service.bearer(&token, &origin, None).await? {
                Bearer::Actor(actor) => service.sign_out(&actor).await,
                Bearer::Disabled { .. } => Err(ServiceError::SupervisorDisabled),
            }
        })
        .await?;
        Ok(Response::new(pb::SignOutResponse {}))
    }

    #[tracing::instrument(name = "StartPasskeyEnrolment", skip_all)]
    async fn start_passkey_enrolment(
        &self,
        request: Request<pb::StartPasskeyEnrolmentRequest>,
    ) -> Result<Response<pb::StartPasskeyEnrolmentResponse>, Status> {
        let (token, origin) = self.caller(&request)?;
        let code = request.into_inner().enrolment_code;
        let service = self.service.clone();
        let started = detached(async move {
            if code.trim().is_empty() {
                let actor = session_actor(&service, &token, &origin).await?;
                service.start_enrolment(&actor).await
            } else {
                service.start_enrolment_with_code(&token, code.trim(), &origin).await
            }
        })
        .await?;
        Ok(Response::new(pb::StartPasskeyEnrolmentResponse {
            enrolment_id: started.id.to_string(),
            passkey_creation_options_json: started.passkey_options.unwrap_or_default(),
            expires_at: Some(timestamp(started.expires_at)),
        }))
    }

    #[tracing::instrument(name = "FinishPasskeyEnrolment", skip_all)]
    async fn finish_passkey_enrolment(
        &self,
        request: Request<pb::FinishPasskeyEnrolmentRequest>,
    ) -> Result<Response<pb::FinishPasskeyEnrolmentResponse>, Status> {
        let (token, origin) = self.caller(&request)?;
        let body = request.into_inner();
        let id = uuid::Uuid::parse_str(body.enrolment_id.trim()).map_err(|_| {
            invalid("enrolment_id", "INVALID_ARGUMENT", "StartPasskeyEnrolment's enrolment_id is required")
        })?;
        if body.passkey_credential_json.is_empty() {
            let why = "the authenticator's answer (credential.toJSON()) is required";
            return Err(invalid("passkey_credential_json", "INVALID_ARGUMENT", why).into());
        }
        let service = self.service.clone();
        let passkey_id = detached(async move {
            // A session, or (for a ceremony an enrolment code opened) the personal token: the service checks which.
            let actor = match service.bearer(&token, &origin, None).await? {
                Bearer::Actor(actor) => actor,
                Bearer::Disabled { .. } => return Err(ServiceError::SupervisorDisabled),
            };
            service.finish_enrolment(&actor, id, &body.passkey_credential_json, &body.label).await
        })
        .await?;
        Ok(Response::new(pb::FinishPasskeyEnrolmentResponse { passkey_id: passkey_id.to_string() }))
    }
}

/// The person a session token names (a personal token is refused: enrolling a passkey needs a second factor first).
async fn session_actor(
    service: &SignInService,
    token: &str,
    origin: &AccessContext,
) -> Result<crate::domain::Actor, ServiceError> {
    match service.bearer(token, origin, None).await? {
        Bearer::Actor(actor) if actor.session.is_some() => Ok(actor),
        Bearer::Actor(_) => Err(ServiceError::SessionRequired),
        Bearer::Disabled { .. } => Err(ServiceError::SupervisorDisabled),
    }
}
