//! What `strata serve` can be told: addresses, the transport mode (TLS), HTTP hygiene,
//! resource limits, and the leases that spread persistent subscriptions over the nodes
//! sharing one database.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use strata::lease::Leases;

pub use crate::tls::{TlsOptions, Transport};

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
    /// TLS, insecure, or loopback only (the default: a non-loopback address is then
    /// refused by [`Server::bind`](crate::Server::bind)).
    pub transport: Transport,
    /// Host names the HTTP API answers to when it is not over TLS, besides loopback
    /// addresses and `localhost`: any other `Host` is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example.com`) whose pages may call the HTTP API from a
    /// browser (CORS). Empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
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
    /// Most events a filtered read of `$all` examines per step: per HTTP request (a
    /// page cut short returns `next_from`), per page of a gRPC read or subscription
    /// (which goes on with the next step while the client is there).
    pub scan_budget: u64,
    /// With several nodes on one database: the leases that let each persistent
    /// subscription group run on one node at a time (`None`: every group runs here).
    pub leases: Option<NodeLeases>,
    /// Most connections open at once, both APIs together; more are refused (HTTP: a
    /// 503 answer; gRPC: closed).
    pub max_connections: usize,
    /// Most connections open at once from one client IP address.
    pub max_connections_per_address: usize,
    /// A connection whose client sends no byte at all within this long is closed.
    pub first_byte_timeout: Duration,
    /// A connection whose pending write makes no progress for this long is closed: the
    /// client stopped reading (a live stream it no longer consumes, say), and the
    /// server must not keep its buffers for ever.
    pub write_stall_timeout: Duration,
    /// Longest wait for an HTTP request's head (request line and headers). hyper
    /// starts it whenever it waits for a request, so it is also how long an idle
    /// keep-alive connection is kept.
    pub http_header_read_timeout: Duration,
    /// Longest wait for the next part of an HTTP request body (408 after it).
    pub http_body_read_timeout: Duration,
    /// Most concurrent gRPC calls (HTTP/2 streams) on one connection.
    pub grpc_max_concurrent_streams: u32,
    /// How often the server pings an HTTP/2 connection to check the client is there.
    pub grpc_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub grpc_keepalive_timeout: Duration,
    /// Connections older than this are asked to reconnect (GOAWAY, in-flight calls
    /// finish); `None`: no limit, as KurrentDB (subscriptions are long-lived).
    pub grpc_max_connection_age: Option<Duration>,
    /// Most HTTP/2 streams a client may open and reset before the server accepted them
    /// (the "rapid reset" attack); over it the connection is closed.
    pub grpc_max_pending_reset_streams: usize,
    /// Requests slower than this (to the answer's head) are logged.
    pub slow_request_threshold: Duration,
}

/// How a node shares persistent subscriptions with the other nodes of its database.
#[derive(Clone)]
pub struct NodeLeases {
    /// The lease store all nodes share (`strata_postgres::PostgresStore::leases`).
    pub leases: Arc<dyn Leases>,
    /// This node's gRPC address as clients reach it (`host:port`), where other nodes
    /// send clients of the groups it runs; `None`: the bound gRPC address.
    pub advertise: Option<String>,
    /// How long a group's lease lasts after each renewal: a dead node's groups move
    /// after about this long.
    pub ttl: Duration,
}

impl NodeLeases {
    /// Leases from `leases`, advertising the bound gRPC address, with the default TTL.
    pub fn new(leases: Arc<dyn Leases>) -> NodeLeases {
        NodeLeases {
            leases,
            advertise: None,
            ttl: crate::persistent::GROUP_LEASE_TTL_DEFAULT,
        }
    }
}

impl std::fmt::Debug for NodeLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLeases")
            .field("advertise", &self.advertise)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            grpc: Some(DEFAULT_GRPC_ADDR),
            http: Some(DEFAULT_HTTP_ADDR),
            transport: Transport::LoopbackOnly,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            max_request_body: 64 * 1024 * 1024,
            max_grpc_message: 64 * 1024 * 1024,
            max_subscriptions_per_connection: 128,
            max_wait_for_position: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            scan_budget: strata::ReadAllOptions::SCAN_BUDGET_DEFAULT,
            leases: None,
            max_connections: 4096,
            max_connections_per_address: 1024,
            first_byte_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(60),
            http_header_read_timeout: Duration::from_secs(30),
            http_body_read_timeout: Duration::from_secs(30),
            grpc_max_concurrent_streams: 1024,
            grpc_keepalive_interval: Duration::from_secs(10),
            grpc_keepalive_timeout: Duration::from_secs(10),
            grpc_max_connection_age: None,
            grpc_max_pending_reset_streams: 32,
            slow_request_threshold: Duration::from_secs(1),
        }
    }
}
