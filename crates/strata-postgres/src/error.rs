//! PostgreSQL errors as strata's typed errors.

use strata::StorageError;

/// A PostgreSQL error as a storage error, noting whether it is transient (a broken or
/// refused connection, a server shutting down or starting up).
pub fn backend(error: tokio_postgres::Error) -> StorageError {
    let transient = match error.as_db_error() {
        None => true,
        // Class 08: connection exception; 57P: operator intervention (shutdown, crash
        // recovery, cannot connect now).
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
    };
    let message = describe(&error);
    StorageError::Backend {
        backend: "postgres",
        message,
        transient,
    }
}

/// What `error` says, with the server's own message: tokio-postgres prints a server
/// error as just "db error".
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!(
                "{} ({}): {} ({detail})",
                db.severity(),
                db.code().code(),
                db.message()
            ),
            None => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        },
        None => with_causes(error),
    }
}

/// `error`'s message followed by its causes' (`a: b: c`): tokio-postgres' own messages
/// name only the kind of failure ("error connecting to server"), the cause says what
/// happened ("Connection refused").
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A connection pool error as a storage error. Waiting longer than the pool's wait
/// timeout for a free connection is [`StorageError::Timeout`] (the store is busy: an
/// append is not retried, it was never sent); failing or timing out to open a new
/// connection is a transient backend error (the server may be restarting).
pub fn pool(error: deadpool_postgres::PoolError, pool: &deadpool_postgres::Pool) -> StorageError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => backend(error),
        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            StorageError::Timeout {
                backend: "postgres",
                operation: "waiting for a free connection",
                limit: pool.timeouts().wait.unwrap_or_default(),
            }
        }
        other => StorageError::Backend {
            backend: "postgres",
            message: other.to_string(),
            transient: true,
        },
    }
}

/// A failed statement of a read, which runs under a statement timeout: a cancelled
/// statement (SQLSTATE 57014; strata cancels nothing else) is [`StorageError::Timeout`],
/// anything else is as [`backend`] says.
pub fn read(error: tokio_postgres::Error, statement_timeout: std::time::Duration) -> StorageError {
    if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
        StorageError::Timeout {
            backend: "postgres",
            operation: "a read statement",
            limit: statement_timeout,
        }
    } else {
        backend(error)
    }
}

/// Another failure (configuration, building the pool) as a storage error.
pub fn other(error: impl std::fmt::Display) -> StorageError {
    StorageError::Backend {
        backend: "postgres",
        message: error.to_string(),
        transient: false,
    }
}

/// Whether an append failed in a way a retry may fix.
pub fn is_transient(error: &strata::AppendError) -> bool {
    matches!(
        error,
        strata::AppendError::Storage(StorageError::Backend {
            transient: true,
            ..
        })
    )
}

/// A failure to open a connection that retrying cannot fix, as a storage error (not
/// transient): the TLS handshake failed (the certificate was refused: the message names
/// the host and `sslmode`), the server does not offer TLS to a mode that requires it, or
/// the server refused the client (SQLSTATE class 28: `pg_hba.conf`, password). `None`
/// for anything else (the server may be starting up).
pub fn permanent_connect_failure(error: &deadpool_postgres::PoolError) -> Option<StorageError> {
    let deadpool_postgres::PoolError::Backend(error) = error else {
        return None;
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(handshake) = cause.downcast_ref::<crate::tls::TlsHandshakeError>() {
            return Some(StorageError::Backend {
                backend: "postgres",
                message: handshake.to_string(),
                transient: false,
            });
        }
        source = cause.source();
    }
    let refused = error
        .as_db_error()
        .is_some_and(|db| db.code().code().starts_with("28"));
    // tokio-postgres' own TLS failures ("server does not support TLS") carry no type of
    // their own: its message for the kind is the only mark.
    let tls = error
        .to_string()
        .starts_with("error performing TLS handshake");
    (refused || tls).then(|| StorageError::Backend {
        backend: "postgres",
        message: describe(error),
        transient: false,
    })
}
