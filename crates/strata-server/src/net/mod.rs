//! The sockets under both APIs: accepting connections within limits, and watching each
//! one so that no client can hold a connection it does not use.
//!
//! Every accepted socket goes through [`accept::Acceptor`]: it gets `TCP_NODELAY` (so a
//! small answer is not held back by Nagle's algorithm waiting for the client's delayed
//! ACK), a [`limits::ConnectionPermit`] (total and per client address), and a
//! [`watch::Watchdog`] that closes it when the client sends nothing at all, or stops
//! reading what the server writes. The HTTP and gRPC servers run on top of these
//! sockets and add their protocol's own timeouts (header read, keep-alive pings).

pub mod accept;
pub mod limits;
pub mod stream;
pub mod watch;

pub use accept::{Accepted, Acceptor};
pub use limits::{ConnectionLimits, ConnectionPermit, ConnectionRefused};
pub use stream::TrackedStream;
