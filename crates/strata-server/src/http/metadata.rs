//! Stream metadata (`GET`/`PUT /streams/{stream}/metadata`) and deletion
//! (`DELETE /streams/{stream}`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use strata::StreamMetadata;

use super::auth::Caller;
use super::error::{current_json, ApiError};
use super::json::{body_bytes, parse};
use super::params::{Params, StreamPath};
use super::read::wait_for_position;
use super::HttpState;
use crate::auth::StreamAction;

/// A stream's metadata.
#[derive(Serialize)]
pub struct MetadataResponse {
    /// The stream.
    stream: String,
    /// The metadata object, with KurrentDB's keys (`$maxCount`, `$maxAge` in seconds,
    /// `$tb`, `$cacheControl`, `$acl`) and any custom ones; `{}` if none was set.
    metadata: Value,
    /// Revision of the metadata stream: pass it as `expected_revision` to the next `PUT`
    /// (`"no_stream"` if metadata was never set).
    metadata_revision: Value,
}

/// `GET /streams/{stream}/metadata?min_position=`.
pub async fn get(
    State(http): State<HttpState>,
    caller: Caller,
    StreamPath(stream): StreamPath,
    mut params: Params,
) -> Result<Json<MetadataResponse>, ApiError> {
    let min_position = params.take_u64("min_position")?;
    params.finish()?;
    caller
        .authorize_stream(&http, StreamAction::MetadataRead, &stream)
        .await?;
    wait_for_position(&http, min_position).await?;
    let result = http.state.store.stream_metadata(&stream).await?;
    Ok(Json(MetadataResponse {
        stream,
        metadata: result.metadata.to_json(),
        metadata_revision: current_json(result.revision),
    }))
}

/// Where a metadata write or a delete was recorded.
#[derive(Serialize)]
pub struct WriteResponse {
    /// The stream.
    stream: String,
    /// Position of the event that recorded it.
    position: Option<u64>,
    /// For a metadata write: the metadata stream's new revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_revision: Option<Value>,
    /// For a delete: whether it was a tombstone (permanent).
    #[serde(skip_serializing_if = "Option::is_none")]
    tombstoned: Option<bool>,
}

/// `PUT /streams/{stream}/metadata?expected_revision=`: replaces the metadata with the
/// body (a JSON object); `expected_revision` applies to the metadata stream.
pub async fn put(
    State(http): State<HttpState>,
    caller: Caller,
    StreamPath(stream): StreamPath,
    mut params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WriteResponse>, ApiError> {
    let expected = params.take_expected()?;
    params.finish()?;
    caller
        .authorize_stream(&http, StreamAction::MetadataWrite, &stream)
        .await?;
    let body = body_bytes(body, http.state.options.max_request_body)?;
    let value: Value = parse(&body)?;
    let metadata = StreamMetadata::from_json(&value).map_err(strata::AppendError::from)?;
    let result = http
        .state
        .store
        .set_stream_metadata(&stream, expected, &metadata)
        .await?;
    http.state.auth.authorizer().metadata_changed(&stream);
    Ok(Json(WriteResponse {
        stream,
        position: result.last_position().map(|p| p.0),
        metadata_revision: Some(current_json(result.current_revision)),
        tombstoned: None,
    }))
}

/// `DELETE /streams/{stream}?expected_revision=&tombstone=`: a soft delete (the stream
/// reads as not found until appended to again), or with `tombstone=true` a permanent one.
pub async fn delete(
    State(http): State<HttpState>,
    caller: Caller,
    StreamPath(stream): StreamPath,
    mut params: Params,
) -> Result<Json<WriteResponse>, ApiError> {
    let expected = params.take_expected()?;
    let tombstone = params.take_bool("tombstone")?;
    params.finish()?;
    caller
        .authorize_stream(&http, StreamAction::Delete, &stream)
        .await?;
    let store = &http.state.store;
    let position = if tombstone {
        store.tombstone_stream(&stream, expected).await?
    } else {
        store.delete_stream(&stream, expected).await?
    };
    Ok(Json(WriteResponse {
        stream,
        position: Some(position.0),
        metadata_revision: None,
        tombstoned: Some(tombstone),
    }))
}
