//! The control plane as one API with authorization: storage classes, volumes, scopes, tokens
//! and policies. The REST API and the admin gRPC service both call it, so every path applies the
//! same rules.
//!
//! Who may do what: a token acts in its scope and every scope below it. `admin` does
//! everything there (classes need a cluster admin); `editor` creates, grows and deletes volumes
//! and writes data; `viewer` lists and reads; `node` is what mounts use: data access only.
//!
//! Snapshots and clones follow their volume: whoever sees a volume lists and describes its
//! snapshots and may clone it (into a volume of its own scope, checked like any provisioning);
//! admins and editors of the volume's scope take and delete snapshots.
//!
//! Data volumes belong to an owning scope. Admins and editors of the owning scope (or above)
//! create them (from a volume within that scope), make new versions, and delete versions or
//! the whole data volume. **Sharing is a permission of its own**: only admins of the owning
//! scope (or above) share and unshare, since a share gives another scope's tokens read access.
//! A scope a data volume is shared with (and every scope below it) may list, describe and
//! mount it read-only, but never change, delete or re-share it (403). A scope that neither owns
//! it nor is shared it does not see it at all (404, as for other scopes' volumes).

use std::sync::Arc;

use strata_meta::control::{self, AccessMode, EffectivePolicy, Policy, Scope, StorageClass, VolumeRequest, within};
use strata_meta::tokens::{Role, TokenRecord};
use strata_meta::{DataVolume, MetaError, Reclaim, Snapshot, SnapshotSpace, Timespec, Usage, Volume};

use crate::state::State;

/// Why a control-plane call failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The caller's token may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// A policy refused the request (403, with the rule and scope).
    #[error("refused by the {rule} policy of scope {scope}: {message}")]
    Policy {
        /// The rule.
        rule: String,
        /// The scope that set it.
        scope: String,
        /// Explanation.
        message: String,
    },
    /// No such object (404).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or is in use (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or not possible (400).
    #[error("{0}")]
    Invalid(String),
    /// The server failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<MetaError> for ControlError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::PolicyDenied { rule, scope, message } => ControlError::Policy { rule, scope, message },
            MetaError::NotFound | MetaError::NoVolume(_) | MetaError::NoClass(_) | MetaError::NoScope(_) => {
                ControlError::NotFound(e.to_string())
            }
            MetaError::Exists | MetaError::VolumeExists(_) | MetaError::ClassExists(_) | MetaError::Busy(_) => {
                ControlError::Conflict(e.to_string())
            }
            MetaError::Invalid(_) | MetaError::NameTooLong | MetaError::Range | MetaError::TooBig => {
                ControlError::Invalid(e.to_string())
            }
            MetaError::Engine(_) | MetaError::Corrupt(_) => ControlError::Internal(e.to_string()),
            other => ControlError::Invalid(other.to_string()),
        }
    }
}

/// Result of control-plane calls.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// A volume with its use.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VolumeView {
    /// The volume.
    #[serde(flatten)]
    pub volume: Volume,
    /// What it uses.
    pub usage: Usage,
    /// Its own QoS limits per mount, `(bytes_per_sec, ops_per_sec)`, overriding its class's.
    pub qos: Option<(u64, u64)>,
}

/// A request to create a volume.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct CreateVolume {
    /// Name.
    pub name: String,
    /// Scope (default: the token's).
    #[serde(default)]
    pub scope: Option<String>,
    /// Class (default: per policy, else the default class).
    #[serde(default)]
    pub class: Option<String>,
    /// Capacity in bytes.
    #[serde(default)]
    pub capacity: u64,
    /// Inode quota.
    #[serde(default)]
    pub inodes: u64,
    /// Access mode.
    #[serde(default)]
    pub access_mode: Option<String>,
    /// Reclaim policy (`delete`, `retain`).
    #[serde(default)]
    pub reclaim: Option<String>,
    /// Make it a clone of `VOLUME` (as it is now) or `VOLUME@SNAPSHOT`; capacity, inode quota
    /// and class default to the source's.
    #[serde(default)]
    pub from: Option<String>,
}

/// A snapshot with what it holds.
#[derive(Clone, Debug)]
pub struct SnapshotView {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// The name of its volume.
    pub volume: String,
    /// Bytes it shares and bytes only it holds.
    pub space: SnapshotSpace,
}

