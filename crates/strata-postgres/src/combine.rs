//! Group commit for PostgreSQL appends: concurrent plain appends share one call of
//! `strata_append_groups`, hence one transaction and one WAL flush.
//!
//! Appenders queue their requests; a few workers each take the first waiting request and
//! every request queued behind it (up to a bound), make one call, and answer each caller
//! with its own outcome. Under light load a batch is one append and nothing waits; under
//! heavy load a batch grows with the queue, which is what lets many writers share the
//! database's commit rate (the same idea as the embedded engine's group commit).
//!
//! Each caller's append stays all or nothing: the function checks and writes groups one
//! by one, in queue order, against the state the earlier groups left, and skips a group
//! whose check fails without touching the others.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use strata::{
    stream, AppendError, AppendRequest, AppendResult, ContentType, CurrentRevision,
    ExpectedRevision, Position, Timestamp,
};

use crate::append::Kind;
use crate::error::{self, backend};
use crate::AppendDelay;

/// The most events one call carries.
const BATCH_EVENTS_MAX: usize = 8192;
/// The most appends (groups) one call carries.
const BATCH_GROUPS_MAX: usize = 256;

const CALL: &str = "SELECT strata_append_groups($1::int[], $2::text[], $3::bigint[],
     $4::uuid[], $5::bigint[], $6::int[], $7::bigint[], $8::uuid[], $9::text[],
     $10::boolean[], $11::bytea[], $12::bytea[], $13::bigint[], $14::bigint[], $15::int)";

/// Whether `parts` can be combined: plain appends to ordinary streams whose expected
/// revisions fit PostgreSQL's bigint. Metadata streams, deletes and tombstones take the
/// general path (`append::append`), which shares the engine's expansion rules.
pub fn applies(parts: &[(AppendRequest, Kind)]) -> bool {
    parts.iter().enumerate().all(|(i, (part, kind))| {
        *kind == Kind::Append
            && !stream::is_system(&part.stream)
            && !matches!(part.expected, ExpectedRevision::Exact(r) if r >= i64::MAX as u64)
            && !parts[..i].iter().any(|(p, _)| p.stream == part.stream)
    })
}

/// What became of one combined append.
pub enum Outcome {
    /// Written and committed; the flag says whether readers see it already.
    Done(Vec<AppendResult>, bool),
    /// It needs the general path; nothing was written.
    Slow,
}

struct Pending {
    parts: Vec<(AppendRequest, Kind)>,
    reply: oneshot::Sender<Result<Outcome, AppendError>>,
}

impl Pending {
    fn events(&self) -> usize {
        self.parts.iter().map(|(p, _)| p.events.len()).sum()
    }

    /// (stream, first event id) of each part: two appends of the same events to the
    /// same stream must not share a call (the second is a retry of the first, answered
    /// once the first has committed).
    fn keys(&self) -> Vec<(String, Uuid)> {
        self.parts
            .iter()
            .filter_map(|(p, _)| p.events.first().map(|e| (p.stream.clone(), e.id)))
            .collect()
    }
}

/// The queue appenders submit to, and its workers.
pub struct Combiner {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Combiner {
    /// Starts `workers` workers on `pool`. They end when the combiner is dropped.
    pub fn start(pool: Pool, workers: usize, delay: Option<AppendDelay>) -> Combiner {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(pool.clone(), receiver.clone(), delay.clone()));
        }
        Combiner { queue }
    }

    /// Appends `parts` in a shared call.
    pub async fn append(&self, parts: Vec<(AppendRequest, Kind)>) -> Result<Outcome, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { parts, reply })
            .map_err(|_| strata::StorageError::Closed)?;
        answer.await.map_err(|_| strata::StorageError::Closed)?
    }
}

async fn work(
    pool: Pool,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
    delay: Option<AppendDelay>,
) {
    let mut deferred: Vec<Pending> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut deferred);
        {
            let mut queue = queue.lock().await;
            if batch.is_empty() {
                match queue.recv().await {
                    Some(first) => batch.push(first),
                    None => return,
                }
            }
            let mut keys: HashSet<(String, Uuid)> = batch.iter().flat_map(Pending::keys).collect();
            let mut events: usize = batch.iter().map(Pending::events).sum();
            while batch.len() < BATCH_GROUPS_MAX && events < BATCH_EVENTS_MAX {
                let Ok(next) = queue.try_recv() else { break };
                let next_keys = next.keys();
                if next_keys.iter().any(|k| keys.contains(k)) {
                    deferred.push(next);
                    continue;
                }
                keys.extend(next_keys);
                events += next.events();
                batch.push(next);
            }
        }
        let delay_ms = delay
            .as_ref()
            .map_or(0, |d| i32::try_from(d().as_millis()).unwrap_or(i32::MAX));
        run_batch(&pool, batch, delay_ms).await;
    }
}

