//! PostgresSink: output and checkpoint in one transaction (an injected failure between
//! them leaves neither), a runner resuming from the checkpoint after a restart, reset,
//! fencing by a lease, and a clear error on a current-thread runtime.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use strata::lease::Leases;
use strata::projection::{
    ProjectionError, ProjectionRunner, ReadModel, RunnerOptions, Sink, SinkError,
};
use strata::{Position, Store};
use strata_postgres::SinkRuntimeError;

use support::{connect, connect_to_log, database, deposit, serial_rebuild, Balances};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_output_and_checkpoint_leaves_neither() {
    let backend = connect(&database("sink_atomic").await).await;
    let sink = backend.sink();
    let mut tx = sink.begin("p").unwrap();
    tx.put("a", json!(1));
    tx.put("b", json!({"x": [1, 2]}));
    sink.commit("p", tx, Some(Position(5))).unwrap();
    assert_eq!(
        sink.get("p", "b").await.unwrap(),
        Some(json!({"x": [1, 2]}))
    );
    assert_eq!(sink.checkpoint("p").unwrap(), Some(Position(5)));

    let calls = Arc::new(AtomicUsize::new(0));
    let failing = sink.with_commit_fault({
        let calls = calls.clone();
        Arc::new(move |_projection: &str| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(SinkError::Refused {
                reason: "injected".into(),
            })
        })
    });
    let mut tx = failing.begin("p").unwrap();
    // The transaction reads the committed documents.
    assert_eq!(tx.get("a").unwrap(), Some(&json!(1)));
    tx.put("a", json!(2));
    tx.put("c", json!(3));
    tx.delete("b");
    let error = failing.commit("p", tx, Some(Position(9))).unwrap_err();
    assert!(matches!(error, SinkError::Refused { .. }), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the fault was not reached");
    // Neither the output nor the checkpoint of the failed commit is visible.
    let snapshot = ReadModel::snapshot(&sink, "p").unwrap();
    assert_eq!(snapshot.checkpoint, Some(Position(5)));
    assert_eq!(
        snapshot.rows.into_iter().collect::<Vec<_>>(),
        vec![("a".into(), json!(1)), ("b".into(), json!({"x": [1, 2]}))]
    );
    // The same commit without the fault goes through whole.
    let mut tx = sink.begin("p").unwrap();
    tx.put("a", json!(2));
    tx.delete("b");
    sink.commit("p", tx, Some(Position(9))).unwrap();
    assert_eq!(sink.scan("p").await.unwrap().len(), 1);
    assert_eq!(sink.get_as::<i64>("p", "a").await.unwrap(), Some(2));
    assert_eq!(sink.checkpoint("p").unwrap(), Some(Position(9)));
    // A commit without a checkpoint keeps the old one.
    let mut tx = sink.begin("p").unwrap();
    tx.put("d", json!(4));
    sink.commit("p", tx, None).unwrap();
    assert_eq!(sink.checkpoint("p").unwrap(), Some(Position(9)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_resumes_from_the_checkpoint_after_a_restart() {
    let url = database("sink_resume").await;
    let writer = Store::from_backend(connect(&url).await);
    for i in 0..300 {
        deposit(&writer, i, 7).await;
    }
    let first = {
        let backend = connect_to_log(&url).await;
        let store = Store::from_backend(backend.clone());
        let options = RunnerOptions::default().batch_events(64).page_events(50);
        let runner = ProjectionRunner::start(store.clone(), Balances, backend.sink(), options)
            .await
            .unwrap();
        runner
            .wait_for(writer.head().unwrap(), Duration::from_secs(30))
            .await
            .unwrap();
        runner.stop().await.unwrap()
    };
    assert_eq!(first.counts.handled, 300);
    let mut last = Position(0);
    for i in 300..420 {
        last = deposit(&writer, i, 7).await;
    }
    // A new process: another pool, the same database.
    let backend = connect_to_log(&url).await;
    let sink = backend.sink();
    assert_eq!(sink.checkpoint("balances").unwrap(), first.checkpoint);
    let store = Store::from_backend(backend.clone());
    let runner = ProjectionRunner::start(store, Balances, sink.clone(), RunnerOptions::default())
        .await
        .unwrap();
    runner
        .wait_for(last, Duration::from_secs(30))
        .await
        .unwrap();
    let second = runner.stop().await.unwrap();
    assert_eq!(
        second.counts.handled, 120,
        "it did not resume from the checkpoint"
    );
    assert_eq!(
        sink.scan("balances").await.unwrap(),
        serial_rebuild(&writer).await
    );
    assert_eq!(
        sink.checkpoints().await.unwrap(),
        vec![("balances".to_owned(), second.checkpoint.unwrap())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_removes_one_projections_output_and_checkpoint() {
    let backend = connect(&database("sink_reset").await).await;
    let sink = backend.sink();
    for projection in ["p", "q"] {
        let mut tx = sink.begin(projection).unwrap();
        tx.put("k", json!(projection));
        sink.commit(projection, tx, Some(Position(3))).unwrap();
    }
    sink.reset("p").unwrap();
    assert_eq!(sink.checkpoint("p").unwrap(), None);
    assert!(sink.scan("p").await.unwrap().is_empty());
    assert_eq!(sink.get("q", "k").await.unwrap(), Some(json!("q")));
    assert_eq!(
        sink.checkpoints().await.unwrap(),
        vec![("q".to_owned(), Position(3))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_sink_cannot_write_once_its_lease_is_taken_over() {
    let backend = connect(&database("sink_fenced").await).await;
    let leases = backend.leases();
    let ttl = Duration::from_millis(400);
    let a = leases.acquire("proj", "a", ttl).await.unwrap().unwrap();
    let sink_a = backend.sink().fenced(&a);
    let mut tx = sink_a.begin("p").unwrap();
    tx.put("k", json!("a"));
    sink_a.commit("p", tx, Some(Position(1))).unwrap();

    // Expired but not yet taken over: already refused.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let mut tx = sink_a.begin("p").unwrap();
    tx.put("k", json!("a, expired"));
    let error = sink_a.commit("p", tx, Some(Position(2))).unwrap_err();
    assert!(
        matches!(&error, SinkError::Fenced { lease, holder, epoch } if lease == "proj" && holder == "a" && *epoch == 1),
        "{error}"
    );

    let b = leases
        .acquire("proj", "b", ttl * 10)
        .await
        .unwrap()
        .unwrap();
    let sink_b = backend.sink().fenced(&b);
    let mut tx = sink_b.begin("p").unwrap();
    tx.put("k", json!("b"));
    sink_b.commit("p", tx, Some(Position(3))).unwrap();

    let mut tx = sink_a.begin("p").unwrap();
    tx.put("k", json!("a, stale"));
    assert!(matches!(
        sink_a.commit("p", tx, Some(Position(4))),
        Err(SinkError::Fenced { .. })
    ));
    assert!(matches!(sink_a.reset("p"), Err(SinkError::Fenced { .. })));
    // a acquiring again later gets a new epoch: its old sink stays fenced.
    assert!(leases.release(&b).await.unwrap());
    let a2 = leases.acquire("proj", "a", ttl).await.unwrap().unwrap();
    assert_eq!(a2.epoch, 3);
    assert!(matches!(sink_a.reset("p"), Err(SinkError::Fenced { .. })));
    assert_eq!(sink_a.get("p", "k").await.unwrap(), Some(json!("b")));
    assert_eq!(sink_a.checkpoint("p").unwrap(), Some(Position(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_a_fenced_commit_in_flight() {
    let backend = connect(&database("sink_in_flight").await).await;
    let leases = backend.leases();
    let ttl = Duration::from_millis(300);
    let a = leases.acquire("proj", "a", ttl).await.unwrap().unwrap();
    // a's commit checks its lease, then stalls past the lease's expiry before writing
    // the checkpoint and committing.
    let stall_ended = Arc::new(std::sync::Mutex::new(None));
    let slow = backend.sink().fenced(&a).with_commit_fault({
        let stall_ended = stall_ended.clone();
        Arc::new(move |_: &str| {
            std::thread::sleep(ttl * 3);
            *stall_ended.lock().unwrap() = Some(std::time::Instant::now());
            Ok(())
        })
    });
    let commit = tokio::task::spawn_blocking(move || {
        let mut tx = slow.begin("p").unwrap();
        tx.put("k", json!("a"));
        slow.commit("p", tx, Some(Position(7)))
    });
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    // b's takeover of the expired lease waits until a's transaction ends...
    let b = leases.acquire("proj", "b", ttl).await.unwrap().unwrap();
    let taken = std::time::Instant::now();
    let stall_ended = stall_ended
        .lock()
        .unwrap()
        .expect("the takeover did not wait");
    assert!(
        taken > stall_ended,
        "the takeover did not wait for the commit"
    );
    commit.await.unwrap().unwrap();
    // ...so b's term starts from a checkpoint that includes a's last batch.
    assert_eq!(b.epoch, 2);
    let sink_b = backend.sink().fenced(&b);
    assert_eq!(sink_b.checkpoint("p").unwrap(), Some(Position(7)));
    assert_eq!(sink_b.get("p", "k").await.unwrap(), Some(json!("a")));
}

#[tokio::test]
async fn a_current_thread_runtime_gets_a_clear_error_not_a_panic() {
    let backend = connect(&database("sink_flavor").await).await;
    let sink = backend.sink();
    let mut tx = sink.begin("p").unwrap();
    let error = tx.get("k").unwrap_err();
    let ProjectionError::Sink(SinkError::Storage { source, .. }) = &error else {
        panic!("unexpected error: {error}");
    };
    assert_eq!(
        source.downcast_ref::<SinkRuntimeError>(),
        Some(&SinkRuntimeError::CurrentThread)
    );
    tx.put("k", json!(1));
    assert!(matches!(
        sink.commit("p", tx, Some(Position(0))),
        Err(SinkError::Storage { .. })
    ));
    // The async readers work on any runtime.
    assert_eq!(sink.get("p", "k").await.unwrap(), None);
}
