//! File-level benchmark workloads for Strata and its peers.
//!
//! The workloads run on any directory (a local disk, a Strata mount, a JuiceFS mount, ...)
//! through plain `std::fs` calls on std threads:
//!
//! - `files`: a dataset-like tree (default 20,000 files of 64 KiB in 100 directories), with the
//!   phases write, list (`ls -lR`), read back and verify, stat, unlink.
//! - `meta`: a metadata storm (default create, stat and unlink of 10,000 empty files in one
//!   directory, one thread).
//!
//! and the training workloads, whose ranks and loader workers are separate processes (see
//! [`procs`]):
//!
//! - `ckpt`: a distributed checkpoint (N ranks write and fsync a shard each, the coordinator
//!   renames a metadata file into place), for each N of a list, over one or two directories.
//! - `restore`: a checkpoint read back by its ranks in ranged reads.
//! - `fanout`: K readers read, then mmap, one large file at the same time.
//! - `loader`: data-loader workers read shuffled small files, random records, large shards.
//! - `epoch`: ranks list and stat a dataset tree.
//!
//! Workloads that read from a cold cache have phases (`--phases`): a caller runs `setup`,
//! empties the caches (unmount, `drop_caches`), then runs the reading phases one at a time.
//!
//! The CLI wires [`BenchArgs`] as `strata bench`; `cargo run --release -p strata-bench
//! --example bench -- --dir PATH` runs it stand-alone.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod ckpt;
pub mod epoch;
pub mod fanout;
pub mod files;
pub mod loader;
pub mod meta;
pub mod pattern;
pub mod procs;
pub mod report;
pub mod rng;
mod workers;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

pub use ckpt::CkptConfig;
pub use epoch::EpochConfig;
pub use fanout::FanoutConfig;
pub use files::{FilesConfig, FilesPhase};
pub use loader::LoaderConfig;
pub use meta::{MetaConfig, MetaPhase};
pub use report::{PhaseResult, Report, WorkloadResult};

/// Which workloads to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Many small files: write, list, read + verify, stat, unlink.
    Files,
    /// Create, stat and unlink of empty files.
    Meta,
    /// `files`, then `meta` (the training workloads run only when named).
    All,
    /// Distributed checkpoint: N rank processes write + fsync a shard each, then the
    /// coordinator writes, fsyncs and renames `.metadata`; for each N of `--ckpt-ranks`.
    Ckpt,
    /// A checkpoint's shards read back by their ranks in ranged reads (phases setup, read,
    /// cleanup).
    Restore,
    /// K reader processes read, then mmap, one large file at once (phases setup, read, mmap,
    /// cleanup).
    Fanout,
    /// Data-loader workers: shuffled small files, random records, sequential shards (phases
    /// setup, files, records, shards, cleanup).
    Loader,
    /// Ranks list and stat a dataset tree (phases setup, walk, cleanup).
    Epoch,
}

impl Workload {
    /// The phases the workload runs when `--phases` is not given, in order; empty for the
    /// workloads without phases of this kind.
    pub fn default_phases(self) -> &'static [Phase] {
        use Phase::*;
        match self {
            Workload::Restore => &[Setup, Read, Cleanup],
            Workload::Fanout => &[Setup, Read, Mmap, Cleanup],
            Workload::Loader => &[Setup, Files, Records, Shards, Cleanup],
            Workload::Epoch => &[Setup, Walk, Cleanup],
            Workload::Files | Workload::Meta | Workload::All | Workload::Ckpt => &[],
        }
    }
}

/// A phase of the `restore`, `fanout`, `loader` and `epoch` workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Create the data the other phases read (timed, but not the point).
    Setup,
    /// `restore`, `fanout`: read the file(s) with read(2).
    Read,
    /// `fanout`: mmap the file and touch every page.
    Mmap,
    /// `loader`: shuffled open/read/close of the small files.
    Files,
    /// `loader`: random record reads in the large file.
    Records,
    /// `loader`: sequential reads of the shards.
    Shards,
    /// `epoch`: readdir + lstat of the whole tree.
    Walk,
    /// Remove the workload's directory.
    Cleanup,
}

impl Phase {
    /// The phase's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Read => "read",
            Phase::Mmap => "mmap",
            Phase::Files => "files",
            Phase::Records => "records",
            Phase::Shards => "shards",
            Phase::Walk => "walk",
            Phase::Cleanup => "cleanup",
        }
    }
}

