//! Who is asking: the identity every authorization decision is made for.

/// The group whose members may do everything (KurrentDB's `$admins`).
pub const ADMINS: &str = "$admins";
/// The group of operators: node operations and subscription management, no stream
/// access of its own (KurrentDB's `$ops`).
pub const OPS: &str = "$ops";
/// The role in an ACL that stands for every authenticated user (KurrentDB's `$all`).
pub const EVERYONE: &str = "$all";
/// The default administrator's login.
pub const ADMIN_USER: &str = "admin";
/// The default operator's login.
pub const OPS_USER: &str = "ops";

/// How a user proved who they are.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AuthMethod {
    /// A login and password (HTTP Basic, in the gRPC `authorization` metadata too).
    Password,
    /// A TLS client certificate whose common name is the login.
    Certificate,
    /// A bearer token.
    Token,
}

impl AuthMethod {
    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Certificate => "certificate",
            AuthMethod::Token => "token",
        }
    }
}

/// An authenticated user: the login and the groups the user record gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    /// The login name.
    pub login: String,
    /// The groups (`$admins`, `$ops`, or any name an administrator gave).
    pub groups: Vec<String>,
    /// How the user authenticated.
    pub method: AuthMethod,
}

/// The identity a request runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The server itself, and every client when authentication is off (insecure and
    /// loopback-only modes): allowed everything.
    System,
    /// An authenticated user.
    User(UserIdentity),
    /// A client that sent no credentials, with authentication on: allowed only what
    /// needs no login (server features, health).
    Anonymous,
}

impl Principal {
    /// Whether this is the server or a member of `$admins` (or the `admin` user, which
    /// KurrentDB treats as an administrator whatever its groups).
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::System => true,
            Principal::User(user) => {
                user.login == ADMIN_USER || user.groups.iter().any(|g| g == ADMINS)
            }
            Principal::Anonymous => false,
        }
    }

    /// Whether this is an administrator or an operator (`$ops`, or the `ops` user).
    pub fn is_operator(&self) -> bool {
        self.is_admin()
            || matches!(self, Principal::User(user)
                if user.login == OPS_USER || user.groups.iter().any(|g| g == OPS))
    }

    /// Whether this is an authenticated user or the server.
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Principal::Anonymous)
    }

    /// Whether `role` (an entry of an ACL) names this user or one of its groups.
    /// `$all` matches every authenticated user.
    pub fn has_role(&self, role: &str) -> bool {
        match self {
            Principal::System => true,
            Principal::User(user) => {
                role == EVERYONE || user.login == role || user.groups.iter().any(|g| g == role)
            }
            Principal::Anonymous => false,
        }
    }

    /// The login, for user operations on oneself (`ChangePassword`, `Details`).
    pub fn login(&self) -> Option<&str> {
        match self {
            Principal::User(user) => Some(&user.login),
            Principal::System | Principal::Anonymous => None,
        }
    }

    /// The name logs and audit lines show: the login, `$system` or `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Principal::System => "$system",
            Principal::User(user) => &user.login,
            Principal::Anonymous => "anonymous",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(login: &str, groups: &[&str]) -> Principal {
        Principal::User(UserIdentity {
            login: login.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            method: AuthMethod::Password,
        })
    }

    #[test]
    fn roles_match_login_groups_and_everyone() {
        let alice = user("alice", &["sales"]);
        assert!(alice.has_role("alice"));
        assert!(alice.has_role("sales"));
        assert!(alice.has_role(EVERYONE));
        assert!(!alice.has_role("bob"));
        assert!(!alice.has_role(ADMINS));
        assert!(!alice.is_admin());
        assert!(!Principal::Anonymous.has_role(EVERYONE));
        assert!(Principal::System.is_admin());
    }

    #[test]
    fn admins_and_operators() {
        assert!(user("admin", &[]).is_admin());
        assert!(user("carol", &[ADMINS]).is_admin());
        assert!(user("ops", &[]).is_operator());
        assert!(user("dave", &[OPS]).is_operator());
        assert!(!user("dave", &[OPS]).is_admin());
        assert!(!user("eve", &["sales"]).is_operator());
    }
}
