//! Reading events from JSON lines (`strata append --file`, `strata import`).
//!
//! Each line is an object in the shape `strata read --format json` and `strata export`
//! print: `type` (or `event_type`), `data` (any JSON value) or `data_base64`, and
//! optionally `metadata` / `metadata_base64`, `id`, `content_type`, `valid_at`,
//! `recorded_at`, `stream` and `revision`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use strata::{ContentType, EventData, Timestamp};
use uuid::Uuid;

use crate::error::CliError;
use crate::output::base64_decode;

/// One line of JSON input, as parsed.
#[derive(Debug, Deserialize)]
pub struct EventLine {
    /// The stream (required by `import`, ignored by `append`).
    #[serde(default)]
    pub stream: Option<String>,
    /// The event's revision in its stream (`import` uses it for idempotency).
    #[serde(default)]
    pub revision: Option<u64>,
    /// The event's id; a fresh one if absent.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The event type.
    #[serde(default, rename = "type", alias = "event_type")]
    pub event_type: Option<String>,
    /// The data as JSON, kept exactly as written.
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Box<RawValue>>,
    /// The data as base64 (binary or exactly preserved JSON).
    #[serde(default)]
    pub data_base64: Option<String>,
    /// The metadata as JSON (`null`: none).
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Box<RawValue>>,
    /// The metadata as base64.
    #[serde(default)]
    pub metadata_base64: Option<String>,
    /// How the data is encoded: `json` or `binary`.
    #[serde(default)]
    pub content_type: Option<ContentType>,
    /// When the event was first recorded (kept by `import`).
    #[serde(default)]
    pub recorded_at: Option<Timestamp>,
    /// The business time of the event.
    #[serde(default)]
    pub valid_at: Option<Timestamp>,
}

/// Deserialises a field that is present, even if it is `null` (which `Option` would
/// otherwise turn into `None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

impl EventLine {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<EventLine, String> {
        serde_json::from_str(line).map_err(|error| json_message(&error))
    }

    /// The event this line describes; `default_type` is used when the line has none.
    /// Keeps `recorded_at` only with `keep_recorded_at` (imports).
    pub fn to_event(
        &self,
        default_type: Option<&str>,
        keep_recorded_at: bool,
    ) -> Result<EventData, String> {
        let event_type = self
            .event_type
            .as_deref()
            .or(default_type)
            .ok_or("missing \"type\" (or pass --type)")?;
        let (data, content_type) = match (&self.data, &self.data_base64) {
            (Some(_), Some(_)) => return Err("has both \"data\" and \"data_base64\"".into()),
            (Some(raw), None) => (
                Bytes::copy_from_slice(raw.get().as_bytes()),
                self.content_type.unwrap_or(ContentType::Json),
            ),
            (None, Some(text)) => (
                Bytes::from(base64_decode(text).map_err(|e| format!("\"data_base64\": {e}"))?),
                self.content_type.unwrap_or(ContentType::Binary),
            ),
            (None, None) => return Err("missing \"data\" (or \"data_base64\")".into()),
        };
        let metadata = match (&self.metadata, &self.metadata_base64) {
            (Some(_), Some(_)) => {
                return Err("has both \"metadata\" and \"metadata_base64\"".into())
            }
            (Some(raw), None) if raw.get() == "null" => Bytes::new(),
            (Some(raw), None) => Bytes::copy_from_slice(raw.get().as_bytes()),
            (None, Some(text)) => {
                Bytes::from(base64_decode(text).map_err(|e| format!("\"metadata_base64\": {e}"))?)
            }
            (None, None) => Bytes::new(),
        };
        let mut event = EventData::new(event_type, data, content_type).with_metadata(metadata);
        if let Some(id) = self.id {
            event = event.with_id(id);
        }
        event.valid_at = self.valid_at;
        if keep_recorded_at {
            event.recorded_at = self.recorded_at;
        }
        Ok(event)
    }
}

/// A serde_json error without its "at line 1 column N" suffix, which is misleading for
/// one line of a larger input: the column is kept.
pub fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(message, _)| message);
    if error.column() > 0 {
        format!("invalid JSON at column {}: {message}", error.column())
    } else {
        format!("invalid JSON: {message}")
    }
}

/// Where lines come from: a file or stdin.
pub struct LineSource {
    /// A name for messages (`stdin` or the path).
    pub name: String,
    /// The reader.
    pub reader: BufReader<Box<dyn Read + Send>>,
    /// The file's size in bytes, when known (for progress).
    pub len: Option<u64>,
    /// Lines read so far.
    pub line: u64,
}

/// Buffer size of input readers.
const READ_BUFFER_BYTES: usize = 1 << 20;

impl LineSource {
    /// Opens `path`, or stdin for `-`.
    pub fn open(path: &Path) -> Result<LineSource, CliError> {
        if path == Path::new("-") {
            return Ok(LineSource {
                name: "stdin".into(),
                reader: BufReader::with_capacity(READ_BUFFER_BYTES, Box::new(io::stdin())),
                len: None,
                line: 0,
            });
        }
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| CliError::io(format!("cannot open {name}"), e))?;
        let len = file.metadata().ok().map(|m| m.len());
        Ok(LineSource {
            name,
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, Box::new(file)),
            len,
            line: 0,
        })
    }

    /// The next non-blank line (without its line ending) and the bytes it took, or `None`
    /// at the end of the input.
    pub fn next_line(&mut self) -> Result<Option<(String, u64)>, CliError> {
        let mut consumed = 0u64;
        loop {
            let mut bytes = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut bytes)
                .map_err(|e| CliError::io(format!("cannot read {}", self.name), e))?;
            if n == 0 {
                return Ok(None);
            }
            consumed += n as u64;
            self.line += 1;
            let text = String::from_utf8(bytes).map_err(|_| self.error("not valid UTF-8"))?;
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                return Ok(Some((text.to_owned(), consumed)));
            }
        }
    }

    /// Whether the next read may wait for more input (nothing is buffered): a good moment
    /// to write what was collected, so that a pipe fed slowly is applied as it comes.
    pub fn would_block(&self) -> bool {
        self.reader.buffer().is_empty()
    }

    /// An error about the current line.
    pub fn error(&self, message: impl Into<String>) -> CliError {
        CliError::Line {
            input: self.name.clone(),
            line: self.line,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_events() {
        let line = EventLine::parse(
            r#"{"event_type":"T","data":null,"metadata":null,"id":"67e55044-10b1-426f-9247-bb680e5fe0c8"}"#,
        )
        .expect("valid line");
        let event = line.to_event(None, false).expect("valid event");
        assert_eq!(event.event_type, "T");
        assert_eq!(&event.data[..], b"null");
        assert!(event.metadata.is_empty());
        assert_eq!(event.content_type, ContentType::Json);

        let line = EventLine::parse(r#"{"data_base64":"AAE="}"#).expect("valid line");
        let event = line.to_event(Some("Bin"), false).expect("valid event");
        assert_eq!(&event.data[..], &[0, 1]);
        assert_eq!(event.content_type, ContentType::Binary);

        let line = EventLine::parse(r#"{"data":1}"#).expect("valid line");
        assert!(line.to_event(None, false).is_err());
        assert!(EventLine::parse("{\"data\":").is_err());
    }
}
