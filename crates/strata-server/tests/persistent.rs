//! Persistent subscriptions through the gRPC API, with the generated tonic client:
//! group management, competing consumers, ack/nack, retries, parking, replay,
//! timeouts, checkpoints across a restart, and `$all` groups with a filter.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use strata::{EventData, ExpectedRevision, Store};
use strata_server::proto::event_store::client::persistent_subscriptions as ps;
use strata_server::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_client::PersistentSubscriptionsClient;
use strata_server::proto::event_store::client::{uuid, Empty, StreamIdentifier, Uuid as ProtoUuid};
use strata_server::metrics::{Api, ApiLabels};
use strata_server::state::ServerState;
use strata_server::{Server, ServerOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use ps::{create_req, read_req, read_resp};

type Client = PersistentSubscriptionsClient<Channel>;

/// Upper bound on any single wait; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    state: ServerState,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, options: ServerOptions) -> Running {
    start_on(Store::open(dir).unwrap(), options).await
}

async fn start_on(store: Store, options: ServerOptions) -> Running {
    let options = ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: None,
        ..options
    };
    let server = Server::bind(store, options).await.unwrap();
    let addr = server.grpc_addr().unwrap();
    let state = server.state().clone();
    let (stop, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = server
            .run_until(async move {
                let _ = signal.await;
            })
            .await;
        // This fixture keeps the server's state (and so the store) after the server
        // stops: shutdown rightly says it could not close the store itself.
        match result {
            Ok(()) | Err(strata_server::ServerError::StoreStillInUse { .. }) => {}
            Err(error) => panic!("server failed: {error}"),
        }
    });
    Running {
        addr,
        state,
        stop,
        task,
    }
}

impl Running {
    async fn client(&self) -> Client {
        PersistentSubscriptionsClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Stops the server and waits until nothing holds the store any more.
    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.state.persistent.stop_all().await;
        let store = self.state.store.clone();
        drop(self.state);
        store.close().await.unwrap();
    }
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

fn settings() -> create_req::Settings {
    create_req::Settings {
        max_retry_count: 10,
        min_checkpoint_count: 1,
        max_checkpoint_count: 1,
        max_subscriber_count: 0,
        live_buffer_size: 100,
        read_batch_size: 20,
        history_buffer_size: 100,
        message_timeout: Some(create_req::settings::MessageTimeout::MessageTimeoutMs(
            30_000,
        )),
        checkpoint_after: Some(create_req::settings::CheckpointAfter::CheckpointAfterMs(
            1_000,
        )),
        consumer_strategy: "RoundRobin".into(),
        ..Default::default()
    }
}

fn create_stream(stream: &str, group: &str, settings: create_req::Settings) -> ps::CreateReq {
    ps::CreateReq {
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
    }
}

fn create_all(
    group: &str,
    filter: Option<create_req::all_options::FilterOptions>,
) -> ps::CreateReq {
    let filter_option = match filter {
        Some(filter) => create_req::all_options::FilterOption::Filter(filter),
        None => create_req::all_options::FilterOption::NoFilter(Empty {}),
    };
    ps::CreateReq {
        options: Some(create_req::Options {
            stream_option: Some(create_req::options::StreamOption::All(
                create_req::AllOptions {
                    all_option: Some(create_req::all_options::AllOption::Start(Empty {})),
                    filter_option: Some(filter_option),
                },
            )),
            group_name: group.into(),
            settings: Some(settings()),
            ..Default::default()
        }),
    }
}

fn identifier(stream: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: stream.as_bytes().to_vec(),
    }
}

fn proto_id(id: ::uuid::Uuid) -> ProtoUuid {
    ProtoUuid {
        value: Some(uuid::Value::String(id.to_string())),
    }
}

fn info_req(stream: Option<&str>, group: &str) -> ps::GetInfoReq {
    use ps::get_info_req::options::StreamOption;
    ps::GetInfoReq {
        options: Some(ps::get_info_req::Options {
            stream_option: Some(match stream {
                Some(stream) => StreamOption::StreamIdentifier(identifier(stream)),
                None => StreamOption::All(Empty {}),
            }),
            group_name: group.into(),
        }),
    }
}

