#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::*;
use crate::lease::{LeaseInfo, MemoryLeases};

const TTL: Duration = Duration::from_secs(3);

/// One term of work as it happened: which node, which epoch, when it started and stopped.
#[derive(Clone, Debug)]
struct Term {
    node: &'static str,
    epoch: u64,
    started: Instant,
    stopped: Option<Instant>,
}

type Log = Arc<Mutex<Vec<Term>>>;

struct TestWork {
    log: Log,
    index: usize,
    /// Resolves when the test makes the work fail.
    fail: Option<oneshot::Receiver<()>>,
}

#[async_trait]
impl LeasedWork for TestWork {
    type Error = String;

    async fn ended(&mut self) {
        match &mut self.fail {
            Some(fail) => {
                let _ = fail.await;
                self.fail = None;
            }
            None => std::future::pending().await,
        }
    }

    async fn stop(self) -> Result<(), String> {
        self.log.lock().unwrap()[self.index].stopped = Some(Instant::now());
        Ok(())
    }
}

/// Starts a supervisor for `node` whose work logs its terms into `log`; each term's work
/// fails when the sender in `failures` (if any is queued) fires.
fn supervise<L: Leases>(
    leases: Arc<L>,
    node: &'static str,
    log: &Log,
    failures: Arc<Mutex<Vec<oneshot::Receiver<()>>>>,
) -> LeaseSupervisor {
    let log = log.clone();
    let options = LeaseOptions::new("work", node, TTL);
    LeaseSupervisor::start(leases, options, move |lease: Lease| {
        let log = log.clone();
        let fail = failures.lock().unwrap().pop();
        async move {
            let mut terms = log.lock().unwrap();
            terms.push(Term {
                node,
                epoch: lease.epoch,
                started: Instant::now(),
                stopped: None,
            });
            let index = terms.len() - 1;
            Ok::<_, String>(TestWork {
                log: log.clone(),
                index,
                fail,
            })
        }
    })
    .unwrap()
}

async fn wait_until(supervisor: &LeaseSupervisor, wanted: impl Fn(&LeaseState) -> bool) {
    let mut state = supervisor.watch();
    timeout(TTL * 10, state.wait_for(|state| wanted(state)))
        .await
        .expect("state not reached in time")
        .unwrap();
}

/// No two terms overlap in time, and epochs increase from term to term.
fn assert_serial(log: &Log) {
    let terms = log.lock().unwrap().clone();
    for pair in terms.windows(2) {
        let stopped = pair[0].stopped.expect("an earlier term is still running");
        assert!(stopped <= pair[1].started, "terms overlap: {pair:?}");
        assert!(
            pair[0].epoch < pair[1].epoch,
            "epochs do not increase: {pair:?}"
        );
    }
}

fn no_failures() -> Arc<Mutex<Vec<oneshot::Receiver<()>>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[tokio::test(start_paused = true)]
async fn lease_supervisor_runs_work_on_one_node_and_hands_over_on_stop() {
    let leases = Arc::new(MemoryLeases::new());
    let log = Log::default();
    let a = supervise(leases.clone(), "a", &log, no_failures());
    wait_until(&a, |s| *s == LeaseState::Holding { epoch: 1 }).await;
    let b = supervise(leases.clone(), "b", &log, no_failures());
    // Several renewal periods later, a still holds it and b stands by.
    sleep(TTL * 3).await;
    assert_eq!(a.state(), LeaseState::Holding { epoch: 1 });
    assert_eq!(b.state(), LeaseState::Standby);
    assert_eq!(log.lock().unwrap().len(), 1);

    let stopped = Instant::now();
    a.stop().await;
    wait_until(&b, |s| *s == LeaseState::Holding { epoch: 2 }).await;
    // Released, so b took it at its next attempt, not after the TTL.
    assert!(Instant::now() - stopped <= LeaseOptions::new("w", "b", TTL).retry_every);
    let terms = log.lock().unwrap().clone();
    assert_eq!(terms.len(), 2);
    assert_eq!((terms[0].node, terms[1].node), ("a", "b"));
    assert_serial(&log);
    b.stop().await;
    assert!(log.lock().unwrap()[1].stopped.is_some());
    assert_eq!(
        leases.current("work").await.unwrap().unwrap().expires_in,
        None
    );
}

/// Leases whose store becomes unreachable for one holder when the test says so, and
/// that remember when each successful acquire or renewal was sent.
struct Flaky {
    inner: MemoryLeases,
    holder: &'static str,
    broken: AtomicBool,
    /// When broken, answer "held by someone else" instead of failing.
    refuse: AtomicBool,
    granted: Mutex<Vec<Instant>>,
}

