//! The subcommands, one module each, and what they share: opening the store and the
//! filter options of the global log.

pub mod append;
pub mod certs;
pub mod export;
pub mod follow;
pub mod import;
pub mod read;
pub mod serve;
pub mod stats;
pub mod streams;
pub mod tail;
pub mod token;
pub mod user;
pub mod verify;

use std::path::PathBuf;

use clap::Args;
use strata::engine::IndexSource;
use strata::{ExpectedRevision, Filter, Store};

use crate::client::{ClientOptions, ServerClient};
use crate::credentials::{self, CredentialSource};
use crate::error::CliError;

/// The name that stands for the global log.
pub const ALL: &str = strata::stream::ALL_STREAM;

/// How to reach and authenticate to a `--server`. These options go before the
/// subcommand (`strata --server URL --ca ca.pem --user admin read s`): `--user` after
/// `token create` names the token's owner instead.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Server connection (before the subcommand)")]
pub struct ConnectArgs {
    /// The CA certificate (PEM) that signed the server's certificate: required for
    /// `--server https://…` (the platform's trusted roots are not used); `ca.pem` from
    /// `strata certs create-ca`.
    #[arg(long, value_name = "FILE", env = "STRATA_CA")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) to present over TLS; a server with `--tls-ca`
    /// authenticates its common name as the login. Needs --key.
    #[arg(long, value_name = "FILE", env = "STRATA_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", env = "STRATA_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Authenticate as this user (HTTP Basic). The password comes from the environment
    /// variable STRATA_PASSWORD, or is asked for without echo; it is never an argument.
    #[arg(
        long,
        value_name = "NAME",
        env = "STRATA_USER",
        conflicts_with = "token"
    )]
    pub user: Option<String>,
    /// Authenticate with a bearer token (`strata token create`), taken from the
    /// environment variable STRATA_TOKEN or asked for without echo. Without --user,
    /// STRATA_TOKEN is used when set, with or without this flag.
    #[arg(long)]
    pub token: bool,
}

impl ConnectArgs {
    /// Where the credentials come from.
    pub fn source(&self) -> CredentialSource {
        match &self.user {
            Some(user) => CredentialSource::User(user.clone()),
            None if self.token || credentials::from_env(credentials::TOKEN_ENV).is_some() => {
                CredentialSource::Token
            }
            None => CredentialSource::None,
        }
    }
}

/// Which store a command works on.
#[derive(Clone, Debug)]
pub struct Target {
    /// The embedded store's directory.
    pub data: PathBuf,
    /// A PostgreSQL database to use instead, if given.
    pub postgres: Option<String>,
    /// A running `strata serve` to talk to over HTTP instead, if given.
    pub server: Option<String>,
    /// How to reach and authenticate to the server.
    pub connect: ConnectArgs,
}

impl Target {
    /// The HTTP client for `--server`, if one was given (its password or token read
    /// now, from the environment or the prompt).
    pub fn client(&self) -> Result<Option<ServerClient>, CliError> {
        let Some(url) = self.server.as_deref() else {
            return Ok(None);
        };
        let options = ClientOptions {
            ca: self.connect.ca.clone(),
            client_cert: self.connect.cert.clone().zip(self.connect.key.clone()),
            credentials: self.connect.source(),
        };
        ServerClient::new(url, options).map(Some)
    }
}

/// Opens the store of `target`: PostgreSQL if a URL was given, else the embedded store
/// in its directory. With `create`, a missing directory becomes a new store; without,
/// it is an error (commands that only read should not create stores by typo). Notes on
/// stderr what the open repaired.
///
/// Without the background scrubber: these commands hold the store for moments (or, as
/// `tail`, only to read), and would only start a pass to stop it; `strata verify`
/// checks every segment at once, and `strata serve` scrubs.
pub async fn open_store(target: &Target, create: bool) -> Result<Store, CliError> {
    let options = strata::Options {
        scrub_bytes_per_second: 0,
        ..strata::Options::default()
    };
    open_store_with(target, create, options).await
}

