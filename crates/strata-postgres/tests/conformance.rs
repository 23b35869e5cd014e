//! The conformance suite on PostgreSQL: one throw-away cluster per test binary, one
//! database per test.

use strata::conformance::Harness;
use strata::Limits;

async fn postgres() -> Harness {
    let url = match strata_postgres::cluster::fresh_database("conformance").await {
        Ok(url) => url,
        Err(error) => {
            panic!("PostgreSQL is needed for these tests and could not be started: {error}")
        }
    };
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
