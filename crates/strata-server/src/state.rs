//! What every request handler shares: the store, the options, the metrics and the
//! shutdown signal.

use std::sync::Arc;

use strata::Store;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::options::ServerOptions;
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
    /// Open subscriptions per connection, against `options.max_subscriptions_per_connection`.
    pub subscription_slots: Arc<SubscriptionSlots>,
    shutdown: watch::Receiver<bool>,
}

impl ServerState {
    /// State for a server over `store`; `shutdown` turns `true` when the server stops.
    pub fn new(store: Store, options: ServerOptions, shutdown: watch::Receiver<bool>) -> Self {
        ServerState {
            store,
            options: Arc::new(options),
            metrics: Arc::new(Metrics::new()),
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
