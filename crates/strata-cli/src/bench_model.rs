//! The model layer's figures in `strata bench`: aggregate loads with and without a
//! snapshot, and command handling (load, decide, append) on one hot aggregate and on many
//! independent ones.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata::model::{Aggregate, CommandContext, MemorySnapshots, Repository, RepositoryConfig};
use strata::{EventData, ExpectedRevision, Store};

use crate::bench::{bench_error, figure, median_by, Figure, Report};
use crate::error::CliError;

/// A counter: the smallest aggregate that still reads and writes real events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Counter {
    total: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum CounterEvent {
    Added { n: u64 },
}

#[derive(Debug, thiserror::Error)]
#[error("never refused")]
struct Never;

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Command = u64;
    type Error = Never;
    const CATEGORY: &'static str = "benchcounter";

    fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) {
        self.total += n;
    }

    fn decide(&self, n: &u64) -> Result<Vec<CounterEvent>, Never> {
        Ok(vec![CounterEvent::Added { n: *n }])
    }
}

/// Runs the model measurements in `root`.
pub async fn run(
    root: &Path,
    repeat: usize,
    timed: Duration,
    report: &mut Report,
) -> Result<(), CliError> {
    let store = Store::open(root.join("model"))?;
    loads(&store, repeat, report).await?;
    for (writers, aggregates) in [(16usize, 1usize), (64, 64)] {
        let mut runs = Vec::new();
        for round in 0..repeat {
            runs.push(commands(&store, writers, aggregates, round, timed).await?);
        }
        let (rate, attempts) = median_by(runs, |r| r.0);
        let what = if aggregates == 1 {
            "one hot aggregate".to_owned()
        } else {
            format!("{aggregates} aggregates")
        };
        report.add(figure(
            format!("commands (load-decide-append), {what}, {writers} callers"),
            rate,
            "cmds/s",
        ));
        report.add(figure(
            "  same, appends tried per command (conflict retries)",
            attempts,
            "x",
        ));
    }
    store.close().await?;
    Ok(())
}

async fn loads(store: &Store, repeat: usize, report: &mut Report) -> Result<(), CliError> {
    for chunk in 0..100u64 {
        let events = (0..1000u64)
            .map(|i| EventData::json("Added", &serde_json::json!({ "n": chunk * 1000 + i })))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bench_error)?;
        store
            .append("benchcounter-long", ExpectedRevision::Any, events)
            .await?;
    }
    let plain = Repository::<Counter>::new(store.clone());
    let snapshots = Arc::new(MemorySnapshots::new());
    let cached = Repository::<Counter>::new(store.clone()).with_snapshots(snapshots);
    cached.snapshot("long").await.map_err(bench_error)?;
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..repeat.max(3) {
        let start = Instant::now();
        let loaded = plain.load("long").await.map_err(bench_error)?;
        without.push((start.elapsed().as_secs_f64() * 1e6, loaded.events_read));
        let start = Instant::now();
        let loaded = cached.load("long").await.map_err(bench_error)?;
        with.push((start.elapsed().as_secs_f64() * 1e6, loaded.events_read));
    }
    let (without_us, read) = median_by(without, |m| m.0);
    let (with_us, read_cached) = median_by(with, |m| m.0);
    report.add(figure(
        format!("aggregate load, 100 000 events, no snapshot ({read} events read)"),
        without_us,
        "us",
    ));
    report.add(Figure {
        ratio: Some(("faster than without".into(), without_us / with_us.max(1e-3))),
        ..figure(
            format!("aggregate load, 100 000 events, recent snapshot ({read_cached} events read)"),
            with_us,
            "us",
        )
    });
    Ok(())
}

/// `writers` tasks handle commands on `aggregates` aggregates for `timed`. Returns
/// commands/s and appends tried per command.
async fn commands(
    store: &Store,
    writers: usize,
    aggregates: usize,
    round: usize,
    timed: Duration,
) -> Result<(f64, f64), CliError> {
    let config = RepositoryConfig {
        max_attempts: 10_000,
        snapshot_every: Some(100),
    };
    let counters = Repository::<Counter>::new(store.clone())
        .with_snapshots(Arc::new(MemorySnapshots::new()))
        .with_config(config);
    let stop = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let before = store.stats().await?.events;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let counters = counters.clone();
            let stop = stop.clone();
            let handled = handled.clone();
            let attempts = attempts.clone();
            let id = format!("r{round}-{}", w % aggregates);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let done = counters.handle(&id, &1, &CommandContext::new()).await?;
                    handled.fetch_add(1, Ordering::Relaxed);
                    attempts.fetch_add(u64::from(done.attempts), Ordering::Relaxed);
                }
                Ok::<_, strata::model::HandleError<Never>>(())
            })
        })
        .collect();
    tokio::time::sleep(timed).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.map_err(bench_error)?.map_err(bench_error)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let commands = handled.load(Ordering::Relaxed);
    let written = store.stats().await?.events - before;
    if written != commands {
        return Err(CliError::Bench(format!(
            "{commands} commands wrote {written} events"
        )));
    }
    let tries = attempts.load(Ordering::Relaxed) as f64 / commands.max(1) as f64;
    Ok((commands as f64 / elapsed, tries))
}
