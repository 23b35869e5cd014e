//! What a subscription group is: its source (a stream, or `$all` with a filter), where
//! it starts, and the settings that shape delivery. These are what the config stream
//! stores, so every type here is serialisable and checked by [`GroupConfig::validate`].

use serde::{Deserialize, Serialize};
use strata::{Filter, FilterError, Position};

use super::PersistentError;

/// KurrentDB's default message timeout.
pub const MESSAGE_TIMEOUT_MS_DEFAULT: u32 = 30_000;
/// The most events one consumer may hold unacknowledged (its `buffer_size`).
pub const CONSUMER_BUFFER_MAX: usize = 10_000;
/// The most events the engine keeps in memory per group, read ahead of dispatch.
pub const BUFFER_SIZE_MAX: usize = 100_000;

/// How a group picks the consumer that gets the next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerStrategy {
    /// Fill the first consumer's buffer, then the next one's.
    DispatchToSingle,
    /// Each event to the next consumer with room, in turn.
    RoundRobin,
    /// Every event of a stream to the same consumer (chosen by a hash of the stream
    /// name among the connected consumers), so one stream is processed in order.
    Pinned,
}

impl ConsumerStrategy {
    /// KurrentDB's name of the strategy.
    pub fn name(self) -> &'static str {
        match self {
            ConsumerStrategy::DispatchToSingle => "DispatchToSingle",
            ConsumerStrategy::RoundRobin => "RoundRobin",
            ConsumerStrategy::Pinned => "Pinned",
        }
    }

    /// The strategy KurrentDB names `name`. `PinnedByCorrelation` is accepted as
    /// `Pinned` (strata has no link events to pin by correlation id).
    pub fn from_name(name: &str) -> Result<ConsumerStrategy, PersistentError> {
        match name {
            "DispatchToSingle" => Ok(ConsumerStrategy::DispatchToSingle),
            "RoundRobin" => Ok(ConsumerStrategy::RoundRobin),
            "Pinned" | "PinnedByCorrelation" => Ok(ConsumerStrategy::Pinned),
            other => Err(PersistentError::InvalidSettings(format!(
                "unknown consumer strategy '{other}' (DispatchToSingle, RoundRobin or Pinned)"
            ))),
        }
    }
}

/// Which events a `$all` group filters on, as the client described it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterOn {
    /// The stream name.
    StreamName,
    /// The event type.
    EventType,
}

/// A `$all` group's filter: a regex or a list of prefixes on stream names or event
/// types. Kept in this form (not as a [`Filter`]) so it can be stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterSpec {
    /// What the expression applies to.
    pub on: FilterOn,
    /// A .NET-style regular expression (empty: none).
    pub regex: String,
    /// Prefixes; an event passes if its name starts with any of them.
    pub prefixes: Vec<String>,
}

impl FilterSpec {
    /// The store filter this describes.
    pub fn to_filter(&self) -> Result<Filter, FilterError> {
        let mut filter = Filter::new();
        if !self.regex.is_empty() {
            filter = match self.on {
                FilterOn::StreamName => filter.stream_regex(&self.regex)?,
                FilterOn::EventType => filter.event_type_regex(&self.regex)?,
            };
        }
        for prefix in &self.prefixes {
            filter = match self.on {
                FilterOn::StreamName => filter.stream_prefix(prefix.clone()),
                FilterOn::EventType => filter.event_type_prefix(prefix.clone()),
            };
        }
        Ok(filter)
    }
}

/// What a group reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// One stream, by revision.
    Stream(String),
    /// The global log, by position, optionally filtered.
    All(Option<FilterSpec>),
}

impl Source {
    /// The name clients use for the source: the stream, or `$all`.
    pub fn name(&self) -> &str {
        match self {
            Source::Stream(stream) => stream,
            Source::All(_) => strata::stream::ALL_STREAM,
        }
    }
}

/// Where a group starts when it has no checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartFrom {
    /// The first event.
    Start,
    /// Events recorded after the group is created (or its first start).
    End,
    /// This stream revision (inclusive) of a stream group.
    Revision(u64),
    /// This position (inclusive) of a `$all` group.
    Position(Position),
}

