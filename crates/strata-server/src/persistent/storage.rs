//! The durable state of persistent subscriptions, kept in the store itself so it works
//! on every backend with no storage of its own.
//!
//! ## Layout
//! The store only lets users write to non-system streams and to *metadata* streams
//! (`$$name`), whose events are JSON objects of type `$metadata` that may carry custom
//! properties. The state therefore lives in the metadata streams of the system streams
//! KurrentDB uses, which no user stream can collide with:
//!
//! | state | stream written | event data |
//! |---|---|---|
//! | every group's config | `$$$persistentSubscriptionConfig` | `{"strataPersistentSubscriptions": {"version": 1, "groups": [GroupConfig…]}}` (the whole set, rewritten on each change with the expected revision, so two writers cannot lose each other's change) |
//! | a group's checkpoint | `$$$persistentsubscription-{source}::{group}-checkpoint` | `{"checkpoint": 17}`: the last finished revision (stream) or position (`$all`) with nothing unfinished before it; `null`: none yet |
//! | a group's parked events | `$$$persistentsubscription-{source}::{group}-parked` | one event per parked event, `{"parked": {"stream", "revision", "position", "id", "reason"}}` (a pointer, resolved on replay), and markers `{"replayedThrough": r}`: pointers up to revision `r` of this stream were replayed (`null`: every pointer before the marker) |
//!
//! `{source}` is the stream name or `$all`. `$all` groups skip these events (unlike
//! KurrentDB, whose `$all` groups see them): otherwise an unfiltered `$all` group would
//! deliver its own checkpoint writes and checkpoint them again, forever. The latest event of a metadata stream is its
//! current value, which is what the config and checkpoint need; the parked stream is
//! read forwards from the start. Metadata streams cannot carry `$maxCount` themselves
//! (there is no metadata of metadata), so these streams grow by one small event per
//! write until scavenging learns to trim them; checkpoints are written at most every
//! `checkpoint_after_ms` or `max_checkpoint_count` events to keep that slow.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use strata::{
    CurrentRevision, ExpectedRevision, ReadError, ReadStreamOptions, RecordedEvent, Store,
    StreamMetadata,
};
use uuid::Uuid;

use super::settings::{GroupConfig, Source};
use super::PersistentError;

/// The system stream whose metadata holds every group's config (KurrentDB's name).
pub const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
const CONFIG_KEY: &str = "strataPersistentSubscriptions";
const CONFIG_VERSION: u32 = 1;
/// Events read per request when scanning a parked stream.
const PARKED_READ_CHUNK: usize = 1_000;

/// Whether `stream` holds persistent-subscription state (config, checkpoints, parked
/// events). `$all` groups do not receive these events.
pub fn is_state_stream(stream: &str) -> bool {
    strata::stream::metastream_target(stream).is_some_and(|target| {
        target == CONFIG_STREAM || target.starts_with("$persistentsubscription-")
    })
}

/// The system stream whose metadata holds a group's checkpoint.
pub fn checkpoint_stream(source: &Source, group: &str) -> String {
    format!(
        "$persistentsubscription-{}::{group}-checkpoint",
        source.name()
    )
}

/// The system stream whose metadata stream lists a group's parked events.
pub fn parked_stream(source: &Source, group: &str) -> String {
    format!("$persistentsubscription-{}::{group}-parked", source.name())
}

#[derive(Serialize, Deserialize)]
struct ConfigDocument {
    version: u32,
    groups: Vec<GroupConfig>,
}

/// Every group's config and the revision to expect when writing it back.
#[derive(Debug)]
pub struct StoredConfig {
    /// The groups.
    pub groups: Vec<GroupConfig>,
    /// The config stream's revision when it was read.
    pub revision: CurrentRevision,
}

