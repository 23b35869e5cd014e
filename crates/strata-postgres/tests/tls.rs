//! The backend over TLS, through the public API: every `sslmode` against throw-away
//! clusters with certificates made here (rcgen). One cluster accepts only TLS
//! (`hostssl` lines only), one accepts both, and the plain shared cluster has no TLS.
//!
//! The certificate authority signs a server certificate for `localhost` and `127.0.0.1`;
//! a second authority signs nothing the server has. Connecting under the name
//! `db.example` (`hostaddr=127.0.0.1`) reaches the right server under a name its
//! certificate does not have: what `verify-full` must refuse and `verify-ca` accept.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use strata::{EventData, ExpectedRevision, OpenError, ReadStreamOptions, StorageError, Store};
use strata_postgres::cluster::{ServerTls, TestCluster};
use strata_postgres::tls::TlsConfigError;
use strata_postgres::{ConfigError, ConnectionConfig, SslMode};

/// The certificates of every test of this binary, written once.
struct Pki {
    _dir: tempfile::TempDir,
    /// The authority that signed the server's certificate.
    ca: PathBuf,
    /// An authority that signed nothing the servers have.
    other_ca: PathBuf,
    server: ServerTls,
}

fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, issuer) = authority("strata test CA");
        let (other_pem, _) = authority("another CA");
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "strata test server");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).unwrap();
        let ca = dir.path().join("root.crt");
        let other_ca = dir.path().join("other-root.crt");
        std::fs::write(&ca, ca_pem).unwrap();
        std::fs::write(&other_ca, other_pem).unwrap();
        Pki {
            server: ServerTls {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                tls_only: true,
            },
            ca,
            other_ca,
            _dir: dir,
        }
    })
}

/// Starts a cluster from a thread that lives as long as the process (the server stops
/// when the thread that started it ends) and returns its port.
fn keep_running(tls_only: bool) -> u16 {
    let (sender, receiver) = std::sync::mpsc::channel();
    let server = ServerTls {
        tls_only,
        ..pki().server.clone()
    };
    std::thread::spawn(move || match TestCluster::start_tls(server) {
        Ok(cluster) => {
            let _ = sender.send(Ok(cluster.port().unwrap()));
            loop {
                std::thread::park();
            }
        }
        Err(error) => {
            let _ = sender.send(Err(error.to_string()));
        }
    });
    match receiver.recv().unwrap() {
        Ok(port) => port,
        Err(error) => {
            panic!("PostgreSQL is needed for these tests and could not be started: {error}")
        }
    }
}

/// The port of the cluster that refuses clients without TLS.
fn tls_only_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| keep_running(true))
}

/// The port of the cluster that takes clients with and without TLS.
fn mixed_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| keep_running(false))
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// A new database on the cluster at `port` (created over verified TLS); returns its name.
async fn database(port: u16, prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("{prefix}_{}_{n}", std::process::id());
    let admin = client(&format!(
        "postgres://strata@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        path(&pki().ca)
    ))
    .await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    name
}

/// One connection opened as the backend opens them.
async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = ConnectionConfig::parse(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Whether the server sees `client`'s connection as TLS.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Appends to and reads back from a store opened at `url` by `strata_postgres::connect`.
async fn round_trip(url: &str) {
    let store = strata_postgres::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    append_and_read(&store).await;
}

async fn append_and_read(store: &Store) -> strata::Position {
    let event = EventData::json("Opened", &serde_json::json!({"tls": true})).unwrap();
    let appended = store
        .append("account-1", ExpectedRevision::Any, vec![event])
        .await
        .unwrap();
    let events = store
        .read_stream("account-1", ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().event_type, "Opened");
    appended.positions[0]
}

/// The message of a connection that failed for good (not after retrying for seconds).
async fn refused(url: &str) -> String {
    let started = std::time::Instant::now();
    let error = strata_postgres::connect(url).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refused connection is not retried: took {:?} ({error})",
        started.elapsed()
    );
    match &error {
        OpenError::Storage(StorageError::Backend {
            transient: false, ..
        }) => {}
        other => panic!("expected a permanent backend error, got {other:?}"),
    }
    eprintln!("refused as expected: {error}");
    error.to_string()
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let port = tls_only_port();
    let db = database(port, "tls_require").await;
    let url = format!("postgres://strata@127.0.0.1:{port}/{db}?sslmode=require");
    round_trip(&url).await;
    assert!(encrypted(&client(&url).await).await);
    // A name the certificate does not have is no matter to `require` either.
    round_trip(&format!(
        "postgres://strata@db.example:{port}/{db}?hostaddr=127.0.0.1&sslmode=require"
    ))
    .await;
}

