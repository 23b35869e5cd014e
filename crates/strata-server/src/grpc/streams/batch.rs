//! `Streams.BatchAppend`: a bidirectional stream of appends. Each request carries a
//! correlation id; a batch may span several requests (options on the first), and is
//! appended when one arrives with `is_final`. Batches are appended concurrently and
//! answered by correlation id, so one slow batch does not hold up the others. Errors
//! are per batch, in the response, as KurrentDB sends them: a `google.rpc.Status` whose
//! detail is `event_store.client.WrongExpectedVersion`, `StreamDeleted`,
//! `MaximumAppendSizeExceeded` or `BadRequest`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use strata::validate::AppendBudget;
use strata::{AppendError, CurrentRevision, EventData, ExpectedRevision, InvalidInput};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use uuid::Uuid;

use super::{wire, ResponseStream};
use crate::auth::StreamAction;
use crate::grpc::auth::Caller;
use crate::grpc::convert;
use crate::metrics::{Api, Outcome};
use crate::proto::event_store::client::streams::batch_append_req::options::ExpectedStreamPosition;
use crate::proto::event_store::client::streams::batch_append_req::Options;
use crate::proto::event_store::client::streams::batch_append_resp::{self, success, Success};
use crate::proto::event_store::client::streams::{BatchAppendReq, BatchAppendResp};
use crate::proto::event_store::client::{
    wrong_expected_version as wev, AllStreamPosition, BadRequest, MaximumAppendSizeExceeded,
    StreamDeleted, Uuid as ProtoUuid, WrongExpectedVersion,
};
use crate::proto::google::rpc::Status as RpcStatus;
use crate::state::ServerState;

/// Most batches one call may have open (started, not yet final) at once.
const OPEN_BATCHES_MAX: usize = 1024;

struct OpenBatch<'l> {
    wire_id: Option<ProtoUuid>,
    options: Options,
    events: Vec<EventData>,
    /// The store's limits on one append, counted as the events arrive.
    budget: AppendBudget<'l>,
    /// This batch's share of the call's buffer (one permit per byte of its events);
    /// given back when the batch is appended, refused or dropped.
    permit: Option<OwnedSemaphorePermit>,
    /// A problem found while collecting (bad event, over a limit), reported when the
    /// batch is final; its events are dropped at once.
    invalid: Option<RpcStatus>,
}

impl OpenBatch<'_> {
    /// Bytes of events this batch holds.
    fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Refuses the batch: drops its events and frees its share of the buffer.
    fn refuse(&mut self, status: RpcStatus) {
        self.invalid = Some(status);
        self.events = Vec::new();
        self.permit = None;
    }
}

