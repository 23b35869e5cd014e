//! The conformance suite on PostgreSQL: one throw-away cluster per test binary, one
//! database per test.

use std::sync::atomic::{AtomicU32, Ordering};

use strata::conformance::Harness;
use strata::Limits;

async fn postgres() -> Harness {
    let url = match strata_postgres::cluster::shared() {
        Ok(url) => url,
        Err(error) => {
            panic!("PostgreSQL is needed for these tests and could not be started: {error}")
        }
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let database = format!(
        "conformance_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .expect("create database");
    let url = url.replace("/postgres", &format!("/{database}"));
    let store = strata_postgres::connect(&url)
        .await
        .expect("connect the store");
    Harness {
        store,
        limits: Limits::default(),
        guard: Box::new(()),
    }
}

strata::conformance_tests!(postgres());
