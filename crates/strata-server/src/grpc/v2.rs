//! `kurrentdb.protocol.v2.streams.StreamsService`: the multi-stream appends current
//! clients use for atomic writes across streams. `AppendSession` streams one request
//! per stream; `AppendRecords` sends records tagged with their streams plus
//! consistency checks. Both map onto one strata multi-stream append: all or nothing.
//!
//! Errors are rich statuses (`grpc-status-details-bin`) whose detail is one of the
//! `kurrentdb.protocol.v2.streams.errors` messages, as KurrentDB sends them.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use strata::validate::AppendBudget;
use strata::{
    AppendError, AppendRequest, ContentType, CurrentRevision, EventData, ExpectedRevision,
    InvalidInput,
};
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::auth::StreamAction;
use crate::grpc::auth::Caller;
use crate::grpc::convert;
use crate::metrics::{Api, Outcome};
use crate::proto::google::rpc::Status as RpcStatus;
use crate::proto::kurrent::rpc::AccessDeniedErrorDetails;
use crate::proto::kurrentdb::protocol::v2::streams::errors::{
    consistency_violation, AppendConsistencyViolationErrorDetails,
    AppendRecordSizeExceededErrorDetails, AppendTransactionSizeExceededErrorDetails,
    ConsistencyViolation, StreamAlreadyInAppendSessionErrorDetails,
    StreamRevisionConflictErrorDetails, StreamTombstonedErrorDetails,
};
use crate::proto::kurrentdb::protocol::v2::streams::streams_service_server::StreamsService;
use crate::proto::kurrentdb::protocol::v2::streams::{
    consistency_check, AppendRecord, AppendRecordsRequest, AppendRecordsResponse,
    AppendRequest as WireAppendRequest, AppendResponse, AppendSessionResponse, SchemaFormat,
    StreamRevision,
};
use crate::state::ServerState;

/// The v2 expected-state numbers.
mod state_code {
    pub const NO_STREAM: i64 = -1;
    pub const ANY: i64 = -2;
    pub const EXISTS: i64 = -4;
}

fn expected_from_code(code: Option<i64>) -> Result<ExpectedRevision, Status> {
    match code {
        None | Some(state_code::ANY) => Ok(ExpectedRevision::Any),
        Some(state_code::NO_STREAM) => Ok(ExpectedRevision::NoStream),
        Some(state_code::EXISTS) => Ok(ExpectedRevision::StreamExists),
        Some(revision) => u64::try_from(revision)
            .map(ExpectedRevision::Exact)
            .map_err(|_| {
                Status::invalid_argument(format!("{revision} is not a valid expected revision"))
            }),
    }
}

fn code_of_expected(expected: ExpectedRevision) -> i64 {
    match expected {
        ExpectedRevision::Any => state_code::ANY,
        ExpectedRevision::NoStream => state_code::NO_STREAM,
        ExpectedRevision::StreamExists => state_code::EXISTS,
        ExpectedRevision::Exact(r) => i64::try_from(r).unwrap_or(i64::MAX),
    }
}

fn code_of_actual(actual: CurrentRevision) -> i64 {
    match actual {
        CurrentRevision::NoStream => state_code::NO_STREAM,
        CurrentRevision::Current(r) => i64::try_from(r).unwrap_or(i64::MAX),
    }
}

/// A rich error status: `code` and `message` both on the call and inside the packed
/// `google.rpc.Status` (clients check that they agree), with one typed detail.
fn rich<M: Message>(code: Code, message: String, type_name: &str, detail: &M) -> Status {
    let packed = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: detail.encode_to_vec(),
        }),
    };
    Status::with_details(code, message, Bytes::from(packed.encode_to_vec()))
}

