//! Errors of starting and running the server, and what clients may be told of a
//! storage failure.

use std::net::SocketAddr;

use strata::StorageError;

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
    /// A listener address is not loopback, and the transport is neither TLS nor
    /// insecure.
    #[error(transparent)]
    NotLoopback(#[from] crate::tls::NotLoopback),
    /// The default users could not be created or read.
    #[error("setting up the default users failed: {0}")]
    Users(#[from] crate::auth::UserError),
    /// The TLS certificate files did not load.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The gRPC server failed while running.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// At shutdown, something still held the store after every connection ended, so
    /// the store was not closed here (no final index checkpoint; acknowledged appends
    /// are durable regardless).
    #[error("shutdown could not close the store: {other_handles} other handle(s) still hold it")]
    StoreStillInUse {
        /// Handles other than the server's own.
        other_handles: usize,
    },
    /// The store could not be closed cleanly at shutdown.
    #[error("closing the store failed: {0}")]
    Close(#[from] strata::StorageError),
}

/// What a client may know of a storage failure: its kind, not where it happened.
pub fn storage_summary(storage: &StorageError) -> &'static str {
    match storage {
        StorageError::DiskFull { .. } => "the server's disk is full",
        StorageError::Closed => "the store is closed",
        StorageError::Poisoned { .. } => "the store stopped taking writes after a storage failure",
        error if error.is_transient() => "the storage backend is unavailable",
        _ => "internal storage error",
    }
}
