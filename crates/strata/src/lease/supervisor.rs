//! [`LeaseSupervisor`]: runs a piece of work only while this node holds its lease.
//!
//! The loop, per term:
//! 1. **Standby**: try to acquire the lease every `retry_every` until it is granted.
//! 2. **Holding**: start the work with the [`Lease`], then renew every `renew_every`.
//! 3. The term ends when a renewal is refused (someone else holds it: the lease had
//!    expired), when renewals keep failing until `stop_margin` before the deadline, or
//!    when the work ends by itself (it failed). The work is stopped, the lease released
//!    if it may still be held, and the loop goes back to standby.
//!
//! The invariant: the work is stopped by `valid_until - stop_margin`, where
//! `valid_until` is `ttl` after the last *successful* renewal was **sent**, never later
//! than the store's expiry. Stopping can take time (a runner commits its last batch); a
//! fenced sink refuses that commit if the lease is gone by then, so the guarantee that
//! two nodes never both write does not rest on timing.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};

use super::{validate, Lease, LeaseError, Leases};

/// How a [`LeaseSupervisor`] holds its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// The lease's name: one per piece of work (e.g. `projection:orders`).
    pub name: String,
    /// This node's id: unique among the nodes (a fresh one per process is safest).
    pub holder: String,
    /// How long the lease lasts after each renewal: the longest a dead node blocks the
    /// work (plus `retry_every`).
    pub ttl: Duration,
    /// How often the holder renews (default `ttl / 3`: two renewals may fail before the
    /// work is stopped).
    pub renew_every: Duration,
    /// How often a standby node tries to acquire (default `ttl / 3`).
    pub retry_every: Duration,
    /// How long before the deadline the work is stopped when renewals fail (default
    /// `ttl / 6`): time for it to stop before the lease can have expired.
    pub stop_margin: Duration,
}

impl LeaseOptions {
    /// Options for lease `name` held by `holder` for `ttl`, with the default intervals.
    pub fn new(name: impl Into<String>, holder: impl Into<String>, ttl: Duration) -> LeaseOptions {
        LeaseOptions {
            name: name.into(),
            holder: holder.into(),
            ttl,
            renew_every: ttl / 3,
            retry_every: ttl / 3,
            stop_margin: ttl / 6,
        }
    }

    /// Sets [`LeaseOptions::renew_every`].
    pub fn renew_every(mut self, interval: Duration) -> LeaseOptions {
        self.renew_every = interval;
        self
    }

    /// Sets [`LeaseOptions::retry_every`].
    pub fn retry_every(mut self, interval: Duration) -> LeaseOptions {
        self.retry_every = interval;
        self
    }

    /// Sets [`LeaseOptions::stop_margin`].
    pub fn stop_margin(mut self, margin: Duration) -> LeaseOptions {
        self.stop_margin = margin;
        self
    }

    fn validate(&self) -> Result<(), LeaseError> {
        validate(&self.name, &self.holder, self.ttl)?;
        if self.renew_every.is_zero() || self.retry_every.is_zero() {
            return Err(LeaseError::InvalidOptions {
                reason: "renew_every and retry_every must not be zero".into(),
            });
        }
        if self.renew_every + self.stop_margin >= self.ttl {
            return Err(LeaseError::InvalidOptions {
                reason: format!(
                    "renewing every {:?} with a stop margin of {:?} cannot keep a lease of {:?}",
                    self.renew_every, self.stop_margin, self.ttl
                ),
            });
        }
        Ok(())
    }
}

/// What a supervisor is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Waiting for the lease (another node holds it, or the store is unreachable).
    Standby,
    /// Holding the lease in term `epoch`: the work is starting, running or stopping.
    Holding {
        /// The lease's epoch (fencing token).
        epoch: u64,
    },
    /// Stopped for good.
    Stopped,
}

/// Work a [`LeaseSupervisor`] runs while it holds the lease.
#[async_trait]
pub trait LeasedWork: Send + 'static {
    /// Why stopping failed.
    type Error: Display + Send;

    /// Resolves when the work ended by itself (it failed): the term ends.
    async fn ended(&mut self);

    /// Stops the work and waits until it has stopped.
    async fn stop(self) -> Result<(), Self::Error>;
}

