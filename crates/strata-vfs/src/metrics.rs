//! Metrics of the client file system, shared by every front-end: bytes read and written through
//! the VFS and write-back memory waiting for upload. Per-operation latency is measured by each
//! front-end in its own terms (FUSE operations, NFS procedures, S3 operations); the block layer
//! measures caches and block stores (`strata_blocks::metrics`).

use std::sync::{Arc, Mutex, OnceLock, Weak};

use strata_metrics::{Counter, FnGauge};
use tokio::sync::Semaphore;

/// The VFS's metrics.
pub struct VfsMetrics {
    /// Bytes returned by reads.
    pub read_bytes: Counter,
    /// Bytes accepted by writes.
    pub written_bytes: Counter,
}

/// Write-back budgets of this process: (the semaphore, its size in bytes, bytes per permit).
type Budgets = Vec<(Weak<Semaphore>, u64, u64)>;
static BUDGETS: Mutex<Budgets> = Mutex::new(Vec::new());

/// The VFS's metrics, registered on first use.
pub fn get() -> &'static VfsMetrics {
    static M: OnceLock<VfsMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = VfsMetrics { read_bytes: Counter::default(), written_bytes: Counter::default() };
        strata_metrics::register("read_bytes", "Bytes read by applications through this client", m.read_bytes.clone());
        strata_metrics::register(
            "written_bytes",
            "Bytes written by applications through this client",
            m.written_bytes.clone(),
        );
        strata_metrics::register(
            "used_buffer_size_bytes",
            "Write-back memory holding written data not yet uploaded to the block store",
            FnGauge::new(|| buffered() as i64),
        );
        strata_blocks::metrics::get();
        m
    })
}

/// Counts a write-back budget of `units` permits of `unit` bytes in `used_buffer_size_bytes`.
pub fn track_budget(sem: &Arc<Semaphore>, units: usize, unit: usize) {
    get();
    let mut b = BUDGETS.lock().unwrap_or_else(|p| p.into_inner());
    b.retain(|(s, _, _)| s.strong_count() > 0);
    b.push((Arc::downgrade(sem), units as u64, unit as u64));
}

/// Bytes of write-back memory in use, over every live budget.
fn buffered() -> u64 {
    let b = BUDGETS.lock().unwrap_or_else(|p| p.into_inner());
    b.iter()
        .filter_map(|(s, total, unit)| s.upgrade().map(|s| total.saturating_sub(s.available_permits() as u64) * unit))
        .sum()
}
