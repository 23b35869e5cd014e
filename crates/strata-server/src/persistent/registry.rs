//! Every subscription group of the server, by source and name: what the gRPC (and
//! later HTTP) handlers call. Changes to the set of groups are serialised by one lock
//! and written to the config stream before they take effect; each group then runs in
//! its own task ([`super::group`]).
//!
//! Groups are loaded from the store on first use, so a restarted server resumes every
//! group from its checkpoint as soon as a client talks to it.
//!
//! With [`GroupLeases`] (several nodes on one PostgreSQL database) a group runs only on
//! the node holding its lease ([`super::lease`]): it starts where a consumer first asks
//! for it, and other nodes answer such requests with [`PersistentError::NotLeader`].
//! Every call then re-reads the config from the store first, so groups created,
//! changed or deleted through another node are seen at once. `GetInfo` and `List`
//! answer on every node; live statistics (consumers, counts) come only from the node
//! running the group, other nodes show the config, checkpoint and parked count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use strata::{CurrentRevision, ReadAllOptions, ReadError, ReadStreamOptions, Store};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::group::{self, Command, ConsumerId};
pub use super::group::{ConnectionInfo, ConsumerMessage, GroupInfo, NackAction};
use super::lease::{endpoint, lease_name, GroupLeases, Term};
use super::settings::{GroupConfig, Source, StartFrom, CONSUMER_BUFFER_MAX};
use super::storage;
use super::PersistentError;

type Key = (String, String);

/// A group running in this process.
struct Running {
    commands: mpsc::UnboundedSender<Command>,
    /// The group's task, or under a lease the term's task, which owns the group's.
    task: JoinHandle<()>,
}

/// A group this node knows of, running here or not (under leases: elsewhere, or
/// nowhere until a consumer asks).
struct Entry {
    config: GroupConfig,
    running: Option<Running>,
}

struct Groups {
    loaded: bool,
    revision: CurrentRevision,
    entries: BTreeMap<Key, Entry>,
}

/// The server's subscription groups. Cheap to share behind an `Arc`.
pub struct Registry {
    store: Store,
    shutdown: watch::Receiver<bool>,
    groups: Mutex<Groups>,
    next_consumer: AtomicU64,
    leases: Option<GroupLeases>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn key(source: &str, group: &str) -> Key {
    (source.to_owned(), group.to_owned())
}

fn not_found(source: &str, group: &str) -> PersistentError {
    PersistentError::NotFound {
        stream: source.to_owned(),
        group: group.to_owned(),
    }
}

impl Registry {
    /// A registry over `store` running every group in this process; its groups stop
    /// when `shutdown` turns true.
    pub fn new(store: Store, shutdown: watch::Receiver<bool>) -> Registry {
        Registry::with_leases(store, shutdown, None)
    }

    /// A registry that, given `leases`, runs each group only while this node holds the
    /// group's lease (several nodes on one database); without, like [`Registry::new`].
    pub fn with_leases(
        store: Store,
        shutdown: watch::Receiver<bool>,
        leases: Option<GroupLeases>,
    ) -> Registry {
        Registry {
            store,
            shutdown,
            groups: Mutex::new(Groups {
                loaded: false,
                revision: CurrentRevision::NoStream,
                entries: BTreeMap::new(),
            }),
            next_consumer: AtomicU64::new(1),
            leases,
        }
    }

    /// The groups, loaded on first use; under leases re-read on every call, since other
    /// nodes change them too.
    async fn loaded(&self) -> Result<tokio::sync::MutexGuard<'_, Groups>, PersistentError> {
        let mut groups = self.groups.lock().await;
        if self.leases.is_some() {
            self.refresh(&mut groups).await?;
        } else if !groups.loaded {
            let stored = storage::load_config(&self.store).await?;
            groups.revision = stored.revision;
            for config in stored.groups {
                let running = Some(self.start(config.clone()));
                groups.entries.insert(
                    key(config.source.name(), &config.group),
                    Entry { config, running },
                );
            }
            groups.loaded = true;
        }
        Ok(groups)
    }

