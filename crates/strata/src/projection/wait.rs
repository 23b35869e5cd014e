//! Read-your-writes: waiting until a projection has processed a position.
//!
//! A writer appends, gets the position of its last event, and asks the projection to
//! wait for it before reading the read model: once the wait returns, the read model
//! shows the effect of every event up to that position.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::error::WaitError;
use crate::event::Position;

/// The publishing side: owned by whatever processes the projection. Dropping it tells
/// waiters the projection stopped.
#[derive(Debug)]
pub(crate) struct ProgressWriter {
    position: watch::Sender<Option<Position>>,
    failure: Arc<Mutex<Option<String>>>,
}

/// The reading side, cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    position: watch::Receiver<Option<Position>>,
    failure: Arc<Mutex<Option<String>>>,
}

pub(crate) fn progress(start: Option<Position>) -> (ProgressWriter, Progress) {
    let (sender, receiver) = watch::channel(start);
    let failure = Arc::new(Mutex::new(None));
    (
        ProgressWriter {
            position: sender,
            failure: failure.clone(),
        },
        Progress {
            position: receiver,
            failure,
        },
    )
}

impl ProgressWriter {
    /// Publishes that the read model now shows every event up to `position`.
    pub fn publish(&self, position: Option<Position>) {
        self.position.send_if_modified(|current| {
            let changed = position > *current;
            if changed {
                *current = position;
            }
            changed
        });
    }

    /// Records why processing stopped, for waiters.
    pub fn fail(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }
}

impl Progress {
    /// The position the read model has reached.
    pub fn position(&self) -> Option<Position> {
        *self.position.borrow()
    }

    /// A receiver of the position, updated as the projection advances.
    pub fn watch(&self) -> watch::Receiver<Option<Position>> {
        self.position.clone()
    }

    /// Why processing stopped, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the position reaches `position`, at most `timeout`.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        let mut receiver = self.position.clone();
        let reached = async {
            loop {
                if *receiver.borrow_and_update() >= Some(position) {
                    return Ok(());
                }
                if receiver.changed().await.is_err() {
                    // The writer is gone; it may have published just before.
                    let reached = *receiver.borrow();
                    if reached >= Some(position) {
                        return Ok(());
                    }
                    return Err(WaitError::Stopped {
                        position,
                        reached,
                        reason: self.failure(),
                    });
                }
            }
        };
        match tokio::time::timeout(timeout, reached).await {
            Ok(outcome) => outcome,
            Err(_) => Err(WaitError::Timeout {
                position,
                timeout,
                reached: self.position(),
            }),
        }
    }
}

/// How many events of the log are not yet reflected: head minus position.
pub(crate) fn lag(head: Option<Position>, position: Option<Position>) -> u64 {
    let next = |p: Option<Position>| p.map_or(0, |p| p.0 + 1);
    next(head).saturating_sub(next(position))
}
