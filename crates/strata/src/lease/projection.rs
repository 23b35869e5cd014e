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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::lease::MemoryLeases;
    use crate::projection::{DocumentTx, MemorySink, Projection, ProjectionError, RunnerOptions};
    use crate::{EventData, ExpectedRevision, RecordedEvent, Store};

    /// Counts events per stream; refuses events of type `Poison`.
    struct Counts;

    impl Projection for Counts {
        fn name(&self) -> &str {
            "counts"
        }

        fn handle(
            &self,
            event: &RecordedEvent,
            tx: &mut DocumentTx,
        ) -> Result<(), ProjectionError> {
            if event.event_type == "Poison" {
                return Err(ProjectionError::rejected("poison"));
            }
            tx.update(&event.stream, |n: &mut u64| *n += 1)
        }
    }

    fn leased(
        leases: &Arc<MemoryLeases>,
        node: &str,
        store: &Store,
        sink: &MemorySink,
    ) -> LeasedProjection {
        let (store, sink) = (store.clone(), sink.clone());
        let options = LeaseOptions::new("projection:counts", node, Duration::from_millis(600));
        LeasedProjection::start(leases.clone(), options, move |_lease| {
            let (store, sink) = (store.clone(), sink.clone());
            async move { ProjectionRunner::start(store, Counts, sink, RunnerOptions::default()).await }
        })
        .unwrap()
    }

    async fn append(store: &Store, event_type: &str) {
        let event = EventData::json(event_type, &1).unwrap();
        store
            .append("s-1", ExpectedRevision::Any, vec![event])
            .await
            .unwrap();
    }

    async fn wait_for_count(sink: &MemorySink, count: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sink.get_as::<u64>("counts", "s-1").unwrap() != Some(count) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "count {count} not reached"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_state(projection: &LeasedProjection, wanted: impl Fn(&LeaseState) -> bool) {
        let mut state = projection.watch();
        tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| wanted(s)))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leased_projection_hands_over_and_resumes_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sink = MemorySink::new();
        let leases = Arc::new(MemoryLeases::new());
        let a = leased(&leases, "a", &store, &sink);
        wait_state(&a, |s| *s == LeaseState::Holding { epoch: 1 }).await;
        let b = leased(&leases, "b", &store, &sink);
        for _ in 0..3 {
            append(&store, "Added").await;
        }
        wait_for_count(&sink, 3).await;
        assert_eq!(b.state(), LeaseState::Standby);
        a.stop().await;
        wait_state(&b, |s| *s == LeaseState::Holding { epoch: 2 }).await;
        append(&store, "Added").await;
        // 4, not 7: b resumed after a's checkpoint.
        wait_for_count(&sink, 4).await;
        b.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leased_projection_ends_its_term_when_the_runner_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sink = MemorySink::new();
        let leases = Arc::new(MemoryLeases::new());
        let a = leased(&leases, "a", &store, &sink);
        wait_state(&a, |s| *s == LeaseState::Holding { epoch: 1 }).await;
        append(&store, "Poison").await;
        // The runner stops at the poison event; the supervisor notices, releases the
        // lease and competes again (and fails again, each time in a new term).
        wait_state(
            &a,
            |s| matches!(s, LeaseState::Holding { epoch } if *epoch >= 3),
        )
        .await;
        assert_eq!(sink.get_as::<u64>("counts", "s-1").unwrap(), None);
        a.stop().await;
        assert_eq!(
            leases
                .current("projection:counts")
                .await
                .unwrap()
                .unwrap()
                .expires_in,
            None
        );
    }
}
