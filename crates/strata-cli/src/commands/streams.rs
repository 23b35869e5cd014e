//! `strata streams`: lists the streams that have events.

use std::io::{BufWriter, Write};

use clap::Args;
use serde::{Deserialize, Serialize};
use strata::{ListStreamsOptions, StreamInfo};

use super::{close_store, open_store, Target};
use crate::client::{query, ServerClient};
use crate::error::{output_error, CliError};

/// Most streams one page of a server's list holds.
const LIST_PAGE_MAX: usize = 10_000;
use crate::output::{write_json_line, Format, Table};

/// Options of `strata streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only streams whose name starts with this.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// List at most this many streams.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,
    /// Also list system streams (metadata streams `$$…`).
    #[arg(long)]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One line of `strata streams --format json`.
#[derive(Serialize)]
struct StreamOutput<'a> {
    stream: &'a str,
    last_revision: u64,
    visible_events: u64,
}

/// Runs `strata streams`: one line per stream, sorted by name, with the revision of its
/// last event and how many of its events are visible under its metadata.
pub async fn run(target: &Target, args: StreamsArgs) -> Result<(), CliError> {
    let streams = match target.client()? {
        Some(client) => remote(&client, &args).await?,
        None => {
            let store = open_store(target, false).await?;
            let options = ListStreamsOptions {
                prefix: args.prefix.clone(),
                after: None,
                limit: args.limit,
                include_system: args.all,
            };
            let streams = store.list_streams(options).await;
            close_store(store).await?;
            streams?
        }
    };
    let mut out = BufWriter::new(std::io::stdout());
    match args.format {
        Format::Json => {
            for info in &streams {
                write_json_line(
                    &mut out,
                    &StreamOutput {
                        stream: &info.name,
                        last_revision: info.last_revision,
                        visible_events: info.visible_events,
                    },
                )?;
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = streams
                .iter()
                .map(|info| {
                    vec![
                        info.name.clone(),
                        info.last_revision.to_string(),
                        info.visible_events.to_string(),
                    ]
                })
                .collect();
            Table::new(&["STREAM", "LAST_REVISION", "EVENTS"]).write(&mut out, &rows)?;
        }
    }
    out.flush().map_err(output_error)
}

/// One entry of a server's stream list.
#[derive(Deserialize)]
struct RemoteStream {
    stream: String,
    last_revision: u64,
    visible_events: u64,
}

/// A page of a server's stream list.
#[derive(Deserialize)]
struct RemoteList {
    streams: Vec<RemoteStream>,
    next_after: Option<String>,
}

/// Lists streams through a server, following its pages.
async fn remote(client: &ServerClient, args: &StreamsArgs) -> Result<Vec<StreamInfo>, CliError> {
    let mut streams = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut pairs = Vec::new();
        if let Some(prefix) = &args.prefix {
            pairs.push(("prefix", prefix.clone()));
        }
        if let Some(after) = &after {
            pairs.push(("after", after.clone()));
        }
        if let Some(limit) = args.limit {
            // The server caps a page; ask for what is still missing.
            let missing = limit.saturating_sub(streams.len()).min(LIST_PAGE_MAX);
            if missing == 0 {
                return Ok(streams);
            }
            pairs.push(("limit", missing.to_string()));
        }
        if args.all {
            pairs.push(("include_system", "true".to_owned()));
        }
        let page: RemoteList = client
            .get(&format!("/streams{}", query(&pairs)), "list the streams")
            .await?;
        streams.extend(page.streams.into_iter().map(|s| StreamInfo {
            name: s.stream,
            last_revision: s.last_revision,
            visible_events: s.visible_events,
        }));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(streams),
        }
    }
}
