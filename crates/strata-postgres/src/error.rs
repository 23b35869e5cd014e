//! PostgreSQL errors as strata's typed errors.

use strata::StorageError;

/// A PostgreSQL or pool error as a storage error.
pub fn backend(error: impl std::fmt::Display) -> StorageError {
    StorageError::Backend {
        backend: "postgres",
        message: error.to_string(),
    }
}
