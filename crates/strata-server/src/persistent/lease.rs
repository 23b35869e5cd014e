//! Groups under leases: when several nodes share one database, a group runs only on
//! the node holding lease `persistent:{source}::{group}`.
//!
//! A node takes the lease when a consumer (or a parked-event replay) asks it for a group
//! that runs nowhere, and keeps it while the group runs, by the rules of
//! [`strata::lease::LeaseSupervisor`]: renew every `ttl / 3`, stop the group at
//! `valid_until - ttl / 6` if renewals keep failing, and treat a renewal that comes
//! back in another epoch (or not at all) as lost. Unlike the supervisor, a node does
//! not compete for the lease in the background: the group goes where clients ask for
//! it, and a node that lost it waits to be asked again.
//!
//! Config changes made through another node reach the holder through the store: after
//! every renewal it re-reads the config and stops the group if it was deleted or
//! changed (the next consumer starts it with the new config).
//!
//! Nothing is fenced: a holder that stops late (paused longer than the TTL) may deliver
//! events the new holder delivers too, and its final checkpoint write may move the
//! checkpoint back or up to its own frontier. Both only cause redeliveries; a checkpoint
//! never passes an unfinished event, so none is lost (at least once, as on one node).

use std::sync::Arc;
use std::time::Duration;

use strata::lease::{Lease, Leases};
use strata::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use super::group::Command;
use super::settings::GroupConfig;
use super::storage;

/// The default lease TTL: a dead node's groups move within about this long.
pub const GROUP_LEASE_TTL_DEFAULT: Duration = Duration::from_secs(5);

/// The leases a server's groups run under, and this node's name in them.
#[derive(Clone)]
pub struct GroupLeases {
    /// The lease store every node shares (`strata_postgres::PostgresLeases`).
    pub leases: Arc<dyn Leases>,
    /// This node's gRPC address as clients reach it (`host:port`): the holder name,
    /// which other nodes send clients to.
    pub holder: String,
    /// How long a lease lasts after each renewal.
    pub ttl: Duration,
}

impl std::fmt::Debug for GroupLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLeases")
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The lease that decides which node runs a group.
pub fn lease_name(source: &str, group: &str) -> String {
    format!("persistent:{source}::{group}")
}

/// Splits a holder name (`host:port`) into the leader endpoint KurrentDB clients expect.
pub fn endpoint(holder: &str) -> (String, u16) {
    match holder.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host.trim_matches(['[', ']']).to_owned(), port),
            Err(_) => (holder.to_owned(), 0),
        },
        None => (holder.to_owned(), 0),
    }
}

/// One term of a group on this node: holds `lease` while the group task runs.
pub(super) struct Term {
    pub(super) leases: GroupLeases,
    pub(super) lease: Lease,
    pub(super) store: Store,
    pub(super) config: GroupConfig,
    /// Weak, so that the group still stops when the registry and its consumers let go
    /// of it, as a group without a lease does.
    pub(super) commands: mpsc::WeakUnboundedSender<Command>,
}

/// Why a term ends before its group stopped by itself.
enum End {
    /// The lease is gone or may be: another node may already run the group.
    Lost,
    /// The group was deleted or changed elsewhere: give the lease up at once.
    ConfigChanged,
}

impl Term {
    /// Renews the lease until the group stops (asked to, or failed) or the term ends;
    /// then stops the group and releases the lease if it may still be held.
    pub(super) async fn hold(self, mut group: JoinHandle<()>) {
        let renew_every = self.leases.ttl / 3;
        let stop_margin = self.leases.ttl / 6;
        let mut held = self.lease.clone();
        let mut next_renew = held.sent_at() + renew_every;
        let end = loop {
            let stop_at = held
                .valid_until
                .checked_sub(stop_margin)
                .unwrap_or(held.valid_until);
            tokio::select! {
                biased;
                result = &mut group => {
                    if let Err(error) = result {
                        tracing::error!(%error, lease = %held.name, "persistent subscription group task failed");
                    }
                    self.release(&held).await;
                    return;
                }
                () = sleep_until(stop_at) => {
                    tracing::warn!(lease = %held.name, "could not renew the group's lease: stopping it before the lease expires");
                    break End::Lost;
                }
                () = sleep_until(next_renew) => {
                    let renewal = timeout_at(
                        stop_at,
                        self.leases.leases.acquire(&held.name, &self.leases.holder, self.leases.ttl),
                    );
                    match renewal.await {
                        Ok(Ok(Some(lease))) if lease.epoch == held.epoch => {
                            next_renew = lease.sent_at() + renew_every;
                            held = lease;
                            if self.config_changed(stop_at).await {
                                break End::ConfigChanged;
                            }
                        }
                        Ok(Ok(Some(lease))) => {
                            // A new term: the lease had expired, someone may have run
                            // the group in between, so this term is over all the same.
                            tracing::warn!(lease = %held.name, "the group's lease expired before it was renewed");
                            self.release(&lease).await;
                            break End::Lost;
                        }
                        Ok(Ok(None)) => {
                            tracing::warn!(lease = %held.name, "the group's lease was taken over: stopping it");
                            break End::Lost;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%error, lease = %held.name, "renewing the group's lease failed; retrying");
                            next_renew = Instant::now() + renew_every / 4;
                        }
                        // The deadline passed: the next turn stops the group.
                        Err(_) => next_renew = stop_at,
                    }
                }
            }
        };
        // Consumers are dropped with KurrentDB's "dropped" error and reconnect; the new
        // holder resumes from the stored checkpoint.
        if let Some(commands) = self.commands.upgrade() {
            let _ = commands.send(Command::Stop);
        }
        if let Err(error) = group.await {
            tracing::error!(%error, lease = %held.name, "persistent subscription group task failed");
        }
        if let End::ConfigChanged = end {
            tracing::info!(lease = %held.name, "the group was changed or deleted on another node: stopped it");
            self.release(&held).await;
        }
    }

    /// Whether the stored config no longer holds this group as it runs. A failed read
    /// answers no: the next renewal reads again.
    async fn config_changed(&self, deadline: Instant) -> bool {
        match timeout_at(deadline, storage::load_config(&self.store)).await {
            Ok(Ok(stored)) => !stored.groups.contains(&self.config),
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading the persistent subscription config failed");
                false
            }
            Err(_) => false,
        }
    }

    async fn release(&self, lease: &Lease) {
        match timeout(self.leases.ttl, self.leases.leases.release(lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %lease.name, "releasing the group's lease failed; it will expire");
            }
            Err(_) => {
                tracing::warn!(lease = %lease.name, "releasing the group's lease timed out; it will expire");
            }
        }
    }
}
