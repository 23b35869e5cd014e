//! The bank example: accounts with deposits, withdrawals and transfers on an embedded
//! store. Run with `cargo run -p strata --example bank`.
//!
//! A transfer is two commands on two aggregates: the sender records `TransferSent`, and
//! handling that event makes the receiver record `TransferReceived`, with the event's id
//! as causation and a command id derived from it, so a replay credits the receiver once.

mod domain;

use domain::{Account, AccountCommand, AccountEvent};
use strata::model::{decode, CommandContext, Repository, Upcasters};
use strata::{Filter, ReadAllOptions, Store};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let accounts = Repository::<Account>::new(Store::open(dir.path())?);
    let ctx = CommandContext::new().with_actor("teller");
    accounts
        .handle(
            "alice",
            &AccountCommand::Open {
                owner: "Alice".into(),
            },
            &ctx,
        )
        .await?;
    accounts
        .handle(
            "bob",
            &AccountCommand::Open {
                owner: "Bob".into(),
            },
            &ctx,
        )
        .await?;
    accounts
        .handle("alice", &AccountCommand::Deposit { amount: 100 }, &ctx)
        .await?;
    let transfer = AccountCommand::SendTransfer {
        to: "bob".into(),
        amount: 30,
    };
    accounts.handle("alice", &transfer, &ctx).await?;
    // The process manager: every TransferSent becomes a TransferReceived, exactly once.
    let sent = accounts
        .store()
        .read_all(
            ReadAllOptions::forwards()
                .filter(Filter::new().category("account").event_type("TransferSent")),
        )
        .await?;
    for event in &sent {
        for decoded in decode::<AccountEvent>(event, &Upcasters::new())? {
            if let AccountEvent::TransferSent { to, amount } = decoded {
                let from = event.stream.trim_start_matches("account-").to_owned();
                let receive = AccountCommand::ReceiveTransfer { from, amount };
                let command_id = Uuid::new_v5(&event.id, b"receive");
                let caused = CommandContext::caused_by(event).with_command_id(command_id);
                accounts.handle(&to, &receive, &caused).await?;
            }
        }
    }
    let refused = accounts
        .handle("bob", &AccountCommand::Withdraw { amount: 500 }, &ctx)
        .await;
    println!(
        "bob withdrawing 500: {}",
        refused.err().map(|e| e.to_string()).unwrap_or_default()
    );
    for id in ["alice", "bob"] {
        println!("{id}: balance {}", accounts.load(id).await?.state.balance);
    }
    Ok(())
}
