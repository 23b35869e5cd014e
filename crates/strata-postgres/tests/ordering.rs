//! The global order under out-of-order commits: many writers whose transactions pause
//! for random times before committing, several subscribers. Every subscriber must see
//! every event exactly once, in the same order as every other subscriber and as a read
//! of the whole log.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::{EventData, ExpectedRevision, Filter, ReadAllOptions, Store, SubscribeFrom};
use strata_postgres::{PostgresOptions, PostgresStore};

const WRITERS: usize = 12;
const APPENDS: usize = 25;
const SUBSCRIBERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_never_skip_an_event_that_commits_late() {
    let url = strata_postgres::cluster::fresh_database("ordering")
        .await
        .expect("PostgreSQL is needed for these tests");
    // A deterministic spread of pauses from 0 to 30 ms.
    let counter = Arc::new(AtomicU64::new(0x2545_f491));
    let delay = {
        let counter = counter.clone();
        Arc::new(move || {
            let n = counter.fetch_add(0x9E37_79B9, Ordering::Relaxed);
            Duration::from_millis((n >> 7) % 31)
        })
    };
    let options = PostgresOptions {
        append_delay: Some(delay),
        pool_size: WRITERS + 4,
        // As many concurrent append transactions as writers: they commit out of order.
        append_workers: WRITERS,
        ..PostgresOptions::default()
    };
    let store = Store::from_backend(Arc::new(
        PostgresStore::connect(&url, options).await.unwrap(),
    ));
    let filter = Filter::new().category("gap");
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut subscription = store.subscribe_all(SubscribeFrom::Start, filter.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < WRITERS * APPENDS * 2 {
                    let event =
                        tokio::time::timeout(Duration::from_secs(60), subscription.next_event())
                            .await
                            .expect("subscriber stalled")
                            .unwrap();
                    seen.push((event.position, event.id));
                }
                seen
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..APPENDS {
                    let events = vec![
                        EventData::json("E", &i).unwrap(),
                        EventData::json("E", &i).unwrap(),
                    ];
                    store
                        .append(
                            format!("gap-{}", (w + i) % 5),
                            ExpectedRevision::Any,
                            events,
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let mut sequences = Vec::new();
    for subscriber in subscribers {
        sequences.push(subscriber.await.unwrap());
    }
    let log: Vec<_> = store
        .read_all(ReadAllOptions::forwards().filter(filter))
        .await
        .unwrap()
        .iter()
        .map(|e| (e.position, e.id))
        .collect();
    assert_eq!(log.len(), WRITERS * APPENDS * 2);
    assert!(
        log.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase"
    );
    assert_eq!(
        log.iter().map(|e| e.1).collect::<HashSet<_>>().len(),
        log.len(),
        "no duplicates"
    );
    for sequence in &sequences {
        assert_eq!(
            sequence, &log,
            "every subscriber saw the log exactly, in its order"
        );
    }
}