/// The settings a client chooses; KurrentDB's names and defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Accepted and reported; strata records no link events, so there is nothing to resolve.
    pub resolve_links: bool,
    /// Accepted and reported (no extra statistics are kept).
    pub extra_statistics: bool,
    /// How long a consumer may hold an event before it is retried (0: forever).
    pub message_timeout_ms: u32,
    /// How often an event is retried before it is parked.
    pub max_retry_count: u32,
    /// Events read ahead once the group is live.
    pub live_buffer_size: u32,
    /// Events read per read while catching up.
    pub read_batch_size: u32,
    /// Events read ahead while catching up.
    pub history_buffer_size: u32,
    /// How often the checkpoint is considered for writing.
    pub checkpoint_after_ms: u32,
    /// Finished events needed before a timed checkpoint is written.
    pub min_checkpoint_count: u32,
    /// Finished events after which a checkpoint is written at once.
    pub max_checkpoint_count: u32,
    /// Most consumers connected at once (0: no limit).
    pub max_subscriber_count: u32,
    /// How events are spread over consumers.
    pub consumer_strategy: ConsumerStrategy,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            resolve_links: false,
            extra_statistics: false,
            message_timeout_ms: MESSAGE_TIMEOUT_MS_DEFAULT,
            max_retry_count: 10,
            live_buffer_size: 500,
            read_batch_size: 20,
            history_buffer_size: 500,
            checkpoint_after_ms: 2_000,
            min_checkpoint_count: 10,
            max_checkpoint_count: 1_000,
            max_subscriber_count: 0,
            consumer_strategy: ConsumerStrategy::RoundRobin,
        }
    }
}

/// A subscription group: what the config stream holds for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// The group's name.
    pub group: String,
    /// What it reads.
    pub source: Source,
    /// Where it starts without a checkpoint.
    pub start_from: StartFrom,
    /// How it delivers.
    pub settings: Settings,
}

impl GroupConfig {
    /// Checks names and settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), PersistentError> {
        let invalid = |reason: &str| Err(PersistentError::InvalidSettings(reason.to_owned()));
        if self.group.is_empty() {
            return invalid("the group name is empty");
        }
        if let Source::Stream(stream) = &self.source {
            if stream.is_empty() {
                return invalid("the stream name is empty");
            }
            if stream == strata::stream::ALL_STREAM {
                return invalid(
                    "a group on $all is created with the 'all' option, not as a stream",
                );
            }
        }
        match (&self.source, self.start_from) {
            (Source::Stream(_), StartFrom::Position(_)) => {
                return invalid("a stream group starts from a revision, not a position")
            }
            (Source::All(_), StartFrom::Revision(_)) => {
                return invalid("a $all group starts from a position, not a revision")
            }
            _ => {}
        }
        if let Source::All(Some(spec)) = &self.source {
            spec.to_filter()
                .map_err(|error| PersistentError::InvalidSettings(error.to_string()))?;
        }
        let s = &self.settings;
        let buffers = [s.live_buffer_size, s.read_batch_size, s.history_buffer_size];
        if buffers
            .iter()
            .any(|&size| size == 0 || size as usize > BUFFER_SIZE_MAX)
        {
            return invalid("live buffer size, read batch size and history buffer size must be between 1 and 100000");
        }
        if s.min_checkpoint_count > s.max_checkpoint_count {
            return invalid("min checkpoint count must not exceed max checkpoint count");
        }
        Ok(())
    }

    /// The events the group reads ahead of dispatch: the history buffer while
    /// catching up, the live buffer once live; the larger bounds memory.
    pub fn read_ahead(&self) -> usize {
        let s = &self.settings;
        s.live_buffer_size.max(s.history_buffer_size) as usize
    }
}

/// Converts a non-negative protocol integer, naming the setting when it is negative.
pub fn non_negative(name: &str, value: i32) -> Result<u32, PersistentError> {
    u32::try_from(value).map_err(|_| {
        PersistentError::InvalidSettings(format!("{name} must not be negative, got {value}"))
    })
}