/// How a caller comes to see a data volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataOrigin {
    /// The caller's scope (or one below it) owns it: the caller may manage it.
    Owned,
    /// It is usable in the caller's scope (shared with it or an ancestor, or owned by an
    /// ancestor): read-only.
    Shared,
}

/// A data volume as a caller sees it.
#[derive(Clone, Debug)]
pub struct DataVolumeView {
    /// The data volume (its shares narrowed to the caller's when it is only shared with it).
    pub datavolume: DataVolume,
    /// How the caller sees it.
    pub origin: DataOrigin,
}

/// A request to create a data volume.
#[derive(Clone, Debug, Default)]
pub struct CreateDataVolume {
    /// Name.
    pub name: String,
    /// Owning scope (default: the token's).
    pub scope: Option<String>,
    /// The volume its versions are snapshots of.
    pub source: String,
    /// Free text.
    pub description: String,
}

/// Splits `VOLUME` or `VOLUME@SNAPSHOT`.
pub fn split_source(from: &str) -> Result<(&str, Option<&str>)> {
    let (v, s) = match from.split_once('@') {
        Some((v, s)) => (v, Some(s)),
        None => (from, None),
    };
    if v.is_empty() || s.is_some_and(str::is_empty) {
        return Err(ControlError::Invalid(format!("clone source {from:?} is not VOLUME or VOLUME@SNAPSHOT")));
    }
    Ok((v, s))
}

/// A new token and its secret (shown once).
#[derive(Clone, Debug, serde::Serialize)]
pub struct IssuedToken {
    /// The secret to hand to the client.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub record: TokenRecord,
}

fn forbid(who: &TokenRecord, what: &str) -> ControlError {
    ControlError::Forbidden(format!("a {} token of scope {} may not {what}", role_name(who.role), who.scope))
}

/// The name of a role.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Editor => "editor",
        Role::Viewer => "viewer",
        Role::Node => "node",
    }
}

/// The role for its name.
pub fn parse_role(s: &str) -> Result<Role> {
    match s {
        "admin" => Ok(Role::Admin),
        "editor" => Ok(Role::Editor),
        "viewer" => Ok(Role::Viewer),
        "node" => Ok(Role::Node),
        _ => Err(ControlError::Invalid(format!("role {s:?} is not one of admin, editor, viewer, node"))),
    }
}

fn in_scope(who: &TokenRecord, scope: &str, what: &str) -> Result<()> {
    if within(scope, &who.scope) { Ok(()) } else { Err(forbid(who, &format!("{what} in scope {scope}"))) }
}

fn needs(who: &TokenRecord, roles: &[Role], what: &str) -> Result<()> {
    if roles.contains(&who.role) { Ok(()) } else { Err(forbid(who, what)) }
}

/// Runs blocking metadata work off the runtime's workers.
async fn run<T: Send + 'static>(f: impl FnOnce() -> strata_meta::Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ControlError::Internal(e.to_string()))?.map_err(ControlError::from)
}

/// The control plane over a server's state.
#[derive(Clone)]
pub struct Control {
    st: Arc<State>,
}

impl Control {
    /// The control plane of a server.
    pub fn new(st: Arc<State>) -> Self {
        Control { st }
    }

    /// The caller a bearer token stands for.
    pub fn authenticate(&self, secret: &str) -> Result<TokenRecord, tonic::Status> {
        self.st.auth.principal(secret).map(|p| p.0)
    }

    // ---- storage classes ----

    /// Every class (anyone may list them).
    pub async fn list_classes(&self, _who: &TokenRecord) -> Result<Vec<StorageClass>> {
        let meta = self.st.meta.clone();
        run(move || meta.list_classes()).await
    }

    /// One class.
    pub async fn get_class(&self, _who: &TokenRecord, name: &str) -> Result<StorageClass> {
        let (meta, name) = (self.st.meta.clone(), name.to_string());
        run(move || meta.class(&name)).await
    }

    /// Creates a class (cluster admins).
    pub async fn create_class(&self, who: &TokenRecord, class: StorageClass) -> Result<StorageClass> {
        self.cluster_admin(who, "create storage classes")?;
        let meta = self.st.meta.clone();
        let c = run(move || meta.create_class(&class)).await?;
        tracing::info!(class = %c.name, "storage class created");
        Ok(c)
    }

