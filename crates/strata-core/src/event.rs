//! Events: what a writer sends ([`EventData`]) and what a reader gets ([`RecordedEvent`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A place in the global log.
///
/// Positions are assigned by the store when an event is recorded: they are strictly
/// increasing along the log, never reused, and the same for every reader. The embedded
/// engine numbers events 0, 1, 2, … with no gaps; other backends only promise the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The position of the first event the log can hold.
    pub const START: Position = Position(0);

    /// The position right after this one. Saturates at `u64::MAX`, which no store
    /// reaches; for a position a client gave, use [`Position::checked_next`], since
    /// nothing can follow `u64::MAX`.
    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }

    /// The position right after this one, or `None` after `u64::MAX`: nothing can
    /// follow it (wrapping to 0 would replay the whole log).
    pub fn checked_next(self) -> Option<Position> {
        self.0.checked_add(1).map(Position)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A UTC instant with microsecond precision, as recorded in the log.
///
/// Serialised as an RFC 3339 string (`2026-11-27T06:38:16.123456Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The current wall-clock time (the Unix epoch if the clock is set before it).
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// Parses an RFC 3339 timestamp such as `2026-11-27T06:38:16Z`.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, humantime::TimestampError> {
        humantime::parse_rfc3339_weak(text).map(Timestamp::from)
    }

    /// This instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Timestamp {
        let micros = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        Timestamp(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_micros(self.to_system_time()).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// How an event's `data` is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// UTF-8 JSON (`application/json`).
    #[default]
    Json,
    /// Opaque bytes (`application/octet-stream`).
    Binary,
}

impl ContentType {
    /// The MIME type clients use for this content type.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

/// An event as a writer proposes it.
///
/// The `id` is the idempotency key: re-sending the same ids to the same stream in the
/// same order records nothing new and returns the original result.
///
/// ```
/// use strata_core::EventData;
/// let event = EventData::json("Deposited", &serde_json::json!({ "amount": 10 })).unwrap();
/// assert_eq!(event.event_type, "Deposited");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventData {
    /// Unique id of the event; a retry must reuse it.
    pub id: Uuid,
    /// Name of the event's type, e.g. `OrderPlaced`.
    pub event_type: String,
    /// The payload.
    pub data: Bytes,
    /// Free-form metadata; by convention JSON with `correlation_id`, `causation_id`, …
    pub metadata: Bytes,
    /// How `data` is encoded.
    pub content_type: ContentType,
    /// The business time the fact refers to, if it differs from the recording time.
    pub valid_at: Option<Timestamp>,
    /// The time the event was first recorded, when an import replays it; `None` for new
    /// events, which get the store's clock.
    pub recorded_at: Option<Timestamp>,
}

impl EventData {
    /// An event whose data is `value` serialised as JSON, with a fresh random id.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<EventData, serde_json::Error> {
        Ok(EventData::new(
            event_type,
            serde_json::to_vec(value)?,
            ContentType::Json,
        ))
    }

    /// An event with opaque binary data and a fresh random id.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Bytes>) -> EventData {
        EventData::new(event_type, data, ContentType::Binary)
    }

    /// An event with the given data and content type and a fresh random id.
    pub fn new(
        event_type: impl Into<String>,
        data: impl Into<Bytes>,
        content_type: ContentType,
    ) -> EventData {
        EventData {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            data: data.into(),
            metadata: Bytes::new(),
            content_type,
            valid_at: None,
            recorded_at: None,
        }
    }

    /// Replaces the id (to make a retry idempotent, use the id of the first attempt).
    pub fn with_id(mut self, id: Uuid) -> EventData {
        self.id = id;
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> EventData {
        self.metadata = metadata.into();
        self
    }

    /// Sets the business time the event refers to.
    pub fn with_valid_at(mut self, valid_at: Timestamp) -> EventData {
        self.valid_at = Some(valid_at);
        self
    }

    /// The number of bytes this event occupies in the limits that apply to events
    /// (type, data and metadata).
    pub fn size_bytes(&self) -> usize {
        self.event_type.len() + self.data.len() + self.metadata.len()
    }
}

/// An event as it was recorded in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: String,
    /// Its 0-based index inside the stream.
    pub revision: u64,
    /// Its place in the global log.
    pub position: Position,
    /// The id the writer gave it.
    pub id: Uuid,
    /// Name of the event's type.
    pub event_type: String,
    /// The payload.
    pub data: Bytes,
    /// The metadata.
    pub metadata: Bytes,
    /// How `data` is encoded.
    pub content_type: ContentType,
    /// When the store recorded it (non-decreasing along the log).
    pub recorded_at: Timestamp,
    /// The business time the fact refers to, if the writer gave one.
    pub valid_at: Option<Timestamp>,
}

impl RecordedEvent {
    /// The stream's category: the part of its name before the first `-`
    /// (the whole name if there is none).
    pub fn category(&self) -> &str {
        crate::stream::category(&self.stream)
    }

    /// Deserialises the JSON data into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }

    /// The event as it would be written again (same id, type, data, metadata and times),
    /// e.g. for an export that is imported elsewhere.
    pub fn to_event_data(&self) -> EventData {
        EventData {
            id: self.id,
            event_type: self.event_type.clone(),
            data: self.data.clone(),
            metadata: self.metadata.clone(),
            content_type: self.content_type,
            valid_at: self.valid_at,
            recorded_at: Some(self.recorded_at),
        }
    }
}
