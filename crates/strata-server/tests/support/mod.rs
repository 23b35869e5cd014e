//! What the TLS and authentication tests share: a CA and node certificates made with
//! rcgen, a server started over TLS, and rustls clients (gRPC through tonic, HTTP/1.1
//! and HTTP/2 through hyper) that send credentials.

#![allow(dead_code, clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use strata_server::proto::event_store::client::streams::streams_client::StreamsClient;
use strata_server::tls::TlsReloader;
use strata_server::{Server, ServerError, ServerOptions, TlsOptions, Transport};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

// --- certificates -----------------------------------------------------------------

/// A certificate authority made for one test.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1 and localhost, and its key, as PEM.
    pub fn node(&self) -> (String, String) {
        self.leaf("node", ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate and its key, as PEM.
    pub fn client(&self) -> (String, String) {
        self.leaf("client", ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose common name is `login`, and its key, as PEM.
    pub fn user(&self, login: &str) -> (String, String) {
        self.leaf(login, ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Replaces `path` atomically (write, then rename), as a certificate renewal should.
pub fn replace(path: &Path, contents: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The node's files in a temporary directory.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new(ca: &Ca) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.node();
        std::fs::write(dir.path().join("node.pem"), cert).unwrap();
        std::fs::write(dir.path().join("node.key"), key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        Files { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn options(&self) -> TlsOptions {
        TlsOptions {
            ca: Some(self.path("ca.pem")),
            reload_interval: Duration::from_millis(20),
            ..TlsOptions::new(self.path("node.pem"), self.path("node.key"))
        }
    }
}

// --- server -----------------------------------------------------------------------

pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub tls: Option<Arc<TlsReloader>>,
    /// The running server's state (its users, tokens, metrics).
    pub state: strata_server::state::ServerState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Stops the server gracefully, which must succeed (it closes the store).
    pub async fn stop(self) {
        let Running {
            state, stop, task, ..
        } = self;
        // The server closes the store only once nothing else holds it.
        drop(state);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}

pub fn loopback_options(transport: Transport) -> ServerOptions {
    ServerOptions {
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        http: Some("127.0.0.1:0".parse().unwrap()),
        transport,
        ..ServerOptions::default()
    }
}

pub async fn bind(options: ServerOptions) -> (Result<Server, ServerError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
    (Server::bind(store, options).await, dir)
}

pub async fn start(options: ServerOptions) -> Running {
    let (server, dir) = bind(options).await;
    let server = server.unwrap();
    let (grpc, http) = (server.grpc_addr().unwrap(), server.http_addr().unwrap());
    let tls = server.tls().cloned();
    let state = server.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Running {
        grpc,
        http,
        tls,
        state,
        stop,
        task,
        _dir: dir,
    }
}

// --- clients ----------------------------------------------------------------------

#[allow(deprecated)] // ring: the provider the server uses too (see `tls::config`).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts `ca_pem`, offers `alpn`, and presents `identity` if given.
pub fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    identity: Option<(String, String)>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca_pem)).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![der(&cert)],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// The leaf certificate the server presents now.
pub async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> CertificateDer<'static> {
    let stream = tls_connect(addr, client_config(ca_pem, &[b"h2"], None))
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

pub async fn grpc_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_uri: tonic::codegen::http::Uri| {
        let config = Arc::clone(&config);
        async move { Ok::<_, io::Error>(TokioIo::new(tls_connect(addr, config).await?)) }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
}

/// A Streams client over TLS that sends `credentials` with every call.
pub async fn grpc_client(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    credentials: Credentials,
) -> Result<Client, tonic::transport::Error> {
    Ok(StreamsClient::with_interceptor(
        grpc_channel(addr, config).await?,
        credentials,
    ))
}

/// The Streams client the tests use.
pub type Client = StreamsClient<InterceptedService<Channel, Credentials>>;

/// What a client sends in `authorization`, if anything.
#[derive(Clone, Debug, Default)]
pub struct Credentials(pub Option<String>);

impl Credentials {
    /// HTTP Basic `login:password`, as the KurrentDB clients send it.
    pub fn basic(login: &str, password: &str) -> Credentials {
        Credentials(Some(basic(login, password)))
    }

    /// The default administrator.
    pub fn admin() -> Credentials {
        Credentials::basic("admin", "changeit")
    }

    /// A bearer token.
    pub fn bearer(token: &str) -> Credentials {
        Credentials(Some(format!("Bearer {token}")))
    }

    /// No credentials.
    pub fn none() -> Credentials {
        Credentials(None)
    }

    /// The header as `(name, value)` pairs for [`https_request`].
    pub fn header(&self) -> Vec<(&'static str, String)> {
        self.0
            .iter()
            .map(|value| ("authorization", value.clone()))
            .collect()
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        Ok(request)
    }
}

/// The `authorization` value of HTTP Basic credentials.
pub fn basic(login: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
    )
}

/// An HTTPS response: status, the protocol ALPN agreed, headers and body.
pub struct HttpsResponse {
    pub status: StatusCode,
    pub alpn: Option<Vec<u8>>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpsResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// One request over TLS with the protocol ALPN picks.
pub async fn https_request(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Result<HttpsResponse, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tls_connect(addr, config).await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(stream);
    let h2 = alpn.as_deref() == Some(b"h2");
    let host = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map_or("localhost", |(_, value)| value.as_str());
    let mut request = Request::builder().method(method);
    for (name, value) in headers {
        // HTTP/2 names the host in the URI (`:authority`).
        if !(h2 && name.eq_ignore_ascii_case("host")) {
            request = request.header(*name, value);
        }
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(body.to_owned()));
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        sender
            .send_request(request.uri(format!("https://{host}{path}")).body(body)?)
            .await?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        let request = if headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            request
        } else {
            request.header("host", host)
        };
        sender.send_request(request.uri(path).body(body)?).await?
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(HttpsResponse {
        status,
        alpn,
        headers,
        body,
    })
}

/// `GET path` over TLS as the default administrator, with the protocol ALPN picks;
/// returns the status, the protocol agreed and the body.
pub async fn https_get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    host: &str,
) -> Result<(StatusCode, Option<Vec<u8>>, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let headers = [
        ("host", host.to_owned()),
        ("authorization", basic("admin", "changeit")),
    ];
    let response = https_request(addr, config, Method::GET, path, &headers, "").await?;
    Ok((response.status, response.alpn, response.body))
}
