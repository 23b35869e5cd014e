//! The durable-point marker: where the log is known to be synced, for readers in other
//! processes (`strata tail` on a store another process holds).
//!
//! ```text
//! offset  size  field
//!      0     8  magic "STRATDUR"
//!      8     4  segment number
//!     12     4  end offset in that segment: every byte before it is synced
//!     16     8  position after the last synced event
//!     24     4  reserved, zero
//!     28     4  CRC32C of bytes 0..28
//! ```
//!
//! The writer rewrites it in place after every synced batch, without syncing the
//! marker itself: it is a hint for live readers (another process sees the write at
//! once through the page cache), never read by recovery. A frame past the marker may
//! still be lost at a power loss and its positions reused, so such readers show only
//! what the marker (or a later batch, or a sealed segment) proves durable.

use super::{u32_at, u64_at};

/// The marker's file name, next to the segments.
pub const FILE_NAME: &str = "durable.pos";
/// Size of the marker in bytes.
pub const LEN: usize = 32;
const MAGIC: [u8; 8] = *b"STRATDUR";

/// How far the log is synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurablePoint {
    /// The segment the writer is writing.
    pub segment: u32,
    /// Every byte of that segment before this offset is synced.
    pub end_offset: u32,
    /// The position after the last synced event.
    pub end_position: u64,
}

impl DurablePoint {
    /// The marker's bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut bytes = [0u8; LEN];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&self.segment.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.end_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.end_position.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses a marker; `None` if it is short, torn or not a marker.
    pub fn decode(bytes: &[u8]) -> Option<DurablePoint> {
        if bytes.len() < LEN || bytes[0..8] != MAGIC {
            return None;
        }
        if crc32c::crc32c(&bytes[..28]) != u32_at(bytes, 28) {
            return None;
        }
        Some(DurablePoint {
            segment: u32_at(bytes, 8),
            end_offset: u32_at(bytes, 12),
            end_position: u64_at(bytes, 16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_rejects_damage() {
        let point = DurablePoint {
            segment: 3,
            end_offset: 4096,
            end_position: 77,
        };
        let bytes = point.encode();
        assert_eq!(DurablePoint::decode(&bytes), Some(point));
        for i in 0..LEN {
            let mut damaged = bytes;
            damaged[i] ^= 0x04;
            assert_eq!(DurablePoint::decode(&damaged), None, "flip at {i}");
        }
        assert_eq!(DurablePoint::decode(&bytes[..10]), None);
    }
}
