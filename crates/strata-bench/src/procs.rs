//! Work spread over separate processes, started together.
//!
//! The training workloads model ranks and data-loader workers, which are processes: each has its
//! own file descriptors and page-table faults, and a FUSE daemon sees separate pids. The
//! coordinator starts every worker as a copy of the running program (the same executable and
//! arguments, with [`WORKER_ENV`] set; `run` then hands over to [`serve`]), sends it its
//! [`Task`] on stdin, waits until all are ready, then releases them at once and collects one
//! [`Outcome`] each. Process start-up is therefore never timed.
//!
//! Protocol, one line each: coordinator -> worker `TASK_JSON`, worker -> coordinator
//! `strata-bench-worker ready`, coordinator -> worker `go`, worker -> coordinator
//! `strata-bench-worker result OUTCOME_JSON`. Other lines on the worker's stdout are ignored, so
//! a host program that prints something of its own does not break it.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::pattern::Pattern;

/// Set in a worker's environment: the process serves one task instead of running workloads.
pub const WORKER_ENV: &str = "STRATA_BENCH_WORKER";

const MARK: &str = "strata-bench-worker ";

/// Bytes checked at each end of every sequential read and mmap window: enough to catch a block
/// of the wrong file or offset, without spending the CPU the readers themselves need.
const SAMPLE: u64 = 64;

/// One file of known content: `size` bytes of [`Pattern`] `(seed, id)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    /// Where the file is (through whichever mount the worker uses).
    pub path: PathBuf,
    /// Its length.
    pub size: u64,
    /// Pattern seed.
    pub seed: u64,
    /// Pattern file id.
    pub id: u64,
}

/// What one worker process does once released.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Create `file` (it must not exist), write it in `io_size` writes, fsync, close.
    Write { file: Source, io_size: u64 },
    /// Read each file from start to end in `range`-byte preads, one after the other; the ends
    /// of every read are checked against the pattern. One timed operation per read.
    ReadSeq { files: Vec<Source>, range: u64 },
    /// mmap the file read-only and touch every page in order, checking the pattern at every
    /// MiB. One timed operation per MiB.
    Mmap { file: Source },
    /// open, read to the end, verify fully and close each file in order; one operation each.
    ReadWhole { files: Vec<Source> },
    /// `count` preads of `record` bytes at offsets from [`crate::rng::record_offsets`] for
    /// this `worker`, each verified; one operation each.
    Records { file: Source, record: u64, count: u64, seed: u64, worker: u64 },
    /// readdir the tree under `root` and lstat every entry (one operation each); it must hold
    /// `files` regular files.
    Walk { root: PathBuf, files: u64 },
}

/// What a worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// From its release to its last operation.
    pub seconds: f64,
    /// Operations done.
    pub ops: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Latency of each timed operation, in nanoseconds.
    pub latencies_ns: Vec<u64>,
}

/// What a gang of workers measured together.
#[derive(Debug, Clone)]
pub struct Gang {
    /// One per task, in the tasks' order.
    pub outcomes: Vec<Outcome>,
    /// From the release of the first worker to the result of the last.
    pub wall: Duration,
}

impl Gang {
    /// The slowest worker's time.
    pub fn slowest(&self) -> f64 {
        self.outcomes.iter().map(|o| o.seconds).fold(0.0, f64::max)
    }

    /// Sum of the workers' operations.
    pub fn ops(&self) -> u64 {
        self.outcomes.iter().map(|o| o.ops).sum()
    }

    /// Sum of the workers' bytes.
    pub fn bytes(&self) -> u64 {
        self.outcomes.iter().map(|o| o.bytes).sum()
    }

    /// Every worker's latency samples together.
    pub fn latencies(&self) -> Vec<u64> {
        self.outcomes.iter().flat_map(|o| o.latencies_ns.iter().copied()).collect()
    }
}

static WORKER_COMMAND: OnceLock<(PathBuf, Vec<OsString>)> = OnceLock::new();

