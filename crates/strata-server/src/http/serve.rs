//! Serving the HTTP API on accepted connections: HTTP/1.1 with a header-read timeout
//! (which also ends idle keep-alive connections: hyper starts it whenever it waits for
//! the next request's head), one task per connection, all of them awaited at shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;

use crate::net::Acceptor;
use crate::state::ServerState;

/// HTTP/1 connection settings.
#[derive(Clone, Copy, Debug)]
pub struct HttpConnectionSettings {
    /// Longest wait for a request's head, counted from when the server starts waiting
    /// for it (the connection opened, or the previous response ended).
    pub header_read_timeout: Duration,
}

/// Serves `router` on every connection `acceptor` yields until shutdown begins, then
/// lets every open connection finish its request (live streams end on shutdown) and
/// returns once all of them are gone.
pub async fn serve(
    mut acceptor: Acceptor,
    router: Router,
    settings: HttpConnectionSettings,
    state: ServerState,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            stream = acceptor.accept() => {
                let peer = stream.peer();
                let service = connection_service(router.clone(), peer);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let stop = state.clone();
                connections.spawn(async move {
                    let mut connection = std::pin::pin!(connection);
                    let result = tokio::select! {
                        result = connection.as_mut() => result,
                        () = stop.shutting_down() => {
                            // Finish the request in progress, take no new one.
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "HTTP connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next() => {}
            () = state.shutting_down() => break,
        }
    }
    drop(acceptor);
    while connections.join_next().await.is_some() {}
}

/// The router as a hyper service for one connection, giving handlers the client's
/// address as axum's `ConnectInfo`.
fn connection_service(
    router: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        tower_service::Service::call(&mut router, request)
    })
}
