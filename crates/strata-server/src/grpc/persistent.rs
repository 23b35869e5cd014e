//! `event_store.client.persistent_subscriptions.PersistentSubscriptions`: competing
//! consumers over gRPC. The groups themselves live in [`crate::persistent`]; this file
//! turns requests into registry calls and consumer messages into responses, with the
//! status codes, messages and trailers KurrentDB clients recognise.

use crate::auth::{Operation, StreamAction};
use crate::grpc::auth::Caller;
use std::pin::Pin;

use futures_util::Stream;
use strata::{Position, RecordedEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::grpc::convert;
use crate::metrics::{Api, ApiLabels};
use crate::persistent::registry::GroupInfo;
use crate::persistent::settings::{non_negative, MESSAGE_TIMEOUT_MS_DEFAULT};
use crate::persistent::{
    Consumer, ConsumerMessage, ConsumerStrategy, FilterOn, FilterSpec, GroupConfig,
    PersistentError, Settings, Source, StartFrom,
};
use crate::proto::event_store::client::persistent_subscriptions as ps;
use crate::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptions;
use crate::proto::event_store::client::Empty;
use crate::slots::Slot;
use crate::state::ServerState;
use ps::{create_req, read_req, read_resp, update_req};

/// Responses queued per consumer before the session waits for the client to read.
const RESPONSE_QUEUE: usize = 32;
/// .NET ticks (100 ns) per millisecond.
const TICKS_PER_MS: i64 = 10_000;

/// The `PersistentSubscriptions` service.
#[derive(Clone, Debug)]
pub struct PersistentService {
    state: ServerState,
}

impl PersistentService {
    /// The service over `state`.
    pub fn new(state: ServerState) -> PersistentService {
        PersistentService { state }
    }
}

fn with_trailers(mut status: Status, trailers: &[(&'static str, &str)]) -> Status {
    for (key, value) in trailers {
        if let Ok(value) = MetadataValue::try_from(*value) {
            status.metadata_mut().insert(*key, value);
        }
    }
    status
}

/// The status KurrentDB answers `error` with.
pub fn status(error: &PersistentError) -> Status {
    let message = error.to_string();
    match error {
        PersistentError::NotFound { stream, group } => with_trailers(
            Status::not_found(message),
            &[
                ("exception", "persistent-subscription-does-not-exist"),
                ("stream-name", stream),
                ("group-name", group),
            ],
        ),
        PersistentError::Exists { stream, group } => with_trailers(
            Status::already_exists(message),
            &[
                ("exception", "persistent-subscription-exists"),
                ("stream-name", stream),
                ("group-name", group),
            ],
        ),
        PersistentError::MaxSubscribers { stream, group } => with_trailers(
            Status::failed_precondition(message),
            &[
                ("exception", "maximum-subscribers-reached"),
                ("stream-name", stream),
                ("group-name", group),
            ],
        ),
        PersistentError::Dropped { stream, group } => with_trailers(
            Status::cancelled(message),
            &[
                ("exception", "persistent-subscription-dropped"),
                ("stream-name", stream),
                ("group-name", group),
            ],
        ),
        PersistentError::NotLeader { host, port } => with_trailers(
            Status::not_found(message),
            &[
                ("exception", "not-leader"),
                ("leader-endpoint-host", host),
                ("leader-endpoint-port", &port.to_string()),
            ],
        ),
        PersistentError::Lease(error) => {
            // The lease store's failure may carry database details: log them, not send.
            let error_id = ::uuid::Uuid::new_v4();
            tracing::error!(%error_id, %error, "lease store failure answered to a gRPC call");
            Status::unavailable(format!(
                "Server Is Not Ready: the lease store is unavailable (error id {error_id})"
            ))
        }
        PersistentError::InvalidSettings(_) => Status::invalid_argument(message),
        PersistentError::Read(error) => convert::read_error(error),
        PersistentError::Append(error) => convert::append_error("PersistentSubscription", error),
        _ => {
            let error_id = ::uuid::Uuid::new_v4();
            tracing::error!(%error_id, error = %message, "persistent subscription failure");
            Status::internal(format!(
                "persistent subscription state could not be used (error id {error_id})"
            ))
        }
    }
}

fn missing(what: &str) -> Status {
    Status::invalid_argument(format!("'{what}' is a required argument"))
}

/// The source a request names: a stream, or `$all`.
fn source_name(
    stream: Option<&crate::proto::event_store::client::StreamIdentifier>,
    all: bool,
) -> Result<String, Status> {
    match stream {
        Some(identifier) => convert::stream_name(Some(identifier)),
        None if all => Ok(strata::stream::ALL_STREAM.to_owned()),
        None => Err(missing("stream_option")),
    }
}

fn millis(
    ms: Option<i32>,
    ticks: Option<i64>,
    name: &str,
    default: u32,
) -> Result<u32, PersistentError> {
    match (ms, ticks) {
        (Some(ms), _) => non_negative(name, ms),
        (None, Some(ticks)) => {
            let ms = i32::try_from(ticks / TICKS_PER_MS).unwrap_or(i32::MAX);
            non_negative(name, ms)
        }
        (None, None) => Ok(default),
    }
}

/// The settings of a create or update request (the two messages have the same fields).
macro_rules! settings {
    ($s:expr, $m:ident, $strategy:expr) => {{
        let s = $s;
        let (timeout_ms, timeout_ticks) = match s.message_timeout {
            Some($m::settings::MessageTimeout::MessageTimeoutMs(ms)) => (Some(ms), None),
            Some($m::settings::MessageTimeout::MessageTimeoutTicks(ticks)) => (None, Some(ticks)),
            None => (None, None),
        };
        let (after_ms, after_ticks) = match s.checkpoint_after {
            Some($m::settings::CheckpointAfter::CheckpointAfterMs(ms)) => (Some(ms), None),
            Some($m::settings::CheckpointAfter::CheckpointAfterTicks(ticks)) => (None, Some(ticks)),
            None => (None, None),
        };
        let defaults = Settings::default();
        Settings {
            resolve_links: s.resolve_links,
            extra_statistics: s.extra_statistics,
            message_timeout_ms: millis(
                timeout_ms,
                timeout_ticks,
                "message timeout",
                MESSAGE_TIMEOUT_MS_DEFAULT,
            )?,
            max_retry_count: non_negative("max retry count", s.max_retry_count)?,
            live_buffer_size: non_negative("live buffer size", s.live_buffer_size)?,
            read_batch_size: non_negative("read batch size", s.read_batch_size)?,
            history_buffer_size: non_negative("history buffer size", s.history_buffer_size)?,
            checkpoint_after_ms: millis(
                after_ms,
                after_ticks,
                "checkpoint after",
                defaults.checkpoint_after_ms,
            )?,
            min_checkpoint_count: non_negative("min checkpoint count", s.min_checkpoint_count)?,
            max_checkpoint_count: non_negative("max checkpoint count", s.max_checkpoint_count)?,
            max_subscriber_count: non_negative("max subscriber count", s.max_subscriber_count)?,
            consumer_strategy: $strategy,
        }
    }};
}

fn strategy_of(named: i32) -> ConsumerStrategy {
    match create_req::ConsumerStrategy::try_from(named) {
        Ok(create_req::ConsumerStrategy::RoundRobin) => ConsumerStrategy::RoundRobin,
        Ok(create_req::ConsumerStrategy::Pinned) => ConsumerStrategy::Pinned,
        _ => ConsumerStrategy::DispatchToSingle,
    }
}

fn filter_spec(filter: Option<create_req::all_options::FilterOption>) -> Option<FilterSpec> {
    use create_req::all_options::filter_options::Filter;
    let create_req::all_options::FilterOption::Filter(options) = filter? else {
        return None;
    };
    let (on, expression) = match options.filter? {
        Filter::StreamIdentifier(expression) => (FilterOn::StreamName, expression),
        Filter::EventType(expression) => (FilterOn::EventType, expression),
    };
    Some(FilterSpec {
        on,
        regex: expression.regex,
        prefixes: expression.prefix,
    })
}

// Clients before 21.10 send the deprecated fields; they are read on purpose.
#[allow(deprecated)]
fn create_config(request: ps::CreateReq) -> Result<GroupConfig, Status> {
    let options = request.options.ok_or_else(|| missing("options"))?;
    let raw = options.settings.ok_or_else(|| missing("settings"))?;
    let strategy = if raw.consumer_strategy.is_empty() {
        strategy_of(raw.named_consumer_strategy)
    } else {
        ConsumerStrategy::from_name(&raw.consumer_strategy).map_err(|e| status(&e))?
    };
    let deprecated_revision = raw.revision;
    let build =
        || -> Result<Settings, PersistentError> { Ok(settings!(&raw, create_req, strategy)) };
    let settings = build().map_err(|e| status(&e))?;
    let (source, start_from) = match options.stream_option {
        Some(create_req::options::StreamOption::Stream(stream)) => {
            let name = convert::stream_name(stream.stream_identifier.as_ref())?;
            let start = match stream.revision_option {
                Some(create_req::stream_options::RevisionOption::Revision(revision)) => {
                    StartFrom::Revision(revision)
                }
                Some(create_req::stream_options::RevisionOption::End(_)) => StartFrom::End,
                Some(create_req::stream_options::RevisionOption::Start(_)) | None => {
                    StartFrom::Start
                }
            };
            (Source::Stream(name), start)
        }
        Some(create_req::options::StreamOption::All(all)) => {
            let start = match all.all_option {
                Some(create_req::all_options::AllOption::Position(position)) => {
                    match convert::position_of_commit(position.commit_position) {
                        Some(position) => StartFrom::Position(position),
                        None => StartFrom::Start,
                    }
                }
                Some(create_req::all_options::AllOption::End(_)) => StartFrom::End,
                Some(create_req::all_options::AllOption::Start(_)) | None => StartFrom::Start,
            };
            (Source::All(filter_spec(all.filter_option)), start)
        }
        // Clients before 21.10 name the stream in the deprecated fields.
        None => {
            let name = convert::stream_name(options.stream_identifier.as_ref())?;
            let start = match deprecated_revision {
                u64::MAX => StartFrom::End,
                revision => StartFrom::Revision(revision),
            };
            (Source::Stream(name), start)
        }
    };
    Ok(GroupConfig {
        group: options.group_name,
        source,
        start_from,
        settings,
    })
}

// Clients before 21.10 send the deprecated fields; they are read on purpose.
#[allow(deprecated)]
fn update_config(request: ps::UpdateReq) -> Result<GroupConfig, Status> {
    let options = request.options.ok_or_else(|| missing("options"))?;
    let raw = options.settings.ok_or_else(|| missing("settings"))?;
    let strategy = strategy_of(raw.named_consumer_strategy);
    let deprecated_revision = raw.revision;
    let build =
        || -> Result<Settings, PersistentError> { Ok(settings!(&raw, update_req, strategy)) };
    let settings = build().map_err(|e| status(&e))?;
    let (source, start_from) = match options.stream_option {
        Some(update_req::options::StreamOption::Stream(stream)) => {
            let name = convert::stream_name(stream.stream_identifier.as_ref())?;
            let start = match stream.revision_option {
                Some(update_req::stream_options::RevisionOption::Revision(revision)) => {
                    StartFrom::Revision(revision)
                }
                Some(update_req::stream_options::RevisionOption::End(_)) => StartFrom::End,
                Some(update_req::stream_options::RevisionOption::Start(_)) | None => {
                    StartFrom::Start
                }
            };
            (Source::Stream(name), start)
        }
        Some(update_req::options::StreamOption::All(all)) => {
            let start = match all.all_option {
                Some(update_req::all_options::AllOption::Position(position)) => {
                    match convert::position_of_commit(position.commit_position) {
                        Some(position) => StartFrom::Position(position),
                        None => StartFrom::Start,
                    }
                }
                Some(update_req::all_options::AllOption::End(_)) => StartFrom::End,
                Some(update_req::all_options::AllOption::Start(_)) | None => StartFrom::Start,
            };
            // The registry keeps the group's filter: updates cannot change it.
            (Source::All(None), start)
        }
        None => {
            let name = convert::stream_name(options.stream_identifier.as_ref())?;
            let start = match deprecated_revision {
                u64::MAX => StartFrom::End,
                revision => StartFrom::Revision(revision),
            };
            (Source::Stream(name), start)
        }
    };
    Ok(GroupConfig {
        group: options.group_name,
        source,
        start_from,
        settings,
    })
}

/// How a checkpoint or event point reads in `GetInfo`: a revision, or KurrentDB's
/// `C:{commit}/P:{prepare}` for `$all`.
fn point_text(source: &Source, point: Option<u64>) -> String {
    match (source, point) {
        (_, None) => String::new(),
        (Source::Stream(_), Some(revision)) => revision.to_string(),
        (Source::All(_), Some(position)) => {
            let commit = convert::commit_position(Position(position));
            format!("C:{commit}/P:{commit}")
        }
    }
}

fn start_text(config: &GroupConfig) -> String {
    match (&config.source, config.start_from) {
        (Source::Stream(_), StartFrom::Start) => "0".to_owned(),
        (Source::Stream(_), StartFrom::End) => "-1".to_owned(),
        (_, StartFrom::Revision(revision)) => revision.to_string(),
        (Source::All(_), StartFrom::Start) => "C:0/P:0".to_owned(),
        (Source::All(_), StartFrom::End) => "C:-1/P:-1".to_owned(),
        (_, StartFrom::Position(position)) => {
            let commit = convert::commit_position(position);
            format!("C:{commit}/P:{commit}")
        }
    }
}

fn clamp_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn clamp_i32_u32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// KurrentDB's description of a group.
pub fn subscription_info(info: &GroupInfo) -> ps::SubscriptionInfo {
    let config = &info.config;
    let s = &config.settings;
    ps::SubscriptionInfo {
        event_source: config.source.name().to_owned(),
        group_name: config.group.clone(),
        status: if info.live { "Live" } else { "CatchingUp" }.to_owned(),
        connections: info
            .connections
            .iter()
            .map(|c| ps::subscription_info::ConnectionInfo {
                from: c.from.clone(),
                username: String::new(),
                average_items_per_second: 0,
                total_items: clamp_i64(c.total_items),
                count_since_last_measurement: 0,
                observed_measurements: Vec::new(),
                available_slots: clamp_i32(c.available_slots),
                in_flight_messages: clamp_i32(c.in_flight),
                connection_name: c.name.clone(),
            })
            .collect(),
        average_per_second: 0,
        total_items: clamp_i64(info.total_items),
        count_since_last_measurement: 0,
        last_checkpointed_event_position: point_text(&config.source, info.last_checkpoint),
        last_known_event_position: point_text(&config.source, info.last_known),
        resolve_link_tos: s.resolve_links,
        start_from: start_text(config),
        message_timeout_milliseconds: clamp_i32_u32(s.message_timeout_ms),
        extra_statistics: s.extra_statistics,
        max_retry_count: clamp_i32_u32(s.max_retry_count),
        live_buffer_size: clamp_i32_u32(s.live_buffer_size),
        buffer_size: clamp_i32_u32(s.history_buffer_size),
        read_batch_size: clamp_i32_u32(s.read_batch_size),
        check_point_after_milliseconds: clamp_i32_u32(s.checkpoint_after_ms),
        min_check_point_count: clamp_i32_u32(s.min_checkpoint_count),
        max_check_point_count: clamp_i32_u32(s.max_checkpoint_count),
        read_buffer_count: clamp_i32(info.buffered),
        live_buffer_count: i64::try_from(info.buffered).unwrap_or(i64::MAX),
        retry_buffer_count: clamp_i32(info.retry_buffered),
        total_in_flight_messages: clamp_i32(info.in_flight),
        outstanding_messages_count: clamp_i32(info.outstanding),
        named_consumer_strategy: s.consumer_strategy.name().to_owned(),
        max_subscriber_count: clamp_i32_u32(s.max_subscriber_count),
        parked_message_count: clamp_i64(info.parked),
    }
}

fn read_event(event: &RecordedEvent, retry_count: u32, structured: bool) -> ps::ReadResp {
    let commit = convert::commit_position(event.position);
    let id = if structured {
        convert::uuid_structured(event.id)
    } else {
        convert::uuid_string(event.id)
    };
    let recorded = read_resp::read_event::RecordedEvent {
        id: Some(id),
        stream_identifier: Some(convert::stream_identifier(&event.stream)),
        stream_revision: event.revision,
        prepare_position: commit,
        commit_position: commit,
        metadata: convert::system_metadata(event),
        custom_metadata: event.metadata.to_vec(),
        data: event.data.to_vec(),
    };
    ps::ReadResp {
        content: Some(read_resp::Content::Event(read_resp::ReadEvent {
            event: Some(recorded),
            link: None,
            position: Some(read_resp::read_event::Position::CommitPosition(commit)),
            count: Some(read_resp::read_event::Count::RetryCount(clamp_i32_u32(
                retry_count,
            ))),
        })),
    }
}

fn ids(ids: &[crate::proto::event_store::client::Uuid]) -> Result<Vec<uuid::Uuid>, Status> {
    ids.iter()
        .map(|id| convert::uuid_from_proto(Some(id)))
        .collect()
}

/// Applies one ack or nack from the client.
fn handle_request(consumer: &Consumer, request: ps::ReadReq) -> Result<(), Status> {
    use crate::persistent::registry::NackAction;
    match request.content {
        Some(read_req::Content::Ack(ack)) => consumer.ack(ids(&ack.ids)?),
        Some(read_req::Content::Nack(nack)) => {
            let action = match nack.action() {
                read_req::nack::Action::Unknown => NackAction::Unknown,
                read_req::nack::Action::Park => NackAction::Park,
                read_req::nack::Action::Retry => NackAction::Retry,
                read_req::nack::Action::Skip => NackAction::Skip,
                read_req::nack::Action::Stop => NackAction::Stop,
            };
            consumer.nack(ids(&nack.ids)?, action, nack.reason);
        }
        Some(read_req::Content::Options(_)) => {
            return Err(Status::invalid_argument(
                "the subscription options were already sent",
            ))
        }
        None => return Err(missing("content")),
    }
    Ok(())
}

/// Counts an open persistent subscription in the metrics while it lives.
struct OpenGauge(ServerState);

impl OpenGauge {
    fn new(state: &ServerState) -> OpenGauge {
        state
            .metrics
            .subscriptions_open
            .get_or_create(&ApiLabels { api: Api::Grpc })
            .inc();
        OpenGauge(state.clone())
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0
            .metrics
            .subscriptions_open
            .get_or_create(&ApiLabels { api: Api::Grpc })
            .dec();
    }
}

/// Runs one consumer's stream: events out, acks and nacks in, until the client
/// leaves, the group drops it, or the server stops.
async fn session(
    state: ServerState,
    mut consumer: Consumer,
    mut inbound: Streaming<ps::ReadReq>,
    tx: mpsc::Sender<Result<ps::ReadResp, Status>>,
    structured: bool,
    _slot: Slot,
) {
    let _gauge = OpenGauge::new(&state);
    let confirmation = ps::ReadResp {
        content: Some(read_resp::Content::SubscriptionConfirmation(
            read_resp::SubscriptionConfirmation {
                subscription_id: consumer.subscription_id(),
            },
        )),
    };
    if tx.send(Ok(confirmation)).await.is_err() {
        return;
    }
    let events_read = state
        .metrics
        .events_read
        .get_or_create(&ApiLabels { api: Api::Grpc })
        .clone();
    loop {
        tokio::select! {
            () = state.shutting_down() => break,
            message = consumer.recv() => match message {
                Some(ConsumerMessage::Event { event, retry_count }) => {
                    events_read.inc();
                    if tx.send(Ok(read_event(&event, retry_count, structured))).await.is_err() {
                        break;
                    }
                }
                Some(ConsumerMessage::Dropped) | None => {
                    let error = PersistentError::Dropped {
                        stream: consumer.source().to_owned(),
                        group: consumer.group().to_owned(),
                    };
                    let _ = tx.send(Err(status(&error))).await;
                    break;
                }
            },
            request = inbound.message() => match request {
                Ok(Some(request)) => {
                    if let Err(error) = handle_request(&consumer, request) {
                        let _ = tx.send(Err(error)).await;
                        break;
                    }
                }
                // The client closed its side or the connection broke.
                Ok(None) | Err(_) => break,
            },
        }
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ps::ReadResp, Status>> + Send>>;

#[tonic::async_trait]
impl PersistentSubscriptions for PersistentService {
    async fn create(
        &self,
        request: Request<ps::CreateReq>,
    ) -> Result<Response<ps::CreateResp>, Status> {
        Caller::of(&request)
            .authorize(&self.state, Operation::ManageSubscriptions)
            .await?;
        let config = create_config(request.into_inner())?;
        self.state
            .persistent
            .create(config)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ps::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<ps::UpdateReq>,
    ) -> Result<Response<ps::UpdateResp>, Status> {
        Caller::of(&request)
            .authorize(&self.state, Operation::ManageSubscriptions)
            .await?;
        let config = update_config(request.into_inner())?;
        self.state
            .persistent
            .update(config)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ps::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<ps::DeleteReq>,
    ) -> Result<Response<ps::DeleteResp>, Status> {
        use ps::delete_req::options::StreamOption;
        Caller::of(&request)
            .authorize(&self.state, Operation::ManageSubscriptions)
            .await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("options"))?;
        let source = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => source_name(Some(id), false)?,
            Some(StreamOption::All(_)) => source_name(None, true)?,
            None => return Err(missing("stream_option")),
        };
        self.state
            .persistent
            .delete(&source, &options.group_name)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ps::DeleteResp {}))
    }

    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<Streaming<ps::ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use read_req::options::{uuid_option, StreamOption};
        let caller = Caller::of(&request);
        let peer = caller.address;
        let mut inbound = request.into_inner();
        let first = tokio::select! {
            first = inbound.message() => first?.ok_or_else(|| missing("options"))?,
            () = self.state.shutting_down() => return Err(Status::unavailable("Server Is Not Ready: shutting down")),
        };
        let Some(read_req::Content::Options(options)) = first.content else {
            return Err(Status::invalid_argument(
                "the first message of Read must carry the options",
            ));
        };
        let source = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => source_name(Some(id), false)?,
            Some(StreamOption::All(_)) => source_name(None, true)?,
            None => return Err(missing("stream_option")),
        };
        // Consuming a group needs read access to its stream (`$all` for `$all` groups).
        caller
            .authorize_stream(&self.state, StreamAction::Read, &source)
            .await?;
        let structured = matches!(
            options
                .uuid_option
                .as_ref()
                .and_then(|o| o.content.as_ref()),
            Some(uuid_option::Content::Structured(_))
        );
        let buffer = usize::try_from(options.buffer_size)
            .map_err(|_| Status::invalid_argument("buffer_size must not be negative"))?;
        let slot = self
            .state
            .subscription_slots
            .acquire(peer, self.state.options.max_subscriptions_per_connection)
            .map_err(|error| Status::resource_exhausted(error.to_string()))?;
        let from = peer.map(|addr| addr.to_string()).unwrap_or_default();
        let consumer = self
            .state
            .persistent
            .connect(&source, &options.group_name, buffer, from)
            .await
            .map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        tokio::spawn(session(
            self.state.clone(),
            consumer,
            inbound,
            tx,
            structured,
            slot,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_info(
        &self,
        request: Request<ps::GetInfoReq>,
    ) -> Result<Response<ps::GetInfoResp>, Status> {
        use ps::get_info_req::options::StreamOption;
        Caller::of(&request)
            .authorize(&self.state, Operation::SubscriptionStatistics)
            .await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("options"))?;
        let source = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => source_name(Some(id), false)?,
            Some(StreamOption::All(_)) => source_name(None, true)?,
            None => return Err(missing("stream_option")),
        };
        let info = self
            .state
            .persistent
            .info(&source, &options.group_name)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ps::GetInfoResp {
            subscription_info: Some(subscription_info(&info)),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ps::ReplayParkedReq>,
    ) -> Result<Response<ps::ReplayParkedResp>, Status> {
        use ps::replay_parked_req::options::{StopAtOption, StreamOption};
        Caller::of(&request)
            .authorize(&self.state, Operation::ManageSubscriptions)
            .await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("options"))?;
        let source = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => source_name(Some(id), false)?,
            Some(StreamOption::All(_)) => source_name(None, true)?,
            None => return Err(missing("stream_option")),
        };
        let stop_at = match options.stop_at_option {
            Some(StopAtOption::StopAt(stop_at)) => Some(
                u64::try_from(stop_at)
                    .map_err(|_| Status::invalid_argument("stop_at must not be negative"))?,
            ),
            Some(StopAtOption::NoLimit(_)) | None => None,
        };
        self.state
            .persistent
            .replay_parked(&source, &options.group_name, stop_at)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ps::ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ps::ListReq>) -> Result<Response<ps::ListResp>, Status> {
        use ps::list_req::options::ListOption;
        use ps::list_req::stream_option::StreamOption;
        Caller::of(&request)
            .authorize(&self.state, Operation::SubscriptionStatistics)
            .await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| missing("options"))?;
        let source = match options.list_option {
            Some(ListOption::ListAllSubscriptions(_)) | None => None,
            Some(ListOption::ListForStream(stream)) => Some(match stream.stream_option {
                Some(StreamOption::Stream(id)) => source_name(Some(&id), false)?,
                Some(StreamOption::All(_)) => source_name(None, true)?,
                None => return Err(missing("stream_option")),
            }),
        };
        let infos = self
            .state
            .persistent
            .list(source.as_deref())
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ps::ListResp {
            subscriptions: infos.iter().map(subscription_info).collect(),
        }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        Caller::of(&request)
            .authorize(&self.state, Operation::ManageSubscriptions)
            .await?;
        // Stops every group (dropping their consumers); the next call reloads them
        // from the store and each resumes from its checkpoint.
        self.state.persistent.stop_all().await;
        Ok(Response::new(Empty {}))
    }
}
