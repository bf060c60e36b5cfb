//! Per-call latency of the CSI plugin (`strata_csi_ops_durations_histogram_seconds`).

use std::sync::OnceLock;
use std::time::Instant;

use strata_metrics::{OpCounters, OpHistograms};

const CALLS: &[&str] = &[
    "GetPluginInfo",
    "GetPluginCapabilities",
    "Probe",
    "CreateVolume",
    "DeleteVolume",
    "ControllerExpandVolume",
    "ControllerModifyVolume",
    "ControllerGetCapabilities",
    "ValidateVolumeCapabilities",
    "ListVolumes",
    "GetCapacity",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ListSnapshots",
    "NodeStageVolume",
    "NodeUnstageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeGetVolumeStats",
    "NodeExpandVolume",
    "NodeGetCapabilities",
    "NodeGetInfo",
    "other",
];

struct CsiMetrics {
    calls: OpHistograms,
    errors: OpCounters,
}

fn get() -> &'static CsiMetrics {
    static M: OnceLock<CsiMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = CsiMetrics { calls: OpHistograms::new("method", CALLS), errors: OpCounters::new("method", CALLS) };
        strata_metrics::register(
            "csi_ops_durations_histogram_seconds",
            "CSI calls answered, by method, in seconds",
            m.calls.clone(),
        );
        strata_metrics::register("csi_ops_errors", "CSI calls answered with an error, by method", m.errors.clone());
        m
    })
}

/// Records one CSI call (the recorder of [`strata_metrics::grpc::Timing`]).
pub fn record(path: &str, started: Instant, ok: bool) {
    let m = get();
    let name = path.rsplit('/').next().unwrap_or("");
    let i = m.calls.index(name).unwrap_or(CALLS.len() - 1);
    m.calls.get(i).since(started);
    if !ok {
        m.errors.add(i, 1);
    }
}

/// Registers the metrics (so a scrape before the first call lists them).
pub fn register() {
    get();
}
