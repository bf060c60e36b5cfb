//! The admin RPC service: volumes and server status. Admin tokens only.

use std::sync::Arc;

use strata_proto::conv::volume_to_pb;
use strata_proto::pb;
use strata_proto::pb::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::auth::{principal, require_admin};
use crate::control::{Control, ControlError, CreateVolume};
use crate::service::blocking;
use crate::state::State;

/// The gRPC status for a control-plane error.
pub fn control_status(e: ControlError) -> Status {
    match e {
        ControlError::Forbidden(m) => Status::permission_denied(m),
        e @ ControlError::Policy { .. } => Status::permission_denied(e.to_string()),
        ControlError::NotFound(m) => Status::not_found(m),
        ControlError::Conflict(m) => Status::already_exists(m),
        ControlError::Invalid(m) => Status::invalid_argument(m),
        ControlError::Internal(m) => Status::internal(m),
    }
}

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
        let who = principal(&req)?.clone();
        let r = req.into_inner();
        let none_if_empty = |s: String| if s.is_empty() { None } else { Some(s) };
        let mut capacity = r.capacity;
        if r.fit_to_policy {
            let scope = if r.scope.is_empty() { who.scope.clone() } else { r.scope.clone() };
            let meta = self.st.meta.clone();
            // An unknown scope is reported by the creation itself.
            if let Ok(p) = crate::service::blocking(move || meta.effective_policy(&scope)).await
                && let Some(max) = p.max_volume_size
                && (capacity == 0 || capacity > max.value)
            {
                capacity = max.value;
            }
        }
        let v = Control::new(self.st.clone())
            .create_volume(
                &who,
                CreateVolume {
                    name: r.name,
                    scope: none_if_empty(r.scope),
                    class: none_if_empty(r.class),
                    capacity,
                    inodes: r.inode_limit,
                    access_mode: none_if_empty(r.access_mode),
                    reclaim: none_if_empty(r.reclaim),
                    from: None,
                },
            )
            .await
            .map_err(control_status)?;
        Ok(Response::new(volume_to_pb(v.volume.info(&v.usage))))
    }

    async fn list_volumes(&self, req: Request<pb::Empty>) -> Result<Response<pb::VolumeList>, Status> {
        let who = principal(&req)?.clone();
        let vols = Control::new(self.st.clone()).list_volumes(&who).await.map_err(control_status)?;
        Ok(Response::new(pb::VolumeList {
            volumes: vols.iter().map(|v| volume_to_pb(v.volume.info(&v.usage))).collect(),
        }))
    }

    async fn delete_volume(&self, req: Request<pb::VolumeName>) -> Result<Response<pb::VolumeInfo>, Status> {
        let who = principal(&req)?.clone();
        let name = req.into_inner().name;
        let v = Control::new(self.st.clone()).delete_volume(&who, &name).await.map_err(control_status)?;
        Ok(Response::new(volume_to_pb(v.info(&Default::default()))))
    }

    async fn status(&self, req: Request<pb::Empty>) -> Result<Response<pb::StatusResp>, Status> {
        require_admin(&req)?;
        let meta = self.st.meta.clone();
        let pending = blocking(move || meta.collectable(100_000).map(|v| v.len() as u64)).await?;
        let sessions = self
            .st
            .sessions()
            .await
            .map_err(crate::service::meta_status)?
            .into_iter()
            .map(|s| pb::SessionInfo {
                id: s.id,
                volume: s.volume_name,
                client: s.client,
                since_sec: s.since.sec,
                last_seen_sec: s.last_seen.sec,
                version: s.version,
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