/// Fails with a clear message when a reading phase runs before its `setup`.
pub(crate) fn need_setup(root: &Path) -> Result<()> {
    ensure!(root.is_dir(), "{} does not exist: run the setup phase first", root.display());
    Ok(())
}

/// Flushes every file system's dirty data, so no measurement pays for an earlier one's.
pub(crate) fn sync() {
    // SAFETY: sync(2) has no preconditions and cannot fail.
    unsafe { libc::sync() }
}

/// Options of `strata bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Directory to run in: a mount point or any directory. Each workload creates (and
    /// removes) its own subdirectory `strata-bench-WORKLOAD` in it.
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,

    /// Workload to run.
    #[arg(long, value_enum, default_value_t = Workload::All)]
    pub workload: Workload,

    /// Phases of the `files` workload to run, comma-separated, in order. Running `write` alone,
    /// then the rest in a second run, lets a caller empty caches in between.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = FilesPhase::ALL,
        value_name = "PHASES"
    )]
    pub files_phases: Vec<FilesPhase>,

    /// `files`: number of files.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub files: u64,

    /// `files`: size of each file (bytes, or with a K/M/G suffix; binary units).
    #[arg(long, default_value = "64KiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub file_size: u64,

    /// `files`: number of directories the files are spread over.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub dirs: u64,

    /// `files`: threads writing.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub write_threads: u16,

    /// `files`: threads reading back.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub read_threads: u16,

    /// `files`: threads for the stat and unlink phases (list is always one thread, like `ls -lR`).
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,

    /// `files`: fsync every file before closing it (off by default: close-to-open semantics).
    #[arg(long)]
    pub fsync: bool,

    /// `files`: seed of the content pattern.
    #[arg(long, default_value_t = 0x5742_4154_4153, value_name = "N")]
    pub seed: u64,

    /// `meta`: number of empty files.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub meta_files: u64,

    /// `meta`: number of directories the empty files are spread over.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub meta_dirs: u64,

    /// `meta`: threads for every phase.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub meta_threads: u16,

    /// Phases of the `meta` workload to run, comma-separated, in order. Running `create`
    /// alone, emptying caches (unmount, drop_caches, mount), then `stat,unlink`, measures cold
    /// metadata.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = MetaPhase::ALL, value_name = "PHASES")]
    pub meta_phases: Vec<MetaPhase>,

    /// `restore`, `fanout`, `loader`, `epoch`: phases to run, comma-separated, in order
    /// (default: all of the workload's). Run `setup` alone, empty the caches, then each reading
    /// phase, to read from a cold cache.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PHASES")]
    pub phases: Vec<Phase>,

    /// `ckpt`, `restore`, `epoch`: a second directory on the same volume (a second mount):
    /// rank `r` works through `--dir` when `r` is even, through this one when odd. `ckpt` runs
    /// every rank count through one directory, then again through both.
    #[arg(long, value_name = "PATH")]
    pub dir2: Option<PathBuf>,

    /// `ckpt`: rank counts (processes) to write a checkpoint with, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8], value_name = "N,...")]
    pub ckpt_ranks: Vec<usize>,

    /// `ckpt`, `restore`: size of every rank's shard.
    #[arg(long, default_value = "1GiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub shard_size: u64,

    /// `restore`: ranks of the checkpoint written and read back (processes).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub restore_ranks: usize,

    /// `restore`: size of each ranged read of a shard.
    #[arg(long, default_value = "4MiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub range_size: u64,

    /// `ckpt`, `fanout`, `loader`: size of each write(2) and sequential read(2).
    #[arg(long, default_value = "1MiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub io_size: u64,

    /// `fanout`: reader processes.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub fanout_readers: usize,

    /// `fanout`: size of the file.
    #[arg(long, default_value = "1GiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub fanout_size: u64,

    /// `fanout`: directories the readers go through, comma-separated (reader `k` uses the
    /// `k % count`-th), e.g. one mount of the volume each; default `--dir`. The file is written
    /// through `--dir`, which must show the same tree.
    #[arg(long, value_delimiter = ',', value_name = "PATH,...")]
    pub fanout_dirs: Vec<PathBuf>,

    /// `loader`: worker processes of every read phase.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub loader_workers: usize,

    /// `loader`: small files.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub loader_files: u64,

    /// `loader`: size of every small file.
    #[arg(long, default_value = "64KiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub loader_file_size: u64,

    /// `loader`: directories the small files are spread over.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub loader_dirs: u64,

    /// `loader`: size of the file of records.
    #[arg(long, default_value = "256MiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub records_file_size: u64,

    /// `loader`: size of one record.
    #[arg(long, default_value = "2KiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub record_size: u64,

    /// `loader`: records read by each worker.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub records: u64,

    /// `loader`: shard files.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub loader_shards: u64,

    /// `loader`: size of every shard.
    #[arg(long, default_value = "256MiB", value_parser = report::parse_size, value_name = "SIZE")]
    pub loader_shard_size: u64,

    /// `epoch`: ranks walking the tree at once (processes).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub epoch_ranks: usize,

    /// `epoch`: files in the tree.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub epoch_files: u64,

    /// `epoch`: directories the files are spread over.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub epoch_dirs: u64,

    /// `epoch`: size of every file.
    #[arg(long, default_value = "0", value_parser = report::parse_size, value_name = "SIZE")]
    pub epoch_file_size: u64,

    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The `files` workload's parameters.
    pub fn files_config(&self) -> FilesConfig {
        FilesConfig {
            files: self.files,
            file_size: self.file_size,
            dirs: self.dirs,
            write_threads: self.write_threads.into(),
            read_threads: self.read_threads.into(),
            threads: self.threads.into(),
            fsync: self.fsync,
            seed: self.seed,
            phases: self.files_phases.clone(),
        }
    }

    /// The `meta` workload's parameters.
    pub fn meta_config(&self) -> MetaConfig {
        MetaConfig {
            files: self.meta_files,
            dirs: self.meta_dirs,
            threads: self.meta_threads.into(),
            phases: self.meta_phases.clone(),
        }
    }

    /// `--dir`, then `--dir2` when given.
    fn rank_dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.dir.clone()).chain(self.dir2.clone()).collect()
    }

    /// `--phases`, or the workload's own when not given.
    fn phases_of(&self, w: Workload) -> Vec<Phase> {
        if self.phases.is_empty() { w.default_phases().to_vec() } else { self.phases.clone() }
    }

    /// The `ckpt` and `restore` workloads' parameters.
    pub fn ckpt_config(&self) -> CkptConfig {
        CkptConfig {
            ranks: self.ckpt_ranks.clone(),
            restore_ranks: self.restore_ranks,
            shard_size: self.shard_size,
            io_size: self.io_size,
            range_size: self.range_size,
            dirs: self.rank_dirs(),
            seed: self.seed,
            phases: self.phases_of(Workload::Restore),
        }
    }

    /// The `fanout` workload's parameters.
    pub fn fanout_config(&self) -> FanoutConfig {
        let dirs = if self.fanout_dirs.is_empty() { vec![self.dir.clone()] } else { self.fanout_dirs.clone() };
        FanoutConfig {
            readers: self.fanout_readers,
            size: self.fanout_size,
            io_size: self.io_size,
            dirs,
            seed: self.seed,
            phases: self.phases_of(Workload::Fanout),
        }
    }

    /// The `loader` workload's parameters.
    pub fn loader_config(&self) -> LoaderConfig {
        LoaderConfig {
            workers: self.loader_workers,
            files: self.loader_files,
            file_size: self.loader_file_size,
            dirs: self.loader_dirs,
            records_file_size: self.records_file_size,
            record_size: self.record_size,
            records: self.records,
            shards: self.loader_shards,
            shard_size: self.loader_shard_size,
            io_size: self.io_size,
            setup_threads: self.write_threads.into(),
            seed: self.seed,
            phases: self.phases_of(Workload::Loader),
        }
    }

    /// The `epoch` workload's parameters.
    pub fn epoch_config(&self) -> EpochConfig {
        EpochConfig {
            ranks: self.epoch_ranks,
            files: self.epoch_files,
            dirs: self.epoch_dirs,
            file_size: self.epoch_file_size,
            bases: self.rank_dirs(),
            setup_threads: self.write_threads.into(),
            seed: self.seed,
            phases: self.phases_of(Workload::Epoch),
        }
    }
}

