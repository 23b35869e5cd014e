//! Every subscription group of the server, by source and name: what the gRPC (and
//! later HTTP) handlers call. Changes to the set of groups are serialised by one lock
//! and written to the config stream before they take effect; each group then runs in
//! its own task ([`super::group`]).
//!
//! Groups are loaded from the store on first use, so a restarted server resumes every
//! group from its checkpoint as soon as a client talks to it. One server runs a group;
//! spreading groups over several nodes of a PostgreSQL cluster (leases) is future work.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use strata::{CurrentRevision, ReadAllOptions, ReadError, ReadStreamOptions, Store};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::group::{self, Command, ConsumerId};
pub use super::group::{ConnectionInfo, ConsumerMessage, GroupInfo, NackAction};
use super::settings::{GroupConfig, Source, StartFrom, CONSUMER_BUFFER_MAX};
use super::storage;
use super::PersistentError;

type Key = (String, String);

struct Running {
    config: GroupConfig,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

struct Groups {
    loaded: bool,
    revision: CurrentRevision,
    running: BTreeMap<Key, Running>,
}

/// The server's subscription groups. Cheap to share behind an `Arc`.
pub struct Registry {
    store: Store,
    shutdown: watch::Receiver<bool>,
    groups: Mutex<Groups>,
    next_consumer: AtomicU64,
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
    /// A registry over `store`; its groups stop when `shutdown` turns true.
    pub fn new(store: Store, shutdown: watch::Receiver<bool>) -> Registry {
        Registry {
            store,
            shutdown,
            groups: Mutex::new(Groups {
                loaded: false,
                revision: CurrentRevision::NoStream,
                running: BTreeMap::new(),
            }),
            next_consumer: AtomicU64::new(1),
        }
    }

    async fn loaded(&self) -> Result<tokio::sync::MutexGuard<'_, Groups>, PersistentError> {
        let mut groups = self.groups.lock().await;
        if !groups.loaded {
            let stored = storage::load_config(&self.store).await?;
            groups.revision = stored.revision;
            for config in stored.groups {
                let running = self.start(config);
                groups.running.insert(
                    key(running.config.source.name(), &running.config.group),
                    running,
                );
            }
            groups.loaded = true;
        }
        Ok(groups)
    }

    fn start(&self, config: GroupConfig) -> Running {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = group::spawn(
            config.clone(),
            self.store.clone(),
            rx,
            self.shutdown.clone(),
        );
        Running {
            config,
            commands,
            task,
        }
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
        if groups.running.contains_key(&name) {
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
        let mut all: Vec<GroupConfig> = groups.running.values().map(|r| r.config.clone()).collect();
        all.push(config.clone());
        groups.revision = storage::save_config(&self.store, &all, groups.revision).await?;
        let running = self.start(config);
        groups.running.insert(name, running);
        Ok(())
    }

    /// Changes a group's start and settings (a `$all` group keeps its filter). Its
    /// consumers are dropped; it resumes from its checkpoint.
    pub async fn update(&self, mut config: GroupConfig) -> Result<(), PersistentError> {
        let mut groups = self.loaded().await?;
        let name = key(config.source.name(), &config.group);
        let Some(old) = groups.running.get(&name) else {
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
            .running
            .iter()
            .map(|(k, r)| {
                if *k == name {
                    config.clone()
                } else {
                    r.config.clone()
                }
            })
            .collect();
        groups.revision = storage::save_config(&self.store, &all, groups.revision).await?;
        if let Some(old) = groups.running.remove(&name) {
            stop(old).await;
        }
        let running = self.start(config);
        groups.running.insert(name, running);
        Ok(())
    }

    /// Deletes a group; its consumers are dropped.
    pub async fn delete(&self, source: &str, group: &str) -> Result<(), PersistentError> {
        let mut groups = self.loaded().await?;
        let name = key(source, group);
        if !groups.running.contains_key(&name) {
            return Err(not_found(source, group));
        }
        let all: Vec<GroupConfig> = groups
            .running
            .iter()
            .filter(|(k, _)| **k != name)
            .map(|(_, r)| r.config.clone())
            .collect();
        groups.revision = storage::save_config(&self.store, &all, groups.revision).await?;
        if let Some(old) = groups.running.remove(&name) {
            stop(old).await;
        }
        Ok(())
    }

    async fn ask<T>(
        &self,
        source: &str,
        group: &str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, PersistentError> {
        let groups = self.loaded().await?;
        let running = groups
            .running
            .get(&key(source, group))
            .ok_or_else(|| not_found(source, group))?;
        let (reply, answer) = oneshot::channel();
        running
            .commands
            .send(command(reply))
            .map_err(|_| dropped(source, group))?;
        drop(groups);
        answer.await.map_err(|_| dropped(source, group))
    }

    /// A group's state.
    pub async fn info(&self, source: &str, group: &str) -> Result<GroupInfo, PersistentError> {
        self.ask(source, group, |reply| Command::Info { reply })
            .await
    }

    /// The state of every group, or of the groups of one source.
    pub async fn list(&self, source: Option<&str>) -> Result<Vec<GroupInfo>, PersistentError> {
        let groups = self.loaded().await?;
        let mut answers = Vec::new();
        for ((name, _), running) in &groups.running {
            if source.is_some_and(|source| source != name) {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            if running.commands.send(Command::Info { reply }).is_ok() {
                answers.push(answer);
            }
        }
        drop(groups);
        let mut infos = Vec::with_capacity(answers.len());
        for answer in answers {
            // A group that stopped meanwhile is simply not listed.
            if let Ok(info) = answer.await {
                infos.push(info);
            }
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
        self.ask(source, group, |reply| Command::ReplayParked {
            stop_at,
            reply,
        })
        .await?
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
        let groups = self.loaded().await?;
        let running = groups
            .running
            .get(&key(source, group))
            .ok_or_else(|| not_found(source, group))?;
        let commands = running.commands.clone();
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
        let running = std::mem::take(&mut groups.running);
        groups.loaded = false;
        for (_, group) in running {
            stop(group).await;
        }
    }
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
