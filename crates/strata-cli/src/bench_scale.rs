//! `strata bench --only scale`: a large embedded store next to SQLite holding the same
//! events, each measured in processes of its own.
//!
//! Both engines are loaded with the same events (`--events` of ~100 B of JSON, spread
//! round-robin over `--streams`, so a stream's events lie far apart in the log and in
//! SQLite's table), closed cleanly, and then probed by fresh processes (this binary
//! re-executed with the hidden `bench-scale-probe` subcommand, answering in JSON on
//! stdout) so that open times and memory are those of a process that starts cold on an
//! existing store, not of the one that built it:
//!
//! - open time after a clean shutdown, RSS after it and the peak during it;
//! - whole-stream reads (up to 10 events) of uniformly random streams, p50 and p99;
//! - durable single-event appends (strata: `Durability::Fsync`; SQLite: one transaction
//!   per insert with `synchronous=FULL`) on the large store and on an empty one;
//! - the peak RSS during those reads and appends;
//! - open time after a writer process was killed with SIGKILL mid-append;
//! - bytes on disk per event.
//!
//! The default size (100 000 streams, 1 000 000 events) is for a quick look; the figure
//! the engine is meant to hold is 10 000 000 streams and 100 000 000 events.
//!
//! Before each probe the benchmark reads the store's files once, so the page cache holds
//! all of both engines' data (it cannot drop the cache, and a partly evicted store would
//! measure the kernel's choices): reads and opens measure the engines' own work plus
//! system calls, not the disk. Appends do wait for the disk.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata::{AppendRequest, Durability, ExpectedRevision, Options, ReadStreamOptions, Store};
use tokio::task::JoinSet;

use crate::bench::{bench_error, figure, payload, Figure, Report};
use crate::error::CliError;

/// Streams when `--streams` is not given: a quick look (the full figure is 10 000 000).
pub const DEFAULT_STREAMS: u64 = 100_000;
/// Events when `--events` is not given: a quick look (the full figure is 100 000 000).
pub const DEFAULT_EVENTS: u64 = 1_000_000;
/// Random streams read by each probe.
const READS: usize = 2_000;
/// Most events read per stream: a typical aggregate's history.
const READ_LIMIT: usize = 10;
/// Durable single-event appends timed by each probe.
const APPENDS: usize = 1_000;
/// Events per load batch: one `append_multi` of this many streams (the most one multi-
/// stream append may touch by default), or one SQLite transaction.
const LOAD_BATCH: usize = 1_000;
/// Load batches in flight at once for strata, so the writer always has the next one.
const LOAD_IN_FLIGHT: usize = 4;
/// How long the crash writer appends before it is killed.
const CRASH_AFTER: Duration = Duration::from_millis(500);
/// A crash writer that was never killed (its parent died) stops by itself after this.
const CRASH_WRITER_MAX: Duration = Duration::from_secs(60);
/// The SQLite database's file name in its directory.
const SQLITE_FILE: &str = "events.db";
/// The line the crash writer prints once it is appending.
const APPENDING: &str = "appending";

/// The engines compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleEngine {
    /// The embedded strata engine.
    Strata,
    /// SQLite in WAL mode with `synchronous=FULL`.
    Sqlite,
}

/// What a probe process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeMode {
    /// Open, then random stream reads and durable appends, then close cleanly.
    Workload,
    /// Open and close cleanly (the open after a crash).
    Open,
    /// Open and append until killed.
    CrashWriter,
}

/// Options of the hidden `strata bench-scale-probe` subcommand, which `bench --only
/// scale` runs in a fresh process for each measurement.
#[derive(Debug, clap::Args)]
pub struct ScaleProbeArgs {
    /// The engine to open.
    #[arg(long, value_enum)]
    pub engine: ScaleEngine,
    /// What to do.
    #[arg(long, value_enum)]
    pub mode: ProbeMode,
    /// The store's directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Streams are named `stream-0` … `stream-{N-1}`: reads and appends pick one of them
    /// uniformly at random.
    #[arg(long)]
    pub streams: u64,
    /// Random stream reads to time (0: none, e.g. on an empty store).
    #[arg(long, default_value_t = 0)]
    pub reads: usize,
    /// Durable single-event appends to time.
    #[arg(long, default_value_t = 0)]
    pub appends: usize,
}

