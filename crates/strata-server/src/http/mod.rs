//! The HTTP/JSON API (axum): append, read, metadata, delete, list, stats, live streams
//! (SSE and NDJSON), health, Prometheus metrics and the OpenAPI document.
//!
//! One file per idea: [`append`], [`read`] (with the `min_position` wait), [`metadata`]
//! (and deletes), [`live`], [`json`](mod@json) (event shapes), [`params`] (query parsing),
//! [`error`] (status codes and the JSON error body), [`openapi`]. Positions on this API
//! are strata's own (0-based, as the store numbers them).

pub mod append;
pub mod auth;
pub mod error;
pub mod hygiene;
pub mod json;
pub mod live;
pub mod metadata;
pub mod openapi;
pub mod params;
pub mod read;
pub mod serve;
pub mod trace;
pub mod users;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::Operation;
use crate::state::ServerState;
use error::ApiError;

/// What the HTTP handlers share.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The server's state (store, options, metrics, subscription slots, shutdown).
    pub state: ServerState,
}

/// The HTTP API's routes over `state`.
pub fn router(state: ServerState) -> Router {
    // axum's own limit answers 413 before a handler runs; handlers turn it into the
    // JSON error body. The limit is raised from axum's 2 MiB default to the option.
    let body_limit = DefaultBodyLimit::max(state.options.max_request_body);
    let http = HttpState { state };
    let trace = axum::middleware::from_fn_with_state(http.clone(), trace::trace);
    let authenticate = axum::middleware::from_fn_with_state(http.clone(), auth::authenticate);
    let hygiene = axum::middleware::from_fn_with_state(
        std::sync::Arc::new(hygiene::Hygiene::new(&http.state.options)),
        hygiene::guard,
    );
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/openapi.json", get(openapi::document))
        .route("/streams", get(read::list).post(append::append_multi))
        .route(
            "/streams/{stream}",
            get(read::read)
                .post(append::append)
                .delete(metadata::delete),
        )
        .route(
            "/streams/{stream}/metadata",
            get(metadata::get).put(metadata::put),
        )
        .route("/streams/{stream}/live", get(live::live))
        .route("/me", get(users::me))
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{login}",
            get(users::get).put(users::update).delete(users::delete),
        )
        .route("/users/{login}/enable", post(users::enable))
        .route("/users/{login}/disable", post(users::disable))
        .route("/users/{login}/password", post(users::change_password))
        .route("/users/{login}/reset-password", post(users::reset_password))
        .route("/tokens", get(users::tokens).post(users::create_token))
        .route("/tokens/{id}", delete(users::revoke_token))
        .fallback(no_route)
        .layer(body_limit)
        // Inside the hygiene checks: a cross-site request is refused before any
        // password is checked.
        .layer(authenticate)
        // Inside `trace`, so refused requests are logged and counted like others.
        .layer(hygiene)
        .layer(trace)
        .with_state(http)
}

/// `GET /health`: 200 `{"status":"ok","head":…}` while serving, 503 once shutdown began
/// (so a load balancer stops sending requests).
async fn health(State(http): State<HttpState>) -> Response {
    let head = http.state.store.head().map(|p| p.0);
    if http.state.is_shutting_down() {
        let body = json!({ "status": "shutting_down", "head": head });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({ "status": "ok", "head": head })).into_response()
}

/// `GET /metrics`: Prometheus text format. Disk use and the scrubber's counts are sampled
/// here, at scrape time.
async fn metrics(State(http): State<HttpState>, caller: auth::Caller) -> Response {
    if let Err(error) = caller.authorize(&http, Operation::NodeRead).await {
        return error.into_response();
    }
    let metrics = &http.state.metrics;
    let connections = &http.state.connections;
    metrics
        .connections_open
        .set(i64::try_from(connections.open()).unwrap_or(i64::MAX));
    metrics
        .connections_refused
        .set(i64::try_from(connections.refused()).unwrap_or(i64::MAX));
    match http.state.store.stats().await {
        Ok(stats) => {
            metrics
                .disk_bytes
                .set(i64::try_from(stats.disk_bytes).unwrap_or(i64::MAX));
            metrics.head_position.set(
                stats
                    .head
                    .map_or(-1, |p| i64::try_from(p.0).unwrap_or(i64::MAX)),
            );
            if let Some(scrub) = &stats.scrub {
                metrics.sample_scrub(scrub);
            }
        }
        // A scrape still reports everything else; the gauges keep their last value.
        Err(error) => tracing::warn!(%error, "cannot sample disk use for /metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// `GET /stats`: counts and sizes, as `strata stats --json` prints them.
async fn stats(State(http): State<HttpState>, caller: auth::Caller) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::NodeRead).await?;
    let stats = http.state.store.stats().await?;
    Ok(Json(json!({
        "events": stats.events,
        "streams": stats.streams,
        "head": stats.head.map(|p| p.0),
        "disk_bytes": stats.disk_bytes,
        "segments": stats.segments,
        "backend": stats.backend,
        "scrub": stats.scrub,
    }))
    .into_response())
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute {
        path: uri.path().to_owned(),
    }
}
