//! `strata user`: add, list, show, update, enable, disable and delete user accounts,
//! and set their passwords.
//!
//! With `--server`, through the server's HTTP API (as an administrator, except
//! `passwd`, which a user runs for their own account). Without, directly in the local
//! store (`--data DIR` or `--postgres URL`) through [`strata_server::auth::Users`]:
//! whoever can open the store's files can change anything in it, so there `passwd`
//! needs no current password. That is how an operator changes the `admin` password
//! before a store is first served on the network: the default users (`admin`, `ops`,
//! password `changeit`) are created by the first such command, as by the server.
//!
//! Passwords never come from arguments: `STRATA_NEW_PASSWORD`, or typed twice at a
//! prompt without echo.

use std::io::{BufWriter, Write};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strata::Store;
use strata_server::auth::users::{NewUser, UserDetails};
use strata_server::auth::{Hasher, Users};

use super::{close_store, open_store, Target};
use crate::client::{encode, ServerClient};
use crate::credentials::{self, Credentials};
use crate::error::{output_error, CliError};
use crate::output::{time_ms, write_json_line, Table};

/// The `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password comes from STRATA_NEW_PASSWORD, or is typed twice.
    Add(AddArgs),
    /// List the users: a table, or JSON lines with --json.
    List(ListArgs),
    /// Show one user.
    Show(ShowArgs),
    /// Change a password: on a server, your own (--user LOGIN; the current password is
    /// STRATA_PASSWORD or asked for); on a local store, anyone's. The new password comes
    /// from STRATA_NEW_PASSWORD, or is typed twice.
    Passwd(LoginArg),
    /// Set a user's password without the current one (an administrator's reset). The
    /// new password comes from STRATA_NEW_PASSWORD, or is typed twice.
    Reset(LoginArg),
    /// Disable a user: it can no longer authenticate (its tokens neither).
    Disable(LoginArg),
    /// Enable a disabled user.
    Enable(LoginArg),
    /// Delete a user (its login can be created again).
    Delete(LoginArg),
    /// Change a user's full name or groups (what is not given stays).
    Update(UpdateArgs),
}

/// A login.
#[derive(Debug, Args)]
pub struct LoginArg {
    /// The user's login name.
    pub login: String,
}

/// Options of `strata user add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The login name.
    pub login: String,
    /// A display name.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub full_name: String,
    /// A group (`$admins`, `$ops`, or any name the ACLs use). Repeat for several.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
}

/// Options of `strata user list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `strata user show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The login name.
    pub login: String,
    /// A JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `strata user update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The login name.
    pub login: String,
    /// The new display name.
    #[arg(long, value_name = "NAME")]
    pub full_name: Option<String>,
    /// The new groups, replacing the old ones. Repeat for several.
    #[arg(long = "group", value_name = "GROUP", conflicts_with = "no_groups")]
    pub groups: Vec<String>,
    /// Remove the user from every group.
    #[arg(long)]
    pub no_groups: bool,
}

/// A user as the API shows it (and as `--json` prints it).
#[derive(Debug, Serialize, Deserialize)]
pub struct UserView {
    /// The login name.
    pub login_name: String,
    /// A display name.
    #[serde(default)]
    pub full_name: String,
    /// The groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the user is disabled.
    #[serde(default)]
    pub disabled: bool,
    /// When the record was last written (milliseconds since the Unix epoch).
    #[serde(default)]
    pub updated_ms: u64,
}

impl From<UserDetails> for UserView {
    fn from(user: UserDetails) -> Self {
        UserView {
            login_name: user.login_name,
            full_name: user.full_name,
            groups: user.groups,
            disabled: user.disabled,
            updated_ms: user.updated_ms,
        }
    }
}

#[derive(Deserialize)]
struct UserList {
    users: Vec<UserView>,
}

/// Where the users are: a server, or a store opened here.
enum Backend {
    Remote(Box<ServerClient>),
    Local(Store, Users),
}

impl Backend {
    /// The server of `target`, or its store (created if `create`), with the default
    /// users in place.
    async fn open(target: &Target, create: bool) -> Result<Backend, CliError> {
        if let Some(client) = target.client()? {
            return Ok(Backend::Remote(Box::new(client)));
        }
        let (store, users) = open_users(target, create).await?;
        Ok(Backend::Local(store, users))
    }

    /// Closes a local store.
    async fn close(self) -> Result<(), CliError> {
        match self {
            Backend::Remote(_) => Ok(()),
            Backend::Local(store, _) => close_store(store).await,
        }
    }
}

