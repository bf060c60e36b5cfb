//! The REST API's request and response bodies. They are the API's own types (not the stored
//! records): requests reject unknown fields, times are RFC 3339 strings, and every type carries
//! its OpenAPI schema. The `strata` command deserializes responses into the same types.

use serde::{Deserialize, Serialize};
use strata_meta::control::{
    AccessMode, Backend, CachePolicy, Compression, EffectivePolicy, Policy, Qos, Scope, ScopeKind, StorageClass,
};
use strata_meta::tokens::{Role, TokenRecord};
use strata_meta::{Reclaim, Timespec, Usage, Volume};
use utoipa::ToSchema;

/// Largest byte size the API accepts (capacities, quotas, limits): 1 EiB.
pub const MAX_BYTES: u64 = 1 << 60;
/// Largest inode quota the API accepts.
pub const MAX_INODES: u64 = 1 << 48;
/// Longest token lifetime: 100 years.
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 86_400;
/// Longest free-text description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;

/// A time as RFC 3339 UTC (`2026-11-27T10:00:00Z`).
pub fn rfc3339(t: Timespec) -> String {
    let days = t.sec.div_euclid(86_400);
    let rem = t.sec.rem_euclid(86_400);
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ---- errors ----

/// Every error response: `{"error": {...}}`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's details.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct ErrorDetail {
    /// Machine-readable kind: `invalid`, `unauthenticated`, `forbidden`, `policy_denied`,
    /// `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `internal`.
    pub code: String,
    /// One line for a person.
    pub message: String,
    /// For `policy_denied`: the rule that refused (`allowed_classes`, `enforced_class`,
    /// `max_volume_size`, `quota`, `access_modes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For `policy_denied`: the scope whose policy set the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

// ---- shared enums ----

/// How a volume may be attached (the Kubernetes access modes).
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessModeName {
    /// Read-write by many nodes at once.
    ReadWriteMany,
    /// Read-only by many nodes.
    ReadOnlyMany,
    /// Read-write by one node.
    ReadWriteOnce,
}

impl From<AccessModeName> for AccessMode {
    fn from(m: AccessModeName) -> Self {
        match m {
            AccessModeName::ReadWriteMany => AccessMode::ReadWriteMany,
            AccessModeName::ReadOnlyMany => AccessMode::ReadOnlyMany,
            AccessModeName::ReadWriteOnce => AccessMode::ReadWriteOnce,
        }
    }
}

impl From<AccessMode> for AccessModeName {
    fn from(m: AccessMode) -> Self {
        match m {
            AccessMode::ReadWriteMany => AccessModeName::ReadWriteMany,
            AccessMode::ReadOnlyMany => AccessModeName::ReadOnlyMany,
            AccessMode::ReadWriteOnce => AccessModeName::ReadWriteOnce,
        }
    }
}

impl AccessModeName {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        AccessMode::from(self).as_str()
    }
}

/// What deleting a volume does to its data.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReclaimName {
    /// Delete metadata and blocks.
    #[default]
    Delete,
    /// Keep the data.
    Retain,
}

impl From<ReclaimName> for Reclaim {
    fn from(r: ReclaimName) -> Self {
        match r {
            ReclaimName::Delete => Reclaim::Delete,
            ReclaimName::Retain => Reclaim::Retain,
        }
    }
}

impl From<Reclaim> for ReclaimName {
    fn from(r: Reclaim) -> Self {
        match r {
            Reclaim::Delete => ReclaimName::Delete,
            Reclaim::Retain => ReclaimName::Retain,
        }
    }
}

impl ReclaimName {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReclaimName::Delete => "delete",
            ReclaimName::Retain => "retain",
        }
    }
}

/// Block compression.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    /// Stored as written.
    #[default]
    None,
    /// LZ4 (fast).
    Lz4,
    /// Zstandard (smaller).
    Zstd,
}

impl From<CompressionName> for Compression {
    fn from(c: CompressionName) -> Self {
        match c {
            CompressionName::None => Compression::None,
            CompressionName::Lz4 => Compression::Lz4,
            CompressionName::Zstd => Compression::Zstd,
        }
    }
}

