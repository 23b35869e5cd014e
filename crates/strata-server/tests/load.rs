//! A bounded mixed load over loopback: one server with both APIs; gRPC and HTTP appenders
//! write single events and batches, concurrently, to streams they share; two gRPC `$all`
//! subscriptions and two HTTP `$all` live streams (SSE and NDJSON), open and caught up
//! before the first write, must each receive exactly the acknowledged events, once, in
//! position order. Every stream reads back with revisions 0..n-1, and the server shuts
//! down gracefully while the subscriptions are still open.
//!
//! The counts are fixed and every wait is bounded, so a bug fails the test instead of
//! hanging it; nothing about speed is asserted.

#![allow(clippy::unwrap_used)] // a test panics on a failed expectation

use std::collections::HashMap;
use std::future::Future;
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
use strata::{EventData, ExpectedRevision, SubscribeFrom};
use strata_server::grpc::requests;
use strata_server::proto::event_store::client::streams::append_resp::success;
use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
use strata_server::proto::event_store::client::streams::{append_resp, read_resp, ReadResp};
use strata_server::proto::event_store::client::uuid as wire_uuid;
use strata_server::{Server, ServerOptions};
use tonic::transport::Channel;
use uuid::Uuid;

const GRPC_APPENDERS: usize = 8;
const HTTP_APPENDERS: usize = 8;
/// Appender `w` of either API writes to stream `w % STREAMS`, so every stream has
/// writers of both APIs racing on it.
const STREAMS: usize = 4;
const APPENDS_PER_APPENDER: u64 = 40;
/// Every `BATCH_EVERY`-th append of an appender is a batch of `BATCH_EVENTS` events.
const BATCH_EVERY: u64 = 4;
const BATCH_EVENTS: usize = 3;
const GRPC_SUBSCRIBERS: usize = 2;
/// Written through the store after every appender is done: a subscriber reads up to it.
const END_STREAM: &str = "load-end";
/// Longest any single step may take (a guard against hangs, not a performance check).
const HANG_GUARD: Duration = Duration::from_secs(60);
/// Most events one stream holds here, far below a page of `GET /streams/{s}` (4 096).
const STREAM_EVENTS_MAX: usize = 1000;

/// An event as its appender was told it was recorded. HTTP acknowledges the position of
/// every event; gRPC only that of the last event of an append.
#[derive(Debug)]
struct Ack {
    stream: String,
    revision: u64,
    position: Option<u64>,
}

/// An event as a reader or subscriber received it (positions are strata's own).
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: Uuid,
    stream: String,
    revision: u64,
    position: u64,
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {HANG_GUARD:?}"))
}

fn stream_of(appender: usize) -> String {
    format!("load-{}", appender % STREAMS)
}

