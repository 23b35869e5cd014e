//! A throw-away PostgreSQL cluster for tests and benchmarks: `initdb` in a temporary
//! directory, `postgres` on a free loopback port, stopped when the process exits.
//!
//! Set `STRATA_TEST_POSTGRES_URL` to use an existing server instead (its URL may carry
//! `sslmode` and `sslrootcert`, as any connection string of the backend).
//!
//! [`TestCluster::start_tls`] starts one that speaks TLS with a certificate the caller
//! made (the TLS tests make theirs with rcgen), optionally refusing clients without TLS.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The PostgreSQL server binaries were not found.
    #[error("PostgreSQL server binaries not found ({0}); install postgresql-15")]
    NotInstalled(String),
    /// A step failed.
    #[error("{step}: {message}")]
    Failed {
        /// What was being done.
        step: &'static str,
        /// What happened.
        message: String,
    },
}

/// TLS for a [`TestCluster`]: the server's certificate and key, and whether plaintext
/// clients are still let in.
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate (followed by any intermediates), PEM: written to
    /// `server.crt` in the data directory (`ssl_cert_file`).
    pub cert_pem: String,
    /// The server's private key, PEM: written to `server.key` with mode 0600
    /// (`ssl_key_file`; PostgreSQL refuses a key others can read).
    pub key_pem: String,
    /// Only TLS connections over TCP: `pg_hba.conf` has `hostssl` lines and no `host`
    /// lines, so a client with `sslmode=disable` is refused. Otherwise both are accepted.
    pub tls_only: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("tls_only", &self.tls_only)
            .finish_non_exhaustive()
    }
}

/// The cluster shared by every test of this process, started on first use.
///
/// It is started from a thread that lives as long as the process: the server is told to
/// stop when the thread that started it dies, so it must not be a test's thread.
pub fn shared() -> Result<&'static str, ClusterError> {
    static SHARED: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    let outcome = SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("strata-test-postgres".into())
            .spawn(move || {
                match TestCluster::start() {
                    Ok(cluster) => {
                        let _ = sender.send(Ok(cluster.url().to_owned()));
                        // Keep the cluster (and this thread) until the process exits.
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error.to_string()));
                    }
                }
            });
        match spawned {
            Ok(_) => receiver.recv().unwrap_or_else(|e| Err(e.to_string())),
            Err(e) => Err(e.to_string()),
        }
    });
    match outcome {
        Ok(url) => Ok(url.as_str()),
        Err(message) => Err(ClusterError::Failed {
            step: "start the shared cluster",
            message: message.clone(),
        }),
    }
}

/// A new, empty database on the [`shared`] cluster (named `{prefix}_{pid}_{n}`), for one
/// test; returns its URL.
pub async fn fresh_database(prefix: &str) -> Result<String, ClusterError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let url = shared()?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("{prefix}_{}_{n}", std::process::id());
    let config = crate::ConnectionConfig::parse(url)
        .map_err(|e| failed("read the shared cluster's URL", e))?;
    let (client, connection) = config
        .connect()
        .await
        .map_err(|e| failed("connect to the shared cluster", e))?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| failed("create a test database", e))?;
    drop(client);
    let _ = driver.await;
    Ok(url.replacen("/postgres", &format!("/{name}"), 1))
}

/// A running throw-away cluster.
#[derive(Debug)]
pub struct TestCluster {
    url: String,
    child: Option<Child>,
    server: Option<Server>,
    _dir: Option<tempfile::TempDir>,
}

/// How to start the server again.
#[derive(Debug)]
struct Server {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
    ids: Option<(u32, u32)>,
}

impl TestCluster {
    /// The connection URL (database `postgres`, user `strata`, no password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port of a cluster started here (`None` for `STRATA_TEST_POSTGRES_URL`).
    pub fn port(&self) -> Option<u16> {
        self.server.as_ref().map(|server| server.port)
    }

    /// Starts a cluster, or uses `STRATA_TEST_POSTGRES_URL` if set.
    pub fn start() -> Result<TestCluster, ClusterError> {
        if let Ok(url) = std::env::var("STRATA_TEST_POSTGRES_URL") {
            return Ok(TestCluster {
                url,
                child: None,
                server: None,
                _dir: None,
            });
        }
        TestCluster::start_local(None)
    }

    /// Starts a cluster with `ssl = on` and `tls`'s certificate, always a local one
    /// (`STRATA_TEST_POSTGRES_URL` is not used: its server has certificates of its own).
    /// Its [`url`](TestCluster::url) has no `sslmode`: add the one to test.
    pub fn start_tls(tls: ServerTls) -> Result<TestCluster, ClusterError> {
        TestCluster::start_local(Some(&tls))
    }