/// Runs one BatchAppend call.
///
/// Memory is bounded per call: each batch by the store's limits on one append (events,
/// bytes), checked as its events arrive, and all the batches of the call together,
/// open or being appended, by the store's append size limit. A batch that would take
/// the open ones past that is refused (`MaximumAppendSizeExceeded`); when batches being
/// appended hold the room, the call stops reading until they are done, so a client
/// that sends faster than the store appends is slowed down, not buffered.
pub fn batch_append(
    state: ServerState,
    caller: Caller,
    mut requests: Streaming<BatchAppendReq>,
) -> ResponseStream<BatchAppendResp> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let limits = state.store.limits().clone();
        let buffer_max = limits
            .append_size_bytes_max
            .min(u32::MAX as usize)
            .min(Semaphore::MAX_PERMITS);
        let buffer = Arc::new(Semaphore::new(buffer_max));
        let mut open: HashMap<Uuid, OpenBatch<'_>> = HashMap::new();
        // Bytes held by open batches (the rest of the buffer's taken permits belong to
        // batches being appended).
        let mut open_bytes = 0usize;
        loop {
            let request = tokio::select! {
                request = requests.message() => request,
                () = state.shutting_down() => break,
            };
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    break;
                }
            };
            let correlation = match convert::uuid_from_proto(request.correlation_id.as_ref()) {
                Ok(id) => id,
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    break;
                }
            };
            if !open.contains_key(&correlation) {
                let Some(mut options) = request.options.clone() else {
                    let _ = sender
                        .send(Err(Status::invalid_argument(format!(
                            "batch {correlation}: the first message of a batch must carry its options"
                        ))))
                        .await;
                    break;
                };
                if open.len() >= OPEN_BATCHES_MAX {
                    let _ = sender
                        .send(Err(Status::resource_exhausted(format!(
                            "more than {OPEN_BATCHES_MAX} unfinished batches on one call"
                        ))))
                        .await;
                    break;
                }
                // A name over the limit is not kept while the batch stays open.
                let name_length = options
                    .stream_identifier
                    .as_ref()
                    .map_or(0, |s| s.stream_name.len());
                let invalid = (name_length > limits.stream_name_bytes_max).then(|| {
                    options.stream_identifier = None;
                    let invalid = InvalidInput::StreamNameTooLong {
                        length: name_length,
                        max: limits.stream_name_bytes_max,
                    };
                    error_status("", &AppendError::Invalid(invalid))
                });
                // Checked when the batch opens, as KurrentDB does: a refused batch's
                // events are not kept.
                let invalid = match invalid {
                    Some(invalid) => Some(invalid),
                    None => match convert::stream_name(options.stream_identifier.as_ref()) {
                        Ok(stream) => caller
                            .authorize_stream(&state, StreamAction::Write, &stream)
                            .await
                            .err()
                            .map(|status| match status.code() {
                                Code::PermissionDenied => access_denied(),
                                code => RpcStatus {
                                    code: code as i32,
                                    message: status.message().to_owned(),
                                    details: None,
                                },
                            }),
                        // Reported with the batch's other problems when it is final.
                        Err(_) => None,
                    },
                };
                open.insert(
                    correlation,
                    OpenBatch {
                        wire_id: request.correlation_id.clone(),
                        options,
                        events: Vec::new(),
                        budget: AppendBudget::new(&limits),
                        permit: None,
                        invalid,
                    },
                );
            }
            let Some(batch) = open.get_mut(&correlation) else {
                continue;
            };
            for proposed in request.proposed_messages {
                if batch.invalid.is_some() {
                    break;
                }
                let event = match wire::proposed_event(
                    proposed.id.as_ref(),
                    &proposed.metadata,
                    proposed.custom_metadata,
                    proposed.data,
                ) {
                    Ok(event) => event,
                    Err(status) => {
                        open_bytes -= batch.bytes();
                        batch.refuse(bad_request(status.message()));
                        break;
                    }
                };
                if let Err(invalid) = batch.budget.add(&event) {
                    open_bytes -= batch.bytes();
                    batch.refuse(error_status("", &AppendError::Invalid(invalid)));
                    break;
                }
                let size = event.size_bytes();
                let room = u32::try_from(size)
                    .ok()
                    .filter(|_| open_bytes.saturating_add(size) <= buffer_max);
                let Some(permits) = room else {
                    open_bytes -= batch.bytes();
                    batch.refuse(maximum_append_size(buffer_max));
                    break;
                };
                // Waits only for batches being appended to give their room back.
                let permit = tokio::select! {
                    permit = buffer.clone().acquire_many_owned(permits) => permit,
                    () = state.shutting_down() => return,
                };
                let Ok(permit) = permit else { return };
                match &mut batch.permit {
                    Some(held) => held.merge(permit),
                    None => batch.permit = Some(permit),
                }
                open_bytes += size;
                batch.events.push(event);
            }
            if request.is_final {
                if let Some(batch) = open.remove(&correlation) {
                    open_bytes -= batch.bytes();
                    let state = state.clone();
                    let sender = sender.clone();
                    let OpenBatch {
                        wire_id,
                        options,
                        events,
                        permit,
                        invalid,
                        ..
                    } = batch;
                    let finished = Finished {
                        wire_id,
                        options,
                        events,
                        invalid,
                    };
                    // Appended concurrently; the store's group commit batches them. The
                    // batch's room in the buffer is given back once it is appended.
                    tokio::spawn(async move {
                        let response = complete(&state, finished).await;
                        drop(permit);
                        let _ = sender.send(Ok(response)).await;
                    });
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// A batch whose last message arrived.
struct Finished {
    wire_id: Option<ProtoUuid>,
    options: Options,
    events: Vec<EventData>,
    invalid: Option<RpcStatus>,
}

fn expected(option: Option<&ExpectedStreamPosition>) -> ExpectedRevision {
    match option {
        Some(ExpectedStreamPosition::StreamPosition(revision)) => {
            ExpectedRevision::Exact(*revision)
        }
        Some(ExpectedStreamPosition::NoStream(())) => ExpectedRevision::NoStream,
        Some(ExpectedStreamPosition::StreamExists(())) => ExpectedRevision::StreamExists,
        Some(ExpectedStreamPosition::Any(())) | None => ExpectedRevision::Any,
    }
}

fn echo_expected(
    option: Option<&ExpectedStreamPosition>,
) -> Option<batch_append_resp::ExpectedStreamPosition> {
    option.map(|option| match option {
        ExpectedStreamPosition::StreamPosition(r) => {
            batch_append_resp::ExpectedStreamPosition::StreamPosition(*r)
        }
        ExpectedStreamPosition::NoStream(()) => {
            batch_append_resp::ExpectedStreamPosition::NoStream(())
        }
        ExpectedStreamPosition::Any(()) => batch_append_resp::ExpectedStreamPosition::Any(()),
        ExpectedStreamPosition::StreamExists(()) => {
            batch_append_resp::ExpectedStreamPosition::StreamExists(())
        }
    })
}

/// Appends one finished batch and builds its response.
async fn complete(state: &ServerState, batch: Finished) -> BatchAppendResp {
    let expected_option = batch.options.expected_stream_position.as_ref();
    let mut response = BatchAppendResp {
        correlation_id: batch.wire_id,
        result: None,
        stream_identifier: batch.options.stream_identifier.clone(),
        expected_stream_position: echo_expected(expected_option),
    };
    if let Some(invalid) = batch.invalid {
        response.result = Some(batch_append_resp::Result::Error(invalid));
        return response;
    }
    let stream = match convert::stream_name(batch.options.stream_identifier.as_ref()) {
        Ok(stream) => stream,
        Err(status) => {
            response.result = Some(batch_append_resp::Result::Error(bad_request(
                status.message(),
            )));
            return response;
        }
    };
    let expected = expected(expected_option);
    let count = batch.events.len();
    let started = Instant::now();
    let result = state.store.append(&stream, expected, batch.events).await;
    if result.is_ok() {
        state.auth.appended(&stream);
    }
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(AppendError::WrongExpectedRevision { .. }) => Outcome::Conflict,
        Err(AppendError::Storage(_)) => Outcome::Error,
        Err(_) => Outcome::Rejected,
    };
    state
        .metrics
        .record_append(Api::Grpc, outcome, count, started.elapsed());
    response.result = Some(match result {
        Ok(result) => batch_append_resp::Result::Success(Success {
            current_revision_option: Some(match result.current_revision {
                CurrentRevision::Current(r) => success::CurrentRevisionOption::CurrentRevision(r),
                CurrentRevision::NoStream => success::CurrentRevisionOption::NoStream(()),
            }),
            position_option: Some(match result.last_position() {
                Some(position) => {
                    let commit = convert::commit_position(position);
                    success::PositionOption::Position(AllStreamPosition {
                        commit_position: commit,
                        prepare_position: commit,
                    })
                }
                None => success::PositionOption::NoPosition(()),
            }),
        }),
        Err(error) => batch_append_resp::Result::Error(error_status(&stream, &error)),
    });
    response
}

fn detail<M: Message>(code: Code, message: String, type_name: &str, detail: &M) -> RpcStatus {
    RpcStatus {
        code: code as i32,
        message,
        details: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: detail.encode_to_vec(),
        }),
    }
}

