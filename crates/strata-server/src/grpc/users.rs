//! `event_store.client.users.Users`: the KurrentDB clients' user management (create,
//! update, delete, enable, disable, details, change and reset password), over the
//! accounts in [`auth::users`](crate::auth::users).
//!
//! Answers as KurrentDB's: a missing user is NOT_FOUND with `exception: user-not-found`
//! and `login-name`; an existing one FAILED_PRECONDITION `Conflict.` with
//! `exception: user-conflict`; a wrong current password is access denied. One
//! difference: KurrentDB lets any authenticated user read every user's details; here a
//! user reads only their own, and listing every user needs `$admins`.

use std::pin::Pin;

use futures_util::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::auth::users::{NewUser, UserDetails, UserError};
use crate::auth::{Operation, UserChange};
use crate::grpc::auth::{access_denied, Caller};
use crate::metrics::Api;
use crate::proto::event_store::client::users as pb;
use crate::proto::event_store::client::users::users_server::Users;
use crate::state::ServerState;

/// The `Users` service.
#[derive(Clone, Debug)]
pub struct UsersService {
    state: ServerState,
}

impl UsersService {
    /// The service over `state`.
    pub fn new(state: ServerState) -> UsersService {
        UsersService { state }
    }

    /// Runs `run` (a change to `login`) after checking `operation`, then lets
    /// [`Auth::user_changed`](crate::auth::Auth::user_changed) forget the user's cached
    /// logins and audit the change.
    async fn change<F, Fut>(
        &self,
        caller: &Caller,
        operation: Operation<'_>,
        login: &str,
        change: UserChange,
        run: F,
    ) -> Result<(), Status>
    where
        F: FnOnce(crate::auth::Users) -> Fut,
        Fut: std::future::Future<Output = Result<(), UserError>>,
    {
        caller.authorize(&self.state, operation).await?;
        let result = run(self.state.auth.users().clone()).await;
        self.state
            .auth
            .user_changed(Api::Grpc, &caller.principal, login, change, result)
            .map_err(|error| status(login, &error))
    }
}

/// The status KurrentDB answers a failed user operation with.
pub fn status(login: &str, error: &UserError) -> Status {
    let with = |mut status: Status, exception: &'static str| {
        let metadata = status.metadata_mut();
        metadata.insert("exception", MetadataValue::from_static(exception));
        if let Ok(value) = MetadataValue::try_from(login) {
            metadata.insert("login-name", value);
        }
        status
    };
    match error {
        UserError::NotFound { .. } => with(
            Status::not_found(format!("User '{login}' is not found.")),
            "user-not-found",
        ),
        UserError::AlreadyExists { .. } | UserError::Conflict { .. } => {
            with(Status::failed_precondition("Conflict."), "user-conflict")
        }
        UserError::WrongPassword { .. } => access_denied(),
        UserError::Invalid { .. } => Status::invalid_argument(error.to_string()),
        UserError::Corrupt { .. }
        | UserError::Password(_)
        | UserError::Read(_)
        | UserError::Append(_) => {
            let error_id = uuid::Uuid::new_v4();
            tracing::error!(%error_id, %error, user = login, "user operation failed");
            Status::internal(format!("the user operation failed (error id {error_id})"))
        }
    }
}

fn options<T>(options: Option<T>) -> Result<T, Status> {
    options.ok_or_else(|| Status::invalid_argument("'options' is a required argument"))
}

/// Ticks (100 ns) since the Unix epoch, as KurrentDB's `DateTime` carries them.
fn ticks(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(10_000)).unwrap_or(i64::MAX)
}

fn details(user: &UserDetails) -> pb::DetailsResp {
    pb::DetailsResp {
        user_details: Some(pb::details_resp::UserDetails {
            login_name: user.login_name.clone(),
            full_name: user.full_name.clone(),
            groups: user.groups.clone(),
            last_updated: Some(pb::details_resp::user_details::DateTime {
                ticks_since_epoch: ticks(user.updated_ms),
            }),
            disabled: user.disabled,
        }),
    }
}

type DetailsStream = Pin<Box<dyn Stream<Item = Result<pb::DetailsResp, Status>> + Send>>;

