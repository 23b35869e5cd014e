//! A connection after its TLS handshake, and what the handshake established about the
//! client: the certificate chain it presented (verified against `--tls-ca`), the
//! application protocol agreed, the server name it asked for.
//!
//! Handlers reach it as a request extension: [`TlsSession`] on HTTP requests,
//! [`TlsConnectInfo`] on gRPC requests (tonic's connect info); [`tls_session`] and
//! [`client_address`] read either.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::reload::TlsReloader;
use crate::net::{Acceptor, TrackedStream};

/// Handshakes in progress at once on the gRPC listener; more accepted connections wait
/// for one to finish (each is bounded by the handshake timeout).
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// What the TLS handshake established about the client.
#[derive(Clone, Debug, Default)]
pub struct TlsSession {
    /// The client's certificate chain, leaf first, already verified against the
    /// server's CA (`None`: the client presented none).
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// The application protocol agreed by ALPN (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for (SNI), if any.
    pub server_name: Option<String>,
}

/// The connect info of a TLS connection: the TCP addresses and the TLS session.
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// The TCP addresses, as on a plain connection.
    pub tcp: TcpConnectInfo,
    /// What the handshake established.
    pub session: TlsSession,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish the handshake in time.
    #[error("the TLS handshake did not finish within {} ms", timeout.as_millis())]
    TimedOut {
        /// The timeout.
        timeout: Duration,
    },
    /// The handshake failed (an unknown CA on either side, no common protocol, not
    /// TLS at all, …).
    #[error("the TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
}

/// An accepted connection after a successful TLS handshake.
#[derive(Debug)]
pub struct TlsConnection {
    inner: TlsStream<TrackedStream>,
    info: TlsConnectInfo,
}

impl TlsConnection {
    /// What the handshake established.
    pub fn session(&self) -> &TlsSession {
        &self.info.session
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.inner.get_ref().0.peer()
    }
}

/// Runs the server side of the handshake on `stream` with `config`, within `timeout`.
pub async fn handshake(
    config: Arc<ServerConfig>,
    stream: TrackedStream,
    timeout: Duration,
) -> Result<TlsConnection, HandshakeError> {
    let tcp = tonic::transport::server::Connected::connect_info(&stream);
    let accepting = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let inner = tokio::time::timeout(timeout, accepting)
        .await
        .map_err(|_| HandshakeError::TimedOut { timeout })?
        .map_err(HandshakeError::Failed)?;
    let (_, server) = inner.get_ref();
    let session = TlsSession {
        peer_certificates: server
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect()),
        alpn: server.alpn_protocol().map(<[u8]>::to_vec),
        server_name: server.server_name().map(str::to_owned),
    };
    Ok(TlsConnection {
        inner,
        info: TlsConnectInfo { tcp, session },
    })
}

/// The accepted connections of `acceptor` after their handshakes (with the gRPC
/// configuration `reloader` has at each accept), for tonic to serve. Handshakes run
/// concurrently, so a slow client does not hold up the others; failed ones are logged
/// and dropped. The stream never ends and never yields an error.
pub fn incoming_grpc(
    acceptor: Acceptor,
    reloader: Arc<TlsReloader>,
) -> impl Stream<Item = Result<TlsConnection, io::Error>> {
    let timeout = reloader.options().handshake_timeout;
    acceptor
        .into_stream()
        .map(move |accepted| {
            let config = reloader.grpc_config();
            async move {
                let stream = accepted.ok()?;
                let peer = stream.peer();
                match handshake(config, stream, timeout).await {
                    Ok(connection) => Some(Ok(connection)),
                    Err(error) => {
                        tracing::debug!(%error, %peer, api = "grpc", "TLS handshake failed");
                        None
                    }
                }
            }
        })
        .buffer_unordered(HANDSHAKES_IN_FLIGHT_MAX)
        .filter_map(std::future::ready)
}

/// The client's address on a gRPC request, over TLS or not.
pub fn client_address<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    request.remote_addr().or_else(|| {
        request
            .extensions()
            .get::<TlsConnectInfo>()
            .and_then(|info| info.tcp.remote_addr)
    })
}

/// The TLS session of a gRPC request (`None` on a plain connection).
pub fn tls_session<T>(request: &tonic::Request<T>) -> Option<&TlsSession> {
    request
        .extensions()
        .get::<TlsConnectInfo>()
        .map(|info| &info.session)
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
