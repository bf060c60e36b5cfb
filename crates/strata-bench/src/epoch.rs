//! The `epoch` workload: every rank lists and stats the dataset tree at the start of an epoch.
//!
//! Layout: `ROOT/dDDDD/eFFFFFFFF`, file `i` in directory `i % dirs`. Rank `r` walks the whole
//! tree (readdir, and lstat of every entry) through directory `r % dirs given`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::Phase;
use crate::pattern::Pattern;
use crate::procs::{self, Task};
use crate::report::PhaseResult;
use crate::workers::for_each_index;

/// Name of the workload's directory inside `--dir`.
pub const DIR_NAME: &str = "strata-bench-epoch";

/// Parameters of the `epoch` workload.
#[derive(Debug, Clone, Serialize)]
pub struct EpochConfig {
    /// Ranks walking the tree at the same time (processes).
    pub ranks: usize,
    /// Files in the tree.
    pub files: u64,
    /// Directories they are spread over.
    pub dirs: u64,
    /// Size of every file.
    pub file_size: u64,
    /// Directories the ranks go through (`--dir`, and `--dir2` when given).
    pub bases: Vec<PathBuf>,
    /// Threads creating the tree in `setup`.
    pub setup_threads: usize,
    /// Seed of the content pattern.
    pub seed: u64,
    /// Phases to run, in order.
    pub phases: Vec<Phase>,
}

impl EpochConfig {
    fn file_path(&self, root: &Path, i: u64) -> PathBuf {
        root.join(format!("d{:04}", i % self.dirs)).join(format!("e{i:08}"))
    }
}

/// Runs the phases: `setup` creates the tree, `walk` lists and stats it in every rank (make
/// the caches cold before), `cleanup` removes it.
pub fn run(cfg: &EpochConfig) -> Result<Vec<PhaseResult>> {
    ensure!(cfg.ranks > 0, "--epoch-ranks must be at least 1");
    ensure!(cfg.files > 0 && cfg.dirs > 0, "--epoch-files and --epoch-dirs must be at least 1");
    ensure!(!cfg.bases.is_empty(), "no directory to run in");
    let root = cfg.bases[0].join(DIR_NAME);
    let mut results = Vec::new();
    for &phase in &cfg.phases {
        let r = match phase {
            Phase::Setup => {
                let started = Instant::now();
                create_tree(cfg, &root)?;
                PhaseResult::new(
                    "setup",
                    cfg.setup_threads,
                    cfg.files,
                    Some(cfg.files * cfg.file_size),
                    started.elapsed(),
                )
            }
            Phase::Walk => {
                crate::need_setup(&root)?;
                let tasks: Vec<Task> = (0..cfg.ranks)
                    .map(|r| Task::Walk { root: cfg.bases[r % cfg.bases.len()].join(DIR_NAME), files: cfg.files })
                    .collect();
                crate::sync();
                let gang = procs::run_all(&tasks)?;
                PhaseResult::new("walk", cfg.ranks, gang.ops(), None, gang.wall)
                    .with_slowest(gang.slowest())
                    .with_latencies(&mut gang.latencies())
            }
            Phase::Cleanup => {
                fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
                continue;
            }
            other => bail!("epoch has no phase {}", other.name()),
        };
        eprintln!(
            "strata-bench: epoch {:<6} {:>3} procs {:>9} entries in {:>8.3} s ({:.0}/s)",
            r.phase, r.threads, r.ops, r.seconds, r.ops_per_sec
        );
        results.push(r);
    }
    Ok(results)
}

fn create_tree(cfg: &EpochConfig, root: &Path) -> Result<()> {
    fs::create_dir(root)
        .with_context(|| format!("creating {} (if an earlier run left it, remove it first)", root.display()))?;
    for d in 0..cfg.dirs {
        let p = root.join(format!("d{d:04}"));
        fs::create_dir(&p).with_context(|| format!("creating directory {}", p.display()))?;
    }
    let len = usize::try_from(cfg.file_size).context("--epoch-file-size too large")?;
    for_each_index(
        cfg.setup_threads,
        cfg.files,
        || vec![0u8; len],
        |buf, i| {
            let path = cfg.file_path(root, i);
            Pattern::new(cfg.seed, i).fill(0, buf);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(buf).with_context(|| format!("writing {}", path.display()))?;
            crate::files::close(f, &path)
        },
    )
}