/// What a probe process measured, printed as JSON on its stdout.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ProbeResult {
    /// Time to open the store, in ms.
    open_ms: f64,
    /// Events in the store once opened.
    events: u64,
    /// Events strata scanned from the log after its checkpoint at open.
    scanned_events: Option<u64>,
    /// `VmRSS` right after the open, in KiB.
    rss_open_kib: u64,
    /// `VmHWM` right after the open (the peak of the process so far), in KiB.
    peak_open_kib: u64,
    /// `VmHWM` after the reads and appends, in KiB; the peak was reset after the open
    /// when the kernel allows it (`peak_reset`), so this is the workload's own peak.
    peak_workload_kib: Option<u64>,
    /// Whether the peak was reset between the open and the workload.
    peak_reset: bool,
    /// Stream reads: p50 and p99 in µs, and the events they returned.
    read_p50_us: Option<f64>,
    read_p99_us: Option<f64>,
    events_read: u64,
    /// Durable single-event appends per second.
    appends_per_s: Option<f64>,
    /// strata's index right after the open: what its memory goes to.
    index: Option<strata::engine::IndexStats>,
}

/// The streams' names: short, distinct and the same for both engines.
fn stream_name(i: u64) -> String {
    format!("stream-{i}")
}

/// Events of stream `i` when `events` are spread over `streams` as evenly as possible.
fn stream_len(i: u64, streams: u64, events: u64) -> u64 {
    events / streams + u64::from(i < events % streams)
}

/// A small fast generator for picking streams: splitmix64. Statistical quality beyond
/// "uniform enough to defeat caches" is not needed, and a dependency is not worth it.
struct Random(u64);

impl Random {
    /// Seeded from the clock and the process id, so that runs pick different streams.
    fn new() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Random(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0); the modulo bias is negligible for `n` far below
    /// 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs a blocking closure (SQLite, waiting for processes) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f).await.map_err(bench_error)?
}

fn io<T>(result: std::io::Result<T>, what: &str) -> Result<T, CliError> {
    result.map_err(|e| CliError::io(what.to_owned(), e))
}

/// The value of a `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
fn proc_status_kib(field: &str) -> Result<u64, CliError> {
    let status = io(
        fs::read_to_string("/proc/self/status"),
        "cannot read /proc/self/status (the scale benchmark needs Linux)",
    )?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| CliError::Bench(format!("no {field} in /proc/self/status")))
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS, so that the next reading
/// is the peak of what follows. Returns whether the kernel allowed it (Linux ≥ 4.0).
fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, not apparent sizes).
fn disk_bytes(dir: &Path) -> Result<u64, CliError> {
    let mut total = 0;
    for entry in io(fs::read_dir(dir), "cannot list a store directory")? {
        let entry = io(entry, "cannot list a store directory")?;
        let metadata = io(entry.metadata(), "cannot stat a store file")?;
        total += if metadata.is_dir() {
            disk_bytes(&entry.path())?
        } else {
            metadata.blocks() * 512
        };
    }
    Ok(total)
}

/// Reads every file under `dir` once, so that the page cache holds the whole store
/// before a probe: reads then compare the engines' own work, not which of their pages
/// the kernel happened to keep. On a shared machine part of a store written minutes
/// before may already be evicted (seen: 15-20 % of strata's segments at 10 M events,
/// which doubled its read p50 with disk reads, while SQLite's file, loaded later, was
/// all cached).
fn warm_page_cache(dir: &Path) -> Result<(), CliError> {
    let mut buffer = vec![0u8; 1 << 20];
    for entry in io(fs::read_dir(dir), "cannot list a store directory")? {
        let path = io(entry, "cannot list a store directory")?.path();
        if path.is_dir() {
            warm_page_cache(&path)?;
            continue;
        }
        let mut file = io(fs::File::open(&path), "cannot open a store file")?;
        while io(
            std::io::Read::read(&mut file, &mut buffer),
            "cannot read a store file",
        )? > 0
        {}
    }
    Ok(())
}

/// The `p`-th percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The p50 and p99 of latencies, in µs.
fn p50_p99(mut latencies: Vec<f64>) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

// ---------------------------------------------------------------------------------------
// Loading (in the benchmark's own process; timed only for information).

