//! What the sink and failover tests share: a projection that detects an event applied
//! twice or skipped, and helpers to connect and append.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use strata::projection::{
    replay_into, DocumentTx, MemorySink, Projection, ProjectionError, RebuildOptions,
};
use strata::{EventData, ExpectedRevision, RecordedEvent, Store};
use strata_postgres::{PostgresOptions, PostgresStore};

/// Per account: how many deposits and their total. A deposit whose revision is not the
/// count so far was applied twice or an earlier one was skipped: the handler refuses it,
/// which stops the projection at that event.
pub struct Balances;

#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Balance {
    pub deposits: u64,
    pub total: i64,
}

impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    fn filter(&self) -> strata::Filter {
        strata::Filter::new().category("account")
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        let amount: i64 = serde_json::from_slice(&event.data)?;
        let revision = event.revision;
        let in_order = tx.update(&event.stream, |balance: &mut Balance| {
            let in_order = balance.deposits == revision;
            if in_order {
                balance.deposits += 1;
                balance.total += amount;
            }
            in_order
        })?;
        if !in_order {
            return Err(ProjectionError::rejected(format!(
                "{} revision {revision} applied out of order (twice, or after a gap)",
                event.stream
            )));
        }
        Ok(())
    }
}

/// A new database and a backend on it.
pub async fn database(prefix: &str) -> String {
    strata_postgres::cluster::fresh_database(prefix)
        .await
        .expect("PostgreSQL is needed for these tests")
}

pub async fn connect(url: &str) -> Arc<PostgresStore> {
    let options = PostgresOptions {
        pool_size: 8,
        ..PostgresOptions::default()
    };
    Arc::new(PostgresStore::connect(url, options).await.unwrap())
}

/// Connects to a database whose log is not empty, and waits until the backend's head
/// watcher has read the head: `connect` returns before its first read, and a runner
/// started meanwhile sees no head and takes its checkpoint for one past the end.
pub async fn connect_to_log(url: &str) -> Arc<PostgresStore> {
    use strata::EventStore;
    let backend = connect(url).await;
    let mut head = backend.watch_head();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        head.wait_for(Option::is_some),
    )
    .await
    .expect("the head watcher did not read the head")
    .unwrap();
    backend
}

/// Appends deposit `i` (of amount `i`) to one of `accounts` accounts.
pub async fn deposit(store: &Store, i: u64, accounts: u64) -> strata::Position {
    let stream = format!("account-{}", i % accounts);
    let event = EventData::json("Deposited", &i).unwrap();
    let appended = store
        .append(&stream, ExpectedRevision::Any, vec![event])
        .await
        .unwrap();
    appended.positions[0]
}

/// The read model a serial rebuild of the whole log gives.
pub async fn serial_rebuild(store: &Store) -> BTreeMap<String, Value> {
    let sink = MemorySink::new();
    replay_into(
        store,
        Balances,
        sink.clone(),
        None,
        RebuildOptions::serial(),
    )
    .await
    .unwrap();
    sink.scan("balances").unwrap()
}
