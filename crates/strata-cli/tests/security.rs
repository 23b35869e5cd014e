//! `strata certs` and the security flags of `strata serve`, end to end: a CA and a node
//! certificate made by the binary let a TLS server start and a client trusting the CA
//! connect; keys are private; nothing is overwritten; a non-loopback address without
//! TLS or `--insecure` is refused, and so is `--insecure` with certificates.

#![allow(clippy::unwrap_used)] // a test panics on a failed expectation

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

fn strata(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_SERVER")
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeded(output: &Output) {
    assert!(output.status.success(), "{}", stderr(output));
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `GET /health` over TLS, trusting only `ca`; returns the answer's status line.
fn https_health(addr: &str, ca: &Path) -> Result<String, std::io::Error> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    #[allow(deprecated)] // ring, as the server
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let ip: std::net::SocketAddr = addr.parse().unwrap();
    let connection =
        ClientConnection::new(Arc::new(config), ServerName::IpAddress(ip.ip().into())).unwrap();
    let mut tls = StreamOwned::new(connection, TcpStream::connect(addr)?);
    write!(
        tls,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    // A close without TLS's close_notify is reported as an error after the data.
    let _ = tls.read_to_string(&mut answer);
    if answer.is_empty() {
        return Err(std::io::Error::other("no answer"));
    }
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn certs_make_a_ca_and_a_node_certificate_that_a_tls_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().unwrap();
    succeeded(&strata(&data, &["certs", "create-ca", "--out", certs_arg]));
    succeeded(&strata(
        &data,
        &[
            "certs",
            "create-node",
            "--ca-dir",
            certs_arg,
            "--name",
            "node1",
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
            "--out",
            certs_arg,
        ],
    ));
    #[cfg(unix)]
    {
        assert_eq!(mode(&certs.join("ca.key")), 0o600);
        assert_eq!(mode(&certs.join("node.key")), 0o600);
        assert_eq!(mode(&certs.join("node.pem")), 0o644);
    }
    // Nothing is overwritten.
    let again = strata(&data, &["certs", "create-ca", "--out", certs_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    // A node certificate nobody could verify is refused.
    let no_san = strata(
        &data,
        &[
            "certs",
            "create-node",
            "--ca-dir",
            certs_arg,
            "--name",
            "n",
            "--out",
            dir.path().join("n").to_str().unwrap(),
        ],
    );
    assert_eq!(no_san.status.code(), Some(1));
    assert!(
        stderr(&no_san).contains("--ip or --dns"),
        "{}",
        stderr(&no_san)
    );

    let mut server = Command::new(env!("CARGO_BIN_EXE_strata"))
        .env_remove("STRATA_DATA")
        .arg("--data")
        .arg(&data)
        .args(["serve", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(certs.join("node.pem"))
        .arg("--tls-key")
        .arg(certs.join("node.key"))
        .arg("--tls-ca")
        .arg(certs.join("ca.pem"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut http = None;
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push(line.clone());
        if let Some(rest) = line.split("HTTP listening on https://").nth(1) {
            http = Some(rest.trim().to_owned());
            break;
        }
    }
    let http = http.unwrap_or_else(|| panic!("no HTTPS address in {banner:?}"));
    assert!(
        banner.iter().any(|l| l.contains("TlsCaFile=")),
        "{banner:?}"
    );
    let answer = https_health(&http, &certs.join("ca.pem"));
    // Another CA's client is refused.
    let other = dir.path().join("other");
    succeeded(&strata(
        &data,
        &["certs", "create-ca", "--out", other.to_str().unwrap()],
    ));
    let refused = https_health(&http, &other.join("ca.pem"));
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "strata serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn serve_refuses_a_non_loopback_address_without_tls_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    for (grpc, http) in [("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "0.0.0.0:0")] {
        let output = strata(dir.path(), &["serve", "--grpc", grpc, "--http", http]);
        assert_eq!(output.status.code(), Some(1));
        let message = stderr(&output);
        assert!(message.contains("--tls-cert/--tls-key"), "{message}");
        assert!(message.contains("--insecure"), "{message}");
        assert!(message.contains("0.0.0.0"), "{message}");
    }
}

#[test]
fn serve_refuses_insecure_with_certificates_and_half_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--insecure", "--tls-cert", "a.pem", "--tls-key", "a.key"][..],
        &["--tls-cert", "a.pem"],
        &["--tls-ca", "ca.pem"],
    ] {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        let output = strata(dir.path(), &all);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let both = strata(
        dir.path(),
        &[
            "serve",
            "--insecure",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "a.key",
        ],
    );
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
}

#[test]
fn insecure_mode_is_announced_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_strata"))
        .env_remove("STRATA_DATA")
        .arg("--data")
        .arg(dir.path())
        .args(["--log-format", "json", "serve", "--insecure"])
        .args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut warning = None;
    for line in BufReader::new(server.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("\"WARN\"") && line.contains("insecure") {
            warning = Some(line);
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let warning = warning.expect("a warning about the insecure mode");
    // Structured: the mode and the addresses are fields, not only words.
    assert!(warning.contains("\"transport\":\"insecure\""), "{warning}");
    assert!(warning.contains("\"grpc\""), "{warning}");
}