    /// Replaces a class (cluster admins).
    pub async fn update_class(&self, who: &TokenRecord, class: StorageClass) -> Result<StorageClass> {
        self.cluster_admin(who, "change storage classes")?;
        let meta = self.st.meta.clone();
        let c = run(move || meta.update_class(&class)).await?;
        tracing::info!(class = %c.name, "storage class updated");
        Ok(c)
    }

    /// Deletes an unused class (cluster admins).
    pub async fn delete_class(&self, who: &TokenRecord, name: &str) -> Result<StorageClass> {
        self.cluster_admin(who, "delete storage classes")?;
        let (meta, name) = (self.st.meta.clone(), name.to_string());
        let c = run(move || meta.delete_class(&name)).await?;
        tracing::info!(class = %c.name, "storage class deleted");
        Ok(c)
    }

    fn cluster_admin(&self, who: &TokenRecord, what: &str) -> Result<()> {
        if who.role == Role::Admin && who.scope == control::CLUSTER { Ok(()) } else { Err(forbid(who, what)) }
    }

    // ---- volumes ----

    /// Volumes in the caller's scope and below.
    pub async fn list_volumes(&self, who: &TokenRecord) -> Result<Vec<VolumeView>> {
        let (meta, scope) = (self.st.meta.clone(), who.scope.clone());
        run(move || {
            let mut out = Vec::new();
            for (volume, usage) in meta.list_volumes()? {
                if within(&volume.scope, &scope) {
                    let qos = meta.volume_qos(volume.id)?;
                    out.push(VolumeView { volume, usage, qos });
                }
            }
            Ok(out)
        })
        .await
    }

    /// One volume the caller may see.
    pub async fn get_volume(&self, who: &TokenRecord, name: &str) -> Result<VolumeView> {
        let (meta, n) = (self.st.meta.clone(), name.to_string());
        let (volume, usage, qos) = run(move || {
            let v = meta.volume(&n)?;
            let u = meta.usage(v.id)?;
            let q = meta.volume_qos(v.id)?;
            Ok((v, u, q))
        })
        .await?;
        if !within(&volume.scope, &who.scope) {
            // Volumes of other scopes are not even acknowledged.
            return Err(ControlError::NotFound(format!("volume {name:?} not found")));
        }
        Ok(VolumeView { volume, usage, qos })
    }

    /// Creates a volume where the caller may and the policies allow; with `from`, a clone of
    /// a volume the caller sees (as it is now, or as one of its snapshots saw it), sharing
    /// every block with it.
    pub async fn create_volume(&self, who: &TokenRecord, req: CreateVolume) -> Result<VolumeView> {
        needs(who, &[Role::Admin, Role::Editor], "create volumes")?;
        let scope = req.scope.clone().unwrap_or_else(|| who.scope.clone());
        in_scope(who, &scope, "create volumes")?;
        let access_mode =
            req.access_mode.as_deref().map(AccessMode::parse).transpose().map_err(strata_meta::MetaError::from)?;
        let reclaim = match req.reclaim.as_deref() {
            None => None,
            Some("delete") => Some(Reclaim::Delete),
            Some("retain") => Some(Reclaim::Retain),
            Some(other) => {
                return Err(ControlError::Invalid(format!("reclaim must be delete or retain, not {other:?}")));
            }
        };
        // A clone's source: a volume the caller sees (404 otherwise), and its defaults.
        let source = match req.from.as_deref() {
            None => None,
            Some(from) => {
                let (vol, snap) = split_source(from)?;
                let src = self.get_volume(who, vol).await?.volume;
                Some((src, snap.map(str::to_string)))
            }
        };
        let (mut class, mut capacity, mut inode_limit) = (req.class, req.capacity, req.inodes);
        if let Some((src, _)) = &source {
            class = class.or_else(|| Some(src.class.clone()));
            if capacity == 0 {
                capacity = src.capacity;
            }
            if inode_limit == 0 {
                inode_limit = src.inode_limit;
            }
        }
        let vr = VolumeRequest {
            name: req.name,
            scope,
            class,
            capacity,
            inode_limit,
            access_mode,
            reclaim,
            default_store: self.st.default_store.clone(),
        };
        let meta = self.st.meta.clone();
        let clone = source.as_ref().map(|(src, snap)| (src.name.clone(), snap.clone()));
        let (volume, usage) = run(move || {
            let mut v = meta.provision_volume(&vr)?;
            if let Some((src, snap)) = clone {
                v = match meta.clone_volume(&v.name, &src, snap.as_deref()) {
                    Ok(v) => v,
                    Err(MetaError::Quota) => {
                        // Say what did not fit: the snapshot's size against the clone's quotas.
                        let (bytes, inodes) = match snap.as_deref() {
                            Some(s) => meta.snapshot(&src, s).map(|s| (s.bytes, s.inodes))?,
                            None => meta.volume(&src).and_then(|s| meta.usage(s.id)).map(|u| (u.bytes, u.inodes))?,
                        };
                        let what = snap.map(|s| format!("{src}@{s}")).unwrap_or(src);
                        return Err(MetaError::Invalid(format!(
                            "the clone's quota cannot hold {what}: it uses {bytes} bytes and {inodes} inodes, \
                             the clone would have capacity {} and inode limit {} (0: none); give a larger --capacity",
                            vr.capacity, vr.inode_limit
                        )));
                    }
                    Err(e) => return Err(e),
                };
            }
            let u = meta.usage(v.id)?;
            Ok((v, u))
        })
        .await?;
        match &source {
            Some((src, snap)) => tracing::info!(
                volume = %volume.name, scope = %volume.scope, class = %volume.class, source = %src.name,
                snapshot = snap.as_deref().unwrap_or("(now)"), "volume cloned"
            ),
            None => {
                tracing::info!(volume = %volume.name, scope = %volume.scope, class = %volume.class, "volume created")
            }
        }
        Ok(VolumeView { volume, usage, qos: None })
    }

