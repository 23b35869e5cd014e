//! `strata serve`: the network server (KurrentDB-compatible gRPC and HTTP/JSON) over the
//! embedded store in `--data` or over PostgreSQL with `--postgres`.
//!
//! Several nodes may serve one PostgreSQL database: each persistent subscription group
//! then runs on one node at a time, the holder of its lease in the database, and the
//! other nodes send its consumers there.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use strata::Store;
use strata_postgres::{PostgresOptions, PostgresStore};
use strata_server::{NodeLeases, Server, ServerOptions};

use crate::commands::{open_store, Target};
use crate::error::CliError;

/// Options of `strata serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the gRPC API (KurrentDB clients connect here with `tls=false`).
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
}

/// Runs `strata serve` until SIGTERM or SIGINT, then shuts down gracefully (stops
/// accepting, finishes in-flight appends, syncs and closes the store) and exits 0.
pub async fn run(target: &Target, args: ServeArgs) -> Result<(), CliError> {
    let (store, leases) = match &target.postgres {
        // Nodes sharing the database share persistent subscriptions through its leases.
        Some(url) => {
            let postgres = PostgresStore::connect(url, PostgresOptions::default()).await?;
            let leases = NodeLeases {
                advertise: args.advertise.clone(),
                ..NodeLeases::new(Arc::new(postgres.leases()))
            };
            (Store::from_backend(Arc::new(postgres)), Some(leases))
        }
        None => (open_store(target, true).await?, None),
    };
    let options = ServerOptions {
        grpc: (!args.no_grpc).then_some(args.grpc),
        http: (!args.no_http).then_some(args.http),
        leases,
        ..ServerOptions::default()
    };
    let server = Server::bind(store, options).await?;
    match &target.postgres {
        Some(_) => eprintln!("strata serve: store on PostgreSQL"),
        None => eprintln!("strata serve: store in {}", target.data.display()),
    }
    if let Some(addr) = server.grpc_addr() {
        eprintln!("strata serve: gRPC listening on {addr} (KurrentDB clients: kurrentdb://{addr}?tls=false)");
    }
    if let Some(addr) = server.http_addr() {
        eprintln!("strata serve: HTTP listening on http://{addr}");
    }
    server.run_until(shutdown_signal()).await?;
    eprintln!("strata serve: stopped cleanly");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
