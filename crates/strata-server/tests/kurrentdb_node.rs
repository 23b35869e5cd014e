//! Acceptance: the official KurrentDB Node client (`@kurrent/kurrentdb-client` from npm,
//! installed once per target directory by this test) runs each script of
//! `tests/node/` against its own strata server over TLS, with authentication on:
//!
//! - `streams.mjs`: as `admin` with a password — appends with expected revisions, reads
//!   both ways, a filtered `$all`, a catch-up subscription that gets a live event, delete
//!   and tombstone, and the client's errors for a wrong expected revision and a deleted
//!   stream;
//! - `users.mjs`: users made, read, changed, disabled, enabled and deleted through the
//!   `Users` service (with the client's channel and credentials: the client has no
//!   user-management calls of its own), then `$acl`s, `$all`, `$settings` and
//!   persistent subscriptions as `alice` (group `sales`);
//! - `certificate.mjs`: a client certificate whose common name is `alice` logs in as
//!   alice, without a password;
//! - `refused.mjs`: a wrong password and an unknown user get UNAUTHENTICATED (which the
//!   client raises as `AccessDeniedError`), and a client trusting another CA cannot
//!   connect.
//!
//! Each script exits non-zero with a message on anything unexpected; the test prints its
//! output. Node 20 and npm are needed; set `STRATA_SKIP_CLIENT_TESTS=1` to skip on a
//! machine without them or without access to npm (the skip is printed, never silent).
//! CI does not set it.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_server::Transport;
use support::{loopback_options, start, Ca, Files};

/// The client version the scripts are written against.
const CLIENT: &str = "@kurrent/kurrentdb-client@1.3.1";

/// Every script of `tests/node/`, each run by one of the tests below.
const SCRIPTS: [&str; 4] = ["certificate.mjs", "refused.mjs", "streams.mjs", "users.mjs"];

/// The directory the client is installed in (its `node_modules`), once per target
/// directory; `None` when the client tests are skipped.
fn client_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if std::env::var_os("STRATA_SKIP_CLIENT_TESTS").is_some() {
            println!("SKIPPED: STRATA_SKIP_CLIENT_TESTS is set");
            return None;
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kurrentdb-node");
        let marker = dir.join(format!("installed-{}", CLIENT.replace(['@', '/'], "_")));
        if !marker.exists() {
            let node = Command::new("node").arg("--version").output().expect(
                "node (20 or later) and npm are needed to run the KurrentDB Node client \
                 acceptance tests (or set STRATA_SKIP_CLIENT_TESTS=1)",
            );
            assert!(node.status.success(), "node --version failed");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("package.json"),
                r#"{ "name": "strata-kurrentdb-node", "private": true }"#,
            )
            .unwrap();
            let installed = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--save-exact", CLIENT])
                .current_dir(&dir)
                .status()
                .expect("npm is needed to install the KurrentDB Node client");
            assert!(installed.success(), "npm install {CLIENT} failed");
            std::fs::write(&marker, b"").unwrap();
        }
        Some(dir)
    })
    .clone()
}

/// Starts a TLS server (authentication on; client certificates from its CA accepted),
/// runs `tests/node/<script>` against it, and fails with the script's output unless it
/// exits 0. The server is then shut down gracefully (which must succeed).
async fn run_script(script: &str) {
    let Some(client) = client_dir() else { return };
    let ca = Ca::new("strata node test CA");
    let files = Files::new(&ca);
    let other = Ca::new("another CA");
    std::fs::write(files.path("other-ca.pem"), &other.pem).unwrap();
    for login in ["alice", "nobody"] {
        let (cert, key) = ca.user(login);
        std::fs::write(files.path(&format!("{login}.pem")), cert).unwrap();
        std::fs::write(files.path(&format!("{login}.key")), key).unwrap();
    }
    let server = start(loopback_options(Transport::Tls(files.options()))).await;
    let path = |name: &str| files.path(name).display().to_string();
    let env = vec![
        ("STRATA_NODE_DIR", client.display().to_string()),
        ("STRATA_GRPC", server.grpc.to_string()),
        ("STRATA_CA", path("ca.pem")),
        ("STRATA_OTHER_CA", path("other-ca.pem")),
        ("STRATA_ALICE_CERT", path("alice.pem")),
        ("STRATA_ALICE_KEY", path("alice.key")),
        ("STRATA_NOBODY_CERT", path("nobody.pem")),
        ("STRATA_NOBODY_KEY", path("nobody.key")),
    ];
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node")
        .join(script);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || node(&script_path, &env))
        .await
        .unwrap();
    println!(
        "{script} ({:.1} s): {}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{script} failed ({:?}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}

/// Runs `node script` with `env`, bounded in time: a hung subscription must fail the
/// test, not CI's clock.
fn node(script: &Path, env: &[(&str, String)]) -> std::process::Output {
    let mut child = Command::new("node")
        // The client's gRPC library sets an IP address as the TLS server name, which
        // Node flags as deprecated on every connection: noise in the output.
        .arg("--no-deprecation")
        .arg(script)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is needed to run the KurrentDB Node client acceptance tests");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_as_admin() {
    run_script("streams.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_acls_and_persistent_subscriptions() {
    run_script("users.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_logs_in() {
    run_script("certificate.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_untrusted_ca_are_refused() {
    run_script("refused.mjs").await;
}

/// A script added to `tests/node/` needs a test above (and a place in [`SCRIPTS`]).
#[test]
fn every_script_has_a_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".mjs"))
        .collect();
    found.sort();
    assert_eq!(found, SCRIPTS);
}
