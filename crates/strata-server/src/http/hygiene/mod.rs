//! What every HTTP request passes before a route sees it, so that a web page in the
//! user's browser cannot use a server it can reach (on loopback, on the LAN):
//!
//! - [`host`]: without TLS, the `Host` must be loopback, `localhost` or an allowed name
//!   — a DNS-rebinding page names its own domain, and is refused;
//! - [`content_type`]: writes must declare JSON — a cross-site form can only send
//!   `text/plain`, `multipart/form-data` or `application/x-www-form-urlencoded`, and a
//!   page that sets JSON needs a CORS preflight;
//! - [`cors`]: no `Access-Control-Allow-*` header unless the page's origin is listed,
//!   and preflights answered for listed origins only.

pub mod content_type;
pub mod cors;
pub mod host;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::options::ServerOptions;

/// The HTTP hygiene rules of one server.
#[derive(Clone, Debug)]
pub struct Hygiene {
    /// `None`: any `Host` (the server is over TLS, so a rebinding page cannot
    /// complete a handshake for its own name).
    hosts: Option<host::AllowedHosts>,
    cors: cors::AllowedOrigins,
}

impl Hygiene {
    /// The rules `options` ask for.
    pub fn new(options: &ServerOptions) -> Hygiene {
        let hosts = match options.transport.tls() {
            Some(_) => None,
            None => Some(host::AllowedHosts::new(&options.allowed_hosts)),
        };
        Hygiene {
            hosts,
            cors: cors::AllowedOrigins::new(&options.cors_origins),
        }
    }
}

/// The middleware: refuses what the rules forbid (with the API's usual JSON error
/// body), answers preflights, and adds the CORS headers a listed origin gets.
pub async fn guard(State(hygiene): State<Arc<Hygiene>>, request: Request, next: Next) -> Response {
    if let Some(hosts) = &hygiene.hosts {
        if let Err(error) = hosts.check(&request) {
            return refuse(request, error).await;
        }
    }
    let origin = hygiene.cors.allowed_origin(request.headers());
    if cors::is_preflight(&request) {
        return cors::preflight(&request, origin);
    }
    if let Err(error) = content_type::check(&request) {
        return cors::decorate(refuse(request, error).await, origin);
    }
    cors::decorate(next.run(request).await, origin)
}

/// Most bytes of a refused request's body read before answering.
const REFUSED_BODY_DRAIN_BYTES_MAX: usize = 64 * 1024;

/// Longest a refused request's body is waited for before answering.
const REFUSED_BODY_DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Answers `error` after reading what the client sends of its (small) body: on HTTP/2
/// an answer that ends the stream while the client is still sending resets it, and
/// some clients (curl) then drop the answer too and report a protocol error.
async fn refuse(request: Request, error: ApiError) -> Response {
    let body = axum::body::to_bytes(request.into_body(), REFUSED_BODY_DRAIN_BYTES_MAX);
    // Too large or too slow: answer anyway; the client may miss it, nothing else.
    let _ = tokio::time::timeout(REFUSED_BODY_DRAIN_WAIT, body).await;
    error.into_response()
}
