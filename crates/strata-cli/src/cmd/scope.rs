//! `strata scope`: list, create and delete scopes (the cluster, departments, projects).

use anyhow::{Context, Result};
use strata_server::rest::model::{NewScope, ScopeKindName, ScopeView};

use crate::cmd::rest::{Api, scope_path};
use crate::util::{Output, ServerArgs, TokenArgs, emit, print_table};

/// Manage scopes. Volumes, tokens and policies belong to a scope: `cluster`, a department
/// (`DEPT`) or a project (`DEPT/PROJECT`). A token acts in its scope and every scope below it.
#[derive(clap::Args, Debug)]
pub struct ScopeArgs {
    #[command(subcommand)]
    cmd: ScopeCmd,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum ScopeCmd {
    /// List the token's scope and the scopes below it.
    #[command(visible_alias = "ls")]
    List,
    /// Create a department (`DEPT`) or a project (`DEPT/PROJECT`; the department must exist).
    Create {
        /// `DEPT` or `DEPT/PROJECT`; each part up to 63 letters, digits, '.', '_' or '-'.
        path: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete an empty scope (no child scopes, volumes or tokens) and its policy.
    #[command(visible_alias = "rm")]
    Delete {
        /// `DEPT` or `DEPT/PROJECT`.
        path: String,
    },
}

fn kind(k: ScopeKindName) -> &'static str {
    match k {
        ScopeKindName::Cluster => "cluster",
        ScopeKindName::Department => "department",
        ScopeKindName::Project => "project",
    }
}

/// Runs a scope subcommand.
pub fn run(args: ScopeArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let out = args.output;
    crate::runtime()?.block_on(async {
        match args.cmd {
            ScopeCmd::List => {
                let scopes: Vec<ScopeView> = api.get("/v1/scopes").await.context("cannot list scopes")?;
                emit(out, &scopes, || {
                    let rows: Vec<Vec<String>> = scopes
                        .iter()
                        .map(|s| vec![s.path.clone(), kind(s.kind).into(), s.description.clone()])
                        .collect();
                    print_table(&["PATH", "KIND", "DESCRIPTION"], &rows);
                })
            }
            ScopeCmd::Create { path, description } => {
                let s: ScopeView = api
                    .post("/v1/scopes", &NewScope { path: path.clone(), description })
                    .await
                    .with_context(|| format!("cannot create scope {path}"))?;
                emit(out, &s, || println!("{} {} created", kind(s.kind), s.path))
            }
            ScopeCmd::Delete { path } => {
                let s: ScopeView = api
                    .delete(&format!("/v1/scopes/{}", scope_path(&path)))
                    .await
                    .with_context(|| format!("cannot delete scope {path}"))?;
                emit(out, &s, || println!("deleted {} {}", kind(s.kind), s.path))
            }
        }
    })
}
