//! The `loader` workload: what a training job's data-loader workers read in an epoch.
//!
//! Three read patterns over one dataset, each spread over `workers` processes (as PyTorch's
//! `DataLoader(num_workers=W)` does):
//!
//! - `files`: open, read, close of many small files in a shuffled order (a sampler's
//!   permutation; sample `j` of the epoch goes to worker `j % W`);
//! - `records`: random `record`-byte reads in one large file (a packed record format read by
//!   index);
//! - `shards`: large shard files read sequentially (WebDataset-style tar shards; shard `s` goes
//!   to worker `s % W`).
//!
//! Layout: `ROOT/files/dDDDD/fFFFFFFFF` (file `i` in directory `i % dirs`), `ROOT/records.bin`,
//! `ROOT/shards/shard-SSSSS`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::Phase;
use crate::pattern::Pattern;
use crate::procs::{self, Outcome, Source, Task};
use crate::report::PhaseResult;
use crate::workers::for_each_index;

/// Name of the workload's directory inside `--dir`.
pub const DIR_NAME: &str = "strata-bench-loader";
/// Pattern ids: small files use their index; these stay clear of them.
const RECORDS_ID: u64 = 1 << 40;
const SHARD_ID: u64 = 1 << 41;

/// Parameters of the `loader` workload.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderConfig {
    /// Worker processes of every read phase.
    pub workers: usize,
    /// Small files.
    pub files: u64,
    /// Size of every small file.
    pub file_size: u64,
    /// Directories the small files are spread over.
    pub dirs: u64,
    /// Size of the records file.
    pub records_file_size: u64,
    /// Size of one record.
    pub record_size: u64,
    /// Records each worker reads.
    pub records: u64,
    /// Shard files.
    pub shards: u64,
    /// Size of every shard.
    pub shard_size: u64,
    /// Size of each read(2) of a shard, and of each write(2) in `setup`.
    pub io_size: u64,
    /// Threads creating the dataset in `setup`.
    pub setup_threads: usize,
    /// Seed of the content pattern, the shuffle and the record offsets.
    pub seed: u64,
    /// Phases to run, in order.
    pub phases: Vec<Phase>,
}

impl LoaderConfig {
    fn small(&self, root: &Path, i: u64) -> Source {
        Source {
            path: root.join("files").join(format!("d{:04}", i % self.dirs)).join(format!("f{i:08}")),
            size: self.file_size,
            seed: self.seed,
            id: i,
        }
    }

    fn records_file(&self, root: &Path) -> Source {
        Source { path: root.join("records.bin"), size: self.records_file_size, seed: self.seed, id: RECORDS_ID }
    }

    fn shard(&self, root: &Path, s: u64) -> Source {
        Source {
            path: root.join("shards").join(format!("shard-{s:05}")),
            size: self.shard_size,
            seed: self.seed,
            id: SHARD_ID + s,
        }
    }

    /// Worker `w`'s small files of the epoch, in the order it reads them.
    fn epoch_share(&self, root: &Path, w: usize) -> Vec<Source> {
        crate::rng::shuffled(self.seed, 0, self.files)
            .into_iter()
            .skip(w)
            .step_by(self.workers)
            .map(|i| self.small(root, i))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.workers > 0, "--loader-workers must be at least 1");
        ensure!(self.files > 0 && self.dirs > 0, "--loader-files and --loader-dirs must be at least 1");
        ensure!(self.record_size > 0 && self.io_size > 0, "--record-size and --io-size must be at least 1 byte");
        ensure!(
            self.records_file_size >= self.record_size,
            "--records-file-size must hold at least one record of --record-size"
        );
        ensure!(self.shards > 0 && self.shard_size > 0, "--loader-shards and --loader-shard-size must be at least 1");
        Ok(())
    }
}

