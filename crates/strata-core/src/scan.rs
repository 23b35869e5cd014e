//! Bounds on scans of the global log that backends share: how many run at once
//! ([`ScanSlots`]), and stopping one whose caller went away ([`CancelOnDrop`]).
//!
//! A filtered read may examine far more events than it returns. Its
//! [scan budget](crate::ReadAllOptions::scan_budget) bounds one request; these bound how
//! many such requests hold threads (or database connections) at once, and free them as
//! soon as nobody waits for the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ReadError;

/// A bounded number of slots for scans running at once. A scan takes a slot for as long
/// as it runs; one that finds none free waits up to `wait_max`, then fails with
/// [`ReadError::Busy`].
#[derive(Debug)]
pub struct ScanSlots {
    semaphore: Arc<Semaphore>,
    max: usize,
    wait_max: Duration,
}

/// A slot taken from [`ScanSlots`]; dropping it frees the slot.
#[derive(Debug)]
pub struct ScanSlot {
    _permit: OwnedSemaphorePermit,
}

impl ScanSlots {
    /// `max` slots (at least one); a scan waits up to `wait_max` for one.
    pub fn new(max: usize, wait_max: Duration) -> ScanSlots {
        let max = max.max(1);
        ScanSlots {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            wait_max,
        }
    }

    /// Takes a slot, waiting up to `wait_max` for one to be free.
    pub async fn acquire(&self) -> Result<ScanSlot, ReadError> {
        let started = Instant::now();
        let acquire = self.semaphore.clone().acquire_owned();
        match tokio::time::timeout(self.wait_max, acquire).await {
            Ok(Ok(permit)) => Ok(ScanSlot { _permit: permit }),
            // The semaphore is never closed; a closed one would mean no slot ever again.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    running = self.max,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "scan refused: every scan slot is taken"
                );
                Err(ReadError::Busy {
                    running: self.max,
                    waited: started.elapsed(),
                })
            }
        }
    }

    /// Scans running now.
    pub fn running(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }

    /// The most scans that run at once.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Sets a shared flag when dropped. The caller of a scan on another thread holds it
/// while it waits for the answer; if the caller's future is dropped (its client went
/// away, a timeout fired), the flag tells the scan to stop.
#[derive(Debug, Default)]
pub struct CancelOnDrop {
    flag: Arc<AtomicBool>,
}

impl CancelOnDrop {
    /// A new, unset flag and its guard.
    pub fn new() -> CancelOnDrop {
        CancelOnDrop::default()
    }

    /// The flag, for the scan to check.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_bounded_and_freed_on_drop() {
        let slots = ScanSlots::new(1, Duration::from_millis(10));
        let held = slots.acquire().await.expect("a free slot");
        assert_eq!(slots.running(), 1);
        assert!(matches!(
            slots.acquire().await,
            Err(ReadError::Busy { running: 1, .. })
        ));
        drop(held);
        assert_eq!(slots.running(), 0);
        assert!(slots.acquire().await.is_ok());
    }

    #[test]
    fn dropping_the_guard_sets_the_flag() {
        let guard = CancelOnDrop::new();
        let flag = guard.flag();
        assert!(!flag.load(Ordering::Relaxed));
        drop(guard);
        assert!(flag.load(Ordering::Relaxed));
    }
}
