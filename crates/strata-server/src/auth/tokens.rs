//! Bearer tokens: long random secrets an administrator creates for a user (a service, a
//! script, the web console), shown once, stored only as a SHA-256 digest (the secret is
//! 256 random bits, so a fast digest is as safe as a slow hash and costs nothing per
//! request), with an optional expiry, and revocable.
//!
//! A token reads `strata_<id>_<secret>`, both in hex: the id (16 digits) names the record, the
//! metadata of the system stream `$token-<id>` under the key `strataToken`.

use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use strata::{AppendError, CurrentRevision, ListStreamsOptions, Store};

use super::record::{self, RecordError};
use super::users::{now_ms, UserError, Users};

/// The prefix of the system stream whose metadata is a token record.
pub const TOKEN_STREAM_PREFIX: &str = "$token-";
/// What every token starts with, so that secret scanners recognise leaked ones.
pub const TOKEN_PREFIX: &str = "strata_";
/// The longest description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 256;

const TOKEN_KEY: &str = "strataToken";
const RECORD_VERSION: u32 = 1;

/// What a token operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No such token.
    #[error("token {id:?} does not exist")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The user the token is for.
    #[error(transparent)]
    User(#[from] UserError),
    /// The description is too long or has control characters.
    #[error(
        "invalid token description: at most {DESCRIPTION_BYTES_MAX} bytes, no control characters"
    )]
    InvalidDescription,
    /// The stored record cannot be read.
    #[error("the record of token {id:?} is corrupt: {reason}")]
    Corrupt {
        /// The id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// Reading the store failed.
    #[error("reading the token records failed: {0}")]
    Read(#[from] strata::ReadError),
    /// Writing the store failed.
    #[error("writing the token record failed: {0}")]
    Append(#[source] AppendError),
}

/// A token as stored (the digest of its secret, never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Format version.
    pub version: u32,
    /// The id (16 hex digits).
    pub id: String,
    /// The user the token authenticates as.
    pub login: String,
    /// What it is for.
    pub description: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// Who created it.
    pub created_by: String,
    /// When (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// When it stops working, if ever.
    pub expires_ms: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A token as the API lists it: no digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The id.
    pub id: String,
    /// The user it authenticates as.
    pub login: String,
    /// What it is for.
    pub description: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_ms: u64,
    /// When it stops working, if ever.
    pub expires_ms: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(record: &TokenRecord) -> Self {
        TokenInfo {
            id: record.id.clone(),
            login: record.login.clone(),
            description: record.description.clone(),
            created_by: record.created_by.clone(),
            created_ms: record.created_ms,
            expires_ms: record.expires_ms,
            revoked: record.revoked,
        }
    }
}

/// A token just created: the only time its secret exists outside the client.
#[derive(Clone, Debug)]
pub struct CreatedToken {
    /// What is stored.
    pub info: TokenInfo,
    /// The token to give the client: `strata_<id>_<secret>`.
    pub token: String,
}

/// A presented token, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresentedToken<'a> {
    /// The id part.
    pub id: &'a str,
    /// The secret part.
    pub secret: &'a str,
}

/// Splits `strata_<id>_<secret>`; `None` for anything else.
pub fn parse(token: &str) -> Option<PresentedToken<'_>> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let valid_id = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (valid_id && !secret.is_empty() && secret.len() <= 128).then_some(PresentedToken { id, secret })
}

/// Hex SHA-256 of a secret.
pub fn digest(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tokens of one store.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: Store,
    users: Users,
}

impl Tokens {
    /// The tokens of the store `users` live in.
    pub fn new(store: Store, users: Users) -> Tokens {
        Tokens { store, users }
    }

