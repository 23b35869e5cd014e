//! The errors of the `strata` command and the exit codes they map to.

use std::io;
use std::path::PathBuf;

use strata::{AppendError, OpenError, ReadError, StorageError};

/// Everything that can make a `strata` command fail. Printed as `error: …` on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Another process holds the store's lock.
    #[error(
        "the store at {} is already open in another process (its lock file {}/LOCK is held); \
         stop that process first (`strata verify` and `strata tail` work on an open store)",
        path.display(),
        path.display()
    )]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The store could not be opened for another reason.
    #[error("cannot open the store: {0}")]
    Open(OpenError),
    /// A command that only reads was pointed at a directory that does not exist.
    #[error(
        "no store at {}: the directory does not exist (pass --data DIR or set STRATA_DATA)",
        path.display()
    )]
    NoStore {
        /// The directory.
        path: PathBuf,
    },
    /// An append, delete or metadata write failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A read or a subscription failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file or terminal operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A line of JSON input was invalid or could not be applied.
    #[error("{input} line {line}: {message}")]
    Line {
        /// Where the line came from (a file name or `stdin`).
        input: String,
        /// The 1-based line number.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// `strata verify` found damage (exit code 2).
    #[error("verify found {count} problem(s): the store is damaged")]
    Corrupt {
        /// How many problems were found.
        count: usize,
    },
    /// The benchmark could not run.
    #[error("benchmark failed: {0}")]
    Bench(String),
    /// SQLite failed in the benchmark's comparison (`bench --only scale`).
    #[error("benchmark failed: SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A `--server` could not be reached, or the connection broke.
    #[error("cannot reach the server at {url}: {message}")]
    Connect {
        /// The server's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A `--server` answered with an error.
    #[error("{message} (server: {code})")]
    Remote {
        /// The server's error code, e.g. `wrong_expected_revision`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A `--server` answered with something that is not the API's JSON.
    #[error("the server at {url} answered unexpectedly: {message}")]
    Protocol {
        /// The server's URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A `--server` refused the credentials (HTTP 401).
    #[error(
        "authentication failed: check --user/STRATA_PASSWORD or STRATA_TOKEN (the server at \
         {url} did not accept {who})"
    )]
    Unauthenticated {
        /// The server's URL.
        url: String,
        /// Who the client said it was ([`Credentials::describe`](crate::credentials::Credentials::describe)).
        who: String,
    },
    /// A `--server` refused the operation to the authenticated user (HTTP 403).
    #[error("access denied: {who} may not {operation} (server: {message})")]
    AccessDenied {
        /// Who the client authenticated as.
        who: String,
        /// What the CLI asked for, with the stream (`read stream "$all"`).
        operation: String,
        /// The server's message.
        message: String,
    },
    /// A password or token could not be had (no terminal to ask on, a mismatch).
    #[error("{0}")]
    Credentials(String),
    /// The TLS configuration of `--server https://…` could not be made.
    #[error("--server: {0}")]
    TlsClient(#[from] crate::connect::TlsClientError),
    /// A user operation on the local store failed.
    #[error(transparent)]
    User(#[from] strata_server::auth::UserError),
    /// A token operation on the local store failed.
    #[error(transparent)]
    Token(#[from] strata_server::auth::tokens::TokenError),
    /// A certificate could not be made (`strata certs`).
    #[error("certs: {0}")]
    Certs(#[from] crate::commands::certs::CertsError),
    /// The server could not start or failed.
    #[error("server: {0}")]
    Server(#[from] strata_server::ServerError),
}

impl From<OpenError> for CliError {
    fn from(error: OpenError) -> CliError {
        match error {
            OpenError::Locked { path } => CliError::Locked { path },
            other => CliError::Open(other),
        }
    }
}

impl CliError {
    /// An I/O error, with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> CliError {
        CliError::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit code for this error: 2 for damage found by `verify` and for
    /// commands not built yet, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Corrupt { .. } => 2,
            _ => 1,
        }
    }

    /// Whether this is a write to a closed pipe (`strata read … | head`), which ends the
    /// command quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Wraps an error writing the command's output.
pub fn output_error(source: io::Error) -> CliError {
    CliError::io("cannot write the output", source)
}
