//! The `files` workload: a dataset-like tree of many small files.
//!
//! Layout: `ROOT/dDDDD/fFFFFFFF`, file `i` in directory `i % dirs`, every file `file_size` bytes
//! of [`Pattern`] content for file id `i`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::pattern::Pattern;
use crate::report::PhaseResult;
use crate::workers::for_each_index;

/// Name of the workload's directory inside `--dir`.
pub const DIR_NAME: &str = "strata-bench-files";

/// Largest read or write issued at once.
const MAX_IO: usize = 1 << 20;

/// Phases of the `files` workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesPhase {
    /// mkdir the tree, then create + write + close every file.
    Write,
    /// readdir every directory and lstat every entry (like `ls -lR`), single-threaded.
    List,
    /// open, read fully, verify and close every file.
    Read,
    /// stat every file by path.
    Stat,
    /// unlink every file, then rmdir the tree.
    Unlink,
}

impl FilesPhase {
    /// All phases, in their natural order.
    pub const ALL: [FilesPhase; 5] =
        [FilesPhase::Write, FilesPhase::List, FilesPhase::Read, FilesPhase::Stat, FilesPhase::Unlink];

    fn name(self) -> &'static str {
        match self {
            FilesPhase::Write => "write",
            FilesPhase::List => "list",
            FilesPhase::Read => "read",
            FilesPhase::Stat => "stat",
            FilesPhase::Unlink => "unlink",
        }
    }
}

/// Parameters of the `files` workload.
#[derive(Debug, Clone, Serialize)]
pub struct FilesConfig {
    /// Number of files.
    pub files: u64,
    /// Size of every file in bytes.
    pub file_size: u64,
    /// Number of directories the files are spread over.
    pub dirs: u64,
    /// Threads for the write phase.
    pub write_threads: usize,
    /// Threads for the read phase.
    pub read_threads: usize,
    /// Threads for the stat and unlink phases.
    pub threads: usize,
    /// fsync every file before closing it in the write phase.
    pub fsync: bool,
    /// Seed of the content pattern.
    pub seed: u64,
    /// Phases to run, in order.
    pub phases: Vec<FilesPhase>,
}

impl FilesConfig {
    fn dir_path(&self, root: &Path, d: u64) -> PathBuf {
        root.join(format!("d{d:04}"))
    }

    fn file_path(&self, root: &Path, i: u64) -> PathBuf {
        self.dir_path(root, i % self.dirs).join(format!("f{i:08}"))
    }

    fn buffer(&self) -> Vec<u8> {
        let len = usize::try_from(self.file_size).unwrap_or(MAX_IO).min(MAX_IO);
        vec![0u8; len.max(1)]
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.files > 0, "--files must be at least 1");
        ensure!(self.dirs > 0, "--dirs must be at least 1");
        ensure!(!self.phases.is_empty(), "no files phase to run");
        Ok(())
    }
}

/// Runs the configured phases under `base/strata-bench-files`.
///
/// If the phases start with `write`, the workload directory must not exist yet. Otherwise it
/// must hold the tree an earlier `write` left (so a caller can make caches cold between phases).
pub fn run(cfg: &FilesConfig, base: &Path) -> Result<Vec<PhaseResult>> {
    cfg.validate()?;
    let root = base.join(DIR_NAME);
    let mut results = Vec::with_capacity(cfg.phases.len());
    for &phase in &cfg.phases {
        let started = Instant::now();
        // Throughput in MiB/s only means something for the phases that move file data.
        let (threads, bytes) = match phase {
            FilesPhase::Write => (cfg.write_threads, Some(write(cfg, &root)?)),
            FilesPhase::List => (1, list(cfg, &root).map(|()| None)?),
            FilesPhase::Read => (cfg.read_threads, Some(read(cfg, &root)?)),
            FilesPhase::Stat => (cfg.threads, stat(cfg, &root).map(|()| None)?),
            FilesPhase::Unlink => (cfg.threads, unlink(cfg, &root).map(|()| None)?),
        };
        let elapsed = started.elapsed();
        let ops = cfg.files;
        let r = PhaseResult::new(phase.name(), threads, ops, bytes, elapsed);
        eprintln!(
            "strata-bench: files {:<6} {:>8} files in {:>8.3} s ({:.0} files/s)",
            r.phase, r.ops, r.seconds, r.ops_per_sec
        );
        results.push(r);
    }
    Ok(results)
}