/// Makes workers run `exe args...` instead of a copy of this process (tests run workers
/// through the test binary).
#[cfg(test)]
pub fn set_worker_command(exe: PathBuf, args: Vec<OsString>) {
    let _ = WORKER_COMMAND.set((exe, args));
}

fn worker_command() -> Result<(PathBuf, Vec<OsString>)> {
    if let Some(c) = WORKER_COMMAND.get() {
        return Ok(c.clone());
    }
    let exe = std::env::current_exe().context("finding the running executable to start workers")?;
    Ok((exe, std::env::args_os().skip(1).collect()))
}

/// Kills and reaps the workers that are still running when dropped (after an error).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn expect_line(out: &mut BufReader<ChildStdout>, what: &str, worker: usize) -> Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).with_context(|| format!("reading worker {worker}'s output"))?;
        if n == 0 {
            bail!("worker {worker} ended before its {what} (see its error above)");
        }
        if let Some(at) = line.find(MARK) {
            let rest = line[at + MARK.len()..].trim_end();
            if let Some(payload) = rest.strip_prefix(what) {
                return Ok(payload.trim().to_string());
            }
        }
    }
}

/// Runs every task in a process of its own, all released at the same moment.
pub fn run_all(tasks: &[Task]) -> Result<Gang> {
    let (exe, args) = worker_command()?;
    let mut workers = Workers(Vec::with_capacity(tasks.len()));
    let mut pipes: Vec<(ChildStdin, BufReader<ChildStdout>)> = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(&args)
            .env(WORKER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting worker {i} ({})", exe.display()))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("worker {i} has no pipes");
        };
        workers.0.push(child);
        let mut line = serde_json::to_string(task)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).with_context(|| format!("sending worker {i} its task"))?;
        stdin.flush()?;
        pipes.push((stdin, BufReader::new(stdout)));
    }
    for (i, (_, out)) in pipes.iter_mut().enumerate() {
        expect_line(out, "ready", i)?;
    }
    let started = Instant::now();
    for (i, (stdin, _)) in pipes.iter_mut().enumerate() {
        stdin.write_all(b"go\n").and_then(|()| stdin.flush()).with_context(|| format!("releasing worker {i}"))?;
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for (i, (_, out)) in pipes.iter_mut().enumerate() {
        let json = expect_line(out, "result", i)?;
        outcomes.push(serde_json::from_str(&json).with_context(|| format!("worker {i}'s result"))?);
    }
    let wall = started.elapsed();
    // Read whatever else a worker prints until it exits: a closed pipe would kill it.
    for (i, (stdin, mut out)) in pipes.into_iter().enumerate() {
        drop(stdin);
        std::io::copy(&mut out, &mut std::io::sink()).with_context(|| format!("reading worker {i}'s output"))?;
    }
    for (i, c) in workers.0.iter_mut().enumerate() {
        let status = c.wait().with_context(|| format!("waiting for worker {i}"))?;
        ensure!(status.success(), "worker {i} exited with {status}");
    }
    Ok(Gang { outcomes, wall })
}

/// Whether this process was started as a worker.
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// The worker's side of the protocol: reads its task, reports ready, waits for `go`, runs the
/// task and reports the outcome.
pub fn serve() -> Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    input.read_line(&mut line).context("reading the task from the coordinator")?;
    let task: Task = serde_json::from_str(line.trim()).context("parsing the task from the coordinator")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{MARK}ready")?;
    stdout.flush()?;
    line.clear();
    input.read_line(&mut line).context("waiting for the coordinator's go")?;
    ensure!(line.trim() == "go", "the coordinator went away before the start");
    let outcome = run_task(&task)?;
    writeln!(stdout, "{MARK}result {}", serde_json::to_string(&outcome)?)?;
    stdout.flush()?;
    Ok(())
}

