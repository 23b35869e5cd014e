//! End-to-end tests of the HTTP/JSON API: a real server on a loopback port over a store
//! in a temporary directory, spoken to with an HTTP client.
#![allow(clippy::unwrap_used)] // a test panics on a failed expectation

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use strata_server::{Server, ServerError, ServerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any test waits for something that should happen at once (a guard against
/// hangs, not a performance assertion).
const HANG_GUARD: Duration = Duration::from_secs(30);

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    client: Client<HttpConnector, Full<Bytes>>,
    _dir: tempfile::TempDir,
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start_with(
    configure: impl FnOnce(&mut ServerOptions),
    store_options: strata::Options,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open_with(dir.path(), store_options).unwrap();
    start_on(store, dir, configure).await
}

/// Serves `store` (kept in `dir`).
async fn start_on(
    store: strata::Store,
    dir: tempfile::TempDir,
    configure: impl FnOnce(&mut ServerOptions),
) -> TestServer {
    let mut options = ServerOptions {
        grpc: None,
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerOptions::default()
    };
    configure(&mut options);
    let server = Server::bind(store, options).await.unwrap();
    let addr = server.http_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        stop: Some(stop),
        task: Some(task),
        client: client(),
        _dir: dir,
    }
}

async fn start() -> TestServer {
    start_with(|_| {}, strata::Options::default()).await
}

impl TestServer {
    fn uri(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; returns the status and the raw body.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Bytes) {
        let response = self.send(method, path, body, headers).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> hyper::Response<Incoming> {
        let mut request = Request::builder().method(method).uri(self.uri(path));
        // Writes must declare JSON (a cross-site form post cannot append).
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        self.client.request(request).await.unwrap()
    }

    /// Sends a request whose answer is JSON.
    async fn call(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let (status, bytes) = self.raw(method, path, body.to_owned(), &[]).await;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {bytes:?}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, "").await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, &body.to_string()).await
    }

    /// Appends and expects success.
    async fn append(&self, stream: &str, body: Value) -> Value {
        let (status, value) = self.post(&format!("/streams/{stream}"), body).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        value
    }

    /// Stops the server and waits for it to finish.
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(HANG_GUARD, task)
                .await
                .expect("graceful shutdown finishes")
                .unwrap();
            result.unwrap();
        }
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

fn event(event_type: &str, data: Value) -> Value {
    json!({ "type": event_type, "data": data })
}