/// The load batches, in the order both engines load them: revision 0 of every stream,
/// then revision 1 of every stream that has one, and so on, so that a stream's events are
/// `streams` events apart (as in a store where many aggregates live side by side), never
/// next to each other. Each batch holds up to [`LOAD_BATCH`] `(stream, revision, event
/// number)` triples of one round (one revision), so each stream at most once.
struct LoadBatches {
    streams: u64,
    events: u64,
    stream: u64,
    revision: u64,
    next: u64,
}

impl LoadBatches {
    fn new(streams: u64, events: u64) -> LoadBatches {
        LoadBatches {
            streams,
            events,
            stream: 0,
            revision: 0,
            next: 0,
        }
    }
}

impl Iterator for LoadBatches {
    type Item = Vec<(u64, u64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        while batch.len() < LOAD_BATCH && self.next < self.events {
            if self.stream == self.streams
                || self.revision >= stream_len(self.stream, self.streams, self.events)
            {
                // End of a round (in the last round only the first `events % streams`
                // streams have an event, and they come first). A batch ends with its
                // round, so that it never names a stream twice.
                self.stream = 0;
                self.revision += 1;
                if !batch.is_empty() {
                    break;
                }
                continue;
            }
            batch.push((self.stream, self.revision, self.next));
            self.stream += 1;
            self.next += 1;
        }
        (!batch.is_empty()).then_some(batch)
    }
}

/// Loads `events` events over `streams` streams into a new strata store, in
/// `append_multi` batches that do not wait for the disk (`Durability::NoSync`), then
/// closes it cleanly. Returns events per second.
async fn load_strata(dir: &Path, streams: u64, events: u64) -> Result<f64, CliError> {
    let options = Options {
        durability: Durability::NoSync,
        ..Options::default()
    };
    let store = Store::open_with(dir, options)?;
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    let mut round = 0;
    for batch in LoadBatches::new(streams, events) {
        let revision = batch.first().map_or(0, |&(_, revision, _)| revision);
        // A new round appends the next revision of streams the batches in flight may
        // still be writing: wait for them, or an exact expected revision could arrive
        // before the one it follows. (With many streams a round is many batches, so this
        // costs little.)
        if revision != round {
            while let Some(done) = in_flight.join_next().await {
                done.map_err(bench_error)??;
            }
            round = revision;
        }
        let requests = batch
            .into_iter()
            .map(|(stream, revision, n)| {
                AppendRequest::new(
                    stream_name(stream),
                    // Exact, not Any: a load in the wrong order fails instead of
                    // producing a different store than SQLite's.
                    match revision.checked_sub(1) {
                        None => ExpectedRevision::NoStream,
                        Some(previous) => ExpectedRevision::Exact(previous),
                    },
                    vec![payload(100, n)],
                )
            })
            .collect();
        // Waits for a batch beyond the window: memory stays bounded and the writer
        // always has the next batch queued.
        while in_flight.len() >= LOAD_IN_FLIGHT {
            if let Some(done) = in_flight.join_next().await {
                done.map_err(bench_error)??;
            }
        }
        let store = store.clone();
        in_flight.spawn(async move { store.append_multi(requests).await });
    }
    while let Some(done) = in_flight.join_next().await {
        done.map_err(bench_error)??;
    }
    let stored = store.stats().await?.events;
    store.close().await?;
    let elapsed = start.elapsed().as_secs_f64();
    if stored != events {
        return Err(CliError::Bench(format!(
            "strata load: {stored} events stored, {events} written"
        )));
    }
    Ok(events as f64 / elapsed)
}

/// Opens (or creates) the SQLite database in `dir` as every use here does: WAL mode,
/// `synchronous=FULL`, default cache.
fn sqlite_open(dir: &Path) -> Result<rusqlite::Connection, CliError> {
    let db = rusqlite::Connection::open(dir.join(SQLITE_FILE))?;
    let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(CliError::Bench(format!(
            "SQLite refused WAL mode (journal_mode is {mode})"
        )));
    }
    db.pragma_update(None, "synchronous", "FULL")?;
    Ok(db)
}

