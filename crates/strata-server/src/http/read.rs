//! Reads: `GET /streams/{stream}` (a stream, or `$all` with filters), `GET /streams`
//! (the list of streams), and the `min_position` wait they share (read-your-writes).

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use strata::{
    Direction, ListStreamsOptions, PageEnd, Position, ReadAllOptions, ReadStreamOptions,
    RecordedEvent,
};

use super::auth::Caller;
use super::error::ApiError;
use super::json::EventOutput;
use super::params::{Params, StreamPath, ALL};
use super::HttpState;
use crate::auth::StreamAction;
use crate::metrics::{Api, ApiLabels};

/// Events a read returns when it gives no `limit`.
pub const READ_EVENTS_DEFAULT: usize = 100;
/// Most events one read may ask for (400 above it); page for more.
pub const READ_EVENTS_MAX: usize = 4096;
/// Most bytes of event payloads (type, data, metadata) one read response carries; a
/// page is cut short at this size and `next_from` says where to go on.
pub const READ_RESPONSE_BYTES_MAX: usize = 32 << 20;
/// Streams a listing returns when it gives no `limit`, and the most it may ask for.
pub const LIST_STREAMS_MAX: usize = 10_000;

/// One page of events.
#[derive(Serialize)]
pub struct ReadResponse<'a> {
    /// The stream read (`$all` for the global log).
    stream: &'a str,
    /// `forwards` or `backwards`.
    direction: &'static str,
    /// The events, in the order read.
    events: Vec<EventOutput<'a>>,
    /// Pass as `from` (with the same other parameters) for the next page; `null` when
    /// this page reached the end. A filtered read of `$all` that examined its scan budget
    /// returns fewer events than `limit` (maybe none) and the position it reached here.
    next_from: Option<u64>,
}

/// `GET /streams/{stream}` and `GET /streams/$all`: a page of events.
///
/// Parameters: `direction` (`forwards`|`backwards`), `from` (first revision, or position
/// for `$all`, inclusive), `limit`, `min_position` (wait until the log reaches it), and
/// for `$all` the filters of [`Params::take_filter`].
pub async fn read(
    State(http): State<HttpState>,
    caller: Caller,
    StreamPath(stream): StreamPath,
    mut params: Params,
) -> Result<axum::response::Response, ApiError> {
    let direction = params.take_direction()?;
    let from = params.take_u64("from")?;
    let limit = take_limit(&mut params)?;
    let min_position = params.take_u64("min_position")?;
    let filter = if stream == ALL {
        Some(params.take_filter()?)
    } else {
        None
    };
    params.finish()?;
    caller
        .authorize_stream(&http, StreamAction::Read, &stream)
        .await?;
    wait_for_position(&http, min_position).await?;
    let (events, scan_stopped_at) = match filter {
        Some(filter) => {
            let options = ReadAllOptions {
                direction,
                from: from.map(Position),
                limit,
                filter,
                scan_budget: http.state.options.scan_budget,
            };
            let read = http.state.store.read_all_page(options).await?;
            // A filtered read cut short by its scan budget: a short page, and the
            // position the scan reached as `next_from`.
            let stopped_at = match read.end {
                PageEnd::ScanBudget => read.next.map(|position| position.0),
                _ => None,
            };
            (read.events, stopped_at)
        }
        None => {
            let options = ReadStreamOptions {
                direction,
                from,
                limit,
            };
            (http.state.store.read_stream(&stream, options).await?, None)
        }
    };
    let page = page(&stream, direction, limit, &events, scan_stopped_at);
    http.state
        .metrics
        .events_read
        .get_or_create(&ApiLabels { api: Api::Http })
        .inc_by(page.events.len() as u64);
    Ok(axum::response::IntoResponse::into_response(Json(page)))
}

fn take_limit(params: &mut Params) -> Result<usize, ApiError> {
    match params.take_u64("limit")? {
        None => Ok(READ_EVENTS_DEFAULT),
        Some(0) => Err(ApiError::bad_request(
            "invalid_query",
            "limit must be at least 1",
        )),
        Some(n) if n > READ_EVENTS_MAX as u64 => Err(ApiError::bad_request(
            "limit_too_large",
            format!("limit={n} is over the maximum of {READ_EVENTS_MAX}; page with next_from"),
        )),
        Some(n) => Ok(n as usize),
    }
}