fn write(cfg: &FilesConfig, root: &Path) -> Result<u64> {
    fs::create_dir(root)
        .with_context(|| format!("creating {} (if an earlier run left it, remove it first)", root.display()))?;
    for d in 0..cfg.dirs {
        let p = cfg.dir_path(root, d);
        fs::create_dir(&p).with_context(|| format!("creating directory {}", p.display()))?;
    }
    for_each_index(
        cfg.write_threads,
        cfg.files,
        || cfg.buffer(),
        |buf, i| {
            let path = cfg.file_path(root, i);
            let pattern = Pattern::new(cfg.seed, i);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut offset = 0u64;
            while offset < cfg.file_size {
                let n = buf.len().min(usize::try_from(cfg.file_size - offset).unwrap_or(usize::MAX));
                let chunk = &mut buf[..n];
                pattern.fill(offset, chunk);
                f.write_all(chunk).with_context(|| format!("writing {} at {offset}", path.display()))?;
                offset += n as u64;
            }
            if cfg.fsync {
                f.sync_all().with_context(|| format!("fsync of {}", path.display()))?;
            }
            close(f, &path)
        },
    )?;
    Ok(cfg.files * cfg.file_size)
}

/// Closes `f` and reports a failing close(2), which std's `Drop` would swallow (a network or
/// FUSE file system may only report a failed flush there).
pub(crate) fn close(f: File, path: &Path) -> Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released from an owned `File`, so it is open and closed only here.
    let rc = unsafe { libc::close(fd) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| format!("closing {}", path.display()));
    }
    Ok(())
}

fn list(cfg: &FilesConfig, root: &Path) -> Result<()> {
    let mut files = 0u64;
    let mut dirs = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("reading directory {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading directory {}", dir.display()))?;
            let path = entry.path();
            let md = fs::symlink_metadata(&path).with_context(|| format!("lstat of {}", path.display()))?;
            if md.is_dir() {
                dirs += 1;
                pending.push(path);
            } else {
                ensure!(md.is_file(), "{} is neither a file nor a directory", path.display());
                ensure!(
                    md.len() == cfg.file_size,
                    "{} is {} bytes, expected {}",
                    path.display(),
                    md.len(),
                    cfg.file_size
                );
                files += 1;
            }
        }
    }
    ensure!(
        files == cfg.files && dirs == cfg.dirs,
        "listing {} found {files} files in {dirs} directories, expected {} in {}",
        root.display(),
        cfg.files,
        cfg.dirs
    );
    Ok(())
}

fn read(cfg: &FilesConfig, root: &Path) -> Result<u64> {
    for_each_index(
        cfg.read_threads,
        cfg.files,
        || cfg.buffer(),
        |buf, i| {
            let path = cfg.file_path(root, i);
            let pattern = Pattern::new(cfg.seed, i);
            let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let mut offset = 0u64;
            loop {
                let n = match f.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("reading {} at {offset}", path.display()));
                    }
                };
                if let Some(m) = pattern.first_mismatch(offset, &buf[..n]) {
                    bail!(
                        "DATA MISMATCH in {} at byte {}: expected {:#04x}, read {:#04x}",
                        path.display(),
                        m.offset,
                        m.expected,
                        m.found
                    );
                }
                offset += n as u64;
                ensure!(
                    offset <= cfg.file_size,
                    "DATA MISMATCH: {} is longer than the {} bytes written",
                    path.display(),
                    cfg.file_size
                );
            }
            ensure!(
                offset == cfg.file_size,
                "DATA MISMATCH: read {offset} bytes of {}, expected {}",
                path.display(),
                cfg.file_size
            );
            close(f, &path)
        },
    )?;
    Ok(cfg.files * cfg.file_size)
}

fn stat(cfg: &FilesConfig, root: &Path) -> Result<()> {
    for_each_index(
        cfg.threads,
        cfg.files,
        || (),
        |_, i| {
            let path = cfg.file_path(root, i);
            let md = fs::metadata(&path).with_context(|| format!("stat of {}", path.display()))?;
            ensure!(
                md.is_file() && md.len() == cfg.file_size,
                "{} has size {} (file: {}), expected a {}-byte file",
                path.display(),
                md.len(),
                md.is_file(),
                cfg.file_size
            );
            Ok(())
        },
    )
}

