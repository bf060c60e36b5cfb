//! `strata csi`: the Kubernetes CSI driver, and its control-plane calls over the REST API.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use hyper::StatusCode;
use strata_csi::{
    ControlError, ControlPlane, CsiOptions, DataVolumeRecord, Mode, Room, SnapshotRecord, VolumeRecord, VolumeRequest,
    WorkerCommand,
};
use strata_server::rest::model::{
    AccessModeName, ClassView, DataVolumeView, EffectivePolicyView, NewSnapshot, NewVolume, QosSpec, ReclaimName,
    ScopeView, SnapshotView, StatusView, VolumePatch, VolumeView,
};

use crate::cmd::rest::{Api, ApiFailure, scope_path, seg};

/// Serve the Kubernetes CSI driver (CSI 1.12) on a unix socket: the controller provisions,
/// expands and deletes volumes with the token of the claim's namespace (from the CSI secrets,
/// key "token"); the node mounts each volume once per node in a supervised FUSE worker and
/// bind-mounts it into pods. Workers outlive a plugin restart, and a worker that dies is
/// replaced on the same kernel connection. See README "Kubernetes".
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct CsiArgs {
    /// Services to serve: controller (with the provisioner), node (one per node, with the
    /// kubelet) or all.
    #[arg(long, value_enum, default_value = "all")]
    mode: ModeArg,
    /// Socket to serve on, `unix:///path` or a path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///var/lib/kubelet/plugins/csi.strata.io/csi.sock")]
    endpoint: String,
    /// This node's id, the Kubernetes node name (node mode).
    #[arg(long, env = "CSI_NODE_ID", default_value = "")]
    node_id: String,
    /// Address of `strata server`, HOST:PORT.
    #[arg(long, env = "STRATA_SERVER", default_value = "127.0.0.1:7420")]
    server: String,
    /// The driver's own token, for ListVolumes, GetCapacity and ControllerGetVolume only
    /// (give a read-only token of the cluster scope); provisioning always uses the claim
    /// namespace's token.
    #[arg(long, env = "STRATA_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Where the node keeps its records of staged volumes and workers (keep it on the host,
    /// so a restarted plugin finds them).
    #[arg(long, default_value = "/var/lib/strata-csi")]
    state_dir: PathBuf,
    /// Most volumes this node mounts (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_volumes: i64,
    /// The `strata` executable FUSE workers run [default: this one]. Replace the file and
    /// send a worker SIGTERM to move it to a new version without disturbing pods.
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// More `strata mount` options for the workers, e.g. --worker-arg=--cache-size=8G.
    #[arg(long = "worker-arg", allow_hyphen_values = true)]
    worker_args: Vec<String>,
    /// Log as JSON lines (the same as `--log-format json`).
    #[arg(long, hide = true)]
    log_json: bool,
    /// Log format: `text` (one line per event) or `json` (one object per line, for log
    /// shippers).
    #[arg(long, value_enum, default_value = "text")]
    log_format: crate::util::LogFormat,
    #[command(flatten)]
    metrics: crate::metrics_http::MetricsArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Controller,
    Node,
    All,
}