#[tokio::test]
async fn require_with_a_root_certificate_checks_the_chain_as_libpq_does() {
    let port = tls_only_port();
    let db = database(port, "tls_require_root").await;
    round_trip(&format!(
        "postgres://strata@127.0.0.1:{port}/{db}?sslmode=require&sslrootcert={}",
        path(&pki().ca)
    ))
    .await;
    let message = refused(&format!(
        "postgres://strata@127.0.0.1:{port}/{db}?sslmode=require&sslrootcert={}",
        path(&pki().other_ca)
    ))
    .await;
    assert!(message.contains("sslmode=require"), "{message}");
    assert!(message.contains("invalid peer certificate"), "{message}");
}

#[tokio::test]
async fn verify_ca_with_the_right_root_connects() {
    let port = tls_only_port();
    let db = database(port, "tls_verify_ca").await;
    round_trip(&format!(
        "postgres://strata@127.0.0.1:{port}/{db}?sslmode=verify-ca&sslrootcert={}",
        path(&pki().ca)
    ))
    .await;
}

#[tokio::test]
async fn verify_full_with_the_right_root_and_host_connects_in_both_forms() {
    let port = tls_only_port();
    let db = database(port, "tls_verify_full").await;
    let ca = path(&pki().ca);
    round_trip(&format!(
        "postgres://strata@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"
    ))
    .await;
    // The certificate names the address too.
    round_trip(&format!(
        "postgres://strata@127.0.0.1:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"
    ))
    .await;
    // libpq's key=value form, with a quoted path.
    round_trip(&format!(
        "host=localhost port={port} user=strata dbname={db} sslmode=verify-full sslrootcert='{ca}'"
    ))
    .await;
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_lacks_which_verify_ca_accepts() {
    let port = tls_only_port();
    let db = database(port, "tls_name").await;
    let ca = path(&pki().ca);
    let message = refused(&format!(
        "postgres://strata@db.example:{port}/{db}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"
    ))
    .await;
    assert!(message.contains("db.example"), "{message}");
    assert!(message.contains("sslmode=verify-full"), "{message}");
    assert!(message.contains("not valid for name"), "{message}");
    // Same server, same name: the chain is good, and verify-ca asks no more.
    round_trip(&format!(
        "postgres://strata@db.example:{port}/{db}?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}"
    ))
    .await;
}

#[tokio::test]
async fn a_certificate_another_authority_signed_is_refused() {
    let port = tls_only_port();
    let db = database(port, "tls_other_ca").await;
    let other = path(&pki().other_ca);
    for mode in ["verify-ca", "verify-full"] {
        let message = refused(&format!(
            "postgres://strata@localhost:{port}/{db}?sslmode={mode}&sslrootcert={other}"
        ))
        .await;
        assert!(message.contains(&format!("sslmode={mode}")), "{message}");
        assert!(message.contains("invalid peer certificate"), "{message}");
        assert!(message.contains("UnknownIssuer"), "{message}");
    }
}

#[tokio::test]
async fn a_server_that_takes_only_tls_refuses_sslmode_disable_and_serves_prefer_over_tls() {
    let port = tls_only_port();
    let db = database(port, "tls_only").await;
    let message = refused(&format!(
        "postgres://strata@127.0.0.1:{port}/{db}?sslmode=disable"
    ))
    .await;
    assert!(message.contains("pg_hba.conf"), "{message}");
    assert!(message.contains("no encryption"), "{message}");
    let prefer = format!("postgres://strata@127.0.0.1:{port}/{db}?sslmode=prefer");
    round_trip(&prefer).await;
    assert!(encrypted(&client(&prefer).await).await);
    // No sslmode at all is `prefer`, as in libpq.
    round_trip(&format!("postgres://strata@127.0.0.1:{port}/{db}")).await;
}

#[tokio::test]
async fn disable_prefer_and_require_choose_as_libpq_does_on_a_server_taking_both() {
    let port = mixed_port();
    let db = database(port, "tls_mixed").await;
    for (mode, tls) in [("disable", false), ("prefer", true), ("require", true)] {
        let url = format!("postgres://strata@127.0.0.1:{port}/{db}?sslmode={mode}");
        round_trip(&url).await;
        assert_eq!(encrypted(&client(&url).await).await, tls, "{mode}");
    }
}

#[tokio::test]
async fn prefer_falls_back_to_plaintext_and_require_fails_on_a_server_without_tls() {
    if std::env::var_os("STRATA_TEST_POSTGRES_URL").is_some() {
        eprintln!("skipped: STRATA_TEST_POSTGRES_URL names a server whose TLS is unknown here");
        return;
    }
    let url = strata_postgres::cluster::fresh_database("tls_plain")
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is needed for these tests and could not be started: {e}")
        });
    let prefer = format!("{url}?sslmode=prefer");
    round_trip(&prefer).await;
    assert!(!encrypted(&client(&prefer).await).await);
    let message = refused(&format!("{url}?sslmode=require")).await;
    assert!(message.contains("server does not support TLS"), "{message}");
}

