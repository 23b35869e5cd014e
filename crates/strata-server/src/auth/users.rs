//! User accounts, kept in the store itself so that they work on every backend (the
//! embedded engine and PostgreSQL) and travel with backups.
//!
//! A user `alice` is the metadata of the system stream `$user-alice` (stored in
//! `$$$user-alice`, under the key `strataUser`), as the persistent-subscription state is:
//! every change is one more metadata event, written with the revision it was read at,
//! so two servers changing the same user cannot lose each other's change. The record
//! holds the Argon2id hash of the password ([`password`](super::password)), never the
//! password. `$users` carries a marker once the default users were created, so that
//! deleting one of them is not undone by the next start.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata::{AppendError, CurrentRevision, ListStreamsOptions, ReadError, Store, StreamMetadata};

use super::password::{Hasher, PasswordError};
use super::principal::{ADMINS, ADMIN_USER, OPS, OPS_USER};
use super::record::{self, RecordError};

/// The prefix of the system stream whose metadata is a user record.
pub const USER_STREAM_PREFIX: &str = "$user-";
/// The system stream whose metadata marks that the default users were created.
pub const USERS_STREAM: &str = "$users";
/// The password of the default users until it is changed.
pub const DEFAULT_PASSWORD: &str = "changeit";
/// The longest login name, in bytes.
pub const LOGIN_BYTES_MAX: usize = 128;
/// The longest password, in bytes (a bound on what a request makes the server hash).
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// The most groups a user may be in.
pub const GROUPS_MAX: usize = 64;
/// The longest full name or group name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;

const USER_KEY: &str = "strataUser";
const DEFAULTS_KEY: &str = "strataDefaultUsers";
const RECORD_VERSION: u32 = 1;

/// What a user operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user (or it was deleted).
    #[error("user {login:?} does not exist")]
    NotFound {
        /// The login asked for.
        login: String,
    },
    /// A user with this login exists already.
    #[error("user {login:?} already exists")]
    AlreadyExists {
        /// The login.
        login: String,
    },
    /// Another change to the same user was made at the same time: try again.
    #[error("user {login:?} was changed concurrently; try again")]
    Conflict {
        /// The login.
        login: String,
    },
    /// `change_password` was given a current password that does not match.
    #[error("the current password of {login:?} does not match")]
    WrongPassword {
        /// The login.
        login: String,
    },
    /// A login, name, group or password breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field (`login`, `password`, `groups`, `full_name`).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The stored record cannot be read.
    #[error("the record of user {login:?} is corrupt: {reason}")]
    Corrupt {
        /// The login.
        login: String,
        /// What is wrong.
        reason: String,
    },
    /// Hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Reading the store failed.
    #[error("reading the user records failed: {0}")]
    Read(#[from] ReadError),
    /// Writing the store failed.
    #[error("writing the user record failed: {0}")]
    Append(#[source] AppendError),
}

/// A user as stored: everything but the password, which only its hash stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    /// Format version of the record.
    pub version: u32,
    /// The login name.
    pub login_name: String,
    /// A display name.
    pub full_name: String,
    /// The groups, in the order given.
    pub groups: Vec<String>,
    /// A disabled user cannot authenticate.
    pub disabled: bool,
    /// A deleted user is gone; the login can be created again.
    #[serde(default)]
    pub deleted: bool,
    /// The Argon2id PHC string of the password.
    pub password_hash: String,
    /// When the record was last written (milliseconds since the Unix epoch).
    pub updated_ms: u64,
}

/// A user as the API shows it (never with the hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserDetails {
    /// The login name.
    pub login_name: String,
    /// A display name.
    pub full_name: String,
    /// The groups.
    pub groups: Vec<String>,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// When the record was last written (milliseconds since the Unix epoch).
    pub updated_ms: u64,
}

impl From<&UserRecord> for UserDetails {
    fn from(record: &UserRecord) -> Self {
        UserDetails {
            login_name: record.login_name.clone(),
            full_name: record.full_name.clone(),
            groups: record.groups.clone(),
            disabled: record.disabled,
            updated_ms: record.updated_ms,
        }
    }
}