/// As [`open_store`], with `options` for the embedded store (PostgreSQL takes its
/// defaults).
pub async fn open_store_with(
    target: &Target,
    create: bool,
    options: strata::Options,
) -> Result<Store, CliError> {
    if let Some(url) = &target.postgres {
        return Ok(strata_postgres::connect(url).await?);
    }
    let dir = target.data.as_path();
    if !create && !dir.is_dir() {
        return Err(CliError::NoStore {
            path: dir.to_path_buf(),
        });
    }
    let store = Store::open_with(dir, options)?;
    if let Some(engine) = store.embedded() {
        let report = engine.open_report();
        if let Some(tail) = &report.truncated_tail {
            eprintln!(
                "note: cut off a torn tail of {} bytes at offset {} of {} ({}): an \
                 interrupted write that was never acknowledged",
                tail.bytes, tail.offset, tail.file, tail.reason
            );
        }
        if let Some(segment) = &report.removed_segment {
            eprintln!("note: removed {segment}, a segment file whose header was never written");
        }
        if let IndexSource::Rebuilt { reason } = &report.index_source {
            if report.events > 0 {
                eprintln!(
                    "note: rebuilt the index from {} events ({reason})",
                    report.scanned_events
                );
            }
        }
    }
    Ok(store)
}

/// Closes the store: waits for pending appends, writes the index checkpoint and releases
/// the lock.
pub async fn close_store(store: Store) -> Result<(), CliError> {
    store.close().await.map_err(CliError::from)
}

/// Parses an expected revision: `any`, `no-stream`, `exists` or a revision number.
pub fn parse_expected(text: &str) -> Result<ExpectedRevision, String> {
    match text {
        "any" => Ok(ExpectedRevision::Any),
        "no-stream" | "no_stream" => Ok(ExpectedRevision::NoStream),
        "exists" | "stream-exists" => Ok(ExpectedRevision::StreamExists),
        _ => text.parse().map(ExpectedRevision::Exact).map_err(|_| {
            format!("{text:?} is not an expected revision: use any, no-stream, exists or a number")
        }),
    }
}

/// Options that select events of the global log (`$all` only).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Filters ('$all' only)")]
pub struct FilterArgs {
    /// Only streams of this category: the part of the name before the first `-`
    /// (`order` for `order-42`). Repeat to allow several.
    #[arg(long = "category", value_name = "C")]
    pub categories: Vec<String>,
    /// Only streams whose name starts with this. Repeat to allow several; combines with
    /// --category as "either".
    #[arg(long = "stream-prefix", value_name = "P")]
    pub stream_prefixes: Vec<String>,
    /// Only events of exactly this type. Repeat to allow several.
    #[arg(long = "type", value_name = "T")]
    pub event_types: Vec<String>,
    /// Only events whose type starts with this. Repeat to allow several.
    #[arg(long = "type-prefix", value_name = "P")]
    pub event_type_prefixes: Vec<String>,
    /// Leave out system events: metadata streams (`$$…`) and `$…` event types such as
    /// tombstones.
    #[arg(long)]
    pub exclude_system: bool,
}

impl FilterArgs {
    /// Whether no filter option was given.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
            && self.stream_prefixes.is_empty()
            && self.event_types.is_empty()
            && self.event_type_prefixes.is_empty()
            && !self.exclude_system
    }

    /// The store filter these options describe.
    pub fn to_filter(&self) -> Filter {
        let mut filter = Filter::new();
        for category in &self.categories {
            filter = filter.category(category);
        }
        for prefix in &self.stream_prefixes {
            filter = filter.stream_prefix(prefix);
        }
        for event_type in &self.event_types {
            filter = filter.event_type(event_type);
        }
        for prefix in &self.event_type_prefixes {
            filter = filter.event_type_prefix(prefix);
        }
        if self.exclude_system {
            filter = filter.exclude_system_events();
        }
        filter
    }

    /// The filters as query parameters of the HTTP API.
    pub fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        pairs.extend(self.categories.iter().map(|v| ("category", v.clone())));
        pairs.extend(
            self.stream_prefixes
                .iter()
                .map(|v| ("stream_prefix", v.clone())),
        );
        pairs.extend(self.event_types.iter().map(|v| ("event_type", v.clone())));
        pairs.extend(
            self.event_type_prefixes
                .iter()
                .map(|v| ("event_type_prefix", v.clone())),
        );
        if self.exclude_system {
            pairs.push(("exclude_system", "true".to_owned()));
        }
        pairs
    }

    /// Fails if filters were given for a single stream.
    pub fn only_for_all(&self, stream: &str) -> Result<(), CliError> {
        if stream != ALL && !self.is_empty() {
            return Err(CliError::Usage(format!(
                "--category, --stream-prefix, --type, --type-prefix and --exclude-system \
                 apply only to '{ALL}', not to the stream {stream:?}"
            )));
        }
        Ok(())
    }
}
