//! The JSON shapes of events: what a writer sends ([`EventInput`]) and what a reader
//! gets ([`EventOutput`]), and the parsing of request bodies.
//!
//! Data is JSON under `data` when the event's content type is JSON and its bytes are
//! JSON; otherwise it is base64 under `data_base64`. Metadata likewise (`metadata`, or
//! `metadata_base64`; empty metadata is `null`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use strata::{ContentType, EventData, RecordedEvent, Timestamp};
use uuid::Uuid;

use super::error::ApiError;

/// One event as a writer sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// The idempotency key; a fresh one is generated if absent (so a retry of a request
    /// without ids records the events again).
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The event type.
    #[serde(rename = "type", alias = "event_type")]
    pub event_type: String,
    /// The data as JSON (any value, `null` included).
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Box<RawValue>>,
    /// The data as base64 bytes, instead of `data`.
    #[serde(default)]
    pub data_base64: Option<String>,
    /// `application/json` (default with `data`) or `application/octet-stream` (default
    /// with `data_base64`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// The metadata as JSON; absent or `null` is no metadata.
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
    /// The metadata as base64 bytes, instead of `metadata`.
    #[serde(default)]
    pub metadata_base64: Option<String>,
    /// The business time the event refers to (RFC 3339).
    #[serde(default)]
    pub valid_at: Option<Timestamp>,
}

/// A field that is present is `Some`, even when it is `null` (which is JSON data too).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

impl EventInput {
    /// The event to append; `index` names it in errors.
    pub fn into_event(self, index: usize) -> Result<EventData, ApiError> {
        let bad = |message: String| {
            ApiError::bad_request("invalid_event", format!("event {index}: {message}"))
        };
        let declared = match self.content_type.as_deref() {
            None => None,
            Some("application/json" | "json") => Some(ContentType::Json),
            Some("application/octet-stream" | "binary") => Some(ContentType::Binary),
            Some(other) => {
                return Err(bad(format!(
                    "content_type {other:?}: use application/json or application/octet-stream"
                )))
            }
        };
        let (data, content_type) = match (self.data, self.data_base64) {
            (Some(_), Some(_)) => return Err(bad("give data or data_base64, not both".into())),
            (None, None) => return Err(bad("data (JSON) or data_base64 is required".into())),
            (Some(raw), None) => {
                if declared == Some(ContentType::Binary) {
                    return Err(bad(
                        "binary data goes in data_base64; data holds JSON".into()
                    ));
                }
                (
                    Bytes::copy_from_slice(raw.get().as_bytes()),
                    ContentType::Json,
                )
            }
            (None, Some(text)) => (
                decode_base64(&text).map_err(|e| bad(format!("data_base64: {e}")))?,
                declared.unwrap_or(ContentType::Binary),
            ),
        };
        let metadata = match (self.metadata, self.metadata_base64) {
            (Some(_), Some(_)) => {
                return Err(bad("give metadata or metadata_base64, not both".into()))
            }
            (Some(raw), None) => Bytes::copy_from_slice(raw.get().as_bytes()),
            (None, Some(text)) => {
                decode_base64(&text).map_err(|e| bad(format!("metadata_base64: {e}")))?
            }
            (None, None) => Bytes::new(),
        };
        let mut event = EventData::new(self.event_type, data, content_type)
            .with_id(self.id.unwrap_or_else(Uuid::new_v4))
            .with_metadata(metadata);
        event.valid_at = self.valid_at;
        Ok(event)
    }
}

fn decode_base64(text: &str) -> Result<Bytes, base64::DecodeError> {
    BASE64.decode(text).map(Bytes::from)
}

/// A JSON payload as it goes out: kept as stored when it is compact, re-serialised when
/// it spans lines (a line break would split an NDJSON line or an SSE field).
enum Payload<'a> {
    Raw(&'a RawValue),
    Value(serde_json::Value),
}

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Raw(raw) => raw.serialize(serializer),
            Payload::Value(value) => value.serialize(serializer),
        }
    }
}

/// `bytes` as JSON, if they are JSON.
fn json_payload(bytes: &[u8]) -> Option<Payload<'_>> {
    let raw = serde_json::from_slice::<&RawValue>(bytes).ok()?;
    // Surrounding whitespace is dropped the same way (as `strata read` shows events).
    if raw.get().len() != bytes.len() || raw.get().contains(['\n', '\r']) {
        serde_json::from_str(raw.get()).ok().map(Payload::Value)
    } else {
        Some(Payload::Raw(raw))
    }
}

/// One recorded event as a reader gets it.
#[derive(Serialize)]
pub struct EventOutput<'a> {
    stream: &'a str,
    revision: u64,
    position: u64,
    recorded_at: Timestamp,
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    content_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Payload<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    /// `Some(None)` serialises as `null` (no metadata); `None` leaves the key out
    /// because `metadata_base64` carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Option<Payload<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_at: Option<Timestamp>,
}

