//! How a server meets its clients: over TLS, in the clear on purpose, or in the clear
//! on loopback only — the default, so that forgetting the certificates cannot put an
//! open server on a network.

use std::net::SocketAddr;

use super::config::TlsOptions;

/// The transport mode of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// TLS on both APIs (`strata serve --tls-cert … --tls-key …`).
    Tls(TlsOptions),
    /// No TLS, on any address (`strata serve --insecure`): for a trusted network, or
    /// behind a proxy that terminates TLS. Logged as a warning at start.
    Insecure,
    /// No TLS, and every listener must be on a loopback address: what a server gets
    /// when it is told neither of the above.
    #[default]
    LoopbackOnly,
}

impl Transport {
    /// The TLS options, in TLS mode.
    pub fn tls(&self) -> Option<&TlsOptions> {
        match self {
            Transport::Tls(options) => Some(options),
            Transport::Insecure | Transport::LoopbackOnly => None,
        }
    }

    /// Whether clients must authenticate: with TLS. The insecure and loopback-only
    /// modes allow everything, as KurrentDB's insecure mode does.
    pub fn authenticates(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// A short name for logs: `tls`, `insecure`, `loopback-only`.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tls(_) => "tls",
            Transport::Insecure => "insecure",
            Transport::LoopbackOnly => "loopback-only",
        }
    }

    /// Whether this mode lets `api` listen on `addr`.
    pub fn check_bind(&self, api: &'static str, addr: SocketAddr) -> Result<(), NotLoopback> {
        match self {
            Transport::LoopbackOnly if !addr.ip().is_loopback() => Err(NotLoopback { api, addr }),
            _ => Ok(()),
        }
    }
}

/// A non-loopback address without TLS or an explicit insecure mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve the {api} API on {addr} without TLS: without certificates the server \
     only listens on loopback addresses (127.0.0.1, ::1). Give --tls-cert/--tls-key \
     (Transport::Tls) to serve over TLS, or --insecure (Transport::Insecure) to serve \
     unencrypted on any address"
)]
pub struct NotLoopback {
    /// Which API: `gRPC` or `HTTP`.
    pub api: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
}
