//! `strata bench`: measures the embedded engine next to the disk's own limits, measured
//! by the same program in the same run, and prints both with their ratios.
//!
//! The disk limits are one 4 KiB write plus `fdatasync` per operation (what one
//! durable append without batching would cost) and sequential write bandwidth (what
//! batching can at best approach). Every strata figure uses the default durability
//! (`fdatasync` before acknowledging), except the set-up of the read and open tests,
//! which is not measured.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use strata::engine::index::checkpoint;
use strata::{
    Durability, EventData, ExpectedRevision, Options, ReadAllOptions, ReadStreamOptions, Store,
};

use crate::error::CliError;

/// Adds what was being done to an I/O error.
fn io<T>(result: std::io::Result<T>, what: &str) -> Result<T, CliError> {
    result.map_err(|e| CliError::io(what.to_owned(), e))
}

/// Options of `strata bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A shorter run (1 M events instead of 10 M, shorter timings) for a quick look.
    #[arg(long)]
    pub quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Directory for the benchmark's scratch stores (default: next to the data
    /// directory). It must be on the disk you want to measure; it is removed afterwards.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Events in the store used for the read and open measurements (default 10 M,
    /// 1 M with --quick); for `scale`, the events loaded (default 1 M; the full figure
    /// is 100 M).
    #[arg(long)]
    pub events: Option<u64>,
    /// Streams the `scale` section spreads its events over (default 100 000; the full
    /// figure is 10 M).
    #[arg(long)]
    pub streams: Option<u64>,
    /// Seconds each timed append measurement runs (default 3, 1 with --quick).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// How many times each measurement is repeated; the median is shown (default 3, 1
    /// with --quick).
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Which parts to measure (default: all but `scale`): `log` (appends, reads, opens,
    /// next to the disk's limits), `model` (aggregate loads, command handling),
    /// `postgres`, `projections`, `server`, and `scale` (a large store next to SQLite;
    /// only when named, as it loads both engines).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// PostgreSQL to measure (default: a throw-away cluster started for the run, with
    /// fsync and synchronous_commit on).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

/// A part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// The event log.
    Log,
    /// Aggregates and command handling.
    Model,
    /// The PostgreSQL backend next to PostgreSQL's own floor and the embedded engine.
    Postgres,
    /// Projection rebuilds: serial, parallel, in-memory and durable sinks.
    Projections,
    /// The network server: gRPC and HTTP appends and live delivery next to the embedded
    /// library.
    Server,
    /// A large store (`--streams`, `--events`) next to SQLite with the same events: open
    /// times (clean and after SIGKILL), memory, random stream reads, durable appends,
    /// disk per event, each measured in a fresh process. Not part of the default run.
    Scale,
}

/// One measured figure.
#[derive(Debug, Serialize)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    /// The limit it is compared with, and the ratio to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ratio: Option<(String, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_us: Option<f64>,
}

/// The figures measured so far, printed as they come.
pub(crate) struct Report {
    figures: Vec<Figure>,
}

impl Report {
    /// Prints a figure and keeps it.
    pub(crate) fn add(&mut self, figure: Figure) {
        let mut line = format!(
            "{:<58} {:>14.1} {:<8}",
            figure.name, figure.value, figure.unit
        );
        if let (Some(p50), Some(p99)) = (figure.p50_us, figure.p99_us) {
            line.push_str(&format!(" p50 {p50:>8.0} us  p99 {p99:>8.0} us"));
        }
        if let Some((limit, ratio)) = &figure.ratio {
            line.push_str(&format!("  = {ratio:.2} x {limit}"));
        }
        println!("{line}");
        self.figures.push(figure);
    }

    /// Keeps a figure without printing it, for a section that prints its own table.
    pub(crate) fn keep(&mut self, figure: Figure) {
        self.figures.push(figure);
    }
}

/// A figure with no ratio or latencies.
pub(crate) fn figure(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit,
        ratio: None,
        p50_us: None,
        p99_us: None,
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(data_dir: &Path, args: BenchArgs) -> Result<(), CliError> {
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            let parent = data_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            parent.join(format!("strata-bench-{}", std::process::id()))
        }
    };
    io(
        fs::create_dir_all(&root),
        "cannot create the scratch directory",
    )?;
    let outcome = run_in(&root, &args).await;
    let _ = fs::remove_dir_all(&root);
    let report = outcome?;
    if let Some(path) = &args.output {
        let json = serde_json::to_string_pretty(&report.figures).map_err(bench_error)?;
        io(fs::write(path, json), "cannot write the results")?;
    }
    Ok(())
}