    /// Grows (or shrinks, not below use) a volume.
    pub async fn resize_volume(&self, who: &TokenRecord, name: &str, capacity: u64) -> Result<VolumeView> {
        needs(who, &[Role::Admin, Role::Editor], "resize volumes")?;
        self.get_volume(who, name).await?;
        let (meta, n) = (self.st.meta.clone(), name.to_string());
        let (volume, usage, qos) = run(move || {
            let v = meta.resize_volume(&n, capacity)?;
            let u = meta.usage(v.id)?;
            let q = meta.volume_qos(v.id)?;
            Ok((v, u, q))
        })
        .await?;
        tracing::info!(volume = %volume.name, capacity, "volume resized");
        Ok(VolumeView { volume, usage, qos })
    }

    /// Sets (`Some((bytes_per_sec, ops_per_sec))`, 0 = unlimited) or clears (`None`: back to
    /// the class's) a volume's own QoS limits per mount. Mounts take the change up with their
    /// next heartbeat.
    pub async fn set_volume_qos(&self, who: &TokenRecord, name: &str, qos: Option<(u64, u64)>) -> Result<VolumeView> {
        needs(who, &[Role::Admin, Role::Editor], "change the QoS of volumes")?;
        self.get_volume(who, name).await?;
        let (meta, n) = (self.st.meta.clone(), name.to_string());
        let (volume, usage, qos) = run(move || {
            let v = meta.set_volume_qos(&n, qos)?;
            let u = meta.usage(v.id)?;
            let q = meta.volume_qos(v.id)?;
            Ok((v, u, q))
        })
        .await?;
        match qos {
            Some((bytes_per_sec, ops_per_sec)) => {
                tracing::info!(volume = %volume.name, bytes_per_sec, ops_per_sec, "volume QoS set")
            }
            None => tracing::info!(volume = %volume.name, "volume QoS cleared: the class's applies"),
        }
        Ok(VolumeView { volume, usage, qos })
    }

    /// Deletes a volume nobody has mounted; its reclaim policy decides what happens to data.
    pub async fn delete_volume(&self, who: &TokenRecord, name: &str) -> Result<Volume> {
        needs(who, &[Role::Admin, Role::Editor], "delete volumes")?;
        self.get_volume(who, name).await?;
        if self.st.sessions().await?.iter().any(|s| s.volume_name == name) {
            return Err(ControlError::Conflict(format!(
                "volume {name} is mounted; unmount it everywhere first (see `strata status`)"
            )));
        }
        let (meta, n) = (self.st.meta.clone(), name.to_string());
        let v = run(move || meta.delete_volume(&n)).await?;
        self.st.forget_volume(v.id);
        tracing::info!(volume = %v.name, "volume deleted");
        Ok(v)
    }

    // ---- snapshots ----

