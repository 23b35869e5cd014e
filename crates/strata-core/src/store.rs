//! The [`EventStore`] trait every backend implements, and the request and result types
//! it speaks.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{AppendError, ReadError};
use crate::event::{EventData, Position, RecordedEvent};
use crate::filter::Filter;
use crate::limits::Limits;
use crate::metadata::StreamMetadata;
use crate::revision::{CurrentRevision, ExpectedRevision};
use crate::scrub::ScrubStatus;

/// Which way a read goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forwards,
    /// Newest first.
    Backwards,
}

/// What to read from one stream.
///
/// ```
/// use strata_core::ReadStreamOptions;
/// let newest_ten = ReadStreamOptions::backwards().limit(10);
/// let from_five = ReadStreamOptions::forwards().from_revision(5);
/// # let _ = (newest_ten, from_five);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStreamOptions {
    /// Which way to go.
    pub direction: Direction,
    /// The first revision to return (inclusive); `None` starts at the beginning
    /// (forwards) or at the end (backwards).
    pub from: Option<u64>,
    /// The most events to return.
    pub limit: usize,
}

impl ReadStreamOptions {
    /// Oldest first, from the start, no limit.
    pub fn forwards() -> ReadStreamOptions {
        ReadStreamOptions {
            direction: Direction::Forwards,
            from: None,
            limit: usize::MAX,
        }
    }

    /// Newest first, from the end, no limit.
    pub fn backwards() -> ReadStreamOptions {
        ReadStreamOptions {
            direction: Direction::Backwards,
            ..ReadStreamOptions::forwards()
        }
    }

    /// Starts at `revision` (inclusive).
    pub fn from_revision(mut self, revision: u64) -> ReadStreamOptions {
        self.from = Some(revision);
        self
    }

    /// Returns at most `limit` events.
    pub fn limit(mut self, limit: usize) -> ReadStreamOptions {
        self.limit = limit;
        self
    }
}

/// What to read from the global log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAllOptions {
    /// Which way to go.
    pub direction: Direction,
    /// The first position to return (inclusive); `None` starts at the beginning
    /// (forwards) or at the end (backwards).
    pub from: Option<Position>,
    /// The most events to return (after filtering).
    pub limit: usize,
    /// Which events to return.
    pub filter: Filter,
    /// The most events a filtered read examines, matching or not, before it stops short
    /// of `limit` (a filter that matches nothing would otherwise scan the whole log).
    /// [`EventStore::read_all_page`] then returns what it found and where to continue;
    /// [`EventStore::read_all`] fails with [`ReadError::ScanBudgetSpent`], which carries
    /// both. Reads without a filter return every event they examine and are bounded by
    /// `limit` alone.
    pub scan_budget: u64,
}

impl ReadAllOptions {
    /// The default [`scan_budget`](ReadAllOptions::scan_budget): a million events, well
    /// under a second of scanning on the embedded engine.
    pub const SCAN_BUDGET_DEFAULT: u64 = 1_000_000;

    /// Oldest first, from the start, no limit, no filter.
    pub fn forwards() -> ReadAllOptions {
        ReadAllOptions {
            direction: Direction::Forwards,
            from: None,
            limit: usize::MAX,
            filter: Filter::new(),
            scan_budget: ReadAllOptions::SCAN_BUDGET_DEFAULT,
        }
    }

    /// Newest first, from the end, no limit, no filter.
    pub fn backwards() -> ReadAllOptions {
        ReadAllOptions {
            direction: Direction::Backwards,
            ..ReadAllOptions::forwards()
        }
    }

    /// Starts at `position` (inclusive).
    pub fn from_position(mut self, position: Position) -> ReadAllOptions {
        self.from = Some(position);
        self
    }

    /// Returns at most `limit` events.
    pub fn limit(mut self, limit: usize) -> ReadAllOptions {
        self.limit = limit;
        self
    }

