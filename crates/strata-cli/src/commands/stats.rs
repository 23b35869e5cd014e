//! `strata stats`: counts and sizes of the store.

use std::io::Write;

use clap::Args;
use indicatif::HumanBytes;
use serde::Serialize;

use super::{close_store, open_store, Target};
use crate::error::{output_error, CliError};
use crate::output::write_json_line;

/// Options of `strata stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The JSON printed by `strata stats --json`.
#[derive(Serialize)]
struct StatsOutput<'a> {
    events: u64,
    streams: u64,
    head: Option<u64>,
    disk_bytes: u64,
    disk_size: String,
    segments: u64,
    backend: &'a str,
}

/// Runs `strata stats`.
pub async fn run(target: &Target, args: StatsArgs) -> Result<(), CliError> {
    let client = target.client()?;
    let stats = match &client {
        Some(client) => client.get::<strata::StoreStats>("/stats").await?,
        None => {
            let store = open_store(target, false).await?;
            let stats = store.stats().await;
            close_store(store).await?;
            stats?
        }
    };
    let location = match &client {
        Some(client) => client.url().to_owned(),
        None => target.data.display().to_string(),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = StatsOutput {
            events: stats.events,
            streams: stats.streams,
            head: stats.head.map(|p| p.0),
            disk_bytes: stats.disk_bytes,
            disk_size: HumanBytes(stats.disk_bytes).to_string(),
            segments: stats.segments,
            backend: &stats.backend,
        };
        write_json_line(&mut out, &value)?;
    } else {
        let head = stats
            .head
            .map_or_else(|| "none (empty log)".to_owned(), |p| p.to_string());
        let text = format!(
            "store:     {}\nbackend:   {}\nevents:    {}\nstreams:   {} (metadata streams included)\n\
             head:      {}\ndisk size: {} ({} bytes)\nsegments:  {}\n",
            location,
            stats.backend,
            stats.events,
            stats.streams,
            head,
            HumanBytes(stats.disk_bytes),
            stats.disk_bytes,
            stats.segments,
        );
        out.write_all(text.as_bytes()).map_err(output_error)?;
    }
    out.flush().map_err(output_error)
}
