//! Results of a run, and their human and JSON forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

const MIB: f64 = 1024.0 * 1024.0;

/// One timed phase of a workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseResult {
    /// Phase name (`write`, `list`, `read`, `stat`, `unlink`, `create`).
    pub phase: String,
    /// Workers used: threads for `files` and `meta`, processes for the training workloads.
    pub threads: usize,
    /// Operations done: files written/listed/read/statted/removed, or metadata operations.
    pub ops: u64,
    /// Payload bytes moved, for phases that move data.
    pub bytes: Option<u64>,
    /// Wall-clock time of the phase.
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// `bytes / seconds` in MiB/s, for phases that move data.
    pub mib_per_sec: Option<f64>,
    /// For phases run by several processes: the time of the slowest one, from the common start
    /// to its last operation (`seconds` is the wall clock of the whole phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_seconds: Option<f64>,
    /// Latency of single operations, for phases that time each one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
    /// Further figures of the phase, by name (e.g. `commit_ms` of a checkpoint).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

/// Percentiles of operation latencies, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Number of operations timed.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest operation.
    pub max: f64,
}

impl Latency {
    /// Percentiles of `samples_ns` (nanoseconds; sorted in place), or `None` when empty.
    ///
    /// Nearest-rank method: the p-th percentile is the smallest sample with at least p% of the
    /// samples at or below it.
    pub fn from_nanos(samples_ns: &mut [u64]) -> Option<Self> {
        if samples_ns.is_empty() {
            return None;
        }
        samples_ns.sort_unstable();
        let n = samples_ns.len();
        let at = |p: f64| {
            let rank = ((p / 100.0) * n as f64).ceil() as usize;
            samples_ns[rank.clamp(1, n) - 1] as f64 / 1000.0
        };
        Some(Self { count: n as u64, p50: at(50.0), p90: at(90.0), p99: at(99.0), max: at(100.0) })
    }
}

impl PhaseResult {
    /// Builds a result from counts and an elapsed time.
    pub fn new(phase: &str, threads: usize, ops: u64, bytes: Option<u64>, elapsed: Duration) -> Self {
        // A phase never takes zero time in practice; guard the division anyway.
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            phase: phase.to_string(),
            threads,
            ops,
            bytes,
            seconds,
            ops_per_sec: ops as f64 / seconds,
            mib_per_sec: bytes.map(|b| b as f64 / MIB / seconds),
            slowest_seconds: None,
            latency_us: None,
            extra: BTreeMap::new(),
        }
    }

    /// Adds the slowest process's time.
    pub fn with_slowest(mut self, seconds: f64) -> Self {
        self.slowest_seconds = Some(seconds);
        self
    }

    /// Adds latency percentiles of `samples_ns` (nothing when empty).
    pub fn with_latencies(mut self, samples_ns: &mut [u64]) -> Self {
        self.latency_us = Latency::from_nanos(samples_ns);
        self
    }

    /// Adds a named figure.
    pub fn with_extra(mut self, name: &str, value: f64) -> Self {
        self.extra.insert(name.to_string(), value);
        self
    }
}

/// All phases of one workload run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    /// `files` or `meta`.
    pub workload: String,
    /// Directory the workload ran in (its own subdirectory of `--dir`).
    pub dir: PathBuf,
    /// Parameters the workload ran with.
    pub params: serde_json::Value,
    /// Phases in the order they ran.
    pub phases: Vec<PhaseResult>,
}

/// Everything one `run` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `strata-bench`.
    pub tool: String,
    /// Version of this crate.
    pub version: String,
    /// The `--dir` given.
    pub dir: PathBuf,
    /// One entry per workload, in the order they ran.
    pub results: Vec<WorkloadResult>,
}

