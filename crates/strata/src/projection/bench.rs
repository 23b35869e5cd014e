//! The projection benchmark: rebuild rates, serial and parallel, into the in-memory
//! and the durable sink. `strata bench` prints its figures; so does
//! `cargo run --release -p strata --example projection_bench`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::definition::{partition_of_stream, Projection};
use super::error::{ProjectionError, RunError, SinkError};
use super::rebuild::{rebuild, RebuildOptions};
use super::sink::{DocumentTx, DurableSink, MemorySink, ReadModel, Sink};
use crate::error::{AppendError, OpenError, StorageError};
use crate::event::{ContentType, EventData, RecordedEvent};
use crate::{Durability, ExpectedRevision, Options, Store};

/// Streams the benchmark's events are spread over (one document each).
const STREAMS: u64 = 1000;
/// Events per append while building the store.
const APPEND_EVENTS: u64 = 1000;

/// One measured figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchFigure {
    /// What was measured.
    pub name: String,
    /// The measurement (the median of the runs).
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// What it is compared with, and the ratio to it.
    pub ratio: Option<(String, f64)>,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The scratch store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Building the scratch store failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A rebuild failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Closing the scratch store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A task of the benchmark panicked.
    #[error("a benchmark task failed: {0}")]
    Task(String),
    /// Two rebuilds disagreed (a bug).
    #[error("rebuilds disagree: {0}")]
    Mismatch(String),
}

/// What the benchmark does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionBenchOptions {
    /// Events in the scratch store (10 M for the full run, 1 M for a quick one).
    pub events: u64,
    /// Runs of each measurement; the median is reported.
    pub repeat: usize,
    /// Threads of the parallel rebuild.
    pub parallelism: usize,
}

impl ProjectionBenchOptions {
    /// `events` events, one run each, 2 threads for the parallel rebuild.
    pub fn new(events: u64) -> ProjectionBenchOptions {
        ProjectionBenchOptions {
            events,
            repeat: 1,
            parallelism: 2,
        }
    }

    /// Sets [`ProjectionBenchOptions::repeat`].
    pub fn repeat(mut self, runs: usize) -> ProjectionBenchOptions {
        self.repeat = runs.max(1);
        self
    }

    /// Sets [`ProjectionBenchOptions::parallelism`].
    pub fn parallelism(mut self, threads: usize) -> ProjectionBenchOptions {
        self.parallelism = threads.max(2);
        self
    }
}

/// The benchmark's projection: a count and a sum per stream, decoded from each event's
/// JSON, partitioned by stream. Typical of a read model keyed by entity.
struct StreamTotals;

#[derive(Default, Serialize, Deserialize)]
struct Totals {
    count: u64,
    sum: u64,
}

#[derive(Deserialize)]
struct Measured {
    n: u64,
}

impl Projection for StreamTotals {
    fn name(&self) -> &str {
        "bench-stream-totals"
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        let measured: Measured = event.json()?;
        tx.update(&event.stream, |totals: &mut Totals| {
            totals.count += 1;
            totals.sum += measured.n;
        })
    }

    fn partition_key(&self, event: &RecordedEvent) -> Option<u64> {
        Some(partition_of_stream(event))
    }
}

/// A heavier projection: the whole payload decoded, two documents updated per event.
struct StreamStats;

#[derive(Default, Serialize, Deserialize)]
struct Stats {
    count: u64,
    sum: u64,
    min: Option<u64>,
    max: u64,
    padding_bytes: u64,
}

#[derive(Deserialize)]
struct MeasuredFully {
    n: u64,
    p: String,
}

impl Projection for StreamStats {
    fn name(&self) -> &str {
        "bench-stream-stats"
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        let measured: MeasuredFully = event.json()?;
        tx.update(&event.stream, |stats: &mut Stats| {
            stats.count += 1;
            stats.sum += measured.n;
            stats.min = Some(stats.min.map_or(measured.n, |min| min.min(measured.n)));
            stats.max = stats.max.max(measured.n);
            stats.padding_bytes += measured.p.len() as u64;
        })?;
        let slot = format!("{}/{}", event.stream, measured.n % 8);
        tx.update(&slot, |count: &mut u64| *count += 1)
    }

    fn partition_key(&self, event: &RecordedEvent) -> Option<u64> {
        Some(partition_of_stream(event))
    }
}

fn payload(i: u64) -> EventData {
    let data = format!("{{\"n\":{i:>10},\"p\":\"{}\"}}", "x".repeat(76));
    EventData::new("Measured", data.into_bytes(), ContentType::Json)
}

