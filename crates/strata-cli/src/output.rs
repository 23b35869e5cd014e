//! Rendering events and lists: JSON lines, aligned tables, base64 and progress bars.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use strata::{ContentType, RecordedEvent};

use crate::error::{output_error, CliError};

/// How events and lists are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// Aligned columns for people.
    Table,
}

/// Widest data column of a table, in characters.
const DATA_PREVIEW_CHARS: usize = 60;

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `bytes` as standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    BASE64_ALPHABET[(n >> (18 - 6 * i)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional; no whitespace).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for (i, c) in text.bytes().enumerate() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("invalid base64 character at offset {i}")),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err("invalid base64 length".into());
    }
    Ok(out)
}

/// How a payload (data or metadata) appears in JSON output.
enum Payload<'a> {
    /// No bytes (metadata only): `null`.
    Empty,
    /// JSON kept exactly as stored.
    Raw(&'a RawValue),
    /// JSON re-serialised compactly (it spanned several lines).
    Value(serde_json::Value),
    /// Anything else, as base64 under the `…_base64` key.
    Base64(String),
}

/// Chooses how to show `bytes`. With `exact`, the output must give back the very same
/// bytes on import, so JSON that would need reformatting falls back to base64.
fn payload(bytes: &[u8], as_json: bool, exact: bool, empty_is_null: bool) -> Payload<'_> {
    if empty_is_null && bytes.is_empty() {
        return Payload::Empty;
    }
    if as_json {
        if let Ok(raw) = serde_json::from_slice::<&RawValue>(bytes) {
            let text = raw.get();
            let single_line = !text.contains(['\n', '\r']);
            // `null` metadata would read back as "no metadata".
            let ambiguous = empty_is_null && text == "null";
            if text.len() == bytes.len() && single_line && !(exact && ambiguous) {
                return Payload::Raw(raw);
            }
            if !exact {
                if let Ok(value) = serde_json::from_str(text) {
                    return Payload::Value(value);
                }
            }
        }
    }
    Payload::Base64(base64_encode(bytes))
}

fn serialize_payload<M: SerializeMap>(
    map: &mut M,
    key: &'static str,
    base64_key: &'static str,
    payload: Payload<'_>,
) -> Result<(), M::Error> {
    match payload {
        Payload::Empty => map.serialize_entry(key, &()),
        Payload::Raw(raw) => map.serialize_entry(key, raw),
        Payload::Value(value) => map.serialize_entry(key, &value),
        Payload::Base64(text) => map.serialize_entry(base64_key, &text),
    }
}

/// An event as one JSON object: `stream`, `revision`, `position`, `id`, `type`,
/// `content_type`, `data` (or `data_base64`), `metadata` (or `metadata_base64`; `null`
/// when empty), `recorded_at` and `valid_at`. `strata import` reads this shape back.
pub struct EventJson<'a> {
    /// The event.
    pub event: &'a RecordedEvent,
    /// Whether the output must reproduce data and metadata byte for byte (export), or
    /// may reformat multi-line JSON for reading (read, tail).
    pub exact: bool,
}

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut map = serializer.serialize_map(Some(10))?;
        map.serialize_entry("stream", &e.stream)?;
        map.serialize_entry("revision", &e.revision)?;
        map.serialize_entry("position", &e.position)?;
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("type", &e.event_type)?;
        map.serialize_entry("content_type", &e.content_type)?;
        let data_is_json = e.content_type == ContentType::Json;
        let data = payload(&e.data, data_is_json, self.exact, false);
        serialize_payload(&mut map, "data", "data_base64", data)?;
        let metadata = payload(&e.metadata, true, self.exact, true);
        serialize_payload(&mut map, "metadata", "metadata_base64", metadata)?;
        map.serialize_entry("recorded_at", &e.recorded_at)?;
        map.serialize_entry("valid_at", &e.valid_at)?;
        map.end()
    }
}

/// Writes `value` as one line of JSON.
pub fn write_json_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, value).map_err(|e| output_error(e.into()))?;
    out.write_all(b"\n").map_err(output_error)
}

/// A short, single-line preview of an event's data for tables.
pub fn data_preview(event: &RecordedEvent) -> String {
    let text = match payload(
        &event.data,
        event.content_type == ContentType::Json,
        false,
        false,
    ) {
        Payload::Raw(raw) => raw.get().to_owned(),
        Payload::Value(value) => value.to_string(),
        Payload::Empty | Payload::Base64(_) => {
            format!(
                "<{} bytes, {}>",
                event.data.len(),
                event.content_type.mime()
            )
        }
    };
    truncate_chars(&single_line(&text), DATA_PREVIEW_CHARS)
}

/// Replaces control characters with spaces.
fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A time in milliseconds since the Unix epoch, as RFC 3339 in UTC to the second.
pub fn time_ms(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Column headers of an event table.
pub const EVENT_COLUMNS: &[&str] = &[
    "POSITION",
    "STREAM",
    "REVISION",
    "TYPE",
    "RECORDED_AT",
    "DATA",
];

/// The cells of an event's table row, in the order of [`EVENT_COLUMNS`].
pub fn event_row(event: &RecordedEvent) -> Vec<String> {
    vec![
        event.position.to_string(),
        single_line(&event.stream),
        event.revision.to_string(),
        single_line(&event.event_type),
        event.recorded_at.to_string(),
        data_preview(event),
    ]
}

/// An aligned table printed in pieces: columns widen to fit what has been seen, and the
/// header is printed before the first rows. The last column is not padded.
pub struct Table {
    headers: &'static [&'static str],
    widths: Vec<usize>,
    header_written: bool,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &'static [&'static str]) -> Table {
        Table {
            headers,
            widths: headers.iter().map(|h| h.chars().count()).collect(),
            header_written: false,
        }
    }

    /// Widens the columns to fit `rows`, then writes them (after the header, the first
    /// time).
    pub fn write(&mut self, out: &mut impl Write, rows: &[Vec<String>]) -> Result<(), CliError> {
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        if !self.header_written {
            self.header_written = true;
            let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
            self.write_row(out, &header)?;
        }
        for row in rows {
            self.write_row(out, row)?;
        }
        Ok(())
    }

    fn write_row(&self, out: &mut impl Write, row: &[String]) -> Result<(), CliError> {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = self.widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(output_error)
    }
}

/// A progress bar on stderr, shown only when stderr is a terminal. `total` is in bytes
/// when `bytes` is set, in events otherwise; `None` shows a spinner.
pub fn progress_bar(total: Option<u64>, bytes: bool, message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match (total, bytes) {
        (Some(total), true) => (
            ProgressBar::new(total),
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ),
        (Some(total), false) => (
            ProgressBar::new(total),
            "{msg} [{bar:40}] {human_pos}/{human_len} events ({elapsed}, {eta} left)",
        ),
        (None, true) => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {bytes} ({bytes_per_sec})",
        ),
        (None, false) => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {human_pos} events ({elapsed})",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text), Ok(bytes.clone()));
            assert_eq!(base64_decode(text.trim_end_matches('=')), Ok(bytes));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_ms(1_700_000_000_999), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn previews_are_cut() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
    }
}
