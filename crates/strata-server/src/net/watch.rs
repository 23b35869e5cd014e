//! The watchdog of one connection: closes it when the client sends nothing at all, or
//! stops reading what the server writes, or when shutdown gives up waiting for it.
//!
//! Neither case can be left to the protocol servers: a TCP connection that never sends
//! the HTTP/2 preface holds its socket in tonic for ever, and a client that stops
//! reading a live stream leaves a write waiting for ever. Idle keep-alive and slow
//! headers are the protocols' own business (hyper's header-read timeout, HTTP/2 pings).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::stream::{ConnectionActivity, KillReason};

/// When a connection is closed for lack of progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchPolicy {
    /// Close a connection whose client sent no byte at all within this long.
    pub first_byte_timeout: Duration,
    /// Close a connection whose pending write made no progress for this long (the
    /// client stopped reading; its socket buffer is full).
    pub write_stall_timeout: Duration,
}

impl WatchPolicy {
    /// How often the watchdog looks: often enough that a timeout fires at most a
    /// quarter late, never more than once a second (one timer per connection).
    fn tick(&self) -> Duration {
        (self.first_byte_timeout.min(self.write_stall_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Watches `activity` until its socket is dropped, killing it when `policy` says so or
/// when `kill_all` turns true (shutdown overran its grace period).
pub async fn watch_connection(
    activity: Arc<ConnectionActivity>,
    policy: WatchPolicy,
    mut kill_all: watch::Receiver<bool>,
) {
    let tick = policy.tick();
    // Once the sender is gone (the server ended) there is nothing more to hear from it.
    let mut shutdown_open = true;
    let mut logged = false;
    loop {
        if activity.is_closed() {
            return;
        }
        if *kill_all.borrow() {
            activity.kill(KillReason::Shutdown);
        } else if activity.bytes_read() == 0 && activity.age() >= policy.first_byte_timeout {
            activity.kill(KillReason::Silent);
        } else if activity
            .write_blocked_for()
            .is_some_and(|blocked| blocked >= policy.write_stall_timeout)
        {
            activity.kill(KillReason::WriteStalled);
        }
        if let (Some(reason), false) = (activity.killed(), logged) {
            logged = true;
            tracing::debug!(reason = reason.describe(), "closing connection");
        }
        tokio::select! {
            () = activity.closed_notify.notified() => return,
            changed = kill_all.changed(), if shutdown_open => shutdown_open = changed.is_ok(),
            () = tokio::time::sleep(tick) => {}
        }
    }
}
