//! `strata storageclass`: list, describe, create, update and delete storage classes.

use anyhow::{Context, Result, bail};
use strata_server::rest::model::{
    AccessModeName, BackendSpec, ClassSettings, ClassView, CompressionName, NewClass, ReclaimName,
};

use crate::cmd::rest::{Api, seg};
use crate::cmd::volume::{parse_access_mode, parse_reclaim};
use crate::util::{Output, ServerArgs, TokenArgs, emit, human, parse_size, print_fields, print_table, size_or_dash};

/// Manage storage classes: the tiers volumes are provisioned in (backend, block size,
/// compression, cache defaults, per-mount limits, reclaim policy, access modes, expansion).
/// Anyone may list them; only cluster admins change them.
#[derive(clap::Args, Debug)]
pub struct StorageClassArgs {
    #[command(subcommand)]
    cmd: ClassCmd,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum ClassCmd {
    /// List storage classes.
    #[command(visible_alias = "ls")]
    List,
    /// Show one storage class.
    #[command(visible_alias = "get")]
    Describe {
        /// Class name.
        name: String,
    },
    /// Create a storage class; unset settings take their defaults (blocks in the server's data
    /// directory, 4 MiB blocks, no compression, every access mode, expansion allowed).
    Create {
        /// Name: letters, digits, '.', '_' and '-', up to 63 characters.
        name: String,
        #[command(flatten)]
        flags: ClassFlags,
    },
    /// Change settings of a storage class; the others keep their values. Existing volumes keep
    /// their block size and compression; limits and cache defaults apply at their next mount.
    Update {
        /// Class name.
        name: String,
        #[command(flatten)]
        flags: ClassFlags,
    },
    /// Delete a storage class that no volume uses and that is not the default.
    #[command(visible_alias = "rm")]
    Delete {
        /// Class name.
        name: String,
    },
}

/// Settings of a class, each optional.
#[derive(clap::Args, Debug, Default)]
struct ClassFlags {
    /// Free text shown by describe.
    #[arg(long)]
    description: Option<String>,
    /// Where blocks live: local (a directory; --path) or s3 (a bucket; --bucket, --endpoint,
    /// --prefix, --region).
    #[arg(long, value_parser = ["local", "s3"])]
    backend: Option<String>,
    /// Local backend: absolute directory for blocks (default: the server's data directory).
    #[arg(long, value_name = "DIR")]
    path: Option<String>,
    /// S3 backend: endpoint URL (empty for AWS).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// S3 backend: bucket.
    #[arg(long)]
    bucket: Option<String>,
    /// S3 backend: key prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// S3 backend: region.
    #[arg(long)]
    region: Option<String>,
    /// Block size of new volumes: a power of two from 64K to 64M (default 4M).
    #[arg(long, value_parser = parse_size)]
    block_size: Option<u64>,
    /// Block compression of new volumes: none, lz4 or zstd.
    #[arg(long, value_parser = ["none", "lz4", "zstd"])]
    compression: Option<String>,
    /// Default memory block cache of mounts (0: the mount's own default).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    cache_size: Option<u64>,
    /// Default largest read-ahead window of mounts (0: the mount's own default).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    readahead: Option<u64>,
    /// Per-mount data rate limit in bytes per second, e.g. 500M (0: unlimited).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    max_bandwidth: Option<u64>,
    /// Per-mount operations per second (0: unlimited).
    #[arg(long, value_name = "N")]
    max_iops: Option<u64>,
    /// Default reclaim policy of its volumes: delete or retain.
    #[arg(long, value_parser = parse_reclaim)]
    reclaim: Option<ReclaimName>,
    /// Access modes its volumes may have, comma-separated: ReadWriteMany (RWX), ReadOnlyMany
    /// (ROX), ReadWriteOnce (RWO).
    #[arg(long, value_delimiter = ',', value_parser = parse_access_mode, value_name = "MODES")]
    access_modes: Option<Vec<AccessModeName>>,
    /// Whether its volumes may grow after creation (`--allow-expansion false` forbids it).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_expansion: Option<bool>,
    /// Make it the default class (the one used when a request names none).
    #[arg(long = "default")]
    is_default: bool,
}

impl ClassFlags {
    fn apply(self, s: &mut ClassSettings) -> Result<()> {
        if let Some(d) = self.description {
            s.description = d;
        }
        let s3_flag =
            self.endpoint.is_some() || self.bucket.is_some() || self.prefix.is_some() || self.region.is_some();
        let kind = match (self.backend.as_deref(), &s.backend) {
            (Some(k), _) => k.to_string(),
            (None, _) if self.path.is_some() => "local".into(),
            (None, BackendSpec::S3 { .. }) => "s3".into(),
            (None, BackendSpec::Local { .. }) if s3_flag => "s3".into(),
            (None, BackendSpec::Local { .. }) => "local".into(),
        };
        match kind.as_str() {
            "local" => {
                if s3_flag {
                    bail!("--endpoint, --bucket, --prefix and --region are for --backend s3");
                }
                let keep = match &s.backend {
                    BackendSpec::Local { path } => path.clone(),
                    BackendSpec::S3 { .. } => None,
                };
                s.backend = BackendSpec::Local { path: self.path.or(keep) };
            }
            _ => {
                if self.path.is_some() {
                    bail!("--path is for --backend local");
                }
                let (e, b, p, r) = match &s.backend {
                    BackendSpec::S3 { endpoint, bucket, prefix, region } => {
                        (endpoint.clone(), bucket.clone(), prefix.clone(), region.clone())
                    }
                    BackendSpec::Local { .. } => Default::default(),
                };
                let bucket = self.bucket.unwrap_or(b);
                if bucket.is_empty() {
                    bail!("--backend s3 needs --bucket");
                }
                s.backend = BackendSpec::S3 {
                    endpoint: self.endpoint.unwrap_or(e),
                    bucket,
                    prefix: self.prefix.unwrap_or(p),
                    region: self.region.unwrap_or(r),
                };
            }
        }
        if let Some(b) = self.block_size {
            s.block_size = Some(u32::try_from(b).context("--block-size is at most 64M")?);
        }
        if let Some(c) = self.compression {
            s.compression = match c.as_str() {
                "lz4" => CompressionName::Lz4,
                "zstd" => CompressionName::Zstd,
                _ => CompressionName::None,
            };
        }
        if let Some(v) = self.cache_size {
            s.cache.mem_bytes = v;
        }
        if let Some(v) = self.readahead {
            s.cache.readahead_bytes = v;
        }
        if let Some(v) = self.max_bandwidth {
            s.qos.bytes_per_sec = v;
        }
        if let Some(v) = self.max_iops {
            s.qos.ops_per_sec = v;
        }
        if let Some(r) = self.reclaim {
            s.reclaim = r;
        }
        if let Some(m) = self.access_modes {
            s.access_modes = Some(m);
        }
        if let Some(a) = self.allow_expansion {
            s.allow_expansion = Some(a);
        }
        if self.is_default {
            s.is_default = true;
        }
        Ok(())
    }
}

fn backend_text(b: &BackendSpec) -> String {
    match b {
        BackendSpec::Local { path: None } => "local (server data directory)".into(),
        BackendSpec::Local { path: Some(p) } => format!("local {p}"),
        BackendSpec::S3 { endpoint, bucket, prefix, .. } => {
            let mut s = format!("s3://{bucket}/{}", prefix.trim_matches('/'));
            if !endpoint.is_empty() {
                s.push_str(&format!(" at {endpoint}"));
            }
            s
        }
    }
}

fn modes_text(m: &[AccessModeName]) -> String {
    m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
}

fn describe(out: Output, c: &ClassView) -> Result<()> {
    emit(out, c, || {
        let unlimited = |n: u64, f: fn(u64) -> String| if n == 0 { "unlimited".to_string() } else { f(n) };
        let mount_default = |n: u64| if n == 0 { "mount default".to_string() } else { human(n) };
        print_fields(&[
            ("Name", c.name.clone()),
            ("Description", c.description.clone()),
            ("Default", if c.is_default { "yes".into() } else { "no".into() }),
            ("Backend", backend_text(&c.backend)),
            ("Block size", human(u64::from(c.block_size))),
            ("Compression", c.compression.as_str().into()),
            ("Cache size", mount_default(c.cache.mem_bytes)),
            ("Read-ahead", mount_default(c.cache.readahead_bytes)),
            ("Max bandwidth", unlimited(c.qos.bytes_per_sec, |n| format!("{}/s", human(n)))),
            ("Max IOPS", unlimited(c.qos.ops_per_sec, |n| n.to_string())),
            ("Reclaim", c.reclaim.as_str().into()),
            ("Access modes", modes_text(&c.access_modes)),
            ("Expansion", if c.allow_expansion { "allowed".into() } else { "not allowed".into() }),
            ("Created", c.created.clone()),
        ]);
    })
}

/// Runs a storageclass subcommand.
pub fn run(args: StorageClassArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let out = args.output;
    crate::runtime()?.block_on(async {
        match args.cmd {
            ClassCmd::List => {
                let classes: Vec<ClassView> =
                    api.get("/v1/storageclasses").await.context("cannot list storage classes")?;
                emit(out, &classes, || {
                    let rows: Vec<Vec<String>> = classes
                        .iter()
                        .map(|c| {
                            vec![
                                if c.is_default { format!("{} (default)", c.name) } else { c.name.clone() },
                                match &c.backend {
                                    BackendSpec::Local { .. } => "local".into(),
                                    BackendSpec::S3 { .. } => "s3".into(),
                                },
                                human(u64::from(c.block_size)),
                                c.compression.as_str().into(),
                                size_or_dash(c.qos.bytes_per_sec),
                                c.reclaim.as_str().into(),
                                modes_text(&c.access_modes),
                                c.allow_expansion.to_string(),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "NAME",
                            "BACKEND",
                            "BLOCK SIZE",
                            "COMPRESSION",
                            "MAX BW/S",
                            "RECLAIM",
                            "ACCESS MODES",
                            "EXPANSION",
                        ],
                        &rows,
                    );
                })
            }
            ClassCmd::Describe { name } => {
                let c: ClassView = api
                    .get(&format!("/v1/storageclasses/{}", seg(&name)))
                    .await
                    .with_context(|| format!("cannot describe storage class {name}"))?;
                describe(out, &c)
            }
            ClassCmd::Create { name, flags } => {
                let mut s = ClassSettings::default();
                flags.apply(&mut s)?;
                let c: ClassView = api
                    .post("/v1/storageclasses", &NewClass::join(name.clone(), s))
                    .await
                    .with_context(|| format!("cannot create storage class {name}"))?;
                if out == Output::Table {
                    println!("storage class {} created", c.name);
                    return Ok(());
                }
                describe(out, &c)
            }
            ClassCmd::Update { name, flags } => {
                let path = format!("/v1/storageclasses/{}", seg(&name));
                let cur: ClassView =
                    api.get(&path).await.with_context(|| format!("cannot update storage class {name}"))?;
                let mut s = ClassSettings::of(&cur);
                flags.apply(&mut s)?;
                let c: ClassView =
                    api.put(&path, &s).await.with_context(|| format!("cannot update storage class {name}"))?;
                if out == Output::Table {
                    println!("storage class {} updated", c.name);
                    return Ok(());
                }
                describe(out, &c)
            }
            ClassCmd::Delete { name } => {
                let c: ClassView = api
                    .delete(&format!("/v1/storageclasses/{}", seg(&name)))
                    .await
                    .with_context(|| format!("cannot delete storage class {name}"))?;
                if out == Output::Table {
                    println!("deleted storage class {}", c.name);
                    return Ok(());
                }
                describe(out, &c)
            }
        }
    })
}
