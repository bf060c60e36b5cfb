//! The `ckpt` and `restore` workloads: a distributed checkpoint written and read back.
//!
//! The pattern of PyTorch's distributed checkpoint (`torch.distributed.checkpoint` with a
//! `FileSystemWriter`): every rank writes its shard `__RANK_0.distcp` at the same time and
//! fsyncs it; when all are done the coordinator writes `.metadata.tmp`, fsyncs it and renames
//! it to `.metadata`, which makes the checkpoint visible. A restore reads `.metadata`, then
//! every rank reads its shard back in ranged reads.
//!
//! With two directories (two mounts of one volume, as two nodes would have), rank `r` writes
//! through directory `r % 2`; the coordinator works through the first.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use crate::Phase;
use crate::procs::{self, Source, Task};
use crate::report::PhaseResult;

/// Name of the `ckpt` workload's directory inside `--dir`.
pub const DIR_NAME: &str = "strata-bench-ckpt";
/// Name of the `restore` workload's directory inside `--dir`.
pub const RESTORE_DIR_NAME: &str = "strata-bench-restore";

/// Parameters of the `ckpt` and `restore` workloads.
#[derive(Debug, Clone, Serialize)]
pub struct CkptConfig {
    /// `ckpt`: the rank counts to write a checkpoint with, one after the other.
    pub ranks: Vec<usize>,
    /// `restore`: the rank count of the checkpoint read back.
    pub restore_ranks: usize,
    /// Bytes of every rank's shard.
    pub shard_size: u64,
    /// Size of each write(2) of a shard.
    pub io_size: u64,
    /// `restore`: size of each ranged read.
    pub range_size: u64,
    /// The directories ranks work through: `--dir`, and `--dir2` when given.
    pub dirs: Vec<PathBuf>,
    /// Seed of the content pattern.
    pub seed: u64,
    /// `restore`: phases to run, in order.
    pub phases: Vec<Phase>,
}

/// The `.metadata` file: which shards make the checkpoint.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Metadata {
    seed: u64,
    shards: Vec<ShardEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ShardEntry {
    file: String,
    size: u64,
}

fn shard_name(rank: usize) -> String {
    format!("__{rank}_0.distcp")
}

/// Where rank `rank` writes or reads its shard: through directory `rank % dirs`.
fn shard_path(dirs: &[PathBuf], rel: &Path, rank: usize) -> PathBuf {
    dirs[rank % dirs.len()].join(rel).join(shard_name(rank))
}

impl CkptConfig {
    fn validate(&self) -> Result<()> {
        ensure!(!self.dirs.is_empty(), "no directory to run in");
        ensure!(self.shard_size > 0, "--shard-size must be at least 1 byte");
        ensure!(self.ranks.iter().all(|&n| n > 0), "--ckpt-ranks must all be at least 1");
        ensure!(self.restore_ranks > 0, "--restore-ranks must be at least 1");
        ensure!(self.io_size > 0 && self.range_size > 0, "--io-size and --range-size must be at least 1 byte");
        Ok(())
    }
}

