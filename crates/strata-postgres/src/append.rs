//! One append (one or many streams) as one transaction: lock the stream rows in name
//! order, check expected revisions and retries, insert the events, notify.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use tokio_postgres::Transaction;
use uuid::Uuid;

use strata::engine::index::{METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};
use strata::metadata::DELETED_TRUNCATE_BEFORE;
use strata::{
    stream, AppendError, AppendRequest, AppendResult, ContentType, CurrentRevision, EventData,
    ExpectedRevision, InvalidInput, Position, StreamMetadata, Timestamp,
};

use crate::error::backend;
use crate::head::CHANNEL;

/// What a part of an append does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Append events.
    Append,
    /// Soft-delete the stream.
    SoftDelete,
    /// Tombstone the stream.
    Tombstone,
}

/// A stream row, locked for this transaction.
#[derive(Clone, Debug, Default)]
struct Row {
    next_revision: u64,
    tombstoned: bool,
    metadata: Option<StreamMetadata>,
    changed: bool,
}

impl Row {
    fn deleted(&self) -> bool {
        self.metadata
            .as_ref()
            .is_some_and(StreamMetadata::is_deleted)
    }

    fn current(&self) -> CurrentRevision {
        if self.deleted() || self.next_revision == 0 {
            CurrentRevision::NoStream
        } else {
            CurrentRevision::Current(self.next_revision - 1)
        }
    }
}

/// Events to insert, as column arrays.
#[derive(Default)]
struct Columns {
    position: Vec<i64>,
    stream: Vec<String>,
    revision: Vec<i64>,
    id: Vec<Uuid>,
    event_type: Vec<String>,
    is_binary: Vec<bool>,
    data: Vec<Vec<u8>>,
    metadata: Vec<Vec<u8>>,
    recorded_at: Vec<i64>,
    valid_at: Vec<Option<i64>>,
}

