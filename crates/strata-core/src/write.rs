//! What an append writes, independent of the backend: the system events that deletes,
//! tombstones and revivals of soft-deleted streams add. Every backend expands appends
//! with [`expand`], so they all record the same events.

use bytes::Bytes;

use crate::event::{ContentType, EventData};
use crate::metadata::{StreamMetadata, DELETED_TRUNCATE_BEFORE};
use crate::stream;
use crate::stream::{METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};

/// What one part of an append asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Append the events to the stream.
    Append,
    /// Soft-delete the stream (write deleted metadata to its metadata stream).
    SoftDelete,
    /// Tombstone the stream.
    Tombstone,
}

/// The state of the stream a part targets, as the backend sees it.
#[derive(Clone, Copy, Debug)]
pub struct TargetState<'a> {
    /// The revision its next event gets.
    pub next_revision: u64,
    /// Whether it is soft-deleted.
    pub deleted: bool,
    /// Its current metadata.
    pub metadata: Option<&'a StreamMetadata>,
}

/// Consecutive events of one stream that a part writes.
pub type Run = (String, Vec<EventData>);

/// The runs of events a part writes to `target`, in order, and the stream its result
/// describes (the metadata stream for a soft delete).
pub fn expand(
    kind: WriteKind,
    target: String,
    events: Vec<EventData>,
    state: TargetState<'_>,
) -> (String, Vec<Run>) {
    let mut metadata = state.metadata.cloned().unwrap_or_default();
    match kind {
        WriteKind::Append => {
            let mut runs = Vec::with_capacity(2);
            if state.deleted && !events.is_empty() && !stream::is_system(&target) {
                // Appending to a soft-deleted stream revives it: the old events stay
                // hidden behind a truncate-before at the first new revision.
                metadata.truncate_before = Some(state.next_revision);
                runs.push((stream::metastream(&target), vec![metadata_event(&metadata)]));
            }
            runs.push((target.clone(), events));
            (target, runs)
        }
        WriteKind::SoftDelete => {
            metadata.truncate_before = Some(DELETED_TRUNCATE_BEFORE);
            let metastream = stream::metastream(&target);
            (
                metastream.clone(),
                vec![(metastream, vec![metadata_event(&metadata)])],
            )
        }
        WriteKind::Tombstone => {
            let tombstone = EventData::new(TOMBSTONE_EVENT_TYPE, Bytes::new(), ContentType::Binary);
            (target.clone(), vec![(target, vec![tombstone])])
        }
    }
}

/// The event that sets a stream's metadata.
pub fn metadata_event(metadata: &StreamMetadata) -> EventData {
    EventData::new(
        METADATA_EVENT_TYPE,
        metadata.to_json().to_string().into_bytes(),
        ContentType::Json,
    )
}