    /// Returns only events that pass `filter`.
    pub fn filter(mut self, filter: Filter) -> ReadAllOptions {
        self.filter = filter;
        self
    }

    /// Examines at most `events` events if filtered (at least one).
    pub fn scan_budget(mut self, events: u64) -> ReadAllOptions {
        self.scan_budget = events.max(1);
        self
    }
}

/// Why a page of the global log ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PageEnd {
    /// It holds `limit` events; more may follow.
    Limit,
    /// It reached the end of the log (the start, backwards) as it was when the read ran.
    End,
    /// It examined its [scan budget](ReadAllOptions::scan_budget) first: it holds fewer
    /// than `limit` events, and more may follow from [`ReadAllPage::next`].
    ScanBudget,
}

/// One page of the global log, as [`EventStore::read_all_page`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAllPage {
    /// The events that passed the filter, in the order read.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts: pass it as `from` with otherwise the same options.
    /// Every event between the page's `from` and this position (exclusive) was examined.
    /// Forwards, the first position not examined (after the end of the log, the position
    /// the next event will get); backwards, the last position not examined, or `None` once
    /// position 0 was examined.
    pub next: Option<Position>,
    /// Why the page ended.
    pub end: PageEnd,
}

impl ReadAllPage {
    /// Forwards: every position below this one has been examined (`None`: none has).
    /// What a reader that follows the log has checked, whether or not anything matched.
    pub fn examined_through(&self) -> Option<Position> {
        self.next
            .and_then(|next| next.0.checked_sub(1))
            .map(Position)
    }
}

/// One stream's part of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    /// The stream.
    pub stream: String,
    /// What the writer expects of it.
    pub expected: ExpectedRevision,
    /// The events, in order.
    pub events: Vec<EventData>,
}

impl AppendRequest {
    /// A request to append `events` to `stream`.
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> AppendRequest {
        AppendRequest {
            stream: stream.into(),
            expected,
            events,
        }
    }
}

/// Where an append's events were recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream.
    pub stream: String,
    /// Revision of the first event of the append (the stream's next revision if the
    /// append held no events).
    pub first_revision: u64,
    /// Global position of each event, in order: event `i` has revision
    /// `first_revision + i`.
    pub positions: Vec<Position>,
    /// The stream's revision after the append: pass it as
    /// [`ExpectedRevision::Exact`] to append again without a conflict.
    pub current_revision: CurrentRevision,
}

impl AppendResult {
    /// Position of the append's last event, if it had any.
    pub fn last_position(&self) -> Option<Position> {
        self.positions.last().copied()
    }
}

/// A stream's summary, as listed by [`EventStore::list_streams`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// Revision of its last event.
    pub last_revision: u64,
    /// Number of events visible under its metadata.
    pub visible_events: u64,
}

/// Which streams to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListStreamsOptions {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only names sorting after this (to page through a long list).
    pub after: Option<String>,
    /// The most names to return (`None`: all).
    pub limit: Option<usize>,
    /// Also list system streams (metadata streams `$$…`).
    pub include_system: bool,
}

/// A stream's metadata and the revision of the metadata stream it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataResult {
    /// The metadata (default if none was ever set).
    pub metadata: StreamMetadata,
    /// Revision of the metadata stream's last event (to pass as the expected revision of
    /// the next metadata write).
    pub revision: CurrentRevision,
}

/// Counts and sizes, as shown by `strata stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Events in the global log (system events included).
    pub events: u64,
    /// Streams with at least one event (metadata streams included).
    pub streams: u64,
    /// Position of the last event, if any.
    pub head: Option<Position>,
    /// Bytes the backend uses on disk.
    pub disk_bytes: u64,
    /// Segment files (embedded engine only; 0 elsewhere).
    pub segments: u64,
    /// Which backend answered (`embedded`, `postgres`).
    pub backend: String,
    /// What the embedded engine's background scrubber verified and found (`None`: the
    /// scrubber is off, or the backend has none, as PostgreSQL).
    #[serde(default)]
    pub scrub: Option<ScrubStatus>,
}

