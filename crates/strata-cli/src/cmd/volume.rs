//! `strata volume`: create, list and delete volumes.

use std::time::Duration;

use anyhow::{Context, Result};
use strata_proto::pb;

use crate::util::{ServerArgs, TokenArgs, human, parse_size};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Manage volumes (top-level namespaces with their own root, quota and reclaim policy).
#[derive(clap::Args, Debug)]
pub struct VolumeArgs {
    #[command(subcommand)]
    cmd: VolumeCmd,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum VolumeCmd {
    /// Create a volume.
    Create {
        /// Name: letters, digits, '.', '_' and '-', up to 253 characters.
        name: String,
        /// Byte quota (e.g. 100G); none by default.
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Inode quota; none by default.
        #[arg(long)]
        inodes: Option<u64>,
        /// Storage class (default: per policy, else the default class).
        #[arg(long)]
        class: Option<String>,
        /// Scope the volume belongs to (default: the token's).
        #[arg(long)]
        scope: Option<String>,
        /// What deleting the volume does to its data: delete or retain (default: the class's).
        #[arg(long)]
        reclaim: Option<String>,
    },
    /// List volumes with their use.
    List,
    /// Delete a volume (refused while mounted); its data goes unless its reclaim policy is retain.
    Delete {
        /// Volume name.
        name: String,
    },
}

fn print_volumes(out: Output, vols: &[pb::VolumeInfo]) -> Result<()> {
    if out == Output::Json {
        let v: Vec<_> = vols
            .iter()
            .map(|v| {
                serde_json::json!({
                    "name": v.name, "id": v.id, "class": v.class, "capacity": v.capacity,
                    "inode_limit": v.inode_limit, "used_bytes": v.used_bytes, "used_inodes": v.used_inodes,
                    "block_size": v.block_size, "reclaim": v.reclaim, "scope": v.scope, "created": v.created_sec,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<24} {:<10} {:>12} {:>12} {:>10} {:<8}", "NAME", "CLASS", "CAPACITY", "USED", "INODES", "RECLAIM");
    for v in vols {
        let cap = if v.capacity == 0 { "-".to_string() } else { human(v.capacity) };
        println!(
            "{:<24} {:<10} {:>12} {:>12} {:>10} {:<8}",
            v.name,
            v.class,
            cap,
            human(v.used_bytes),
            v.used_inodes,
            v.reclaim
        );
    }
    Ok(())
}

/// Runs a volume subcommand.
pub fn run(args: VolumeArgs) -> Result<()> {
    let token = args.token.resolve()?;
    let rt = crate::runtime()?;
    rt.block_on(async {
        let (ch, auth) = strata_vfs::connect(&args.server.server, &token, Duration::from_secs(5)).await?;
        let mut admin = strata_vfs::admin(ch, auth);
        let fail = |s: tonic::Status| strata_vfs::VfsError::from_status(&s);
        match args.cmd {
            VolumeCmd::Create { name, capacity, inodes, class, scope, reclaim } => {
                let v = admin
                    .create_volume(pb::CreateVolumeReq {
                        name: name.clone(),
                        class: class.unwrap_or_default(),
                        capacity: capacity.unwrap_or(0),
                        inode_limit: inodes.unwrap_or(0),
                        reclaim: reclaim.unwrap_or_default(),
                        scope: scope.unwrap_or_default(),
                        access_mode: String::new(),
                    })
                    .await
                    .map_err(fail)
                    .with_context(|| format!("cannot create volume {name}"))?
                    .into_inner();
                print_volumes(args.output, &[v])
            }
            VolumeCmd::List => {
                let l = admin.list_volumes(pb::Empty {}).await.map_err(fail).context("cannot list volumes")?;
                print_volumes(args.output, &l.into_inner().volumes)
            }
            VolumeCmd::Delete { name } => {
                let v = admin
                    .delete_volume(pb::VolumeName { name: name.clone() })
                    .await
                    .map_err(fail)
                    .with_context(|| format!("cannot delete volume {name}"))?
                    .into_inner();
                if args.output == Output::Json {
                    println!("{}", serde_json::json!({"deleted": v.name, "reclaim": v.reclaim}));
                } else {
                    println!("deleted volume {} (reclaim: {})", v.name, v.reclaim);
                }
                Ok(())
            }
        }
    })
}
