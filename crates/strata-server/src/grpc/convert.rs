//! Conversions between the KurrentDB protocol and strata's types: ids, positions,
//! expected revisions, recorded events, and errors with the status codes, messages and
//! trailers KurrentDB clients recognise.
//!
//! ## Positions
//! KurrentDB clients see a `commit_position`/`prepare_position` pair. strata has one
//! global [`Position`]; both fields carry `position + 1`. The shift keeps `0` free to
//! mean "before the first event", as it does in KurrentDB (whose first event never sits
//! at 0): a client that stored 0 as "nothing processed yet" and resumes from it loses
//! nothing. Reading from commit position `c` starts at strata position `c - 1`;
//! subscribing from `c` delivers what comes after `c - 1`.

use std::collections::HashMap;

use ::uuid::Uuid;
use strata::{
    AppendError, ContentType, CurrentRevision, ExpectedRevision, InvalidInput, Position, ReadError,
    RecordedEvent, StorageError,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::proto::event_store::client::{uuid, StreamIdentifier, Uuid as ProtoUuid};

/// KurrentDB's expected-version numbers in error messages and trailers.
pub mod version {
    /// The stream must not exist.
    pub const NO_STREAM: i64 = -1;
    /// Any state.
    pub const ANY: i64 = -2;
    /// The stream must exist.
    pub const STREAM_EXISTS: i64 = -4;
}

/// The commit (and prepare) position clients see for `position`.
pub fn commit_position(position: Position) -> u64 {
    position.0.saturating_add(1)
}

/// The strata position a client's commit position names; `None` for 0, "before the
/// first event".
pub fn position_of_commit(commit: u64) -> Option<Position> {
    commit.checked_sub(1).map(Position)
}

/// A UUID in the string form.
pub fn uuid_string(id: Uuid) -> ProtoUuid {
    ProtoUuid {
        value: Some(uuid::Value::String(id.to_string())),
    }
}

/// A UUID in the structured form (two signed 64-bit halves, as Java writes them).
pub fn uuid_structured(id: Uuid) -> ProtoUuid {
    let bits = id.as_u128();
    ProtoUuid {
        value: Some(uuid::Value::Structured(uuid::Structured {
            // Reinterpreting the halves' bits as signed is the wire format.
            most_significant_bits: (bits >> 64) as u64 as i64,
            least_significant_bits: bits as u64 as i64,
        })),
    }
}

/// The UUID a client sent.
pub fn uuid_from_proto(id: Option<&ProtoUuid>) -> Result<Uuid, Status> {
    match id.and_then(|id| id.value.as_ref()) {
        Some(uuid::Value::String(text)) => Uuid::parse_str(text)
            .map_err(|_| Status::invalid_argument(format!("'{text}' is not a valid UUID"))),
        Some(uuid::Value::Structured(s)) => {
            let bits = (u128::from(s.most_significant_bits as u64) << 64)
                | u128::from(s.least_significant_bits as u64);
            Ok(Uuid::from_u128(bits))
        }
        None => Err(Status::invalid_argument(
            "'id' is a required argument of type UUID",
        )),
    }
}

/// The stream a client named.
pub fn stream_name(identifier: Option<&StreamIdentifier>) -> Result<String, Status> {
    let identifier = identifier.ok_or_else(|| {
        Status::invalid_argument(
            "'stream_identifier' is a required argument of type StreamIdentifier",
        )
    })?;
    String::from_utf8(identifier.stream_name.clone())
        .map_err(|_| Status::invalid_argument("stream names must be UTF-8"))
}

/// The wire form of a stream name.
pub fn stream_identifier(name: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: name.as_bytes().to_vec(),
    }
}

/// KurrentDB's number for an expected revision.
pub fn expected_version(expected: ExpectedRevision) -> i64 {
    match expected {
        ExpectedRevision::Any => version::ANY,
        ExpectedRevision::NoStream => version::NO_STREAM,
        ExpectedRevision::StreamExists => version::STREAM_EXISTS,
        ExpectedRevision::Exact(revision) => i64::try_from(revision).unwrap_or(i64::MAX),
    }
}

/// KurrentDB's number for a current revision (-1: no stream).
pub fn actual_version(current: CurrentRevision) -> i64 {
    match current {
        CurrentRevision::NoStream => version::NO_STREAM,
        CurrentRevision::Current(revision) => i64::try_from(revision).unwrap_or(i64::MAX),
    }
}

/// The properties KurrentDB puts in a recorded event's `metadata` map.
pub fn system_metadata(event: &RecordedEvent) -> HashMap<String, String> {
    // "created" is .NET ticks (100 ns) since the Unix epoch.
    let ticks = event.recorded_at.as_micros().saturating_mul(10);
    HashMap::from([
        ("type".to_owned(), event.event_type.clone()),
        (
            "content-type".to_owned(),
            event.content_type.mime().to_owned(),
        ),
        ("created".to_owned(), ticks.to_string()),
    ])
}

