//! The gRPC API through the generated tonic client: bad input gets clear statuses and
//! never takes the server down, limits hold, shutdown is graceful, and a bounded load
//! of concurrent appenders and subscribers loses, duplicates and reorders nothing.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use strata_server::grpc::requests;
use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
use strata_server::proto::event_store::client::streams::{
    append_req, append_resp, read_req, read_resp, AppendReq, ReadReq,
};
use strata_server::proto::event_store::client::{uuid, Empty, StreamIdentifier, Uuid as ProtoUuid};
use strata_server::{Server, ServerOptions};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), strata_server::ServerError>>,
    _dir: tempfile::TempDir,
}

async fn start(options: ServerOptions) -> Running {
    start_on(options, strata::Options::default()).await
}

/// A server over a store opened with `store_options` (its limits, say).
async fn start_on(options: ServerOptions, store_options: strata::Options) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open_with(dir.path(), store_options).unwrap();
    serve_store(store, dir, options).await
}

/// Serves `store` (kept in `dir`).
async fn serve_store(
    store: strata::Store,
    dir: tempfile::TempDir,
    options: ServerOptions,
) -> Running {
    let options = ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: None,
        ..options
    };
    let server = Server::bind(store, options).await.unwrap();
    let addr = server.grpc_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop,
        task,
        _dir: dir,
    }
}

async fn client(addr: SocketAddr) -> StreamsClient<Channel> {
    StreamsClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn id() -> ProtoUuid {
    ProtoUuid {
        value: Some(uuid::Value::String(::uuid::Uuid::new_v4().to_string())),
    }
}

fn options(stream: &str) -> AppendReq {
    AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: Some(StreamIdentifier {
                stream_name: stream.as_bytes().to_vec(),
            }),
            expected_stream_revision: Some(append_req::options::ExpectedStreamRevision::Any(
                Empty {},
            )),
        })),
    }
}

fn proposed(event_type: Option<&str>, data: Vec<u8>) -> AppendReq {
    let mut metadata = HashMap::from([("content-type".to_owned(), "application/json".to_owned())]);
    if let Some(t) = event_type {
        metadata.insert("type".to_owned(), t.to_owned());
    }
    AppendReq {
        content: Some(append_req::Content::ProposedMessage(
            append_req::ProposedMessage {
                id: Some(id()),
                metadata,
                custom_metadata: Vec::new(),
                data,
            },
        )),
    }
}