async fn run_in(root: &Path, args: &BenchArgs) -> Result<Report, CliError> {
    let quick = args.quick;
    let timed = Duration::from_secs_f64(
        args.seconds
            .unwrap_or(if quick { 1.0 } else { 3.0 })
            .max(0.01),
    );
    let repeat = args.repeat.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let events = args
        .events
        .unwrap_or(if quick { 1_000_000 } else { 10_000_000 });
    println!("machine: {}", machine());
    println!("scratch directory: {}", root.display());
    let mut report = Report {
        figures: Vec::new(),
    };
    let all = args.only.is_empty();
    if all || args.only.contains(&Section::Log) {
        log(root, quick, repeat, timed, events, &mut report).await?;
    }
    if all || args.only.contains(&Section::Model) {
        crate::bench_model::run(root, repeat, timed, &mut report).await?;
    }
    if all || args.only.contains(&Section::Projections) {
        let options = strata::projection::bench::ProjectionBenchOptions::new(events).repeat(repeat);
        strata::projection::bench::projection_benchmarks(&root.join("projections"), options, |f| {
            report.add(Figure {
                ratio: f.ratio.clone(),
                ..figure(f.name.clone(), f.value, f.unit)
            })
        })
        .await
        .map_err(bench_error)?;
    }
    if all || args.only.contains(&Section::Server) {
        crate::bench_server::run(root, repeat, timed, quick, &mut report).await?;
    }
    if all || args.only.contains(&Section::Postgres) {
        crate::bench_postgres::run(
            root,
            args.postgres.as_deref(),
            repeat,
            timed,
            quick,
            &mut report,
        )
        .await?;
    }
    // Only when named: it loads a large store into two engines.
    if args.only.contains(&Section::Scale) {
        crate::bench_scale::run(
            root,
            args.streams.unwrap_or(crate::bench_scale::DEFAULT_STREAMS),
            args.events.unwrap_or(crate::bench_scale::DEFAULT_EVENTS),
            repeat,
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

/// The event log's figures, next to the disk's limits.
async fn log(
    root: &Path,
    quick: bool,
    repeat: usize,
    timed: Duration,
    events: u64,
    report: &mut Report,
) -> Result<(), CliError> {
    println!("each figure is the median of {repeat} run(s)");
    let mut probes = Vec::new();
    for _ in 0..repeat {
        probes.push(disk_fsync_rate(&root.join("fsync-probe"), timed)?);
    }
    let (fsync_rate, p50, p99) = median_by(probes, |p| p.0);
    report.add(Figure {
        p50_us: Some(p50),
        p99_us: Some(p99),
        ..figure("disk: 4 KiB write + fdatasync", fsync_rate, "ops/s")
    });
    let mut bandwidths = Vec::new();
    for _ in 0..repeat {
        bandwidths.push(disk_sequential_bandwidth(
            &root.join("seq-probe"),
            if quick { 128 << 20 } else { 512 << 20 },
        )?);
    }
    let bandwidth = median_by(bandwidths, |b| *b);
    report.add(figure(
        "disk: sequential write bandwidth (1 MiB writes, one sync)",
        bandwidth / 1e6,
        "MB/s",
    ));

    for writers in [1usize, 16, 256] {
        let run = appends_median(
            root,
            &format!("single-{writers}"),
            repeat,
            writers,
            1,
            100,
            timed,
        )
        .await?;
        report.add(Figure {
            ratio: Some((
                "one-write-one-fsync rate".into(),
                run.events_per_s / fsync_rate,
            )),
            p50_us: Some(run.p50_us),
            p99_us: Some(run.p99_us),
            ..figure(
                format!("durable appends, 1 event of 100 B, {writers} writers"),
                run.events_per_s,
                "events/s",
            )
        });
    }
    for writers in [1usize, 16, 64] {
        let run = appends_median(
            root,
            &format!("batched-{writers}"),
            repeat,
            writers,
            100,
            200,
            timed,
        )
        .await?;
        report.add(Figure {
            ratio: Some((
                "sequential bandwidth".into(),
                run.log_bytes_per_s / bandwidth,
            )),
            p50_us: Some(run.p50_us),
            p99_us: Some(run.p99_us),
            ..figure(
                format!("durable appends, 100 events of 200 B, {writers} writers (log MB/s)"),
                run.log_bytes_per_s / 1e6,
                "MB/s",
            )
        });
        report.add(figure("  same, events/s", run.events_per_s, "events/s"));
    }

    let dir = root.join("large");
    println!(
        "building a store of {events} events for the read and open measurements (not timed) …"
    );
    build(&dir, events).await?;
    reads(&dir, events, report).await?;
    opens(&dir, report).await?;
    Ok(())
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!(
        "{cpu}, {cores} cores, {:.1} GiB RAM",
        memory as f64 / (1 << 20) as f64
    )
}

/// The element with the median key.
pub(crate) fn median_by<T>(mut values: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = values.len() / 2;
    values.swap_remove(middle)
}

/// Runs [`appends`] `repeat` times on fresh stores and keeps the median run.
async fn appends_median(
    root: &Path,
    name: &str,
    repeat: usize,
    writers: usize,
    per_append: usize,
    size: usize,
    duration: Duration,
) -> Result<AppendRun, CliError> {
    let mut runs = Vec::new();
    for i in 0..repeat {
        let dir = root.join(format!("{name}-{i}"));
        runs.push(appends(&dir, writers, per_append, size, duration).await?);
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(median_by(runs, |r| r.events_per_s))
}

pub(crate) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[index])
}

fn disk_fsync_rate(path: &Path, duration: Duration) -> Result<(f64, f64, f64), CliError> {
    let file = io(
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path),
        "cannot create the probe file",
    )?;
    let block = [0x5Au8; 4096];
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut offset = 0;
    while start.elapsed() < duration {
        let t = Instant::now();
        io(file.write_all_at(&block, offset), "probe write")?;
        io(file.sync_data(), "probe fdatasync")?;
        latencies.push(t.elapsed().as_micros() as u32);
        offset += 4096;
    }
    let elapsed = start.elapsed().as_secs_f64();
    io(fs::remove_file(path), "remove probe file")?;
    latencies.sort_unstable();
    Ok((
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    ))
}

fn disk_sequential_bandwidth(path: &Path, bytes: usize) -> Result<f64, CliError> {
    let mut file = io(File::create(path), "cannot create the probe file")?;
    let chunk = vec![0xA5u8; 1 << 20];
    let start = Instant::now();
    let mut written = 0;
    while written < bytes {
        io(file.write_all(&chunk), "probe write")?;
        written += chunk.len();
    }
    io(file.sync_data(), "probe fdatasync")?;
    let elapsed = start.elapsed().as_secs_f64();
    drop(file);
    io(fs::remove_file(path), "remove probe file")?;
    Ok(written as f64 / elapsed)
}

/// What a timed append load achieved.
pub(crate) struct AppendRun {
    pub(crate) events_per_s: f64,
    pub(crate) log_bytes_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) elapsed_s: f64,
}

