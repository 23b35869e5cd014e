//! `strata tail`: prints events as they are recorded, until Ctrl-C.

use std::io::{BufWriter, IsTerminal, Stdout};

use clap::Args;
use strata::{Store, SubscribeFrom, SubscriptionMessage};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::read::EventPrinter;
use super::{close_store, follow, open_store, FilterArgs, Target, ALL};
use crate::client::{encode, error_object, query, recorded_event, ServerClient};
use crate::error::CliError;
use crate::output::Format;

/// Options of `strata tail`.
#[derive(Debug, Args)]
#[command(
    after_help = "If another process has the store open (your application, say), tail \
follows the store's files read-only instead: it shows every recorded event of the stream, \
including ones its metadata hides, as soon as the event is written.

Examples:
  strata tail '$all' --format table
  strata tail order-1 --from-start --count 10"
)]
pub struct TailArgs {
    /// The stream to follow, or `$all` for the global log (quote it in a shell: '$all').
    pub stream: String,
    /// Print the existing events first (by default only events recorded from now on).
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many events.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Filters (for `$all` only).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
///
/// The handlers are installed when this is created (unlike `tokio::signal::ctrl_c`,
/// which installs its handler when first polled), so a signal that arrives at any point
/// after start-up ends the command cleanly instead of killing it.
pub struct Shutdown {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Shutdown {
    /// Installs the handlers.
    pub fn install() -> Shutdown {
        Shutdown {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Resolves once a signal has arrived (cancel-safe).
    pub async fn recv(&mut self) {
        async fn wait(signal: Option<&mut Signal>) {
            match signal {
                Some(signal) => {
                    if signal.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = wait(self.interrupt.as_mut()) => {}
            _ = wait(self.terminate.as_mut()) => {}
        }
    }
}

/// Where the events go and when to stop: shared by the two ways of following.
pub struct Sink {
    /// The printer (flushed after every batch).
    pub printer: EventPrinter<BufWriter<Stdout>>,
    /// Events printed so far.
    pub printed: u64,
    /// Stop after this many.
    pub count: Option<u64>,
}

impl Sink {
    /// Prints `events` (up to the count); returns whether the count is reached.
    pub fn print(&mut self, events: &[strata::RecordedEvent]) -> Result<bool, CliError> {
        let room = self.count.map_or(usize::MAX, |count| {
            usize::try_from(count.saturating_sub(self.printed)).unwrap_or(usize::MAX)
        });
        let events = &events[..events.len().min(room)];
        self.printer.print(events)?;
        self.printer.flush()?;
        self.printed += events.len() as u64;
        Ok(self.done())
    }

    /// Whether the count is reached.
    pub fn done(&self) -> bool {
        self.count.is_some_and(|count| self.printed >= count)
    }
}

/// Runs `strata tail`.
pub async fn run(target: &Target, args: TailArgs) -> Result<(), CliError> {
    args.filter.only_for_all(&args.stream)?;
    let mut shutdown = Shutdown::install();
    let mut sink = Sink {
        printer: EventPrinter::new(BufWriter::new(std::io::stdout()), args.format),
        printed: 0,
        count: args.count,
    };
    if sink.done() {
        return Ok(());
    }
    if let Some(client) = target.client()? {
        return remote(&client, &args, &mut sink, &mut shutdown).await;
    }
    match open_store(target, false).await {
        Ok(store) => {
            let result = subscribe(&store, &args, &mut sink, &mut shutdown).await;
            close_store(store).await?;
            result
        }
        Err(CliError::Locked { .. }) => {
            eprintln!("note: the store is open in another process; following its files read-only");
            let filter = (args.stream == ALL).then(|| args.filter.to_filter());
            let wanted = follow::Target {
                stream: (args.stream != ALL).then(|| args.stream.clone()),
                filter: filter.unwrap_or_default(),
            };
            follow::run(
                &target.data,
                wanted,
                args.from_start,
                &mut sink,
                &mut shutdown,
            )
            .await
        }
        Err(error) => Err(error),
    }
}

async fn subscribe(
    store: &Store,
    args: &TailArgs,
    sink: &mut Sink,
    shutdown: &mut Shutdown,
) -> Result<(), CliError> {
    let mut subscription = if args.stream == ALL {
        let from = if args.from_start {
            SubscribeFrom::Start
        } else {
            SubscribeFrom::End
        };
        store.subscribe_all(from, args.filter.to_filter())
    } else {
        let from = if args.from_start {
            SubscribeFrom::Start
        } else {
            SubscribeFrom::End
        };
        store.subscribe_stream(&args.stream, from)
    };
    loop {
        tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            message = subscription.next() => {
                let stop = match message? {
                    SubscriptionMessage::Event(event) => sink.print(&[event])?,
                    SubscriptionMessage::CaughtUp => {
                        caught_up();
                        false
                    }
                    _ => false,
                };
                if stop {
                    return Ok(());
                }
            }
        }
    }
}

/// Follows through a server's live NDJSON stream.
async fn remote(
    client: &ServerClient,
    args: &TailArgs,
    sink: &mut Sink,
    shutdown: &mut Shutdown,
) -> Result<(), CliError> {
    let from = if args.from_start { "start" } else { "end" };
    let mut pairs = vec![("from", from.to_owned()), ("format", "ndjson".to_owned())];
    if args.stream == ALL {
        pairs.extend(args.filter.to_query());
    }
    let path = format!("/streams/{}/live{}", encode(&args.stream), query(&pairs));
    let mut lines = client
        .lines(&path, &format!("follow stream {:?}", args.stream))
        .await?;
    let protocol = |message: String| CliError::Protocol {
        url: client.url().to_owned(),
        message,
    };
    loop {
        let line = tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            line = lines.next() => line?,
        };
        let Some(line) = line else {
            return Err(protocol("the live stream ended".into()));
        };
        if let Some(event) = line.event {
            let event = recorded_event(&event).map_err(protocol)?;
            if sink.print(&[event])? {
                return Ok(());
            }
        } else if line.caught_up.is_some() {
            caught_up();
        } else if let Some(error) = line.error {
            return Err(error_object(&error, b""));
        }
    }
}

/// Tells a person at a terminal that history is done.
pub fn caught_up() {
    if std::io::stderr().is_terminal() {
        eprintln!("-- caught up; waiting for new events (Ctrl-C to stop) --");
    }
}
