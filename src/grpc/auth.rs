//! Bearer-token authentication for the supervisor service, as a tower layer: it resolves
//! `authorization: Bearer <token>` to an enabled supervisor and puts the [`Actor`] into the request's
//! extensions, or answers `UNAUTHENTICATED` before the service sees the call. Health and reflection on the same
//! listener are not wrapped, so load balancers and grpcurl need no token.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use crate::domain::Actor;
use crate::store::SupervisionStore;
use crate::supervision::token;

/// Wraps a service with bearer-token authentication.
#[derive(Clone)]
pub struct AuthLayer {
    store: Arc<dyn SupervisionStore>,
}

impl AuthLayer {
    /// Tokens are checked against `store`.
    pub fn new(store: Arc<dyn SupervisionStore>) -> Self {
        Self { store }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { inner, store: Arc::clone(&self.store) }
    }
}

/// A service whose calls carry an authenticated [`Actor`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    store: Arc<dyn SupervisionStore>,
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
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            match authenticate(&*store, request.headers()).await {
                Ok(actor) => {
                    request.extensions_mut().insert(actor);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

async fn authenticate(store: &dyn SupervisionStore, headers: &HeaderMap) -> Result<Actor, Status> {
    let Some(value) = headers.get("authorization") else {
        return Err(Status::unauthenticated("missing `authorization: Bearer <token>`"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <token>`"))?;
    match store.actor_by_token(&token::hash(token)).await {
        Ok(Some(actor)) => Ok(actor),
        Ok(None) => {
            tracing::warn!(target: "audit", "supervisor call with an unknown or disabled token");
            Err(Status::unauthenticated("unknown or disabled token"))
        }
        Err(error) => {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "token lookup failed");
            Err(Status::unavailable("the service is temporarily unavailable"))
        }
    }
}