/// Runs `ckpt`: one checkpoint per rank count through one directory, then again through two
/// when a second is given. Every checkpoint is removed (untimed) before the next.
pub fn run_ckpt(cfg: &CkptConfig) -> Result<Vec<PhaseResult>> {
    cfg.validate()?;
    ensure!(!cfg.ranks.is_empty(), "--ckpt-ranks is empty");
    let top = cfg.dirs[0].join(DIR_NAME);
    fs::create_dir(&top)
        .with_context(|| format!("creating {} (if an earlier run left it, remove it first)", top.display()))?;
    let mut results = Vec::new();
    let layouts: &[usize] = if cfg.dirs.len() > 1 { &[1, 2] } else { &[1] };
    for &nd in layouts {
        for &n in &cfg.ranks {
            let name = format!("n{n}-{nd}dir{}", if nd > 1 { "s" } else { "" });
            let r = checkpoint(cfg, &cfg.dirs[..nd], DIR_NAME, &name, n)?;
            log(&r);
            results.push(r);
            let path = top.join(&name);
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    fs::remove_dir(&top).with_context(|| format!("removing {}", top.display()))?;
    Ok(results)
}

/// Runs the `restore` phases: `setup` writes a checkpoint of `restore_ranks` ranks, `read`
/// reads it back (make the caches cold in between), `cleanup` removes it.
pub fn run_restore(cfg: &CkptConfig) -> Result<Vec<PhaseResult>> {
    cfg.validate()?;
    let top = cfg.dirs[0].join(RESTORE_DIR_NAME);
    let mut results = Vec::new();
    for &phase in &cfg.phases {
        match phase {
            Phase::Setup => {
                fs::create_dir(&top).with_context(|| {
                    format!("creating {} (if an earlier run left it, remove it first)", top.display())
                })?;
                let r = checkpoint(cfg, &cfg.dirs, RESTORE_DIR_NAME, "ckpt", cfg.restore_ranks)?;
                let r = PhaseResult { phase: "setup".into(), ..r };
                log(&r);
                results.push(r);
            }
            Phase::Read => {
                crate::need_setup(&top)?;
                let r = restore(cfg)?;
                log(&r);
                results.push(r);
            }
            Phase::Cleanup => fs::remove_dir_all(&top).with_context(|| format!("removing {}", top.display()))?,
            other => anyhow::bail!("restore has no phase {}", other.name()),
        }
    }
    Ok(results)
}

fn log(r: &PhaseResult) {
    eprintln!(
        "strata-bench: {:<14} {:>3} procs {:>9.3} s, slowest {:.3} s, {:.1} MiB/s",
        r.phase,
        r.threads,
        r.seconds,
        r.slowest_seconds.unwrap_or(r.seconds),
        r.mib_per_sec.unwrap_or(0.0)
    );
}

/// Writes one checkpoint of `n` ranks in `DIR/top/name` and times it from the release of the
/// ranks to the rename of its `.metadata`.
fn checkpoint(cfg: &CkptConfig, dirs: &[PathBuf], top: &str, name: &str, n: usize) -> Result<PhaseResult> {
    let root = dirs[0].join(top).join(name);
    fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
    let shards: Vec<Source> = (0..n)
        .map(|r| Source {
            path: shard_path(dirs, &Path::new(top).join(name), r),
            size: cfg.shard_size,
            seed: cfg.seed,
            id: r as u64,
        })
        .collect();
    let tasks: Vec<Task> = shards.iter().map(|s| Task::Write { file: s.clone(), io_size: cfg.io_size }).collect();
    crate::sync();
    let gang = procs::run_all(&tasks)?;
    let t = Instant::now();
    commit(&root, cfg.seed, &shards)?;
    let commit = t.elapsed();
    let bytes = cfg.shard_size * n as u64;
    Ok(PhaseResult::new(name, n, n as u64, Some(bytes), gang.wall + commit)
        .with_slowest(gang.slowest())
        .with_latencies(&mut gang.latencies())
        .with_extra("commit_ms", commit.as_secs_f64() * 1000.0))
}

/// The coordinator's step: `.metadata.tmp` written and fsynced, then renamed into place.
fn commit(root: &Path, seed: u64, shards: &[Source]) -> Result<()> {
    let meta = Metadata {
        seed,
        shards: (0..shards.len()).map(|r| ShardEntry { file: shard_name(r), size: shards[r].size }).collect(),
    };
    let tmp = root.join(".metadata.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(&meta)?).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("fsync of {}", tmp.display()))?;
    crate::files::close(f, &tmp)?;
    let dst = root.join(".metadata");
    fs::rename(&tmp, &dst).with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))
}

/// Reads `.metadata`, then every rank reads its shard in ranged reads, through directory
/// `rank % dirs`.
fn restore(cfg: &CkptConfig) -> Result<PhaseResult> {
    let rel = Path::new(RESTORE_DIR_NAME).join("ckpt");
    crate::sync();
    let started = Instant::now();
    let meta_path = cfg.dirs[0].join(&rel).join(".metadata");
    let text =
        fs::read(&meta_path).with_context(|| format!("reading {} (run the setup phase first)", meta_path.display()))?;
    let meta: Metadata = serde_json::from_slice(&text).with_context(|| format!("parsing {}", meta_path.display()))?;
    let load = started.elapsed();
    let tasks: Vec<Task> = meta
        .shards
        .iter()
        .enumerate()
        .map(|(r, s)| Task::ReadSeq {
            files: vec![Source {
                path: cfg.dirs[r % cfg.dirs.len()].join(&rel).join(&s.file),
                size: s.size,
                seed: meta.seed,
                id: r as u64,
            }],
            range: cfg.range_size,
        })
        .collect();
    let gang = procs::run_all(&tasks)?;
    let n = tasks.len();
    Ok(PhaseResult::new("read", n, gang.ops(), Some(gang.bytes()), load + gang.wall)
        .with_slowest(gang.slowest())
        .with_latencies(&mut gang.latencies())
        .with_extra("metadata_ms", load.as_secs_f64() * 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_alternate_between_directories() {
        let one = [PathBuf::from("/a")];
        let two = [PathBuf::from("/a"), PathBuf::from("/b")];
        let rel = Path::new("strata-bench-ckpt/n4-2dirs");
        assert_eq!(shard_path(&one, rel, 3), Path::new("/a/strata-bench-ckpt/n4-2dirs/__3_0.distcp"));
        let dirs: Vec<_> = (0..4).map(|r| shard_path(&two, rel, r)).collect();
        assert!(dirs[0].starts_with("/a") && dirs[1].starts_with("/b"));
        assert!(dirs[2].starts_with("/a") && dirs[3].starts_with("/b"));
    }

    #[test]
    fn metadata_lists_every_shard() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shards: Vec<Source> = (0..3)
            .map(|r| Source { path: tmp.path().join(shard_name(r)), size: 10 + r as u64, seed: 1, id: r as u64 })
            .collect();
        commit(tmp.path(), 7, &shards).expect("commit");
        assert!(!tmp.path().join(".metadata.tmp").exists());
        let m: Metadata = serde_json::from_slice(&fs::read(tmp.path().join(".metadata")).expect("read")).expect("json");
        assert_eq!(m.seed, 7);
        assert_eq!(m.shards[2], ShardEntry { file: "__2_0.distcp".into(), size: 12 });
        // A second commit never overwrites a half-written temporary file of another coordinator.
        fs::write(tmp.path().join(".metadata.tmp"), b"x").expect("write");
        assert!(commit(tmp.path(), 7, &shards).is_err());
    }
}
