//! The bank example under concurrency on the embedded engine (the scenario is shared with
//! the PostgreSQL backend's tests).

#[path = "../examples/bank/domain.rs"]
#[allow(dead_code, missing_docs)]
mod domain;
#[path = "../examples/bank/scenario.rs"]
mod scenario;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_withdrawals_never_overdraw() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = strata::Store::open(dir.path()).expect("open");
    let snapshots = Arc::new(strata::model::MemorySnapshots::new());
    scenario::concurrent_withdrawals_never_overdraw(store, snapshots).await;
}
