//! The CLI against a server with TLS and authentication, end to end: `strata serve`
//! with certificates made by `strata certs` on loopback, and `strata --server https://…
//! --ca ca.pem` with a password (`--user`, `STRATA_PASSWORD`), a token
//! (`STRATA_TOKEN`) or a client certificate (`--cert/--key`); `strata user` and
//! `strata token` on the local store and through the server; the audit log of failed
//! logins, which must never hold a secret.
//!
//! Every secret below is a distinct string, so that finding it in an output proves a
//! leak.

#![allow(clippy::unwrap_used)] // a test panics on a failed expectation

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Variables the CLI reads, removed from every child so that the caller's environment
/// cannot change a test.
const STRATA_VARIABLES: &[&str] = &[
    "STRATA_DATA",
    "STRATA_SERVER",
    "STRATA_POSTGRES",
    "STRATA_CA",
    "STRATA_CERT",
    "STRATA_KEY",
    "STRATA_USER",
    "STRATA_PASSWORD",
    "STRATA_TOKEN",
    "STRATA_NEW_PASSWORD",
    "STRATA_LOG_LEVEL",
    "STRATA_LOG_FORMAT",
    "RUST_LOG",
];

/// The message of a refused login, as the brief of the CLI words it.
const AUTH_FAILED: &str = "authentication failed: check --user/STRATA_PASSWORD or STRATA_TOKEN";

/// A `strata` command on the store in `data`, with a clean environment.
fn strata(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    for name in STRATA_VARIABLES {
        command.env_remove(name);
    }
    command
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `strata` on `data` with `env` set.
fn run(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = strata(data);
    command.envs(env.iter().copied()).args(args);
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Expects success; returns stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "expected success, got {:?}: stdout {} stderr {}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Expects exit code 1; returns stderr.
fn fails(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1: stdout {} stderr {}",
        stdout(&output),
        stderr(&output)
    );
    stderr(&output)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// A CA and a node certificate for 127.0.0.1 in `dir/certs`, made by `strata certs`.
fn make_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let scratch = dir.join("certs-scratch");
    let certs_arg = certs.to_str().unwrap();
    ok(run(
        &scratch,
        &[],
        &["certs", "create-ca", "--out", certs_arg],
    ));
    ok(run(
        &scratch,
        &[],
        &[
            "certs",
            "create-node",
            "--ca-dir",
            certs_arg,
            "--name",
            "node1",
            "--ip",
            "127.0.0.1",
            "--out",
            certs_arg,
        ],
    ));
    certs
}

/// A running `strata serve` with TLS (so with authentication) on loopback, logging
/// JSON on stderr, which a thread collects.
struct Node {
    child: Option<Child>,
    url: String,
    ca: PathBuf,
    log: Option<JoinHandle<Vec<String>>>,
}

impl Node {
    /// Starts a server on the store in `data` with the certificates in `certs`.
    fn start(data: &Path, certs: &Path) -> Node {
        let mut command = strata(data);
        command
            .args(["--log-format", "json", "serve"])
            .args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(certs.join("node.pem"))
            .arg("--tls-key")
            .arg(certs.join("node.key"))
            .arg("--tls-ca")
            .arg(certs.join("ca.pem"))
            .stdout(Stdio::null());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        // Keeps draining stderr, so the server never blocks on a full pipe, and gives
        // back every line once the server has exited.
        let log = thread::spawn(move || {
            let mut sender = Some(sender);
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("HTTP listening on https://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    if let Some(sender) = sender.take() {
                        let _ = sender.send(addr);
                    }
                }
                lines.push(line);
            }
            lines
        });
        let mut node = Node {
            child: Some(child),
            url: String::new(),
            ca: certs.join("ca.pem"),
            log: Some(log),
        };
        match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => node.url = format!("https://{addr}"),
            Err(_) => {
                let lines = node.stop();
                panic!("the server logged no HTTPS address: {lines:#?}");
            }
        }
        node
    }

    /// A `strata --server URL --ca ca.pem` command, `env` set, then `args`.
    fn cli(&self, data: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut command = strata(data);
        command
            .arg("--server")
            .arg(&self.url)
            .arg("--ca")
            .arg(&self.ca)
            .envs(env.iter().copied())
            .args(args);
        command.output().unwrap()
    }

    /// Stops the server with SIGTERM; returns every line it wrote on stderr.
    fn stop(&mut self) -> Vec<String> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("strata serve did not stop within 30 s");
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.log
            .take()
            .map(|log| log.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failed test must not leave a server running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn store_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let data = dir.path().join("store");
    (dir, data, certs)
}

