//! HTTP hygiene, through a real HTTP/1.1 client that sets its own headers: writes must
//! declare JSON (415 otherwise, so a cross-site form post cannot append), a server in
//! the clear answers only to loopback, `localhost` and allowed `Host` names (DNS
//! rebinding), and CORS is off unless origins are listed.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use strata_server::{Server, ServerError, ServerOptions, Transport};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

struct Running {
    http: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }

    fn host(&self) -> String {
        self.http.to_string()
    }

    /// One request on a fresh connection, with exactly the headers given (no `Host`
    /// unless one is given).
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let tcp = TcpStream::connect(self.http).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"))
        };
        (status, headers, json)
    }
}

async fn start(configure: impl FnOnce(&mut ServerOptions)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = strata::Store::open(dir.path()).unwrap();
    let mut options = ServerOptions {
        grpc: None,
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerOptions::default()
    };
    configure(&mut options);
    let server = Server::bind(store, options).await.unwrap();
    let http = server.http_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Running {
        http,
        stop,
        task,
        _dir: dir,
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

const EVENT: &str = r#"{"type": "Placed", "data": {"total": 10}}"#;

#[tokio::test]
async fn writes_must_declare_json() {
    let server = start(|_| {}).await;
    let host = server.host();
    let refused = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ];
    for content_type in refused {
        let mut headers = vec![("host", host.as_str())];
        headers.extend(content_type.map(|t| ("content-type", t)));
        for (method, path, body) in [
            (Method::POST, "/streams/form-1", EVENT),
            (Method::POST, "/streams", r#"{"form-1": [{"type": "T"}]}"#),
            (
                Method::PUT,
                "/streams/form-1/metadata",
                r#"{"$maxCount": 1}"#,
            ),
            (Method::DELETE, "/streams/form-1", "{}"),
        ] {
            let (status, _, body) = server.send(method.clone(), path, &headers, body).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{method} {path} with {content_type:?}: {body}"
            );
            assert_eq!(code(&body), "unsupported_media_type", "{body}");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"));
        }
    }
    // Nothing was written.
    let (status, _, body) = server
        .send(Method::GET, "/streams/form-1", &[("host", &host)], "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // JSON, with parameters and in any case, is accepted; so are reads and a DELETE
    // without a body (its options are in the query).
    let json = [
        ("host", host.as_str()),
        ("content-type", "Application/JSON; charset=utf-8"),
    ];
    let (status, _, body) = server
        .send(Method::POST, "/streams/form-1", &json, EVENT)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = server
        .send(
            Method::PUT,
            "/streams/form-1/metadata",
            &json,
            r#"{"$maxCount": 5}"#,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, _, body) = server
        .send(Method::DELETE, "/streams/form-1", &[("host", &host)], "")
        .await;
    assert!(status.is_success(), "{status} {body}");
    server.stop().await;
}

#[tokio::test]
async fn without_tls_only_loopback_localhost_and_allowed_hosts_are_answered() {
    for transport in [Transport::LoopbackOnly, Transport::Insecure] {
        let server = start(|options| {
            options.transport = transport;
            options.allowed_hosts = vec!["Strata.Internal".to_owned()];
        })
        .await;
        let port = server.http.port();
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            "localhost".to_owned(),
            format!("[::1]:{port}"),
            format!("strata.internal:{port}"),
        ] {
            let (status, _, body) = server
                .send(Method::GET, "/health", &[("host", &host)], "")
                .await;
            assert_eq!(status, StatusCode::OK, "Host {host}: {body}");
        }
        // No Host at all (HTTP/1.0 style): browsers always send one, so it passes.
        let (status, _, _) = server.send(Method::GET, "/health", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        for host in [
            format!("attacker.example:{port}"),
            "localhost.attacker.example".to_owned(),
            format!("10.1.2.3:{port}"),
        ] {
            for (method, path) in [(Method::GET, "/health"), (Method::POST, "/streams/x")] {
                let headers = [
                    ("host", host.as_str()),
                    ("content-type", "application/json"),
                ];
                let (status, _, body) = server.send(method, path, &headers, EVENT).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "Host {host}: {body}");
                assert_eq!(code(&body), "host_not_allowed", "{body}");
                assert!(body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("--allowed-host"));
            }
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let server = start(|_| {}).await;
    let host = server.host();
    let (status, headers, _) = server
        .send(
            Method::GET,
            "/health",
            &[("host", &host), ("origin", "https://app.example")],
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_no_cors(&headers);
    let (status, headers, body) = server
        .send(
            Method::OPTIONS,
            "/streams/x",
            &[
                ("host", &host),
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            "",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "cors_origin_not_allowed");
    assert_no_cors(&headers);
    server.stop().await;
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let server = start(|options| {
        options.cors_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let host = server.host();
    let preflight = |origin: &'static str| {
        let host = host.clone();
        let server = &server;
        async move {
            server
                .send(
                    Method::OPTIONS,
                    "/streams/x",
                    &[
                        ("host", &host),
                        ("origin", origin),
                        ("access-control-request-method", "POST"),
                        ("access-control-request-headers", "content-type"),
                    ],
                    "",
                )
                .await
        }
    };
    let (status, headers, _) = preflight("https://app.example").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    assert_eq!(headers["vary"], "origin");

    let (status, headers, body) = preflight("https://attacker.example").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_no_cors(&headers);

    // Real requests: the listed origin may read the answer, another may not.
    let json = |origin| {
        [
            ("host", host.clone()),
            ("origin", origin),
            ("content-type", "application/json".to_owned()),
        ]
    };
    let listed = json("https://app.example".to_owned());
    let listed: Vec<(&str, &str)> = listed.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, headers, body) = server
        .send(Method::POST, "/streams/cors-1", &listed, EVENT)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let other = json("https://attacker.example".to_owned());
    let other: Vec<(&str, &str)> = other.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, headers, _) = server.send(Method::GET, "/health", &other, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_no_cors(&headers);
    server.stop().await;
}

fn assert_no_cors(headers: &HeaderMap) {
    let cors: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "unexpected CORS headers: {cors:?}");
}