/// The v2 refusal, as KurrentDB's v2 API sends it: PERMISSION_DENIED with
/// `kurrent.rpc.AccessDeniedErrorDetails` (the operation and the user).
fn access_denied(caller: &Caller, operation: &str) -> Status {
    rich(
        Code::PermissionDenied,
        format!("Access denied. Insufficient permissions to perform {operation}"),
        "kurrent.rpc.AccessDeniedErrorDetails",
        &AccessDeniedErrorDetails {
            operation: operation.to_owned(),
            username: caller.principal.login().map(str::to_owned),
            permission: None,
        },
    )
}

/// An event from a v2 record: the type is the schema name; properties become the
/// event's JSON metadata.
fn record_event(record: AppendRecord) -> Result<EventData, Status> {
    let id = match record.record_id.as_deref() {
        Some(text) if !text.is_empty() => Uuid::parse_str(text)
            .map_err(|_| Status::invalid_argument(format!("'{text}' is not a valid record id")))?,
        _ => Uuid::new_v4(),
    };
    let schema = record.schema.ok_or_else(|| {
        Status::invalid_argument(format!("record {id} has no schema (its event type)"))
    })?;
    let content_type = match SchemaFormat::try_from(schema.format) {
        Ok(SchemaFormat::Json) => ContentType::Json,
        _ => ContentType::Binary,
    };
    let metadata = if record.properties.is_empty() {
        Bytes::new()
    } else {
        let object: serde_json::Map<String, serde_json::Value> = record
            .properties
            .into_iter()
            .map(|(key, value)| (key, json_value(value)))
            .collect();
        Bytes::from(serde_json::Value::Object(object).to_string())
    };
    Ok(EventData {
        id,
        event_type: schema.name,
        data: Bytes::from(record.data),
        metadata,
        content_type,
        valid_at: None,
        recorded_at: None,
    })
}

fn json_value(value: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, json_value(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(json_value).collect())
        }
    }
}

/// The v2 status for a failed multi-stream append. `check_index` maps a stream to the
/// consistency check that named it (AppendRecords only).
fn append_status(error: &AppendError, check_index: Option<&HashMap<String, i32>>) -> Status {
    match error {
        AppendError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => {
            let expected = code_of_expected(*expected);
            let actual = code_of_actual(*actual);
            if let Some(index) = check_index.and_then(|map| map.get(stream)) {
                return rich(
                    Code::FailedPrecondition,
                    format!("Append failed due to consistency check {index} on stream '{stream}'. Expected state: {expected}. Actual state: {actual}."),
                    "kurrentdb.protocol.v2.streams.errors.AppendConsistencyViolationErrorDetails",
                    &AppendConsistencyViolationErrorDetails {
                        violations: vec![ConsistencyViolation {
                            check_index: *index,
                            r#type: Some(consistency_violation::Type::StreamState(
                                consistency_violation::StreamStateViolation {
                                    stream: stream.clone(),
                                    expected_state: expected,
                                    actual_state: actual,
                                },
                            )),
                        }],
                    },
                );
            }
            rich(
                Code::FailedPrecondition,
                format!("Append failed due to a revision conflict on stream '{stream}'. Expected revision: {expected}. Actual revision: {actual}."),
                "kurrentdb.protocol.v2.streams.errors.StreamRevisionConflictErrorDetails",
                &StreamRevisionConflictErrorDetails {
                    stream: stream.clone(),
                    expected_revision: expected,
                    actual_revision: actual,
                },
            )
        }
        AppendError::StreamDeleted { stream } => rich(
            Code::FailedPrecondition,
            format!("Stream '{stream}' has been tombstoned."),
            "kurrentdb.protocol.v2.streams.errors.StreamTombstonedErrorDetails",
            &StreamTombstonedErrorDetails {
                stream: stream.clone(),
            },
        ),
        AppendError::Invalid(InvalidInput::EventTooLarge { id, size, max, .. }) => rich(
            Code::InvalidArgument,
            format!("Record {id} is {size} bytes, over the maximum of {max}."),
            "kurrentdb.protocol.v2.streams.errors.AppendRecordSizeExceededErrorDetails",
            &AppendRecordSizeExceededErrorDetails {
                stream: String::new(),
                record_id: id.to_string(),
                size: i32::try_from(*size).unwrap_or(i32::MAX),
                max_size: i32::try_from(*max).unwrap_or(i32::MAX),
            },
        ),
        AppendError::Invalid(InvalidInput::AppendTooLarge { size, max }) => rich(
            Code::Aborted,
            format!("The append is {size} bytes, over the maximum of {max}."),
            "kurrentdb.protocol.v2.streams.errors.AppendTransactionSizeExceededErrorDetails",
            &AppendTransactionSizeExceededErrorDetails {
                size: i32::try_from(*size).unwrap_or(i32::MAX),
                max_size: i32::try_from(*max).unwrap_or(i32::MAX),
            },
        ),
        other => convert::append_error("Append", other),
    }
}

