//! `strata certs`: a certificate authority and node certificates signed by it (rcgen),
//! so that a secure node starts in two commands:
//!
//! ```text
//! strata certs create-ca --out certs
//! strata certs create-node --ca-dir certs --name node1 --ip 127.0.0.1 --dns localhost --out certs
//! strata serve --tls-cert certs/node.pem --tls-key certs/node.key --tls-ca certs/ca.pem
//! ```
//!
//! Keys are ECDSA P-256, written with mode 0600; no file is ever overwritten.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// File names in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File names in a node directory.
pub const NODE_CERT_FILE: &str = "node.pem";
/// The node's private key.
pub const NODE_KEY_FILE: &str = "node.key";

/// How far back a certificate's validity starts: a client whose clock is a little
/// behind still accepts a certificate made just now.
const BACKDATE: Duration = Duration::hours(1);

/// What `strata certs` does.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a certificate authority: `ca.pem` (give it to clients and to
    /// `--tls-ca`) and `ca.key` (keep it secret; it signs node certificates).
    CreateCa(CreateCaArgs),
    /// Make a node certificate signed by the CA: `node.pem` and `node.key`, for
    /// `strata serve --tls-cert node.pem --tls-key node.key`.
    CreateNode(CreateNodeArgs),
}

/// Options of `strata certs create-ca`.
#[derive(Debug, Args)]
pub struct CreateCaArgs {
    /// Directory to write `ca.pem` and `ca.key` into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The CA's common name.
    #[arg(long, value_name = "NAME", default_value = "strata CA")]
    pub name: String,
    /// How long the CA is valid, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 1825)]
    pub days: u32,
}

/// Options of `strata certs create-node`.
#[derive(Debug, Args)]
pub struct CreateNodeArgs {
    /// Directory holding the CA's `ca.pem` and `ca.key`.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The node's common name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// An IP address clients reach the node at (repeatable); `127.0.0.1` for local
    /// clients.
    #[arg(long, value_name = "IP")]
    pub ip: Vec<IpAddr>,
    /// A DNS name clients reach the node at (repeatable).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// Directory to write `node.pem` and `node.key` into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// How long the certificate is valid, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub days: u32,
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// The output file exists: keys and certificates are never overwritten.
    #[error("{} already exists: remove it first (certificates and keys are never overwritten)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The node would have no subject alternative name, so no client could verify it.
    #[error(
        "give at least one --ip or --dns: clients check the address they connect to against them"
    )]
    NoSubjectAltName,
    /// A `--dns` value is not a valid DNS name.
    #[error("--dns {name:?} is not a valid DNS name")]
    BadDnsName {
        /// The name given.
        name: String,
    },
    /// The CA files could not be used (not PEM, not a certificate, not its key).
    #[error("cannot use the CA in {}: {source}", dir.display())]
    BadCa {
        /// The CA directory.
        dir: PathBuf,
        /// What rcgen said.
        #[source]
        source: rcgen::Error,
    },
    /// Generating a key or signing failed.
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Runs `strata certs …`, printing the files written.
pub fn run(command: CertsCommand) -> Result<(), CertsError> {
    let written = match command {
        CertsCommand::CreateCa(args) => create_ca(&args)?,
        CertsCommand::CreateNode(args) => create_node(&args)?,
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
}

/// Makes a self-signed CA in `args.out`; returns the files written.
pub fn create_ca(args: &CreateCaArgs) -> Result<Vec<PathBuf>, CertsError> {
    let cert_path = args.out.join(CA_CERT_FILE);
    let key_path = args.out.join(CA_KEY_FILE);
    refuse_existing(&[&cert_path, &key_path])?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, &args.name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, args.days);
    let cert = params.self_signed(&key)?;
    create_dir(&args.out)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_new(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(vec![cert_path, key_path])
}

/// Makes a node certificate in `args.out`, signed by the CA in `args.ca_dir`; returns
/// the files written.
pub fn create_node(args: &CreateNodeArgs) -> Result<Vec<PathBuf>, CertsError> {
    if args.ip.is_empty() && args.dns.is_empty() {
        return Err(CertsError::NoSubjectAltName);
    }
    let cert_path = args.out.join(NODE_CERT_FILE);
    let key_path = args.out.join(NODE_KEY_FILE);
    refuse_existing(&[&cert_path, &key_path])?;
    let issuer = load_ca(&args.ca_dir)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, &args.name);
    params.subject_alt_names = args.ip.iter().copied().map(SanType::IpAddress).collect();
    for name in &args.dns {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|_| CertsError::BadDnsName { name: name.clone() })?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Server for clients; client too, so nodes can present it to each other.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, args.days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    create_dir(&args.out)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_new(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(vec![cert_path, key_path])
}

fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertsError::Io { path, source })
    };
    let cert = read(CA_CERT_FILE)?;
    let key = read(CA_KEY_FILE)?;
    let bad = |source| CertsError::BadCa {
        dir: dir.to_owned(),
        source,
    };
    let key = KeyPair::from_pem(&key).map_err(bad)?;
    Issuer::from_ca_cert_pem(&cert, key).map_err(bad)
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CertsError> {
    match paths.iter().find(|path| path.exists()) {
        Some(path) => Err(CertsError::Exists {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Writes a file that must not exist yet; a `secret` one is readable by its owner only
/// from the moment it exists (mode 0600 at creation, not changed afterwards).
fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AlreadyExists => CertsError::Exists {
            path: path.to_owned(),
        },
        _ => CertsError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}