async fn info(client: &mut Client, stream: Option<&str>, group: &str) -> ps::SubscriptionInfo {
    client
        .get_info(info_req(stream, group))
        .await
        .unwrap()
        .into_inner()
        .subscription_info
        .unwrap()
}

fn replay_req(stream: &str, group: &str, stop_at: Option<i64>) -> ps::ReplayParkedReq {
    use ps::replay_parked_req::options::{StopAtOption, StreamOption};
    ps::ReplayParkedReq {
        options: Some(ps::replay_parked_req::Options {
            group_name: group.into(),
            stream_option: Some(StreamOption::StreamIdentifier(identifier(stream))),
            stop_at_option: Some(match stop_at {
                Some(n) => StopAtOption::StopAt(n),
                None => StopAtOption::NoLimit(Empty {}),
            }),
        }),
    }
}

fn delete_req(stream: &str, group: &str) -> ps::DeleteReq {
    ps::DeleteReq {
        options: Some(ps::delete_req::Options {
            stream_option: Some(ps::delete_req::options::StreamOption::StreamIdentifier(
                identifier(stream),
            )),
            group_name: group.into(),
        }),
    }
}

/// Polls `check` until it holds: the engine applies acks and nacks asynchronously to
/// other calls, so a state they lead to is awaited, not assumed.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never happened: {what}");
}

struct Consumer {
    requests: mpsc::Sender<ps::ReadReq>,
    responses: Streaming<ps::ReadResp>,
    subscription_id: String,
}

struct Delivered {
    id: ::uuid::Uuid,
    stream: String,
    revision: u64,
    commit: u64,
    retry_count: i32,
}