impl<'a> EventOutput<'a> {
    /// The wire form of `event`.
    pub fn new(event: &'a RecordedEvent) -> EventOutput<'a> {
        let data = match event.content_type {
            ContentType::Json => json_payload(&event.data),
            ContentType::Binary => None,
        };
        let data_base64 = data.is_none().then(|| BASE64.encode(&event.data));
        let (metadata, metadata_base64) = if event.metadata.is_empty() {
            (Some(None), None)
        } else {
            match json_payload(&event.metadata) {
                Some(payload) => (Some(Some(payload)), None),
                None => (None, Some(BASE64.encode(&event.metadata))),
            }
        };
        EventOutput {
            stream: &event.stream,
            revision: event.revision,
            position: event.position.0,
            recorded_at: event.recorded_at,
            id: event.id,
            event_type: &event.event_type,
            content_type: event.content_type.mime(),
            data,
            data_base64,
            metadata,
            metadata_base64,
            valid_at: event.valid_at,
        }
    }
}

/// The body, or 413 when it is over the limit (`max` bytes).
pub fn body_bytes(body: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { max }
        } else if let Some(timeout) = body_read_timeout(&rejection) {
            ApiError::BodyReadTimeout {
                timeout: timeout.timeout,
            }
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })
}

/// The body-read timeout behind a failed body, if that is what failed it.
fn body_read_timeout(rejection: &BytesRejection) -> Option<&super::trace::BodyReadTimeout> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = source {
        if let Some(timeout) = error.downcast_ref::<super::trace::BodyReadTimeout>() {
            return Some(timeout);
        }
        source = error.source();
    }
    None
}

/// Parses a JSON body into `T`; a syntax or shape error is a 400 that says where.
pub fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        let code = if error.is_data() {
            "invalid_body"
        } else {
            "malformed_json"
        };
        ApiError::bad_request(code, format!("request body: {error}"))
    })
}

/// Parses an append body: one event object, or an array of at most `max_events` of
/// them. Parsing stops at the first event over the limit (413, `too_many_events`), so a
/// body of millions of tiny events is refused before they are built.
pub fn parse_events(bytes: &[u8], max_events: usize) -> Result<Vec<EventData>, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let inputs = match first {
        Some(b'[') => parse_bounded::<EventInput>(bytes, max_events)
            .map_err(|over| too_many_events(over, max_events))??,
        Some(b'{') => vec![parse::<EventInput>(bytes)?],
        _ => {
            return Err(ApiError::bad_request(
                "malformed_json",
                "request body must be a JSON event object or an array of events",
            ))
        }
    };
    inputs
        .into_iter()
        .enumerate()
        .map(|(index, input)| input.into_event(index))
        .collect()
}

/// The error for an append with more than `max` events: `count` is the number that had
/// arrived when parsing stopped (at least `max + 1`).
pub fn too_many_events(count: usize, max: usize) -> ApiError {
    ApiError::Append(strata::AppendError::Invalid(
        strata::InvalidInput::TooManyEvents { count, max },
    ))
}

/// Parses a JSON array of at most `max` elements of `T`. `Err(count)` when it holds
/// more: parsing stopped at element `count` (`max + 1`), before building it;
/// `Ok(Err(_))` for a malformed body, as [`parse`] reports it.
pub fn parse_bounded<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    max: usize,
) -> Result<Result<Vec<T>, ApiError>, usize> {
    let over = std::cell::Cell::new(None);
    let seed = BoundedSeq {
        max,
        over: &over,
        element: std::marker::PhantomData,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde::de::DeserializeSeed::deserialize(seed, &mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    if let Some(count) = over.get() {
        return Err(count);
    }
    Ok(parsed.map_err(|error| {
        let code = if error.is_data() {
            "invalid_body"
        } else {
            "malformed_json"
        };
        ApiError::bad_request(code, format!("request body: {error}"))
    }))
}

/// A JSON array of at most `max` `T`s: past them, notes the count in `over` and fails
/// without reading further.
struct BoundedSeq<'c, T> {
    max: usize,
    over: &'c std::cell::Cell<Option<usize>>,
    element: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for BoundedSeq<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for BoundedSeq<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "an array of at most {} elements", self.max)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // Never trust the size hint of a hostile body.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(1024));
        loop {
            if out.len() == self.max {
                // One more element, skipped rather than built, means too many.
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    self.over.set(Some(self.max.saturating_add(1)));
                    return Err(serde::de::Error::custom(format!(
                        "more than {} elements",
                        self.max
                    )));
                }
                return Ok(out);
            }
            match seq.next_element::<T>()? {
                Some(element) => out.push(element),
                None => return Ok(out),
            }
        }
    }
}
