//! `strata serve`: the network server (KurrentDB-compatible gRPC and HTTP/JSON) over the
//! embedded store in `--data` or over PostgreSQL with `--postgres`.
//!
//! Several nodes may serve one PostgreSQL database: each persistent subscription group
//! then runs on one node at a time, the holder of its lease in the database, and the
//! other nodes send its consumers there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use strata::Store;
use strata_postgres::{PostgresOptions, PostgresStore};
use strata_server::{NodeLeases, Server, ServerOptions, TlsOptions, Transport};

use crate::commands::{open_store_with, Target};
use crate::error::CliError;

/// Options of `strata serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the gRPC API (KurrentDB clients connect here; with `tls=false`
    /// unless the server has `--tls-cert`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2113")]
    pub grpc: SocketAddr,
    /// Address of the HTTP/JSON API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2114")]
    pub http: SocketAddr,
    /// Serve only gRPC.
    #[arg(long, conflicts_with = "no_grpc")]
    pub no_http: bool,
    /// Serve only HTTP.
    #[arg(long)]
    pub no_grpc: bool,
    /// The gRPC address (`host:port`) other nodes of the same PostgreSQL database send
    /// persistent-subscription clients to (default: `--grpc`).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// TLS, the insecure mode, and HTTP hygiene (the README's "Security" section).
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Limits and timeouts for clients (the README's "Limits and timeouts" table).
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// How `strata serve` meets its clients. Without `--tls-cert/--tls-key` or
/// `--insecure` it listens on loopback addresses only.
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// The node's certificate chain (PEM) for TLS on both APIs; reloaded when the
    /// file changes (see `strata certs`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The node certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against; clients
    /// may also connect without one.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
    /// Serve without TLS on any address (a trusted network, or TLS ended by a proxy).
    /// Traffic is then unencrypted.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    pub insecure: bool,
    /// A host name the HTTP API answers to when not over TLS, besides loopback
    /// addresses and localhost (repeatable); other `Host` headers are refused.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// An origin whose web pages may call the HTTP API (CORS), e.g.
    /// `https://app.example.com` (repeatable; default: none).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
}

impl SecurityArgs {
    /// The transport mode these flags ask for (clap has already refused contradictory
    /// ones).
    pub fn transport(&self) -> Transport {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Transport::Tls(TlsOptions {
                ca: self.tls_ca.clone(),
                reload_interval: self.tls_reload_interval,
                ..TlsOptions::new(cert, key)
            }),
            _ if self.insecure => Transport::Insecure,
            _ => Transport::LoopbackOnly,
        }
    }

    /// Sets the transport and the HTTP hygiene options on `options`.
    fn apply(&self, options: &mut ServerOptions) {
        options.transport = self.transport();
        options.allowed_hosts = self.allowed_hosts.clone();
        options.cors_origins = self.cors_origins.clone();
    }
}

/// Limits and timeouts of `strata serve`; durations as `10s`, `500ms`, `2m`. Their
/// defaults are `ServerOptions::default()`'s (a test keeps them equal).
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Most connections open at once (both APIs); more are refused. Lowered at start to
    /// what the open-file limit allows.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// Most connections open at once from one client IP address.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections_per_address: usize,
    /// Close a connection whose client sends nothing at all within this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub first_byte_timeout: Duration,
    /// Close a connection whose client stops reading (a write stalled this long).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub write_stall_timeout: Duration,
    /// Longest wait for an HTTP request's head; also how long an idle keep-alive
    /// connection is kept.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http_header_read_timeout: Duration,
    /// Longest wait for the next part of an HTTP request body (408 after it).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http_body_read_timeout: Duration,
    /// Largest HTTP request body, in bytes (413 above it).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_request_body: usize,
    /// Largest gRPC message, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_grpc_message: usize,
    /// Most open subscriptions and live streams per connection (HTTP: per client
    /// address).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_subscriptions_per_connection: usize,
    /// Most concurrent gRPC calls on one connection.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub grpc_max_concurrent_streams: u32,
    /// How often idle gRPC connections are pinged.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_timeout: Duration,
    /// Ask gRPC connections older than this to reconnect (default: never).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grpc_max_connection_age: Option<Duration>,
    /// Most HTTP/2 streams a client may reset before the server accepted them.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub grpc_max_pending_reset_streams: usize,
    /// Log requests slower than this.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub slow_request_threshold: Duration,
    /// Longest shutdown waits for in-flight requests before closing their connections.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Most events one filtered read of `$all` examines per step: an HTTP page cut
    /// short answers `next_from`, a gRPC read goes on with the next step.
    #[arg(long, value_name = "N", default_value_t = strata::ReadAllOptions::SCAN_BUDGET_DEFAULT)]
    pub scan_budget: u64,
    /// Most scans of the global log running at once; more wait for a slot (default:
    /// twice the cores, at least 4, embedded; 4 on PostgreSQL, where each holds a
    /// connection).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_scans: Option<u64>,
    /// How long a scan waits for a slot before the client is told the store is busy
    /// (HTTP 503 with Retry-After, gRPC UNAVAILABLE).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub scan_wait: Duration,
    /// Most segment files the embedded store keeps open at once, and as many segment
    /// tables (least recently used closed first; reopened when a read needs one).
    #[arg(long, value_name = "N", default_value_t = strata::Options::SEGMENT_HANDLES_MAX)]
    pub segment_handles_max: usize,
    /// Most bytes per second the embedded store's background scrubber reads to
    /// re-verify sealed segments (damage goes to the log, `/stats` and `/metrics`);
    /// 0 turns it off.
    #[arg(long, value_name = "BYTES_PER_S", default_value_t = strata::Options::SCRUB_BYTES_PER_SECOND)]
    pub scrub_rate: u64,
    /// Pause between the end of one scrub pass over the sealed segments and the next.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub scrub_interval: Duration,
}

