//! Catch-up subscriptions: history first, then live events, with no gap and no duplicate.
//!
//! A subscription never receives pushed events. It reads the log by position, in
//! chunks, and when it has read everything up to the published head it waits for the
//! head to move. Because the head only moves after events are durable and indexed, and
//! reads always start right after the last delivered event, the switch from history to
//! live delivery cannot lose or repeat an event, whatever a racing writer does.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{ReadError, StorageError};
use crate::event::{Position, RecordedEvent};
use crate::filter::Filter;
use crate::store::{EventStore, PageEnd, ReadAllOptions, ReadStreamOptions};

/// Events read per chunk.
const CHUNK_EVENTS: usize = 512;
/// How long a subscription waits before it reads again when the store was busy.
const BUSY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeFrom<T> {
    /// From the first event.
    Start,
    /// After this position (for `$all`) or revision (for a stream): resume here with the
    /// last one you processed.
    After(T),
    /// Only events recorded after the subscription starts.
    End,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionMessage {
    /// The next event.
    Event(RecordedEvent),
    /// Every event recorded before this point has been delivered; what follows is live.
    /// Sent once, when the subscription first reaches the head of the log.
    CaughtUp,
}

enum Target {
    All { filter: Filter, next: Position },
    Stream { name: String, next: Option<u64> },
}

/// A catch-up subscription, read with [`Subscription::next`].
pub struct Subscription {
    store: Arc<dyn EventStore>,
    target: Target,
    head: watch::Receiver<Option<Position>>,
    /// Every event at or below this position has been read into `buffer` (or filtered out).
    scanned_through: Option<Position>,
    buffer: VecDeque<RecordedEvent>,
    caught_up_sent: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("scanned_through", &self.scanned_through)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn all(
        store: Arc<dyn EventStore>,
        from: SubscribeFrom<Position>,
        filter: Filter,
    ) -> Subscription {
        let head = store.watch_head();
        let current = *head.borrow();
        let next = match from {
            SubscribeFrom::Start => Position::START,
            SubscribeFrom::After(position) => position.next(),
            SubscribeFrom::End => current.map_or(Position::START, Position::next),
        };
        Subscription {
            store,
            target: Target::All { filter, next },
            head,
            scanned_through: next.0.checked_sub(1).map(Position),
            buffer: VecDeque::new(),
            caught_up_sent: false,
        }
    }

    pub(crate) fn stream(
        store: Arc<dyn EventStore>,
        stream: &str,
        from: SubscribeFrom<u64>,
    ) -> Subscription {
        let head = store.watch_head();
        let next = match from {
            SubscribeFrom::Start => Some(0),
            SubscribeFrom::After(revision) => Some(revision + 1),
            SubscribeFrom::End => None,
        };
        Subscription {
            store,
            target: Target::Stream {
                name: stream.to_owned(),
                next,
            },
            head,
            scanned_through: None,
            buffer: VecDeque::new(),
            caught_up_sent: false,
        }
    }

    /// The next event, or [`SubscriptionMessage::CaughtUp`] once history is exhausted.
    /// Waits for new events when there are none. Fails if the stream is tombstoned or
    /// the store fails or closes.
    pub async fn next(&mut self) -> Result<SubscriptionMessage, ReadError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(SubscriptionMessage::Event(event));
            }
            let head = *self.head.borrow_and_update();
            if head.is_none() || self.scanned_through >= head {
                if !self.caught_up_sent {
                    self.caught_up_sent = true;
                    return Ok(SubscriptionMessage::CaughtUp);
                }
                if self.head.changed().await.is_err() {
                    return Err(StorageError::Closed.into());
                }
                continue;
            }
            let complete = self.fetch().await?;
            if complete {
                self.scanned_through = self.scanned_through.max(head);
            }
        }
    }

    /// The next event, skipping [`SubscriptionMessage::CaughtUp`].
    pub async fn next_event(&mut self) -> Result<RecordedEvent, ReadError> {
        loop {
            if let SubscriptionMessage::Event(event) = self.next().await? {
                return Ok(event);
            }
        }
    }

    /// Reads the next chunk into the buffer; returns whether it reached the end of what
    /// was visible when it started.
    async fn fetch(&mut self) -> Result<bool, ReadError> {
        match &mut self.target {
            Target::All { filter, next } => {
                let options = ReadAllOptions::forwards()
                    .from_position(*next)
                    .limit(CHUNK_EVENTS)
                    .filter(filter.clone());
                let page = match self.store.read_all_page(options).await {
                    Ok(page) => page,
                    Err(ReadError::Busy { .. }) => {
                        // The store has waited for a scan slot already; a subscription
                        // has nobody to hand the error to but its reader, who would
                        // only try again: wait a little, then do so.
                        tokio::time::sleep(BUSY_RETRY_AFTER).await;
                        return Ok(false);
                    }
                    Err(error) => return Err(error),
                };
                // Move past everything the read examined, matching or not, so the next
                // read does not check it again (a filter that rarely matches would
                // otherwise rescan from its last match after every append).
                if let Some(after) = page.next {
                    *next = (*next).max(after);
                }
                self.scanned_through = self.scanned_through.max(page.examined_through());
                let complete = page.end == PageEnd::End;
                self.buffer.extend(page.events);
                Ok(complete)
            }
            Target::Stream { name, next } => {
                let from = match *next {
                    Some(revision) => revision,
                    None => {
                        let last = read_or_empty(
                            &*self.store,
                            name,
                            ReadStreamOptions::backwards().limit(1),
                        )
                        .await?;
                        let start = last.first().map_or(0, |event| event.revision + 1);
                        *next = Some(start);
                        return Ok(true);
                    }
                };
                let options = ReadStreamOptions::forwards()
                    .from_revision(from)
                    .limit(CHUNK_EVENTS);
                let events = read_or_empty(&*self.store, name, options).await?;
                if let Some(last) = events.last() {
                    *next = Some(last.revision + 1);
                }
                let complete = events.len() < CHUNK_EVENTS;
                self.buffer.extend(events);
                Ok(complete)
            }
        }
    }
}

/// Reads a stream, treating "not found" as empty: a subscription may start before its
/// stream exists, or outlive a soft delete.
async fn read_or_empty(
    store: &dyn EventStore,
    stream: &str,
    options: ReadStreamOptions,
) -> Result<Vec<RecordedEvent>, ReadError> {
    match store.read_stream(stream, options).await {
        Err(ReadError::StreamNotFound { .. }) => Ok(Vec::new()),
        other => other,
    }
}