/// Runs one append in `tx`. The caller commits.
pub async fn append(
    tx: &Transaction<'_>,
    parts: Vec<(AppendRequest, Kind)>,
) -> Result<Vec<AppendResult>, AppendError> {
    for (i, (part, _)) in parts.iter().enumerate() {
        if parts[..i].iter().any(|(p, _)| p.stream == part.stream) {
            return Err(InvalidInput::DuplicateStream {
                stream: part.stream.clone(),
            }
            .into());
        }
    }
    let mut rows = lock_rows(tx, &parts).await?;
    let mut retries = Vec::new();
    for (part, kind) in &parts {
        let row = &rows[&part.stream];
        if row.tombstoned {
            return Err(AppendError::StreamDeleted {
                stream: part.stream.clone(),
            });
        }
        if *kind == Kind::Append && !part.events.is_empty() {
            if let Some(result) = retry_of(tx, part).await? {
                retries.push(result);
                continue;
            }
        }
        let current = row.current();
        let matches = match part.expected {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => current == CurrentRevision::NoStream,
            ExpectedRevision::StreamExists => current != CurrentRevision::NoStream,
            ExpectedRevision::Exact(revision) => current == CurrentRevision::Current(revision),
        };
        if !matches {
            return Err(AppendError::WrongExpectedRevision {
                stream: part.stream.clone(),
                expected: part.expected,
                actual: current,
            });
        }
    }
    if !retries.is_empty() {
        if retries.len() == parts.len() {
            return Ok(retries);
        }
        let first = &retries[0];
        let event_id = parts
            .iter()
            .find(|(p, _)| p.stream == first.stream)
            .and_then(|(p, _)| p.events.first().map(|e| e.id))
            .unwrap_or_default();
        return Err(AppendError::IdempotencyConflict {
            stream: first.stream.clone(),
            event_id,
        });
    }
    // Positions: this transaction's id in the high bits, the event's index in the low 20.
    let xid: i64 = tx
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .map_err(backend)?
        .get(0);
    let base = xid << 20;
    let mut columns = Columns::default();
    let mut results = Vec::with_capacity(parts.len());
    let now = Timestamp::now().as_micros() as i64;
    for (part, kind) in parts {
        let target = part.stream.clone();
        let (stream_name, events) = expand(&rows, part, kind);
        let mut first_revision = None;
        let mut positions = Vec::new();
        for (name, event) in events {
            let row = rows.entry(name.clone()).or_default();
            let revision = row.next_revision;
            row.next_revision += 1;
            row.changed = true;
            let position = base + columns.position.len() as i64;
            if name == stream_name {
                first_revision.get_or_insert(revision);
                positions.push(Position(position as u64));
            }
            if event.event_type == TOMBSTONE_EVENT_TYPE && !stream::is_system(&name) {
                row.tombstoned = true;
            }
            if event.event_type == METADATA_EVENT_TYPE {
                if let (Some(of), Ok(metadata)) = (
                    stream::metastream_target(&name),
                    StreamMetadata::from_slice(&event.data),
                ) {
                    let target_row = rows.entry(of.to_owned()).or_default();
                    target_row.metadata = Some(metadata);
                    target_row.changed = true;
                }
            }
            columns.position.push(position);
            columns.stream.push(name);
            columns.revision.push(revision as i64);
            columns.id.push(event.id);
            columns.event_type.push(event.event_type);
            columns
                .is_binary
                .push(event.content_type == ContentType::Binary);
            columns.data.push(event.data.to_vec());
            columns.metadata.push(event.metadata.to_vec());
            columns
                .recorded_at
                .push(event.recorded_at.map_or(now, |t| t.as_micros() as i64));
            columns
                .valid_at
                .push(event.valid_at.map(|t| t.as_micros() as i64));
        }
        let _ = target;
        let row = &rows[&stream_name];
        results.push(AppendResult {
            first_revision: first_revision.unwrap_or(row.next_revision),
            current_revision: row.current(),
            positions,
            stream: stream_name,
        });
    }
    if columns.position.is_empty() {
        return Ok(results);
    }
    insert(tx, &columns).await?;
    for (name, row) in rows.iter().filter(|(_, row)| row.changed) {
        let metadata = row.metadata.as_ref().map(StreamMetadata::to_json);
        tx.execute(
            "UPDATE strata_streams SET next_revision = $2, tombstoned = $3, metadata = $4 WHERE name = $1",
            &[name, &(row.next_revision as i64), &row.tombstoned, &metadata],
        )
        .await
        .map_err(backend)?;
    }
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await
        .map_err(backend)?;
    Ok(results)
}

/// Locks (creating if needed) every stream row the append may touch, in name order so
/// that concurrent appends never deadlock.
async fn lock_rows(
    tx: &Transaction<'_>,
    parts: &[(AppendRequest, Kind)],
) -> Result<HashMap<String, Row>, AppendError> {
    let mut names = BTreeSet::new();
    for (part, _) in parts {
        names.insert(part.stream.clone());
        match stream::metastream_target(&part.stream) {
            Some(target) => names.insert(target.to_owned()),
            None => names.insert(stream::metastream(&part.stream)),
        };
    }
    let names: Vec<String> = names.into_iter().collect();
    tx.execute(
        "INSERT INTO strata_streams (name) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING",
        &[&names],
    )
    .await
    .map_err(backend)?;
    let locked = tx
        .query(
            "SELECT name, next_revision, tombstoned, metadata FROM strata_streams
             WHERE name = ANY($1) ORDER BY name FOR UPDATE",
            &[&names],
        )
        .await
        .map_err(backend)?;
    let mut rows = HashMap::with_capacity(locked.len());
    for row in locked {
        let metadata: Option<serde_json::Value> = row.get(3);
        rows.insert(
            row.get::<_, String>(0),
            Row {
                next_revision: row.get::<_, i64>(1) as u64,
                tombstoned: row.get(2),
                metadata: metadata.and_then(|m| StreamMetadata::from_json(&m).ok()),
                changed: false,
            },
        );
    }
    Ok(rows)
}

