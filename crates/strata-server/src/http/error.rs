//! Errors of the HTTP API and how they look on the wire: a status code and
//! `{ "error": { "code", "message", … } }`.
//!
//! `code` is a stable snake_case identifier clients can match on; `message` is for
//! people. Some errors add fields next to them (a conflict's `expected` and `actual`).

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use strata::{
    AppendError, CurrentRevision, ExpectedRevision, FilterError, InvalidInput, ReadError,
    StorageError,
};
use uuid::Uuid;

/// What `Retry-After` says when the store is too busy to start a scan.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed: bad JSON, a bad query parameter, a missing field.
    #[error("{message}")]
    BadRequest {
        /// Stable identifier, e.g. `malformed_json`.
        code: &'static str,
        /// What is wrong, for people.
        message: String,
    },
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than the limit of {max} bytes")]
    BodyTooLarge {
        /// The limit, in bytes (`ServerOptions::max_request_body`).
        max: usize,
    },
    /// The request body stopped arriving (`ServerOptions::http_body_read_timeout`).
    #[error("the request body did not arrive in time (no progress for {} ms)", timeout.as_millis())]
    BodyReadTimeout {
        /// The timeout.
        timeout: Duration,
    },
    /// An append, delete or metadata write failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A read or a live stream failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A filter's regular expression does not compile.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The log did not reach `min_position` within the wait limit.
    #[error(
        "the log did not reach position {min_position} within {} ms (head: {})",
        waited.as_millis(),
        head.map_or_else(|| "none".to_owned(), |h| h.to_string())
    )]
    PositionNotReached {
        /// The position asked for.
        min_position: u64,
        /// The head when the wait gave up.
        head: Option<u64>,
        /// How long the request waited.
        waited: Duration,
    },
    /// The client already holds as many live streams as it may.
    #[error("this client already has {max} live streams open, the limit")]
    TooManyLiveStreams {
        /// The limit (`ServerOptions::max_subscriptions_per_connection`).
        max: usize,
    },
    /// The server is shutting down and takes no new long-lived work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// No route matches the request's path.
    #[error("no such resource: {path}")]
    NoRoute {
        /// The path asked for.
        path: String,
    },
    /// A write's body is not declared as JSON (a cross-site form post, say).
    #[error(
        "{method} requests must have `Content-Type: application/json` (found: {})",
        found.as_deref().unwrap_or("none")
    )]
    UnsupportedMediaType {
        /// The request's method.
        method: String,
        /// The `Content-Type` the request had.
        found: Option<String>,
    },
    /// The `Host` header names neither a loopback address, `localhost`, nor an allowed
    /// host, on a server that is not over TLS (a DNS-rebinding page, say).
    #[error(
        "the Host {host:?} is not allowed: without TLS this server answers only to loopback \
         addresses, localhost and the names given with --allowed-host"
    )]
    HostNotAllowed {
        /// The host named.
        host: String,
    },
    /// No credentials, or credentials that do not authenticate (the same answer either
    /// way).
    #[error("authentication required: send HTTP Basic credentials or a bearer token")]
    Unauthenticated,
    /// The authenticated user may not do this.
    #[error("access denied: {operation} is not allowed{}", stream.as_ref().map(|s| format!(" on stream {s:?}")).unwrap_or_default())]
    AccessDenied {
        /// What was refused.
        operation: &'static str,
        /// On which stream.
        stream: Option<String>,
    },
    /// A user operation failed.
    #[error(transparent)]
    Users(crate::auth::UserError),
    /// A token operation failed.
    #[error(transparent)]
    Tokens(crate::auth::tokens::TokenError),
    /// A CORS preflight from an origin that is not allowed.
    #[error("cross-origin requests from {origin:?} are not allowed (see --cors-origin)")]
    CorsOriginNotAllowed {
        /// The requesting page's origin.
        origin: String,
    },
}

