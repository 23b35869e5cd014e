//! [`MemoryLeases`]: leases held in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{validate, Lease, LeaseError, LeaseInfo, Leases};

#[derive(Debug)]
struct Entry {
    holder: String,
    epoch: u64,
    expires: Instant,
}

/// Leases in memory, shared by clones: for several workers of one process (the
/// embedded store) and for tests. Time is tokio's clock, so tests may pause it.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeases {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl MemoryLeases {
    /// No lease held.
    pub fn new() -> MemoryLeases {
        MemoryLeases::default()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Leases for MemoryLeases {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        validate(name, holder, ttl)?;
        let now = Instant::now();
        let mut entries = self.entries();
        let epoch = match entries.get(name) {
            None => 1,
            Some(entry) if entry.expires <= now => entry.epoch + 1,
            Some(entry) if entry.holder == holder => entry.epoch,
            Some(_) => return Ok(None),
        };
        let valid_until = now + ttl;
        entries.insert(
            name.to_owned(),
            Entry {
                holder: holder.to_owned(),
                epoch,
                expires: valid_until,
            },
        );
        Ok(Some(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch,
            ttl,
            valid_until,
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let now = Instant::now();
        let mut entries = self.entries();
        match entries.get_mut(&lease.name) {
            Some(entry)
                if entry.holder == lease.holder
                    && entry.epoch == lease.epoch
                    && entry.expires > now =>
            {
                // Keep the entry: the next holder's epoch must still be higher.
                entry.expires = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn current(&self, name: &str) -> Result<Option<LeaseInfo>, LeaseError> {
        let now = Instant::now();
        Ok(self.entries().get(name).map(|entry| LeaseInfo {
            holder: entry.holder.clone(),
            epoch: entry.epoch,
            expires_in: (entry.expires > now).then(|| entry.expires - now),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const TTL: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn lease_has_one_holder_until_it_expires() {
        let leases = MemoryLeases::new();
        let a = leases.acquire("p", "a", TTL).await.unwrap().unwrap();
        assert_eq!(a.epoch, 1);
        assert_eq!(leases.acquire("p", "b", TTL).await.unwrap(), None);
        tokio::time::sleep(TTL / 2).await;
        let renewed = leases.acquire("p", "a", TTL).await.unwrap().unwrap();
        assert_eq!(renewed.epoch, 1);
        tokio::time::sleep(TTL * 3 / 4).await;
        // Past the first term's end, but the renewal keeps it.
        assert_eq!(leases.acquire("p", "b", TTL).await.unwrap(), None);
        tokio::time::sleep(TTL / 2).await;
        let b = leases.acquire("p", "b", TTL).await.unwrap().unwrap();
        assert_eq!(b.epoch, 2);
        // The old holder's renewal is refused.
        assert_eq!(leases.acquire("p", "a", TTL).await.unwrap(), None);
        assert!(!leases.release(&renewed).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn lease_released_is_taken_at_once_with_a_new_epoch() {
        let leases = MemoryLeases::new();
        let a = leases.acquire("p", "a", TTL).await.unwrap().unwrap();
        assert!(leases.release(&a).await.unwrap());
        assert_eq!(leases.current("p").await.unwrap().unwrap().expires_in, None);
        let b = leases.acquire("p", "b", TTL).await.unwrap().unwrap();
        assert_eq!(b.epoch, 2);
        // The same holder after an expiry starts a new term.
        tokio::time::sleep(TTL).await;
        let again = leases.acquire("p", "b", TTL).await.unwrap().unwrap();
        assert_eq!(again.epoch, 3);
    }

    #[tokio::test]
    async fn lease_arguments_are_checked() {
        let leases = MemoryLeases::new();
        assert!(matches!(
            leases.acquire("p", "a", Duration::ZERO).await,
            Err(LeaseError::InvalidTtl { .. })
        ));
        assert!(matches!(
            leases.acquire("", "a", TTL).await,
            Err(LeaseError::InvalidName { what: "name", .. })
        ));
        let long = "x".repeat(super::super::LEASE_NAME_BYTES_MAX + 1);
        assert!(matches!(
            leases.acquire("p", &long, TTL).await,
            Err(LeaseError::InvalidName { what: "holder", .. })
        ));
    }
}
