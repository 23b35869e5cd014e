//! [`PostgresSink`]: projection read models in the store's database, each commit's output
//! and checkpoint in one PostgreSQL transaction, optionally fenced by a lease.
//!
//! Tables (migration 4): `strata_projection_documents (projection, key, value jsonb)` and
//! `strata_projection_checkpoints (projection, position)`.
//!
//! ## Sync over async
//! [`Sink`] is synchronous (the embedded sinks are), and the runners call it in two
//! places: `commit`, `checkpoint` and `reset` in `spawn_blocking` (a blocking-pool
//! thread), and `begin` plus the handlers' document loads ([`DocumentSource::load`]) on
//! the runner's async task. The PostgreSQL client is async, so each call waits for it
//! with [`Handle::block_on`], wrapped in [`block_in_place`]: on a blocking-pool thread
//! that wrapper does nothing, and on a runtime worker it first hands the worker's other
//! tasks to another thread, so waiting starves nothing (and the connection's own task,
//! which may be queued on this worker, keeps running). `block_in_place` needs the
//! multi-thread runtime; on a current-thread runtime it would panic, so every call checks
//! the runtime first and answers [`SinkRuntimeError::CurrentThread`] instead.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::block_in_place;

use strata::lease::Lease;
use strata::projection::{
    DocumentChanges, DocumentSource, DocumentTx, ReadModel, ReadModelSnapshot, Sink, SinkError,
};
use strata::Position;

use crate::error::{backend, pool as pool_error};

/// A test hook called inside every commit, after the output is written and before the
/// checkpoint is: an error aborts the transaction. See [`PostgresSink::with_commit_fault`].
pub type CommitFault = Arc<dyn Fn(&str) -> Result<(), SinkError> + Send + Sync>;

/// Why a [`PostgresSink`] cannot wait for PostgreSQL from where it was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkRuntimeError {
    /// Called outside a tokio runtime.
    #[error("PostgresSink must be used inside a tokio runtime")]
    NoRuntime,
    /// Called on a current-thread runtime, where a synchronous call cannot wait for the
    /// asynchronous PostgreSQL client without blocking the only thread.
    #[error("PostgresSink needs tokio's multi-thread runtime (its synchronous Sink calls wait for PostgreSQL with block_in_place); use #[tokio::main] or flavor = \"multi_thread\"")]
    CurrentThread,
}

/// Waits for `future` from synchronous sink code (see the module's documentation).
fn block_on<T>(
    operation: &'static str,
    future: impl Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    let handle = Handle::try_current()
        .map_err(|_| SinkError::storage(operation, SinkRuntimeError::NoRuntime))?;
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return Err(SinkError::storage(
            operation,
            SinkRuntimeError::CurrentThread,
        ));
    }
    block_in_place(|| handle.block_on(future))
}

