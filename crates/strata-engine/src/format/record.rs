//! Event records: one per event, inside a frame.
//!
//! ```text
//! offset  size  field
//!      0     4  record length in bytes, header included
//!      4     4  CRC32C of bytes 8..length (lets a reader check one event alone)
//!      8     8  position in the global log
//!     16     8  revision in its stream
//!     24     8  recorded at, microseconds since the Unix epoch
//!     32    16  event id (UUID bytes)
//!     48     1  flags: bit 0 valid_at present, bit 1 binary content
//!     49     1  reserved, zero
//!     50     2  stream name length
//!     52     2  event type length
//!     54     2  reserved, zero (room for an origin: replica id and clock)
//!     56     4  data length
//!     60     4  metadata length
//!     64     8  valid_at, microseconds (only if flag bit 0)
//!      …        stream name, event type, data, metadata
//! ```

use std::ops::Range;

use bytes::Bytes;
use uuid::Uuid;

use super::{u16_at, u32_at, u64_at};
use crate::event::{ContentType, Position, RecordedEvent, Timestamp};

/// Size of the fixed part of a record.
pub const HEADER_LEN: usize = 64;
const FLAG_VALID_AT: u8 = 1;
const FLAG_BINARY: u8 = 2;
const FLAGS_KNOWN: u8 = FLAG_VALID_AT | FLAG_BINARY;

const _: () = assert!(HEADER_LEN == 60 + 4);

/// The fields of an event to encode.
#[derive(Clone, Copy, Debug)]
pub struct RecordFields<'a> {
    /// Position in the global log.
    pub position: u64,
    /// Revision in its stream.
    pub revision: u64,
    /// Recording time.
    pub recorded_at: Timestamp,
    /// Event id.
    pub id: Uuid,
    /// Content type of the data.
    pub content_type: ContentType,
    /// Business time.
    pub valid_at: Option<Timestamp>,
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Data.
    pub data: &'a [u8],
    /// Metadata.
    pub metadata: &'a [u8],
}

impl RecordFields<'_> {
    /// The encoded size of this record.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + if self.valid_at.is_some() { 8 } else { 0 }
            + self.stream.len()
            + self.event_type.len()
            + self.data.len()
            + self.metadata.len()
    }

    /// Appends the record to `out`.
    ///
    /// The caller has checked the limits, so the lengths fit their fields.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let length = self.encoded_len();
        assert!(
            length <= u32::MAX as usize,
            "record length checked by the limits"
        );
        let mut flags = 0;
        if self.valid_at.is_some() {
            flags |= FLAG_VALID_AT;
        }
        if self.content_type == ContentType::Binary {
            flags |= FLAG_BINARY;
        }
        out.extend_from_slice(&(length as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&self.recorded_at.as_micros().to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&[flags, 0]);
        out.extend_from_slice(&(self.stream.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.event_type.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u32).to_le_bytes());
        if let Some(valid_at) = self.valid_at {
            out.extend_from_slice(&valid_at.as_micros().to_le_bytes());
        }
        out.extend_from_slice(self.stream.as_bytes());
        out.extend_from_slice(self.event_type.as_bytes());
        out.extend_from_slice(self.data);
        out.extend_from_slice(self.metadata);
        debug_assert_eq!(out.len() - start, length);
        let crc = crc32c::crc32c(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A decoded record that borrows its strings from the buffer it was read from.
#[derive(Clone, Debug)]
pub struct RecordView<'a> {
    /// Position in the global log.
    pub position: u64,
    /// Revision in its stream.
    pub revision: u64,
    /// Recording time.
    pub recorded_at: Timestamp,
    /// Event id.
    pub id: Uuid,
    /// Content type.
    pub content_type: ContentType,
    /// Business time.
    pub valid_at: Option<Timestamp>,
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Where the data lies in the buffer.
    pub data: Range<usize>,
    /// Where the metadata lies in the buffer.
    pub metadata: Range<usize>,
}

impl RecordView<'_> {
    /// An owned event whose data and metadata share `buffer` (the buffer the view was
    /// decoded from) without copying.
    pub fn to_event(&self, buffer: &Bytes) -> RecordedEvent {
        RecordedEvent {
            stream: self.stream.to_owned(),
            revision: self.revision,
            position: Position(self.position),
            id: self.id,
            event_type: self.event_type.to_owned(),
            data: buffer.slice(self.data.clone()),
            metadata: buffer.slice(self.metadata.clone()),
            content_type: self.content_type,
            recorded_at: self.recorded_at,
            valid_at: self.valid_at,
        }
    }
}

/// The total length of the record starting at `at`, if its length field is readable.
pub fn record_len(buffer: &[u8], at: usize) -> Option<usize> {
    (buffer.len() >= at + 4).then(|| u32_at(buffer, at) as usize)
}

