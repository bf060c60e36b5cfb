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

/// Parameters of the `meta` workload.
#[derive(Debug, Clone, Serialize)]
pub struct MetaConfig {
    /// Number of empty files.
    pub files: u64,
    /// Number of directories the files are spread over.
    pub dirs: u64,
    /// Threads for every phase.
    pub threads: usize,
}

impl MetaConfig {
    fn dir_path(&self, root: &Path, d: u64) -> PathBuf {
        root.join(format!("d{d:04}"))
    }

    fn file_path(&self, root: &Path, i: u64) -> PathBuf {
        self.dir_path(root, i % self.dirs).join(format!("m{i:08}"))
    }
}

/// Runs create, stat and unlink under `base/strata-bench-meta`, which must not exist yet.
///
/// Creating and removing the directories is part of the create and unlink phases.
pub fn run(cfg: &MetaConfig, base: &Path) -> Result<Vec<PhaseResult>> {
    ensure!(cfg.files > 0, "--meta-files must be at least 1");
    ensure!(cfg.dirs > 0, "--meta-dirs must be at least 1");
    let root = base.join(DIR_NAME);
    let mut results = Vec::with_capacity(3);
    for phase in ["create", "stat", "unlink"] {
        let started = Instant::now();
        match phase {
            "create" => create(cfg, &root)?,
            "stat" => stat(cfg, &root)?,
            _ => unlink(cfg, &root)?,
        }
        let r = PhaseResult::new(phase, cfg.threads, cfg.files, None, started.elapsed());
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
            let cfg = MetaConfig { files: 200, dirs, threads };
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
        let cfg = MetaConfig { files: 1, dirs: 1, threads: 1 };
        let msg = format!("{:#}", run(&cfg, tmp.path()).expect_err("exists"));
        assert!(msg.contains("remove it first"), "{msg}");
    }
}
