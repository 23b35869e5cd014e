//! # strata-postgres
//!
//! strata's [`EventStore`] on PostgreSQL, for when one machine is outgrown: several
//! processes or `strata serve` nodes share one database, with PostgreSQL's backups,
//! replication and failover. It passes the same conformance suite as the embedded
//! engine.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = strata_postgres::connect("postgres://strata@127.0.0.1/strata").await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! ## TLS
//!
//! The connection string carries libpq's `sslmode` (`disable`, `prefer` — the default —,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of the certificate
//! authorities to trust), in the URL form or the `key=value` form:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = strata_postgres::connect(
//!     "postgres://strata@db.example/strata?sslmode=verify-full&sslrootcert=/etc/strata/pg-ca.pem",
//! )
//! .await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! `require` encrypts without checking the certificate (unless `sslrootcert` is given,
//! then its chain is checked, as libpq does), `verify-ca` checks the chain, `verify-full`
//! the chain and the host name. Every connection the backend opens (the pool, the head
//! watcher, the notifier) uses the same [`ConnectionConfig`]; see [`tls`] for the details
//! and [`ConfigError`] for what a bad setting gives. TLS is rustls with the *ring*
//! provider.
//!
//! Global positions are `transaction id << 20 | index`: strictly increasing in the order
//! readers see them, never reused, but not contiguous. Readers of the global log and
//! subscriptions only see positions below the oldest running transaction (see [`head`]),
//! so no event is ever skipped, whatever order transactions commit in.

#![warn(missing_docs)]

mod append;
pub mod cluster;
mod combine;
mod config;
mod error;
pub mod head;
mod leases;
mod read;
mod schema;
mod sink;
mod snapshots;
pub mod tls;

pub use config::{ConfigError, ConnectionConfig};
pub use leases::PostgresLeases;
pub use sink::{CommitFault, PostgresSink, SinkRuntimeError};
pub use snapshots::PostgresSnapshots;
pub use tls::SslMode;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use strata::scan::ScanSlots;
use tokio::sync::watch;

use strata::{
    AppendError, AppendRequest, AppendResult, EventStore, ExpectedRevision, Limits,
    ListStreamsOptions, OpenError, PageEnd, Position, ReadAllOptions, ReadAllPage, ReadError,
    ReadStreamOptions, RecordedEvent, StorageError, Store, StoreStats, StreamInfo,
};

use append::Kind;
use error::{backend, is_transient};

/// A pause taken inside every append transaction, before it commits. Tests use it to
/// make transactions commit out of order.
pub type AppendDelay = Arc<dyn Fn() -> std::time::Duration + Send + Sync>;

/// Options of the PostgreSQL backend.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    /// Limits on appends (the same rules as the embedded engine).
    pub limits: Limits,
    /// For tests: a pause inside each append transaction.
    pub append_delay: Option<AppendDelay>,
    /// Workers that make the combined append calls (group commit): each holds one
    /// connection while it writes. More workers mean more transactions in flight, fewer
    /// appends sharing each commit.
    pub append_workers: usize,
    /// How long an operation waits for a free connection of the pool before it fails
    /// with [`StorageError::Timeout`] (default [`POOL_WAIT_TIMEOUT`]): slow reads holding
    /// every connection make appends fail fast rather than hang. Zero: fail at once.
    pub pool_wait_timeout: Duration,
    /// How long opening one connection may take (default [`CONNECT_TIMEOUT`]); an
    /// append keeps retrying within [`RETRY_WINDOW`].
    pub connect_timeout: Duration,
    /// How long one statement of a read (a stream, the global log, the list of
    /// streams, the statistics) may run before PostgreSQL cancels it and the read fails
    /// with [`StorageError::Timeout`] (default [`READ_STATEMENT_TIMEOUT`]). Set per read
    /// transaction (`SET LOCAL`), so appends, migrations, leases and sinks, whose work
    /// must not be cut short, are not bounded by it. Zero: no limit.
    pub read_statement_timeout: Duration,
    /// Most filtered reads of the global log running at once (each holds a connection
    /// while it scans); more wait for a slot.
    pub scans_max: usize,
    /// How long a filtered read waits for a slot before it fails with
    /// [`ReadError::Busy`].
    pub scan_wait_max: std::time::Duration,
}

/// Default of [`PostgresOptions::pool_wait_timeout`].
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`PostgresOptions::connect_timeout`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`PostgresOptions::read_statement_timeout`].
pub const READ_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("limits", &self.limits)
            .field("append_delay", &self.append_delay.is_some())
            .field("append_workers", &self.append_workers)
            .field("pool_wait_timeout", &self.pool_wait_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_statement_timeout", &self.read_statement_timeout)
            .field("scans_max", &self.scans_max)
            .field("scan_wait_max", &self.scan_wait_max)
            .finish()
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            limits: Limits::default(),
            append_delay: None,
            append_workers: 1,
            pool_wait_timeout: POOL_WAIT_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            read_statement_timeout: READ_STATEMENT_TIMEOUT,
            scans_max: 4,
            scan_wait_max: strata::Options::SCAN_WAIT_MAX,
        }
    }
}

