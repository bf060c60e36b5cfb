//! The Node service: a volume is staged once per node as a FUSE mount served by a supervised
//! worker process, and published into pods as bind mounts of it.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::control::ControlPlane;
use crate::pb::node_server::Node;
use crate::pb::node_service_capability::{Rpc, rpc};
use crate::pb::volume_capability::access_mode::Mode;
use crate::pb::{self, NodeServiceCapability, node_service_capability};
use crate::state::{Published, Staged, StateDir, start_time};
use crate::worker::{self, Slot, WorkerCommand};
use crate::{CsiError, CsiOptions, caps, logged, mounts};

/// How long a new worker may take to attach before staging fails.
const STAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a volume's statistics may take before it is reported abnormal.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The Node service of one node.
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    max_volumes: i64,
    cmd: WorkerCommand,
    state: StateDir,
    control: Arc<dyn ControlPlane>,
    /// Staged volumes by staging path.
    slots: Mutex<HashMap<PathBuf, Arc<Slot>>>,
    /// One node call at a time: they change mounts and records together.
    busy: tokio::sync::Mutex<()>,
    supervisors: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn required<'a>(v: &'a str, what: &str) -> Result<&'a str, Status> {
    if v.is_empty() { Err(Status::invalid_argument(format!("{what} is required"))) } else { Ok(v) }
}

fn io_status(what: &str, e: std::io::Error) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// The last non-empty line of a worker's log, to say why it failed.
fn last_log_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string()
}

impl NodeService {
    /// Opens the state directory, finds the volumes staged before a restart and supervises
    /// their workers again.
    pub async fn start(opts: &CsiOptions, control: Arc<dyn ControlPlane>) -> Result<NodeService, CsiError> {
        let state = StateDir::open(&opts.state_dir)
            .map_err(|source| CsiError::State { path: opts.state_dir.clone(), source })?;
        let inner = Arc::new(Inner {
            node_id: opts.node_id.clone(),
            max_volumes: opts.max_volumes,
            cmd: opts.worker.clone(),
            state,
            control,
            slots: Mutex::new(HashMap::new()),
            busy: tokio::sync::Mutex::new(()),
            supervisors: Mutex::new(Vec::new()),
        });
        let n = NodeService { inner };
        let records =
            n.inner.state.all_staged().map_err(|source| CsiError::State { path: opts.state_dir.clone(), source })?;
        for s in records {
            n.recover(s);
        }
        Ok(n)
    }

    /// Takes a staged volume found on disk back under supervision.
    fn recover(&self, mut s: Staged) {
        let running = s.pid > 0 && start_time(s.pid) == Some(s.start_time);
        if running {
            match worker::fetch_connection(s.pid) {
                Ok(fd) => {
                    tracing::info!(volume = %s.volume, staging = %s.staging.display(), pid = s.pid, "found a staged volume and its worker");
                    self.supervise(Slot::new(s, Some(fd)));
                    return;
                }
                Err(e) => {
                    tracing::warn!(volume = %s.volume, pid = s.pid, error = %e, "cannot take the worker's connection")
                }
            }
        }
        // The worker died while no plugin held its connection: that mount is gone for good.
        // Mount the volume afresh so new pods can use it; pods still bound to the old mount
        // see ENOTCONN until restarted.
        tracing::warn!(volume = %s.volume, staging = %s.staging.display(), "the staged volume's worker is gone; mounting it again");
        let _ = mounts::unmount(&s.staging);
        let res = mounts::fuse_mount(&s.staging, &s.volume, s.read_only).and_then(|fd| {
            let (pid, st) =
                worker::spawn(&self.inner.cmd, &self.inner.state, &self.inner.node_id, &s, fd.as_fd(), false)?;
            Ok((fd, pid, st))
        });
        match res {
            Ok((fd, pid, st)) => {
                s.pid = pid;
                s.start_time = st;
                if let Err(e) = self.inner.state.save_staged(&s) {
                    // The worker serves; only the plugin's next restart would not find it.
                    tracing::warn!(volume = %s.volume, error = %e, "cannot save the staging record");
                }
                self.supervise(Slot::new(s, Some(fd)));
            }
            Err(e) => {
                tracing::error!(volume = %s.volume, error = %e, "cannot mount the volume again; unstage it to clean up");
                s.pid = 0;
                self.supervise(Slot::new(s, None));
            }
        }
    }