async fn write(
    store: &Store,
    stream: &str,
    expected: ExpectedRevision,
    value: Value,
) -> Result<(), PersistentError> {
    let Value::Object(custom) = value else {
        return Err(PersistentError::CorruptState(
            "state must be a JSON object".into(),
        ));
    };
    let metadata = StreamMetadata {
        custom,
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(stream, expected, &metadata)
        .await?;
    Ok(())
}

/// Reads every group's config.
pub async fn load_config(store: &Store) -> Result<StoredConfig, PersistentError> {
    let stored = store.stream_metadata(CONFIG_STREAM).await?;
    let groups = match stored.metadata.custom.get(CONFIG_KEY) {
        None => Vec::new(),
        Some(value) => {
            let document: ConfigDocument = serde_json::from_value(value.clone())
                .map_err(|error| PersistentError::CorruptState(error.to_string()))?;
            if document.version != CONFIG_VERSION {
                return Err(PersistentError::CorruptState(format!(
                    "config version {} is not supported",
                    document.version
                )));
            }
            document.groups
        }
    };
    Ok(StoredConfig {
        groups,
        revision: stored.revision,
    })
}

/// Replaces every group's config, if nobody changed it since `revision`.
pub async fn save_config(
    store: &Store,
    groups: &[GroupConfig],
    revision: CurrentRevision,
) -> Result<CurrentRevision, PersistentError> {
    let document = json!({ CONFIG_KEY: { "version": CONFIG_VERSION, "groups": groups } });
    write(store, CONFIG_STREAM, revision.into(), document).await?;
    Ok(match revision {
        CurrentRevision::NoStream => CurrentRevision::Current(0),
        CurrentRevision::Current(revision) => CurrentRevision::Current(revision + 1),
    })
}

/// A group's checkpoint: the revision (stream) or position (`$all`) of the last event
/// such that it and everything before it are finished.
pub async fn load_checkpoint(
    store: &Store,
    source: &Source,
    group: &str,
) -> Result<Option<u64>, PersistentError> {
    let stored = store
        .stream_metadata(&checkpoint_stream(source, group))
        .await?;
    match stored.metadata.custom.get("checkpoint") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            PersistentError::CorruptState(format!("checkpoint {value} is not a number"))
        }),
    }
}

/// Writes a group's checkpoint (`None`: forget it, as a new group does).
pub async fn save_checkpoint(
    store: &Store,
    source: &Source,
    group: &str,
    checkpoint: Option<u64>,
) -> Result<(), PersistentError> {
    let stream = checkpoint_stream(source, group);
    write(
        store,
        &stream,
        ExpectedRevision::Any,
        json!({ "checkpoint": checkpoint }),
    )
    .await
}

/// Where a parked event is, and why it was parked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedPointer {
    /// The event's stream.
    pub stream: String,
    /// Its revision in that stream.
    pub revision: u64,
    /// Its position in the global log.
    pub position: u64,
    /// Its id (checked on replay: the event must still be the same one).
    pub id: Uuid,
    /// Why it was parked.
    pub reason: String,
}

impl ParkedPointer {
    /// The pointer to `event`.
    pub fn to(event: &RecordedEvent, reason: &str) -> ParkedPointer {
        ParkedPointer {
            stream: event.stream.clone(),
            revision: event.revision,
            position: event.position.0,
            id: event.id,
            reason: reason.to_owned(),
        }
    }
}

/// Records that `pointer`'s event is parked.
pub async fn park(
    store: &Store,
    source: &Source,
    group: &str,
    pointer: &ParkedPointer,
) -> Result<(), PersistentError> {
    let stream = parked_stream(source, group);
    write(
        store,
        &stream,
        ExpectedRevision::Any,
        json!({ "parked": pointer }),
    )
    .await
}

/// Records that the pointers up to `through` (a revision of the parked stream's
/// metadata stream) were replayed; `None`: every pointer written so far.
pub async fn mark_replayed(
    store: &Store,
    source: &Source,
    group: &str,
    through: Option<u64>,
) -> Result<(), PersistentError> {
    let stream = parked_stream(source, group);
    write(
        store,
        &stream,
        ExpectedRevision::Any,
        json!({ "replayedThrough": through }),
    )
    .await
}

/// The parked events not yet replayed, oldest first, each with the revision of its
/// pointer in the parked stream's metadata stream.
pub async fn load_parked(
    store: &Store,
    source: &Source,
    group: &str,
) -> Result<Vec<(u64, ParkedPointer)>, PersistentError> {
    let stream = strata::stream::metastream(&parked_stream(source, group));
    let mut parked: Vec<(u64, ParkedPointer)> = Vec::new();
    let mut from = 0;
    loop {
        let options = ReadStreamOptions::forwards()
            .from_revision(from)
            .limit(PARKED_READ_CHUNK);
        let events = match store.read_stream(&stream, options).await {
            Ok(events) => events,
            Err(ReadError::StreamNotFound { .. }) => return Ok(parked),
            Err(error) => return Err(error.into()),
        };
        for event in &events {
            let object: Map<String, Value> = serde_json::from_slice(&event.data)
                .map_err(|error| PersistentError::CorruptState(error.to_string()))?;
            if let Some(pointer) = object.get("parked") {
                let pointer: ParkedPointer = serde_json::from_value(pointer.clone())
                    .map_err(|error| PersistentError::CorruptState(error.to_string()))?;
                parked.push((event.revision, pointer));
            } else if let Some(through) = object.get("replayedThrough") {
                let through = through.as_u64().unwrap_or(event.revision);
                parked.retain(|(revision, _)| *revision > through);
            }
        }
        match events.last() {
            Some(last) if events.len() == PARKED_READ_CHUNK => from = last.revision + 1,
            _ => return Ok(parked),
        }
    }
}
