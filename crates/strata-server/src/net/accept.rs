//! Accepting connections: `TCP_NODELAY`, connection limits, a watchdog per connection,
//! and accept errors that never stop the server.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::limits::{ConnectionLimits, ConnectionRefused};
use super::stream::TrackedStream;
use super::watch::{watch_connection, WatchPolicy};

/// How a connection over a limit is answered before it is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalAnswer {
    /// Close it at once (gRPC clients see the connection fail and retry).
    Close,
    /// Answer `503 Service Unavailable` with a JSON error body, then close it.
    Http503,
}

/// Accepts connections on one listener.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    limits: Arc<ConnectionLimits>,
    policy: WatchPolicy,
    refusal: RefusalAnswer,
    kill_all: watch::Receiver<bool>,
    /// Refused connections being answered now: bounded, so a flood of them costs at
    /// most this many sockets for at most `REFUSAL_LINGER`.
    answering: Arc<Semaphore>,
}

/// Refused connections answered at once; beyond that they are closed unanswered.
const REFUSALS_ANSWERED_MAX: usize = 64;

/// How long a refused connection is kept to read the client's request, so that
/// closing it does not reset the connection before the client read the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// An accepted connection.
pub type Accepted = TrackedStream;

impl Acceptor {
    /// Accepts on `listener` within `limits`, watching each connection by `policy`
    /// until `kill_all` turns true.
    pub fn new(
        listener: TcpListener,
        limits: Arc<ConnectionLimits>,
        policy: WatchPolicy,
        refusal: RefusalAnswer,
        kill_all: watch::Receiver<bool>,
    ) -> Acceptor {
        Acceptor {
            listener,
            limits,
            policy,
            refusal,
            kill_all,
            answering: Arc::new(Semaphore::new(REFUSALS_ANSWERED_MAX)),
        }
    }

    /// The next connection within the limits. Connections over a limit are answered
    /// and closed here; accept errors (out of file descriptors, a connection reset
    /// before it was accepted) are logged and waited out, never returned: a server
    /// must not stop listening because one accept failed.
    pub async fn accept(&mut self) -> TrackedStream {
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE/ENFILE would fail again at once: back off instead of spinning.
                    let pause = if is_out_of_descriptors(&error) {
                        Duration::from_millis(100)
                    } else {
                        Duration::from_millis(5)
                    };
                    tracing::warn!(%error, pause_ms = pause.as_millis() as u64, "accept failed");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            if let Err(error) = socket.set_nodelay(true) {
                tracing::warn!(%error, %peer, "cannot set TCP_NODELAY");
            }
            let permit = match self.limits.acquire(peer.ip()) {
                Ok(permit) => permit,
                Err(refused) => {
                    tracing::warn!(%peer, reason = %refused, "connection refused");
                    refuse(socket, peer, self.refusal, &refused, &self.answering);
                    continue;
                }
            };
            let stream = TrackedStream::new(socket, peer, permit);
            tokio::spawn(watch_connection(
                Arc::clone(stream.activity()),
                self.policy,
                self.kill_all.clone(),
            ));
            return stream;
        }
    }

    /// The accepted connections as a stream (what tonic serves from). It never ends
    /// and never yields an error.
    pub fn into_stream(self) -> impl Stream<Item = Result<TrackedStream, io::Error>> {
        futures_util::stream::unfold(self, |mut acceptor| async move {
            let stream = acceptor.accept().await;
            Some((Ok(stream), acceptor))
        })
    }
}

fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == 24 /* EMFILE */ || code == 23 /* ENFILE */)
}

/// Answers a refused connection with a 503 (HTTP), then reads what the client sent for
/// a moment before closing: closing a socket with unread input resets the connection,
/// and the client could lose the answer.
fn refuse(
    mut socket: tokio::net::TcpStream,
    peer: SocketAddr,
    answer: RefusalAnswer,
    refused: &ConnectionRefused,
    answering: &Arc<Semaphore>,
) {
    if answer == RefusalAnswer::Close {
        return;
    }
    let Ok(permit) = Arc::clone(answering).try_acquire_owned() else {
        return;
    };
    let body = serde_json::json!({
        "error": { "code": "too_many_connections", "message": refused.to_string() }
    })
    .to_string();
    let mut response = Vec::with_capacity(256 + body.len());
    // Writing into a Vec cannot fail.
    let _ = write!(
        response,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _permit = permit;
        let answered = tokio::time::timeout(REFUSAL_LINGER, async {
            socket.write_all(&response).await?;
            socket.shutdown().await?;
            let mut sink = [0u8; 4096];
            while socket.read(&mut sink).await? > 0 {}
            Ok::<(), io::Error>(())
        })
        .await;
        if let Ok(Err(error)) = answered {
            tracing::debug!(%error, %peer, "cannot answer a refused connection");
        }
    });
}