/// Runs a piece of work on at most one node at a time: the one holding the lease.
///
/// Dropping it asks the task to stop (and release the lease) without waiting; use
/// [`stop`](LeaseSupervisor::stop) to wait.
#[derive(Debug)]
pub struct LeaseSupervisor {
    state: watch::Receiver<LeaseState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl LeaseSupervisor {
    /// Starts supervising: `start` is called with the lease at the beginning of every
    /// term and returns the running work (or why it could not start; the term then
    /// ends). Needs a tokio runtime.
    pub fn start<L, F, Fut, W, E>(
        leases: Arc<L>,
        options: LeaseOptions,
        start: F,
    ) -> Result<LeaseSupervisor, LeaseError>
    where
        L: Leases + ?Sized,
        F: FnMut(Lease) -> Fut + Send + 'static,
        Fut: Future<Output = Result<W, E>> + Send + 'static,
        W: LeasedWork,
        E: Display + Send + 'static,
    {
        options.validate()?;
        let (state_tx, state) = watch::channel(LeaseState::Standby);
        let (stop, stopped) = watch::channel(false);
        let supervisor = Supervisor {
            leases,
            options,
            state: state_tx,
            stopped,
        };
        let task = tokio::spawn(supervisor.run(start));
        Ok(LeaseSupervisor {
            state,
            stop,
            task: Some(task),
        })
    }

    /// What it is doing now.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver of [`state`](LeaseSupervisor::state), for waiting on changes.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops the work, releases the lease, and waits for both.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::error!(%error, "lease supervisor task failed");
            }
        }
    }
}

impl Drop for LeaseSupervisor {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// How a term ended.
enum TermEnd {
    /// Asked to stop: the supervisor ends.
    Stop,
    /// Lost, failed or could not start: back to standby.
    Over,
}

/// What woke the holding loop.
enum Wake {
    Stop,
    WorkEnded,
    Deadline,
    Renew,
}

struct Supervisor<L: ?Sized> {
    leases: Arc<L>,
    options: LeaseOptions,
    state: watch::Sender<LeaseState>,
    stopped: watch::Receiver<bool>,
}

impl<L: Leases + ?Sized> Supervisor<L> {
    async fn run<F, Fut, W, E>(mut self, mut start: F)
    where
        F: FnMut(Lease) -> Fut + Send + 'static,
        Fut: Future<Output = Result<W, E>> + Send + 'static,
        W: LeasedWork,
        E: Display + Send + 'static,
    {
        while let Some(lease) = self.acquire().await {
            let epoch = lease.epoch;
            self.state.send_replace(LeaseState::Holding { epoch });
            let end = self.term(lease, &mut start).await;
            self.state.send_replace(LeaseState::Standby);
            if let TermEnd::Stop = end {
                break;
            }
            // Give the other nodes a chance before competing again.
            if self.pause(self.options.retry_every).await {
                break;
            }
        }
        self.state.send_replace(LeaseState::Stopped);
    }

    fn stop_requested(&self) -> bool {
        *self.stopped.borrow() || self.stopped.has_changed().is_err()
    }

    /// Sleeps for `duration`; answers whether a stop was requested meanwhile.
    async fn pause(&mut self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.stopped.changed() => true,
            () = sleep(duration) => self.stop_requested(),
        }
    }