/// The response for `events`, cut at [`READ_RESPONSE_BYTES_MAX`], with where the next
/// page starts: after the last event kept if the page is full or was cut, else where a
/// scan cut short by its budget stopped (`scan_stopped_at`), else nowhere (the end).
fn page<'a>(
    stream: &'a str,
    direction: Direction,
    limit: usize,
    events: &'a [RecordedEvent],
    scan_stopped_at: Option<u64>,
) -> ReadResponse<'a> {
    let mut bytes = 0;
    // Always at least one event, so a huge event cannot stall paging.
    let kept = events
        .iter()
        .take_while(|event| {
            let first = bytes == 0;
            bytes += event.event_type.len() + event.data.len() + event.metadata.len() + 1;
            first || bytes <= READ_RESPONSE_BYTES_MAX
        })
        .count();
    let cut = kept < events.len();
    let events = &events[..kept];
    let next_from = match (cut || kept == limit, events.last()) {
        (true, Some(last)) => {
            let at = if stream == ALL {
                last.position.0
            } else {
                last.revision
            };
            match direction {
                Direction::Forwards => at.checked_add(1),
                Direction::Backwards => at.checked_sub(1),
            }
        }
        _ => scan_stopped_at,
    };
    ReadResponse {
        stream,
        direction: match direction {
            Direction::Forwards => "forwards",
            Direction::Backwards => "backwards",
        },
        events: events.iter().map(EventOutput::new).collect(),
        next_from,
    }
}

/// Waits until the log's head is at or past `min_position` (read-your-writes), at most
/// `ServerOptions::max_wait_for_position`.
pub async fn wait_for_position(
    http: &HttpState,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    let Some(min_position) = min_position else {
        return Ok(());
    };
    let mut head = http.state.store.backend().watch_head();
    let reached = |head: &Option<Position>| head.is_some_and(|p| p.0 >= min_position);
    let max_wait = http.state.options.max_wait_for_position;
    let started = Instant::now();
    let wait = async {
        tokio::select! {
            result = head.wait_for(reached) => result.map(|_| ()).map_err(|_| ApiError::ShuttingDown),
            () = http.state.shutting_down() => Err(ApiError::ShuttingDown),
        }
    };
    match tokio::time::timeout(max_wait, wait).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::PositionNotReached {
            min_position,
            head: http.state.store.head().map(|p| p.0),
            waited: started.elapsed(),
        }),
    }
}

/// One entry of `GET /streams`.
#[derive(Serialize)]
struct StreamEntry {
    stream: String,
    last_revision: u64,
    visible_events: u64,
}

/// The answer to `GET /streams`.
#[derive(Serialize)]
pub struct ListResponse {
    streams: Vec<StreamEntry>,
    /// Pass as `after` for the next page; `null` when the list is complete.
    next_after: Option<String>,
}

/// `GET /streams?prefix=&after=&limit=&include_system=&min_position=`: streams sorted
/// by name.
pub async fn list(
    State(http): State<HttpState>,
    caller: Caller,
    mut params: Params,
) -> Result<Json<ListResponse>, ApiError> {
    let prefix = params.take("prefix")?;
    let after = params.take("after")?;
    let limit = match params.take_u64("limit")? {
        None => LIST_STREAMS_MAX,
        Some(n) if n == 0 || n > LIST_STREAMS_MAX as u64 => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {LIST_STREAMS_MAX}"),
            ))
        }
        Some(n) => n as usize,
    };
    let include_system = params.take_bool("include_system")?;
    let min_position = params.take_u64("min_position")?;
    params.finish()?;
    // The names of every stream are as telling as `$all`: the same permission.
    caller
        .authorize_stream(&http, StreamAction::Read, strata::stream::ALL_STREAM)
        .await?;
    wait_for_position(&http, min_position).await?;
    let options = ListStreamsOptions {
        prefix,
        after,
        limit: Some(limit),
        include_system,
    };
    let streams = http.state.store.list_streams(options).await?;
    let next_after = (streams.len() == limit)
        .then(|| streams.last().map(|s| s.name.clone()))
        .flatten();
    let streams = streams
        .into_iter()
        .map(|info| StreamEntry {
            stream: info.name,
            last_revision: info.last_revision,
            visible_events: info.visible_events,
        })
        .collect();
    Ok(Json(ListResponse {
        streams,
        next_after,
    }))
}
