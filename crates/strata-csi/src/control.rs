//! What the driver needs from Strata's control plane, as a trait: the binary implements it over
//! the server's REST API, so this crate links no HTTP client and no engine.

use async_trait::async_trait;
use strata_types::AccessMode;

/// A Strata volume as the driver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeRecord {
    /// Unique name; the CSI volume id.
    pub name: String,
    /// Scope it belongs to.
    pub scope: String,
    /// Storage class.
    pub class: String,
    /// Byte quota; 0 means none.
    pub capacity: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// How it may be attached.
    pub access_mode: AccessMode,
    /// Its own QoS limits per mount, `(bytes_per_sec, ops_per_sec)` (0 = unlimited),
    /// replacing its class's; None: the class's apply.
    pub qos: Option<(u64, u64)>,
}

/// A volume to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeRequest {
    /// Unique name.
    pub name: String,
    /// Scope (None: the token's).
    pub scope: Option<String>,
    /// Storage class (None: the scope's default).
    pub class: Option<String>,
    /// Byte quota; 0: none.
    pub capacity: u64,
    /// Inode quota; 0: none.
    pub inodes: u64,
    /// Access mode.
    pub access_mode: Option<AccessMode>,
    /// `delete` or `retain` (None: the class's).
    pub reclaim: Option<String>,
}

/// How much more can be provisioned where a token's volumes go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Bytes the tightest quota on the way still has (None: no quota).
    pub available: Option<u64>,
    /// Largest volume a policy allows (None: no limit).
    pub max_volume_size: Option<u64>,
}

/// A control-plane call that failed, by what the caller should do about it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// No such volume, class or scope.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The token is missing, unknown, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token may not do this, or a policy refuses it (the message names rule and scope).
    #[error("{0}")]
    Refused(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The volume's state forbids it now (e.g. still mounted).
    #[error("{0}")]
    Busy(String),
    /// The server cannot be reached or failed.
    #[error("{0}")]
    Unavailable(String),
}

/// The control-plane calls the driver makes; every call carries the token it acts with.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Creates a volume.
    async fn create_volume(&self, token: &str, req: &VolumeRequest) -> Result<VolumeRecord, ControlError>;
    /// One volume, or None if there is none of that name the token can see.
    async fn get_volume(&self, token: &str, name: &str) -> Result<Option<VolumeRecord>, ControlError>;
    /// Every volume the token can see.
    async fn list_volumes(&self, token: &str) -> Result<Vec<VolumeRecord>, ControlError>;
    /// Sets a volume's byte quota.
    async fn resize_volume(&self, token: &str, name: &str, capacity: u64) -> Result<VolumeRecord, ControlError>;
    /// Sets (`Some((bytes_per_sec, ops_per_sec))`, 0 = unlimited) or clears (None: back to its
    /// class's) a volume's own QoS limits per mount.
    async fn set_volume_qos(
        &self,
        token: &str,
        name: &str,
        qos: Option<(u64, u64)>,
    ) -> Result<VolumeRecord, ControlError>;
    /// Deletes a volume (its data goes or stays by its reclaim policy); NotFound if absent.
    async fn delete_volume(&self, token: &str, name: &str) -> Result<(), ControlError>;
    /// Whether a storage class of this name exists.
    async fn class_exists(&self, token: &str, class: &str) -> Result<bool, ControlError>;
    /// Room left for new volumes in `scope` (None: the token's own).
    async fn room(&self, token: &str, scope: Option<&str>) -> Result<Room, ControlError>;
    /// The client names of the sessions that have `volume` mounted now.
    async fn mounted_by(&self, token: &str, volume: &str) -> Result<Vec<String>, ControlError>;
}