impl From<Compression> for CompressionName {
    fn from(c: Compression) -> Self {
        match c {
            Compression::None => CompressionName::None,
            Compression::Lz4 => CompressionName::Lz4,
            Compression::Zstd => CompressionName::Zstd,
        }
    }
}

impl CompressionName {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        Compression::from(self).as_str()
    }
}

/// What a token may do in its scope.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Everything in its scope: scopes, tokens, policies, volumes.
    Admin,
    /// Create, grow and delete volumes; read and write data.
    Editor,
    /// List and read.
    Viewer,
    /// Mount clients: data access only.
    Node,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Admin => Role::Admin,
            RoleName::Editor => Role::Editor,
            RoleName::Viewer => Role::Viewer,
            RoleName::Node => Role::Node,
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => RoleName::Admin,
            Role::Editor => RoleName::Editor,
            Role::Viewer => RoleName::Viewer,
            Role::Node => RoleName::Node,
        }
    }
}

impl RoleName {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        crate::control::role_name(self.into())
    }
}

// ---- storage classes ----

/// Where a class keeps its blocks.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendSpec {
    /// A local or shared directory.
    Local {
        /// Absolute directory; absent or null: the server's own data directory.
        #[serde(default)]
        #[schema(max_length = 4096, pattern = r"^/")]
        path: Option<String>,
    },
    /// An S3-compatible bucket.
    S3 {
        /// Endpoint URL (empty for AWS).
        #[serde(default)]
        #[schema(max_length = 2048, pattern = r"^(https?://\S*)?$")]
        endpoint: String,
        /// Bucket (S3 naming rules).
        #[schema(min_length = 3, max_length = 63, pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")]
        bucket: String,
        /// Key prefix.
        #[serde(default)]
        #[schema(max_length = 1024)]
        prefix: String,
        /// Region.
        #[serde(default)]
        #[schema(max_length = 64, pattern = r"^[A-Za-z0-9-]*$")]
        region: String,
    },
}

impl Default for BackendSpec {
    fn default() -> Self {
        BackendSpec::Local { path: None }
    }
}

impl From<BackendSpec> for Backend {
    fn from(b: BackendSpec) -> Self {
        match b {
            BackendSpec::Local { path } => Backend::Local { path },
            BackendSpec::S3 { endpoint, bucket, prefix, region } => Backend::S3 { endpoint, bucket, prefix, region },
        }
    }
}

impl From<Backend> for BackendSpec {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Local { path } => BackendSpec::Local { path },
            Backend::S3 { endpoint, bucket, prefix, region } => BackendSpec::S3 { endpoint, bucket, prefix, region },
        }
    }
}

/// Client cache defaults of a class; 0 means the mount's own default.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Memory block cache, bytes.
    #[serde(default)]
    #[schema(maximum = 1152921504606846976_u64)]
    pub mem_bytes: u64,
    /// Largest read-ahead window, bytes.
    #[serde(default)]
    #[schema(maximum = 1152921504606846976_u64)]
    pub readahead_bytes: u64,
}

/// Per-mount limits of a class; 0 means unlimited.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct QosSpec {
    /// Data bytes per second (reads and writes together).
    #[serde(default)]
    #[schema(maximum = 1152921504606846976_u64)]
    pub bytes_per_sec: u64,
    /// Operations per second.
    #[serde(default)]
    #[schema(maximum = 1152921504606846976_u64)]
    pub ops_per_sec: u64,
}

/// A storage class: a named tier volumes are provisioned in.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct ClassView {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Where blocks live.
    pub backend: BackendSpec,
    /// Block size of new volumes, bytes.
    pub block_size: u32,
    /// Compression of new volumes' blocks.
    pub compression: CompressionName,
    /// Client cache defaults.
    pub cache: CacheSpec,
    /// Per-mount limits.
    pub qos: QosSpec,
    /// Default reclaim policy of its volumes.
    pub reclaim: ReclaimName,
    /// Access modes its volumes may have.
    pub access_modes: Vec<AccessModeName>,
    /// Whether its volumes may grow after creation.
    pub allow_expansion: bool,
    /// Whether it is used when a request names no class.
    pub is_default: bool,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created: String,
}