/// The v2 Streams service.
#[derive(Clone, Debug)]
pub struct V2StreamsService {
    state: ServerState,
}

impl V2StreamsService {
    /// The service over `state`.
    pub fn new(state: ServerState) -> V2StreamsService {
        V2StreamsService { state }
    }

    async fn append_all(
        &self,
        caller: &Caller,
        requests: Vec<AppendRequest>,
        check_index: Option<&HashMap<String, i32>>,
    ) -> Result<Vec<strata::AppendResult>, Status> {
        // Every stream of the append, including those only checked: all or nothing.
        for request in &requests {
            let authorized = caller
                .authorize_stream(&self.state, StreamAction::Write, &request.stream)
                .await;
            if let Err(status) = authorized {
                return Err(match status.code() {
                    Code::PermissionDenied => access_denied(caller, "streams.write"),
                    _ => status,
                });
            }
        }
        let count = requests.iter().map(|r| r.events.len()).sum();
        let started = Instant::now();
        let result = self.state.store.append_multi(requests).await;
        for appended in result.iter().flatten() {
            self.state.auth.appended(&appended.stream);
        }
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(AppendError::WrongExpectedRevision { .. }) => Outcome::Conflict,
            Err(AppendError::Storage(_)) => Outcome::Error,
            Err(_) => Outcome::Rejected,
        };
        self.state
            .metrics
            .record_append(Api::Grpc, outcome, count, started.elapsed());
        result.map_err(|error| append_status(&error, check_index))
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn last_commit(results: &[strata::AppendResult]) -> i64 {
    results
        .iter()
        .filter_map(strata::AppendResult::last_position)
        .max()
        .map_or(0, |p| signed(convert::commit_position(p)))
}

fn revision_of(result: &strata::AppendResult) -> i64 {
    match result.current_revision {
        CurrentRevision::Current(r) => signed(r),
        CurrentRevision::NoStream => state_code::NO_STREAM,
    }
}

#[tonic::async_trait]
impl StreamsService for V2StreamsService {
    async fn append_session(
        &self,
        request: Request<Streaming<WireAppendRequest>>,
    ) -> Result<Response<AppendSessionResponse>, Status> {
        let caller = Caller::of(&request);
        let mut incoming = request.into_inner();
        let mut requests: Vec<AppendRequest> = Vec::new();
        // The store's limits, checked as the requests arrive: a session over them is
        // refused at its first stream or record too many, with the answer the store
        // would give, instead of being held whole first.
        let limits = self.state.store.limits();
        let mut budget = AppendBudget::new(limits);
        let receiving = Instant::now();
        let refuse = |invalid: InvalidInput, events: usize| {
            self.state.metrics.record_append(
                Api::Grpc,
                Outcome::Rejected,
                events,
                receiving.elapsed(),
            );
            append_status(&AppendError::Invalid(invalid), None)
        };
        while let Some(message) = incoming.message().await? {
            if requests.len() == limits.append_streams_max {
                let invalid = InvalidInput::TooManyStreams {
                    count: requests.len() + 1,
                    max: limits.append_streams_max,
                };
                return Err(refuse(invalid, budget.events()));
            }
            if requests.iter().any(|r| r.stream == message.stream) {
                let stream = message.stream;
                return Err(rich(
                    Code::Aborted,
                    format!("Stream '{stream}' is already in this append session."),
                    "kurrentdb.protocol.v2.streams.errors.StreamAlreadyInAppendSessionErrorDetails",
                    &StreamAlreadyInAppendSessionErrorDetails { stream },
                ));
            }
            let expected = expected_from_code(message.expected_revision)?;
            let mut events = Vec::with_capacity(message.records.len());
            for record in message.records {
                let event = record_event(record)?;
                if let Err(invalid) = budget.add(&event) {
                    return Err(refuse(invalid, budget.events()));
                }
                events.push(event);
            }
            requests.push(AppendRequest::new(message.stream, expected, events));
        }
        if requests.is_empty() {
            return Err(Status::invalid_argument(
                "an append session needs at least one request",
            ));
        }
        let results = self.append_all(&caller, requests, None).await?;
        Ok(Response::new(AppendSessionResponse {
            position: last_commit(&results),
            output: results
                .iter()
                .map(|result| AppendResponse {
                    stream: result.stream.clone(),
                    stream_revision: revision_of(result),
                    position: result
                        .last_position()
                        .map(|p| signed(convert::commit_position(p))),
                })
                .collect(),
        }))
    }

