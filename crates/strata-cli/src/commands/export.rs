//! `strata export`: writes the whole global log as JSON lines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use strata::{Position, ReadAllOptions};

use super::{close_store, open_store, Target};
use crate::error::{output_error, CliError};
use crate::output::{progress_bar, write_json_line, EventJson};

/// Events read per call to the store.
const PAGE_EVENTS: usize = 4096;

/// Options of `strata export`.
#[derive(Debug, Args)]
#[command(
    after_help = "Every event of the log is written, in order, including metadata \
streams ($$…) and tombstones, one JSON object per line with its stream, revision, id, type, \
content type, data, metadata, recorded_at and valid_at. Data and metadata are kept byte for \
byte: JSON as is when it fits on one line, base64 (\"data_base64\") otherwise.

Example:
  strata export --output backup.jsonl && strata --data ./copy import --input backup.jsonl"
)]
pub struct ExportArgs {
    /// Where to write (`-`: stdout).
    #[arg(long, short = 'o', value_name = "FILE", default_value = "-")]
    pub output: PathBuf,
}

/// Runs `strata export`.
pub async fn run(target: &Target, args: ExportArgs) -> Result<(), CliError> {
    let store = open_store(target, false).await?;
    let out: Box<dyn Write> = if args.output == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        match File::create(&args.output) {
            Ok(file) => Box::new(file),
            Err(error) => {
                close_store(store).await?;
                let context = format!("cannot create {}", args.output.display());
                return Err(CliError::io(context, error));
            }
        }
    };
    let result = export(&store, BufWriter::with_capacity(1 << 20, out)).await;
    close_store(store).await?;
    let count = result?;
    if args.output != Path::new("-") {
        eprintln!("exported {count} events to {}", args.output.display());
    }
    Ok(())
}

async fn export(store: &strata::Store, mut out: impl Write) -> Result<u64, CliError> {
    let total = store.stats().await?.events;
    let bar = progress_bar(Some(total), false, "exporting");
    let mut from = Position::START;
    let mut count = 0u64;
    loop {
        let options = ReadAllOptions::forwards()
            .from_position(from)
            .limit(PAGE_EVENTS);
        let events = store.read_all(options).await?;
        for event in &events {
            write_json_line(&mut out, &EventJson { event, exact: true })?;
        }
        count += events.len() as u64;
        bar.set_position(count);
        match events.last() {
            Some(last) if events.len() == PAGE_EVENTS => from = last.position.next(),
            _ => break,
        }
    }
    out.flush().map_err(output_error)?;
    bar.finish_and_clear();
    Ok(count)
}