/// Opens the local store of `target` (created if `create`) and its users, creating the
/// default users (`admin`, `ops`, password `changeit`) if the store never had them, as
/// the first start with TLS would: so that `user passwd admin` works before it.
pub async fn open_users(target: &Target, create: bool) -> Result<(Store, Users), CliError> {
    let store = open_store(target, create).await?;
    let users = Users::new(store.clone(), Hasher::default());
    match users.ensure_defaults().await {
        Ok(created) => {
            if !created.is_empty() {
                eprintln!(
                    "note: created the default users {} (password \"changeit\"), as the \
                     first start with TLS would",
                    created.join(" and ")
                );
            }
            Ok((store, users))
        }
        Err(error) => {
            close_store(store).await?;
            Err(error.into())
        }
    }
}

/// The path of a user in the API.
fn user_path(login: &str) -> String {
    format!("/users/{}", encode(login))
}

/// Runs a `strata user` subcommand.
pub async fn run(target: &Target, command: UserCommand) -> Result<(), CliError> {
    let create = !matches!(command, UserCommand::List(_) | UserCommand::Show(_));
    let backend = Backend::open(target, create).await?;
    let result = execute(&backend, command).await;
    let closed = backend.close().await;
    result.and(closed)
}

async fn execute(backend: &Backend, command: UserCommand) -> Result<(), CliError> {
    match command {
        UserCommand::Add(args) => add(backend, args).await,
        UserCommand::List(args) => {
            let users = list(backend).await?;
            print_list(&users, args.json)
        }
        UserCommand::Show(args) => {
            let user = show(backend, &args.login).await?;
            print_user(&user, args.json)
        }
        UserCommand::Passwd(LoginArg { login }) => passwd(backend, &login).await,
        UserCommand::Reset(LoginArg { login }) => reset(backend, &login).await,
        UserCommand::Disable(LoginArg { login }) => set_disabled(backend, &login, true).await,
        UserCommand::Enable(LoginArg { login }) => set_disabled(backend, &login, false).await,
        UserCommand::Delete(LoginArg { login }) => delete(backend, &login).await,
        UserCommand::Update(args) => update(backend, args).await,
    }
}

/// Prints a confirmation on stdout.
fn done(message: String) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{message}").map_err(output_error)?;
    out.flush().map_err(output_error)
}

async fn add(backend: &Backend, args: AddArgs) -> Result<(), CliError> {
    let password = credentials::new_password(&args.login)?;
    match backend {
        Backend::Remote(client) => {
            let body = json!({
                "login": args.login,
                "full_name": args.full_name,
                "groups": args.groups,
                "password": password.expose(),
            });
            let _: Value = client
                .post("/users", &body, &format!("add user {:?}", args.login))
                .await?;
        }
        Backend::Local(_, users) => {
            users
                .create(NewUser {
                    login: args.login.clone(),
                    full_name: args.full_name,
                    groups: args.groups,
                    password: password.expose().to_owned(),
                })
                .await?;
        }
    }
    done(format!("created user {:?}", args.login))
}

async fn list(backend: &Backend) -> Result<Vec<UserView>, CliError> {
    Ok(match backend {
        Backend::Remote(client) => {
            let list: UserList = client.get("/users", "list the users").await?;
            list.users
        }
        Backend::Local(_, users) => users
            .list()
            .await?
            .into_iter()
            .map(UserView::from)
            .collect(),
    })
}

async fn show(backend: &Backend, login: &str) -> Result<UserView, CliError> {
    match backend {
        Backend::Remote(client) => {
            client
                .get(&user_path(login), &format!("read user {login:?}"))
                .await
        }
        Backend::Local(_, users) => match users.get(login).await? {
            Some(record) => Ok(UserView::from(UserDetails::from(&record))),
            None => Err(strata_server::auth::UserError::NotFound {
                login: login.to_owned(),
            }
            .into()),
        },
    }
}

async fn passwd(backend: &Backend, login: &str) -> Result<(), CliError> {
    match backend {
        Backend::Remote(client) => {
            // The server lets users change only their own password.
            let current = match client.credentials() {
                Credentials::Basic { user, password } if user == login => password.clone(),
                Credentials::Basic { user, .. } => {
                    return Err(CliError::Usage(format!(
                        "`user passwd` through a server changes the password of the user \
                         you authenticate as (here {user:?}): run it with --user {login}, or \
                         as an administrator set another user's password with \
                         `strata user reset {login}`"
                    )))
                }
                _ => credentials::password_for(login)?,
            };
            let new = credentials::new_password(login)?;
            let body = json!({
                "current_password": current.expose(),
                "new_password": new.expose(),
            });
            let _: Value = client
                .post(
                    &format!("{}/password", user_path(login)),
                    &body,
                    &format!("change the password of user {login:?}"),
                )
                .await?;
        }
        Backend::Local(_, users) => reset_locally(users, login).await?,
    }
    done(format!("changed the password of user {login:?}"))
}

