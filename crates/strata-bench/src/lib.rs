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
//! The CLI wires [`BenchArgs`] as `strata bench`; `cargo run --release -p strata-bench
//! --example bench -- --dir PATH` runs it stand-alone.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod files;
pub mod meta;
pub mod pattern;
pub mod report;
mod workers;

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

pub use files::{FilesConfig, FilesPhase};
pub use meta::MetaConfig;
pub use report::{PhaseResult, Report, WorkloadResult};

/// Which workloads to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Many small files: write, list, read + verify, stat, unlink.
    Files,
    /// Create, stat and unlink of empty files.
    Meta,
    /// `files`, then `meta`.
    All,
}

/// Options of `strata bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Directory to run in: a mount point or any directory. The workloads create (and remove)
    /// their own subdirectories `strata-bench-files` and `strata-bench-meta` in it.
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
        MetaConfig { files: self.meta_files, dirs: self.meta_dirs, threads: self.meta_threads.into() }
    }
}

/// Runs the workloads and returns what they measured.
pub fn measure(args: &BenchArgs) -> Result<Report> {
    let md = std::fs::metadata(&args.dir).with_context(|| format!("--dir {}", args.dir.display()))?;
    ensure!(md.is_dir(), "--dir {} is not a directory", args.dir.display());
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
    Ok(Report {
        tool: "strata-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        dir: args.dir.clone(),
        results,
    })
}

/// Runs the workloads and prints a table, or JSON with `--json`, on stdout.
pub fn run(args: BenchArgs) -> Result<()> {
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

    #[test]
    fn rejects_missing_dir() {
        let cli = Cli::try_parse_from(["bench", "--dir", "/nonexistent/strata-bench"]).expect("parse");
        assert!(measure(&cli.args).is_err());
    }
}
