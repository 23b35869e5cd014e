//! The one authorization layer every gRPC and HTTP request goes through before the
//! store: what an operation needs, and whether a principal has it. The rules are
//! KurrentDB's ("legacy ACL" policy):
//!
//! - the server itself and `$admins` may do everything on every stream (but nobody
//!   writes or deletes `$all`);
//! - anonymous clients have no stream access;
//! - other users get what the stream's effective ACL gives (see [`acl`](super::acl));
//!   `$$name` is the metadata of `name` (`$mr`/`$mw`);
//! - persistent-subscription management and the subsystem restart need `$ops` or
//!   `$admins`; consuming a group needs read access to its stream;
//! - user management needs `$admins`; reading a user needs `$admins` or to be that user;
//!   changing a password needs to be that user.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata::{ReadError, ReadStreamOptions, Store};

use super::acl::{effective_roles, StreamAcl, StreamAction, SystemSettings};
use super::principal::{Principal, EVERYONE};

/// The stream whose last event holds the server-wide ACL defaults.
pub use strata::stream::SETTINGS_STREAM;

/// How long the `$settings` defaults are kept before they are read again. A change
/// made on this server takes effect at once ([`Authorizer::settings_changed`]); one
/// made through another server within this time.
pub const SETTINGS_TTL: Duration = Duration::from_secs(1);

/// How long a stream's `$acl` is kept before its metadata is read again. Like the
/// settings, a change made on this server takes effect at once
/// ([`Authorizer::metadata_changed`]); one made through another server within this time.
pub const STREAM_ACL_TTL: Duration = Duration::from_secs(1);
/// The most streams whose `$acl` is kept; past it the cache starts over.
pub const STREAM_ACL_ENTRIES_MAX: usize = 10_000;

/// What a request asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation<'a> {
    /// Something on one stream (or on `$all`, named `$all`).
    Stream {
        /// What.
        action: StreamAction,
        /// Which stream; `$$name` for the metadata of `name`.
        stream: &'a str,
    },
    /// Create, update or delete a persistent-subscription group, replay its parked
    /// events, or restart the subsystem.
    ManageSubscriptions,
    /// List groups or read their statistics.
    SubscriptionStatistics,
    /// List, create, update, delete, enable or disable users, or reset a password.
    ManageUsers,
    /// Read one user's details.
    ReadUser {
        /// The user.
        login: &'a str,
    },
    /// Change one user's password (with the current one).
    ChangePassword {
        /// The user.
        login: &'a str,
    },
    /// Create, list or revoke bearer tokens.
    ManageTokens,
    /// Node information that needs a login: statistics, metrics, gossip.
    NodeRead,
}

impl Operation<'_> {
    /// A short name for logs, errors and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Stream { action, .. } => action.name(),
            Operation::ManageSubscriptions => "manage persistent subscriptions",
            Operation::SubscriptionStatistics => "read persistent subscription statistics",
            Operation::ManageUsers => "manage users",
            Operation::ReadUser { .. } => "read user",
            Operation::ChangePassword { .. } => "change password",
            Operation::ManageTokens => "manage tokens",
            Operation::NodeRead => "read node information",
        }
    }

    /// The stream, for stream operations.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Operation::Stream { stream, .. } => Some(stream),
            _ => None,
        }
    }
}

/// A request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access denied: {user} may not {operation}{}", stream.as_ref().map(|s| format!(" on stream {s:?}")).unwrap_or_default())]
pub struct AccessDenied {
    /// Who asked (`anonymous` without credentials).
    pub user: String,
    /// What was asked.
    pub operation: &'static str,
    /// On which stream, for stream operations.
    pub stream: Option<String>,
    /// Whether the client sent no credentials (HTTP answers 401 rather than 403).
    pub anonymous: bool,
}

/// Reading the ACLs failed: the request is refused, as the store could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// Refused.
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    /// The store could not be read.
    #[error("reading access rules failed: {0}")]
    Read(#[from] ReadError),
}

/// Decides requests against the ACLs of one store.
#[derive(Debug)]
pub struct Authorizer {
    store: Store,
    settings: Mutex<Option<CachedSettings>>,
    /// Each stream's own `$acl` (`None`: it has none), with when it was read.
    stream_acls: Mutex<std::collections::HashMap<String, (Instant, Option<StreamAcl>)>>,
}

#[derive(Clone, Debug)]
struct CachedSettings {
    read_at: Instant,
    user_streams: Option<StreamAcl>,
    system_streams: Option<StreamAcl>,
}

