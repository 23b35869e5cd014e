//! Authentication and authorization on the gRPC API.
//!
//! [`AuthLayer`] runs before every service: it reads the `authorization` metadata
//! (what the KurrentDB clients send: `Basic base64(login:password)`, or a bearer token)
//! and the connection's TLS client certificate, and either refuses the call with
//! UNAUTHENTICATED or puts the [`Principal`] in the request's extensions. Handlers then
//! take a [`Caller`] and ask it to [authorize](Caller::authorize) what they are about
//! to do; a refusal is PERMISSION_DENIED with KurrentDB's `exception: access-denied`
//! trailer, which the clients turn into their access-denied error.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};
use tower_service::Service;

use crate::auth::{Auth, AuthorizeError, Operation, Presented, Principal, StreamAction};
use crate::grpc::convert;
use crate::metrics::Api;
use crate::state::ServerState;
use crate::tls::TlsConnectInfo;

/// The layer that authenticates every gRPC call.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    /// The layer over `auth`.
    pub fn new(auth: Arc<Auth>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this call; the fresh one waits for the
        // next (tower's rule for services that are moved into a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            let address = peer_address(&request);
            let principal = if auth.enabled() {
                let authorization = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|value| value.as_bytes().to_vec());
                let certificate = request
                    .extensions()
                    .get::<TlsConnectInfo>()
                    .and_then(|info| info.session.peer_certificates.as_ref())
                    .and_then(|chain| chain.first().cloned());
                let presented = Presented {
                    authorization: authorization.as_deref(),
                    certificate: certificate.as_ref(),
                };
                match auth.authenticate(Api::Grpc, presented, address).await {
                    Ok(principal) => principal,
                    Err(_) => return Ok(unauthenticated().into_http()),
                }
            } else {
                Principal::System
            };
            request.extensions_mut().insert(principal);
            inner.call(request).await
        })
    }
}

fn peer_address<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo>()
                .and_then(|info| info.tcp.remote_addr)
        })
}

/// The answer to credentials that do not authenticate: the same whatever was wrong.
pub fn unauthenticated() -> Status {
    Status::unauthenticated("Bad authentication")
}

/// KurrentDB's refusal: PERMISSION_DENIED, `Access Denied`, `exception: access-denied`.
pub fn access_denied() -> Status {
    let mut status = Status::permission_denied("Access Denied");
    status
        .metadata_mut()
        .insert("exception", MetadataValue::from_static("access-denied"));
    status
}

/// Who made a call, for the handlers' authorization checks.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The principal [`AuthLayer`] authenticated (anonymous if the layer did not run).
    pub principal: Principal,
    /// The client's address.
    pub address: Option<SocketAddr>,
}

impl Caller {
    /// The caller of `request`.
    pub fn of<T>(request: &Request<T>) -> Caller {
        Caller {
            principal: request
                .extensions()
                .get::<Principal>()
                .cloned()
                .unwrap_or(Principal::Anonymous),
            address: crate::tls::client_address(request),
        }
    }

    /// Whether this caller may do `action` on `stream` (or `$all`): `Err` with the
    /// status to answer if not.
    pub async fn authorize_stream(
        &self,
        state: &ServerState,
        action: StreamAction,
        stream: &str,
    ) -> Result<(), Status> {
        self.authorize(state, Operation::Stream { action, stream })
            .await
    }

    /// Whether this caller may do `operation`: `Err` with the status to answer if not.
    pub async fn authorize(
        &self,
        state: &ServerState,
        operation: Operation<'_>,
    ) -> Result<(), Status> {
        match state
            .auth
            .authorize(Api::Grpc, &self.principal, operation, self.address)
            .await
        {
            Ok(()) => Ok(()),
            Err(AuthorizeError::Denied(_)) => Err(access_denied()),
            Err(AuthorizeError::Read(error)) => Err(convert::read_error(&error)),
        }
    }
}
