//! `strata snapshot`: take, list, describe and delete snapshots of volumes.

use anyhow::{Context, Result};
use strata_server::rest::model::{NewSnapshot, SnapshotView};

use crate::cmd::rest::{Api, seg};
use crate::util::{Output, ServerArgs, TokenArgs, emit, human, print_fields, print_table};

/// Manage snapshots: read-only, point-in-time views of a volume.
///
/// Taking a snapshot costs one metadata record, whatever the volume holds: blocks are never
/// modified, so the snapshot and the live volume share every block until the volume
/// overwrites or deletes data. What only a snapshot still holds (`held`) counts against its
/// scope's quota and is freed when the snapshot is deleted.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  strata snapshot create train-data before-cleanup
  strata snapshot list train-data
  strata mount train-data@before-cleanup /mnt/before     (read-only)
  strata volume create experiment-7 --from train-data@before-cleanup   (writable clone)
  strata snapshot delete train-data before-cleanup")]
pub struct SnapshotArgs {
    #[command(subcommand)]
    cmd: SnapshotCmd,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum SnapshotCmd {
    /// Take a snapshot of a volume (admins and editors of its scope). Mount it read-only with
    /// `strata mount VOLUME@SNAPSHOT DIR`.
    Create {
        /// Volume name.
        volume: String,
        /// Snapshot name, unique within the volume: letters, digits, '.', '_' and '-'.
        name: String,
    },
    /// List a volume's snapshots, oldest first, with the bytes each shares with the volume and
    /// holds alone.
    #[command(visible_alias = "ls")]
    List {
        /// Volume name.
        volume: String,
    },
    /// Show one snapshot.
    #[command(visible_alias = "get")]
    Describe {
        /// Volume name.
        volume: String,
        /// Snapshot name.
        name: String,
    },
    /// Delete a snapshot (admins and editors of the volume's scope); frees what only it held.
    /// Snapshots owned by a data volume or a clone go with their owner.
    #[command(visible_alias = "rm")]
    Delete {
        /// Volume name.
        volume: String,
        /// Snapshot name.
        name: String,
    },
}

fn path(volume: &str, name: Option<&str>) -> String {
    match name {
        None => format!("/v1/volumes/{}/snapshots", seg(volume)),
        Some(n) => format!("/v1/volumes/{}/snapshots/{}", seg(volume), seg(n)),
    }
}

fn print_snapshots(out: Output, snaps: &[SnapshotView]) -> Result<()> {
    emit(out, &snaps, || {
        let rows: Vec<Vec<String>> = snaps
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.created.clone(),
                    human(s.bytes),
                    s.inodes.to_string(),
                    human(s.shared_bytes),
                    human(s.held_bytes),
                    s.owner.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print_table(&["NAME", "CREATED", "SIZE", "INODES", "SHARED", "HELD", "OWNER"], &rows);
    })
}

fn describe(out: Output, s: &SnapshotView) -> Result<()> {
    emit(out, s, || {
        print_fields(&[
            ("Name", s.name.clone()),
            ("Volume", s.volume.clone()),
            ("Created", s.created.clone()),
            ("Size", format!("{} ({} bytes) in {} inodes", human(s.bytes), s.bytes, s.inodes)),
            (
                "Shared",
                format!("{} ({} bytes) also in the volume or other snapshots", human(s.shared_bytes), s.shared_bytes),
            ),
            ("Held", format!("{} ({} bytes) only in this snapshot", human(s.held_bytes), s.held_bytes)),
            ("Owner", s.owner.clone().unwrap_or_else(|| "- (a user's)".into())),
            ("Mount", format!("strata mount {}@{} DIR", s.volume, s.name)),
        ]);
    })
}

/// Runs a snapshot subcommand.
pub fn run(args: SnapshotArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let out = args.output;
    crate::runtime()?.block_on(async {
        match args.cmd {
            SnapshotCmd::Create { volume, name } => {
                let s: SnapshotView = api
                    .post(&path(&volume, None), &NewSnapshot { name: name.clone() })
                    .await
                    .with_context(|| format!("cannot snapshot volume {volume} as {name}"))?;
                if out == Output::Table {
                    println!(
                        "snapshot {}@{} taken ({} in {} inodes); mount it with `strata mount {}@{} DIR`",
                        s.volume,
                        s.name,
                        human(s.bytes),
                        s.inodes,
                        s.volume,
                        s.name
                    );
                    return Ok(());
                }
                describe(out, &s)
            }
            SnapshotCmd::List { volume } => {
                let snaps: Vec<SnapshotView> = api
                    .get(&path(&volume, None))
                    .await
                    .with_context(|| format!("cannot list the snapshots of volume {volume}"))?;
                print_snapshots(out, &snaps)
            }
            SnapshotCmd::Describe { volume, name } => {
                let s: SnapshotView = api
                    .get(&path(&volume, Some(&name)))
                    .await
                    .with_context(|| format!("cannot describe snapshot {volume}@{name}"))?;
                describe(out, &s)
            }
            SnapshotCmd::Delete { volume, name } => {
                let s: SnapshotView = api
                    .delete(&path(&volume, Some(&name)))
                    .await
                    .with_context(|| format!("cannot delete snapshot {volume}@{name}"))?;
                if out == Output::Table {
                    println!("deleted snapshot {}@{} (freed {})", s.volume, s.name, human(s.held_bytes));
                    return Ok(());
                }
                describe(out, &s)
            }
        }
    })
}
