//! One subscription group at work: a task that owns everything about the group's
//! delivery, so no lock guards it and every decision sees one consistent state.
//!
//! ## How an event travels
//! A reader task follows the source (a catch-up subscription from the checkpoint) and
//! feeds a bounded channel, so at most `read_ahead` events wait in memory. The group
//! takes an event from it only when a consumer has a free slot, gives it a sequence
//! number, and sends it to one consumer, with a deadline of `message_timeout_ms`.
//! An event is *outstanding* until it is finished: acked, skipped, or parked. A nack
//! (retry) or an expired deadline puts it in the retry queue, which is served before new
//! events, with its retry count one higher; once the retry count would pass
//! `max_retry_count` the event is parked instead.
//!
//! ## Invariants
//! - An outstanding event is held by at most one consumer (`Entry::holder`), and a
//!   consumer's `in_flight` is the number of entries it holds, never above its buffer.
//! - Two outstanding entries never share an event id (ids are how acks name events); a
//!   new event whose id is outstanding waits until the first one is finished.
//! - `frontier` is the point (revision or position) such that every event read from the
//!   source at or before it is finished; the checkpoint is only ever set to it, so a
//!   restart never skips an unfinished event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use strata::{
    Position, ReadStreamOptions, RecordedEvent, Store, SubscribeFrom, SubscriptionMessage,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::settings::{GroupConfig, Source, StartFrom};
use super::storage::{self, ParkedPointer};
use super::PersistentError;

/// How long the reader waits before retrying after the store failed a read.
const READ_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The shortest interval between timed checkpoint checks.
const CHECKPOINT_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// A connected consumer's number, unique in the server.
pub type ConsumerId = u64;

/// What a consumer receives from its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerMessage {
    /// An event to process and then ack or nack; `retry_count` is how often it was
    /// delivered before.
    Event {
        /// The event.
        event: RecordedEvent,
        /// Earlier deliveries of this event.
        retry_count: u32,
    },
    /// The group stopped (deleted or updated): the consumer is disconnected.
    Dropped,
}

/// What a consumer asks for with a nack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackAction {
    /// Let the server decide: retry.
    Unknown,
    /// Park the event now.
    Park,
    /// Deliver it again (counts as a retry).
    Retry,
    /// Treat it as processed.
    Skip,
    /// Stop this consumer: the event is retried elsewhere, not counted as a retry.
    Stop,
}

/// A connected consumer, as `GetInfo` shows it.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Where it connects from.
    pub from: String,
    /// Its name (the consumer number).
    pub name: String,
    /// Events it holds.
    pub in_flight: usize,
    /// Events it may still receive before acking.
    pub available_slots: usize,
    /// Events delivered to it.
    pub total_items: u64,
}

/// A group's state, as `GetInfo` and `List` show it.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// The group's config.
    pub config: GroupConfig,
    /// Whether it has delivered every event recorded so far (`Live`) or not.
    pub live: bool,
    /// Connected consumers.
    pub connections: Vec<ConnectionInfo>,
    /// Events delivered, retries included.
    pub total_items: u64,
    /// The stored checkpoint (revision or position).
    pub last_checkpoint: Option<u64>,
    /// The newest event read from the source (revision or position).
    pub last_known: Option<u64>,
    /// Events waiting in the read-ahead buffer.
    pub buffered: usize,
    /// Events waiting to be retried.
    pub retry_buffered: usize,
    /// Events held by consumers.
    pub in_flight: usize,
    /// Events read but not finished.
    pub outstanding: usize,
    /// Events parked and not replayed.
    pub parked: u64,
}