/// Connects to PostgreSQL at `url`, creating or migrating the schema, and returns a
/// [`Store`] handle. `url` may carry `sslmode` and `sslrootcert` (see [`tls`]); a bad
/// TLS setting is [`OpenError::InvalidOptions`] naming the file and the mode, a refused
/// certificate a non-transient [`StorageError::Backend`], both without retrying.
pub async fn connect(url: &str) -> Result<Store, OpenError> {
    Ok(Store::from_backend(Arc::new(
        PostgresStore::connect(url, PostgresOptions::default()).await?,
    )))
}

/// The PostgreSQL backend.
pub struct PostgresStore {
    pool: Pool,
    head: watch::Receiver<Option<Position>>,
    /// Moves the head forward (as the head watcher does) when an append knows its events
    /// are final: see [`PostgresStore::run_once`].
    head_sender: watch::Sender<Option<Position>>,
    /// Combines concurrent plain appends into shared calls.
    combiner: combine::Combiner,
    /// Bumped after every committed append: wakes this process's head watcher and the
    /// notifier that wakes other processes'.
    appended: watch::Sender<u64>,
    limits: Limits,
    append_delay: Option<AppendDelay>,
    read_statement_timeout: Duration,
    /// Slots for filtered reads of the global log.
    scans: ScanSlots,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish()
    }
}

impl PostgresStore {
    /// Connects, migrates the schema and starts watching the head. `url` is read by
    /// [`ConnectionConfig::parse`] (TLS settings included).
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<PostgresStore, OpenError> {
        let config = ConnectionConfig::parse(url).map_err(|e| OpenError::InvalidOptions {
            reason: e.to_string(),
        })?;
        let manager = Manager::from_config(
            config.postgres().clone(),
            config.tls().clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.pool_wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| OpenError::Storage(error::other(e)))?;
        let mut client = connect_retrying(&pool).await?;
        schema::migrate(&mut client).await?;
        // The head as of now, so that `head()` is right from the first call (a projection
        // resuming from its checkpoint compares it with the head).
        let row = client
            .query_one(
                &format!(
                    "SELECT max(position) FROM strata_events WHERE position < {}",
                    head::SAFE_BOUND_SQL
                ),
                &[],
            )
            .await
            .map_err(|e| OpenError::Storage(backend(e)))?;
        let initial: Option<i64> = row.get(0);
        let (sender, head) = watch::channel(initial.map(|p| Position(p as u64)));
        let (appended, appends) = watch::channel(0u64);
        let head_sender = sender.clone();
        let config = Arc::new(config);
        tokio::spawn(head::watch_head(config.clone(), sender, appends.clone()));
        tokio::spawn(head::notify_others(config, appends));
        let combiner = combine::Combiner::start(
            pool.clone(),
            options.append_workers,
            options.append_delay.clone(),
        );
        Ok(PostgresStore {
            pool,
            head,
            head_sender,
            combiner,
            appended,
            limits: options.limits,
            append_delay: options.append_delay,
            read_statement_timeout: options.read_statement_timeout,
            scans: ScanSlots::new(options.scans_max, options.scan_wait_max),
        })
    }

    /// A snapshot store in the same database, shared by every node.
    pub fn snapshots(&self) -> PostgresSnapshots {
        PostgresSnapshots::new(self.pool.clone())
    }

    /// Leases in the same database, shared by every node: see [`strata::lease`].
    pub fn leases(&self) -> PostgresLeases {
        PostgresLeases::new(self.pool.clone())
    }

    /// A projection sink in the same database, shared by every node.
    pub fn sink(&self) -> PostgresSink {
        PostgresSink::new(self.pool.clone())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool
            .get()
            .await
            .map_err(|e| error::pool(e, &self.pool))
    }

