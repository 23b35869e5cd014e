//! The server's figures in `strata bench`: single-event appends through gRPC and through
//! HTTP with 1 and 64 concurrent clients (each its own keep-alive connection), and the
//! delivery rate of `$all` as a gRPC subscription and as an HTTP NDJSON live stream, each
//! next to the embedded library measured in the same run on the same disk. The server
//! runs in this process on loopback, so client and server share the machine's cores, as
//! they do on a one-box deployment.
//!
//! The secure server (TLS, authentication and stream ACLs) is measured next to the
//! insecure one, in turns within the same run: gRPC appends over TLS by a normal user
//! (so each call is authenticated from the login cache and authorized against the
//! stream's ACL), as a ratio to the insecure gRPC appends.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strata::{EventData, ExpectedRevision, Store, SubscribeFrom, SubscriptionMessage};
use strata_server::grpc::requests;
use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
use strata_server::proto::event_store::client::streams::{read_resp, AppendReq};
use strata_server::{Server, ServerOptions};
use tonic::transport::Channel;

use crate::bench::{
    append_load, bench_error, figure, median_by, percentile, AppendRun, Figure, Report,
};
use crate::error::CliError;

/// Size of each appended event's data, as in the embedded figures.
const EVENT_DATA_BYTES: usize = 100;

/// What one timed append load through the server achieved.
struct Throughput {
    events_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Where the server under measurement listens.
#[derive(Clone, Copy)]
struct Addrs {
    grpc: SocketAddr,
    http: SocketAddr,
}

/// Runs the server measurements in `root`.
pub async fn run(
    root: &Path,
    repeat: usize,
    timed: Duration,
    quick: bool,
    report: &mut Report,
) -> Result<(), CliError> {
    let store = Store::open(root.join("server"))?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let options = ServerOptions {
        grpc: Some(loopback),
        http: Some(loopback),
        ..ServerOptions::default()
    };
    let server = Server::bind(store.clone(), options).await?;
    let addrs = Addrs {
        grpc: server
            .grpc_addr()
            .ok_or_else(|| bench_error("no gRPC address"))?,
        http: server
            .http_addr()
            .ok_or_else(|| bench_error("no HTTP address"))?,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let secure = SecureServer::start(root).await?;
    let mut measured = appends(&store, addrs, &secure, repeat, timed, report).await;
    if measured.is_ok() {
        measured = deliveries(&store, addrs, repeat, quick, report).await;
    }
    // The server is stopped (and the store closed) whether or not a measurement failed.
    let _ = stop.send(());
    // The server closes the store only if it holds the last handle.
    drop(store);
    let served = running.await.map_err(bench_error)?;
    let secure_served = secure.stop().await;
    measured?;
    served?;
    secure_served
}

/// The login the secure server's benchmark clients use: a normal user, not an
/// administrator, so that every append is checked against the stream's ACL.
const BENCH_USER: &str = "bench";
const BENCH_PASSWORD: &str = "bench-password";

/// A second server over TLS, with authentication on, and a client configuration that
/// trusts it.
struct SecureServer {
    grpc: SocketAddr,
    client_tls: Arc<rustls::ClientConfig>,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), strata_server::ServerError>>,
}

impl SecureServer {
    /// Makes a CA and a node certificate in `root`, starts the server over its own
    /// store and creates the benchmark user.
    async fn start(root: &Path) -> Result<SecureServer, CliError> {
        use crate::commands::certs::{create_ca, create_node, CreateCaArgs, CreateNodeArgs};
        let certs = root.join("certs");
        create_ca(&CreateCaArgs {
            out: certs.clone(),
            name: "strata bench CA".into(),
            days: 2,
        })
        .map_err(bench_error)?;
        create_node(&CreateNodeArgs {
            ca_dir: certs.clone(),
            name: "bench".into(),
            ip: vec![[127, 0, 0, 1].into()],
            dns: vec![],
            out: certs.clone(),
            days: 2,
        })
        .map_err(bench_error)?;
        let store = Store::open(root.join("server-secure"))?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let options = ServerOptions {
            grpc: Some(loopback),
            http: None,
            transport: strata_server::Transport::Tls(strata_server::TlsOptions::new(
                certs.join("node.pem"),
                certs.join("node.key"),
            )),
            ..ServerOptions::default()
        };
        let server = Server::bind(store, options).await?;
        server
            .state()
            .auth
            .users()
            .create(strata_server::auth::users::NewUser {
                login: BENCH_USER.into(),
                full_name: "strata bench".into(),
                groups: vec![],
                password: BENCH_PASSWORD.into(),
            })
            .await
            .map_err(bench_error)?;
        let grpc = server
            .grpc_addr()
            .ok_or_else(|| bench_error("no gRPC address"))?;
        let ca = std::fs::read(certs.join("ca.pem")).map_err(bench_error)?;
        let client_tls = client_tls(&ca)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Ok(SecureServer {
            grpc,
            client_tls,
            stop,
            running,
        })
    }

