//! `strata volume`: list, describe, create, expand, limit (QoS) and delete volumes.

use anyhow::{Context, Result};
use strata_server::rest::model::{AccessModeName, NewVolume, QosSpec, ReclaimName, VolumePatch, VolumeView};
use strata_types::AccessMode;

use crate::cmd::rest::{Api, seg};
use crate::util::{Output, ServerArgs, TokenArgs, emit, human, parse_size, print_fields, print_table, size_or_dash};

/// Manage volumes: top-level namespaces with their own root, quota, storage class and scope.
/// Creating one is checked against the policies of its scope (`strata policy show SCOPE`).
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
    /// List the volumes of the token's scope and below, with their use.
    #[command(visible_alias = "ls")]
    List,
    /// Show one volume.
    #[command(visible_alias = "get")]
    Describe {
        /// Volume name.
        name: String,
    },
    /// Create a volume. The class is the scope's enforced class, else --class, else the scope's
    /// default class, else the cluster's default class; policies may refuse it (the error names
    /// the rule and the scope that set it).
    ///
    /// With --from, the new volume is a writable clone of a volume as it is now
    /// (`--from VOLUME`) or as one of its snapshots saw it (`--from VOLUME@SNAPSHOT`): no data is
    /// copied, both share every block and then go their own ways. Class, capacity and inode
    /// quota default to the source's; the class must keep blocks in the source's store and the
    /// capacity must hold the source's data.
    ///
    /// Examples:
    ///   strata volume create train-data --class fast --capacity 500G --scope ml/vision
    ///   strata volume create experiment-7 --from train-data@2026-05-01
    #[command(verbatim_doc_comment)]
    Create {
        /// Name: letters, digits, '.', '_' and '-', up to 253 characters.
        name: String,
        /// Storage class (see `strata storageclass list`).
        #[arg(long)]
        class: Option<String>,
        /// Byte quota (e.g. 100G); none by default. Needed where a policy sets a maximum size
        /// or a quota.
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Inode quota; none by default.
        #[arg(long)]
        inodes: Option<u64>,
        /// Scope the volume belongs to: DEPT or DEPT/PROJECT (default: the token's).
        #[arg(long)]
        scope: Option<String>,
        /// How it may be attached: ReadWriteMany (RWX, default), ReadOnlyMany (ROX) or
        /// ReadWriteOnce (RWO).
        #[arg(long, value_parser = parse_access_mode)]
        access_mode: Option<AccessModeName>,
        /// What deleting the volume does to its data: delete or retain (default: the class's).
        #[arg(long, value_parser = parse_reclaim)]
        reclaim: Option<ReclaimName>,
        /// Clone VOLUME (as it is now) or VOLUME@SNAPSHOT (see `strata snapshot list VOLUME`).
        #[arg(long, value_name = "VOLUME[@SNAPSHOT]")]
        from: Option<String>,
    },
    /// Change a volume's capacity: grow it (the class must allow expansion and every quota have
    /// room) or shrink it (not below the bytes in use). 0 removes the limit.
    #[command(visible_alias = "resize")]
    Expand {
        /// Volume name.
        name: String,
        /// New capacity (e.g. 200G).
        #[arg(long, value_parser = parse_size)]
        capacity: u64,
    },
    /// Set a volume's own QoS limits per mount, replacing its class's, or clear them (--clear)
    /// to go back to the class's. Mounted clients take the change up within seconds, without
    /// remounting. A limit not given keeps the volume's current one (none at first); 0 means
    /// unlimited.
    Qos {
        /// Volume name.
        name: String,
        /// Data rate limit per mount in bytes per second, e.g. 100M (0: unlimited).
        #[arg(long, value_parser = parse_size, value_name = "SIZE", conflicts_with = "clear")]
        max_bandwidth: Option<u64>,
        /// Operations per second per mount (0: unlimited).
        #[arg(long, value_name = "N", conflicts_with = "clear")]
        max_iops: Option<u64>,
        /// Remove the volume's own limits: its class's apply again.
        #[arg(long)]
        clear: bool,
    },
    /// Delete a volume (refused while mounted); its data goes unless its reclaim policy is retain.
    #[command(visible_alias = "rm")]
    Delete {
        /// Volume name.
        name: String,
    },
}

/// Parses an access mode (`ReadWriteMany`, `rwx`, ...).
pub fn parse_access_mode(s: &str) -> Result<AccessModeName, String> {
    AccessMode::parse(s).map(Into::into).map_err(|e| e.to_string())
}

/// Parses a reclaim policy.
pub fn parse_reclaim(s: &str) -> Result<ReclaimName, String> {
    match s.to_ascii_lowercase().as_str() {
        "delete" => Ok(ReclaimName::Delete),
        "retain" => Ok(ReclaimName::Retain),
        _ => Err(format!("reclaim {s:?} is not one of delete, retain")),
    }
}

fn print_volumes(out: Output, vols: &[VolumeView]) -> Result<()> {
    emit(out, &vols, || {
        let rows: Vec<Vec<String>> = vols
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.scope.clone(),
                    v.class.clone(),
                    size_or_dash(v.capacity),
                    human(v.used_bytes),
                    if v.inode_limit == 0 {
                        v.used_inodes.to_string()
                    } else {
                        format!("{}/{}", v.used_inodes, v.inode_limit)
                    },
                    v.access_mode.as_str().into(),
                    v.reclaim.as_str().into(),
                ]
            })
            .collect();
        print_table(&["NAME", "SCOPE", "CLASS", "CAPACITY", "USED", "INODES", "ACCESS MODE", "RECLAIM"], &rows);
    })
}

