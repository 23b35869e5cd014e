//! [`LeasedProjection`]: an async projection that runs on whichever node holds its lease.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Lease, LeaseError, LeaseOptions, LeaseState, LeaseSupervisor, LeasedWork, Leases};
use crate::projection::{ProjectionRunner, RunError};

#[async_trait]
impl LeasedWork for ProjectionRunner {
    type Error = RunError;

    /// The runner's progress channel closes when its task ends, and only then.
    async fn ended(&mut self) {
        let mut position = self.watch();
        while position.changed().await.is_ok() {}
    }

    async fn stop(self) -> Result<(), RunError> {
        ProjectionRunner::stop(self).await.map(drop)
    }
}

/// An async projection spread over nodes: each node starts one for the same lease, and
/// the node holding the lease runs the [`ProjectionRunner`]. When that node dies, the
/// lease expires and another node's runner resumes from the sink's checkpoint.
///
/// The runner is built by `start` at the beginning of every term, from that term's
/// [`Lease`], so the sink can be fenced with its epoch (with
/// `strata_postgres::PostgresSink::fenced`, a node that lost its lease cannot commit).
/// The sink must be shared by the nodes (e.g. PostgreSQL) for the checkpoint to carry
/// over.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::{sync::Arc, time::Duration};
/// use strata::lease::{LeaseOptions, LeasedProjection, MemoryLeases};
/// use strata::projection::{DocumentTx, MemorySink, Projection, ProjectionError, ProjectionRunner, RunnerOptions};
/// use strata::{RecordedEvent, Store};
///
/// struct Counts;
/// impl Projection for Counts {
///     fn name(&self) -> &str { "counts" }
///     fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
///         tx.update(&event.stream, |n: &mut u64| *n += 1)
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let sink = MemorySink::new();
/// let leases = Arc::new(MemoryLeases::new());
/// let options = LeaseOptions::new("projection:counts", "node-1", Duration::from_secs(2));
/// let leased = LeasedProjection::start(leases, options, move |_lease| {
///     let (store, sink) = (store.clone(), sink.clone());
///     async move { ProjectionRunner::start(store, Counts, sink, RunnerOptions::default()).await }
/// })?;
/// leased.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LeasedProjection {
    supervisor: LeaseSupervisor,
}

impl LeasedProjection {
    /// Starts competing for the lease; `start` builds the runner of each term.
    pub fn start<L, F, Fut>(
        leases: Arc<L>,
        options: LeaseOptions,
        start: F,
    ) -> Result<LeasedProjection, LeaseError>
    where
        L: Leases + ?Sized,
        F: FnMut(Lease) -> Fut + Send + 'static,
        Fut: Future<Output = Result<ProjectionRunner, RunError>> + Send + 'static,
    {
        Ok(LeasedProjection {
            supervisor: LeaseSupervisor::start(leases, options, start)?,
        })
    }

    /// Whether this node runs the projection now (and in which epoch), or stands by.
    pub fn state(&self) -> LeaseState {
        self.supervisor.state()
    }

    /// A receiver of [`state`](LeasedProjection::state).
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.supervisor.watch()
    }

    /// Stops the runner (committing its batch), releases the lease and waits for both:
    /// another node takes over at its next attempt.
    pub async fn stop(self) {
        self.supervisor.stop().await;
    }
}
