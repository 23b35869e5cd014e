//! Segment files: a 64-byte header, then frames back to back.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "STRATSEG"
//!      8     4  format version (1)
//!     12     4  header length (64)
//!     16     8  segment number (1, 2, 3, … with no gaps)
//!     24     8  position of the first event the segment holds
//!     32     8  creation time, microseconds since the Unix epoch
//!     40    16  store id (a UUID shared by every segment and the checkpoint of one
//!               store; all zero in stores written before store ids existed)
//!     56     4  reserved, zero
//!     60     4  CRC32C of bytes 0..60
//! ```
//!
//! Invariant: every segment but the last is complete and synced: the writer syncs a
//! segment before it creates the next one, so a torn tail can only be in the last.

use super::{u32_at, u64_at};

/// Magic bytes at the start of every segment file.
pub const MAGIC: [u8; 8] = *b"STRATSEG";
/// The segment format version this build writes and the newest it reads.
pub const VERSION: u32 = 1;
/// Size of the segment header in bytes.
pub const HEADER_LEN: usize = 64;

const _: () = assert!(HEADER_LEN == 60 + 4);

/// The file name of segment `number`.
pub fn file_name(number: u32) -> String {
    format!("{number:010}.seg")
}

/// The segment number in a file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The fields of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number.
    pub number: u32,
    /// Position of its first event.
    pub first_position: u64,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_micros: u64,
    /// The store the segment belongs to (nil in stores older than store ids).
    pub store_id: uuid::Uuid,
}

/// Why a segment header was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short,
    /// Wrong magic bytes or checksum.
    Invalid(&'static str),
    /// A format version this build does not read.
    Version(u32),
}

impl SegmentHeader {
    /// The header's 64 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        bytes[16..24].copy_from_slice(&u64::from(self.number).to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_position.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.created_at_micros.to_le_bytes());
        bytes[40..56].copy_from_slice(self.store_id.as_bytes());
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::Short);
        }
        if bytes[0..8] != MAGIC {
            return Err(HeaderError::Invalid("bad magic bytes"));
        }
        if crc32c::crc32c(&bytes[..60]) != u32_at(bytes, 60) {
            return Err(HeaderError::Invalid("header checksum mismatch"));
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let number = u32::try_from(u64_at(bytes, 16))
            .map_err(|_| HeaderError::Invalid("segment number out of range"))?;
        Ok(SegmentHeader {
            number,
            first_position: u64_at(bytes, 24),
            created_at_micros: u64_at(bytes, 32),
            store_id: uuid::Uuid::from_bytes(
                bytes[40..56]
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("a 16-byte range of a checked header")),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            number: 7,
            first_position: 12345,
            created_at_micros: 99,
            store_id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for i in 0..HEADER_LEN {
            let mut damaged = bytes;
            damaged[i] ^= 0x10;
            assert!(
                SegmentHeader::decode(&damaged).is_err(),
                "flip at {i} undetected"
            );
        }
        assert_eq!(SegmentHeader::decode(&bytes[..10]), Err(HeaderError::Short));
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("index.ckpt"), None);
    }
}