impl From<StorageClass> for ClassView {
    fn from(c: StorageClass) -> Self {
        ClassView {
            name: c.name,
            description: c.description,
            backend: c.backend.into(),
            block_size: c.block_size,
            compression: c.compression.into(),
            cache: CacheSpec { mem_bytes: c.cache.mem_bytes, readahead_bytes: c.cache.readahead_bytes },
            qos: QosSpec { bytes_per_sec: c.qos.bytes_per_sec, ops_per_sec: c.qos.ops_per_sec },
            reclaim: c.reclaim.into(),
            access_modes: c.access_modes.into_iter().map(Into::into).collect(),
            allow_expansion: c.allow_expansion,
            is_default: c.is_default,
            created: rfc3339(c.created),
        }
    }
}

/// A class's settings: the body of `PUT /v1/storageclasses/{name}` (a replacement: absent fields
/// take their defaults).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ClassSettings {
    /// Free text.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
    /// Where blocks live (default: the server's data directory).
    #[serde(default)]
    pub backend: BackendSpec,
    /// Block size of new volumes: a power of two from 64 KiB to 64 MiB (default 4 MiB).
    #[serde(default)]
    #[schema(minimum = 65536, maximum = 67108864)]
    pub block_size: Option<u32>,
    /// Compression of new volumes' blocks (default none).
    #[serde(default)]
    pub compression: CompressionName,
    /// Client cache defaults.
    #[serde(default)]
    pub cache: CacheSpec,
    /// Per-mount limits.
    #[serde(default)]
    pub qos: QosSpec,
    /// Default reclaim policy of its volumes (default delete).
    #[serde(default)]
    pub reclaim: ReclaimName,
    /// Access modes its volumes may have (default all).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 3)]
    pub access_modes: Option<Vec<AccessModeName>>,
    /// Whether its volumes may grow after creation (default true).
    #[serde(default)]
    pub allow_expansion: Option<bool>,
    /// Make it the default class (the previous default stops being it).
    #[serde(default)]
    pub is_default: bool,
}

/// A new class: the body of `POST /v1/storageclasses`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct NewClass {
    /// Unique name: letters, digits, '.', '_' and '-', starting with a letter or digit.
    #[schema(min_length = 1, max_length = 63, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
    /// Where blocks live (default: the server's data directory).
    #[serde(default)]
    pub backend: BackendSpec,
    /// Block size of new volumes: a power of two from 64 KiB to 64 MiB (default 4 MiB).
    #[serde(default)]
    #[schema(minimum = 65536, maximum = 67108864)]
    pub block_size: Option<u32>,
    /// Compression of new volumes' blocks (default none).
    #[serde(default)]
    pub compression: CompressionName,
    /// Client cache defaults.
    #[serde(default)]
    pub cache: CacheSpec,
    /// Per-mount limits.
    #[serde(default)]
    pub qos: QosSpec,
    /// Default reclaim policy of its volumes (default delete).
    #[serde(default)]
    pub reclaim: ReclaimName,
    /// Access modes its volumes may have (default all).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 3)]
    pub access_modes: Option<Vec<AccessModeName>>,
    /// Whether its volumes may grow after creation (default true).
    #[serde(default)]
    pub allow_expansion: Option<bool>,
    /// Make it the default class (the previous default stops being it).
    #[serde(default)]
    pub is_default: bool,
}

impl NewClass {
    /// The name and the settings.
    pub fn split(self) -> (String, ClassSettings) {
        let NewClass {
            name,
            description,
            backend,
            block_size,
            compression,
            cache,
            qos,
            reclaim,
            access_modes,
            allow_expansion,
            is_default,
        } = self;
        let s = ClassSettings {
            description,
            backend,
            block_size,
            compression,
            cache,
            qos,
            reclaim,
            access_modes,
            allow_expansion,
            is_default,
        };
        (name, s)
    }

