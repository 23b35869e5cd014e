//! Events emitted by handlers (process managers, sagas): deterministic ids, causation
//! and correlation metadata, and their idempotent append.
//!
//! An emitted event's id is derived from the projection's name, the id of the event
//! being handled and the emission's index (UUID v5), so handling the same event again
//! emits the same ids. The runner appends a batch's emissions *before* committing the
//! batch: a crash in between makes the restarted runner handle those events again and
//! re-send the same appends, which the store recognises as retries and does not record
//! twice. Appends use `ExpectedRevision::Any`, whose retries the store recognises within
//! its window of recent appends (`Options::recent_ids_max`, 262 144 appends by default),
//! far more than one batch.
//!
//! Rebuilds, reconciliations and time travel replay history: they never emit (what was
//! emitted then is already in the log).

use bytes::Bytes;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::{ProjectionError, RunError};
use crate::event::{EventData, Position, RecordedEvent};
use crate::store::{AppendRequest, Store};
use crate::ExpectedRevision;

/// The namespace of the ids of emitted events (UUID v5).
pub const EMIT_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_7a4e_2f0b_4c6a_9e3d_8b71_a0f2_c4e9);

/// An event a handler emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emission {
    /// Position of the event whose handling emitted it.
    pub cause: Position,
    /// The stream to append it to.
    pub stream: String,
    /// The event, with its deterministic id and metadata set.
    pub event: EventData,
}

/// The event being handled, as the outbox needs it.
#[derive(Clone, Debug)]
struct Cause {
    id: Uuid,
    position: Position,
    metadata: Bytes,
}

/// Where a handler's emitted events wait for their append.
#[derive(Debug, Default)]
pub struct Outbox {
    projection: String,
    cause: Option<Cause>,
    index: u32,
    emitted: Vec<Emission>,
    /// Replaying history: emissions are accepted and dropped.
    discarding: bool,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Starts handling `event` for `projection`: later emissions are caused by it.
    pub(crate) fn begin(&mut self, projection: &str, event: &RecordedEvent) {
        if self.discarding {
            return;
        }
        if self.projection != projection {
            projection.clone_into(&mut self.projection);
        }
        self.cause = Some(Cause {
            id: event.id,
            position: event.position,
            metadata: event.metadata.clone(),
        });
        self.index = 0;
    }

    /// Emits `event` to `stream`.
    ///
    /// Its id is replaced by one derived from the projection, the handled event and the
    /// number of events emitted for it so far. Its metadata (empty or a JSON object) gets
    /// `causation_id` (the handled event's id) and, unless it has one, `correlation_id`
    /// (the handled event's `correlation_id`, or its id if it has none).
    pub fn emit(
        &mut self,
        stream: impl Into<String>,
        event: EventData,
    ) -> Result<(), ProjectionError> {
        if self.discarding {
            return Ok(());
        }
        let Some(cause) = &self.cause else {
            return Err(ProjectionError::Emit {
                reason: "no event is being handled".into(),
            });
        };
        let mut name = Vec::with_capacity(self.projection.len() + 21);
        name.extend_from_slice(self.projection.as_bytes());
        name.push(0);
        name.extend_from_slice(cause.id.as_bytes());
        name.extend_from_slice(&self.index.to_le_bytes());
        let id = Uuid::new_v5(&EMIT_NAMESPACE, &name);
        let metadata = emitted_metadata(&event.metadata, cause)?;
        self.index += 1;
        self.emitted.push(Emission {
            cause: cause.position,
            stream: stream.into(),
            event: event.with_id(id).with_metadata(metadata),
        });
        Ok(())
    }

    /// Makes the outbox accept and drop emissions (replays of history).
    pub(crate) fn discard(&mut self) {
        self.discarding = true;
        self.emitted.clear();
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.emitted.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.emitted.is_empty()
    }

    /// Takes the waiting events, in emission order.
    pub fn take(&mut self) -> Vec<Emission> {
        std::mem::take(&mut self.emitted)
    }
}

fn metadata_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn emitted_metadata(own: &[u8], cause: &Cause) -> Result<Bytes, ProjectionError> {
    let mut metadata = if own.is_empty() {
        Map::new()
    } else {
        metadata_object(own).ok_or_else(|| ProjectionError::Emit {
            reason: "the metadata of an emitted event must be empty or a JSON object".into(),
        })?
    };
    let cause_id = Value::String(cause.id.to_string());
    if !metadata.contains_key("correlation_id") {
        let correlation = metadata_object(&cause.metadata)
            .and_then(|mut map| map.remove("correlation_id"))
            .unwrap_or_else(|| cause_id.clone());
        metadata.insert("correlation_id".into(), correlation);
    }
    metadata.insert("causation_id".into(), cause_id);
    let bytes = serde_json::to_vec(&metadata)?;
    Ok(Bytes::from(bytes))
}

/// Appends emissions in order: the events caused by one handled event go in one
/// multi-stream append (all or nothing), so a replay re-sends exactly the same appends.
pub(crate) async fn append_emissions(
    store: &Store,
    projection: &str,
    emissions: Vec<Emission>,
) -> Result<(), RunError> {
    let mut emissions = emissions.into_iter().peekable();
    while let Some(first) = emissions.next() {
        let cause = first.cause;
        let mut requests: Vec<AppendRequest> = Vec::new();
        let mut add =
            |emission: Emission| match requests.iter_mut().find(|r| r.stream == emission.stream) {
                Some(request) => request.events.push(emission.event),
                None => requests.push(AppendRequest::new(
                    emission.stream,
                    ExpectedRevision::Any,
                    vec![emission.event],
                )),
            };
        add(first);
        while let Some(next) = emissions.next_if(|e| e.cause == cause) {
            add(next);
        }
        store
            .append_multi(requests)
            .await
            .map_err(|source| RunError::Emit {
                projection: projection.to_owned(),
                cause,
                source,
            })?;
    }
    Ok(())
}
