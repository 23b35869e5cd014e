//! `strata verify`: reads every byte of every segment and checks every checksum, the
//! order of positions and the revisions of every stream, without changing anything.

use std::collections::HashMap;

use super::format::segment::{self, SegmentHeader};
use super::format::{frame, record};
use super::index::table;
use super::io::{read_exact_at, read_full_at, Storage, StorageFile};
use super::recovery::later_batch_frame;
use super::recovery::TruncatedTail;
use crate::error::StorageError;

/// Bytes read at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Frames whose checksum matched.
    pub frames: u64,
    /// Events whose checksum matched.
    pub events: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Segment tables checked against their segments.
    pub tables: u64,
    /// A torn tail (an interrupted last write, never acknowledged) that the next open
    /// will cut off. Not an error.
    pub torn_tail: Option<TruncatedTail>,
    /// Every damage found. Empty means the log is intact.
    pub errors: Vec<StorageError>,
}

impl VerifyReport {
    /// Whether no damage was found.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks every segment in `storage`. `progress` is called with (bytes done, bytes in
/// all) as the check goes. Fails only if the files cannot be listed or read.
pub fn verify(
    storage: &dyn Storage,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, StorageError> {
    let where_ = storage.describe();
    let names = storage
        .list()
        .map_err(|e| StorageError::io("list", &where_, e))?;
    let mut numbers: Vec<u32> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    numbers.sort_unstable();
    let mut report = VerifyReport::default();
    let mut files = Vec::new();
    let mut total = 0;
    for &number in &numbers {
        let name = segment::file_name(number);
        let file = storage
            .open(&name)
            .map_err(|e| StorageError::io("open", &name, e))?;
        let len = file.len().map_err(|e| StorageError::io("stat", &name, e))?;
        total += len;
        files.push((number, name, file, len));
    }
    let mut check = Check {
        report: &mut report,
        revisions: HashMap::new(),
        next_position: None,
        done: 0,
        total,
    };
    let count = files.len();
    for (i, (number, name, file, len)) in files.into_iter().enumerate() {
        if i > 0 && numbers[i - 1] + 1 != number {
            check.report.errors.push(StorageError::corrupt(
                segment::file_name(numbers[i - 1] + 1),
                0,
                "segment file is missing",
            ));
        }
        check.report.segments += 1;
        if let Err(error) = check.segment(&name, &*file, len, i + 1 == count, &mut progress) {
            check.report.errors.push(error);
            check.next_position = None;
        }
        check.done += len;
        progress(check.done, total);
    }
    check_tables(storage, &names, &numbers, &mut report)?;
    Ok(report)
}

/// Checks each segment table of a sealed segment byte for byte against the table its
/// segment gives (tables are derived and encoded deterministically). A table that
/// differs is reported: reads through it could fail. Deleting it is the repair: the
/// next open rebuilds it.
fn check_tables(
    storage: &dyn Storage,
    names: &[String],
    numbers: &[u32],
    report: &mut VerifyReport,
) -> Result<(), StorageError> {
    let Some(&last) = numbers.last() else {
        return Ok(());
    };
    let mut tables: Vec<u32> = names
        .iter()
        .filter(|n| n.ends_with(".tbl"))
        .filter_map(|n| table::parse_file_name(n))
        .filter(|&number| number < last && numbers.contains(&number))
        .collect();
    tables.sort_unstable();
    for number in tables {
        let name = table::file_name(number);
        let segment_name = segment::file_name(number);
        let file = storage
            .open(&segment_name)
            .map_err(|e| StorageError::io("open", &segment_name, e))?;
        let len = file
            .len()
            .map_err(|e| StorageError::io("stat", &segment_name, e))?;
        let mut header = [0u8; segment::HEADER_LEN];
        let got = read_full_at(&*file, &mut header, 0)
            .map_err(|e| StorageError::io("read", &segment_name, e))?;
        let Ok(header) = SegmentHeader::decode(&header[..got]) else {
            continue; // reported with the segment
        };
        let Ok(entries) = table::entries_of_segment(&*file, number, len) else {
            continue; // reported with the segment
        };
        let expected = table::encode(number, header.store_id, len, &entries);
        let found = storage
            .open(&name)
            .and_then(|f| {
                let mut bytes = vec![
                    0u8;
                    usize::try_from(f.len()?)
                        .unwrap_or(usize::MAX)
                        .min(expected.len() + 1)
                ];
                let got = read_full_at(&*f, &mut bytes, 0)?;
                bytes.truncate(got);
                Ok(bytes)
            })
            .map_err(|e| StorageError::io("read", &name, e))?;
        report.tables += 1;
        report.bytes += found.len() as u64;
        if found != expected {
            let at = found
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(found.len().min(expected.len()));
            report.errors.push(StorageError::corrupt(
                &name,
                at as u64,
                "segment table does not match its segment (derived data: delete the file and \
                 reopen the store to rebuild it)",
            ));
        }
    }
    Ok(())
}

struct Check<'a> {
    report: &'a mut VerifyReport,
    revisions: HashMap<String, u64>,
    next_position: Option<u64>,
    done: u64,
    total: u64,
}

impl Check<'_> {
    fn segment(
        &mut self,
        name: &str,
        file: &dyn StorageFile,
        len: u64,
        is_last: bool,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(), StorageError> {
        let mut header = [0u8; segment::HEADER_LEN];
        let got =
            read_full_at(file, &mut header, 0).map_err(|e| StorageError::io("read", name, e))?;
        let header = SegmentHeader::decode(&header[..got])
            .map_err(|e| StorageError::corrupt(name, 0, format!("bad segment header: {e:?}")))?;
        let expected = self.next_position.unwrap_or(header.first_position);
        if header.first_position != expected {
            return Err(StorageError::corrupt(
                name,
                24,
                "segment does not start where the previous one ends",
            ));
        }
        self.next_position = Some(header.first_position);
        let mut offset = segment::HEADER_LEN as u64;
        while offset < len {
            let want = (CHUNK_BYTES as u64).min(len - offset) as usize;
            let mut buffer = vec![0u8; want];
            read_exact_at(file, &mut buffer, offset)
                .map_err(|e| StorageError::io("read", name, e))?;
            if let Ok(h) = frame::parse_header(&buffer) {
                if h.length as usize > want && offset + u64::from(h.length) <= len {
                    buffer.resize(h.length as usize, 0);
                    read_exact_at(file, &mut buffer[want..], offset + want as u64)
                        .map_err(|e| StorageError::io("read", name, e))?;
                }
            }
            let mut at = 0;
            while at < buffer.len() {
                let here = offset + at as u64;
                match frame::check(&buffer[at..]) {
                    Ok(h) => {
                        self.frame(name, &buffer[at..at + h.length as usize], &h, here)?;
                        at += h.length as usize;
                    }
                    Err(frame::FrameError::Truncated)
                        if at > 0 && here + ((buffer.len() - at) as u64) < len =>
                    {
                        break
                    }
                    Err(error) => {
                        let reason = match error {
                            frame::FrameError::Truncated => "frame truncated",
                            frame::FrameError::Invalid(reason) => reason,
                        };
                        return self.bad_frame(name, file, here, len, is_last, reason);
                    }
                }
            }
            offset += at as u64;
            self.report.bytes = self.done + offset;
            progress(self.done + offset, self.total);
        }
        self.report.bytes = self.done + len;
        Ok(())
    }

    fn frame(
        &mut self,
        name: &str,
        bytes: &[u8],
        header: &frame::FrameHeader,
        offset: u64,
    ) -> Result<(), StorageError> {
        if Some(header.first_position) != self.next_position {
            return Err(StorageError::corrupt(
                name,
                offset,
                "frame position out of sequence",
            ));
        }
        let offsets = frame::record_offsets(bytes, header)
            .map_err(|_| StorageError::corrupt(name, offset, "frame records do not add up"))?;
        for (i, at) in offsets.into_iter().enumerate() {
            let record_offset = offset + at as u64;
            let view = record::decode(bytes, at, true)
                .map_err(|reason| StorageError::corrupt(name, record_offset, reason))?;
            if view.position != header.first_position + i as u64 {
                return Err(StorageError::corrupt(
                    name,
                    record_offset,
                    "record position out of sequence",
                ));
            }
            let next = self.revisions.entry(view.stream.to_owned()).or_insert(0);
            if view.revision != *next {
                return Err(StorageError::corrupt(
                    name,
                    record_offset,
                    format!(
                        "stream {:?} has revision {} where {} was due",
                        view.stream, view.revision, next
                    ),
                ));
            }
            *next += 1;
            self.report.events += 1;
        }
        self.report.frames += 1;
        self.next_position = Some(header.end_position());
        Ok(())
    }

    fn bad_frame(
        &mut self,
        name: &str,
        file: &dyn StorageFile,
        bad: u64,
        len: u64,
        is_last: bool,
        reason: &str,
    ) -> Result<(), StorageError> {
        if !is_last {
            return Err(StorageError::corrupt(
                name,
                bad,
                format!("{reason} (in a sealed segment)"),
            ));
        }
        let mut tail = vec![0u8; (len - bad) as usize];
        read_exact_at(file, &mut tail, bad).map_err(|e| StorageError::io("read", name, e))?;
        if let Some(later) = later_batch_frame(&tail, bad, self.next_position.unwrap_or(0)) {
            return Err(StorageError::corrupt(
                name,
                bad,
                format!("{reason}, and a valid frame of a later batch follows at offset {later}"),
            ));
        }
        self.report.torn_tail = Some(TruncatedTail {
            file: name.to_owned(),
            offset: bad,
            bytes: len - bad,
            reason: reason.to_owned(),
            kept_in: None,
        });
        Ok(())
    }
}
