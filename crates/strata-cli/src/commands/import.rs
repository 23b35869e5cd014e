//! `strata import`: replays JSON lines written by `strata export` into a store.
//!
//! Each event is appended to its stream with the expected revision its export recorded
//! (`revision - 1`), so that running the same import again is an exact retry, which the
//! store answers with the original result instead of writing anything. Consecutive
//! events are appended together, in log order, as one multi-stream append (one write
//! and one sync); if that fails, each stream's part is retried on its own. Tombstones
//! are replayed as tombstones; metadata events (`$$stream`) are appended unless their id
//! is already there.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use strata::stream::TOMBSTONE_EVENT_TYPE;
use strata::{
    AppendError, AppendRequest, EventData, ExpectedRevision, Position, ReadError,
    ReadStreamOptions, Store,
};
use uuid::Uuid;

use super::{close_store, open_store, Target};
use crate::error::{output_error, CliError};
use crate::input::{EventLine, LineSource};
use crate::output::progress_bar;

/// Most events appended at once.
const GROUP_EVENTS: usize = 4096;
/// Most bytes (type, data and metadata) appended at once.
const GROUP_BYTES: usize = 16 << 20;
/// Most streams appended to at once.
const GROUP_STREAMS: usize = 512;

/// Options of `strata import`.
#[derive(Debug, Args)]
#[command(
    after_help = "Input lines have the shape `strata export` writes: \"stream\", \
\"revision\", \"id\", \"type\", \"content_type\", \"data\" or \"data_base64\", \"metadata\" or \
\"metadata_base64\", \"recorded_at\" and \"valid_at\". Events keep their ids and times \
(recorded times never go backwards along the log). Importing the same file again writes \
nothing new. A tombstone is written with the time of the import, and later events are \
recorded no earlier than it."
)]
pub struct ImportArgs {
    /// The JSON lines to import (`-`: stdin).
    #[arg(long, short = 'i', value_name = "FILE", default_value = "-")]
    pub input: PathBuf,
}

/// What an import did.
#[derive(Debug, Default)]
struct Counts {
    /// Events read.
    read: u64,
    /// Events newly recorded (tombstones included).
    written: u64,
    /// Events that were already there (an earlier import).
    present: u64,
    /// Events of streams tombstoned in this store, which can no longer be written.
    tombstoned: u64,
}

/// Consecutive events of one stream, appended together.
struct Batch {
    stream: String,
    /// Revision of the first event, if the input gave one.
    first_revision: Option<u64>,
    events: Vec<EventData>,
    first_line: u64,
    last_line: u64,
}

impl Batch {
    fn next_revision(&self) -> Option<u64> {
        self.first_revision.map(|r| r + self.events.len() as u64)
    }

    /// Whether an event of `stream` at `revision` continues this batch.
    fn continues(&self, stream: &str, revision: Option<u64>) -> bool {
        self.stream == stream && self.next_revision() == revision
    }
}

/// Batches of consecutive events of different streams, appended in one go.
#[derive(Default)]
struct Group {
    batches: Vec<Batch>,
    events: usize,
    bytes: usize,
}

/// The expected revision that makes an append of events starting at `revision` an
/// exact retry when it runs again.
fn expected_for(revision: Option<u64>) -> ExpectedRevision {
    match revision {
        None => ExpectedRevision::Any,
        Some(0) => ExpectedRevision::NoStream,
        Some(revision) => ExpectedRevision::Exact(revision - 1),
    }
}

struct Importer<'a> {
    store: &'a Store,
    input: String,
    counts: Counts,
    /// Ids already in each metadata stream seen so far.
    metadata_ids: HashMap<String, HashSet<Uuid>>,
    /// Events waiting to be appended.
    group: Group,
}

