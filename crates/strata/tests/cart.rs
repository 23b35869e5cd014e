//! The cart example end to end: an upcast old event, an async projection with
//! read-your-writes and a restart, and a rebuild that gives the same read model.
#![allow(clippy::unwrap_used)]

#[path = "../examples/cart/domain.rs"]
#[allow(dead_code, missing_docs)]
mod domain;

use std::sync::Arc;
use std::time::Duration;

use domain::{upcasters, Cart, CartCommand, CartError, Popularity};
use strata::model::{CommandContext, HandleError, Repository};
use strata::projection::{rebuild, DurableSink, ProjectionRunner, RebuildOptions, RunnerOptions};
use strata::{EventData, ExpectedRevision, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_popularity_rebuild_and_upcasting() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("log")).unwrap();
    let old = EventData::json("ItemAdded", &serde_json::json!({ "product": "mug" }))
        .unwrap()
        .with_metadata(&b"{\"schema_version\": 1}"[..]);
    store
        .append("cart-old", ExpectedRevision::NoStream, vec![old])
        .await
        .unwrap();
    let carts = Repository::<Cart>::new(store.clone()).with_upcasters(upcasters());
    assert_eq!(
        carts.load("old").await.unwrap().state.items,
        vec![("mug".to_owned(), 1)]
    );

    let sink = DurableSink::open(dir.path().join("read-models")).unwrap();
    let popularity = Arc::new(Popularity {
        upcasters: upcasters(),
    });
    let runner = ProjectionRunner::start(
        store.clone(),
        popularity.clone(),
        sink.clone(),
        RunnerOptions::default(),
    )
    .await
    .unwrap();
    let ctx = CommandContext::new();
    let mut last = None;
    for (cart, sku, qty) in [
        ("1", "mug", 2),
        ("2", "tea", 1),
        ("2", "mug", 1),
        ("3", "pen", 5),
    ] {
        let handled = carts
            .handle(
                cart,
                &CartCommand::Add {
                    sku: sku.into(),
                    qty,
                },
                &ctx,
            )
            .await
            .unwrap();
        last = handled.result.and_then(|r| r.last_position());
    }
    carts
        .handle("2", &CartCommand::CheckOut, &ctx)
        .await
        .unwrap();
    match carts
        .handle(
            "2",
            &CartCommand::Add {
                sku: "x".into(),
                qty: 1,
            },
            &ctx,
        )
        .await
    {
        Err(HandleError::Domain(CartError::CheckedOut)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    runner
        .wait_for(last.unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let count = |sku: &str| sink.get_as::<u64>("product-popularity", sku).unwrap();
    assert_eq!(
        (count("mug"), count("tea"), count("pen")),
        (Some(4), Some(1), Some(5))
    );
    runner.stop().await.unwrap();

    // After a restart the runner resumes from its checkpoint: nothing counted twice.
    let more = carts
        .handle(
            "4",
            &CartCommand::Add {
                sku: "mug".into(),
                qty: 1,
            },
            &ctx,
        )
        .await
        .unwrap();
    let runner = ProjectionRunner::start(
        store.clone(),
        popularity.clone(),
        sink.clone(),
        RunnerOptions::default(),
    )
    .await
    .unwrap();
    runner
        .wait_for(
            more.result.unwrap().last_position().unwrap(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(count("mug"), Some(5));
    runner.stop().await.unwrap();

    let before = sink.scan("product-popularity").unwrap();
    let report = rebuild(
        &store,
        popularity,
        sink.clone(),
        RebuildOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.counts.handled, 6);
    assert_eq!(
        sink.scan("product-popularity").unwrap(),
        before,
        "a rebuild gives the same read model"
    );
}
