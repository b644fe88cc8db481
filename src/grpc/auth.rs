//! Bearer-token authentication for the supervisor service, as a tower layer: it resolves
//! `authorization: Bearer <token>` to an enabled supervisor and puts the [`Actor`] into the request's
//! extensions, or answers `UNAUTHENTICATED` before the service sees the call (a disabled supervisor's call is
//! audited under their name first). Health and reflection on the same listener are not wrapped, so load
//! balancers and grpcurl need no token. Where the call came from ([`super::access`]) is read here, once, and
//! carried on the [`Actor`], so every audit event of the call records it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use super::client_ip::TrustedProxies;
use crate::domain::Actor;
use crate::domain::audit::{AccessContext, AuditAction};
use crate::supervision::SupervisionService;

/// Wraps a service with bearer-token authentication.
#[derive(Clone)]
pub struct AuthLayer {
    supervision: SupervisionService,
    trusted_proxies: TrustedProxies,
}

impl AuthLayer {
    /// Tokens are resolved, and disabled supervisors' calls audited, by `supervision`; client addresses are read
    /// through `trusted_proxies`, as the front-line limits read them.
    pub fn new(supervision: SupervisionService, trusted_proxies: TrustedProxies) -> Self {
        Self { supervision, trusted_proxies }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { inner, supervision: self.supervision.clone(), trusted_proxies: self.trusted_proxies.clone() }
    }
}

/// A service whose calls carry an authenticated [`Actor`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    supervision: SupervisionService,
    trusted_proxies: TrustedProxies,
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
        let supervision = self.supervision.clone();
        let access = super::access::context(&request, &self.trusted_proxies);
        Box::pin(async move {
            let action = action_of(request.uri().path());
            match authenticate(&supervision, request.headers(), action, access).await {
                Ok(Ok(actor)) => {
                    request.extensions_mut().insert(actor);
                    inner.call(request).await
                }
                Ok(Err(disabled)) => {
                    // Only for the refusal: the handler reads what the request named, audits it and refuses.
                    request.extensions_mut().insert(disabled);
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
        _ => None,
    }
}

async fn authenticate(
    supervision: &SupervisionService,
    headers: &HeaderMap,
    action: Option<AuditAction>,
    access: AccessContext,
) -> Result<Result<Actor, crate::domain::DisabledActor>, Status> {
    let Some(value) = headers.get("authorization") else {
        supervision.count_refusal(action, &crate::service::ServiceError::Unauthenticated);
        return Err(Status::unauthenticated("missing `authorization: Bearer <token>`"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            supervision.count_refusal(action, &crate::service::ServiceError::Unauthenticated);
            Status::unauthenticated("the authorization header must be `Bearer <token>`")
        })?
        .to_owned();
    // Detached like every flow: a client hanging up must not cancel the audit of a refused call.
    let supervision = supervision.clone();
    Ok(super::detached(async move { supervision.authenticate(&token, action, access).await }).await?)
}
