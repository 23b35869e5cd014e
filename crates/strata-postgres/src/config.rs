//! The connection string: tokio-postgres' settings plus the TLS ones it does not know.
//!
//! Both forms libpq accepts are read: a URL (`postgres://user@host:port/db?sslmode=…`)
//! and `key=value` pairs (`host=… sslmode=verify-full sslrootcert='/etc/ca.pem'`).
//! tokio-postgres knows only `sslmode=disable|prefer|require` and refuses parameters it
//! does not know, so `sslmode` and `sslrootcert` are taken out of the string here, the
//! rest is given to [`tokio_postgres::Config`], and TLS is set up by
//! [`MakeRustlsConnect`] as libpq would (see [`crate::tls`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::{Client, Connection, Socket};

use crate::tls::{MakeRustlsConnect, RustlsStream, SslMode, TlsConfigError};

/// Why a connection string cannot be used. The messages never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// tokio-postgres (or the reading of the TLS parameters) refused the string.
    #[error("invalid PostgreSQL connection string: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// The TLS settings cannot be used (unknown `sslmode`, unreadable `sslrootcert`, …).
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// A parsed connection string: where to connect and how to secure it. Every connection
/// the backend makes is opened from one of these, so they all use the same TLS.
#[derive(Clone)]
pub struct ConnectionConfig {
    postgres: tokio_postgres::Config,
    sslmode: SslMode,
    root_cert: Option<PathBuf>,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres' Debug prints the password as `_`.
        f.debug_struct("ConnectionConfig")
            .field("postgres", &self.postgres)
            .field("sslmode", &self.sslmode)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

impl FromStr for ConnectionConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<ConnectionConfig, ConfigError> {
        ConnectionConfig::parse(s)
    }
}

impl ConnectionConfig {
    /// Reads a connection string (URL or `key=value` form) and loads the `sslrootcert`
    /// file if one is named. `sslmode` defaults to `prefer`, as in libpq.
    pub fn parse(s: &str) -> Result<ConnectionConfig, ConfigError> {
        let (rest, taken) = take_tls_parameters(s)?;
        let mut postgres: tokio_postgres::Config =
            rest.parse()
                .map_err(|e: tokio_postgres::Error| ConfigError::Invalid {
                    reason: crate::error::with_causes(&e),
                })?;
        let mut sslmode = SslMode::default();
        let mut root_cert = None;
        for (key, value) in taken {
            match key.as_str() {
                "sslmode" => sslmode = value.parse()?,
                "sslrootcert" if value == "system" => {
                    return Err(TlsConfigError::Unsupported {
                        parameter: "sslrootcert=system".into(),
                        hint: "give the path of a PEM file of the certificate authorities to trust",
                    }
                    .into())
                }
                "sslrootcert" => root_cert = (!value.is_empty()).then(|| PathBuf::from(value)),
                _ => {
                    return Err(TlsConfigError::Unsupported {
                        parameter: key,
                        hint:
                            "client certificates are not implemented; authenticate with a password",
                    }
                    .into())
                }
            }
        }
        postgres.ssl_mode(match sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let tls = MakeRustlsConnect::new(sslmode, root_cert.as_deref())?;
        Ok(ConnectionConfig {
            postgres,
            sslmode,
            root_cert,
            tls,
        })
    }

    /// The `sslmode` in force.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// The `sslrootcert` file, if one was given.
    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// The settings tokio-postgres reads (its `ssl_mode` is `require` for `verify-ca`
    /// and `verify-full`: the checks are [`ConnectionConfig::tls`]'s).
    pub fn postgres(&self) -> &tokio_postgres::Config {
        &self.postgres
    }

    /// The TLS connector for these settings.
    pub fn tls(&self) -> &MakeRustlsConnect {
        &self.tls
    }

    /// Opens one connection. Drive the returned [`Connection`] (spawn it) for the
    /// [`Client`] to work.
    pub async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, RustlsStream<Socket>>), tokio_postgres::Error> {
        self.postgres.connect(self.tls.clone()).await
    }
}

