//! The admin RPC service: volumes and server status. Admin tokens only.

use std::sync::Arc;

use strata_meta::{NewVolume, Reclaim};
use strata_proto::conv::volume_to_pb;
use strata_proto::pb;
use strata_proto::pb::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::auth::require_admin;
use crate::service::blocking;
use crate::state::State;

/// The `Admin` gRPC service.
pub struct AdminService {
    st: Arc<State>,
}

impl AdminService {
    /// A service over the shared server state.
    pub fn new(st: Arc<State>) -> Self {
        AdminService { st }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_volume(&self, req: Request<pb::CreateVolumeReq>) -> Result<Response<pb::VolumeInfo>, Status> {
        require_admin(&req)?;
        let r = req.into_inner();
        let reclaim = match r.reclaim.as_str() {
            "" | "delete" => Reclaim::Delete,
            "retain" => Reclaim::Retain,
            other => return Err(Status::invalid_argument(format!("reclaim must be delete or retain, not {other:?}"))),
        };
        if r.block_size != 0 && !(64 * 1024..=64 << 20).contains(&r.block_size) {
            return Err(Status::invalid_argument("block size must be between 64 KiB and 64 MiB"));
        }
        let opts = NewVolume {
            class: if r.class.is_empty() { "default".into() } else { r.class },
            capacity: r.capacity,
            inode_limit: r.inode_limit,
            block_size: r.block_size,
            store: self.st.default_store.clone(),
            compression: "none".into(),
            reclaim,
            scope: "cluster".into(),
        };
        let meta = self.st.meta.clone();
        let name = r.name;
        let (v, u) = blocking(move || {
            let v = meta.create_volume(&name, &opts)?;
            let u = meta.usage(v.id)?;
            Ok((v, u))
        })
        .await?;
        tracing::info!(volume = %v.name, id = v.id, "volume created");
        Ok(Response::new(volume_to_pb(&v, &u)))
    }

    async fn list_volumes(&self, req: Request<pb::Empty>) -> Result<Response<pb::VolumeList>, Status> {
        require_admin(&req)?;
        let meta = self.st.meta.clone();
        let vols = blocking(move || meta.list_volumes()).await?;
        Ok(Response::new(pb::VolumeList { volumes: vols.iter().map(|(v, u)| volume_to_pb(v, u)).collect() }))
    }

    async fn delete_volume(&self, req: Request<pb::VolumeName>) -> Result<Response<pb::VolumeInfo>, Status> {
        require_admin(&req)?;
        let name = req.into_inner().name;
        if self.st.sessions.list().iter().any(|s| s.volume_name == name) {
            return Err(Status::failed_precondition(format!(
                "volume {name} is mounted; unmount it everywhere first (see `strata status`)"
            )));
        }
        let meta = self.st.meta.clone();
        let v = blocking(move || meta.delete_volume(&name)).await?;
        tracing::info!(volume = %v.name, "volume deleted");
        Ok(Response::new(volume_to_pb(&v, &Default::default())))
    }

    async fn status(&self, req: Request<pb::Empty>) -> Result<Response<pb::StatusResp>, Status> {
        require_admin(&req)?;
        let meta = self.st.meta.clone();
        let pending = blocking(move || meta.collectable(100_000).map(|v| v.len() as u64)).await?;
        let now = std::time::Instant::now();
        let sessions = self
            .st
            .sessions
            .list()
            .into_iter()
            .map(|s| pb::SessionInfo {
                id: s.id,
                volume: s.volume_name,
                client: s.client,
                since_sec: s.since.sec,
                last_seen_sec: strata_meta::Timespec::now().sec - now.duration_since(s.last_seen).as_secs() as i64,
            })
            .collect();
        Ok(Response::new(pb::StatusResp {
            version: env!("CARGO_PKG_VERSION").into(),
            engine: self.st.meta.engine().into(),
            started_sec: self.st.started.sec,
            sessions,
            pending_slices: pending,
            data_dir: self.st.data_dir.display().to_string(),
        }))
    }
}
