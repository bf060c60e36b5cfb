//! The server's metrics: latency of every RPC (framed and gRPC) and REST request, and, read
//! when `/metrics` is scraped, sessions, volume usage against quota, slices waiting for
//! collection and the journal's backlog. The metadata engine's transaction metrics are
//! `strata-meta`'s (`kv::timed`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use strata_metrics::{Family, Gauge, Histogram, Labels, OpCounters, OpHistograms};
use strata_proto::wire::Method;

use crate::state::State;

/// The `Blocks` and `Admin` gRPC calls (the `Meta` calls come from [`Method::ALL`]).
const OTHER_RPCS: &[&str] =
    &["GetBlock", "PutBlock", "BlocksSync", "CreateVolume", "ListVolumes", "DeleteVolume", "Status", "other"];

/// The server's metrics.
pub struct ServerMetrics {
    /// Per RPC method, framed and gRPC alike.
    pub rpc: OpHistograms,
    /// RPCs answered with an error, per method.
    pub rpc_errors: OpCounters,
    /// REST requests by method, route and status.
    pub rest: Family<Labels, Histogram>,
    sessions: Gauge,
    used_bytes: Family<Labels, Gauge>,
    used_inodes: Family<Labels, Gauge>,
    quota_bytes: Family<Labels, Gauge>,
    quota_inodes: Family<Labels, Gauge>,
    pending_slices: Gauge,
    journal_backlog: Gauge,
    /// Bytes committed by writes, per volume id (for the dashboard's throughput).
    committed: std::sync::RwLock<std::collections::HashMap<u32, Arc<std::sync::atomic::AtomicU64>>>,
}

fn rpc_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| Method::ALL.iter().map(|m| m.name()).chain(OTHER_RPCS.iter().copied()).collect())
}

/// The server's metrics, registered on first use.
pub fn get() -> &'static ServerMetrics {
    static M: OnceLock<ServerMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = ServerMetrics {
            rpc: OpHistograms::new("method", rpc_names()),
            rpc_errors: OpCounters::new("method", rpc_names()),
            rest: Family::default(),
            sessions: Gauge::default(),
            used_bytes: Family::default(),
            used_inodes: Family::default(),
            quota_bytes: Family::default(),
            quota_inodes: Family::default(),
            pending_slices: Gauge::default(),
            journal_backlog: Gauge::default(),
            committed: Default::default(),
        };
        strata_metrics::register(
            "rpc_durations_histogram_seconds",
            "Metadata and block RPCs served, by method, in seconds",
            m.rpc.clone(),
        );
        strata_metrics::register("rpc_errors", "RPCs answered with an error, by method", m.rpc_errors.clone());
        strata_metrics::register(
            "rest_durations_histogram_seconds",
            "REST API requests by method, route and status, in seconds",
            m.rest.clone(),
        );
        strata_metrics::register(
            "sessions",
            "Client sessions (mounts, gateways) attached to volumes",
            m.sessions.clone(),
        );
        strata_metrics::register(
            "volume_used_bytes",
            "Bytes charged to a volume (sizes rounded up to 4 KiB)",
            m.used_bytes.clone(),
        );
        strata_metrics::register("volume_used_inodes", "Inodes in use in a volume", m.used_inodes.clone());
        strata_metrics::register("volume_quota_bytes", "A volume's byte quota (its capacity)", m.quota_bytes.clone());
        strata_metrics::register(
            "volume_quota_inodes",
            "A volume's inode quota (0: unlimited)",
            m.quota_inodes.clone(),
        );
        strata_metrics::register(
            "pending_slices",
            "Deleted slices whose blocks wait for the collector",
            m.pending_slices.clone(),
        );
        strata_metrics::register(
            "journal_backlog_blocks",
            "Small blocks journaled in metadata and not yet flushed to the block store",
            m.journal_backlog.clone(),
        );
        m
    })
}

impl ServerMetrics {
    /// Counts `bytes` committed by writes to volume `vol`.
    pub fn committed(&self, vol: u32, bytes: u64) {
        let known = self.committed.read().unwrap_or_else(|p| p.into_inner()).get(&vol).cloned();
        let c = match known {
            Some(c) => c,
            None => self.committed.write().unwrap_or_else(|p| p.into_inner()).entry(vol).or_default().clone(),
        };
        c.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes committed so far to volume `vol`.
    pub fn committed_of(&self, vol: u32) -> u64 {
        let m = self.committed.read().unwrap_or_else(|p| p.into_inner());
        m.get(&vol).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// RPCs served so far, and those answered with an error.
    pub fn rpc_totals(&self) -> (u64, u64) {
        let n = rpc_names().len();
        ((0..n).map(|i| self.rpc.get(i).count()).sum(), (0..n).map(|i| self.rpc_errors.get(i)).sum())
    }

    /// Records a framed call of `method` (its wire number).
    pub fn framed(&self, method: u16, started: Instant, ok: bool) {
        let i = Method::from_u16(method).and_then(|m| Method::ALL.iter().position(|x| *x == m));
        let i = i.unwrap_or(rpc_names().len() - 1);
        self.rpc.get(i).since(started);
        if !ok {
            self.rpc_errors.add(i, 1);
        }
    }

    /// Records a gRPC call to `path` (`/strata.Meta/Lookup`).
    fn grpc(&self, path: &str, started: Instant, ok: bool) {
        let (service, name) = path.trim_start_matches('/').split_once('/').unwrap_or(("", path));
        let name = if service.ends_with("Blocks") && name == "Sync" { "BlocksSync" } else { name };
        let i = self.rpc.index(name).unwrap_or(rpc_names().len() - 1);
        self.rpc.get(i).since(started);
        if !ok {
            self.rpc_errors.add(i, 1);
        }
    }

    /// Reads what is measured at scrape time from the store (on a blocking thread).
    pub async fn refresh(&self, st: &Arc<State>) {
        let meta = st.meta.clone();
        let read = tokio::task::spawn_blocking(move || -> strata_meta::Result<_> {
            Ok((meta.list_volumes()?, meta.collectable(1_000_000)?.len()))
        })
        .await;
        match read {
            Ok(Ok((vols, pending))) => {
                for f in [&self.used_bytes, &self.used_inodes, &self.quota_bytes, &self.quota_inodes] {
                    f.clear();
                }
                for (v, u) in vols {
                    let l: Labels = vec![("volume", v.name), ("scope", v.scope)];
                    self.used_bytes.get_or_create(&l).set(u.bytes as i64);
                    self.used_inodes.get_or_create(&l).set(u.inodes as i64);
                    self.quota_bytes.get_or_create(&l).set(v.capacity as i64);
                    self.quota_inodes.get_or_create(&l).set(v.inode_limit as i64);
                }
                self.pending_slices.set(pending as i64);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: reading volume usage failed"),
            Err(e) => tracing::warn!(error = %e, "metrics: volume usage task failed"),
        }
        match st.sessions().await {
            Ok(s) => {
                self.sessions.set(s.len() as i64);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: listing sessions failed"),
        }
        self.journal_backlog.set(st.journaled_since_flush.load(Ordering::Relaxed) as i64);
    }
}

/// Records a gRPC call (see [`strata_metrics::grpc::Timing`]).
pub fn grpc(path: &str, started: Instant, ok: bool) {
    get().grpc(path, started, ok);
}

/// Records a REST request.
pub fn rest(method: &str, route: &str, status: u16, started: Instant) {
    let l: Labels = vec![("method", method.to_string()), ("route", route.to_string()), ("status", status.to_string())];
    get().rest.get_or_create(&l).since(started);
}