    /// A request with a name and settings.
    pub fn join(name: String, s: ClassSettings) -> Self {
        NewClass {
            name,
            description: s.description,
            backend: s.backend,
            block_size: s.block_size,
            compression: s.compression,
            cache: s.cache,
            qos: s.qos,
            reclaim: s.reclaim,
            access_modes: s.access_modes,
            allow_expansion: s.allow_expansion,
            is_default: s.is_default,
        }
    }
}

impl ClassSettings {
    /// The settings of an existing class (for read-modify-write updates).
    pub fn of(c: &ClassView) -> Self {
        ClassSettings {
            description: c.description.clone(),
            backend: c.backend.clone(),
            block_size: Some(c.block_size),
            compression: c.compression,
            cache: c.cache,
            qos: c.qos,
            reclaim: c.reclaim,
            access_modes: Some(c.access_modes.clone()),
            allow_expansion: Some(c.allow_expansion),
            is_default: c.is_default,
        }
    }

    /// The stored class these settings describe.
    pub fn into_class(self, name: String) -> StorageClass {
        let mut modes: Vec<AccessMode> = match self.access_modes {
            Some(m) => m.into_iter().map(Into::into).collect(),
            None => AccessMode::ALL.to_vec(),
        };
        modes.sort();
        modes.dedup();
        StorageClass {
            name,
            description: self.description,
            backend: self.backend.into(),
            block_size: self.block_size.unwrap_or(strata_meta::DEFAULT_BLOCK_SIZE),
            compression: self.compression.into(),
            cache: CachePolicy { mem_bytes: self.cache.mem_bytes, readahead_bytes: self.cache.readahead_bytes },
            qos: Qos { bytes_per_sec: self.qos.bytes_per_sec, ops_per_sec: self.qos.ops_per_sec },
            reclaim: self.reclaim.into(),
            access_modes: modes,
            allow_expansion: self.allow_expansion.unwrap_or(true),
            is_default: self.is_default,
            created: Timespec::default(),
        }
    }
}

// ---- volumes ----

/// A volume with its use.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct VolumeView {
    /// Unique name.
    pub name: String,
    /// Numeric id.
    pub id: u32,
    /// Scope it belongs to.
    pub scope: String,
    /// Storage class.
    pub class: String,
    /// Byte quota; 0 means unlimited.
    pub capacity: u64,
    /// Inode quota; 0 means unlimited.
    pub inode_limit: u64,
    /// Bytes in use (file sizes rounded up to 4 KiB).
    pub used_bytes: u64,
    /// Inodes in use.
    pub used_inodes: u64,
    /// Block size of new data.
    pub block_size: u32,
    /// Compression of new blocks.
    pub compression: String,
    /// What deleting it does to its data.
    pub reclaim: ReclaimName,
    /// How it may be attached.
    pub access_mode: AccessModeName,
    /// Where its blocks live.
    pub store: String,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created: String,
    /// Its own QoS limits per mount, set with `PUT /v1/volumes/{name}/qos`; absent: its
    /// class's apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<QosSpec>,
}

impl VolumeView {
    /// The view of a volume, its use and its own QoS limits.
    pub fn with_qos(v: Volume, u: Usage, qos: Option<(u64, u64)>) -> Self {
        VolumeView {
            qos: qos.map(|(bytes_per_sec, ops_per_sec)| QosSpec { bytes_per_sec, ops_per_sec }),
            ..VolumeView::new(v, u)
        }
    }

    /// The view of a volume and its use.
    pub fn new(v: Volume, u: Usage) -> Self {
        VolumeView {
            name: v.name,
            id: v.id,
            scope: v.scope,
            class: v.class,
            capacity: v.capacity,
            inode_limit: v.inode_limit,
            used_bytes: u.bytes,
            used_inodes: u.inodes,
            block_size: v.block_size,
            compression: v.compression,
            reclaim: v.reclaim.into(),
            access_mode: v.access_mode.into(),
            store: v.store,
            created: rfc3339(v.created),
            qos: None,
        }
    }
}

