//! Hostile clients on real sockets: connections that send nothing, trickle their
//! headers or bodies, stop reading, or come in too great numbers. After each, the
//! server must still answer `/health` and take appends. Every wait is bounded by
//! `HANG_GUARD`, so a server that keeps a connection for ever fails the test instead of
//! hanging it.
#![allow(clippy::unwrap_used)] // a test panics on a failed expectation

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strata::engine::io::{DirStorage, Fault, FaultyStorage};
use strata_server::{Server, ServerError, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any test waits for something that must happen (a guard against hangs, not
/// a performance assertion).
const HANG_GUARD: Duration = Duration::from_secs(20);

struct TestServer {
    http: SocketAddr,
    grpc: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: tempfile::TempDir,
}

/// Short timeouts, so the tests see them fire.
fn quick(options: &mut ServerOptions) {
    options.first_byte_timeout = Duration::from_millis(300);
    options.write_stall_timeout = Duration::from_millis(500);
    options.http_header_read_timeout = Duration::from_millis(500);
    options.http_body_read_timeout = Duration::from_millis(500);
    options.grpc_keepalive_interval = Duration::from_millis(300);
    options.grpc_keepalive_timeout = Duration::from_millis(300);
}

async fn start_on(
    store: strata::Store,
    dir: tempfile::TempDir,
    configure: impl FnOnce(&mut ServerOptions),
) -> TestServer {
    let mut options = ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerOptions::default()
    };
    quick(&mut options);
    configure(&mut options);
    let server = Server::bind(store, options).await.unwrap();
    let http = server.http_addr().unwrap();
    let grpc = server.grpc_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    TestServer {
        http,
        grpc,
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
    }
}

async fn start_with(configure: impl FnOnce(&mut ServerOptions)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
    start_on(store, dir, configure).await
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `request` (raw bytes, `Connection: close` expected in it) and reads the whole
/// answer until the server closes.
async fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    read_answer(&mut socket).await
}

async fn read_answer(socket: &mut TcpStream) -> Answer {
    let mut bytes = Vec::new();
    tokio::time::timeout(HANG_GUARD, socket.read_to_end(&mut bytes))
        .await
        .expect("the server answers and closes in time")
        .unwrap();
    parse_answer(&bytes)
}

fn parse_answer(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes);
    let (head, _) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = bytes[head.len() + 4..].to_vec();
    Answer {
        status,
        head: head.to_owned(),
        body,
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(addr, text.as_bytes()).await
}

/// Waits until the server closes `socket` (EOF or reset); fails after `HANG_GUARD`.
/// Returns what the server sent before closing.
async fn closed_by_server(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let outcome = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the server kept the connection open");
    received
}

impl TestServer {
    /// The server still works: `/health` answers and an append succeeds.
    async fn assert_healthy(&self) {
        let health = request(self.http, "GET", "/health", "").await;
        assert_eq!(
            health.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&health.body)
        );
        let append = request(
            self.http,
            "POST",
            "/streams/health-check",
            &json!({"type": "Checked", "data": {}}).to_string(),
        )
        .await;
        assert_eq!(
            append.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&append.body)
        );
    }

    async fn stop(mut self) -> Result<(), ServerError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(HANG_GUARD, self.task.take().unwrap())
            .await
            .expect("the server stops in time")
            .unwrap()
    }
}

#[tokio::test]
async fn accepted_sockets_have_nodelay() {
    use strata_server::net::{Acceptor, ConnectionLimits};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_kill, kill_all) = tokio::sync::watch::channel(false);
    let mut acceptor = Acceptor::new(
        listener,
        ConnectionLimits::new(8, 8),
        strata_server::net::watch::WatchPolicy {
            first_byte_timeout: HANG_GUARD,
            write_stall_timeout: HANG_GUARD,
        },
        strata_server::net::accept::RefusalAnswer::Close,
        kill_all,
    );
    let _client = TcpStream::connect(addr).await.unwrap();
    let accepted = tokio::time::timeout(HANG_GUARD, acceptor.accept())
        .await
        .unwrap();
    // Without it, a small answer waits for the client's delayed ACK (~40 ms a read).
    assert!(
        accepted.nodelay().unwrap(),
        "TCP_NODELAY is set on accepted sockets"
    );
}