/// What every backend implements: the event log's operations.
///
/// Written once against this trait, the conformance suite
/// (`strata::conformance`, feature `conformance`) checks every backend.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends to several streams at once: all or nothing. Each request is checked
    /// against its own expected revision; one failure writes nothing. A request whose
    /// event ids were already recorded in its stream, in the same order, is an exact retry
    /// and returns the original result.
    async fn append_multi(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, AppendError>;

    /// Reads one stream, honouring its metadata (truncate-before, max count, max age).
    async fn read_stream(
        &self,
        stream: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError>;

    /// Reads the global log, filtered. Metadata rules of streams do not hide events
    /// here (as in KurrentDB); scavenging removes them later.
    ///
    /// A filtered read that examines its [scan budget](ReadAllOptions::scan_budget)
    /// before it finds `limit` events fails with [`ReadError::ScanBudgetSpent`], which
    /// holds the events found and where to continue: a page shorter than `limit` always
    /// means the end of the log. [`read_all_page`](EventStore::read_all_page) returns
    /// such a page instead.
    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError>;

    /// Reads one page of the global log: like [`read_all`](EventStore::read_all), but a
    /// page cut short by the scan budget is returned as it is, with where to continue
    /// and why it ended.
    ///
    /// The default implementation calls `read_all` and works out where the page ended:
    /// a short page examined the log up to at least the head published before the read
    /// (no event appears at or below a published head later). Backends override it to
    /// report exactly how far they scanned.
    async fn read_all_page(&self, options: ReadAllOptions) -> Result<ReadAllPage, ReadError> {
        let head = *self.watch_head().borrow();
        let (direction, from, limit) = (options.direction, options.from, options.limit);
        let events = match self.read_all(options).await {
            Ok(events) => events,
            Err(ReadError::ScanBudgetSpent { found, next, .. }) => {
                return Ok(ReadAllPage {
                    events: found,
                    next: Some(next),
                    end: PageEnd::ScanBudget,
                })
            }
            Err(error) => return Err(error),
        };
        let last = events.last().map(|event| event.position);
        let full = events.len() >= limit;
        let next = match (direction, full) {
            (Direction::Forwards, true) => last.and_then(|p| p.0.checked_add(1)).map(Position),
            (Direction::Forwards, false) => {
                let past_head = head.map_or(Position::START, Position::next);
                let past_last = last.map_or(Position::START, Position::next);
                Some(
                    from.unwrap_or(Position::START)
                        .max(past_head)
                        .max(past_last),
                )
            }
            (Direction::Backwards, true) => last.and_then(|p| p.0.checked_sub(1)).map(Position),
            (Direction::Backwards, false) => None,
        };
        Ok(ReadAllPage {
            events,
            next,
            end: if full { PageEnd::Limit } else { PageEnd::End },
        })
    }

    /// Lists streams that have events and are not deleted, sorted by name.
    async fn list_streams(&self, options: ListStreamsOptions)
        -> Result<Vec<StreamInfo>, ReadError>;

    /// Soft-deletes a stream: it reads as not found until it is appended to again, and
    /// then continues its revisions. `expected` applies to the stream itself.
    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError>;

    /// Tombstones a stream: it can never be read or written again.
    async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError>;

    /// The position of the last event every reader can see, updated as the log grows.
    /// No event will ever appear at or below a published head later.
    fn watch_head(&self) -> watch::Receiver<Option<Position>>;

    /// Counts and sizes.
    async fn stats(&self) -> Result<StoreStats, ReadError>;

    /// The limits appends are checked against, so that a server can refuse an append
    /// over them while it is still arriving (see [`AppendBudget`](crate::validate::AppendBudget)).
    fn limits(&self) -> &Limits;
}