/// The parameters read here rather than by tokio-postgres.
fn taken_here(key: &str) -> bool {
    matches!(
        key,
        "sslmode" | "sslrootcert" | "sslcert" | "sslkey" | "sslpassword"
    )
}

/// `s` without the parameters [`taken_here`], and those parameters (decoded) in order.
fn take_tls_parameters(s: &str) -> Result<(String, Vec<(String, String)>), ConfigError> {
    match ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| s.strip_prefix(prefix).map(|body| (prefix, body)))
    {
        Some((prefix, body)) => take_from_url(prefix, body),
        None => take_from_key_values(s),
    }
}

/// The URL form, split as tokio-postgres splits it: the credentials end at the first
/// `@`, the query starts at the first `?` after them, parameters are `key=value`
/// separated by `&`, percent-encoded.
fn take_from_url(prefix: &str, body: &str) -> Result<(String, Vec<(String, String)>), ConfigError> {
    let after_credentials = body.find('@').map_or(0, |at| at + 1);
    let Some(question) = body[after_credentials..].find('?') else {
        return Ok((format!("{prefix}{body}"), Vec::new()));
    };
    let (head, query) = body.split_at(after_credentials + question);
    let query = &query[1..];
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for parameter in query.split('&') {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let key = percent_decode(key)?;
        if taken_here(&key) {
            taken.push((key, percent_decode(value)?));
        } else {
            kept.push(parameter);
        }
    }
    let rest = if kept.is_empty() {
        format!("{prefix}{head}")
    } else {
        format!("{prefix}{head}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn percent_decode(s: &str) -> Result<String, ConfigError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                let value = hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ConfigError::Invalid {
        reason: "a URL parameter is not UTF-8 once percent-decoded".into(),
    })
}