    /// Makes the known groups the stored ones: a group deleted or changed through
    /// another node stops here if it runs here (a changed one starts again with its new
    /// config when a consumer asks).
    async fn refresh(&self, groups: &mut Groups) -> Result<(), PersistentError> {
        let stored = storage::load_config(&self.store).await?;
        groups.revision = stored.revision;
        let mut old = std::mem::take(&mut groups.entries);
        let mut to_stop = Vec::new();
        for config in stored.groups {
            let name = key(config.source.name(), &config.group);
            let mut running = None;
            if let Some(entry) = old.remove(&name) {
                match entry.running {
                    Some(live) if entry.config == config && !live.task.is_finished() => {
                        running = Some(live);
                    }
                    Some(live) => to_stop.push(live),
                    None => {}
                }
            }
            groups.entries.insert(name, Entry { config, running });
        }
        to_stop.extend(old.into_values().filter_map(|entry| entry.running));
        groups.loaded = true;
        // The map is whole before waiting: a caller dropped meanwhile leaves it right
        // (and a dropped `Running` still stops its group: the term holds no sender).
        for live in to_stop {
            stop(live).await;
        }
        Ok(())
    }

    fn start(&self, config: GroupConfig) -> Running {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = group::spawn(config, self.store.clone(), rx, self.shutdown.clone());
        Running { commands, task }
    }

    /// The commands of `name`'s running group. Under leases a group not running here
    /// is started if this node gets its lease, else the answer names the holder.
    async fn running(
        &self,
        groups: &mut Groups,
        source: &str,
        group: &str,
    ) -> Result<mpsc::UnboundedSender<Command>, PersistentError> {
        let entry = groups
            .entries
            .get_mut(&key(source, group))
            .ok_or_else(|| not_found(source, group))?;
        let Some(leases) = &self.leases else {
            // Every group runs from load to delete; a failed one answers `Dropped`.
            return entry
                .running
                .as_ref()
                .map(|running| running.commands.clone())
                .ok_or_else(|| dropped(source, group));
        };
        if let Some(running) = &entry.running {
            if !running.task.is_finished() {
                return Ok(running.commands.clone());
            }
        }
        entry.running = None;
        let name = lease_name(source, group);
        let Some(lease) = leases
            .leases
            .acquire(&name, &leases.holder, leases.ttl)
            .await?
        else {
            return Err(self.not_leader(leases, &name, source, group).await?);
        };
        let (commands, rx) = mpsc::unbounded_channel();
        let task = group::spawn(
            entry.config.clone(),
            self.store.clone(),
            rx,
            self.shutdown.clone(),
        );
        let term = Term {
            leases: leases.clone(),
            lease,
            store: self.store.clone(),
            config: entry.config.clone(),
            commands: commands.downgrade(),
        };
        let task = tokio::spawn(term.hold(task));
        entry.running = Some(Running {
            commands: commands.clone(),
            task,
        });
        Ok(commands)
    }

    /// Where to send a client for a group whose lease another node holds.
    async fn not_leader(
        &self,
        leases: &GroupLeases,
        name: &str,
        source: &str,
        group: &str,
    ) -> Result<PersistentError, PersistentError> {
        match leases.leases.current(name).await? {
            Some(info) => {
                let (host, port) = endpoint(&info.holder);
                Ok(PersistentError::NotLeader { host, port })
            }
            // Released between the two calls: the client's retry will find it free.
            None => Ok(dropped(source, group)),
        }
    }

    /// The state of a group not running here, from the store: no consumers or counts.
    async fn stored_info(&self, config: &GroupConfig) -> Result<GroupInfo, PersistentError> {
        let checkpoint =
            storage::load_checkpoint(&self.store, &config.source, &config.group).await?;
        let parked = storage::load_parked(&self.store, &config.source, &config.group)
            .await?
            .len() as u64;
        Ok(GroupInfo {
            config: config.clone(),
            live: false,
            connections: Vec::new(),
            total_items: 0,
            last_checkpoint: checkpoint,
            last_known: checkpoint,
            buffered: 0,
            retry_buffered: 0,
            in_flight: 0,
            outstanding: 0,
            parked,
        })
    }

    /// The last point of `source` now (revision or position), to start an `End`
    /// group from: resolved once, so a restart does not skip what came in between.
    async fn end_of(&self, source: &Source) -> Result<Option<u64>, PersistentError> {
        match source {
            Source::Stream(stream) => {
                match self
                    .store
                    .read_stream(stream, ReadStreamOptions::backwards().limit(1))
                    .await
                {
                    Ok(events) => Ok(events.first().map(|e| e.revision)),
                    Err(ReadError::StreamNotFound { .. }) => Ok(None),
                    Err(error) => Err(error.into()),
                }
            }
            Source::All(_) => {
                let last = self
                    .store
                    .read_all(ReadAllOptions::backwards().limit(1))
                    .await?;
                Ok(last.first().map(|e| e.position.0))
            }
        }
    }

