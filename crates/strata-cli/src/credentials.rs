//! Secrets the CLI handles: the password or token it authenticates to a server with,
//! and the new passwords of `strata user add|passwd|reset`.
//!
//! A secret never comes from a command-line argument (every user of the machine sees
//! those in `ps`): it comes from an environment variable (`STRATA_PASSWORD`,
//! `STRATA_TOKEN`, `STRATA_NEW_PASSWORD`), or is typed at a prompt without echo. It is
//! held in a [`Secret`], whose `Debug` shows nothing, so no log or error can print it.

use std::io::IsTerminal as _;

use crate::error::CliError;

/// The environment variable with the password of `--user`.
pub const PASSWORD_ENV: &str = "STRATA_PASSWORD";
/// The environment variable with a bearer token.
pub const TOKEN_ENV: &str = "STRATA_TOKEN";
/// The environment variable with the new password of `user add|passwd|reset`.
pub const NEW_PASSWORD_ENV: &str = "STRATA_NEW_PASSWORD";

/// A password or token. `Debug` and `Display` are redacted; [`Secret::expose`] is the
/// only way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    /// The secret text, to put on the wire or hand to the store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the CLI authenticates to a server.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// Nothing (a client certificate, if one is configured, may still authenticate).
    #[default]
    None,
    /// HTTP Basic: a login and its password.
    Basic {
        /// The login.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `Authorization: Bearer strata_<id>_<secret>`.
    Bearer(Secret),
}

impl Credentials {
    /// The value of the `Authorization` header, if any.
    pub fn authorization(&self) -> Option<String> {
        match self {
            Credentials::None => None,
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                crate::output::base64_encode(format!("{user}:{}", password.expose()).as_bytes())
            )),
            Credentials::Bearer(token) => Some(format!("Bearer {}", token.expose())),
        }
    }

    /// Who these credentials say the client is, for messages: never the secret.
    pub fn describe(&self) -> String {
        match self {
            Credentials::None => "a client without credentials".to_owned(),
            Credentials::Basic { user, .. } => format!("user {user:?}"),
            Credentials::Bearer(_) => "the token's user".to_owned(),
        }
    }

    /// The login, for password authentication.
    pub fn login(&self) -> Option<&str> {
        match self {
            Credentials::Basic { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Whether any credential is sent.
    pub fn is_some(&self) -> bool {
        !matches!(self, Credentials::None)
    }
}

/// Where the credentials come from, before any is read: `--user NAME` (its password
/// from `STRATA_PASSWORD` or the prompt), `--token` or `STRATA_TOKEN`, or nothing.
#[derive(Clone, Debug, Default)]
pub enum CredentialSource {
    /// No credentials.
    #[default]
    None,
    /// `--user NAME`.
    User(String),
    /// `--token`, or `STRATA_TOKEN` set.
    Token,
}

impl CredentialSource {
    /// Whether credentials will be sent.
    pub fn is_some(&self) -> bool {
        !matches!(self, CredentialSource::None)
    }

    /// Reads the secret (from the environment or the prompt).
    pub fn resolve(&self) -> Result<Credentials, CliError> {
        Ok(match self {
            CredentialSource::None => Credentials::None,
            CredentialSource::User(user) => Credentials::Basic {
                user: user.clone(),
                password: password_for(user)?,
            },
            CredentialSource::Token => {
                Credentials::Bearer(Secret::new(token()?.expose().trim().to_owned()))
            }
        })
    }
}

/// The value of the environment variable `name`, if set and not empty.
pub fn from_env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .map(Secret::new)
}

/// Asks for a secret on the terminal, without echo. Fails when there is no terminal
/// (stderr is not one: a script, a pipe, a test), naming the variable to set instead.
pub fn prompt(question: &str, env: &str) -> Result<Secret, CliError> {
    if !std::io::stderr().is_terminal() {
        return Err(CliError::Credentials(format!(
            "{question} needed and there is no terminal to ask on: set {env}"
        )));
    }
    let answer = rpassword::prompt_password(format!("{question}: ")).map_err(|error| {
        CliError::Credentials(format!(
            "cannot read the {} from the terminal ({error}): set {env}",
            question.to_lowercase()
        ))
    })?;
    if answer.is_empty() {
        return Err(CliError::Credentials(format!(
            "the {} must not be empty",
            question.to_lowercase()
        )));
    }
    Ok(Secret::new(answer))
}

/// The password of `user`: `STRATA_PASSWORD`, or asked for.
pub fn password_for(user: &str) -> Result<Secret, CliError> {
    match from_env(PASSWORD_ENV) {
        Some(password) => Ok(password),
        None => prompt(&format!("Password for {user}"), PASSWORD_ENV),
    }
}

/// A bearer token: `STRATA_TOKEN`, or asked for.
pub fn token() -> Result<Secret, CliError> {
    match from_env(TOKEN_ENV) {
        Some(token) => Ok(token),
        None => prompt("Token", TOKEN_ENV),
    }
}

/// A new password for `login`: `STRATA_NEW_PASSWORD`, or typed twice at the prompt
/// (the two must match).
pub fn new_password(login: &str) -> Result<Secret, CliError> {
    if let Some(password) = from_env(NEW_PASSWORD_ENV) {
        return Ok(password);
    }
    let first = prompt(&format!("New password for {login}"), NEW_PASSWORD_ENV)?;
    let second = prompt(
        &format!("Repeat the new password for {login}"),
        NEW_PASSWORD_ENV,
    )?;
    if first != second {
        return Err(CliError::Credentials(
            "the two passwords do not match".to_owned(),
        ));
    }
    Ok(first)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let credentials = Credentials::Basic {
            user: "alice".into(),
            password: Secret::new("hunter2".into()),
        };
        let shown = format!("{credentials:?} {}", credentials.describe());
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let token = Credentials::Bearer(Secret::new("strata_0123456789abcdef_s3cr3t".into()));
        let shown = format!("{token:?} {}", token.describe());
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn authorization_headers() {
        let basic = Credentials::Basic {
            user: "admin".into(),
            password: Secret::new("changeit".into()),
        };
        assert_eq!(basic.authorization().unwrap(), "Basic YWRtaW46Y2hhbmdlaXQ=");
        let bearer = Credentials::Bearer(Secret::new("strata_x_y".into()));
        assert_eq!(bearer.authorization().unwrap(), "Bearer strata_x_y");
        assert!(Credentials::None.authorization().is_none());
    }
}
