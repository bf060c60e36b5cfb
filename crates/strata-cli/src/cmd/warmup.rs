//! `strata warmup PATH...`: loads the blocks of files on a Strata mount into that mount's
//! caches ahead of a job (`--check`: only say how much is cached; `--evict`: drop it).
//!
//! The work happens inside the mount process. For each file the command reads one of the
//! mount's virtual extended attributes (`strata.warmup`, `strata.cached`, `strata.evict`,
//! answered by `strata-fuse` and never stored): the mount fetches the file's blocks in
//! parallel into its memory and disk caches, and no file data crosses the kernel. The kernel
//! asks for read permission on each file first. Directories are walked by `--threads`
//! threads (symbolic links are not followed, other file systems mounted below are skipped).

use std::ffi::{CStr, CString};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::human;

/// Load files into the cache of the Strata mount they are on (or check, or evict).
///
/// Run it on the host of the mount: the mount process fetches every block of the files
/// under each PATH (directories recursively) into its memory cache and its disk cache (S3
/// volumes), so that a job reading them later makes no block-store requests. Data
/// larger than the caches does not fit: `--check` then shows less than 100%.
#[derive(clap::Args, Debug)]
pub struct WarmupArgs {
    /// Files or directories on a Strata mount.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Files handled at once (each file's blocks are fetched in parallel by the mount too).
    #[arg(long, short = 't', default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: u64,
    /// Only report how much of each PATH is cached (percentage and bytes); loads nothing.
    #[arg(long)]
    check: bool,
    /// Drop the files' data from the mount's caches (memory and disk) and from the kernel's
    /// page cache.
    #[arg(long, conflicts_with = "check")]
    evict: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Warm,
    Check,
    Evict,
}

impl Mode {
    fn xattr(self) -> &'static CStr {
        match self {
            Mode::Warm => c"strata.warmup",
            Mode::Check => c"strata.cached",
            Mode::Evict => c"strata.evict",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Mode::Warm => "warming",
            Mode::Check => "checking",
            Mode::Evict => "evicting",
        }
    }
}

/// Totals of one PATH.
#[derive(Default)]
struct Tally {
    files: AtomicU64,
    total: AtomicU64,
    cached: AtomicU64,
    fetched: AtomicU64,
    evicted: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn get(&self) -> [u64; 6] {
        [&self.files, &self.total, &self.cached, &self.fetched, &self.evicted, &self.failed]
            .map(|a| a.load(Ordering::Relaxed))
    }
}

enum Item {
    Dir(PathBuf, usize, u64),
    File(PathBuf, usize),
}

/// The walk's work: items waiting, and how many are being worked on (the walk is over when
/// both are none).
struct Queue {
    state: Mutex<(Vec<Item>, usize)>,
    cv: Condvar,
}

impl Queue {
    fn pop(&self) -> Option<Item> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = s.0.pop() {
                s.1 += 1;
                return Some(i);
            }
            if s.1 == 0 {
                return None;
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self, more: Vec<Item>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0.extend(more);
        s.1 -= 1;
        self.cv.notify_all();
    }
}

/// Runs the command.
pub fn run(args: WarmupArgs) -> Result<()> {
    let mode = if args.check {
        Mode::Check
    } else if args.evict {
        Mode::Evict
    } else {
        Mode::Warm
    };
    let mut roots = Vec::new();
    for p in &args.paths {
        roots.push(on_strata(p)?);
    }
    let tallies: Vec<Tally> = roots.iter().map(|_| Tally::default()).collect();
    let errors = Mutex::new(Vec::<String>::new());
    let queue = Queue { state: Mutex::new((Vec::new(), 0)), cv: Condvar::new() };
    {
        let mut s = queue.state.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (p, md)) in roots.iter().enumerate().rev() {
            s.0.push(if md.is_dir() { Item::Dir(p.clone(), i, md.dev()) } else { Item::File(p.clone(), i) });
        }
    }
    let started = Instant::now();
    let finished = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..args.threads).map(|_| sc.spawn(|| work(&queue, mode, &tallies, &errors))).collect();
        let progress =
            std::io::stderr().is_terminal().then(|| sc.spawn(|| progress(mode, &tallies, &finished, started)));
        for w in workers {
            // A worker only panics on a bug; the scope re-raises it.
            let _ = w.join();
        }
        finished.store(true, Ordering::Relaxed);
        if let Some(p) = progress {
            let _ = p.join();
        }
    });
    let elapsed = started.elapsed();
    report(mode, &args.paths, &tallies, elapsed);
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let failed: u64 = tallies.iter().map(|t| t.failed.load(Ordering::Relaxed)).sum();
    for e in errors.iter().take(20) {
        eprintln!("strata warmup: {e}");
    }
    if failed > 0 {
        bail!("{failed} file(s) could not be handled{}", if failed > 20 { " (the first 20 are shown)" } else { "" });
    }
    Ok(())
}

