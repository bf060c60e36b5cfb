//! Prometheus metrics of every Strata process. One registry per process (a server, a mount, a
//! gateway and a CSI plugin are separate processes), metrics named `strata_*` and encoded in
//! the OpenMetrics text format that Prometheus scrapes.
//!
//! The hot paths (every file system operation, every RPC, every cache lookup) only touch
//! atomics: counters and gauges are `prometheus-client`'s atomic ones, and latency histograms
//! are [`Histogram`] (atomic buckets) in fixed label sets ([`OpHistograms`], [`OpCounters`])
//! resolved by index, so no lock is taken and no label set is hashed per operation. The
//! registry's lock is only taken to register a metric (at start) and to encode (a scrape).

pub mod grpc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

pub use prometheus_client;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds: 50 µs to about 27 s, doubling (JuiceFS uses the same span).
pub const LATENCY_BUCKETS: [f64; 20] = {
    let mut b = [0.0; 20];
    let mut i = 0;
    let mut v = 0.000_05;
    while i < 20 {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// The process's registry (every name gets the `strata_` prefix).
pub fn registry() -> MutexGuard<'static, Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    let m = REG.get_or_init(|| Mutex::new(Registry::with_prefix("strata")));
    // A panic while registering leaves the registry usable: it holds only metric handles.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers `metric` as `strata_NAME` (counters get `_total` appended when encoded).
pub fn register(name: &str, help: &str, metric: impl Metric) {
    registry().register(name, help, metric);
}

/// The registry in the OpenMetrics text format (what `/metrics` answers).
pub fn encode() -> String {
    let mut out = String::new();
    let reg = registry();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// [`encode`] without histogram buckets and comments: every sample's `name{labels} value`,
/// histograms as their `_count` and `_sum` only. Small enough for an extended attribute
/// (`strata.metrics` on a mount) and what `strata stats` reads.
pub fn encode_compact() -> String {
    encode().lines().filter(|l| !l.starts_with('#') && !l.contains("_bucket{") && !l.is_empty()).fold(
        String::new(),
        |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        },
    )
}

/// A lock-free histogram with fixed buckets ([`LATENCY_BUCKETS`] unless given others).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistInner>);

#[derive(Debug)]
struct HistInner {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Vec<AtomicU64>,
    /// The sum, as the bits of an f64.
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(&LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// A histogram with these upper bounds (ascending).
    pub fn new(bounds: &[f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(HistInner { bounds: bounds.to_vec(), counts, sum: AtomicU64::new(0f64.to_bits()) }))
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        let i = self.0.bounds.partition_point(|b| *b < v);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ =
            self.0.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some((f64::from_bits(s) + v).to_bits()));
    }

    /// Records the seconds since `start`.
    pub fn since(&self, start: Instant) {
        self.observe(start.elapsed().as_secs_f64());
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the recorded values.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }

    /// (sum, count, per-bucket counts) as the encoder wants them (it accumulates them).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.0.counts.len());
        for (i, c) in self.0.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            // The encoder writes `+Inf` for f64::MAX (its own histograms end there).
            buckets.push((self.0.bounds.get(i).copied().unwrap_or(f64::MAX), n));
        }
        (self.sum(), total, buckets)
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

/// The label sets of a fixed family: one label from a list, or two (a grid, indexed row-major).
type Sets = Arc<[Vec<(&'static str, &'static str)>]>;

fn sets_of(label: &'static str, names: &[&'static str]) -> Sets {
    names.iter().map(|n| vec![(label, *n)]).collect()
}

fn grid_of(l1: &'static str, v1: &[&'static str], l2: &'static str, v2: &[&'static str]) -> Sets {
    v1.iter().flat_map(|a| v2.iter().map(move |b| vec![(l1, *a), (l2, *b)])).collect()
}

/// One histogram per value of a label from a fixed list (operations, RPC methods), or per pair
/// of values of two labels ([`OpHistograms::grid`]), picked by index: the hot path is an array
/// access and atomics.
#[derive(Clone, Debug)]
pub struct OpHistograms {
    sets: Sets,
    hs: Arc<[Histogram]>,
}