/// Makes one call for `batch` and answers every caller. If a call with several appends
/// fails for a reason that is not the connection's, one of them may be the cause (text
/// PostgreSQL cannot store, say): each is then tried alone, so only its caller sees it.
/// No free connection in time (a busy pool) is nobody's fault: every caller gets it at
/// once, rather than each waiting out the pool's wait timeout again.
async fn run_batch(pool: &Pool, batch: Vec<Pending>, delay_ms: i32) {
    let groups: Vec<&[(AppendRequest, Kind)]> = batch.iter().map(|p| p.parts.as_slice()).collect();
    let outcome = call(pool, &groups, delay_ms).await;
    match outcome {
        Ok(outcomes) => {
            for (pending, outcome) in batch.into_iter().zip(outcomes) {
                let _ = pending.reply.send(outcome);
            }
        }
        Err(error)
            if batch.len() > 1
                && !crate::error::is_transient(&error)
                && !matches!(
                    error,
                    AppendError::Storage(strata::StorageError::Timeout { .. })
                ) =>
        {
            for pending in batch {
                let outcome = match call(pool, &[pending.parts.as_slice()], delay_ms).await {
                    Ok(mut outcomes) => outcomes.pop().unwrap_or(Err(error.clone())),
                    Err(error) => Err(error),
                };
                let _ = pending.reply.send(outcome);
            }
        }
        Err(error) => {
            for pending in batch {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}

/// One call of the function for `groups`; the outcome of each group.
async fn call(
    pool: &Pool,
    groups: &[&[(AppendRequest, Kind)]],
    delay_ms: i32,
) -> Result<Vec<Result<Outcome, AppendError>>, AppendError> {
    let parts = groups.iter().map(|g| g.len()).sum::<usize>();
    let events = groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|(p, _)| p.events.len())
        .sum::<usize>();
    let mut group = Vec::with_capacity(parts);
    let mut streams = Vec::with_capacity(parts);
    let mut expected = Vec::with_capacity(parts);
    let mut first_ids = Vec::with_capacity(parts);
    let mut counts = Vec::with_capacity(parts);
    let mut part_of = Vec::with_capacity(events);
    let mut offset = Vec::with_capacity(events);
    let mut ids = Vec::with_capacity(events);
    let mut types = Vec::with_capacity(events);
    let mut binary = Vec::with_capacity(events);
    let mut data = Vec::with_capacity(events);
    let mut metadata = Vec::with_capacity(events);
    let mut recorded_at = Vec::with_capacity(events);
    let mut valid_at = Vec::with_capacity(events);
    let now = Timestamp::now().as_micros() as i64;
    for (g, parts) in groups.iter().enumerate() {
        for (part, _) in parts.iter() {
            group.push(g as i32);
            streams.push(part.stream.as_str());
            expected.push(match part.expected {
                ExpectedRevision::Any => -2i64,
                ExpectedRevision::NoStream => -1,
                ExpectedRevision::StreamExists => -4,
                ExpectedRevision::Exact(r) => r as i64,
            });
            first_ids.push(part.events.first().map(|e| e.id));
            counts.push(part.events.len() as i64);
            let index = streams.len() as i32;
            for (k, event) in part.events.iter().enumerate() {
                part_of.push(index);
                offset.push(k as i64);
                ids.push(event.id);
                types.push(event.event_type.as_str());
                binary.push(event.content_type == ContentType::Binary);
                data.push(event.data.as_ref());
                metadata.push(event.metadata.as_ref());
                recorded_at.push(event.recorded_at.map_or(now, |t| t.as_micros() as i64));
                valid_at.push(event.valid_at.map(|t| t.as_micros() as i64));
            }
        }
    }
    let client = pool.get().await.map_err(|e| error::pool(e, pool))?;
    let statement = client.prepare_cached(CALL).await.map_err(backend)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 15] = [
        &group,
        &streams,
        &expected,
        &first_ids,
        &counts,
        &part_of,
        &offset,
        &ids,
        &types,
        &binary,
        &data,
        &metadata,
        &recorded_at,
        &valid_at,
        &delay_ms,
    ];
    let row = client
        .query_one(&statement, &params)
        .await
        .map_err(backend)?;
    // [xid, visible, then (status, value) per part].
    let answer: Vec<i64> = row.get(0);
    let base = (answer.first().copied().unwrap_or(0) as u64) << 20;
    let visible = answer.get(1) == Some(&1);
    let mut outcomes = Vec::with_capacity(groups.len());
    let mut part_index = 0usize;
    // Positions number the written events in call order.
    let mut written = 0u64;
    for parts in groups {
        let statuses: Vec<(i64, i64)> = (0..parts.len())
            .map(|k| {
                let at = 2 + 2 * (part_index + k);
                (
                    answer.get(at).copied().unwrap_or(-1),
                    answer.get(at + 1).copied().unwrap_or(0),
                )
            })
            .collect();
        part_index += parts.len();
        let failed = statuses
            .iter()
            .enumerate()
            .find(|(_, (status, _))| *status != 0 && *status != 4);
        outcomes.push(match failed {
            None if statuses.iter().all(|(status, _)| *status == 0) => {
                let mut results = Vec::with_capacity(parts.len());
                for ((part, _), (_, start)) in parts.iter().zip(&statuses) {
                    let start = *start as u64;
                    let count = part.events.len() as u64;
                    let positions = (0..count).map(|k| Position(base + written + k)).collect();
                    written += count;
                    let next = start + count;
                    results.push(AppendResult {
                        stream: part.stream.clone(),
                        first_revision: start,
                        positions,
                        current_revision: if next == 0 {
                            CurrentRevision::NoStream
                        } else {
                            CurrentRevision::Current(next - 1)
                        },
                    });
                }
                Ok(Outcome::Done(results, visible))
            }
            None => Err(AppendError::Storage(error::other(
                "the append function answered a group inconsistently",
            ))),
            Some((k, (status, value))) => {
                let (part, _) = &parts[k];
                match status {
                    1 => {
                        let next = *value as u64;
                        Err(AppendError::WrongExpectedRevision {
                            stream: part.stream.clone(),
                            expected: part.expected,
                            actual: if next == 0 {
                                CurrentRevision::NoStream
                            } else {
                                CurrentRevision::Current(next - 1)
                            },
                        })
                    }
                    2 => Err(AppendError::StreamDeleted {
                        stream: part.stream.clone(),
                    }),
                    _ => Ok(Outcome::Slow),
                }
            }
        });
    }
    Ok(outcomes)
}
