//! Persistent subscriptions on several `strata serve` nodes sharing one PostgreSQL
//! database: each group runs on one node at a time (the holder of its lease), the
//! others send consumers there with KurrentDB's not-leader error, a killed holder's
//! group moves to another node within the lease's TTL and resumes after its checkpoint,
//! and a group deleted through one node stops on the node running it.
//!
//! Each node has its own runtime, so killing it (shutting the runtime down) stops
//! everything it runs at once: no final checkpoint, no lease release.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strata::{EventData, ExpectedRevision, Store};
use strata_postgres::{PostgresOptions, PostgresStore};
use strata_server::persistent::{storage, Source};
use strata_server::proto::event_store::client::persistent_subscriptions as ps;
use strata_server::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_client::PersistentSubscriptionsClient;
use strata_server::proto::event_store::client::{uuid, Empty, StreamIdentifier, Uuid as ProtoUuid};
use strata_server::{NodeLeases, Server, ServerOptions};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use ps::{create_req, read_req, read_resp};

type Client = PersistentSubscriptionsClient<Channel>;

const TTL: Duration = Duration::from_millis(1500);
/// Upper bound on any single wait.
const WAIT: Duration = Duration::from_secs(10);

/// A node: its own runtime, connection pool, leases and server.
struct Node {
    addr: SocketAddr,
    runtime: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
}

impl Node {
    fn start(url: &str) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let url = url.to_owned();
        runtime.spawn(async move {
            let postgres = PostgresStore::connect(&url, PostgresOptions::default())
                .await
                .unwrap();
            let leases = NodeLeases {
                ttl: TTL,
                ..NodeLeases::new(Arc::new(postgres.leases()))
            };
            let options = ServerOptions {
                grpc: Some("127.0.0.1:0".parse().unwrap()),
                http: None,
                leases: Some(leases),
                ..ServerOptions::default()
            };
            let server = Server::bind(Store::from_backend(Arc::new(postgres)), options)
                .await
                .unwrap();
            addr_tx.send(server.grpc_addr().unwrap()).unwrap();
            let _ = server
                .run_until(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let addr = addr_rx.recv_timeout(WAIT).unwrap();
        Node {
            addr,
            runtime: Some(runtime),
            stop: Some(stop),
        }
    }

    async fn client(&self) -> Client {
        Client::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Stops everything the node runs at once, as a crash would.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Not a blocking drop: the test's own runtime is running here.
        self.kill();
    }
}

async fn database(prefix: &str) -> (String, Store) {
    let url = strata_postgres::cluster::fresh_database(prefix)
        .await
        .unwrap();
    let store = strata_postgres::connect(&url).await.unwrap();
    (url, store)
}

async fn append(store: &Store, stream: &str, count: usize) -> Vec<::uuid::Uuid> {
    let events: Vec<EventData> = (0..count)
        .map(|i| EventData::json("Happened", &serde_json::json!({ "i": i })).unwrap())
        .collect();
    let ids = events.iter().map(|e| e.id).collect();
    store
        .append(stream, ExpectedRevision::Any, events)
        .await
        .unwrap();
    ids
}

fn identifier(stream: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: stream.as_bytes().to_vec(),
    }
}

async fn create(client: &mut Client, stream: &str, group: &str) {
    let settings = create_req::Settings {
        max_retry_count: 10,
        min_checkpoint_count: 1,
        max_checkpoint_count: 1,
        live_buffer_size: 100,
        read_batch_size: 20,
        history_buffer_size: 100,
        message_timeout: Some(create_req::settings::MessageTimeout::MessageTimeoutMs(
            30_000,
        )),
        checkpoint_after: Some(create_req::settings::CheckpointAfter::CheckpointAfterMs(
            100,
        )),
        consumer_strategy: "RoundRobin".into(),
        ..Default::default()
    };
    let request = ps::CreateReq {
        options: Some(create_req::Options {
            stream_option: Some(create_req::options::StreamOption::Stream(
                create_req::StreamOptions {
                    stream_identifier: Some(identifier(stream)),
                    revision_option: Some(create_req::stream_options::RevisionOption::Start(
                        Empty {},
                    )),
                },
            )),
            group_name: group.into(),
            settings: Some(settings),
            ..Default::default()
        }),
    };
    client.create(request).await.unwrap();
}

struct Consumer {
    requests: mpsc::Sender<ps::ReadReq>,
    responses: Streaming<ps::ReadResp>,
    subscription_id: String,
}

async fn subscribe(client: &mut Client, stream: &str, group: &str) -> Result<Consumer, Status> {
    use read_req::options::{uuid_option, StreamOption, UuidOption};
    let (requests, rx) = mpsc::channel(64);
    let options = read_req::Options {
        stream_option: Some(StreamOption::StreamIdentifier(identifier(stream))),
        group_name: group.into(),
        buffer_size: 100,
        uuid_option: Some(UuidOption {
            content: Some(uuid_option::Content::String(Empty {})),
        }),
    };
    requests
        .send(ps::ReadReq {
            content: Some(read_req::Content::Options(options)),
        })
        .await
        .unwrap();
    let mut responses = client.read(ReceiverStream::new(rx)).await?.into_inner();
    let first = responses.message().await?.expect("a confirmation");
    let Some(read_resp::Content::SubscriptionConfirmation(confirmation)) = first.content else {
        panic!("expected a subscription confirmation, got {first:?}");
    };
    Ok(Consumer {
        requests,
        responses,
        subscription_id: confirmation.subscription_id,
    })
}

impl Consumer {
    /// The next event's id and revision.
    async fn next(&mut self) -> Result<(::uuid::Uuid, u64), Status> {
        let message = tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("an event in time")?;
        let Some(read_resp::Content::Event(event)) = message.expect("stream open").content else {
            panic!("expected an event");
        };
        let recorded = event.event.unwrap();
        let Some(uuid::Value::String(id)) = recorded.id.unwrap().value else {
            panic!("string ids")
        };
        Ok((id.parse().unwrap(), recorded.stream_revision))
    }