    /// The snapshots of a volume the caller sees (owned ones too: data volumes' versions and
    /// clones' temporary snapshots), oldest first, with what each holds.
    pub async fn list_snapshots(&self, who: &TokenRecord, volume: &str) -> Result<Vec<SnapshotView>> {
        let v = self.get_volume(who, volume).await?.volume;
        let meta = self.st.meta.clone();
        run(move || {
            let mut out = Vec::new();
            for s in meta.list_snapshots(&v.name)? {
                if s.deleting {
                    continue;
                }
                let space = meta.snapshot_space(&s)?;
                out.push(SnapshotView { snapshot: s, volume: v.name.clone(), space });
            }
            Ok(out)
        })
        .await
    }

    /// One snapshot of a volume the caller sees.
    pub async fn get_snapshot(&self, who: &TokenRecord, volume: &str, name: &str) -> Result<SnapshotView> {
        let v = self.get_volume(who, volume).await?.volume;
        let (meta, n) = (self.st.meta.clone(), name.to_string());
        run(move || {
            let s = meta.snapshot(&v.name, &n)?;
            let space = meta.snapshot_space(&s)?;
            Ok(SnapshotView { snapshot: s, volume: v.name, space })
        })
        .await
        .map_err(|e| match e {
            ControlError::NotFound(_) => ControlError::NotFound(format!("snapshot {volume}@{name} not found")),
            other => other,
        })
    }

    /// Takes a snapshot of a volume (admins and editors of its scope): constant time, whatever
    /// the volume holds. Mount it read-only as `VOLUME@SNAPSHOT`.
    pub async fn create_snapshot(&self, who: &TokenRecord, volume: &str, name: &str) -> Result<SnapshotView> {
        let v = self.get_volume(who, volume).await?.volume;
        needs(who, &[Role::Admin, Role::Editor], "take snapshots")?;
        let (meta, n) = (self.st.meta.clone(), name.to_string());
        let vol = v.name.clone();
        let s = run(move || meta.create_snapshot(&vol, &n, None)).await.map_err(|e| match e {
            ControlError::Conflict(m) if m.contains("exists") => {
                ControlError::Conflict(format!("volume {volume} already has a snapshot named {name}"))
            }
            other => other,
        })?;
        tracing::info!(volume = %v.name, snapshot = %s.name, bytes = s.bytes, "snapshot taken");
        // Nothing is held only by a snapshot taken this instant.
        Ok(SnapshotView { space: SnapshotSpace { shared_bytes: s.bytes, held_bytes: 0 }, snapshot: s, volume: v.name })
    }

    /// Deletes a snapshot (admins and editors of the volume's scope); returns it as it was,
    /// with what it held (what deleting it frees). Snapshots owned by a data volume or a clone
    /// are refused (409): delete them through their owner.
    pub async fn delete_snapshot(&self, who: &TokenRecord, volume: &str, name: &str) -> Result<SnapshotView> {
        let view = self.get_snapshot(who, volume, name).await?;
        needs(who, &[Role::Admin, Role::Editor], "delete snapshots")?;
        if let Some(owner) = &view.snapshot.owner {
            return Err(ControlError::Conflict(format!(
                "snapshot {volume}@{name} belongs to {owner}; delete it through its owner"
            )));
        }
        let label = format!("{}@{name}", view.volume);
        if self.st.sessions().await?.iter().any(|s| s.volume_name == label) {
            return Err(ControlError::Conflict(format!(
                "snapshot {label} is mounted; unmount it everywhere first (see `strata status`)"
            )));
        }
        let (meta, v, n) = (self.st.meta.clone(), view.volume.clone(), name.to_string());
        run(move || meta.delete_snapshot(&v, &n, None)).await?;
        tracing::info!(volume = %view.volume, snapshot = %name, held_bytes = view.space.held_bytes, "snapshot deleted");
        Ok(view)
    }

    // ---- data volumes ----

    /// How `who` sees data volume `d`, if at all.
    fn datavolume_origin(who: &TokenRecord, d: &DataVolume) -> Option<DataOrigin> {
        if within(&d.scope, &who.scope) {
            Some(DataOrigin::Owned)
        } else if d.readable_by(&who.scope) {
            Some(DataOrigin::Shared)
        } else {
            None
        }
    }