async fn append_one(client: &mut StreamsClient<Channel>, stream: &str, n: u64) -> u64 {
    let event = strata::EventData::json("E", &serde_json::json!({ "n": n })).unwrap();
    let requests = requests::append(stream, strata::ExpectedRevision::Any, &[event]);
    let response = client
        .append(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    match response.result {
        Some(append_resp::Result::Success(success)) => match success.position_option {
            Some(append_resp::success::PositionOption::Position(p)) => p.commit_position,
            other => panic!("no position: {other:?}"),
        },
        other => panic!("append failed: {other:?}"),
    }
}

fn subscribe_all_request() -> ReadReq {
    requests::subscribe_all(strata::SubscribeFrom::Start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_statuses_and_the_server_keeps_serving() {
    let running = start(ServerOptions::default()).await;
    let mut client = client(running.addr).await;

    // A read without options.
    let status = client.read(ReadReq { options: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // An append whose first message is not its options.
    let status = client
        .append(tokio_stream::iter(vec![proposed(
            Some("E"),
            b"{}".to_vec(),
        )]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A proposed event without its type, as KurrentDB words it.
    let status = client
        .append(tokio_stream::iter(vec![
            options("s"),
            proposed(None, b"{}".to_vec()),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "Required Metadata Property 'type' is missing"
    );

    // An event over the store's size limit: KurrentDB's message and trailers.
    let huge = vec![b'x'; strata::Limits::default().event_size_bytes_max + 1];
    let status = client
        .append(tokio_stream::iter(vec![
            options("s"),
            proposed(Some("E"), huge),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("exceeds Maximum Append Event Size"),
        "{}",
        status.message()
    );
    assert_eq!(
        status.metadata().get("exception").unwrap(),
        "maximum-append-event-size-exceeded"
    );

    // A system stream name is refused, not written.
    let status = client
        .append(tokio_stream::iter(vec![
            options("$system"),
            proposed(Some("E"), b"{}".to_vec()),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A bad regular expression in a filter.
    let mut request = subscribe_all_request();
    let options = request.options.as_mut().unwrap();
    options.count_option = Some(read_req::options::CountOption::Count(10));
    options.filter_option = Some(read_req::options::FilterOption::Filter(
        read_req::options::FilterOptions {
            filter: Some(read_req::options::filter_options::Filter::StreamIdentifier(
                read_req::options::filter_options::Expression {
                    regex: "(".into(),
                    prefix: Vec::new(),
                },
            )),
            window: Some(read_req::options::filter_options::Window::Max(32)),
            checkpoint_interval_multiplier: 1,
        },
    ));
    let status = client.read(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("regular expression"),
        "{}",
        status.message()
    );

    // Malformed protobuf bytes on the wire: rejected with a status, no panic.
    let status = raw_call(
        running.addr,
        "/event_store.client.streams.Streams/Delete",
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_ne!(status.code(), Code::Ok);

    // The server is still serving.
    assert!(append_one(&mut client, "still-alive", 0).await > 0);
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_events_with_a_malformed_acl_are_refused() {
    let running = start(ServerOptions::default()).await;
    let mut client = client(running.addr).await;
    // Clients set metadata by appending a `$metadata` event to `$$stream`; the store
    // checks it as it checks every metadata write, `$acl` included.
    let status = client
        .append(tokio_stream::iter(vec![
            options("$$acl-1"),
            proposed(Some("$metadata"), br#"{"$acl": [null, null]}"#.to_vec()),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("$acl"), "{}", status.message());
    let response = client
        .append(tokio_stream::iter(vec![
            options("$$acl-1"),
            proposed(
                Some("$metadata"),
                br#"{"$acl": {"$r": ["a", "b"]}}"#.to_vec(),
            ),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(response.result, Some(append_resp::Result::Success(_))),
        "{response:?}"
    );
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// Sends `body` as one unary gRPC message to `path`, bypassing protobuf encoding.
async fn raw_call(addr: SocketAddr, path: &'static str, body: Vec<u8>) -> tonic::Status {
    #[derive(Clone, Default)]
    struct RawCodec;
    struct RawEncoder;
    struct RawDecoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
    impl tonic::codec::Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_limited_and_released() {
    let running = start(ServerOptions {
        max_subscriptions_per_connection: 2,
        ..ServerOptions::default()
    })
    .await;
    let mut client = client(running.addr).await;
    let first = client
        .read(subscribe_all_request())
        .await
        .unwrap()
        .into_inner();
    let _second = client
        .read(subscribe_all_request())
        .await
        .unwrap()
        .into_inner();
    let status = client.read(subscribe_all_request()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Closing one frees its slot.
    drop(first);
    let mut freed = None;
    for _ in 0..100 {
        match client.read(subscribe_all_request()).await {
            Ok(attempt) => {
                freed = attempt.into_inner().message().await.unwrap();
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        matches!(
            freed.and_then(|m| m.content),
            Some(read_resp::Content::Confirmation(_))
        ),
        "a slot is released when a subscription closes"
    );
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// Concurrent appenders and subscribers over loopback: every acknowledged event is
/// delivered exactly once, in commit-position order, to every subscriber; shutdown with
/// subscriptions open completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_every_acknowledged_event_reaches_every_subscriber_once_in_order() {
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 100;
    const SUBSCRIBERS: usize = 3;
    let running = start(ServerOptions::default()).await;
    let total = WRITERS * APPENDS;

    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = client(running.addr).await;
        let mut stream = client
            .read(subscribe_all_request())
            .await
            .unwrap()
            .into_inner();
        subscribers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while (seen.len() as u64) < total {
                match stream.message().await.unwrap().unwrap().content {
                    Some(read_resp::Content::Event(event)) => {
                        seen.push(event.event.unwrap().commit_position);
                    }
                    _ => continue,
                }
            }
            seen
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let addr = running.addr;
        writers.push(tokio::spawn(async move {
            let mut client = client(addr).await;
            let mut acknowledged = Vec::new();
            for n in 0..APPENDS {
                acknowledged.push(append_one(&mut client, &format!("load-{w}"), n).await);
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    acknowledged.sort_unstable();
    for subscriber in subscribers {
        let seen = tokio::time::timeout(Duration::from_secs(60), subscriber)
            .await
            .expect("subscribers receive everything")
            .unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "in order, no duplicates"
        );
        assert_eq!(seen, acknowledged, "exactly the acknowledged events");
    }
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// The next message of a Read call, failing the test if none comes.
async fn next_read_message(
    stream: &mut tonic::Streaming<strata_server::proto::event_store::client::streams::ReadResp>,
) -> read_resp::Content {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a message arrives")
        .unwrap()
        .expect("the call goes on")
        .content
        .expect("a message has content")
}

/// Issue 11: a subscription from revision (or commit position) `u64::MAX` wrapped `+ 1`
/// to 0 and replayed the whole stream. Nothing can follow `u64::MAX`: the subscription
/// is confirmed, catches up at once, and delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_after_u64_max_deliver_nothing() {
    let running = start(ServerOptions::default()).await;
    let mut client = client(running.addr).await;
    for n in 0..3 {
        append_one(&mut client, "max-1", n).await;
    }
    let requests = [
        requests::subscribe_stream("max-1", strata::SubscribeFrom::After(u64::MAX)),
        requests::subscribe_all(strata::SubscribeFrom::After(strata::Position(u64::MAX))),
        // The reference: a subscription that does get the next event.
        requests::subscribe_stream("max-1", strata::SubscribeFrom::After(2)),
    ];
    let mut calls = Vec::new();
    for request in requests {
        let mut call = client.read(request).await.unwrap().into_inner();
        assert!(matches!(
            next_read_message(&mut call).await,
            read_resp::Content::Confirmation(_)
        ));
        let caught_up = next_read_message(&mut call).await;
        assert!(
            matches!(caught_up, read_resp::Content::CaughtUp(_)),
            "caught up before any event, got {caught_up:?}"
        );
        calls.push(call);
    }
    append_one(&mut client, "max-1", 3).await;
    let mut reference = calls.pop().unwrap();
    match next_read_message(&mut reference).await {
        read_resp::Content::Event(event) => {
            assert_eq!(event.event.unwrap().stream_revision, 3);
        }
        other => panic!("the reference subscription gets the new event, got {other:?}"),
    }
    for mut call in calls {
        let nothing = tokio::time::timeout(Duration::from_millis(300), call.message()).await;
        assert!(
            nothing.is_err(),
            "nothing follows u64::MAX, got {nothing:?}"
        );
    }
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// A read of `$all` from the start, of `count` events whose stream matches `regex`.
fn filtered_read(count: u64, regex: &str) -> ReadReq {
    let mut request = subscribe_all_request();
    let options = request.options.as_mut().unwrap();
    options.count_option = Some(read_req::options::CountOption::Count(count));
    options.filter_option = Some(read_req::options::FilterOption::Filter(
        read_req::options::FilterOptions {
            filter: Some(read_req::options::filter_options::Filter::StreamIdentifier(
                read_req::options::filter_options::Expression {
                    regex: regex.into(),
                    prefix: Vec::new(),
                },
            )),
            window: Some(read_req::options::filter_options::Window::Max(32)),
            checkpoint_interval_multiplier: 1,
        },
    ));
    request
}

/// The streams of the events a read returns, until it ends.
async fn read_streams(client: &mut StreamsClient<Channel>, request: ReadReq) -> Vec<String> {
    let mut responses = client.read(request).await.unwrap().into_inner();
    let mut streams = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        if let Some(read_resp::Content::Event(event)) = response.content {
            let event = event.event.unwrap();
            let name = event.stream_identifier.unwrap().stream_name;
            streams.push(String::from_utf8(name).unwrap());
        }
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_reads_of_all_go_on_past_each_scan_budget_until_count_or_end() {
    let running = start(ServerOptions {
        scan_budget: 10,
        ..ServerOptions::default()
    })
    .await;
    let mut client = client(running.addr).await;
    // Hits far apart: each step of ten events finds at most one.
    for i in 0..60u64 {
        let stream = if i % 20 == 5 { "hit" } else { "miss" };
        append_one(&mut client, &format!("{stream}-{i}"), i).await;
    }
    let streams = read_streams(&mut client, filtered_read(100, "^hit-")).await;
    assert_eq!(streams, ["hit-5", "hit-25", "hit-45"]);
    let streams = read_streams(&mut client, filtered_read(2, "^hit-")).await;
    assert_eq!(streams, ["hit-5", "hit-25"]);
    let streams = read_streams(&mut client, filtered_read(10, "^nothing")).await;
    assert!(streams.is_empty());
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// Longest a test waits for an answer that must come (a guard against hangs, not a
/// performance assertion).
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Issue 11: `Append` collected every message of the call before checking the store's
/// limits. It is refused at the first event over a limit, with the answer the store
/// gives: the client's stream below never ends, so only an early refusal answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_the_limits_are_refused_while_they_arrive() {
    use tokio_stream::StreamExt as _;
    let running = start(ServerOptions::default()).await;
    let mut client = client(running.addr).await;
    let max = strata::Limits::default().append_events_max;
    // More events than one append may hold, then a client that never finishes.
    let messages = tokio_stream::iter(
        std::iter::once(options("many-1"))
            .chain((0..=max).map(|_| proposed(Some("E"), b"{}".to_vec()))),
    )
    .chain(tokio_stream::pending());
    let status = tokio::time::timeout(HANG_GUARD, client.append(messages))
        .await
        .expect("refused before the client finished sending")
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(&format!("the limit is {max}")),
        "{}",
        status.message()
    );
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();

    // Over the size of one append: KurrentDB's maximum-append-size answer.
    let store_options = strata::Options::small_for_tests();
    let limits = store_options.limits.clone();
    let running = start_on(ServerOptions::default(), store_options).await;
    let mut client = crate::client(running.addr).await;
    let each = limits.event_size_bytes_max - 100;
    let messages = tokio_stream::iter(
        std::iter::once(options("big-1")).chain(
            (0..limits.append_size_bytes_max / each + 1)
                .map(move |_| proposed(Some("E"), vec![b'1'; each])),
        ),
    )
    .chain(tokio_stream::pending());
    let status = tokio::time::timeout(HANG_GUARD, client.append(messages))
        .await
        .expect("refused before the client finished sending")
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.metadata().get("exception").unwrap(),
        "maximum-append-size-exceeded"
    );
    assert_eq!(
        status.metadata().get("maximum-append-size").unwrap(),
        limits.append_size_bytes_max.to_string().as_str()
    );
    // Nothing of either was written, and the server goes on serving.
    let mut reader = client;
    assert!(append_one(&mut reader, "big-1", 0).await > 0);
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regexes_too_long_or_too_big_are_invalid_argument() {
    let running = start(ServerOptions::default()).await;
    let mut client = client(running.addr).await;
    let long = "a".repeat(strata::Pattern::SOURCE_BYTES_MAX + 1);
    for regex in [long.as_str(), "\\w{100}"] {
        let status = client.read(filtered_read(10, regex)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// The v2 `AppendSession` is refused at its first stream or record over the limits,
/// while the client is still sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_sessions_over_the_limits_are_refused_while_they_arrive() {
    use strata_server::proto::kurrentdb::protocol::v2::streams::streams_service_client::StreamsServiceClient;
    use strata_server::proto::kurrentdb::protocol::v2::streams::{
        AppendRecord, AppendRequest, SchemaFormat, SchemaInfo,
    };
    use tokio_stream::StreamExt as _;
    let store_options = strata::Options::small_for_tests();
    let limits = store_options.limits.clone();
    let running = start_on(ServerOptions::default(), store_options).await;
    let mut client = StreamsServiceClient::connect(format!("http://{}", running.addr))
        .await
        .unwrap();
    let record = || AppendRecord {
        record_id: None,
        properties: HashMap::new(),
        schema: Some(SchemaInfo {
            format: SchemaFormat::Json as i32,
            name: "E".into(),
            id: None,
        }),
        data: b"{}".to_vec(),
        stream: String::new(),
    };
    let request = move |stream: String, records: usize| AppendRequest {
        stream,
        records: (0..records).map(|_| record()).collect(),
        expected_revision: None,
    };
    // One stream more than a multi-stream append may name.
    let streams = limits.append_streams_max;
    let messages = tokio_stream::iter((0..=streams).map(move |i| request(format!("v2s-{i}"), 1)))
        .chain(tokio_stream::pending());
    let status = tokio::time::timeout(HANG_GUARD, client.append_session(messages))
        .await
        .expect("refused before the client finished sending")
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("the limit is {streams}")),
        "{}",
        status.message()
    );
    // More records, over two streams, than one append may hold.
    let half = limits.append_events_max / 2 + 1;
    let messages = tokio_stream::iter((0..2).map(move |i| request(format!("v2e-{i}"), half)))
        .chain(tokio_stream::pending());
    let status = tokio::time::timeout(HANG_GUARD, client.append_session(messages))
        .await
        .expect("refused before the client finished sending")
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("the limit is {}", limits.append_events_max)),
        "{}",
        status.message()
    );
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

/// `BatchAppend` bounds what one call holds: the open batches together may not exceed
/// the store's append size limit, and the batch that would is refused with
/// `MaximumAppendSizeExceeded` (before, each of up to 1 024 open batches could hold up
/// to 64 MiB). The call goes on serving the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_appends_bound_the_bytes_one_call_holds() {
    use prost::Message as _;
    use strata_server::proto::event_store::client::streams::batch_append_req::{
        options::ExpectedStreamPosition, Options as BatchOptions, ProposedMessage,
    };
    use strata_server::proto::event_store::client::streams::{batch_append_resp, BatchAppendReq};
    use strata_server::proto::event_store::client::MaximumAppendSizeExceeded;
    let store_options = strata::Options::small_for_tests();
    let limits = store_options.limits.clone();
    let running = start_on(ServerOptions::default(), store_options).await;
    let mut client = client(running.addr).await;
    let (requests, outgoing) = tokio::sync::mpsc::channel::<BatchAppendReq>(16);
    let mut responses = client
        .batch_append(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    // Each batch alone is well under the limit; three open at once are over it.
    let each = limits.append_size_bytes_max * 2 / 5;
    let message =
        |correlation: &ProtoUuid, stream: &str, data: Option<usize>, is_final| BatchAppendReq {
            correlation_id: Some(correlation.clone()),
            options: Some(BatchOptions {
                stream_identifier: Some(StreamIdentifier {
                    stream_name: stream.as_bytes().to_vec(),
                }),
                expected_stream_position: Some(ExpectedStreamPosition::Any(())),
                deadline_option: None,
            }),
            proposed_messages: data
                .map(|size| ProposedMessage {
                    id: Some(id()),
                    metadata: HashMap::from([
                        ("type".to_owned(), "E".to_owned()),
                        (
                            "content-type".to_owned(),
                            "application/octet-stream".to_owned(),
                        ),
                    ]),
                    custom_metadata: Vec::new(),
                    data: vec![b'x'; size],
                })
                .into_iter()
                .collect(),
            is_final,
        };
    let batches: Vec<ProtoUuid> = (0..3).map(|_| id()).collect();
    for (i, correlation) in batches.iter().enumerate() {
        let stream = format!("batch-{i}");
        requests
            .send(message(correlation, &stream, Some(each), false))
            .await
            .unwrap();
    }
    for (i, correlation) in batches.iter().enumerate() {
        let stream = format!("batch-{i}");
        requests
            .send(message(correlation, &stream, None, true))
            .await
            .unwrap();
    }
    let mut results = HashMap::new();
    while results.len() < 3 {
        let response = tokio::time::timeout(HANG_GUARD, responses.message())
            .await
            .expect("every batch is answered")
            .unwrap()
            .unwrap();
        let key = format!("{:?}", response.correlation_id);
        results.insert(key, response.result.unwrap());
    }
    for (i, correlation) in batches.iter().enumerate() {
        let result = &results[&format!("{:?}", Some(correlation.clone()))];
        match (i, result) {
            (0 | 1, batch_append_resp::Result::Success(_)) => {}
            (2, batch_append_resp::Result::Error(status)) => {
                assert_eq!(status.code, Code::InvalidArgument as i32, "{status:?}");
                let detail = status.details.as_ref().unwrap();
                assert_eq!(
                    detail.type_url,
                    "type.googleapis.com/event_store.client.MaximumAppendSizeExceeded"
                );
                let decoded = MaximumAppendSizeExceeded::decode(detail.value.as_slice()).unwrap();
                assert_eq!(
                    decoded.max_append_size as usize,
                    limits.append_size_bytes_max
                );
            }
            other => panic!("batch {i}: unexpected {other:?}"),
        }
    }
    // The call goes on: the room of the finished batches is free again.
    let next = id();
    requests
        .send(message(&next, "batch-3", Some(each), true))
        .await
        .unwrap();
    let response = tokio::time::timeout(HANG_GUARD, responses.message())
        .await
        .expect("the next batch is answered")
        .unwrap()
        .unwrap();
    assert!(
        matches!(response.result, Some(batch_append_resp::Result::Success(_))),
        "{response:?}"
    );
    drop(requests);
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_too_busy_to_scan_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = strata::Store::open(dir.path()).unwrap();
    let store = strata::Store::from_backend(std::sync::Arc::new(BusyScans(engine)));
    let running = serve_store(store, dir, ServerOptions::default()).await;
    let mut client = client(running.addr).await;
    append_one(&mut client, "hit-1", 1).await;
    let mut responses = client
        .read(filtered_read(10, "^hit-"))
        .await
        .unwrap()
        .into_inner();
    let status = loop {
        match responses.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the read ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}