/// A request to a group's task.
#[derive(Debug)]
pub enum Command {
    /// Adds a consumer that may hold `buffer` events.
    Connect {
        /// Its number.
        consumer: ConsumerId,
        /// Where it connects from.
        from: String,
        /// Events it may hold unacked.
        buffer: usize,
        /// Where its events go.
        tx: mpsc::UnboundedSender<ConsumerMessage>,
        /// Ok, or the group is full.
        reply: oneshot::Sender<Result<(), PersistentError>>,
    },
    /// Removes a consumer; what it held is retried.
    Disconnect {
        /// Its number.
        consumer: ConsumerId,
    },
    /// Events processed.
    Ack {
        /// Which consumer says so.
        consumer: ConsumerId,
        /// The events' ids.
        ids: Vec<Uuid>,
    },
    /// Events not processed.
    Nack {
        /// Which consumer says so.
        consumer: ConsumerId,
        /// The events' ids.
        ids: Vec<Uuid>,
        /// What to do with them.
        action: NackAction,
        /// Why (kept with parked events).
        reason: String,
    },
    /// Delivers parked events again (at most `stop_at` of them).
    ReplayParked {
        /// The most events to replay (`None`: all).
        stop_at: Option<u64>,
        /// Done, or the store failed.
        reply: oneshot::Sender<Result<(), PersistentError>>,
    },
    /// Reports the group's state.
    Info {
        /// Where the report goes.
        reply: oneshot::Sender<GroupInfo>,
    },
    /// Drops every consumer, writes the checkpoint and ends the task.
    Stop,
}

enum SourceItem {
    Event(RecordedEvent),
    CaughtUp,
}

struct Entry {
    event: RecordedEvent,
    retry_count: u32,
    /// Order among events read from the source; `None` for replayed parked events,
    /// which do not move the checkpoint.
    seq: Option<u64>,
    holder: Option<(ConsumerId, Option<(Instant, u64)>)>,
}

struct Slot {
    id: ConsumerId,
    from: String,
    buffer: usize,
    in_flight: usize,
    total_items: u64,
    tx: mpsc::UnboundedSender<ConsumerMessage>,
}

impl Slot {
    fn free(&self) -> usize {
        self.buffer.saturating_sub(self.in_flight)
    }
}

/// The group's task state.
struct Group {
    config: GroupConfig,
    store: Store,
    consumers: Vec<Slot>,
    round_robin: usize,
    entries: HashMap<Uuid, Entry>,
    retry: VecDeque<Uuid>,
    deadlines: BTreeMap<(Instant, u64), Uuid>,
    deadline_counter: u64,
    source: mpsc::Receiver<SourceItem>,
    /// False once the reader has ended (the store closed, or the filter is invalid):
    /// the channel then yields `None` at once, so it must not be polled again.
    source_open: bool,
    stash: Option<RecordedEvent>,
    live: bool,
    last_known: Option<u64>,
    next_seq: u64,
    frontier_seq: u64,
    frontier: Option<u64>,
    finished_ahead: BTreeMap<u64, u64>,
    last_checkpoint: Option<u64>,
    finished_since_checkpoint: u64,
    parked: u64,
    total_items: u64,
}

/// Starts a group's task; it runs until [`Command::Stop`], until every command sender
/// is gone, or until `shutdown` turns true.
pub fn spawn(
    config: GroupConfig,
    store: Store,
    commands: mpsc::UnboundedReceiver<Command>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let name = format!("{}::{}", config.source.name(), config.group);
        match Group::start(config, store).await {
            Ok(group) => group.run(commands, shutdown).await,
            Err(error) => {
                tracing::error!(group = %name, %error, "persistent subscription group failed to start")
            }
        }
    })
}

/// The point of `event` a checkpoint of this source records.
fn point(source: &Source, event: &RecordedEvent) -> u64 {
    match source {
        Source::Stream(_) => event.revision,
        Source::All(_) => event.position.0,
    }
}