impl LimitArgs {
    /// Sets these limits on `options`.
    fn apply(&self, options: &mut ServerOptions) {
        options.max_connections = self.max_connections;
        options.max_connections_per_address = self.max_connections_per_address;
        options.first_byte_timeout = self.first_byte_timeout;
        options.write_stall_timeout = self.write_stall_timeout;
        options.http_header_read_timeout = self.http_header_read_timeout;
        options.http_body_read_timeout = self.http_body_read_timeout;
        options.max_request_body = self.max_request_body;
        options.max_grpc_message = self.max_grpc_message;
        options.max_subscriptions_per_connection = self.max_subscriptions_per_connection;
        options.grpc_max_concurrent_streams = self.grpc_max_concurrent_streams;
        options.grpc_keepalive_interval = self.grpc_keepalive_interval;
        options.grpc_keepalive_timeout = self.grpc_keepalive_timeout;
        options.grpc_max_connection_age = self.grpc_max_connection_age;
        options.grpc_max_pending_reset_streams = self.grpc_max_pending_reset_streams;
        options.slow_request_threshold = self.slow_request_threshold;
        options.shutdown_grace = self.shutdown_grace;
        options.scan_budget = self.scan_budget;
    }

    /// Sets the store's own limits (scan slots, open files, scrub rate) on the embedded
    /// store's options.
    fn apply_to_engine(&self, options: &mut strata::Options) {
        if let Some(scans) = self.max_scans {
            options.scans_max = usize::try_from(scans).unwrap_or(usize::MAX);
        }
        options.scan_wait_max = self.scan_wait;
        options.segment_handles_max = self.segment_handles_max;
        options.scrub_bytes_per_second = self.scrub_rate;
        options.scrub_interval = self.scrub_interval;
    }

    /// Sets the store's own limits (scan slots) on PostgreSQL's options.
    fn apply_to_postgres(&self, options: &mut PostgresOptions) {
        if let Some(scans) = self.max_scans {
            options.scans_max = usize::try_from(scans).unwrap_or(usize::MAX);
        }
        options.scan_wait_max = self.scan_wait;
    }
}