/// Loads the same events as [`load_strata`], in the same order, into a new SQLite
/// database, one transaction per batch, then closes it (which checkpoints the WAL into
/// the database and removes it). Returns events per second.
fn load_sqlite(dir: &Path, streams: u64, events: u64) -> Result<f64, CliError> {
    io(
        fs::create_dir_all(dir),
        "cannot create the SQLite directory",
    )?;
    let mut db = sqlite_open(dir)?;
    // A larger cache for the load only (the probes keep the default 2 MB): rows arrive
    // round-robin while the primary key's B-tree is in stream order, so with the default
    // cache nearly every insert would re-read index pages.
    db.pragma_update(None, "cache_size", -262_144)?;
    db.execute_batch(
        "CREATE TABLE events (
             stream TEXT NOT NULL,
             revision INTEGER NOT NULL,
             data BLOB NOT NULL,
             PRIMARY KEY (stream, revision)
         )",
    )?;
    let start = Instant::now();
    for batch in LoadBatches::new(streams, events) {
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (stream, revision, data) VALUES (?1, ?2, ?3)",
            )?;
            for (stream, revision, n) in batch {
                insert.execute(rusqlite::params![
                    stream_name(stream),
                    revision as i64,
                    payload(100, n).data.as_ref()
                ])?;
            }
        }
        tx.commit()?;
    }
    // Rows are never deleted here, so the largest rowid is the row count, without the
    // full scan `count(*)` would make.
    let stored: i64 = db.query_row("SELECT coalesce(max(rowid), 0) FROM events", [], |row| {
        row.get(0)
    })?;
    db.close().map_err(|(_, e)| CliError::from(e))?;
    let elapsed = start.elapsed().as_secs_f64();
    if u64::try_from(stored).ok() != Some(events) {
        return Err(CliError::Bench(format!(
            "SQLite load: {stored} rows stored, {events} written"
        )));
    }
    Ok(events as f64 / elapsed)
}

// ---------------------------------------------------------------------------------------
// Probes (each in a fresh process).

impl ScaleEngine {
    /// Its name on the command line and in the report.
    fn name(self) -> &'static str {
        match self {
            ScaleEngine::Strata => "strata",
            ScaleEngine::Sqlite => "sqlite",
        }
    }
}

impl ProbeMode {
    /// Its name on the command line.
    fn name(self) -> &'static str {
        match self {
            ProbeMode::Workload => "workload",
            ProbeMode::Open => "open",
            ProbeMode::CrashWriter => "crash-writer",
        }
    }
}

/// Runs one probe in this process and prints its result as JSON on stdout (the hidden
/// `strata bench-scale-probe`).
pub async fn probe(args: ScaleProbeArgs) -> Result<(), CliError> {
    if args.streams == 0 {
        return Err(CliError::Usage("--streams must be positive".into()));
    }
    let result = match args.engine {
        ScaleEngine::Strata => probe_strata(&args).await?,
        ScaleEngine::Sqlite => blocking(move || probe_sqlite(&args)).await?,
    };
    let json = serde_json::to_string(&result).map_err(bench_error)?;
    println!("{json}");
    Ok(())
}

/// The result's open figures, read right after the open.
fn opened(open: Duration) -> Result<ProbeResult, CliError> {
    Ok(ProbeResult {
        open_ms: open.as_secs_f64() * 1e3,
        rss_open_kib: proc_status_kib("VmRSS")?,
        peak_open_kib: proc_status_kib("VmHWM")?,
        ..ProbeResult::default()
    })
}

/// Tells the parent that the crash writer is appending (it kills it a moment later).
fn announce_appending() -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    io(
        writeln!(stdout, "{APPENDING}"),
        "cannot write to the parent",
    )?;
    io(stdout.flush(), "cannot write to the parent")
}

/// Appends the crash writer makes before it tells the parent, so that some are durable
/// (and must be found again) when it is killed.
const CRASH_WRITER_ANNOUNCE: u64 = 100;

