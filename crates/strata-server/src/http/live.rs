//! Live streams: `GET /streams/{stream}/live` (a stream, or `$all` with filters) as
//! Server-Sent Events or NDJSON.
//!
//! History comes first, then a `caught_up` message, then events as they are recorded.
//! [`strata::Subscription`] guarantees no gap and no duplicate at the handover; this
//! module only frames what it yields. A client resumes with `Last-Event-ID` (SSE does so
//! by itself) or `from`. Every live stream ends when the server shuts down, so graceful
//! shutdown never waits on one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::json;
use strata::{Position, SubscribeFrom, Subscription, SubscriptionMessage};

use super::auth::Caller;
use super::error::ApiError;
use super::json::EventOutput;
use super::params::{Params, StreamPath, ALL};
use super::HttpState;
use crate::auth::StreamAction;
use crate::metrics::{Api, ApiLabels, Metrics};
use crate::slots::{Slot, SubscriptionSlots};

/// How often an idle live stream sends a heartbeat (an SSE comment, an empty NDJSON
/// line), so proxies keep it open and a vanished client is noticed.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// The framing of a live stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveFormat {
    /// `text/event-stream`: `event: event|caught_up|error`, `id:`, `data:` JSON.
    Sse,
    /// `application/x-ndjson`: one JSON object per line, `{"event":…}`,
    /// `{"caught_up":…}` or `{"error":…}`.
    Ndjson,
}

impl LiveFormat {
    fn choose(param: Option<String>, headers: &HeaderMap) -> Result<LiveFormat, ApiError> {
        match param.as_deref() {
            Some("sse") => return Ok(LiveFormat::Sse),
            Some("ndjson") => return Ok(LiveFormat::Ndjson),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("format={other:?}: use sse or ndjson"),
                ))
            }
            None => {}
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        Ok(if accept.contains("text/event-stream") {
            LiveFormat::Sse
        } else {
            LiveFormat::Ndjson
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            LiveFormat::Sse => "text/event-stream",
            LiveFormat::Ndjson => "application/x-ndjson",
        }
    }

    /// One message: `kind` is `event`, `caught_up` or `error`; `id` is the SSE event id.
    fn frame(self, kind: &str, id: Option<u64>, body: &impl serde::Serialize) -> Bytes {
        // Serialising our own types to a Vec cannot fail; an empty object is a safe
        // fallback that keeps the stream well-formed.
        let json = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
        let text = match self {
            LiveFormat::Sse => match id {
                Some(id) => format!("id: {id}\nevent: {kind}\ndata: {json}\n\n"),
                None => format!("event: {kind}\ndata: {json}\n\n"),
            },
            LiveFormat::Ndjson => format!("{{\"{kind}\":{json}}}\n"),
        };
        Bytes::from(text)
    }

    fn heartbeat(self) -> Bytes {
        match self {
            LiveFormat::Sse => Bytes::from_static(b": heartbeat\n\n"),
            LiveFormat::Ndjson => Bytes::from_static(b"\n"),
        }
    }
}

/// The client's IP address, if the server records it (it serves with connect info).
#[derive(Debug)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(ClientAddr(addr))
    }
}

/// One open live stream: a subscription slot of the client plus the open-streams gauge,
/// both released when the response body is dropped.
///
/// HTTP/1.1 carries one response at a time per connection, so a per-connection count
/// would never bind; the slots of an HTTP client are counted per client address (the
/// shared [`SubscriptionSlots`] keyed with port 0, which no TCP peer has), which is what
/// the limit guards against: one client holding many subscriptions.
#[derive(Debug)]
struct LivePermit {
    _slot: Slot,
    metrics: Arc<Metrics>,
}

impl LivePermit {
    fn acquire(
        slots: &Arc<SubscriptionSlots>,
        client: Option<IpAddr>,
        max: usize,
        metrics: &Arc<Metrics>,
    ) -> Result<LivePermit, ApiError> {
        let key = client.map(|ip| SocketAddr::new(ip, 0));
        let slot = slots
            .acquire(key, max)
            .map_err(|error| ApiError::TooManyLiveStreams { max: error.max })?;
        metrics
            .subscriptions_open
            .get_or_create(&ApiLabels { api: Api::Http })
            .inc();
        Ok(LivePermit {
            _slot: slot,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for LivePermit {
    fn drop(&mut self) {
        self.metrics
            .subscriptions_open
            .get_or_create(&ApiLabels { api: Api::Http })
            .dec();
    }
}

/// Where to start: `Last-Event-ID` (resume after it) wins over `from`
/// (`start`, `end` — the default — or the first revision/position to deliver).
fn start_point(headers: &HeaderMap, from: Option<String>) -> Result<SubscribeFrom<u64>, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        let id = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be the id (revision or position) of an event",
                )
            })?;
        return Ok(SubscribeFrom::After(id));
    }
    match from.as_deref() {
        None | Some("end") => Ok(SubscribeFrom::End),
        Some("start") => Ok(SubscribeFrom::Start),
        Some(text) => match text.parse::<u64>() {
            Ok(n) => Ok(match n.checked_sub(1) {
                Some(before) => SubscribeFrom::After(before),
                None => SubscribeFrom::Start,
            }),
            Err(_) => Err(ApiError::bad_request(
                "invalid_query",
                format!("from={text:?}: use start, end or a revision/position"),
            )),
        },
    }
}

