//! Writes must say their body is JSON.

use axum::extract::Request;
use axum::http::{header, Method};

use crate::http::error::ApiError;

/// Whether `method` carries a body that changes data and so must be JSON. `DELETE`
/// is checked only when it has a body: a browser never sends one cross-site without a
/// preflight, and the API's deletes take their options in the query.
fn must_be_json(request: &Request) -> bool {
    match *request.method() {
        Method::POST | Method::PUT | Method::PATCH => true,
        Method::DELETE => has_body(request),
        _ => false,
    }
}

fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|len| len.trim() != "0")
}

/// Whether a `Content-Type` value is `application/json`, with any parameters
/// (`; charset=utf-8`) and in any case.
pub fn is_json(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// `Err(415)` for a write whose body is not declared as JSON.
pub fn check(request: &Request) -> Result<(), ApiError> {
    if !must_be_json(request) {
        return Ok(());
    }
    let declared = request.headers().get(header::CONTENT_TYPE);
    match declared.and_then(|v| v.to_str().ok()) {
        Some(value) if is_json(value) => Ok(()),
        other => Err(ApiError::UnsupportedMediaType {
            method: request.method().to_string(),
            found: other
                .map(str::to_owned)
                .or_else(|| declared.map(|_| "(not text)".to_owned())),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_with_parameters_and_any_case_is_json() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("application/jsonp"));
        assert!(!is_json(""));
    }
}