    async fn append_records(
        &self,
        request: Request<AppendRecordsRequest>,
    ) -> Result<Response<AppendRecordsResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        // One strata request per stream, in order of first appearance.
        let mut order: Vec<String> = Vec::new();
        let mut events: HashMap<String, Vec<EventData>> = HashMap::new();
        // The store's limits on events, checked before building more of them.
        let mut budget = AppendBudget::new(self.state.store.limits());
        for record in request.records {
            let stream = record.stream.clone();
            let event = record_event(record)?;
            if let Err(invalid) = budget.add(&event) {
                return Err(append_status(&AppendError::Invalid(invalid), None));
            }
            if !events.contains_key(&stream) {
                order.push(stream.clone());
            }
            events.entry(stream).or_default().push(event);
        }
        let mut expected: HashMap<String, ExpectedRevision> = HashMap::new();
        let mut check_index: HashMap<String, i32> = HashMap::new();
        for (index, check) in request.checks.into_iter().enumerate() {
            let Some(consistency_check::Type::StreamState(check)) = check.r#type else {
                return Err(Status::invalid_argument(format!(
                    "consistency check {index} has no type"
                )));
            };
            if expected.contains_key(&check.stream) {
                return Err(Status::invalid_argument(format!(
                    "stream '{}' has more than one consistency check",
                    check.stream
                )));
            }
            expected.insert(
                check.stream.clone(),
                expected_from_code(Some(check.expected_state))?,
            );
            check_index.insert(
                check.stream.clone(),
                i32::try_from(index).unwrap_or(i32::MAX),
            );
            if let std::collections::hash_map::Entry::Vacant(entry) = events.entry(check.stream) {
                // A check on a stream the append does not write: an empty request checks it.
                order.push(entry.key().clone());
                entry.insert(Vec::new());
            }
        }
        if order.is_empty() {
            return Err(Status::invalid_argument(
                "an append needs at least one record",
            ));
        }
        let requests = order
            .iter()
            .map(|stream| {
                AppendRequest::new(
                    stream.clone(),
                    expected
                        .get(stream)
                        .copied()
                        .unwrap_or(ExpectedRevision::Any),
                    events.remove(stream).unwrap_or_default(),
                )
            })
            .collect();
        let results = self
            .append_all(&caller, requests, Some(&check_index))
            .await?;
        Ok(Response::new(AppendRecordsResponse {
            position: last_commit(&results),
            revisions: results
                .iter()
                .map(|result| StreamRevision {
                    stream: result.stream.clone(),
                    revision: revision_of(result),
                })
                .collect(),
        }))
    }
}
