//! The background scrubber: re-verifies every sealed segment at a bounded rate, so that
//! damage in old segments (bit rot, a bad sector, a stray write) is found and reported
//! before a read hits it.
//!
//! Why: opening a store verifies only the newest sealed segment (the checkpoint spares
//! the scan of the older ones), and reads check only what they read. A flipped byte in
//! a segment nobody reads would go unnoticed until the one read that needs it, perhaps
//! long after the last good copy of the data is gone.
//!
//! One thread, `strata-scrub`, walks the sealed segments oldest first, checks each
//! header and every frame (checksum, record structure, positions in sequence: the very
//! checks open applies to the newest sealed segment, [`check_sealed_frames`]), then
//! waits [`Options::scrub_interval`] and starts again. It reads in chunks through the
//! store's segment handle cache, lets go of the file between chunks, and sleeps so that
//! it reads at most [`Options::scrub_bytes_per_second`] on average.
//!
//! Damage is logged (`tracing::error!`) and kept in [`ScrubStatus`]; nothing is changed,
//! cut or repaired: the damaged bytes stay as evidence. Reads of a damaged range fail as
//! [`StorageError::Corrupt`] on their own. The segment being written is never scrubbed.
//! A segment that is removed or changed while it is checked is skipped, not reported.
//!
//! After the segments, each pass checks the segment tables' entry blocks against their
//! checksums, at the same rate. A table is derived data: a damaged one is rebuilt from
//! its segment at once and counted in [`ScrubStatus::tables_repaired`], so that reads
//! needing its damaged blocks stop failing without a restart.
//!
//! [`Options::scrub_interval`]: super::Options::scrub_interval
//! [`Options::scrub_bytes_per_second`]: super::Options::scrub_bytes_per_second

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_core::scrub::{ScrubDamage, ScrubStatus};

use super::format::segment::{self, SegmentHeader};
use super::handles::SegmentFile;
use super::index::table::{self, Table};
use super::indexer;
use super::io::{read_exact_at, StorageFile};
use super::recovery::{check_sealed_frames, SealedExtent};
use super::state::Shared;
use crate::error::StorageError;
use crate::event::Timestamp;

/// Largest read of one chunk (a frame larger than this is read whole).
const CHUNK_BYTES_MAX: u64 = 256 << 10;
/// Smallest read of one chunk, however low the rate.
const CHUNK_BYTES_MIN: u64 = 4 << 10;
/// Longest single wait: waits are cut in slices so that a deadline too far away to
/// express as an `Instant` still works.
const WAIT_SLICE: Duration = Duration::from_secs(3600);