    fn start_local(tls: Option<&ServerTls>) -> Result<TestCluster, ClusterError> {
        let bin = find_binaries()?;
        remove_stale_clusters();
        let dir = tempfile::Builder::new()
            .prefix("strata-pg-")
            .tempdir()
            .map_err(|e| failed("create a temporary directory", e))?;
        let data = dir.path().join("data");
        let socket = dir.path().join("socket");
        std::fs::create_dir_all(&socket).map_err(|e| failed("create the socket directory", e))?;
        let user = ServerUser::pick();
        user.own(dir.path())?;
        let output = user
            .command(bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "strata",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .map_err(|e| failed("run initdb", e))?;
        if !output.status.success() {
            return Err(ClusterError::Failed {
                step: "initdb",
                message: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        if let Some(tls) = tls {
            configure_tls(&data, tls, &user)?;
        }
        let port = free_port()?;
        let server = Server {
            bin,
            data,
            socket,
            port,
            ids: user.ids,
        };
        let child = server.spawn()?;
        let url = format!("postgres://strata@127.0.0.1:{port}/postgres");
        let cluster = TestCluster {
            url,
            child: Some(child),
            server: Some(server),
            _dir: Some(dir),
        };
        cluster.wait_ready(port)?;
        Ok(cluster)
    }

    /// Stops the server the way a crash does (`pg_ctl stop -m immediate`: no checkpoint,
    /// WAL replay at the next start). Clients see their connections break.
    pub fn crash(&mut self) -> Result<(), ClusterError> {
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| failed("crash", "an external server cannot be stopped"))?;
        let status = ServerUser { ids: server.ids }
            .command(server.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&server.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| failed("run pg_ctl stop", e))?;
        if !status.success() {
            return Err(failed("pg_ctl stop", status));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts the server again after [`TestCluster::crash`], on the same port and data.
    pub fn start_again(&mut self) -> Result<(), ClusterError> {
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| failed("start again", "an external server cannot be started"))?;
        self.child = Some(server.spawn()?);
        self.wait_ready(server.port)
    }

    fn wait_ready(&self, port: u16) -> Result<(), ClusterError> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Accepting TCP is not yet accepting queries; the client retries below.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ClusterError::Failed {
            step: "wait for postgres",
            message: "not ready after 30 s".into(),
        })
    }
}

impl Server {
    fn spawn(&self) -> Result<Child, ClusterError> {
        let mut command = ServerUser { ids: self.ids }.command(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.socket.display()))
            .args(["-c", "max_connections=200", "-c", "shared_buffers=128MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        stop_with_parent(&mut command);
        command.spawn().map_err(|e| failed("start postgres", e))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes the certificate and key into the data directory, turns `ssl` on and lets TCP
/// clients in over TLS (`hostssl`), and also without it unless `tls.tls_only`.
fn configure_tls(data: &Path, tls: &ServerTls, user: &ServerUser) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = |name: &str, contents: &str, mode: u32| -> Result<(), ClusterError> {
        let path = data.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| failed("write the server's certificate", e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| failed("write the server's certificate", e))?;
        user.own_file(&path)
    };
    write("server.crt", &tls.cert_pem, 0o644)?;
    write("server.key", &tls.key_pem, 0o600)?;
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .map_err(|e| failed("turn ssl on in postgresql.conf", e))?;
    conf.write_all(b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        .map_err(|e| failed("turn ssl on in postgresql.conf", e))?;
    let mut hba = String::from("local all all trust\n");
    for address in ["127.0.0.1/32", "::1/128"] {
        hba.push_str(&format!("hostssl all all {address} trust\n"));
        if !tls.tls_only {
            hba.push_str(&format!("host all all {address} trust\n"));
        }
    }
    // Rewritten in place, so the file keeps its owner.
    std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| failed("write pg_hba.conf", e))
}

/// Removes the directories of earlier clusters whose server has stopped (it removes its
/// `postmaster.pid` when it does): a shared cluster lives until its process exits, so
/// nothing else would.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("strata-pg-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        if ours && old && !path.join("data/postmaster.pid").exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn failed(step: &'static str, error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Failed {
        step,
        message: error.to_string(),
    }
}

fn find_binaries() -> Result<PathBuf, ClusterError> {
    let candidates = [
        "/usr/lib/postgresql/15/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/local/bin",
        "/usr/bin",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .ok_or_else(|| ClusterError::NotInstalled(format!("looked in {}", candidates.join(", "))))
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| failed("find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| failed("find a free port", e))?
        .port();
    Ok(port)
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user (or
/// `nobody`).
struct ServerUser {
    ids: Option<(u32, u32)>,
}

impl ServerUser {
    fn pick() -> ServerUser {
        // The owner of /proc/self is the process's effective user.
        let root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        if !root {
            return ServerUser { ids: None };
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let ids = ["postgres", "nobody"].iter().find_map(|name| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.first() == Some(name) && fields.len() > 3)
                    .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                    .flatten()
            })
        });
        ServerUser { ids }
    }

    fn own(&self, path: &Path) -> Result<(), ClusterError> {
        let Some((uid, gid)) = self.ids else {
            return Ok(());
        };
        for entry in [path.to_path_buf(), path.join("socket")] {
            std::os::unix::fs::chown(&entry, Some(uid), Some(gid))
                .map_err(|e| failed("chown the cluster directory", e))?;
        }
        Ok(())
    }

    /// Gives a file written by this process to the server's user (when running as root).
    fn own_file(&self, path: &Path) -> Result<(), ClusterError> {
        let Some((uid, gid)) = self.ids else {
            return Ok(());
        };
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| failed("chown a file of the cluster", e))
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        command
    }
}

/// Makes the server receive SIGTERM when the process that started it dies, so a test
/// binary never leaves a server behind.
#[allow(unsafe_code)]
fn stop_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // `prctl`, which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
