//! Errors of starting and running the server.

use std::net::SocketAddr;

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound (address in use, no permission, …).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed while running.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// The store could not be closed cleanly at shutdown.
    #[error("closing the store failed: {0}")]
    Close(#[from] strata::StorageError),
}