/// The running scrubber, owned by the engine.
pub(super) struct Scrubber {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

/// What the engine and the scrubber thread share.
struct Control {
    state: Mutex<State>,
    /// Signalled when the engine closes, to cut a wait short.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    stopping: bool,
    status: ScrubStatus,
    /// Every (segment, offset) reported, so that damage found again in a later pass is
    /// not counted twice. At most one entry per segment and pass.
    reported: HashSet<(u32, u64)>,
}

impl Scrubber {
    /// Starts the scrubber thread, unless the options turn it off.
    pub fn start(shared: &Arc<Shared>) -> Result<Option<Scrubber>, StorageError> {
        if shared.options.scrub_bytes_per_second == 0 {
            return Ok(None);
        }
        let control = Arc::new(Control {
            state: Mutex::default(),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            let control = control.clone();
            std::thread::Builder::new()
                .name("strata-scrub".into())
                .spawn(move || run(&shared, &control))
        }
        .map_err(|e| StorageError::io("start scrub thread for", shared.storage.describe(), e))?;
        Ok(Some(Scrubber {
            control,
            thread: Some(thread),
        }))
    }

    /// What the scrubber has done and found so far.
    pub fn status(&self) -> ScrubStatus {
        self.control.lock().status.clone()
    }

    /// Stops the thread and waits for it: it ends within one chunk's read.
    pub fn stop(&mut self) {
        self.control.lock().stopping = true;
        self.control.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                // A bug, but the log itself is untouched by the scrubber: closing goes on.
                tracing::error!("the scrub thread panicked");
            }
        }
    }
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Control {
    /// The state. A poisoned lock means the scrub thread panicked while holding it;
    /// the status is plain counters, still sound to read.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Waits until `deadline` (`None`: for ever). Returns `false` if the store is
    /// closing, at once when it begins to.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return false;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => (deadline - now).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            state = self
                .wake
                .wait_timeout(state, left)
                .map(|(state, _)| state)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn record_damage(&self, damage: ScrubDamage) {
        let mut state = self.lock();
        if !state.reported.insert((damage.segment, damage.offset)) {
            return;
        }
        state.status.damage_found += 1;
        if state.status.damage.len() < ScrubStatus::DAMAGE_LIST_MAX {
            state.status.damage.push(damage);
        }
    }
}

/// A sealed segment to check, as the index knew it when its check began.
struct Target {
    extent: SealedExtent,
    file: SegmentFile,
    store_id: uuid::Uuid,
}

/// The first sealed segment (every segment but the last, the one being written) with a
/// number above `after`.
fn next_sealed(shared: &Shared, after: Option<u32>) -> Option<Target> {
    let segments = shared.segments();
    let sealed = segments.list.len().checked_sub(1)?;
    segments.list[..sealed]
        .iter()
        .find(|info| after.is_none_or(|after| info.number > after))
        .map(|info| Target {
            extent: SealedExtent::of(info),
            file: info.file.clone(),
            store_id: segments.store_id,
        })
}

/// Whether segment `extent.number` is still sealed and as it was when its check began.
fn unchanged(shared: &Shared, extent: &SealedExtent) -> bool {
    let segments = shared.segments();
    let is_last = segments
        .list
        .last()
        .is_none_or(|last| last.number == extent.number);
    !is_last
        && segments
            .by_number(extent.number)
            .is_some_and(|info| SealedExtent::of(info) == *extent)
}

/// Keeps the average read rate under a limit: after each read, says until when to wait.
struct Pacer {
    bytes_per_second: u64,
    since: Instant,
    bytes: u64,
}

impl Pacer {
    /// Reads more than this behind schedule are forgiven rather than made up for in a
    /// burst (a slow disk or a long check must not be followed by reads at full speed).
    const SLACK: Duration = Duration::from_secs(1);

