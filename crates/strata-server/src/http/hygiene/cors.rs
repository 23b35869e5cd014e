//! CORS: off unless origins are listed; then those origins, and only those, get the
//! `Access-Control-Allow-*` headers and an answer to their preflights.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// Methods a listed origin may use.
const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE";

/// Request headers a listed origin may send (`authorization` for the credentials to
/// come).
const ALLOWED_HEADERS: &str = "content-type, authorization, accept";

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The origins allowed to call the API from a browser.
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins {
    /// As given, without a trailing slash; compared without regard to case (scheme
    /// and host are case-insensitive, and ports are digits).
    origins: Vec<String>,
}

impl AllowedOrigins {
    /// The origins `origins` lists (`https://app.example.com`, with a port if not the
    /// scheme's default).
    pub fn new(origins: &[String]) -> AllowedOrigins {
        AllowedOrigins {
            origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    /// The request's `Origin`, if it is a listed one.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }
}

/// Whether `request` is a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
pub fn is_preflight(request: &Request) -> bool {
    let headers = request.headers();
    request.method() == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: 204 with the allowed methods and headers for a listed
/// origin, 403 without any CORS header for any other.
pub fn preflight(request: &Request, origin: Option<HeaderValue>) -> Response {
    let Some(origin) = origin else {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return ApiError::CorsOriginNotAllowed { origin }.into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(PREFLIGHT_MAX_AGE.as_secs()),
    );
    decorate(response, Some(origin))
}

/// `response` with `Access-Control-Allow-Origin` for a listed origin, and
/// `Vary: Origin` so that a cache does not hand this answer to another origin.
pub fn decorate(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}