#[async_trait]
impl Leases for Flaky {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        if holder == self.holder && self.broken.load(Ordering::SeqCst) {
            if self.refuse.load(Ordering::SeqCst) {
                return Ok(None);
            }
            return Err(LeaseError::Storage(crate::StorageError::Closed));
        }
        let sent = Instant::now();
        let lease = self.inner.acquire(name, holder, ttl).await?;
        if lease.is_some() && holder == self.holder {
            self.granted.lock().unwrap().push(sent);
        }
        Ok(lease)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        if lease.holder == self.holder && self.broken.load(Ordering::SeqCst) {
            return Err(LeaseError::Storage(crate::StorageError::Closed));
        }
        self.inner.release(lease).await
    }

    async fn current(&self, name: &str) -> Result<Option<LeaseInfo>, LeaseError> {
        self.inner.current(name).await
    }
}

fn flaky(refuse: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: MemoryLeases::new(),
        holder: "a",
        broken: AtomicBool::new(false),
        refuse: AtomicBool::new(refuse),
        granted: Mutex::new(Vec::new()),
    })
}

#[tokio::test(start_paused = true)]
async fn lease_supervisor_stops_the_work_before_the_lease_can_expire() {
    let leases = flaky(false);
    let log = Log::default();
    let a = supervise(leases.clone(), "a", &log, no_failures());
    wait_until(&a, |s| matches!(s, LeaseState::Holding { .. })).await;
    let b = supervise(leases.clone(), "b", &log, no_failures());
    sleep(TTL * 2 + Duration::from_millis(123)).await;
    leases.broken.store(true, Ordering::SeqCst);

    wait_until(&b, |s| matches!(s, LeaseState::Holding { .. })).await;
    let last_renewal_sent = *leases.granted.lock().unwrap().last().unwrap();
    let terms = log.lock().unwrap().clone();
    assert_eq!(terms.len(), 2, "{terms:?}");
    let a_stopped = terms[0].stopped.expect("a's work still runs");
    // a stopped its work by its deadline minus the margin, measured from when its last
    // successful renewal was sent; b started only after the lease expired.
    let options = LeaseOptions::new("w", "a", TTL);
    assert!(a_stopped <= last_renewal_sent + TTL - options.stop_margin);
    assert!(
        a_stopped > last_renewal_sent + options.renew_every,
        "a gave up before retrying"
    );
    assert!(terms[1].started >= last_renewal_sent + TTL);
    assert_eq!(a.state(), LeaseState::Standby);
    assert_serial(&log);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lease_supervisor_stops_the_work_at_once_when_a_renewal_is_refused() {
    let leases = flaky(true);
    let log = Log::default();
    let a = supervise(leases.clone(), "a", &log, no_failures());
    wait_until(&a, |s| matches!(s, LeaseState::Holding { .. })).await;
    sleep(TTL / 2).await;
    leases.broken.store(true, Ordering::SeqCst);
    let broken_at = Instant::now();
    wait_until(&a, |s| *s == LeaseState::Standby).await;
    let stopped = log.lock().unwrap()[0].stopped.expect("the work still runs");
    // At the next renewal, not at the deadline.
    let options = LeaseOptions::new("w", "a", TTL);
    assert!(stopped <= broken_at + options.renew_every);
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lease_supervisor_ends_the_term_when_the_work_fails() {
    let leases = Arc::new(MemoryLeases::new());
    let log = Log::default();
    let (fail, failed) = oneshot::channel();
    let a = supervise(
        leases.clone(),
        "a",
        &log,
        Arc::new(Mutex::new(vec![failed])),
    );
    wait_until(&a, |s| *s == LeaseState::Holding { epoch: 1 }).await;
    let b = supervise(leases.clone(), "b", &log, no_failures());
    sleep(TTL).await;
    fail.send(()).unwrap();
    // a released the lease and paused, so b took it over.
    wait_until(&b, |s| *s == LeaseState::Holding { epoch: 2 }).await;
    assert_eq!(a.state(), LeaseState::Standby);
    assert_serial(&log);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn lease_options_that_cannot_keep_a_lease_are_refused() {
    let leases = Arc::new(MemoryLeases::new());
    let options = LeaseOptions::new("work", "a", TTL).renew_every(TTL);
    let started = LeaseSupervisor::start(leases, options, |_lease: Lease| async {
        Err::<TestWork, _>("never started")
    });
    assert!(matches!(started, Err(LeaseError::InvalidOptions { .. })));
}
