//! The HTTP/JSON API (axum).

use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::state::ServerState;

/// The HTTP API's routes over `state`.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<ServerState>) -> String {
    state.metrics.encode()
}