impl Authorizer {
    /// An authorizer over `store`.
    pub fn new(store: Store) -> Authorizer {
        Authorizer {
            store,
            settings: Mutex::new(None),
            stream_acls: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Forgets the cached `$settings`, after this server wrote it.
    pub fn settings_changed(&self) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Forgets the cached `$acl` of `stream`, after this server wrote its metadata.
    pub fn metadata_changed(&self, stream: &str) {
        self.stream_acls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(stream);
    }

    /// Whether `principal` may do `operation`.
    pub async fn check(
        &self,
        principal: &Principal,
        operation: Operation<'_>,
    ) -> Result<(), AuthorizeError> {
        let allowed = match operation {
            Operation::Stream { action, stream } => {
                self.stream_allowed(principal, action, stream).await?
            }
            Operation::ManageSubscriptions => principal.is_operator(),
            Operation::SubscriptionStatistics | Operation::NodeRead => principal.is_authenticated(),
            Operation::ManageUsers | Operation::ManageTokens => principal.is_admin(),
            Operation::ReadUser { login } => {
                principal.is_admin() || principal.login() == Some(login)
            }
            Operation::ChangePassword { login } => principal.login() == Some(login),
        };
        if allowed {
            Ok(())
        } else {
            Err(AccessDenied {
                user: principal.name().to_owned(),
                operation: operation.name(),
                stream: operation.stream().map(str::to_owned),
                anonymous: !principal.is_authenticated(),
            }
            .into())
        }
    }

    async fn stream_allowed(
        &self,
        principal: &Principal,
        action: StreamAction,
        stream: &str,
    ) -> Result<bool, ReadError> {
        let (action, target) = match strata::stream::metastream_target(stream) {
            Some(target) => match action {
                StreamAction::Read | StreamAction::MetadataRead => {
                    (StreamAction::MetadataRead, target)
                }
                StreamAction::Write | StreamAction::MetadataWrite => {
                    (StreamAction::MetadataWrite, target)
                }
                // A metadata stream is not deleted on its own.
                StreamAction::Delete => return Ok(false),
            },
            None => (action, stream),
        };
        if target == strata::stream::ALL_STREAM
            && matches!(action, StreamAction::Write | StreamAction::Delete)
        {
            return Ok(false);
        }
        if principal.is_admin() {
            return Ok(true);
        }
        if !principal.is_authenticated() {
            return Ok(false);
        }
        let own = self.stream_acl(target).await?;
        let settings = self.settings().await?;
        let system = strata::stream::is_system(target);
        let defaults = SystemSettings::default();
        let (level, default) = if system {
            (settings.system_streams.as_ref(), &defaults.system_streams)
        } else {
            (settings.user_streams.as_ref(), &defaults.user_streams)
        };
        let roles = effective_roles(action, own.as_ref(), level, default);
        Ok(roles
            .iter()
            .any(|role| role == EVERYONE || principal.has_role(role)))
    }

    /// The `$acl` of `stream`'s metadata, from the cache while it is fresh.
    async fn stream_acl(&self, stream: &str) -> Result<Option<StreamAcl>, ReadError> {
        if let Some((read_at, acl)) = self
            .stream_acls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
        {
            if read_at.elapsed() < STREAM_ACL_TTL {
                return Ok(acl.clone());
            }
        }
        let metadata = self.store.stream_metadata(stream).await?;
        let acl = metadata.metadata.acl.as_ref().map(StreamAcl::from_json);
        let mut cache = self.stream_acls.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= STREAM_ACL_ENTRIES_MAX && !cache.contains_key(stream) {
            cache.clear();
        }
        cache.insert(stream.to_owned(), (Instant::now(), acl.clone()));
        Ok(acl)
    }

    async fn settings(&self) -> Result<CachedSettings, ReadError> {
        if let Some(cached) = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|cached| cached.read_at.elapsed() < SETTINGS_TTL)
        {
            return Ok(cached.clone());
        }
        let read = self
            .store
            .read_stream(SETTINGS_STREAM, ReadStreamOptions::backwards().limit(1))
            .await;
        let (user_streams, system_streams) = match read {
            Ok(events) => match events.first() {
                None => (None, None),
                Some(event) => match serde_json::from_slice(&event.data) {
                    Ok(value) => SystemSettings::from_json(&value),
                    Err(error) => {
                        // Written before validation existed, or by hand: fail closed.
                        tracing::error!(
                            %error,
                            revision = event.revision,
                            "the last $settings event is not JSON: only $admins have stream access until it is replaced"
                        );
                        let closed = StreamAcl::uniform(super::principal::ADMINS);
                        (Some(closed.clone()), Some(closed))
                    }
                },
            },
            Err(ReadError::StreamNotFound { .. } | ReadError::StreamDeleted { .. }) => (None, None),
            Err(error) => return Err(error),
        };
        let cached = CachedSettings {
            read_at: Instant::now(),
            user_streams,
            system_streams,
        };
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = Some(cached.clone());
        Ok(cached)
    }
}