fn pg(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> SinkError {
    move |error| SinkError::storage(operation, backend(error))
}

fn position_param(position: Position) -> Result<i64, SinkError> {
    i64::try_from(position.0).map_err(|_| SinkError::Refused {
        reason: format!("position {position} does not fit PostgreSQL's bigint"),
    })
}

fn position(value: i64) -> Position {
    // Written from a `Position` through `position_param`: never negative.
    Position(u64::try_from(value).unwrap_or(0))
}

/// The lease a fenced sink writes for.
#[derive(Clone, Debug)]
struct Fence {
    name: String,
    holder: String,
    epoch: u64,
}

/// A [`Sink`] of JSON documents in PostgreSQL, shared by every node of the database:
/// the read model survives the node, and a node taking a projection over resumes from
/// its checkpoint. Handlers use [`DocumentTx`], like the embedded sinks.
///
/// Every commit writes the output and the checkpoint in one transaction. A sink made
/// with [`fenced`](PostgresSink::fenced) also checks, in that transaction, that its lease
/// is still held (same holder, same epoch, not expired) and keeps the lease row locked
/// until it commits, so no other node can take the lease over in between; otherwise it
/// writes nothing and answers [`SinkError::Fenced`].
///
/// Needs tokio's multi-thread runtime (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct PostgresSink {
    pool: Pool,
    fence: Option<Arc<Fence>>,
    fault: Option<CommitFault>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("fence", &self.fence)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

impl PostgresSink {
    pub(crate) fn new(pool: Pool) -> PostgresSink {
        PostgresSink {
            pool,
            fence: None,
            fault: None,
        }
    }

    /// The same sink, writing only while `lease` is held: for the runner of one term of a
    /// [`LeasedProjection`](strata::lease::LeasedProjection).
    pub fn fenced(&self, lease: &Lease) -> PostgresSink {
        PostgresSink {
            fence: Some(Arc::new(Fence {
                name: lease.name.clone(),
                holder: lease.holder.clone(),
                epoch: lease.epoch,
            })),
            ..self.clone()
        }
    }

    /// For tests: the same sink, calling `fault` inside every commit between writing the
    /// output and writing the checkpoint; an error it returns aborts the commit.
    pub fn with_commit_fault(&self, fault: CommitFault) -> PostgresSink {
        PostgresSink {
            fault: Some(fault),
            ..self.clone()
        }
    }

    async fn client(
        &self,
        operation: &'static str,
    ) -> Result<deadpool_postgres::Object, SinkError> {
        self.pool
            .get()
            .await
            .map_err(|e| SinkError::storage(operation, pool_error(e, &self.pool)))
    }

    /// The document `key` of `projection`, if there is one.
    pub async fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
        load(&self.pool, projection, key).await
    }

    /// The document `key` of `projection` decoded as `T`, if there is one.
    pub async fn get_as<T: DeserializeOwned>(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<T>, SinkError> {
        self.get(projection, key)
            .await?
            .map(|value| {
                serde_json::from_value(value).map_err(|error| SinkError::Decode {
                    projection: projection.to_owned(),
                    key: key.to_owned(),
                    reason: error.to_string(),
                })
            })
            .transpose()
    }

    /// Every document of `projection`, by key.
    pub async fn scan(&self, projection: &str) -> Result<BTreeMap<String, Value>, SinkError> {
        Ok(self.read_snapshot(projection).await?.rows)
    }

    /// The projections that have a checkpoint here, with it, by name.
    pub async fn checkpoints(&self) -> Result<Vec<(String, Position)>, SinkError> {
        let client = self.client("read").await?;
        let rows = client
            .query(
                "SELECT projection, position FROM strata_projection_checkpoints ORDER BY projection",
                &[],
            )
            .await
            .map_err(pg("read"))?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), position(row.get(1))))
            .collect())
    }

    /// The checkpoint and documents of `projection` from one snapshot of the database.
    async fn read_snapshot(&self, projection: &str) -> Result<ReadModelSnapshot, SinkError> {
        let mut client = self.client("read").await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg("read"))?;
        let checkpoint = read_checkpoint(&tx, projection).await?;
        let rows = tx
            .query(
                "SELECT key, value FROM strata_projection_documents WHERE projection = $1",
                &[&projection],
            )
            .await
            .map_err(pg("read"))?;
        tx.commit().await.map_err(pg("read"))?;
        Ok(ReadModelSnapshot {
            checkpoint,
            rows: rows.iter().map(|row| (row.get(0), row.get(1))).collect(),
        })
    }

    /// Refuses to go on unless the lease is still held; locks its row until the end of
    /// `tx` (`FOR SHARE`), so a takeover (an update of that row) waits for this commit.
    async fn check_fence(&self, tx: &Transaction<'_>) -> Result<(), SinkError> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let epoch = i64::try_from(fence.epoch).unwrap_or(i64::MAX);
        let held = tx
            .query_opt(
                "SELECT 1 FROM strata_leases
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
                 FOR SHARE",
                &[&fence.name, &fence.holder, &epoch],
            )
            .await
            .map_err(pg("check the lease"))?;
        match held {
            Some(_) => Ok(()),
            None => Err(SinkError::Fenced {
                lease: fence.name.clone(),
                holder: fence.holder.clone(),
                epoch: fence.epoch,
            }),
        }
    }

    async fn write(
        &self,
        projection: &str,
        changes: DocumentChanges,
        checkpoint: Option<i64>,
    ) -> Result<(), SinkError> {
        let mut client = self.client("commit").await?;
        // Dropping `tx` on any error below rolls it back: nothing is written.
        let tx = client.transaction().await.map_err(pg("commit"))?;
        self.check_fence(&tx).await?;
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut deleted = Vec::new();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    keys.push(key);
                    values.push(value);
                }
                None => deleted.push(key),
            }
        }
        if !keys.is_empty() {
            // Keys are unique within a transaction's changes, so one upsert covers them.
            tx.execute(
                "INSERT INTO strata_projection_documents (projection, key, value)
                 SELECT $1, k, v FROM unnest($2::text[], $3::jsonb[]) AS u(k, v)
                 ON CONFLICT (projection, key) DO UPDATE SET value = EXCLUDED.value",
                &[&projection, &keys, &values],
            )
            .await
            .map_err(pg("write documents"))?;
        }
        if !deleted.is_empty() {
            tx.execute(
                "DELETE FROM strata_projection_documents WHERE projection = $1 AND key = ANY($2)",
                &[&projection, &deleted],
            )
            .await
            .map_err(pg("delete documents"))?;
        }
        if let Some(fault) = &self.fault {
            fault(projection)?;
        }
        if let Some(checkpoint) = checkpoint {
            tx.execute(
                "INSERT INTO strata_projection_checkpoints (projection, position) VALUES ($1, $2)
                 ON CONFLICT (projection) DO UPDATE SET position = EXCLUDED.position",
                &[&projection, &checkpoint],
            )
            .await
            .map_err(pg("write the checkpoint"))?;
        }
        tx.commit().await.map_err(pg("commit"))
    }

    async fn clear(&self, projection: &str) -> Result<(), SinkError> {
        let mut client = self.client("reset").await?;
        let tx = client.transaction().await.map_err(pg("reset"))?;
        self.check_fence(&tx).await?;
        tx.execute(
            "DELETE FROM strata_projection_documents WHERE projection = $1",
            &[&projection],
        )
        .await
        .map_err(pg("reset"))?;
        tx.execute(
            "DELETE FROM strata_projection_checkpoints WHERE projection = $1",
            &[&projection],
        )
        .await
        .map_err(pg("reset"))?;
        tx.commit().await.map_err(pg("reset"))
    }
}

