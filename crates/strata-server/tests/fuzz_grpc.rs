//! Fuzz target for the gRPC API: the request messages of every call strata serves,
//! encoded by prost from realistic requests, mutated as bytes and sent raw to a running
//! server over loopback. The server decodes them (prost) and converts them to strata's
//! types; whatever arrives, it must answer with a status or a response, never panic,
//! and keep serving. The budget comes from the environment (`strata::fuzz`;
//! `scripts/fuzz.sh` runs long passes).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use strata::fuzz::{mutation, run, Mutation};
use strata::{EventData, ExpectedRevision, Position, SubscribeFrom};
use strata_server::grpc::requests;
use strata_server::proto::event_store::client::persistent_subscriptions as ps;
use strata_server::proto::event_store::client::streams::{
    batch_append_req, delete_req, read_req, tombstone_req, BatchAppendReq, DeleteReq, ReadReq,
    TombstoneReq,
};
use strata_server::proto::event_store::client::{Empty, StreamIdentifier};
use strata_server::proto::kurrentdb::protocol::v2::streams as v2;
use strata_server::{Server, ServerOptions};
use tonic::transport::Channel;

/// Default cases in the normal test suite (each is a call over loopback).
const QUICK: u64 = 256;

/// Panics anywhere in this process (server tasks included) since it started.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn id(n: u128) -> strata_server::proto::event_store::client::Uuid {
    strata_server::grpc::convert::uuid_string(uuid::Uuid::from_u128(n))
}

fn stream(name: &str) -> Option<StreamIdentifier> {
    Some(StreamIdentifier {
        stream_name: name.as_bytes().to_vec(),
    })
}

fn encode_all<M: Message>(messages: &[M]) -> Vec<Vec<u8>> {
    messages.iter().map(Message::encode_to_vec).collect()
}

/// One call: its path, and sequences of request messages a client could send on it.
struct Method {
    path: &'static str,
    seeds: Vec<Vec<Vec<u8>>>,
}

fn read_requests() -> Vec<Vec<Vec<u8>>> {
    use read_req::options::{
        filter_options, stream_options, CountOption, FilterOption, FilterOptions, ReadDirection,
        StreamOption, StreamOptions, UuidOption,
    };
    let mut stream_read = requests::subscribe_all(SubscribeFrom::Start);
    let options = stream_read.options.as_mut().unwrap();
    options.stream_option = Some(StreamOption::Stream(StreamOptions {
        stream_identifier: stream("fz-1"),
        revision_option: Some(stream_options::RevisionOption::Revision(1)),
    }));
    options.count_option = Some(CountOption::Count(10));
    options.read_direction = ReadDirection::Backwards as i32;
    options.uuid_option = Some(UuidOption {
        content: Some(read_req::options::uuid_option::Content::Structured(
            Empty {},
        )),
    });
    let mut filtered = requests::subscribe_all(SubscribeFrom::After(Position(2)));
    let options = filtered.options.as_mut().unwrap();
    options.count_option = Some(CountOption::Count(100));
    options.filter_option = Some(FilterOption::Filter(FilterOptions {
        filter: Some(filter_options::Filter::StreamIdentifier(
            filter_options::Expression {
                regex: "^(?!\\$)".into(),
                prefix: Vec::new(),
            },
        )),
        window: Some(filter_options::Window::Max(32)),
        checkpoint_interval_multiplier: 2,
    }));
    let mut by_prefix = filtered.clone();
    if let Some(FilterOption::Filter(filter)) =
        &mut by_prefix.options.as_mut().unwrap().filter_option
    {
        filter.filter = Some(filter_options::Filter::EventType(
            filter_options::Expression {
                regex: String::new(),
                prefix: vec!["Pla".into(), "$".into()],
            },
        ));
    }
    let subscription = requests::subscribe_all(SubscribeFrom::End);
    [stream_read, filtered, by_prefix, subscription]
        .into_iter()
        .map(|request: ReadReq| vec![request.encode_to_vec()])
        .collect()
}

fn append_requests() -> Vec<Vec<Vec<u8>>> {
    let events = vec![
        EventData::json("Placed", &serde_json::json!({"n": 1})).unwrap(),
        EventData::binary("Blob", vec![0u8, 1, 2]).with_metadata(&b"{\"m\":1}"[..]),
    ];
    let metadata = EventData::new(
        "$metadata",
        &br#"{"$maxCount": 3, "$acl": {"$r": "a"}}"#[..],
        strata::ContentType::Json,
    );
    vec![
        encode_all(&requests::append("fz-1", ExpectedRevision::Any, &events)),
        encode_all(&requests::append(
            "fz-2",
            ExpectedRevision::NoStream,
            &events[..1],
        )),
        encode_all(&requests::append(
            "$$fz-1",
            ExpectedRevision::Any,
            &[metadata],
        )),
    ]
}