async fn probe_strata(args: &ScaleProbeArgs) -> Result<ProbeResult, CliError> {
    let start = Instant::now();
    let store = Store::open(&args.dir)?;
    let mut result = opened(start.elapsed())?;
    result.events = store.stats().await?.events;
    result.scanned_events = store.embedded().map(|e| e.open_report().scanned_events);
    result.index = store.embedded().map(|e| e.index_stats());
    let mut random = Random::new();
    match args.mode {
        ProbeMode::Open => {}
        ProbeMode::CrashWriter => {
            let start = Instant::now();
            let mut appended = 0u64;
            while start.elapsed() < CRASH_WRITER_MAX {
                let stream = stream_name(random.below(args.streams));
                store
                    .append(stream, ExpectedRevision::Any, vec![payload(100, appended)])
                    .await?;
                appended += 1;
                if appended == CRASH_WRITER_ANNOUNCE {
                    announce_appending()?;
                }
            }
            return Err(CliError::Bench("the crash writer was never killed".into()));
        }
        ProbeMode::Workload => {
            result.peak_reset = reset_peak_rss();
            let mut latencies = Vec::with_capacity(args.reads);
            for _ in 0..args.reads {
                let stream = stream_name(random.below(args.streams));
                let t = Instant::now();
                let events = store
                    .read_stream(&stream, ReadStreamOptions::forwards().limit(READ_LIMIT))
                    .await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
                if events.is_empty() {
                    return Err(CliError::Bench(format!("strata: {stream} has no events")));
                }
                result.events_read += events.len() as u64;
            }
            if args.reads > 0 {
                let (p50, p99) = p50_p99(latencies);
                result.read_p50_us = Some(p50);
                result.read_p99_us = Some(p99);
            }
            if args.appends > 0 {
                let start = Instant::now();
                for i in 0..args.appends {
                    let stream = stream_name(random.below(args.streams));
                    store
                        .append(stream, ExpectedRevision::Any, vec![payload(100, i as u64)])
                        .await?;
                }
                result.appends_per_s = Some(args.appends as f64 / start.elapsed().as_secs_f64());
            }
            result.peak_workload_kib = Some(proc_status_kib("VmHWM")?);
        }
    }
    store.close().await?;
    Ok(result)
}

