//! `strata`: the command line of the strata event store.
//!
//! Appends and reads events, follows the log live, checks and copies a store, serves it
//! over the network, and manages its users and tokens. Every subcommand works on the
//! store in `--data DIR` (or `--postgres URL`); the data commands and `user`/`token`
//! also work against a running server (`--server URL`, with `--ca`, `--user` or
//! `STRATA_TOKEN` for one with TLS).

mod bench;
mod bench_model;
mod bench_postgres;
mod bench_scale;
mod bench_server;
mod client;
mod commands;
mod connect;
mod credentials;
mod error;
mod input;
mod logging;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::bench::BenchArgs;
use crate::commands::append::AppendArgs;
use crate::commands::certs::CertsCommand;
use crate::commands::export::ExportArgs;
use crate::commands::import::ImportArgs;
use crate::commands::read::ReadArgs;
use crate::commands::serve::ServeArgs;
use crate::commands::stats::StatsArgs;
use crate::commands::streams::StreamsArgs;
use crate::commands::tail::TailArgs;
use crate::commands::token::TokenCommand;
use crate::commands::user::UserCommand;
use crate::commands::verify::VerifyArgs;
use crate::error::CliError;

/// The strata event store: append events to streams, read them back, follow them live.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
#[command(after_help = "The global log is named '$all' (quote it in a shell). \
Exit codes: 0 success, 1 error, 2 damage found by `verify` or a command not built yet.")]
pub struct Cli {
    /// The store's directory.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "STRATA_DATA",
        default_value = "./strata-data"
    )]
    pub data: PathBuf,
    /// Use the PostgreSQL database at this URL instead of the directory
    /// (`postgres://user@host:port/database`).
    /// TLS: add `?sslmode=verify-full&sslrootcert=CA.pem` (or disable, prefer, require, verify-ca).
    #[arg(long, global = true, value_name = "URL", env = "STRATA_POSTGRES")]
    pub postgres: Option<String>,
    /// Work against a running `strata serve` at this URL instead of a local store:
    /// append, read, tail, streams, stats, user and token. `https://HOST:PORT` for a
    /// server with TLS (needs --ca), `http://127.0.0.1:2114` for one without.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "STRATA_SERVER",
        conflicts_with = "postgres"
    )]
    pub server: Option<String>,
    /// Log level or filter (`error`, `warn`, `info`, `debug`, `trace`, or
    /// `strata_server=debug,info`); `RUST_LOG` wins when set. Default: `info` for
    /// `serve`, `warn` otherwise.
    #[arg(long, global = true, value_name = "LEVEL", env = "STRATA_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log line format, on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text, env = "STRATA_LOG_FORMAT")]
    pub log_format: logging::LogFormat,
    /// How to reach and authenticate to `--server`.
    #[command(flatten)]
    pub connect: commands::ConnectArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append events to a stream, from arguments or JSON lines; prints their revisions
    /// and positions as JSON.
    Append(AppendArgs),
    /// Print the events of a stream, or of the global log ('$all') with filters.
    Read(ReadArgs),
    /// Follow a stream or '$all' live, printing events as they are recorded (Ctrl-C
    /// stops).
    Tail(TailArgs),
    /// List the streams.
    Streams(StreamsArgs),
    /// Show counts and sizes: events, streams, head position, disk size, segments.
    Stats(StatsArgs),
    /// Check every checksum of the log (works while another process has the store
    /// open); exit code 2 if damage is found.
    Verify(VerifyArgs),
    /// Write the whole global log as JSON lines (for backups and copies).
    Export(ExportArgs),
    /// Replay JSON lines written by `export` into a store; safe to run again.
    Import(ImportArgs),
    /// Measure append and read throughput.
    Bench(BenchArgs),
    /// Serve the store over gRPC (KurrentDB-compatible) and HTTP/JSON.
    // Boxed: its options are far larger than any other command's.
    Serve(Box<ServeArgs>),
    /// Make TLS certificates: a CA, and node certificates signed by it.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Manage user accounts: on a server (`--server`, as an administrator) or directly
    /// in a local store (`--data`/`--postgres`; how to change the `admin` password
    /// before the first networked start).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage bearer tokens: create (shown once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// One measurement of `bench --only scale`, run in a fresh process by the benchmark
    /// itself (prints JSON). Not for direct use.
    #[command(name = "bench-scale-probe", hide = true)]
    BenchScaleProbe(bench_scale::ScaleProbeArgs),
}

/// Runs one subcommand.
async fn run(cli: Cli) -> Result<(), CliError> {
    let data = cli.data.as_path();
    let target = commands::Target {
        data: cli.data.clone(),
        postgres: cli.postgres.clone(),
        server: cli.server.clone(),
        connect: cli.connect.clone(),
    };
    let remote_ok = matches!(
        cli.command,
        Command::Append(_)
            | Command::Read(_)
            | Command::Tail(_)
            | Command::Streams(_)
            | Command::Stats(_)
            | Command::User(_)
            | Command::Token(_)
    );
    if target.server.is_some() && !remote_ok {
        return Err(CliError::Usage(
            "--server works with append, read, tail, streams, stats, user and token; the \
             other commands work on a local store (--data) or PostgreSQL (--postgres)"
                .into(),
        ));
    }
    match cli.command {
        Command::Append(args) => commands::append::run(&target, args).await,
        Command::Read(args) => commands::read::run(&target, args).await,
        Command::Tail(args) => commands::tail::run(&target, args).await,
        Command::Streams(args) => commands::streams::run(&target, args).await,
        Command::Stats(args) => commands::stats::run(&target, args).await,
        Command::Verify(_) if target.postgres.is_some() => Err(CliError::Usage(
            "verify checks the embedded engine's segment files; PostgreSQL checks its own pages \
             (enable data_checksums)"
                .into(),
        )),
        Command::Verify(args) => commands::verify::run(data, args).await,
        Command::Export(args) => commands::export::run(&target, args).await,
        Command::Import(args) => commands::import::run(&target, args).await,
        Command::Bench(mut args) => {
            args.postgres = args.postgres.or(target.postgres.clone());
            bench::run(data, args).await
        }
        Command::BenchScaleProbe(args) => bench_scale::probe(args).await,
        Command::Certs(command) => Ok(commands::certs::run(command)?),
        Command::User(command) => commands::user::run(&target, command).await,
        Command::Token(command) => commands::token::run(&target, command).await,
        Command::Serve(args) => {
            let json_logs = cli.log_format == logging::LogFormat::Json;
            commands::serve::run(&target, *args, json_logs).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    logging::init(cli.log_level.as_deref(), default_level, cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`strata read … | head`): not an error.
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
