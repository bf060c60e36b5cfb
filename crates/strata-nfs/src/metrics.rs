//! Per-procedure latency of the NFS gateway (`strata_nfs_ops_durations_histogram_seconds`).

use std::sync::OnceLock;
use std::time::Instant;

use strata_metrics::OpHistograms;

/// NFSv3 procedures by number (RFC 1813), then the MOUNT protocol's calls, then any other.
const PROCS: &[&str] = &[
    "NULL",
    "GETATTR",
    "SETATTR",
    "LOOKUP",
    "ACCESS",
    "READLINK",
    "READ",
    "WRITE",
    "CREATE",
    "MKDIR",
    "SYMLINK",
    "MKNOD",
    "REMOVE",
    "RMDIR",
    "RENAME",
    "LINK",
    "READDIR",
    "READDIRPLUS",
    "FSSTAT",
    "FSINFO",
    "PATHCONF",
    "COMMIT",
    "MOUNT",
    "other",
];
const MOUNT: usize = 22;
const OTHER: usize = 23;

fn ops() -> &'static OpHistograms {
    static M: OnceLock<OpHistograms> = OnceLock::new();
    M.get_or_init(|| {
        let h = OpHistograms::new("procedure", PROCS);
        strata_metrics::register(
            "nfs_ops_durations_histogram_seconds",
            "NFSv3 procedures (and MOUNT calls) answered, in seconds",
            h.clone(),
        );
        h
    })
}

/// Registers the metrics (so a scrape before the first call lists them).
pub fn register() {
    ops();
}

/// Records an NFS procedure `proc_` that started at `t`.
pub fn nfs(proc_: u32, t: Instant) {
    let i = if (proc_ as usize) < MOUNT { proc_ as usize } else { OTHER };
    ops().get(i).since(t);
}

/// Records a MOUNT call that started at `t`.
pub fn mount(t: Instant) {
    ops().get(MOUNT).since(t);
}