async fn subscribe(
    client: &mut Client,
    stream: Option<&str>,
    group: &str,
    buffer: i32,
) -> Result<Consumer, Status> {
    use read_req::options::{uuid_option, StreamOption, UuidOption};
    let (requests, rx) = mpsc::channel(64);
    let options = read_req::Options {
        stream_option: Some(match stream {
            Some(stream) => StreamOption::StreamIdentifier(identifier(stream)),
            None => StreamOption::All(Empty {}),
        }),
        group_name: group.into(),
        buffer_size: buffer,
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
    async fn next(&mut self) -> Result<Delivered, Status> {
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
        let Some(read_resp::read_event::Count::RetryCount(retry_count)) = event.count else {
            panic!("retry count")
        };
        Ok(Delivered {
            id: id.parse().unwrap(),
            stream: String::from_utf8(recorded.stream_identifier.unwrap().stream_name).unwrap(),
            revision: recorded.stream_revision,
            commit: recorded.commit_position,
            retry_count,
        })
    }

    async fn ack(&self, ids: &[::uuid::Uuid]) {
        let ack = read_req::Ack {
            id: self.subscription_id.clone().into_bytes(),
            ids: ids.iter().copied().map(proto_id).collect(),
        };
        self.requests
            .send(ps::ReadReq {
                content: Some(read_req::Content::Ack(ack)),
            })
            .await
            .unwrap();
    }

    async fn nack(&self, ids: &[::uuid::Uuid], action: read_req::nack::Action) {
        let nack = read_req::Nack {
            id: self.subscription_id.clone().into_bytes(),
            ids: ids.iter().copied().map(proto_id).collect(),
            action: action as i32,
            reason: "test".into(),
        };
        self.requests
            .send(ps::ReadReq {
                content: Some(read_req::Content::Nack(nack)),
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

#[tokio::test]
async fn create_info_list_and_delete_with_kurrentdb_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    client
        .create(create_stream("orders-1", "g", settings()))
        .await
        .unwrap();

    let exists = client
        .create(create_stream("orders-1", "g", settings()))
        .await
        .unwrap_err();
    assert_eq!(exists.code(), Code::AlreadyExists);
    assert_eq!(
        exists.message(),
        "Subscription group g on stream orders-1 exists."
    );
    assert_eq!(
        trailer(&exists, "exception"),
        "persistent-subscription-exists"
    );

    let info = info(&mut client, Some("orders-1"), "g").await;
    assert_eq!(info.event_source, "orders-1");
    assert_eq!(info.group_name, "g");
    assert_eq!(info.named_consumer_strategy, "RoundRobin");
    assert_eq!(info.max_retry_count, 10);
    assert_eq!(info.message_timeout_milliseconds, 30_000);
    assert_eq!(info.start_from, "0");

    client.create(create_all("everything", None)).await.unwrap();
    let all = ps::ListReq {
        options: Some(ps::list_req::Options {
            list_option: Some(ps::list_req::options::ListOption::ListAllSubscriptions(
                Empty {},
            )),
        }),
    };
    let listed = client
        .list(all.clone())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let mut names: Vec<_> = listed
        .iter()
        .map(|s| (s.event_source.clone(), s.group_name.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("$all".to_owned(), "everything".to_owned()),
            ("orders-1".to_owned(), "g".to_owned())
        ]
    );
    let for_stream = ps::ListReq {
        options: Some(ps::list_req::Options {
            list_option: Some(ps::list_req::options::ListOption::ListForStream(
                ps::list_req::StreamOption {
                    stream_option: Some(ps::list_req::stream_option::StreamOption::Stream(
                        identifier("orders-1"),
                    )),
                },
            )),
        }),
    };
    let listed = client
        .list(for_stream)
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_name, "g");

    client.delete(delete_req("orders-1", "g")).await.unwrap();
    let missing = client
        .get_info(info_req(Some("orders-1"), "g"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.message(),
        "Subscription group g on stream orders-1 does not exist."
    );
    assert_eq!(
        trailer(&missing, "exception"),
        "persistent-subscription-does-not-exist"
    );
    assert_eq!(trailer(&missing, "group-name"), "g");
    assert_eq!(
        client
            .delete(delete_req("orders-1", "g"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let read = subscribe(&mut client, Some("orders-1"), "g", 10)
        .await
        .err()
        .unwrap();
    assert_eq!(read.code(), Code::NotFound);
    // The name is free again.
    client
        .create(create_stream("orders-1", "g", settings()))
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn bad_settings_are_invalid_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    let negative = create_req::Settings {
        max_retry_count: -1,
        ..settings()
    };
    let error = client
        .create(create_stream("s", "g", negative))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let strategy = create_req::Settings {
        consumer_strategy: "Nobody".into(),
        ..settings()
    };
    assert_eq!(
        client
            .create(create_stream("s", "g", strategy))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let bad_regex = create_req::all_options::FilterOptions {
        filter: Some(
            create_req::all_options::filter_options::Filter::StreamIdentifier(
                create_req::all_options::filter_options::Expression {
                    regex: "(".into(),
                    prefix: vec![],
                },
            ),
        ),
        ..Default::default()
    };
    assert_eq!(
        client
            .create(create_all("g", Some(bad_regex)))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Nothing was created by the failures.
    assert_eq!(
        client
            .get_info(info_req(Some("s"), "g"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    server.shutdown().await;
}

#[tokio::test]
async fn competing_consumers_share_events_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    let ids = append(&server.state.store, "jobs", 40).await;
    client
        .create(create_stream("jobs", "workers", settings()))
        .await
        .unwrap();

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    for worker in 0..2 {
        let mut consumer = subscribe(&mut client, Some("jobs"), "workers", 4)
            .await
            .unwrap();
        let seen_tx = seen_tx.clone();
        tokio::spawn(async move {
            while let Ok(event) = consumer.next().await {
                consumer.ack(&[event.id]).await;
                if seen_tx.send((worker, event.id, event.retry_count)).is_err() {
                    break;
                }
            }
        });
    }
    let mut received = Vec::new();
    let mut per_worker = [0; 2];
    while received.len() < ids.len() {
        let (worker, id, retry_count) = tokio::time::timeout(WAIT, seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retry_count, 0, "acked events are never redelivered");
        per_worker[worker] += 1;
        received.push(id);
    }
    let unique: HashSet<_> = received.iter().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "an event went to both consumers"
    );
    assert_eq!(unique, ids.iter().collect());
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both consumers got work: {per_worker:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn nack_retry_redelivers_then_parks_after_max_retries_and_replay_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    let poison = append(&server.state.store, "mail", 1).await[0];
    let settings = create_req::Settings {
        max_retry_count: 2,
        ..settings()
    };
    client
        .create(create_stream("mail", "g", settings))
        .await
        .unwrap();
    let mut consumer = subscribe(&mut client, Some("mail"), "g", 10).await.unwrap();
    assert_eq!(consumer.subscription_id, "mail::g");

    for expected_retry in 0..=2 {
        let event = consumer.next().await.unwrap();
        assert_eq!((event.id, event.retry_count), (poison, expected_retry));
        consumer
            .nack(&[event.id], read_req::nack::Action::Retry)
            .await;
    }
    // The third retry would exceed max_retry_count: parked, not delivered.
    eventually("the poison event is parked", || {
        let mut client = client.clone();
        async move {
            info(&mut client, Some("mail"), "g")
                .await
                .parked_message_count
                == 1
        }
    })
    .await;
    let next = append(&server.state.store, "mail", 1).await[0];
    let event = consumer.next().await.unwrap();
    assert_eq!(
        (event.id, event.retry_count),
        (next, 0),
        "the group moves on past the parked event"
    );
    consumer.ack(&[next]).await;

    client
        .replay_parked(replay_req("mail", "g", None))
        .await
        .unwrap();
    let replayed = consumer.next().await.unwrap();
    assert_eq!((replayed.id, replayed.retry_count), (poison, 0));
    assert_eq!(replayed.revision, 0);
    consumer.ack(&[poison]).await;
    let info = info(&mut client, Some("mail"), "g").await;
    assert_eq!(info.parked_message_count, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn nack_park_and_replay_with_stop_at() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    let ids = append(&server.state.store, "parcels", 3).await;
    client
        .create(create_stream("parcels", "g", settings()))
        .await
        .unwrap();
    let mut consumer = subscribe(&mut client, Some("parcels"), "g", 10)
        .await
        .unwrap();
    for id in &ids {
        let event = consumer.next().await.unwrap();
        assert_eq!(event.id, *id);
        consumer
            .nack(&[event.id], read_req::nack::Action::Park)
            .await;
    }
    eventually("three events parked", || {
        let mut client = client.clone();
        async move {
            info(&mut client, Some("parcels"), "g")
                .await
                .parked_message_count
                == 3
        }
    })
    .await;
    client
        .replay_parked(replay_req("parcels", "g", Some(2)))
        .await
        .unwrap();
    for id in &ids[..2] {
        let event = consumer.next().await.unwrap();
        assert_eq!(event.id, *id);
        consumer.ack(&[event.id]).await;
    }
    assert_eq!(
        info(&mut client, Some("parcels"), "g")
            .await
            .parked_message_count,
        1
    );
    client
        .replay_parked(replay_req("parcels", "g", None))
        .await
        .unwrap();
    let last = consumer.next().await.unwrap();
    assert_eq!(last.id, ids[2]);
    server.shutdown().await;
}

#[tokio::test]
async fn unacked_events_are_redelivered_after_the_message_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    let id = append(&server.state.store, "slow", 1).await[0];
    let settings = create_req::Settings {
        message_timeout: Some(create_req::settings::MessageTimeout::MessageTimeoutMs(100)),
        ..settings()
    };
    client
        .create(create_stream("slow", "g", settings))
        .await
        .unwrap();
    let mut consumer = subscribe(&mut client, Some("slow"), "g", 10).await.unwrap();
    let first = consumer.next().await.unwrap();
    assert_eq!((first.id, first.retry_count), (id, 0));
    // No ack: the timeout hands it out again, counted as a retry.
    let again = consumer.next().await.unwrap();
    assert_eq!((again.id, again.retry_count), (id, 1));
    consumer.ack(&[id]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn checkpoint_survives_a_restart_and_the_group_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let ids;
    {
        let server = start(dir.path(), ServerOptions::default()).await;
        let mut client = server.client().await;
        ids = append(&server.state.store, "ledger", 5).await;
        client
            .create(create_stream("ledger", "g", settings()))
            .await
            .unwrap();
        let mut consumer = subscribe(&mut client, Some("ledger"), "g", 1)
            .await
            .unwrap();
        for id in &ids[..3] {
            let event = consumer.next().await.unwrap();
            assert_eq!(event.id, *id);
            consumer.ack(&[event.id]).await;
        }
        eventually("the checkpoint reaches revision 2", || {
            let mut client = client.clone();
            async move {
                info(&mut client, Some("ledger"), "g")
                    .await
                    .last_checkpointed_event_position
                    == "2"
            }
        })
        .await;
        drop(consumer);
        server.shutdown().await;
    }
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    let info = info(&mut client, Some("ledger"), "g").await;
    assert_eq!(info.last_checkpointed_event_position, "2");
    let mut consumer = subscribe(&mut client, Some("ledger"), "g", 10)
        .await
        .unwrap();
    for id in &ids[3..] {
        let event = consumer.next().await.unwrap();
        assert_eq!(event.id, *id, "resumes right after the checkpoint");
        consumer.ack(&[event.id]).await;
    }
    let later = append(&server.state.store, "ledger", 1).await[0];
    assert_eq!(consumer.next().await.unwrap().id, later);
    server.shutdown().await;
}

#[tokio::test]
async fn all_group_with_a_filter_gets_only_matching_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    let filter = create_req::all_options::FilterOptions {
        filter: Some(
            create_req::all_options::filter_options::Filter::StreamIdentifier(
                create_req::all_options::filter_options::Expression {
                    regex: "^acct-".into(),
                    prefix: vec![],
                },
            ),
        ),
        window: Some(create_req::all_options::filter_options::Window::Max(32)),
        checkpoint_interval_multiplier: 1,
    };
    client
        .create(create_all("accounts", Some(filter)))
        .await
        .unwrap();
    let a = append(&server.state.store, "acct-1", 2).await;
    append(&server.state.store, "other-1", 3).await;
    let b = append(&server.state.store, "acct-2", 1).await;
    let mut consumer = subscribe(&mut client, None, "accounts", 10).await.unwrap();
    assert_eq!(consumer.subscription_id, "$all::accounts");
    let mut commits = Vec::new();
    for (id, stream) in [(a[0], "acct-1"), (a[1], "acct-1"), (b[0], "acct-2")] {
        let event = consumer.next().await.unwrap();
        assert_eq!((event.id, event.stream.as_str()), (id, stream));
        consumer.ack(&[event.id]).await;
        commits.push(event.commit);
    }
    assert!(commits.windows(2).all(|w| w[0] < w[1]));
    let last_commit = commits[2];
    eventually(
        "the $all checkpoint is the last acked commit position",
        || {
            let mut client = client.clone();
            async move {
                info(&mut client, None, "accounts")
                    .await
                    .last_checkpointed_event_position
                    == format!("C:{last_commit}/P:{last_commit}")
            }
        },
    )
    .await;
    assert_eq!(
        info(&mut client, None, "accounts").await.start_from,
        "C:0/P:0"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subscriber_limits_and_dropped_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions {
        max_subscriptions_per_connection: 2,
        ..ServerOptions::default()
    };
    let server = start(dir.path(), options).await;
    let mut client = server.client().await;
    let single = create_req::Settings {
        max_subscriber_count: 1,
        ..settings()
    };
    client
        .create(create_stream("s", "one", single))
        .await
        .unwrap();
    client
        .create(create_stream("s", "other", settings()))
        .await
        .unwrap();
    let mut first = subscribe(&mut client, Some("s"), "one", 10).await.unwrap();
    let full = subscribe(&mut client, Some("s"), "one", 10)
        .await
        .err()
        .unwrap();
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert_eq!(trailer(&full, "exception"), "maximum-subscribers-reached");

    let _second = subscribe(&mut client, Some("s"), "other", 10)
        .await
        .unwrap();
    // Each session counts itself before it confirms.
    let open = || {
        server
            .state
            .metrics
            .subscriptions_open
            .get_or_create(&ApiLabels { api: Api::Grpc })
            .get()
    };
    assert_eq!(open(), 2);
    let third = subscribe(&mut client, Some("s"), "other", 10)
        .await
        .err()
        .unwrap();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    // Another connection has its own allowance.
    let mut other_client = server.client().await;
    drop(
        subscribe(&mut other_client, Some("s"), "other", 10)
            .await
            .unwrap(),
    );

    client.delete(delete_req("s", "one")).await.unwrap();
    let dropped = first.next().await.err().unwrap();
    assert_eq!(dropped.code(), Code::Cancelled);
    assert_eq!(
        trailer(&dropped, "exception"),
        "persistent-subscription-dropped"
    );
    eventually("only the second consumer is counted as open", || async {
        open() == 1
    })
    .await;
    server.shutdown().await;
}

/// Checkpoint, parked events and config survive a restart, on whatever backend `open`
/// opens (each call opens the same store anew).
async fn durable_state_survives_a_restart<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let ids;
    {
        let server = start_on(open().await, ServerOptions::default()).await;
        let mut client = server.client().await;
        ids = append(&server.state.store, "orders", 3).await;
        client
            .create(create_stream("orders", "g", settings()))
            .await
            .unwrap();
        let mut consumer = subscribe(&mut client, Some("orders"), "g", 1)
            .await
            .unwrap();
        let first = consumer.next().await.unwrap();
        consumer
            .nack(&[first.id], read_req::nack::Action::Park)
            .await;
        let second = consumer.next().await.unwrap();
        consumer.ack(&[second.id]).await;
        eventually("event 0 parked and the checkpoint at 1", || {
            let mut client = client.clone();
            async move {
                let info = info(&mut client, Some("orders"), "g").await;
                info.parked_message_count == 1 && info.last_checkpointed_event_position == "1"
            }
        })
        .await;
        drop(consumer);
        server.shutdown().await;
    }
    let server = start_on(open().await, ServerOptions::default()).await;
    let mut client = server.client().await;
    let info = info(&mut client, Some("orders"), "g").await;
    assert_eq!(
        (
            info.parked_message_count,
            info.last_checkpointed_event_position.as_str()
        ),
        (1, "1")
    );
    assert_eq!(
        info.named_consumer_strategy, "RoundRobin",
        "the config was reloaded"
    );
    let mut consumer = subscribe(&mut client, Some("orders"), "g", 1)
        .await
        .unwrap();
    let third = consumer.next().await.unwrap();
    assert_eq!(third.id, ids[2], "resumes after the checkpoint");
    consumer.ack(&[third.id]).await;
    client
        .replay_parked(replay_req("orders", "g", None))
        .await
        .unwrap();
    let parked = consumer.next().await.unwrap();
    assert_eq!(
        parked.id, ids[0],
        "the parked event is replayed after the restart"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn durable_state_survives_a_restart_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    durable_state_survives_a_restart(|| {
        let path = path.clone();
        async move { Store::open(&path).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_state_survives_a_restart_postgres() {
    let url = strata_postgres::cluster::fresh_database("persistent")
        .await
        .expect("PostgreSQL is needed for this test");
    durable_state_survives_a_restart(|| {
        let url = url.clone();
        async move { strata_postgres::connect(&url).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn all_group_without_filter_skips_the_groups_own_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), ServerOptions::default()).await;
    let mut client = server.client().await;
    // Writes config, checkpoint and parked-marker events before any user event.
    client.create(create_all("everything", None)).await.unwrap();
    let ids = append(&server.state.store, "x", 2).await;
    let mut consumer = subscribe(&mut client, None, "everything", 10)
        .await
        .unwrap();
    for id in &ids {
        let event = consumer.next().await.unwrap();
        assert_eq!((event.stream.as_str(), event.id), ("x", *id));
        consumer.ack(&[event.id]).await;
    }
    // The checkpoints those acks write are not delivered either: the next event is
    // the next user event.
    eventually("the checkpoint moves", || {
        let mut client = client.clone();
        async move {
            !info(&mut client, None, "everything")
                .await
                .last_checkpointed_event_position
                .is_empty()
        }
    })
    .await;
    let later = append(&server.state.store, "x", 1).await[0];
    assert_eq!(consumer.next().await.unwrap().id, later);
    server.shutdown().await;
}