    fn datavolume_view(who: &TokenRecord, mut d: DataVolume) -> Option<DataVolumeView> {
        let origin = Self::datavolume_origin(who, &d)?;
        if origin == DataOrigin::Shared {
            // Other scopes it is shared with are the owner's business.
            d.shares.retain(|s| within(&who.scope, s));
        }
        Some(DataVolumeView { datavolume: d, origin })
    }

    fn no_datavolume(name: &str) -> ControlError {
        ControlError::NotFound(format!("data volume {name:?} not found"))
    }

    /// A data volume the caller sees (404 otherwise).
    async fn load_datavolume(&self, who: &TokenRecord, name: &str) -> Result<(DataVolume, DataOrigin)> {
        let (meta, n) = (self.st.meta.clone(), name.to_string());
        let d = run(move || meta.datavolume(&n)).await.map_err(|e| match e {
            ControlError::NotFound(_) => Self::no_datavolume(name),
            other => other,
        })?;
        let origin = Self::datavolume_origin(who, &d).ok_or_else(|| Self::no_datavolume(name))?;
        Ok((d, origin))
    }

    /// A data volume the caller may change: it sees it, its scope owns it and its role is one
    /// of `roles`.
    async fn owned_datavolume(&self, who: &TokenRecord, name: &str, roles: &[Role], what: &str) -> Result<DataVolume> {
        let (d, origin) = self.load_datavolume(who, name).await?;
        if origin != DataOrigin::Owned {
            return Err(ControlError::Forbidden(format!(
                "data volume {name} is owned by scope {}; a scope it is shared with may only read it (not {what})",
                d.scope
            )));
        }
        needs(who, roles, &format!("{what} data volumes"))?;
        Ok(d)
    }

    /// Data volumes the caller's scope originated (owned by it or below) and those usable in
    /// it (shared with it or an ancestor, or owned by an ancestor), by name.
    pub async fn list_datavolumes(&self, who: &TokenRecord) -> Result<Vec<DataVolumeView>> {
        let meta = self.st.meta.clone();
        let all = run(move || meta.list_datavolumes()).await?;
        Ok(all.into_iter().filter_map(|d| Self::datavolume_view(who, d)).collect())
    }

    /// One data volume the caller sees.
    pub async fn get_datavolume(&self, who: &TokenRecord, name: &str) -> Result<DataVolumeView> {
        let (d, _) = self.load_datavolume(who, name).await?;
        Self::datavolume_view(who, d).ok_or_else(|| Self::no_datavolume(name))
    }

    /// Makes a data volume from a volume (version 1) for an owning scope the caller may edit
    /// (admins and editors); the source volume must lie within the owning scope.
    pub async fn create_datavolume(&self, who: &TokenRecord, req: CreateDataVolume) -> Result<DataVolumeView> {
        needs(who, &[Role::Admin, Role::Editor], "create data volumes")?;
        let scope = req.scope.clone().unwrap_or_else(|| who.scope.clone());
        control::validate_scope(&scope)?;
        in_scope(who, &scope, "create data volumes")?;
        let src = self.get_volume(who, &req.source).await?.volume;
        if !within(&src.scope, &scope) {
            return Err(ControlError::Invalid(format!(
                "volume {} is in scope {}, outside scope {scope} that would own the data volume",
                src.name, src.scope
            )));
        }
        let meta = self.st.meta.clone();
        let req_name = req.name.clone();
        let (name, source, description, owner) = (req.name, src.name, req.description, scope);
        let d = run(move || {
            meta.scope(&owner)?;
            meta.create_datavolume(&name, &owner, &source, &description)
        })
        .await
        .map_err(|e| match e {
            ControlError::Conflict(m) if m.contains("already exists") => {
                ControlError::Conflict(format!("a data volume named {} already exists", req_name))
            }
            other => other,
        })?;
        tracing::info!(datavolume = %d.name, scope = %d.scope, source = %d.volume_name, "data volume created");
        Ok(DataVolumeView { datavolume: d, origin: DataOrigin::Owned })
    }

    /// Makes a new version from the source volume as it is now (admins and editors of the
    /// owning scope).
    pub async fn update_datavolume(&self, who: &TokenRecord, name: &str) -> Result<DataVolumeView> {
        let d = self.owned_datavolume(who, name, &[Role::Admin, Role::Editor], "update").await?;
        let meta = self.st.meta.clone();
        let d = run(move || meta.update_datavolume(&d.name)).await?;
        let n = d.versions.last().map(|v| v.number).unwrap_or(0);
        tracing::info!(datavolume = %d.name, version = n, "data volume version made");
        Ok(DataVolumeView { datavolume: d, origin: DataOrigin::Owned })
    }

