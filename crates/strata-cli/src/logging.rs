//! Logs: `tracing` events to stderr, as text for people or JSON lines for machines.
//!
//! The level comes from `--log-level` (default `info` for `strata serve`, `warn` for
//! the other commands, whose output is their result); `RUST_LOG`, when set, wins and
//! takes the full filter syntax (`strata_server=debug,info`).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with every structured field.
    Json,
}

/// Installs the global subscriber. `level` is a filter (`info`, `debug`,
/// `strata_server=debug`); a bad one falls back to `default_level` with a warning.
pub fn init(level: Option<&str>, default_level: &str, format: LogFormat) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let wanted = from_env.as_deref().or(level).unwrap_or(default_level);
    let (filter, bad) = match EnvFilter::try_new(wanted) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new(default_level), Some(error)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    // A subscriber may already be installed (tests calling `run` twice): keep it.
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let (Some(error), true) = (bad, installed.is_ok()) {
        tracing::warn!(filter = wanted, %error, "bad log filter; using the default level");
    }
}
