//! `strata status`: what the server is doing.

use std::time::Duration;

use anyhow::{Context, Result};
use strata_proto::pb;

use crate::util::{ServerArgs, TokenArgs};

/// Show server status: version, metadata engine, connected clients, pending garbage.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: crate::cmd::volume::Output,
}

/// Prints the status.
pub fn run(args: StatusArgs) -> Result<()> {
    let token = args.token.resolve()?;
    let rt = crate::runtime()?;
    rt.block_on(async {
        let (ch, auth) = strata_vfs::connect(&args.server.server, &token, Duration::from_secs(5)).await?;
        let s = strata_vfs::admin(ch, auth)
            .status(pb::Empty {})
            .await
            .map_err(|s| strata_vfs::VfsError::from_status(&s))
            .context("status")?
            .into_inner();
        if args.output != crate::cmd::volume::Output::Table {
            let v = serde_json::json!({
                "version": s.version, "engine": s.engine, "started": s.started_sec, "data_dir": s.data_dir,
                "pending_slices": s.pending_slices,
                "sessions": s.sessions.iter().map(|x| serde_json::json!({
                    "id": format!("{:016x}", x.id), "volume": x.volume, "client": x.client,
                    "since": x.since_sec, "last_seen": x.last_seen_sec})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!("server:   strata {} ({} metadata, data in {})", s.version, s.engine, s.data_dir);
        println!("garbage:  {} slices waiting for block deletion", s.pending_slices);
        println!("clients:  {}", s.sessions.len());
        if !s.sessions.is_empty() {
            println!("{:<18} {:<20} CLIENT", "SESSION", "VOLUME");
            for x in &s.sessions {
                println!("{:<18} {:<20} {}", format!("{:016x}", x.id), x.volume, x.client);
            }
        }
        Ok(())
    })
}