impl ApiError {
    /// A 400 with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The status, the code and any extra fields of the error body.
    fn parts(&self) -> (StatusCode, &'static str, Map<String, Value>) {
        let mut extra = Map::new();
        let (status, code) = match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, *code),
            ApiError::BodyTooLarge { max } => {
                extra.insert("max_bytes".into(), json!(max));
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            ApiError::BodyReadTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_read_timeout"),
            ApiError::Append(error) => append_parts(error, &mut extra),
            ApiError::Read(error) => read_parts(error, &mut extra),
            ApiError::Filter(error) => {
                if let Some(pattern) = error.pattern() {
                    extra.insert("pattern".into(), json!(pattern));
                }
                let code = match error {
                    FilterError::RegexTooLong { .. } => "filter_regex_too_long",
                    FilterError::RegexTooBig { .. } => "filter_regex_too_big",
                    _ => "invalid_filter",
                };
                (StatusCode::UNPROCESSABLE_ENTITY, code)
            }
            ApiError::PositionNotReached {
                min_position, head, ..
            } => {
                extra.insert("min_position".into(), json!(min_position));
                extra.insert("head".into(), json!(head));
                (StatusCode::GATEWAY_TIMEOUT, "position_not_reached")
            }
            ApiError::TooManyLiveStreams { max } => {
                extra.insert("max".into(), json!(max));
                (StatusCode::TOO_MANY_REQUESTS, "too_many_live_streams")
            }
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::HostNotAllowed { .. } => (StatusCode::FORBIDDEN, "host_not_allowed"),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Users(error) => user_parts(error, &mut extra),
            ApiError::Tokens(error) => token_parts(error),
            ApiError::AccessDenied { stream, .. } => {
                if let Some(stream) = stream {
                    extra.insert("stream".into(), json!(stream));
                }
                (StatusCode::FORBIDDEN, "access_denied")
            }
            ApiError::CorsOriginNotAllowed { .. } => {
                (StatusCode::FORBIDDEN, "cors_origin_not_allowed")
            }
        };
        (status, code, extra)
    }

    /// How long a client should wait before it tries again, for errors that pass by
    /// themselves (sent as `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Read(ReadError::Busy { .. }) => Some(BUSY_RETRY_AFTER),
            _ => None,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The storage failure behind this error, if it is one. Its details (file paths,
    /// offsets, database messages) are for the server's log, never for clients.
    fn storage_failure(&self) -> Option<&StorageError> {
        match self {
            ApiError::Append(AppendError::Storage(storage))
            | ApiError::Read(ReadError::Storage(storage)) => Some(storage),
            _ => None,
        }
    }

    /// The error object (`{ "code", "message", … }`) without the outer `error` key, as
    /// live streams send it in-band.
    ///
    /// A server-side failure gets a fresh `error_id`: the object carries it with a
    /// message that hides internal details, and the log gets the details under the
    /// same id (inside the request's span, so next to its request id).
    pub fn body(&self) -> Value {
        let (status, code, mut extra) = self.parts();
        let mut object = Map::new();
        object.insert("code".into(), json!(code));
        if status.is_server_error() {
            let error_id = Uuid::new_v4();
            let message = match self.storage_failure() {
                Some(storage) => {
                    tracing::error!(%error_id, status = status.as_u16(), error = %storage, "storage failure");
                    format!(
                        "{} (error id {error_id}; the server log has the details)",
                        crate::error::storage_summary(storage)
                    )
                }
                None => {
                    tracing::warn!(%error_id, status = status.as_u16(), error = %self, "request failed");
                    format!("{self} (error id {error_id})")
                }
            };
            object.insert("message".into(), json!(message));
            object.insert("error_id".into(), json!(error_id));
        } else {
            object.insert("message".into(), json!(self.to_string()));
        }
        object.append(&mut extra);
        Value::Object(object)
    }
}

fn user_parts(
    error: &crate::auth::UserError,
    extra: &mut Map<String, Value>,
) -> (StatusCode, &'static str) {
    use crate::auth::UserError as E;
    match error {
        E::NotFound { login } => {
            extra.insert("login".into(), json!(login));
            (StatusCode::NOT_FOUND, "user_not_found")
        }
        E::AlreadyExists { login } => {
            extra.insert("login".into(), json!(login));
            (StatusCode::CONFLICT, "user_exists")
        }
        E::Conflict { login } => {
            extra.insert("login".into(), json!(login));
            (StatusCode::CONFLICT, "user_conflict")
        }
        E::WrongPassword { .. } => (StatusCode::BAD_REQUEST, "wrong_current_password"),
        E::Invalid { field, .. } => {
            extra.insert("field".into(), json!(field));
            (StatusCode::BAD_REQUEST, "invalid_user")
        }
        E::Read(ReadError::Storage(_)) | E::Append(AppendError::Storage(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
        }
        E::Corrupt { .. } | E::Password(_) | E::Read(_) | E::Append(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "user_operation_failed")
        }
    }
}

fn token_parts(error: &crate::auth::tokens::TokenError) -> (StatusCode, &'static str) {
    use crate::auth::tokens::TokenError as E;
    match error {
        E::NotFound { .. } => (StatusCode::NOT_FOUND, "token_not_found"),
        E::InvalidDescription => (StatusCode::BAD_REQUEST, "invalid_token"),
        E::User(_) | E::Corrupt { .. } | E::Random | E::Read(_) | E::Append(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "token_operation_failed")
        }
    }
}

/// The challenge a 401 carries: Basic credentials or a bearer token.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"strata\", Bearer realm=\"strata\"";