/// A new volume: the body of `POST /v1/volumes`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct NewVolume {
    /// Unique name: letters, digits, '.', '_' and '-', starting with a letter or digit.
    #[schema(min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    /// Scope it belongs to (default: the token's).
    #[serde(default)]
    #[schema(max_length = 127)]
    pub scope: Option<String>,
    /// Storage class (default: the scope's enforced or default class, else the cluster's).
    #[serde(default)]
    #[schema(max_length = 63)]
    pub class: Option<String>,
    /// Byte quota; 0 or absent: none (refused where a policy sets a maximum size or quota).
    #[serde(default)]
    #[schema(maximum = 1152921504606846976_u64)]
    pub capacity: u64,
    /// Inode quota; 0 or absent: none.
    #[serde(default)]
    #[schema(maximum = 281474976710656_u64)]
    pub inodes: u64,
    /// Access mode (default ReadWriteMany).
    #[serde(default)]
    pub access_mode: Option<AccessModeName>,
    /// Reclaim policy (default: the class's).
    #[serde(default)]
    pub reclaim: Option<ReclaimName>,
    /// Make the volume a clone of `VOLUME` (as it is now) or `VOLUME@SNAPSHOT`: a writable copy
    /// sharing every block with the source (no data is copied). The caller must see the
    /// source; the clone's class must keep blocks in the source's store; capacity, inode quota
    /// and class default to the source's, and the quota must hold the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 507, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9][A-Za-z0-9._-]*)?$")]
    pub from: Option<String>,
}

/// A volume's new size: the body of `PATCH /v1/volumes/{name}`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumePatch {
    /// New byte quota; 0 means unlimited. Growing needs a class that allows expansion and room
    /// in every quota; shrinking below the bytes in use is refused.
    #[schema(maximum = 1152921504606846976_u64)]
    pub capacity: u64,
}

// ---- snapshots ----

/// A snapshot: a read-only, point-in-time view of a volume (mount it as `VOLUME@SNAPSHOT`).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotView {
    /// Name, unique within the volume.
    pub name: String,
    /// The volume it is of.
    pub volume: String,
    /// When it was taken.
    #[schema(format = DateTime)]
    pub created: String,
    /// Bytes the volume used when it was taken.
    pub bytes: u64,
    /// Inodes the volume used when it was taken.
    pub inodes: u64,
    /// Bytes of its data still shared with the live volume or another snapshot.
    pub shared_bytes: u64,
    /// Bytes only it holds: what deleting it frees. They count against the scope's quota.
    pub held_bytes: u64,
    /// What made it when not a user (`datavolume:NAME`, `clone:VOLUME`): deleted through
    /// its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl From<crate::control::SnapshotView> for SnapshotView {
    fn from(v: crate::control::SnapshotView) -> Self {
        SnapshotView {
            name: v.snapshot.name,
            volume: v.volume,
            created: rfc3339(v.snapshot.created),
            bytes: v.snapshot.bytes,
            inodes: v.snapshot.inodes,
            shared_bytes: v.space.shared_bytes,
            held_bytes: v.space.held_bytes,
            owner: v.snapshot.owner,
        }
    }
}

/// A new snapshot: the body of `POST /v1/volumes/{name}/snapshots`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewSnapshot {
    /// Name, unique within the volume: letters, digits, '.', '_' and '-', starting with a
    /// letter or digit.
    #[schema(min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
}

// ---- data volumes ----

/// How the caller's scope comes to see a data volume.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataOriginName {
    /// The caller's scope (or one below it) owns it: it may update, delete and (admins) share it.
    Owned,
    /// Shared with the caller's scope or an ancestor (or owned by an ancestor): it may list,
    /// describe and mount it read-only.
    Shared,
}

