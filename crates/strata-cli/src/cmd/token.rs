//! `strata token`: list, issue and revoke access tokens.

use std::time::Duration;

use anyhow::{Context, Result};
use strata_server::rest::model::{IssuedTokenView, NewToken, RoleName, TokenView};

use crate::cmd::rest::{Api, seg};
use crate::util::{Output, ServerArgs, TokenArgs, emit, parse_ttl, print_table};

/// Manage access tokens. A token has a role in a scope: `admin` does everything there
/// (scopes, tokens, policies, volumes), `editor` creates, grows and deletes volumes, `viewer`
/// lists and reads, `node` is for mounts. Only admins list, issue and revoke tokens, in their
/// scope and below.
#[derive(clap::Args, Debug)]
pub struct TokenCmdArgs {
    #[command(subcommand)]
    cmd: TokenCmd,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCmd {
    /// List the tokens of the token's scope and below (never their secrets).
    #[command(visible_alias = "ls")]
    List,
    /// Issue a token. Its secret is printed once: store it (e.g. in a file for --token-file).
    Create {
        /// A name to recognise it by.
        name: String,
        /// Role: admin, editor, viewer or node.
        #[arg(long, value_enum)]
        role: Role,
        /// Scope it acts in: cluster, DEPT or DEPT/PROJECT (default: the issuing token's).
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime, e.g. 12h, 30d, 1y (default: no expiry).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Write the secret to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<std::path::PathBuf>,
    },
    /// Revoke a token by its id (see `strata token list`); it stops working at once.
    #[command(visible_alias = "rm")]
    Revoke {
        /// Token id.
        id: String,
    },
}

/// Token roles.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Role {
    /// Everything in its scope and below.
    Admin,
    /// Create, grow and delete volumes; read and write data.
    Editor,
    /// List and read.
    Viewer,
    /// Mount clients: data access only.
    Node,
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => RoleName::Admin,
            Role::Editor => RoleName::Editor,
            Role::Viewer => RoleName::Viewer,
            Role::Node => RoleName::Node,
        }
    }
}

/// Runs a token subcommand.
pub fn run(args: TokenCmdArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let out = args.output;
    crate::runtime()?.block_on(async {
        match args.cmd {
            TokenCmd::List => {
                let tokens: Vec<TokenView> = api.get("/v1/tokens").await.context("cannot list tokens")?;
                emit(out, &tokens, || {
                    let rows: Vec<Vec<String>> = tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.name.clone(),
                                t.role.as_str().into(),
                                t.scope.clone(),
                                t.created.clone(),
                                t.expires.clone().unwrap_or_else(|| "never".into()),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "ROLE", "SCOPE", "CREATED", "EXPIRES"], &rows);
                })
            }
            TokenCmd::Create { name, role, scope, ttl, secret_file } => {
                // Refuse an existing file before issuing, so no secret is left unstored.
                let file = match &secret_file {
                    Some(p) => Some(new_secret_file(p)?),
                    None => None,
                };
                let req =
                    NewToken { name: name.clone(), role: role.into(), scope, ttl_seconds: ttl.map(|d| d.as_secs()) };
                let t: IssuedTokenView =
                    api.post("/v1/tokens", &req).await.with_context(|| format!("cannot create token {name}"))?;
                if let (Some(mut f), Some(p)) = (file, &secret_file) {
                    use std::io::Write;
                    writeln!(f, "{}", t.token)
                        .and_then(|_| f.sync_all())
                        .with_context(|| format!("cannot write the secret to {}", p.display()))?;
                    let shown = TokenView::from_issued(&t);
                    return emit(out, &shown, || {
                        println!(
                            "token {} ({}) issued: {} in scope {}, secret in {}",
                            t.id,
                            t.name,
                            t.role.as_str(),
                            t.scope,
                            p.display()
                        )
                    });
                }
                emit(out, &t, || {
                    println!(
                        "token {} ({}) issued: {} in scope {}, expires {}",
                        t.id,
                        t.name,
                        t.role.as_str(),
                        t.scope,
                        t.expires.as_deref().unwrap_or("never")
                    );
                    println!("{}", t.token);
                    println!("This secret is not shown again: store it now (e.g. in a file for --token-file).");
                })
            }
            TokenCmd::Revoke { id } => {
                let t: TokenView = api
                    .delete(&format!("/v1/tokens/{}", seg(&id)))
                    .await
                    .with_context(|| format!("cannot revoke token {id}"))?;
                emit(out, &t, || println!("revoked token {} ({}, {} in {})", t.id, t.name, t.role.as_str(), t.scope))
            }
        }
    })
}

/// Creates a new file readable by its owner only.
fn new_secret_file(p: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .with_context(|| format!("cannot create secret file {}", p.display()))
}
