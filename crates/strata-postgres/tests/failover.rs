//! Failover: three in-process nodes (each its own runtime, connection pool, leases and
//! `LeasedProjection` over a fenced `PostgresSink`) compete for one projection while
//! events are appended continuously. The holder is killed (its runtime shut down: no
//! final commit, no release); another node takes over within the lease's TTL plus a
//! retry interval, resumes from the checkpoint, and the read model ends up equal to a
//! serial rebuild of the whole log: every event applied exactly once.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::lease::{Lease, LeaseOptions, LeaseState, LeasedProjection, Leases};
use strata::projection::{
    DocumentTx, Projection, ProjectionError, ProjectionRunner, RunError, RunnerOptions,
};
use strata::{Position, RecordedEvent, Store};
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use support::{connect_to_log, database, deposit, serial_rebuild, Balances};

const LEASE: &str = "projection:balances";
const TTL: Duration = Duration::from_millis(1500);
const ACCOUNTS: u64 = 11;

/// The start of one term: who, which epoch, and the checkpoint it resumed from.
#[derive(Clone, Debug)]
struct Term {
    node: &'static str,
    epoch: u64,
    checkpoint: Option<Position>,
}

/// Every event a handler applied: which node, in which epoch, at which position.
type Handled = Arc<Mutex<Vec<(&'static str, u64, Position)>>>;

/// [`Balances`], remembering which node applied what.
struct Recording {
    node: &'static str,
    epoch: u64,
    handled: Handled,
}

impl Projection for Recording {
    fn name(&self) -> &str {
        Balances.name()
    }

    fn filter(&self) -> strata::Filter {
        Balances.filter()
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        Balances.handle(event, tx)?;
        self.handled
            .lock()
            .unwrap()
            .push((self.node, self.epoch, event.position));
        Ok(())
    }
}

fn options(node: &'static str) -> LeaseOptions {
    LeaseOptions::new(LEASE, node, TTL)
}

/// A node: its own runtime, so killing it stops everything it runs at once.
struct Node {
    name: &'static str,
    runtime: Option<Runtime>,
    state: watch::Receiver<LeaseState>,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

impl Node {
    async fn start(
        name: &'static str,
        url: &str,
        terms: &Arc<Mutex<Vec<Term>>>,
        handled: &Handled,
    ) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name(name)
            .build()
            .unwrap();
        let (ready, state) = oneshot::channel();
        let (stop, stop_requested) = oneshot::channel::<()>();
        let (done, stopped) = oneshot::channel();
        let (url, terms, handled) = (url.to_owned(), terms.clone(), handled.clone());
        runtime.spawn(async move {
            let backend = connect_to_log(&url).await;
            let store = Store::from_backend(backend.clone());
            let sink = backend.sink();
            let leases = Arc::new(backend.leases());
            let leased = LeasedProjection::start(leases, options(name), move |lease: Lease| {
                let (store, terms, handled) = (store.clone(), terms.clone(), handled.clone());
                let sink = sink.fenced(&lease);
                async move {
                    // Nobody else can move the checkpoint while this term holds the lease:
                    // it is where the runner resumes.
                    let checkpoint = sink
                        .checkpoints()
                        .await
                        .map_err(|source| RunError::Sink {
                            projection: "balances".into(),
                            source,
                        })?
                        .into_iter()
                        .find(|(projection, _)| projection == "balances")
                        .map(|(_, position)| position);
                    terms.lock().unwrap().push(Term {
                        node: name,
                        epoch: lease.epoch,
                        checkpoint,
                    });
                    let projection = Recording {
                        node: name,
                        epoch: lease.epoch,
                        handled,
                    };
                    let options = RunnerOptions::default().batch_events(16).page_events(64);
                    ProjectionRunner::start(store, projection, sink, options).await
                }
            })
            .unwrap();
            let _ = ready.send(leased.watch());
            let _ = stop_requested.await;
            leased.stop().await;
            let _ = done.send(());
        });
        Node {
            name,
            state: state.await.unwrap(),
            runtime: Some(runtime),
            stop: Some(stop),
            stopped: Some(stopped),
        }
    }

    fn alive(&self) -> bool {
        self.runtime.is_some()
    }

    fn holding(&self) -> bool {
        self.alive() && matches!(*self.state.borrow(), LeaseState::Holding { .. })
    }

    /// Kills the node as a crash would: every task dropped where it stands, no release.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Stops the node cleanly: the runner commits and the lease is released.
    async fn stop(&mut self) {
        if let (Some(stop), Some(stopped)) = (self.stop.take(), self.stopped.take()) {
            let _ = stop.send(());
            let _ = stopped.await;
        }
        self.kill();
    }
}

/// Waits until some live node holds the lease; answers its index.
async fn holder(nodes: &Arc<Mutex<Vec<Node>>>, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        if let Some(i) = nodes.lock().unwrap().iter().position(Node::holding) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no node took the lease within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn checkpoint(store: &strata_postgres::PostgresStore) -> Option<Position> {
    store
        .sink()
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .find(|(projection, _)| projection == "balances")
        .map(|(_, position)| position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_replaced_and_every_event_is_applied_once() {
    let url = database("failover").await;
    let backend = connect_to_log_after_first_event(&url).await;
    let writer = Store::from_backend(backend.clone());
    for i in 1..50 {
        deposit(&writer, i, ACCOUNTS).await;
    }
    let terms = Arc::new(Mutex::new(Vec::new()));
    let handled = Handled::default();
    let mut started = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        started.push(Node::start(name, &url, &terms, &handled).await);
    }
    let nodes = Arc::new(Mutex::new(started));

    // Events keep coming during the whole test.
    let appending = Arc::new(AtomicBool::new(true));
    let appender = tokio::spawn({
        let (writer, appending) = (writer.clone(), appending.clone());
        async move {
            let mut i = 50;
            while appending.load(Ordering::SeqCst) {
                deposit(&writer, i, ACCOUNTS).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            i
        }
    });
    // Samples which nodes hold the lease: never two at once.
    let overlaps = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (nodes, overlaps, sampling) = (nodes.clone(), overlaps.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::SeqCst) {
                let holders = nodes.lock().unwrap().iter().filter(|n| n.holding()).count();
                if holders > 1 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    let bound = TTL + options("x").retry_every + Duration::from_secs(1);
    let mut takeovers = Vec::new();
    let mut first = holder(&nodes, Duration::from_secs(10)).await;
    for _kill in 0..2 {
        // Let the holder make progress, then kill it in the middle of its work.
        let before = checkpoint(&backend).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while checkpoint(&backend).await <= before {
            assert!(Instant::now() < deadline, "the holder makes no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed_at = Instant::now();
        let killed = {
            let mut nodes = nodes.lock().unwrap();
            nodes[first].kill();
            nodes[first].name
        };
        let next = holder(&nodes, Duration::from_secs(15)).await;
        let took = killed_at.elapsed();
        eprintln!(
            "{killed} killed; {} took over after {took:?} (bound {bound:?})",
            nodes.lock().unwrap()[next].name
        );
        takeovers.push(took);
        assert!(took <= bound, "takeover took {took:?}, more than {bound:?}");
        first = next;
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    appending.store(false, Ordering::SeqCst);
    let appended = appender.await.unwrap();
    let last = writer.head().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(&backend).await < Some(last) {
        assert!(Instant::now() < deadline, "the last node does not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    let survivor = nodes.lock().unwrap().iter().position(Node::alive).unwrap();
    let mut survivor = nodes.lock().unwrap().remove(survivor);
    survivor.stop().await;

    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two nodes held the lease at once"
    );
    // Exactly once: the handler refuses a duplicate or a gap, and the result is the
    // serial rebuild's.
    let expected = serial_rebuild(&writer).await;
    assert_eq!(expected.len() as u64, ACCOUNTS);
    let total: u64 = expected
        .values()
        .map(|balance| balance["deposits"].as_u64().unwrap())
        .sum();
    assert_eq!(total, appended);
    assert_eq!(backend.sink().scan("balances").await.unwrap(), expected);

    // Three terms (one per node), epochs increasing; each later term resumed from the
    // checkpoint its predecessor left, and applied nothing at or below it.
    let terms = terms.lock().unwrap().clone();
    assert_eq!(terms.len(), 3, "{terms:?}");
    let handled = handled.lock().unwrap().clone();
    for pair in terms.windows(2) {
        assert!(pair[0].epoch < pair[1].epoch, "{terms:?}");
        assert_ne!(pair[0].node, pair[1].node);
        let resumed_at = pair[1]
            .checkpoint
            .expect("the killed holder committed nothing");
        assert!(pair[1].checkpoint > pair[0].checkpoint, "{terms:?}");
        let redone = handled
            .iter()
            .filter(|(node, epoch, position)| {
                *node == pair[1].node && *epoch == pair[1].epoch && *position <= resumed_at
            })
            .count();
        assert_eq!(
            redone, 0,
            "{} reprocessed events before its checkpoint",
            pair[1].node
        );
    }
    eprintln!("takeovers after a kill: {takeovers:?} (bound {bound:?})");
    for mut node in std::mem::take(&mut *nodes.lock().unwrap()) {
        node.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_lease_was_taken_over_cannot_commit() {
    let url = database("fenced_runner").await;
    let backend = connect_to_log_after_first_event(&url).await;
    let store = Store::from_backend(backend.clone());
    let leases = backend.leases();
    let ttl = Duration::from_millis(500);
    let a = leases.acquire(LEASE, "a", ttl).await.unwrap().unwrap();
    // A node that stalled (nothing renews its lease) while its runner goes on.
    let options = RunnerOptions::default();
    let runner = ProjectionRunner::start(
        store.clone(),
        Balances,
        backend.sink().fenced(&a),
        options.clone(),
    )
    .await
    .unwrap();
    let first = deposit(&store, 1, ACCOUNTS).await;
    runner
        .wait_for(first, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(checkpoint(&backend).await, Some(first));
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let b = leases
        .acquire(LEASE, "b", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let later = deposit(&store, 2, ACCOUNTS).await;
    // a's runner applies the event, but its commit is refused and it stops.
    assert!(runner
        .wait_for(later, Duration::from_secs(10))
        .await
        .is_err());
    let error = runner.stop().await.unwrap_err();
    assert!(
        matches!(
            &error,
            RunError::Sink {
                source: strata::projection::SinkError::Fenced { .. },
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(checkpoint(&backend).await, Some(first));
    // The new holder carries on from a's checkpoint.
    let runner =
        ProjectionRunner::start(store.clone(), Balances, backend.sink().fenced(&b), options)
            .await
            .unwrap();
    runner
        .wait_for(later, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(runner.stop().await.unwrap().counts.handled, 1);
    assert_eq!(
        backend.sink().scan("balances").await.unwrap(),
        serial_rebuild(&store).await
    );
}

/// The writer's backend, once the log has an event and its head watcher has read it.
async fn connect_to_log_after_first_event(url: &str) -> Arc<strata_postgres::PostgresStore> {
    let first = support::connect(url).await;
    deposit(&Store::from_backend(first), 0, ACCOUNTS).await;
    connect_to_log(url).await
}