fn events_in(append: u64) -> usize {
    if append % BATCH_EVERY == BATCH_EVERY - 1 {
        BATCH_EVENTS
    } else {
        1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_every_acknowledged_event_reaches_every_subscriber_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = ServerOptions {
        grpc: Some(loopback),
        http: Some(loopback),
        ..ServerOptions::default()
    };
    let server = Server::bind(store.clone(), options).await.unwrap();
    let grpc = server.grpc_addr().unwrap();
    let http = server.http_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    // Subscribers first, each caught up on the empty log, so the writes reach them live.
    let mut grpc_subscribers = Vec::new();
    for _ in 0..GRPC_SUBSCRIBERS {
        let subscription = bounded("a gRPC subscription", GrpcSubscriber::open(grpc)).await;
        grpc_subscribers.push(tokio::spawn(subscription.collect()));
    }
    let mut http_subscribers = Vec::new();
    for accept in ["text/event-stream", "application/x-ndjson"] {
        let live = bounded("an HTTP live stream", LiveReader::open(http, accept)).await;
        http_subscribers.push(tokio::spawn(live.collect()));
    }

    let mut appenders = Vec::new();
    for w in 0..GRPC_APPENDERS {
        appenders.push(tokio::spawn(grpc_appender(grpc, w)));
    }
    for w in 0..HTTP_APPENDERS {
        appenders.push(tokio::spawn(http_appender(http, w)));
    }
    let mut acks = HashMap::new();
    for appender in appenders {
        for (id, ack) in bounded("an appender", appender).await.unwrap() {
            assert!(
                acks.insert(id, ack).is_none(),
                "event {id} acknowledged twice"
            );
        }
    }
    let end = EventData::json("End", &json!({})).unwrap();
    store
        .append(END_STREAM, ExpectedRevision::NoStream, vec![end])
        .await
        .unwrap();

    let recorded = read_back(http, &acks).await;
    assert_eq!(recorded.len(), acks.len());
    let mut open_grpc = Vec::new();
    for (i, subscriber) in grpc_subscribers.into_iter().enumerate() {
        let (seen, subscription) = bounded("a gRPC subscriber", subscriber).await.unwrap();
        same_events(&format!("gRPC subscriber {i}"), &seen, &recorded);
        open_grpc.push(subscription);
    }
    let mut open_http = Vec::new();
    for subscriber in http_subscribers {
        let (seen, live) = bounded("an HTTP subscriber", subscriber).await.unwrap();
        let name = format!("HTTP live stream ({})", live.accept);
        same_events(&name, &seen, &recorded);
        open_http.push(live);
    }

    // Graceful shutdown with all four subscriptions open: it returns Ok (the server
    // holds the last handle of the store and closes it) and ends them.
    drop(store);
    stop.send(()).unwrap();
    bounded("shutdown", running).await.unwrap().unwrap();
    for mut subscription in open_grpc {
        let last = bounded("a gRPC subscription's end", subscription.stream.message()).await;
        assert!(
            !matches!(last, Ok(Some(_))),
            "nothing follows on gRPC: {last:?}"
        );
    }
    for mut live in open_http {
        let last = live.next().await.expect("a last message");
        assert_eq!(last.kind, "error", "{last:?}");
        assert_eq!(last.data["code"], "shutting_down");
        assert!(live.next().await.is_none(), "the live stream ends");
    }
}

/// Reads every stream back over HTTP and checks it against what its appenders were told:
/// revisions 0..n-1, exactly the acknowledged events at their acknowledged revisions (and
/// positions, where acknowledged), positions increasing with revisions. Answers every
/// event, in position order: what each subscriber must deliver.
async fn read_back(http: SocketAddr, acks: &HashMap<Uuid, Ack>) -> Vec<Seen> {
    let client = http_client();
    let mut recorded = Vec::new();
    for s in 0..STREAMS {
        let stream = stream_of(s);
        let uri = format!("http://{http}/streams/{stream}?limit={STREAM_EVENTS_MAX}");
        let (status, page) =
            bounded("a stream read", http_json(&client, Method::GET, &uri, "")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["next_from"], Value::Null, "{stream} fits one page");
        let events: Vec<Seen> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(seen_from_json)
            .collect();
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        let expected = acks.values().filter(|a| a.stream == stream).count() as u64;
        assert_eq!(revisions, (0..expected).collect::<Vec<_>>(), "{stream}");
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "{stream}: positions follow revisions"
        );
        for event in &events {
            let ack = acks
                .get(&event.id)
                .unwrap_or_else(|| panic!("{stream} holds an unacknowledged event {event:?}"));
            assert_eq!((&ack.stream, ack.revision), (&event.stream, event.revision));
            if let Some(position) = ack.position {
                assert_eq!(position, event.position, "{event:?}");
            }
        }
        recorded.extend(events);
    }
    recorded.sort_by_key(|e| e.position);
    recorded
}

/// `seen` (up to the end marker) is exactly `recorded`: same events, same order.
fn same_events(subscriber: &str, seen: &[Seen], recorded: &[Seen]) {
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "{subscriber}: positions strictly increase (no duplicate, no reordering)"
    );
    if let Some(at) = (0..seen.len().min(recorded.len())).find(|&i| seen[i] != recorded[i]) {
        panic!(
            "{subscriber}: event {at} is {:?}, expected {:?}",
            seen[at], recorded[at]
        );
    }
    assert_eq!(
        seen.len(),
        recorded.len(),
        "{subscriber}: as many events as were acknowledged"
    );
}

