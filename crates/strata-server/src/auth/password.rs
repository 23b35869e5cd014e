//! Password hashing with Argon2id: what user records store instead of passwords.
//!
//! A hash costs about 19 MiB and tens of milliseconds of one core (the `argon2` crate's
//! defaults, OWASP's recommendation), so hashes run on the blocking pool, at most
//! [`Hasher::concurrency`] at a time: a flood of logins waits its turn instead of taking
//! every core and gigabytes of memory.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::sync::Semaphore;

/// A password could not be hashed or a stored hash could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The stored hash is not a PHC string Argon2 can check.
    #[error("the stored password hash is not valid: {0}")]
    InvalidHash(String),
    /// Hashing failed (a parameter out of range).
    #[error("the password could not be hashed: {0}")]
    Hash(String),
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The hashing task was cancelled (the server is stopping).
    #[error("the password hashing task did not finish")]
    Cancelled,
}

/// Hashes and checks passwords, a bounded number at a time.
#[derive(Clone, Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new(Hasher::concurrency())
    }
}

impl Hasher {
    /// A hasher running at most `concurrent` hashes at once (at least one).
    pub fn new(concurrent: usize) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
        }
    }

    /// The default bound: the number of cores.
    pub fn concurrency() -> usize {
        std::thread::available_parallelism().map_or(2, usize::from)
    }

    /// The Argon2id PHC string of `password`, with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let mut salt = [0u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| PasswordError::Random)?;
        // The blocking task needs its own copy; it is dropped when the hash is done.
        let password = password.to_owned();
        self.blocking(move || {
            let salt = SaltString::encode_b64(&salt)
                .map_err(|error| PasswordError::Hash(error.to_string()))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| PasswordError::Hash(error.to_string()))
        })
        .await
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, PasswordError> {
        // The blocking task needs its own copy; it is dropped when the hash is done.
        let password = password.to_owned();
        let hash = hash.to_owned();
        self.blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|error| PasswordError::InvalidHash(error.to_string()))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Cancelled)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| PasswordError::Cancelled)?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let hasher = Hasher::new(2);
        let first = hasher.hash("correct horse").await.unwrap();
        let second = hasher.hash("correct horse").await.unwrap();
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "a fresh salt every time");
        assert!(!first.contains("correct horse"));
        assert!(hasher.verify("correct horse", &first).await.unwrap());
        assert!(!hasher.verify("correct hors", &first).await.unwrap());
        assert!(matches!(
            hasher.verify("x", "not a hash").await,
            Err(PasswordError::InvalidHash(_))
        ));
    }
}
