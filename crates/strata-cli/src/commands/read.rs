//! `strata read`: prints the events of a stream or of the global log.

use std::io::{BufWriter, Write};

use clap::Args;
use serde::Deserialize;
use strata::{
    Direction, PageEnd, Position, ReadAllOptions, ReadStreamOptions, RecordedEvent, Store,
};

use super::{close_store, open_store, FilterArgs, Target, ALL};
use crate::client::{encode, query, recorded_event, ServerClient};
use crate::error::{output_error, CliError};
use crate::output::{event_row, write_json_line, EventJson, Format, Table, EVENT_COLUMNS};

/// Events read per call to the store.
const PAGE_EVENTS: usize = 4096;

/// Options of `strata read`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  strata read order-1
  strata read order-1 --backwards --limit 1 --format table
  strata read '$all' --category order --exclude-system")]
pub struct ReadArgs {
    /// The stream to read, or `$all` for the global log (quote it in a shell: '$all').
    pub stream: String,
    /// Newest first.
    #[arg(long, short = 'b')]
    pub backwards: bool,
    /// Start at this revision (a stream) or position (`$all`), inclusive.
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Print at most this many events.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Filters (for `$all` only).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Prints events as they are read, in the chosen format.
pub struct EventPrinter<W: Write> {
    out: W,
    format: Format,
    table: Table,
}

impl<W: Write> EventPrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, format: Format) -> EventPrinter<W> {
        EventPrinter {
            out,
            format,
            table: Table::new(EVENT_COLUMNS),
        }
    }

    /// Prints a batch of events (a table sizes its columns to fit the batch).
    pub fn print(&mut self, events: &[RecordedEvent]) -> Result<(), CliError> {
        match self.format {
            Format::Json => {
                for event in events {
                    let json = EventJson {
                        event,
                        exact: false,
                    };
                    write_json_line(&mut self.out, &json)?;
                }
                Ok(())
            }
            Format::Table => {
                let rows: Vec<_> = events.iter().map(event_row).collect();
                self.table.write(&mut self.out, &rows)
            }
        }
    }

    /// Flushes what was printed.
    pub fn flush(&mut self) -> Result<(), CliError> {
        self.out.flush().map_err(output_error)
    }
}

/// Runs `strata read`.
pub async fn run(target: &Target, args: ReadArgs) -> Result<(), CliError> {
    args.filter.only_for_all(&args.stream)?;
    if let Some(client) = target.client()? {
        return remote(&client, &args).await;
    }
    let store = open_store(target, false).await?;
    let result = read(&store, &args).await;
    close_store(store).await?;
    result
}

async fn read(store: &Store, args: &ReadArgs) -> Result<(), CliError> {
    let mut printer = EventPrinter::new(BufWriter::new(std::io::stdout()), args.format);
    let direction = if args.backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    };
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut from = args.from;
    while remaining > 0 {
        let page = remaining.min(PAGE_EVENTS);
        let (events, next) = if args.stream == ALL {
            let options = ReadAllOptions {
                direction,
                from: from.map(Position),
                limit: page,
                filter: args.filter.to_filter(),
                scan_budget: ReadAllOptions::SCAN_BUDGET_DEFAULT,
            };
            let read = store.read_all_page(options).await?;
            // A page cut short by the scan budget is not the end: go on from where the
            // scan stopped.
            let next = match read.end {
                PageEnd::End => None,
                _ => read.next.map(|position| position.0),
            };
            (read.events, next)
        } else {
            let options = ReadStreamOptions {
                direction,
                from,
                limit: page,
            };
            let events = store.read_stream(&args.stream, options).await?;
            let next = match (events.last(), direction) {
                (Some(last), Direction::Forwards) if events.len() == page => {
                    Some(last.revision + 1)
                }
                (Some(last), Direction::Backwards) if events.len() == page => {
                    last.revision.checked_sub(1)
                }
                _ => None,
            };
            (events, next)
        };
        printer.print(&events)?;
        remaining -= events.len();
        match next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    if args.format == Format::Table && args.limit != Some(0) {
        // An empty table still shows its header.
        printer.print(&[])?;
    }
    printer.flush()
}

/// A page of events as a server sends it.
#[derive(Deserialize)]
struct RemotePage {
    events: Vec<Box<serde_json::value::RawValue>>,
    next_from: Option<u64>,
}

/// Reads through a server, page by page; prints what a local read prints.
async fn remote(client: &ServerClient, args: &ReadArgs) -> Result<(), CliError> {
    let mut printer = EventPrinter::new(BufWriter::new(std::io::stdout()), args.format);
    let mut remaining = args.limit.unwrap_or(usize::MAX);
    let mut from = args.from;
    while remaining > 0 {
        let mut pairs = vec![("limit", remaining.min(PAGE_EVENTS).to_string())];
        if args.backwards {
            pairs.push(("direction", "backwards".to_owned()));
        }
        if let Some(from) = from {
            pairs.push(("from", from.to_string()));
        }
        if args.stream == ALL {
            pairs.extend(args.filter.to_query());
        }
        let path = format!("/streams/{}{}", encode(&args.stream), query(&pairs));
        let page: RemotePage = client
            .get(&path, &format!("read stream {:?}", args.stream))
            .await?;
        let events = page
            .events
            .iter()
            .map(|event| recorded_event(event))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| CliError::Protocol {
                url: client.url().to_owned(),
                message,
            })?;
        printer.print(&events)?;
        remaining = remaining.saturating_sub(events.len());
        match page.next_from {
            Some(next) if !events.is_empty() => from = Some(next),
            _ => break,
        }
    }
    if args.format == Format::Table && args.limit != Some(0) {
        printer.print(&[])?;
    }
    printer.flush()
}
