//! The server's figures in `strata bench`: single-event appends through gRPC with 1 and
//! 64 concurrent clients (each its own connection) and the delivery rate of a `$all`
//! subscription, each next to the embedded library measured in the same run on the same
//! disk. The server runs in this process on loopback, so client and server share the
//! machine's cores, as they do on a one-box deployment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::{EventData, ExpectedRevision, Store, SubscribeFrom, SubscriptionMessage};
use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
use strata_server::proto::event_store::client::streams::{
    append_req, read_req, read_resp, AppendReq, ReadReq,
};
use strata_server::proto::event_store::client::{
    uuid as wire_uuid, Empty, StreamIdentifier, Uuid as WireUuid,
};
use strata_server::{Server, ServerOptions};

use crate::bench::{append_load, bench_error, figure, median_by, percentile, Figure, Report};
use crate::error::CliError;

/// Runs the server measurements in `root`.
pub async fn run(
    root: &Path,
    repeat: usize,
    timed: Duration,
    quick: bool,
    report: &mut Report,
) -> Result<(), CliError> {
    let store = Store::open(root.join("server"))?;
    let options = ServerOptions {
        grpc: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        http: None,
        ..ServerOptions::default()
    };
    let server = Server::bind(store.clone(), options).await?;
    let addr = server
        .grpc_addr()
        .ok_or_else(|| bench_error("no gRPC address"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    for clients in [1usize, 64] {
        let mut grpc_runs = Vec::new();
        let mut local_runs = Vec::new();
        for _ in 0..repeat {
            grpc_runs.push(grpc_appends(addr, clients, timed).await?);
            local_runs.push(append_load(&store, clients, 1, 100, timed).await?);
        }
        let grpc = median_by(grpc_runs, |r| r.0);
        let local = median_by(local_runs, |r| r.events_per_s);
        report.add(Figure {
            ratio: Some(("embedded".into(), grpc.0 / local.events_per_s)),
            p50_us: Some(grpc.1),
            p99_us: Some(grpc.2),
            ..figure(
                format!("gRPC Append, 1 event of 100 B, {clients} clients"),
                grpc.0,
                "ev/s",
            )
        });
        report.add(Figure {
            p50_us: Some(local.p50_us),
            p99_us: Some(local.p99_us),
            ..figure(
                format!("embedded appends, 1 event of 100 B, {clients} writers (same run)"),
                local.events_per_s,
                "ev/s",
            )
        });
    }

    // Subscription delivery: catch up over a prefilled log, through gRPC and in-process.
    let events: u64 = if quick { 50_000 } else { 500_000 };
    fill(&store, events).await?;
    let total = store.stats().await?.events;
    let mut grpc_rates = Vec::new();
    let mut local_rates = Vec::new();
    for _ in 0..repeat {
        grpc_rates.push(grpc_subscription_rate(addr, total).await?);
        local_rates.push(local_subscription_rate(&store, total).await?);
    }
    let grpc = median_by(grpc_rates, |r| *r);
    let local = median_by(local_rates, |r| *r);
    report.add(Figure {
        ratio: Some(("embedded".into(), grpc / local)),
        ..figure(
            format!("gRPC $all subscription delivery ({total} events)"),
            grpc,
            "ev/s",
        )
    });
    report.add(figure(
        format!("embedded $all subscription delivery ({total} events, same run)"),
        local,
        "ev/s",
    ));

    let _ = stop.send(());
    running.await.map_err(bench_error)??;
    Ok(())
}

fn append_request(stream: &str) -> Vec<AppendReq> {
    let options = AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: Some(StreamIdentifier {
                stream_name: stream.as_bytes().to_vec(),
            }),
            expected_stream_revision: Some(append_req::options::ExpectedStreamRevision::Any(
                Empty {},
            )),
        })),
    };
    let event = AppendReq {
        content: Some(append_req::Content::ProposedMessage(
            append_req::ProposedMessage {
                id: Some(WireUuid {
                    value: Some(wire_uuid::Value::String(uuid::Uuid::new_v4().to_string())),
                }),
                metadata: HashMap::from([
                    ("type".to_owned(), "BenchEvent".to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]),
                custom_metadata: Vec::new(),
                data: vec![b'7'; 100],
            },
        )),
    };
    vec![options, event]
}

/// `clients` connections append one event per call for `timed`: (events/s, p50 µs, p99 µs).
async fn grpc_appends(
    addr: SocketAddr,
    clients: usize,
    timed: Duration,
) -> Result<(f64, f64, f64), CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = StreamsClient::connect(format!("http://{addr}"))
            .await
            .map_err(bench_error)?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("grpc-bench-{c}-{}", uuid::Uuid::new_v4().simple());
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                client
                    .append(tokio_stream::iter(append_request(&stream)))
                    .await?;
                latencies.push(t.elapsed().as_micros() as u32);
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    tokio::time::sleep(timed).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(bench_error)?.map_err(bench_error)?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok((
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    ))
}

async fn fill(store: &Store, events: u64) -> Result<(), CliError> {
    let mut written = 0;
    while written < events {
        let batch: Vec<EventData> = (0..1000)
            .map(|i| EventData::json("Filled", &serde_json::json!({ "i": written + i })))
            .collect::<Result<_, _>>()
            .map_err(bench_error)?;
        store
            .append(
                format!("fill-{}", written / 10_000),
                ExpectedRevision::Any,
                batch,
            )
            .await?;
        written += 1000;
    }
    Ok(())
}

async fn grpc_subscription_rate(addr: SocketAddr, total: u64) -> Result<f64, CliError> {
    let mut client = StreamsClient::connect(format!("http://{addr}"))
        .await
        .map_err(bench_error)?;
    let request = ReadReq {
        options: Some(read_req::Options {
            stream_option: Some(read_req::options::StreamOption::All(
                read_req::options::AllOptions {
                    all_option: Some(read_req::options::all_options::AllOption::Start(Empty {})),
                },
            )),
            read_direction: read_req::options::ReadDirection::Forwards as i32,
            resolve_links: false,
            count_option: Some(read_req::options::CountOption::Subscription(
                read_req::options::SubscriptionOptions {},
            )),
            filter_option: Some(read_req::options::FilterOption::NoFilter(Empty {})),
            uuid_option: None,
            control_option: None,
        }),
    };
    let start = Instant::now();
    let mut stream = client
        .read(request)
        .await
        .map_err(bench_error)?
        .into_inner();
    let mut seen = 0u64;
    while seen < total {
        match stream.message().await.map_err(bench_error)? {
            Some(message) => {
                if let Some(read_resp::Content::Event(_)) = message.content {
                    seen += 1;
                }
            }
            None => return Err(bench_error("the subscription ended early")),
        }
    }
    Ok(seen as f64 / start.elapsed().as_secs_f64())
}

async fn local_subscription_rate(store: &Store, total: u64) -> Result<f64, CliError> {
    let start = Instant::now();
    let mut subscription = store.subscribe_all(SubscribeFrom::Start, strata::Filter::new());
    let mut seen = 0u64;
    while seen < total {
        if let SubscriptionMessage::Event(_) = subscription.next().await? {
            seen += 1;
        }
    }
    Ok(seen as f64 / start.elapsed().as_secs_f64())
}