#[tonic::async_trait]
impl Users for UsersService {
    async fn create(
        &self,
        request: Request<pb::CreateReq>,
    ) -> Result<Response<pb::CreateResp>, Status> {
        let caller = Caller::of(&request);
        let options = options(request.into_inner().options)?;
        let login = options.login_name.clone();
        self.change(
            &caller,
            Operation::ManageUsers,
            &login,
            UserChange::Created,
            |users| async move {
                users
                    .create(NewUser {
                        login: options.login_name,
                        full_name: options.full_name,
                        groups: options.groups,
                        password: options.password,
                    })
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateReq>,
    ) -> Result<Response<pb::UpdateResp>, Status> {
        let caller = Caller::of(&request);
        let options = options(request.into_inner().options)?;
        let login = options.login_name.clone();
        self.change(
            &caller,
            Operation::ManageUsers,
            &login,
            UserChange::Updated,
            |users| async move {
                users
                    .update(&options.login_name, options.full_name, options.groups)
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteReq>,
    ) -> Result<Response<pb::DeleteResp>, Status> {
        let caller = Caller::of(&request);
        let login = options(request.into_inner().options)?.login_name;
        self.change(
            &caller,
            Operation::ManageUsers,
            &login,
            UserChange::Deleted,
            |users| {
                let login = login.clone();
                async move { users.delete(&login).await }
            },
        )
        .await?;
        Ok(Response::new(pb::DeleteResp {}))
    }

    async fn disable(
        &self,
        request: Request<pb::DisableReq>,
    ) -> Result<Response<pb::DisableResp>, Status> {
        let caller = Caller::of(&request);
        let login = options(request.into_inner().options)?.login_name;
        self.change(
            &caller,
            Operation::ManageUsers,
            &login,
            UserChange::Disabled,
            |users| {
                let login = login.clone();
                async move { users.set_disabled(&login, true).await }
            },
        )
        .await?;
        Ok(Response::new(pb::DisableResp {}))
    }

    async fn enable(
        &self,
        request: Request<pb::EnableReq>,
    ) -> Result<Response<pb::EnableResp>, Status> {
        let caller = Caller::of(&request);
        let login = options(request.into_inner().options)?.login_name;
        self.change(
            &caller,
            Operation::ManageUsers,
            &login,
            UserChange::Enabled,
            |users| {
                let login = login.clone();
                async move { users.set_disabled(&login, false).await }
            },
        )
        .await?;
        Ok(Response::new(pb::EnableResp {}))
    }

    type DetailsStream = DetailsStream;

    async fn details(
        &self,
        request: Request<pb::DetailsReq>,
    ) -> Result<Response<Self::DetailsStream>, Status> {
        let caller = Caller::of(&request);
        let login = request
            .into_inner()
            .options
            .map(|o| o.login_name)
            .unwrap_or_default();
        let users = self.state.auth.users();
        let found: Vec<UserDetails> = if login.trim().is_empty() {
            caller
                .authorize(&self.state, Operation::ManageUsers)
                .await?;
            users.list().await.map_err(|e| status("", &e))?
        } else {
            caller
                .authorize(&self.state, Operation::ReadUser { login: &login })
                .await?;
            match users.get(&login).await.map_err(|e| status(&login, &e))? {
                Some(record) => vec![UserDetails::from(&record)],
                None => {
                    return Err(status(
                        &login,
                        &UserError::NotFound {
                            login: login.clone(),
                        },
                    ))
                }
            }
        };
        let responses: Vec<Result<pb::DetailsResp, Status>> =
            found.iter().map(|user| Ok(details(user))).collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            responses,
        ))))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordReq>,
    ) -> Result<Response<pb::ChangePasswordResp>, Status> {
        let caller = Caller::of(&request);
        let options = options(request.into_inner().options)?;
        let login = options.login_name.clone();
        self.change(
            &caller,
            Operation::ChangePassword { login: &login },
            &login,
            UserChange::PasswordChanged,
            |users| async move {
                users
                    .change_password(
                        &options.login_name,
                        &options.current_password,
                        &options.new_password,
                    )
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::ChangePasswordResp {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordReq>,
    ) -> Result<Response<pb::ResetPasswordResp>, Status> {
        let caller = Caller::of(&request);
        let options = options(request.into_inner().options)?;
        let login = options.login_name.clone();
        self.change(
            &caller,
            Operation::ManageUsers,
            &login,
            UserChange::PasswordReset,
            |users| async move {
                users
                    .reset_password(&options.login_name, &options.new_password)
                    .await
            },
        )
        .await?;
        Ok(Response::new(pb::ResetPasswordResp {}))
    }
}