impl OpHistograms {
    /// Histograms labelled `label="NAME"` for each of `names`.
    pub fn new(label: &'static str, names: &[&'static str]) -> Self {
        Self::of(sets_of(label, names))
    }

    /// Histograms labelled `l1="A",l2="B"` for each A of `v1` and B of `v2`; the one of
    /// `(v1[i], v2[j])` is at index `i * v2.len() + j`.
    pub fn grid(l1: &'static str, v1: &[&'static str], l2: &'static str, v2: &[&'static str]) -> Self {
        Self::of(grid_of(l1, v1, l2, v2))
    }

    fn of(sets: Sets) -> Self {
        let hs = sets.iter().map(|_| Histogram::default()).collect();
        OpHistograms { sets, hs }
    }

    /// The histogram at index `i` (the last one when `i` is out of range: callers pass
    /// indexes of their own constant lists).
    pub fn get(&self, i: usize) -> &Histogram {
        &self.hs[i.min(self.hs.len() - 1)]
    }

    /// Index of the label set whose (last) label value is `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.sets.iter().position(|s| s.last().is_some_and(|(_, v)| *v == name))
    }
}

impl EncodeMetric for OpHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in self.sets.iter().zip(self.hs.iter()) {
            let (sum, count, buckets) = h.snapshot();
            // Label sets never used stay out of the exposition, as a Family would leave them.
            if count == 0 {
                continue;
            }
            encoder.encode_family(labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One counter per value of a label from a fixed list (or per pair, [`OpCounters::grid`]),
/// picked by index.
#[derive(Clone, Debug)]
pub struct OpCounters {
    sets: Sets,
    cs: Arc<[AtomicU64]>,
}

impl OpCounters {
    /// Counters labelled `label="NAME"` for each of `names`.
    pub fn new(label: &'static str, names: &[&'static str]) -> Self {
        Self::of(sets_of(label, names))
    }

    /// Counters on a grid of two labels, indexed like [`OpHistograms::grid`].
    pub fn grid(l1: &'static str, v1: &[&'static str], l2: &'static str, v2: &[&'static str]) -> Self {
        Self::of(grid_of(l1, v1, l2, v2))
    }

    fn of(sets: Sets) -> Self {
        let cs = sets.iter().map(|_| AtomicU64::new(0)).collect();
        OpCounters { sets, cs }
    }

    /// Adds `n` to the counter at index `i` (clamped like [`OpHistograms::get`]).
    pub fn add(&self, i: usize, n: u64) {
        self.cs[i.min(self.cs.len() - 1)].fetch_add(n, Ordering::Relaxed);
    }

    /// The value at index `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.cs[i.min(self.cs.len() - 1)].load(Ordering::Relaxed)
    }
}

impl EncodeMetric for OpCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, c) in self.sets.iter().zip(self.cs.iter()) {
            let v = c.load(Ordering::Relaxed);
            if v == 0 {
                continue;
            }
            encoder.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A gauge computed when the registry is encoded (sizes summed over live objects).
#[derive(Clone)]
pub struct FnGauge(Arc<dyn Fn() -> i64 + Send + Sync>);

impl FnGauge {
    /// A gauge whose value is `f()` at each scrape.
    pub fn new(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        FnGauge(Arc::new(f))
    }
}

impl std::fmt::Debug for FnGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnGauge")
    }
}

impl EncodeMetric for FnGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.0)())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The labels of a metric with free-form label values (volumes, backends).
pub type Labels = Vec<(&'static str, String)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.0);
        h.observe(1.5);
        h.observe(9.0);
        let (sum, count, b) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 12.0).abs() < 1e-9);
        assert_eq!(b, vec![(1.0, 2), (2.0, 1), (f64::MAX, 1)]);
    }

    #[test]
    fn exposition() {
        static OPS: &[&str] = &["lookup", "read"];
        let h = OpHistograms::new("method", OPS);
        let c = OpCounters::new("method", OPS);
        register("test_ops_durations_histogram_seconds", "test", h.clone());
        register("test_ops", "test", c.clone());
        h.get(1).observe(0.001);
        c.add(1, 3);
        let g = OpCounters::grid("backend", &["file", "s3"], "method", &["get", "put"]);
        register("test_grid", "test", g.clone());
        g.add(3, 2);
        let text = encode();
        assert!(text.contains("strata_test_grid_total{backend=\"s3\",method=\"put\"} 2"), "{text}");
        assert!(text.contains("strata_test_ops_durations_histogram_seconds_count{method=\"read\"} 1"), "{text}");
        assert!(!text.contains("method=\"lookup\""), "{text}");
        assert!(text.contains("strata_test_ops_total{method=\"read\"} 3"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(LATENCY_BUCKETS[0], 0.000_05);
    }
}
