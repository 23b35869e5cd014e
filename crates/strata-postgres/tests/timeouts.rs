//! Time limits of the PostgreSQL backend (issue 11): a caller waits a bounded time for a
//! pooled connection and then gets `StorageError::Timeout` instead of hanging behind
//! slow work, and read statements are cancelled after the read statement timeout while
//! appends, which must not be cut short, are not bounded by it.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::{
    AppendError, EventData, ExpectedRevision, ReadAllOptions, ReadError, ReadStreamOptions,
    StorageError, Store, StreamMetadata,
};
use strata_postgres::{PostgresOptions, PostgresStore};
use tokio_postgres::{Client, NoTls};

/// Longest a test waits for something that must happen (a guard against hangs, not a
/// performance assertion).
const HANG_GUARD: Duration = Duration::from_secs(30);

fn events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| EventData::json("Tested", &serde_json::json!({ "i": i })).unwrap())
        .collect()
}

/// A plain connection of the test's own, outside the store's pool.
async fn side_connection(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Waits until a backend of this database runs a statement containing `needle`, in
/// state `wait_event_type` (`None`: any).
async fn wait_for_statement(observer: &Client, needle: &str, wait_event_type: Option<&str>) {
    let found = async {
        loop {
            let row = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND state = 'active' AND position($1 in query) > 0
                       AND ($2::text IS NULL OR wait_event_type = $2)",
                    &[&needle, &wait_event_type],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, found)
        .await
        .unwrap_or_else(|_| panic!("no statement containing {needle:?} started"));
}

fn is_timeout(error: &StorageError, limit: Duration) -> bool {
    matches!(error, StorageError::Timeout { limit: l, .. } if *l == limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_fails_with_a_typed_timeout_instead_of_hanging() {
    let url = strata_postgres::cluster::fresh_database("pool_wait")
        .await
        .expect("PostgreSQL is needed for these tests");
    // The pause inside the next combined append call, in milliseconds.
    let hold_ms = Arc::new(AtomicU64::new(0));
    let delay = {
        let hold_ms = hold_ms.clone();
        Arc::new(move || Duration::from_millis(hold_ms.swap(0, Ordering::SeqCst)))
    };
    let wait = Duration::from_millis(200);
    let options = PostgresOptions {
        pool_size: 1,
        pool_wait_timeout: wait,
        append_delay: Some(delay),
        ..PostgresOptions::default()
    };
    let store = Store::from_backend(Arc::new(
        PostgresStore::connect(&url, options).await.unwrap(),
    ));
    store
        .append("busy-1", ExpectedRevision::NoStream, events(2))
        .await
        .unwrap();
    // An append that holds the only connection for a long time.
    hold_ms.store(5_000, Ordering::SeqCst);
    let holder = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append("busy-2", ExpectedRevision::NoStream, events(1))
                .await
        })
    };
    let observer = side_connection(&url).await;
    wait_for_statement(&observer, "strata_append_groups", None).await;

    let read = tokio::time::timeout(
        HANG_GUARD,
        store.read_stream("busy-1", ReadStreamOptions::forwards()),
    )
    .await
    .expect("the read does not hang");
    match read {
        Err(ReadError::Storage(error)) => assert!(is_timeout(&error, wait), "{error:?}"),
        other => panic!("a read with no free connection times out, got {other:?}"),
    }
    // Metadata writes take their own connection from the pool (plain appends queue
    // behind the holder in the group-commit worker).
    let write = tokio::time::timeout(
        HANG_GUARD,
        store.set_stream_metadata(
            "busy-1",
            ExpectedRevision::Any,
            &StreamMetadata {
                max_count: Some(5),
                ..StreamMetadata::default()
            },
        ),
    )
    .await
    .expect("the write does not hang");
    match write {
        Err(AppendError::Storage(error)) => assert!(is_timeout(&error, wait), "{error:?}"),
        other => panic!("a write with no free connection times out, got {other:?}"),
    }
    assert!(
        !holder.is_finished(),
        "the timeouts came while the connection was still taken"
    );
    tokio::time::timeout(HANG_GUARD, holder)
        .await
        .expect("the holder finishes")
        .unwrap()
        .unwrap();
    // The pool serves again once the connection is back.
    assert_eq!(
        store
            .read_stream("busy-1", ReadStreamOptions::forwards())
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_cancelled_after_the_statement_timeout_and_appends_are_not() {
    let url = strata_postgres::cluster::fresh_database("statement_timeout")
        .await
        .expect("PostgreSQL is needed for these tests");
    let limit = Duration::from_millis(300);
    let options = PostgresOptions {
        // One connection: the append below runs on the connection the reads used.
        pool_size: 1,
        read_statement_timeout: limit,
        ..PostgresOptions::default()
    };
    let store = Store::from_backend(Arc::new(
        PostgresStore::connect(&url, options).await.unwrap(),
    ));
    store
        .append("slow-1", ExpectedRevision::NoStream, events(3))
        .await
        .unwrap();
    // Someone holds the events table: every statement touching it waits.
    let mut locker = side_connection(&url).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE strata_events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let read = tokio::time::timeout(
        HANG_GUARD,
        store.read_stream("slow-1", ReadStreamOptions::forwards()),
    )
    .await
    .expect("the read is cancelled, not left waiting");
    match read {
        Err(ReadError::Storage(error)) => assert!(is_timeout(&error, limit), "{error:?}"),
        other => panic!("a stream read past the statement timeout fails, got {other:?}"),
    }
    let read = tokio::time::timeout(HANG_GUARD, store.read_all(ReadAllOptions::forwards()))
        .await
        .expect("the read is cancelled, not left waiting");
    match read {
        Err(ReadError::Storage(error)) => assert!(is_timeout(&error, limit), "{error:?}"),
        other => panic!("a read of $all past the statement timeout fails, got {other:?}"),
    }

    // An append waiting on the lock for longer than the read timeout is not cancelled.
    let append = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append("slow-1", ExpectedRevision::Exact(2), events(1))
                .await
        })
    };
    let observer = side_connection(&url).await;
    wait_for_statement(&observer, "strata_append_groups", Some("Lock")).await;
    tokio::time::sleep(limit * 3).await;
    lock.rollback().await.unwrap();
    let appended = tokio::time::timeout(HANG_GUARD, append)
        .await
        .expect("the append finishes")
        .unwrap();
    assert!(appended.is_ok(), "{appended:?}");
    let all = store
        .read_stream("slow-1", ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
}
