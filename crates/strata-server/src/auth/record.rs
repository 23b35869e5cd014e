//! A typed record kept under one key of a system stream's metadata: how user accounts
//! and tokens are stored. Each write expects the revision its record was read at, so
//! two servers changing the same record cannot lose each other's change.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Map;
use strata::{AppendError, CurrentRevision, ReadError, Store, StreamMetadata};

/// Reading or writing a record failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The store could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The store refused or failed the write.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The stored value does not decode, or the record does not encode.
    #[error("{0}")]
    Corrupt(String),
}

/// The record under `key` in the metadata of `stream` (`None` if there is none), and
/// the revision to write the next one against.
pub async fn load<T: DeserializeOwned>(
    store: &Store,
    stream: &str,
    key: &str,
) -> Result<(Option<T>, CurrentRevision), RecordError> {
    let stored = store.stream_metadata(stream).await?;
    let record = match stored.metadata.custom.get(key) {
        None => None,
        Some(value) => Some(
            serde_json::from_value(value.clone())
                .map_err(|error| RecordError::Corrupt(error.to_string()))?,
        ),
    };
    Ok((record, stored.revision))
}

/// Replaces the metadata of `stream` with `record` under `key`, if it is still at
/// `read_at`.
pub async fn save<T: Serialize>(
    store: &Store,
    stream: &str,
    key: &str,
    record: &T,
    read_at: CurrentRevision,
) -> Result<(), RecordError> {
    let value =
        serde_json::to_value(record).map_err(|error| RecordError::Corrupt(error.to_string()))?;
    let mut custom = Map::new();
    custom.insert(key.to_owned(), value);
    let metadata = StreamMetadata {
        custom,
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(stream, read_at.into(), &metadata)
        .await?;
    Ok(())
}
