//! `POST /streams/{stream}` (one stream) and `POST /streams` (several streams, all or
//! nothing).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use strata::{AppendError, AppendRequest, AppendResult, ExpectedRevision, InvalidInput};
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::json::{body_bytes, parse, parse_bounded, parse_events, too_many_events, EventInput};
use super::params::{parse_expected, Params, StreamPath};
use super::HttpState;
use crate::auth::StreamAction;
use crate::metrics::{Api, Outcome};

/// Where an append's events were recorded.
#[derive(Debug, Serialize)]
pub struct AppendResponse {
    /// The stream.
    pub stream: String,
    /// Revision of the first event (the next revision if there were none).
    pub first_revision: u64,
    /// Revision of the last event, `null` if there were none.
    pub last_revision: Option<u64>,
    /// Revision of each event, in order.
    pub revisions: Vec<u64>,
    /// Global position of each event, in order.
    pub positions: Vec<u64>,
    /// Id of each event, in order (generated ones included).
    pub ids: Vec<Uuid>,
    /// Position of the last event (pass it as `min_position` to read your write).
    pub position: Option<u64>,
    /// The stream's revision now: pass it as `expected_revision` to append again.
    pub current_revision: Value,
}

impl AppendResponse {
    fn new(result: AppendResult, ids: Vec<Uuid>) -> AppendResponse {
        let revisions: Vec<u64> = (0..result.positions.len() as u64)
            .map(|i| result.first_revision + i)
            .collect();
        AppendResponse {
            last_revision: revisions.last().copied(),
            position: result.last_position().map(|p| p.0),
            positions: result.positions.iter().map(|p| p.0).collect(),
            current_revision: super::error::current_json(result.current_revision),
            first_revision: result.first_revision,
            stream: result.stream,
            revisions,
            ids,
        }
    }
}

/// `POST /streams/{stream}?expected_revision=…`: the body is one event or an array.
pub async fn append(
    State(http): State<HttpState>,
    caller: Caller,
    StreamPath(stream): StreamPath,
    mut params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AppendResponse>, ApiError> {
    let expected = params.take_expected()?;
    params.finish()?;
    let body = body_bytes(body, http.state.options.max_request_body)?;
    let events = parse_events(&body, http.state.store.limits().append_events_max)?;
    let request = AppendRequest::new(stream, expected, events);
    let mut responses = record(&http, &caller, vec![request]).await?;
    Ok(Json(responses.swap_remove(0)))
}

/// One stream's part of a multi-stream append body. Its events stay raw JSON until the
/// parts are counted, and are then parsed against what is left of the event limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamAppendInput<'a> {
    stream: String,
    #[serde(default)]
    expected_revision: Option<Value>,
    #[serde(borrow)]
    events: &'a RawValue,
}

/// The body of `POST /streams`; `appends` is parsed once it is known to hold no more
/// parts than a multi-stream append may have.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiAppendInput<'a> {
    #[serde(borrow)]
    appends: &'a RawValue,
}

/// The answer to `POST /streams`: one result per stream, in request order.
#[derive(Debug, Serialize)]
pub struct MultiAppendResponse {
    /// Each stream's result.
    pub results: Vec<AppendResponse>,
}

/// `POST /streams`: `{ "appends": [ { "stream", "expected_revision", "events" } ] }`,
/// all or nothing.
pub async fn append_multi(
    State(http): State<HttpState>,
    caller: Caller,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MultiAppendResponse>, ApiError> {
    params.finish()?;
    let body = body_bytes(body, http.state.options.max_request_body)?;
    let limits = http.state.store.limits();
    let input: MultiAppendInput<'_> = parse(&body)?;
    let parts: Vec<StreamAppendInput<'_>> =
        parse_bounded(input.appends.get().as_bytes(), limits.append_streams_max).map_err(
            |count| {
                ApiError::Append(AppendError::Invalid(InvalidInput::TooManyStreams {
                    count,
                    max: limits.append_streams_max,
                }))
            },
        )??;
    let mut requests = Vec::with_capacity(parts.len());
    let mut events_so_far = 0usize;
    for part in parts {
        let expected = match &part.expected_revision {
            None => ExpectedRevision::Any,
            Some(Value::Number(n)) => parse_expected(&n.to_string())?,
            Some(Value::String(text)) => parse_expected(text)?,
            Some(other) => parse_expected(&other.to_string())?,
        };
        // Every part counts against the one limit on the append's events.
        let left = limits.append_events_max.saturating_sub(events_so_far);
        let inputs: Vec<EventInput> = parse_bounded(part.events.get().as_bytes(), left)
            .map_err(|count| too_many_events(events_so_far + count, limits.append_events_max))??;
        events_so_far += inputs.len();
        let events = inputs
            .into_iter()
            .enumerate()
            .map(|(index, input)| input.into_event(index))
            .collect::<Result<Vec<_>, _>>()?;
        requests.push(AppendRequest::new(part.stream, expected, events));
    }
    let results = record(&http, &caller, requests).await?;
    Ok(Json(MultiAppendResponse { results }))
}

/// Appends and records the outcome in the metrics.
async fn record(
    http: &HttpState,
    caller: &Caller,
    requests: Vec<AppendRequest>,
) -> Result<Vec<AppendResponse>, ApiError> {
    // Every stream of the append must be writable: all or nothing.
    for request in &requests {
        caller
            .authorize_stream(http, StreamAction::Write, &request.stream)
            .await?;
    }

    let ids: Vec<Vec<Uuid>> = requests
        .iter()
        .map(|r| r.events.iter().map(|e| e.id).collect())
        .collect();
    let events: usize = ids.iter().map(Vec::len).sum();
    let started = Instant::now();
    let result = http.state.store.append_multi(requests).await;
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(AppendError::WrongExpectedRevision { .. })
        | Err(AppendError::IdempotencyConflict { .. }) => Outcome::Conflict,
        Err(AppendError::Storage(_)) => Outcome::Error,
        Err(_) => Outcome::Rejected,
    };
    http.state
        .metrics
        .record_append(Api::Http, outcome, events, started.elapsed());
    for appended in result.iter().flatten() {
        http.state.auth.appended(&appended.stream);
    }
    Ok(result?
        .into_iter()
        .zip(ids)
        .map(|(result, ids)| AppendResponse::new(result, ids))
        .collect())
}
