//! Authentication and authorization through both APIs, over TLS (where they are on):
//! passwords, client certificates and bearer tokens; every ACL key for a user, a group
//! and `$all`; `$all` and `$`-streams for admins only unless `$settings` says
//! otherwise; persistent-subscription management for operators; the answers the
//! KurrentDB clients expect (UNAUTHENTICATED; PERMISSION_DENIED with the
//! `access-denied` trailer) and HTTP's (401 with `WWW-Authenticate`, 403
//! `access_denied`); failures counted and slowed down.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;
use strata::{EventData, ExpectedRevision, SubscribeFrom};
use strata_server::auth::users::NewUser;
use strata_server::grpc::requests;
use strata_server::proto::event_store::client::persistent_subscriptions as ps;
use strata_server::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_client::PersistentSubscriptionsClient;
use strata_server::proto::event_store::client::streams::{append_resp, read_req};
use strata_server::proto::event_store::client::{Empty, StreamIdentifier};
use strata_server::Transport;
use support::*;
use tonic::Code;

/// A TLS server with the users `alice` (group `sales`), `bob`, `carol` (group `sales`)
/// and `dave` (group `$ops`), all with password `pw-<login>`.
async fn server() -> (Running, Ca) {
    let ca = Ca::new("auth CA");
    let files = Files::new(&ca);
    let server = start(loopback_options(Transport::Tls(files.options()))).await;
    // The files may go: the server has loaded them.
    std::mem::forget(files);
    let users = server.state.auth.users();
    for (login, groups) in [
        ("alice", vec!["sales"]),
        ("bob", vec![]),
        ("carol", vec!["sales"]),
        ("dave", vec!["$ops"]),
    ] {
        users
            .create(NewUser {
                login: login.into(),
                full_name: String::new(),
                groups: groups.into_iter().map(str::to_owned).collect(),
                password: format!("pw-{login}"),
            })
            .await
            .unwrap();
    }
    (server, ca)
}

fn user(login: &str) -> Credentials {
    Credentials::basic(login, &format!("pw-{login}"))
}

async fn client(server: &Running, ca: &Ca, credentials: Credentials) -> Client {
    grpc_client(
        server.grpc,
        client_config(&ca.pem, &[b"h2"], None),
        credentials,
    )
    .await
    .unwrap()
}

/// Appends one event over gRPC: the status code (`Ok` on success).
async fn grpc_append(client: &mut Client, stream: &str) -> Code {
    let event = EventData::json("Tested", &json!({})).unwrap();
    let messages = requests::append(stream, ExpectedRevision::Any, &[event]);
    match client.append(tokio_stream::iter(messages)).await {
        Ok(response) => {
            let response = response.into_inner();
            assert!(
                matches!(response.result, Some(append_resp::Result::Success(_))),
                "{response:?}"
            );
            Code::Ok
        }
        Err(status) => status_code(&status),
    }
}

/// Reads a stream (or `$all`) over gRPC: the status code.
async fn grpc_read(client: &mut Client, stream: &str) -> Code {
    let mut request = if stream == "$all" {
        requests::subscribe_all(SubscribeFrom::Start)
    } else {
        requests::subscribe_stream(stream, SubscribeFrom::Start)
    };
    request.options.as_mut().unwrap().count_option =
        Some(read_req::options::CountOption::Count(10));
    match client.read(request).await {
        Ok(response) => {
            let mut responses = response.into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Code::Ok,
                    Err(status) => return status_code(&status),
                }
            }
        }
        Err(status) => status_code(&status),
    }
}

/// The code of a refusal, after checking it carries what the clients look for.
fn status_code(status: &tonic::Status) -> Code {
    if status.code() == Code::PermissionDenied {
        assert_eq!(status.message(), "Access Denied");
        assert_eq!(
            status.metadata().get("exception").unwrap(),
            "access-denied",
            "the trailer the KurrentDB clients turn into their access-denied error"
        );
    }
    status.code()
}