/// A new user.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The login name.
    pub login: String,
    /// A display name.
    pub full_name: String,
    /// The groups.
    pub groups: Vec<String>,
    /// The password (hashed before it is stored).
    pub password: String,
}

/// The user accounts of one store.
#[derive(Clone, Debug)]
pub struct Users {
    store: Store,
    hasher: Hasher,
}

/// A record and the revision of its metadata stream, to write the next one against.
struct Loaded {
    record: Option<UserRecord>,
    revision: CurrentRevision,
}

impl Users {
    /// The users of `store`, hashing with `hasher`.
    pub fn new(store: Store, hasher: Hasher) -> Users {
        Users { store, hasher }
    }

    /// The password hasher (shared with authentication).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Creates `admin` (in `$admins`) and `ops` (in `$ops`) with the password
    /// `changeit`, the first time a store is served with authentication. Returns the
    /// logins created (none once the defaults exist or were ever created).
    pub async fn ensure_defaults(&self) -> Result<Vec<String>, UserError> {
        let marker = self.store.stream_metadata(USERS_STREAM).await?;
        if marker.metadata.custom.get(DEFAULTS_KEY) == Some(&Value::Bool(true)) {
            return Ok(Vec::new());
        }
        let mut created = Vec::new();
        for (login, group, full_name) in [
            (ADMIN_USER, ADMINS, "KurrentDB Administrator"),
            (OPS_USER, OPS, "KurrentDB Operations"),
        ] {
            let user = NewUser {
                login: login.to_owned(),
                full_name: full_name.to_owned(),
                groups: vec![group.to_owned()],
                password: DEFAULT_PASSWORD.to_owned(),
            };
            match self.create(user).await {
                Ok(()) => created.push(login.to_owned()),
                Err(UserError::AlreadyExists { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let mut custom = marker.metadata.custom.clone();
        custom.insert(DEFAULTS_KEY.into(), Value::Bool(true));
        let metadata = StreamMetadata {
            custom,
            ..marker.metadata
        };
        match self
            .store
            .set_stream_metadata(USERS_STREAM, marker.revision.into(), &metadata)
            .await
        {
            // Another node set the marker at the same time: the defaults exist.
            Ok(_) | Err(AppendError::WrongExpectedRevision { .. }) => Ok(created),
            Err(error) => Err(UserError::Append(error)),
        }
    }

    /// Whether `login` still has the default password (`changeit`): the server warns
    /// at start until it is changed.
    pub async fn has_default_password(&self, login: &str) -> Result<bool, UserError> {
        match self.get(login).await? {
            Some(record) if !record.disabled => Ok(self
                .hasher
                .verify(DEFAULT_PASSWORD, &record.password_hash)
                .await?),
            _ => Ok(false),
        }
    }

    /// The user `login`, if it exists (and is not deleted).
    pub async fn get(&self, login: &str) -> Result<Option<UserRecord>, UserError> {
        Ok(self.load(login).await?.record.filter(|r| !r.deleted))
    }

    /// Every user, in login order.
    pub async fn list(&self) -> Result<Vec<UserDetails>, UserError> {
        let metastream_prefix = strata::stream::metastream(USER_STREAM_PREFIX);
        let streams = self
            .store
            .list_streams(ListStreamsOptions {
                prefix: Some(metastream_prefix.clone()),
                include_system: true,
                ..ListStreamsOptions::default()
            })
            .await?;
        let mut users = Vec::new();
        for stream in streams {
            let Some(login) = stream.name.strip_prefix(&metastream_prefix) else {
                continue;
            };
            if let Some(record) = self.get(login).await? {
                users.push(UserDetails::from(&record));
            }
        }
        Ok(users)
    }

    /// Creates a user. Fails with [`UserError::AlreadyExists`] if the login is taken.
    pub async fn create(&self, user: NewUser) -> Result<(), UserError> {
        check_login(&user.login)?;
        check_password(&user.password)?;
        check_names(&user.full_name, &user.groups)?;
        let loaded = self.load(&user.login).await?;
        if loaded.record.as_ref().is_some_and(|r| !r.deleted) {
            return Err(UserError::AlreadyExists { login: user.login });
        }
        let record = UserRecord {
            version: RECORD_VERSION,
            password_hash: self.hasher.hash(&user.password).await?,
            login_name: user.login,
            full_name: user.full_name,
            groups: user.groups,
            disabled: false,
            deleted: false,
            updated_ms: now_ms(),
        };
        self.write(record, loaded.revision).await
    }

    /// Changes a user's full name and groups.
    pub async fn update(
        &self,
        login: &str,
        full_name: String,
        groups: Vec<String>,
    ) -> Result<(), UserError> {
        check_names(&full_name, &groups)?;
        self.change(login, |record| {
            record.full_name = full_name;
            record.groups = groups;
        })
        .await
    }

    /// Deletes a user. Its login can be created again.
    pub async fn delete(&self, login: &str) -> Result<(), UserError> {
        self.change(login, |record| record.deleted = true).await
    }

    /// Enables or disables a user. A disabled user cannot authenticate.
    pub async fn set_disabled(&self, login: &str, disabled: bool) -> Result<(), UserError> {
        self.change(login, |record| record.disabled = disabled)
            .await
    }

    /// Sets a new password without the current one (an administrator's reset).
    pub async fn reset_password(&self, login: &str, new_password: &str) -> Result<(), UserError> {
        check_password(new_password)?;
        let hash = self.hasher.hash(new_password).await?;
        self.change(login, |record| record.password_hash = hash)
            .await
    }

    /// Sets a new password, given the current one.
    pub async fn change_password(
        &self,
        login: &str,
        current_password: &str,
        new_password: &str,
    ) -> Result<(), UserError> {
        check_password(new_password)?;
        let Some(record) = self.get(login).await? else {
            return Err(UserError::NotFound {
                login: login.to_owned(),
            });
        };
        if !self
            .hasher
            .verify(current_password, &record.password_hash)
            .await?
        {
            return Err(UserError::WrongPassword {
                login: login.to_owned(),
            });
        }
        self.reset_password(login, new_password).await
    }

    async fn change(
        &self,
        login: &str,
        edit: impl FnOnce(&mut UserRecord),
    ) -> Result<(), UserError> {
        let loaded = self.load(login).await?;
        let Some(mut record) = loaded.record.filter(|r| !r.deleted) else {
            return Err(UserError::NotFound {
                login: login.to_owned(),
            });
        };
        edit(&mut record);
        record.updated_ms = now_ms();
        self.write(record, loaded.revision).await
    }

    async fn load(&self, login: &str) -> Result<Loaded, UserError> {
        if check_login(login).is_err() {
            // No record can exist under a login that could not be created.
            return Ok(Loaded {
                record: None,
                revision: CurrentRevision::NoStream,
            });
        }
        let (record, revision) = record::load(&self.store, &user_stream(login), USER_KEY)
            .await
            .map_err(|error| record_error(login, error))?;
        Ok(Loaded { record, revision })
    }

    async fn write(&self, record: UserRecord, revision: CurrentRevision) -> Result<(), UserError> {
        let stream = user_stream(&record.login_name);
        record::save(&self.store, &stream, USER_KEY, &record, revision)
            .await
            .map_err(|error| record_error(&record.login_name, error))
    }
}

/// A record failure as a user error: a concurrent change is a [`UserError::Conflict`].
fn record_error(login: &str, error: RecordError) -> UserError {
    match error {
        RecordError::Read(error) => UserError::Read(error),
        RecordError::Append(AppendError::WrongExpectedRevision { .. }) => UserError::Conflict {
            login: login.to_owned(),
        },
        RecordError::Append(error) => UserError::Append(error),
        RecordError::Corrupt(reason) => UserError::Corrupt {
            login: login.to_owned(),
            reason,
        },
    }
}

/// The system stream whose metadata is the record of `login`.
pub fn user_stream(login: &str) -> String {
    format!("{USER_STREAM_PREFIX}{login}")
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Checks a login: 1 to 128 bytes, no control characters, no `:` (HTTP Basic
/// separates the login from the password with it) and no whitespace at either end.
pub fn check_login(login: &str) -> Result<(), UserError> {
    let invalid = |reason: &str| UserError::Invalid {
        field: "login",
        reason: reason.to_owned(),
    };
    if login.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if login.len() > LOGIN_BYTES_MAX {
        return Err(invalid(&format!("longer than {LOGIN_BYTES_MAX} bytes")));
    }
    if login.chars().any(|c| c.is_control() || c == ':') {
        return Err(invalid("must not contain ':' or control characters"));
    }
    if login.trim() != login {
        return Err(invalid("must not start or end with whitespace"));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), UserError> {
    let invalid = |reason: String| UserError::Invalid {
        field: "password",
        reason,
    };
    if password.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(invalid(format!("longer than {PASSWORD_BYTES_MAX} bytes")));
    }
    Ok(())
}

fn check_names(full_name: &str, groups: &[String]) -> Result<(), UserError> {
    if full_name.len() > NAME_BYTES_MAX || full_name.chars().any(char::is_control) {
        return Err(UserError::Invalid {
            field: "full_name",
            reason: format!("at most {NAME_BYTES_MAX} bytes, no control characters"),
        });
    }
    if groups.len() > GROUPS_MAX {
        return Err(UserError::Invalid {
            field: "groups",
            reason: format!("at most {GROUPS_MAX} groups"),
        });
    }
    for group in groups {
        if group.is_empty() || group.len() > NAME_BYTES_MAX || group.chars().any(char::is_control) {
            return Err(UserError::Invalid {
                field: "groups",
                reason: format!(
                    "each group is 1 to {NAME_BYTES_MAX} bytes without control characters"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn new_user(login: &str, password: &str) -> NewUser {
        NewUser {
            login: login.into(),
            full_name: "Alice A.".into(),
            groups: vec!["sales".into()],
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn defaults_are_created_once_and_never_again() {
        let (_dir, store) = store();
        let users = Users::new(store, Hasher::new(2));
        assert_eq!(users.ensure_defaults().await.unwrap(), ["admin", "ops"]);
        assert!(users.has_default_password("admin").await.unwrap());
        let admin = users.get("admin").await.unwrap().unwrap();
        assert_eq!(admin.groups, [ADMINS]);
        assert!(!admin.password_hash.contains(DEFAULT_PASSWORD));
        users.delete("ops").await.unwrap();
        assert!(users.ensure_defaults().await.unwrap().is_empty());
        assert!(
            users.get("ops").await.unwrap().is_none(),
            "a deleted default stays deleted"
        );
        let logins: Vec<_> = users
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.login_name)
            .collect();
        assert_eq!(logins, ["admin"]);
    }

    #[tokio::test]
    async fn lifecycle_of_a_user() {
        let (_dir, store) = store();
        let users = Users::new(store, Hasher::new(2));
        users.create(new_user("alice", "s3cret")).await.unwrap();
        assert!(matches!(
            users.create(new_user("alice", "other")).await,
            Err(UserError::AlreadyExists { .. })
        ));
        users
            .update("alice", "Alice B.".into(), vec!["ops-team".into()])
            .await
            .unwrap();
        let record = users.get("alice").await.unwrap().unwrap();
        assert_eq!(record.full_name, "Alice B.");
        assert_eq!(record.groups, ["ops-team"]);
        assert!(matches!(
            users.change_password("alice", "wrong", "new").await,
            Err(UserError::WrongPassword { .. })
        ));
        users
            .change_password("alice", "s3cret", "n3w")
            .await
            .unwrap();
        let record = users.get("alice").await.unwrap().unwrap();
        assert!(users
            .hasher()
            .verify("n3w", &record.password_hash)
            .await
            .unwrap());
        users.set_disabled("alice", true).await.unwrap();
        assert!(users.get("alice").await.unwrap().unwrap().disabled);
        users.delete("alice").await.unwrap();
        assert!(users.get("alice").await.unwrap().is_none());
        assert!(matches!(
            users.set_disabled("alice", false).await,
            Err(UserError::NotFound { .. })
        ));
        // A deleted login can be created again.
        users.create(new_user("alice", "again")).await.unwrap();
        assert!(!users.get("alice").await.unwrap().unwrap().disabled);
    }

    #[test]
    fn logins_that_cannot_be_sent_are_refused() {
        for bad in ["", "a:b", "tab\there", " lead", "trail ", &"x".repeat(129)] {
            assert!(check_login(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "ops", "$weird", "名前", "a.b@c"] {
            check_login(good).unwrap();
        }
    }
}
