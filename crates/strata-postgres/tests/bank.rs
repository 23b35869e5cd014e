//! The bank example's concurrency test on PostgreSQL: the model layer runs unchanged on
//! this backend.
#![allow(clippy::unwrap_used)]

#[path = "../../strata/examples/bank/domain.rs"]
#[allow(dead_code, missing_docs)]
mod domain;

use domain::{Account, AccountCommand, AccountError, AccountEvent};
use strata::model::{decode, CommandContext, HandleError, Repository, RepositoryConfig, Upcasters};
use strata::{ReadStreamOptions, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_withdrawals_never_overdraw() {
    let url = strata_postgres::cluster::shared().expect("PostgreSQL is needed for these tests");
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let database = format!("bank_{}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .unwrap();
    let backend = strata_postgres::PostgresStore::connect(
        &url.replace("/postgres", &format!("/{database}")),
        strata_postgres::PostgresOptions {
            pool_size: 40,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let snapshots = std::sync::Arc::new(backend.snapshots());
    let store = Store::from_backend(std::sync::Arc::new(backend));
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
        .unwrap();
    accounts
        .handle("shared", &AccountCommand::Deposit { amount: 1000 }, &ctx)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let (mut withdrawn, mut refused) = (0u64, 0u64);
                for i in 0..10 {
                    let amount = 1 + (task * 7 + i * 3) % 9;
                    match accounts
                        .handle(
                            "shared",
                            &AccountCommand::Withdraw { amount },
                            &CommandContext::new(),
                        )
                        .await
                    {
                        Ok(handled) => {
                            assert_eq!(handled.events, vec![AccountEvent::Withdrawn { amount }]);
                            withdrawn += amount;
                        }
                        Err(HandleError::Domain(AccountError::InsufficientFunds { .. })) => {
                            refused += 1
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                (withdrawn, refused)
            })
        })
        .collect();
    let mut withdrawn = 0;
    for task in tasks {
        withdrawn += task.await.unwrap().0;
    }
    let balance = accounts.load("shared").await.unwrap().state.balance;
    assert_eq!(balance + withdrawn, 1000, "no money created or lost");
    // Replaying the log from scratch shows the balance never went below zero.
    let events = store
        .read_stream("account-shared", ReadStreamOptions::forwards())
        .await
        .unwrap();
    let mut running: i64 = 0;
    for event in &events {
        for decoded in decode::<AccountEvent>(event, &Upcasters::new()).unwrap() {
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
}
