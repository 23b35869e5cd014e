//! Acceptance: the official KurrentDB Python client (`kurrentdbclient` from PyPI, in a
//! virtualenv this test creates) runs every script in `tests/python/` against a strata
//! server — over the embedded store, over PostgreSQL, and over TLS with the client's
//! usual connection string as a normal user (`kurrentdb://app:pw-app@127.0.0.1:PORT?TlsCaFile=…`,
//! `app` being in `$ops` and granted `$all`), where a client trusting another CA must
//! fail (`tests/python/tls/wrong_ca.py`), a user without rights gets the client's
//! access-denied and unauthenticated errors (`denied.py`). (This client demands a
//! login and password over TLS even with `UserCertFile`, and the credentials then
//! decide: client certificates are tested with the Node client and in `auth.rs`.)
//!
//! Set `STRATA_SKIP_CLIENT_TESTS=1` to skip on a machine without Python or PyPI; the
//! skip is printed, never silent. CI does not set it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_server::{Server, ServerOptions, TlsOptions, Transport};

/// The client version the scripts are written against.
const CLIENT: &str = "kurrentdbclient==1.3.5";

/// The virtualenv's python, created once per target directory.
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if std::env::var_os("STRATA_SKIP_CLIENT_TESTS").is_some() {
                println!("SKIPPED: STRATA_SKIP_CLIENT_TESTS is set");
                return None;
            }
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kurrentdb-venv");
            let python = venv.join("bin/python");
            let marker = venv.join(format!("installed-{CLIENT}"));
            if !marker.exists() {
                let created = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 is needed to run the KurrentDB client acceptance tests");
                assert!(created.success(), "python3 -m venv failed");
                let installed = Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        CLIENT,
                    ])
                    .status()
                    .unwrap();
                assert!(installed.success(), "pip install {CLIENT} failed");
                std::fs::write(&marker, b"").unwrap();
            }
            Some(python)
        })
        .clone()
}

fn scripts() -> Vec<PathBuf> {
    scripts_in("tests/python")
}

/// The `.py` files of `dir` (relative to the crate), sorted.
fn scripts_in(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "py"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    scripts
}

/// Serves `store` on a free port, runs every script against it, then shuts the server
/// down gracefully (which must succeed).
async fn run_scripts(store: strata::Store) {
    run_scripts_with(store, Transport::LoopbackOnly, |_| None, &[]).await;
}

/// As [`run_scripts`], over `transport`; `uri` gives the scripts' `STRATA_URI` for the
/// bound gRPC address (`None`: the scripts' own plain-text one). `extra` are more
/// scripts, each with its own `STRATA_URI`.
async fn run_scripts_with(
    store: strata::Store,
    transport: Transport,
    uri: impl Fn(std::net::SocketAddr) -> Option<String>,
    extra: &[(PathBuf, String)],
) {
    let Some(python) = python() else { return };
    let options = ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: None,
        transport,
        ..ServerOptions::default()
    };
    let server = Server::bind(store, options).await.unwrap();
    let addr = server.grpc_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let runs = scripts()
        .into_iter()
        .map(|script| (script, uri(addr)))
        .chain(extra.iter().map(|(script, uri)| {
            (
                script.clone(),
                Some(uri.replace("{addr}", &addr.to_string())),
            )
        }));
    for (script, uri) in runs {
        let output = run_script(python.clone(), script.clone(), addr, uri).await;
        let name = script.file_name().unwrap().to_string_lossy().to_string();
        println!("{name}: {}", String::from_utf8_lossy(&output.stdout));
        assert!(
            output.status.success(),
            "{name} failed ({:?}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

/// Runs one script against `addr` (and `uri`, if given), bounded in time.
async fn run_script(
    python: PathBuf,
    script: PathBuf,
    addr: std::net::SocketAddr,
    uri: Option<String>,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        command.arg(&script).env("STRATA_GRPC", addr.to_string());
        if let Some(uri) = uri {
            command.env("STRATA_URI", uri);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: a hung subscription must fail the test, not CI's clock.
        let deadline = Instant::now() + Duration::from_secs(240);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_against_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
    run_scripts(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_against_postgres() {
    if python().is_none() {
        return;
    }
    let url = strata_postgres::cluster::fresh_database("client")
        .await
        .expect("PostgreSQL is needed for this test");
    let store = strata_postgres::connect(&url).await.unwrap();
    run_scripts(store).await;
}

/// A CA and a node certificate for 127.0.0.1 in `dir`: `ca.pem`, `node.pem`, `node.key`.
fn make_certificates(dir: &Path, ca_name: &str) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let node_key = KeyPair::generate().unwrap();
    let mut node = CertificateParams::default();
    node.distinguished_name.push(DnType::CommonName, "node");
    node.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let node_cert = node.signed_by(&node_key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("node.pem"), node_cert.pem()).unwrap();
    std::fs::write(dir.join("node.key"), node_key.serialize_pem()).unwrap();
}

/// The users of the TLS run: `app` (in `$ops`, so it may manage persistent
/// subscriptions, and granted `$all` through its metadata) runs the scripts as a normal
/// user; `bob` (no groups) is refused what he may not do; `restricted` is a stream only
/// `app` may use.
async fn make_users(store: &strata::Store) {
    use strata_server::auth::users::{NewUser, Users};
    let users = Users::new(store.clone(), strata_server::auth::Hasher::default());
    users.ensure_defaults().await.unwrap();
    for (login, groups) in [("app", vec!["$ops".to_owned()]), ("bob", vec![])] {
        users
            .create(NewUser {
                login: login.into(),
                full_name: String::new(),
                groups,
                password: format!("pw-{login}"),
            })
            .await
            .unwrap();
    }
    for (stream, acl) in [
        ("$all", serde_json::json!({ "$r": "app" })),
        (
            "restricted",
            serde_json::json!({ "$r": "app", "$w": "app" }),
        ),
    ] {
        let metadata = strata::StreamMetadata {
            acl: Some(acl),
            ..strata::StreamMetadata::default()
        };
        store
            .set_stream_metadata(stream, strata::ExpectedRevision::Any, &metadata)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_over_tls() {
    if python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let other = dir.path().join("other");
    make_certificates(&certs, "strata test CA");
    make_certificates(&other, "another CA");
    let store = strata::Store::open(dir.path().join("data")).unwrap();
    make_users(&store).await;
    let transport = Transport::Tls(TlsOptions::new(
        certs.join("node.pem"),
        certs.join("node.key"),
    ));
    let ca = certs.join("ca.pem").display().to_string();
    let wrong_ca = other.join("ca.pem").display().to_string();
    let extra: Vec<(PathBuf, String)> = scripts_in("tests/python/tls")
        .into_iter()
        .map(|script| {
            let name = script.file_stem().unwrap().to_string_lossy().to_string();
            let uri = match name.as_str() {
                "wrong_ca" => format!("kurrentdb://admin:changeit@{{addr}}?TlsCaFile={wrong_ca}"),
                "denied" => format!("kurrentdb://bob:pw-bob@{{addr}}?TlsCaFile={ca}"),
                other => panic!("tests/python/tls/{other}.py has no connection string here"),
            };
            (script, uri)
        })
        .collect();
    assert_eq!(extra.len(), 2);
    // The shared scripts run as `app`, a normal user with the rights they need.
    run_scripts_with(
        store,
        transport,
        |addr| Some(format!("kurrentdb://app:pw-app@{addr}?TlsCaFile={ca}")),
        &extra,
    )
    .await;
}
