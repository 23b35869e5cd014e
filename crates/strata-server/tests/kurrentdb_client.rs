//! Acceptance: the official KurrentDB Python client (`kurrentdbclient` from PyPI, in a
//! virtualenv this test creates) runs every script in `tests/python/` against a strata
//! server — once over the embedded store and once over PostgreSQL.
//!
//! Set `STRATA_SKIP_CLIENT_TESTS=1` to skip on a machine without Python or PyPI; the
//! skip is printed, never silent. CI does not set it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_server::{Server, ServerOptions};

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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
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
    let Some(python) = python() else { return };
    let options = ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: None,
        ..ServerOptions::default()
    };
    let server = Server::bind(store, options).await.unwrap();
    let addr = server.grpc_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    for script in scripts() {
        let python = python.clone();
        let script_path = script.clone();
        let output = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(python)
                .arg(&script_path)
                .env("STRATA_GRPC", addr.to_string())
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
        .unwrap();
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