#[tokio::test]
async fn append_then_read_round_trips_every_field() {
    let mut server = start().await;
    let id = "5f0c3a52-7a4f-4e34-8f0c-0f5c6f0c3a52";
    let first = server
        .append(
            "order-1?expected_revision=no_stream",
            json!({
                "id": id, "type": "Placed", "data": {"total": 42},
                "metadata": {"correlation_id": "c-1"}, "valid_at": "2026-01-02T03:04:05Z"
            }),
        )
        .await;
    assert_eq!(first["stream"], "order-1");
    assert_eq!(first["first_revision"], 0);
    assert_eq!(first["revisions"], json!([0]));
    assert_eq!(first["ids"], json!([id]));
    assert_eq!(first["current_revision"], 0);
    let batch = server
        .append(
            "order-1?expected_revision=0",
            json!([
                {"type": "Paid", "data": "text"},
                {"type": "Blob", "data_base64": "AAEC/w=="}
            ]),
        )
        .await;
    assert_eq!(batch["revisions"], json!([1, 2]));
    assert_eq!(batch["current_revision"], 2);
    let positions = batch["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 2);
    // Ids are generated when absent.
    assert_eq!(batch["ids"].as_array().unwrap().len(), 2);
    assert_ne!(batch["ids"][0], batch["ids"][1]);

    let (status, page) = server.get("/streams/order-1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    let placed = &events[0];
    assert_eq!(placed["stream"], "order-1");
    assert_eq!(placed["revision"], 0);
    assert_eq!(placed["position"], first["position"]);
    assert_eq!(placed["id"], id);
    assert_eq!(placed["type"], "Placed");
    assert_eq!(placed["content_type"], "application/json");
    assert_eq!(placed["data"], json!({"total": 42}));
    assert_eq!(placed["metadata"], json!({"correlation_id": "c-1"}));
    assert_eq!(placed["valid_at"], "2026-01-02T03:04:05.000000Z");
    assert!(placed["recorded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[1]["data"], "text");
    assert_eq!(events[1]["metadata"], Value::Null);
    assert_eq!(events[1]["id"], batch["ids"][0]);
    assert_eq!(events[2]["content_type"], "application/octet-stream");
    assert_eq!(events[2]["data_base64"], "AAEC/w==");
    assert!(events[2].get("data").is_none());
    assert_eq!(page["next_from"], Value::Null);
    server.shutdown().await;
}

#[tokio::test]
async fn conflicts_are_409_with_expected_and_actual() {
    let mut server = start().await;
    server.append("a-1", event("E", json!(1))).await;
    let (status, body) = server
        .post(
            "/streams/a-1?expected_revision=no_stream",
            event("E", json!(2)),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "wrong_expected_revision");
    assert_eq!(body["error"]["expected"], "no_stream");
    assert_eq!(body["error"]["actual"], 0);
    assert_eq!(body["error"]["stream"], "a-1");
    let (status, body) = server
        .post("/streams/a-1?expected_revision=5", event("E", json!(2)))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["expected"], 5);
    let (status, body) = server
        .post(
            "/streams/new-1?expected_revision=stream_exists",
            event("E", json!(2)),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["actual"], "no_stream");
    // Nothing was written by the refused appends.
    let (_, page) = server.get("/streams/a-1").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let (status, _) = server.get("/streams/new-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn retries_with_ids_are_idempotent_and_without_ids_are_not() {
    let mut server = start().await;
    let body = json!([
        {"id": "00000000-0000-4000-8000-000000000001", "type": "E", "data": 1},
        {"id": "00000000-0000-4000-8000-000000000002", "type": "E", "data": 2}
    ]);
    let first = server
        .append("s-1?expected_revision=no_stream", body.clone())
        .await;
    let retry = server.append("s-1?expected_revision=no_stream", body).await;
    assert_eq!(first["positions"], retry["positions"]);
    assert_eq!(first["revisions"], retry["revisions"]);
    // A partial overlap is neither new nor a retry.
    let (status, overlap) = server
        .post(
            "/streams/s-1?expected_revision=no_stream",
            json!([
                {"id": "00000000-0000-4000-8000-000000000001", "type": "E", "data": 1},
                {"id": "00000000-0000-4000-8000-000000000003", "type": "E", "data": 3}
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{overlap}");
    assert_eq!(error_code(&overlap), "idempotency_conflict");
    let (_, page) = server.get("/streams/s-1").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);

    server.append("s-2", event("E", json!(1))).await;
    server.append("s-2", event("E", json!(1))).await;
    let (_, page) = server.get("/streams/s-2").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn deleted_streams_are_404_and_tombstoned_ones_410() {
    let mut server = start().await;
    server.append("soft-1", event("E", json!(1))).await;
    server.append("hard-1", event("E", json!(1))).await;
    let (status, body) = server.call(Method::DELETE, "/streams/soft-1", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tombstoned"], false);
    let (status, body) = server.get("/streams/soft-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "stream_not_found");

    let (status, body) = server
        .call(
            Method::DELETE,
            "/streams/hard-1?tombstone=true&expected_revision=0",
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tombstoned"], true);
    let (status, body) = server.get("/streams/hard-1").await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(error_code(&body), "stream_deleted");
    let (status, body) = server.post("/streams/hard-1", event("E", json!(2))).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(error_code(&body), "stream_deleted");

    let (status, body) = server.get("/streams/never-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["stream"], "never-1");
    let (status, body) = server.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "no_route");
    server.shutdown().await;
}

#[tokio::test]
async fn every_limit_and_malformed_input_is_a_clear_4xx() {
    let store_options = strata::Options {
        limits: strata::Limits {
            event_size_bytes_max: 1024,
            append_events_max: 5,
            stream_name_bytes_max: 32,
            ..strata::Limits::default()
        },
        ..strata::Options::default()
    };
    let mut server = start_with(|o| o.max_request_body = 16 * 1024, store_options).await;
    let big = "x".repeat(20 * 1024);
    let (status, body) = server.post("/streams/a-1", event("E", json!(big))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "body_too_large");

    let (status, body) = server
        .post("/streams/a-1", event("E", json!("y".repeat(2000))))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "event_too_large");

    let six: Vec<Value> = (0..6).map(|i| event("E", json!(i))).collect();
    let (status, body) = server.post("/streams/a-1", Value::Array(six)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "too_many_events");

    let long = "n".repeat(40);
    let (status, body) = server
        .post(&format!("/streams/{long}"), event("E", json!(1)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "stream_name_too_long");

    let (status, body) = server
        .call(Method::POST, "/streams/a-1", "{\"type\": \"E\", \"data\": ")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "malformed_json");
    let (status, body) = server.call(Method::POST, "/streams/a-1", "42").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "malformed_json");
    let (status, body) = server
        .post("/streams/a-1", json!({"type": "E", "dta": 1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_body");
    let (status, body) = server
        .post("/streams/a-1", json!({"type": "E", "data_base64": "***"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_event");
    let (status, body) = server.post("/streams/$bad", event("E", json!(1))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "reserved_stream_name");
    let (status, body) = server
        .post("/streams/a-1?expected_revision=soon", event("E", json!(1)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_expected_revision");
    let (status, body) = server.get("/streams/a-1?limt=5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_query");
    let (status, body) = server.get("/streams/$all?limit=100000").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "limit_too_large");
    let (status, body) = server.get("/streams/$all?stream_regex=(").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_filter");
    let (status, body) = server
        .call(Method::PUT, "/streams/a-1/metadata", "{\"$maxCount\": -1}")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_metadata");

    // After all that the server still serves, and nothing was written.
    let (status, health) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["head"], Value::Null);
    server.shutdown().await;
}

/// Follows `next_from` through every page.
async fn all_pages(server: &TestServer, path: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut next: Option<u64> = None;
    loop {
        let url = match next {
            Some(from) => format!("{path}&from={from}"),
            None => path.to_owned(),
        };
        let (status, page) = server.get(&url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_from"].as_u64() {
            Some(from) => next = Some(from),
            None => return events,
        }
    }
}

#[tokio::test]
async fn pages_go_both_ways_and_filters_select_from_all() {
    let mut server = start().await;
    for i in 0..5 {
        server.append("order-1", event("Placed", json!(i))).await;
        server.append("cart-1", event("Added", json!(i))).await;
    }
    let forwards = all_pages(&server, "/streams/$all?limit=3").await;
    let positions: Vec<u64> = forwards
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (0..10).collect::<Vec<u64>>());
    let backwards = all_pages(&server, "/streams/$all?limit=4&direction=backwards").await;
    let positions: Vec<u64> = backwards
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (0..10).rev().collect::<Vec<u64>>());

    let stream = all_pages(&server, "/streams/order-1?limit=2&direction=backwards").await;
    let revisions: Vec<u64> = stream
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, vec![4, 3, 2, 1, 0]);

    let carts = all_pages(&server, "/streams/$all?limit=2&category=cart").await;
    assert_eq!(carts.len(), 5);
    assert!(carts.iter().all(|e| e["stream"] == "cart-1"));
    let (_, placed) = server
        .get("/streams/$all?event_type=Placed&limit=100")
        .await;
    assert_eq!(placed["events"].as_array().unwrap().len(), 5);
    let (_, regex) = server
        .get("/streams/$all?stream_regex=%5Eorder-&event_type_regex=(%3F%3C%3DPla)ced")
        .await;
    assert_eq!(regex["events"].as_array().unwrap().len(), 5, "{regex}");
    let (_, from) = server.get("/streams/$all?from=8&stream_prefix=ca").await;
    assert_eq!(from["events"].as_array().unwrap().len(), 1);
    assert_eq!(from["events"][0]["position"], 9);
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_round_trips_and_max_count_limits_reads() {
    let mut server = start().await;
    for i in 0..5 {
        server.append("acct-1", event("E", json!(i))).await;
    }
    let (status, meta) = server.get("/streams/acct-1/metadata").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["metadata"], json!({}));
    assert_eq!(meta["metadata_revision"], "no_stream");
    let (status, written) = server
        .call(
            Method::PUT,
            "/streams/acct-1/metadata?expected_revision=no_stream",
            "{\"$maxCount\": 2, \"owner\": \"ops\"}",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{written}");
    assert_eq!(written["metadata_revision"], 0);
    let (_, meta) = server.get("/streams/acct-1/metadata").await;
    assert_eq!(meta["metadata"], json!({"$maxCount": 2, "owner": "ops"}));
    assert_eq!(meta["metadata_revision"], 0);
    let (_, page) = server.get("/streams/acct-1").await;
    let revisions: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, vec![3, 4]);
    let (status, body) = server
        .call(
            Method::PUT,
            "/streams/acct-1/metadata?expected_revision=no_stream",
            "{}",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["actual"], 0);
    server.shutdown().await;
}

/// Issue 11: an append body was parsed whole (millions of tiny events built) before its
/// event count was checked. Parsing stops at the first event over the limit: what
/// follows it is never read, so even a malformed tail gets the 413.
#[tokio::test]
async fn append_bodies_stop_parsing_at_the_first_event_over_the_limit() {
    let mut server = start().await;
    let max = strata::Limits::default().append_events_max;
    let one = r#"{"type":"E","data":0}"#;
    let mut body = String::from("[");
    body.push_str(&vec![one; max + 1].join(","));
    body.push_str(", and never valid JSON after the event too many");
    let (status, answer) = server.call(Method::POST, "/streams/many-1", &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(error_code(&answer), "too_many_events");
    // The same count over the parts of a multi-stream append, and too many parts.
    let part = |stream: &str, events: usize| {
        format!(
            r#"{{"stream":"{stream}","events":[{}]}}"#,
            vec![one; events].join(",")
        )
    };
    let body = format!(
        r#"{{"appends":[{},{}]}}"#,
        part("many-2", max / 2 + 1),
        part("many-3", max / 2)
    );
    let (status, answer) = server.call(Method::POST, "/streams", &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(error_code(&answer), "too_many_events");
    let streams = strata::Limits::default().append_streams_max;
    let parts: Vec<String> = (0..=streams).map(|i| part(&format!("s-{i}"), 1)).collect();
    let body = format!(r#"{{"appends":[{}]}}"#, parts.join(","));
    let (status, answer) = server.call(Method::POST, "/streams", &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(error_code(&answer), "too_many_streams");
    // At the limit, the append goes through.
    let mut body = String::from("[");
    body.push_str(&vec![one; max].join(","));
    body.push(']');
    let (status, answer) = server.call(Method::POST, "/streams/many-1", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["last_revision"], max - 1);
    server.shutdown().await;
}

/// Issue 11: one read of a stream with 60 000 events hidden by `$maxAge` overflowed the
/// server's stack (the engine recursed once per page of expired events).
#[tokio::test]
async fn reads_past_many_expired_events_do_not_crash_the_server() {
    let mut server = start().await;
    let batch: Vec<Value> = (0..20_000).map(|i| event("E", json!(i))).collect();
    for _ in 0..3 {
        server.append("aging-1", Value::Array(batch.clone())).await;
    }
    let (status, body) = server
        .call(Method::PUT, "/streams/aging-1/metadata", "{\"$maxAge\": 1}")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.append("aging-1", event("E", json!("fresh"))).await;
    for path in [
        "/streams/aging-1?limit=1",
        "/streams/aging-1?limit=1&from=100",
        "/streams/aging-1?direction=backwards",
    ] {
        let (status, page) = server.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        let revisions: Vec<u64> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(revisions, vec![60_000], "{path}");
    }
    let response = server
        .send(Method::GET, "/streams/aging-1/live?from=start", "", &[])
        .await;
    let mut live = LiveReader::new(response);
    assert_eq!(revisions(&live.events(1).await), vec![60_000]);
    live.expect("caught_up").await;
    drop(live);
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_acl_must_have_kurrentdb_shape() {
    let mut server = start().await;
    // KurrentDB reads `$acl` as an object of `$r`, `$w`, `$d`, `$mr`, `$mw`, each a role
    // or a list of roles; anything else is not an ACL (the OpenAPI schema says object).
    for bad in [
        json!({"$acl": [null, null]}),
        json!({"$acl": null}),
        json!({"$acl": "$admins"}),
        json!({"$acl": {"$r": null}}),
        json!({"$acl": {"$r": [null]}}),
        json!({"$acl": {"$r": ["a", 1]}}),
        json!({"$acl": {"$w": {"role": "a"}}}),
        json!({"$acl": {"$read": "a"}}),
    ] {
        let (status, body) = server
            .call(Method::PUT, "/streams/acl-1/metadata", &bad.to_string())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} answered {body}");
        assert_eq!(error_code(&body), "invalid_metadata", "{bad}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("$acl"),
            "the message names $acl: {body}"
        );
    }
    let (_, meta) = server.get("/streams/acl-1/metadata").await;
    assert_eq!(
        meta["metadata_revision"], "no_stream",
        "nothing was written"
    );

    let good = json!({"$acl": {"$r": "$all", "$w": ["ops", "$admins"], "$d": [], "$mr": "ops", "$mw": ["ops"]}});
    let (status, body) = server
        .call(Method::PUT, "/streams/acl-1/metadata", &good.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, meta) = server.get("/streams/acl-1/metadata").await;
    assert_eq!(meta["metadata"], good, "served back as given");

    // The OpenAPI document describes the same shape.
    let (_, document) = server.get("/openapi.json").await;
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["StreamMetadata"]["properties"]["$acl"]["$ref"],
        "#/components/schemas/StreamAcl"
    );
    let keys: Vec<&str> = schemas["StreamAcl"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = strata::metadata::ACL_KEYS.to_vec();
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(schemas["StreamAcl"]["additionalProperties"], false);
    server.shutdown().await;
}

#[tokio::test]
async fn streams_are_listed_and_stats_counted() {
    let mut server = start().await;
    for name in ["b-1", "a-1", "a-2", "c-1"] {
        server.append(name, event("E", json!(1))).await;
    }
    server.append("a-1", event("E", json!(2))).await;
    let (status, list) = server.get("/streams").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a-1", "a-2", "b-1", "c-1"]);
    assert_eq!(list["streams"][0]["last_revision"], 1);
    assert_eq!(list["streams"][0]["visible_events"], 2);
    assert_eq!(list["next_after"], Value::Null);
    let (_, page) = server.get("/streams?prefix=a-&limit=1").await;
    assert_eq!(page["streams"][0]["stream"], "a-1");
    assert_eq!(page["next_after"], "a-1");
    let (_, page) = server.get("/streams?prefix=a-&limit=1&after=a-1").await;
    assert_eq!(page["streams"][0]["stream"], "a-2");

    let (status, stats) = server.get("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["events"], 5);
    assert_eq!(stats["head"], 4);
    assert_eq!(stats["backend"], "embedded");
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0);
    server.shutdown().await;
}

#[tokio::test]
async fn min_position_waits_for_the_write_and_times_out_with_504() {
    let mut server = start_with(
        |o| o.max_wait_for_position = Duration::from_millis(300),
        strata::Options::default(),
    )
    .await;
    server.append("w-1", event("E", json!(0))).await;
    let (status, body) = server.get("/streams/w-1?min_position=1").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(error_code(&body), "position_not_reached");
    assert_eq!(body["error"]["min_position"], 1);
    assert_eq!(body["error"]["head"], 0);
    server.shutdown().await;

    let mut server = start_with(
        |o| o.max_wait_for_position = HANG_GUARD,
        strata::Options::default(),
    )
    .await;
    server.append("w-1", event("E", json!(0))).await;
    let uri = server.uri("/streams/w-1?min_position=1");
    let reader = tokio::spawn(async move {
        let response = client().get(uri.parse().unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    });
    // Give the reader a head start so it is (most likely) waiting; the assertions hold
    // whichever comes first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.append("w-1", event("E", json!(1))).await;
    let (status, page) = reader.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    server.shutdown().await;
}

/// Reads a live response message by message.
struct LiveReader {
    body: Incoming,
    buffer: Vec<u8>,
    sse: bool,
}

/// One live message: its kind (`event`, `caught_up`, `error`), SSE id, and JSON.
#[derive(Debug)]
struct Message {
    kind: String,
    id: Option<u64>,
    data: Value,
}

impl LiveReader {
    fn new(response: hyper::Response<Incoming>) -> LiveReader {
        let sse = response.headers()["content-type"] == "text/event-stream";
        LiveReader {
            body: response.into_body(),
            buffer: Vec::new(),
            sse,
        }
    }

    /// The next message, skipping heartbeats; `None` when the body ends.
    async fn next(&mut self) -> Option<Message> {
        loop {
            let separator: &[u8] = if self.sse { b"\n\n" } else { b"\n" };
            if let Some(at) = self
                .buffer
                .windows(separator.len())
                .position(|w| w == separator)
            {
                let chunk: Vec<u8> = self.buffer.drain(..at + separator.len()).collect();
                let text = String::from_utf8(chunk).unwrap();
                if let Some(message) = self.parse(text.trim_end()) {
                    return Some(message);
                }
                continue;
            }
            let frame = tokio::time::timeout(HANG_GUARD, self.body.frame())
                .await
                .expect("a live message arrives")?;
            if let Ok(data) = frame.unwrap().into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    fn parse(&self, text: &str) -> Option<Message> {
        if text.is_empty() || text.starts_with(':') {
            return None;
        }
        if !self.sse {
            let value: Value = serde_json::from_str(text).unwrap();
            let (kind, data) = value.as_object().unwrap().iter().next().unwrap();
            let id = None;
            return Some(Message {
                kind: kind.clone(),
                id,
                data: data.clone(),
            });
        }
        let mut message = Message {
            kind: String::new(),
            id: None,
            data: Value::Null,
        };
        for line in text.lines() {
            let (field, value) = line.split_once(": ").unwrap();
            match field {
                "id" => message.id = Some(value.parse().unwrap()),
                "event" => message.kind = value.to_owned(),
                "data" => message.data = serde_json::from_str(value).unwrap(),
                other => panic!("unexpected SSE field {other}"),
            }
        }
        Some(message)
    }

    /// The next `count` events, checking that no other message comes between.
    async fn events(&mut self, count: usize) -> Vec<Message> {
        let mut events = Vec::new();
        while events.len() < count {
            let message = self.next().await.expect("the stream goes on");
            assert_eq!(message.kind, "event", "{message:?}");
            events.push(message);
        }
        events
    }

    async fn expect(&mut self, kind: &str) -> Message {
        let message = self.next().await.expect("the stream goes on");
        assert_eq!(message.kind, kind, "{message:?}");
        message
    }
}

fn revisions(events: &[Message]) -> Vec<u64> {
    events
        .iter()
        .map(|m| m.data["revision"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn ndjson_live_stream_catches_up_goes_live_and_resumes() {
    let mut server = start().await;
    for i in 0..3 {
        server.append("live-1", event("E", json!(i))).await;
    }
    server.append("other-1", event("E", json!(0))).await;
    let response = server
        .send(Method::GET, "/streams/live-1/live?from=start", "", &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut live = LiveReader::new(response);
    assert_eq!(revisions(&live.events(3).await), vec![0, 1, 2]);
    let caught_up = live.expect("caught_up").await;
    assert_eq!(caught_up.data["head"], 3);
    for i in 3..5 {
        server.append("live-1", event("E", json!(i))).await;
        server.append("other-1", event("E", json!(i))).await;
    }
    let live_events = live.events(2).await;
    assert_eq!(revisions(&live_events), vec![3, 4]);
    assert_eq!(live_events[1].data["data"], 4);
    drop(live);

    // Resume after revision 2, by header and by `from`.
    let response = server
        .send(
            Method::GET,
            "/streams/live-1/live?format=ndjson",
            "",
            &[("last-event-id", "2")],
        )
        .await;
    let mut resumed = LiveReader::new(response);
    assert_eq!(revisions(&resumed.events(2).await), vec![3, 4]);
    resumed.expect("caught_up").await;
    let response = server
        .send(Method::GET, "/streams/live-1/live?from=4", "", &[])
        .await;
    let mut from = LiveReader::new(response);
    assert_eq!(revisions(&from.events(1).await), vec![4]);
    from.expect("caught_up").await;
    // The default start is the end: only new events.
    let response = server
        .send(Method::GET, "/streams/live-1/live", "", &[])
        .await;
    let mut end = LiveReader::new(response);
    end.expect("caught_up").await;
    server.append("live-1", event("E", json!(5))).await;
    assert_eq!(revisions(&end.events(1).await), vec![5]);
    drop((resumed, from, end));
    server.shutdown().await;
}

/// Issue 11: a live stream from the end (the default) opened on an empty store missed
/// the stream's first event.
#[tokio::test]
async fn live_stream_from_the_end_on_an_empty_store_gets_the_first_event() {
    let mut server = start().await;
    let response = server.send(Method::GET, "/streams/x/live", "", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut live = LiveReader::new(response);
    live.expect("caught_up").await;
    server.append("x", event("E", json!(0))).await;
    server.append("x", event("E", json!(1))).await;
    // Heartbeats keep the reader waiting: bound the whole wait.
    let delivered = tokio::time::timeout(HANG_GUARD, live.events(2))
        .await
        .expect("both events are delivered");
    assert_eq!(revisions(&delivered), vec![0, 1]);
    drop(live);
    server.shutdown().await;
}

/// Issue 11: `Last-Event-ID: 18446744073709551615` wrapped `+ 1` to 0 and replayed the
/// whole stream (or log). Nothing can follow `u64::MAX`: caught up at once, no event.
#[tokio::test]
async fn live_streams_after_u64_max_deliver_nothing() {
    let mut server = start().await;
    for i in 0..3 {
        server.append("max-1", event("E", json!(i))).await;
    }
    let last = u64::MAX.to_string();
    for path in ["/streams/max-1/live", "/streams/$all/live"] {
        let response = server
            .send(Method::GET, path, "", &[("last-event-id", last.as_str())])
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let mut live = LiveReader::new(response);
        live.expect("caught_up").await;
        drop(live);
    }
    // The one past the last event is still served as "after it".
    let response = server
        .send(
            Method::GET,
            "/streams/max-1/live",
            "",
            &[("last-event-id", "1")],
        )
        .await;
    let mut live = LiveReader::new(response);
    assert_eq!(revisions(&live.events(1).await), vec![2]);
    live.expect("caught_up").await;
    drop(live);
    server.shutdown().await;
}

#[tokio::test]
async fn sse_live_all_has_no_gap_or_duplicate_across_the_handover() {
    let mut server = start().await;
    for i in 0..50 {
        server
            .append(&format!("order-{}", i % 3), event("E", json!(i)))
            .await;
    }
    let response = server
        .send(
            Method::GET,
            "/streams/$all/live?from=start&exclude_system=true",
            "",
            &[("accept", "text/event-stream")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut live = LiveReader::new(response);
    // A writer races the catch-up.
    let uri = server.uri("/streams/order-9");
    let writer = tokio::spawn(async move {
        let client = client();
        for i in 0..150 {
            let body = json!({"type": "E", "data": i}).to_string();
            let request = Request::post(uri.as_str())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let response = client.request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    });
    let mut positions = Vec::new();
    let mut caught_up = 0;
    while positions.len() < 200 {
        let message = live.next().await.expect("the stream goes on");
        match message.kind.as_str() {
            "event" => {
                let position = message.data["position"].as_u64().unwrap();
                assert_eq!(message.id, Some(position), "SSE ids are positions on $all");
                positions.push(position);
            }
            "caught_up" => caught_up += 1,
            other => panic!("unexpected {other}: {message:?}"),
        }
    }
    writer.await.unwrap();
    assert_eq!(positions, (0..200).collect::<Vec<u64>>());
    assert!(caught_up <= 1, "caught_up is sent once");
    drop(live);

    // Resume with Last-Event-ID, as EventSource does on reconnect, with a filter.
    let response = server
        .send(
            Method::GET,
            "/streams/$all/live?stream=order-9",
            "",
            &[("accept", "text/event-stream"), ("last-event-id", "197")],
        )
        .await;
    let mut resumed = LiveReader::new(response);
    let events = resumed.events(2).await;
    assert_eq!(events[0].id, Some(198));
    assert_eq!(events[1].id, Some(199));
    resumed.expect("caught_up").await;
    drop(resumed);
    server.shutdown().await;
}

#[tokio::test]
async fn live_streams_are_limited_per_client_and_refuse_tombstoned_streams() {
    let mut server = start_with(
        |o| o.max_subscriptions_per_connection = 2,
        strata::Options::default(),
    )
    .await;
    server.append("gone-1", event("E", json!(1))).await;
    server
        .call(Method::DELETE, "/streams/gone-1?tombstone=true", "")
        .await;
    let (status, body) = server
        .raw(Method::GET, "/streams/gone-1/live?from=start", "", &[])
        .await;
    assert_eq!(status, StatusCode::GONE, "{body:?}");

    let first = server
        .send(Method::GET, "/streams/$all/live", "", &[])
        .await;
    let second = server.send(Method::GET, "/streams/x-1/live", "", &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    let (status, body) = server.get("/streams/x-2/live").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&body), "too_many_live_streams");
    let (_, metrics) = server.raw(Method::GET, "/metrics", "", &[]).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("strata_subscriptions_open{api=\"Http\"} 2"),
        "{metrics}"
    );
    // A client that goes away frees its slot, even while its stream is idle.
    drop(first);
    let started = std::time::Instant::now();
    loop {
        let third = server
            .send(Method::GET, "/streams/x-3/live?format=ndjson", "", &[])
            .await;
        if third.status() == StatusCode::OK {
            break;
        }
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            started.elapsed() < HANG_GUARD,
            "the slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_live_streams_and_returns() {
    let mut server = start().await;
    let response = server
        .send(
            Method::GET,
            "/streams/$all/live?from=start",
            "",
            &[("accept", "text/event-stream")],
        )
        .await;
    let mut live = LiveReader::new(response);
    live.expect("caught_up").await;
    // The stream is open and idle; shutdown must still finish (and not wait for it).
    server.shutdown().await;
    let last = live.expect("error").await;
    assert_eq!(last.data["code"], "shutting_down");
    assert!(live.next().await.is_none(), "the stream ends");
}

#[tokio::test]
async fn multi_stream_appends_are_all_or_nothing() {
    let mut server = start().await;
    server.append("m-1", event("E", json!(0))).await;
    let (status, body) = server
        .post(
            "/streams",
            json!({"appends": [
                {"stream": "m-1", "expected_revision": 0, "events": [event("E", json!(1))]},
                {"stream": "m-2", "expected_revision": "no_stream", "events": [event("E", json!(1))]}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["revisions"], json!([1]));
    assert_eq!(body["results"][1]["revisions"], json!([0]));
    let (status, body) = server
        .post(
            "/streams",
            json!({"appends": [
                {"stream": "m-1", "expected_revision": 1, "events": [event("E", json!(2))]},
                {"stream": "m-2", "expected_revision": "no_stream", "events": [event("E", json!(2))]}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["stream"], "m-2");
    let (_, page) = server.get("/streams/m-1").await;
    assert_eq!(
        page["events"].as_array().unwrap().len(),
        2,
        "nothing written"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_appends_and_openapi_lists_the_paths() {
    let mut server = start().await;
    server
        .append("p-1", json!([event("E", json!(1)), event("E", json!(2))]))
        .await;
    server
        .post(
            "/streams/p-1?expected_revision=no_stream",
            event("E", json!(3)),
        )
        .await;
    let (_, page) = server.get("/streams/p-1").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let (status, metrics) = server.raw(Method::GET, "/metrics", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    for line in [
        "strata_appends_total{api=\"Http\",outcome=\"Ok\"} 1",
        "strata_appends_total{api=\"Http\",outcome=\"Conflict\"} 1",
        "strata_events_appended_total{api=\"Http\"} 2",
        "strata_events_read_total{api=\"Http\"} 2",
        "strata_append_latency_seconds_count{api=\"Http\"} 2",
        "strata_head_position 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    let disk = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_disk_bytes "))
        .unwrap();
    assert!(disk.parse::<u64>().unwrap() > 0);

    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/health",
        "/metrics",
        "/stats",
        "/openapi.json",
        "/streams",
        "/streams/{stream}",
        "/streams/{stream}/metadata",
        "/streams/{stream}/live",
        "/me",
        "/users",
        "/users/{login}",
        "/users/{login}/password",
        "/tokens",
        "/tokens/{id}",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    assert!(paths["/streams/{stream}"]["post"].is_object());
    assert!(paths["/streams/{stream}"]["delete"].is_object());
    assert!(paths["/streams/{stream}/metadata"]["put"].is_object());
    server.shutdown().await;
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_shows_in_stats_metrics_and_the_openapi_document() {
    // Small segments, several of them sealed, scrubbed fast and often.
    let options = strata::Options {
        scrub_bytes_per_second: 1 << 30,
        scrub_interval: Duration::from_millis(20),
        ..strata::Options::small_for_tests()
    };
    let mut server = start_with(|_| {}, options).await;
    for i in 0..40 {
        let events: Vec<Value> = (0..8)
            .map(|j| event("E", json!({ "j": j, "pad": "p".repeat(600) })))
            .collect();
        server.append(&format!("s-{i}"), json!(events)).await;
    }
    let (_, stats) = server.get("/stats").await;
    assert!(stats["segments"].as_u64().unwrap() >= 3, "{stats}");

    // Polled: passes run in the background.
    let started = std::time::Instant::now();
    let metrics = loop {
        let (status, metrics) = server.raw(Method::GET, "/metrics", "", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let metrics = String::from_utf8(metrics.to_vec()).unwrap();
        let bytes = metric(&metrics, "strata_scrub_bytes_total");
        let passes = metric(&metrics, "strata_scrub_passes_total");
        if bytes.is_some_and(|b| b > 0) && passes.is_some_and(|p| p > 0) {
            break metrics;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "no scrub counts in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(metric(&metrics, "strata_scrub_damage_total"), Some(0));
    assert_eq!(
        metric(&metrics, "strata_scrub_tables_repaired_total"),
        Some(0)
    );

    let (status, stats) = server.get("/stats").await;
    assert_eq!(status, StatusCode::OK);
    let scrub = &stats["scrub"];
    assert!(scrub["bytes_verified"].as_u64().unwrap() > 0, "{stats}");
    assert!(scrub["passes"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(scrub["damage_found"], 0);
    assert_eq!(scrub["damage"], json!([]));

    // The OpenAPI document describes every field /stats answers.
    let (_, document) = server.get("/openapi.json").await;
    let schemas = &document["components"]["schemas"];
    let keys = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort_unstable();
        keys
    };
    assert_eq!(keys(&stats), keys(&schemas["Stats"]["properties"]));
    assert_eq!(keys(scrub), keys(&schemas["ScrubStatus"]["properties"]));
    assert_eq!(
        schemas["Stats"]["properties"]["scrub"]["allOf"][0]["$ref"],
        "#/components/schemas/ScrubStatus"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_scrubber_that_is_off_is_null_in_stats_and_zero_in_metrics() {
    let options = strata::Options {
        scrub_bytes_per_second: 0,
        ..strata::Options::default()
    };
    let mut server = start_with(|_| {}, options).await;
    let (_, stats) = server.get("/stats").await;
    assert_eq!(stats["scrub"], Value::Null, "{stats}");
    let (_, metrics) = server.raw(Method::GET, "/metrics", "", &[]).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    for name in [
        "strata_scrub_bytes_total",
        "strata_scrub_passes_total",
        "strata_scrub_damage_total",
        "strata_scrub_table_bytes_total",
        "strata_scrub_tables_repaired_total",
    ] {
        assert_eq!(metric(&metrics, name), Some(0), "{name} in:\n{metrics}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_filtered_read_of_all_stops_at_its_scan_budget_and_says_where_to_go_on() {
    let server = start_with(
        |options| options.scan_budget = 10,
        strata::Options::default(),
    )
    .await;
    // Hits at positions 0 and 25, misses between and after.
    for i in 0..30 {
        let stream = if i == 0 || i == 25 { "hit" } else { "miss" };
        let body = json!([event("E", json!({ "i": i }))]).to_string();
        let (status, answer) = server
            .call(Method::POST, &format!("/streams/{stream}-{i}"), &body)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (status, page) = server
        .get("/streams/$all?stream_prefix=hit-&limit=100")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "the first ten events hold one hit: {page}");
    assert_eq!(
        page["next_from"],
        json!(10),
        "where the scan stopped: {page}"
    );
    // Ten events, no hit: an empty page that still moves on.
    let (_, page) = server
        .get("/streams/$all?stream_prefix=hit-&limit=100&from=10")
        .await;
    assert_eq!(page["events"], json!([]), "{page}");
    assert_eq!(page["next_from"], json!(20), "{page}");
    // Following next_from finds every hit, and the last page says it is the end.
    let hits = all_pages(&server, "/streams/$all?stream_prefix=hit-&limit=100").await;
    let streams: Vec<&str> = hits.iter().map(|e| e["stream"].as_str().unwrap()).collect();
    assert_eq!(streams, ["hit-0", "hit-25"]);
    // Backwards too.
    let hits = all_pages(
        &server,
        "/streams/$all?stream_prefix=hit-&limit=100&direction=backwards",
    )
    .await;
    let streams: Vec<&str> = hits.iter().map(|e| e["stream"].as_str().unwrap()).collect();
    assert_eq!(streams, ["hit-25", "hit-0"]);
    // Unfiltered reads are bounded by their limit alone.
    let (_, page) = server.get("/streams/$all?limit=30").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 30, "{page}");
}

#[tokio::test]
async fn regexes_too_long_or_too_big_are_422() {
    let server = start().await;
    let long = "a".repeat(strata::Pattern::SOURCE_BYTES_MAX + 1);
    let (status, body) = server
        .get(&format!("/streams/$all?stream_regex={long}"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "filter_regex_too_long");
    // \w{100}: a few bytes that compile to megabytes.
    let (status, body) = server
        .get("/streams/$all?event_type_regex=%5Cw%7B100%7D")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "filter_regex_too_big");
}

/// A backend whose filtered reads of `$all` always find the store busy.
struct BusyScans(strata::Store);

#[async_trait::async_trait]
impl strata::EventStore for BusyScans {
    async fn append_multi(
        &self,
        requests: Vec<strata::AppendRequest>,
    ) -> Result<Vec<strata::AppendResult>, strata::AppendError> {
        self.0.append_multi(requests).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        options: strata::ReadStreamOptions,
    ) -> Result<Vec<strata::RecordedEvent>, strata::ReadError> {
        self.0.read_stream(stream, options).await
    }
    async fn read_all(
        &self,
        options: strata::ReadAllOptions,
    ) -> Result<Vec<strata::RecordedEvent>, strata::ReadError> {
        if options.filter.is_empty() {
            return self.0.read_all(options).await;
        }
        Err(strata::ReadError::Busy {
            running: 8,
            waited: Duration::from_secs(5),
        })
    }
    async fn list_streams(
        &self,
        options: strata::ListStreamsOptions,
    ) -> Result<Vec<strata::StreamInfo>, strata::ReadError> {
        self.0.list_streams(options).await
    }
    async fn delete_stream(
        &self,
        stream: &str,
        expected: strata::ExpectedRevision,
    ) -> Result<strata::Position, strata::AppendError> {
        self.0.delete_stream(stream, expected).await
    }
    async fn tombstone_stream(
        &self,
        stream: &str,
        expected: strata::ExpectedRevision,
    ) -> Result<strata::Position, strata::AppendError> {
        self.0.tombstone_stream(stream, expected).await
    }
    fn watch_head(&self) -> tokio::sync::watch::Receiver<Option<strata::Position>> {
        self.0.backend().watch_head()
    }
    async fn stats(&self) -> Result<strata::StoreStats, strata::ReadError> {
        self.0.stats().await
    }
    fn limits(&self) -> &strata::Limits {
        self.0.limits()
    }
}

#[tokio::test]
async fn a_store_too_busy_to_scan_is_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let engine = strata::Store::open(dir.path()).unwrap();
    let store = strata::Store::from_backend(std::sync::Arc::new(BusyScans(engine)));
    let server = start_on(store, dir, |_| {}).await;
    let response = server
        .send(Method::GET, "/streams/$all?stream_prefix=x", "", &[])
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "1"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error_code(&body), "busy", "{body}");
    // Unfiltered reads need no scan slot.
    let (status, _) = server.get("/streams/$all").await;
    assert_eq!(status, StatusCode::OK);
}