/// Runs the phases: `setup` writes the dataset; `files`, `records` and `shards` read it (make
/// the caches cold before each); `cleanup` removes it.
pub fn run(cfg: &LoaderConfig, base: &Path) -> Result<Vec<PhaseResult>> {
    cfg.validate()?;
    let root = base.join(DIR_NAME);
    let mut results = Vec::new();
    for &phase in &cfg.phases {
        let r = match phase {
            Phase::Setup => {
                let started = Instant::now();
                let bytes = setup(cfg, &root)?;
                PhaseResult::new("setup", cfg.setup_threads, cfg.files + 1 + cfg.shards, Some(bytes), started.elapsed())
            }
            Phase::Files | Phase::Records | Phase::Shards => {
                crate::need_setup(&root)?;
                let tasks: Vec<Task> = (0..cfg.workers)
                    .map(|w| match phase {
                        Phase::Files => Task::ReadWhole { files: cfg.epoch_share(&root, w) },
                        Phase::Records => Task::Records {
                            file: cfg.records_file(&root),
                            record: cfg.record_size,
                            count: cfg.records,
                            seed: cfg.seed,
                            worker: w as u64,
                        },
                        _ => Task::ReadSeq {
                            files: (w as u64..cfg.shards).step_by(cfg.workers).map(|s| cfg.shard(&root, s)).collect(),
                            range: cfg.io_size,
                        },
                    })
                    .collect();
                crate::sync();
                let gang = procs::run_all(&tasks)?;
                // A shard's unit of work is the shard, not each read(2) of it.
                let ops = if phase == Phase::Shards { cfg.shards } else { gang.ops() };
                PhaseResult::new(phase.name(), cfg.workers, ops, Some(gang.bytes()), gang.wall)
                    .with_slowest(gang.slowest())
                    .with_latencies(&mut gang.latencies())
            }
            Phase::Cleanup => {
                fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
                continue;
            }
            other => bail!("loader has no phase {}", other.name()),
        };
        eprintln!(
            "strata-bench: loader {:<7} {:>3} procs {:>9} ops in {:>8.3} s ({:.0} ops/s, {:.1} MiB/s)",
            r.phase,
            r.threads,
            r.ops,
            r.seconds,
            r.ops_per_sec,
            r.mib_per_sec.unwrap_or(0.0)
        );
        results.push(r);
    }
    Ok(results)
}

fn setup(cfg: &LoaderConfig, root: &Path) -> Result<u64> {
    fs::create_dir(root)
        .with_context(|| format!("creating {} (if an earlier run left it, remove it first)", root.display()))?;
    for d in 0..cfg.dirs {
        let p = root.join("files").join(format!("d{d:04}"));
        fs::create_dir_all(&p).with_context(|| format!("creating directory {}", p.display()))?;
    }
    let shards = root.join("shards");
    fs::create_dir(&shards).with_context(|| format!("creating directory {}", shards.display()))?;
    let len = usize::try_from(cfg.file_size).context("--loader-file-size too large")?;
    for_each_index(
        cfg.setup_threads,
        cfg.files,
        || vec![0u8; len],
        |buf, i| {
            let src = cfg.small(root, i);
            Pattern::new(src.seed, src.id).fill(0, buf);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&src.path)
                .with_context(|| format!("creating {}", src.path.display()))?;
            f.write_all(buf).with_context(|| format!("writing {}", src.path.display()))?;
            crate::files::close(f, &src.path)
        },
    )?;
    let big: Vec<Source> =
        std::iter::once(cfg.records_file(root)).chain((0..cfg.shards).map(|s| cfg.shard(root, s))).collect();
    for_each_index(
        cfg.setup_threads,
        big.len() as u64,
        || (),
        |_, i| procs::write_file(&big[i as usize], cfg.io_size, &mut Outcome::default()),
    )?;
    Ok(cfg.files * cfg.file_size + cfg.records_file_size + cfg.shards * cfg.shard_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(workers: usize, files: u64) -> LoaderConfig {
        LoaderConfig {
            workers,
            files,
            file_size: 10,
            dirs: 3,
            records_file_size: 1 << 20,
            record_size: 2048,
            records: 10,
            shards: 5,
            shard_size: 100,
            io_size: 64,
            setup_threads: 2,
            seed: 1,
            phases: vec![],
        }
    }

    #[test]
    fn workers_share_one_shuffled_epoch() {
        let c = cfg(3, 100);
        let root = Path::new("/r");
        let shares: Vec<Vec<u64>> = (0..3).map(|w| c.epoch_share(root, w).iter().map(|s| s.id).collect()).collect();
        assert_eq!(shares.iter().map(Vec::len).collect::<Vec<_>>(), [34, 33, 33]);
        let mut all: Vec<u64> = shares.concat();
        assert_ne!(shares[0][..10], (0..10).collect::<Vec<_>>()[..], "shuffled");
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "every file once per epoch");
        let first = &c.epoch_share(root, 0)[0];
        assert_eq!(first.path, root.join(format!("files/d{:04}/f{:08}", first.id % 3, first.id)));
    }

    #[test]
    fn ids_do_not_collide() {
        let c = cfg(1, 10);
        let root = Path::new("/r");
        assert_ne!(c.records_file(root).id, c.shard(root, 0).id);
        assert!(c.small(root, 9).id < RECORDS_ID);
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut c = cfg(1, 10);
        c.records_file_size = 100;
        assert!(c.validate().is_err());
        let mut c = cfg(0, 10);
        c.phases = vec![Phase::Setup];
        assert!(run(&c, Path::new("/nonexistent")).is_err());
    }
}