fn probe_sqlite(args: &ScaleProbeArgs) -> Result<ProbeResult, CliError> {
    let start = Instant::now();
    let db = sqlite_open(&args.dir)?;
    // Opening a connection reads next to nothing: SQLite reads the schema and, after a
    // crash, recovers the WAL at the first statement, so the open includes one (which
    // also counts the rows: rows are never deleted, so the largest rowid is their
    // number).
    let events: i64 = db.query_row("SELECT coalesce(max(rowid), 0) FROM events", [], |row| {
        row.get(0)
    })?;
    let mut result = opened(start.elapsed())?;
    result.events = u64::try_from(events).map_err(bench_error)?;
    let mut random = Random::new();
    // The same operation as strata's append with `ExpectedRevision::Any`: the next
    // revision of the stream, found through the primary key, in one statement and so
    // one transaction (autocommit), synced to the WAL before it returns.
    let append_sql = "INSERT INTO events (stream, revision, data) \
                      SELECT ?1, coalesce(max(revision) + 1, 0), ?2 FROM events WHERE stream = ?1";
    match args.mode {
        ProbeMode::Open => {}
        ProbeMode::CrashWriter => {
            let mut append = db.prepare(append_sql)?;
            let start = Instant::now();
            let mut appended = 0u64;
            while start.elapsed() < CRASH_WRITER_MAX {
                let stream = stream_name(random.below(args.streams));
                append.execute(rusqlite::params![
                    stream,
                    payload(100, appended).data.as_ref()
                ])?;
                appended += 1;
                if appended == CRASH_WRITER_ANNOUNCE {
                    announce_appending()?;
                }
            }
            return Err(CliError::Bench("the crash writer was never killed".into()));
        }
        ProbeMode::Workload => {
            result.peak_reset = reset_peak_rss();
            {
                let mut read = db.prepare(
                    "SELECT revision, data FROM events WHERE stream = ?1 \
                     ORDER BY revision LIMIT ?2",
                )?;
                let mut latencies = Vec::with_capacity(args.reads);
                for _ in 0..args.reads {
                    let stream = stream_name(random.below(args.streams));
                    let t = Instant::now();
                    // Rows are copied out, as strata's read returns owned events.
                    let events = read
                        .query_map(rusqlite::params![stream, READ_LIMIT as i64], |row| {
                            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                    if events.is_empty() {
                        return Err(CliError::Bench(format!("SQLite: {stream} has no events")));
                    }
                    result.events_read += events.len() as u64;
                }
                if args.reads > 0 {
                    let (p50, p99) = p50_p99(latencies);
                    result.read_p50_us = Some(p50);
                    result.read_p99_us = Some(p99);
                }
            }
            if args.appends > 0 {
                let mut append = db.prepare(append_sql)?;
                let start = Instant::now();
                for i in 0..args.appends {
                    let stream = stream_name(random.below(args.streams));
                    append.execute(rusqlite::params![
                        stream,
                        payload(100, i as u64).data.as_ref()
                    ])?;
                }
                result.appends_per_s = Some(args.appends as f64 / start.elapsed().as_secs_f64());
            }
            result.peak_workload_kib = Some(proc_status_kib("VmHWM")?);
        }
    }
    db.close().map_err(|(_, e)| CliError::from(e))?;
    Ok(result)
}

// ---------------------------------------------------------------------------------------
// The benchmark's side: load, start the probes, print.

/// This binary, re-executed as `strata bench-scale-probe …`.
fn probe_command(
    engine: ScaleEngine,
    mode: ProbeMode,
    dir: &Path,
    streams: u64,
    reads: usize,
    appends: usize,
) -> Result<Command, CliError> {
    let exe = io(
        std::env::current_exe(),
        "cannot find the strata executable to start a probe",
    )?;
    let mut command = Command::new(exe);
    // The probe works on a local directory; a --server or --postgres from the
    // environment would make the subcommand refuse or look elsewhere.
    command
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_POSTGRES")
        .arg("bench-scale-probe")
        .args(["--engine", engine.name(), "--mode", mode.name(), "--dir"])
        .arg(dir)
        .args([
            "--streams",
            &streams.to_string(),
            "--reads",
            &reads.to_string(),
            "--appends",
            &appends.to_string(),
        ]);
    Ok(command)
}

/// Runs a probe process to its end, with the store in the page cache, and returns what
/// it measured.
async fn run_probe(
    engine: ScaleEngine,
    mode: ProbeMode,
    dir: &Path,
    streams: u64,
    reads: usize,
    appends: usize,
) -> Result<ProbeResult, CliError> {
    let mut command = probe_command(engine, mode, dir, streams, reads, appends)?;
    let dir = dir.to_owned();
    blocking(move || {
        warm_page_cache(&dir)?;
        let output = io(command.output(), "cannot start a probe process")?;
        if !output.status.success() {
            return Err(CliError::Bench(format!(
                "the {} {} probe failed ({}): {}",
                engine.name(),
                mode.name(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| {
            CliError::Bench(format!(
                "the {} probe answered unexpectedly ({e}): {}",
                engine.name(),
                String::from_utf8_lossy(&output.stdout)
            ))
        })
    })
    .await
}

/// Starts a crash writer, lets it append for [`CRASH_AFTER`] once it has started, and
/// kills it with SIGKILL (what `Child::kill` sends on unix): no close, no checkpoint, no
/// flush of anything it had not made durable.
async fn crash(engine: ScaleEngine, dir: &Path, streams: u64) -> Result<(), CliError> {
    let mut command = probe_command(engine, ProbeMode::CrashWriter, dir, streams, 0, 0)?;
    blocking(move || {
        let mut child = io(
            command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn(),
            "cannot start the crash writer",
        )?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            io(
                BufReader::new(stdout).read_line(&mut line),
                "cannot read the crash writer",
            )?;
        }
        if line.trim() == APPENDING {
            std::thread::sleep(CRASH_AFTER);
        }
        // Killed in every case: a writer that did not announce itself has failed (or is
        // stuck) and must not outlive the benchmark.
        let _ = child.kill();
        let output = io(child.wait_with_output(), "cannot wait for the crash writer")?;
        use std::os::unix::process::ExitStatusExt;
        if line.trim() != APPENDING || output.status.signal() != Some(libc::SIGKILL) {
            return Err(CliError::Bench(format!(
                "the {} crash writer did not run until killed ({}): {}",
                engine.name(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    })
    .await
}

/// What was measured of one engine: one probe result per round.
struct Measured {
    engine: ScaleEngine,
    /// The loaded store.
    dir: PathBuf,
    load_per_s: f64,
    disk_bytes: u64,
    loaded: Vec<ProbeResult>,
    crashed: Vec<ProbeResult>,
    empty: Vec<ProbeResult>,
}

/// The median of a figure over rounds (the lower middle one of an even count).
fn median(results: &[ProbeResult], figure: impl Fn(&ProbeResult) -> f64) -> f64 {
    let mut values: Vec<f64> = results.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// Creates a store of `events` events (0: an empty one) for `engine` in `dir`.
async fn load(
    engine: ScaleEngine,
    dir: PathBuf,
    streams: u64,
    events: u64,
) -> Result<f64, CliError> {
    match engine {
        ScaleEngine::Strata => load_strata(&dir, streams, events).await,
        ScaleEngine::Sqlite => blocking(move || load_sqlite(&dir, streams, events)).await,
    }
}

/// Loads both engines, then probes them `repeat` times, taking turns (so that a slow
/// spell of a shared machine or disk does not land on one engine, or on the loaded or
/// the empty store, only). Both loaded stores exist at once: the disk needs room for
/// both. The stores are removed afterwards.
async fn measure(
    root: &Path,
    streams: u64,
    events: u64,
    repeat: usize,
) -> Result<Vec<Measured>, CliError> {
    let mut engines = Vec::new();
    for engine in [ScaleEngine::Strata, ScaleEngine::Sqlite] {
        let dir = root.join(format!("scale-{}", engine.name()));
        println!("scale: loading {} …", engine.name());
        let load_per_s = load(engine, dir.clone(), streams, events).await?;
        let disk_bytes = disk_bytes(&dir)?;
        println!(
            "scale: {} loaded at {load_per_s:.0} events/s, {:.1} MB on disk",
            engine.name(),
            disk_bytes as f64 / 1e6
        );
        engines.push(Measured {
            engine,
            dir,
            load_per_s,
            disk_bytes,
            loaded: Vec::new(),
            crashed: Vec::new(),
            empty: Vec::new(),
        });
    }
    println!("scale: probing in fresh processes …");
    for _ in 0..repeat {
        for m in &mut engines {
            m.loaded.push(
                run_probe(
                    m.engine,
                    ProbeMode::Workload,
                    &m.dir,
                    streams,
                    READS,
                    APPENDS,
                )
                .await?,
            );
            // A new empty store each round: the previous round's appends made the last
            // one non-empty.
            let empty_dir = root.join(format!("scale-{}-empty", m.engine.name()));
            load(m.engine, empty_dir.clone(), streams, 0).await?;
            m.empty.push(
                run_probe(
                    m.engine,
                    ProbeMode::Workload,
                    &empty_dir,
                    streams,
                    0,
                    APPENDS,
                )
                .await?,
            );
            io(
                fs::remove_dir_all(&empty_dir),
                "cannot remove a scale store",
            )?;
        }
    }
    for _ in 0..repeat {
        for m in &mut engines {
            crash(m.engine, &m.dir, streams).await?;
            m.crashed
                .push(run_probe(m.engine, ProbeMode::Open, &m.dir, streams, 0, 0).await?);
        }
    }
    for m in &engines {
        io(fs::remove_dir_all(&m.dir), "cannot remove a scale store")?;
        // Every acknowledged append must be there: the load, the workloads' durable
        // appends, and at least those each crash writer made before it announced itself.
        let durable = events + (APPENDS as u64 + CRASH_WRITER_ANNOUNCE) * repeat as u64;
        let after_load = m.loaded.first().map_or(0, |r| r.events);
        let after_crashes = m.crashed.last().map_or(0, |r| r.events);
        if after_load != events || after_crashes < durable {
            return Err(CliError::Bench(format!(
                "{}: {after_load} events after the load (expected {events}), {after_crashes} \
                 after the crashes (expected at least {durable})",
                m.engine.name(),
            )));
        }
    }
    Ok(engines)
}

/// One line of the comparison.
struct Row {
    label: &'static str,
    unit: &'static str,
    strata: f64,
    sqlite: f64,
}

/// A value with the digits that mean something at its size.
fn readable(value: f64) -> String {
    match value.abs() {
        v if v >= 1000.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the scale section: both engines, then the table. Its figures go into the report
/// (named `scale strata: …` and `scale sqlite: …`, strata's with its ratio to SQLite).
pub async fn run(
    root: &Path,
    streams: u64,
    events: u64,
    repeat: usize,
    report: &mut Report,
) -> Result<(), CliError> {
    if streams == 0 || events < streams {
        return Err(CliError::Usage(format!(
            "the scale benchmark needs at least one event per stream (--streams {streams}, \
             --events {events})"
        )));
    }
    println!(
        "scale: {events} events of ~100 B of JSON over {streams} streams (the full figure is \
         10 000 000 streams, 100 000 000 events); each engine is loaded, closed, and probed \
         by fresh processes; each figure but the load and the disk is the median of \
         {repeat} process(es)"
    );
    let mut measured = measure(root, streams, events, repeat).await?.into_iter();
    let (Some(strata), Some(sqlite)) = (measured.next(), measured.next()) else {
        // `measure` returns one entry per engine, strata first: a bug if not.
        return Err(CliError::Bench("an engine's figures are missing".into()));
    };

    let both = |f: &dyn Fn(&Measured) -> f64| (f(&strata), f(&sqlite));
    let mut rows = Vec::new();
    let mut row = |label, unit, (strata, sqlite): (f64, f64)| {
        rows.push(Row {
            label,
            unit,
            strata,
            sqlite,
        })
    };
    row(
        "load (set-up: batches of 1 000; strata NoSync)",
        "events/s",
        both(&|m| m.load_per_s),
    );
    row(
        "disk per event",
        "B",
        both(&|m| m.disk_bytes as f64 / events as f64),
    );
    row(
        "open after a clean shutdown",
        "ms",
        both(&|m| median(&m.loaded, |r| r.open_ms)),
    );
    row(
        "RSS right after open",
        "MiB",
        both(&|m| median(&m.loaded, |r| mib(r.rss_open_kib))),
    );
    row(
        "peak RSS during open",
        "MiB",
        both(&|m| median(&m.loaded, |r| mib(r.peak_open_kib))),
    );
    row(
        "peak RSS during reads and appends",
        "MiB",
        both(&|m| median(&m.loaded, |r| mib(r.peak_workload_kib.unwrap_or(0)))),
    );
    row(
        "random stream read (up to 10 events), p50",
        "us",
        both(&|m| median(&m.loaded, |r| r.read_p50_us.unwrap_or(0.0))),
    );
    row(
        "random stream read (up to 10 events), p99",
        "us",
        both(&|m| median(&m.loaded, |r| r.read_p99_us.unwrap_or(0.0))),
    );
    let appends = |results: &[ProbeResult]| median(results, |r| r.appends_per_s.unwrap_or(0.0));
    row(
        "durable 1-event appends, loaded store",
        "appends/s",
        both(&|m| appends(&m.loaded)),
    );
    row(
        "durable 1-event appends, empty store",
        "appends/s",
        both(&|m| appends(&m.empty)),
    );
    row(
        "  loaded / empty",
        "x",
        both(&|m| appends(&m.loaded) / appends(&m.empty)),
    );
    row(
        "open after SIGKILL mid-append",
        "ms",
        both(&|m| median(&m.crashed, |r| r.open_ms)),
    );

    println!();
    println!(
        "{:<48} {:>12} {:>12} {:<10} {:>13}",
        "scale", "strata", "SQLite", "unit", "strata/SQLite"
    );
    for row in &rows {
        println!(
            "{:<48} {:>12} {:>12} {:<10} {:>13.2}",
            row.label,
            readable(row.strata),
            readable(row.sqlite),
            row.unit,
            row.strata / row.sqlite
        );
        report.keep(Figure {
            ratio: Some(("sqlite".into(), row.strata / row.sqlite)),
            ..figure(format!("scale strata: {}", row.label), row.strata, row.unit)
        });
        report.keep(figure(
            format!("scale sqlite: {}", row.label),
            row.sqlite,
            row.unit,
        ));
    }
    if let Some(index) = strata.loaded.first().and_then(|r| r.index.as_ref()) {
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!(
            "strata's index after open: heads of {} streams {:.1} MiB, memtables of {} \
             segment(s) ({} events) {:.1} MiB, {} tables {:.1} MiB in memory ({:.1} MiB on \
             disk)",
            index.streams,
            mib(index.head_memory_bytes),
            index.memtables,
            index.memtable_events,
            mib(index.memtable_memory_bytes),
            index.tables,
            mib(index.table_memory_bytes),
            mib(index.table_file_bytes),
        );
    }
    println!(
        "strata scanned {} events after its checkpoint when reopened after the kill; SQLite's \
         open includes its first statement (schema read, WAL recovery)",
        median(&strata.crashed, |r| r.scanned_events.unwrap_or(0) as f64)
    );
    if !strata
        .loaded
        .iter()
        .chain(&sqlite.loaded)
        .all(|r| r.peak_reset)
    {
        println!(
            "the kernel did not allow resetting the peak RSS: the workload's peak includes \
             the open's"
        );
    }
    Ok(())
}
