//! From PEM files to rustls server configurations: the node's certificate chain and
//! key, and optionally the CA client certificates are checked against.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocols of the gRPC listener: gRPC is HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];

/// ALPN protocols of the HTTP listener, preferred first.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Where a TLS server finds its certificate files, and how often it looks for new ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// The node's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against. Clients
    /// may present one (it must then verify) or not; `None`: none is asked for.
    pub ca: Option<PathBuf>,
    /// How often the files are read again: changed files take effect for the next
    /// connections without a restart.
    pub reload_interval: Duration,
    /// Longest a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
}

impl TlsOptions {
    /// How often certificate files are checked by default.
    pub const RELOAD_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
    /// The default handshake timeout.
    pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

    /// TLS with the certificate chain in `cert` and its key in `key`, no client CA.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsOptions {
        TlsOptions {
            cert: cert.into(),
            key: key.into(),
            ca: None,
            reload_interval: TlsOptions::RELOAD_INTERVAL_DEFAULT,
            handshake_timeout: TlsOptions::HANDSHAKE_TIMEOUT_DEFAULT,
        }
    }
}

/// Why the TLS files could not be turned into a server configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{} holds no PEM private key", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate was refused as a trust anchor.
    #[error("{} holds a CA certificate that cannot be used: {source}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA file.
    #[error("cannot verify client certificates with {}: {source}", path.display())]
    ClientVerifier {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The certificate and key do not make a configuration (the key does not match
    /// the certificate, an unsupported key type, …).
    #[error("the certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// The raw contents of the TLS files, as last read. Comparing them tells whether the
/// files changed, whatever their modification times say (a copy may keep the old
/// mtime; a coarse clock may give two writes the same one).
///
/// No `Debug`: it holds the private key.
#[derive(PartialEq, Eq)]
pub(crate) struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl PemFiles {
    /// Reads the files `options` names.
    pub(crate) fn read(options: &TlsOptions) -> Result<PemFiles, TlsError> {
        Ok(PemFiles {
            cert: read(&options.cert)?,
            key: read(&options.key)?,
            ca: options.ca.as_deref().map(read).transpose()?,
        })
    }
}

/// The configurations of both listeners, built from the same files.
#[derive(Clone, Debug)]
pub struct ServerConfigs {
    /// For the gRPC listener (ALPN `h2`).
    pub grpc: Arc<ServerConfig>,
    /// For the HTTP listener (ALPN `h2`, `http/1.1`).
    pub http: Arc<ServerConfig>,
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

/// The provider every configuration uses: ring, so building needs no cmake or nasm.
///
/// rustls 0.23.48 deprecates it for lacking post-quantum key exchange (only the
/// aws-lc-rs provider has it); classical ECDHE is accepted here for a build that needs
/// only cargo and a C compiler.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds both listeners' configurations from `files` (read from `options`' paths).
pub(crate) fn build(files: &PemFiles, options: &TlsOptions) -> Result<ServerConfigs, TlsError> {
    let chain = certificates(&options.cert, &files.cert)?;
    let key = private_key(&options.key, &files.key)?;
    let provider = provider();
    let config_error = |source| TlsError::Config {
        cert: options.cert.clone(),
        key: options.key.clone(),
        source,
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match (&options.ca, &files.ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path, pem)? {
                roots.add(ca).map_err(|source| TlsError::BadCa {
                    path: path.clone(),
                    source,
                })?;
            }
            // Optional: clients without a certificate (password, token, or none yet)
            // still connect; one that presents a certificate must chain to this CA.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let base = builder.with_single_cert(chain, key).map_err(config_error)?;
    let with_alpn = |protocols: &[&[u8]]| {
        let mut config = base.clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    };
    Ok(ServerConfigs {
        grpc: with_alpn(ALPN_GRPC),
        http: with_alpn(ALPN_HTTP),
    })
}