/// The most frames (events) one chunk of a live stream carries.
const LIVE_FRAMES_PER_CHUNK: usize = 256;

/// `GET /streams/{stream}/live?from=&format=` (and the filters for `$all`).
pub async fn live(
    State(http): State<HttpState>,
    caller: Caller,
    StreamPath(stream): StreamPath,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    mut params: Params,
) -> Result<Response, ApiError> {
    let format = LiveFormat::choose(params.take("format")?, &headers)?;
    let from = start_point(&headers, params.take("from")?)?;
    let filter = if stream == ALL {
        Some(params.take_filter()?)
    } else {
        None
    };
    params.finish()?;
    caller
        .authorize_stream(&http, StreamAction::Read, &stream)
        .await?;
    if http.state.is_shutting_down() {
        return Err(ApiError::ShuttingDown);
    }
    let max = http.state.options.max_subscriptions_per_connection;
    let permit = LivePermit::acquire(
        &http.state.subscription_slots,
        client,
        max,
        &http.state.metrics,
    )?;
    let store = &http.state.store;
    let mut subscription = match filter {
        Some(filter) => {
            let from = match from {
                SubscribeFrom::Start => SubscribeFrom::Start,
                SubscribeFrom::After(n) => SubscribeFrom::After(Position(n)),
                SubscribeFrom::End => SubscribeFrom::End,
            };
            store.subscribe_all(from, filter)
        }
        None => store.subscribe_stream(&stream, from),
    };
    // The first message never waits for new events; taking it here turns a failure
    // (a tombstoned stream, a bad name) into a status code instead of an in-band error.
    let first = subscription.next().await?;
    let live = Live {
        http,
        subscription,
        pending: Some(first),
        format,
        by_position: stream == ALL,
        heartbeat: tokio::time::interval_at(
            tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
            HEARTBEAT_INTERVAL,
        ),
        done: false,
        _permit: permit,
    };
    let frames = futures_util::stream::unfold(live, |mut live| async move {
        let frame = live.next_frame().await?;
        Some((frame, live))
    });
    // Frames that are ready at once (catch-up, bursts) go out as one chunk: a client
    // pays per chunk, and one chunk per event capped a pooled hyper client near 90 k
    // events/s. A frame that has to wait is sent alone, as soon as it exists.
    let body = Body::from_stream(
        frames
            .ready_chunks(LIVE_FRAMES_PER_CHUNK)
            .map(|frames| Ok::<_, std::convert::Infallible>(Bytes::from(frames.concat()))),
    );
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The state of one live stream's body.
struct Live {
    http: HttpState,
    subscription: Subscription,
    pending: Option<SubscriptionMessage>,
    format: LiveFormat,
    /// Ids are positions (`$all`) rather than revisions (a stream).
    by_position: bool,
    heartbeat: tokio::time::Interval,
    done: bool,
    _permit: LivePermit,
}

impl Live {
    /// The next chunk of the body; `None` ends it.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            let message = match self.pending.take() {
                Some(message) => Ok(message),
                None => {
                    let state = self.http.state.clone();
                    tokio::select! {
                        biased;
                        () = state.shutting_down() => Err(ApiError::ShuttingDown),
                        message = self.subscription.next() => message.map_err(ApiError::from),
                        _ = self.heartbeat.tick() => return Some(self.format.heartbeat()),
                    }
                }
            };
            match message {
                Ok(SubscriptionMessage::Event(event)) => {
                    self.heartbeat.reset();
                    let metrics = &self.http.state.metrics;
                    metrics
                        .events_read
                        .get_or_create(&ApiLabels { api: Api::Http })
                        .inc();
                    let head = self.http.state.store.head().map_or(0, |p| p.0);
                    let lag = head.saturating_sub(event.position.0);
                    metrics
                        .subscription_lag
                        .set(i64::try_from(lag).unwrap_or(i64::MAX));
                    let id = if self.by_position {
                        event.position.0
                    } else {
                        event.revision
                    };
                    return Some(
                        self.format
                            .frame("event", Some(id), &EventOutput::new(&event)),
                    );
                }
                Ok(SubscriptionMessage::CaughtUp) => {
                    let head = self.http.state.store.head().map(|p| p.0);
                    return Some(
                        self.format
                            .frame("caught_up", None, &json!({ "head": head })),
                    );
                }
                Ok(_) => continue,
                Err(error) => {
                    self.done = true;
                    return Some(self.format.frame("error", None, &error.body()));
                }
            }
        }
    }
}