/// One HTTP request with `credentials`.
async fn http(
    server: &Running,
    ca: &Ca,
    credentials: &Credentials,
    method: Method,
    path: &str,
    body: &str,
) -> HttpsResponse {
    let config = client_config(&ca.pem, &[b"http/1.1"], None);
    https_request(
        server.http,
        config,
        method,
        path,
        &credentials.header(),
        body,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn passwords_authenticate_and_failures_look_alike() {
    let (server, ca) = server().await;
    let mut admin = client(&server, &ca, Credentials::admin()).await;
    assert_eq!(grpc_append(&mut admin, "orders-1").await, Code::Ok);
    assert_eq!(grpc_read(&mut admin, "orders-1").await, Code::Ok);
    let mut alice = client(&server, &ca, user("alice")).await;
    assert_eq!(grpc_read(&mut alice, "orders-1").await, Code::Ok);

    // Wrong password, unknown user, malformed credentials: the same answer.
    let mut messages = Vec::new();
    for credentials in [
        Credentials::basic("alice", "wrong"),
        Credentials::basic("nobody", "pw-nobody"),
        Credentials(Some("Basic !!!".into())),
        Credentials(Some("Digest x".into())),
    ] {
        let mut refused = client(&server, &ca, credentials.clone()).await;
        let status = refused
            .read(requests::subscribe_stream("orders-1", SubscribeFrom::Start))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{credentials:?}");
        messages.push(status.message().to_owned());

        let response = http(
            &server,
            &ca,
            &credentials,
            Method::GET,
            "/streams/orders-1",
            "",
        )
        .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers.get("www-authenticate").unwrap(),
            "Basic realm=\"strata\", Bearer realm=\"strata\""
        );
        assert_eq!(response.json()["error"]["code"], "unauthenticated");
        messages.push(response.json()["error"]["message"].to_string());
    }
    messages.sort();
    messages.dedup();
    assert_eq!(
        messages.len(),
        2,
        "one gRPC and one HTTP message: {messages:?}"
    );

    // No credentials: anonymous, which has no stream access.
    let mut anonymous = client(&server, &ca, Credentials::none()).await;
    assert_eq!(
        grpc_read(&mut anonymous, "orders-1").await,
        Code::PermissionDenied
    );
    assert_eq!(
        grpc_append(&mut anonymous, "orders-1").await,
        Code::PermissionDenied
    );
    let response = http(
        &server,
        &ca,
        &Credentials::none(),
        Method::GET,
        "/streams/orders-1",
        "",
    )
    .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    // What needs no login still answers.
    let response = http(
        &server,
        &ca,
        &Credentials::none(),
        Method::GET,
        "/health",
        "",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);

    // A disabled user is refused like a wrong password, at once on this server.
    server
        .state
        .auth
        .users()
        .set_disabled("alice", true)
        .await
        .unwrap();
    server.state.auth.authenticator().forget("alice");
    assert_eq!(
        grpc_read(&mut alice, "orders-1").await,
        Code::Unauthenticated
    );

    let metrics = http(
        &server,
        &ca,
        &Credentials::admin(),
        Method::GET,
        "/metrics",
        "",
    )
    .await;
    let text = String::from_utf8_lossy(&metrics.body);
    for reason in ["wrong_password", "unknown_user", "malformed", "disabled"] {
        assert!(
            text.contains(&format!(
                "strata_auth_failures_total{{api=\"Grpc\",reason=\"{reason}\"}}"
            )),
            "{reason}: {text}"
        );
    }
    assert!(
        text.contains("strata_access_denied_total{api=\"Grpc\",operation=\"read\"}"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn each_acl_key_allows_and_denies_users_groups_and_everyone() {
    let (server, ca) = server().await;
    let admin = Credentials::admin();
    let acl = json!({"$acl": {
        "$r": ["alice", "sales"],
        "$w": "sales",
        "$d": "alice",
        "$mr": "$all",
        "$mw": ["alice"],
    }});
    let put = http(
        &server,
        &ca,
        &admin,
        Method::PUT,
        "/streams/orders-1/metadata",
        &acl.to_string(),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);

    // (user, read, write, metadata read, metadata write)
    let expected = [
        ("alice", true, true, true, true),  // named, and in `sales`
        ("carol", true, true, true, false), // through the group `sales`
        ("bob", false, false, true, false), // only `$all`
    ];
    let allowed = |code: Code| match code {
        Code::Ok | Code::NotFound => true,
        Code::PermissionDenied => false,
        other => panic!("unexpected {other:?}"),
    };
    for (login, read, write, metadata_read, metadata_write) in expected {
        let mut grpc = client(&server, &ca, user(login)).await;
        assert_eq!(
            allowed(grpc_append(&mut grpc, "orders-1").await),
            write,
            "{login} $w"
        );
        assert_eq!(
            allowed(grpc_read(&mut grpc, "orders-1").await),
            read,
            "{login} $r"
        );
        // Reading `$$orders-1` is reading the metadata.
        assert_eq!(
            allowed(grpc_read(&mut grpc, "$$orders-1").await),
            metadata_read,
            "{login} $mr"
        );

        let credentials = user(login);
        let event = json!([{"type": "Tested", "data": {}}]).to_string();
        let cases = [
            (Method::POST, "/streams/orders-1", event.as_str(), write),
            (Method::GET, "/streams/orders-1", "", read),
            (Method::GET, "/streams/orders-1/metadata", "", metadata_read),
            (
                Method::PUT,
                "/streams/orders-1/metadata",
                &acl.to_string(),
                metadata_write,
            ),
        ];
        for (method, path, body, allow) in cases {
            let response = http(&server, &ca, &credentials, method.clone(), path, body).await;
            if allow {
                assert!(
                    response.status.is_success(),
                    "{login} {method} {path}: {:?}",
                    response.body
                );
            } else {
                assert_eq!(
                    response.status,
                    StatusCode::FORBIDDEN,
                    "{login} {method} {path}"
                );
                assert_eq!(response.json()["error"]["code"], "access_denied");
                assert_eq!(response.json()["error"]["stream"], "orders-1");
            }
        }
    }
    // `$d`: carol (in `sales`, not named) may not delete; alice may.
    let carol = http(
        &server,
        &ca,
        &user("carol"),
        Method::DELETE,
        "/streams/orders-1",
        "",
    )
    .await;
    assert_eq!(carol.status, StatusCode::FORBIDDEN);
    let mut grpc = client(&server, &ca, user("carol")).await;
    let delete = grpc.delete(delete_request("orders-1")).await.unwrap_err();
    assert_eq!(status_code(&delete), Code::PermissionDenied);
    let alice = http(
        &server,
        &ca,
        &user("alice"),
        Method::DELETE,
        "/streams/orders-1",
        "",
    )
    .await;
    assert_eq!(alice.status, StatusCode::OK, "{:?}", alice.body);

    // A stream without an ACL is open to every authenticated user (the default).
    let mut bob = client(&server, &ca, user("bob")).await;
    assert_eq!(grpc_append(&mut bob, "notes-1").await, Code::Ok);
    assert_eq!(grpc_read(&mut bob, "notes-1").await, Code::Ok);
    server.stop().await;
}

fn delete_request(stream: &str) -> strata_server::proto::event_store::client::streams::DeleteReq {
    use strata_server::proto::event_store::client::streams::delete_req;
    strata_server::proto::event_store::client::streams::DeleteReq {
        options: Some(delete_req::Options {
            stream_identifier: Some(StreamIdentifier {
                stream_name: stream.as_bytes().to_vec(),
            }),
            expected_stream_revision: Some(delete_req::options::ExpectedStreamRevision::Any(
                Empty {},
            )),
        }),
    }
}

#[tokio::test]
async fn all_and_system_streams_are_for_admins_unless_settings_grant_them() {
    let (server, ca) = server().await;
    let mut alice = client(&server, &ca, user("alice")).await;
    let mut admin = client(&server, &ca, Credentials::admin()).await;
    assert_eq!(grpc_append(&mut alice, "orders-1").await, Code::Ok);
    assert_eq!(grpc_read(&mut alice, "$all").await, Code::PermissionDenied);
    assert_eq!(grpc_read(&mut admin, "$all").await, Code::Ok);
    let all = http(
        &server,
        &ca,
        &user("alice"),
        Method::GET,
        "/streams/$all",
        "",
    )
    .await;
    assert_eq!(all.status, StatusCode::FORBIDDEN);
    let list = http(&server, &ca, &user("alice"), Method::GET, "/streams", "").await;
    assert_eq!(
        list.status,
        StatusCode::FORBIDDEN,
        "listing names is reading $all"
    );
    let live = http(
        &server,
        &ca,
        &user("alice"),
        Method::GET,
        "/streams/$all/live",
        "",
    )
    .await;
    assert_eq!(live.status, StatusCode::FORBIDDEN);

    // `$`-streams: user records, settings, subscription state.
    let settings = json!([{"type": "$settings", "data": {"$systemStreamAcl": {"$r": "$all"}}}]);
    for (method, path, body) in [
        (Method::POST, "/streams/$settings", settings.to_string()),
        (
            Method::PUT,
            "/streams/$user-alice/metadata",
            json!({"strataUser": {}}).to_string(),
        ),
        (Method::GET, "/streams/$user-admin/metadata", String::new()),
        (
            Method::PUT,
            "/streams/$persistentSubscriptionConfig/metadata",
            json!({}).to_string(),
        ),
    ] {
        let response = http(&server, &ca, &user("alice"), method.clone(), path, &body).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // Nobody writes `$all`, not even an administrator.
    assert_eq!(
        grpc_append(&mut admin, "$all").await,
        Code::PermissionDenied
    );

    // An administrator opens `$`-streams (and `$all`) to readers through `$settings`;
    // the change applies to the next request.
    let response = http(
        &server,
        &ca,
        &Credentials::admin(),
        Method::POST,
        "/streams/$settings",
        &settings.to_string(),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    assert_eq!(grpc_read(&mut alice, "$all").await, Code::Ok);
    // Only reads were granted.
    let response = http(
        &server,
        &ca,
        &user("alice"),
        Method::POST,
        "/streams/$settings",
        &settings.to_string(),
    )
    .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    // Settings no server could read are refused when written.
    let bad = json!([{"type": "$settings", "data": {"$userStreamAcl": {"$r": 1}}}]);
    let response = http(
        &server,
        &ca,
        &Credentials::admin(),
        Method::POST,
        "/streams/$settings",
        &bad.to_string(),
    )
    .await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        response.body
    );

    // `$userStreamAcl` closes user streams without their own ACL to all but a group.
    let closed =
        json!([{"type": "$settings", "data": {"$userStreamAcl": {"$r": "sales", "$w": "sales"}}}]);
    let response = http(
        &server,
        &ca,
        &Credentials::admin(),
        Method::POST,
        "/streams/$settings",
        &closed.to_string(),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let mut bob = client(&server, &ca, user("bob")).await;
    assert_eq!(
        grpc_read(&mut bob, "orders-1").await,
        Code::PermissionDenied
    );
    assert_eq!(grpc_read(&mut alice, "orders-1").await, Code::Ok);
    server.stop().await;
}

#[tokio::test]
async fn bearer_tokens_work_until_revoked_or_expired() {
    let (server, ca) = server().await;
    let tokens = server.state.auth.tokens();
    let created = tokens.create("alice", "ci", None, "admin").await.unwrap();
    let token = Credentials::bearer(&created.token);
    let mut grpc = client(&server, &ca, token.clone()).await;
    assert_eq!(grpc_append(&mut grpc, "orders-1").await, Code::Ok);
    let response = http(&server, &ca, &token, Method::GET, "/streams/orders-1", "").await;
    assert_eq!(response.status, StatusCode::OK);
    // The token stands for alice: no `$all`.
    assert_eq!(grpc_read(&mut grpc, "$all").await, Code::PermissionDenied);

    // A wrong secret for a real id, and garbage.
    let (id_part, _) = created.token.rsplit_once('_').unwrap();
    for bad in [format!("{id_part}_wrong"), "strata_nonsense".to_owned()] {
        let response = http(
            &server,
            &ca,
            &Credentials::bearer(&bad),
            Method::GET,
            "/streams/orders-1",
            "",
        )
        .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{bad}");
    }

    tokens.revoke(&created.info.id).await.unwrap();
    server.state.auth.authenticator().forget_all();
    let response = http(&server, &ca, &token, Method::GET, "/streams/orders-1", "").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "revoked");
    assert_eq!(
        grpc_read(&mut grpc, "orders-1").await,
        Code::Unauthenticated
    );

    let short = tokens
        .create("alice", "short", Some(Duration::from_millis(1)), "admin")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let response = http(
        &server,
        &ca,
        &Credentials::bearer(&short.token),
        Method::GET,
        "/streams/orders-1",
        "",
    )
    .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "expired");
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_authenticate_their_common_name() {
    let (server, ca) = server().await;
    let as_cert = |login: &str| {
        let config = client_config(&ca.pem, &[b"h2"], Some(ca.user(login)));
        grpc_client(server.grpc, config, Credentials::none())
    };
    let mut alice = as_cert("alice").await.unwrap();
    assert_eq!(grpc_append(&mut alice, "orders-1").await, Code::Ok);
    assert_eq!(
        grpc_read(&mut alice, "$all").await,
        Code::PermissionDenied,
        "alice, not admin"
    );
    let mut admin = as_cert("admin").await.unwrap();
    assert_eq!(grpc_read(&mut admin, "$all").await, Code::Ok);
    // A certificate for nobody the server knows.
    let mut stranger = as_cert("mallory").await.unwrap();
    assert_eq!(
        grpc_read(&mut stranger, "orders-1").await,
        Code::Unauthenticated
    );
    // HTTP too; and credentials in the header win over the certificate.
    let config = client_config(&ca.pem, &[b"http/1.1"], Some(ca.user("alice")));
    let response = https_request(
        server.http,
        config.clone(),
        Method::GET,
        "/streams/orders-1",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let response = https_request(
        server.http,
        config,
        Method::GET,
        "/streams/$all",
        &Credentials::admin().header(),
        "",
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn persistent_subscription_management_needs_an_operator() {
    let (server, ca) = server().await;
    let channel = |credentials: Credentials| {
        let config = client_config(&ca.pem, &[b"h2"], None);
        async move {
            PersistentSubscriptionsClient::with_interceptor(
                grpc_channel(server.grpc, config).await.unwrap(),
                credentials,
            )
        }
    };
    let create = || ps::CreateReq {
        options: Some(ps::create_req::Options {
            stream_option: Some(ps::create_req::options::StreamOption::Stream(
                ps::create_req::StreamOptions {
                    stream_identifier: Some(StreamIdentifier {
                        stream_name: b"orders-1".to_vec(),
                    }),
                    revision_option: Some(ps::create_req::stream_options::RevisionOption::Start(
                        Empty {},
                    )),
                },
            )),
            group_name: "billing".into(),
            settings: Some(ps::create_req::Settings {
                max_retry_count: 10,
                live_buffer_size: 100,
                read_batch_size: 20,
                history_buffer_size: 100,
                max_checkpoint_count: 1,
                min_checkpoint_count: 1,
                consumer_strategy: "RoundRobin".into(),
                message_timeout: Some(ps::create_req::settings::MessageTimeout::MessageTimeoutMs(
                    30_000,
                )),
                checkpoint_after: Some(
                    ps::create_req::settings::CheckpointAfter::CheckpointAfterMs(1_000),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut alice = channel(user("alice")).await;
    let refused = alice.create(create()).await.unwrap_err();
    assert_eq!(status_code(&refused), Code::PermissionDenied);
    let refused = alice.restart_subsystem(Empty {}).await.unwrap_err();
    assert_eq!(status_code(&refused), Code::PermissionDenied);
    let mut dave = channel(user("dave")).await;
    dave.create(create()).await.unwrap();
    // Listing needs only a login.
    let list = ps::ListReq {
        options: Some(ps::list_req::Options {
            list_option: Some(ps::list_req::options::ListOption::ListAllSubscriptions(
                Empty {},
            )),
        }),
    };
    assert_eq!(
        alice
            .list(list.clone())
            .await
            .unwrap()
            .into_inner()
            .subscriptions
            .len(),
        1
    );
    let mut anonymous = channel(Credentials::none()).await;
    assert_eq!(
        status_code(&anonymous.list(list).await.unwrap_err()),
        Code::PermissionDenied
    );
    server.stop().await;
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_slowed_down() {
    let (server, ca) = server().await;
    let wrong = Credentials::basic("alice", "wrong");
    for _ in 0..5 {
        let response = http(&server, &ca, &wrong, Method::GET, "/streams/orders-1", "").await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    }
    // The sixth attempt from this address waits before it is even checked.
    let started = Instant::now();
    let response = http(&server, &ca, &wrong, Method::GET, "/streams/orders-1", "").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(
        started.elapsed() >= strata_server::auth::authenticate::Throttle::DELAY_FIRST,
        "{:?}",
        started.elapsed()
    );
    // The right password still gets in (after its wait), and clears the address.
    let response = http(
        &server,
        &ca,
        &user("alice"),
        Method::GET,
        "/streams/orders-1",
        "",
    )
    .await;
    assert_ne!(response.status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn the_users_service_manages_accounts_as_kurrentdb_answers() {
    use strata_server::proto::event_store::client::users as pb;
    use strata_server::proto::event_store::client::users::users_client::UsersClient;
    let (server, ca) = server().await;
    let users = |credentials: Credentials| {
        let config = client_config(&ca.pem, &[b"h2"], None);
        async move {
            UsersClient::with_interceptor(
                grpc_channel(server.grpc, config).await.unwrap(),
                credentials,
            )
        }
    };
    let create = |login: &str, password: &str| pb::CreateReq {
        options: Some(pb::create_req::Options {
            login_name: login.into(),
            password: password.into(),
            full_name: "Erin E.".into(),
            groups: vec!["sales".into()],
        }),
    };
    let mut admin = users(Credentials::admin()).await;
    admin.create(create("erin", "pw-erin")).await.unwrap();
    let conflict = admin.create(create("erin", "again")).await.unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    assert_eq!(
        conflict.metadata().get("exception").unwrap(),
        "user-conflict"
    );

    let details = |login: &str| pb::DetailsReq {
        options: Some(pb::details_req::Options {
            login_name: login.into(),
        }),
    };
    let mut stream = admin.details(details("erin")).await.unwrap().into_inner();
    let erin = stream
        .message()
        .await
        .unwrap()
        .unwrap()
        .user_details
        .unwrap();
    assert_eq!(erin.login_name, "erin");
    assert_eq!(erin.groups, ["sales"]);
    assert!(!erin.disabled);
    assert!(erin.last_updated.unwrap().ticks_since_epoch > 0);
    let missing = admin.details(details("nobody")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.metadata().get("exception").unwrap(),
        "user-not-found"
    );
    assert_eq!(missing.metadata().get("login-name").unwrap(), "nobody");
    // An empty login lists everyone.
    let mut all = admin.details(details("")).await.unwrap().into_inner();
    let mut logins = Vec::new();
    while let Some(response) = all.message().await.unwrap() {
        logins.push(response.user_details.unwrap().login_name);
    }
    assert_eq!(
        logins,
        ["admin", "alice", "bob", "carol", "dave", "erin", "ops"]
    );

    // The new user works at once; a normal user manages nobody, reads only itself.
    let mut erin = users(user("erin")).await;
    let refused = erin.create(create("frank", "pw")).await.unwrap_err();
    assert_eq!(status_code(&refused), Code::PermissionDenied);
    assert_eq!(
        status_code(&erin.details(details("alice")).await.unwrap_err()),
        Code::PermissionDenied
    );
    erin.details(details("erin")).await.unwrap();

    // Changing one's own password needs the current one.
    let change = |current: &str, new: &str| pb::ChangePasswordReq {
        options: Some(pb::change_password_req::Options {
            login_name: "erin".into(),
            current_password: current.into(),
            new_password: new.into(),
        }),
    };
    assert_eq!(
        status_code(
            &erin
                .change_password(change("wrong", "x"))
                .await
                .unwrap_err()
        ),
        Code::PermissionDenied
    );
    erin.change_password(change("pw-erin", "new-erin"))
        .await
        .unwrap();
    let mut streams = client(&server, &ca, user("erin")).await;
    assert_eq!(
        grpc_read(&mut streams, "orders-1").await,
        Code::Unauthenticated,
        "old password"
    );
    let mut streams = client(&server, &ca, Credentials::basic("erin", "new-erin")).await;
    assert_ne!(
        grpc_read(&mut streams, "orders-1").await,
        Code::Unauthenticated
    );

    // Disable, reset, enable, delete: each takes effect on the next call.
    let login = || pb::DisableReq {
        options: Some(pb::disable_req::Options {
            login_name: "erin".into(),
        }),
    };
    admin.disable(login()).await.unwrap();
    assert_eq!(
        grpc_read(&mut streams, "orders-1").await,
        Code::Unauthenticated,
        "disabled"
    );
    admin
        .reset_password(pb::ResetPasswordReq {
            options: Some(pb::reset_password_req::Options {
                login_name: "erin".into(),
                new_password: "reset-erin".into(),
            }),
        })
        .await
        .unwrap();
    admin
        .enable(pb::EnableReq {
            options: Some(pb::enable_req::Options {
                login_name: "erin".into(),
            }),
        })
        .await
        .unwrap();
    let mut streams = client(&server, &ca, Credentials::basic("erin", "reset-erin")).await;
    assert_ne!(
        grpc_read(&mut streams, "orders-1").await,
        Code::Unauthenticated
    );
    admin
        .update(pb::UpdateReq {
            options: Some(pb::update_req::Options {
                login_name: "erin".into(),
                password: String::new(),
                full_name: "Erin F.".into(),
                groups: vec!["$admins".into()],
            }),
        })
        .await
        .unwrap();
    assert_eq!(
        grpc_read(&mut streams, "$all").await,
        Code::Ok,
        "now an administrator"
    );
    admin
        .delete(pb::DeleteReq {
            options: Some(pb::delete_req::Options {
                login_name: "erin".into(),
            }),
        })
        .await
        .unwrap();
    assert_eq!(
        grpc_read(&mut streams, "orders-1").await,
        Code::Unauthenticated,
        "deleted"
    );
    let gone = admin.disable(login()).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn users_and_tokens_over_http() {
    let (server, ca) = server().await;
    let admin = Credentials::admin();
    let created = http(
        &server,
        &ca,
        &admin,
        Method::POST,
        "/users",
        &json!({"login": "erin", "full_name": "Erin", "groups": ["sales"], "password": "pw-erin"})
            .to_string(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.json()["login_name"], "erin");
    assert!(
        !created.body.windows(7).any(|w| w == b"pw-erin"),
        "no password echoed"
    );
    assert!(
        !String::from_utf8_lossy(&created.body).contains("argon2"),
        "no hash shown"
    );
    let again = http(
        &server,
        &ca,
        &admin,
        Method::POST,
        "/users",
        &json!({"login": "erin", "password": "x"}).to_string(),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["error"]["code"], "user_exists");
    let bad = http(
        &server,
        &ca,
        &admin,
        Method::POST,
        "/users",
        &json!({"login": "a:b", "password": "x"}).to_string(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["code"], "invalid_user");

    let me = http(&server, &ca, &user("erin"), Method::GET, "/me", "").await;
    assert_eq!(
        me.json(),
        json!({"login": "erin", "groups": ["sales"], "method": "password", "authentication": "on"})
    );
    let list = http(&server, &ca, &user("erin"), Method::GET, "/users", "").await;
    assert_eq!(list.status, StatusCode::FORBIDDEN);
    let list = http(&server, &ca, &admin, Method::GET, "/users", "").await;
    assert_eq!(list.json()["users"].as_array().unwrap().len(), 7);

    let change = http(
        &server,
        &ca,
        &user("erin"),
        Method::POST,
        "/users/erin/password",
        &json!({"current_password": "wrong", "new_password": "x"}).to_string(),
    )
    .await;
    assert_eq!(change.json()["error"]["code"], "wrong_current_password");
    let disabled = http(
        &server,
        &ca,
        &admin,
        Method::POST,
        "/users/erin/disable",
        "{}",
    )
    .await;
    assert_eq!(disabled.json()["disabled"], true);
    let refused = http(&server, &ca, &user("erin"), Method::GET, "/me", "").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let missing = http(&server, &ca, &admin, Method::DELETE, "/users/nobody", "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["code"], "user_not_found");

    // Tokens: created by an admin, shown once, listed without secrets, revocable.
    let token = http(
        &server,
        &ca,
        &admin,
        Method::POST,
        "/tokens",
        &json!({"login": "alice", "description": "metrics scraper", "ttl_seconds": 3600})
            .to_string(),
    )
    .await;
    assert_eq!(token.status, StatusCode::CREATED, "{:?}", token.body);
    let secret = token.json()["token"].as_str().unwrap().to_owned();
    let id = token.json()["id"].as_str().unwrap().to_owned();
    assert!(
        token.json()["expires_ms"].as_u64().unwrap() > token.json()["created_ms"].as_u64().unwrap()
    );
    let bearer = Credentials::bearer(&secret);
    let me = http(&server, &ca, &bearer, Method::GET, "/me", "").await;
    assert_eq!(me.json()["login"], "alice");
    assert_eq!(me.json()["method"], "token");
    let listed = http(&server, &ca, &admin, Method::GET, "/tokens", "").await;
    let (_, secret_part) = secret.rsplit_once('_').unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.body).contains(secret_part),
        "never shown again"
    );
    assert_eq!(listed.json()["tokens"][0]["id"], id.as_str());
    let not_admin = http(
        &server,
        &ca,
        &bearer,
        Method::POST,
        "/tokens",
        &json!({"login": "alice"}).to_string(),
    )
    .await;
    assert_eq!(
        not_admin.status,
        StatusCode::FORBIDDEN,
        "a token cannot mint tokens for a non-admin"
    );
    let revoked = http(
        &server,
        &ca,
        &admin,
        Method::DELETE,
        &format!("/tokens/{id}"),
        "",
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let after = http(&server, &ca, &bearer, Method::GET, "/me", "").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let unknown = http(
        &server,
        &ca,
        &admin,
        Method::DELETE,
        "/tokens/0000000000000000",
        "",
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Stream ACLs are cached for speed; a metadata write through this server must still
/// take effect on the very next request, through either API.
#[tokio::test]
async fn an_acl_change_applies_to_the_next_request_despite_the_cache() {
    let (server, ca) = server().await;
    let mut admin = client(&server, &ca, Credentials::admin()).await;
    let mut bob = client(&server, &ca, user("bob")).await;
    assert_eq!(grpc_append(&mut admin, "orders-2").await, Code::Ok);
    // Read once so the stream's (absent) ACL is cached as "open".
    assert_eq!(grpc_read(&mut bob, "orders-2").await, Code::Ok);
    // Closed to all but alice through the gRPC path: a `$metadata` event in `$$orders-2`.
    let metadata = EventData::json("$metadata", &json!({"$acl": {"$r": "alice"}})).unwrap();
    let messages = requests::append("$$orders-2", ExpectedRevision::Any, &[metadata]);
    admin.append(tokio_stream::iter(messages)).await.unwrap();
    assert_eq!(
        grpc_read(&mut bob, "orders-2").await,
        Code::PermissionDenied
    );
    // Opened again through the HTTP path.
    let open = json!({"$acl": {"$r": "$all"}}).to_string();
    let put = http(
        &server,
        &ca,
        &Credentials::admin(),
        Method::PUT,
        "/streams/orders-2/metadata",
        &open,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(grpc_read(&mut bob, "orders-2").await, Code::Ok);
    server.stop().await;
}
