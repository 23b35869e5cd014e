//! [`Store`], the handle users hold: the embedded engine by default, or any
//! [`EventStore`] backend.

use std::path::Path;
use std::sync::Arc;

use crate::filter::Filter;

use crate::engine::{Engine, Options};
use crate::error::{AppendError, OpenError, ReadError};
use crate::event::{EventData, Position, RecordedEvent};
use crate::limits::Limits;
use crate::metadata::StreamMetadata;
use crate::revision::{CurrentRevision, ExpectedRevision};
use crate::store::{
    AppendRequest, AppendResult, EventStore, ListStreamsOptions, MetadataResult, ReadAllOptions,
    ReadAllPage, ReadStreamOptions, StoreStats, StreamInfo,
};
use crate::subscription::{SubscribeFrom, Subscription};

/// A handle to an event store: the embedded engine by default, or any [`EventStore`].
///
/// Cheap to clone; all clones share one store. Dropping the last handle closes it.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use strata::{EventData, ExpectedRevision, ReadStreamOptions, Store};
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let event = EventData::json("Deposited", &serde_json::json!({ "amount": 10 }))?;
/// store.append("account-1", ExpectedRevision::NoStream, vec![event]).await?;
/// let events = store.read_stream("account-1", ReadStreamOptions::forwards()).await?;
/// assert_eq!(events[0].event_type, "Deposited");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn EventStore>,
    embedded: Option<Arc<Engine>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("embedded", &self.embedded.is_some())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the embedded store in directory `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        Store::open_with(path, Options::default())
    }

    /// Opens (or creates) the embedded store in directory `path`.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Store, OpenError> {
        Ok(Store::from_engine(Engine::open(path, options)?))
    }

    /// Wraps an opened embedded engine.
    pub fn from_engine(engine: Engine) -> Store {
        let engine = Arc::new(engine);
        Store {
            backend: engine.clone(),
            embedded: Some(engine),
        }
    }

    /// Wraps any backend.
    pub fn from_backend(backend: Arc<dyn EventStore>) -> Store {
        Store {
            backend,
            embedded: None,
        }
    }

    /// The backend, for calls this handle does not wrap.
    pub fn backend(&self) -> &Arc<dyn EventStore> {
        &self.backend
    }

    /// How many other references to the store exist besides this handle: other
    /// handles, subscriptions, tasks holding the backend. [`Store::close`] really
    /// closes an embedded store only when this is 0.
    pub fn other_references(&self) -> usize {
        match &self.embedded {
            // `backend` is a second reference to the same engine, owned by this handle.
            Some(engine) => Arc::strong_count(engine).saturating_sub(2),
            None => Arc::strong_count(&self.backend).saturating_sub(1),
        }
    }

    /// The limits appends are checked against.
    pub fn limits(&self) -> &Limits {
        self.backend.limits()
    }

    /// The embedded engine, if this store is embedded (for its open report, `verify`, …).
    pub fn embedded(&self) -> Option<&Engine> {
        self.embedded.as_deref()
    }

    /// Appends `events` to `stream` if it is in the `expected` state.
    pub async fn append(
        &self,
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        let request = AppendRequest::new(stream, expected, events);
        let mut results = self.backend.append_multi(vec![request]).await?;
        Ok(results.swap_remove(0))
    }

    /// Appends to several streams at once: all or nothing.
    pub async fn append_multi(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        self.backend.append_multi(requests).await
    }

    /// Reads one stream.
    pub async fn read_stream(
        &self,
        stream: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.backend.read_stream(stream, options).await
    }

    /// Reads the global log (see [`EventStore::read_all`]).
    pub async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        self.backend.read_all(options).await
    }

    /// Reads one page of the global log, which a filtered read may cut short at its scan
    /// budget (see [`EventStore::read_all_page`]).
    pub async fn read_all_page(&self, options: ReadAllOptions) -> Result<ReadAllPage, ReadError> {
        self.backend.read_all_page(options).await
    }

    /// Lists streams.
    pub async fn list_streams(
        &self,
        options: ListStreamsOptions,
    ) -> Result<Vec<StreamInfo>, ReadError> {
        self.backend.list_streams(options).await
    }

    /// A stream's metadata (the default if none was set).
    pub async fn stream_metadata(&self, stream: &str) -> Result<MetadataResult, ReadError> {
        let metastream = crate::stream::metastream(stream);
        let options = ReadStreamOptions::backwards().limit(1);
        match self.backend.read_stream(&metastream, options).await {
            Ok(events) => match events.first() {
                Some(event) => Ok(MetadataResult {
                    metadata: StreamMetadata::from_slice(&event.data)?,
                    revision: CurrentRevision::Current(event.revision),
                }),
                None => Ok(MetadataResult {
                    metadata: StreamMetadata::default(),
                    revision: CurrentRevision::NoStream,
                }),
            },
            Err(ReadError::StreamNotFound { .. }) => Ok(MetadataResult {
                metadata: StreamMetadata::default(),
                revision: CurrentRevision::NoStream,
            }),
            Err(error) => Err(error),
        }
    }

    /// Replaces a stream's metadata. `expected` applies to the metadata stream.
    pub async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: &StreamMetadata,
    ) -> Result<AppendResult, AppendError> {
        let event = crate::write::metadata_event(metadata);
        self.append(crate::stream::metastream(stream), expected, vec![event])
            .await
    }

    /// Soft-deletes a stream.
    pub async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.backend.delete_stream(stream, expected).await
    }

    /// Tombstones a stream.
    pub async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.backend.tombstone_stream(stream, expected).await
    }

    /// The position of the last event, if any.
    pub fn head(&self) -> Option<Position> {
        *self.backend.watch_head().borrow()
    }

    /// Counts and sizes.
    pub async fn stats(&self) -> Result<StoreStats, ReadError> {
        self.backend.stats().await
    }

    /// Subscribes to the global log: history from `from`, then live events, filtered.
    pub fn subscribe_all(&self, from: SubscribeFrom<Position>, filter: Filter) -> Subscription {
        Subscription::all(self.backend.clone(), from, filter)
    }

    /// Subscribes to one stream: history after `from`, then live events.
    pub fn subscribe_stream(&self, stream: &str, from: SubscribeFrom<u64>) -> Subscription {
        Subscription::stream(self.backend.clone(), stream, from)
    }

    /// Waits until every handle's pending appends are done, writes the index checkpoint
    /// and releases the store's lock, if this is the last handle of an embedded store.
    /// Other handles keep the store open.
    pub async fn close(self) -> Result<(), crate::error::StorageError> {
        let Store { backend, embedded } = self;
        drop(backend);
        match embedded.and_then(|engine| Arc::try_unwrap(engine).ok()) {
            Some(engine) => tokio::task::spawn_blocking(move || engine.close())
                .await
                .unwrap_or(Err(crate::error::StorageError::Closed)),
            None => Ok(()),
        }
    }
}
