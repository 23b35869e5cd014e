//! One append (one or many streams) as one transaction: lock the stream rows in name
//! order, check expected revisions and retries, insert the events.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Transaction;
use futures_util::future::try_join_all;
use uuid::Uuid;

use strata::stream::{METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};
use strata::write::TargetState;
use strata::{
    stream, AppendError, AppendRequest, AppendResult, ContentType, CurrentRevision, EventData,
    InvalidInput, Position, StreamMetadata, Timestamp,
};

use crate::error::backend;

/// What a part of an append does.
pub use strata::write::WriteKind as Kind;

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
    // One round trip: lock (creating) the stream rows, learn this transaction's id, and
    // look up each part's first event id (queries after the lock see every append that
    // committed before it).
    let (mut rows, xid, candidates) = lock_and_look_up(tx, &parts).await?;
    let mut retries = Vec::new();
    for ((part, kind), candidate) in parts.iter().zip(candidates) {
        let row = &rows[&part.stream];
        if row.tombstoned {
            return Err(AppendError::StreamDeleted {
                stream: part.stream.clone(),
            });
        }
        if *kind == Kind::Append && !part.events.is_empty() {
            if let Some(start) = candidate {
                retries.push(retry_of(tx, part, start).await?);
                continue;
            }
        }
        let current = row.current();
        if !part.expected.is_satisfied_by(current) {
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
    let base = xid << 20;
    let mut columns = Columns::default();
    let mut results = Vec::with_capacity(parts.len());
    let now = Timestamp::now().as_micros() as i64;
    for (part, kind) in parts {
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
    let changed: Vec<(&String, &Row)> = rows.iter().filter(|(_, row)| row.changed).collect();
    let names: Vec<&str> = changed.iter().map(|(name, _)| name.as_str()).collect();
    let next: Vec<i64> = changed
        .iter()
        .map(|(_, row)| row.next_revision as i64)
        .collect();
    let tombstoned: Vec<bool> = changed.iter().map(|(_, row)| row.tombstoned).collect();
    let metadata: Vec<Option<serde_json::Value>> = changed
        .iter()
        .map(|(_, row)| row.metadata.as_ref().map(StreamMetadata::to_json))
        .collect();
    let insert_statement = tx.prepare_cached(INSERT_EVENTS).await.map_err(backend)?;
    let update_statement = tx.prepare_cached(UPDATE_STREAMS).await.map_err(backend)?;
    // One round trip: the two statements are pipelined. (No NOTIFY here: a transaction
    // that notifies takes a global lock through its commit, which would serialise every
    // append's commit; the caller notifies after committing.)
    let insert_params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &columns.position,
        &columns.stream,
        &columns.revision,
        &columns.id,
        &columns.event_type,
        &columns.is_binary,
        &columns.data,
        &columns.metadata,
        &columns.recorded_at,
        &columns.valid_at,
    ];
    let update_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&names, &next, &tombstoned, &metadata];
    let insert = tx.execute(&insert_statement, &insert_params);
    let update = tx.execute(&update_statement, &update_params);
    futures_util::try_join!(insert, update).map_err(backend)?;
    Ok(results)
}

const LOCK_STREAMS: &str = "INSERT INTO strata_streams (name) SELECT unnest($1::text[]) ORDER BY 1
     ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
     RETURNING name, next_revision, tombstoned, metadata, pg_current_xact_id()::text::bigint";

const FIND_ID: &str =
    "SELECT revision FROM strata_events WHERE id = $1 AND stream = $2 ORDER BY revision LIMIT 1";

const INSERT_EVENTS: &str = "INSERT INTO strata_events
        (position, stream, revision, id, event_type, is_binary, data, metadata, recorded_at, valid_at)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],
                          $6::boolean[], $7::bytea[], $8::bytea[], $9::bigint[], $10::bigint[])";

const UPDATE_STREAMS: &str = "UPDATE strata_streams AS s
     SET next_revision = u.next_revision, tombstoned = u.tombstoned, metadata = u.metadata
     FROM unnest($1::text[], $2::bigint[], $3::boolean[], $4::jsonb[])
          AS u(name, next_revision, tombstoned, metadata)
     WHERE s.name = u.name";

/// The row locks, the transaction id and each part's retry candidate (the revision of
/// its first event id in its stream, if recorded).
type Looked = (HashMap<String, Row>, i64, Vec<Option<i64>>);

/// Locks (creating if needed) every stream row the append may touch, in name order so
/// that concurrent appends never deadlock; in the same round trip, looks up each part's
/// first event id.
async fn lock_and_look_up(
    tx: &Transaction<'_>,
    parts: &[(AppendRequest, Kind)],
) -> Result<Looked, AppendError> {
    let mut names = BTreeSet::new();
    for (part, _) in parts {
        names.insert(part.stream.clone());
        match stream::metastream_target(&part.stream) {
            Some(target) => names.insert(target.to_owned()),
            None => names.insert(stream::metastream(&part.stream)),
        };
    }
    let names: Vec<String> = names.into_iter().collect();
    let lock = tx.prepare_cached(LOCK_STREAMS).await.map_err(backend)?;
    let find = tx.prepare_cached(FIND_ID).await.map_err(backend)?;
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&names];
    let locked = tx.query(&lock, &lock_params);
    let lookups = try_join_all(parts.iter().map(|(part, kind)| {
        let find = &find;
        async move {
            match part.events.first() {
                Some(first) if *kind == Kind::Append => {
                    let row = tx.query_opt(find, &[&first.id, &part.stream]).await?;
                    Ok(row.map(|row| row.get::<_, i64>(0)))
                }
                _ => Ok(None),
            }
        }
    }));
    let (locked, candidates) = futures_util::try_join!(locked, lookups).map_err(backend)?;
    let mut rows = HashMap::with_capacity(locked.len());
    let mut xid = 0;
    for row in locked {
        let metadata: Option<serde_json::Value> = row.get(3);
        xid = row.get(4);
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
    Ok((rows, xid, candidates))
}

/// The original result of a retried part whose first event is recorded at `start`; a
/// conflict if only some of its events are recorded there in this order.
async fn retry_of(
    tx: &Transaction<'_>,
    part: &AppendRequest,
    start: i64,
) -> Result<AppendResult, AppendError> {
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
    Ok(AppendResult {
        stream: part.stream.clone(),
        first_revision: start,
        current_revision: CurrentRevision::Current(start + positions.len() as u64 - 1),
        positions,
    })
}

/// The events a part writes, by stream (deletes and revivals write metadata events), and
/// the stream its result describes: the expansion every backend shares.
fn expand(
    rows: &HashMap<String, Row>,
    part: AppendRequest,
    kind: Kind,
) -> (String, Vec<(String, EventData)>) {
    let row = rows.get(&part.stream).cloned().unwrap_or_default();
    let state = TargetState {
        next_revision: row.next_revision,
        deleted: row.deleted(),
        metadata: row.metadata.as_ref(),
    };
    let (result_stream, runs) = strata::write::expand(kind, part.stream, part.events, state);
    let events = runs
        .into_iter()
        .flat_map(|(name, events)| events.into_iter().map(move |e| (name.clone(), e)))
        .collect();
    (result_stream, events)
}
