//! TLS to PostgreSQL with rustls (ring provider), following libpq's `sslmode`.
//!
//! | `sslmode`     | encrypted                        | certificate checked                          |
//! |---------------|----------------------------------|----------------------------------------------|
//! | `disable`     | never                            | —                                            |
//! | `prefer`      | if the server offers TLS         | only if `sslrootcert` is given: chain        |
//! | `require`     | always                           | only if `sslrootcert` is given: chain        |
//! | `verify-ca`   | always                           | chain to `sslrootcert`, any host name         |
//! | `verify-full` | always                           | chain to `sslrootcert` and the host name      |
//!
//! Where no certificate is checked, the handshake's signatures still are (the server
//! proves it holds the key of the certificate it sent), as libpq does: the connection is
//! private against a passive listener, not against an active impostor.
//!
//! [`MakeRustlsConnect`] implements tokio-postgres' [`MakeTlsConnect`]: every connection
//! of the backend (the pool, the head watcher, the notifier) is made with one, built
//! once from the connection string by [`crate::ConnectionConfig::parse`].

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// libpq's `sslmode`: whether to encrypt the connection and what to check of the
/// server's certificate (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, plaintext otherwise (the default, as in libpq).
    #[default]
    Prefer,
    /// Always TLS; the certificate is checked against `sslrootcert` if one is given.
    Require,
    /// Always TLS; the certificate must chain to `sslrootcert`, for any host name.
    VerifyCa,
    /// Always TLS; the certificate must chain to `sslrootcert` and name the host.
    VerifyFull,
}

impl SslMode {
    /// The name in a connection string (`verify-full`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether this mode needs `sslrootcert` (it checks the certificate chain).
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = TlsConfigError;

    fn from_str(value: &str) -> Result<SslMode, TlsConfigError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(TlsConfigError::UnknownSslMode {
                    value: value.to_owned(),
                })
            }
        })
    }
}

/// Why the TLS settings of a connection string cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// `sslmode` is none of the values libpq knows.
    #[error(
        "unknown sslmode {value:?}: expected disable, prefer, require, verify-ca or verify-full"
    )]
    UnknownSslMode {
        /// The value given.
        value: String,
    },
    /// `verify-ca` or `verify-full` without `sslrootcert`.
    #[error("sslmode={sslmode} needs sslrootcert=PATH (a PEM file of the certificate authorities to trust)")]
    MissingRootCert {
        /// The mode that needs it.
        sslmode: SslMode,
    },
    /// The `sslrootcert` file could not be read.
    #[error("sslrootcert {} (sslmode={sslmode}) cannot be read: {source}", path.display())]
    RootCertUnreadable {
        /// The file.
        path: PathBuf,
        /// The mode it was given with.
        sslmode: SslMode,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The `sslrootcert` file holds no usable certificate.
    #[error("sslrootcert {} (sslmode={sslmode}) is not a PEM file of certificates: {reason}", path.display())]
    RootCertInvalid {
        /// The file.
        path: PathBuf,
        /// The mode it was given with.
        sslmode: SslMode,
        /// What is wrong with it.
        reason: String,
    },
    /// A libpq TLS setting this backend does not implement.
    #[error("{parameter} is not supported by strata's PostgreSQL backend: {hint}")]
    Unsupported {
        /// The parameter (`sslcert`, `sslrootcert=system`, …).
        parameter: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// rustls refused the configuration (no safe protocol version, …).
    #[error("TLS configuration (sslmode={sslmode}): {reason}")]
    Rustls {
        /// The mode being configured.
        sslmode: SslMode,
        /// What rustls said.
        reason: String,
    },
}

/// A TLS handshake with the server that failed: the certificate was refused, or the
/// server broke off. Carries the mode and host so the message says what was checked.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {host} failed (sslmode={sslmode}): {source}{}", hint(source, root_cert.as_deref()))]
pub struct TlsHandshakeError {
    /// The host name the certificate was checked against.
    pub host: String,
    /// The mode in force.
    pub sslmode: SslMode,
    /// The `sslrootcert` file the chain was checked against, if any.
    pub root_cert: Option<PathBuf>,
    /// What rustls (or the socket) said.
    #[source]
    pub source: io::Error,
}

/// What to add to rustls' word for the commonest refusal.
fn hint(source: &io::Error, root_cert: Option<&Path>) -> String {
    let unknown_issuer = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|error| {
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            )
        });
    match root_cert {
        Some(path) if unknown_issuer => format!(
            " (the server's certificate does not chain to a certificate authority in sslrootcert {})",
            path.display()
        ),
        _ => String::new(),
    }
}

