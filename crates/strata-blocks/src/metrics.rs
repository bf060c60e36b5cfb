//! Metrics of the block layer: requests to block stores per backend, and the client caches.
//! Names follow JuiceFS's (`object_request_*`, `blockcache_*`).

use std::sync::OnceLock;
use std::time::Instant;

use strata_metrics::{Counter, FnGauge, OpCounters, OpHistograms};

/// Block-store backends, told by URL: a local or shared directory, S3, the server's `Blocks`
/// service, anything else.
pub const BACKENDS: &[&str] = &["file", "s3", "server", "other"];
/// Block-store requests.
pub const METHODS: &[&str] = &["get", "put", "delete"];
/// Index of a method in [`METHODS`].
pub const GET: usize = 0;
/// See [`GET`].
pub const PUT: usize = 1;
/// See [`GET`].
pub const DELETE: usize = 2;

/// The block layer's metrics.
pub struct BlockMetrics {
    /// Request latency per (backend, method).
    pub requests: OpHistograms,
    /// Failed requests per (backend, method).
    pub errors: OpCounters,
    /// Bytes moved per (backend, method).
    pub bytes: OpCounters,
    /// Blocks written straight into their file in a local block directory.
    pub direct_writes: Counter,
    /// Block reads served from memory or the disk cache.
    pub cache_hits: Counter,
    /// Block reads that went to the store.
    pub cache_misses: Counter,
    /// Bytes of [`Self::cache_hits`].
    pub cache_hit_bytes: Counter,
    /// Bytes of [`Self::cache_misses`].
    pub cache_miss_bytes: Counter,
    /// Blocks evicted from memory or disk.
    pub cache_evictions: Counter,
}

/// The block layer's metrics, registered on first use.
pub fn get() -> &'static BlockMetrics {
    static M: OnceLock<BlockMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = BlockMetrics {
            requests: OpHistograms::grid("backend", BACKENDS, "method", METHODS),
            errors: OpCounters::grid("backend", BACKENDS, "method", METHODS),
            bytes: OpCounters::grid("backend", BACKENDS, "method", METHODS),
            direct_writes: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_hit_bytes: Counter::default(),
            cache_miss_bytes: Counter::default(),
            cache_evictions: Counter::default(),
        };
        use strata_metrics::register as r;
        r("object_request_durations_histogram_seconds", "Block-store requests by backend and method, in seconds", m.requests.clone());
        r("object_request_errors", "Failed block-store requests by backend and method", m.errors.clone());
        r("object_request_data_bytes", "Bytes read from and written to block stores, by backend and method", m.bytes.clone());
        r(
            "object_direct_writes",
            "Blocks written straight into their file in a local block directory (no request to time; their bytes count in object_request_data_bytes)",
            m.direct_writes.clone(),
        );
        r("blockcache_hits", "Block reads served from the memory or disk cache", m.cache_hits.clone());
        r("blockcache_miss", "Block reads that went to the block store", m.cache_misses.clone());
        r("blockcache_hit_bytes", "Bytes of block reads served from a cache", m.cache_hit_bytes.clone());
        r("blockcache_miss_bytes", "Bytes of block reads that went to the block store", m.cache_miss_bytes.clone());
        r("blockcache_evict", "Blocks evicted from the memory or disk cache", m.cache_evictions.clone());
        r("blockcache_bytes", "Bytes held in the memory caches", FnGauge::new(|| crate::cache::held().0 as i64));
        r("blockcache_disk_bytes", "Bytes held in the disk caches", FnGauge::new(|| crate::cache::held().1 as i64));
        m
    })
}

/// The backend index of a store URL.
pub fn backend_of(url: &str) -> usize {
    if url.starts_with("file://") || url.starts_with('/') {
        0
    } else if url.starts_with("s3://") {
        1
    } else if url.starts_with("strata://") || url.starts_with("server") {
        2
    } else {
        3
    }
}

impl BlockMetrics {
    /// Records one request of `method` to `backend` that started at `t`.
    pub fn request(&self, backend: usize, method: usize, t: Instant, ok: bool, bytes: usize) {
        let i = backend * METHODS.len() + method;
        self.requests.get(i).since(t);
        if ok {
            self.bytes.add(i, bytes as u64);
        } else {
            self.errors.add(i, 1);
        }
    }

    /// Records a cache lookup of a block of `len` bytes.
    pub fn cache(&self, hit: bool, len: usize) {
        if hit {
            self.cache_hits.inc();
            self.cache_hit_bytes.inc_by(len as u64);
        } else {
            self.cache_misses.inc();
            self.cache_miss_bytes.inc_by(len as u64);
        }
    }
}
