//! Options of the embedded engine.

use std::time::Duration;

use crate::error::OpenError;
use crate::limits::Limits;

use super::format::{frame, segment};

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// After its bytes are on stable storage (`fdatasync`). The default.
    #[default]
    Fsync,
    /// After its bytes are handed to the operating system, without waiting for the disk.
    /// A power loss can lose acknowledged events. For benchmarks and tests only.
    NoSync,
}

/// Options of the embedded engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Limits on appends and names.
    pub limits: Limits,
    /// A segment is closed and a new one started once the next frame would not fit.
    pub segment_size_bytes: u32,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// How many recent appends (by the id of their first event) are remembered for
    /// idempotent retries of appends with
    /// `any` or `stream_exists` (retries with an exact revision are checked against the
    /// stream itself, with no window).
    pub recent_ids_max: usize,
    /// The index checkpoint is rewritten once the log has grown by this many bytes since
    /// the last one (or by the checkpoint's own size, if larger).
    pub checkpoint_interval_bytes: u64,
    /// Most appends waiting for the writer; callers wait for room beyond it.
    pub write_queue_max: usize,
    /// Most bytes of appends waiting for or being written by the writer; callers wait
    /// for room beyond it (so memory held by queued appends is bounded in bytes, not
    /// only in count). At least the largest append.
    pub write_queue_bytes_max: usize,
    /// Most bytes the writer puts in one batch (one write, one sync).
    pub batch_bytes_max: usize,
    /// Most reads of the global log running at once on the blocking pool (filtered
    /// reads, and reads of more than a few thousand events); more wait for a slot.
    pub scans_max: usize,
    /// How long a read waits for a scan slot before it fails with
    /// [`ReadError::Busy`](crate::ReadError::Busy).
    pub scan_wait_max: Duration,
    /// Most segment files kept open at once (least recently used closed first; any
    /// segment is opened again when a read needs it), and separately as many segment
    /// tables. Bounds the file descriptors a store uses however large it grows (twice
    /// this, plus a few); the segment being written counts too.
    pub segment_handles_max: usize,
    /// Most bytes per second the background scrubber reads while it re-verifies the
    /// sealed segments (every frame's checksum, record structure and positions), so
    /// that damage in old segments is found before a read hits it. `0` turns the
    /// scrubber off. See [`Engine::scrub_status`](super::Engine::scrub_status).
    pub scrub_bytes_per_second: u64,
    /// How long the scrubber waits after a full pass over the sealed segments before it
    /// starts the next one. Must be positive while the scrubber is on.
    pub scrub_interval: Duration,
}

/// What a part costs in the queue and in a batch besides its events: a delete or a
/// tombstone writes a record too, and an empty part still has to be planned.
pub(crate) const PART_BYTES_MIN: usize = 256;

/// The largest byte budget the write queue may have (tokio semaphores count permits
/// in fewer bits than `usize`).
pub const QUEUE_BYTES_LIMIT: usize = u32::MAX as usize;

/// The most bytes one valid append can cost in the queue (as the writer counts it).
pub fn queued_bytes_max(limits: &Limits) -> usize {
    limits.append_size_bytes_max
        + limits.append_events_max * super::format::record::HEADER_LEN
        + limits.append_streams_max * PART_BYTES_MIN
}

impl Options {
    /// Default segment size: 256 MiB.
    pub const SEGMENT_SIZE_BYTES: u32 = 256 << 20;
    /// Default most open segment files: 256 (a quarter of a common `ulimit -n` of
    /// 1 024, leaving the rest to connections; 64 GiB of log at the default segment size).
    pub const SEGMENT_HANDLES_MAX: usize = 256;
    /// Default wait for a scan slot: 5 s.
    pub const SCAN_WAIT_MAX: Duration = Duration::from_secs(5);
    /// Default scrub rate: 8 MiB/s (a 256 MiB segment in about half a minute; a small
    /// share of any disk's bandwidth).
    pub const SCRUB_BYTES_PER_SECOND: u64 = 8 << 20;
    /// Default wait between scrub passes: 24 hours.
    pub const SCRUB_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

    /// Default most scans at once: twice the cores, at least 4.
    pub fn default_scans_max() -> usize {
        std::thread::available_parallelism()
            .map_or(4, |cores| cores.get() * 2)
            .max(4)
    }