/// Marks a response whose failure [`ApiError::body`] already logged (with its error
/// id), so the request log does not log it a second time.
#[derive(Clone, Copy, Debug)]
pub struct FailureLogged;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(json!({ "error": self.body() }))).into_response();
        if status.is_server_error() {
            response.extensions_mut().insert(FailureLogged);
        }
        if matches!(self, ApiError::Unauthenticated) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        if let Some(after) = self.retry_after() {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(after.as_secs().max(1)),
            );
        }
        response
    }
}

/// The wire form of an expected revision, as the `expected_revision` parameter takes it.
pub fn expected_json(expected: ExpectedRevision) -> Value {
    match expected {
        ExpectedRevision::Any => json!("any"),
        ExpectedRevision::NoStream => json!("no_stream"),
        ExpectedRevision::StreamExists => json!("stream_exists"),
        ExpectedRevision::Exact(revision) => json!(revision),
    }
}

/// The wire form of a stream's state: its last revision, or `"no_stream"`.
pub fn current_json(current: CurrentRevision) -> Value {
    match current {
        CurrentRevision::NoStream => json!("no_stream"),
        CurrentRevision::Current(revision) => json!(revision),
    }
}

fn append_parts(error: &AppendError, extra: &mut Map<String, Value>) -> (StatusCode, &'static str) {
    match error {
        AppendError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => {
            extra.insert("stream".into(), json!(stream));
            extra.insert("expected".into(), expected_json(*expected));
            extra.insert("actual".into(), current_json(*actual));
            (StatusCode::CONFLICT, "wrong_expected_revision")
        }
        AppendError::StreamDeleted { stream } => {
            extra.insert("stream".into(), json!(stream));
            (StatusCode::GONE, "stream_deleted")
        }
        AppendError::IdempotencyConflict { stream, event_id } => {
            extra.insert("stream".into(), json!(stream));
            extra.insert("event_id".into(), json!(event_id));
            (StatusCode::CONFLICT, "idempotency_conflict")
        }
        AppendError::Invalid(invalid) => invalid_parts(invalid),
        AppendError::Storage(storage) => storage_parts(storage),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "append_failed"),
    }
}

fn read_parts(error: &ReadError, extra: &mut Map<String, Value>) -> (StatusCode, &'static str) {
    match error {
        ReadError::StreamNotFound { stream } => {
            extra.insert("stream".into(), json!(stream));
            (StatusCode::NOT_FOUND, "stream_not_found")
        }
        ReadError::StreamDeleted { stream } => {
            extra.insert("stream".into(), json!(stream));
            (StatusCode::GONE, "stream_deleted")
        }
        ReadError::Busy { running, .. } => {
            extra.insert("running_scans".into(), json!(running));
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        }
        ReadError::ScanBudgetSpent { next, .. } => {
            // Reads that page answer a short page instead; this is for any other.
            extra.insert("next_from".into(), json!(next.0));
            (StatusCode::SERVICE_UNAVAILABLE, "scan_budget_spent")
        }
        ReadError::Invalid(invalid) => invalid_parts(invalid),
        ReadError::Storage(storage) => storage_parts(storage),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "read_failed"),
    }
}

/// Limits on size are 413; every other broken rule is 400.
fn invalid_parts(invalid: &InvalidInput) -> (StatusCode, &'static str) {
    use InvalidInput as I;
    match invalid {
        I::EventTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "event_too_large"),
        I::AppendTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "append_too_large"),
        I::TooManyEvents { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events"),
        I::TooManyStreams { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_streams"),
        I::StreamNameTooLong { .. } => (StatusCode::BAD_REQUEST, "stream_name_too_long"),
        I::EmptyStreamName | I::InvalidStreamName { .. } => {
            (StatusCode::BAD_REQUEST, "invalid_stream_name")
        }
        I::ReservedStreamName { .. } => (StatusCode::BAD_REQUEST, "reserved_stream_name"),
        I::EventTypeTooLong { .. } => (StatusCode::BAD_REQUEST, "event_type_too_long"),
        I::EmptyEventType { .. } => (StatusCode::BAD_REQUEST, "invalid_event_type"),
        I::ReservedEventType { .. } => (StatusCode::BAD_REQUEST, "reserved_event_type"),
        I::DuplicateStream { .. } => (StatusCode::BAD_REQUEST, "duplicate_stream"),
        I::InvalidMetadata { .. } => (StatusCode::BAD_REQUEST, "invalid_metadata"),
        I::InvalidRead { .. } => (StatusCode::BAD_REQUEST, "invalid_read"),
        _ => (StatusCode::BAD_REQUEST, "invalid_input"),
    }
}

/// A full disk is 507 and a store that may come back (a PostgreSQL outage, a closing
/// store) is 503, so clients know a retry can help; anything else is 500.
fn storage_parts(storage: &StorageError) -> (StatusCode, &'static str) {
    match storage {
        StorageError::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
        StorageError::Closed => (StatusCode::SERVICE_UNAVAILABLE, "store_closed"),
        error if error.is_transient() => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
    }
}