    async fn stop(self) -> Result<(), CliError> {
        let _ = self.stop.send(());
        self.running.await.map_err(bench_error)??;
        Ok(())
    }
}

/// A rustls client configuration trusting the CA in `ca_pem`, offering `h2`.
fn client_tls(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, CliError> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(certificate.map_err(bench_error)?)
            .map_err(bench_error)?;
    }
    #[allow(deprecated)] // ring: the provider the server uses too.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bench_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Sends the benchmark user's Basic credentials with every call, as the KurrentDB
/// clients do.
#[derive(Clone)]
struct BasicAuth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BasicAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type SecureClient =
    StreamsClient<tonic::service::interceptor::InterceptedService<Channel, BasicAuth>>;

/// `clients` gRPC connections over TLS, each logged in as the benchmark user, append one
/// event per call for `timed`.
async fn secure_grpc_appends(
    secure: &SecureServer,
    clients: usize,
    timed: Duration,
) -> Result<Throughput, CliError> {
    use base64::Engine as _;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{BENCH_USER}:{BENCH_PASSWORD}"));
    let header: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Basic {credentials}")
            .parse()
            .map_err(bench_error)?;
    let mut connected = Vec::new();
    for c in 0..clients {
        let addr = secure.grpc;
        let config = Arc::clone(&secure.client_tls);
        let connector = tower::service_fn(move |_uri: tonic::codegen::http::Uri| {
            let config = Arc::clone(&config);
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(
                        rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
                        tcp,
                    )
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(bench_error)?
            .connect_with_connector(connector)
            .await
            .map_err(bench_error)?;
        let client = StreamsClient::with_interceptor(channel, BasicAuth(header.clone()));
        connected.push((client, bench_stream("grpc-secure", c)));
    }
    timed_appends(
        connected,
        timed,
        |(mut client, stream): (SecureClient, String)| async move {
            client
                .append(tokio_stream::iter(append_request(&stream)))
                .await
                .map_err(bench_error)?;
            Ok((client, stream))
        },
    )
    .await
}

/// Single-event appends with 1 and 64 clients through each API and in-process.
async fn appends(
    store: &Store,
    addrs: Addrs,
    secure: &SecureServer,
    repeat: usize,
    timed: Duration,
    report: &mut Report,
) -> Result<(), CliError> {
    for clients in [1usize, 64] {
        let mut grpc_runs = Vec::new();
        let mut http_runs = Vec::new();
        let mut local_runs = Vec::new();
        let mut secure_runs = Vec::new();
        for _ in 0..repeat {
            grpc_runs.push(grpc_appends(addrs.grpc, clients, timed).await?);
            secure_runs.push(secure_grpc_appends(secure, clients, timed).await?);
            http_runs.push(http_appends(addrs.http, clients, timed).await?);
            local_runs.push(append_load(store, clients, 1, EVENT_DATA_BYTES, timed).await?);
        }
        let local = median_by(local_runs, |r| r.events_per_s);
        let grpc = median_by(grpc_runs, |r| r.events_per_s);
        let http = median_by(http_runs, |r| r.events_per_s);
        let secured = median_by(secure_runs, |r| r.events_per_s);
        report.add(append_figure("gRPC Append", clients, &grpc, &local));
        report.add(Figure {
            ratio: Some((
                "insecure gRPC".into(),
                secured.events_per_s / grpc.events_per_s,
            )),
            p50_us: Some(secured.p50_us),
            p99_us: Some(secured.p99_us),
            ..figure(
                format!(
                    "gRPC Append over TLS as a user (authenticated, ACL checked), 1 event of 100 B, {clients} clients"
                ),
                secured.events_per_s,
                "ev/s",
            )
        });
        report.add(append_figure(
            "HTTP POST /streams/{s}",
            clients,
            &http,
            &local,
        ));
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
    Ok(())
}

/// Delivery of `$all` from the start over a prefilled log, through gRPC, HTTP and
/// in-process.
async fn deliveries(
    store: &Store,
    addrs: Addrs,
    repeat: usize,
    quick: bool,
    report: &mut Report,
) -> Result<(), CliError> {
    let events: u64 = if quick { 50_000 } else { 500_000 };
    fill(store, events).await?;
    let total = store.stats().await?.events;
    let mut grpc_rates = Vec::new();
    let mut http_rates = Vec::new();
    let mut local_rates = Vec::new();
    for _ in 0..repeat {
        grpc_rates.push(grpc_subscription_rate(addrs.grpc, total).await?);
        http_rates.push(http_live_rate(addrs.http, total).await?);
        local_rates.push(local_subscription_rate(store, total).await?);
    }
    let local = median_by(local_rates, |r| *r);
    for (name, rates) in [
        ("gRPC $all subscription delivery", grpc_rates),
        ("HTTP $all live stream delivery, NDJSON", http_rates),
    ] {
        let rate = median_by(rates, |r| *r);
        report.add(Figure {
            ratio: Some(("embedded".into(), rate / local)),
            ..figure(format!("{name} ({total} events)"), rate, "ev/s")
        });
    }
    report.add(figure(
        format!("embedded $all subscription delivery ({total} events, same run)"),
        local,
        "ev/s",
    ));
    Ok(())
}

/// The figure of appends through the server, as a ratio to the embedded run.
fn append_figure(api: &str, clients: usize, run: &Throughput, local: &AppendRun) -> Figure {
    Figure {
        ratio: Some(("embedded".into(), run.events_per_s / local.events_per_s)),
        p50_us: Some(run.p50_us),
        p99_us: Some(run.p99_us),
        ..figure(
            format!("{api}, 1 event of 100 B, {clients} clients"),
            run.events_per_s,
            "ev/s",
        )
    }
}

/// Each client calls `append` (one event per call, the client passed by value and given
/// back) until `timed` has passed; counts the calls and their latencies. The clients are
/// connected before the clock starts.
async fn timed_appends<C, F, Fut>(
    clients: Vec<C>,
    timed: Duration,
    append: F,
) -> Result<Throughput, CliError>
where
    C: Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<C, CliError>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let stop = stop.clone();
            let append = append.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    client = append(client).await?;
                    latencies.push(t.elapsed().as_micros() as u32);
                }
                Ok::<_, CliError>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(timed).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(bench_error)??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Throughput {
        events_per_s: latencies.len() as f64 / elapsed,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
    })
}

/// A fresh stream name for one benchmark client.
fn bench_stream(api: &str, client: usize) -> String {
    format!("{api}-bench-{client}-{}", uuid::Uuid::new_v4().simple())
}
fn append_request(stream: &str) -> Vec<AppendReq> {
    let event = EventData::binary("BenchEvent", vec![b'7'; EVENT_DATA_BYTES]);
    requests::append(stream, ExpectedRevision::Any, &[event])
}

/// `clients` gRPC connections append one event per call for `timed`.
async fn grpc_appends(
    addr: SocketAddr,
    clients: usize,
    timed: Duration,
) -> Result<Throughput, CliError> {
    let mut connected = Vec::new();
    for c in 0..clients {
        let client = StreamsClient::connect(format!("http://{addr}"))
            .await
            .map_err(bench_error)?;
        connected.push((client, bench_stream("grpc", c)));
    }
    timed_appends(
        connected,
        timed,
        |(mut client, stream): (StreamsClient<Channel>, String)| async move {
            client
                .append(tokio_stream::iter(append_request(&stream)))
                .await
                .map_err(bench_error)?;
            Ok((client, stream))
        },
    )
    .await
}

/// An HTTP/1.1 client that keeps one connection open (its requests are sequential).
fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// Sends `request` and reads the whole answer, which must be 200.
async fn http_call(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Bytes, CliError> {
    let response = client.request(request).await.map_err(bench_error)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(bench_error)?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(bench_error(format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(body)
}

/// One event as the HTTP API takes it: a fresh id (as the gRPC client sends) and 100 B of
/// JSON data.
fn http_append_body() -> Bytes {
    let data = "7".repeat(EVENT_DATA_BYTES - 2);
    Bytes::from(format!(
        r#"{{"id":"{}","type":"BenchEvent","data":"{data}"}}"#,
        uuid::Uuid::new_v4()
    ))
}

/// `clients` HTTP keep-alive connections append one event per `POST` for `timed`.
async fn http_appends(
    addr: SocketAddr,
    clients: usize,
    timed: Duration,
) -> Result<Throughput, CliError> {
    let mut connected = Vec::new();
    for c in 0..clients {
        let client = http_client();
        // Opens the connection before the clock starts.
        let health = Request::get(format!("http://{addr}/health"))
            .body(Full::default())
            .map_err(bench_error)?;
        http_call(&client, health).await?;
        let uri = format!(
            "http://{addr}/streams/{}?expected_revision=any",
            bench_stream("http", c)
        );
        connected.push((client, uri));
    }
    timed_appends(
        connected,
        timed,
        |(client, uri): (Client<HttpConnector, Full<Bytes>>, String)| async move {
            let request = Request::post(uri.as_str())
                .header("content-type", "application/json")
                .body(Full::new(http_append_body()))
                .map_err(bench_error)?;
            http_call(&client, request).await?;
            Ok((client, uri))
        },
    )
    .await
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
    let request = requests::subscribe_all(SubscribeFrom::Start);
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

/// Reads `$all` from the start as an NDJSON live stream until `total` events have come.
/// Event lines are counted, not decoded: the measurement is of the server.
///
/// The client connection is driven in this task rather than spawned (as hyper's pooled
/// client does): the server sends each event as its own HTTP chunk, and handing every
/// chunk from a connection task to the reading task made the client, not the server, the
/// bottleneck on two cores (about 85 k instead of 600 k events/s in a quick run).
async fn http_live_rate(addr: SocketAddr, total: u64) -> Result<f64, CliError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(bench_error)?;
    tcp.set_nodelay(true).map_err(bench_error)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(bench_error)?;
    let request = Request::get("/streams/%24all/live?from=start")
        .header("host", addr.to_string())
        .header("accept", "application/x-ndjson")
        .body(Full::<Bytes>::default())
        .map_err(bench_error)?;
    let start = Instant::now();
    let reading = async {
        let response = sender.send_request(request).await.map_err(bench_error)?;
        if response.status() != StatusCode::OK {
            return Err(bench_error(format!(
                "the live stream answered {}",
                response.status()
            )));
        }
        count_event_lines(response.into_body(), total).await
    };
    tokio::select! {
        counted = reading => counted?,
        ended = connection => {
            ended.map_err(bench_error)?;
            return Err(bench_error("the live stream's connection closed early"));
        }
    };
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Reads an NDJSON body until `total` event lines have come.
async fn count_event_lines(mut body: Incoming, total: u64) -> Result<(), CliError> {
    const EVENT_LINE: &[u8] = b"{\"event\":";
    const ERROR_LINE: &[u8] = b"{\"error\":";
    let mut buffer: Vec<u8> = Vec::new();
    let mut seen = 0u64;
    while seen < total {
        let frame = match body.frame().await {
            Some(frame) => frame.map_err(bench_error)?,
            None => return Err(bench_error("the live stream ended early")),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        let mut consumed = 0;
        while let Some(end) = buffer[consumed..].iter().position(|b| *b == b'\n') {
            let line = &buffer[consumed..consumed + end];
            if line.starts_with(EVENT_LINE) {
                seen += 1;
            } else if line.starts_with(ERROR_LINE) {
                return Err(bench_error(String::from_utf8_lossy(line)));
            }
            consumed += end + 1;
        }
        buffer.drain(..consumed);
    }
    Ok(())
}
