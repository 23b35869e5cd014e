//! Conversions shared by the calls of the Streams service: proposed events in, recorded
//! events out.

use std::collections::HashMap;

use bytes::Bytes;
use strata::{EventData, RecordedEvent};
use tonic::Status;

use crate::grpc::convert;
use crate::proto::event_store::client::streams::read_resp::read_event::{
    Position as EventPosition, RecordedEvent as WireEvent,
};
use crate::proto::event_store::client::streams::read_resp::{Content, ReadEvent};
use crate::proto::event_store::client::streams::ReadResp;
use crate::proto::event_store::client::{Empty, Uuid as ProtoUuid};

/// An event as a client proposes it: KurrentDB's `ProposedMessage`, whose `metadata`
/// map must carry `type` and `content-type`.
pub fn proposed_event(
    id: Option<&ProtoUuid>,
    properties: &HashMap<String, String>,
    custom_metadata: Vec<u8>,
    data: Vec<u8>,
) -> Result<EventData, Status> {
    let id = convert::uuid_from_proto(id)?;
    let event_type = properties
        .get("type")
        .ok_or_else(|| missing_property("type"))?;
    let content_type = convert::content_type(Some(
        properties
            .get("content-type")
            .ok_or_else(|| missing_property("content-type"))?,
    ))?;
    Ok(EventData {
        id,
        event_type: event_type.clone(),
        data: Bytes::from(data),
        metadata: Bytes::from(custom_metadata),
        content_type,
        valid_at: None,
        recorded_at: None,
    })
}

/// KurrentDB's error for a proposed event without a required property.
fn missing_property(name: &str) -> Status {
    let mut status =
        Status::invalid_argument(format!("Required Metadata Property '{name}' is missing"));
    status.metadata_mut().insert(
        "exception",
        tonic::metadata::MetadataValue::from_static("missing-required-metadata-property"),
    );
    status
}

/// A recorded event as the Read call sends it.
pub fn read_event(event: &RecordedEvent, structured_ids: bool) -> ReadResp {
    let id = if structured_ids {
        convert::uuid_structured(event.id)
    } else {
        convert::uuid_string(event.id)
    };
    let commit = convert::commit_position(event.position);
    ReadResp {
        content: Some(Content::Event(ReadEvent {
            event: Some(WireEvent {
                id: Some(id),
                stream_identifier: Some(convert::stream_identifier(&event.stream)),
                stream_revision: event.revision,
                prepare_position: commit,
                commit_position: commit,
                metadata: convert::system_metadata(event),
                custom_metadata: event.metadata.to_vec(),
                data: event.data.to_vec(),
            }),
            link: None,
            position: Some(EventPosition::CommitPosition(commit)),
        })),
    }
}

/// The empty message, where a oneof needs one.
pub fn empty() -> Empty {
    Empty {}
}