    /// Deletes one version (admins and editors of the owning scope); mounts of it fail from
    /// their next call.
    pub async fn delete_datavolume_version(&self, who: &TokenRecord, name: &str, n: u32) -> Result<DataVolumeView> {
        let d = self.owned_datavolume(who, name, &[Role::Admin, Role::Editor], "delete versions of").await?;
        d.version(Some(n)).map_err(|_| ControlError::NotFound(format!("data volume {name} has no version {n}")))?;
        let meta = self.st.meta.clone();
        let d = run(move || meta.delete_datavolume_version(&d.name, n)).await?;
        tracing::info!(datavolume = %d.name, version = n, "data volume version deleted");
        Ok(DataVolumeView { datavolume: d, origin: DataOrigin::Owned })
    }

    /// Deletes a data volume with every version (admins and editors of the owning scope).
    pub async fn delete_datavolume(&self, who: &TokenRecord, name: &str) -> Result<DataVolumeView> {
        let d = self.owned_datavolume(who, name, &[Role::Admin, Role::Editor], "delete").await?;
        let meta = self.st.meta.clone();
        let d = run(move || meta.delete_datavolume(&d.name)).await?;
        tracing::info!(datavolume = %d.name, "data volume deleted");
        Ok(DataVolumeView { datavolume: d, origin: DataOrigin::Owned })
    }

    /// Shares a data volume with a scope and everything below it (admins of the owning scope).
    pub async fn share_datavolume(&self, who: &TokenRecord, name: &str, scope: &str) -> Result<DataVolumeView> {
        control::validate_scope(scope)?;
        let d = self.owned_datavolume(who, name, &[Role::Admin], "share").await?;
        let (meta, s) = (self.st.meta.clone(), scope.to_string());
        let d = run(move || meta.share_datavolume(&d.name, &s)).await?;
        tracing::info!(datavolume = %d.name, scope, "data volume shared");
        Ok(DataVolumeView { datavolume: d, origin: DataOrigin::Owned })
    }

    /// Ends a share (admins of the owning scope); mounts through it fail from their next call.
    pub async fn unshare_datavolume(&self, who: &TokenRecord, name: &str, scope: &str) -> Result<DataVolumeView> {
        control::validate_scope(scope)?;
        let d = self.owned_datavolume(who, name, &[Role::Admin], "unshare").await?;
        if !d.shares.iter().any(|s| s == scope) {
            return Err(ControlError::NotFound(format!("data volume {name} is not shared with scope {scope}")));
        }
        let (meta, s) = (self.st.meta.clone(), scope.to_string());
        let d = run(move || meta.unshare_datavolume(&d.name, &s)).await?;
        tracing::info!(datavolume = %d.name, scope, "data volume unshared");
        Ok(DataVolumeView { datavolume: d, origin: DataOrigin::Owned })
    }

    // ---- scopes ----

    /// Scopes the caller may see: its own and those below.
    pub async fn list_scopes(&self, who: &TokenRecord) -> Result<Vec<Scope>> {
        let meta = self.st.meta.clone();
        let mut all = run(move || meta.list_scopes()).await?;
        all.retain(|s| within(&s.path, &who.scope));
        if who.scope == control::CLUSTER {
            let meta = self.st.meta.clone();
            all.insert(0, run(move || meta.scope(control::CLUSTER)).await?);
        }
        Ok(all)
    }

    /// Creates a scope below one the caller administers.
    pub async fn create_scope(&self, who: &TokenRecord, path: &str, description: &str) -> Result<Scope> {
        needs(who, &[Role::Admin], "create scopes")?;
        let parent = control::parent(path).unwrap_or(control::CLUSTER);
        in_scope(who, parent, "create scopes")?;
        let (meta, p, d) = (self.st.meta.clone(), path.to_string(), description.to_string());
        let s = run(move || meta.create_scope(&p, &d)).await.map_err(|e| match e {
            ControlError::Conflict(_) => ControlError::Conflict(format!("scope {path} exists")),
            other => other,
        })?;
        tracing::info!(scope = %s.path, "scope created");
        Ok(s)
    }

