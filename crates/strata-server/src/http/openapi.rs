//! `GET /openapi.json`: the OpenAPI 3 description of this API, kept beside the crate
//! (`openapi.json`) and compiled into the binary.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI 3.0 document.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// Serves [`DOCUMENT`].
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
