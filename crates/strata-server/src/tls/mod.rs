//! TLS for both APIs (rustls with the ring provider), and the transport modes.
//!
//! [`mode`]: [`Transport`] — TLS, insecure on purpose, or loopback only (the default).
//! [`config`]: PEM files to rustls configurations (ALPN `h2` for gRPC; `h2` and
//! `http/1.1` for HTTP; optional client certificates checked against a CA).
//! [`reload`]: the files read again on a timer, so a renewed certificate is used
//! without a restart. [`connection`]: the handshake of each accepted connection, and
//! what it tells handlers about the client (its verified certificate chain).
//!
//! The guide below is `docs/security.md`, included so that its example is compiled.
#![doc = include_str!("../../../../docs/security.md")]

pub mod config;
pub mod connection;
pub mod mode;
pub mod reload;

pub use config::{TlsError, TlsOptions};
pub use connection::{client_address, tls_session, TlsConnectInfo, TlsConnection, TlsSession};
pub use mode::{NotLoopback, Transport};
pub use reload::{ReloadOutcome, TlsReloader};