/// Fills a store with `events` events of ~100 B in [`STREAMS`] streams (not timed).
async fn build(dir: &Path, events: u64) -> Result<Store, BenchError> {
    let options = Options {
        durability: Durability::NoSync,
        ..Options::default()
    };
    let store = Store::open_with(dir, options)?;
    let mut written = 0;
    let mut pending = Vec::new();
    while written < events {
        let n = APPEND_EVENTS.min(events - written);
        let batch = (0..n).map(|k| payload(written + k)).collect();
        let stream = format!("bench-{}", (written / APPEND_EVENTS) % STREAMS);
        let store = store.clone();
        pending.push(tokio::spawn(async move {
            store.append(stream, ExpectedRevision::Any, batch).await
        }));
        if pending.len() >= 8 {
            for task in pending.drain(..) {
                task.await.map_err(|e| BenchError::Task(e.to_string()))??;
            }
        }
        written += n;
    }
    for task in pending {
        task.await.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    Ok(store)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Rebuilds `repeat` times into `sink`; returns the median rate in events/s.
async fn rate<P, S>(
    store: &Store,
    projection: &Arc<P>,
    sink: S,
    options: RebuildOptions,
    repeat: usize,
) -> Result<f64, BenchError>
where
    S: Sink<Tx = DocumentTx> + Clone,
    P: Projection,
{
    let mut rates = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let start = Instant::now();
        let report = rebuild(
            store,
            projection.clone(),
            sink.clone(),
            options.clone(),
            |_| {},
        )
        .await?;
        let seconds = start.elapsed().as_secs_f64();
        rates.push(report.counts.handled as f64 / seconds);
    }
    Ok(median(rates))
}

/// Builds a scratch store of `options.events` events in `dir` (removed by the caller),
/// then measures rebuild rates: serial and parallel into [`MemorySink`] and
/// [`DurableSink`] for a light projection (a count and a sum per stream), and serial and
/// parallel into memory for a heavier one (the whole payload decoded, two documents
/// updated per event). `print` sees each figure as it is measured.
pub async fn projection_benchmarks(
    dir: &Path,
    options: ProjectionBenchOptions,
    mut print: impl FnMut(&BenchFigure),
) -> Result<Vec<BenchFigure>, BenchError> {
    let store = build(&dir.join("log"), options.events).await?;
    let repeat = options.repeat.max(1);
    let threads = options.parallelism;
    let mut figures = Vec::new();
    let mut add = |figure: BenchFigure| {
        print(&figure);
        figures.push(figure);
    };
    let events = options.events;
    let serial_options = RebuildOptions::serial();
    let parallel_options = RebuildOptions::default().parallelism(threads);
    let light = Arc::new(StreamTotals);

    let memory = MemorySink::new();
    let serial = rate(
        &store,
        &light,
        memory.clone(),
        serial_options.clone(),
        repeat,
    )
    .await?;
    add(figure(
        format!("rebuild into memory, light projection, serial ({events} events)"),
        serial,
        None,
    ));
    let expected = memory.snapshot(light.name())?;
    let parallel_memory = MemorySink::new();
    let parallel = rate(
        &store,
        &light,
        parallel_memory.clone(),
        parallel_options.clone(),
        repeat,
    )
    .await?;
    add(figure(
        format!("rebuild into memory, light projection, {threads} threads"),
        parallel,
        Some(("serial", parallel / serial)),
    ));
    let durable = DurableSink::open(dir.join("read-models"))?;
    let durable_serial = rate(
        &store,
        &light,
        durable.clone(),
        serial_options.clone(),
        repeat,
    )
    .await?;
    add(figure(
        "rebuild into the durable sink (redb), light projection, serial".into(),
        durable_serial,
        Some(("in-memory serial", durable_serial / serial)),
    ));
    let durable_parallel = rate(
        &store,
        &light,
        durable.clone(),
        parallel_options.clone(),
        repeat,
    )
    .await?;
    add(figure(
        format!("rebuild into the durable sink (redb), light projection, {threads} threads"),
        durable_parallel,
        Some(("in-memory serial", durable_parallel / serial)),
    ));
    for (what, sink) in [
        ("parallel in-memory", &parallel_memory as &dyn ReadModel),
        ("durable", &durable as &dyn ReadModel),
    ] {
        if sink.snapshot(light.name())? != expected {
            return Err(BenchError::Mismatch(format!(
                "the {what} rebuild differs from the serial one"
            )));
        }
    }

    let heavy = Arc::new(StreamStats);
    let heavy_serial = rate(&store, &heavy, MemorySink::new(), serial_options, repeat).await?;
    add(figure(
        "rebuild into memory, heavier projection, serial".into(),
        heavy_serial,
        None,
    ));
    let heavy_parallel = rate(&store, &heavy, MemorySink::new(), parallel_options, repeat).await?;
    add(figure(
        format!("rebuild into memory, heavier projection, {threads} threads"),
        heavy_parallel,
        Some(("serial", heavy_parallel / heavy_serial)),
    ));
    store.close().await?;
    Ok(figures)
}

fn figure(name: String, value: f64, ratio: Option<(&str, f64)>) -> BenchFigure {
    BenchFigure {
        name,
        value,
        unit: "events/s",
        ratio: ratio.map(|(what, ratio)| (what.to_owned(), ratio)),
    }
}
