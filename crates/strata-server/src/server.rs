//! Binding the listeners and running both APIs until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use strata::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::error::ServerError;
use crate::options::ServerOptions;
use crate::state::ServerState;

/// A server whose listeners are bound, ready to run.
///
/// Binding first lets a caller learn the real addresses (port 0 picks a free one)
/// before requests arrive.
#[derive(Debug)]
pub struct Server {
    state: ServerState,
    shutdown: watch::Sender<bool>,
    grpc: Option<(SocketAddr, TcpListener)>,
    http: Option<(SocketAddr, TcpListener)>,
}

async fn bind(addr: SocketAddr) -> Result<(SocketAddr, TcpListener), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((local, listener))
}

impl Server {
    /// Binds the listeners `options` asks for, serving `store`.
    pub async fn bind(store: Store, mut options: ServerOptions) -> Result<Server, ServerError> {
        let grpc = match options.grpc {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let http = match options.http {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        // Advertise (gossip, logs) the addresses actually bound, not port 0.
        options.grpc = grpc.as_ref().map(|(addr, _)| *addr);
        options.http = http.as_ref().map(|(addr, _)| *addr);
        let (shutdown, signal) = watch::channel(false);
        Ok(Server {
            state: ServerState::new(store, options, signal),
            shutdown,
            grpc,
            http,
        })
    }

    /// Where the gRPC API listens, if it is on.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|(addr, _)| *addr)
    }

    /// Where the HTTP API listens, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _)| *addr)
    }

    /// The state handlers share (for embedding the routers elsewhere or in tests).
    pub fn state(&self) -> &ServerState {
        &self.state
    }

    /// Serves until `signal` resolves, then shuts down gracefully: stops accepting
    /// connections, ends subscriptions, lets in-flight requests (appends) finish within
    /// the grace period, and closes the store (which syncs it).
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let Server {
            state,
            shutdown,
            grpc,
            http,
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((_, listener)) = grpc {
            let router = crate::grpc::router(state.clone());
            let stop = state.clone();
            tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                        stop.shutting_down().await
                    })
                    .await
                    .map_err(ServerError::Grpc)
            });
        }
        if let Some((_, listener)) = http {
            let router = crate::http::router(state.clone());
            let stop = state.clone();
            tasks.spawn(async move {
                // Connect info gives handlers the client's address (per-client limits).
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, service)
                    .with_graceful_shutdown(async move { stop.shutting_down().await })
                    .await
                    .map_err(ServerError::Http)
            });
        }

        // Run until the signal, or until a server fails on its own.
        let mut failure = None;
        tokio::select! {
            () = signal => {}
            Some(result) = tasks.join_next() => {
                if let Ok(Err(error)) = result {
                    failure = Some(error);
                }
            }
        }
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        // Receivers live in `state`, which outlives this send.
        let _ = shutdown.send(true);
        let grace = state.options.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(result) = tasks.join_next().await {
                if let Ok(Err(error)) = result {
                    failure.get_or_insert(error);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                ?grace,
                "in-flight requests did not finish within the grace period"
            );
            tasks.abort_all();
        }
        // Persistent-subscription groups write their final checkpoints and let go of
        // the store, so that closing it below really closes (and syncs) it.
        state.persistent.stop_all().await;
        let store = state.store.clone();
        drop(state);
        store.close().await?;
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
