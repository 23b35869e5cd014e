//! `Streams.Read`: reads of a stream or of `$all` (forwards or backwards, from a
//! revision or position, with a count and filters), and catch-up subscriptions to
//! either (a confirmation, history, `CaughtUp`, then live events; filtered `$all`
//! subscriptions also send checkpoints so a client can resume past long runs of events
//! that do not match).
//!
//! Every read is produced by a task into a bounded channel, page by page: a client that
//! reads slowly holds back the task, not the server's memory.

use prost_types::Timestamp as WireTimestamp;
use strata::{
    Direction, Filter, PageEnd, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, SubscribeFrom, SubscriptionMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{wire, ResponseStream};
use crate::auth::StreamAction;
use crate::grpc::auth::Caller;
use crate::grpc::convert;
use crate::metrics::{Api, ApiLabels};
use crate::proto::event_store::client::streams::read_req::options::{
    all_options::AllOption, filter_options, stream_options::RevisionOption, uuid_option,
    CountOption, FilterOption, ReadDirection, StreamOption,
};
use crate::proto::event_store::client::streams::read_req::Options;
use crate::proto::event_store::client::streams::read_resp::{
    self, Checkpoint, Content, SubscriptionConfirmation,
};
use crate::proto::event_store::client::streams::{ReadReq, ReadResp};
use crate::slots::Slot;
use crate::state::ServerState;

/// Events read from the store per page.
const PAGE: usize = 512;
/// Events a filtered subscription matches between two yields to the runtime.
const MATCHES_PER_YIELD: usize = 64;

/// Which events a read covers.
enum Source {
    Stream {
        name: String,
        from: RevisionFrom,
    },
    All {
        from: AllFrom,
        filter: Option<ServerFilter>,
    },
}

enum RevisionFrom {
    Start,
    End,
    Revision(u64),
}

enum AllFrom {
    Start,
    End,
    /// A commit position a client saw.
    Commit(u64),
}

/// A filter of `$all`, with the checkpoint interval of a filtered subscription.
struct ServerFilter {
    filter: Filter,
    /// A checkpoint is sent after this many events were scanned.
    checkpoint_every: u64,
}

/// A parsed Read request.
struct Plan {
    source: Source,
    direction: Direction,
    /// `None`: a subscription.
    count: Option<u64>,
    structured_ids: bool,
}

fn parse(options: Options) -> Result<Plan, Status> {
    let direction = match ReadDirection::try_from(options.read_direction) {
        Ok(ReadDirection::Backwards) => Direction::Backwards,
        _ => Direction::Forwards,
    };
    let structured_ids = matches!(
        options.uuid_option.and_then(|u| u.content),
        Some(uuid_option::Content::Structured(_))
    );
    let count = match options.count_option {
        Some(CountOption::Count(count)) => Some(count),
        Some(CountOption::Subscription(_)) => None,
        None => {
            return Err(Status::invalid_argument(
                "'count_option' is required: a count, or a subscription",
            ))
        }
    };
    let source = match options.stream_option {
        Some(StreamOption::Stream(stream)) => {
            let name = convert::stream_name(stream.stream_identifier.as_ref())?;
            let from = match stream.revision_option {
                Some(RevisionOption::Revision(revision)) => RevisionFrom::Revision(revision),
                Some(RevisionOption::End(_)) => RevisionFrom::End,
                Some(RevisionOption::Start(_)) | None => RevisionFrom::Start,
            };
            Source::Stream { name, from }
        }
        Some(StreamOption::All(all)) => {
            let from = match all.all_option {
                Some(AllOption::Position(position)) => AllFrom::Commit(position.commit_position),
                Some(AllOption::End(_)) => AllFrom::End,
                Some(AllOption::Start(_)) | None => AllFrom::Start,
            };
            let filter = match options.filter_option {
                Some(FilterOption::Filter(filter)) => Some(server_filter(filter)?),
                Some(FilterOption::NoFilter(_)) | None => None,
            };
            Source::All { from, filter }
        }
        None => {
            return Err(Status::invalid_argument(
                "'stream_option' is required: a stream, or $all",
            ))
        }
    };
    Ok(Plan {
        source,
        direction,
        count,
        structured_ids,
    })
}

/// A KurrentDB filter expression on stream names or event types: prefixes (any of
/// them) if given, else a regular expression (.NET syntax, searched anywhere).
fn server_filter(
    options: crate::proto::event_store::client::streams::read_req::options::FilterOptions,
) -> Result<ServerFilter, Status> {
    let window = match options.window {
        Some(filter_options::Window::Max(max)) => u64::from(max.max(1)),
        Some(filter_options::Window::Count(_)) | None => 1,
    };
    let checkpoint_every =
        window.saturating_mul(u64::from(options.checkpoint_interval_multiplier.max(1)));
    let bad = |error: strata::FilterError| Status::invalid_argument(error.to_string());
    let mut filter = Filter::new();
    match options.filter {
        Some(filter_options::Filter::StreamIdentifier(expression)) => {
            if !expression.prefix.is_empty() {
                for prefix in expression.prefix {
                    filter = filter.stream_prefix(prefix);
                }
            } else if !expression.regex.is_empty() {
                filter = filter.stream_regex(&expression.regex).map_err(bad)?;
            }
        }
        Some(filter_options::Filter::EventType(expression)) => {
            if !expression.prefix.is_empty() {
                for prefix in expression.prefix {
                    filter = filter.event_type_prefix(prefix);
                }
            } else if !expression.regex.is_empty() {
                filter = filter.event_type_regex(&expression.regex).map_err(bad)?;
            }
        }
        None => {}
    }
    Ok(ServerFilter {
        filter,
        checkpoint_every,
    })
}

/// Starts one Read call, if `caller` may read its stream (or `$all`).
pub async fn read(
    state: ServerState,
    caller: Caller,
    request: ReadReq,
) -> Result<ResponseStream<ReadResp>, Status> {
    let options = request
        .options
        .ok_or_else(|| Status::invalid_argument("'options' is a required argument"))?;
    let plan = parse(options)?;
    let stream = match &plan.source {
        Source::Stream { name, .. } => name.as_str(),
        Source::All { .. } => strata::stream::ALL_STREAM,
    };
    caller
        .authorize_stream(&state, StreamAction::Read, stream)
        .await?;
    let peer = caller.address;
    let slot = match plan.count {
        Some(_) => None,
        None => Some(
            state
                .subscription_slots
                .acquire(peer, state.options.max_subscriptions_per_connection)
                .map_err(|error| Status::resource_exhausted(error.to_string()))?,
        ),
    };
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let watch_client = sender.clone();
        let out = Out {
            sender,
            state: state.clone(),
            structured_ids: plan.structured_ids,
        };
        let work = async {
            match plan.count {
                Some(count) => read_events(&out, plan.source, plan.direction, count).await,
                None => subscribe(&out, plan.source, slot).await,
            }
        };
        let result = tokio::select! {
            result = work => result,
            // Subscriptions end at shutdown, so graceful shutdown does not wait on them.
            () = state.shutting_down() => Err(Status::unavailable("the server is shutting down")),
            // A subscription waiting for new events notices a client that went away
            // here, and frees its slot, instead of at its next event.
            () = watch_client.closed() => Ok(()),
        };
        if let Err(status) = result {
            let _ = out.sender.send(Err(status)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Where responses go; sending fails once the client has gone away.
struct Out {
    sender: mpsc::Sender<Result<ReadResp, Status>>,
    state: ServerState,
    structured_ids: bool,
}

/// The client went away: stop quietly.
struct Gone;

impl From<Gone> for Status {
    fn from(_: Gone) -> Status {
        Status::cancelled("the client went away")
    }
}

impl Out {
    async fn send(&self, content: Content) -> Result<(), Gone> {
        self.sender
            .send(Ok(ReadResp {
                content: Some(content),
            }))
            .await
            .map_err(|_| Gone)
    }

    async fn event(&self, event: &RecordedEvent) -> Result<(), Gone> {
        self.state
            .metrics
            .events_read
            .get_or_create(&ApiLabels { api: Api::Grpc })
            .inc();
        self.sender
            .send(Ok(wire::read_event(event, self.structured_ids)))
            .await
            .map_err(|_| Gone)
    }
}

async fn read_events(
    out: &Out,
    source: Source,
    direction: Direction,
    count: u64,
) -> Result<(), Status> {
    let mut remaining = count;
    match source {
        Source::Stream { name, from } => {
            let mut next = match (from, direction) {
                (RevisionFrom::Start, Direction::Forwards) => Some(0),
                (RevisionFrom::Start, Direction::Backwards) => Some(0),
                (RevisionFrom::End, Direction::Forwards) => return Ok(()),
                (RevisionFrom::End, Direction::Backwards) => None,
                (RevisionFrom::Revision(r), _) => Some(r),
            };
            let mut first_page = true;
            while remaining > 0 {
                let limit = usize::try_from(remaining).unwrap_or(usize::MAX).min(PAGE);
                let mut options = match direction {
                    Direction::Forwards => ReadStreamOptions::forwards(),
                    Direction::Backwards => ReadStreamOptions::backwards(),
                }
                .limit(limit);
                options.from = next;
                let events = match out.state.store.read_stream(&name, options).await {
                    Ok(events) => events,
                    Err(ReadError::StreamNotFound { .. }) if first_page => {
                        out.send(Content::StreamNotFound(read_resp::StreamNotFound {
                            stream_identifier: Some(convert::stream_identifier(&name)),
                        }))
                        .await?;
                        return Ok(());
                    }
                    Err(ReadError::StreamNotFound { .. }) => return Ok(()),
                    Err(error) => return Err(convert::read_error(&error)),
                };
                first_page = false;
                for event in &events {
                    out.event(event).await?;
                }
                remaining -= events.len() as u64;
                let Some(last) = events.last() else { break };
                if events.len() < limit {
                    break;
                }
                next = match direction {
                    Direction::Forwards => Some(last.revision + 1),
                    Direction::Backwards => match last.revision.checked_sub(1) {
                        Some(r) => Some(r),
                        None => break,
                    },
                };
            }
            Ok(())
        }
        Source::All { from, filter } => {
            let filter = filter.map(|f| f.filter).unwrap_or_default();
            let mut next = match (from, direction) {
                (AllFrom::Start, Direction::Forwards) => Some(Position::START),
                (AllFrom::Start, Direction::Backwards) => return Ok(()),
                (AllFrom::End, Direction::Forwards) => return Ok(()),
                (AllFrom::End, Direction::Backwards) => None,
                // Forwards from a commit position includes the event at it.
                (AllFrom::Commit(c), Direction::Forwards) => {
                    Some(convert::position_of_commit(c).unwrap_or(Position::START))
                }
                // Backwards from a position returns the events before it, as KurrentDB.
                (AllFrom::Commit(c), Direction::Backwards) => match c.checked_sub(2) {
                    Some(p) => Some(Position(p)),
                    None => return Ok(()),
                },
            };
            // As KurrentDB: page after page, each examining a bounded window of the
            // log, until `count` events matched or the log ends. A filter that matches
            // nothing walks the whole log, one bounded step at a time, and stops (the
            // step under way too) when the client goes away.
            while remaining > 0 {
                let limit = usize::try_from(remaining).unwrap_or(usize::MAX).min(PAGE);
                let mut options = match direction {
                    Direction::Forwards => ReadAllOptions::forwards(),
                    Direction::Backwards => ReadAllOptions::backwards(),
                }
                .limit(limit)
                .filter(filter.clone())
                .scan_budget(out.state.options.scan_budget);
                options.from = next;
                let page = out
                    .state
                    .store
                    .read_all_page(options)
                    .await
                    .map_err(|error| convert::read_error(&error))?;
                for event in &page.events {
                    out.event(event).await?;
                }
                remaining -= page.events.len() as u64;
                match (page.end, page.next) {
                    (PageEnd::End, _) | (_, None) => break,
                    (_, Some(position)) => next = Some(position),
                }
            }
            Ok(())
        }
    }
}

fn now() -> WireTimestamp {
    WireTimestamp::from(std::time::SystemTime::now())
}

fn wire_position(position: Position) -> read_resp::Position {
    let commit = convert::commit_position(position);
    read_resp::Position {
        commit_position: commit,
        prepare_position: commit,
    }
}

async fn subscribe(out: &Out, source: Source, slot: Option<Slot>) -> Result<(), Status> {
    let _slot = slot;
    let api = ApiLabels { api: Api::Grpc };
    let open = out
        .state
        .metrics
        .subscriptions_open
        .get_or_create(&api)
        .clone();
    open.inc();
    let result = run_subscription(out, source).await;
    open.dec();
    match result {
        Err(status) if status.code() == tonic::Code::Cancelled => Ok(()),
        other => other,
    }
}

async fn run_subscription(out: &Out, source: Source) -> Result<(), Status> {
    let store = &out.state.store;
    out.send(Content::Confirmation(SubscriptionConfirmation {
        subscription_id: uuid::Uuid::new_v4().to_string(),
    }))
    .await?;
    match source {
        Source::Stream { name, from } => {
            let from = match from {
                RevisionFrom::Start => SubscribeFrom::Start,
                RevisionFrom::End => SubscribeFrom::End,
                // Subscribing from a revision delivers what comes after it.
                RevisionFrom::Revision(r) => SubscribeFrom::After(r),
            };
            let mut subscription = store.subscribe_stream(&name, from);
            let mut last_revision: Option<u64> = None;
            loop {
                match subscription
                    .next()
                    .await
                    .map_err(|e| convert::read_error(&e))?
                {
                    SubscriptionMessage::Event(event) => {
                        last_revision = Some(event.revision);
                        out.event(&event).await?;
                    }
                    SubscriptionMessage::CaughtUp => {
                        out.send(Content::CaughtUp(read_resp::CaughtUp {
                            timestamp: Some(now()),
                            stream_revision: last_revision.and_then(|r| i64::try_from(r).ok()),
                            position: None,
                        }))
                        .await?;
                    }
                    _ => {}
                }
            }
        }
        Source::All { from, filter } => {
            let from = match from {
                AllFrom::Start => SubscribeFrom::Start,
                AllFrom::End => SubscribeFrom::End,
                // After the event at commit position c, i.e. strata position c - 1.
                AllFrom::Commit(c) => match convert::position_of_commit(c) {
                    Some(position) => SubscribeFrom::After(position),
                    None => SubscribeFrom::Start,
                },
            };
            // Filtering here rather than in the store lets the subscription see every
            // event it scans, to send checkpoints through long runs that do not match.
            let mut subscription = store.subscribe_all(from, Filter::new());
            let mut scanned_since_checkpoint = 0u64;
            let mut scanned_since_yield = 0usize;
            let mut last_scanned: Option<Position> = None;
            loop {
                match subscription
                    .next()
                    .await
                    .map_err(|e| convert::read_error(&e))?
                {
                    SubscriptionMessage::Event(event) => {
                        last_scanned = Some(event.position);
                        match &filter {
                            None => out.event(&event).await?,
                            Some(f) => {
                                if f.filter.matches_event(&event) {
                                    out.event(&event).await?;
                                }
                                // Matching runs on the async runtime, a bounded cost per
                                // event (see `strata::Pattern`); events that do not
                                // match never wait, so yield now and then to let the
                                // thread's other tasks run.
                                scanned_since_yield += 1;
                                if scanned_since_yield >= MATCHES_PER_YIELD {
                                    scanned_since_yield = 0;
                                    tokio::task::yield_now().await;
                                }
                                scanned_since_checkpoint += 1;
                                if scanned_since_checkpoint >= f.checkpoint_every {
                                    scanned_since_checkpoint = 0;
                                    let p = wire_position(event.position);
                                    out.send(Content::Checkpoint(Checkpoint {
                                        commit_position: p.commit_position,
                                        prepare_position: p.prepare_position,
                                        timestamp: Some(now()),
                                    }))
                                    .await?;
                                }
                            }
                        }
                    }
                    SubscriptionMessage::CaughtUp => {
                        let position = last_scanned.or(store.head());
                        out.send(Content::CaughtUp(read_resp::CaughtUp {
                            timestamp: Some(now()),
                            stream_revision: None,
                            position: position.map(wire_position),
                        }))
                        .await?;
                    }
                    _ => {}
                }
            }
        }
    }
}