    fn new(bytes_per_second: u64) -> Pacer {
        Pacer {
            bytes_per_second,
            since: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `bytes` read; returns when the next read may start, if not now.
    fn after(&mut self, bytes: u64) -> Option<Instant> {
        self.bytes = self.bytes.saturating_add(bytes);
        let nanos = u128::from(self.bytes) * 1_000_000_000 / u128::from(self.bytes_per_second);
        let due = self.since.checked_add(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ));
        let now = Instant::now();
        match due {
            Some(due) if due > now => Some(due),
            Some(due) if now.duration_since(due) <= Pacer::SLACK => None,
            // Behind by more than the slack, or past any representable instant: start
            // counting afresh from now.
            _ => {
                self.since = now;
                self.bytes = 0;
                None
            }
        }
    }
}

/// How the check of one segment ended.
enum Checked {
    /// Every byte was checked (or the segment went away meanwhile).
    Done,
    /// The store is closing.
    Stopped,
}

/// The scrub thread: passes over the sealed segments until the store closes.
fn run(shared: &Shared, control: &Control) {
    let rate = shared.options.scrub_bytes_per_second;
    let chunk = (rate / 4).clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX) as usize;
    tracing::debug!(
        bytes_per_second = rate,
        interval_s = shared.options.scrub_interval.as_secs(),
        "scrubber started"
    );
    loop {
        let mut pacer = Pacer::new(rate);
        let mut after = None;
        // Segments sealed during the pass are checked in it too: the next one is looked
        // up afresh each time.
        while let Some(target) = next_sealed(shared, after) {
            after = Some(target.extent.number);
            control.lock().status.current_segment = Some(target.extent.number);
            if let Checked::Stopped = check_segment(shared, control, &target, &mut pacer, chunk) {
                return;
            }
        }
        if let Checked::Stopped = check_tables(shared, control, &mut pacer, chunk) {
            return;
        }
        let passes = {
            let mut state = control.lock();
            state.status.passes += 1;
            state.status.current_segment = None;
            state.status.last_pass_finished_at = Some(Timestamp::now());
            state.status.passes
        };
        tracing::debug!(passes, "scrub pass finished");
        if !control.wait_until(Instant::now().checked_add(shared.options.scrub_interval)) {
            return;
        }
    }
}

/// Checks one sealed segment, chunk by chunk, and reports what it found.
fn check_segment(
    shared: &Shared,
    control: &Control,
    target: &Target,
    pacer: &mut Pacer,
    chunk: usize,
) -> Checked {
    let extent = &target.extent;
    // Opened for each read and let go before the pause: the cache may close the file
    // meanwhile, and a file held across a long pause would be one more open than the
    // cache allows.
    if let Err(error) = target
        .file
        .open()
        .and_then(|file| check_header(&*file, target))
    {
        report(shared, control, extent, &error);
        return Checked::Done;
    }
    let mut checked = segment::HEADER_LEN as u64;
    let mut next = Some(extent.start());
    loop {
        control.lock().status.bytes_verified += checked;
        if let Some(due) = pacer.after(checked) {
            if !control.wait_until(Some(due)) {
                return Checked::Stopped;
            }
        }
        let Some(at) = next else {
            return Checked::Done;
        };
        if control.stopping() {
            return Checked::Stopped;
        }
        let step = target
            .file
            .open()
            .and_then(|file| check_sealed_frames(&*file, extent, at, chunk));
        match step {
            Ok(step) => {
                checked = step.map_or(extent.end_offset, |step| step.offset) - at.offset;
                next = step;
            }
            Err(error) => {
                report(shared, control, extent, &error);
                return Checked::Done;
            }
        }
    }
}

/// Checks every segment table's entry blocks, and rebuilds a damaged table from its
/// segment.
fn check_tables(shared: &Shared, control: &Control, pacer: &mut Pacer, chunk: usize) -> Checked {
    let tables: Vec<Arc<Table>> = shared.index().tables.values().cloned().collect();
    let blocks_per_read = chunk / table::BLOCK_BYTES;
    for table in tables {
        if control.stopping() {
            return Checked::Stopped;
        }
        let checked = table.verify_blocks(blocks_per_read, |bytes| {
            control.lock().status.table_bytes_verified += bytes;
            match pacer.after(bytes) {
                Some(due) => control.wait_until(Some(due)),
                None => !control.stopping(),
            }
        });
        match checked {
            Ok(true) => {}
            Ok(false) => return Checked::Stopped,
            Err(error @ StorageError::Corrupt { .. }) => {
                tracing::warn!(
                    segment = table.segment,
                    %error,
                    "segment table damaged: rebuilding it from its segment"
                );
                match indexer::rebuild(shared, table.segment) {
                    Ok(()) => control.lock().status.tables_repaired += 1,
                    Err(error) => tracing::warn!(
                        segment = table.segment,
                        %error,
                        "could not rebuild a damaged segment table; reads that need its \
                         damaged blocks fail until the next open rebuilds it"
                    ),
                }
            }
            Err(error) => tracing::warn!(
                segment = table.segment,
                %error,
                "could not read a segment table to check it"
            ),
        }
    }
    Checked::Done
}

/// Checks the segment's header: intact, and naming this segment of this store.
fn check_header(file: &dyn StorageFile, target: &Target) -> Result<(), StorageError> {
    let extent = &target.extent;
    let name = extent.name.as_str();
    let mut bytes = [0u8; segment::HEADER_LEN];
    read_exact_at(file, &mut bytes, 0).map_err(|e| StorageError::io("read", name, e))?;
    let header = SegmentHeader::decode(&bytes).map_err(|error| {
        let reason = match error {
            segment::HeaderError::Short => "segment header truncated".to_owned(),
            segment::HeaderError::Invalid(reason) => format!("segment header: {reason}"),
            segment::HeaderError::Version(version) => {
                format!("segment header: unknown format version {version}")
            }
        };
        StorageError::corrupt(name, 0, reason)
    })?;
    let wrong = |reason: String| Err(StorageError::corrupt(name, 0, reason));
    if header.number != extent.number {
        return wrong(format!("segment header says segment {}", header.number));
    }
    if header.first_position != extent.first_position {
        return wrong(format!(
            "segment header says first position {}, the index {}",
            header.first_position, extent.first_position
        ));
    }
    if header.store_id != target.store_id {
        return wrong(format!(
            "segment header names another store ({}, this store's is {})",
            header.store_id, target.store_id
        ));
    }
    Ok(())
}

/// Reports what a failed check found, unless the segment changed under it.
fn report(shared: &Shared, control: &Control, extent: &SealedExtent, error: &StorageError) {
    if !unchanged(shared, extent) {
        tracing::debug!(
            segment = extent.number,
            %error,
            "scrub skipped a segment that was removed or changed while it was checked"
        );
        return;
    }
    let (offset, detail) = match error {
        StorageError::Corrupt { offset, reason, .. } => (*offset, reason.clone()),
        // A read error (a bad sector, a file shorter than its sealed end, a missing
        // file) is damage to the log just as well; the message says which.
        other => (0, format!("cannot be read: {other}")),
    };
    tracing::error!(
        segment = extent.number,
        file = extent.name.as_str(),
        offset,
        what = detail.as_str(),
        "scrub found damage in a sealed segment (the file is left as it is; reads of the \
         damaged range fail as corrupt)"
    );
    control.record_damage(ScrubDamage {
        segment: extent.number,
        offset,
        detail,
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test panics on a failed expectation
mod tests {
    use super::*;
    use crate::io::MemoryStorage;
    use crate::{Engine, Options};
    use crate::{EventData, ExpectedRevision};

    fn control() -> Control {
        Control {
            state: Mutex::default(),
            wake: Condvar::new(),
        }
    }

    /// The engine has no deletion or rewriting of segments yet; the scrubber must not
    /// mistake one for damage once it has.
    #[tokio::test]
    async fn damage_in_a_segment_that_went_away_or_changed_is_not_reported() {
        let options = Options {
            scrub_bytes_per_second: 0,
            ..Options::small_for_tests()
        };
        let engine = Engine::open_storage(Arc::new(MemoryStorage::new()), options).unwrap();
        let store = &engine;
        while engine.shared.segments().list.len() < 3 {
            let events = (0..8)
                .map(|i| {
                    EventData::json("E", &serde_json::json!({ "i": i, "pad": "p".repeat(900) }))
                })
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            store
                .append("s", ExpectedRevision::Any, events)
                .await
                .unwrap();
        }
        let shared = &engine.shared;
        let (oldest, tail) = {
            let segments = shared.segments();
            let tail = segments.list.last().map(SealedExtent::of).unwrap();
            (SealedExtent::of(&segments.list[0]), tail)
        };
        let damage = |extent: &SealedExtent| {
            StorageError::corrupt(&extent.name, 100, "frame checksum mismatch")
        };
        let control = control();
        let shorter = SealedExtent {
            end_offset: oldest.end_offset - 1,
            ..oldest.clone()
        };
        let removed = SealedExtent {
            number: 999,
            ..oldest.clone()
        };
        for skipped in [&shorter, &removed, &tail] {
            report(shared, &control, skipped, &damage(skipped));
            assert_eq!(control.lock().status.damage_found, 0, "{skipped:?}");
        }
        report(shared, &control, &oldest, &damage(&oldest));
        let status = control.lock().status.clone();
        assert_eq!(status.damage_found, 1);
        assert_eq!(status.damage[0].segment, oldest.number);
        assert_eq!(status.damage[0].offset, 100);
        engine.close().unwrap();
    }

    #[test]
    fn the_pacer_keeps_the_average_under_the_rate() {
        let mut pacer = Pacer::new(1000);
        let start = pacer.since;
        let due = pacer.after(500).map(|due| due - start);
        assert_eq!(due, Some(Duration::from_millis(500)));
        let due = pacer.after(1500).map(|due| due - start);
        assert_eq!(due, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_pacer_far_behind_starts_afresh_instead_of_bursting() {
        let mut pacer = Pacer::new(1 << 30);
        let Some(earlier) = pacer.since.checked_sub(Duration::from_secs(10)) else {
            return; // a clock that started less than 10 s ago
        };
        pacer.since = earlier;
        assert_eq!(pacer.after(1), None);
        assert_eq!(pacer.bytes, 0, "the backlog was forgiven");
    }

    #[test]
    fn damage_is_counted_once_and_the_list_is_bounded() {
        let control = control();
        let damage = |segment: u32| ScrubDamage {
            segment,
            offset: 64,
            detail: "frame checksum mismatch".into(),
        };
        control.record_damage(damage(1));
        control.record_damage(damage(1));
        assert_eq!(control.lock().status.damage_found, 1);
        let max = ScrubStatus::DAMAGE_LIST_MAX;
        for segment in 2..=(max as u32 + 10) {
            control.record_damage(damage(segment));
        }
        let status = control.lock().status.clone();
        assert_eq!(status.damage.len(), max);
        assert_eq!(status.damage_found, max as u64 + 10);
        assert_eq!(status.damage[0], damage(1));
    }
}
