//! The bank's concurrency scenario, shared by the tests of every backend: many
//! withdrawals race on one account; the balance never goes negative, no money is created
//! or lost, and snapshots taken along the way are used.

use std::sync::Arc;

use strata::model::{
    decode, CommandContext, HandleError, Repository, RepositoryConfig, SnapshotStore, SnapshotUse,
    Upcasters,
};
use strata::{ReadStreamOptions, Store};

use crate::domain::{Account, AccountCommand, AccountError, AccountEvent};

/// Runs the scenario on `store`, keeping snapshots in `snapshots`; panics on a failure.
pub async fn concurrent_withdrawals_never_overdraw(
    store: Store,
    snapshots: Arc<dyn SnapshotStore>,
) {
    let config = RepositoryConfig {
        max_attempts: 1000,
        snapshot_every: Some(25),
    };
    let accounts = Repository::<Account>::new(store.clone())
        .with_snapshots(snapshots.clone())
        .with_config(config);
    let ctx = CommandContext::new();
    accounts
        .handle(
            "shared",
            &AccountCommand::Open {
                owner: "Both".into(),
            },
            &ctx,
        )
        .await
        .expect("open");
    accounts
        .handle("shared", &AccountCommand::Deposit { amount: 1000 }, &ctx)
        .await
        .expect("deposit");
    let tasks: Vec<_> = (0..32u64)
        .map(|task| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let mut withdrawn = 0u64;
                for i in 0..10u64 {
                    let amount = 1 + (task * 7 + i * 3) % 9;
                    let command = AccountCommand::Withdraw { amount };
                    match accounts
                        .handle("shared", &command, &CommandContext::new())
                        .await
                    {
                        Ok(handled) => {
                            assert_eq!(handled.events, vec![AccountEvent::Withdrawn { amount }]);
                            withdrawn += amount;
                        }
                        Err(HandleError::Domain(AccountError::InsufficientFunds { .. })) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                withdrawn
            })
        })
        .collect();
    let mut withdrawn = 0;
    for task in tasks {
        withdrawn += task.await.expect("task");
    }
    let balance = accounts.load("shared").await.expect("load").state.balance;
    assert_eq!(balance + withdrawn, 1000, "no money created or lost");
    // Replaying the log from scratch shows the balance never went below zero.
    let events = store
        .read_stream("account-shared", ReadStreamOptions::forwards())
        .await
        .expect("read");
    let mut running: i64 = 0;
    for event in &events {
        for decoded in decode::<AccountEvent>(event, &Upcasters::new()).expect("decode") {
            match decoded {
                AccountEvent::Deposited { amount } => running += amount as i64,
                AccountEvent::Withdrawn { amount } => running -= amount as i64,
                _ => {}
            }
            assert!(running >= 0, "overdrawn at revision {}", event.revision);
        }
    }
    assert_eq!(running as u64, balance);
    assert!(
        withdrawn > 900,
        "the account was nearly emptied: {withdrawn}"
    );
    // Snapshots were taken along the way and the next load starts from one.
    let snapshot = snapshots
        .load("account-shared")
        .await
        .expect("snapshots")
        .expect("a snapshot");
    assert!(snapshot.revision >= 24);
    let loaded = accounts.load("shared").await.expect("load");
    assert!(matches!(loaded.snapshot, SnapshotUse::Used { .. }));
    assert!(
        loaded.events_read < 25,
        "only the events after the snapshot are read"
    );
}