/// The events of a `read` in JSON lines.
fn read_events(output: Output) -> Vec<Value> {
    json_lines(&ok(output))
}

#[test]
fn https_needs_a_ca_and_credentials_are_not_sent_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    // Nothing listens there: both refusals come before any connection.
    let no_ca = fails(run(
        &data,
        &[],
        &["--server", "https://127.0.0.1:9", "read", "s"],
    ));
    assert!(no_ca.contains("--ca FILE"), "{no_ca}");
    assert!(no_ca.contains("STRATA_CA"), "{no_ca}");
    let clear = fails(run(
        &data,
        &[("STRATA_PASSWORD", "Cl3ar-text-pw")],
        &[
            "--server",
            "http://192.0.2.1:2114",
            "--user",
            "admin",
            "read",
            "s",
        ],
    ));
    assert!(clear.contains("in the clear"), "{clear}");
    assert!(!clear.contains("Cl3ar-text-pw"), "{clear}");
    // A CA file that does not exist is named.
    let missing = fails(run(
        &data,
        &[],
        &[
            "--server",
            "https://127.0.0.1:9",
            "--ca",
            dir.path().join("nope.pem").to_str().unwrap(),
            "read",
            "s",
        ],
    ));
    assert!(missing.contains("nope.pem"), "{missing}");
    // No terminal to ask for a password on (stderr is a pipe): the variable is named.
    let no_password = fails(run(
        &data,
        &[],
        &[
            "--server",
            "http://127.0.0.1:9",
            "--user",
            "admin",
            "read",
            "s",
        ],
    ));
    assert!(no_password.contains("STRATA_PASSWORD"), "{no_password}");
    let no_new_password = fails(run(&data, &[], &["user", "passwd", "admin"]));
    assert!(
        no_new_password.contains("STRATA_NEW_PASSWORD"),
        "{no_new_password}"
    );
    // `--user` with `--token` is a contradiction (clap: exit code 2).
    let both = run(&data, &[], &["--user", "admin", "--token", "streams"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

#[test]
fn admin_appends_and_reads_over_tls_and_wrong_credentials_are_refused() {
    let (_dir, data, certs) = store_dir();
    let mut node = Node::start(&data, &certs);
    let admin = [("STRATA_PASSWORD", "changeit")];
    let appended = json_lines(&ok(node.cli(
        &data,
        &admin,
        &[
            "--user",
            "admin",
            "append",
            "order-1",
            "--type",
            "Placed",
            r#"{"total":42}"#,
        ],
    )));
    assert_eq!(appended[0]["revisions"], serde_json::json!([0]));
    let events = read_events(node.cli(&data, &admin, &["--user", "admin", "read", "order-1"]));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["total"], 42);
    // The other commands too, and the global log (an administrator may read it).
    let all = read_events(node.cli(&data, &admin, &["--user", "admin", "read", "$all"]));
    assert!(all.iter().any(|e| e["stream"] == "order-1"), "{all:?}");
    assert!(ok(node.cli(&data, &admin, &["--user", "admin", "streams"])).contains("order-1"));
    ok(node.cli(&data, &admin, &["--user", "admin", "stats"]));
    let tailed = read_events(node.cli(
        &data,
        &admin,
        &[
            "--user",
            "admin",
            "tail",
            "order-1",
            "--from-start",
            "-n",
            "1",
        ],
    ));
    assert_eq!(tailed.len(), 1);

    // A wrong password: exit code 1, the message, never the password.
    let wrong = fails(node.cli(
        &data,
        &[("STRATA_PASSWORD", "Wr0ng-pass-2b8e")],
        &["--user", "admin", "read", "order-1"],
    ));
    assert!(wrong.contains(AUTH_FAILED), "{wrong}");
    assert!(!wrong.contains("Wr0ng-pass-2b8e"), "{wrong}");
    // No credentials at all: refused too.
    let anonymous = fails(node.cli(&data, &[], &["read", "order-1"]));
    assert!(anonymous.contains(AUTH_FAILED), "{anonymous}");
    // A token that does not exist.
    let token = fails(node.cli(
        &data,
        &[("STRATA_TOKEN", "strata_0123456789abcdef_Un5een-secret-c0de")],
        &["read", "order-1"],
    ));
    assert!(token.contains(AUTH_FAILED), "{token}");
    assert!(!token.contains("Un5een-secret-c0de"), "{token}");

    // The client's own debug logs name the user, never the password.
    let traced = node.cli(
        &data,
        &admin,
        &["--log-level", "trace", "--user", "admin", "read", "order-1"],
    );
    let log = stderr(&traced);
    ok(traced);
    assert!(
        log.contains("request"),
        "no debug log of the request: {log}"
    );
    assert!(log.contains("admin"), "{log}");
    assert!(!log.contains("changeit"), "{log}");
    assert!(
        !log.contains("YWRtaW46Y2hhbmdlaXQ"),
        "the Basic header: {log}"
    );
    node.stop();
}

#[test]
fn local_passwd_before_serve_replaces_the_default_password() {
    let (_dir, data, certs) = store_dir();
    // Before the first networked start: the default users are made, then changed.
    let changed = run(
        &data,
        &[("STRATA_NEW_PASSWORD", "N3w-admin-pw-41aa")],
        &["user", "passwd", "admin"],
    );
    let note = stderr(&changed);
    assert!(ok(changed).contains("admin"));
    assert!(note.contains("default users"), "{note}");
    assert!(!note.contains("N3w-admin-pw-41aa"), "{note}");
    let listed = json_lines(&ok(run(&data, &[], &["user", "list", "--json"])));
    let logins: Vec<&str> = listed
        .iter()
        .map(|u| u["login_name"].as_str().unwrap())
        .collect();
    assert_eq!(logins, ["admin", "ops"]);

    let mut node = Node::start(&data, &certs);
    let old = fails(node.cli(
        &data,
        &[("STRATA_PASSWORD", "changeit")],
        &["--user", "admin", "append", "s-1", "--type", "T", "{}"],
    ));
    assert!(old.contains(AUTH_FAILED), "{old}");
    ok(node.cli(
        &data,
        &[("STRATA_PASSWORD", "N3w-admin-pw-41aa")],
        &["--user", "admin", "append", "s-1", "--type", "T", "{}"],
    ));
    let log = node.stop();
    // The server no longer warns about the default password of admin (ops keeps it).
    let default_warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("default password"))
        .collect();
    assert!(
        default_warnings
            .iter()
            .all(|l| !l.contains("\"user\":\"admin\"")),
        "{default_warnings:#?}"
    );
    assert!(
        default_warnings
            .iter()
            .any(|l| l.contains("\"user\":\"ops\"")),
        "{log:#?}"
    );
}