impl DataOriginName {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataOriginName::Owned => "owned",
            DataOriginName::Shared => "shared",
        }
    }
}

/// One version of a data volume (mount it as `dv:NAME@NUMBER`).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct DataVersionView {
    /// 1, 2, ... in the order they were made.
    pub number: u32,
    /// When it was made.
    #[schema(format = DateTime)]
    pub created: String,
    /// Bytes of its files.
    pub bytes: u64,
    /// Its inodes.
    pub inodes: u64,
}

/// A data volume: a named, read-only, versioned dataset made from a volume, owned by a scope
/// and shared with others.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct DataVolumeView {
    /// Unique name.
    pub name: String,
    /// The owning scope.
    pub scope: String,
    /// Whether the caller's scope owns it or it is shared with it.
    pub origin: DataOriginName,
    /// Free text.
    pub description: String,
    /// The volume its versions are taken from (it may since have been deleted; the versions
    /// remain).
    pub source_volume: String,
    /// Scopes it is shared with (for a scope it is only shared with: the shares that reach
    /// it).
    pub shares: Vec<String>,
    /// Versions, oldest first.
    pub versions: Vec<DataVersionView>,
    /// The latest version's number (what `dv:NAME` mounts); absent: no versions left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<u32>,
    /// When it was made.
    #[schema(format = DateTime)]
    pub created: String,
}

impl From<crate::control::DataVolumeView> for DataVolumeView {
    fn from(v: crate::control::DataVolumeView) -> Self {
        let d = v.datavolume;
        DataVolumeView {
            name: d.name,
            scope: d.scope,
            origin: match v.origin {
                crate::control::DataOrigin::Owned => DataOriginName::Owned,
                crate::control::DataOrigin::Shared => DataOriginName::Shared,
            },
            description: d.description,
            source_volume: d.volume_name,
            shares: d.shares,
            latest: d.versions.last().map(|x| x.number),
            versions: d
                .versions
                .into_iter()
                .map(|x| DataVersionView {
                    number: x.number,
                    created: rfc3339(x.created),
                    bytes: x.bytes,
                    inodes: x.inodes,
                })
                .collect(),
            created: rfc3339(d.created),
        }
    }
}

/// A new data volume: the body of `POST /v1/datavolumes`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewDataVolume {
    /// Unique name: letters, digits, '.', '_' and '-', starting with a letter or digit.
    #[schema(min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    /// The volume to make version 1 from (as it is now); it must lie within the owning scope.
    #[schema(min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub from: String,
    /// Owning scope (default: the token's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 127,
        pattern = r"^(cluster|[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?)$"
    )]
    pub scope: Option<String>,
    /// Free text.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
}

// ---- scopes ----

/// A scope: `cluster`, a department `DEPT`, or a project `DEPT/PROJECT`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct ScopeView {
    /// Path.
    pub path: String,
    /// Level: cluster, department or project.
    pub kind: ScopeKindName,
    /// Free text.
    pub description: String,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created: String,
}

/// The level of a scope.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKindName {
    /// The whole cluster.
    Cluster,
    /// A child of the cluster.
    Department,
    /// A child of a department.
    Project,
}

impl From<Scope> for ScopeView {
    fn from(s: Scope) -> Self {
        ScopeView {
            path: s.path,
            kind: match s.kind {
                ScopeKind::Cluster => ScopeKindName::Cluster,
                ScopeKind::Department => ScopeKindName::Department,
                ScopeKind::Project => ScopeKindName::Project,
            },
            description: s.description,
            created: rfc3339(s.created),
        }
    }
}

/// A new scope: the body of `POST /v1/scopes`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewScope {
    /// `DEPT` or `DEPT/PROJECT`; each part up to 63 letters, digits, '.', '_' or '-'.
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?$"
    )]
    pub path: String,
    /// Free text.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
}

// ---- tokens ----

/// A token (its secret is never shown again).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct TokenView {
    /// Public id, to revoke it by.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: RoleName,
    /// Scope it acts in (and below).
    pub scope: String,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created: String,
    /// Expiry; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires: Option<String>,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            role: t.role.into(),
            scope: t.scope,
            created: rfc3339(t.created),
            expires: t.expires.map(rfc3339),
        }
    }
}

