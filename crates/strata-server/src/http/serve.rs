//! Serving the HTTP API on accepted connections: one task per connection, all of them
//! awaited at shutdown. In the clear: HTTP/1.1 with a header-read timeout (which also
//! ends idle keep-alive connections: hyper starts it whenever it waits for the next
//! request's head). Over TLS: the handshake first (in the connection's task, so a slow
//! client holds up no other), then HTTP/2 or HTTP/1.1 as ALPN agreed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::task::JoinSet;

use crate::net::{Acceptor, TrackedStream};
use crate::state::ServerState;
use crate::tls::connection::handshake;
use crate::tls::{TlsReloader, TlsSession};

/// HTTP/1 connection settings.
#[derive(Clone, Copy, Debug)]
pub struct HttpConnectionSettings {
    /// Longest wait for a request's head, counted from when the server starts waiting
    /// for it (the connection opened, or the previous response ended).
    pub header_read_timeout: Duration,
}

/// Serves `router` on every connection `acceptor` yields until shutdown begins, then
/// lets every open connection finish its request (live streams end on shutdown) and
/// returns once all of them are gone. With `tls`, every connection is a TLS one.
pub async fn serve(
    mut acceptor: Acceptor,
    router: Router,
    settings: HttpConnectionSettings,
    state: ServerState,
    tls: Option<Arc<TlsReloader>>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            stream = acceptor.accept() => {
                let peer = stream.peer();
                let router = router.clone();
                let stop = state.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let result = match tls {
                        None => serve_plain(stream, router, settings, stop).await,
                        Some(tls) => serve_tls(stream, router, settings, stop, &tls).await,
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

fn http1_builder(settings: HttpConnectionSettings) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
}

async fn serve_plain(
    stream: TrackedStream,
    router: Router,
    settings: HttpConnectionSettings,
    stop: ServerState,
) -> Result<(), BoxError> {
    let service = connection_service(router, stream.peer(), None);
    let connection = http1_builder(settings).serve_connection(TokioIo::new(stream), service);
    until_shutdown(connection, stop, |c| c.graceful_shutdown()).await?;
    Ok(())
}

/// Why a connection ended early: hyper's error, or a failed handshake.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve_tls(
    stream: TrackedStream,
    router: Router,
    settings: HttpConnectionSettings,
    stop: ServerState,
    tls: &TlsReloader,
) -> Result<(), BoxError> {
    let peer = stream.peer();
    let timeout = tls.options().handshake_timeout;
    let stream = handshake(tls.http_config(), stream, timeout).await?;
    let session = stream.session().clone();
    let h2 = session.alpn.as_deref() == Some(b"h2");
    let service = connection_service(router, peer, Some(session));
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        until_shutdown(connection, stop, |c| c.graceful_shutdown()).await?;
    } else {
        let connection = http1_builder(settings).serve_connection(TokioIo::new(stream), service);
        until_shutdown(connection, stop, |c| c.graceful_shutdown()).await?;
    }
    Ok(())
}

/// Drives `connection` to its end; once shutdown begins, lets it finish the request in
/// progress and take no new one (`graceful` starts that).
async fn until_shutdown<C>(
    connection: C,
    stop: ServerState,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = stop.shutting_down() => {
            graceful(connection.as_mut());
            connection.await
        }
    }
}

/// The router as a hyper service for one connection, giving handlers the client's
/// address as axum's `ConnectInfo`, and over TLS the [`TlsSession`] (the client's
/// verified certificate chain, for authentication).
fn connection_service(
    router: Router,
    peer: SocketAddr,
    tls: Option<TlsSession>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
                 + Send
                 + 'static,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(session) = &tls {
            request.extensions_mut().insert(session.clone());
        }
        let mut router = router.clone();
        tower_service::Service::call(&mut router, request)
    })
}