/// An event of about `size` bytes of JSON, numbered `i`.
pub(crate) fn payload(size: usize, i: u64) -> EventData {
    let pad = size.saturating_sub(24);
    let data = format!("{{\"n\":{i:>10},\"p\":\"{}\"}}", "x".repeat(pad));
    EventData::new("Measured", data.into_bytes(), strata::ContentType::Json)
}

async fn appends(
    dir: &Path,
    writers: usize,
    per_append: usize,
    size: usize,
    duration: Duration,
) -> Result<AppendRun, CliError> {
    let store = Store::open(dir)?;
    let run = append_load(&store, writers, per_append, size, duration).await?;
    let stats = store.stats().await?;
    store.close().await?;
    Ok(AppendRun {
        log_bytes_per_s: stats.disk_bytes as f64 / run.elapsed_s,
        ..run
    })
}

/// `writers` tasks append `per_append` events of `size` bytes to streams of their own
/// for `duration`. Counts acknowledged events; `log_bytes_per_s` is left at 0.
pub(crate) async fn append_load(
    store: &Store,
    writers: usize,
    per_append: usize,
    size: usize,
    duration: Duration,
) -> Result<AppendRun, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let stop = stop.clone();
            let stream = format!("bench{}-{w}", &run[..8]);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                // The payloads are made once: the measurement is of the store, not of
                // formatting JSON. Each append still gets fresh event ids.
                let template: Vec<EventData> =
                    (0..per_append).map(|k| payload(size, k as u64)).collect();
                while !stop.load(Ordering::Relaxed) {
                    let batch = template
                        .iter()
                        .map(|e| e.clone().with_id(uuid::Uuid::new_v4()))
                        .collect();
                    let t = Instant::now();
                    store
                        .append(stream.as_str(), ExpectedRevision::Any, batch)
                        .await?;
                    latencies.push(t.elapsed().as_micros() as u32);
                }
                Ok::<_, strata::AppendError>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(bench_error)??);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(AppendRun {
        events_per_s: (latencies.len() * per_append) as f64 / elapsed_s,
        log_bytes_per_s: 0.0,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        elapsed_s,
    })
}