// ---- gRPC ----

async fn grpc_appender(addr: SocketAddr, w: usize) -> Vec<(Uuid, Ack)> {
    let mut client = StreamsClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let stream = stream_of(w);
    let mut acks = Vec::new();
    for n in 0..APPENDS_PER_APPENDER {
        let ids: Vec<Uuid> = (0..events_in(n)).map(|_| Uuid::new_v4()).collect();
        let events: Vec<EventData> = ids
            .iter()
            .map(|id| {
                EventData::json("Load", &json!({"api": "grpc", "w": w, "n": n}))
                    .unwrap()
                    .with_id(*id)
            })
            .collect();
        let requests = requests::append(&stream, ExpectedRevision::Any, &events);
        let response = client
            .append(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let Some(append_resp::Result::Success(done)) = response.result else {
            panic!("gRPC append failed: {response:?}");
        };
        let Some(success::CurrentRevisionOption::CurrentRevision(last)) =
            done.current_revision_option
        else {
            panic!("no revision: {done:?}");
        };
        let Some(success::PositionOption::Position(position)) = done.position_option else {
            panic!("no position: {done:?}");
        };
        let first = last + 1 - ids.len() as u64;
        for (i, id) in ids.iter().enumerate() {
            let is_last = i + 1 == ids.len();
            let ack = Ack {
                stream: stream.clone(),
                revision: first + i as u64,
                // KurrentDB's commit position is strata's position + 1.
                position: is_last.then(|| position.commit_position - 1),
            };
            acks.push((*id, ack));
        }
    }
    acks
}

/// A `$all` subscription from the start, over its own connection.
struct GrpcSubscriber {
    _client: StreamsClient<Channel>,
    stream: tonic::Streaming<ReadResp>,
}

impl GrpcSubscriber {
    /// Subscribes and waits for the confirmation and `CaughtUp` (the log is empty).
    async fn open(addr: SocketAddr) -> GrpcSubscriber {
        let mut client = StreamsClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let request = requests::subscribe_all(SubscribeFrom::Start);
        let mut stream = client.read(request).await.unwrap().into_inner();
        loop {
            match stream.message().await.unwrap().unwrap().content {
                Some(read_resp::Content::Confirmation(_)) => {}
                Some(read_resp::Content::CaughtUp(_)) => break,
                other => panic!("before any write: {other:?}"),
            }
        }
        GrpcSubscriber {
            _client: client,
            stream,
        }
    }

    /// The events up to the end marker; the subscription stays open.
    async fn collect(mut self) -> (Vec<Seen>, GrpcSubscriber) {
        let mut seen = Vec::new();
        loop {
            let message = self.stream.message().await.unwrap().expect("more events");
            let Some(read_resp::Content::Event(event)) = message.content else {
                panic!("only events after CaughtUp: {message:?}");
            };
            let event = event.event.unwrap();
            let stream = String::from_utf8(event.stream_identifier.unwrap().stream_name).unwrap();
            if stream == END_STREAM {
                return (seen, self);
            }
            let Some(wire_uuid::Value::String(id)) = event.id.unwrap().value else {
                panic!("ids are strings unless asked otherwise");
            };
            seen.push(Seen {
                id: id.parse().unwrap(),
                stream,
                revision: event.stream_revision,
                position: event.commit_position - 1,
            });
        }
    }
}

// ---- HTTP ----

fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn http_json(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    uri: &str,
    body: impl Into<Bytes>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

async fn http_appender(addr: SocketAddr, w: usize) -> Vec<(Uuid, Ack)> {
    // One client per appender: its requests are sequential, so one keep-alive connection.
    let client = http_client();
    let stream = stream_of(w);
    let uri = format!("http://{addr}/streams/{stream}?expected_revision=any");
    let mut acks = Vec::new();
    for n in 0..APPENDS_PER_APPENDER {
        let ids: Vec<Uuid> = (0..events_in(n)).map(|_| Uuid::new_v4()).collect();
        let events: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "type": "Load", "data": {"api": "http", "w": w, "n": n}}))
            .collect();
        // A single event is sent as an object, a batch as an array.
        let body = match events.as_slice() {
            [one] => one.clone(),
            _ => Value::Array(events),
        };
        let (status, answer) = http_json(&client, Method::POST, &uri, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let answered_ids: Vec<Uuid> = serde_json::from_value(answer["ids"].clone()).unwrap();
        assert_eq!(answered_ids, ids);
        let revisions: Vec<u64> = serde_json::from_value(answer["revisions"].clone()).unwrap();
        let positions: Vec<u64> = serde_json::from_value(answer["positions"].clone()).unwrap();
        assert_eq!((revisions.len(), positions.len()), (ids.len(), ids.len()));
        for ((id, revision), position) in ids.into_iter().zip(revisions).zip(positions) {
            let ack = Ack {
                stream: stream.clone(),
                revision,
                position: Some(position),
            };
            acks.push((id, ack));
        }
    }
    acks
}

