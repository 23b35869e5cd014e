//! `Streams.Append`: a client stream of one `Options` message, then the proposed events;
//! one response. A wrong expected revision is a normal response (`WrongExpectedVersion`),
//! not an error status, as KurrentDB sends it.

use std::time::Instant;

use strata::validate::AppendBudget;
use strata::{AppendError, CurrentRevision, ExpectedRevision};
use tonic::{Status, Streaming};

use super::wire;
use crate::auth::StreamAction;
use crate::grpc::auth::Caller;
use crate::grpc::convert;
use crate::metrics::{Api, Outcome};
use crate::proto::event_store::client::streams::append_req::options::ExpectedStreamRevision;
use crate::proto::event_store::client::streams::append_req::Content;
use crate::proto::event_store::client::streams::append_resp::{
    self, success, wrong_expected_version as wev, Success, WrongExpectedVersion,
};
use crate::proto::event_store::client::streams::{AppendReq, AppendResp};
use crate::state::ServerState;

/// The expected revision named by an append's options (KurrentDB's default is any).
fn expected(option: Option<ExpectedStreamRevision>) -> ExpectedRevision {
    match option {
        Some(ExpectedStreamRevision::Revision(revision)) => ExpectedRevision::Exact(revision),
        Some(ExpectedStreamRevision::NoStream(_)) => ExpectedRevision::NoStream,
        Some(ExpectedStreamRevision::StreamExists(_)) => ExpectedRevision::StreamExists,
        Some(ExpectedStreamRevision::Any(_)) | None => ExpectedRevision::Any,
    }
}

/// Runs one Append call.
pub async fn append(
    state: &ServerState,
    caller: &Caller,
    mut requests: Streaming<AppendReq>,
) -> Result<AppendResp, Status> {
    let options = match requests.message().await? {
        Some(AppendReq {
            content: Some(Content::Options(options)),
        }) => options,
        _ => {
            return Err(Status::invalid_argument(
                "the first message of an append must be its options",
            ))
        }
    };
    let stream = convert::stream_name(options.stream_identifier.as_ref())?;
    // Before the events are received: a refused writer does not get to send them.
    caller
        .authorize_stream(state, StreamAction::Write, &stream)
        .await?;
    let expected = expected(options.expected_stream_revision);
    let mut events = Vec::new();
    // The store's limits, checked as the events arrive: an append over them is refused
    // at its first event too many, with the answer the store would give, instead of
    // being held whole first.
    let mut budget = AppendBudget::new(state.store.limits());
    let receiving = Instant::now();
    while let Some(message) = requests.message().await? {
        match message.content {
            Some(Content::ProposedMessage(proposed)) => {
                let event = wire::proposed_event(
                    proposed.id.as_ref(),
                    &proposed.metadata,
                    proposed.custom_metadata,
                    proposed.data,
                )?;
                if let Err(invalid) = budget.add(&event) {
                    state.metrics.record_append(
                        Api::Grpc,
                        Outcome::Rejected,
                        budget.events(),
                        receiving.elapsed(),
                    );
                    return Err(convert::append_error(
                        "Append",
                        &AppendError::Invalid(invalid),
                    ));
                }
                events.push(event);
            }
            _ => {
                return Err(Status::invalid_argument(
                    "an append sends its options once, then only proposed messages",
                ))
            }
        }
    }
    let count = events.len();
    let started = Instant::now();
    let result = state.store.append(&stream, expected, events).await;
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
    match result {
        Ok(result) => Ok(AppendResp {
            result: Some(append_resp::Result::Success(Success {
                current_revision_option: Some(match result.current_revision {
                    CurrentRevision::Current(revision) => {
                        success::CurrentRevisionOption::CurrentRevision(revision)
                    }
                    CurrentRevision::NoStream => {
                        success::CurrentRevisionOption::NoStream(wire::empty())
                    }
                }),
                position_option: Some(match result.last_position() {
                    Some(position) => {
                        let commit = convert::commit_position(position);
                        success::PositionOption::Position(append_resp::Position {
                            commit_position: commit,
                            prepare_position: commit,
                        })
                    }
                    None => success::PositionOption::NoPosition(wire::empty()),
                }),
            })),
        }),
        Err(AppendError::WrongExpectedRevision {
            expected, actual, ..
        }) => Ok(AppendResp {
            result: Some(append_resp::Result::WrongExpectedVersion(
                wrong_expected_version(expected, actual),
            )),
        }),
        Err(error) => Err(convert::append_error("Append", &error)),
    }
}

/// The body of a wrong-expected-version response, in both the current fields and the
/// ones clients of 20.6 read.
fn wrong_expected_version(
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> WrongExpectedVersion {
    let empty = wire::empty;
    WrongExpectedVersion {
        current_revision_option_20_6_0: Some(match actual {
            CurrentRevision::Current(r) => wev::CurrentRevisionOption2060::CurrentRevision2060(r),
            CurrentRevision::NoStream => wev::CurrentRevisionOption2060::NoStream2060(empty()),
        }),
        expected_revision_option_20_6_0: Some(match expected {
            ExpectedRevision::Exact(r) => wev::ExpectedRevisionOption2060::ExpectedRevision2060(r),
            ExpectedRevision::StreamExists => {
                wev::ExpectedRevisionOption2060::StreamExists2060(empty())
            }
            // 20.6 had no "no stream" here; it reported it as "any".
            ExpectedRevision::Any | ExpectedRevision::NoStream => {
                wev::ExpectedRevisionOption2060::Any2060(empty())
            }
        }),
        current_revision_option: Some(match actual {
            CurrentRevision::Current(r) => wev::CurrentRevisionOption::CurrentRevision(r),
            CurrentRevision::NoStream => wev::CurrentRevisionOption::CurrentNoStream(empty()),
        }),
        expected_revision_option: Some(match expected {
            ExpectedRevision::Exact(r) => wev::ExpectedRevisionOption::ExpectedRevision(r),
            ExpectedRevision::Any => wev::ExpectedRevisionOption::ExpectedAny(empty()),
            ExpectedRevision::StreamExists => {
                wev::ExpectedRevisionOption::ExpectedStreamExists(empty())
            }
            ExpectedRevision::NoStream => wev::ExpectedRevisionOption::ExpectedNoStream(empty()),
        }),
    }
}
