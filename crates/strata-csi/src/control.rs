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
    /// Make it a clone of `VOLUME` (as it is now) or `VOLUME@SNAPSHOT`: a writable copy
    /// sharing every block with its source.
    pub from: Option<String>,
}

/// A snapshot of a volume as the driver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Name, unique within its volume.
    pub name: String,
    /// The volume it is of.
    pub volume: String,
    /// When it was taken, seconds and nanoseconds since the Unix epoch.
    pub created: (i64, i32),
    /// Bytes the volume used when it was taken (what a volume made from it must hold).
    pub bytes: u64,
    /// Bytes only it holds (what deleting it frees).
    pub held_bytes: u64,
    /// What made it when not a user (`datavolume:NAME`, `clone:VOLUME`): not the driver's.
    pub owner: Option<String>,
}

/// A data volume as the driver sees it: a named, versioned, read-only dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataVolumeRecord {
    /// Unique name.
    pub name: String,
    /// Owning scope.
    pub scope: String,
    /// Versions `(number, bytes)`, oldest first.
    pub versions: Vec<(u32, u64)>,
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
    /// Takes a snapshot of `volume`; AlreadyExists if the volume has one of that name.
    async fn create_snapshot(&self, token: &str, volume: &str, name: &str) -> Result<SnapshotRecord, ControlError>;
    /// One snapshot, or None if the volume (as the token sees it) or the snapshot is absent.
    async fn get_snapshot(&self, token: &str, volume: &str, name: &str)
    -> Result<Option<SnapshotRecord>, ControlError>;
    /// The snapshots of `volume` (NotFound if absent), or of every volume the token can see.
    async fn list_snapshots(&self, token: &str, volume: Option<&str>) -> Result<Vec<SnapshotRecord>, ControlError>;
    /// Deletes a snapshot; NotFound if it or its volume is absent.
    async fn delete_snapshot(&self, token: &str, volume: &str, name: &str) -> Result<(), ControlError>;
    /// A data volume the token may read (owned by its scope or shared with it), or None.
    async fn get_datavolume(&self, token: &str, name: &str) -> Result<Option<DataVolumeRecord>, ControlError>;
    /// The client names of the sessions that have `volume` mounted now.
    async fn mounted_by(&self, token: &str, volume: &str) -> Result<Vec<String>, ControlError>;
}
