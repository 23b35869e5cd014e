//! The PostgreSQL backend's figures in `strata bench`, each next to PostgreSQL's own floor
//! on the same cluster (bare single-row `INSERT` transactions from as many connections)
//! and to the embedded engine measured in the same run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::{EventData, ExpectedRevision, Store, SubscribeFrom};
use strata_postgres::{PostgresOptions, PostgresStore};

use crate::bench::{
    append_load, bench_error, figure, median_by, percentile, read_whole_log, Figure, Report,
};
use crate::error::CliError;

/// Runs the PostgreSQL measurements against `url`, or a throw-away cluster.
pub async fn run(
    root: &Path,
    url: Option<&str>,
    repeat: usize,
    timed: Duration,
    quick: bool,
    report: &mut Report,
) -> Result<(), CliError> {
    let cluster;
    let url = match url {
        Some(url) => url.to_owned(),
        None => {
            cluster = strata_postgres::cluster::TestCluster::start().map_err(bench_error)?;
            cluster.url().to_owned()
        }
    };
    println!(
        "postgres: {} (fsync and synchronous_commit as the server has them)",
        describe(&url)?
    );
    let database = format!("strata_bench_{}", std::process::id());
    let admin = connect(&url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .map_err(bench_error)?;
    let url = url.replacen("/postgres", &format!("/{database}"), 1);
    let settings = connect(&url).await?;
    for setting in ["fsync", "synchronous_commit"] {
        let row = settings
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .map_err(bench_error)?;
        println!("postgres {setting} = {}", row.get::<_, String>(0));
    }
    let options = PostgresOptions {
        pool_size: 70,
        ..PostgresOptions::default()
    };
    let postgres = Store::from_backend(Arc::new(PostgresStore::connect(&url, options).await?));
    let embedded = Store::open(root.join("pg-compare"))?;
    for writers in [1usize, 16, 64] {
        let floor = median_by(
            collect(repeat, || insert_floor(&url, writers, timed)).await?,
            |f| *f,
        );
        report.add(figure(
            format!("postgres floor: single-row INSERT transactions, {writers} connections"),
            floor,
            "tx/s",
        ));
        let pg = median_by(
            collect(repeat, || append_load(&postgres, writers, 1, 100, timed)).await?,
            |r| r.events_per_s,
        );
        let local = median_by(
            collect(repeat, || append_load(&embedded, writers, 1, 100, timed)).await?,
            |r| r.events_per_s,
        );
        report.add(Figure {
            ratio: Some(("postgres floor".into(), pg.events_per_s / floor)),
            p50_us: Some(pg.p50_us),
            p99_us: Some(pg.p99_us),
            ..figure(
                format!("postgres appends, 1 event of 100 B, {writers} writers"),
                pg.events_per_s,
                "events/s",
            )
        });
        report.add(Figure {
            ratio: Some(("embedded".into(), pg.events_per_s / local.events_per_s)),
            ..figure(
                format!("  embedded, same load ({writers} writers)"),
                local.events_per_s,
                "events/s",
            )
        });
    }
    let pg = median_by(
        collect(repeat, || append_load(&postgres, 16, 100, 200, timed)).await?,
        |r| r.events_per_s,
    );
    let local = median_by(
        collect(repeat, || append_load(&embedded, 16, 100, 200, timed)).await?,
        |r| r.events_per_s,
    );
    report.add(Figure {
        ratio: Some(("embedded".into(), pg.events_per_s / local.events_per_s)),
        p50_us: Some(pg.p50_us),
        p99_us: Some(pg.p99_us),
        ..figure(
            "postgres appends, 100 events of 200 B, 16 writers",
            pg.events_per_s,
            "events/s",
        )
    });
    report.add(figure(
        "  embedded, same load",
        local.events_per_s,
        "events/s",
    ));

    let events = if quick { 100_000 } else { 500_000 };
    fill(&postgres, events).await?;
    fill(&embedded, events).await?;
    let pg_read = read_rate(&postgres).await?;
    let local_read = read_rate(&embedded).await?;
    report.add(Figure {
        ratio: Some(("embedded".into(), pg_read / local_read)),
        ..figure(
            "postgres global log read, pages of 4096",
            pg_read,
            "events/s",
        )
    });
    report.add(figure("  embedded, same log", local_read, "events/s"));
    let (pg_p50, pg_p99) = lag(&postgres).await?;
    let (local_p50, local_p99) = lag(&embedded).await?;
    report.add(Figure {
        p50_us: Some(pg_p50),
        p99_us: Some(pg_p99),
        ratio: Some(("embedded p50".into(), pg_p50 / local_p50.max(1.0))),
        ..figure(
            "postgres subscription lag (append acknowledged to delivered)",
            pg_p50,
            "us p50",
        )
    });
    report.add(Figure {
        p50_us: Some(local_p50),
        p99_us: Some(local_p99),
        ..figure("  embedded subscription lag", local_p50, "us p50")
    });
    drop(postgres);
    embedded.close().await?;
    Ok(())
}

async fn collect<T, F, Fut>(repeat: usize, mut run: F) -> Result<Vec<T>, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let mut out = Vec::new();
    for _ in 0..repeat {
        out.push(run().await?);
    }
    Ok(out)
}

