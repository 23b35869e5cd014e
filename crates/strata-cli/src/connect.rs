//! Connections of the `--server` client: plain TCP for `http://`, TLS (rustls, ring
//! provider, as the server) for `https://`.
//!
//! The server's certificate is checked against the CA file given with `--ca` only:
//! the platform's trusted roots are not used (a strata node's certificate comes from
//! the operator's own CA, made by `strata certs`). A client certificate (`--cert`,
//! `--key`) is presented when given: a server with `--tls-ca` authenticates its
//! common name as a login.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TLS client configuration that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// A file could not be read or holds no PEM object of the kind needed.
    #[error("cannot load {what} from {}: {message}", path.display())]
    File {
        /// What the file should hold (`the CA certificate`, `the client key`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate).
    #[error("cannot make the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The files a TLS connection uses.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificates (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// A client certificate chain and its key (PEM), to present.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The provider every configuration uses: ring, as the server (no cmake or nasm).
///
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange; classical ECDHE
/// is accepted, as on the server.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_error(what: &'static str, path: &Path, message: impl ToString) -> TlsClientError {
    TlsClientError::File {
        what,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsClientError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| load_error(what, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| load_error(what, path, error))?;
    if certificates.is_empty() {
        return Err(load_error(what, path, "no CERTIFICATE in the file"));
    }
    Ok(certificates)
}

/// The client configuration for `files`: trusting only the CA file, speaking
/// HTTP/1.1 (the client's only protocol), presenting the client certificate if given.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsClientError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates("the CA certificate", &files.ca)? {
        roots
            .add(certificate)
            .map_err(|error| load_error("the CA certificate", &files.ca, error))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates("the client certificate", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| load_error("the client key", key, error))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The name the server's certificate must carry for `uri`: its IP address or DNS name.
fn server_name(uri: &Uri) -> Result<ServerName<'static>, BoxError> {
    let host = uri.host().ok_or("the URL names no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned())
        .map_err(|_| format!("{host:?} is not a valid server name").into())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Makes connections for hyper's client: TCP, then TLS when configured.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<TlsConnector>,
}

impl Connector {
    /// Plain TCP when `tls` is `None`, else TLS with that configuration.
    pub fn new(tls: Option<ClientConfig>) -> Connector {
        let mut http = HttpConnector::new();
        // The scheme is checked by the client (`https` only with a TLS configuration).
        http.enforce_http(false);
        http.set_nodelay(true);
        Connector {
            http,
            tls: tls.map(|config| TlsConnector::from(Arc::new(config))),
        }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let connecting = self.http.call(uri.clone());
        Box::pin(async move {
            let tcp = connecting.await?;
            match tls {
                None => Ok(Stream::Plain(tcp)),
                Some(connector) => {
                    let name = server_name(&uri)?;
                    let stream = connector.connect(name, tcp.into_inner()).await?;
                    Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
                }
            }
        })
    }
}

/// A connection to the server, in the clear or over TLS.
pub enum Stream {
    /// `http://`.
    Plain(TokioIo<TcpStream>),
    /// `https://` (boxed: a TLS session is a kilobyte).
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls) => tls.inner().get_ref().0.connected(),
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_urls() {
        let name = |url: &str| server_name(&url.parse().unwrap()).map(|n| n.to_str().into_owned());
        assert_eq!(name("https://127.0.0.1:2114").unwrap(), "127.0.0.1");
        assert_eq!(name("https://[::1]:2114").unwrap(), "::1");
        assert_eq!(name("https://node1.example:2114").unwrap(), "node1.example");
    }

    #[test]
    fn missing_and_empty_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            ca: dir.path().join("nope.pem"),
            client: None,
        };
        let error = client_config(&missing).unwrap_err().to_string();
        assert!(
            error.contains("CA certificate") && error.contains("nope.pem"),
            "{error}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = client_config(&TlsFiles {
            ca: empty,
            client: None,
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("no CERTIFICATE"), "{error}");
    }
}
