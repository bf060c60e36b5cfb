//! The `fanout` workload: many clients load the same large file at the same moment.
//!
//! Model loading on a cluster: every node reads (or mmaps, as safetensors loaders do) one big
//! file at once, from a cold cache. Reader `k` works through directory `k % dirs`, so with one
//! mount of the volume per directory the readers are separate clients.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::Phase;
use crate::procs::{self, Outcome, Source, Task};
use crate::report::PhaseResult;

/// Name of the workload's directory inside `--dir`.
pub const DIR_NAME: &str = "strata-bench-fanout";
const FILE_NAME: &str = "model.bin";
/// Pattern id of the model file (distinct from every other workload's ids).
const FILE_ID: u64 = 0xFA_0000;

/// Parameters of the `fanout` workload.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutConfig {
    /// Reader processes.
    pub readers: usize,
    /// Size of the file.
    pub size: u64,
    /// Size of each read(2) of the `read` phase.
    pub io_size: u64,
    /// Directories the readers go through; the file is written through the first.
    pub dirs: Vec<PathBuf>,
    /// Seed of the content pattern.
    pub seed: u64,
    /// Phases to run, in order.
    pub phases: Vec<Phase>,
}

impl FanoutConfig {
    fn source(&self, dir: usize) -> Source {
        Source {
            path: self.dirs[dir % self.dirs.len()].join(DIR_NAME).join(FILE_NAME),
            size: self.size,
            seed: self.seed,
            id: FILE_ID,
        }
    }
}

/// Runs the phases: `setup` writes the file, `read` and `mmap` load it in every reader (make
/// the caches cold before each), `cleanup` removes it.
pub fn run(cfg: &FanoutConfig) -> Result<Vec<PhaseResult>> {
    ensure!(cfg.readers > 0, "--fanout-readers must be at least 1");
    ensure!(cfg.size > 0 && cfg.io_size > 0, "--fanout-size and --io-size must be at least 1 byte");
    ensure!(!cfg.dirs.is_empty(), "no directory to read through");
    let root = cfg.dirs[0].join(DIR_NAME);
    let mut results = Vec::new();
    for &phase in &cfg.phases {
        let r = match phase {
            Phase::Setup => {
                fs::create_dir(&root).with_context(|| {
                    format!("creating {} (if an earlier run left it, remove it first)", root.display())
                })?;
                let mut o = Outcome::default();
                let started = std::time::Instant::now();
                procs::write_file(&cfg.source(0), cfg.io_size, &mut o)?;
                PhaseResult::new("setup", 1, o.ops, Some(o.bytes), started.elapsed())
            }
            Phase::Read | Phase::Mmap => {
                crate::need_setup(&root)?;
                let tasks: Vec<Task> = (0..cfg.readers)
                    .map(|k| match phase {
                        Phase::Read => Task::ReadSeq { files: vec![cfg.source(k)], range: cfg.io_size },
                        _ => Task::Mmap { file: cfg.source(k) },
                    })
                    .collect();
                crate::sync();
                let gang = procs::run_all(&tasks)?;
                PhaseResult::new(phase.name(), cfg.readers, gang.ops(), Some(gang.bytes()), gang.wall)
                    .with_slowest(gang.slowest())
                    .with_latencies(&mut gang.latencies())
            }
            Phase::Cleanup => {
                fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
                continue;
            }
            other => bail!("fanout has no phase {}", other.name()),
        };
        eprintln!(
            "strata-bench: fanout {:<6} {:>3} procs {:>9.3} s, slowest {:.3} s, {:.1} MiB/s",
            r.phase,
            r.threads,
            r.seconds,
            r.slowest_seconds.unwrap_or(r.seconds),
            r.mib_per_sec.unwrap_or(0.0)
        );
        results.push(r);
    }
    Ok(results)
}