/// Makes rustls TLS connections for tokio-postgres, checking the server's certificate as
/// the `sslmode` says. Cheap to clone (the configuration is shared).
#[derive(Clone)]
pub struct MakeRustlsConnect {
    sslmode: SslMode,
    root_cert: Option<Arc<Path>>,
    /// `None` for `disable`: tokio-postgres then never asks for a TLS connection.
    config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustlsConnect")
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl MakeRustlsConnect {
    /// The connector for `sslmode`, trusting the PEM certificates in `root_cert` (needed
    /// for `verify-ca` and `verify-full`; with `prefer` or `require` it makes the
    /// certificate chain be checked too, as libpq does).
    pub fn new(sslmode: SslMode, root_cert: Option<&Path>) -> Result<Self, TlsConfigError> {
        if sslmode == SslMode::Disable {
            return Ok(MakeRustlsConnect {
                sslmode,
                root_cert: None,
                config: None,
            });
        }
        let roots = match root_cert {
            Some(path) => Some(Arc::new(load_roots(path, sslmode)?)),
            None if sslmode.verifies() => return Err(TlsConfigError::MissingRootCert { sslmode }),
            None => None,
        };
        let provider = provider();
        let algorithms = provider.signature_verification_algorithms;
        let rustls_error = |error: rustls::Error| TlsConfigError::Rustls {
            sslmode,
            reason: error.to_string(),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (sslmode, roots) {
            (SslMode::VerifyFull, Some(roots)) => {
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|error| TlsConfigError::Rustls {
                        sslmode,
                        reason: error.to_string(),
                    })?
            }
            (_, roots) => Arc::new(WithoutHostName { roots, algorithms }),
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq 17 sends; PostgreSQL 17 needs it for `sslnegotiation=direct`, older
        // servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect {
            sslmode,
            root_cert: root_cert.map(Arc::from),
            config: Some(Arc::new(config)),
        })
    }

    /// The mode this connector was made for.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }
}

/// The provider of every configuration: ring, as the server's TLS uses (no cmake or nasm
/// to build). rustls 0.23.48 deprecates it for lacking post-quantum key exchange (only
/// aws-lc-rs has it); classical ECDHE is accepted here.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the trusted certificate authorities from a PEM file.
fn load_roots(path: &Path, sslmode: SslMode) -> Result<RootCertStore, TlsConfigError> {
    let invalid = |reason: String| TlsConfigError::RootCertInvalid {
        path: path.to_owned(),
        sslmode,
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::RootCertUnreadable {
        path: path.to_owned(),
        sslmode,
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("a certificate does not parse: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no CERTIFICATE section found".into()));
    }
    Ok(roots)
}

/// Every mode but `verify-full`: the host name is not checked. With `roots` (`verify-ca`,
/// or `prefer`/`require` with `sslrootcert`) the certificate must chain to one of them
/// and be valid now; without (`prefer`/`require` alone) any certificate is accepted, as
/// libpq does. Either way the handshake's signatures are checked against it.
#[derive(Debug)]
struct WithoutHostName {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for WithoutHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsHandshakeError;

    /// Never fails: tokio-postgres asks for a connector before it knows whether TLS will
    /// be used (even for a Unix socket, with an empty host name), so the host name is
    /// only checked when a handshake starts.
    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, TlsHandshakeError> {
        Ok(RustlsConnect {
            sslmode: self.sslmode,
            root_cert: self.root_cert.clone(),
            config: self.config.clone(),
            host: host.to_owned(),
        })
    }
}

/// One TLS handshake to come, for one host (made by [`MakeRustlsConnect`]).
pub struct RustlsConnect {
    sslmode: SslMode,
    root_cert: Option<Arc<Path>>,
    config: Option<Arc<ClientConfig>>,
    host: String,
}

impl fmt::Debug for RustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsConnect")
            .field("sslmode", &self.sslmode)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsHandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsHandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let RustlsConnect {
            sslmode,
            root_cert,
            config,
            host,
        } = self;
        Box::pin(async move {
            let failed = |source: io::Error| TlsHandshakeError {
                host: host.clone(),
                sslmode,
                root_cert: root_cert.as_deref().map(Path::to_path_buf),
                source,
            };
            let config = config.ok_or_else(|| {
                failed(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "TLS is disabled (sslmode=disable)",
                ))
            })?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| failed(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(failed)?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A connection to the server over rustls.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> fmt::Debug for RustlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsStream").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    /// No `tls-server-end-point` binding: SCRAM authenticates without channel binding
    /// (`channel_binding=require` is refused).
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