fn check_dir(flag: &str, path: &Path) -> Result<()> {
    let md = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
    ensure!(md.is_dir(), "{flag} {} is not a directory", path.display());
    Ok(())
}

/// Checks that `--phases` only names phases of the workload.
fn check_phases(args: &BenchArgs) -> Result<()> {
    if args.phases.is_empty() {
        return Ok(());
    }
    let allowed = args.workload.default_phases();
    ensure!(!allowed.is_empty(), "--phases applies to the restore, fanout, loader and epoch workloads only");
    if let Some(bad) = args.phases.iter().find(|p| !allowed.contains(p)) {
        let names: Vec<_> = allowed.iter().map(|p| p.name()).collect();
        anyhow::bail!(
            "the {:?} workload has no phase {:?}; its phases are {}",
            args.workload,
            bad.name(),
            names.join(",")
        );
    }
    Ok(())
}

/// Runs the workloads and returns what they measured.
pub fn measure(args: &BenchArgs) -> Result<Report> {
    check_dir("--dir", &args.dir)?;
    if let Some(d) = &args.dir2 {
        check_dir("--dir2", d)?;
    }
    for d in &args.fanout_dirs {
        check_dir("--fanout-dirs", d)?;
    }
    check_phases(args)?;
    let mut results = Vec::new();
    if matches!(args.workload, Workload::Files | Workload::All) {
        let cfg = args.files_config();
        let phases = files::run(&cfg, &args.dir).context("files workload")?;
        results.push(WorkloadResult {
            workload: "files".into(),
            dir: args.dir.join(files::DIR_NAME),
            params: serde_json::to_value(&cfg)?,
            phases,
        });
    }
    if matches!(args.workload, Workload::Meta | Workload::All) {
        let cfg = args.meta_config();
        let phases = meta::run(&cfg, &args.dir).context("meta workload")?;
        results.push(WorkloadResult {
            workload: "meta".into(),
            dir: args.dir.join(meta::DIR_NAME),
            params: serde_json::to_value(&cfg)?,
            phases,
        });
    }
    let training = match args.workload {
        Workload::Ckpt => {
            let cfg = args.ckpt_config();
            Some(("ckpt", ckpt::DIR_NAME, serde_json::to_value(&cfg)?, ckpt::run_ckpt(&cfg)))
        }
        Workload::Restore => {
            let cfg = args.ckpt_config();
            Some(("restore", ckpt::RESTORE_DIR_NAME, serde_json::to_value(&cfg)?, ckpt::run_restore(&cfg)))
        }
        Workload::Fanout => {
            let cfg = args.fanout_config();
            Some(("fanout", fanout::DIR_NAME, serde_json::to_value(&cfg)?, fanout::run(&cfg)))
        }
        Workload::Loader => {
            let cfg = args.loader_config();
            Some(("loader", loader::DIR_NAME, serde_json::to_value(&cfg)?, loader::run(&cfg, &args.dir)))
        }
        Workload::Epoch => {
            let cfg = args.epoch_config();
            Some(("epoch", epoch::DIR_NAME, serde_json::to_value(&cfg)?, epoch::run(&cfg)))
        }
        Workload::Files | Workload::Meta | Workload::All => None,
    };
    if let Some((name, dir, params, phases)) = training {
        let phases = phases.with_context(|| format!("{name} workload"))?;
        results.push(WorkloadResult { workload: name.into(), dir: args.dir.join(dir), params, phases });
    }
    Ok(Report {
        tool: "strata-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        dir: args.dir.clone(),
        results,
    })
}