    async fn ack(&self, ids: &[::uuid::Uuid]) {
        let ack = read_req::Ack {
            id: self.subscription_id.clone().into_bytes(),
            ids: ids
                .iter()
                .map(|id| ProtoUuid {
                    value: Some(uuid::Value::String(id.to_string())),
                })
                .collect(),
        };
        self.requests
            .send(ps::ReadReq {
                content: Some(read_req::Content::Ack(ack)),
            })
            .await
            .unwrap();
    }
}

fn trailer(status: &Status, key: &str) -> String {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts `status` is KurrentDB's not-leader answer pointing at `leader`.
fn assert_not_leader(status: &Status, leader: SocketAddr) {
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "Leader info available");
    assert_eq!(trailer(status, "exception"), "not-leader");
    assert_eq!(
        trailer(status, "leader-endpoint-host"),
        leader.ip().to_string()
    );
    assert_eq!(
        trailer(status, "leader-endpoint-port"),
        leader.port().to_string()
    );
}

async fn checkpoint(store: &Store, stream: &str, group: &str) -> Option<u64> {
    storage::load_checkpoint(store, &Source::Stream(stream.into()), group)
        .await
        .unwrap()
}

async fn wait_for_checkpoint(store: &Store, stream: &str, group: &str, at: u64) {
    let deadline = Instant::now() + WAIT;
    while checkpoint(store, stream, group).await != Some(at) {
        assert!(Instant::now() < deadline, "checkpoint never reached {at}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_runs_on_one_node_and_the_others_send_its_consumers_there() {
    let (url, store) = database("psnodes_leader").await;
    let a = Node::start(&url);
    let b = Node::start(&url);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    // Created through B, started on A by its first consumer.
    create(&mut on_b, "orders", "g").await;
    let ids = append(&store, "orders", 10).await;
    let mut consumer = subscribe(&mut on_a, "orders", "g").await.unwrap();
    let refused = subscribe(&mut on_b, "orders", "g").await.err().unwrap();
    assert_not_leader(&refused, a.addr);

    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(consumer.next().await.unwrap().0);
    }
    assert_eq!(got, ids);
    consumer.ack(&got).await;
    wait_for_checkpoint(&store, "orders", "g", 9).await;

    // Well past the TTL, A still holds the group (it renews) and B still refuses.
    tokio::time::sleep(TTL * 2).await;
    let refused = subscribe(&mut on_b, "orders", "g").await.err().unwrap();
    assert_not_leader(&refused, a.addr);
    let more = append(&store, "orders", 5).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(consumer.next().await.unwrap());
    }
    assert_eq!(
        got,
        more.into_iter().zip(10..15).collect::<Vec<_>>(),
        "only the new events, once, from the node running the group"
    );

    // GetInfo answers on both nodes; B shows the stored checkpoint.
    let info = on_b
        .get_info(ps::GetInfoReq {
            options: Some(ps::get_info_req::Options {
                stream_option: Some(ps::get_info_req::options::StreamOption::StreamIdentifier(
                    identifier("orders"),
                )),
                group_name: "g".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription_info
        .unwrap();
    assert_eq!(info.group_name, "g");
    assert!(info.connections.is_empty(), "B runs no consumer of it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holders_group_resumes_on_another_node_after_its_checkpoint() {
    let (url, store) = database("psnodes_failover").await;
    let mut a = Node::start(&url);
    let b = Node::start(&url);
    let c = Node::start(&url);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    create(&mut on_a, "orders", "g").await;
    let ids = append(&store, "orders", 20).await;
    let mut consumer = subscribe(&mut on_a, "orders", "g").await.unwrap();
    let mut delivered = Vec::new();
    for _ in 0..20 {
        delivered.push(consumer.next().await.unwrap().0);
    }
    assert_eq!(delivered, ids);
    // Half of them finished and checkpointed; the rest were in flight at the kill.
    consumer.ack(&ids[..10]).await;
    wait_for_checkpoint(&store, "orders", "g", 9).await;

    a.kill();
    let killed_at = Instant::now();
    // While A's lease runs, the other nodes still send clients to A.
    let mut on_c = c.client().await;
    let refused = subscribe(&mut on_c, "orders", "g").await.err().unwrap();
    assert_not_leader(&refused, a.addr);
    let mut taken = loop {
        match subscribe(&mut on_b, "orders", "g").await {
            Ok(consumer) => break consumer,
            Err(status) => assert_not_leader(&status, a.addr),
        }
        assert!(killed_at.elapsed() < WAIT, "the group never moved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let takeover = killed_at.elapsed();
    eprintln!("takeover after {takeover:?} (ttl {TTL:?})");
    assert!(
        takeover < TTL + Duration::from_millis(1000),
        "took over after {takeover:?}"
    );
    // Now C is sent to B.
    let refused = subscribe(&mut on_c, "orders", "g").await.err().unwrap();
    assert_not_leader(&refused, b.addr);

    // At least once: every event not acked before the kill comes again, and nothing
    // up to the checkpoint written before the kill.
    let mut again = Vec::new();
    for _ in 0..10 {
        again.push(taken.next().await.unwrap());
    }
    assert_eq!(
        again,
        ids[10..].iter().copied().zip(10..20).collect::<Vec<_>>()
    );
    taken.ack(&ids[10..]).await;
    wait_for_checkpoint(&store, "orders", "g", 19).await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deleted_through_another_node_stops_on_its_holder() {
    let (url, store) = database("psnodes_delete").await;
    let a = Node::start(&url);
    let b = Node::start(&url);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    create(&mut on_a, "orders", "g").await;
    append(&store, "orders", 3).await;
    let mut consumer = subscribe(&mut on_a, "orders", "g").await.unwrap();
    for _ in 0..3 {
        consumer.next().await.unwrap();
    }

    let deleted_at = Instant::now();
    on_b.delete(ps::DeleteReq {
        options: Some(ps::delete_req::Options {
            stream_option: Some(ps::delete_req::options::StreamOption::StreamIdentifier(
                identifier("orders"),
            )),
            group_name: "g".into(),
        }),
    })
    .await
    .unwrap();
    // A re-reads the config at its next renewal (every TTL / 3) and drops the consumer.
    let dropped = consumer.next().await.err().unwrap();
    let stopped_after = deleted_at.elapsed();
    assert_eq!(dropped.code(), Code::Cancelled, "{dropped:?}");
    assert_eq!(
        trailer(&dropped, "exception"),
        "persistent-subscription-dropped"
    );
    assert!(stopped_after < TTL, "stopped after {stopped_after:?}");
    let gone = subscribe(&mut on_a, "orders", "g").await.err().unwrap();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(
        trailer(&gone, "exception"),
        "persistent-subscription-does-not-exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_updated_through_another_node_restarts_with_the_new_settings() {
    use ps::update_req;
    let (url, store) = database("psnodes_update").await;
    let a = Node::start(&url);
    let b = Node::start(&url);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    create(&mut on_a, "orders", "g").await;
    let ids = append(&store, "orders", 4).await;
    let mut consumer = subscribe(&mut on_a, "orders", "g").await.unwrap();
    for _ in 0..4 {
        consumer.next().await.unwrap();
    }
    consumer.ack(&ids[..2]).await;
    wait_for_checkpoint(&store, "orders", "g", 1).await;

    let updated_at = Instant::now();
    let settings = update_req::Settings {
        max_retry_count: 3,
        min_checkpoint_count: 1,
        max_checkpoint_count: 1,
        live_buffer_size: 100,
        read_batch_size: 20,
        history_buffer_size: 100,
        message_timeout: Some(update_req::settings::MessageTimeout::MessageTimeoutMs(
            30_000,
        )),
        checkpoint_after: Some(update_req::settings::CheckpointAfter::CheckpointAfterMs(
            100,
        )),
        named_consumer_strategy: update_req::ConsumerStrategy::RoundRobin as i32,
        ..Default::default()
    };
    on_b.update(ps::UpdateReq {
        options: Some(update_req::Options {
            stream_option: Some(update_req::options::StreamOption::Stream(
                update_req::StreamOptions {
                    stream_identifier: Some(identifier("orders")),
                    revision_option: Some(update_req::stream_options::RevisionOption::Start(
                        Empty {},
                    )),
                },
            )),
            group_name: "g".into(),
            settings: Some(settings),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    // A sees the change at its next renewal, drops its consumer and lets the lease go.
    let dropped = consumer.next().await.err().unwrap();
    let stopped_after = updated_at.elapsed();
    assert_eq!(dropped.code(), Code::Cancelled, "{dropped:?}");
    assert!(stopped_after < TTL, "stopped after {stopped_after:?}");

    // B can take it at once, runs it with the new settings, and resumes after the
    // checkpoint.
    // A releases the lease just after dropping its consumers: a request in between is
    // still sent to A.
    let mut moved = loop {
        match subscribe(&mut on_b, "orders", "g").await {
            Ok(consumer) => break consumer,
            Err(status) => assert_not_leader(&status, a.addr),
        }
        assert!(updated_at.elapsed() < TTL * 2, "B never got the group");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let again = vec![moved.next().await.unwrap(), moved.next().await.unwrap()];
    assert_eq!(again, vec![(ids[2], 2), (ids[3], 3)]);
    let info = on_b
        .get_info(ps::GetInfoReq {
            options: Some(ps::get_info_req::Options {
                stream_option: Some(ps::get_info_req::options::StreamOption::StreamIdentifier(
                    identifier("orders"),
                )),
                group_name: "g".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription_info
        .unwrap();
    assert_eq!(info.max_retry_count, 3);
    assert_eq!(info.connections.len(), 1, "B runs it now");
}