#[tokio::test]
async fn silent_connections_are_closed_on_both_apis() {
    let server = start_with(|_| {}).await;
    for addr in [server.http, server.grpc] {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        closed_by_server(&mut socket).await;
    }
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
    })
    .await;
    let mut socket = TcpStream::connect(server.http).await.unwrap();
    let head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte every 50 ms: the head would take ~17 s to arrive; the header-read
    // timeout (500 ms) must end the connection long before.
    let mut sent = 0;
    let mut closed = false;
    for byte in head.iter() {
        if socket.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(1), socket.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            // A 408 answer before closing is fine too.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    assert!(closed, "the trickled head was never cut off");
    assert!(sent < head.len(), "cut off before the head was complete");
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
    })
    .await;
    let mut socket = TcpStream::connect(server.http).await.unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The answer comes, then the connection stays idle until the timeout closes it.
    let received = closed_by_server(&mut socket).await;
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"),
        "{received:?}"
    );
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_trickled_body_gets_408() {
    let server = start_with(|_| {}).await;
    let mut socket = TcpStream::connect(server.http).await.unwrap();
    socket
        .write_all(
            b"POST /streams/s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":",
        )
        .await
        .unwrap();
    let answer = read_answer(&mut socket).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "body_read_timeout");
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_per_address_limit_get_503_and_the_place_comes_back() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
        options.http_header_read_timeout = HANG_GUARD;
        options.max_connections_per_address = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.http).await.unwrap());
    }
    // Let the server accept them (they are counted when accepted).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = request(server.http, "GET", "/health", "").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "too_many_connections");
    assert!(refused.header("retry-after").is_some());
    drop(held.pop());
    // The freed place is taken back once the server sees the close.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let answer = request(server.http, "GET", "/health", "").await;
        if answer.status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    let metrics = request(server.http, "GET", "/metrics", "").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let refused = text
        .lines()
        .find(|line| line.starts_with("strata_connections_refused "))
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no refused-connections metric: {text}"));
    assert_ne!(refused, "0", "the refusal is counted");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_total_connection_limit_holds() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
        options.max_connections = 2;
    })
    .await;
    // The limit counts both APIs together.
    let _grpc = TcpStream::connect(server.grpc).await.unwrap();
    let _http = TcpStream::connect(server.http).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = request(server.http, "GET", "/health", "").await;
    assert_eq!(refused.status, 503);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("2 connections"), "{message}");
    drop((_grpc, _http));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_a_live_stream_is_disconnected() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
    })
    .await;
    // 8 MiB of history: more than the socket buffers on both sides can hold.
    let data = "x".repeat(64 * 1024);
    for chunk in 0..8 {
        let events: Vec<Value> = (0..16)
            .map(|i| json!({"type": "Big", "data": {"i": chunk * 16 + i, "pad": data}}))
            .collect();
        let answer = request(
            server.http,
            "POST",
            "/streams/big",
            &Value::Array(events).to_string(),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    let mut socket = TcpStream::connect(server.http).await.unwrap();
    socket
        .write_all(b"GET /streams/big/live?from=start HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Never read: the server's writes stall, and it must let go of the connection
    // (and of the live stream's subscription) instead of waiting for ever.
    let open_live_streams = || async {
        let metrics = request(server.http, "GET", "/metrics", "").await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        text.lines()
            .find(|line| {
                line.starts_with("strata_subscriptions_open{")
                    && line.to_ascii_lowercase().contains("api=\"http\"")
            })
            .and_then(|line| line.split_whitespace().last())
            .map_or(0, |count| count.parse::<u64>().unwrap())
    };
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let mut seen_open = false;
    loop {
        let open = open_live_streams().await;
        seen_open |= open == 1;
        if seen_open && open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled live stream was kept (open: {open}, seen open: {seen_open})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server closed our socket: reading now drains what was buffered, then ends.
    closed_by_server(&mut socket).await;
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_grpc_client_that_does_not_answer_pings_is_disconnected() {
    let server = start_with(|_| {}).await;
    let mut socket = TcpStream::connect(server.grpc).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then silence: no SETTINGS ack,
    // no PING ack.
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    socket
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    closed_by_server(&mut socket).await;
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn storage_failures_reach_clients_with_an_error_id_and_no_internal_details() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStorage::new(Arc::new(DirStorage::new(dir.path()).unwrap()));
    let engine =
        strata::Engine::open_storage(Arc::new(faulty.clone()), strata::Options::default()).unwrap();
    let store = strata::Store::from_engine(engine);
    let server = start_on(store, dir, |_| {}).await;
    faulty.inject(Fault::SyncError { after_syncs: 0 });
    let answer = request(
        server.http,
        "POST",
        "/streams/s",
        &json!({"type": "T", "data": {}}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 500, "{answer:?}");
    let error = &answer.json()["error"];
    let message = error["message"].as_str().unwrap();
    let error_id = error["error_id"].as_str().unwrap();
    assert!(message.contains(error_id), "{message}");
    let path = server._dir.path().display().to_string();
    for secret in [path.as_str(), ".seg", "offset", "Input/output"] {
        assert!(!message.contains(secret), "{secret:?} leaked: {message}");
    }
    assert!(answer.header("x-request-id").is_some());
    server.stop().await.ok();
}

#[tokio::test]
async fn request_ids_are_echoed() {
    let server = start_with(|_| {}).await;
    let answer = raw(
        server.http,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Request-Id: abc-123\r\n\r\n",
    )
    .await;
    assert_eq!(answer.header("x-request-id"), Some("abc-123"));
    let fresh = request(server.http, "GET", "/health", "").await;
    assert_eq!(fresh.header("x-request-id").unwrap().len(), 36, "a UUID");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_reports_a_store_still_held_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
    let kept = store.clone();
    let server = start_on(store, dir, |_| {}).await;
    match server.stop().await {
        Err(ServerError::StoreStillInUse { other_handles }) => assert!(other_handles >= 1),
        other => panic!("shutdown claimed {other:?} with the store still held"),
    }
    drop(kept);
}

#[tokio::test]
async fn shutdown_closes_connections_that_overrun_the_grace_period() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
        options.http_body_read_timeout = HANG_GUARD;
        options.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    // A request whose body never finishes holds its connection through shutdown.
    let mut socket = TcpStream::connect(server.http).await.unwrap();
    socket
        .write_all(
            b"POST /streams/s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The store is closed for real: nothing else holds it once the connection is gone.
    server.stop().await.unwrap();
    closed_by_server(&mut socket).await;
}

/// Values no parameter should choke on.
const HOSTILE_VALUES: &[&str] = &[
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "1e400",
    "NaN",
    "0x10",
    "+5",
    "",
    "%00",
    "%FF%FE",
    "a%00b",
    "%E2%80%AE",
];

/// Sends a request and returns the status, reading only the head of streaming answers.
async fn probe(addr: SocketAddr, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let text = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(text.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let read = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            // A live stream never ends: its head and first bytes are enough.
            let text = String::from_utf8_lossy(&received);
            if text.contains("\r\n\r\n") && text.contains("200 OK") && target.contains("/live") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{method} {target}: no answer");
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no status line in {text:?}"));
    (status, text)
}

/// A 4xx must carry the JSON error body; nothing may be a 5xx but the documented 504
/// of a `min_position` the log never reached.
fn assert_client_error_or_ok(what: &str, status: u16, text: &str) {
    let not_reached = status == 504 && text.contains("position_not_reached");
    assert!(status < 500 || not_reached, "{what}: {status}: {text}");
    if status >= 400 {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let value: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {text}"));
        assert!(value["error"]["code"].is_string(), "{what}: {text}");
    }
}

#[tokio::test]
async fn hostile_query_parameters_get_clear_client_errors() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
        options.write_stall_timeout = HANG_GUARD;
        options.max_wait_for_position = Duration::from_millis(50);
    })
    .await;
    request(
        server.http,
        "POST",
        "/streams/s-1",
        &json!({"type": "T", "data": {}}).to_string(),
    )
    .await;
    let endpoints: &[(&str, &str, &[&str])] = &[
        (
            "GET",
            "/streams/s-1",
            &["from", "limit", "direction", "min_position"],
        ),
        (
            "GET",
            "/streams/%24all",
            &[
                "from",
                "limit",
                "direction",
                "min_position",
                "stream",
                "stream_prefix",
                "category",
                "event_type",
                "event_type_prefix",
                "exclude_system",
            ],
        ),
        (
            "GET",
            "/streams",
            &["prefix", "after", "limit", "include_system", "min_position"],
        ),
        ("GET", "/streams/s-1/metadata", &["min_position"]),
        ("GET", "/streams/s-1/live", &["from", "format"]),
        (
            "GET",
            "/streams/%24all/live",
            &["from", "format", "stream_prefix", "event_type"],
        ),
        ("POST", "/streams/s-2", &["expected_revision"]),
        ("PUT", "/streams/s-3/metadata", &["expected_revision"]),
        (
            "DELETE",
            "/streams/s-4",
            &["expected_revision", "tombstone"],
        ),
    ];
    for (method, path, params) in endpoints {
        let body = match *method {
            "POST" => json!({"type": "T", "data": {}}).to_string(),
            "PUT" => json!({"$maxCount": 5}).to_string(),
            _ => String::new(),
        };
        for param in params.iter().chain(&["no_such_parameter"]) {
            for value in HOSTILE_VALUES {
                let target = format!("{path}?{param}={value}");
                let (status, text) = probe(server.http, method, &target, &body).await;
                assert_client_error_or_ok(&format!("{method} {target}"), status, &text);
            }
        }
    }
    // Live streams from positions that cannot exist, by header too.
    for id in ["18446744073709551615", "-1", "x"] {
        let mut socket = TcpStream::connect(server.http).await.unwrap();
        let text = format!(
            "GET /streams/%24all/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Last-Event-ID: {id}\r\n\r\n"
        );
        socket.write_all(text.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 4096];
        let n = tokio::time::timeout(HANG_GUARD, socket.read(&mut head))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(status < 500, "Last-Event-ID {id}: {head}");
    }
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_stream_names_and_bodies_get_clear_client_errors() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
        options.max_request_body = 1024 * 1024;
    })
    .await;
    let long = "n".repeat(4096);
    let names = [
        "%00",
        "a%00b",
        long.as_str(),
        "%24system",
        "%24%24meta",
        "%24all",
        "%2F",
        "..",
        "%FF",
        "%E2%80%AE",
    ];
    let event = json!({"type": "T", "data": {}}).to_string();
    for name in names {
        for (method, suffix, body) in [
            ("POST", "", event.as_str()),
            ("GET", "", ""),
            ("GET", "/metadata", ""),
            ("PUT", "/metadata", "{}"),
            ("DELETE", "", ""),
        ] {
            let target = format!("/streams/{name}{suffix}");
            let (status, text) = probe(server.http, method, &target, body).await;
            assert_client_error_or_ok(&format!("{method} {target}"), status, &text);
        }
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let many_events = format!("[{}]", vec![r#"{"type":"T","data":0}"#; 30_000].join(","));
    let bodies: Vec<(&str, String)> = vec![
        ("malformed", "{\"type\":".to_owned()),
        ("not an object", "42".to_owned()),
        ("deeply nested", deep),
        ("too many events", many_events),
        (
            "bad id",
            r#"{"id":"not-a-uuid","type":"T","data":{}}"#.to_owned(),
        ),
        ("empty type", r#"{"type":"","data":{}}"#.to_owned()),
        (
            "bad base64",
            r#"{"type":"T","data_base64":"@@@"}"#.to_owned(),
        ),
        (
            "over the body limit",
            format!("\"{}\"", "x".repeat(2 * 1024 * 1024)),
        ),
        ("invalid UTF-8", "{\"type\":\"\u{FFFD}\"}".to_owned()),
    ];
    for (what, body) in &bodies {
        let (status, text) = probe(server.http, "POST", "/streams/bodies", body).await;
        assert!(status >= 400, "{what}: accepted: {text}");
        assert_client_error_or_ok(what, status, &text);
        let (status, text) = probe(server.http, "POST", "/streams", body).await;
        assert_client_error_or_ok(what, status, &text);
        let (status, text) = probe(server.http, "PUT", "/streams/bodies/metadata", body).await;
        assert_client_error_or_ok(what, status, &text);
    }
    // Valid JSON that no float can hold: stored as written (the data is kept as raw
    // JSON text), never a crash.
    let (status, text) = probe(
        server.http,
        "POST",
        "/streams/bodies",
        r#"{"type":"T","data":1e999999}"#,
    )
    .await;
    assert_client_error_or_ok("huge number", status, &text);
    // Wrong content types: answered, never a crash.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "\u{0}",
    ] {
        let text = format!(
            "POST /streams/ct HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{event}",
            event.len()
        );
        let mut socket = TcpStream::connect(server.http).await.unwrap();
        socket.write_all(text.as_bytes()).await.unwrap();
        let answer = read_answer(&mut socket).await;
        assert!(answer.status < 500, "{content_type:?}: {answer:?}");
    }
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn many_live_streams_are_bounded_and_released() {
    let server = start_with(|options| {
        options.first_byte_timeout = HANG_GUARD;
        options.max_subscriptions_per_connection = 8;
    })
    .await;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let mut socket = TcpStream::connect(server.http).await.unwrap();
        socket
            .write_all(b"GET /streams/%24all/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut head = vec![0u8; 4096];
        let n = tokio::time::timeout(HANG_GUARD, socket.read(&mut head))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        if head.starts_with("HTTP/1.1 429") {
            refused += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            open.push(socket);
        }
    }
    assert_eq!((open.len(), refused), (8, 12));
    drop(open);
    // Closed live streams give their places back.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let (status, _) = probe(server.http, "GET", "/streams/%24all/live", "").await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "places never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.assert_healthy().await;
    server.stop().await.unwrap();
}

/// Polls `condition` every 10 ms until it holds, failing the test after `HANG_GUARD`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A gRPC read of `$all` from the start for events of a stream that does not exist: a
/// scan of the whole log that finds nothing.
fn grpc_scan_for_nothing() -> strata_server::proto::event_store::client::streams::ReadReq {
    use strata_server::proto::event_store::client::streams::read_req::options::{
        filter_options, CountOption, FilterOption, FilterOptions,
    };
    let mut request = strata_server::grpc::requests::subscribe_all(strata::SubscribeFrom::Start);
    let options = request.options.as_mut().unwrap();
    options.count_option = Some(CountOption::Count(10));
    options.filter_option = Some(FilterOption::Filter(FilterOptions {
        filter: Some(filter_options::Filter::StreamIdentifier(
            filter_options::Expression {
                regex: "^no-such-stream$".into(),
                prefix: Vec::new(),
            },
        )),
        window: Some(filter_options::Window::Max(32)),
        checkpoint_interval_multiplier: 1,
    }));
    request
}

/// Waits until the scan started by a client is under way, lets the client go, and
/// checks that the scan stops: its slot is freed and the storage sees no more reads.
async fn assert_scan_stops_when_its_client_leaves(
    store: &strata::Store,
    storage: &FaultyStorage,
    client_leaves: impl FnOnce(),
) {
    let engine = store.embedded().unwrap();
    eventually("the scan is under way", || {
        engine.scans_running() == 1 && storage.seen() >= 2
    })
    .await;
    let at_leave = storage.seen();
    client_leaves();
    eventually("the scan frees its slot", || engine.scans_running() == 0).await;
    let stopped_at = storage.seen();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(storage.seen(), stopped_at, "the scan goes on reading");
    // A whole scan reads every one of the store's dozens of segments, at least.
    assert!(
        stopped_at - at_leave < 10,
        "the scan went on for {} reads after its client left",
        stopped_at - at_leave
    );
}

/// Issue 11: a filtered read of `$all` ran on a blocking thread that a departed client
/// could not stop. Over slow storage (a whole scan takes seconds), a client that leaves
/// mid-scan, on either API, stops the scan and frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_scans_stop_on_both_apis() {
    use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
    let storage = FaultyStorage::new(Arc::new(strata::engine::io::MemoryStorage::new()));
    // No background scrubber: the test counts the storage's reads.
    let options = strata::Options {
        scrub_bytes_per_second: 0,
        ..strata::Options::small_for_tests()
    };
    let engine = strata::Engine::open_storage(Arc::new(storage.clone()), options).unwrap();
    let store = strata::Store::from_engine(engine);
    // About 3 MB of events: dozens of the test options' 64 KiB segments.
    for i in 0..250 {
        let events = (0..2)
            .map(|j| {
                strata::EventData::json("Big", &json!({ "i": j, "pad": "x".repeat(6000) })).unwrap()
            })
            .collect();
        store
            .append(format!("other-{i}"), strata::ExpectedRevision::Any, events)
            .await
            .unwrap();
    }
    let server = start_on(store.clone(), tempfile::tempdir().unwrap(), |_| {}).await;
    storage.inject(Fault::SlowReads {
        delay: Duration::from_millis(100),
    });

    // HTTP: the client closes its connection while the server scans.
    let mut socket = TcpStream::connect(server.http).await.unwrap();
    socket
        .write_all(
            b"GET /streams/%24all?stream=no-such-stream&limit=10 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await
        .unwrap();
    assert_scan_stops_when_its_client_leaves(&store, &storage, move || drop(socket)).await;

    // gRPC: the client drops its call (RST_STREAM) while the server scans.
    let mut client = StreamsClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let call = client
        .read(grpc_scan_for_nothing())
        .await
        .unwrap()
        .into_inner();
    assert_scan_stops_when_its_client_leaves(&store, &storage, move || drop(call)).await;

    storage.clear();
    server.assert_healthy().await;
    drop(client);
    drop(store);
    server.stop().await.unwrap();
}

/// Patterns that are slow in a backtracking engine, too big, too long, or invalid.
/// Without lookaround they run on a linear-time engine; with it, each name has a
/// backtracking limit and an overrun costs scan budget.
const PATHOLOGICAL_REGEXES: &[&str] = &[
    "(a+)+$",
    "^(a|aa)+$",
    "(?=(a+)+b)",
    "^(?=(a|aa)+c)",
    "(?!(a*)*b)x",
    "(?<=a+)b",
    "\\w{1000}{1000}",
    "(",
    "[",
];

/// Percent-encodes every byte, so any pattern travels as one query value.
fn percent_encoded(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Issue 11: filter regexes were compiled per request with no limit on length or
/// size, and matched with no bound on the work. Every pathological pattern gets a
/// bounded answer on both APIs (a page, perhaps short, or a clear client error), and
/// the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_regexes_get_bounded_answers_on_both_apis() {
    use strata_server::proto::event_store::client::streams::read_req::options::{
        filter_options, CountOption, FilterOption, FilterOptions,
    };
    use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
    let server = start_with(|options| options.scan_budget = 50_000).await;
    // Names made to trigger backtracking: long runs of `a` that end in neither `b` nor `c`.
    for i in 0..200 {
        let name = format!("{}{i}", "a".repeat(40));
        let answer = request(
            server.http,
            "POST",
            &format!("/streams/{name}"),
            &json!({"type": "T", "data": {}}).to_string(),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    let long = "a".repeat(strata::Pattern::SOURCE_BYTES_MAX + 1);
    let patterns = PATHOLOGICAL_REGEXES.iter().copied().chain([long.as_str()]);
    let mut grpc = StreamsClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    for pattern in patterns {
        for param in ["stream_regex", "event_type_regex"] {
            let target = format!(
                "/streams/%24all?{param}={}&limit=10",
                percent_encoded(pattern)
            );
            let (status, text) = probe(server.http, "GET", &target, "").await;
            assert!(
                status == 200 || status == 422,
                "{pattern:?}: {status}: {text}"
            );
            assert_client_error_or_ok(pattern, status, &text);
        }
        let mut request =
            strata_server::grpc::requests::subscribe_all(strata::SubscribeFrom::Start);
        let options = request.options.as_mut().unwrap();
        options.count_option = Some(CountOption::Count(10));
        options.filter_option = Some(FilterOption::Filter(FilterOptions {
            filter: Some(filter_options::Filter::StreamIdentifier(
                filter_options::Expression {
                    regex: pattern.into(),
                    prefix: Vec::new(),
                },
            )),
            window: Some(filter_options::Window::Max(32)),
            checkpoint_interval_multiplier: 1,
        }));
        let answered = tokio::time::timeout(HANG_GUARD, async {
            match grpc.read(request).await {
                Err(status) => Err(status),
                Ok(response) => {
                    let mut stream = response.into_inner();
                    while let Some(message) = stream.message().await? {
                        drop(message);
                    }
                    Ok(())
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{pattern:?}: the gRPC read did not end"));
        if let Err(status) = answered {
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{pattern:?}: {status:?}"
            );
        }
    }
    server.assert_healthy().await;
    drop(grpc);
    server.stop().await.unwrap();
}