    fn supervise(&self, slot: Arc<Slot>) {
        let staging = slot.record().staging;
        if let Ok(mut m) = self.inner.slots.lock() {
            m.insert(staging, slot.clone());
        }
        let h = tokio::spawn(worker::supervise(
            slot,
            self.inner.cmd.clone(),
            self.inner.state.clone(),
            self.inner.node_id.clone(),
        ));
        if let Ok(mut v) = self.inner.supervisors.lock() {
            v.push(h);
        }
    }

    /// Stops replacing workers (the plugin is stopping); the workers keep serving.
    pub fn stop_supervising(&self) {
        if let Ok(mut v) = self.inner.supervisors.lock() {
            for h in v.drain(..) {
                h.abort();
            }
        }
    }

    fn slot(&self, staging: &Path) -> Option<Arc<Slot>> {
        self.inner.slots.lock().ok()?.get(staging).cloned()
    }

    fn slot_of_volume(&self, volume: &str) -> Option<Arc<Slot>> {
        self.inner.slots.lock().ok()?.values().find(|s| s.record().volume == volume).cloned()
    }

    async fn stage(&self, r: pb::NodeStageVolumeRequest) -> Result<pb::NodeStageVolumeResponse, Status> {
        let volume = required(&r.volume_id, "volume_id")?.to_string();
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let cap =
            r.volume_capability.as_ref().ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let mode = caps::check(cap).map_err(Status::invalid_argument)?;
        // A snapshot's or a data volume's view (`VOLUME@SNAPSHOT`, `dv:NAME[@VERSION]`) is
        // read-only whatever the capability says: the server refuses its writes anyway.
        let view = crate::views::is_view(&volume);
        let read_only = view
            || caps::read_only(cap)
            || r.volume_context.get(crate::controller::CTX_ACCESS).is_some_and(|a| a == "ReadOnlyMany");
        let _one = self.inner.busy.lock().await;
        if let Some(slot) = self.slot(&staging) {
            let s = slot.record();
            if s.volume != volume {
                return Err(Status::already_exists(format!(
                    "{} already stages volume {}",
                    staging.display(),
                    s.volume
                )));
            }
            if s.read_only != read_only {
                return Err(Status::already_exists(format!(
                    "volume {volume} is staged {} at {}",
                    if s.read_only { "read-only" } else { "read-write" },
                    staging.display()
                )));
            }
            return Ok(pb::NodeStageVolumeResponse {});
        }
        let staged_now = self.inner.slots.lock().map(|m| m.len()).unwrap_or(0) as i64;
        if self.inner.max_volumes > 0 && staged_now >= self.inner.max_volumes {
            return Err(Status::resource_exhausted(format!(
                "node {} already has its maximum of {} volumes",
                self.inner.node_id, self.inner.max_volumes
            )));
        }
        let token =
            r.secrets.get(crate::TOKEN_KEY).map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).ok_or_else(
                || {
                    Status::unauthenticated(
                        "no Strata token to mount the volume: the StorageClass must set \
                     csi.storage.k8s.io/node-stage-secret-name and -namespace (${pvc.namespace}), \
                     and the Secret must exist with key \"token\"",
                    )
                },
            )?;
        let single_node = !view
            && matches!(
                mode,
                Mode::SingleNodeWriter
                    | Mode::SingleNodeReaderOnly
                    | Mode::SingleNodeSingleWriter
                    | Mode::SingleNodeMultiWriter
            );
        if single_node {
            let ours = format!("csi:{}:", self.inner.node_id);
            let others: Vec<String> = self
                .inner
                .control
                .mounted_by(&token, &volume)
                .await?
                .into_iter()
                .filter(|c| !c.starts_with(&ours))
                .collect();
            if let Some(o) = others.first() {
                return Err(Status::failed_precondition(format!(
                    "volume {volume} is single-node and already mounted by {o}"
                )));
            }
        }
        let created_dir = !staging.exists();
        std::fs::create_dir_all(&staging).map_err(|e| io_status("creating the staging path", e))?;
        let mut rec = Staged {
            volume: volume.clone(),
            staging: staging.clone(),
            read_only,
            single_pod: r.volume_context.get(crate::controller::CTX_SINGLE_POD).is_some_and(|v| v == "true"),
            pid: 0,
            start_time: 0,
            created_dir,
        };
        self.inner.state.save_token(&staging, &token).map_err(|e| io_status("saving the token", e))?;
        let fd = match mounts::fuse_mount(&staging, &volume, read_only) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = self.inner.state.remove_staged(&staging);
                return Err(io_status(&format!("mounting FUSE at {}", staging.display()), e));
            }
        };
        let (pid, st) =
            match worker::spawn(&self.inner.cmd, &self.inner.state, &self.inner.node_id, &rec, fd.as_fd(), false) {
                Ok(p) => p,
                Err(e) => {
                    drop(fd);
                    let _ = mounts::unmount(&staging);
                    let _ = self.inner.state.remove_staged(&staging);
                    return Err(io_status("starting the FUSE worker", e));
                }
            };
        rec.pid = pid;
        rec.start_time = st;
        // Ready once the mount answers; a worker that exits first failed to attach.
        let probe_path = staging.clone();
        let probe = tokio::task::spawn_blocking(move || mounts::statvfs(&probe_path));
        let outcome = tokio::select! {
            r = probe => match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("the new mount does not answer: {e}")),
                Err(e) => Err(e.to_string()),
            },
            _ = worker::wait_exit(pid, st) => Err(last_log_line(&self.inner.state.log_path(&staging))),
            _ = tokio::time::sleep(STAGE_TIMEOUT) => Err(format!("the FUSE worker did not attach within {STAGE_TIMEOUT:?}")),
        };
        if let Err(why) = outcome {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            drop(fd);
            let _ = mounts::unmount(&staging);
            let _ = self.inner.state.remove_staged(&staging);
            if created_dir {
                let _ = std::fs::remove_dir(&staging);
            }
            let msg = format!("cannot mount volume {volume}: {why}");
            return Err(
                if why.contains("authentication") || why.contains("Unauthenticated") || why.contains("token") {
                    Status::unauthenticated(msg)
                } else if ["no such volume", "not found", "does not exist"].iter().any(|w| why.contains(w)) {
                    Status::not_found(msg)
                } else {
                    Status::internal(msg)
                },
            );
        }
        self.inner.state.save_staged(&rec).map_err(|e| io_status("saving the staging record", e))?;
        self.supervise(Slot::new(rec, Some(fd)));
        Ok(pb::NodeStageVolumeResponse {})
    }

    async fn unstage(&self, r: pb::NodeUnstageVolumeRequest) -> Result<pb::NodeUnstageVolumeResponse, Status> {
        required(&r.volume_id, "volume_id")?;
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let _one = self.inner.busy.lock().await;
        let slot = self.inner.slots.lock().ok().and_then(|mut m| m.remove(&staging));
        let Some(slot) = slot else {
            // Not ours (or already unstaged): still leave no Strata mount behind.
            if mounts::mounted_at(&staging).is_some_and(|m| m.fstype == "fuse.strata") {
                mounts::unmount(&staging).map_err(|e| io_status("unmounting", e))?;
            }
            return Ok(pb::NodeUnstageVolumeResponse {});
        };
        slot.stop();
        mounts::unmount(&staging).map_err(|e| io_status("unmounting", e))?;
        slot.wait_ended(Duration::from_secs(30)).await;
        let s = slot.record();
        self.inner.state.remove_staged(&staging).map_err(|e| io_status("removing the record", e))?;
        if s.created_dir {
            let _ = std::fs::remove_dir(&staging);
        }
        Ok(pb::NodeUnstageVolumeResponse {})
    }

    async fn publish(&self, r: pb::NodePublishVolumeRequest) -> Result<pb::NodePublishVolumeResponse, Status> {
        let volume = required(&r.volume_id, "volume_id")?.to_string();
        let target = PathBuf::from(required(&r.target_path, "target_path")?);
        let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
        let cap =
            r.volume_capability.as_ref().ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let mode = caps::check(cap).map_err(Status::invalid_argument)?;
        let _one = self.inner.busy.lock().await;
        let slot = self.slot(&staging).filter(|s| s.record().volume == volume).ok_or_else(|| {
            Status::failed_precondition(format!("volume {volume} is not staged at {}", staging.display()))
        })?;
        let s = slot.record();
        let read_only = r.readonly || caps::read_only(cap) || s.read_only;
        if let Some(p) = self.inner.state.published(&target)
            && mounts::mounted_at(&target).is_some()
        {
            if p.volume == volume && p.read_only == read_only {
                return Ok(pb::NodePublishVolumeResponse {});
            }
            return Err(Status::already_exists(format!(
                "{} is already published for volume {} ({})",
                target.display(),
                p.volume,
                if p.read_only { "read-only" } else { "read-write" }
            )));
        }
        let single_pod = s.single_pod || mode == Mode::SingleNodeSingleWriter;
        if single_pod {
            let all = self.inner.state.all_published().map_err(|e| io_status("reading records", e))?;
            if let Some(other) = all.iter().find(|p| p.volume == volume && p.target != target) {
                return Err(Status::failed_precondition(format!(
                    "volume {volume} is ReadWriteOncePod and already published at {}",
                    other.target.display()
                )));
            }
        }
        std::fs::create_dir_all(&target).map_err(|e| io_status("creating the target path", e))?;
        mounts::bind(&staging, &target, read_only).map_err(|e| io_status("bind-mounting into the target path", e))?;
        let rec = Published { volume, target, staging, read_only };
        self.inner.state.save_published(&rec).map_err(|e| io_status("saving the publish record", e))?;
        Ok(pb::NodePublishVolumeResponse {})
    }

    async fn unpublish(&self, r: pb::NodeUnpublishVolumeRequest) -> Result<pb::NodeUnpublishVolumeResponse, Status> {
        required(&r.volume_id, "volume_id")?;
        let target = PathBuf::from(required(&r.target_path, "target_path")?);
        let _one = self.inner.busy.lock().await;
        while mounts::mounted_at(&target).is_some_and(|m| m.fstype == "fuse.strata") {
            if !mounts::unmount(&target).map_err(|e| io_status("unmounting the target path", e))? {
                break;
            }
        }
        match std::fs::remove_dir(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_status(&format!("removing {}", target.display()), e)),
        }
        self.inner.state.remove_published(&target).map_err(|e| io_status("removing the record", e))?;
        Ok(pb::NodeUnpublishVolumeResponse {})
    }

    /// The mount at `path` if it is one of `volume`'s.
    fn check_mount(volume: &str, path: &Path) -> Result<(), Status> {
        if !path.exists() {
            return Err(Status::not_found(format!("{} does not exist", path.display())));
        }
        match mounts::mounted_at(path) {
            Some(m) if m.fstype == "fuse.strata" && m.source == format!("strata:{volume}") => Ok(()),
            _ => Err(Status::not_found(format!("{} is not a mount of volume {volume}", path.display()))),
        }
    }

    async fn stats(&self, r: pb::NodeGetVolumeStatsRequest) -> Result<pb::NodeGetVolumeStatsResponse, Status> {
        let volume = required(&r.volume_id, "volume_id")?.to_string();
        let path = PathBuf::from(required(&r.volume_path, "volume_path")?);
        Self::check_mount(&volume, &path)?;
        let slot = self.slot_of_volume(&volume);
        let abnormal = |m: String| pb::VolumeCondition { abnormal: true, message: m };
        let worker_gone = match &slot {
            Some(s) if s.alive() => None,
            Some(s) if s.holds_connection() => Some(abnormal("the FUSE worker is being replaced".into())),
            _ => Some(abnormal("the FUSE worker is gone: the mount no longer answers".into())),
        };
        if let Some(c) = worker_gone {
            return Ok(pb::NodeGetVolumeStatsResponse { usage: Vec::new(), volume_condition: Some(c) });
        }
        let p = path.clone();
        let st = tokio::time::timeout(STATS_TIMEOUT, tokio::task::spawn_blocking(move || mounts::statvfs(&p))).await;
        let st = match st {
            Ok(Ok(Ok(st))) => st,
            Ok(Ok(Err(e))) => {
                return Ok(pb::NodeGetVolumeStatsResponse {
                    usage: Vec::new(),
                    volume_condition: Some(abnormal(format!("statfs failed: {e}"))),
                });
            }
            Ok(Err(e)) => return Err(Status::internal(e.to_string())),
            Err(_) => {
                return Ok(pb::NodeGetVolumeStatsResponse {
                    usage: Vec::new(),
                    volume_condition: Some(abnormal(format!(
                        "statfs did not answer within {STATS_TIMEOUT:?}: the Strata server is unreachable"
                    ))),
                });
            }
        };
        let f = st.f_frsize as i64;
        let (blocks, bfree, bavail) = (st.f_blocks as i64, st.f_bfree as i64, st.f_bavail as i64);
        let (files, ffree) = (st.f_files as i64, st.f_ffree as i64);
        let usage = vec![
            pb::VolumeUsage {
                available: bavail * f,
                total: blocks * f,
                used: (blocks - bfree) * f,
                unit: pb::volume_usage::Unit::Bytes as i32,
            },
            pb::VolumeUsage {
                available: ffree,
                total: files,
                used: files - ffree,
                unit: pb::volume_usage::Unit::Inodes as i32,
            },
        ];
        Ok(pb::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(pb::VolumeCondition { abnormal: false, message: String::new() }),
        })
    }

    async fn expand(&self, r: pb::NodeExpandVolumeRequest) -> Result<pb::NodeExpandVolumeResponse, Status> {
        let volume = required(&r.volume_id, "volume_id")?.to_string();
        let path = PathBuf::from(required(&r.volume_path, "volume_path")?);
        if let Some(cap) = &r.volume_capability {
            caps::check(cap).map_err(Status::invalid_argument)?;
        }
        if crate::views::is_view(&volume) {
            return Err(Status::invalid_argument(format!(
                "volume {volume} is a read-only view (a snapshot or a data volume) and cannot be expanded"
            )));
        }
        Self::check_mount(&volume, &path)?;
        let want = r.capacity_range.as_ref().map_or(0, |c| c.required_bytes.max(0));
        // The quota lives on the server: the node has nothing to resize, only to see the mount
        // report the new size (at once: statfs asks the server).
        let deadline = tokio::time::Instant::now() + STATS_TIMEOUT;
        loop {
            let p = path.clone();
            let st = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || mounts::statvfs(&p)))
                .await
                .map_err(|_| Status::unavailable("statfs did not answer: the Strata server is unreachable"))?
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| io_status("statfs", e))?;
            let total = (st.f_blocks as i64) * (st.f_frsize as i64);
            if total >= want || tokio::time::Instant::now() >= deadline {
                if total < want {
                    return Err(Status::internal(format!("the mount reports {total} bytes, not the {want} asked for")));
                }
                return Ok(pb::NodeExpandVolumeResponse { capacity_bytes: total });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The node capabilities the driver advertises.
const ADVERTISED: [rpc::Type; 5] = [
    rpc::Type::StageUnstageVolume,
    rpc::Type::GetVolumeStats,
    rpc::Type::ExpandVolume,
    rpc::Type::VolumeCondition,
    rpc::Type::SingleNodeMultiWriter,
];

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("NodeStageVolume", &id, self.stage(r).await)
    }

    async fn node_unstage_volume(
        &self,
        r: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("NodeUnstageVolume", &id, self.unstage(r).await)
    }

    async fn node_publish_volume(
        &self,
        r: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("NodePublishVolume", &id, self.publish(r).await)
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("NodeUnpublishVolume", &id, self.unpublish(r).await)
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("NodeGetVolumeStats", &id, self.stats(r).await)
    }

    async fn node_expand_volume(
        &self,
        r: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("NodeExpandVolume", &id, self.expand(r).await)
    }

    async fn node_get_capabilities(
        &self,
        _: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        let caps = ADVERTISED
            .iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(Rpc { r#type: *t as i32 })),
            })
            .collect();
        Ok(Response::new(pb::NodeGetCapabilitiesResponse { capabilities: caps }))
    }

    async fn node_get_info(
        &self,
        _: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.inner.node_id.clone(),
            max_volumes_per_node: self.inner.max_volumes.max(0),
            accessible_topology: None,
        }))
    }
}