impl Group {
    async fn start(config: GroupConfig, store: Store) -> Result<Group, PersistentError> {
        let checkpoint = storage::load_checkpoint(&store, &config.source, &config.group).await?;
        let parked = storage::load_parked(&store, &config.source, &config.group)
            .await?
            .len() as u64;
        // Without a checkpoint, `End` was resolved when the group was created or updated
        // (the registry stores the head then), so only an empty source is left: start.
        let after = checkpoint.or(match config.start_from {
            StartFrom::Start | StartFrom::End => None,
            StartFrom::Revision(revision) => revision.checked_sub(1),
            StartFrom::Position(position) => position.0.checked_sub(1),
        });
        let (tx, rx) = mpsc::channel(config.read_ahead());
        tokio::spawn(read_source(store.clone(), config.source.clone(), after, tx));
        Ok(Group {
            config,
            store,
            consumers: Vec::new(),
            round_robin: 0,
            entries: HashMap::new(),
            retry: VecDeque::new(),
            deadlines: BTreeMap::new(),
            deadline_counter: 0,
            source: rx,
            source_open: true,
            stash: None,
            live: false,
            last_known: after,
            next_seq: 0,
            frontier_seq: 0,
            frontier: after,
            finished_ahead: BTreeMap::new(),
            last_checkpoint: checkpoint,
            finished_since_checkpoint: 0,
            parked,
            total_items: 0,
        })
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let every = Duration::from_millis(u64::from(self.config.settings.checkpoint_after_ms))
            .max(CHECKPOINT_INTERVAL_MIN);
        let mut checkpoint_timer = tokio::time::interval(every);
        checkpoint_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.pump();
            let deadline = self.deadlines.keys().next().map(|(at, _)| *at);
            let can_take = self.source_open
                && self.stash.is_none()
                && self.consumers.iter().any(|c| c.free() > 0);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop) | None => {
                        self.drop_consumers();
                        break;
                    }
                    Some(command) => self.handle(command).await,
                },
                item = self.source.recv(), if can_take => match item {
                    Some(SourceItem::Event(event)) => self.stash = Some(event),
                    Some(SourceItem::CaughtUp) => self.live = true,
                    None => {
                        tracing::warn!(group = %self.config.group, source = self.config.source.name(), "persistent subscription stopped reading its source");
                        self.source_open = false;
                    }
                },
                () = sleep_until(deadline) => self.expire().await,
                _ = checkpoint_timer.tick() => {
                    if self.finished_since_checkpoint >= u64::from(self.config.settings.min_checkpoint_count) {
                        self.checkpoint().await;
                    }
                }
                () = stopping(&mut shutdown) => break,
            }
        }
        // At-least-once either way; writing the frontier now only spares consumers
        // redeliveries after the restart.
        self.checkpoint().await;
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Connect {
                consumer,
                from,
                buffer,
                tx,
                reply,
            } => {
                let max = self.config.settings.max_subscriber_count as usize;
                let result = if max != 0 && self.consumers.len() >= max {
                    Err(PersistentError::MaxSubscribers {
                        stream: self.config.source.name().to_owned(),
                        group: self.config.group.clone(),
                    })
                } else {
                    self.consumers.push(Slot {
                        id: consumer,
                        from,
                        buffer,
                        in_flight: 0,
                        total_items: 0,
                        tx,
                    });
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::Disconnect { consumer } => self.disconnect(consumer),
            Command::Ack { consumer: _, ids } => {
                // An ack finishes the event whoever holds it now: a late ack after a
                // timeout still means the work was done. Unknown ids (already finished,
                // or acked twice) are ignored, as KurrentDB does.
                for id in ids {
                    if self.entries.contains_key(&id) {
                        self.finish(id).await;
                    }
                }
            }
            Command::Nack {
                consumer,
                ids,
                action,
                reason,
            } => self.nack(consumer, ids, action, &reason).await,
            Command::ReplayParked { stop_at, reply } => {
                let _ = reply.send(self.replay_parked(stop_at).await);
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::Stop => {}
        }
    }

    async fn nack(
        &mut self,
        consumer: ConsumerId,
        ids: Vec<Uuid>,
        action: NackAction,
        reason: &str,
    ) {
        for id in ids {
            if !self.entries.contains_key(&id) {
                continue;
            }
            match action {
                NackAction::Park => {
                    let reason = if reason.is_empty() {
                        "Parked by the client"
                    } else {
                        reason
                    };
                    self.park(id, reason).await;
                }
                NackAction::Retry | NackAction::Unknown => self.retry(id).await,
                NackAction::Skip => self.finish(id).await,
                NackAction::Stop => {
                    self.release(id);
                    self.retry.push_front(id);
                }
            }
        }
        if action == NackAction::Stop {
            if let Some(slot) = self.consumers.iter().find(|c| c.id == consumer) {
                let _ = slot.tx.send(ConsumerMessage::Dropped);
            }
            self.disconnect(consumer);
        }
    }

    /// Sends waiting events to consumers with free slots: retries first, then new
    /// events from the source, until no event or no slot is left.
    fn pump(&mut self) {
        loop {
            if !self.consumers.iter().any(|c| c.free() > 0) {
                return;
            }
            if let Some(&id) = self.retry.front() {
                let Some(stream) = self.entries.get(&id).map(|e| e.event.stream.clone()) else {
                    self.retry.pop_front();
                    continue;
                };
                let Some(slot) = self.choose(&stream) else {
                    return;
                };
                self.retry.pop_front();
                self.send(id, slot);
                continue;
            }
            if self.stash.is_none() {
                match self.source.try_recv() {
                    Ok(SourceItem::Event(event)) => self.stash = Some(event),
                    Ok(SourceItem::CaughtUp) => {
                        self.live = true;
                        continue;
                    }
                    Err(_) => return,
                }
            }
            let Some((id, stream)) = self.stash.as_ref().map(|e| (e.id, e.stream.clone())) else {
                return;
            };
            if self.entries.contains_key(&id) {
                return;
            }
            let Some(slot) = self.choose(&stream) else {
                return;
            };
            let Some(event) = self.stash.take() else {
                return;
            };
            let id = event.id;
            self.last_known = Some(point(&self.config.source, &event));
            let seq = self.next_seq;
            self.next_seq += 1;
            self.entries.insert(
                id,
                Entry {
                    event,
                    retry_count: 0,
                    seq: Some(seq),
                    holder: None,
                },
            );
            self.send(id, slot);
        }
    }

    /// The index of the consumer that gets the next event of `stream`, if it has room.
    fn choose(&mut self, stream: &str) -> Option<usize> {
        use super::settings::ConsumerStrategy;
        let count = self.consumers.len();
        if count == 0 {
            return None;
        }
        match self.config.settings.consumer_strategy {
            ConsumerStrategy::DispatchToSingle => self.consumers.iter().position(|c| c.free() > 0),
            ConsumerStrategy::RoundRobin => {
                for step in 0..count {
                    let index = (self.round_robin + step) % count;
                    if self.consumers[index].free() > 0 {
                        self.round_robin = (index + 1) % count;
                        return Some(index);
                    }
                }
                None
            }
            ConsumerStrategy::Pinned => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                stream.hash(&mut hasher);
                let index = (hasher.finish() % count as u64) as usize;
                (self.consumers[index].free() > 0).then_some(index)
            }
        }
    }

    fn send(&mut self, id: Uuid, slot: usize) {
        let timeout_ms = self.config.settings.message_timeout_ms;
        let deadline = (timeout_ms > 0).then(|| {
            self.deadline_counter += 1;
            let key = (
                Instant::now() + Duration::from_millis(u64::from(timeout_ms)),
                self.deadline_counter,
            );
            self.deadlines.insert(key, id);
            key
        });
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let consumer = &mut self.consumers[slot];
        entry.holder = Some((consumer.id, deadline));
        consumer.in_flight += 1;
        consumer.total_items += 1;
        self.total_items += 1;
        let message = ConsumerMessage::Event {
            event: entry.event.clone(),
            retry_count: entry.retry_count,
        };
        if consumer.tx.send(message).is_err() {
            // The consumer's session ended; its Disconnect is on its way. Until then
            // its events go back to the queue.
            let gone = consumer.id;
            self.disconnect(gone);
        }
    }

    /// Takes `id` away from its holder, if any.
    fn release(&mut self, id: Uuid) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if let Some((consumer, deadline)) = entry.holder.take() {
            if let Some(key) = deadline {
                self.deadlines.remove(&key);
            }
            if let Some(slot) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                slot.in_flight = slot.in_flight.saturating_sub(1);
            }
        }
    }

    fn disconnect(&mut self, consumer: ConsumerId) {
        let Some(index) = self.consumers.iter().position(|c| c.id == consumer) else {
            return;
        };
        self.consumers.remove(index);
        self.round_robin = 0;
        let mut held: Vec<(Option<u64>, Uuid)> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.holder, Some((holder, _)) if holder == consumer))
            .map(|(id, e)| (e.seq, *id))
            .collect();
        held.sort();
        for (_, id) in held.iter().rev() {
            self.release(*id);
            // Not the event's fault: retried without counting.
            self.retry.push_front(*id);
        }
    }

    fn drop_consumers(&mut self) {
        for slot in self.consumers.drain(..) {
            let _ = slot.tx.send(ConsumerMessage::Dropped);
        }
    }

    async fn retry(&mut self, id: Uuid) {
        let max = self.config.settings.max_retry_count;
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.retry_count >= max {
            self.park(id, "Max retry count reached").await;
            return;
        }
        entry.retry_count += 1;
        self.release(id);
        self.retry.retain(|queued| *queued != id);
        self.retry.push_back(id);
    }

    async fn park(&mut self, id: Uuid, reason: &str) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        let pointer = ParkedPointer::to(&entry.event, reason);
        match storage::park(
            &self.store,
            &self.config.source,
            &self.config.group,
            &pointer,
        )
        .await
        {
            Ok(()) => {
                self.parked += 1;
                self.finish(id).await;
            }
            Err(error) => {
                // Not recorded as parked, so not finished: it is retried instead.
                tracing::error!(%error, event = %id, "parking an event failed; retrying it");
                self.release(id);
                self.retry.retain(|queued| *queued != id);
                self.retry.push_back(id);
            }
        }
    }

    /// The event is done with (acked, skipped or parked).
    async fn finish(&mut self, id: Uuid) {
        self.release(id);
        self.retry.retain(|queued| *queued != id);
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        let Some(seq) = entry.seq else { return };
        self.finished_ahead
            .insert(seq, point(&self.config.source, &entry.event));
        while let Some(point) = self.finished_ahead.remove(&self.frontier_seq) {
            self.frontier = Some(point);
            self.frontier_seq += 1;
        }
        self.finished_since_checkpoint += 1;
        if self.finished_since_checkpoint
            >= u64::from(self.config.settings.max_checkpoint_count.max(1))
        {
            self.checkpoint().await;
        }
    }

    async fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<((Instant, u64), Uuid)> = self
            .deadlines
            .range(..=(now, u64::MAX))
            .map(|(key, id)| (*key, *id))
            .collect();
        for (key, id) in expired {
            // Removed first, so a deadline never outlives its entry and fires again.
            self.deadlines.remove(&key);
            if let Some(Entry {
                holder: Some((_, deadline)),
                ..
            }) = self.entries.get_mut(&id)
            {
                *deadline = None;
            }
            self.retry(id).await;
        }
    }

    async fn checkpoint(&mut self) {
        if self.frontier == self.last_checkpoint {
            return;
        }
        match storage::save_checkpoint(
            &self.store,
            &self.config.source,
            &self.config.group,
            self.frontier,
        )
        .await
        {
            Ok(()) => {
                self.last_checkpoint = self.frontier;
                self.finished_since_checkpoint = 0;
            }
            Err(error) => {
                tracing::warn!(%error, "writing a persistent subscription checkpoint failed; will retry")
            }
        }
    }

    async fn replay_parked(&mut self, stop_at: Option<u64>) -> Result<(), PersistentError> {
        let mut parked =
            storage::load_parked(&self.store, &self.config.source, &self.config.group).await?;
        if let Some(stop_at) = stop_at {
            parked.truncate(usize::try_from(stop_at).unwrap_or(usize::MAX));
        }
        let Some(&(through, _)) = parked.last() else {
            return Ok(());
        };
        let mut events = Vec::with_capacity(parked.len());
        for (_, pointer) in &parked {
            let options = ReadStreamOptions::forwards()
                .from_revision(pointer.revision)
                .limit(1);
            let found = match self.store.read_stream(&pointer.stream, options).await {
                Ok(found) => found,
                // Deleted since it was parked: there is nothing left to replay.
                Err(
                    strata::ReadError::StreamNotFound { .. }
                    | strata::ReadError::StreamDeleted { .. },
                ) => Vec::new(),
                Err(error) => return Err(error.into()),
            };
            match found.into_iter().next() {
                Some(event) if event.id == pointer.id && event.revision == pointer.revision => {
                    events.push(event)
                }
                _ => {
                    tracing::warn!(stream = %pointer.stream, revision = pointer.revision, "parked event no longer exists; not replayed")
                }
            }
        }
        storage::mark_replayed(
            &self.store,
            &self.config.source,
            &self.config.group,
            Some(through),
        )
        .await?;
        self.parked = self.parked.saturating_sub(parked.len() as u64);
        for event in events {
            if self.entries.contains_key(&event.id) {
                // Delivered right now anyway.
                continue;
            }
            let id = event.id;
            self.entries.insert(
                id,
                Entry {
                    event,
                    retry_count: 0,
                    seq: None,
                    holder: None,
                },
            );
            self.retry.push_back(id);
        }
        Ok(())
    }

    fn info(&self) -> GroupInfo {
        let in_flight = self.consumers.iter().map(|c| c.in_flight).sum();
        GroupInfo {
            config: self.config.clone(),
            live: self.live && self.source.is_empty() && self.stash.is_none(),
            connections: self
                .consumers
                .iter()
                .map(|c| ConnectionInfo {
                    from: c.from.clone(),
                    name: c.id.to_string(),
                    in_flight: c.in_flight,
                    available_slots: c.free(),
                    total_items: c.total_items,
                })
                .collect(),
            total_items: self.total_items,
            last_checkpoint: self.last_checkpoint,
            last_known: self.last_known,
            buffered: self.source.len() + usize::from(self.stash.is_some()),
            retry_buffered: self.retry.len(),
            in_flight,
            outstanding: self.entries.len(),
            parked: self.parked,
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone: stopping either way).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Follows the source from after `after` and feeds `tx` until the group is gone.
/// Failed reads are retried: the subscription keeps its place, so nothing is skipped.
async fn read_source(
    store: Store,
    source: Source,
    after: Option<u64>,
    tx: mpsc::Sender<SourceItem>,
) {
    let mut subscription = match &source {
        Source::Stream(stream) => store.subscribe_stream(
            stream,
            after.map_or(SubscribeFrom::Start, SubscribeFrom::After),
        ),
        Source::All(spec) => {
            let filter = match spec.as_ref().map(|spec| spec.to_filter()).transpose() {
                Ok(filter) => filter.unwrap_or_default(),
                Err(error) => {
                    // Validated at create; a stored filter that no longer compiles stops
                    // delivery rather than delivering everything.
                    tracing::error!(%error, "persistent subscription filter is invalid");
                    return;
                }
            };
            let from = after.map_or(SubscribeFrom::Start, |p| SubscribeFrom::After(Position(p)));
            store.subscribe_all(from, filter)
        }
    };
    loop {
        let item = tokio::select! {
            next = subscription.next() => next,
            () = tx.closed() => return,
        };
        let item = match item {
            Ok(SubscriptionMessage::Event(event)) if storage::is_state_stream(&event.stream) => {
                // Groups' own state: delivering it to a `$all` group would make every
                // checkpoint write an event for some group to checkpoint again.
                continue;
            }
            Ok(SubscriptionMessage::Event(event)) => SourceItem::Event(event),
            Ok(SubscriptionMessage::CaughtUp) => SourceItem::CaughtUp,
            Ok(_) => continue,
            Err(strata::ReadError::Storage(strata::StorageError::Closed)) => return,
            Err(error) => {
                tracing::warn!(%error, source = source.name(), "persistent subscription read failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(READ_RETRY_DELAY) => continue,
                    () = tx.closed() => return,
                }
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}
