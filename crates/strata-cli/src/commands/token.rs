//! `strata token`: create, list and revoke bearer tokens.
//!
//! With `--server`, through the server's HTTP API (as an administrator); without,
//! directly in the local store through [`strata_server::auth::Tokens`]. A token is
//! printed once, when it is created: the store keeps only a digest of its secret.

use std::io::{BufWriter, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strata::Store;
use strata_server::auth::tokens::TokenInfo;
use strata_server::auth::Tokens;

use super::{close_store, Target};
use crate::client::{encode, ServerClient};
use crate::error::{output_error, CliError};
use crate::output::{time_ms, write_json_line, Table};

/// Who a token made on the local store is recorded as created by.
pub const LOCAL_CREATOR: &str = "local";

/// The `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a user and print it (once: it cannot be shown again).
    Create(CreateArgs),
    /// List the tokens (never their secrets): a table, or JSON lines with --json.
    List(ListArgs),
    /// Revoke a token: it stops working at once.
    Revoke(RevokeArgs),
}

/// Options of `strata token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The user the token authenticates as.
    #[arg(long = "user", value_name = "LOGIN")]
    pub owner: String,
    /// What the token is for (`ci`, `billing service`).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
    /// How long the token works (`30d`, `12h`); for ever if not given.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Print the token and its record as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `strata token list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `strata token revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id (the 16 hex digits after `strata_`, as `token list` shows).
    pub id: String,
}

/// A token as the API lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenView {
    /// The id.
    pub id: String,
    /// The user it authenticates as.
    pub login: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Who created it.
    #[serde(default)]
    pub created_by: String,
    /// When (milliseconds since the Unix epoch).
    #[serde(default)]
    pub created_ms: u64,
    /// When it stops working, if ever.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// Whether it was revoked.
    #[serde(default)]
    pub revoked: bool,
}

impl From<TokenInfo> for TokenView {
    fn from(info: TokenInfo) -> Self {
        TokenView {
            id: info.id,
            login: info.login,
            description: info.description,
            created_by: info.created_by,
            created_ms: info.created_ms,
            expires_ms: info.expires_ms,
            revoked: info.revoked,
        }
    }
}

/// A token just created: its record and the token itself.
#[derive(Debug, Serialize, Deserialize)]
struct CreatedView {
    token: String,
    #[serde(flatten)]
    info: TokenView,
}

#[derive(Deserialize)]
struct TokenList {
    tokens: Vec<TokenView>,
}

/// Where the tokens are: a server, or a store opened here.
enum Backend {
    Remote(Box<ServerClient>),
    Local(Store, Tokens),
}

/// Runs a `strata token` subcommand.
pub async fn run(target: &Target, command: TokenCommand) -> Result<(), CliError> {
    let backend = match target.client()? {
        Some(client) => Backend::Remote(Box::new(client)),
        None => {
            let create = matches!(command, TokenCommand::Create(_));
            let (store, users) = super::user::open_users(target, create).await?;
            let tokens = Tokens::new(store.clone(), users);
            Backend::Local(store, tokens)
        }
    };
    let result = execute(&backend, command).await;
    let closed = match backend {
        Backend::Remote(_) => Ok(()),
        Backend::Local(store, _) => close_store(store).await,
    };
    result.and(closed)
}

async fn execute(backend: &Backend, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create(args) => {
            let created = create(backend, &args).await?;
            print_created(&created, args.json)
        }
        TokenCommand::List(args) => {
            let tokens = match backend {
                Backend::Remote(client) => {
                    let list: TokenList = client.get("/tokens", "list the tokens").await?;
                    list.tokens
                }
                Backend::Local(_, tokens) => tokens
                    .list()
                    .await?
                    .into_iter()
                    .map(TokenView::from)
                    .collect(),
            };
            print_list(&tokens, args.json)
        }
        TokenCommand::Revoke(args) => {
            match backend {
                Backend::Remote(client) => {
                    client
                        .delete(
                            &format!("/tokens/{}", encode(&args.id)),
                            &format!("revoke token {:?}", args.id),
                        )
                        .await?;
                }
                Backend::Local(_, tokens) => tokens.revoke(&args.id).await?,
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "revoked token {:?}", args.id).map_err(output_error)?;
            out.flush().map_err(output_error)
        }
    }
}

async fn create(backend: &Backend, args: &CreateArgs) -> Result<CreatedView, CliError> {
    match backend {
        Backend::Remote(client) => {
            let body = json!({
                "login": args.owner,
                "description": args.description,
                "ttl_seconds": args.ttl.map(|ttl| ttl.as_secs().max(1)),
            });
            let answer: Value = client
                .post(
                    "/tokens",
                    &body,
                    &format!("create a token for user {:?}", args.owner),
                )
                .await?;
            serde_json::from_value(answer).map_err(|error| CliError::Protocol {
                url: client.url().to_owned(),
                message: format!("unexpected answer to a token creation: {error}"),
            })
        }
        Backend::Local(_, tokens) => {
            let created = tokens
                .create(&args.owner, &args.description, args.ttl, LOCAL_CREATOR)
                .await?;
            Ok(CreatedView {
                token: created.token,
                info: TokenView::from(created.info),
            })
        }
    }
}

fn print_created(created: &CreatedView, json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        write_json_line(&mut out, created)?;
    } else {
        writeln!(out, "{}", created.token).map_err(output_error)?;
    }
    out.flush().map_err(output_error)?;
    let expires = created.info.expires_ms.map_or_else(
        || "never expires".to_owned(),
        |ms| format!("expires {}", time_ms(ms)),
    );
    eprintln!(
        "note: token {} for user {:?} ({expires}). This is the only time it is shown: it \
         cannot be shown again, so store it now (clients send it as STRATA_TOKEN or \
         `Authorization: Bearer …`).",
        created.info.id, created.info.login
    );
    Ok(())
}

/// Columns of `token list`.
const TOKEN_COLUMNS: &[&str] = &[
    "ID",
    "USER",
    "DESCRIPTION",
    "CREATED_BY",
    "CREATED",
    "EXPIRES",
    "REVOKED",
];

fn print_list(tokens: &[TokenView], json: bool) -> Result<(), CliError> {
    let mut out = BufWriter::new(std::io::stdout());
    if json {
        for token in tokens {
            write_json_line(&mut out, token)?;
        }
    } else {
        let rows: Vec<Vec<String>> = tokens
            .iter()
            .map(|token| {
                vec![
                    token.id.clone(),
                    token.login.clone(),
                    token.description.clone(),
                    token.created_by.clone(),
                    time_ms(token.created_ms),
                    token.expires_ms.map_or_else(|| "never".to_owned(), time_ms),
                    if token.revoked { "yes" } else { "no" }.to_owned(),
                ]
            })
            .collect();
        Table::new(TOKEN_COLUMNS).write(&mut out, &rows)?;
    }
    out.flush().map_err(output_error)
}