/// The content type a client's `content-type` property names.
pub fn content_type(mime: Option<&str>) -> Result<ContentType, Status> {
    match mime {
        Some("application/json") => Ok(ContentType::Json),
        Some("application/octet-stream") | None => Ok(ContentType::Binary),
        Some(other) => Err(Status::invalid_argument(format!(
            "content-type '{other}' is not supported (application/json or application/octet-stream)"
        ))),
    }
}

fn with_trailers(mut status: Status, trailers: &[(&'static str, String)]) -> Status {
    for (key, value) in trailers {
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            status.metadata_mut().insert(*key, value);
        }
    }
    status
}

/// KurrentDB's "stream deleted" error (a tombstoned stream).
pub fn stream_deleted(stream: &str) -> Status {
    with_trailers(
        Status::failed_precondition(format!("Event stream '{stream}' is deleted.")),
        &[
            ("exception", "stream-deleted".to_owned()),
            ("stream-name", stream.to_owned()),
        ],
    )
}

/// KurrentDB's "stream not found" error.
pub fn stream_not_found(stream: &str) -> Status {
    with_trailers(
        Status::not_found(format!("Event stream '{stream}' is not found.")),
        &[
            ("exception", "stream-not-found".to_owned()),
            ("stream-name", stream.to_owned()),
        ],
    )
}

/// KurrentDB's wrong-expected-version error, raised by `operation` (`Delete`,
/// `Tombstone`; appends report it in their response instead).
pub fn wrong_expected_version(
    operation: &str,
    stream: &str,
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> Status {
    let expected = expected_version(expected);
    let actual = actual_version(actual);
    with_trailers(
        Status::failed_precondition(format!(
            "{operation} failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {expected}, Actual version: {actual}"
        )),
        &[
            ("exception", "wrong-expected-version".to_owned()),
            ("stream-name", stream.to_owned()),
            ("expected-version", expected.to_string()),
            ("actual-version", actual.to_string()),
        ],
    )
}

/// The status for an input strata refuses.
pub fn invalid_input(input: &InvalidInput) -> Status {
    match input {
        InvalidInput::EventTooLarge { id, size, max, .. } => with_trailers(
            Status::invalid_argument(format!(
                "Event with Id: {id}, Size: {size}, exceeds Maximum Append Event Size of {max}."
            )),
            &[
                ("exception", "maximum-append-event-size-exceeded".to_owned()),
                ("maximum-append-event-size", max.to_string()),
                ("event-id", id.to_string()),
                ("proposed-append-event-size", size.to_string()),
            ],
        ),
        InvalidInput::AppendTooLarge { max, .. } => with_trailers(
            Status::invalid_argument(format!("Maximum Append Size of {max} Exceeded.")),
            &[
                ("exception", "maximum-append-size-exceeded".to_owned()),
                ("maximum-append-size", max.to_string()),
            ],
        ),
        other => Status::invalid_argument(other.to_string()),
    }
}

/// The status for a storage failure: unavailable when it may pass, internal otherwise.
///
/// The client gets the kind of failure and a fresh error id; the details (file paths,
/// offsets, database messages) go to the log under that id, never to the client.
pub fn storage(error: &StorageError) -> Status {
    let error_id = ::uuid::Uuid::new_v4();
    tracing::error!(%error_id, %error, "storage failure answered to a gRPC call");
    let summary = crate::error::storage_summary(error);
    if error.is_transient() {
        Status::unavailable(format!(
            "Server Is Not Ready: {summary} (error id {error_id})"
        ))
    } else {
        Status::internal(format!(
            "{summary} (error id {error_id}; the server log has the details)"
        ))
    }
}

/// The status for a failed append, delete or tombstone by `operation`.
pub fn append_error(operation: &str, error: &AppendError) -> Status {
    match error {
        AppendError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => wrong_expected_version(operation, stream, *expected, *actual),
        AppendError::StreamDeleted { stream } => stream_deleted(stream),
        AppendError::Invalid(input) => invalid_input(input),
        AppendError::Storage(error) => storage(error),
        other => Status::new(Code::Unknown, other.to_string()),
    }
}

/// The status for a failed read.
pub fn read_error(error: &ReadError) -> Status {
    match error {
        ReadError::StreamDeleted { stream } => stream_deleted(stream),
        ReadError::Storage(error) => storage(error),
        // Retryable: clients retry UNAVAILABLE with a backoff.
        ReadError::Busy { .. } => Status::unavailable(error.to_string()),
        other => Status::new(Code::Unknown, other.to_string()),
    }
}
