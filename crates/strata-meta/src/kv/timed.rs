//! An engine wrapper that times every transaction for the metrics
//! (`strata_transaction_durations_histogram_seconds{engine,kind}`); the engines count their own
//! restarts and conflicts ([`TxnMetrics`]).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use strata_metrics::{Counter, OpHistograms};

use super::{KvEngine, TxnFn};
use crate::error::Result;

/// The transaction metrics of one engine.
pub struct TxnMetrics {
    durations: OpHistograms,
    /// Transactions run again (a conflict, or a connection lost mid-way).
    pub restarts: Counter,
    /// Serialization conflicts (PostgreSQL).
    pub conflicts: Counter,
}

const KINDS: &[&str] = &["read", "write"];

/// The metrics of engine `name`, registered the first time they are asked for.
pub fn metrics(name: &'static str) -> &'static TxnMetrics {
    static SQLITE: OnceLock<TxnMetrics> = OnceLock::new();
    static POSTGRES: OnceLock<TxnMetrics> = OnceLock::new();
    let cell = if name == "postgres" { &POSTGRES } else { &SQLITE };
    cell.get_or_init(|| {
        let m = TxnMetrics {
            durations: OpHistograms::new("kind", KINDS),
            restarts: Counter::default(),
            conflicts: Counter::default(),
        };
        let mut reg = strata_metrics::registry();
        let sub = reg.sub_registry_with_label(("engine".into(), name.into()));
        sub.register(
            "transaction_durations_histogram_seconds",
            "Metadata transactions by kind (read, write), in seconds, including restarts",
            m.durations.clone(),
        );
        sub.register(
            "transaction_restart",
            "Metadata transactions run again after a conflict or a lost connection",
            m.restarts.clone(),
        );
        sub.register(
            "transaction_conflicts",
            "Serialization conflicts between metadata transactions",
            m.conflicts.clone(),
        );
        m
    })
}

/// Times the transactions of `inner`.
pub struct Timed {
    inner: Arc<dyn KvEngine>,
    m: &'static TxnMetrics,
}

impl Timed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn KvEngine>) -> Self {
        let m = metrics(inner.name());
        Timed { inner, m }
    }
}

impl KvEngine for Timed {
    fn read(&self, f: TxnFn<'_>) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.read(f);
        self.m.durations.get(0).since(t);
        r
    }

    fn read_latest(&self, f: TxnFn<'_>) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.read_latest(f);
        self.m.durations.get(0).since(t);
        r
    }

    fn write_kept(&self, f: TxnFn<'_>) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.write_kept(f);
        self.m.durations.get(1).since(t);
        r
    }

    fn read_snapshot(&self, f: TxnFn<'_>) -> Result<()> {
        self.inner.read_snapshot(f)
    }

    fn write(&self, durable: bool, f: TxnFn<'_>) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.write(durable, f);
        self.m.durations.get(1).since(t);
        r
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn restarts(&self) -> u64 {
        self.inner.restarts()
    }
}