fn unlink(cfg: &FilesConfig, root: &Path) -> Result<()> {
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

    fn cfg(phases: &[FilesPhase]) -> FilesConfig {
        FilesConfig {
            files: 57,
            file_size: 10_000,
            dirs: 5,
            write_threads: 3,
            read_threads: 2,
            threads: 2,
            fsync: false,
            seed: 11,
            phases: phases.to_vec(),
        }
    }

    #[test]
    fn layout_spreads_files_over_dirs() {
        let c = cfg(&FilesPhase::ALL);
        let root = Path::new("/r");
        assert_eq!(c.file_path(root, 0), Path::new("/r/d0000/f00000000"));
        assert_eq!(c.file_path(root, 7), Path::new("/r/d0002/f00000007"));
    }

    #[test]
    fn full_cycle_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let results = run(&cfg(&FilesPhase::ALL), tmp.path()).expect("run");
        let names: Vec<_> = results.iter().map(|r| r.phase.as_str()).collect();
        assert_eq!(names, ["write", "list", "read", "stat", "unlink"]);
        assert_eq!(results[0].bytes, Some(570_000));
        assert_eq!(results[2].bytes, Some(570_000));
        assert_eq!(results[1].bytes, None);
        assert!(!tmp.path().join(DIR_NAME).exists());
    }

    #[test]
    fn split_phases_and_fsync() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(&[FilesPhase::Write]);
        c.fsync = true;
        run(&c, tmp.path()).expect("write");
        // A second write must refuse to reuse the tree.
        let err = run(&c, tmp.path()).expect_err("tree exists");
        assert!(format!("{err:#}").contains("remove it first"), "{err:#}");
        run(&cfg(&[FilesPhase::List, FilesPhase::Read]), tmp.path()).expect("read");
        run(&cfg(&[FilesPhase::Stat, FilesPhase::Unlink]), tmp.path()).expect("unlink");
        assert!(!tmp.path().join(DIR_NAME).exists());
    }

    #[test]
    fn read_detects_corruption() {
        let tmp = tempfile::tempdir().expect("tempdir");
        run(&cfg(&[FilesPhase::Write]), tmp.path()).expect("write");
        let victim = cfg(&[]).file_path(&tmp.path().join(DIR_NAME), 31);
        let mut data = fs::read(&victim).expect("read victim");
        data[4321] ^= 0xff;
        fs::write(&victim, &data).expect("corrupt victim");
        let err = run(&cfg(&[FilesPhase::Read]), tmp.path()).expect_err("must detect");
        let msg = format!("{err:#}");
        assert!(msg.contains("DATA MISMATCH"), "{msg}");
        assert!(msg.contains("f00000031"), "{msg}");
        assert!(msg.contains("byte 4321"), "{msg}");
    }

    #[test]
    fn read_detects_short_file_and_swapped_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        run(&cfg(&[FilesPhase::Write]), tmp.path()).expect("write");
        let root = tmp.path().join(DIR_NAME);
        let c = cfg(&[FilesPhase::Read]);
        let short = c.file_path(&root, 3);
        let f = OpenOptions::new().write(true).open(&short).expect("open");
        f.set_len(9_999).expect("truncate");
        drop(f);
        let msg = format!("{:#}", run(&c, tmp.path()).expect_err("short"));
        assert!(msg.contains("read 9999 bytes"), "{msg}");

        fs::write(&short, fs::read(c.file_path(&root, 4)).expect("read 4")).expect("swap");
        let msg = format!("{:#}", run(&c, tmp.path()).expect_err("swapped"));
        assert!(msg.contains("DATA MISMATCH"), "{msg}");
    }

    #[test]
    fn list_detects_missing_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        run(&cfg(&[FilesPhase::Write]), tmp.path()).expect("write");
        let c = cfg(&[FilesPhase::List]);
        fs::remove_file(c.file_path(&tmp.path().join(DIR_NAME), 9)).expect("rm");
        let msg = format!("{:#}", run(&c, tmp.path()).expect_err("missing"));
        assert!(msg.contains("found 56 files"), "{msg}");
    }

    #[test]
    fn empty_files_work() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(&FilesPhase::ALL);
        c.file_size = 0;
        run(&c, tmp.path()).expect("run");
    }
}