#[test]
fn locally_made_users_and_tokens_work_on_the_server_within_their_acls() {
    let (dir, data, certs) = store_dir();
    let alice_password = [("STRATA_NEW_PASSWORD", "Al1ce-pw-0e6d")];
    ok(run(
        &data,
        &alice_password,
        &["user", "add", "alice", "--full-name", "Alice A."],
    ));
    let shown = json_lines(&ok(run(&data, &[], &["user", "show", "alice", "--json"])));
    assert_eq!(shown[0]["full_name"], "Alice A.");
    assert_eq!(shown[0]["groups"], serde_json::json!([]));
    ok(run(
        &data,
        &[],
        &["user", "update", "alice", "--group", "accounting"],
    ));
    let table = ok(run(&data, &[], &["user", "list"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("LOGIN") && header.contains("GROUPS"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("accounting")),
        "{table}"
    );

    // A token, printed once on stdout with a note on stderr.
    let created = run(
        &data,
        &[],
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--description",
            "ci",
            "--ttl",
            "30d",
        ],
    );
    let note = stderr(&created);
    let token = ok(created).trim().to_owned();
    assert!(token.starts_with("strata_"), "{token}");
    assert!(note.contains("cannot be shown again"), "{note}");
    let listed = json_lines(&ok(run(&data, &[], &["token", "list", "--json"])));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["login"], "alice");
    assert_eq!(listed[0]["description"], "ci");
    assert_eq!(listed[0]["revoked"], false);
    assert!(listed[0]["expires_ms"].as_u64().is_some());
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert!(token.contains(&id));
    assert!(!ok(run(&data, &[], &["token", "list"])).contains(&token[24..]));

    // A client certificate whose common name is alice.
    let alice_cert = dir.path().join("alice-cert");
    ok(run(
        &data,
        &[],
        &[
            "certs",
            "create-node",
            "--ca-dir",
            certs.to_str().unwrap(),
            "--name",
            "alice",
            "--ip",
            "127.0.0.1",
            "--out",
            alice_cert.to_str().unwrap(),
        ],
    ));

    let mut node = Node::start(&data, &certs);
    let alice = [("STRATA_PASSWORD", "Al1ce-pw-0e6d")];
    ok(node.cli(
        &data,
        &alice,
        &[
            "--user", "alice", "append", "orders-1", "--type", "Placed", "{}",
        ],
    ));
    assert_eq!(
        read_events(node.cli(&data, &alice, &["--user", "alice", "read", "orders-1"])).len(),
        1
    );
    // The global log is for administrators: refused, naming the operation and stream.
    let denied = fails(node.cli(&data, &alice, &["--user", "alice", "read", "$all"]));
    assert!(denied.contains("access denied"), "{denied}");
    assert!(denied.contains("user \"alice\""), "{denied}");
    assert!(denied.contains("read stream \"$all\""), "{denied}");

    // The token reads as alice, without --user.
    let by_token = read_events(node.cli(&data, &[("STRATA_TOKEN", &token)], &["read", "orders-1"]));
    assert_eq!(by_token.len(), 1);
    let denied = fails(node.cli(&data, &[("STRATA_TOKEN", &token)], &["read", "$all"]));
    assert!(denied.contains("access denied"), "{denied}");

    // The client certificate authenticates as alice, with no password or token.
    let by_cert = node.cli(
        &data,
        &[],
        &[
            "--cert",
            alice_cert.join("node.pem").to_str().unwrap(),
            "--key",
            alice_cert.join("node.key").to_str().unwrap(),
            "append",
            "orders-1",
            "--type",
            "Paid",
            "{}",
        ],
    );
    ok(by_cert);
    let log = node.stop();

    // Revoked on the local store (the server is stopped), the token stops working.
    ok(run(&data, &[], &["token", "revoke", &id]));
    let listed = json_lines(&ok(run(&data, &[], &["token", "list", "--json"])));
    assert_eq!(listed[0]["revoked"], true);
    let mut node = Node::start(&data, &certs);
    let revoked = fails(node.cli(&data, &[("STRATA_TOKEN", &token)], &["read", "orders-1"]));
    assert!(revoked.contains(AUTH_FAILED), "{revoked}");
    let log2 = node.stop();
    for line in log.iter().chain(&log2) {
        assert!(!line.contains("Al1ce-pw-0e6d"), "{line}");
        assert!(!line.contains(&token[24..]), "{line}");
    }
}