    /// Creates a token for the existing user `login`, valid for `ttl` (for ever if
    /// `None`).
    pub async fn create(
        &self,
        login: &str,
        description: &str,
        ttl: Option<std::time::Duration>,
        created_by: &str,
    ) -> Result<CreatedToken, TokenError> {
        if description.len() > DESCRIPTION_BYTES_MAX || description.chars().any(char::is_control) {
            return Err(TokenError::InvalidDescription);
        }
        if self.users.get(login).await?.is_none() {
            return Err(UserError::NotFound {
                login: login.to_owned(),
            }
            .into());
        }
        let random = SystemRandom::new();
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        random.fill(&mut id).map_err(|_| TokenError::Random)?;
        random.fill(&mut secret).map_err(|_| TokenError::Random)?;
        // Hex, both: `_` separates the parts, and base64url's alphabet has `_` in it.
        let id = hex(&id);
        let secret = hex(&secret);
        let now = now_ms();
        let record = TokenRecord {
            version: RECORD_VERSION,
            id: id.clone(),
            login: login.to_owned(),
            description: description.to_owned(),
            secret_sha256: digest(&secret),
            created_by: created_by.to_owned(),
            created_ms: now,
            expires_ms: ttl
                .map(|ttl| now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))),
            revoked: false,
        };
        self.write(&record, CurrentRevision::NoStream).await?;
        Ok(CreatedToken {
            info: TokenInfo::from(&record),
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        })
    }

    /// The token `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<TokenRecord>, TokenError> {
        Ok(self.load(id).await?.0)
    }

    /// Every token, by id.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let prefix = strata::stream::metastream(TOKEN_STREAM_PREFIX);
        let streams = self
            .store
            .list_streams(ListStreamsOptions {
                prefix: Some(prefix.clone()),
                include_system: true,
                ..ListStreamsOptions::default()
            })
            .await?;
        let mut tokens = Vec::new();
        for stream in streams {
            if let Some(id) = stream.name.strip_prefix(&prefix) {
                if let Some(record) = self.get(id).await? {
                    tokens.push(TokenInfo::from(&record));
                }
            }
        }
        Ok(tokens)
    }

    /// Revokes the token `id`: it stops working at once on this server, and within
    /// the authentication cache's recheck interval on others.
    pub async fn revoke(&self, id: &str) -> Result<(), TokenError> {
        let (record, revision) = self.load(id).await?;
        let Some(mut record) = record else {
            return Err(TokenError::NotFound { id: id.to_owned() });
        };
        record.revoked = true;
        self.write(&record, revision).await
    }

    async fn load(&self, id: &str) -> Result<(Option<TokenRecord>, CurrentRevision), TokenError> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok((None, CurrentRevision::NoStream));
        }
        record::load(&self.store, &token_stream(id), TOKEN_KEY)
            .await
            .map_err(|error| record_error(id, error))
    }

    async fn write(
        &self,
        record: &TokenRecord,
        revision: CurrentRevision,
    ) -> Result<(), TokenError> {
        record::save(
            &self.store,
            &token_stream(&record.id),
            TOKEN_KEY,
            record,
            revision,
        )
        .await
        .map_err(|error| record_error(&record.id, error))
    }
}

/// The system stream whose metadata is the record of token `id`.
fn token_stream(id: &str) -> String {
    format!("{TOKEN_STREAM_PREFIX}{id}")
}

fn record_error(id: &str, error: RecordError) -> TokenError {
    match error {
        RecordError::Read(error) => TokenError::Read(error),
        RecordError::Append(error) => TokenError::Append(error),
        RecordError::Corrupt(reason) => TokenError::Corrupt {
            id: id.to_owned(),
            reason,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::password::Hasher;
    use crate::auth::users::NewUser;

    #[test]
    fn parses_only_well_formed_tokens() {
        let token = parse("strata_0123456789abcdef_c2VjcmV0").unwrap();
        assert_eq!(token.id, "0123456789abcdef");
        assert_eq!(token.secret, "c2VjcmV0");
        for bad in [
            "",
            "strata_",
            "strata_0123_x",
            "other_0123456789abcdef_x",
            "strata_0123456789abcdeg_x",
            "strata_0123456789abcdef_",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn created_tokens_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let users = Users::new(store.clone(), Hasher::new(2));
        users
            .create(NewUser {
                login: "svc".into(),
                full_name: String::new(),
                groups: vec![],
                password: "pw".into(),
            })
            .await
            .unwrap();
        let tokens = Tokens::new(store, users);
        assert!(matches!(
            tokens.create("nobody", "", None, "admin").await,
            Err(TokenError::User(UserError::NotFound { .. }))
        ));
        let created = tokens.create("svc", "ci", None, "admin").await.unwrap();
        let presented = parse(&created.token).unwrap();
        // No `_` inside a part: tools may split the token on its last `_` too.
        assert_eq!(presented.secret.len(), 64);
        assert!(presented.secret.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(created.token.rsplit_once('_').unwrap().1, presented.secret);
        let record = tokens.get(presented.id).await.unwrap().unwrap();
        assert_eq!(record.secret_sha256, digest(presented.secret));
        assert!(!serde_json::to_string(&record)
            .unwrap()
            .contains(presented.secret));
        assert_eq!(tokens.list().await.unwrap().len(), 1);
        tokens.revoke(presented.id).await.unwrap();
        assert!(tokens.get(presented.id).await.unwrap().unwrap().revoked);
        assert!(matches!(
            tokens.revoke("0000000000000000").await,
            Err(TokenError::NotFound { .. })
        ));
    }
}