impl TokenView {
    /// The view of a token just issued, without its secret.
    pub fn from_issued(t: &IssuedTokenView) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role,
            scope: t.scope.clone(),
            created: t.created.clone(),
            expires: t.expires.clone(),
        }
    }
}

/// A new token: the body of `POST /v1/tokens`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Name (1 to 253 characters).
    #[schema(min_length = 1, max_length = 253)]
    pub name: String,
    /// Role.
    pub role: RoleName,
    /// Scope it acts in (default: the caller's).
    #[serde(default)]
    #[schema(max_length = 127)]
    pub scope: Option<String>,
    /// Lifetime in seconds (at most 100 years); absent: it never expires.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3153600000_u64)]
    pub ttl_seconds: Option<u64>,
}

/// A token just issued, with its secret (shown once).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct IssuedTokenView {
    /// The secret: pass it as `Authorization: Bearer <token>` or `--token-file`.
    pub token: String,
    /// Public id, to revoke it by.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: RoleName,
    /// Scope it acts in.
    pub scope: String,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created: String,
    /// Expiry; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires: Option<String>,
}

impl IssuedTokenView {
    /// The view of a new token.
    pub fn new(token: String, t: TokenRecord) -> Self {
        let v = TokenView::from(t);
        IssuedTokenView {
            token,
            id: v.id,
            name: v.name,
            role: v.role,
            scope: v.scope,
            created: v.created,
            expires: v.expires,
        }
    }
}

// ---- policies ----

/// A scope's own rules; an absent (or null) rule is left to the parent scopes. As a `PUT` body
/// it replaces all of the scope's rules.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyRules {
    /// Classes volumes may be created in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 256)]
    pub allowed_classes: Option<Vec<String>>,
    /// Class used when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_class: Option<String>,
    /// The only class allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_class: Option<String>,
    /// Largest capacity of one volume, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1152921504606846976_u64)]
    pub max_volume_size: Option<u64>,
    /// Largest total capacity of the volumes in the scope and below, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 1152921504606846976_u64)]
    pub quota: Option<u64>,
    /// Access modes volumes may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 3)]
    pub access_modes: Option<Vec<AccessModeName>>,
}

impl From<Policy> for PolicyRules {
    fn from(p: Policy) -> Self {
        PolicyRules {
            allowed_classes: p.allowed_classes,
            default_class: p.default_class,
            enforced_class: p.enforced_class,
            max_volume_size: p.max_volume_size,
            quota: p.quota,
            access_modes: p.access_modes.map(|m| m.into_iter().map(Into::into).collect()),
        }
    }
}

impl From<PolicyRules> for Policy {
    fn from(p: PolicyRules) -> Self {
        Policy {
            allowed_classes: p.allowed_classes,
            default_class: p.default_class,
            enforced_class: p.enforced_class,
            max_volume_size: p.max_volume_size,
            quota: p.quota,
            access_modes: p.access_modes.map(|m| {
                let mut v: Vec<AccessMode> = m.into_iter().map(Into::into).collect();
                v.sort();
                v.dedup();
                v
            }),
        }
    }
}

/// A class list in force and the scope it comes from.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct SourcedNames {
    /// The value in force.
    pub value: Vec<String>,
    /// The scope that set it.
    pub from: String,
}

/// A class name in force and the scope it comes from.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct SourcedName {
    /// The value in force.
    pub value: String,
    /// The scope that set it.
    pub from: String,
}

/// A size in force and the scope it comes from.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct SourcedBytes {
    /// The value in force, bytes.
    pub value: u64,
    /// The scope that set it.
    pub from: String,
}

/// Access modes in force and the scope they come from.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct SourcedModes {
    /// The value in force.
    pub value: Vec<AccessModeName>,
    /// The scope that set it.
    pub from: String,
}

