//! Authentication and authorization on the HTTP API.
//!
//! [`authenticate`] runs before every route: it reads the `Authorization` header
//! (`Basic …` or `Bearer …`) and the connection's TLS client certificate, answers 401
//! with `WWW-Authenticate` when they do not authenticate, and otherwise puts the
//! [`Principal`] in the request's extensions. Handlers take a [`Caller`] and
//! [authorize](Caller::authorize) what they are about to do: a refusal is 403
//! `access_denied`, or 401 `unauthenticated` for a client that sent no credentials.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::HttpState;
use crate::auth::{AuthorizeError, Operation, Presented, Principal, StreamAction};
use crate::metrics::Api;
use crate::tls::TlsSession;

/// Middleware: authenticates the request, or answers 401.
pub async fn authenticate(
    State(http): State<HttpState>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = &http.state.auth;
    let principal = if auth.enabled() {
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .map(|value| value.as_bytes().to_vec());
        let certificate = request
            .extensions()
            .get::<TlsSession>()
            .and_then(|session| session.peer_certificates.as_ref())
            .and_then(|chain| chain.first().cloned());
        let presented = Presented {
            authorization: authorization.as_deref(),
            certificate: certificate.as_ref(),
        };
        match auth.authenticate(Api::Http, presented, address).await {
            Ok(principal) => principal,
            Err(_) => return ApiError::Unauthenticated.into_response(),
        }
    } else {
        Principal::System
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Who made a request, for the handlers' authorization checks.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The principal [`authenticate`] found (anonymous if it did not run).
    pub principal: Principal,
    /// The client's address.
    pub address: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            principal: parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or(Principal::Anonymous),
            address: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0),
        })
    }
}

impl Caller {
    /// Whether this caller may do `action` on `stream` (or `$all`): the error to answer
    /// if not.
    pub async fn authorize_stream(
        &self,
        http: &HttpState,
        action: StreamAction,
        stream: &str,
    ) -> Result<(), ApiError> {
        self.authorize(http, Operation::Stream { action, stream })
            .await
    }

    /// Whether this caller may do `operation`: the error to answer if not.
    pub async fn authorize(
        &self,
        http: &HttpState,
        operation: Operation<'_>,
    ) -> Result<(), ApiError> {
        match http
            .state
            .auth
            .authorize(Api::Http, &self.principal, operation, self.address)
            .await
        {
            Ok(()) => Ok(()),
            Err(AuthorizeError::Denied(denied)) if denied.anonymous => {
                Err(ApiError::Unauthenticated)
            }
            Err(AuthorizeError::Denied(denied)) => Err(ApiError::AccessDenied {
                operation: denied.operation,
                stream: denied.stream,
            }),
            Err(AuthorizeError::Read(error)) => Err(ApiError::Read(error)),
        }
    }
}
