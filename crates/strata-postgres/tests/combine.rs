//! Group commit: concurrent appends that share one call stay independent and all or
//! nothing. Many callers race on the same streams with exact expected revisions while
//! each call is held open (so the queue fills and calls carry many appends): exactly one
//! caller wins each race, a loser writes nothing in any of its streams, and winners and
//! losers of different races do not affect each other.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use strata::{
    AppendError, AppendRequest, EventData, ExpectedRevision, ReadError, ReadStreamOptions, Store,
};
use strata_postgres::{PostgresOptions, PostgresStore};

const RACES: usize = 8;
const RIVALS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_sharing_a_call_stay_all_or_nothing() {
    let url = strata_postgres::cluster::fresh_database("combine")
        .await
        .expect("PostgreSQL is needed for these tests");
    let options = PostgresOptions {
        // Each call stays open 30 ms: the others queue behind it and share the next one.
        append_delay: Some(Arc::new(|| Duration::from_millis(30))),
        append_workers: 1,
        ..PostgresOptions::default()
    };
    let store = Store::from_backend(Arc::new(
        PostgresStore::connect(&url, options).await.unwrap(),
    ));
    let event = || EventData::json("E", &serde_json::json!({})).unwrap();
    for race in 0..RACES {
        store
            .append(
                format!("race-{race}"),
                ExpectedRevision::NoStream,
                vec![event()],
            )
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for rival in 0..RACES * RIVALS {
        let store = store.clone();
        let race = rival % RACES;
        tasks.push(tokio::spawn(async move {
            let requests = vec![
                AppendRequest::new(
                    format!("race-{race}"),
                    ExpectedRevision::Exact(0),
                    vec![event()],
                ),
                AppendRequest::new(
                    format!("own-{rival}"),
                    ExpectedRevision::NoStream,
                    vec![event(), event()],
                ),
            ];
            (race, rival, store.append_multi(requests).await)
        }));
    }
    let mut winners = vec![Vec::new(); RACES];
    for task in tasks {
        let (race, rival, outcome) = task.await.unwrap();
        match outcome {
            Ok(results) => {
                assert_eq!(results[0].first_revision, 1);
                assert_eq!(results[1].first_revision, 0);
                winners[race].push(rival);
            }
            Err(AppendError::WrongExpectedRevision { stream, .. }) => {
                assert_eq!(stream, format!("race-{race}"));
                // All or nothing: the loser's own stream was not written.
                match store
                    .read_stream(&format!("own-{rival}"), ReadStreamOptions::forwards())
                    .await
                {
                    Err(ReadError::StreamNotFound { .. }) => {}
                    other => panic!("a losing append wrote its other stream: {other:?}"),
                }
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    for (race, winners) in winners.iter().enumerate() {
        assert_eq!(
            winners.len(),
            1,
            "race {race}: exactly one winner, got {winners:?}"
        );
        let events = store
            .read_stream(&format!("race-{race}"), ReadStreamOptions::forwards())
            .await
            .unwrap();
        assert_eq!(events.len(), 2);
        let own = store
            .read_stream(
                &format!("own-{}", winners[0]),
                ReadStreamOptions::forwards(),
            )
            .await
            .unwrap();
        assert_eq!(own.len(), 2);
    }
}