    /// Creates a group; fails if the source already has a group of that name.
    pub async fn create(&self, config: GroupConfig) -> Result<(), PersistentError> {
        config.validate()?;
        let mut groups = self.loaded().await?;
        let name = key(config.source.name(), &config.group);
        if groups.entries.contains_key(&name) {
            return Err(PersistentError::Exists {
                stream: name.0,
                group: name.1,
            });
        }
        // A group of the same name may have existed before: start from clean state.
        let checkpoint = match config.start_from {
            StartFrom::End => self.end_of(&config.source).await?,
            _ => None,
        };
        storage::save_checkpoint(&self.store, &config.source, &config.group, checkpoint).await?;
        storage::mark_replayed(&self.store, &config.source, &config.group, None).await?;
        let mut all: Vec<GroupConfig> = groups.entries.values().map(|e| e.config.clone()).collect();
        all.push(config.clone());
        groups.revision = storage::save_config(&self.store, &all, groups.revision).await?;
        // Under leases it starts where a consumer first asks for it.
        let running = self.leases.is_none().then(|| self.start(config.clone()));
        groups.entries.insert(name, Entry { config, running });
        Ok(())
    }

    /// Changes a group's start and settings (a `$all` group keeps its filter). Its
    /// consumers are dropped; it resumes from its checkpoint.
    pub async fn update(&self, mut config: GroupConfig) -> Result<(), PersistentError> {
        let mut groups = self.loaded().await?;
        let name = key(config.source.name(), &config.group);
        let Some(old) = groups.entries.get(&name) else {
            return Err(not_found(&name.0, &name.1));
        };
        if let (Source::All(filter), Source::All(None)) = (&old.config.source, &config.source) {
            config.source = Source::All(filter.clone());
        }
        config.validate()?;
        if config.start_from == StartFrom::End
            && storage::load_checkpoint(&self.store, &config.source, &config.group)
                .await?
                .is_none()
        {
            let end = self.end_of(&config.source).await?;
            storage::save_checkpoint(&self.store, &config.source, &config.group, end).await?;
        }
        let all: Vec<GroupConfig> = groups
            .entries
            .iter()
            .map(|(k, e)| {
                if *k == name {
                    config.clone()
                } else {
                    e.config.clone()
                }
            })
            .collect();
        groups.revision = storage::save_config(&self.store, &all, groups.revision).await?;
        if let Some(live) = groups.entries.remove(&name).and_then(|e| e.running) {
            stop(live).await;
        }
        // Under leases the stop released the lease; the next consumer starts it anywhere.
        let running = self.leases.is_none().then(|| self.start(config.clone()));
        groups.entries.insert(name, Entry { config, running });
        Ok(())
    }

    /// Deletes a group; its consumers are dropped.
    pub async fn delete(&self, source: &str, group: &str) -> Result<(), PersistentError> {
        let mut groups = self.loaded().await?;
        let name = key(source, group);
        if !groups.entries.contains_key(&name) {
            return Err(not_found(source, group));
        }
        let all: Vec<GroupConfig> = groups
            .entries
            .iter()
            .filter(|(k, _)| **k != name)
            .map(|(_, e)| e.config.clone())
            .collect();
        groups.revision = storage::save_config(&self.store, &all, groups.revision).await?;
        // A holder on another node stops it after its next renewal (config re-read).
        if let Some(live) = groups.entries.remove(&name).and_then(|e| e.running) {
            stop(live).await;
        }
        Ok(())
    }

    /// A group's state: live from its task where it runs; under leases, on a node
    /// where it does not run, its config, stored checkpoint and parked count.
    pub async fn info(&self, source: &str, group: &str) -> Result<GroupInfo, PersistentError> {
        let groups = self.loaded().await?;
        let entry = groups
            .entries
            .get(&key(source, group))
            .ok_or_else(|| not_found(source, group))?;
        let (reply, answer) = oneshot::channel();
        match live_commands(entry, self.leases.is_some()) {
            Some(commands) => commands
                .send(Command::Info { reply })
                .map_err(|_| dropped(source, group))?,
            None => return self.stored_info(&entry.config).await,
        }
        drop(groups);
        answer.await.map_err(|_| dropped(source, group))
    }

