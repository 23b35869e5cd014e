//! The safe head: the highest position below which no writing transaction is still in
//! flight.
//!
//! Positions are `xid << 20 | index`: the id of the appending transaction, then the
//! event's index in it. A reader only reads positions below `xmin << 20`, where `xmin`
//! is the oldest transaction still running: every transaction below it has committed or
//! aborted, so nothing can ever appear below that bound later. A transaction that commits
//! after one with a higher position is simply read after it is finished — never skipped.
//! The cost: any long transaction in the database holds readers back until it ends.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use strata::Position;

use crate::ConnectionConfig;

/// The channel appends notify after commit.
pub const CHANNEL: &str = "strata_events";

/// How often the head is recomputed without a notification (a transaction that does not
/// append may be what holds readers back, and it notifies nobody when it ends).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The SQL of the bound below which every position is final.
pub const SAFE_BOUND_SQL: &str = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)";

/// Keeps `head` up to date until it has no receivers left: woken by this process's
/// appends (`appended`), by other processes' through `LISTEN`, with polling as the
/// fallback; reconnects after errors.
pub async fn watch_head(
    config: Arc<ConnectionConfig>,
    head: watch::Sender<Option<Position>>,
    appended: watch::Receiver<u64>,
) {
    loop {
        if head.is_closed() {
            return;
        }
        if let Err(error) = listen(&config, &head, appended.clone()).await {
            tracing::warn!(%error, "head watcher lost its connection; reconnecting");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn listen(
    config: &ConnectionConfig,
    head: &watch::Sender<Option<Position>>,
    mut appended: watch::Receiver<u64>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect().await?;
    let (notify, mut notified) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notify.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "head watcher connection failed");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let query =
        format!("SELECT max(position) FROM strata_events WHERE position < {SAFE_BOUND_SQL}");
    let statement = client.prepare(&query).await?;
    let outcome = loop {
        if head.is_closed() {
            break Ok(());
        }
        let row = match client.query_one(&statement, &[]).await {
            Ok(row) => row,
            Err(error) => break Err(error),
        };
        let latest: Option<i64> = row.get(0);
        let latest = latest.map(|p| Position(p as u64));
        head.send_if_modified(|current| {
            // The head only moves forward.
            let moved = latest > *current;
            if moved {
                *current = latest;
            }
            moved
        });
        // A burst of wake-ups (local appends, notifications) coalesces into one query.
        tokio::select! {
            _ = notified.recv() => {
                while notified.try_recv().is_ok() {}
            }
            changed = appended.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
            }
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    };
    driver.abort();
    outcome
}

/// Tells other processes' head watchers that this one appended: one `NOTIFY` per burst
/// of appends (a wake-up that arrives while a notification is being sent is carried by
/// the next one), on a connection of its own, so an append costs no statement for it.
/// Ends when the store is dropped.
pub async fn notify_others(config: Arc<ConnectionConfig>, mut appended: watch::Receiver<u64>) {
    loop {
        let (client, connection) = match config.connect().await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "append notifier cannot connect; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let driver = tokio::spawn(connection);
        let statement = format!("SELECT pg_notify('{CHANNEL}', '')");
        loop {
            if appended.changed().await.is_err() {
                driver.abort();
                return;
            }
            if let Err(error) = client.batch_execute(&statement).await {
                tracing::warn!(%error, "append notifier lost its connection; reconnecting");
                break;
            }
        }
        driver.abort();
    }
}
