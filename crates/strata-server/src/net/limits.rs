//! How many connections the server holds: in total, and per client address.
//!
//! A permit is taken when a connection is accepted and released when its socket is
//! dropped, so a connection that ends in any way (closed, reset, timed out, its task
//! aborted) gives its place back. Invariant: `total` equals the sum of `per_address`,
//! and no count is ever zero in the map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts open connections against a total limit and a limit per client address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<OpenConnections>,
    refused: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    /// The server holds as many connections as it may.
    #[error("the server already holds {max} connections (the limit)")]
    TooManyConnections {
        /// The total limit.
        max: usize,
    },
    /// This client address holds as many connections as it may.
    #[error("{address} already holds {max} connections (the limit per client address)")]
    TooManyFromAddress {
        /// The client's address.
        address: IpAddr,
        /// The per-address limit.
        max: usize,
    },
}

/// One held connection; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections, `max_per_address` of them from one address.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_address,
            open: Mutex::new(OpenConnections::default()),
            refused: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Takes a place for a connection from `address`, unless a limit is reached.
    pub fn acquire(
        self: &Arc<Self>,
        address: IpAddr,
    ) -> Result<ConnectionPermit, ConnectionRefused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max_total {
            self.note_refused();
            return Err(ConnectionRefused::TooManyConnections {
                max: self.max_total,
            });
        }
        let from_address = open.per_address.entry(address).or_insert(0);
        if *from_address >= self.max_per_address {
            let max = self.max_per_address;
            if *from_address == 0 {
                // Only reachable with a limit of 0: keep the no-zero-count invariant.
                open.per_address.remove(&address);
            }
            self.note_refused();
            return Err(ConnectionRefused::TooManyFromAddress { address, max });
        }
        *from_address += 1;
        open.total += 1;
        Ok(ConnectionPermit {
            limits: Arc::clone(self),
            address,
        })
    }

    fn note_refused(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections refused so far for being over a limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections open now, in total.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Connections open now from `address`.
    pub fn open_from(&self, address: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.per_address.get(&address).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = open
            .per_address
            .get_mut(&self.address)
            .expect("a held permit is counted under its address");
        *from_address -= 1;
        if *from_address == 0 {
            open.per_address.remove(&self.address);
        }
        open.total -= 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_in_total_and_frees_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limits.acquire(a).unwrap();
        let _second = limits.acquire(a).unwrap();
        assert_eq!(
            limits.acquire(a).unwrap_err(),
            ConnectionRefused::TooManyFromAddress { address: a, max: 2 }
        );
        let _third = limits.acquire(b).unwrap();
        assert_eq!(
            limits.acquire(b).unwrap_err(),
            ConnectionRefused::TooManyConnections { max: 3 }
        );
        drop(first);
        assert_eq!(limits.open(), 2);
        assert_eq!(limits.open_from(a), 1);
        assert!(limits.acquire(a).is_ok());
    }
}