fn batch_requests() -> Vec<Vec<Vec<u8>>> {
    let proposed = |n: u128| batch_append_req::ProposedMessage {
        id: Some(id(n)),
        metadata: HashMap::from([
            ("type".to_owned(), "Placed".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]),
        custom_metadata: Vec::new(),
        data: b"{\"n\":1}".to_vec(),
    };
    let first = BatchAppendReq {
        correlation_id: Some(id(7)),
        options: Some(batch_append_req::Options {
            stream_identifier: stream("fz-3"),
            expected_stream_position: Some(batch_append_req::options::ExpectedStreamPosition::Any(
                (),
            )),
            ..Default::default()
        }),
        proposed_messages: vec![proposed(1)],
        is_final: false,
    };
    let last = BatchAppendReq {
        correlation_id: Some(id(7)),
        options: None,
        proposed_messages: vec![proposed(2)],
        is_final: true,
    };
    vec![encode_all(&[first, last])]
}

/// The messages of one call, each encoded.
type Messages = Vec<Vec<u8>>;

fn delete_requests() -> (Vec<Messages>, Vec<Messages>) {
    let delete = DeleteReq {
        options: Some(delete_req::Options {
            stream_identifier: stream("fz-2"),
            expected_stream_revision: Some(delete_req::options::ExpectedStreamRevision::Any(
                Empty {},
            )),
        }),
    };
    let tombstone = TombstoneReq {
        options: Some(tombstone_req::Options {
            stream_identifier: stream("fz-9"),
            expected_stream_revision: Some(
                tombstone_req::options::ExpectedStreamRevision::Revision(0),
            ),
        }),
    };
    (
        vec![vec![delete.encode_to_vec()]],
        vec![vec![tombstone.encode_to_vec()]],
    )
}

#[allow(deprecated)]
fn persistent_requests() -> Vec<Method> {
    let settings = ps::create_req::Settings {
        max_retry_count: 3,
        live_buffer_size: 16,
        read_batch_size: 8,
        history_buffer_size: 16,
        max_checkpoint_count: 10,
        min_checkpoint_count: 1,
        max_subscriber_count: 4,
        consumer_strategy: "RoundRobin".into(),
        message_timeout: Some(ps::create_req::settings::MessageTimeout::MessageTimeoutMs(
            1000,
        )),
        checkpoint_after: Some(
            ps::create_req::settings::CheckpointAfter::CheckpointAfterTicks(10_000_000),
        ),
        ..Default::default()
    };
    let create_stream = ps::CreateReq {
        options: Some(ps::create_req::Options {
            stream_option: Some(ps::create_req::options::StreamOption::Stream(
                ps::create_req::StreamOptions {
                    stream_identifier: stream("fz-1"),
                    revision_option: Some(ps::create_req::stream_options::RevisionOption::Start(
                        Empty {},
                    )),
                },
            )),
            group_name: "g".into(),
            settings: Some(settings.clone()),
            ..Default::default()
        }),
    };
    let create_all = ps::CreateReq {
        options: Some(ps::create_req::Options {
            stream_option: Some(ps::create_req::options::StreamOption::All(
                ps::create_req::AllOptions {
                    all_option: Some(ps::create_req::all_options::AllOption::Start(Empty {})),
                    filter_option: Some(ps::create_req::all_options::FilterOption::Filter(
                        ps::create_req::all_options::FilterOptions {
                            filter: Some(
                                ps::create_req::all_options::filter_options::Filter::EventType(
                                    ps::create_req::all_options::filter_options::Expression {
                                        regex: "^Pl".into(),
                                        prefix: Vec::new(),
                                    },
                                ),
                            ),
                            window: Some(ps::create_req::all_options::filter_options::Window::Max(
                                10,
                            )),
                            checkpoint_interval_multiplier: 1,
                        },
                    )),
                },
            )),
            group_name: "h".into(),
            settings: Some(settings),
            ..Default::default()
        }),
    };
    let update = ps::UpdateReq {
        options: Some(ps::update_req::Options {
            stream_option: Some(ps::update_req::options::StreamOption::Stream(
                ps::update_req::StreamOptions {
                    stream_identifier: stream("fz-1"),
                    revision_option: Some(ps::update_req::stream_options::RevisionOption::End(
                        Empty {},
                    )),
                },
            )),
            group_name: "g".into(),
            settings: Some(ps::update_req::Settings {
                max_retry_count: 5,
                live_buffer_size: 16,
                read_batch_size: 8,
                history_buffer_size: 16,
                max_checkpoint_count: 10,
                min_checkpoint_count: 1,
                max_subscriber_count: 4,
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let delete = ps::DeleteReq {
        options: Some(ps::delete_req::Options {
            stream_option: Some(ps::delete_req::options::StreamOption::StreamIdentifier(
                StreamIdentifier {
                    stream_name: b"fz-1".to_vec(),
                },
            )),
            group_name: "zz".into(),
        }),
    };
    let info = ps::GetInfoReq {
        options: Some(ps::get_info_req::Options {
            stream_option: Some(ps::get_info_req::options::StreamOption::StreamIdentifier(
                StreamIdentifier {
                    stream_name: b"fz-1".to_vec(),
                },
            )),
            group_name: "g".into(),
        }),
    };
    let replay = ps::ReplayParkedReq {
        options: Some(ps::replay_parked_req::Options {
            stream_option: Some(
                ps::replay_parked_req::options::StreamOption::StreamIdentifier(StreamIdentifier {
                    stream_name: b"fz-1".to_vec(),
                }),
            ),
            group_name: "g".into(),
            stop_at_option: Some(ps::replay_parked_req::options::StopAtOption::StopAt(5)),
        }),
    };
    let list = ps::ListReq {
        options: Some(ps::list_req::Options {
            list_option: Some(ps::list_req::options::ListOption::ListAllSubscriptions(
                Empty {},
            )),
        }),
    };
    let read = vec![
        ps::ReadReq {
            content: Some(ps::read_req::Content::Options(ps::read_req::Options {
                stream_option: Some(ps::read_req::options::StreamOption::StreamIdentifier(
                    StreamIdentifier {
                        stream_name: b"fz-1".to_vec(),
                    },
                )),
                group_name: "g".into(),
                buffer_size: 4,
                uuid_option: Some(ps::read_req::options::UuidOption {
                    content: Some(ps::read_req::options::uuid_option::Content::String(
                        Empty {},
                    )),
                }),
            })),
        },
        ps::ReadReq {
            content: Some(ps::read_req::Content::Nack(ps::read_req::Nack {
                id: Vec::new(),
                ids: vec![id(1)],
                action: ps::read_req::nack::Action::Park as i32,
                reason: "fuzz".into(),
            })),
        },
    ];
    vec![
        Method {
            path: "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Create",
            seeds: vec![
                vec![create_stream.encode_to_vec()],
                vec![create_all.encode_to_vec()],
            ],
        },
        Method {
            path: "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Update",
            seeds: vec![vec![update.encode_to_vec()]],
        },
        Method {
            path: "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Delete",
            seeds: vec![vec![delete.encode_to_vec()]],
        },
        Method {
            path: "/event_store.client.persistent_subscriptions.PersistentSubscriptions/GetInfo",
            seeds: vec![vec![info.encode_to_vec()]],
        },
        Method {
            path:
                "/event_store.client.persistent_subscriptions.PersistentSubscriptions/ReplayParked",
            seeds: vec![vec![replay.encode_to_vec()]],
        },
        Method {
            path: "/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
            seeds: vec![vec![list.encode_to_vec()]],
        },
        Method {
            path: "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read",
            seeds: vec![encode_all(&read)],
        },
    ]
}

fn v2_requests() -> Vec<Method> {
    let record = |stream: &str, format: v2::SchemaFormat| v2::AppendRecord {
        record_id: Some(uuid::Uuid::from_u128(99).to_string()),
        properties: HashMap::from([
            (
                "who".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("fuzz".into())),
                },
            ),
            (
                "n".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::ListValue(
                        prost_types::ListValue {
                            values: vec![prost_types::Value {
                                kind: Some(prost_types::value::Kind::NumberValue(1.5)),
                            }],
                        },
                    )),
                },
            ),
        ]),
        schema: Some(v2::SchemaInfo {
            format: format as i32,
            name: "Placed".into(),
            id: None,
        }),
        data: b"{\"n\":1}".to_vec(),
        stream: stream.into(),
    };
    let records = v2::AppendRecordsRequest {
        records: vec![
            record("fz-4", v2::SchemaFormat::Json),
            record("fz-5", v2::SchemaFormat::Bytes),
        ],
        checks: vec![v2::ConsistencyCheck {
            r#type: Some(v2::consistency_check::Type::StreamState(
                v2::consistency_check::StreamStateCheck {
                    stream: "fz-6".into(),
                    expected_state: -1,
                },
            )),
        }],
    };
    let session = vec![
        v2::AppendRequest {
            stream: "fz-7".into(),
            records: vec![record("", v2::SchemaFormat::Json)],
            expected_revision: Some(-2),
        },
        v2::AppendRequest {
            stream: "fz-8".into(),
            records: vec![record("", v2::SchemaFormat::Protobuf)],
            expected_revision: None,
        },
    ];
    vec![
        Method {
            path: "/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords",
            seeds: vec![vec![records.encode_to_vec()]],
        },
        Method {
            path: "/kurrentdb.protocol.v2.streams.StreamsService/AppendSession",
            seeds: vec![encode_all(&session)],
        },
    ]
}

