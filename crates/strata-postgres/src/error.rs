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
    // tokio-postgres prints a server error as just "db error": say what the server said.
    let message = match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!(
                "{} ({}): {} ({detail})",
                db.severity(),
                db.code().code(),
                db.message()
            ),
            None => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        },
        None => error.to_string(),
    };
    StorageError::Backend {
        backend: "postgres",
        message,
        transient,
    }
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