/// The `key=value` form, tokenised as tokio-postgres does: whitespace between pairs,
/// optional whitespace around `=`, values either bare (up to whitespace) or in single
/// quotes, with `\` escaping the next character in both.
fn take_from_key_values(s: &str) -> Result<(String, Vec<(String, String)>), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { reason };
    let mut chars = s.char_indices().peekable();
    let mut rest = String::with_capacity(s.len());
    let mut taken = Vec::new();
    // The byte where the text not yet copied to `rest` starts.
    let mut copied = 0;
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        match chars.next() {
            Some((_, '=')) => {}
            // The character is not quoted back: it may be part of a password.
            Some((i, _)) => {
                return Err(invalid(format!(
                    "expected `=` at byte {i} (key=value pairs are separated by spaces; quote values that contain spaces)"
                )))
            }
            None => return Err(invalid("unexpected end after a key".into())),
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(invalid(
                            "unterminated quoted connection parameter value".into(),
                        ))
                    }
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        if taken_here(&key) {
            rest.push_str(&s[copied..start]);
            copied = end;
            taken.push((key, value));
        }
    }
    rest.push_str(&s[copied..]);
    Ok((rest, taken))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn take(s: &str) -> (String, Vec<(String, String)>) {
        take_tls_parameters(s).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn url_parameters_are_taken_out_and_decoded() {
        assert_eq!(
            take("postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fmy%20ca.pem&application_name=x"),
            (
                "postgres://u:p@h:5432/db?application_name=x".into(),
                pairs(&[("sslmode", "verify-full"), ("sslrootcert", "/tmp/my ca.pem")])
            )
        );
        assert_eq!(
            take("postgresql://h/db?sslmode=require"),
            ("postgresql://h/db".into(), pairs(&[("sslmode", "require")]))
        );
        assert_eq!(
            take("postgres://h/db"),
            ("postgres://h/db".into(), Vec::new())
        );
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_query() {
        assert_eq!(
            take("postgres://u:pa?ss@h/db?sslmode=disable"),
            (
                "postgres://u:pa?ss@h/db".into(),
                pairs(&[("sslmode", "disable")])
            )
        );
    }

    #[test]
    fn key_value_parameters_are_taken_out_with_quotes_and_escapes() {
        assert_eq!(
            take("host=h sslmode = verify-ca  sslrootcert='/tmp/a b\\'c.pem' dbname=x"),
            (
                "host=h    dbname=x".into(),
                pairs(&[("sslmode", "verify-ca"), ("sslrootcert", "/tmp/a b'c.pem")])
            )
        );
        assert_eq!(
            take("sslrootcert=/tmp/a\\ b.pem"),
            ("".into(), pairs(&[("sslrootcert", "/tmp/a b.pem")]))
        );
        assert_eq!(
            take("password='x y' port=1"),
            ("password='x y' port=1".into(), Vec::new())
        );
        assert!(take_tls_parameters("sslrootcert='/tmp").is_err());
    }

    #[test]
    fn sslmode_is_given_to_tokio_postgres_as_it_knows_it() {
        use tokio_postgres::config::SslMode as Pg;
        let cases = [
            ("disable", Pg::Disable),
            ("prefer", Pg::Prefer),
            ("require", Pg::Require),
        ];
        for (mode, expected) in cases {
            let config =
                ConnectionConfig::parse(&format!("postgres://h/db?sslmode={mode}")).unwrap();
            assert_eq!(config.postgres().get_ssl_mode(), expected, "{mode}");
            assert_eq!(config.sslmode().as_str(), mode);
        }
        let config = ConnectionConfig::parse("host=h").unwrap();
        assert_eq!(config.sslmode(), SslMode::Prefer);
        assert_eq!(config.postgres().get_ssl_mode(), Pg::Prefer);
    }

    #[test]
    fn unknown_sslmode_and_unsupported_parameters_are_typed_errors() {
        let error =
            ConnectionConfig::parse("postgres://h/db?sslmode=verify-everything").unwrap_err();
        assert!(
            matches!(&error, ConfigError::Tls(TlsConfigError::UnknownSslMode { value }) if value == "verify-everything"),
            "{error:?}"
        );
        let error = ConnectionConfig::parse("host=h sslmode=verify-full").unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Tls(TlsConfigError::MissingRootCert {
                    sslmode: SslMode::VerifyFull
                })
            ),
            "{error:?}"
        );
        let error = ConnectionConfig::parse("host=h sslcert=/c.pem").unwrap_err();
        assert!(
            matches!(&error, ConfigError::Tls(TlsConfigError::Unsupported { parameter, .. }) if parameter == "sslcert"),
            "{error:?}"
        );
        let error = ConnectionConfig::parse("host=h sslfoo=1").unwrap_err();
        assert!(
            matches!(&error, ConfigError::Invalid { reason } if reason.contains("unknown option `sslfoo`")),
            "{error:?}"
        );
        let error = ConnectionConfig::parse("host=h sslrootcert=system").unwrap_err();
        assert!(
            matches!(&error, ConfigError::Tls(TlsConfigError::Unsupported { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn errors_and_debug_output_never_show_the_password() {
        let secret = "s3cr3t-pa55";
        for s in [
            format!("postgres://u:{secret}@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"),
            format!("postgres://u:{secret}@h/db?sslmode=bogus"),
            format!("postgres://u:{secret}@h/db?port=notaport"),
            format!("host=h password={secret} sslmode=verify-full sslrootcert=/nonexistent"),
        ] {
            let error = ConnectionConfig::parse(&s).unwrap_err();
            assert!(!error.to_string().contains(secret), "{error}");
            assert!(!format!("{error:?}").contains(secret), "{error:?}");
        }
        let config = ConnectionConfig::parse(&format!("postgres://u:{secret}@h/db")).unwrap();
        assert!(!format!("{config:?}").contains(secret));
    }
}