fn methods() -> &'static Vec<Method> {
    static METHODS: OnceLock<Vec<Method>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let (delete, tombstone) = delete_requests();
        let mut methods = vec![
            Method {
                path: "/event_store.client.streams.Streams/Read",
                seeds: read_requests(),
            },
            Method {
                path: "/event_store.client.streams.Streams/Append",
                seeds: append_requests(),
            },
            Method {
                path: "/event_store.client.streams.Streams/BatchAppend",
                seeds: batch_requests(),
            },
            Method {
                path: "/event_store.client.streams.Streams/Delete",
                seeds: delete,
            },
            Method {
                path: "/event_store.client.streams.Streams/Tombstone",
                seeds: tombstone,
            },
        ];
        methods.extend(persistent_requests());
        methods.extend(v2_requests());
        methods
    })
}

/// One call: which method, which seed, which of its messages is mutated and how.
#[derive(Clone, Debug)]
struct Call {
    method: usize,
    seed: Index,
    message: Index,
    mutations: Vec<Mutation>,
    /// Random bytes sent as one more message, or as the only one.
    extra: Option<(bool, Vec<u8>)>,
}

impl Call {
    fn path(&self) -> &'static str {
        methods()[self.method].path
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        let seeds = &methods()[self.method].seeds;
        let mut messages = self.seed.get(seeds).clone();
        let all: Vec<Vec<u8>> = seeds.iter().flatten().cloned().collect();
        if !messages.is_empty() {
            let target = self.message.get_mut(&mut messages);
            for mutation in &self.mutations {
                mutation.apply(target, &all);
            }
        }
        match &self.extra {
            Some((true, bytes)) => vec![bytes.clone()],
            Some((false, bytes)) => {
                messages.push(bytes.clone());
                messages
            }
            None => messages,
        }
    }
}