/// `p` made absolute, with its metadata, once it is known to be on a Strata mount.
fn on_strata(p: &Path) -> Result<(PathBuf, std::fs::Metadata)> {
    let abs = match std::fs::canonicalize(p) {
        Ok(a) => a,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{}: no such file or directory", p.display()),
        Err(e) => return Err(e).with_context(|| format!("{}", p.display())),
    };
    let md = std::fs::metadata(&abs).with_context(|| format!("{}", p.display()))?;
    let c = cpath(&abs)?;
    // SAFETY: statfs fills the zeroed struct it is given; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statfs {}", p.display()));
    }
    const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;
    if st.f_type as u64 != FUSE_SUPER_MAGIC {
        bail!("{}: not on a Strata mount (file system type {:#x})", p.display(), st.f_type);
    }
    match get_xattr(&c, c"strata.stats") {
        Ok(_) => Ok((abs, md)),
        Err(e) if [libc::ENODATA, libc::EOPNOTSUPP].contains(&e.raw_os_error().unwrap_or(0)) => {
            bail!("{}: not on a Strata mount (a FUSE file system that does not answer strata.stats)", p.display())
        }
        Err(e) => Err(e).with_context(|| format!("{}: asking its Strata mount", p.display())),
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: NUL in path", p.display()))
}

/// The value of an extended attribute of `path` itself (a symbolic link is not followed).
fn get_xattr(path: &CStr, name: &CStr) -> std::io::Result<String> {
    let mut buf = [0u8; 512];
    // SAFETY: both names are valid C strings and `buf` has the room passed.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// The number after `key=` in a mount's `key=value` answer.
fn field(text: &str, key: &str) -> Result<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("the mount's answer {text:?} has no {key}"))
}

fn work(queue: &Queue, mode: Mode, tallies: &[Tally], errors: &Mutex<Vec<String>>) {
    let fail = |t: &Tally, what: String| {
        t.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() < 20 {
            e.push(what);
        }
    };
    while let Some(item) = queue.pop() {
        let mut more = Vec::new();
        match item {
            Item::Dir(dir, i, dev) => match std::fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd {
                        let e = match e {
                            Ok(e) => e,
                            Err(err) => {
                                fail(&tallies[i], format!("{}: {err}", dir.display()));
                                continue;
                            }
                        };
                        match e.metadata() {
                            Ok(md) if md.is_dir() && md.dev() == dev => more.push(Item::Dir(e.path(), i, dev)),
                            Ok(md) if md.is_file() => more.push(Item::File(e.path(), i)),
                            Ok(_) => {}
                            Err(err) => fail(&tallies[i], format!("{}: {err}", e.path().display())),
                        }
                    }
                }
                Err(err) => fail(&tallies[i], format!("{}: {err}", dir.display())),
            },
            Item::File(path, i) => {
                if let Err(e) = one_file(&path, mode, &tallies[i]) {
                    fail(&tallies[i], format!("{}: {e:#}", path.display()));
                }
            }
        }
        queue.done(more);
    }
}