/// Runs `strata csi`.
pub fn run(args: CsiArgs) -> Result<()> {
    crate::util::init_logging(args.log_json || args.log_format == crate::util::LogFormat::Json);
    let token = match &args.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let program = match &args.worker_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find the strata executable")?,
    };
    let socket = PathBuf::from(args.endpoint.strip_prefix("unix://").unwrap_or(&args.endpoint));
    let opts = CsiOptions {
        mode: match args.mode {
            ModeArg::Controller => Mode::Controller,
            ModeArg::Node => Mode::Node,
            ModeArg::All => Mode::All,
        },
        socket,
        node_id: args.node_id.clone(),
        server: args.server.clone(),
        token,
        state_dir: args.state_dir.clone(),
        max_volumes: args.max_volumes,
        worker: WorkerCommand { program, server: args.server.clone(), extra_args: args.worker_args.clone() },
    };
    let control = Arc::new(RestControl { server: args.server.clone() });
    let rt = crate::runtime()?;
    rt.block_on(async {
        strata_csi::metrics::register();
        args.metrics.start().await?;
        strata_csi::serve(opts, control, crate::cmd::server::shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// The control plane over the server's REST API.
struct RestControl {
    server: String,
}

/// What a failed REST call means for the driver; `conflict` is what a 409 means for this call.
fn control_error(e: anyhow::Error, conflict: fn(String) -> ControlError) -> ControlError {
    match e.downcast_ref::<ApiFailure>() {
        Some(f) => {
            let m = f.message.clone();
            match f.status {
                StatusCode::UNAUTHORIZED => {
                    ControlError::Unauthenticated(format!("the Strata server refused the token: {m}"))
                }
                StatusCode::FORBIDDEN => ControlError::Refused(m),
                StatusCode::NOT_FOUND => ControlError::NotFound(m),
                StatusCode::CONFLICT => conflict(m),
                s if s.is_client_error() => ControlError::Invalid(m),
                _ => ControlError::Unavailable(m),
            }
        }
        None => ControlError::Unavailable(format!("{e:#}")),
    }
}

fn record(v: VolumeView) -> VolumeRecord {
    VolumeRecord {
        name: v.name,
        scope: v.scope,
        class: v.class,
        capacity: v.capacity,
        used_bytes: v.used_bytes,
        access_mode: v.access_mode.into(),
        qos: v.qos.map(|q| (q.bytes_per_sec, q.ops_per_sec)),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time as the server writes them
/// (`2026-12-06T10:11:12Z`, maybe with a fraction or an offset); 0 if unreadable.
fn epoch_seconds(t: &str) -> (i64, i32) {
    let parse = || -> Option<(i64, i32)> {
        let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut rest = t.get(19..)?;
        let mut nanos = 0i32;
        if let Some(f) = rest.strip_prefix('.') {
            let digits: String = f.chars().take_while(|c| c.is_ascii_digit()).collect();
            rest = &f[digits.len()..];
            let padded = format!("{:0<9}", &digits[..digits.len().min(9)]);
            nanos = padded.parse().ok()?;
        }
        let offset = match rest {
            "Z" | "z" | "" => 0,
            o => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let (oh, om): (i64, i64) = (o.get(1..3)?.parse().ok()?, o.get(4..6)?.parse().ok()?);
                sign * (oh * 3600 + om * 60)
            }
        };
        // Days since the epoch of a civil date (H. Hinnant's algorithm).
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some((days * 86_400 + h * 3600 + mi * 60 + s - offset, nanos))
    };
    parse().unwrap_or((0, 0))
}

fn snapshot_record(s: SnapshotView) -> SnapshotRecord {
    SnapshotRecord {
        created: epoch_seconds(&s.created),
        name: s.name,
        volume: s.volume,
        bytes: s.bytes,
        held_bytes: s.held_bytes,
        owner: s.owner,
    }
}

impl RestControl {
    fn api(&self, token: &str) -> Api {
        Api::with_token(&self.server, token.to_string())
    }
}

#[async_trait]
impl ControlPlane for RestControl {
    async fn create_volume(&self, token: &str, req: &VolumeRequest) -> Result<VolumeRecord, ControlError> {
        let body = NewVolume {
            name: req.name.clone(),
            scope: req.scope.clone(),
            class: req.class.clone(),
            capacity: req.capacity,
            inodes: req.inodes,
            access_mode: req.access_mode.map(AccessModeName::from),
            reclaim: match req.reclaim.as_deref() {
                Some("retain") => Some(ReclaimName::Retain),
                Some("delete") => Some(ReclaimName::Delete),
                _ => None,
            },
            from: req.from.clone(),
        };
        let v: VolumeView = self
            .api(token)
            .post("/v1/volumes", &body)
            .await
            .map_err(|e| control_error(e, ControlError::AlreadyExists))?;
        Ok(record(v))
    }

    async fn get_volume(&self, token: &str, name: &str) -> Result<Option<VolumeRecord>, ControlError> {
        match self.api(token).get::<VolumeView>(&format!("/v1/volumes/{}", seg(name))).await {
            Ok(v) => Ok(Some(record(v))),
            Err(e) => match control_error(e, ControlError::Busy) {
                ControlError::NotFound(_) => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn list_volumes(&self, token: &str) -> Result<Vec<VolumeRecord>, ControlError> {
        let vs: Vec<VolumeView> =
            self.api(token).get("/v1/volumes").await.map_err(|e| control_error(e, ControlError::Busy))?;
        Ok(vs.into_iter().map(record).collect())
    }

    async fn resize_volume(&self, token: &str, name: &str, capacity: u64) -> Result<VolumeRecord, ControlError> {
        let v: VolumeView = self
            .api(token)
            .patch(&format!("/v1/volumes/{}", seg(name)), &VolumePatch { capacity })
            .await
            .map_err(|e| control_error(e, ControlError::Busy))?;
        Ok(record(v))
    }

    async fn set_volume_qos(
        &self,
        token: &str,
        name: &str,
        qos: Option<(u64, u64)>,
    ) -> Result<VolumeRecord, ControlError> {
        let path = format!("/v1/volumes/{}/qos", seg(name));
        let api = self.api(token);
        let v: VolumeView = match qos {
            Some((bytes_per_sec, ops_per_sec)) => api.put(&path, &QosSpec { bytes_per_sec, ops_per_sec }).await,
            None => api.delete(&path).await,
        }
        .map_err(|e| control_error(e, ControlError::Busy))?;
        Ok(record(v))
    }

    async fn delete_volume(&self, token: &str, name: &str) -> Result<(), ControlError> {
        self.api(token)
            .delete::<VolumeView>(&format!("/v1/volumes/{}", seg(name)))
            .await
            .map(|_| ())
            .map_err(|e| control_error(e, ControlError::Busy))
    }

    async fn class_exists(&self, token: &str, class: &str) -> Result<bool, ControlError> {
        match self.api(token).get::<ClassView>(&format!("/v1/storageclasses/{}", seg(class))).await {
            Ok(_) => Ok(true),
            Err(e) => match control_error(e, ControlError::Busy) {
                ControlError::NotFound(_) => Ok(false),
                e => Err(e),
            },
        }
    }

    async fn room(&self, token: &str, scope: Option<&str>) -> Result<Room, ControlError> {
        let api = self.api(token);
        let scope = match scope {
            Some(s) => s.to_string(),
            None => {
                // The token's own scope is the shortest it can see.
                let scopes: Vec<ScopeView> =
                    api.get("/v1/scopes").await.map_err(|e| control_error(e, ControlError::Busy))?;
                scopes.into_iter().map(|s| s.path).min_by_key(|p| p.len()).unwrap_or_else(|| "cluster".into())
            }
        };
        let eff: EffectivePolicyView = api
            .get(&format!("/v1/policies/{}/effective", scope_path(&scope)))
            .await
            .map_err(|e| control_error(e, ControlError::Busy))?;
        let volumes = if eff.quotas.is_empty() { Vec::new() } else { self.list_volumes(token).await? };
        let within =
            |v: &VolumeRecord, s: &str| s == "cluster" || v.scope == s || v.scope.starts_with(&format!("{s}/"));
        let available = eff
            .quotas
            .iter()
            .map(|q| {
                let used: u64 = volumes.iter().filter(|v| within(v, &q.from)).map(|v| v.capacity).sum();
                q.value.saturating_sub(used)
            })
            .min();
        Ok(Room { available, max_volume_size: eff.max_volume_size.map(|m| m.value) })
    }

    async fn create_snapshot(&self, token: &str, volume: &str, name: &str) -> Result<SnapshotRecord, ControlError> {
        let s: SnapshotView = self
            .api(token)
            .post(&format!("/v1/volumes/{}/snapshots", seg(volume)), &NewSnapshot { name: name.to_string() })
            .await
            .map_err(|e| control_error(e, ControlError::AlreadyExists))?;
        Ok(snapshot_record(s))
    }

    async fn get_snapshot(
        &self,
        token: &str,
        volume: &str,
        name: &str,
    ) -> Result<Option<SnapshotRecord>, ControlError> {
        let path = format!("/v1/volumes/{}/snapshots/{}", seg(volume), seg(name));
        match self.api(token).get::<SnapshotView>(&path).await {
            Ok(s) => Ok(Some(snapshot_record(s))),
            Err(e) => match control_error(e, ControlError::Busy) {
                ControlError::NotFound(_) => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn list_snapshots(&self, token: &str, volume: Option<&str>) -> Result<Vec<SnapshotRecord>, ControlError> {
        let api = self.api(token);
        let volumes = match volume {
            Some(v) => vec![v.to_string()],
            None => self.list_volumes(token).await?.into_iter().map(|v| v.name).collect(),
        };
        let mut out = Vec::new();
        for v in volumes {
            let snaps: Vec<SnapshotView> = match api.get(&format!("/v1/volumes/{}/snapshots", seg(&v))).await {
                Ok(s) => s,
                Err(e) => match control_error(e, ControlError::Busy) {
                    // Deleted since it was listed.
                    ControlError::NotFound(_) if volume.is_none() => continue,
                    e => return Err(e),
                },
            };
            out.extend(snaps.into_iter().map(snapshot_record));
        }
        Ok(out)
    }

    async fn delete_snapshot(&self, token: &str, volume: &str, name: &str) -> Result<(), ControlError> {
        self.api(token)
            .delete::<SnapshotView>(&format!("/v1/volumes/{}/snapshots/{}", seg(volume), seg(name)))
            .await
            .map(|_| ())
            .map_err(|e| control_error(e, ControlError::Busy))
    }

    async fn get_datavolume(&self, token: &str, name: &str) -> Result<Option<DataVolumeRecord>, ControlError> {
        match self.api(token).get::<DataVolumeView>(&format!("/v1/datavolumes/{}", seg(name))).await {
            Ok(d) => Ok(Some(DataVolumeRecord {
                name: d.name,
                scope: d.scope,
                versions: d.versions.into_iter().map(|v| (v.number, v.bytes)).collect(),
            })),
            Err(e) => match control_error(e, ControlError::Busy) {
                ControlError::NotFound(_) => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn mounted_by(&self, token: &str, volume: &str) -> Result<Vec<String>, ControlError> {
        let st: StatusView =
            self.api(token).get("/v1/status").await.map_err(|e| control_error(e, ControlError::Busy))?;
        Ok(st.sessions.into_iter().filter(|s| s.volume == volume).map(|s| s.client).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::epoch_seconds;

    #[test]
    fn server_times_read_back() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), (0, 0));
        assert_eq!(epoch_seconds("2026-12-06T10:11:12Z"), (1_796_551_872, 0));
        assert_eq!(epoch_seconds("2000-03-01T00:00:00.5Z"), (951_868_800, 500_000_000));
        assert_eq!(epoch_seconds("2000-03-01T01:00:00+01:00"), (951_868_800, 0));
        assert_eq!(epoch_seconds("garbage"), (0, 0));
    }
}