    /// Starts a read: a read-only transaction on `client`. Run its statements with
    /// [`PostgresStore::bounded`]. There is nothing to commit: dropping the transaction
    /// rolls it back without waiting (tokio-postgres queues the `ROLLBACK` ahead of
    /// anything the connection's next user sends).
    async fn begin_read<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
    ) -> Result<deadpool_postgres::Transaction<'c>, ReadError> {
        let timeout = self.read_statement_timeout;
        client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(|e| ReadError::Storage(error::read(e, timeout)))
    }

    /// Runs `read` (the statements of one read, in `tx`) under the read statement
    /// timeout. The `SET LOCAL` is sent just ahead of `read`'s first statement, in the
    /// same round trip, and lasts until the transaction ends.
    async fn bounded<T>(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        read: impl std::future::Future<Output = Result<T, ReadError>>,
    ) -> Result<T, ReadError> {
        let timeout = self.read_statement_timeout;
        let set = format!("SET LOCAL statement_timeout = {}", timeout.as_millis());
        // Polled in this order, so the SET is sent before the read's first statement.
        let (set, result) = tokio::join!(biased; tx.batch_execute(&set), read);
        set.map_err(|e| ReadError::Storage(error::read(e, timeout)))?;
        result
    }

    /// Runs an append, retrying it while the connection is broken or the server is
    /// restarting (for up to [`RETRY_WINDOW`]). Retrying is exact: the events keep their
    /// ids, and an append that did commit before its connection broke is recognised and
    /// answered with its original result. Deletes are not retried (they carry no ids),
    /// so their transient errors reach the caller.
    async fn run(
        &self,
        parts: Vec<(AppendRequest, Kind)>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        let retry = parts
            .iter()
            .all(|(part, kind)| *kind == Kind::Append && !part.events.is_empty());
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.run_once(parts.clone()).await {
                Err(error) if retry && is_transient(&error) && started.elapsed() < RETRY_WINDOW => {
                    tracing::warn!(%error, "append failed on a broken connection; retrying with the same event ids");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                outcome => return outcome,
            }
        }
    }

    async fn run_once(
        &self,
        parts: Vec<(AppendRequest, Kind)>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        if combine::applies(&parts) {
            if let combine::Outcome::Done(results, visible) =
                self.combiner.append(parts.clone()).await?
            {
                if visible {
                    // Readers bound themselves by the oldest running transaction, which
                    // is now newer than this one: they see it, and every position up to
                    // its last event is final. Move the head there at once (only
                    // forwards, as the watcher does), so that the caller's next look at
                    // the head (a subscription from the end, a lag) covers its own
                    // append; still wake the watchers.
                    if let Some(last) = results.iter().filter_map(AppendResult::last_position).max()
                    {
                        self.head_sender.send_if_modified(|head| {
                            let moved = *head < Some(last);
                            if moved {
                                *head = Some(last);
                            }
                            moved
                        });
                    }
                    self.wake_watchers();
                } else {
                    self.wait_until_visible(&results).await;
                }
                return Ok(results);
            }
        }
        let client = self.client().await?;
        self.run_general(client, parts).await
    }

    /// The general path: one explicit transaction in several round trips, for deletes,
    /// tombstones, metadata, revivals and retries.
    async fn run_general(
        &self,
        mut client: deadpool_postgres::Object,
        parts: Vec<(AppendRequest, Kind)>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        let tx = client.transaction().await.map_err(backend)?;
        let results = append::append(&tx, parts).await?;
        if let Some(delay) = &self.append_delay {
            tokio::time::sleep(delay()).await;
        }
        tx.commit().await.map_err(backend)?;
        self.wait_until_visible(&results).await;
        Ok(results)
    }

    /// Returns once the results' events are visible in the global order, so that a read
    /// of `$all` after an append sees it: as soon as every older transaction has ended,
    /// as the head watcher (woken by the notification) observes. Waits at most
    /// [`VISIBLE_WAIT_MAX`]; the append is durable either way.
    ///
    /// Wakes the head watchers first: this process's directly, other processes' by a
    /// notification (sent outside the append's transaction: one that notifies takes a
    /// global lock through its commit, which would serialise every append).
    fn wake_watchers(&self) {
        self.appended
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    async fn wait_until_visible(&self, results: &[AppendResult]) {
        let Some(last) = results.iter().filter_map(AppendResult::last_position).max() else {
            return;
        };
        self.wake_watchers();
        let mut head = self.head.clone();
        let _ = tokio::time::timeout(
            VISIBLE_WAIT_MAX,
            head.wait_for(|head| head.is_some_and(|head| head >= last)),
        )
        .await;
    }
}

