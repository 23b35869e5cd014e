//! What `strata serve` can be told: addresses and resource limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The default gRPC address (KurrentDB's port).
pub const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 2113);

/// The default HTTP address.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 2114);

/// Addresses and limits of a server.
///
/// Event size, batch size and name lengths are the store's own [`strata::Limits`]; the
/// limits here are the ones only a network server has.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Where the gRPC API listens (`None`: no gRPC).
    pub grpc: Option<SocketAddr>,
    /// Where the HTTP API listens (`None`: no HTTP).
    pub http: Option<SocketAddr>,
    /// Largest HTTP request body accepted, in bytes (413 above it).
    pub max_request_body: usize,
    /// Largest gRPC message accepted, in bytes (`RESOURCE_EXHAUSTED` above it).
    pub max_grpc_message: usize,
    /// Most subscriptions (catch-up or persistent) one connection may hold open.
    pub max_subscriptions_per_connection: usize,
    /// Longest a read may wait for `min_position` (read-your-writes).
    pub max_wait_for_position: Duration,
    /// Longest shutdown waits for in-flight requests before giving up on them.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            grpc: Some(DEFAULT_GRPC_ADDR),
            http: Some(DEFAULT_HTTP_ADDR),
            max_request_body: 64 * 1024 * 1024,
            max_grpc_message: 64 * 1024 * 1024,
            max_subscriptions_per_connection: 128,
            max_wait_for_position: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
