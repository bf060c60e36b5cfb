//! The Identity service: who the driver is, what it serves, whether it is ready.

use tonic::{Request, Response, Status};

use crate::Mode;
use crate::pb::identity_server::Identity;
use crate::pb::plugin_capability::{Service, VolumeExpansion, service, volume_expansion};
use crate::pb::{self, PluginCapability, plugin_capability};

/// Identity for one process.
pub struct IdentityService {
    mode: Mode,
}

impl IdentityService {
    /// Identity of a process serving `mode`.
    pub fn new(mode: Mode) -> Self {
        IdentityService { mode }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: crate::DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        // Every process advertises the controller: a CO asks the identity of node plugins too,
        // and the capability describes the driver, not the process.
        let service = |t: service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(Service { r#type: t as i32 })),
        };
        let online = PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        };
        Ok(Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities: vec![service(service::Type::ControllerService), online],
        }))
    }

    async fn probe(&self, _: Request<pb::ProbeRequest>) -> Result<Response<pb::ProbeResponse>, Status> {
        if matches!(self.mode, Mode::Node | Mode::All) {
            let fuse =
                tokio::task::spawn_blocking(|| std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse"))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
            if let Err(e) = fuse {
                return Err(Status::failed_precondition(format!("cannot open /dev/fuse: {e}")));
            }
        }
        Ok(Response::new(pb::ProbeResponse { ready: Some(true) }))
    }
}