/// Runs `strata serve` until SIGTERM or SIGINT, then shuts down gracefully (stops
/// accepting, finishes in-flight appends, syncs and closes the store) and exits 0.
pub async fn run(target: &Target, args: ServeArgs, json_logs: bool) -> Result<(), CliError> {
    let (store, leases) = match &target.postgres {
        // Nodes sharing the database share persistent subscriptions through its leases.
        Some(url) => {
            let mut postgres_options = PostgresOptions::default();
            args.limits.apply_to_postgres(&mut postgres_options);
            let postgres = PostgresStore::connect(url, postgres_options).await?;
            let leases = NodeLeases {
                advertise: args.advertise.clone(),
                ..NodeLeases::new(Arc::new(postgres.leases()))
            };
            (Store::from_backend(Arc::new(postgres)), Some(leases))
        }
        None => {
            let mut engine_options = strata::Options::default();
            args.limits.apply_to_engine(&mut engine_options);
            (open_store_with(target, true, engine_options).await?, None)
        }
    };
    let mut options = ServerOptions {
        grpc: (!args.no_grpc).then_some(args.grpc),
        http: (!args.no_http).then_some(args.http),
        leases,
        ..ServerOptions::default()
    };
    args.limits.apply(&mut options);
    args.security.apply(&mut options);
    let segment_files = match &target.postgres {
        Some(_) => 0,
        None => args.limits.segment_handles_max,
    };
    fit_connections_to_open_file_limit(&mut options, segment_files);
    let server = Server::bind(store, options).await?;
    // Before the banners: whoever reads them may stop the server at once.
    let shutdown = shutdown_signal();
    let store_place = match &target.postgres {
        Some(_) => "on PostgreSQL".to_owned(),
        None => format!("in {}", target.data.display()),
    };
    banner(json_logs, format!("store {store_place}"));
    let transport = args.security.transport();
    banner(json_logs, transport_line(&transport));
    let tls = transport.tls().is_some();
    if let Some(addr) = server.grpc_addr() {
        let connect = if tls {
            format!("kurrentdb://{addr}?TlsCaFile=ca.pem")
        } else {
            format!("kurrentdb://{addr}?tls=false")
        };
        banner(
            json_logs,
            format!("gRPC listening on {addr} (KurrentDB clients: {connect})"),
        );
    }
    if let Some(addr) = server.http_addr() {
        let scheme = if tls { "https" } else { "http" };
        banner(json_logs, format!("HTTP listening on {scheme}://{addr}"));
    }
    server.run_until(shutdown).await?;
    banner(
        json_logs,
        "stopped cleanly (store synced and closed)".to_owned(),
    );
    Ok(())
}

/// What the banner says of the transport mode.
fn transport_line(transport: &Transport) -> String {
    match transport {
        Transport::Tls(tls) => format!(
            "TLS on (certificate {}, reloaded when it changes{})",
            tls.cert.display(),
            match &tls.ca {
                Some(ca) => format!("; client certificates checked against {}", ca.display()),
                None => String::new(),
            }
        ),
        Transport::Insecure => {
            "WARNING: --insecure: no TLS, traffic is unencrypted and not authenticated".to_owned()
        }
        Transport::LoopbackOnly => {
            "no TLS: loopback addresses only (--tls-cert/--tls-key for TLS, --insecure for any address)"
                .to_owned()
        }
    }
}

/// A line for the person who started the server: plain on stderr, or a log event when
/// the logs are JSON (so every line of stderr stays machine-readable).
fn banner(json_logs: bool, line: String) {
    if json_logs {
        tracing::info!(target: "strata::serve", "{line}");
    } else {
        eprintln!("strata serve: {line}");
    }
}

/// File descriptors kept for everything but client connections and segment files: the
/// index checkpoint and its temporary file, the lock, the durable marker, PostgreSQL
/// connections, listeners, the runtime.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft open-file limit to the hard one, and lowers `max_connections` to
/// what it leaves room for: running out of descriptors would fail the store's own
/// file operations (a segment roll), not just new connections.
/// `segment_files` is the most segment files the store keeps open (as many tables
/// again, and the writer's tail may be one more).
fn fit_connections_to_open_file_limit(options: &mut ServerOptions, segment_files: usize) {
    let Some(limit) = raise_open_file_limit() else {
        return;
    };
    let reserved = RESERVED_DESCRIPTORS
        .saturating_add(
            u64::try_from(segment_files)
                .unwrap_or(u64::MAX)
                .saturating_mul(2),
        )
        .saturating_add(1);
    let room = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX);
    if options.max_connections > room {
        tracing::warn!(
            requested = options.max_connections,
            allowed = room,
            open_file_limit = limit,
            "lowering --max-connections to fit the open-file limit (raise `ulimit -n` for more)"
        );
        options.max_connections = room.max(1);
    }
}

/// The open-file limit after raising the soft limit to the hard one (`None`: unknown).
#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer,
    // which is a valid, initialised `rlimit` living on this stack frame.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed here, when it is called, not when the future is first
