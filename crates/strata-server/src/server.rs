//! Binding the listeners and running both APIs until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strata::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::ServerError;
use crate::http::serve::HttpConnectionSettings;
use crate::net::accept::RefusalAnswer;
use crate::net::watch::WatchPolicy;
use crate::net::Acceptor;
use crate::options::ServerOptions;
use crate::state::ServerState;
use crate::tls::{TlsReloader, Transport};

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
    /// The TLS configuration and its files, in TLS mode.
    tls: Option<Arc<TlsReloader>>,
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
    ///
    /// Fails with [`ServerError::NotLoopback`] before binding anything when an address
    /// is not loopback and the transport is [`Transport::LoopbackOnly`], and with
    /// [`ServerError::Tls`] when the certificate files of [`Transport::Tls`] do not load.
    pub async fn bind(store: Store, mut options: ServerOptions) -> Result<Server, ServerError> {
        if let Some(addr) = options.grpc {
            options.transport.check_bind("gRPC", addr)?;
        }
        if let Some(addr) = options.http {
            options.transport.check_bind("HTTP", addr)?;
        }
        let tls = match options.transport.tls() {
            Some(tls) => Some(Arc::new(TlsReloader::load(tls.clone())?)),
            None => None,
        };
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
        let state = ServerState::new(store, options, signal);
        if state.auth.enabled() {
            let users = state.auth.users();
            let created = users.ensure_defaults().await?;
            if !created.is_empty() {
                tracing::info!(users = ?created, "created the default users (password \"changeit\")");
            }
            for login in [
                crate::auth::principal::ADMIN_USER,
                crate::auth::principal::OPS_USER,
            ] {
                if users.has_default_password(login).await? {
                    tracing::warn!(
                        user = login,
                        "user still has the default password: change it (strata user passwd {login})"
                    );
                }
            }
        }
        Ok(Server {
            state,
            shutdown,
            grpc,
            http,
            tls,
        })
    }

    /// The TLS configuration in use, in TLS mode (to check the files at once rather
    /// than wait for the reload timer).
    pub fn tls(&self) -> Option<&Arc<TlsReloader>> {
        self.tls.as_ref()
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
    /// the grace period (then closes the connections that remain), and closes the store
    /// (which syncs it and writes its index checkpoint).
    ///
    /// Returns [`ServerError::StoreStillInUse`] when something still held the store at
    /// the end, so its final close did not happen here (every acknowledged append is
    /// durable regardless: it was synced before it was acknowledged).
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let Server {
            state,
            shutdown,
            grpc,
            http,
            tls,
        } = self;
        let options = Arc::clone(&state.options);
        tracing::info!(
            grpc = ?options.grpc,
            http = ?options.http,
            transport = options.transport.name(),
            "serving"
        );
        if options.transport == Transport::Insecure {
            tracing::warn!(
                grpc = ?options.grpc,
                http = ?options.http,
                transport = options.transport.name(),
                "insecure mode: no TLS, traffic is unencrypted and anyone who can reach \
                 these addresses can read and write every stream"
            );
        }
        let reload = tls.as_ref().map(|reloader| {
            let stop = state.clone();
            tokio::spawn(Arc::clone(reloader).watch(async move { stop.shutting_down().await }))
        });
        let limits = Arc::clone(&state.connections);
        let policy = WatchPolicy {
            first_byte_timeout: options.first_byte_timeout,
            write_stall_timeout: options.write_stall_timeout,
        };
        let (kill_all, killed) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((_, listener)) = grpc {
            let acceptor = Acceptor::new(
                listener,
                Arc::clone(&limits),
                policy,
                RefusalAnswer::Close,
                killed.clone(),
            );
            let router = crate::grpc::router(state.clone());
            let stop = state.clone();
            let stopped = async move { stop.shutting_down().await };
            match &tls {
                Some(reloader) => {
                    let incoming =
                        crate::tls::connection::incoming_grpc(acceptor, Arc::clone(reloader));
                    tasks.spawn(async move {
                        router
                            .serve_with_incoming_shutdown(incoming, stopped)
                            .await
                            .map_err(ServerError::Grpc)
                    });
                }
                None => {
                    tasks.spawn(async move {
                        router
                            .serve_with_incoming_shutdown(acceptor.into_stream(), stopped)
                            .await
                            .map_err(ServerError::Grpc)
                    });
                }
            }
        }
        if let Some((_, listener)) = http {
            let acceptor = Acceptor::new(
                listener,
                Arc::clone(&limits),
                policy,
                // A plain-text 503 means nothing to a client that expects a TLS
                // handshake: close instead.
                if tls.is_some() {
                    RefusalAnswer::Close
                } else {
                    RefusalAnswer::Http503
                },
                killed.clone(),
            );
            let router = crate::http::router(state.clone());
            let settings = HttpConnectionSettings {
                header_read_timeout: options.http_header_read_timeout,
            };
            let stop = state.clone();
            let tls = tls.clone();
            tasks.spawn(async move {
                crate::http::serve::serve(acceptor, router, settings, stop, tls).await;
                Ok(())
            });
        }
        drop(killed);

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
        let grace = options.shutdown_grace;
        let drained = tokio::time::timeout(grace, join_all(&mut tasks, &mut failure)).await;
        if drained.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                open_connections = limits.open(),
                "in-flight requests did not finish within the grace period: closing their connections"
            );
            // Failing every socket ends the connections' tasks at their next read or
            // write; the servers then return.
            let _ = kill_all.send(true);
            if tokio::time::timeout(CLOSE_WAIT, join_all(&mut tasks, &mut failure))
                .await
                .is_err()
            {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
        if let Some(reload) = reload {
            reload.abort();
        }
        // Persistent-subscription groups write their final checkpoints and let go of
        // the store, so that closing it below really closes (and syncs) it.
        state.persistent.stop_all().await;
        let store = state.store.clone();
        drop(state);
        // Tasks spawned by requests (a batch append's writer, a subscription's reader)
        // end shortly after their connection: give them a moment to let go.
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        while store.other_references() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let others = store.other_references();
        if others > 0 {
            // Closing now would only drop this handle: say so rather than claim success.
            return Err(failure.unwrap_or(ServerError::StoreStillInUse {
                other_handles: others,
            }));
        }
        store.close().await?;
        tracing::info!("stopped: store closed");
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// How long shutdown waits for connections and request tasks after closing them.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Waits for every server task, keeping the first failure.
async fn join_all(
    tasks: &mut tokio::task::JoinSet<Result<(), ServerError>>,
    failure: &mut Option<ServerError>,
) {
    while let Some(result) = tasks.join_next().await {
        if let Ok(Err(error)) = result {
            failure.get_or_insert(error);
        }
    }
}
