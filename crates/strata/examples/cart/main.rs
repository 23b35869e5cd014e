//! The cart example: carts handled as aggregates, an old event version upcast on read,
//! an async projection of product popularity kept in a durable sink, read-your-writes,
//! and a rebuild. Run with `cargo run -p strata --example cart`.

mod domain;

use std::sync::Arc;
use std::time::Duration;

use domain::{upcasters, Cart, CartCommand, Popularity};
use strata::model::{CommandContext, Repository};
use strata::projection::{rebuild, DurableSink, ProjectionRunner, RebuildOptions, RunnerOptions};
use strata::{EventData, ExpectedRevision, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("log"))?;
    // A cart written by last year's code: version 1 events.
    let old = EventData::json("ItemAdded", &serde_json::json!({ "product": "mug" }))?
        .with_metadata(&b"{\"schema_version\": 1}"[..]);
    store
        .append("cart-old", ExpectedRevision::NoStream, vec![old])
        .await?;

    let carts = Repository::<Cart>::new(store.clone()).with_upcasters(upcasters());
    let sink = DurableSink::open(dir.path().join("read-models"))?;
    let popularity = Arc::new(Popularity {
        upcasters: upcasters(),
    });
    let runner = ProjectionRunner::start(
        store.clone(),
        popularity.clone(),
        sink.clone(),
        RunnerOptions::default(),
    )
    .await?;
    let ctx = CommandContext::new();
    carts
        .handle(
            "1",
            &CartCommand::Add {
                sku: "mug".into(),
                qty: 2,
            },
            &ctx,
        )
        .await?;
    let last = carts
        .handle(
            "1",
            &CartCommand::Add {
                sku: "tea".into(),
                qty: 1,
            },
            &ctx,
        )
        .await?;
    carts.handle("1", &CartCommand::CheckOut, &ctx).await?;
    let refused = carts
        .handle(
            "1",
            &CartCommand::Add {
                sku: "pen".into(),
                qty: 1,
            },
            &ctx,
        )
        .await;
    println!(
        "adding to a checked-out cart: {}",
        refused.err().map(|e| e.to_string()).unwrap_or_default()
    );
    println!(
        "cart-old as upcast: {:?}",
        carts.load("old").await?.state.items
    );
    // Read-your-writes: wait until the projection has the last append.
    if let Some(position) = last.result.and_then(|r| r.last_position()) {
        runner.wait_for(position, Duration::from_secs(5)).await?;
    }
    println!(
        "mugs: {:?}, lag {}",
        sink.get("product-popularity", "mug")?,
        runner.lag()
    );
    runner.stop().await?;
    let report = rebuild(
        &store,
        popularity,
        sink.clone(),
        RebuildOptions::default(),
        |_| {},
    )
    .await?;
    println!(
        "rebuilt {:?} events; mugs: {:?}",
        report.counts,
        sink.get("product-popularity", "mug")?
    );
    Ok(())
}