#[tokio::test]
async fn every_connection_of_the_backend_uses_the_same_tls() {
    let port = tls_only_port();
    let db = database(port, "tls_every").await;
    let url = format!(
        "postgres://strata@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={}",
        path(&pki().ca)
    );
    // The server takes nothing but TLS, so every connection that works is one: the pool
    // (appends, reads), the head watcher (it moves this store's head when the other
    // appends) and the notifier (its NOTIFY is seen in pg_stat_activity).
    let watcher = strata_postgres::connect(&url).await.unwrap();
    let writer = strata_postgres::connect(&url).await.unwrap();
    let position = append_and_read(&writer).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watcher.head() < Some(position) {
        assert!(
            std::time::Instant::now() < deadline,
            "the head watcher did not see the other store's append"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = client(&url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE a.query LIKE '%pg_notify%'),
                        count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.backend_type = 'client backend'",
                &[],
            )
            .await
            .unwrap();
        let (notifiers, plaintext): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(plaintext, 0);
        if notifiers > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the notifier never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_missing_root_certificate_file_is_a_typed_error_naming_the_path_and_mode() {
    let missing =
        std::env::temp_dir().join(format!("strata-no-such-ca-{}.pem", std::process::id()));
    let url = format!(
        "postgres://strata:hunter2@127.0.0.1:1/db?sslmode=verify-ca&sslrootcert={}",
        path(&missing)
    );
    let error = ConnectionConfig::parse(&url).unwrap_err();
    match &error {
        ConfigError::Tls(TlsConfigError::RootCertUnreadable { path, sslmode, .. }) => {
            assert_eq!(path, &missing);
            assert_eq!(*sslmode, SslMode::VerifyCa);
        }
        other => panic!("expected RootCertUnreadable, got {other:?}"),
    }
    // Through the store's own entry point: refused before any connection, with the
    // path and the mode, and never the password.
    let error = strata_postgres::connect(&url).await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, OpenError::InvalidOptions { .. }),
        "{error:?}"
    );
    assert!(message.contains(&path(&missing)), "{message}");
    assert!(message.contains("sslmode=verify-ca"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_root_certificate_file_without_certificates_and_an_unknown_sslmode_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let error = ConnectionConfig::parse(&format!(
        "host=localhost sslmode=verify-full sslrootcert={}",
        path(&junk)
    ))
    .unwrap_err();
    assert!(
        matches!(
            &error,
            ConfigError::Tls(TlsConfigError::RootCertInvalid {
                sslmode: SslMode::VerifyFull,
                ..
            })
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&path(&junk)), "{error}");

    let error = strata_postgres::connect("postgres://strata@localhost/db?sslmode=verify-all")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("unknown sslmode \"verify-all\""),
        "{message}"
    );
    assert!(message.contains("verify-full"), "{message}");

    let error = strata_postgres::connect("postgres://strata@localhost/db?sslmode=verify-ca")
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("sslmode=verify-ca needs sslrootcert"),
        "{error}"
    );
}