/// Opens a connection with the URL's own TLS settings (`sslmode`, `sslrootcert`), as the
/// backend does.
async fn connect(url: &str) -> Result<tokio_postgres::Client, CliError> {
    let config = strata_postgres::ConnectionConfig::parse(url).map_err(bench_error)?;
    let (client, connection) = config.connect().await.map_err(bench_error)?;
    tokio::spawn(connection);
    Ok(client)
}

/// Where `url` points, for the report: hosts, database, user and sslmode, never the
/// password.
fn describe(url: &str) -> Result<String, CliError> {
    let config = strata_postgres::ConnectionConfig::parse(url).map_err(bench_error)?;
    let postgres = config.postgres();
    Ok(format!(
        "hosts {:?} ports {:?} database {} user {} sslmode {}",
        postgres.get_hosts(),
        postgres.get_ports(),
        postgres.get_dbname().unwrap_or("(default)"),
        postgres.get_user().unwrap_or("(default)"),
        config.sslmode()
    ))
}

/// PostgreSQL's own floor: each connection commits single-row inserts, one per
/// transaction, as fast as it can.
async fn insert_floor(url: &str, connections: usize, timed: Duration) -> Result<f64, CliError> {
    let admin = connect(url).await?;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, data bytea)",
        )
        .await
        .map_err(bench_error)?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = connect(url).await?;
        let stop = stop.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let statement = client
                .prepare("INSERT INTO bench_floor (data) VALUES ($1)")
                .await?;
            let data = vec![0x61u8; 100];
            while !stop.load(Ordering::Relaxed) {
                client.execute(&statement, &[&data]).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    let start = Instant::now();
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(timed).await;
    let counted = done.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.map_err(bench_error)?.map_err(bench_error)?;
    }
    Ok(counted as f64 / elapsed)
}

async fn fill(store: &Store, events: u64) -> Result<(), CliError> {
    let mut written = 0;
    while written < events {
        let batch: Vec<EventData> = (0..1000)
            .map(|i| {
                EventData::json(
                    "Filled",
                    &serde_json::json!({ "n": written + i, "pad": "x".repeat(60) }),
                )
            })
            .collect::<Result<_, _>>()
            .map_err(bench_error)?;
        store
            .append(
                format!("fill-{}", written / 1000 % 100),
                ExpectedRevision::Any,
                batch,
            )
            .await?;
        written += 1000;
    }
    Ok(())
}

async fn read_rate(store: &Store) -> Result<f64, CliError> {
    let (read, seconds) = read_whole_log(store).await?;
    Ok(read as f64 / seconds)
}

/// Appends 300 single events one after another and measures how long each takes from
/// its acknowledgement to its delivery to a live `$all` subscriber.
async fn lag(store: &Store) -> Result<(f64, f64), CliError> {
    let stream = format!("lag{}", uuid::Uuid::new_v4().simple());
    let filter = strata::Filter::new().stream(&stream);
    let mut subscription = store.subscribe_all(SubscribeFrom::End, filter);
    let (sender, mut acknowledged) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .append(
                        stream.as_str(),
                        ExpectedRevision::Any,
                        vec![EventData::json("Lag", &i).map_err(bench_error)?],
                    )
                    .await
                    .map_err(bench_error)?;
                let _ = sender.send(Instant::now());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, CliError>(())
        })
    };
    let mut lags = Vec::new();
    while lags.len() < 300 {
        let _event = tokio::time::timeout(Duration::from_secs(30), subscription.next_event())
            .await
            .map_err(bench_error)??;
        let delivered = Instant::now();
        let acked = acknowledged
            .recv()
            .await
            .ok_or_else(|| bench_error("writer stopped"))?;
        lags.push(delivered.saturating_duration_since(acked).as_micros() as u32);
    }
    writer.await.map_err(bench_error)??;
    lags.sort_unstable();
    Ok((percentile(&lags, 0.5), percentile(&lags, 0.99)))
}
