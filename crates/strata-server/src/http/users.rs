//! User accounts and bearer tokens over HTTP: `/users`, `/tokens` and `/me`.
//!
//! Every route passes the same authorization as the gRPC `Users` service: managing
//! users and tokens needs `$admins`; reading a user needs `$admins` or to be that user;
//! changing a password needs to be that user (and the current password).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::json::{body_bytes, parse};
use super::HttpState;
use crate::auth::tokens::TokenError;
use crate::auth::users::{NewUser, UserDetails, UserError};
use crate::auth::{Operation, Principal, UserChange};
use crate::metrics::Api;

/// The longest token lifetime a request may ask for: ten years.
const TTL_SECONDS_MAX: u64 = 10 * 365 * 24 * 3600;

fn body<T: for<'de> Deserialize<'de>>(
    http: &HttpState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(body, http.state.options.max_request_body)?;
    parse(&bytes)
}

/// After a change to `login`: [`Auth::user_changed`](crate::auth::Auth::user_changed)
/// forgets the user's cached logins and audits the change.
fn changed(
    http: &HttpState,
    caller: &Caller,
    login: &str,
    change: UserChange,
    result: Result<(), UserError>,
) -> Result<(), ApiError> {
    http.state
        .auth
        .user_changed(Api::Http, &caller.principal, login, change, result)
        .map_err(ApiError::from)
}

/// `GET /users`: every user (admins).
pub async fn list(State(http): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageUsers).await?;
    let users = http.state.auth.users().list().await?;
    Ok(Json(json!({ "users": users })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    login: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    groups: Vec<String>,
    password: String,
}

/// `POST /users`: `{"login", "full_name", "groups", "password"}` → 201 with the user.
pub async fn create(
    State(http): State<HttpState>,
    caller: Caller,
    input: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageUsers).await?;
    let input: CreateInput = body(&http, input)?;
    let login = input.login.clone();
    let users = http.state.auth.users();
    let result = users
        .create(NewUser {
            login: input.login,
            full_name: input.full_name,
            groups: input.groups,
            password: input.password,
        })
        .await;
    changed(&http, &caller, &login, UserChange::Created, result)?;
    let details = user_details(&http, &login).await?;
    Ok((StatusCode::CREATED, Json(details)).into_response())
}

async fn user_details(http: &HttpState, login: &str) -> Result<UserDetails, ApiError> {
    match http.state.auth.users().get(login).await? {
        Some(record) => Ok(UserDetails::from(&record)),
        None => Err(UserError::NotFound {
            login: login.to_owned(),
        }
        .into()),
    }
}

/// `GET /users/{login}`: one user (admins, or the user).
pub async fn get(
    State(http): State<HttpState>,
    caller: Caller,
    Path(login): Path<String>,
) -> Result<Response, ApiError> {
    caller
        .authorize(&http, Operation::ReadUser { login: &login })
        .await?;
    Ok(Json(user_details(&http, &login).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateInput {
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    groups: Vec<String>,
}

/// `PUT /users/{login}`: `{"full_name", "groups"}` (admins).
pub async fn update(
    State(http): State<HttpState>,
    caller: Caller,
    Path(login): Path<String>,
    input: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageUsers).await?;
    let input: UpdateInput = body(&http, input)?;
    let result = http
        .state
        .auth
        .users()
        .update(&login, input.full_name, input.groups)
        .await;
    changed(&http, &caller, &login, UserChange::Updated, result)?;
    Ok(Json(user_details(&http, &login).await?).into_response())
}

/// `DELETE /users/{login}` (admins).
pub async fn delete(
    State(http): State<HttpState>,
    caller: Caller,
    Path(login): Path<String>,
) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageUsers).await?;
    let result = http.state.auth.users().delete(&login).await;
    changed(&http, &caller, &login, UserChange::Deleted, result)?;
    Ok(Json(json!({ "login_name": login, "deleted": true })).into_response())
}

/// `POST /users/{login}/enable` and `/disable` (admins).
async fn set_disabled(
    http: HttpState,
    caller: Caller,
    login: String,
    disabled: bool,
) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageUsers).await?;
    let result = http.state.auth.users().set_disabled(&login, disabled).await;
    changed(
        &http,
        &caller,
        &login,
        if disabled {
            UserChange::Disabled
        } else {
            UserChange::Enabled
        },
        result,
    )?;
    Ok(Json(user_details(&http, &login).await?).into_response())
}

