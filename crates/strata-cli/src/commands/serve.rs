//! `strata serve`: the network server (gRPC and HTTP), not built yet.

use std::path::Path;

use clap::Args;

use crate::error::CliError;

/// Options of `strata serve` (accepted now, used once the server exists).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for the gRPC API, e.g. 127.0.0.1:2113.
    #[arg(long, value_name = "ADDR")]
    pub grpc: Option<String>,
    /// Address for the HTTP API, e.g. 127.0.0.1:2114.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

/// Runs `strata serve`: fails with exit code 2, the server is not built yet.
pub async fn run(_data_dir: &Path, _args: ServeArgs) -> Result<(), CliError> {
    Err(CliError::NotBuilt {
        what: "the network server",
        detail: "`strata serve` arrives with the server work; until then, embed the \
                 `strata` library in your application",
    })
}
