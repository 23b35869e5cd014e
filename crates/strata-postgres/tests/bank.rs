//! The bank example's concurrency scenario on PostgreSQL, with snapshots in PostgreSQL:
//! the model layer runs unchanged on this backend.

#[path = "../../strata/examples/bank/domain.rs"]
#[allow(dead_code, missing_docs)]
mod domain;
#[path = "../../strata/examples/bank/scenario.rs"]
mod scenario;

use std::sync::Arc;

use strata_postgres::{PostgresOptions, PostgresStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_withdrawals_never_overdraw() {
    let url = strata_postgres::cluster::fresh_database("bank")
        .await
        .expect("PostgreSQL is needed for these tests");
    let options = PostgresOptions {
        pool_size: 40,
        ..PostgresOptions::default()
    };
    let backend = PostgresStore::connect(&url, options)
        .await
        .expect("connect");
    let snapshots = Arc::new(backend.snapshots());
    scenario::concurrent_withdrawals_never_overdraw(
        strata::Store::from_backend(Arc::new(backend)),
        snapshots,
    )
    .await;
}