    /// The state of every group, or of the groups of one source.
    pub async fn list(&self, source: Option<&str>) -> Result<Vec<GroupInfo>, PersistentError> {
        let groups = self.loaded().await?;
        let mut answers = Vec::new();
        let mut stored = Vec::new();
        for ((name, _), entry) in &groups.entries {
            if source.is_some_and(|source| source != name) {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            match live_commands(entry, self.leases.is_some()) {
                Some(commands) => {
                    if commands.send(Command::Info { reply }).is_ok() {
                        answers.push(answer);
                    }
                }
                None => stored.push(entry.config.clone()),
            }
        }
        drop(groups);
        let mut infos = Vec::with_capacity(answers.len() + stored.len());
        for answer in answers {
            // A group that stopped meanwhile is simply not listed.
            if let Ok(info) = answer.await {
                infos.push(info);
            }
        }
        for config in &stored {
            infos.push(self.stored_info(config).await?);
        }
        Ok(infos)
    }

    /// Delivers a group's parked events again, at most `stop_at` of them.
    pub async fn replay_parked(
        &self,
        source: &str,
        group: &str,
        stop_at: Option<u64>,
    ) -> Result<(), PersistentError> {
        let mut groups = self.loaded().await?;
        let commands = self.running(&mut groups, source, group).await?;
        drop(groups);
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::ReplayParked { stop_at, reply })
            .map_err(|_| dropped(source, group))?;
        answer.await.map_err(|_| dropped(source, group))?
    }

    /// Connects a consumer that may hold `buffer` unacked events; `from` names the
    /// client (its address).
    pub async fn connect(
        &self,
        source: &str,
        group: &str,
        buffer: usize,
        from: String,
    ) -> Result<Consumer, PersistentError> {
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let buffer = buffer.clamp(1, CONSUMER_BUFFER_MAX);
        let mut groups = self.loaded().await?;
        let commands = self.running(&mut groups, source, group).await?;
        drop(groups);
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Connect {
                consumer: id,
                from,
                buffer,
                tx,
                reply,
            })
            .map_err(|_| dropped(source, group))?;
        answer.await.map_err(|_| dropped(source, group))??;
        Ok(Consumer {
            id,
            source: source.to_owned(),
            group: group.to_owned(),
            rx,
            commands,
        })
    }

    /// Stops every group (writing their checkpoints) and waits for them: call before
    /// closing the store, so no group holds it.
    pub async fn stop_all(&self) {
        let mut groups = self.groups.lock().await;
        let entries = std::mem::take(&mut groups.entries);
        groups.loaded = false;
        for (_, entry) in entries {
            if let Some(live) = entry.running {
                stop(live).await;
            }
        }
    }
}

/// Where to ask a group's live state: its task if it runs here. Without leases every
/// group runs here (a failed one answers `Dropped`, as before).
fn live_commands(entry: &Entry, leased: bool) -> Option<&mpsc::UnboundedSender<Command>> {
    let running = entry.running.as_ref()?;
    (!leased || !running.task.is_finished()).then_some(&running.commands)
}

fn dropped(source: &str, group: &str) -> PersistentError {
    PersistentError::Dropped {
        stream: source.to_owned(),
        group: group.to_owned(),
    }
}

async fn stop(running: Running) {
    let _ = running.commands.send(Command::Stop);
    if let Err(error) = running.task.await {
        tracing::error!(%error, "persistent subscription group task failed");
    }
}

/// A connected consumer of a group: receives events, sends acks and nacks.
/// Dropping it disconnects it; the events it held are retried.
#[derive(Debug)]
pub struct Consumer {
    id: ConsumerId,
    source: String,
    group: String,
    rx: mpsc::UnboundedReceiver<ConsumerMessage>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Consumer {
    /// `{source}::{group}`, as KurrentDB confirms a subscription.
    pub fn subscription_id(&self) -> String {
        format!("{}::{}", self.source, self.group)
    }

    /// The source's name (`$all` or the stream).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next event, or `Dropped`; `None` once the group is gone.
    pub async fn recv(&mut self) -> Option<ConsumerMessage> {
        self.rx.recv().await
    }

    /// Acknowledges processed events.
    pub fn ack(&self, ids: Vec<Uuid>) {
        let _ = self.commands.send(Command::Ack {
            consumer: self.id,
            ids,
        });
    }

    /// Reports events not processed, and what to do with them.
    pub fn nack(&self, ids: Vec<Uuid>, action: NackAction, reason: String) {
        let _ = self.commands.send(Command::Nack {
            consumer: self.id,
            ids,
            action,
            reason,
        });
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self
            .commands
            .send(Command::Disconnect { consumer: self.id });
    }
}
