//! The Kubernetes CSI driver (CSI v1.12): the Identity, Controller and Node services on a unix
//! socket. The controller provisions through Strata's control plane with the token of the
//! volume's namespace; the node mounts each volume once per node in a supervised FUSE worker
//! process and bind-mounts it into pods (see `node` and `worker`).

pub mod caps;
pub mod control;
pub mod controller;
mod identity;
pub mod metrics;
pub mod mounts;
mod node;
mod state;
pub mod views;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

pub use control::{ControlError, ControlPlane, DataVolumeRecord, Room, SnapshotRecord, VolumeRecord, VolumeRequest};
pub use worker::WorkerCommand;

/// The CSI messages and services, generated from `proto/csi.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("csi.v1");
}

/// The driver's name, as Kubernetes objects refer to it.
pub const DRIVER_NAME: &str = "csi.strata.io";

/// Key of the token in the CSI secrets.
pub const TOKEN_KEY: &str = "token";

/// Which services a process serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Identity and Controller (the provisioner's side).
    Controller,
    /// Identity and Node (the kubelet's side, one per node).
    Node,
    /// All three.
    All,
}

impl Mode {
    fn controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }
    fn node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

/// Settings of `strata csi`.
#[derive(Clone, Debug)]
pub struct CsiOptions {
    /// Services to serve.
    pub mode: Mode,
    /// The unix socket to listen on.
    pub socket: PathBuf,
    /// This node's id (node mode).
    pub node_id: String,
    /// The Strata server the workers attach to (`HOST:PORT`).
    pub server: String,
    /// The driver's own token: listing volumes and capacity, never provisioning.
    pub token: Option<String>,
    /// Where the node keeps its records of staged volumes and workers.
    pub state_dir: PathBuf,
    /// Most volumes this node takes (0: no limit).
    pub max_volumes: i64,
    /// How to start a FUSE worker.
    pub worker: WorkerCommand,
}

/// Errors that end the driver.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// The socket could not be made or served.
    #[error("CSI socket {path}: {source}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The node's state directory could not be read or written.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("serving CSI: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A required setting is missing.
    #[error("{0}")]
    Config(String),
}

/// Serves the CSI services on `opts.socket` until `shutdown` completes. Staged volumes' workers
/// keep running after it returns: pods keep their mounts while the driver restarts.
pub async fn serve(
    opts: CsiOptions,
    control: Arc<dyn ControlPlane>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), CsiError> {
    if opts.mode.node() && opts.node_id.is_empty() {
        return Err(CsiError::Config("node mode needs --node-id (the Kubernetes node name)".into()));
    }
    let sock = &opts.socket;
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CsiError::Socket { path: sock.clone(), source })?;
    }
    match std::fs::remove_file(sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(CsiError::Socket { path: sock.clone(), source }),
    }
    let listener =
        tokio::net::UnixListener::bind(sock).map_err(|source| CsiError::Socket { path: sock.clone(), source })?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);

    let identity = identity::IdentityService::new(opts.mode);
    let mut router = tonic::transport::Server::builder()
        .layer(strata_metrics::grpc::Timing(metrics::record))
        .add_service(pb::identity_server::IdentityServer::new(identity));
    let mut node_handle = None;
    if opts.mode.controller() {
        let c = controller::ControllerService::new(control.clone(), opts.token.clone());
        router = router.add_service(pb::controller_server::ControllerServer::new(c));
    }
    if opts.mode.node() {
        let n = node::NodeService::start(&opts, control.clone()).await?;
        node_handle = Some(n.clone());
        router = router.add_service(pb::node_server::NodeServer::new(n));
    }
    tracing::info!(socket = %sock.display(), mode = ?opts.mode, node = %opts.node_id, "CSI driver serving");
    let res = router.serve_with_incoming_shutdown(incoming, shutdown).await;
    if let Some(n) = node_handle {
        n.stop_supervising();
    }
    let _ = std::fs::remove_file(sock);
    res.map_err(CsiError::from)
}

/// Logs a call's outcome with its volume id; every service method ends through this.
fn logged<T>(method: &str, volume: &str, res: Result<T, tonic::Status>) -> Result<tonic::Response<T>, tonic::Status> {
    use tonic::Code;
    match &res {
        Ok(_) => tracing::info!(method, volume, "ok"),
        // The driver's or the system's trouble: worth an operator's look.
        Err(s) if matches!(s.code(), Code::Internal | Code::Unavailable | Code::Unknown) => {
            tracing::warn!(method, volume, code = ?s.code(), message = s.message(), "failed")
        }
        // What the caller asked for is refused: routine for a CO (retries, policy refusals).
        Err(s) => tracing::info!(method, volume, code = ?s.code(), message = s.message(), "refused"),
    }
    res.map(tonic::Response::new)
}

impl From<ControlError> for tonic::Status {
    fn from(e: ControlError) -> Self {
        use tonic::Status;
        match e {
            ControlError::NotFound(m) => Status::not_found(m),
            ControlError::AlreadyExists(m) => Status::already_exists(m),
            ControlError::Unauthenticated(m) => Status::unauthenticated(m),
            ControlError::Refused(m) => Status::permission_denied(m),
            ControlError::Invalid(m) => Status::invalid_argument(m),
            ControlError::Busy(m) => Status::failed_precondition(m),
            ControlError::Unavailable(m) => Status::unavailable(m),
        }
    }
}