    /// Checks that the options fit together.
    pub fn validate(&self) -> Result<(), OpenError> {
        let invalid = |reason: String| Err(OpenError::InvalidOptions { reason });
        let capacity = (self.segment_size_bytes as usize).saturating_sub(segment::HEADER_LEN);
        if self.segment_size_bytes < 4096 {
            return invalid(format!(
                "segment_size_bytes is {}, the minimum is 4096",
                self.segment_size_bytes
            ));
        }
        // The largest append must fit in one frame in an empty segment.
        let per_event = super::format::record::HEADER_LEN + 8;
        let largest_frame = frame::HEADER_LEN
            + self.limits.append_size_bytes_max
            + self.limits.append_events_max * (per_event + self.limits.stream_name_bytes_max);
        if largest_frame > capacity {
            return invalid(format!(
                "the largest possible append ({largest_frame} bytes with {} events of up to \
                 {} bytes in all) does not fit in a segment of {} bytes; lower the limits or \
                 raise segment_size_bytes",
                self.limits.append_events_max,
                self.limits.append_size_bytes_max,
                self.segment_size_bytes
            ));
        }
        // Record headers keep name lengths in 16 bits; a metadata stream adds "$$".
        if self.limits.stream_name_bytes_max > usize::from(u16::MAX) - 2
            || self.limits.event_type_bytes_max > usize::from(u16::MAX)
        {
            return invalid(format!(
                "stream names are limited to {} bytes and event types to {} bytes by the format",
                u16::MAX - 2,
                u16::MAX
            ));
        }
        if self.limits.event_size_bytes_max > self.limits.append_size_bytes_max {
            return invalid("event_size_bytes_max exceeds append_size_bytes_max".into());
        }
        if self.write_queue_max == 0
            || self.batch_bytes_max == 0
            || self.scans_max == 0
            || self.segment_handles_max == 0
        {
            return invalid(
                "write_queue_max, batch_bytes_max, scans_max and segment_handles_max must be \
                 positive"
                    .into(),
            );
        }
        if self.scrub_bytes_per_second > 0 && self.scrub_interval.is_zero() {
            // A zero wait would re-read the whole log back to back, for ever.
            return invalid(
                "scrub_interval must be positive while the scrubber is on \
                 (scrub_bytes_per_second > 0)"
                    .into(),
            );
        }
        let largest_append = queued_bytes_max(&self.limits);
        if self.write_queue_bytes_max < largest_append
            || self.write_queue_bytes_max > QUEUE_BYTES_LIMIT
        {
            return invalid(format!(
                "write_queue_bytes_max is {}; it must hold the largest append ({largest_append} \
                 bytes) and be at most {}",
                self.write_queue_bytes_max, QUEUE_BYTES_LIMIT
            ));
        }
        Ok(())
    }

    /// Options for small stores in tests: 64 KiB segments and matching limits, so that
    /// tests cross segment boundaries quickly.
    pub fn small_for_tests() -> Options {
        Options {
            limits: Limits {
                event_size_bytes_max: 8 << 10,
                append_events_max: 64,
                append_size_bytes_max: 16 << 10,
                stream_name_bytes_max: 128,
                event_type_bytes_max: 128,
                append_streams_max: 8,
            },
            segment_size_bytes: 64 << 10,
            checkpoint_interval_bytes: 32 << 10,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: Limits::default(),
            segment_size_bytes: Options::SEGMENT_SIZE_BYTES,
            durability: Durability::Fsync,
            recent_ids_max: 262_144,
            checkpoint_interval_bytes: 64 << 20,
            write_queue_max: 8192,
            write_queue_bytes_max: 256 << 20,
            batch_bytes_max: 16 << 20,
            scans_max: Options::default_scans_max(),
            scan_wait_max: Options::SCAN_WAIT_MAX,
            segment_handles_max: Options::SEGMENT_HANDLES_MAX,
            scrub_bytes_per_second: Options::SCRUB_BYTES_PER_SECOND,
            scrub_interval: Options::SCRUB_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_options_are_valid() {
        assert!(Options::default().validate().is_ok());
        assert!(Options::small_for_tests().validate().is_ok());
        let tiny = Options {
            segment_size_bytes: 8192,
            ..Options::default()
        };
        assert!(tiny.validate().is_err());
        let mut long_names = Options::small_for_tests();
        long_names.limits.stream_name_bytes_max = 70_000;
        assert!(
            long_names.validate().is_err(),
            "names longer than the format allows"
        );
        let scrub_without_pause = Options {
            scrub_interval: Duration::ZERO,
            ..Options::default()
        };
        assert!(scrub_without_pause.validate().is_err());
        let scrub_off = Options {
            scrub_bytes_per_second: 0,
            scrub_interval: Duration::ZERO,
            ..Options::default()
        };
        assert!(scrub_off.validate().is_ok(), "the interval of no scrubber");
    }
}
