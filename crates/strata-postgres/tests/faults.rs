//! Faults: a connection lost in the middle of an append, and a PostgreSQL crash and
//! restart under load. No acknowledged event is lost, none is written twice, clients get
//! clear errors while the server is down and recover by themselves.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::{
    EventData, ExpectedRevision, ReadAllOptions, ReadError, ReadStreamOptions, StorageError, Store,
};
use strata_postgres::cluster::TestCluster;
use strata_postgres::{PostgresOptions, PostgresStore};

fn events(n: usize) -> Vec<EventData> {
    (0..n).map(|i| EventData::json("E", &i).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_connection_breaks_is_retried_exactly_once() {
    let url = strata_postgres::cluster::shared().expect("PostgreSQL is needed for these tests");
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let database = format!("faults_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .unwrap();
    let options = PostgresOptions {
        append_delay: Some(Arc::new(|| Duration::from_millis(400))),
        ..PostgresOptions::default()
    };
    let url = url.replace("/postgres", &format!("/{database}"));
    let store = Store::from_backend(Arc::new(
        PostgresStore::connect(&url, options).await.unwrap(),
    ));
    let batch = events(3);
    let append = {
        let store = store.clone();
        let batch = batch.clone();
        tokio::spawn(async move {
            store
                .append("order-1", ExpectedRevision::NoStream, batch)
                .await
        })
    };
    // Kill the append's connection while its transaction waits to commit.
    let mut killed = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND (state = 'idle in transaction'
                   OR (state = 'active' AND query LIKE '%strata_append_groups(%'))",
                &[&database],
            )
            .await
            .unwrap();
        killed = rows.len();
        if killed > 0 {
            break;
        }
    }
    assert_eq!(killed, 1, "the append's transaction was found and killed");
    let result = append
        .await
        .unwrap()
        .expect("the append is retried and succeeds");
    assert_eq!(result.first_revision, 0);
    let recorded = store
        .read_stream("order-1", ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(
        recorded.iter().map(|e| e.id).collect::<Vec<_>>(),
        batch.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(
        recorded.iter().map(|e| e.position).collect::<Vec<_>>(),
        result.positions
    );
}

#[test]
fn a_crash_and_restart_under_load_loses_nothing_acknowledged() {
    let mut cluster = TestCluster::start().expect("PostgreSQL is needed for these tests");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = runtime
        .block_on(strata_postgres::connect(cluster.url()))
        .unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            runtime.spawn(async move {
                let mut failures = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch = events(2);
                    match store
                        .append(format!("load-{w}"), ExpectedRevision::Any, batch.clone())
                        .await
                    {
                        Ok(_) => acknowledged
                            .lock()
                            .unwrap()
                            .extend(batch.iter().map(|e| e.id)),
                        Err(_) => failures += 1,
                    }
                }
                failures
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    cluster.crash().unwrap();
    let before_restart = acknowledged.lock().unwrap().len();
    // While the server is down, reads fail with a clear, transient error.
    let down = runtime.block_on(store.read_stream("load-0", ReadStreamOptions::forwards()));
    match down {
        Err(ReadError::Storage(StorageError::Backend {
            transient: true, ..
        })) => {}
        other => panic!("expected a transient backend error while down, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(700));
    cluster.start_again().unwrap();
    // The writers recover by themselves.
    let mut waited = 0;
    while acknowledged.lock().unwrap().len() < before_restart + 50 && waited < 300 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for writer in writers {
        failures += runtime.block_on(writer).unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= before_restart + 50,
        "appends succeed again after the restart"
    );
    let all = runtime
        .block_on(store.read_all(ReadAllOptions::forwards()))
        .unwrap();
    let present: HashSet<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(present.len(), all.len(), "no event was written twice");
    let lost = acknowledged
        .iter()
        .filter(|id| !present.contains(id))
        .count();
    assert_eq!(lost, 0, "every acknowledged event survived the crash");
    assert!(
        failures <= 4,
        "appends retry through a short outage ({failures} failed)"
    );
}