/// Runs one task in this process and measures it.
pub fn run_task(task: &Task) -> Result<Outcome> {
    let started = Instant::now();
    let mut o = Outcome::default();
    match task {
        Task::Write { file, io_size } => write_file(file, *io_size, &mut o)?,
        Task::ReadSeq { files, range } => {
            for f in files {
                read_seq(f, *range, &mut o)?;
            }
        }
        Task::Mmap { file } => mmap_file(file, &mut o)?,
        Task::ReadWhole { files } => {
            let mut buf = Vec::new();
            for f in files {
                read_whole(f, &mut buf, &mut o)?;
            }
        }
        Task::Records { file, record, count, seed, worker } => records(file, *record, *count, *seed, *worker, &mut o)?,
        Task::Walk { root, files } => walk(root, *files, &mut o)?,
    }
    o.seconds = started.elapsed().as_secs_f64();
    Ok(o)
}

fn mismatch(path: &Path, m: crate::pattern::Mismatch) -> anyhow::Error {
    anyhow::anyhow!(
        "DATA MISMATCH in {} at byte {}: expected {:#04x}, read {:#04x}",
        path.display(),
        m.offset,
        m.expected,
        m.found
    )
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Writes `file` the way a checkpoint rank does: create, sequential writes, fsync, close.
pub fn write_file(file: &Source, io_size: u64, o: &mut Outcome) -> Result<()> {
    let path = &file.path;
    let pattern = Pattern::new(file.seed, file.id);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (if an earlier run left it, remove it first)", path.display()))?;
    let mut buf = vec![0u8; usize::try_from(io_size.clamp(1, file.size.max(1))).unwrap_or(1 << 20)];
    let mut offset = 0;
    while offset < file.size {
        let n = buf.len().min(usize::try_from(file.size - offset).unwrap_or(usize::MAX));
        pattern.fill(offset, &mut buf[..n]);
        let t = Instant::now();
        f.write_all(&buf[..n]).with_context(|| format!("writing {} at {offset}", path.display()))?;
        o.latencies_ns.push(nanos(t.elapsed()));
        offset += n as u64;
        o.ops += 1;
    }
    f.sync_all().with_context(|| format!("fsync of {}", path.display()))?;
    crate::files::close(f, path)?;
    o.bytes += file.size;
    Ok(())
}

fn check_ends(file: &Source, pattern: &Pattern, offset: u64, data: &[u8]) -> Result<()> {
    let len = data.len() as u64;
    let head = SAMPLE.min(len) as usize;
    if let Some(m) = pattern.first_mismatch(offset, &data[..head]) {
        return Err(mismatch(&file.path, m));
    }
    let tail = len.saturating_sub(SAMPLE);
    if let Some(m) = pattern.first_mismatch(offset + tail, &data[tail as usize..]) {
        return Err(mismatch(&file.path, m));
    }
    Ok(())
}

fn read_exact_at(f: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    f.read_exact_at(buf, offset).with_context(|| {
        format!("reading {} bytes of {} at {offset} (DATA MISMATCH if the file is short)", buf.len(), path.display())
    })
}

fn read_seq(file: &Source, range: u64, o: &mut Outcome) -> Result<()> {
    let f = File::open(&file.path).with_context(|| format!("opening {}", file.path.display()))?;
    let pattern = Pattern::new(file.seed, file.id);
    let mut buf = vec![0u8; usize::try_from(range.clamp(1, file.size.max(1))).unwrap_or(1 << 20)];
    for (offset, len) in crate::rng::ranges(file.size, buf.len() as u64) {
        let chunk = &mut buf[..len as usize];
        let t = Instant::now();
        read_exact_at(&f, &file.path, chunk, offset)?;
        o.latencies_ns.push(nanos(t.elapsed()));
        check_ends(file, &pattern, offset, chunk)?;
        o.ops += 1;
        o.bytes += len;
    }
    crate::files::close(f, &file.path)
}

fn read_whole(file: &Source, buf: &mut Vec<u8>, o: &mut Outcome) -> Result<()> {
    let path = &file.path;
    let t = Instant::now();
    buf.clear();
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::Read::read_to_end(&mut f, buf).with_context(|| format!("reading {}", path.display()))?;
    crate::files::close(f, path)?;
    o.latencies_ns.push(nanos(t.elapsed()));
    ensure!(
        buf.len() as u64 == file.size,
        "DATA MISMATCH: read {} bytes of {}, expected {}",
        buf.len(),
        path.display(),
        file.size
    );
    if let Some(m) = Pattern::new(file.seed, file.id).first_mismatch(0, buf) {
        return Err(mismatch(path, m));
    }
    o.ops += 1;
    o.bytes += file.size;
    Ok(())
}

fn records(file: &Source, record: u64, count: u64, seed: u64, worker: u64, o: &mut Outcome) -> Result<()> {
    let f = File::open(&file.path).with_context(|| format!("opening {}", file.path.display()))?;
    let pattern = Pattern::new(file.seed, file.id);
    let mut buf = vec![0u8; usize::try_from(record).context("record size")?];
    for offset in crate::rng::record_offsets(seed, worker, file.size, record, count) {
        let t = Instant::now();
        read_exact_at(&f, &file.path, &mut buf, offset)?;
        o.latencies_ns.push(nanos(t.elapsed()));
        if let Some(m) = pattern.first_mismatch(offset, &buf) {
            return Err(mismatch(&file.path, m));
        }
        o.ops += 1;
        o.bytes += record;
    }
    crate::files::close(f, &file.path)
}

/// A read-only shared mapping of a whole file, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(f: &File, len: usize) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh mapping chosen by the kernel (null hint) of an open descriptor; the
        // result is checked before use and only read through `bytes`.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable for the life of `self`. Nobody writes the
        // file while the benchmark maps it (a truncation would SIGBUS, as for any mmap reader).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once; no borrow of it outlives self.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

fn mmap_file(file: &Source, o: &mut Outcome) -> Result<()> {
    ensure!(file.size > 0, "cannot mmap the empty file {}", file.path.display());
    let f = File::open(&file.path).with_context(|| format!("opening {}", file.path.display()))?;
    let actual = f.metadata().with_context(|| format!("stat of {}", file.path.display()))?.len();
    ensure!(actual == file.size, "DATA MISMATCH: {} is {actual} bytes, expected {}", file.path.display(), file.size);
    let len = usize::try_from(file.size).context("file too large to map")?;
    let map = Mapping::new(&f, len).with_context(|| format!("mmap of {}", file.path.display()))?;
    let data = map.bytes();
    let pattern = Pattern::new(file.seed, file.id);
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    const WINDOW: usize = 1 << 20;
    let mut sum = 0u64;
    for start in (0..len).step_by(WINDOW) {
        let end = (start + WINDOW).min(len);
        let t = Instant::now();
        // One byte per page faults the whole window in, the way a model loader walks a mapping.
        for p in (start..end).step_by(page) {
            sum = sum.wrapping_add(u64::from(std::hint::black_box(data[p])));
        }
        o.latencies_ns.push(nanos(t.elapsed()));
        check_ends(file, &pattern, start as u64, &data[start..end])?;
        o.ops += 1;
    }
    std::hint::black_box(sum);
    drop(map);
    crate::files::close(f, &file.path)?;
    o.bytes += file.size;
    Ok(())
}

fn walk(root: &Path, expect: u64, o: &mut Outcome) -> Result<()> {
    let mut files = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("reading directory {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading directory {}", dir.display()))?;
            let path = entry.path();
            let t = Instant::now();
            let md = fs::symlink_metadata(&path).with_context(|| format!("lstat of {}", path.display()))?;
            o.latencies_ns.push(nanos(t.elapsed()));
            o.ops += 1;
            if md.is_dir() {
                pending.push(path);
            } else if md.is_file() {
                files += 1;
            }
        }
    }
    ensure!(files == expect, "walking {} found {files} files, expected {expect}", root.display());
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Makes this test binary the workers' program: each worker runs only
    /// [`worker_trampoline`], which serves the task.
    pub(crate) fn use_test_binary_as_worker() {
        let exe = std::env::current_exe().expect("test binary");
        let args = [
            "--exact",
            "procs::tests::worker_trampoline",
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
            "-q",
        ];
        set_worker_command(exe, args.iter().map(OsString::from).collect());
    }

    #[test]
    #[ignore = "entry point of worker processes started by the other tests"]
    fn worker_trampoline() {
        if is_worker() {
            // A worker's failure is reported to its gang by its exit status; some tests fail
            // one on purpose, and a panic's backtrace would only look like a failing test.
            if let Err(e) = serve() {
                eprintln!("worker: {e:#}");
                std::process::exit(1);
            }
        }
    }

    fn source(dir: &Path, name: &str, size: u64, id: u64) -> Source {
        Source { path: dir.join(name), size, seed: 5, id }
    }

    #[test]
    fn tasks_in_process_write_read_mmap_records() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = source(tmp.path(), "a", (3 << 20) + 123, 1);
        let w = run_task(&Task::Write { file: f.clone(), io_size: 1 << 20 }).expect("write");
        assert_eq!((w.bytes, w.ops), (f.size, 4));
        let r = run_task(&Task::ReadSeq { files: vec![f.clone()], range: 1 << 20 }).expect("read");
        assert_eq!((r.bytes, r.ops, r.latencies_ns.len()), (f.size, 4, 4));
        let m = run_task(&Task::Mmap { file: f.clone() }).expect("mmap");
        assert_eq!((m.bytes, m.ops), (f.size, 4));
        let rec = run_task(&Task::Records { file: f.clone(), record: 2048, count: 100, seed: 1, worker: 0 })
            .expect("records");
        assert_eq!((rec.bytes, rec.ops), (204_800, 100));
        // Another file's content at the same path is caught by every reader.
        fs::remove_file(&f.path).expect("rm");
        run_task(&Task::Write { file: Source { id: 2, ..f.clone() }, io_size: 1 << 20 }).expect("rewrite");
        for t in [
            Task::ReadSeq { files: vec![f.clone()], range: 1 << 20 },
            Task::Mmap { file: f.clone() },
            Task::ReadWhole { files: vec![f.clone()] },
            Task::Records { file: f.clone(), record: 2048, count: 10, seed: 1, worker: 0 },
        ] {
            let msg = format!("{:#}", run_task(&t).expect_err("wrong content"));
            assert!(msg.contains("DATA MISMATCH"), "{t:?}: {msg}");
        }
        // A write never replaces an existing file.
        let msg = format!("{:#}", run_task(&Task::Write { file: f, io_size: 1 << 20 }).expect_err("exists"));
        assert!(msg.contains("remove it first"), "{msg}");
    }

    #[test]
    fn gang_of_processes() {
        use_test_binary_as_worker();
        let tmp = tempfile::tempdir().expect("tempdir");
        let files: Vec<_> = (0..3).map(|i| source(tmp.path(), &format!("s{i}"), 100_000, i)).collect();
        let tasks: Vec<_> = files.iter().map(|f| Task::Write { file: f.clone(), io_size: 65536 }).collect();
        let g = run_all(&tasks).expect("writers");
        assert_eq!((g.outcomes.len(), g.bytes(), g.ops()), (3, 300_000, 6));
        assert!(g.slowest() > 0.0 && g.slowest() <= g.wall.as_secs_f64() + 0.01);
        let g = run_all(&[Task::ReadWhole { files: files.clone() }, Task::Walk { root: tmp.path().into(), files: 3 }])
            .expect("readers");
        assert_eq!(g.outcomes[0].bytes, 300_000);
        assert_eq!(g.outcomes[1].ops, 3);
        // A failing worker fails the gang, and the others are not left waiting.
        let err = run_all(&[
            Task::Walk { root: tmp.path().into(), files: 3 },
            Task::Walk { root: tmp.path().into(), files: 9 },
        ])
        .expect_err("wrong count");
        assert!(format!("{err:#}").contains("worker 1"), "{err:#}");
    }
}
