//! `strata`: shared storage for AI/ML clusters.

mod client_args;
mod cmd;
mod metrics_http;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Strata: one shared POSIX namespace for every node of a cluster.
///
/// Quick start (one machine): `strata up` starts a server and mounts a volume.
/// Cluster: run `strata server` on the storage node, `strata mount` on every node.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a server, create a volume and mount it, all in one process.
    Up(cmd::up::UpArgs),
    /// Run the metadata server.
    Server(cmd::server::ServerArgs),
    /// Mount a volume with FUSE.
    Mount(cmd::mount::MountArgs),
    /// Unmount a Strata mount.
    Umount(cmd::mount::UmountArgs),
    /// Serve the Kubernetes CSI driver (controller, node, or both).
    Csi(cmd::csi::CsiArgs),
    /// Serve volumes over NFS or S3.
    Gateway(cmd::gateway::GatewayArgs),
    /// Manage volumes: list, describe, create, expand, delete.
    #[command(visible_alias = "vol")]
    Volume(cmd::volume::VolumeArgs),
    /// Manage snapshots of volumes: create, list, describe, delete (mount one as VOLUME@SNAPSHOT).
    #[command(visible_alias = "snap")]
    Snapshot(cmd::snapshot::SnapshotArgs),
    /// Manage data volumes: versioned, read-only datasets shared between scopes (mount dv:NAME).
    #[command(name = "datavolume", visible_alias = "dv")]
    DataVolume(cmd::datavolume::DataVolumeArgs),
    /// Manage storage classes: the tiers volumes are provisioned in.
    #[command(name = "storageclass", visible_alias = "sc")]
    StorageClass(cmd::storageclass::StorageClassArgs),
    /// Manage scopes: departments and projects of the cluster.
    Scope(cmd::scope::ScopeArgs),
    /// Manage access tokens: list, issue, revoke.
    Token(cmd::token::TokenCmdArgs),
    /// Show and set provisioning policies of scopes.
    Policy(cmd::policy::PolicyArgs),
    // No doc comments: the help is the Args' own documentation.
    Status(cmd::status::StatusArgs),
    Stats(cmd::stats::StatsArgs),
    // No doc comment: the help (sources, examples) is ImportArgs' own documentation.
    Import(cmd::import::ImportArgs),
    /// Run the file-level benchmark workloads on a directory (see bench/ for the full suite).
    Bench(strata_bench::BenchArgs),
    /// Load files into their mount's cache (or check, or evict).
    Warmup(cmd::warmup::WarmupArgs),
    // Operations on the metadata (issue 17): backup and restore.
    /// Back up all metadata of a running server to a file, as one point in time.
    Dump(cmd::dump::DumpArgs),
    /// Restore a dump into an empty metadata store (SQLite or PostgreSQL).
    Load(cmd::dump::LoadArgs),
    /// Check a running server's metadata and blocks, and repair what is safe.
    Fsck(cmd::fsck::FsckArgs),
    /// Show (or delete) leaked blocks and slices pending deletion.
    Gc(cmd::fsck::GcArgs),
    /// Show what a file or directory is made of: inode, chunks, slices, blocks.
    Info(cmd::inspect::InfoArgs),
    /// Show the sizes and counts of a tree.
    Summary(cmd::inspect::SummaryArgs),
}

/// The async runtime for a command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    // One worker per core: more only adds thread switches to latency-bound metadata calls.
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?)
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Up(a) => cmd::up::run(a),
        Cmd::Server(a) => cmd::server::run(a),
        Cmd::Mount(a) => cmd::mount::run(a),
        Cmd::Umount(a) => cmd::mount::umount(a),
        Cmd::Csi(a) => cmd::csi::run(a),
        Cmd::Gateway(a) => cmd::gateway::run(a),
        Cmd::Volume(a) => cmd::volume::run(a),
        Cmd::Snapshot(a) => cmd::snapshot::run(a),
        Cmd::DataVolume(a) => cmd::datavolume::run(a),
        Cmd::StorageClass(a) => cmd::storageclass::run(a),
        Cmd::Scope(a) => cmd::scope::run(a),
        Cmd::Token(a) => cmd::token::run(a),
        Cmd::Policy(a) => cmd::policy::run(a),
        Cmd::Status(a) => cmd::status::run(a),
        Cmd::Stats(a) => cmd::stats::run(a),
        Cmd::Import(a) => cmd::import::run(a),
        Cmd::Bench(a) => strata_bench::run(a),
        Cmd::Warmup(a) => cmd::warmup::run(a),
        Cmd::Dump(a) => cmd::dump::run_dump(a),
        Cmd::Load(a) => cmd::dump::run_load(a),
        Cmd::Fsck(a) => cmd::fsck::run_fsck(a),
        Cmd::Gc(a) => cmd::fsck::run_gc(a),
        Cmd::Info(a) => cmd::inspect::run_info(a),
        Cmd::Summary(a) => cmd::inspect::run_summary(a),
    };
    if let Err(e) = res {
        eprintln!("strata: {e:#}");
        std::process::exit(1);
    }
}
