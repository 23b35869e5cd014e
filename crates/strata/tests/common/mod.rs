//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use strata::engine::io::Storage;
use strata::{Engine, EventData, Options, Position, ReadAllOptions, RecordedEvent, Store};
use uuid::Uuid;

/// Opens a store on `storage` with the small test options.
pub fn open(storage: Arc<dyn Storage>) -> Store {
    Store::from_engine(Engine::open_storage(storage, Options::small_for_tests()).unwrap())
}

/// `n` small JSON events.
pub fn events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| {
            EventData::json(
                "Tested",
                &serde_json::json!({ "i": i, "pad": "x".repeat(40) }),
            )
            .unwrap()
        })
        .collect()
}

/// Every event of the store, in log order.
pub async fn everything(store: &Store) -> Vec<RecordedEvent> {
    store.read_all(ReadAllOptions::forwards()).await.unwrap()
}

/// Checks the log's structural invariants: positions 0, 1, 2, … with no gap, and each
/// stream's revisions 0, 1, 2, … in log order. Returns the ids in log order.
pub fn check_invariants(events: &[RecordedEvent]) -> Vec<Uuid> {
    let mut revisions: HashMap<&str, u64> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.position, Position(i as u64), "positions have no gap");
        let next = revisions.entry(&event.stream).or_insert(0);
        assert_eq!(
            event.revision, *next,
            "revisions of {} have no gap",
            event.stream
        );
        *next += 1;
    }
    events.iter().map(|e| e.id).collect()
}

/// Copies a closed store's files from `from` into `to`, leaving out the lock file.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The names of the files in `dir` ending with `extension` (`".tbl"`), sorted: segments
/// and tables sort oldest first.
pub fn files_with(dir: &std::path::Path, extension: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(extension))
        .collect();
    names.sort();
    names
}
