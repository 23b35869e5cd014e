//! Two `strata serve` nodes sharing one PostgreSQL database: what a client appends
//! through one node is read and delivered live, in the same global order, through the
//! other (woken by PostgreSQL's notifications, not by polling alone).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use strata::{EventData, ExpectedRevision, SubscribeFrom};
use strata_server::grpc::requests;
use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
use strata_server::proto::event_store::client::streams::{append_resp, read_resp, AppendReq};
use strata_server::{Server, ServerOptions};

async fn node(
    url: &str,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), strata_server::ServerError>>,
) {
    let store = strata_postgres::connect(url).await.unwrap();
    let options = ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: None,
        ..ServerOptions::default()
    };
    let server = Server::bind(store, options).await.unwrap();
    let addr = server.grpc_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

fn append_request(stream: &str, n: u64) -> Vec<AppendReq> {
    let event = EventData::json("E", &serde_json::json!({ "n": n })).unwrap();
    requests::append(stream, ExpectedRevision::Any, &[event])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_one_node_reach_subscribers_of_another_in_order() {
    let url = strata_postgres::cluster::fresh_database("multinode")
        .await
        .expect("PostgreSQL is needed for this test");
    let (a, stop_a, task_a) = node(&url).await;
    let (b, stop_b, task_b) = node(&url).await;

    // A live subscription to $all on node B, from the end.
    let mut reader = StreamsClient::connect(format!("http://{b}")).await.unwrap();
    let request = requests::subscribe_all(SubscribeFrom::End);
    let mut live = reader.read(request).await.unwrap().into_inner();
    // Wait for the confirmation and the caught-up marker before writing.
    loop {
        if let Some(read_resp::Content::CaughtUp(_)) =
            live.message().await.unwrap().unwrap().content
        {
            break;
        }
    }

    // Four writers through node A.
    const WRITERS: u64 = 4;
    const APPENDS: u64 = 50;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(tokio::spawn(async move {
            let mut client = StreamsClient::connect(format!("http://{a}")).await.unwrap();
            let mut positions = Vec::new();
            for n in 0..APPENDS {
                let response = client
                    .append(tokio_stream::iter(append_request(&format!("w-{w}"), n)))
                    .await
                    .unwrap()
                    .into_inner();
                match response.result {
                    Some(append_resp::Result::Success(s)) => match s.position_option {
                        Some(append_resp::success::PositionOption::Position(p)) => {
                            positions.push(p.commit_position)
                        }
                        other => panic!("{other:?}"),
                    },
                    other => panic!("{other:?}"),
                }
            }
            positions
        }));
    }
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    acknowledged.sort_unstable();

    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while delivered.len() < acknowledged.len() {
        let message = tokio::time::timeout_at(deadline, live.message())
            .await
            .expect("node B delivers every event appended through node A")
            .unwrap()
            .unwrap();
        if let Some(read_resp::Content::Event(event)) = message.content {
            delivered.push(event.event.unwrap().commit_position);
        }
    }
    assert_eq!(delivered, acknowledged, "same events, in the global order");

    drop(live);
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    task_a.await.unwrap().unwrap();
    task_b.await.unwrap().unwrap();
}