fn call() -> impl Strategy<Value = Call> {
    (
        0..methods().len(),
        any::<Index>(),
        any::<Index>(),
        proptest::collection::vec(mutation(), 0..8),
        proptest::option::weighted(
            0.1,
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)),
        ),
    )
        .prop_map(|(method, seed, message, mutations, extra)| Call {
            method,
            seed,
            message,
            mutations,
            extra,
        })
}

/// Raw bytes in, raw bytes out: the server's own decoding is what is fuzzed.
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

/// Sends `messages` on `path` and reads a few answers. A subscription never ends by
/// itself: it is dropped once it has been quiet for a moment.
async fn send(channel: Channel, path: &'static str, messages: Vec<Vec<u8>>) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let response = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(messages)),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await;
    let Ok(response) = response else {
        return;
    };
    let mut answers = response.into_inner();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(50), answers.message()).await {
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
    }
}

struct Running {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
    let options = ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: None,
        ..ServerOptions::default()
    };
    let server = Server::bind(store, options).await.unwrap();
    let addr = server.grpc_addr().unwrap();
    tokio::spawn(server.run_until(std::future::pending::<()>()));
    Running { addr, _dir: dir }
}

#[test]
fn fuzz_grpc_requests() {
    count_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt.block_on(start());
    let channel = rt.block_on(async {
        Channel::from_shared(format!("http://{}", running.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    // Some state for the calls to work on.
    rt.block_on(async {
        for messages in append_requests() {
            send(
                channel.clone(),
                "/event_store.client.streams.Streams/Append",
                messages,
            )
            .await;
        }
    });
    run("grpc_requests", QUICK, call(), |call| {
        let before = PANICS.load(Ordering::SeqCst);
        rt.block_on(send(channel.clone(), call.path(), call.messages()));
        let after = PANICS.load(Ordering::SeqCst);
        prop_assert_eq!(after, before, "the server panicked on {}", call.path());
        Ok(())
    });
    // The server still serves.
    rt.block_on(async {
        let events = [EventData::json("Alive", &serde_json::json!({})).unwrap()];
        let mut client =
            strata_server::proto::event_store::client::streams::streams_client::StreamsClient::new(
                channel.clone(),
            );
        let response = client
            .append(tokio_stream::iter(requests::append(
                "still-alive",
                ExpectedRevision::Any,
                &events,
            )))
            .await;
        assert!(response.is_ok(), "{response:?}");
    });
}