async fn load(pool: &Pool, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
    let client = pool
        .get()
        .await
        .map_err(|e| SinkError::storage("read", pool_error(e, pool)))?;
    let statement = client
        .prepare_cached(
            "SELECT value FROM strata_projection_documents WHERE projection = $1 AND key = $2",
        )
        .await
        .map_err(pg("read"))?;
    let row = client
        .query_opt(&statement, &[&projection, &key])
        .await
        .map_err(pg("read"))?;
    Ok(row.map(|row| row.get(0)))
}

async fn read_checkpoint(
    client: &impl deadpool_postgres::GenericClient,
    projection: &str,
) -> Result<Option<Position>, SinkError> {
    let row = client
        .query_opt(
            "SELECT position FROM strata_projection_checkpoints WHERE projection = $1",
            &[&projection],
        )
        .await
        .map_err(pg("read the checkpoint"))?;
    Ok(row.map(|row| position(row.get(0))))
}

/// One projection's committed documents, as a [`DocumentTx`] loads them.
struct Source {
    pool: Pool,
    projection: String,
}

impl DocumentSource for Source {
    fn load(&self, key: &str) -> Result<Option<Value>, SinkError> {
        block_on("read", load(&self.pool, &self.projection, key))
    }
}

impl Sink for PostgresSink {
    type Tx = DocumentTx;

    fn begin(&self, projection: &str) -> Result<DocumentTx, SinkError> {
        Ok(DocumentTx::new(Arc::new(Source {
            pool: self.pool.clone(),
            projection: projection.to_owned(),
        })))
    }

    fn commit(
        &self,
        projection: &str,
        tx: DocumentTx,
        checkpoint: Option<Position>,
    ) -> Result<(), SinkError> {
        // Emitted events were appended by the runner before this commit.
        let (changes, _outbox) = tx.into_changes()?;
        let checkpoint = checkpoint.map(position_param).transpose()?;
        block_on("commit", self.write(projection, changes, checkpoint))
    }

    fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        block_on("read the checkpoint", async {
            let client = self.client("read the checkpoint").await?;
            read_checkpoint(&client, projection).await
        })
    }

    fn reset(&self, projection: &str) -> Result<(), SinkError> {
        block_on("reset", self.clear(projection))
    }
}

impl ReadModel for PostgresSink {
    fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
        block_on("read", load(&self.pool, projection, key))
    }

    fn snapshot(&self, projection: &str) -> Result<ReadModelSnapshot, SinkError> {
        block_on("read", self.read_snapshot(projection))
    }
}
