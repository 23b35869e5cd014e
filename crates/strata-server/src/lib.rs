//! # strata-server
//!
//! The network face of a strata [`Store`](strata::Store): a gRPC API wire-compatible
//! with KurrentDB/EventStoreDB clients and an HTTP/JSON API with live streaming.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_server::{Server, ServerOptions};
//! let store = strata::Store::open("./strata-data")?;
//! let server = Server::bind(store, ServerOptions::default()).await?;
//! println!("gRPC on {:?}, HTTP on {:?}", server.grpc_addr(), server.http_addr());
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Layout: [`server`] binds the listeners and runs them until shutdown; [`grpc`] holds
//! one file per KurrentDB service; [`http`] the JSON API; [`persistent`] the
//! competing-consumer subscription groups both APIs share; [`metrics`] what
//! `GET /metrics` reports; [`tls`] the transport modes and TLS (see `docs/security.md`).

#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod net;
pub mod options;
pub mod persistent;
pub mod proto;
pub mod server;
pub mod slots;
pub mod state;
pub mod tls;

pub use error::ServerError;
pub use options::{NodeLeases, ServerOptions};
pub use server::Server;
pub use tls::{TlsOptions, Transport};
