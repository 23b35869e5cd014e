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
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
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
