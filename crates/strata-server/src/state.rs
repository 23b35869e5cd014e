//! What every request handler shares: the store, the options, the metrics and the
//! shutdown signal.

use std::sync::Arc;

use strata::Store;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::net::ConnectionLimits;
use crate::options::ServerOptions;
use crate::persistent::{GroupLeases, Registry};
use crate::slots::SubscriptionSlots;

/// The state shared by the gRPC and HTTP handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerState {
    /// The store every request goes to.
    pub store: Store,
    /// Limits and addresses.
    pub options: Arc<ServerOptions>,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Authentication and authorization (on with TLS, off otherwise).
    pub auth: Arc<Auth>,
    /// Open subscriptions per connection, against `options.max_subscriptions_per_connection`.
    pub subscription_slots: Arc<SubscriptionSlots>,
    /// The persistent subscription groups (competing consumers).
    pub persistent: Arc<Registry>,
    /// Open connections of both APIs, against `options.max_connections` and
    /// `options.max_connections_per_address`.
    pub connections: Arc<ConnectionLimits>,
    shutdown: watch::Receiver<bool>,
}

impl ServerState {
    /// State for a server over `store`; `shutdown` turns `true` when the server stops.
    pub fn new(store: Store, options: ServerOptions, shutdown: watch::Receiver<bool>) -> Self {
        // The holder name is the address other nodes send clients to; a node without
        // gRPC still needs a unique one so that it runs groups only under their lease.
        let leases = options.leases.as_ref().map(|node| GroupLeases {
            leases: node.leases.clone(),
            holder: node
                .advertise
                .clone()
                .or_else(|| options.grpc.map(|addr| addr.to_string()))
                .unwrap_or_else(|| format!("node-{}", uuid::Uuid::new_v4())),
            ttl: node.ttl,
        });
        let metrics = Arc::new(Metrics::new());
        let auth = Arc::new(Auth::new(
            store.clone(),
            options.transport.authenticates(),
            Arc::clone(&metrics),
        ));
        ServerState {
            auth,
            persistent: Arc::new(Registry::with_leases(
                store.clone(),
                shutdown.clone(),
                leases,
            )),
            store,
            connections: ConnectionLimits::new(
                options.max_connections,
                options.max_connections_per_address,
            ),
            options: Arc::new(options),
            metrics,
            subscription_slots: Arc::new(SubscriptionSlots::default()),
            shutdown,
        }
    }

    /// Resolves when the server begins to shut down. Long-lived responses
    /// (subscriptions, live streams) end on it, so graceful shutdown does not wait for
    /// them forever.
    pub async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.clone();
        // An error means the sender is gone: the server is stopping either way.
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
