//! Leases: work that must run on exactly one node at a time (an async projection, a
//! persistent-subscription group), spread over several nodes with failover.
//!
//! A [`Lease`] on a name is held by one holder until it expires, `ttl` after its last
//! renewal as the lease store's clock sees it. The holder renews it well before then;
//! when a node dies its lease simply runs out, and another node's next attempt takes it
//! over. Every change of holder (and every new term after an expiry) increases the
//! lease's **epoch**, a fencing token: a sink that checks it at commit
//! (`strata_postgres::PostgresSink::fenced`) refuses the writes of a node that lost its
//! lease but has not noticed yet, so two nodes can never both write a read model.
//!
//! - [`Leases`]: the store of leases. [`MemoryLeases`] keeps them in this process (the
//!   embedded store, tests); `strata_postgres::PostgresLeases` keeps them in PostgreSQL,
//!   shared by every node.
//! - [`LeaseSupervisor`]: runs a piece of work only while it holds the lease: acquire,
//!   start, renew every `ttl / 3`, stop the work *before* the lease can have expired
//!   when renewing fails, and try again; on stop, stop the work and release the lease.
//! - [`LeasedProjection`]: a [`ProjectionRunner`](crate::projection::ProjectionRunner)
//!   under a lease, built afresh for every term from the [`Lease`] (so a fenced sink can
//!   carry that term's epoch).
//!
//! ## Timing
//! A node counts its lease from the moment it *sent* the request that acquired or
//! renewed it: the store computes the expiry later than that, so the node's deadline is
//! never later than the store's. With `ttl`, renewals every `renew_every` and standby
//! nodes retrying every `retry_every`, a dead holder's work is taken over within about
//! `ttl + retry_every` (plus a round trip).

mod memory;
mod projection;
mod supervisor;

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::StorageError;

pub use memory::MemoryLeases;
pub use projection::LeasedProjection;
pub use supervisor::{LeaseOptions, LeaseState, LeaseSupervisor, LeasedWork};

/// The shortest lease a [`Leases`] store grants: shorter ones could not be renewed in
/// time over a network.
pub const LEASE_TTL_MIN: Duration = Duration::from_millis(10);

/// The longest lease a [`Leases`] store grants (a day): a dead holder would block its
/// work for at most this long.
pub const LEASE_TTL_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest lease or holder name, in bytes.
pub const LEASE_NAME_BYTES_MAX: usize = 1024;

/// A lease held: the right to run the work `name` until it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What the lease is for (e.g. `projection:orders`).
    pub name: String,
    /// Who holds it (a node's unique id).
    pub holder: String,
    /// The fencing token: starts at 1 and increases whenever the holder changes or the
    /// lease is taken again after it expired. Never reused for a name.
    pub epoch: u64,
    /// How long the lease lasts after each renewal.
    pub ttl: Duration,
    /// When the holder must consider the lease gone: `ttl` after the acquiring (or
    /// renewing) request was sent, which is no later than the store's own expiry.
    pub valid_until: Instant,
}

impl Lease {
    /// When the request that produced this lease was sent (`valid_until - ttl`).
    pub fn sent_at(&self) -> Instant {
        self.valid_until
            .checked_sub(self.ttl)
            .unwrap_or(self.valid_until)
    }
}

/// Who holds a lease now, as the lease store sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder of the last term.
    pub holder: String,
    /// The epoch of the last term.
    pub epoch: u64,
    /// How long until it expires; `None` if it has expired (or was released).
    pub expires_in: Option<Duration>,
}

/// Why a lease operation failed. A lease held by someone else is not an error: acquire
/// answers `None`.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The TTL is outside [`LEASE_TTL_MIN`]..=[`LEASE_TTL_MAX`].
    #[error("lease TTL {ttl:?} is outside {LEASE_TTL_MIN:?}..={LEASE_TTL_MAX:?}")]
    InvalidTtl {
        /// The TTL asked for.
        ttl: Duration,
    },
    /// A lease or holder name is empty or longer than [`LEASE_NAME_BYTES_MAX`].
    #[error("invalid lease {what}: {reason}")]
    InvalidName {
        /// `name` or `holder`.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Options of a supervisor that cannot keep a lease (e.g. renewing less often than
    /// the lease lasts).
    #[error("invalid lease options: {reason}")]
    InvalidOptions {
        /// Why.
        reason: String,
    },
    /// The lease store failed (e.g. PostgreSQL could not be reached).
    #[error("lease store failed: {0}")]
    Storage(#[from] StorageError),
}

/// Checks the arguments of [`Leases::acquire`]: every implementation calls it first.
pub fn validate(name: &str, holder: &str, ttl: Duration) -> Result<(), LeaseError> {
    for (what, text) in [("name", name), ("holder", holder)] {
        if text.is_empty() {
            return Err(LeaseError::InvalidName {
                what,
                reason: "it is empty",
            });
        }
        if text.len() > LEASE_NAME_BYTES_MAX {
            return Err(LeaseError::InvalidName {
                what,
                reason: "it is longer than LEASE_NAME_BYTES_MAX",
            });
        }
    }
    if !(LEASE_TTL_MIN..=LEASE_TTL_MAX).contains(&ttl) {
        return Err(LeaseError::InvalidTtl { ttl });
    }
    Ok(())
}

/// A store of leases, shared by the nodes that compete for work.
///
/// Implementations must make [`acquire`](Leases::acquire) atomic: among any number of
/// concurrent callers, at most one holds a name at any instant of the store's clock.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Acquires `name` for `holder`, or renews it if `holder` holds it, for `ttl` from
    /// now (the store's now). Answers `None` if another holder's lease has not expired.
    ///
    /// The epoch stays the same on a renewal of a live lease and increases otherwise
    /// (another holder before, or an expired lease). A caller that sees a different
    /// epoch than it held has lost its term, even if it is the holder again.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError>;

    /// Gives `lease` up at once, so another node can take it without waiting for it to
    /// expire. Answers whether it was still held (by that holder, in that epoch).
    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError>;

    /// Who holds `name`, if anyone ever did.
    async fn current(&self, name: &str) -> Result<Option<LeaseInfo>, LeaseError>;
}

#[async_trait]
impl<L: Leases + ?Sized> Leases for std::sync::Arc<L> {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        (**self).acquire(name, holder, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        (**self).release(lease).await
    }

    async fn current(&self, name: &str) -> Result<Option<LeaseInfo>, LeaseError> {
        (**self).current(name).await
    }
}
