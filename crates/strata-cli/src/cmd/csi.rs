//! `strata csi`: the Kubernetes CSI driver, and its control-plane calls over the REST API.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use hyper::StatusCode;
use strata_csi::{ControlError, ControlPlane, CsiOptions, Mode, Room, VolumeRecord, VolumeRequest, WorkerCommand};
use strata_server::rest::model::{
    AccessModeName, ClassView, EffectivePolicyView, NewVolume, QosSpec, ReclaimName, ScopeView, StatusView,
    VolumePatch, VolumeView,
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
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Controller,
    Node,
    All,
}

/// Runs `strata csi`.
pub fn run(args: CsiArgs) -> Result<()> {
    crate::util::init_logging(args.log_json);
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
    rt.block_on(async { strata_csi::serve(opts, control, crate::cmd::server::shutdown_signal()).await })?;
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
            from: None,
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

    async fn mounted_by(&self, token: &str, volume: &str) -> Result<Vec<String>, ControlError> {
        let st: StatusView =
            self.api(token).get("/v1/status").await.map_err(|e| control_error(e, ControlError::Busy))?;
        Ok(st.sessions.into_iter().filter(|s| s.volume == volume).map(|s| s.client).collect())
    }
}