/// If the part's events are already recorded in its stream in this order, the original
/// result; if only some are, a conflict.
async fn retry_of(
    tx: &Transaction<'_>,
    part: &AppendRequest,
) -> Result<Option<AppendResult>, AppendError> {
    let first = part.events[0].id;
    let found = tx
        .query_opt(
            "SELECT revision FROM strata_events WHERE id = $1 AND stream = $2 ORDER BY revision LIMIT 1",
            &[&first, &part.stream],
        )
        .await
        .map_err(backend)?;
    let Some(found) = found else {
        return Ok(None);
    };
    let start: i64 = found.get(0);
    let recorded = tx
        .query(
            "SELECT id, position FROM strata_events WHERE stream = $1 AND revision >= $2 AND revision < $3 ORDER BY revision",
            &[&part.stream, &start, &(start + part.events.len() as i64)],
        )
        .await
        .map_err(backend)?;
    let mut positions = Vec::with_capacity(part.events.len());
    for (i, event) in part.events.iter().enumerate() {
        match recorded.get(i) {
            Some(row) if row.get::<_, Uuid>(0) == event.id => {
                positions.push(Position(row.get::<_, i64>(1) as u64))
            }
            _ => {
                return Err(AppendError::IdempotencyConflict {
                    stream: part.stream.clone(),
                    event_id: event.id,
                })
            }
        }
    }
    let start = start as u64;
    Ok(Some(AppendResult {
        stream: part.stream.clone(),
        first_revision: start,
        current_revision: CurrentRevision::Current(start + positions.len() as u64 - 1),
        positions,
    }))
}

/// The events a part writes, by stream (deletes and revivals write metadata events), and
/// the stream its result describes.
fn expand(
    rows: &HashMap<String, Row>,
    part: AppendRequest,
    kind: Kind,
) -> (String, Vec<(String, EventData)>) {
    let target = part.stream;
    let row = rows.get(&target).cloned().unwrap_or_default();
    let mut metadata = row.metadata.clone().unwrap_or_default();
    let metadata_event = |metadata: &StreamMetadata| {
        EventData::new(
            METADATA_EVENT_TYPE,
            metadata.to_json().to_string().into_bytes(),
            ContentType::Json,
        )
    };
    match kind {
        Kind::Append => {
            let mut events = Vec::with_capacity(part.events.len() + 1);
            if row.deleted() && !part.events.is_empty() && !stream::is_system(&target) {
                metadata.truncate_before = Some(row.next_revision);
                events.push((stream::metastream(&target), metadata_event(&metadata)));
            }
            events.extend(part.events.into_iter().map(|e| (target.clone(), e)));
            (target, events)
        }
        Kind::SoftDelete => {
            metadata.truncate_before = Some(DELETED_TRUNCATE_BEFORE);
            let metastream = stream::metastream(&target);
            (
                metastream.clone(),
                vec![(metastream, metadata_event(&metadata))],
            )
        }
        Kind::Tombstone => {
            let tombstone = EventData::new(TOMBSTONE_EVENT_TYPE, Bytes::new(), ContentType::Binary);
            (target.clone(), vec![(target, tombstone)])
        }
    }
}

async fn insert(tx: &Transaction<'_>, c: &Columns) -> Result<(), AppendError> {
    tx.execute(
        "INSERT INTO strata_events
            (position, stream, revision, id, event_type, is_binary, data, metadata, recorded_at, valid_at)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],
                              $6::boolean[], $7::bytea[], $8::bytea[], $9::bigint[], $10::bigint[])",
        &[
            &c.position,
            &c.stream,
            &c.revision,
            &c.id,
            &c.event_type,
            &c.is_binary,
            &c.data,
            &c.metadata,
            &c.recorded_at,
            &c.valid_at,
        ],
    )
    .await
    .map_err(backend)?;
    Ok(())
}