/// On the local store no current password is needed (whoever can open the store can
/// write it): asks for the new one, once the user is known to exist.
async fn reset_locally(users: &strata_server::auth::Users, login: &str) -> Result<(), CliError> {
    if users.get(login).await?.is_none() {
        return Err(strata_server::auth::UserError::NotFound {
            login: login.to_owned(),
        }
        .into());
    }
    let new = credentials::new_password(login)?;
    users.reset_password(login, new.expose()).await?;
    Ok(())
}

async fn reset(backend: &Backend, login: &str) -> Result<(), CliError> {
    match backend {
        Backend::Remote(client) => {
            let new = credentials::new_password(login)?;
            let body = json!({ "new_password": new.expose() });
            let _: Value = client
                .post(
                    &format!("{}/reset-password", user_path(login)),
                    &body,
                    &format!("reset the password of user {login:?}"),
                )
                .await?;
        }
        Backend::Local(_, users) => reset_locally(users, login).await?,
    }
    done(format!("reset the password of user {login:?}"))
}

async fn set_disabled(backend: &Backend, login: &str, disabled: bool) -> Result<(), CliError> {
    let verb = if disabled { "disable" } else { "enable" };
    match backend {
        Backend::Remote(client) => {
            let _: Value = client
                .post(
                    &format!("{}/{verb}", user_path(login)),
                    &json!({}),
                    &format!("{verb} user {login:?}"),
                )
                .await?;
        }
        Backend::Local(_, users) => users.set_disabled(login, disabled).await?,
    }
    done(format!("{verb}d user {login:?}"))
}

async fn delete(backend: &Backend, login: &str) -> Result<(), CliError> {
    match backend {
        Backend::Remote(client) => {
            client
                .delete(&user_path(login), &format!("delete user {login:?}"))
                .await?;
        }
        Backend::Local(_, users) => users.delete(login).await?,
    }
    done(format!("deleted user {login:?}"))
}

async fn update(backend: &Backend, args: UpdateArgs) -> Result<(), CliError> {
    if args.full_name.is_none() && args.groups.is_empty() && !args.no_groups {
        return Err(CliError::Usage(
            "nothing to update: give --full-name, --group or --no-groups".into(),
        ));
    }
    let login = args.login.as_str();
    let current = show(backend, login).await?;
    let full_name = args.full_name.unwrap_or(current.full_name);
    let groups = if args.no_groups || !args.groups.is_empty() {
        args.groups
    } else {
        current.groups
    };
    match backend {
        Backend::Remote(client) => {
            let body = json!({ "full_name": full_name, "groups": groups });
            let _: Value = client
                .put(&user_path(login), &body, &format!("update user {login:?}"))
                .await?;
        }
        Backend::Local(_, users) => users.update(login, full_name, groups).await?,
    }
    done(format!("updated user {login:?}"))
}

/// Columns of `user list`.
const USER_COLUMNS: &[&str] = &["LOGIN", "FULL_NAME", "GROUPS", "DISABLED", "UPDATED"];

fn user_row(user: &UserView) -> Vec<String> {
    vec![
        user.login_name.clone(),
        user.full_name.clone(),
        user.groups.join(","),
        if user.disabled { "yes" } else { "no" }.to_owned(),
        time_ms(user.updated_ms),
    ]
}

fn print_list(users: &[UserView], json: bool) -> Result<(), CliError> {
    let mut out = BufWriter::new(std::io::stdout());
    if json {
        for user in users {
            write_json_line(&mut out, user)?;
        }
    } else {
        let rows: Vec<Vec<String>> = users.iter().map(user_row).collect();
        Table::new(USER_COLUMNS).write(&mut out, &rows)?;
    }
    out.flush().map_err(output_error)
}

fn print_user(user: &UserView, json: bool) -> Result<(), CliError> {
    let mut out = BufWriter::new(std::io::stdout());
    if json {
        write_json_line(&mut out, user)?;
    } else {
        let row = user_row(user);
        for (column, value) in USER_COLUMNS.iter().zip(row) {
            writeln!(out, "{:<10} {value}", format!("{}:", column.to_lowercase()))
                .map_err(output_error)?;
        }
    }
    out.flush().map_err(output_error)
}
