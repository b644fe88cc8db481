//! Bearer-token authentication for the supervisor service, as a tower layer: it resolves
//! `authorization: Bearer <token>` (a session's `otpsess_…` token, or a personal or service token) to an
//! enabled supervisor and puts the [`Actor`] into the request's extensions, or answers `UNAUTHENTICATED` before
//! the service sees the call. Bad tokens count as failed sign-ins (docs/sign-in.md); a disabled supervisor's
//! call is audited under their name, at most once a minute. Health and reflection on the same listener are not
//! wrapped, so load balancers and grpcurl need no token. Where the call came from ([`super::access`]) is read
//! here, once, and carried on the [`crate::domain::Actor`], so every audit event of the call records it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use crate::domain::DisabledActor;
use crate::domain::audit::AccessContext;
use crate::domain::audit::AuditAction;
use crate::grpc::client_ip::TrustedProxies;
use crate::signin::{Bearer, SignInService};
use crate::supervision::SupervisionService;

/// Wraps a service with bearer-token authentication.
#[derive(Clone)]
pub struct AuthLayer {
    supervision: SupervisionService,
    sign_in: SignInService,
    trusted: TrustedProxies,
}

impl AuthLayer {
    /// Tokens are resolved by `sign_in` (sessions, lockout); refusals are counted by `supervision`; client
    /// addresses are read through `trusted` proxies.
    pub fn new(supervision: SupervisionService, sign_in: SignInService, trusted: TrustedProxies) -> Self {
        Self { supervision, sign_in, trusted }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { inner, layer: self.clone() }
    }
}

/// A service whose calls carry an authenticated [`Actor`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Authenticated<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The ready clone stays here; the one that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let action = action_of(request.uri().path());
            let access = super::access::context(&request, &layer.trusted);
            match authenticate(&layer, request.headers(), access, action).await {
                Ok(Bearer::Actor(actor)) => {
                    request.extensions_mut().insert(actor);
                    inner.call(request).await
                }
                Ok(Bearer::Disabled { actor, disabled_at, held_back }) => {
                    // Only for the refusal: the handler reads what the request named, audits it and refuses.
                    request.extensions_mut().insert(DisabledActor { actor, disabled_at, held_back });
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The audited action of a supervisor service method, from the request path.
fn action_of(path: &str) -> Option<AuditAction> {
    match path.rsplit('/').next()? {
        "LookupCode" => Some(AuditAction::LookupCode),
        "GetPhoneStatus" => Some(AuditAction::GetPhoneStatus),
        "UnlockPhone" => Some(AuditAction::UnlockPhone),
        "ListAuditEvents" => Some(AuditAction::ListAuditEvents),
        "VerifyAuditChain" => Some(AuditAction::VerifyAuditChain),
        "LiftSignInLock" => Some(AuditAction::SignInLockLifted),
        "SetPrefixGuard" => Some(AuditAction::PrefixGuardSet),
        _ => None,
    }
}

/// The bearer token of a call's `authorization` header.
pub(super) fn bearer(value: Option<&[u8]>) -> Result<String, Status> {
    let Some(value) = value else {
        return Err(Status::unauthenticated("missing `authorization: Bearer <token>`"));
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <token>`"))
}

async fn authenticate(
    layer: &AuthLayer,
    headers: &HeaderMap,
    access: AccessContext,
    action: Option<AuditAction>,
) -> Result<Bearer, Status> {
    let token = bearer(headers.get("authorization").map(|v| v.as_bytes())).inspect_err(|_| {
        layer.supervision.count_refusal(action, &crate::service::ServiceError::Unauthenticated);
    })?;
    // Detached like every flow: a client hanging up must not cancel the audit of a refused call.
    let (sign_in, supervision) = (layer.sign_in.clone(), layer.supervision.clone());
    Ok(super::detached(async move {
        sign_in.bearer(&token, &access, action).await.inspect_err(|e| supervision.count_refusal(action, e))
    })
    .await?)
}