fn seen_from_json(event: &Value) -> Seen {
    Seen {
        id: event["id"].as_str().unwrap().parse().unwrap(),
        stream: event["stream"].as_str().unwrap().to_owned(),
        revision: event["revision"].as_u64().unwrap(),
        position: event["position"].as_u64().unwrap(),
    }
}

/// A live stream of `$all` (`accept` chooses SSE or NDJSON), read message by message.
struct LiveReader {
    accept: &'static str,
    body: Incoming,
    buffer: Vec<u8>,
    _client: Client<HttpConnector, Full<Bytes>>,
}

/// One live message: its kind (`event`, `caught_up`, `error`), SSE id, and JSON.
#[derive(Debug)]
struct Message {
    kind: String,
    id: Option<u64>,
    data: Value,
}

impl LiveReader {
    /// Opens the stream from the start and waits for `caught_up` (the log is empty).
    async fn open(addr: SocketAddr, accept: &'static str) -> LiveReader {
        let client = http_client();
        let request = Request::get(format!("http://{addr}/streams/%24all/live?from=start"))
            .header("accept", accept)
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], accept);
        let mut live = LiveReader {
            accept,
            body: response.into_body(),
            buffer: Vec::new(),
            _client: client,
        };
        let first = live.next().await.expect("a first message");
        assert_eq!(first.kind, "caught_up", "{first:?}");
        live
    }

    /// The events up to the end marker; the stream stays open.
    async fn collect(mut self) -> (Vec<Seen>, LiveReader) {
        let mut seen = Vec::new();
        loop {
            let message = self.next().await.expect("more events");
            assert_eq!(message.kind, "event", "{message:?}");
            let event = seen_from_json(&message.data);
            if self.accept == "text/event-stream" {
                assert_eq!(message.id, Some(event.position), "SSE ids are positions");
            }
            if event.stream == END_STREAM {
                return (seen, self);
            }
            seen.push(event);
        }
    }

    /// The next message, skipping heartbeats; `None` when the body ends.
    async fn next(&mut self) -> Option<Message> {
        let separator: &[u8] = if self.accept == "text/event-stream" {
            b"\n\n"
        } else {
            b"\n"
        };
        loop {
            if let Some(at) = self
                .buffer
                .windows(separator.len())
                .position(|w| w == separator)
            {
                let chunk: Vec<u8> = self.buffer.drain(..at + separator.len()).collect();
                let text = String::from_utf8(chunk).unwrap();
                match self.parse(text.trim_end()) {
                    Some(message) => return Some(message),
                    None => continue,
                }
            }
            let frame = bounded("a live message", self.body.frame()).await?;
            if let Ok(data) = frame.unwrap().into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    fn parse(&self, text: &str) -> Option<Message> {
        if text.is_empty() || text.starts_with(':') {
            return None;
        }
        if self.accept != "text/event-stream" {
            let value: Value = serde_json::from_str(text).unwrap();
            let (kind, data) = value.as_object().unwrap().iter().next().unwrap();
            return Some(Message {
                kind: kind.clone(),
                id: None,
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
}