/// How long an append waits for older transactions to end so that its events are visible
/// in the global order before it returns anyway (a long transaction elsewhere in the
/// database holds global readers back; the append itself is durable either way).
pub const VISIBLE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// How long an append keeps retrying on broken connections before it reports the error.
pub const RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// The first connection, retried while the server starts up. Failures no retry can fix
/// (a refused certificate, a server without TLS under a mode that needs it, refused
/// authentication) are reported at once.
async fn connect_retrying(pool: &Pool) -> Result<deadpool_postgres::Object, OpenError> {
    let mut last = None;
    for _ in 0..50 {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(error) => {
                if let Some(permanent) = error::permanent_connect_failure(&error) {
                    return Err(OpenError::Storage(permanent));
                }
                last = Some(error);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(OpenError::Storage(error::other(last.map_or_else(
        || "no connection".to_owned(),
        |e| error::with_causes(&e),
    ))))
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append_multi(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        strata::validate::append(&requests, &self.limits)?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.run(requests.into_iter().map(|r| (r, Kind::Append)).collect())
            .await
    }

    async fn read_stream(
        &self,
        stream: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        strata::stream::validate_name(stream, &self.limits)?;
        let mut client = self.client().await?;
        let tx = self.begin_read(&mut client).await?;
        let timeout = self.read_statement_timeout;
        self.bounded(&tx, read::stream(&tx, timeout, stream, options))
            .await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        let budget = options.scan_budget;
        let page = self.read_all_page(options).await?;
        match (page.end, page.next) {
            (PageEnd::ScanBudget, Some(next)) => Err(ReadError::ScanBudgetSpent {
                budget,
                found: page.events,
                next,
            }),
            _ => Ok(page.events),
        }
    }

    async fn read_all_page(&self, options: ReadAllOptions) -> Result<ReadAllPage, ReadError> {
        // A filtered read holds its connection while it scans: bound how many do, so
        // they cannot take every connection of the pool from appends.
        let _slot = if options.filter.is_empty() {
            None
        } else {
            Some(self.scans.acquire().await?)
        };
        let mut client = self.client().await?;
        let tx = self.begin_read(&mut client).await?;
        let timeout = self.read_statement_timeout;
        let read = read::all(&tx, timeout, &options);
        self.bounded(&tx, read).await
    }

    async fn list_streams(
        &self,
        options: ListStreamsOptions,
    ) -> Result<Vec<StreamInfo>, ReadError> {
        let mut client = self.client().await?;
        let tx = self.begin_read(&mut client).await?;
        let timeout = self.read_statement_timeout;
        let prefix = options.prefix.clone().unwrap_or_default();
        let after = options.after.clone().unwrap_or_default();
        let limit = i64::try_from(options.limit.unwrap_or(usize::MAX)).unwrap_or(i64::MAX);
        let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&prefix, &after, &options.include_system, &limit];
        let query = tx.query(
            "SELECT name, next_revision, metadata FROM strata_streams
                 WHERE next_revision > 0 AND NOT tombstoned AND starts_with(name, $1) AND name > $2
                   AND ($3 OR NOT starts_with(name, '$'))
                   AND coalesce((metadata->>'$tb')::numeric, 0) <> 9223372036854775807
                 ORDER BY name COLLATE \"C\" LIMIT $4",
            &parameters,
        );
        let rows = self
            .bounded(&tx, async {
                query
                    .await
                    .map_err(|e| ReadError::Storage(error::read(e, timeout)))
            })
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let len = row.get::<_, i64>(1) as u64;
                let metadata: Option<serde_json::Value> = row.get(2);
                let metadata = metadata
                    .and_then(|m| strata::StreamMetadata::from_json(&m).ok())
                    .unwrap_or_default();
                let lowest = metadata.first_visible(len);
                StreamInfo {
                    name: row.get(0),
                    last_revision: len - 1,
                    visible_events: len.saturating_sub(lowest),
                }
            })
            .collect())
    }

    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.delete(stream, expected, Kind::SoftDelete).await
    }

    async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.delete(stream, expected, Kind::Tombstone).await
    }

    fn watch_head(&self) -> watch::Receiver<Option<Position>> {
        self.head.clone()
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn stats(&self) -> Result<StoreStats, ReadError> {
        let mut client = self.client().await?;
        let tx = self.begin_read(&mut client).await?;
        let timeout = self.read_statement_timeout;
        let query = tx.query_one(
            "SELECT (SELECT count(*) FROM strata_events), (SELECT count(*) FROM strata_streams WHERE next_revision > 0),
                    pg_total_relation_size('strata_events') + pg_total_relation_size('strata_streams')",
            &[],
        );
        let row = self
            .bounded(&tx, async {
                query
                    .await
                    .map_err(|e| ReadError::Storage(error::read(e, timeout)))
            })
            .await?;
        Ok(StoreStats {
            events: row.get::<_, i64>(0) as u64,
            streams: row.get::<_, i64>(1) as u64,
            head: *self.head.borrow(),
            disk_bytes: row.get::<_, i64>(2) as u64,
            segments: 0,
            backend: "postgres".into(),
            // PostgreSQL checks its own pages; there is no strata scrubber here.
            scrub: None,
        })
    }
}

impl PostgresStore {
    async fn delete(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        kind: Kind,
    ) -> Result<Position, AppendError> {
        strata::stream::validate_writable(stream, &self.limits)?;
        let request = AppendRequest::new(stream, expected, Vec::new());
        let results = self.run(vec![(request, kind)]).await?;
        results
            .first()
            .and_then(AppendResult::last_position)
            .ok_or(AppendError::Storage(StorageError::Closed))
    }
}
