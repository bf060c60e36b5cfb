//! `strata datavolume`: named, versioned, read-only datasets made from volumes and shared
//! between scopes.

use anyhow::{Context, Result};
use strata_server::rest::model::{DataVolumeView, NewDataVolume};

use crate::cmd::rest::{Api, scope_path, seg};
use crate::util::{Output, ServerArgs, TokenArgs, emit, human, print_fields, print_table};

/// Manage data volumes: named, read-only datasets with versions, owned by a scope and shared
/// with other scopes.
///
/// Each version is a snapshot of the source volume (no data is copied) and outlives it. Who may
/// do what: admins and editors of the owning scope create, update (new version) and delete;
/// only admins of the owning scope share and unshare. A scope it is shared with (and every
/// scope below it) may list, describe and mount it read-only, never change or re-share it; other
/// scopes do not see it.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  strata datavolume create imagenet --from imagenet-raw --scope ml --description \"ILSVRC 2012\"
  strata datavolume share imagenet research/nlp
  strata mount dv:imagenet /mnt/imagenet          (the latest version, read-only)
  strata mount dv:imagenet@1 /mnt/imagenet-v1     (version 1)
  strata datavolume update imagenet               (version 2 from the volume as it is now)
  strata datavolume delete imagenet --version 1")]
pub struct DataVolumeArgs {
    #[command(subcommand)]
    cmd: DataVolumeCmd,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum DataVolumeCmd {
    /// Make a data volume from a volume as it is now (version 1). Admins and editors of the
    /// owning scope; the volume must lie within it.
    Create {
        /// Name: letters, digits, '.', '_' and '-', up to 253 characters.
        name: String,
        /// The volume its versions are taken from.
        #[arg(long, value_name = "VOLUME")]
        from: String,
        /// Owning scope: DEPT or DEPT/PROJECT (default: the token's).
        #[arg(long)]
        scope: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the data volumes the token's scope owns and those shared with it (ORIGIN).
    #[command(visible_alias = "ls")]
    List,
    /// Show a data volume: versions with their sizes and dates, shares, source volume.
    #[command(visible_alias = "get")]
    Describe {
        /// Data volume name.
        name: String,
    },
    /// Make a new version from the source volume as it is now; `dv:NAME` mounts it from then on.
    Update {
        /// Data volume name.
        name: String,
    },
    /// Delete a data volume with every version, or one version (--version).
    #[command(visible_alias = "rm")]
    Delete {
        /// Data volume name.
        name: String,
        /// Delete only this version.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Share a data volume with a scope and every scope below it (admins of the owning scope).
    Share {
        /// Data volume name.
        name: String,
        /// Scope: cluster, DEPT or DEPT/PROJECT.
        scope: String,
    },
    /// End a share; mounts through it fail from their next call (admins of the owning scope).
    Unshare {
        /// Data volume name.
        name: String,
        /// Scope.
        scope: String,
    },
}

fn print_list(out: Output, dvs: &[DataVolumeView]) -> Result<()> {
    emit(out, &dvs, || {
        let rows: Vec<Vec<String>> = dvs
            .iter()
            .map(|d| {
                let latest = d.latest.and_then(|n| d.versions.iter().find(|v| v.number == n));
                vec![
                    d.name.clone(),
                    d.scope.clone(),
                    d.origin.as_str().into(),
                    latest.map(|v| v.number.to_string()).unwrap_or_else(|| "-".into()),
                    latest.map(|v| human(v.bytes)).unwrap_or_else(|| "-".into()),
                    d.versions.len().to_string(),
                    if d.shares.is_empty() { "-".into() } else { d.shares.join(",") },
                    d.source_volume.clone(),
                ]
            })
            .collect();
        print_table(&["NAME", "SCOPE", "ORIGIN", "LATEST", "SIZE", "VERSIONS", "SHARED WITH", "SOURCE"], &rows);
    })
}

fn describe(out: Output, d: &DataVolumeView) -> Result<()> {
    emit(out, d, || {
        print_fields(&[
            ("Name", d.name.clone()),
            ("Scope", d.scope.clone()),
            ("Origin", d.origin.as_str().into()),
            ("Description", d.description.clone()),
            ("Source volume", d.source_volume.clone()),
            ("Shared with", if d.shares.is_empty() { "-".into() } else { d.shares.join(", ") }),
            ("Created", d.created.clone()),
            (
                "Mount",
                match d.latest {
                    Some(n) => format!("strata mount dv:{} DIR (version {n}), or dv:{}@N", d.name, d.name),
                    None => "no versions left".into(),
                },
            ),
        ]);
        println!();
        let rows: Vec<Vec<String>> = d
            .versions
            .iter()
            .map(|v| vec![v.number.to_string(), v.created.clone(), human(v.bytes), v.inodes.to_string()])
            .collect();
        print_table(&["VERSION", "CREATED", "SIZE", "INODES"], &rows);
    })
}

/// Runs a datavolume subcommand.
pub fn run(args: DataVolumeArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let out = args.output;
    let one = |name: &str| format!("/v1/datavolumes/{}", seg(name));
    crate::runtime()?.block_on(async {
        match args.cmd {
            DataVolumeCmd::Create { name, from, scope, description } => {
                let req = NewDataVolume { name: name.clone(), from, scope, description };
                let d: DataVolumeView = api
                    .post("/v1/datavolumes", &req)
                    .await
                    .with_context(|| format!("cannot create data volume {name}"))?;
                if out == Output::Table {
                    let size = d.versions.last().map(|v| human(v.bytes)).unwrap_or_default();
                    println!(
                        "data volume {} created in scope {} from volume {} (version 1, {size}); \
                         mount it with `strata mount dv:{} DIR`",
                        d.name, d.scope, d.source_volume, d.name
                    );
                    return Ok(());
                }
                describe(out, &d)
            }
            DataVolumeCmd::List => {
                let dvs: Vec<DataVolumeView> = api.get("/v1/datavolumes").await.context("cannot list data volumes")?;
                print_list(out, &dvs)
            }
            DataVolumeCmd::Describe { name } => {
                let d: DataVolumeView =
                    api.get(&one(&name)).await.with_context(|| format!("cannot describe data volume {name}"))?;
                describe(out, &d)
            }
            DataVolumeCmd::Update { name } => {
                let d: DataVolumeView = api
                    .post(&format!("{}/versions", one(&name)), &serde_json::json!({}))
                    .await
                    .with_context(|| format!("cannot update data volume {name}"))?;
                if out == Output::Table {
                    match d.versions.last() {
                        Some(v) => println!("data volume {}: version {} made ({})", d.name, v.number, human(v.bytes)),
                        None => println!("data volume {} updated", d.name),
                    }
                    return Ok(());
                }
                describe(out, &d)
            }
            DataVolumeCmd::Delete { name, version } => {
                let (path, what) = match version {
                    Some(n) => (format!("{}/versions/{n}", one(&name)), format!("version {n} of data volume {name}")),
                    None => (one(&name), format!("data volume {name}")),
                };
                let d: DataVolumeView = api.delete(&path).await.with_context(|| format!("cannot delete {what}"))?;
                if out == Output::Table {
                    println!("deleted {what}");
                    return Ok(());
                }
                describe(out, &d)
            }
            DataVolumeCmd::Share { name, scope } => {
                let d: DataVolumeView = api
                    .put(&format!("{}/shares/{}", one(&name), scope_path(&scope)), &serde_json::json!({}))
                    .await
                    .with_context(|| format!("cannot share data volume {name} with scope {scope}"))?;
                if out == Output::Table {
                    println!("data volume {} shared with scope {scope} (and the scopes below it)", d.name);
                    return Ok(());
                }
                describe(out, &d)
            }
            DataVolumeCmd::Unshare { name, scope } => {
                let d: DataVolumeView = api
                    .delete(&format!("{}/shares/{}", one(&name), scope_path(&scope)))
                    .await
                    .with_context(|| format!("cannot unshare data volume {name} from scope {scope}"))?;
                if out == Output::Table {
                    println!("data volume {} no longer shared with scope {scope}", d.name);
                    return Ok(());
                }
                describe(out, &d)
            }
        }
    })
}
