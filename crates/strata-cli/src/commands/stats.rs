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
    /// The scrubber of the server asked (`null`: off, or the store was opened here).
    scrub: Option<&'a strata::ScrubStatus>,
}

/// The `scrub:` line: what the background scrubber did, or why there is none.
fn scrub_line(scrub: Option<&strata::ScrubStatus>, served: bool) -> String {
    let Some(scrub) = scrub else {
        return if served {
            "off".to_owned()
        } else {
            // Only `strata serve` scrubs; a store opened for this command is not.
            "not running (`strata serve` scrubs; `strata verify` checks every segment now)"
                .to_owned()
        };
    };
    let mut line = format!(
        "{} pass(es), {} verified, {}",
        scrub.passes,
        HumanBytes(scrub.bytes_verified),
        match scrub.damage_found {
            0 => "no damage found".to_owned(),
            found => format!("DAMAGE FOUND in {found} place(s)"),
        }
    );
    if scrub.tables_repaired > 0 {
        line.push_str(&format!(
            ", {} damaged segment table(s) rebuilt",
            scrub.tables_repaired
        ));
    }
    if let Some(segment) = scrub.current_segment {
        line.push_str(&format!(", checking segment {segment}"));
    }
    if let Some(at) = scrub.last_pass_finished_at {
        line.push_str(&format!(", last pass finished {at}"));
    }
    line
}

/// Runs `strata stats`.
pub async fn run(target: &Target, args: StatsArgs) -> Result<(), CliError> {
    let client = target.client()?;
    let stats = match &client {
        Some(client) => {
            client
                .get::<strata::StoreStats>("/stats", "read the store's statistics")
                .await?
        }
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
            scrub: stats.scrub.as_ref(),
        };
        write_json_line(&mut out, &value)?;
    } else {
        let head = stats
            .head
            .map_or_else(|| "none (empty log)".to_owned(), |p| p.to_string());
        let text = format!(
            "store:     {}\nbackend:   {}\nevents:    {}\nstreams:   {} (metadata streams included)\n\
             head:      {}\ndisk size: {} ({} bytes)\nsegments:  {}\nscrub:     {}\n",
            location,
            stats.backend,
            stats.events,
            stats.streams,
            head,
            HumanBytes(stats.disk_bytes),
            stats.disk_bytes,
            stats.segments,
            scrub_line(stats.scrub.as_ref(), client.is_some()),
        );
        let damage = stats.scrub.iter().flat_map(|scrub| &scrub.damage);
        let text = damage.fold(text, |mut text, damage| {
            text.push_str(&format!(
                "  damage:  segment {} offset {}: {}\n",
                damage.segment, damage.offset, damage.detail
            ));
            text
        });
        out.write_all(text.as_bytes()).map_err(output_error)?;
    }
    out.flush().map_err(output_error)
}
