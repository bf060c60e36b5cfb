//! Counting what an import did, the progress line on a terminal, and the final report.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Entry, EntryResult, ReportFormat};
use crate::util::human;

/// Failures and skipped entries listed by name in the report (the rest are counted).
const LISTED_MAX: usize = 1000;

/// What importing one entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Copied, with this many bytes.
    Copied(u64),
    /// The destination had it already.
    Unchanged,
}

/// Counters shared by the copies.
#[derive(Default)]
pub struct Stats {
    pub listed: AtomicU64,
    pub listed_bytes: AtomicU64,
    pub copied: AtomicU64,
    pub copied_bytes: AtomicU64,
    pub unchanged: AtomicU64,
    pub unchanged_bytes: AtomicU64,
    pub deleted: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
    pub listing_done: AtomicBool,
    stop: Mutex<Option<String>>,
    failures: Mutex<Vec<Problem>>,
    skips: Mutex<Vec<Problem>>,
}

/// A path and what happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

fn push(list: &Mutex<Vec<Problem>>, path: String, reason: String) {
    let mut l = list.lock().unwrap_or_else(|p| p.into_inner());
    if l.len() < LISTED_MAX {
        l.push(Problem { path, reason });
    }
}

impl Stats {
    /// Whether the import was stopped (the quota is full).
    pub fn stopped(&self) -> bool {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Records a failed entry.
    pub fn fail(&self, path: String, reason: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        push(&self.failures, path, reason);
    }

    /// Records an entry not imported.
    pub fn skip(&self, path: String, reason: String) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        push(&self.skips, path, reason);
    }

    /// Records what importing `e` did.
    pub fn record(&self, e: &Entry, res: EntryResult) {
        match res {
            Ok(Outcome::Copied(n)) => {
                self.copied.fetch_add(1, Ordering::Relaxed);
                self.copied_bytes.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Outcome::Unchanged) => {
                self.unchanged.fetch_add(1, Ordering::Relaxed);
                self.unchanged_bytes.fetch_add(e.size, Ordering::Relaxed);
            }
            Err(err) => {
                if err.full {
                    self.stop.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(err.msg.clone());
                }
                tracing::debug!(path = %e.display(), error = %err.msg, "import failed");
                self.fail(e.display(), err.msg);
            }
        }
    }

    /// The report of what was done.
    pub fn report(&self, took: Duration) -> Report {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Report {
            source: String::new(),
            dest: String::new(),
            seconds: took.as_secs_f64(),
            copied: get(&self.copied),
            copied_bytes: get(&self.copied_bytes),
            unchanged: get(&self.unchanged),
            unchanged_bytes: get(&self.unchanged_bytes),
            deleted: get(&self.deleted),
            skipped: get(&self.skipped),
            failed: get(&self.failed),
            stopped: self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            fatal: None,
            failures: self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            skips: self.skips.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// The final report (also the JSON of `-o json`).
#[derive(Debug, Serialize)]
pub struct Report {
    pub source: String,
    pub dest: String,
    pub seconds: f64,
    /// Files and links copied, and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Files and links the destination had already.
    pub unchanged: u64,
    pub unchanged_bytes: u64,
    /// Files and links removed (`--delete`).
    pub deleted: u64,
    /// Entries not imported (special files, submodules).
    pub skipped: u64,
    /// Entries that failed.
    pub failed: u64,
    /// Why the import stopped early (EDQUOT).
    pub stopped: Option<String>,
    /// Why the import could not go on (the listing failed).
    pub fatal: Option<String>,
    /// The first failures, with reasons.
    pub failures: Vec<Problem>,
    /// The first skipped entries, with reasons.
    pub skips: Vec<Problem>,
}

impl Report {
    /// Why the import is incomplete, if it is.
    pub fn incomplete(&self) -> Option<String> {
        if let Some(s) = &self.stopped {
            return Some(format!("import stopped: {s}"));
        }
        if let Some(f) = &self.fatal {
            return Some(format!("import incomplete: {f}"));
        }
        (self.failed > 0).then(|| format!("import incomplete: {} entries failed", self.failed))
    }

    /// Prints the report to stdout.
    pub fn print(&self, fmt: ReportFormat) -> anyhow::Result<()> {
        if fmt == ReportFormat::Json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        println!("import of {} into {} in {:.1}s", self.source, self.dest, self.seconds);
        println!("  copied:    {} ({})", self.copied, human(self.copied_bytes));
        println!("  unchanged: {} ({})", self.unchanged, human(self.unchanged_bytes));
        println!("  deleted:   {}", self.deleted);
        println!("  skipped:   {}", self.skipped);
        println!("  failed:    {}", self.failed);
        for s in &self.skips {
            println!("  skipped {}: {}", s.path, s.reason);
        }
        for f in &self.failures {
            println!("  FAILED {}: {}", f.path, f.reason);
        }
        if self.failed > self.failures.len() as u64 {
            println!("  ({} more failures not shown)", self.failed - self.failures.len() as u64);
        }
        if let Some(s) = &self.stopped {
            println!("  STOPPED: {s}");
        }
        if let Some(f) = &self.fatal {
            println!("  INCOMPLETE: {f}");
        }
        Ok(())
    }
}

/// The progress line on a terminal: files, bytes, rate and, once the listing is done, the time
/// left.
pub struct Progress {
    task: Option<(tokio::task::JoinHandle<()>, Arc<AtomicBool>)>,
}

impl Progress {
    /// Starts drawing on stderr if it is a terminal and `quiet` is not set.
    pub fn start(stats: Arc<Stats>, quiet: bool) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            while !d.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                eprint!("\r\x1b[2K{}", line(&stats, started.elapsed()));
            }
            eprint!("\r\x1b[2K");
        });
        Progress { task: Some((task, done)) }
    }

    /// Clears the line.
    pub async fn finish(self) {
        if let Some((task, done)) = self.task {
            done.store(true, Ordering::Relaxed);
            let _ = task.await;
        }
    }
}

fn line(s: &Stats, took: Duration) -> String {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let files = get(&s.copied) + get(&s.unchanged) + get(&s.failed);
    let bytes = get(&s.copied_bytes) + get(&s.unchanged_bytes);
    let (listed, listed_bytes) = (get(&s.listed), get(&s.listed_bytes));
    let rate = get(&s.copied_bytes) as f64 / took.as_secs_f64().max(0.001);
    let listing_done = s.listing_done.load(Ordering::Relaxed);
    let more = if listing_done { "" } else { "+" };
    let width = 30usize;
    let frac = if listed_bytes > 0 { bytes as f64 / listed_bytes as f64 } else { 0.0 };
    let filled = (frac.clamp(0.0, 1.0) * width as f64) as usize;
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
    let eta = if rate > 0.0 && listed_bytes > bytes {
        let secs = (listed_bytes - bytes) as f64 / rate;
        format!("ETA {}{more}", fmt_secs(secs))
    } else {
        String::new()
    };
    format!(
        "[{bar}] {files}/{listed}{more} files, {}/{}{more}, {}/s {eta}",
        human(bytes),
        human(listed_bytes),
        human(rate as u64)
    )
}

fn fmt_secs(s: f64) -> String {
    let s = s as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, (s % 3600) / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}