/// polled: `run_until` starts the listeners before it polls the signal, and a SIGTERM
/// in between (a supervisor stopping a server that already answered) would otherwise
/// kill the process without a clean shutdown.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                // No handler could be installed: fall back to tokio's Ctrl-C.
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use strata_server::ServerOptions;

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: super::ServeArgs,
    }

    /// `strata serve` with no flags must run with the library's documented defaults.
    #[test]
    fn flag_defaults_are_the_server_defaults() {
        let parsed = Serve::parse_from(["serve"]);
        let mut options = ServerOptions::default();
        let expected = format!("{options:?}");
        parsed.args.limits.apply(&mut options);
        parsed.args.security.apply(&mut options);
        assert_eq!(format!("{options:?}"), expected);

        let mut engine = strata::Options::default();
        let expected = format!("{engine:?}");
        parsed.args.limits.apply_to_engine(&mut engine);
        assert_eq!(format!("{engine:?}"), expected);
        // Every field a flag always sets gets the library's default from it, not just
        // keeps it.
        let mut engine = strata::Options {
            scan_wait_max: std::time::Duration::from_millis(1),
            segment_handles_max: 1,
            scrub_bytes_per_second: 1,
            scrub_interval: std::time::Duration::from_secs(1),
            ..strata::Options::default()
        };
        parsed.args.limits.apply_to_engine(&mut engine);
        assert_eq!(format!("{engine:?}"), expected);

        let mut postgres = strata_postgres::PostgresOptions::default();
        let expected = format!("{postgres:?}");
        parsed.args.limits.apply_to_postgres(&mut postgres);
        assert_eq!(format!("{postgres:?}"), expected);
    }

    #[test]
    fn security_flags_choose_the_transport_and_refuse_contradictions() {
        let tls = Serve::parse_from([
            "serve",
            "--tls-cert",
            "n.pem",
            "--tls-key",
            "n.key",
            "--tls-ca",
            "ca.pem",
            "--tls-reload-interval",
            "250ms",
            "--allowed-host",
            "strata.internal",
            "--cors-origin",
            "https://app.example",
            "--cors-origin",
            "https://other.example",
        ]);
        let mut options = ServerOptions::default();
        tls.args.security.apply(&mut options);
        let strata_server::Transport::Tls(files) = &options.transport else {
            panic!("expected TLS, got {:?}", options.transport);
        };
        assert_eq!(files.cert, std::path::Path::new("n.pem"));
        assert_eq!(files.key, std::path::Path::new("n.key"));
        assert_eq!(files.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(files.reload_interval, std::time::Duration::from_millis(250));
        assert_eq!(options.allowed_hosts, ["strata.internal"]);
        assert_eq!(options.cors_origins.len(), 2);

        let insecure = Serve::parse_from(["serve", "--insecure"]);
        assert_eq!(
            insecure.args.security.transport(),
            strata_server::Transport::Insecure
        );
        assert_eq!(
            Serve::parse_from(["serve"]).args.security.transport(),
            strata_server::Transport::LoopbackOnly
        );
        for contradiction in [
            &["serve", "--insecure", "--tls-cert", "a", "--tls-key", "b"][..],
            &["serve", "--tls-cert", "a"],
            &["serve", "--tls-key", "b"],
            &["serve", "--tls-ca", "c"],
        ] {
            assert!(
                Serve::try_parse_from(contradiction).is_err(),
                "{contradiction:?} must be refused"
            );
        }
    }

    #[test]
    fn scan_flags_reach_the_store_and_the_server() {
        let parsed = Serve::parse_from([
            "serve",
            "--scan-budget",
            "77",
            "--max-scans",
            "3",
            "--scan-wait",
            "250ms",
            "--segment-handles-max",
            "9",
            "--scrub-rate",
            "0",
            "--scrub-interval",
            "90m",
        ]);
        let mut options = ServerOptions::default();
        parsed.args.limits.apply(&mut options);
        assert_eq!(options.scan_budget, 77);
        let mut engine = strata::Options::default();
        parsed.args.limits.apply_to_engine(&mut engine);
        assert_eq!(engine.scans_max, 3);
        assert_eq!(engine.scan_wait_max, std::time::Duration::from_millis(250));
        assert_eq!(engine.segment_handles_max, 9);
        assert_eq!(engine.scrub_bytes_per_second, 0);
        assert_eq!(
            engine.scrub_interval,
            std::time::Duration::from_secs(90 * 60)
        );
        let mut postgres = strata_postgres::PostgresOptions::default();
        parsed.args.limits.apply_to_postgres(&mut postgres);
        assert_eq!(postgres.scans_max, 3);
        assert_eq!(
            postgres.scan_wait_max,
            std::time::Duration::from_millis(250)
        );
        assert!(Serve::try_parse_from(["serve", "--max-scans", "0"]).is_err());
    }
}