fn one_file(path: &Path, mode: Mode, t: &Tally) -> Result<()> {
    let c = cpath(path)?;
    let answer = get_xattr(&c, mode.xattr())?;
    let (cached, total) = (field(&answer, "cached")?, field(&answer, "total")?);
    match mode {
        Mode::Warm => {
            t.fetched.fetch_add(field(&answer, "fetched")?, Ordering::Relaxed);
        }
        Mode::Check => {}
        Mode::Evict => {
            t.evicted.fetch_add(field(&answer, "evicted")?, Ordering::Relaxed);
            drop_page_cache(path)?;
        }
    }
    t.cached.fetch_add(cached, Ordering::Relaxed);
    t.total.fetch_add(total, Ordering::Relaxed);
    t.files.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Drops the kernel's cached pages of a file (as read through the mount).
fn drop_page_cache(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).context("open to drop its page cache")?;
    // SAFETY: a plain system call on a descriptor this function owns.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc)).context("posix_fadvise(DONTNEED)");
    }
    Ok(())
}

fn percent(cached: u64, total: u64) -> f64 {
    if total == 0 { 100.0 } else { cached as f64 * 100.0 / total as f64 }
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{}/s", human((bytes as f64 / d.as_secs_f64().max(1e-3)) as u64))
}

/// A status line on the terminal, rewritten four times a second until the walk is over.
fn progress(mode: Mode, tallies: &[Tally], finished: &AtomicBool, started: Instant) {
    let mut shown = false;
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let (mut files, mut total, mut fetched) = (0, 0, 0);
        for t in tallies {
            let [f, tot, _, fe, _, _] = t.get();
            (files, total, fetched) = (files + f, total + tot, fetched + fe);
        }
        let el = started.elapsed();
        let extra = if mode == Mode::Warm { format!(", {} fetched", human(fetched)) } else { String::new() };
        eprint!("\r\x1b[K{} {files} files, {}{extra}, {} ", mode.verb(), human(total), rate(total, el));
        shown = true;
    }
    if shown {
        eprint!("\r\x1b[K");
    }
}

fn report(mode: Mode, paths: &[PathBuf], tallies: &[Tally], elapsed: Duration) {
    let mut sum = [0u64; 6];
    for (p, t) in paths.iter().zip(tallies) {
        let v = t.get();
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
        println!("{}: {}", p.display(), line(mode, v));
    }
    if paths.len() > 1 {
        println!("total: {}", line(mode, sum));
    }
    let [_, total, cached, fetched, _, _] = sum;
    match mode {
        Mode::Warm => {
            println!(
                "warmed in {:.2} s: {} of file data at {}, {} fetched from the block store at {}",
                elapsed.as_secs_f64(),
                human(total),
                rate(total, elapsed),
                human(fetched),
                rate(fetched, elapsed)
            );
            if cached < total {
                println!(
                    "note: the mount's caches do not hold it all ({} of {} are cached); a larger \
                     --cache-size or --disk-cache-size on the mount would",
                    human(cached),
                    human(total)
                );
            }
        }
        Mode::Check | Mode::Evict => {}
    }
}

fn line(mode: Mode, [files, total, cached, _fetched, evicted, failed]: [u64; 6]) -> String {
    let failed = if failed > 0 { format!(", {failed} failed") } else { String::new() };
    let cached_part = format!(
        "{:.1}% cached ({cached} of {total} bytes, {} of {})",
        percent(cached, total),
        human(cached),
        human(total)
    );
    match mode {
        Mode::Check | Mode::Warm => format!("{cached_part} in {files} files{failed}"),
        Mode::Evict => format!("evicted {evicted} bytes ({}) of {files} files; {cached_part}{failed}", human(evicted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let a = "fetched=8388608 cached=10000000 total=10000000";
        assert_eq!(field(a, "fetched").ok(), Some(8_388_608));
        assert_eq!(field(a, "cached").ok(), Some(10_000_000));
        assert!(field(a, "evicted").is_err());
        assert!(field("cached=x", "cached").is_err());
        assert_eq!(percent(0, 0), 100.0);
        assert_eq!(
            line(Mode::Check, [2, 200, 50, 0, 0, 0]),
            "25.0% cached (50 of 200 bytes, 50 B of 200 B) in 2 files"
        );
    }
}
