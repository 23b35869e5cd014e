//! The conformance suite on the embedded engine, on real files.

use strata::conformance::Harness;
use strata::{Limits, Options, Store};

async fn embedded() -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = Options::small_for_tests();
    let limits = options.limits.clone();
    let store = Store::open_with(dir.path(), options).expect("open store");
    Harness {
        store,
        limits,
        guard: Box::new(dir),
    }
}

strata::conformance_tests!(embedded());

#[test]
fn default_limits_are_documented_values() {
    let limits = Limits::default();
    assert_eq!(limits.event_size_bytes_max, 16 << 20);
}