    /// Standby: tries until the lease is granted; `None` when asked to stop.
    async fn acquire(&mut self) -> Option<Lease> {
        let options = self.options.clone();
        loop {
            if self.stop_requested() {
                return None;
            }
            let attempt = timeout(
                options.ttl,
                self.leases
                    .acquire(&options.name, &options.holder, options.ttl),
            );
            match attempt.await {
                // Only a lease with time left to run the work is worth a term.
                Ok(Ok(Some(lease))) if lease.valid_until > Instant::now() + options.stop_margin => {
                    return Some(lease)
                }
                Ok(Ok(Some(lease))) => self.release(&lease).await,
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, lease = %options.name, "acquiring a lease failed");
                }
                Err(_) => tracing::warn!(lease = %options.name, "acquiring a lease timed out"),
            }
            if self.pause(options.retry_every).await {
                return None;
            }
        }
    }

    async fn release(&self, lease: &Lease) {
        match timeout(self.options.ttl, self.leases.release(lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %lease.name, "releasing a lease failed; it will expire");
            }
            Err(_) => {
                tracing::warn!(lease = %lease.name, "releasing a lease timed out; it will expire")
            }
        }
    }

    /// Holding: starts the work, renews, and stops the work when the term ends.
    async fn term<F, Fut, W, E>(&mut self, lease: Lease, start: &mut F) -> TermEnd
    where
        F: FnMut(Lease) -> Fut,
        Fut: Future<Output = Result<W, E>> + Send + 'static,
        W: LeasedWork,
        E: Display + Send + 'static,
    {
        let margin = self.options.stop_margin;
        let stop_at = |lease: &Lease| {
            lease
                .valid_until
                .checked_sub(margin)
                .unwrap_or(lease.valid_until)
        };
        // Starting must finish while the lease is surely held, like everything else.
        let mut work = match timeout_at(stop_at(&lease), start(lease.clone())).await {
            Ok(Ok(work)) => work,
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %lease.name, "the leased work did not start");
                self.release(&lease).await;
                return TermEnd::Over;
            }
            Err(_) => {
                tracing::warn!(lease = %lease.name, "the leased work did not start before the lease's deadline");
                self.release(&lease).await;
                return TermEnd::Over;
            }
        };
        tracing::info!(lease = %lease.name, epoch = lease.epoch, "holding the lease: work started");
        let mut held = lease;
        let mut next_renew = held.sent_at() + self.options.renew_every;
        loop {
            let wake = tokio::select! {
                biased;
                _ = self.stopped.changed() => Wake::Stop,
                () = work.ended() => Wake::WorkEnded,
                () = sleep_until(stop_at(&held)) => Wake::Deadline,
                () = sleep_until(next_renew) => Wake::Renew,
            };
            let end = match wake {
                Wake::Stop => Some((TermEnd::Stop, true)),
                Wake::WorkEnded => {
                    tracing::warn!(lease = %held.name, "the leased work ended by itself");
                    Some((TermEnd::Over, true))
                }
                Wake::Deadline => {
                    tracing::warn!(lease = %held.name, "could not renew the lease: stopping the work before it expires");
                    Some((TermEnd::Over, false))
                }
                Wake::Renew => match self.renew(&held, stop_at(&held)).await {
                    Renewal::Renewed(lease) => {
                        next_renew = lease.sent_at() + self.options.renew_every;
                        held = lease;
                        None
                    }
                    Renewal::Retry => {
                        next_renew = Instant::now() + self.options.renew_every / 4;
                        None
                    }
                    Renewal::Lost => Some((TermEnd::Over, false)),
                },
            };
            if let Some((end, release)) = end {
                if let Err(error) = work.stop().await {
                    tracing::warn!(%error, lease = %held.name, "the leased work failed");
                }
                if release {
                    self.release(&held).await;
                }
                tracing::info!(lease = %held.name, epoch = held.epoch, "term over: work stopped");
                return end;
            }
        }
    }

    async fn renew(&self, held: &Lease, deadline: Instant) -> Renewal {
        let options = &self.options;
        let attempt = timeout_at(
            deadline,
            self.leases
                .acquire(&options.name, &options.holder, options.ttl),
        );
        match attempt.await {
            Ok(Ok(Some(lease))) if lease.epoch == held.epoch => Renewal::Renewed(lease),
            Ok(Ok(Some(lease))) => {
                // It had expired and this node got a new term: the old one is over all
                // the same (someone may have held it in between).
                tracing::warn!(lease = %held.name, "the lease expired before it was renewed");
                self.release(&lease).await;
                Renewal::Lost
            }
            Ok(Ok(None)) => {
                tracing::warn!(lease = %held.name, "the lease was taken over: stopping the work");
                Renewal::Lost
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %held.name, "renewing the lease failed; retrying");
                Renewal::Retry
            }
            // The deadline passed: the holding loop stops the work at once.
            Err(_) => Renewal::Retry,
        }
    }
}

enum Renewal {
    Renewed(Lease),
    Retry,
    Lost,
}

#[cfg(test)]
mod tests;