/// The rules in force at a scope: its own combined with every ancestor's (a scope only narrows
/// what its parents allow). An absent rule is not set anywhere along the chain.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct EffectivePolicyView {
    /// The scope.
    pub scope: String,
    /// Allowed classes (intersection along the chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_classes: Option<SourcedNames>,
    /// The enforced class (the topmost scope that enforces one wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_class: Option<SourcedName>,
    /// The default class (the nearest scope that sets one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_class: Option<SourcedName>,
    /// Smallest maximum volume size along the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_volume_size: Option<SourcedBytes>,
    /// Every quota along the chain (each is checked against its own subtree).
    pub quotas: Vec<SourcedBytes>,
    /// Allowed access modes (intersection along the chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_modes: Option<SourcedModes>,
}

impl From<EffectivePolicy> for EffectivePolicyView {
    fn from(e: EffectivePolicy) -> Self {
        EffectivePolicyView {
            scope: e.scope,
            allowed_classes: e.allowed_classes.map(|s| SourcedNames { value: s.value, from: s.from }),
            enforced_class: e.enforced_class.map(|s| SourcedName { value: s.value, from: s.from }),
            default_class: e.default_class.map(|s| SourcedName { value: s.value, from: s.from }),
            max_volume_size: e.max_volume_size.map(|s| SourcedBytes { value: s.value, from: s.from }),
            quotas: e.quotas.into_iter().map(|s| SourcedBytes { value: s.value, from: s.from }).collect(),
            access_modes: e
                .access_modes
                .map(|s| SourcedModes { value: s.value.into_iter().map(Into::into).collect(), from: s.from }),
        }
    }
}

// ---- status ----

/// What the server is doing.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// Server version.
    pub version: String,
    /// Metadata engine.
    pub engine: String,
    /// When the server started.
    #[schema(format = DateTime)]
    pub started: String,
    /// Connected clients, of the volumes the caller can see.
    pub sessions: Vec<SessionView>,
    /// Slices waiting for block deletion (cluster-scope tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_slices: Option<u64>,
    /// The server's data directory (cluster-scope tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// The servers using this metadata store (several on a shared PostgreSQL), with their last
    /// report (cluster-scope tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<ServerView>>,
}

/// A server of the metadata store.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct ServerView {
    /// Its listen address.
    pub addr: String,
    /// Its version.
    pub version: String,
    /// When it started.
    #[schema(format = DateTime)]
    pub started: String,
    /// Its last report (every 5 s while it runs).
    #[schema(format = DateTime)]
    pub last_seen: String,
    /// Seconds since its last report, as this server's clock sees it.
    pub silent_secs: u64,
    /// `up` (reported in the last 20 s), or `silent` (stopped without a clean shutdown, or
    /// cut off from the store).
    pub health: String,
}

/// A connected client.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// Session id (hex).
    pub id: String,
    /// Volume it mounted.
    pub volume: String,
    /// Host and mount point.
    pub client: String,
    /// When it mounted.
    #[schema(format = DateTime)]
    pub since: String,
    /// Its last heartbeat.
    #[schema(format = DateTime)]
    pub last_seen: String,
    /// The client's Strata version (empty when the client did not say).
    #[serde(default)]
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339(Timespec { sec: 0, nsec: 0 }), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(Timespec { sec: 951_782_400, nsec: 0 }), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(Timespec { sec: 1_798_761_599, nsec: 5 }), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(Timespec { sec: -1, nsec: 0 }), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<VolumePatch>(r#"{"capacity": 1, "x": 2}"#).is_err());
        assert!(serde_json::from_str::<BackendSpec>(r#"{"kind": "local", "bucket": "b"}"#).is_err());
        let b: BackendSpec = serde_json::from_str(r#"{"kind": "s3", "bucket": "b"}"#).expect("s3");
        assert_eq!(
            b,
            BackendSpec::S3 {
                endpoint: String::new(),
                bucket: "b".into(),
                prefix: String::new(),
                region: String::new()
            }
        );
    }
}