/// `POST /users/{login}/enable` (admins).
pub async fn enable(
    State(http): State<HttpState>,
    caller: Caller,
    Path(login): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(http, caller, login, false).await
}

/// `POST /users/{login}/disable` (admins).
pub async fn disable(
    State(http): State<HttpState>,
    caller: Caller,
    Path(login): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(http, caller, login, true).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    current_password: String,
    new_password: String,
}

/// `POST /users/{login}/password`: `{"current_password", "new_password"}` (the user).
pub async fn change_password(
    State(http): State<HttpState>,
    caller: Caller,
    Path(login): Path<String>,
    input: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller
        .authorize(&http, Operation::ChangePassword { login: &login })
        .await?;
    let input: PasswordInput = body(&http, input)?;
    let result = http
        .state
        .auth
        .users()
        .change_password(&login, &input.current_password, &input.new_password)
        .await;
    changed(&http, &caller, &login, UserChange::PasswordChanged, result)?;
    Ok(Json(json!({ "login_name": login, "password_changed": true })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetInput {
    new_password: String,
}

/// `POST /users/{login}/reset-password`: `{"new_password"}` (admins).
pub async fn reset_password(
    State(http): State<HttpState>,
    caller: Caller,
    Path(login): Path<String>,
    input: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageUsers).await?;
    let input: ResetInput = body(&http, input)?;
    let result = http
        .state
        .auth
        .users()
        .reset_password(&login, &input.new_password)
        .await;
    changed(&http, &caller, &login, UserChange::PasswordReset, result)?;
    Ok(Json(json!({ "login_name": login, "password_changed": true })).into_response())
}

/// `GET /me`: who the request runs as.
pub async fn me(caller: Caller) -> Result<Response, ApiError> {
    match &caller.principal {
        Principal::Anonymous => Err(ApiError::Unauthenticated),
        Principal::System => Ok(Json(json!({
            "login": null,
            "groups": [],
            "method": null,
            "authentication": "off",
        }))
        .into_response()),
        Principal::User(user) => Ok(Json(json!({
            "login": user.login,
            "groups": user.groups,
            "method": user.method.name(),
            "authentication": "on",
        }))
        .into_response()),
    }
}

/// `GET /tokens`: every token, without secrets (admins).
pub async fn tokens(State(http): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageTokens).await?;
    let tokens = http.state.auth.tokens().list().await?;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenInput {
    login: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /tokens`: `{"login", "description", "ttl_seconds"}` → 201 with the token, the
/// only time it is shown (admins).
pub async fn create_token(
    State(http): State<HttpState>,
    caller: Caller,
    input: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageTokens).await?;
    let input: TokenInput = body(&http, input)?;
    let ttl = match input.ttl_seconds {
        None => None,
        Some(seconds) if (1..=TTL_SECONDS_MAX).contains(&seconds) => {
            Some(std::time::Duration::from_secs(seconds))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_token",
                format!("ttl_seconds must be between 1 and {TTL_SECONDS_MAX}"),
            ))
        }
    };
    let created = http
        .state
        .auth
        .tokens()
        .create(
            &input.login,
            &input.description,
            ttl,
            caller.principal.name(),
        )
        .await?;
    tracing::info!(target: "strata::audit", event = "token_created", token_id = %created.info.id, user = %created.info.login, by = caller.principal.name(), "token created");
    let mut body = serde_json::to_value(&created.info).unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        object.insert("token".into(), json!(created.token));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /tokens/{id}`: revokes a token at once (admins).
pub async fn revoke_token(
    State(http): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.authorize(&http, Operation::ManageTokens).await?;
    http.state.auth.tokens().revoke(&id).await?;
    // The cache holds tokens by id: forget them all rather than look for this one.
    http.state.auth.authenticator().forget_all();
    tracing::info!(target: "strata::audit", event = "token_revoked", token_id = %id, by = caller.principal.name(), "token revoked");
    Ok(Json(json!({ "id": id, "revoked": true })).into_response())
}

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        ApiError::Users(error)
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::User(user) => ApiError::Users(user),
            other => ApiError::Tokens(other),
        }
    }
}
