//! TLS and the transport modes, through real clients: a tonic gRPC client and hyper
//! HTTP/1.1 and HTTP/2 clients over rustls. Certificates are made here with rcgen.
//!
//! What is checked: clients trusting the server's CA connect (gRPC append and read,
//! HTTP both versions); a client trusting another CA cannot; optional client
//! certificates (none, from the CA, from another CA); a renewed certificate is served
//! without a restart and a bad one keeps the old; a non-loopback bind needs TLS or the
//! insecure mode; bad certificate files fail `bind` with a typed error.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper_util::rt::TokioExecutor;
use strata::{EventData, ExpectedRevision};
use strata_server::grpc::requests;
use strata_server::proto::event_store::client::streams::{append_resp, read_req, ReadReq};
use strata_server::tls::{ReloadOutcome, TlsError, TlsReloader};
use strata_server::{ServerError, ServerOptions, TlsOptions, Transport};

/// Appends one event over gRPC and reads it back.
async fn append_and_read(client: &mut Client, stream: &str) {
    let event = EventData::json("Checked", &serde_json::json!({"tls": true})).unwrap();
    let appended = client
        .append(tokio_stream::iter(requests::append(
            stream,
            ExpectedRevision::NoStream,
            &[event],
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(appended.result, Some(append_resp::Result::Success(_))),
        "{appended:?}"
    );
    let mut read = requests::subscribe_stream(stream, strata::SubscribeFrom::Start);
    // A bounded read, not a subscription: count 10, forwards.
    if let Some(options) = read.options.as_mut() {
        options.count_option = Some(read_req::options::CountOption::Count(10));
    }
    let mut responses = client.read(ReadReq { ..read }).await.unwrap().into_inner();
    let mut events = 0;
    while let Some(message) = responses.message().await.unwrap() {
        if matches!(
            message.content,
            Some(strata_server::proto::event_store::client::streams::read_resp::Content::Event(_))
        ) {
            events += 1;
        }
    }
    assert_eq!(events, 1);
}

// --- tests ------------------------------------------------------------------------

#[tokio::test]
async fn clients_trusting_the_ca_connect_over_grpc_and_http() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let server = start(loopback_options(Transport::Tls(files.options()))).await;

    let mut client = grpc_client(
        server.grpc,
        client_config(&ca.pem, &[b"h2"], None),
        Credentials::admin(),
    )
    .await
    .unwrap();
    append_and_read(&mut client, "tls-1").await;

    // HTTP: ALPN picks HTTP/2 when offered, HTTP/1.1 otherwise. Without TLS's
    // guarantee the Host would be checked; over TLS any name is answered.
    for (alpn, expected) in [
        (&[&b"h2"[..], b"http/1.1"][..], b"h2".to_vec()),
        (&[&b"http/1.1"[..]][..], b"http/1.1".to_vec()),
    ] {
        let config = client_config(&ca.pem, alpn, None);
        let (status, agreed, body) = https_get(server.http, config, "/health", "strata.example")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert_eq!(agreed, Some(expected));
    }
    let (status, _, body) = https_get(
        server.http,
        client_config(&ca.pem, &[b"h2"], None),
        "/streams/tls-1",
        "localhost",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&body).contains("Checked"),
        "{body:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_cannot_connect() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let files = Files::new(&ca);
    let server = start(loopback_options(Transport::Tls(files.options()))).await;
    for addr in [server.grpc, server.http] {
        let error = tls_connect(addr, client_config(&other.pem, &[b"h2"], None))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("UnknownIssuer") || error.to_string().contains("issuer"),
            "{error}"
        );
    }
    assert!(grpc_client(
        server.grpc,
        client_config(&other.pem, &[b"h2"], None),
        Credentials::admin()
    )
    .await
    .is_err());
    // A client in the clear gets no HTTP answer from a TLS port.
    let plain = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let answer = plain
        .get(format!("http://{}/health", server.http).parse().unwrap())
        .await;
    assert!(answer.is_err(), "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_are_optional_but_must_chain_to_the_ca() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let files = Files::new(&ca);
    let server = start(loopback_options(Transport::Tls(files.options()))).await;
    let get = |identity| {
        let config = client_config(&ca.pem, &[b"http/1.1"], identity);
        https_get(server.http, config, "/health", "localhost")
    };
    assert_eq!(get(None).await.unwrap().0, StatusCode::OK);
    assert_eq!(get(Some(ca.client())).await.unwrap().0, StatusCode::OK);
    // TLS 1.3: the client finishes its side first; the server's refusal of the
    // certificate arrives as an alert on the first exchange.
    let refused = get(Some(other.client())).await;
    assert!(refused.is_err(), "{refused:?}");

    let grpc_with_own = grpc_client(
        server.grpc,
        client_config(&ca.pem, &[b"h2"], Some(ca.client())),
        Credentials::admin(),
    );
    append_and_read(&mut grpc_with_own.await.unwrap(), "client-cert-1").await;
    server.stop().await;
}

#[tokio::test]
async fn renewed_certificates_are_served_without_a_restart() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let server = start(loopback_options(Transport::Tls(files.options()))).await;
    let first = std::fs::read_to_string(files.path("node.pem")).unwrap();
    assert_eq!(served_certificate(server.grpc, &ca.pem).await, der(&first));

    let (cert, key) = ca.node();
    replace(&files.path("node.key"), &key);
    replace(&files.path("node.pem"), &cert);
    // The timer (every 20 ms) picks the new files up: poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in [server.grpc, server.http] {
        loop {
            if served_certificate(addr, &ca.pem).await == der(&cert) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new certificate was not served"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // A certificate whose key does not match, then a file that is not PEM: refused,
    // and the server goes on with the certificate that works.
    let reloader = server.tls.clone().unwrap();
    let (_, unrelated_key) = ca.node();
    replace(&files.path("node.key"), &unrelated_key);
    assert!(matches!(
        reloader.check(),
        ReloadOutcome::Failed(TlsError::Config { .. })
    ));
    replace(&files.path("node.key"), &key);
    replace(&files.path("node.pem"), "not a certificate");
    assert!(matches!(
        reloader.check(),
        ReloadOutcome::Failed(TlsError::NoCertificate { .. })
    ));
    assert_eq!(served_certificate(server.grpc, &ca.pem).await, der(&cert));
    let mut client = grpc_client(
        server.grpc,
        client_config(&ca.pem, &[b"h2"], None),
        Credentials::admin(),
    )
    .await
    .unwrap();
    append_and_read(&mut client, "after-bad-reload").await;
    server.stop().await;
}

#[tokio::test]
async fn without_tls_or_insecure_only_loopback_addresses_are_served() {
    for (grpc, http, api) in [
        (Some("0.0.0.0:0"), None, "gRPC"),
        (None, Some("0.0.0.0:0"), "HTTP"),
        (Some("127.0.0.1:0"), Some("[::]:0"), "HTTP"),
    ] {
        let options = ServerOptions {
            grpc: grpc.map(|a| a.parse().unwrap()),
            http: http.map(|a| a.parse().unwrap()),
            ..ServerOptions::default()
        };
        assert_eq!(options.transport, Transport::LoopbackOnly);
        let (bound, _dir) = bind(options).await;
        let error = bound.unwrap_err();
        assert!(
            matches!(&error, ServerError::NotLoopback(refused) if refused.api == api),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("--tls-cert/--tls-key"), "{message}");
        assert!(message.contains("--insecure"), "{message}");
    }

    // The insecure mode serves any address; TLS too.
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    for transport in [Transport::Insecure, Transport::Tls(files.options())] {
        let options = ServerOptions {
            grpc: Some("0.0.0.0:0".parse().unwrap()),
            http: None,
            transport,
            ..ServerOptions::default()
        };
        let (bound, _dir) = bind(options).await;
        bound.unwrap();
    }
    // Loopback alone needs neither.
    let server = start(loopback_options(Transport::LoopbackOnly)).await;
    server.stop().await;
}

#[tokio::test]
async fn certificate_files_that_do_not_load_fail_bind_with_a_typed_error() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let missing = TlsOptions::new(files.path("absent.pem"), files.path("node.key"));
    let (_, other_key) = ca.node();
    std::fs::write(files.path("other.key"), other_key).unwrap();
    let mismatched = TlsOptions::new(files.path("node.pem"), files.path("other.key"));
    std::fs::write(files.path("empty.key"), "").unwrap();
    let no_key = TlsOptions::new(files.path("node.pem"), files.path("empty.key"));
    for (options, check) in [
        (
            missing,
            (|e: &TlsError| matches!(e, TlsError::Read { .. })) as fn(&TlsError) -> bool,
        ),
        (mismatched, |e| matches!(e, TlsError::Config { .. })),
        (no_key, |e| matches!(e, TlsError::NoPrivateKey { .. })),
    ] {
        let (bound, _dir) = bind(loopback_options(Transport::Tls(options))).await;
        match bound {
            Err(ServerError::Tls(error)) => assert!(check(&error), "{error:?}"),
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }
}

/// The verified client chain reaches HTTP handlers (for the authentication to come):
/// the HTTP connection server, run here with a router that reports what it sees.
#[tokio::test]
async fn http_handlers_see_the_clients_verified_certificate_chain() {
    use axum::routing::get;
    use axum::Extension;
    use strata_server::http::serve::{serve, HttpConnectionSettings};
    use strata_server::net::accept::RefusalAnswer;
    use strata_server::net::watch::WatchPolicy;
    use strata_server::net::{Acceptor, ConnectionLimits};
    use strata_server::state::ServerState;
    use strata_server::tls::TlsSession;

    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let reloader = Arc::new(TlsReloader::load(files.options()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_kill_all, killed) = tokio::sync::watch::channel(false);
    let policy = WatchPolicy {
        first_byte_timeout: Duration::from_secs(10),
        write_stall_timeout: Duration::from_secs(10),
    };
    let acceptor = Acceptor::new(
        listener,
        ConnectionLimits::new(16, 16),
        policy,
        RefusalAnswer::Close,
        killed,
    );
    let router = axum::Router::new().route(
        "/whoami",
        get(|session: Option<Extension<TlsSession>>| async move {
            match session {
                None => "plain".to_owned(),
                Some(Extension(session)) => format!(
                    "certificates={}",
                    session.peer_certificates.map_or(0, |chain| chain.len())
                ),
            }
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let (shutdown, signal) = tokio::sync::watch::channel(false);
    let state = ServerState::new(
        strata::Store::open(dir.path()).unwrap(),
        ServerOptions::default(),
        signal,
    );
    let settings = HttpConnectionSettings {
        header_read_timeout: Duration::from_secs(10),
    };
    let serving = tokio::spawn(serve(acceptor, router, settings, state, Some(reloader)));

    let (client_cert, client_key) = ca.client();
    for (identity, expected) in [
        (None, "certificates=0"),
        (Some((client_cert, client_key)), "certificates=1"),
    ] {
        for alpn in [&b"h2"[..], b"http/1.1"] {
            let config = client_config(&ca.pem, &[alpn], identity.clone());
            let (status, _, body) = https_get(addr, config, "/whoami", "localhost")
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, expected.as_bytes());
        }
    }
    shutdown.send(true).unwrap();
    serving.await.unwrap();
}

/// gRPC handlers see each TLS connection's own address (through `TlsConnectInfo`):
/// the per-connection subscription limit counts each connection apart, as in the clear.
#[tokio::test]
async fn grpc_handlers_see_each_tls_connection_apart() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let server = start(ServerOptions {
        max_subscriptions_per_connection: 1,
        ..loopback_options(Transport::Tls(files.options()))
    })
    .await;
    let subscribe = || requests::subscribe_all(strata::SubscribeFrom::Start);
    let mut first = grpc_client(
        server.grpc,
        client_config(&ca.pem, &[b"h2"], None),
        Credentials::admin(),
    )
    .await
    .unwrap();
    let mut second = grpc_client(
        server.grpc,
        client_config(&ca.pem, &[b"h2"], None),
        Credentials::admin(),
    )
    .await
    .unwrap();
    let _one = first.read(subscribe()).await.unwrap();
    let _two = second.read(subscribe()).await.unwrap();
    let status = first.read(subscribe()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    drop((_one, _two));
    server.stop().await;
}
