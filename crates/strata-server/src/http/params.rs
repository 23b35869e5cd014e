//! Request inputs that are not the body: the stream in the path and the query
//! parameters, each failing with a JSON [`ApiError`] instead of axum's plain-text
//! rejections.

use std::collections::VecDeque;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use strata::{Direction, ExpectedRevision, Filter};

use super::error::ApiError;

/// The name that stands for the global log in paths.
pub const ALL: &str = strata::stream::ALL_STREAM;

/// The stream named in the path (percent-decoded; `$all` is the global log).
#[derive(Debug)]
pub struct StreamPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(stream) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
        Ok(StreamPath(stream))
    }
}

/// The query parameters, taken one by one; a parameter nobody took is an error, so a
/// typo (`limt=5`) is not silently ignored.
#[derive(Debug, Default)]
pub struct Params {
    pairs: VecDeque<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
        Ok(Params {
            pairs: pairs.into(),
        })
    }
}

impl Params {
    /// Parameters from `pairs` (for tests and internal callers).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params {
            pairs: pairs.into(),
        }
    }

    /// Every value of `key`, in order.
    pub fn take_all(&mut self, key: &str) -> Vec<String> {
        let (taken, kept) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition::<VecDeque<_>, _>(|(k, _)| k == key);
        self.pairs = kept;
        taken.into_iter().map(|(_, value)| value).collect()
    }

    /// The value of `key`; giving it twice is an error.
    pub fn take(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        let mut values = self.take_all(key);
        match values.len() {
            0 | 1 => Ok(values.pop()),
            _ => Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter {key:?} is given more than once"),
            )),
        }
    }

    /// The value of `key` as a number.
    pub fn take_u64(&mut self, key: &str) -> Result<Option<u64>, ApiError> {
        self.take(key)?
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("query parameter {key}={text:?} is not a non-negative integer"),
                    )
                })
            })
            .transpose()
    }

    /// The value of `key` as a flag: `true`/`false` (`1`/`0`), or just present.
    pub fn take_bool(&mut self, key: &str) -> Result<bool, ApiError> {
        match self.take(key)?.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter {key}={other:?} is not true or false"),
            )),
        }
    }

    /// `direction=forwards|backwards` (default forwards).
    pub fn take_direction(&mut self) -> Result<Direction, ApiError> {
        match self.take("direction")?.as_deref() {
            None | Some("forwards") | Some("forward") => Ok(Direction::Forwards),
            Some("backwards") | Some("backward") => Ok(Direction::Backwards),
            Some(other) => Err(ApiError::bad_request(
                "invalid_query",
                format!("direction={other:?}: use forwards or backwards"),
            )),
        }
    }

    /// `expected_revision=any|no_stream|stream_exists|<n>` (default any).
    pub fn take_expected(&mut self) -> Result<ExpectedRevision, ApiError> {
        match self.take("expected_revision")? {
            None => Ok(ExpectedRevision::Any),
            Some(text) => parse_expected(&text),
        }
    }

    /// The filter parameters of `$all`: `stream`, `stream_prefix`, `category`,
    /// `event_type`, `event_type_prefix`, `stream_regex`, `event_type_regex` (each
    /// repeatable) and `exclude_system`.
    pub fn take_filter(&mut self) -> Result<Filter, ApiError> {
        let mut filter = Filter::new();
        for value in self.take_all("stream") {
            filter = filter.stream(value);
        }
        for value in self.take_all("stream_prefix") {
            filter = filter.stream_prefix(value);
        }
        for value in self.take_all("category") {
            filter = filter.category(value);
        }
        for value in self.take_all("event_type") {
            filter = filter.event_type(value);
        }
        for value in self.take_all("event_type_prefix") {
            filter = filter.event_type_prefix(value);
        }
        for value in self.take_all("stream_regex") {
            filter = filter.stream_regex(&value)?;
        }
        for value in self.take_all("event_type_regex") {
            filter = filter.event_type_regex(&value)?;
        }
        if self.take_bool("exclude_system")? {
            filter = filter.exclude_system_events();
        }
        Ok(filter)
    }

    /// Fails if a parameter was given that the endpoint does not take.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.front() {
            None => Ok(()),
            Some((key, _)) => Err(ApiError::bad_request(
                "invalid_query",
                format!("unknown query parameter {key:?} for this endpoint"),
            )),
        }
    }
}

/// Parses an expected revision: `any`, `no_stream`, `stream_exists` or a revision
/// number (`no-stream` and `stream-exists` are accepted too).
pub fn parse_expected(text: &str) -> Result<ExpectedRevision, ApiError> {
    match text {
        "any" => Ok(ExpectedRevision::Any),
        "no_stream" | "no-stream" => Ok(ExpectedRevision::NoStream),
        "stream_exists" | "stream-exists" => Ok(ExpectedRevision::StreamExists),
        _ => text.parse().map(ExpectedRevision::Exact).map_err(|_| {
            ApiError::bad_request(
                "invalid_expected_revision",
                format!(
                    "expected_revision={text:?}: use any, no_stream, stream_exists or a revision number"
                ),
            )
        }),
    }
}
