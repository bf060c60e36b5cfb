//! Results of a run, and their human and JSON forms.

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
    /// Worker threads used.
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
        }
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
        let _ = writeln!(
            out,
            "{:<9} {:<7} {:>7} {:>9} {:>9} {:>11} {:>9}",
            "workload", "phase", "threads", "ops", "seconds", "ops/s", "MiB/s"
        );
        for w in &self.results {
            for p in &w.phases {
                let mib = p.mib_per_sec.map_or_else(|| "-".to_string(), |m| format!("{m:.1}"));
                let _ = writeln!(
                    out,
                    "{:<9} {:<7} {:>7} {:>9} {:>9.3} {:>11.1} {:>9}",
                    w.workload, p.phase, p.threads, p.ops, p.seconds, p.ops_per_sec, mib
                );
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
}
