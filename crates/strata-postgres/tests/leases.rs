//! Leases in PostgreSQL: one holder at a time among concurrent contenders, takeover only
//! after expiry (by the database's clock) with a higher epoch, release, and refusal of a
//! renewal by a holder that lost its lease.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::Instant;

use strata::lease::{LeaseError, Leases};
use strata_postgres::{PostgresLeases, PostgresOptions, PostgresStore};

async fn leases(prefix: &str) -> PostgresLeases {
    let url = strata_postgres::cluster::fresh_database(prefix)
        .await
        .expect("PostgreSQL is needed for these tests");
    let options = PostgresOptions {
        pool_size: 12,
        ..PostgresOptions::default()
    };
    PostgresStore::connect(&url, options)
        .await
        .unwrap()
        .leases()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_of_many_concurrent_contenders_gets_the_lease() {
    let leases = leases("lease_contend").await;
    const CONTENDERS: usize = 10;
    for round in 0..20 {
        let name = format!("work-{round}");
        let barrier = Arc::new(Barrier::new(CONTENDERS));
        let attempts: Vec<_> = (0..CONTENDERS)
            .map(|i| {
                let (leases, name, barrier) = (leases.clone(), name.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let holder = format!("node-{i}");
                    leases
                        .acquire(&name, &holder, Duration::from_secs(30))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut granted = Vec::new();
        for attempt in attempts {
            granted.extend(attempt.await.unwrap());
        }
        assert_eq!(granted.len(), 1, "round {round}: {granted:?}");
        assert_eq!(granted[0].epoch, 1);
        // The others keep being refused while the holder renews.
        let holder = granted[0].holder.clone();
        let renewed = leases
            .acquire(&name, &holder, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renewed.epoch, 1);
        let other = if holder == "node-0" {
            "node-1"
        } else {
            "node-0"
        };
        let refused = leases
            .acquire(&name, other, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(refused, None);
        let info = leases.current(&name).await.unwrap().unwrap();
        assert_eq!((info.holder.as_str(), info.epoch), (holder.as_str(), 1));
        assert!(info.expires_in.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_taken_over_only_after_it_expires_with_a_higher_epoch() {
    let leases = leases("lease_expiry").await;
    let ttl = Duration::from_millis(800);
    let a = leases.acquire("work", "a", ttl).await.unwrap().unwrap();
    // b tries all the time; it must not get the lease before a's expiry, which is no
    // earlier than `ttl` after a's request was sent.
    let b = loop {
        if let Some(lease) = leases.acquire("work", "b", ttl).await.unwrap() {
            break lease;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let taken = Instant::now();
    assert!(
        taken >= a.sent_at() + ttl,
        "taken over before the lease expired"
    );
    assert_eq!(b.epoch, a.epoch + 1);
    // a's renewal is refused now, and so is its release.
    assert_eq!(leases.acquire("work", "a", ttl).await.unwrap(), None);
    assert!(!leases.release(&a).await.unwrap());
    // b's own renewal keeps its epoch.
    let renewed = leases.acquire("work", "b", ttl).await.unwrap().unwrap();
    assert_eq!(renewed.epoch, b.epoch);
    // After b's lease expired unrenewed, b gets a new term (the old one is over).
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let again = leases.acquire("work", "b", ttl).await.unwrap().unwrap();
    assert_eq!(again.epoch, b.epoch + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once_and_epochs_never_go_back() {
    let leases = leases("lease_release").await;
    let long = Duration::from_secs(60);
    let a = leases.acquire("work", "a", long).await.unwrap().unwrap();
    assert!(leases.release(&a).await.unwrap());
    assert!(!leases.release(&a).await.unwrap(), "released twice");
    assert_eq!(
        leases.current("work").await.unwrap().unwrap().expires_in,
        None
    );
    let b = leases.acquire("work", "b", long).await.unwrap().unwrap();
    assert_eq!(b.epoch, 2);
    // A release in an older epoch, by the same holder name, does not end b's term.
    let stale = strata::lease::Lease {
        epoch: 1,
        ..b.clone()
    };
    assert!(!leases.release(&stale).await.unwrap());
    assert_eq!(leases.acquire("work", "c", long).await.unwrap(), None);
    assert!(leases.release(&b).await.unwrap());
    let a_again = leases.acquire("work", "a", long).await.unwrap().unwrap();
    assert_eq!(a_again.epoch, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_arguments_are_checked_before_the_database() {
    let leases = leases("lease_args").await;
    assert!(matches!(
        leases.acquire("work", "a", Duration::ZERO).await,
        Err(LeaseError::InvalidTtl { .. })
    ));
    assert!(matches!(
        leases.acquire("work", "", Duration::from_secs(1)).await,
        Err(LeaseError::InvalidName { what: "holder", .. })
    ));
    assert_eq!(leases.current("work").await.unwrap(), None);
}