/// KurrentDB's per-batch refusal: PERMISSION_DENIED, `AccessDenied`, with the packed
/// `event_store.client.AccessDenied` detail.
fn access_denied() -> RpcStatus {
    detail(
        Code::PermissionDenied,
        "AccessDenied".to_owned(),
        "event_store.client.AccessDenied",
        &crate::proto::event_store::client::AccessDenied {},
    )
}

fn bad_request(message: &str) -> RpcStatus {
    detail(
        Code::InvalidArgument,
        message.to_owned(),
        "event_store.client.BadRequest",
        &BadRequest {
            message: message.to_owned(),
        },
    )
}

fn maximum_append_size(max: usize) -> RpcStatus {
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    detail(
        Code::InvalidArgument,
        format!("Maximum Append Size of {max} Exceeded."),
        "event_store.client.MaximumAppendSizeExceeded",
        &MaximumAppendSizeExceeded {
            max_append_size: max,
        },
    )
}

/// The per-batch error status for a failed append.
fn error_status(stream: &str, error: &AppendError) -> RpcStatus {
    match error {
        AppendError::WrongExpectedRevision {
            expected, actual, ..
        } => detail(
            Code::FailedPrecondition,
            error.to_string(),
            "event_store.client.WrongExpectedVersion",
            &WrongExpectedVersion {
                current_stream_revision_option: Some(match actual {
                    CurrentRevision::Current(r) => {
                        wev::CurrentStreamRevisionOption::CurrentStreamRevision(*r)
                    }
                    CurrentRevision::NoStream => {
                        wev::CurrentStreamRevisionOption::CurrentNoStream(())
                    }
                }),
                expected_stream_position_option: Some(match expected {
                    ExpectedRevision::Exact(r) => {
                        wev::ExpectedStreamPositionOption::ExpectedStreamPosition(*r)
                    }
                    ExpectedRevision::Any => wev::ExpectedStreamPositionOption::ExpectedAny(()),
                    ExpectedRevision::StreamExists => {
                        wev::ExpectedStreamPositionOption::ExpectedStreamExists(())
                    }
                    ExpectedRevision::NoStream => {
                        wev::ExpectedStreamPositionOption::ExpectedNoStream(())
                    }
                }),
            },
        ),
        AppendError::StreamDeleted { .. } => detail(
            Code::FailedPrecondition,
            format!("Event stream '{stream}' is deleted."),
            "event_store.client.StreamDeleted",
            &StreamDeleted {
                stream_identifier: Some(convert::stream_identifier(stream)),
            },
        ),
        AppendError::Invalid(InvalidInput::AppendTooLarge { max, .. }) => maximum_append_size(*max),
        AppendError::Invalid(input) => bad_request(&input.to_string()),
        AppendError::Storage(storage) => {
            let status = convert::storage(storage);
            RpcStatus {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: None,
            }
        }
        other => bad_request(&other.to_string()),
    }
}