    /// Deletes an empty scope below one the caller administers.
    pub async fn delete_scope(&self, who: &TokenRecord, path: &str) -> Result<Scope> {
        needs(who, &[Role::Admin], "delete scopes")?;
        if path == who.scope {
            return Err(forbid(who, "delete its own scope"));
        }
        in_scope(who, path, "delete scopes")?;
        let (meta, p) = (self.st.meta.clone(), path.to_string());
        run(move || meta.delete_scope(&p)).await
    }

    // ---- tokens ----

    /// Tokens of the caller's scope and below (admins).
    pub async fn list_tokens(&self, who: &TokenRecord) -> Result<Vec<TokenRecord>> {
        needs(who, &[Role::Admin], "list tokens")?;
        let meta = self.st.meta.clone();
        let mut all = run(move || meta.list_tokens()).await?;
        all.retain(|t| within(&t.scope, &who.scope));
        all.sort_by(|a, b| a.scope.cmp(&b.scope).then(a.name.cmp(&b.name)));
        Ok(all)
    }

    /// Issues a token for a scope the caller administers.
    pub async fn create_token(
        &self,
        who: &TokenRecord,
        name: &str,
        role: Role,
        scope: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<IssuedToken> {
        needs(who, &[Role::Admin], "issue tokens")?;
        in_scope(who, scope, "issue tokens")?;
        if name.is_empty() || name.len() > 253 {
            return Err(ControlError::Invalid("token names are 1 to 253 characters".into()));
        }
        let expires = ttl.map(|d| {
            let now = Timespec::now();
            Timespec { sec: now.sec.saturating_add(d.as_secs() as i64), nsec: now.nsec }
        });
        let (meta, n, s) = (self.st.meta.clone(), name.to_string(), scope.to_string());
        let (token, record) = run(move || {
            meta.scope(&s)?;
            meta.create_token(&n, role, &s, expires)
        })
        .await?;
        tracing::info!(token = %record.id, scope = %record.scope, role = role_name(role), "token issued");
        Ok(IssuedToken { token, record })
    }

    /// Revokes a token of the caller's scope or below; it stops working at once.
    pub async fn revoke_token(&self, who: &TokenRecord, id: &str) -> Result<TokenRecord> {
        needs(who, &[Role::Admin], "revoke tokens")?;
        let meta = self.st.meta.clone();
        let all = run(move || meta.list_tokens()).await?;
        let t = all
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("token {id} not found")))?;
        in_scope(who, &t.scope, "revoke tokens")?;
        let (meta, i) = (self.st.meta.clone(), id.to_string());
        let rec = run(move || meta.revoke_token(&i)).await?;
        self.st.auth.settle_revocation().await;
        tracing::info!(token = %rec.id, "token revoked");
        Ok(rec)
    }

    // ---- policies ----

    fn may_read_policy(&self, who: &TokenRecord, scope: &str) -> Result<()> {
        // A scope's own chain (its ancestors) shapes what it may do, so it may read them.
        if within(scope, &who.scope) || within(&who.scope, scope) {
            Ok(())
        } else {
            Err(forbid(who, &format!("read the policy of scope {scope}")))
        }
    }

    /// A scope's own rules.
    pub async fn get_policy(&self, who: &TokenRecord, scope: &str) -> Result<Policy> {
        self.may_read_policy(who, scope)?;
        let (meta, s) = (self.st.meta.clone(), scope.to_string());
        run(move || meta.policy(&s)).await
    }

    /// The rules in force at a scope, with their sources.
    pub async fn effective_policy(&self, who: &TokenRecord, scope: &str) -> Result<EffectivePolicy> {
        self.may_read_policy(who, scope)?;
        let (meta, s) = (self.st.meta.clone(), scope.to_string());
        run(move || meta.effective_policy(&s)).await
    }

    /// Sets a scope's own rules (admins of that scope or above). Rules only ever narrow what
    /// the parent scopes allow, whoever sets them.
    pub async fn set_policy(&self, who: &TokenRecord, scope: &str, policy: Policy) -> Result<Policy> {
        needs(who, &[Role::Admin], "set policies")?;
        in_scope(who, scope, "set policies")?;
        let (meta, s) = (self.st.meta.clone(), scope.to_string());
        let p = run(move || meta.set_policy(&s, &policy)).await?;
        tracing::info!(scope, "policy set");
        Ok(p)
    }
}
