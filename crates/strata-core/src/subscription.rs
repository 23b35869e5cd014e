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
    /// last one you processed. Nothing can follow `u64::MAX`: such a subscription
    /// delivers no event.
    After(T),
    /// Only events recorded after the subscription was created: those whose position
    /// is after the head of the log at that moment (for a stream too, whatever its
    /// events' revisions turn out to be).
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
    /// `$all`, filtered; `next` is the position to read from, `None` if nothing can
    /// follow (subscribed after `u64::MAX`).
    All {
        filter: Filter,
        next: Option<Position>,
    },
    /// One stream.
    Stream { name: String, next: StreamNext },
}

/// Where a stream subscription reads next.
#[derive(Clone, Copy, Debug)]
enum StreamNext {
    /// From this revision (inclusive).
    Revision(u64),
    /// Subscribed from the end: the first event to deliver is the stream's first one
    /// whose position is after this head, captured when the subscription was created
    /// (`None`: the log was empty, every event is new). Resolved into a revision at the
    /// first read, which only happens once the head moved past it.
    AfterHead(Option<Position>),
    /// Subscribed after `u64::MAX`: no revision can follow.
    Never,
}

impl StreamNext {
    /// The revision after `revision`, without wrapping.
    fn after(revision: u64) -> StreamNext {
        revision
            .checked_add(1)
            .map_or(StreamNext::Never, StreamNext::Revision)
    }
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
    /// A catch-up subscription to the global log of `store`, from `from`, delivering
    /// the events `filter` lets through.
    pub fn all(
        store: Arc<dyn EventStore>,
        from: SubscribeFrom<Position>,
        filter: Filter,
    ) -> Subscription {
        let head = store.watch_head();
        let current = *head.borrow();
        let (next, scanned_through) = match from {
            SubscribeFrom::Start => (Some(Position::START), None),
            SubscribeFrom::After(position) => (position.checked_next(), Some(position)),
            SubscribeFrom::End => (
                current.map_or(Some(Position::START), Position::checked_next),
                current,
            ),
        };
        Subscription {
            store,
            target: Target::All { filter, next },
            head,
            scanned_through,
            buffer: VecDeque::new(),
            caught_up_sent: false,
        }
    }

    /// A catch-up subscription to `stream` of `store`, from `from`.
    pub fn stream(
        store: Arc<dyn EventStore>,
        stream: &str,
        from: SubscribeFrom<u64>,
    ) -> Subscription {
        let head = store.watch_head();
        let current = *head.borrow();
        // For a stream, `scanned_through` is a position of the log: what is at or below
        // it has been read, or is not to be delivered.
        let (next, scanned_through) = match from {
            SubscribeFrom::Start => (StreamNext::Revision(0), None),
            SubscribeFrom::After(revision) => match StreamNext::after(revision) {
                StreamNext::Never => (StreamNext::Never, Some(Position(u64::MAX))),
                next => (next, None),
            },
            SubscribeFrom::End => (StreamNext::AfterHead(current), current),
        };
        Subscription {
            store,
            target: Target::Stream {
                name: stream.to_owned(),
                next,
            },
            head,
            scanned_through,
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
                let Some(from) = *next else {
                    return Ok(true);
                };
                let options = ReadAllOptions::forwards()
                    .from_position(from)
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
                    *next = Some(from.max(after));
                }
                self.scanned_through = self.scanned_through.max(page.examined_through());
                let complete = page.end == PageEnd::End;
                self.buffer.extend(page.events);
                Ok(complete)
            }
            Target::Stream { name, next } => {
                let from = match *next {
                    StreamNext::Revision(revision) => revision,
                    StreamNext::Never => return Ok(true),
                    StreamNext::AfterHead(head) => {
                        let resolved = first_revision_after(&*self.store, name, head).await?;
                        *next = resolved;
                        match resolved {
                            StreamNext::Revision(revision) => revision,
                            _ => return Ok(true),
                        }
                    }
                };
                let options = ReadStreamOptions::forwards()
                    .from_revision(from)
                    .limit(CHUNK_EVENTS);
                let events = read_or_empty(&*self.store, name, options).await?;
                if let Some(last) = events.last() {
                    *next = StreamNext::after(last.revision);
                }
                let complete = events.len() < CHUNK_EVENTS;
                self.buffer.extend(events);
                Ok(complete)
            }
        }
    }
}

/// Where a stream subscription from the end starts: at the stream's first event whose
/// position is after `head` (the head when the subscription was created).
///
/// Walks the stream backwards from its end to the newest event at or before `head`.
/// Only the events recorded since the subscription was created are read, and they are
/// about to be delivered anyway.
async fn first_revision_after(
    store: &dyn EventStore,
    stream: &str,
    head: Option<Position>,
) -> Result<StreamNext, ReadError> {
    let Some(head) = head else {
        // The log was empty: every event of the stream is new.
        return Ok(StreamNext::Revision(0));
    };
    let mut from = None;
    loop {
        let mut options = ReadStreamOptions::backwards().limit(CHUNK_EVENTS);
        options.from = from;
        let events = read_or_empty(store, stream, options).await?;
        if let Some(old) = events.iter().find(|event| event.position <= head) {
            return Ok(StreamNext::after(old.revision));
        }
        match events.last() {
            Some(last) if events.len() == CHUNK_EVENTS && last.revision > 0 => {
                from = Some(last.revision - 1);
            }
            // Every visible event is new; start at the oldest (lower revisions are
            // hidden, and were recorded before it).
            Some(last) => return Ok(StreamNext::Revision(last.revision)),
            // The stream has no visible event yet: whatever comes is new.
            None => return Ok(StreamNext::Revision(0)),
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
