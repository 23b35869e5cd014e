//! `strata append`: appends events to a stream, from arguments or JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use strata::{AppendResult, ContentType, EventData, ExpectedRevision, Position};
use uuid::Uuid;

use super::{close_store, open_store, parse_expected, Target};
use crate::client::{encode, query, EventInput, ServerClient};
use crate::error::{output_error, CliError};
use crate::input::{json_message, EventLine, LineSource};
use crate::output::write_json_line;

/// Options of `strata append`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  strata append order-1 --type Placed '{\"total\": 42}'
  strata append order-1 --expected 0 --type Paid '{\"amount\": 42}' '{\"amount\": 1}'
  printf '{\"type\":\"Shipped\",\"data\":{}}\\n' | strata append order-1 --file -")]
pub struct AppendArgs {
    /// The stream to append to.
    pub stream: String,
    /// The events' data, one JSON value per event (quote strings: '"text"').
    #[arg(value_name = "DATA", conflicts_with = "file")]
    pub values: Vec<String>,
    /// Event type of the events given as arguments (and of JSON lines without a "type").
    #[arg(long = "type", short = 't', value_name = "T")]
    pub event_type: Option<String>,
    /// What the stream must look like for the append to go ahead: `any` (no check),
    /// `no-stream` (it has no events), `exists`, or the revision of its last event.
    #[arg(long, short = 'e', value_name = "REV", default_value = "any", value_parser = parse_expected)]
    pub expected: ExpectedRevision,
    /// Metadata (a JSON value) of the events given as arguments.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Read events from this file of JSON lines (`-`: stdin), each line an object with
    /// "type" (or "event_type"), "data", and optionally "metadata" and "id". All lines
    /// are appended at once: all or nothing.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Runs `strata append`: prints where the events were recorded, as JSON.
pub async fn run(target: &Target, args: AppendArgs) -> Result<(), CliError> {
    let events = match &args.file {
        Some(path) => events_from_lines(path, args.event_type.as_deref())?,
        None => events_from_args(&args)?,
    };
    if events.is_empty() {
        return Err(CliError::Usage(
            "nothing to append: give DATA arguments or --file".into(),
        ));
    }
    if let Some(client) = target.client()? {
        return remote(&client, &args, &events).await;
    }
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    let store = open_store(target, true).await?;
    let result = store
        .append(args.stream.as_str(), args.expected, events)
        .await;
    close_store(store).await?;
    let result = result?;
    let mut out = std::io::stdout().lock();
    write_json_line(&mut out, &result_json(&result, &ids))?;
    out.flush().map_err(output_error)
}

/// The JSON a server answers an append with, in the order `strata append` prints it
/// (the other fields it sends are not printed).
#[derive(Deserialize, Serialize)]
struct RemoteOutput {
    stream: String,
    first_revision: u64,
    last_revision: Option<u64>,
    revisions: Vec<u64>,
    positions: Vec<u64>,
    ids: Vec<Uuid>,
}

/// Appends through a server; prints the same JSON as a local append.
async fn remote(
    client: &ServerClient,
    args: &AppendArgs,
    events: &[EventData],
) -> Result<(), CliError> {
    let inputs: Vec<EventInput> = events.iter().map(EventInput::new).collect();
    let expected = match args.expected {
        ExpectedRevision::Any => "any".to_owned(),
        ExpectedRevision::NoStream => "no_stream".to_owned(),
        ExpectedRevision::StreamExists => "stream_exists".to_owned(),
        ExpectedRevision::Exact(revision) => revision.to_string(),
    };
    let path = format!(
        "/streams/{}{}",
        encode(&args.stream),
        query(&[("expected_revision", expected)])
    );
    let output: RemoteOutput = client
        .post(
            &path,
            &inputs,
            &format!("append to stream {:?}", args.stream),
        )
        .await?;
    let mut out = std::io::stdout().lock();
    write_json_line(&mut out, &output)?;
    out.flush().map_err(output_error)
}

/// The JSON printed for an append.
#[derive(Serialize)]
struct AppendOutput<'a> {
    stream: &'a str,
    first_revision: u64,
    last_revision: Option<u64>,
    revisions: Vec<u64>,
    positions: &'a [Position],
    ids: &'a [Uuid],
}

fn result_json<'a>(result: &'a AppendResult, ids: &'a [Uuid]) -> AppendOutput<'a> {
    let revisions: Vec<u64> = (0..result.positions.len() as u64)
        .map(|i| result.first_revision + i)
        .collect();
    AppendOutput {
        stream: &result.stream,
        first_revision: result.first_revision,
        last_revision: revisions.last().copied(),
        revisions,
        positions: &result.positions,
        ids,
    }
}

fn events_from_args(args: &AppendArgs) -> Result<Vec<EventData>, CliError> {
    if args.values.is_empty() {
        return Ok(Vec::new());
    }
    let event_type = args.event_type.as_deref().ok_or_else(|| {
        CliError::Usage("--type is required when events are given as arguments".into())
    })?;
    let metadata = match &args.metadata {
        Some(text) => {
            let raw = serde_json::from_str::<Box<RawValue>>(text).map_err(|e| {
                CliError::Usage(format!(
                    "--metadata is not valid JSON: {}",
                    json_message(&e)
                ))
            })?;
            Bytes::copy_from_slice(raw.get().as_bytes())
        }
        None => Bytes::new(),
    };
    args.values
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let raw = serde_json::from_str::<Box<RawValue>>(text).map_err(|e| {
                CliError::Usage(format!(
                    "DATA argument {} ({}) is not valid JSON: {}; to append a string, quote \
                     it as JSON: '\"text\"'",
                    i + 1,
                    crate::output::truncate_chars(text, 40),
                    json_message(&e)
                ))
            })?;
            Ok(EventData::new(
                event_type,
                Bytes::copy_from_slice(raw.get().as_bytes()),
                ContentType::Json,
            )
            .with_metadata(metadata.clone()))
        })
        .collect()
}

fn events_from_lines(path: &Path, default_type: Option<&str>) -> Result<Vec<EventData>, CliError> {
    let mut source = LineSource::open(path)?;
    let mut events = Vec::new();
    while let Some((line, _)) = source.next_line()? {
        let parsed = EventLine::parse(&line).map_err(|message| source.error(message))?;
        let event = parsed
            .to_event(default_type, false)
            .map_err(|message| source.error(message))?;
        events.push(event);
    }
    Ok(events)
}