/// Runs `strata import`.
pub async fn run(target: &Target, args: ImportArgs) -> Result<(), CliError> {
    let mut source = LineSource::open(&args.input)?;
    let store = open_store(target, true).await?;
    let mut importer = Importer {
        store: &store,
        input: source.name.clone(),
        counts: Counts::default(),
        metadata_ids: HashMap::new(),
        group: Group::default(),
    };
    let result = importer.import(&mut source).await;
    let counts = std::mem::take(&mut importer.counts);
    close_store(store).await?;
    result?;
    let mut summary = format!(
        "imported {} events: {} written, {} already present",
        counts.read, counts.written, counts.present
    );
    if counts.tombstoned > 0 {
        summary.push_str(&format!(
            ", {} skipped (their stream is tombstoned here)",
            counts.tombstoned
        ));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{summary}").map_err(output_error)?;
    out.flush().map_err(output_error)
}

impl Importer<'_> {
    async fn import(&mut self, source: &mut LineSource) -> Result<(), CliError> {
        let bar = progress_bar(source.len, true, "importing");
        while let Some((line, bytes)) = source.next_line()? {
            bar.inc(bytes);
            let parsed = EventLine::parse(&line).map_err(|m| source.error(m))?;
            let stream = parsed
                .stream
                .clone()
                .ok_or_else(|| source.error("missing \"stream\""))?;
            let event = parsed.to_event(None, true).map_err(|m| source.error(m))?;
            self.counts.read += 1;
            if strata::stream::metastream_target(&stream).is_some() {
                self.flush_group().await?;
                self.metadata(&stream, event)
                    .await
                    .map_err(|e| source.error(format!("stream {stream:?}: {e}")))?;
            } else if event.event_type == TOMBSTONE_EVENT_TYPE {
                self.flush_group().await?;
                match self
                    .store
                    .tombstone_stream(&stream, ExpectedRevision::Any)
                    .await
                {
                    Ok(_) => self.counts.written += 1,
                    Err(AppendError::StreamDeleted { .. }) => self.counts.present += 1,
                    Err(e) => return Err(source.error(format!("tombstoning {stream:?}: {e}"))),
                }
            } else {
                self.add(stream, parsed.revision, event, source.line)
                    .await?;
            }
            if source.would_block() {
                // Nothing more is buffered: write what we have before waiting for input.
                self.flush_group().await?;
            }
        }
        self.flush_group().await?;
        bar.finish_and_clear();
        Ok(())
    }

    /// Adds an event to the group, appending the group first if it is full. Events keep
    /// their order: only the last batch of the group can grow.
    async fn add(
        &mut self,
        stream: String,
        revision: Option<u64>,
        event: EventData,
        line: u64,
    ) -> Result<(), CliError> {
        let size = event.size_bytes();
        if self.group.events >= GROUP_EVENTS || self.group.bytes + size > GROUP_BYTES {
            self.flush_group().await?;
        }
        let continues = self
            .group
            .batches
            .last()
            .is_some_and(|last| last.continues(&stream, revision));
        if !continues
            && (self.group.batches.len() >= GROUP_STREAMS
                || self.group.batches.iter().any(|b| b.stream == stream))
        {
            self.flush_group().await?;
        }
        self.group.events += 1;
        self.group.bytes += size;
        match self.group.batches.last_mut() {
            Some(last) if continues => {
                last.events.push(event);
                last.last_line = line;
            }
            _ => self.group.batches.push(Batch {
                stream,
                first_revision: revision,
                events: vec![event],
                first_line: line,
                last_line: line,
            }),
        }
        Ok(())
    }

    /// Appends the group in one multi-stream append; if that fails, appends each batch
    /// on its own (which says which one failed, and copes with a partial overlap).
    async fn flush_group(&mut self) -> Result<(), CliError> {
        let group = std::mem::take(&mut self.group);
        if group.batches.len() > 1 {
            let requests = group
                .batches
                .iter()
                .map(|b| {
                    let expected = expected_for(b.first_revision);
                    AppendRequest::new(b.stream.clone(), expected, b.events.clone())
                })
                .collect();
            let head = self.store.head();
            if let Ok(results) = self.store.append_multi(requests).await {
                for result in &results {
                    self.count(head, &result.positions);
                }
                return Ok(());
            }
        }
        for batch in group.batches {
            self.flush(batch).await?;
        }
        Ok(())
    }

    /// Appends a batch; on a partial overlap with an earlier import, falls back to one
    /// event at a time.
    async fn flush(&mut self, batch: Batch) -> Result<(), CliError> {
        let lines = if batch.first_line == batch.last_line {
            format!("{}", batch.first_line)
        } else {
            format!("{}-{}", batch.first_line, batch.last_line)
        };
        let input = self.input.clone();
        let error = |e: AppendError| {
            let hint = match e {
                AppendError::WrongExpectedRevision { .. } => {
                    " (the stream already holds other events: import into an empty store; \
                     events without an \"id\" get a fresh one, so an earlier import of them \
                     cannot be recognised)"
                }
                _ => "",
            };
            CliError::Line {
                input: input.clone(),
                line: batch.first_line,
                message: format!(
                    "appending {} event(s) (lines {lines}) to {:?}: {e}{hint}",
                    batch.events.len(),
                    batch.stream
                ),
            }
        };
        let expected = expected_for(batch.first_revision);
        match self
            .append(&batch.stream, expected, batch.events.clone())
            .await
        {
            Ok(()) => Ok(()),
            Err(AppendError::IdempotencyConflict { .. }) if batch.events.len() > 1 => {
                for (i, event) in batch.events.iter().enumerate() {
                    let revision = batch.first_revision.map(|r| r + i as u64);
                    let result = self
                        .append(&batch.stream, expected_for(revision), vec![event.clone()])
                        .await;
                    match result {
                        Ok(()) => {}
                        Err(AppendError::StreamDeleted { .. }) => {
                            self.counts.tombstoned += (batch.events.len() - i) as u64;
                            return Ok(());
                        }
                        Err(e) => return Err(error(e)),
                    }
                }
                Ok(())
            }
            Err(AppendError::StreamDeleted { .. }) => {
                self.counts.tombstoned += batch.events.len() as u64;
                Ok(())
            }
            Err(e) => Err(error(e)),
        }
    }

    /// Appends and counts which events are new: an exact retry answers with positions
    /// the log already had.
    async fn append(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<(), AppendError> {
        let head = self.store.head();
        let result = self.store.append(stream, expected, events).await?;
        self.count(head, &result.positions);
        Ok(())
    }

    /// Counts appended events: those at or below the head before the append were
    /// already there (an exact retry answers with the original positions).
    fn count(&mut self, head: Option<Position>, positions: &[Position]) {
        let new = positions
            .iter()
            .filter(|&&p| head.is_none_or(|h| p > h))
            .count() as u64;
        self.counts.written += new;
        self.counts.present += positions.len() as u64 - new;
    }

    /// Appends a metadata event unless its id is already in the metadata stream. (Their
    /// revisions cannot be relied on: the store writes metadata events of its own when a
    /// soft-deleted stream is appended to again.)
    async fn metadata(&mut self, stream: &str, event: EventData) -> Result<(), CliError> {
        if let Entry::Vacant(entry) = self.metadata_ids.entry(stream.to_owned()) {
            let ids = match self
                .store
                .read_stream(stream, ReadStreamOptions::forwards())
                .await
            {
                Ok(events) => events.iter().map(|e| e.id).collect(),
                Err(ReadError::StreamNotFound { .. }) => HashSet::new(),
                Err(e) => return Err(e.into()),
            };
            entry.insert(ids);
        }
        let known = self
            .metadata_ids
            .get_mut(stream)
            .is_some_and(|ids| !ids.insert(event.id));
        if known {
            self.counts.present += 1;
            return Ok(());
        }
        self.append(stream, ExpectedRevision::Any, vec![event])
            .await
            .map_err(CliError::from)
    }
}