/// Fills a store with `events` small events in 1 000 streams (set-up, not measured:
/// batched appends without waiting for the disk).
async fn build(dir: &Path, events: u64) -> Result<(), CliError> {
    let options = Options {
        durability: Durability::NoSync,
        ..Options::default()
    };
    let store = Store::open_with(dir, options)?;
    let per_append = 1000u64;
    let mut written = 0;
    let mut pending = Vec::new();
    while written < events {
        let n = per_append.min(events - written);
        let batch = (0..n).map(|k| payload(100, written + k)).collect();
        let store = store.clone();
        let stream = format!("large-{}", (written / per_append) % 1000);
        pending.push(tokio::spawn(async move {
            store.append(stream, ExpectedRevision::Any, batch).await
        }));
        if pending.len() >= 8 {
            for task in pending.drain(..) {
                task.await.map_err(bench_error)??;
            }
        }
        written += n;
    }
    for task in pending {
        task.await.map_err(bench_error)??;
    }
    store.close().await?;
    Ok(())
}

/// Reads the whole global log in pages of 4 096; returns the events read and the seconds
/// it took.
pub(crate) async fn read_whole_log(store: &Store) -> Result<(u64, f64), CliError> {
    let start = Instant::now();
    let mut read = 0u64;
    let mut from = strata::Position::START;
    loop {
        let page = store
            .read_all(ReadAllOptions::forwards().from_position(from).limit(4096))
            .await?;
        let Some(last) = page.last() else { break };
        from = last.position.next();
        read += page.len() as u64;
    }
    Ok((read, start.elapsed().as_secs_f64()))
}

/// A benchmark failure from any error.
pub(crate) fn bench_error(error: impl std::fmt::Display) -> CliError {
    CliError::Bench(error.to_string())
}

async fn reads(dir: &Path, events: u64, report: &mut Report) -> Result<(), CliError> {
    let store = Store::open(dir)?;
    let (read, elapsed) = read_whole_log(&store).await?;
    if read != events {
        return Err(CliError::Bench(format!(
            "read {read} events, wrote {events}"
        )));
    }
    report.add(figure(
        format!("global log read after open ({events} events, pages of 4096)"),
        read as f64 / elapsed,
        "events/s",
    ));
    let start = Instant::now();
    let mut read = 0u64;
    let streams = store
        .list_streams(strata::ListStreamsOptions {
            prefix: Some("large-".into()),
            limit: Some(50),
            ..Default::default()
        })
        .await?;
    for stream in &streams {
        read += store
            .read_stream(&stream.name, ReadStreamOptions::forwards())
            .await?
            .len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    report.add(figure(
        format!("stream read ({} streams, {read} events)", streams.len()),
        read as f64 / elapsed,
        "events/s",
    ));
    store.close().await?;
    Ok(())
}

async fn opens(dir: &Path, report: &mut Report) -> Result<(), CliError> {
    let start = Instant::now();
    let store = Store::open(dir)?;
    let clean = start.elapsed();
    let events = store.stats().await?.events;
    report.add(figure(
        format!("open after a clean shutdown ({events} events)"),
        clean.as_secs_f64() * 1e3,
        "ms",
    ));
    store.close().await?;

    // A crash leaves a checkpoint that is behind the log by at most the checkpoint
    // interval (the larger of 64 MiB and the checkpoint's own size). Reproduce the worst
    // case: keep the checkpoint as it is now, append that much more, then put the old
    // checkpoint back, so the next open must scan the whole interval.
    let saved = io(fs::read(dir.join(checkpoint::FILE_NAME)), "read checkpoint")?;
    let interval = (Options::default().checkpoint_interval_bytes).max(saved.len() as u64);
    let options = Options {
        durability: Durability::NoSync,
        checkpoint_interval_bytes: u64::MAX,
        ..Options::default()
    };
    let store = Store::open_with(dir, options)?;
    let before = store.stats().await?.disk_bytes;
    let mut i = 0u64;
    while store.stats().await?.disk_bytes < before + interval {
        let batch = (0..1000).map(|k| payload(100, i + k)).collect();
        store
            .append(format!("tail-{}", i % 97), ExpectedRevision::Any, batch)
            .await?;
        i += 1000;
    }
    let total = store.stats().await?.events;
    drop(store);
    io(
        fs::write(dir.join(checkpoint::FILE_NAME), &saved),
        "restore checkpoint",
    )?;
    let start = Instant::now();
    let store = Store::open(dir)?;
    let crashed = start.elapsed();
    let scanned = store
        .embedded()
        .map_or(0, |e| e.open_report().scanned_events);
    report.add(figure(
        format!("open after a crash ({total} events, {scanned} scanned after the checkpoint)"),
        crashed.as_secs_f64() * 1e3,
        "ms",
    ));
    store.close().await?;
    io(
        fs::remove_file(dir.join(checkpoint::FILE_NAME)),
        "remove checkpoint",
    )?;
    let start = Instant::now();
    let store = Store::open(dir)?;
    let rebuilt = start.elapsed();
    report.add(figure(
        format!("open with no checkpoint: full index rebuild ({total} events)"),
        rebuilt.as_secs_f64() * 1e3,
        "ms",
    ));
    store.close().await?;
    Ok(())
}