/// Decodes the record at `at` in `buffer`. With `check_crc`, verifies the record's own
/// checksum (frames already checked by their frame checksum skip it).
pub fn decode(buffer: &[u8], at: usize, check_crc: bool) -> Result<RecordView<'_>, &'static str> {
    let rest = buffer
        .get(at..)
        .ok_or("record starts past the end of its frame")?;
    if rest.len() < HEADER_LEN {
        return Err("record header truncated");
    }
    let length = u32_at(rest, 0) as usize;
    if length < HEADER_LEN || length > rest.len() {
        return Err("record length out of bounds");
    }
    let record = &rest[..length];
    if check_crc && crc32c::crc32c(&record[8..]) != u32_at(record, 4) {
        return Err("record checksum mismatch");
    }
    let flags = record[48];
    if flags & !FLAGS_KNOWN != 0 {
        return Err("record has unknown flags");
    }
    let stream_len = usize::from(u16_at(record, 50));
    let type_len = usize::from(u16_at(record, 52));
    let data_len = u32_at(record, 56) as usize;
    let meta_len = u32_at(record, 60) as usize;
    let cursor = if flags & FLAG_VALID_AT != 0 {
        HEADER_LEN + 8
    } else {
        HEADER_LEN
    };
    // Checked before any variable part is read: from here on every field lies inside
    // the record.
    if cursor + stream_len + type_len + data_len + meta_len != length {
        return Err("record field lengths do not add up to its length");
    }
    let valid_at =
        (flags & FLAG_VALID_AT != 0).then(|| Timestamp::from_micros(u64_at(record, HEADER_LEN)));
    let mut cursor = cursor;
    let stream = std::str::from_utf8(&record[cursor..cursor + stream_len])
        .map_err(|_| "stream name is not UTF-8")?;
    cursor += stream_len;
    let event_type = std::str::from_utf8(&record[cursor..cursor + type_len])
        .map_err(|_| "event type is not UTF-8")?;
    cursor += type_len;
    let data = at + cursor..at + cursor + data_len;
    cursor += data_len;
    let metadata = at + cursor..at + cursor + meta_len;
    let mut id = [0u8; 16];
    id.copy_from_slice(&record[32..48]);
    Ok(RecordView {
        position: u64_at(record, 8),
        revision: u64_at(record, 16),
        recorded_at: Timestamp::from_micros(u64_at(record, 24)),
        id: Uuid::from_bytes(id),
        content_type: if flags & FLAG_BINARY != 0 {
            ContentType::Binary
        } else {
            ContentType::Json
        },
        valid_at,
        stream,
        event_type,
        data,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `record` fuzz target: a record whose flags announce `valid_at` but
    /// whose length leaves no room for it was read past its end (a panic).
    #[test]
    fn a_valid_at_flag_without_room_for_it_is_refused() {
        let fields = RecordFields {
            position: 0,
            revision: 0,
            recorded_at: Timestamp::from_micros(0),
            id: Uuid::nil(),
            content_type: ContentType::Json,
            valid_at: None,
            stream: "",
            event_type: "",
            data: b"",
            metadata: b"",
        };
        let mut out = Vec::new();
        fields.encode(&mut out);
        assert_eq!(out.len(), HEADER_LEN);
        out[48] |= FLAG_VALID_AT;
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&out, 0, true).map(|view| view.valid_at),
            Err("record field lengths do not add up to its length")
        );
    }

    #[test]
    fn record_round_trips() {
        let fields = RecordFields {
            position: 5,
            revision: 2,
            recorded_at: Timestamp::from_micros(1_000),
            id: Uuid::new_v4(),
            content_type: ContentType::Binary,
            valid_at: Some(Timestamp::from_micros(77)),
            stream: "order-1",
            event_type: "Placed",
            data: b"{}",
            metadata: b"m",
        };
        let mut out = vec![0xAA; 3];
        fields.encode(&mut out);
        assert_eq!(out.len() - 3, fields.encoded_len());
        let view = decode(&out, 3, true).expect("valid record");
        let event = view.to_event(&Bytes::from(out.clone()));
        assert_eq!(event.stream, "order-1");
        assert_eq!(event.revision, 2);
        assert_eq!(event.position, Position(5));
        assert_eq!(event.id, fields.id);
        assert_eq!(&event.data[..], b"{}");
        assert_eq!(&event.metadata[..], b"m");
        assert_eq!(event.valid_at, Some(Timestamp::from_micros(77)));
        assert_eq!(event.content_type, ContentType::Binary);
        for i in 3..out.len() {
            let mut damaged = out.clone();
            damaged[i] ^= 1;
            assert!(decode(&damaged, 3, true).is_err(), "flip at {i} undetected");
        }
    }
}
