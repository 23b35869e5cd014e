//! Authentication and authorization, KurrentDB's model: users and groups, Basic
//! credentials, client certificates and bearer tokens, stream ACLs.
//!
//! - [`principal`]: who a request runs as.
//! - [`password`]: Argon2id hashes, a bounded number at a time.
//! - [`users`], [`tokens`]: the accounts and tokens, kept in the store's own system
//!   streams (so they work on every backend) as [`record`]s.
//! - [`authenticate`]: credentials to a principal, cached per credential, with a
//!   throttle on addresses that keep failing.
//! - [`acl`], [`authorize`]: the one check every gRPC and HTTP request passes before
//!   the store.
//!
//! [`Auth`] puts them together for the server, and writes the audit trail: every
//! failed authentication and every refused request is logged at `warn` on the
//! `strata::audit` target (user, address, operation, stream — never a secret) and
//! counted in `strata_auth_failures_total` and `strata_access_denied_total`.
//!
//! Authentication is on when the server runs with TLS; in the insecure and
//! loopback-only modes every request runs as [`Principal::System`], as KurrentDB's
//! insecure mode allows everything.

pub mod acl;
pub mod authenticate;
pub mod authorize;
pub mod password;
pub mod principal;
pub mod record;
pub mod tokens;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use strata::Store;

pub use acl::StreamAction;
pub use authenticate::{AuthFailure, Authenticator, FailureReason, Presented};
pub use authorize::{AccessDenied, AuthorizeError, Authorizer, Operation};
pub use password::Hasher;
pub use principal::{AuthMethod, Principal, UserIdentity};
pub use tokens::Tokens;
pub use users::{UserError, Users};

use crate::metrics::{AccessDeniedLabels, Api, AuthFailureLabels, Metrics};

/// A change to a user account made through the server, for the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserChange {
    /// Created.
    Created,
    /// Full name or groups changed.
    Updated,
    /// Deleted.
    Deleted,
    /// Enabled.
    Enabled,
    /// Disabled.
    Disabled,
    /// The user changed their own password.
    PasswordChanged,
    /// An administrator set a new password.
    PasswordReset,
}

impl UserChange {
    /// The audit event's name.
    pub fn event(self) -> &'static str {
        match self {
            UserChange::Created => "user_created",
            UserChange::Updated => "user_updated",
            UserChange::Deleted => "user_deleted",
            UserChange::Enabled => "user_enabled",
            UserChange::Disabled => "user_disabled",
            UserChange::PasswordChanged => "password_changed",
            UserChange::PasswordReset => "password_reset",
        }
    }
}

/// Authentication and authorization for one server.
#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    authenticator: Authenticator,
    authorizer: Authorizer,
    metrics: Arc<Metrics>,
}

impl Auth {
    /// Auth over `store`: checking credentials and ACLs if `enabled`, allowing
    /// everything otherwise.
    pub fn new(store: Store, enabled: bool, metrics: Arc<Metrics>) -> Auth {
        let users = Users::new(store.clone(), Hasher::default());
        let tokens = Tokens::new(store.clone(), users.clone());
        Auth {
            enabled,
            authenticator: Authenticator::new(users, tokens),
            authorizer: Authorizer::new(store),
            metrics,
        }
    }

    /// Whether credentials and ACLs are checked.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The user accounts.
    pub fn users(&self) -> &Users {
        self.authenticator.users()
    }

    /// The bearer tokens.
    pub fn tokens(&self) -> &Tokens {
        self.authenticator.tokens()
    }

    /// The authenticator (to forget cached logins after a change).
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The authorizer (to forget cached settings after a change).
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// What both APIs do after a user operation on `login`: forget what the login
    /// cache knew of the user (whether or not the operation succeeded: the record may
    /// have changed either way), and write the audit line of a change that was made.
    pub fn user_changed(
        &self,
        api: Api,
        by: &Principal,
        login: &str,
        change: UserChange,
        result: Result<(), UserError>,
    ) -> Result<(), UserError> {
        self.authenticator.forget(login);
        if result.is_ok() {
            tracing::info!(
                target: "strata::audit",
                event = change.event(),
                api = ?api,
                user = %login,
                by = by.name(),
                "user changed"
            );
        }
        result
    }

    /// Tells the authorizer a stream was appended to: after a write to `$settings` or
    /// to a stream's metadata (`$$name`), the next check reads the new rules.
    pub fn appended(&self, stream: &str) {
        if stream == strata::stream::SETTINGS_STREAM {
            self.authorizer.settings_changed();
        }
        if let Some(target) = strata::stream::metastream_target(stream) {
            self.authorizer.metadata_changed(target);
        }
    }

    /// The principal of a request: [`Principal::System`] with authentication off.
    /// A failure is logged and counted before it is returned.
    pub async fn authenticate(
        &self,
        api: Api,
        presented: Presented<'_>,
        address: Option<SocketAddr>,
    ) -> Result<Principal, AuthFailure> {
        if !self.enabled {
            return Ok(Principal::System);
        }
        match self
            .authenticator
            .authenticate(presented, address.map(|a| a.ip()))
            .await
        {
            Ok(principal) => Ok(principal),
            Err(failure) => {
                tracing::warn!(
                    target: "strata::audit",
                    event = "authentication_failed",
                    api = ?api,
                    user = failure.login.as_deref().unwrap_or(""),
                    method = failure.method.name(),
                    reason = failure.reason.name(),
                    address = ?address,
                    "authentication failed"
                );
                self.metrics
                    .auth_failures
                    .get_or_create(&AuthFailureLabels {
                        api,
                        reason: failure.reason.name(),
                    })
                    .inc();
                Err(failure)
            }
        }
    }

    /// Whether `principal` may do `operation`. A refusal is logged and counted.
    pub async fn authorize(
        &self,
        api: Api,
        principal: &Principal,
        operation: Operation<'_>,
        address: Option<SocketAddr>,
    ) -> Result<(), AuthorizeError> {
        if !self.enabled {
            return Ok(());
        }
        let result = self.authorizer.check(principal, operation).await;
        if let Err(AuthorizeError::Denied(denied)) = &result {
            tracing::warn!(
                target: "strata::audit",
                event = "access_denied",
                api = ?api,
                user = %denied.user,
                operation = denied.operation,
                stream = denied.stream.as_deref().unwrap_or(""),
                address = ?address,
                "access denied"
            );
            self.metrics
                .access_denied
                .get_or_create(&AccessDeniedLabels {
                    api,
                    operation: denied.operation,
                })
                .inc();
        }
        result
    }
}