#[test]
fn audit_log_records_failed_logins_without_any_secret() {
    let (_dir, data, certs) = store_dir();
    // A right password that is not the default one, so that no start-up line can
    // mention it.
    ok(run(
        &data,
        &[("STRATA_NEW_PASSWORD", "R1ght-pw-7c19")],
        &["user", "passwd", "admin"],
    ));
    ok(run(
        &data,
        &[("STRATA_NEW_PASSWORD", "B0b-pw-5a02")],
        &["user", "add", "bob"],
    ));
    let token = ok(run(&data, &[], &["token", "create", "--user", "bob"]))
        .trim()
        .to_owned();
    let id = json_lines(&ok(run(&data, &[], &["token", "list", "--json"])))[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(run(&data, &[], &["token", "revoke", &id]));
    let revoked_secret = token.rsplit('_').next().unwrap().to_owned();
    assert!(revoked_secret.len() >= 40, "{token}");

    let mut node = Node::start(&data, &certs);
    let wrong_password = "Wr0ng-pw-e3f1";
    let unknown_token_secret = "Unkn0wn-token-secret-9d4b";
    let unknown_token = format!("strata_00112233445566ff_{unknown_token_secret}");
    fails(node.cli(
        &data,
        &[("STRATA_PASSWORD", wrong_password)],
        &["--user", "admin", "read", "s"],
    ));
    fails(node.cli(&data, &[("STRATA_TOKEN", &unknown_token)], &["read", "s"]));
    fails(node.cli(&data, &[("STRATA_TOKEN", &token)], &["read", "s"]));
    ok(node.cli(
        &data,
        &[("STRATA_PASSWORD", "R1ght-pw-7c19")],
        &["--user", "admin", "append", "s", "--type", "T", "{}"],
    ));
    let log = node.stop();
    assert!(!log.is_empty());

    let audit: Vec<Value> = log
        .iter()
        .filter(|line| line.contains("authentication_failed"))
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    let find = |reason: &str| {
        audit
            .iter()
            .find(|line| line["reason"] == reason)
            .unwrap_or_else(|| panic!("no audit line with reason {reason}: {log:#?}"))
    };
    let password_line = find("wrong_password");
    assert_eq!(password_line["user"], "admin");
    assert_eq!(password_line["event"], "authentication_failed");
    assert_eq!(password_line["target"], "strata::audit");
    assert_eq!(password_line["method"], "password");
    assert_eq!(find("bad_token")["method"], "token");
    assert_eq!(find("revoked_token")["method"], "token");

    let whole = log.join("\n");
    for secret in [
        wrong_password,
        "R1ght-pw-7c19",
        "B0b-pw-5a02",
        unknown_token_secret,
        &revoked_secret,
        // The right password's Basic header, base64 of "admin:R1ght-pw-7c19".
        "YWRtaW46UjFnaHQtcHctN2MxOQ",
    ] {
        assert!(!whole.contains(secret), "the server log holds {secret:?}");
    }
}

/// Users and tokens through the server's HTTP API (`/users`, `/tokens`).
#[test]
fn users_and_tokens_through_the_server() {
    let (_dir, data, certs) = store_dir();
    let mut node = Node::start(&data, &certs);
    let admin = |env: &[(&str, &str)], args: &[&str]| {
        let mut all = vec!["--user", "admin"];
        all.extend_from_slice(args);
        let mut env = env.to_vec();
        env.push(("STRATA_PASSWORD", "changeit"));
        node.cli(&data, &env, &all)
    };
    ok(admin(
        &[("STRATA_NEW_PASSWORD", "Al1ce-srv-pw-33c0")],
        &[
            "user",
            "add",
            "alice",
            "--full-name",
            "Alice",
            "--group",
            "team",
        ],
    ));
    let exists = fails(admin(
        &[("STRATA_NEW_PASSWORD", "x-pw")],
        &["user", "add", "alice"],
    ));
    assert!(exists.contains("user_exists"), "{exists}");
    let users = json_lines(&ok(admin(&[], &["user", "list", "--json"])));
    let alice_row = users
        .iter()
        .find(|u| u["login_name"] == "alice")
        .unwrap_or_else(|| panic!("{users:?}"));
    assert_eq!(alice_row["groups"], serde_json::json!(["team"]));
    let table = ok(admin(&[], &["user", "list"]));
    assert!(table.lines().any(|l| l.starts_with("alice")), "{table}");
    let shown = json_lines(&ok(admin(&[], &["user", "show", "alice", "--json"])));
    assert_eq!(shown[0]["full_name"], "Alice");
    ok(admin(
        &[],
        &["user", "update", "alice", "--full-name", "Alice B."],
    ));
    let shown = json_lines(&ok(admin(&[], &["user", "show", "alice", "--json"])));
    assert_eq!(shown[0]["full_name"], "Alice B.");
    assert_eq!(shown[0]["groups"], serde_json::json!(["team"]));
    let missing = fails(admin(&[], &["user", "show", "nobody"]));
    assert!(missing.contains("user_not_found"), "{missing}");
    // Managing users is for administrators.
    let alice = [("STRATA_PASSWORD", "Al1ce-srv-pw-33c0")];
    let users = fails(node.cli(&data, &alice, &["--user", "alice", "user", "list"]));
    assert!(users.contains("access denied"), "{users}");
    assert!(users.contains("list the users"), "{users}");

    // Alice appends to a user stream; the global log is refused.
    ok(node.cli(
        &data,
        &alice,
        &["--user", "alice", "append", "orders-9", "--type", "T", "{}"],
    ));
    let denied = fails(node.cli(&data, &alice, &["--user", "alice", "read", "$all"]));
    assert!(denied.contains("access denied"), "{denied}");
    assert!(denied.contains("$all"), "{denied}");

    // A token for alice: it reads, and after revocation it fails.
    let created = admin(
        &[],
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--description",
            "ci",
            "--ttl",
            "30d",
        ],
    );
    assert!(stderr(&created).contains("cannot be shown again"));
    let token = ok(created).trim().to_owned();
    assert!(token.starts_with("strata_"), "{token}");
    let by_token = read_events(node.cli(&data, &[("STRATA_TOKEN", &token)], &["read", "orders-9"]));
    assert_eq!(by_token.len(), 1);
    let tokens = json_lines(&ok(admin(&[], &["token", "list", "--json"])));
    let row = tokens
        .iter()
        .find(|t| t["login"] == "alice")
        .unwrap_or_else(|| panic!("{tokens:?}"));
    assert_eq!(row["description"], "ci");
    assert_eq!(row["created_by"], "admin");
    let id = row["id"].as_str().unwrap().to_owned();
    ok(admin(&[], &["token", "revoke", &id]));
    let revoked = fails(node.cli(&data, &[("STRATA_TOKEN", &token)], &["read", "orders-9"]));
    assert!(revoked.contains(AUTH_FAILED), "{revoked}");

    // Alice changes her own password; the old one stops working.
    ok(node.cli(
        &data,
        &[
            ("STRATA_PASSWORD", "Al1ce-srv-pw-33c0"),
            ("STRATA_NEW_PASSWORD", "Al1ce-srv-pw-2"),
        ],
        &["--user", "alice", "user", "passwd", "alice"],
    ));
    fails(node.cli(&data, &alice, &["--user", "alice", "read", "orders-9"]));
    let alice2 = [("STRATA_PASSWORD", "Al1ce-srv-pw-2")];
    ok(node.cli(&data, &alice2, &["--user", "alice", "read", "orders-9"]));
    // The admin resets it, disables and enables her, and deletes her.
    ok(admin(
        &[("STRATA_NEW_PASSWORD", "Al1ce-srv-pw-3")],
        &["user", "reset", "alice"],
    ));
    let alice3 = [("STRATA_PASSWORD", "Al1ce-srv-pw-3")];
    ok(node.cli(&data, &alice3, &["--user", "alice", "read", "orders-9"]));
    ok(admin(&[], &["user", "disable", "alice"]));
    let disabled = fails(node.cli(&data, &alice3, &["--user", "alice", "read", "orders-9"]));
    assert!(disabled.contains(AUTH_FAILED), "{disabled}");
    ok(admin(&[], &["user", "enable", "alice"]));
    ok(node.cli(&data, &alice3, &["--user", "alice", "read", "orders-9"]));
    ok(admin(&[], &["user", "delete", "alice"]));
    let users = json_lines(&ok(admin(&[], &["user", "list", "--json"])));
    assert!(
        users.iter().all(|u| u["login_name"] != "alice"),
        "{users:?}"
    );
    let log = node.stop();
    for line in &log {
        for secret in [
            "Al1ce-srv-pw-33c0",
            "Al1ce-srv-pw-2",
            "Al1ce-srv-pw-3",
            &token[24..],
        ] {
            assert!(!line.contains(secret), "{line}");
        }
    }
}
