//! `strata status`: what the server is doing.

use anyhow::{Context, Result};
use strata_server::rest::model::StatusView;

use crate::cmd::rest::Api;
use crate::util::{Output, ServerArgs, TokenArgs, emit, print_table};

/// Show server status: version, metadata engine, connected clients (of the volumes the token
/// can see) and, for cluster tokens, the garbage waiting for collection.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

/// Prints the status.
pub fn run(args: StatusArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    crate::runtime()?.block_on(async {
        let s: StatusView = api.get("/v1/status").await.context("status")?;
        emit(args.output, &s, || {
            let dir = s.data_dir.as_deref().map(|d| format!(", data in {d}")).unwrap_or_default();
            println!("server:   strata {} ({} metadata{dir}), up since {}", s.version, s.engine, s.started);
            if let Some(p) = s.pending_slices {
                println!("garbage:  {p} slices waiting for block deletion");
            }
            println!("clients:  {}", s.sessions.len());
            if !s.sessions.is_empty() {
                let rows: Vec<Vec<String>> = s
                    .sessions
                    .iter()
                    .map(|x| vec![x.id.clone(), x.volume.clone(), x.client.clone(), x.since.clone()])
                    .collect();
                print_table(&["SESSION", "VOLUME", "CLIENT", "SINCE"], &rows);
            }
        })
    })
}
