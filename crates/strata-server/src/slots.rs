//! Per-connection limits on open subscriptions.
//!
//! A connection is identified by its peer address (one TCP connection has one); a
//! [`Slot`] is held for as long as a subscription stays open and released on drop, so
//! a crashed or cancelled stream can never leak one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Counts open subscriptions per connection.
#[derive(Debug, Default)]
pub struct SubscriptionSlots {
    open: Mutex<HashMap<Option<SocketAddr>, usize>>,
}

/// A held subscription slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<SubscriptionSlots>,
    peer: Option<SocketAddr>,
}

/// A connection already has the most subscriptions it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this connection already has {max} open subscriptions (the limit)")]
pub struct TooManySubscriptions {
    /// The limit.
    pub max: usize,
}

impl SubscriptionSlots {
    /// Takes a slot for `peer`, unless it already holds `max`. Requests without a
    /// known peer (in-process transports) share one count.
    pub fn acquire(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
        max: usize,
    ) -> Result<Slot, TooManySubscriptions> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(peer).or_insert(0);
        if *count >= max {
            return Err(TooManySubscriptions { max });
        }
        *count += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            peer,
        })
    }

    /// How many subscriptions `peer` holds.
    pub fn held(&self, peer: Option<SocketAddr>) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&peer).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_peer_and_freed_on_drop() {
        let slots = Arc::new(SubscriptionSlots::default());
        let a: Option<SocketAddr> = "127.0.0.1:1000".parse().ok();
        let b: Option<SocketAddr> = "127.0.0.1:1001".parse().ok();
        let first = slots.acquire(a, 2).unwrap();
        let _second = slots.acquire(a, 2).unwrap();
        assert_eq!(
            slots.acquire(a, 2).unwrap_err(),
            TooManySubscriptions { max: 2 }
        );
        let _other = slots.acquire(b, 2).unwrap();
        drop(first);
        assert_eq!(slots.held(a), 1);
        assert!(slots.acquire(a, 2).is_ok());
    }
}
