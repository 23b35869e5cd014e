//! Walking the frames of a range of a segment file: every frame's checksum checked, its
//! records decoded on demand. It needs a file and nothing of the engine's state, so
//! that readers, recovery and the table builder share it without depending on each
//! other.

use std::ops::ControlFlow;

use bytes::Bytes;

use crate::error::StorageError;
use crate::format::{frame, record};
use crate::io::{read_exact_at, StorageFile};

/// Bytes read at a time when scanning frames.
const CHUNK_BYTES: usize = 256 << 10;

/// A frame found by [`for_each_frame`].
pub struct FrameRef<'a> {
    /// The chunk the frame lies in.
    pub chunk: &'a Bytes,
    /// Where the frame starts in the chunk.
    pub at: usize,
    /// Its checked header.
    pub header: frame::FrameHeader,
    /// Its offset in the segment file.
    pub file_offset: u64,
}

impl FrameRef<'_> {
    /// Calls `f` with each record of the frame: its view (ranges relative to the chunk)
    /// and its offset in the segment file.
    pub fn for_each_record(
        &self,
        file_name: &str,
        mut f: impl FnMut(record::RecordView<'_>, u64) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, StorageError> {
        let end = self.at + self.header.length as usize;
        let mut at = self.at + frame::HEADER_LEN;
        let frame_bytes = &self.chunk[..end];
        while at < end {
            let file_offset = self.file_offset + (at - self.at) as u64;
            let view = record::decode(frame_bytes, at, false)
                .map_err(|reason| StorageError::corrupt(file_name, file_offset, reason))?;
            let length = record::record_len(frame_bytes, at).unwrap_or(0);
            at += length;
            if f(view, file_offset).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// Calls `f` with every frame of `file` between `start` and `end`, checking each frame's
/// checksum. The range must hold only durable, complete frames: anything else is
/// corruption.
pub fn for_each_frame(
    file: &dyn StorageFile,
    file_name: &str,
    start: u64,
    end: u64,
    mut f: impl FnMut(&FrameRef<'_>) -> Result<ControlFlow<()>, StorageError>,
) -> Result<ControlFlow<()>, StorageError> {
    let mut offset = start;
    while offset < end {
        let want = CHUNK_BYTES.min((end - offset) as usize);
        let mut buffer = vec![0u8; want];
        read_exact_at(file, &mut buffer, offset)
            .map_err(|e| StorageError::io("read", file_name, e))?;
        let header =
            frame::parse_header(&buffer).map_err(|e| corrupt_frame(file_name, offset, e))?;
        if header.length as usize > buffer.len() {
            if offset + u64::from(header.length) > end {
                return Err(StorageError::corrupt(
                    file_name,
                    offset,
                    "frame extends past the end of the durable log",
                ));
            }
            buffer.resize(header.length as usize, 0);
            read_exact_at(file, &mut buffer[want..], offset + want as u64)
                .map_err(|e| StorageError::io("read", file_name, e))?;
        }
        let chunk = Bytes::from(buffer);
        let mut at = 0;
        while chunk.len() - at >= frame::HEADER_LEN {
            let file_offset = offset + at as u64;
            let header = match frame::check(&chunk[at..]) {
                Ok(header) => header,
                Err(frame::FrameError::Truncated) if at > 0 => break,
                Err(error) => return Err(corrupt_frame(file_name, file_offset, error)),
            };
            let found = FrameRef {
                chunk: &chunk,
                at,
                header,
                file_offset,
            };
            if f(&found)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
            at += header.length as usize;
        }
        if at == 0 {
            return Err(StorageError::corrupt(file_name, offset, "frame truncated"));
        }
        offset += at as u64;
    }
    Ok(ControlFlow::Continue(()))
}

fn corrupt_frame(file_name: &str, offset: u64, error: frame::FrameError) -> StorageError {
    let reason = match error {
        frame::FrameError::Truncated => "frame truncated",
        frame::FrameError::Invalid(reason) => reason,
    };
    StorageError::corrupt(file_name, offset, reason)
}