fn describe(out: Output, v: &VolumeView) -> Result<()> {
    emit(out, v, || {
        print_fields(&[
            ("Name", v.name.clone()),
            ("Id", v.id.to_string()),
            ("Scope", v.scope.clone()),
            ("Class", v.class.clone()),
            (
                "Capacity",
                if v.capacity == 0 { "unlimited".into() } else { format!("{} ({})", human(v.capacity), v.capacity) },
            ),
            ("Used", format!("{} ({} bytes)", human(v.used_bytes), v.used_bytes)),
            (
                "Inodes",
                if v.inode_limit == 0 {
                    format!("{} (no limit)", v.used_inodes)
                } else {
                    format!("{} of {}", v.used_inodes, v.inode_limit)
                },
            ),
            ("Access mode", v.access_mode.as_str().into()),
            ("Reclaim", v.reclaim.as_str().into()),
            ("QoS", qos_text(v)),
            ("Block size", human(u64::from(v.block_size))),
            ("Compression", v.compression.clone()),
            ("Store", v.store.clone()),
            ("Created", v.created.clone()),
        ]);
    })
}

/// The QoS limits per mount a volume has: its own, or its class's.
fn qos_text(v: &VolumeView) -> String {
    match &v.qos {
        None => format!("the class's (see `strata storageclass describe {}`)", v.class),
        Some(q) => {
            let bw = if q.bytes_per_sec == 0 {
                "unlimited bandwidth".to_string()
            } else {
                format!("{}/s ({} bytes/s)", human(q.bytes_per_sec), q.bytes_per_sec)
            };
            let ops = if q.ops_per_sec == 0 { "unlimited IOPS".to_string() } else { format!("{} IOPS", q.ops_per_sec) };
            format!("{bw}, {ops} (the volume's own, replacing the class's)")
        }
    }
}

/// Runs a volume subcommand.
pub fn run(args: VolumeArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let out = args.output;
    crate::runtime()?.block_on(async {
        match args.cmd {
            VolumeCmd::List => {
                let vols: Vec<VolumeView> = api.get("/v1/volumes").await.context("cannot list volumes")?;
                print_volumes(out, &vols)
            }
            VolumeCmd::Describe { name } => {
                let v: VolumeView = api
                    .get(&format!("/v1/volumes/{}", seg(&name)))
                    .await
                    .with_context(|| format!("cannot describe volume {name}"))?;
                describe(out, &v)
            }
            VolumeCmd::Create { name, class, capacity, inodes, scope, access_mode, reclaim, from } => {
                let req = NewVolume {
                    name: name.clone(),
                    scope,
                    class,
                    capacity: capacity.unwrap_or(0),
                    inodes: inodes.unwrap_or(0),
                    access_mode,
                    reclaim,
                    from: from.clone(),
                };
                let v: VolumeView = api.post("/v1/volumes", &req).await.with_context(|| match &from {
                    Some(f) => format!("cannot clone {f} as volume {name}"),
                    None => format!("cannot create volume {name}"),
                })?;
                if out == Output::Table {
                    match &from {
                        Some(f) => println!(
                            "volume {} cloned from {f} in scope {} (class {}, {} shared)",
                            v.name,
                            v.scope,
                            v.class,
                            human(v.used_bytes)
                        ),
                        None => println!("volume {} created in scope {} (class {})", v.name, v.scope, v.class),
                    }
                    return Ok(());
                }
                describe(out, &v)
            }
            VolumeCmd::Expand { name, capacity } => {
                let v: VolumeView = api
                    .patch(&format!("/v1/volumes/{}", seg(&name)), &VolumePatch { capacity })
                    .await
                    .with_context(|| format!("cannot resize volume {name}"))?;
                if out == Output::Table {
                    let cap = if v.capacity == 0 { "unlimited".to_string() } else { human(v.capacity) };
                    println!("volume {} now has capacity {cap} ({} in use)", v.name, human(v.used_bytes));
                    return Ok(());
                }
                describe(out, &v)
            }
            VolumeCmd::Qos { name, max_bandwidth, max_iops, clear } => {
                let path = format!("/v1/volumes/{}/qos", seg(&name));
                let v: VolumeView = if clear {
                    api.delete(&path).await.with_context(|| format!("cannot clear the QoS of volume {name}"))?
                } else {
                    if max_bandwidth.is_none() && max_iops.is_none() {
                        anyhow::bail!("say --max-bandwidth, --max-iops or both, or --clear");
                    }
                    let now: VolumeView = api
                        .get(&format!("/v1/volumes/{}", seg(&name)))
                        .await
                        .with_context(|| format!("cannot describe volume {name}"))?;
                    let cur = now.qos.unwrap_or_default();
                    let spec = QosSpec {
                        bytes_per_sec: max_bandwidth.unwrap_or(cur.bytes_per_sec),
                        ops_per_sec: max_iops.unwrap_or(cur.ops_per_sec),
                    };
                    api.put(&path, &spec).await.with_context(|| format!("cannot set the QoS of volume {name}"))?
                };
                if out == Output::Table {
                    println!("volume {}: QoS {}", v.name, qos_text(&v));
                    return Ok(());
                }
                describe(out, &v)
            }
            VolumeCmd::Delete { name } => {
                let v: VolumeView = api
                    .delete(&format!("/v1/volumes/{}", seg(&name)))
                    .await
                    .with_context(|| format!("cannot delete volume {name}"))?;
                if out == Output::Table {
                    println!("deleted volume {} (reclaim: {})", v.name, v.reclaim.as_str());
                    return Ok(());
                }
                describe(out, &v)
            }
        }
    })
}
