//! `Streams.Delete` (soft delete) and `Streams.Tombstone` (forever).

use strata::{ExpectedRevision, Position};
use tonic::Status;

use crate::auth::StreamAction;
use crate::grpc::auth::Caller;
use crate::grpc::convert;
use crate::proto::event_store::client::streams::{
    delete_req, delete_resp, tombstone_req, tombstone_resp, DeleteReq, DeleteResp, TombstoneReq,
    TombstoneResp,
};
use crate::state::ServerState;

fn expected_delete(
    option: Option<delete_req::options::ExpectedStreamRevision>,
) -> ExpectedRevision {
    use delete_req::options::ExpectedStreamRevision as E;
    match option {
        Some(E::Revision(revision)) => ExpectedRevision::Exact(revision),
        Some(E::NoStream(_)) => ExpectedRevision::NoStream,
        Some(E::StreamExists(_)) => ExpectedRevision::StreamExists,
        Some(E::Any(_)) | None => ExpectedRevision::Any,
    }
}

fn expected_tombstone(
    option: Option<tombstone_req::options::ExpectedStreamRevision>,
) -> ExpectedRevision {
    use tombstone_req::options::ExpectedStreamRevision as E;
    match option {
        Some(E::Revision(revision)) => ExpectedRevision::Exact(revision),
        Some(E::NoStream(_)) => ExpectedRevision::NoStream,
        Some(E::StreamExists(_)) => ExpectedRevision::StreamExists,
        Some(E::Any(_)) | None => ExpectedRevision::Any,
    }
}

/// Runs one Delete call.
pub async fn delete(
    state: &ServerState,
    caller: &Caller,
    request: DeleteReq,
) -> Result<DeleteResp, Status> {
    let options = request
        .options
        .ok_or_else(|| Status::invalid_argument("'options' is a required argument"))?;
    let stream = convert::stream_name(options.stream_identifier.as_ref())?;
    // Both calls need the stream's `$d`.
    caller
        .authorize_stream(state, StreamAction::Delete, &stream)
        .await?;
    let expected = expected_delete(options.expected_stream_revision);
    let position: Position = state
        .store
        .delete_stream(&stream, expected)
        .await
        .map_err(|error| convert::append_error("Delete", &error))?;
    let commit = convert::commit_position(position);
    Ok(DeleteResp {
        position_option: Some(delete_resp::PositionOption::Position(
            delete_resp::Position {
                commit_position: commit,
                prepare_position: commit,
            },
        )),
    })
}

/// Runs one Tombstone call.
pub async fn tombstone(
    state: &ServerState,
    caller: &Caller,
    request: TombstoneReq,
) -> Result<TombstoneResp, Status> {
    let options = request
        .options
        .ok_or_else(|| Status::invalid_argument("'options' is a required argument"))?;
    let stream = convert::stream_name(options.stream_identifier.as_ref())?;
    // Both calls need the stream's `$d`.
    caller
        .authorize_stream(state, StreamAction::Delete, &stream)
        .await?;
    let expected = expected_tombstone(options.expected_stream_revision);
    let position = state
        .store
        .tombstone_stream(&stream, expected)
        .await
        .map_err(|error| convert::append_error("Tombstone", &error))?;
    let commit = convert::commit_position(position);
    Ok(TombstoneResp {
        position_option: Some(tombstone_resp::PositionOption::Position(
            tombstone_resp::Position {
                commit_position: commit,
                prepare_position: commit,
            },
        )),
    })
}
