//! Inline projections: read models updated as part of the append.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::definition::Projection;
use super::error::{InlineAppendError, RunError, WaitError};
use super::processor::{Processor, Sizes};
use super::sink::Sink;
use super::wait::{progress, Progress, ProgressWriter};
use crate::event::{EventData, Position};
use crate::revision::ExpectedRevision;
use crate::store::{AppendRequest, AppendResult, Store};

/// One inline projection, whatever its types.
#[async_trait]
trait Inline: Send {
    fn position(&self) -> Option<Position>;
    async fn catch_up(&mut self) -> Result<(), RunError>;
}

#[async_trait]
impl<P, S> Inline for Processor<P, S>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    fn position(&self) -> Option<Position> {
        self.visible()
    }

    async fn catch_up(&mut self) -> Result<(), RunError> {
        Processor::catch_up(self).await
    }
}

type Opening = Pin<Box<dyn Future<Output = Result<Box<dyn Inline>, RunError>> + Send>>;

struct Inner {
    projections: Vec<Box<dyn Inline>>,
    writer: ProgressWriter,
}

impl Inner {
    fn position(&self, store: &Store) -> Option<Position> {
        let mut positions = self.projections.iter().map(|p| p.position());
        match positions.next() {
            Some(first) => positions.fold(first, Option::min),
            None => store.head(),
        }
    }

    /// Brings every projection that is below `target` up to the head of the log. All are
    /// tried; the first failure is returned.
    async fn catch_up_to(
        &mut self,
        store: &Store,
        target: Option<Position>,
    ) -> Result<(), RunError> {
        let mut failure = None;
        for projection in &mut self.projections {
            if target.is_some() && projection.position() >= target {
                continue;
            }
            if let Err(error) = projection.catch_up().await {
                tracing::error!(%error, "inline projection failed");
                failure.get_or_insert(error);
            }
        }
        self.writer.publish(self.position(store));
        failure.map_or(Ok(()), Err)
    }
}

/// Builds an [`InlineStore`]: add projections with their sinks, then
/// [`open`](InlineStoreBuilder::open).
pub struct InlineStoreBuilder {
    store: Store,
    openings: Vec<Opening>,
    batch_events: usize,
}

impl std::fmt::Debug for InlineStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineStoreBuilder")
            .field("projections", &self.openings.len())
            .finish()
    }
}

impl InlineStoreBuilder {
    /// Adds an inline projection writing to `sink`.
    pub fn projection<P, S>(mut self, projection: P, sink: S) -> InlineStoreBuilder
    where
        S: Sink,
        P: Projection<S::Tx>,
    {
        let store = self.store.clone();
        let sizes = Sizes {
            batch_events: self.batch_events,
            page_events: self.batch_events,
        };
        self.openings.push(Box::pin(async move {
            let processor = Processor::open(store, projection, Arc::new(sink), sizes).await?;
            Ok(Box::new(processor) as Box<dyn Inline>)
        }));
        self
    }

    /// Handled events per committed transaction while catching up a backlog (at open,
    /// or after events appended around the inline store). Default 4096.
    pub fn batch_events(mut self, events: usize) -> InlineStoreBuilder {
        self.batch_events = events.max(1);
        self
    }

    /// Opens every projection at its checkpoint and catches it up with the log, so a
    /// crash between an append and its projection is repaired before anything is served.
    pub async fn open(self) -> Result<InlineStore, RunError> {
        let mut projections = Vec::with_capacity(self.openings.len());
        for opening in self.openings {
            projections.push(opening.await?);
        }
        let (writer, progress) = progress(None);
        let mut inner = Inner {
            projections,
            writer,
        };
        inner.catch_up_to(&self.store, None).await?;
        Ok(InlineStore {
            store: self.store,
            inner: Arc::new(Mutex::new(inner)),
            progress,
        })
    }
}

/// A store whose appends update inline projections before they return.
///
/// ## The guarantee
/// When [`append`](InlineStore::append) (or [`append_multi`](InlineStore::append_multi))
/// returns `Ok`, every inline projection has **committed** the effect of every event of
/// the log up to and including the append's last event — including events appended
/// before it by other writers — so a read of its sink right after sees them. Events are
/// processed once each, in log order, under one lock; concurrent appends still share
/// the store's group commit, and whichever caller takes the lock first processes the
/// events of all of them.
///
/// The append itself is durable before the projections run, so they can never show an
/// event the log does not hold. If a projection then fails, the append returns
/// [`InlineAppendError::Projection`], which carries the append's results: the events
/// **are** recorded, and the read model catches up on the next append,
/// [`catch_up`](InlineStore::catch_up) or open. A crash between the append and the
/// projection is the same case: [`InlineStoreBuilder::open`] catches up before
/// returning.
///
/// Events appended through the plain [`Store`] (or another process) reach the inline
/// projections on the next append or catch-up through this handle.
#[derive(Clone)]
pub struct InlineStore {
    store: Store,
    inner: Arc<Mutex<Inner>>,
    progress: Progress,
}

impl std::fmt::Debug for InlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineStore")
            .field("position", &self.position())
            .finish()
    }
}

impl InlineStore {
    /// Starts building an inline store over `store`.
    pub fn builder(store: Store) -> InlineStoreBuilder {
        InlineStoreBuilder {
            store,
            openings: Vec::new(),
            batch_events: 4096,
        }
    }

    /// The underlying store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Appends `events` to `stream`, then brings the inline projections up to them.
    pub async fn append(
        &self,
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult, InlineAppendError> {
        let request = AppendRequest::new(stream, expected, events);
        let mut results = self.append_multi(vec![request]).await?;
        Ok(results.swap_remove(0))
    }

    /// Appends to several streams at once (all or nothing), then brings the inline
    /// projections up to the appended events.
    pub async fn append_multi(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, InlineAppendError> {
        let results = self.store.append_multi(requests).await?;
        let target = results.iter().filter_map(AppendResult::last_position).max();
        if let Some(target) = target {
            if let Err(source) = self.catch_up_to(target).await {
                return Err(InlineAppendError::Projection { results, source });
            }
        }
        Ok(results)
    }

    async fn catch_up_to(&self, target: Position) -> Result<(), RunError> {
        if self.position() >= Some(target) {
            return Ok(());
        }
        let mut inner = self.inner.lock().await;
        inner.catch_up_to(&self.store, Some(target)).await
    }

    /// Brings every inline projection up to the head of the log; returns the position
    /// all of them reached.
    pub async fn catch_up(&self) -> Result<Option<Position>, RunError> {
        let mut inner = self.inner.lock().await;
        inner.catch_up_to(&self.store, None).await?;
        Ok(inner.position(&self.store))
    }

    /// The position up to which every inline projection shows every event.
    pub fn position(&self) -> Option<Position> {
        self.progress.position()
    }

    /// Waits until `position` is in the log (appended by anyone) and every inline
    /// projection has processed it, at most `timeout`.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        let mut head = self.store.backend().watch_head();
        let work = async {
            loop {
                if *head.borrow_and_update() >= Some(position) {
                    return self
                        .catch_up_to(position)
                        .await
                        .map_err(|error| WaitError::Stopped {
                            position,
                            reached: self.position(),
                            reason: Some(error.to_string()),
                        });
                }
                if head.changed().await.is_err() {
                    return Err(WaitError::Stopped {
                        position,
                        reached: self.position(),
                        reason: Some("the store closed".into()),
                    });
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(WaitError::Timeout {
                position,
                timeout,
                reached: self.position(),
            }),
        }
    }
}
