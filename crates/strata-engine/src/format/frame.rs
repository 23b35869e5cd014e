//! Frames: one per append (one or many streams), all-or-nothing on disk.
//!
//! ```text
//! offset  size  field
//!      0     4  magic 0x4D524653 ("SFRM")
//!      4     4  frame length in bytes, header included
//!      8     4  CRC32C of bytes 12..length
//!     12     1  format version (1)
//!     13     1  flags (0; reserved for compression and a hash chain)
//!     14     2  reserved, zero
//!     16     8  position of the frame's first event
//!     24     4  number of events
//!     28     4  offset in the segment of the first frame of the same write batch
//!     32     8  reserved, zero (room for a hash of the previous frame)
//!     40     …  event records, back to back
//! ```
//!
//! The batch offset is what tells a torn write from corruption at recovery: the writer
//! syncs after each batch, so bytes the disk may have lost or reordered all belong to
//! the last batch, and every frame of that batch names where it started.

use super::record;
use super::{u32_at, u64_at};

/// Magic number at the start of every frame.
pub const MAGIC: u32 = 0x4D52_4653;
/// The frame format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Size of the frame header.
pub const HEADER_LEN: usize = 40;

const _: () = assert!(HEADER_LEN == 32 + 8);

/// The fields of a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame length, header included.
    pub length: u32,
    /// Position of the first event.
    pub first_position: u64,
    /// Number of events.
    pub event_count: u32,
    /// Offset in the segment of the first frame of this frame's write batch.
    pub batch_offset: u32,
}

impl FrameHeader {
    /// The position right after the frame's last event.
    pub fn end_position(&self) -> u64 {
        self.first_position + u64::from(self.event_count)
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not enough bytes for the header or for the length the header declares.
    Truncated,
    /// A check failed.
    Invalid(&'static str),
}

/// Starts a frame in `out`; push records with [`record::RecordFields::encode`], then
/// call [`finish`] with the returned start offset.
pub fn begin(out: &mut Vec<u8>, first_position: u64, batch_offset: u32) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&first_position.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&batch_offset.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    start
}

/// Completes the frame that [`begin`] started at `start`.
pub fn finish(out: &mut [u8], start: usize, event_count: u32) {
    let length = out.len() - start;
    assert!(
        length <= u32::MAX as usize,
        "frame length checked by the limits"
    );
    out[start + 4..start + 8].copy_from_slice(&(length as u32).to_le_bytes());
    out[start + 24..start + 28].copy_from_slice(&event_count.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the header at the start of `bytes` without checking the checksum.
pub fn parse_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    if u32_at(bytes, 0) != MAGIC {
        return Err(FrameError::Invalid("bad frame magic"));
    }
    let length = u32_at(bytes, 4);
    if (length as usize) < HEADER_LEN {
        return Err(FrameError::Invalid("frame length smaller than its header"));
    }
    if bytes[12] != VERSION {
        return Err(FrameError::Invalid("unknown frame version"));
    }
    let first_position = u64_at(bytes, 16);
    let event_count = u32_at(bytes, 24);
    // Invariant relied on by `end_position` and by every reader: the positions of the
    // frame's events are representable.
    if first_position.checked_add(u64::from(event_count)).is_none() {
        return Err(FrameError::Invalid("frame positions overflow"));
    }
    Ok(FrameHeader {
        length,
        first_position,
        event_count,
        batch_offset: u32_at(bytes, 28),
    })
}

/// Parses and checks the frame at the start of `bytes` (header, length, checksum).
pub fn check(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    let header = parse_header(bytes)?;
    let length = header.length as usize;
    if bytes.len() < length {
        return Err(FrameError::Truncated);
    }
    if crc32c::crc32c(&bytes[12..length]) != u32_at(bytes, 8) {
        return Err(FrameError::Invalid("frame checksum mismatch"));
    }
    Ok(header)
}

/// The records of a checked frame: yields the offset (in `frame`) of each record.
/// Fails if the records do not exactly fill the frame or their count differs.
pub fn record_offsets(frame: &[u8], header: &FrameHeader) -> Result<Vec<usize>, FrameError> {
    let end = header.length as usize;
    // The count field comes from the file: check it against what the frame can hold
    // before sizing anything by it.
    let most = end.saturating_sub(HEADER_LEN) / record::HEADER_LEN;
    if header.event_count as usize > most {
        return Err(FrameError::Invalid(
            "event count larger than the frame can hold",
        ));
    }
    let mut offsets = Vec::with_capacity(header.event_count as usize);
    let mut at = HEADER_LEN;
    while at < end {
        let length =
            record::record_len(frame, at).ok_or(FrameError::Invalid("record truncated"))?;
        if length < record::HEADER_LEN || at + length > end {
            return Err(FrameError::Invalid("record length out of bounds"));
        }
        offsets.push(at);
        at += length;
    }
    if offsets.len() != header.event_count as usize {
        return Err(FrameError::Invalid(
            "event count does not match the records",
        ));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ContentType, Timestamp};
    use uuid::Uuid;

    fn sample_frame() -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin(&mut out, 10, 0);
        for i in 0..3u64 {
            record::RecordFields {
                position: 10 + i,
                revision: i,
                recorded_at: Timestamp::from_micros(1),
                id: Uuid::new_v4(),
                content_type: ContentType::Json,
                valid_at: None,
                stream: "s",
                event_type: "t",
                data: b"{\"n\":1}",
                metadata: b"",
            }
            .encode(&mut out);
        }
        finish(&mut out, start, 3);
        out
    }

    /// Rewrites the frame's checksum after a test changed its header, as a hostile
    /// writer of the file could.
    fn reseal(frame: &mut [u8]) {
        let crc = crc32c::crc32c(&frame[12..]);
        frame[8..12].copy_from_slice(&crc.to_le_bytes());
    }

    /// Found by the `frame` fuzz target: the count field sized an allocation (30 GB for
    /// this one) before the records were counted.
    #[test]
    fn a_count_larger_than_the_frame_holds_is_refused_without_allocating_for_it() {
        let mut frame = sample_frame();
        frame[24..28].copy_from_slice(&0xE100_0001u32.to_le_bytes());
        reseal(&mut frame);
        let header = check(&frame).expect("checksum matches");
        assert_eq!(
            record_offsets(&frame, &header),
            Err(FrameError::Invalid(
                "event count larger than the frame can hold"
            ))
        );
    }

    /// Found by the `frame` fuzz target: the position after the last event overflowed
    /// (a panic in debug builds, a wrapped position in release builds).
    #[test]
    fn positions_past_the_end_of_the_log_are_refused() {
        let mut frame = sample_frame();
        frame[16..24].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        reseal(&mut frame);
        assert_eq!(
            parse_header(&frame),
            Err(FrameError::Invalid("frame positions overflow"))
        );
        assert_eq!(
            check(&frame),
            Err(FrameError::Invalid("frame positions overflow"))
        );
    }

    #[test]
    fn frame_round_trips_and_every_flip_is_caught() {
        let frame = sample_frame();
        let header = check(&frame).expect("valid frame");
        assert_eq!(header.first_position, 10);
        assert_eq!(header.event_count, 3);
        assert_eq!(header.end_position(), 13);
        assert_eq!(record_offsets(&frame, &header).map(|o| o.len()), Ok(3));
        for i in 0..frame.len() {
            let mut damaged = frame.clone();
            damaged[i] ^= 0x40;
            assert!(check(&damaged).is_err(), "flip at byte {i} undetected");
        }
        for cut in 0..frame.len() {
            assert!(
                check(&frame[..cut]).is_err(),
                "truncation at {cut} undetected"
            );
        }
    }
}