/// Runs the workloads and prints a table, or JSON with `--json`, on stdout.
///
/// In a worker process of a training workload (see [`procs`]) it serves the worker's task
/// instead.
pub fn run(args: BenchArgs) -> Result<()> {
    if procs::is_worker() {
        return procs::serve();
    }
    let report = measure(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_brief() {
        let cli = Cli::try_parse_from(["bench", "--dir", "/x"]).expect("parse");
        let a = cli.args;
        assert_eq!(a.workload, Workload::All);
        assert_eq!(a.files_phases, FilesPhase::ALL.to_vec());
        assert_eq!((a.files, a.file_size, a.dirs), (20_000, 64 << 10, 100));
        assert_eq!((a.write_threads, a.read_threads, a.threads), (4, 4, 4));
        assert_eq!((a.meta_files, a.meta_dirs, a.meta_threads), (10_000, 1, 1));
        assert!(!a.json && !a.fsync);
    }

    #[test]
    fn parses_phases_and_sizes() {
        let cli = Cli::try_parse_from([
            "bench",
            "--dir",
            "/x",
            "--workload",
            "files",
            "--files-phases",
            "list,read",
            "--file-size",
            "128K",
            "--json",
        ])
        .expect("parse");
        assert_eq!(cli.args.files_phases, [FilesPhase::List, FilesPhase::Read]);
        assert_eq!(cli.args.file_size, 128 << 10);
        assert!(Cli::try_parse_from(["bench", "--dir", "/x", "--threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--dir", "/x", "--files-phases", "x"]).is_err());
    }

    #[test]
    fn measure_all_small() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_str().expect("utf-8 path");
        let cli = Cli::try_parse_from([
            "bench",
            "--dir",
            dir,
            "--files",
            "30",
            "--dirs",
            "3",
            "--file-size",
            "5000",
            "--meta-files",
            "40",
        ])
        .expect("parse");
        let report = measure(&cli.args).expect("measure");
        assert_eq!(report.results.len(), 2);
        assert_eq!(report.results[0].phases.len(), 5);
        assert_eq!(report.results[1].phases.len(), 3);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["results"][0]["params"]["files"], 30);
        assert_eq!(json["results"][1]["phases"][0]["phase"], "create");
    }

    /// A small run of a training workload on a temporary directory, its workers being
    /// processes of this test binary.
    fn smoke(extra: &[&str]) -> (tempfile::TempDir, Report) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let report = smoke_in(&tmp, extra);
        (tmp, report)
    }

    fn smoke_in(tmp: &tempfile::TempDir, extra: &[&str]) -> Report {
        procs::tests::use_test_binary_as_worker();
        let dir = tmp.path().to_str().expect("utf-8 path").to_string();
        let mut argv = vec!["bench", "--dir", &dir];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).expect("parse");
        let report = measure(&cli.args).expect("measure");
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0, "the workload cleaned up");
        report
    }

    fn phases(r: &Report) -> Vec<&str> {
        r.results[0].phases.iter().map(|p| p.phase.as_str()).collect()
    }

    #[test]
    fn smoke_ckpt_one_and_two_dirs() {
        // The second directory is another path to the same tree, as a second mount would be.
        let tmp = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let d2 = other.path().join("mount2");
        std::os::unix::fs::symlink(tmp.path(), &d2).expect("symlink");
        let d2 = d2.to_str().expect("utf-8").to_string();
        let r = smoke_in(
            &tmp,
            &["--workload", "ckpt", "--ckpt-ranks", "1,3", "--shard-size", "300K", "--io-size", "64K", "--dir2", &d2],
        );
        assert_eq!(phases(&r), ["n1-1dir", "n3-1dir", "n1-2dirs", "n3-2dirs"]);
        let p = &r.results[0].phases[1];
        assert_eq!((p.threads, p.ops, p.bytes), (3, 3, Some((3 * 300) << 10)));
        assert!(p.slowest_seconds.expect("slowest") <= p.seconds);
        assert!(p.extra.contains_key("commit_ms") && p.latency_us.is_some());
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["results"][0]["params"]["ranks"], serde_json::json!([1, 3]));
    }

    #[test]
    fn smoke_restore_in_split_phases() {
        let tmp = tempfile::tempdir().expect("tempdir");
        procs::tests::use_test_binary_as_worker();
        let dir = tmp.path().to_str().expect("utf-8").to_string();
        let run = |ph: &str| {
            let argv = [
                "bench",
                "--dir",
                &dir,
                "--workload",
                "restore",
                "--restore-ranks",
                "3",
                "--shard-size",
                "1M",
                "--range-size",
                "256K",
                "--phases",
                ph,
            ];
            measure(&Cli::try_parse_from(argv).expect("parse").args)
        };
        let setup = run("setup").expect("setup");
        assert_eq!(phases(&setup), ["setup"]);
        let read = run("read,cleanup").expect("read");
        let p = &read.results[0].phases[0];
        assert_eq!((p.phase.as_str(), p.threads, p.ops, p.bytes), ("read", 3, 12, Some(3 << 20)));
        assert_eq!(p.latency_us.expect("latency").count, 12);
        assert!(run("read").is_err(), "cleanup removed the checkpoint");
        // Phases of another workload are refused.
        let msg = format!("{:#}", run("walk").expect_err("not a restore phase"));
        assert!(msg.contains("no phase \"walk\""), "{msg}");
    }

    #[test]
    fn smoke_fanout_through_two_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().to_str().expect("utf-8").to_string();
        // The same directory twice stands for two mounts of one volume.
        let dirs = format!("{d},{d}");
        let r = smoke_in(
            &tmp,
            &["--workload", "fanout", "--fanout-readers", "3", "--fanout-size", "2M", "--fanout-dirs", &dirs],
        );
        assert_eq!(phases(&r), ["setup", "read", "mmap"]);
        for p in &r.results[0].phases[1..] {
            assert_eq!((p.threads, p.bytes), (3, Some(6 << 20)), "{p:?}");
            assert!(p.slowest_seconds.is_some() && p.latency_us.is_some());
        }
    }

    #[test]
    fn smoke_loader() {
        let (_t, r) = smoke(&[
            "--workload",
            "loader",
            "--loader-workers",
            "3",
            "--loader-files",
            "50",
            "--loader-dirs",
            "4",
            "--loader-file-size",
            "3000",
            "--records-file-size",
            "1M",
            "--records",
            "40",
            "--loader-shards",
            "5",
            "--loader-shard-size",
            "200K",
            "--io-size",
            "64K",
        ]);
        assert_eq!(phases(&r), ["setup", "files", "records", "shards"]);
        let ph = &r.results[0].phases;
        assert_eq!((ph[1].ops, ph[1].bytes), (50, Some(150_000)));
        assert_eq!((ph[2].ops, ph[2].bytes), (120, Some(120 * 2048)));
        assert_eq!((ph[3].ops, ph[3].bytes), (5, Some((5 * 200) << 10)));
        assert_eq!(ph[2].latency_us.expect("latency").count, 120);
    }

    #[test]
    fn smoke_epoch() {
        let (_t, r) = smoke(&[
            "--workload",
            "epoch",
            "--epoch-ranks",
            "2",
            "--epoch-files",
            "120",
            "--epoch-dirs",
            "6",
            "--epoch-file-size",
            "10",
        ]);
        assert_eq!(phases(&r), ["setup", "walk"]);
        let w = &r.results[0].phases[1];
        // Every rank lstats every file and directory.
        assert_eq!((w.threads, w.ops), (2, 2 * 126));
    }

    #[test]
    fn training_defaults_match_the_issue() {
        let a = Cli::try_parse_from(["bench", "--dir", "/x"]).expect("parse").args;
        assert_eq!(a.ckpt_ranks, [1, 2, 4, 8]);
        assert_eq!(a.shard_size, 1 << 30);
        assert_eq!(a.record_size, 2048);
        assert!(a.phases.is_empty() && a.dir2.is_none() && a.fanout_dirs.is_empty());
        assert_eq!(a.fanout_config().dirs, [PathBuf::from("/x")]);
        assert_eq!(a.ckpt_config().phases, [Phase::Setup, Phase::Read, Phase::Cleanup]);
        let a = Cli::try_parse_from(["bench", "--dir", "/x", "--workload", "files", "--phases", "read"])
            .expect("parse")
            .args;
        assert!(check_phases(&a).is_err(), "files has its own --files-phases");
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().to_str().expect("utf-8");
        for w in ["ckpt", "restore", "fanout", "loader"] {
            let a = Cli::try_parse_from(["bench", "--dir", d, "--workload", w, "--io-size", "0"]).expect("parse").args;
            let msg = format!("{:#}", measure(&a).expect_err("zero io size"));
            assert!(msg.contains("--io-size"), "{w}: {msg}");
        }
    }

    #[test]
    fn rejects_missing_dir() {
        let cli = Cli::try_parse_from(["bench", "--dir", "/nonexistent/strata-bench"]).expect("parse");
        assert!(measure(&cli.args).is_err());
    }
}
