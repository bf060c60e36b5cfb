//! The `meta` workload: a metadata storm of empty files.
//!
//! Layout: `ROOT/dDDDD/mFFFFFFFF`, file `i` in directory `i % dirs`. With the default single
//! directory every operation hits the same directory, the hardest case for a file system that
//! locks or serialises per directory.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::report::PhaseResult;
use crate::workers::for_each_index;

/// Name of the workload's directory inside `--dir`.
pub const DIR_NAME: &str = "strata-bench-meta";

/// A phase of the `meta` workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetaPhase {
    /// mkdir the directories, then create every empty file.
    Create,
    /// stat every file by path, in creation order.
    Stat,
    /// unlink every file, then rmdir the tree.
    Unlink,
}

impl MetaPhase {
    /// All phases, in their natural order.
    pub const ALL: [MetaPhase; 3] = [MetaPhase::Create, MetaPhase::Stat, MetaPhase::Unlink];

    fn name(self) -> &'static str {
        match self {
            MetaPhase::Create => "create",
            MetaPhase::Stat => "stat",
            MetaPhase::Unlink => "unlink",
        }
    }
}

/// Parameters of the `meta` workload.
#[derive(Debug, Clone, Serialize)]
pub struct MetaConfig {
    /// Number of empty files.
    pub files: u64,
    /// Number of directories the files are spread over.
    pub dirs: u64,
    /// Threads for every phase.
    pub threads: usize,
    /// Phases to run, in order: a caller empties caches between a `create` run and a `stat`
    /// run to measure cold metadata (a fresh node's first epoch).
    pub phases: Vec<MetaPhase>,
}

impl MetaConfig {
    fn dir_path(&self, root: &Path, d: u64) -> PathBuf {
        root.join(format!("d{d:04}"))
    }

    fn file_path(&self, root: &Path, i: u64) -> PathBuf {
        self.dir_path(root, i % self.dirs).join(format!("m{i:08}"))
    }
}

/// Runs the configured phases under `base/strata-bench-meta`, which must not exist yet when
/// they start with `create` (and must hold an earlier `create`'s tree otherwise).
///
/// Creating and removing the directories is part of the create and unlink phases.
pub fn run(cfg: &MetaConfig, base: &Path) -> Result<Vec<PhaseResult>> {
    ensure!(cfg.files > 0, "--meta-files must be at least 1");
    ensure!(cfg.dirs > 0, "--meta-dirs must be at least 1");
    ensure!(!cfg.phases.is_empty(), "no meta phase to run");
    let root = base.join(DIR_NAME);
    if cfg.phases[0] != MetaPhase::Create {
        ensure!(root.is_dir(), "{} does not exist: run the create phase first", root.display());
    }
    let mut results = Vec::with_capacity(cfg.phases.len());
    for &phase in &cfg.phases {
        let started = Instant::now();
        match phase {
            MetaPhase::Create => create(cfg, &root)?,
            MetaPhase::Stat => stat(cfg, &root)?,
            MetaPhase::Unlink => unlink(cfg, &root)?,
        }
        let r = PhaseResult::new(phase.name(), cfg.threads, cfg.files, None, started.elapsed());
        eprintln!(
            "strata-bench: meta  {:<6} {:>8} files in {:>8.3} s ({:.0} ops/s)",
            r.phase, r.ops, r.seconds, r.ops_per_sec
        );
        results.push(r);
    }
    Ok(results)
}

fn create(cfg: &MetaConfig, root: &Path) -> Result<()> {
    fs::create_dir(root)
        .with_context(|| format!("creating {} (if an earlier run left it, remove it first)", root.display()))?;
    for d in 0..cfg.dirs {
        let p = cfg.dir_path(root, d);
        fs::create_dir(&p).with_context(|| format!("creating directory {}", p.display()))?;
    }
    for_each_index(
        cfg.threads,
        cfg.files,
        || (),
        |_, i| {
            let path = cfg.file_path(root, i);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            crate::files::close(f, &path)
        },
    )
}

fn stat(cfg: &MetaConfig, root: &Path) -> Result<()> {
    for_each_index(
        cfg.threads,
        cfg.files,
        || (),
        |_, i| {
            let path = cfg.file_path(root, i);
            let md = fs::metadata(&path).with_context(|| format!("stat of {}", path.display()))?;
            ensure!(md.is_file() && md.len() == 0, "{} is not an empty file (size {})", path.display(), md.len());
            Ok(())
        },
    )
}

fn unlink(cfg: &MetaConfig, root: &Path) -> Result<()> {
    for_each_index(
        cfg.threads,
        cfg.files,
        || (),
        |_, i| {
            let path = cfg.file_path(root, i);
            fs::remove_file(&path).with_context(|| format!("unlinking {}", path.display()))
        },
    )?;
    for d in 0..cfg.dirs {
        let p = cfg.dir_path(root, d);
        fs::remove_dir(&p).with_context(|| format!("removing directory {}", p.display()))?;
    }
    fs::remove_dir(root).with_context(|| format!("removing directory {}", root.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_in_one_and_many_dirs() {
        for (dirs, threads) in [(1, 1), (3, 4)] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let cfg = MetaConfig { files: 200, dirs, threads, phases: MetaPhase::ALL.to_vec() };
            let r = run(&cfg, tmp.path()).expect("run");
            let names: Vec<_> = r.iter().map(|p| p.phase.as_str()).collect();
            assert_eq!(names, ["create", "stat", "unlink"]);
            assert!(r.iter().all(|p| p.ops == 200 && p.bytes.is_none()));
            assert!(!tmp.path().join(DIR_NAME).exists());
        }
    }

    #[test]
    fn refuses_leftover_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join(DIR_NAME)).expect("mkdir");
        let cfg = MetaConfig { files: 1, dirs: 1, threads: 1, phases: MetaPhase::ALL.to_vec() };
        let msg = format!("{:#}", run(&cfg, tmp.path()).expect_err("exists"));
        assert!(msg.contains("remove it first"), "{msg}");
    }

    #[test]
    fn phases_split_over_runs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = |phases: &[MetaPhase]| MetaConfig { files: 50, dirs: 2, threads: 2, phases: phases.to_vec() };
        let msg = format!("{:#}", run(&cfg(&[MetaPhase::Stat]), tmp.path()).expect_err("no tree"));
        assert!(msg.contains("run the create phase first"), "{msg}");
        run(&cfg(&[MetaPhase::Create]), tmp.path()).expect("create");
        let r = run(&cfg(&[MetaPhase::Stat, MetaPhase::Unlink]), tmp.path()).expect("stat, unlink");
        assert_eq!(r.iter().map(|p| p.phase.as_str()).collect::<Vec<_>>(), ["stat", "unlink"]);
        assert!(!tmp.path().join(DIR_NAME).exists());
    }
}