impl Report {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "strata-bench {} in {}", self.version, self.dir.display());
        let width = self.results.iter().flat_map(|w| &w.phases).map(|p| p.phase.len()).max().unwrap_or(0).max(7);
        let _ = writeln!(
            out,
            "{:<9} {:<width$} {:>7} {:>9} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9}",
            "workload", "phase", "workers", "ops", "seconds", "ops/s", "MiB/s", "slowest", "p50 us", "p99 us"
        );
        let opt = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |m| format!("{m:.prec$}"));
        for w in &self.results {
            for p in &w.phases {
                let _ = write!(
                    out,
                    "{:<9} {:<width$} {:>7} {:>9} {:>9.3} {:>11.1} {:>9} {:>9} {:>9} {:>9}",
                    w.workload,
                    p.phase,
                    p.threads,
                    p.ops,
                    p.seconds,
                    p.ops_per_sec,
                    opt(p.mib_per_sec, 1),
                    opt(p.slowest_seconds, 3),
                    opt(p.latency_us.map(|l| l.p50), 1),
                    opt(p.latency_us.map(|l| l.p99), 1),
                );
                for (k, v) in &p.extra {
                    let _ = write!(out, " {k}={v:.3}");
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Parses a byte size: a plain number of bytes, or a number followed by a binary unit
/// (`K`, `KB`, `KiB`, `M`, `MiB`, `G`, `GiB`, any case; all are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: expected a number, e.g. 65536 or 64KiB"));
    }
    let n: u64 = num.parse().map_err(|e| format!("invalid size {s:?}: {e}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64kb"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn rates() {
        let p = PhaseResult::new("read", 4, 100, Some(100 << 20), Duration::from_secs(2));
        assert_eq!(p.ops_per_sec, 50.0);
        assert_eq!(p.mib_per_sec, Some(50.0));
        let q = PhaseResult::new("stat", 1, 10, None, Duration::from_millis(500));
        assert_eq!(q.ops_per_sec, 20.0);
        assert_eq!(q.mib_per_sec, None);
    }

    #[test]
    fn table_lists_every_phase() {
        let r = Report {
            tool: "strata-bench".into(),
            version: "0".into(),
            dir: "/x".into(),
            results: vec![WorkloadResult {
                workload: "meta".into(),
                dir: "/x/m".into(),
                params: serde_json::json!({}),
                phases: vec![
                    PhaseResult::new("create", 1, 10, None, Duration::from_secs(1)),
                    PhaseResult::new("unlink", 1, 10, None, Duration::from_secs(1)),
                ],
            }],
        };
        let t = r.to_table();
        assert!(t.contains("create"), "{t}");
        assert!(t.contains("unlink"), "{t}");
        assert_eq!(t.lines().count(), 4, "{t}");
    }

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(Latency::from_nanos(&mut []), None);
        let mut v: Vec<u64> = (1..=100).rev().map(|i| i * 1000).collect();
        let l = Latency::from_nanos(&mut v).expect("samples");
        assert_eq!((l.count, l.p50, l.p90, l.p99, l.max), (100, 50.0, 90.0, 99.0, 100.0));
        let l = Latency::from_nanos(&mut [7000]).expect("one sample");
        assert_eq!((l.p50, l.p99, l.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn table_shows_slowest_latency_and_extras() {
        let p = PhaseResult::new("n4-2dirs", 4, 4, Some(4 << 20), Duration::from_secs(1))
            .with_slowest(0.9)
            .with_latencies(&mut [1000, 2000, 3000])
            .with_extra("commit_ms", 1.5);
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["slowest_seconds"], 0.9);
        assert_eq!(json["latency_us"]["p50"], 2.0);
        assert_eq!(json["extra"]["commit_ms"], 1.5);
        let plain = serde_json::to_value(PhaseResult::new("x", 1, 1, None, Duration::from_secs(1))).expect("json");
        assert!(plain.get("latency_us").is_none() && plain.get("extra").is_none());
        let r = Report {
            tool: "strata-bench".into(),
            version: "0".into(),
            dir: "/x".into(),
            results: vec![WorkloadResult {
                workload: "ckpt".into(),
                dir: "/x".into(),
                params: serde_json::json!({}),
                phases: vec![p],
            }],
        };
        let t = r.to_table();
        assert!(t.contains("n4-2dirs") && t.contains("0.900") && t.contains("commit_ms=1.500"), "{t}");
    }
}
