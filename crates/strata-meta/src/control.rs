//! The control plane's records: scopes (cluster, departments, projects), storage classes and
//! policies, and the provisioning rules that combine them. Every check that decides whether a
//! volume may be created or grown runs in the same transaction as the change, so concurrent
//! requests cannot together exceed a quota.

use serde::{Deserialize, Serialize};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::types::{Reclaim, Timespec, Usage, Volume};

/// The root scope.
pub const CLUSTER: &str = "cluster";

/// What level of the hierarchy a scope is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    /// The whole cluster.
    Cluster,
    /// A department: a child of the cluster.
    Department,
    /// A project: a child of a department.
    Project,
}

/// A scope: volumes, tokens and policies belong to one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `cluster`, `DEPT` or `DEPT/PROJECT`.
    pub path: String,
    /// Its level.
    pub kind: ScopeKind,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Creation time.
    pub created: Timespec,
}

/// The scope a path names is `scope` itself or below it.
pub fn within(path: &str, scope: &str) -> bool {
    scope == CLUSTER || path == scope || (path.starts_with(scope) && path.as_bytes().get(scope.len()) == Some(&b'/'))
}

/// The parent of a scope (`None` for the cluster).
pub fn parent(path: &str) -> Option<&str> {
    if path == CLUSTER {
        return None;
    }
    Some(path.rsplit_once('/').map(|(p, _)| p).unwrap_or(CLUSTER))
}

/// The chain from the cluster down to `path`, inclusive.
pub fn chain(path: &str) -> Vec<String> {
    let mut out = vec![CLUSTER.to_string()];
    if path == CLUSTER {
        return out;
    }
    let mut acc = String::new();
    for part in path.split('/') {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        out.push(acc.clone());
    }
    out
}

/// Checks a scope path: `cluster`, `NAME` or `NAME/NAME`, names as for volumes.
pub fn validate_scope(path: &str) -> Result<ScopeKind> {
    if path == CLUSTER {
        return Ok(ScopeKind::Cluster);
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 2 {
        return Err(MetaError::Invalid(format!(
            "scope {path:?} is too deep: scopes are `cluster`, `DEPARTMENT` or `DEPARTMENT/PROJECT`"
        )));
    }
    for p in &parts {
        if *p == CLUSTER {
            return Err(MetaError::Invalid(format!("{CLUSTER:?} is reserved for the root scope")));
        }
        if p.len() > 63 {
            return Err(MetaError::Invalid(format!("scope name {p:?} is longer than 63 characters")));
        }
        crate::validate_name(p)?;
    }
    Ok(if parts.len() == 1 { ScopeKind::Department } else { ScopeKind::Project })
}

/// Largest value of a class's cache and QoS settings (2^60).
pub const MAX_SETTING: u64 = 1 << 60;

pub use strata_types::AccessMode;

/// Block compression of a class.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as written.
    #[default]
    None,
    /// LZ4 (fast).
    Lz4,
    /// Zstandard (smaller).
    Zstd,
}

impl Compression {
    /// The compression for its name.
    pub fn parse(s: &str) -> Result<Compression> {
        match s {
            "" | "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(MetaError::Invalid(format!("compression {s:?} is not one of none, lz4, zstd"))),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Where a class keeps its blocks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Backend {
    /// A local (or shared) directory; `None` is the server's own data directory.
    Local {
        /// Absolute directory.
        #[serde(default)]
        path: Option<String>,
    },
    /// An S3-compatible bucket.
    S3 {
        /// Endpoint URL (empty for AWS).
        #[serde(default)]
        endpoint: String,
        /// Bucket.
        bucket: String,
        /// Key prefix.
        #[serde(default)]
        prefix: String,
        /// Region.
        #[serde(default)]
        region: String,
    },
}

impl Backend {
    /// The block store URL for volume blocks of this backend.
    pub fn store_url(&self, server_default: &str) -> String {
        match self {
            Backend::Local { path: None } => server_default.to_string(),
            Backend::Local { path: Some(p) } => format!("file://{p}"),
            Backend::S3 { endpoint, bucket, prefix, region } => {
                let mut u = format!("s3://{bucket}/{}", prefix.trim_matches('/'));
                let mut q = Vec::new();
                if !endpoint.is_empty() {
                    q.push(format!("endpoint={endpoint}"));
                }
                if !region.is_empty() {
                    q.push(format!("region={region}"));
                }
                if !q.is_empty() {
                    u.push('?');
                    u.push_str(&q.join("&"));
                }
                u
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MetaError::Invalid(m));
        let printable = |s: &str| !s.chars().any(char::is_control);
        match self {
            Backend::Local { path: None } => Ok(()),
            Backend::Local { path: Some(p) } => {
                if !p.starts_with('/') || p.len() > 4096 || !printable(p) || p.split('/').any(|c| c == "..") {
                    return bad(format!("local backend path {p:?} must be absolute, without '..', at most 4096 bytes"));
                }
                Ok(())
            }
            Backend::S3 { endpoint, bucket, prefix, region } => {
                // S3's bucket naming rules, which every compatible store accepts.
                let b = bucket.as_bytes();
                let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
                if !(3..=63).contains(&b.len())
                    || !b.iter().all(|c| edge(c) || *c == b'.' || *c == b'-')
                    || !b.first().is_some_and(edge)
                    || !b.last().is_some_and(edge)
                {
                    return bad(format!(
                        "S3 bucket {bucket:?} must be 3 to 63 lowercase letters, digits, '.' or '-', \
                         starting and ending with a letter or digit"
                    ));
                }
                if !endpoint.is_empty()
                    && (!(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                        || endpoint.len() > 2048
                        || endpoint.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    return bad(format!("S3 endpoint {endpoint:?} must be an http:// or https:// URL"));
                }
                if prefix.len() > 1024 || !printable(prefix) {
                    return bad("S3 prefix must be at most 1024 bytes without control characters".into());
                }
                if region.len() > 64 || !region.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                    return bad(format!("S3 region {region:?} must be letters, digits and '-'"));
                }
                Ok(())
            }
        }
    }
}

/// Per-mount limits of a class; 0 means unlimited.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Qos {
    /// Data bytes per second (reads and writes together).
    #[serde(default)]
    pub bytes_per_sec: u64,
    /// Operations per second.
    #[serde(default)]
    pub ops_per_sec: u64,
}

/// Client cache defaults of a class; 0 means the mount's own defaults.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CachePolicy {
    /// Memory block cache.
    #[serde(default)]
    pub mem_bytes: u64,
    /// Largest read-ahead window.
    #[serde(default)]
    pub readahead_bytes: u64,
}

/// A storage class: a named tier volumes are provisioned in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StorageClass {
    /// Unique name.
    pub name: String,
    /// Free text shown in listings.
    #[serde(default)]
    pub description: String,
    /// Where blocks live.
    pub backend: Backend,
    /// Block size of new volumes.
    pub block_size: u32,
    /// Compression of new volumes' blocks.
    #[serde(default)]
    pub compression: Compression,
    /// Client cache defaults.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Per-mount limits.
    #[serde(default)]
    pub qos: Qos,
    /// What deleting a volume does to its data.
    #[serde(default)]
    pub reclaim: Reclaim,
    /// Access modes volumes of this class may have.
    pub access_modes: Vec<AccessMode>,
    /// Whether volumes may grow after creation.
    pub allow_expansion: bool,
    /// The class used when nobody says which.
    #[serde(default)]
    pub is_default: bool,
    /// Creation time.
    pub created: Timespec,
}

impl StorageClass {
    /// A class named `name` whose blocks are on the server's own disk, with every other setting
    /// at its default: uncompressed 4 MiB blocks, no QoS limit, deleted on reclaim, every access
    /// mode, expandable, not the default class.
    pub fn local(name: &str) -> StorageClass {
        StorageClass {
            name: name.into(),
            description: String::new(),
            backend: Backend::Local { path: None },
            block_size: crate::types::DEFAULT_BLOCK_SIZE,
            compression: Compression::None,
            cache: CachePolicy::default(),
            qos: Qos::default(),
            reclaim: Reclaim::Delete,
            access_modes: AccessMode::ALL.to_vec(),
            allow_expansion: true,
            is_default: false,
            created: Timespec::now(),
        }
    }

    /// Sets what this class prescribes for every client of a volume: QoS limits per mount and
    /// cache defaults.
    pub fn apply_client_settings(&self, v: &mut strata_types::VolumeInfo) {
        v.qos_bytes_per_sec = self.qos.bytes_per_sec;
        v.qos_ops_per_sec = self.qos.ops_per_sec;
        v.cache_mem_bytes = self.cache.mem_bytes;
        v.readahead_bytes = self.cache.readahead_bytes;
    }

    /// Checks the class's own fields.
    pub fn validate(&self) -> Result<()> {
        crate::validate_name(&self.name)?;
        if self.name.len() > 63 {
            return Err(MetaError::Invalid("class names are at most 63 characters".into()));
        }
        self.backend.validate()?;
        if !(64 * 1024..=64 << 20).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            return Err(MetaError::Invalid(format!(
                "block size {} must be a power of two between 64 KiB and 64 MiB",
                self.block_size
            )));
        }
        if self.access_modes.is_empty() {
            return Err(MetaError::Invalid("a class needs at least one access mode".into()));
        }
        let limits = [
            ("cache memory", self.cache.mem_bytes),
            ("read-ahead", self.cache.readahead_bytes),
            ("bandwidth limit", self.qos.bytes_per_sec),
            ("operations limit", self.qos.ops_per_sec),
        ];
        for (what, v) in limits {
            if v > MAX_SETTING {
                return Err(MetaError::Invalid(format!("{what} {v} is more than the largest allowed, {MAX_SETTING}")));
            }
        }
        Ok(())
    }
}

/// The rules a scope sets; `None` leaves a rule to the parent scope.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Policy {
    /// Classes volumes may be created in.
    #[serde(default)]
    pub allowed_classes: Option<Vec<String>>,
    /// Class used when the request names none.
    #[serde(default)]
    pub default_class: Option<String>,
    /// The only class allowed (requests naming another are refused).
    #[serde(default)]
    pub enforced_class: Option<String>,
    /// Largest capacity of one volume.
    #[serde(default)]
    pub max_volume_size: Option<u64>,
    /// Largest total capacity of all volumes in the scope and below.
    #[serde(default)]
    pub quota: Option<u64>,
    /// Access modes volumes may have.
    #[serde(default)]
    pub access_modes: Option<Vec<AccessMode>>,
}

/// A rule's value and the scope it comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value in force.
    pub value: T,
    /// The scope that set it (the nearest for defaults, the strictest for limits).
    pub from: String,
}

/// The policy in force at a scope: its own rules combined with every ancestor's. A scope can
/// only narrow what its parents allow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct EffectivePolicy {
    /// The scope.
    pub scope: String,
    /// Allowed classes (intersection along the chain); `None` means all.
    pub allowed_classes: Option<Sourced<Vec<String>>>,
    /// The enforced class (the topmost scope that enforces one wins).
    pub enforced_class: Option<Sourced<String>>,
    /// The default class (the nearest scope that sets one).
    pub default_class: Option<Sourced<String>>,
    /// Smallest maximum volume size along the chain.
    pub max_volume_size: Option<Sourced<u64>>,
    /// Every quota along the chain (each is checked against its own subtree).
    pub quotas: Vec<Sourced<u64>>,
    /// Allowed access modes (intersection along the chain); `None` means all.
    pub access_modes: Option<Sourced<Vec<AccessMode>>>,
}

/// A request to create a volume.
#[derive(Clone, Debug, Default)]
pub struct VolumeRequest {
    /// Volume name.
    pub name: String,
    /// Scope it belongs to.
    pub scope: String,
    /// Class asked for (may be refused or replaced by an enforced class).
    pub class: Option<String>,
    /// Capacity in bytes (0: none; refused where a maximum size applies).
    pub capacity: u64,
    /// Inode quota (0: none).
    pub inode_limit: u64,
    /// Access mode (default ReadWriteMany).
    pub access_mode: Option<AccessMode>,
    /// Reclaim policy (default: the class's).
    pub reclaim: Option<Reclaim>,
    /// Block store URL of the server's own data directory.
    pub default_store: String,
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| MetaError::Corrupt(e.to_string()))
}

fn unjson<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| MetaError::Corrupt(e.to_string()))
}

fn denied(rule: &str, scope: &str, message: String) -> MetaError {
    MetaError::PolicyDenied { rule: rule.to_string(), scope: scope.to_string(), message }
}

fn scan_json<T: serde::de::DeserializeOwned>(t: &mut dyn KvTxn, prefix: &[u8]) -> Result<Vec<T>> {
    t.scan(prefix, &prefix_end(prefix), usize::MAX)?.iter().map(|(_, v)| unjson(v)).collect()
}

fn load_class(t: &mut dyn KvTxn, name: &str) -> Result<StorageClass> {
    match t.get(&keys::class(name))? {
        Some(v) => unjson(&v),
        None => Err(MetaError::NoClass(name.to_string())),
    }
}

fn load_policy(t: &mut dyn KvTxn, scope: &str) -> Result<Policy> {
    match t.get(&keys::policy(scope))? {
        Some(v) => unjson(&v),
        None => Ok(Policy::default()),
    }
}

fn all_volumes(t: &mut dyn KvTxn) -> Result<Vec<Volume>> {
    scan_json(t, keys::VOLUME_PREFIX)
}

fn effective_in(t: &mut dyn KvTxn, scope: &str) -> Result<EffectivePolicy> {
    let mut e = EffectivePolicy { scope: scope.to_string(), ..Default::default() };
    for s in chain(scope) {
        let p = load_policy(t, &s)?;
        if let Some(list) = p.allowed_classes {
            e.allowed_classes = Some(match e.allowed_classes.take() {
                None => Sourced { value: list, from: s.clone() },
                Some(prev) => {
                    let inter: Vec<String> = prev.value.into_iter().filter(|c| list.contains(c)).collect();
                    Sourced { value: inter, from: s.clone() }
                }
            });
        }
        if let Some(c) = p.enforced_class
            && e.enforced_class.is_none()
        {
            e.enforced_class = Some(Sourced { value: c, from: s.clone() });
        }
        if let Some(c) = p.default_class {
            e.default_class = Some(Sourced { value: c, from: s.clone() });
        }
        if let Some(m) = p.max_volume_size
            && e.max_volume_size.as_ref().is_none_or(|cur| m < cur.value)
        {
            e.max_volume_size = Some(Sourced { value: m, from: s.clone() });
        }
        if let Some(q) = p.quota {
            e.quotas.push(Sourced { value: q, from: s.clone() });
        }
        if let Some(modes) = p.access_modes {
            e.access_modes = Some(match e.access_modes.take() {
                None => Sourced { value: modes, from: s.clone() },
                Some(prev) => {
                    let inter: Vec<AccessMode> = prev.value.into_iter().filter(|m| modes.contains(m)).collect();
                    Sourced { value: inter, from: s.clone() }
                }
            });
        }
    }
    Ok(e)
}

/// The topmost scope on `scope`'s chain whose own policy `refuses`: the one a refusal names,
/// since narrowing below it changes nothing.
fn first_refusing(t: &mut dyn KvTxn, scope: &str, refuses: impl Fn(&Policy) -> bool) -> Result<Option<String>> {
    for s in chain(scope) {
        if refuses(&load_policy(t, &s)?) {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Total capacity of the volumes in `scope` and below (uncapped volumes count their use).
fn provisioned(t: &mut dyn KvTxn, scope: &str, except: Option<u32>) -> Result<u64> {
    let mut total = 0u64;
    for v in all_volumes(t)? {
        if !within(&v.scope, scope) {
            continue;
        }
        // Snapshots' own bytes count against the scope, not against their volume.
        total = total.saturating_add(crate::snapshots::snapshots_held(t, v.id)?);
        if Some(v.id) == except || v.gone {
            continue;
        }
        let size = if v.capacity > 0 {
            v.capacity
        } else {
            match t.get(&keys::usage(v.id))? {
                Some(u) => crate::codec::dec::<Usage>(&u)?.bytes,
                None => 0,
            }
        };
        total = total.saturating_add(size);
    }
    Ok(total)
}

/// Checks a volume's size against the maximum and every quota along its scope's chain.
fn check_size(t: &mut dyn KvTxn, e: &EffectivePolicy, scope: &str, capacity: u64, except: Option<u32>) -> Result<()> {
    if let Some(max) = &e.max_volume_size {
        if capacity == 0 {
            return Err(denied(
                "max_volume_size",
                &max.from,
                format!("volumes in scope {} need a size (at most {} bytes)", max.from, max.value),
            ));
        }
        if capacity > max.value {
            return Err(denied(
                "max_volume_size",
                &max.from,
                format!("{capacity} bytes is more than the {} bytes scope {} allows per volume", max.value, max.from),
            ));
        }
    }
    for q in &e.quotas {
        if capacity == 0 {
            return Err(denied(
                "quota",
                &q.from,
                format!("scope {} has a total quota, so its volumes need a size", q.from),
            ));
        }
        let used = provisioned(t, &q.from, except)?;
        if used.saturating_add(capacity) > q.value {
            return Err(denied(
                "quota",
                &q.from,
                format!(
                    "scope {} has {} of its {} bytes provisioned; {capacity} more does not fit",
                    q.from, used, q.value
                ),
            ));
        }
    }
    let _ = scope;
    Ok(())
}

impl Meta {
    // ---- scopes ----

    /// Creates a department (`NAME`) or project (`DEPT/NAME`) scope.
    pub fn create_scope(&self, path: &str, description: &str) -> Result<Scope> {
        let kind = validate_scope(path)?;
        if kind == ScopeKind::Cluster {
            return Err(MetaError::Exists);
        }
        self.write(true, |t| {
            if t.get(&keys::scope(path))?.is_some() {
                return Err(MetaError::Exists);
            }
            if let Some(p) = parent(path)
                && p != CLUSTER
                && t.get(&keys::scope(p))?.is_none()
            {
                return Err(MetaError::NoScope(p.to_string()));
            }
            let s =
                Scope { path: path.to_string(), kind, description: description.to_string(), created: Timespec::now() };
            t.put(&keys::scope(path), &json(&s)?)?;
            Ok(s)
        })
    }

    /// A scope (the cluster always exists).
    pub fn scope(&self, path: &str) -> Result<Scope> {
        if path == CLUSTER {
            return Ok(Scope {
                path: CLUSTER.into(),
                kind: ScopeKind::Cluster,
                description: String::new(),
                created: Timespec::default(),
            });
        }
        validate_scope(path)?;
        self.read(|t| match t.get(&keys::scope(path))? {
            Some(v) => unjson(&v),
            None => Err(MetaError::NoScope(path.to_string())),
        })
    }

    /// All scopes below the cluster, by path.
    pub fn list_scopes(&self) -> Result<Vec<Scope>> {
        self.read(|t| scan_json(t, keys::SCOPE_PREFIX))
    }

    /// Deletes an empty scope (no child scopes, volumes or tokens).
    pub fn delete_scope(&self, path: &str) -> Result<Scope> {
        validate_scope(path)?;
        if path == CLUSTER {
            return Err(MetaError::Busy("the cluster scope cannot be deleted".into()));
        }
        let tokens = self.list_tokens()?;
        self.write(true, |t| {
            let s: Scope = match t.get(&keys::scope(path))? {
                Some(v) => unjson(&v)?,
                None => return Err(MetaError::NoScope(path.to_string())),
            };
            let scopes: Vec<Scope> = scan_json(t, keys::SCOPE_PREFIX)?;
            if scopes.iter().any(|c| c.path != path && within(&c.path, path)) {
                return Err(MetaError::Busy(format!("scope {path} still has child scopes")));
            }
            if all_volumes(t)?.iter().any(|v| within(&v.scope, path)) {
                return Err(MetaError::Busy(format!("scope {path} still has volumes")));
            }
            if tokens.iter().any(|tk| within(&tk.scope, path)) {
                return Err(MetaError::Busy(format!("scope {path} still has tokens; revoke them first")));
            }
            t.delete(&keys::scope(path))?;
            t.delete(&keys::policy(path))?;
            Ok(s)
        })
    }

    // ---- storage classes ----

    /// Creates a storage class; a class marked default takes the mark from the previous one.
    pub fn create_class(&self, class: &StorageClass) -> Result<StorageClass> {
        class.validate()?;
        self.write(true, |t| {
            if t.get(&keys::class(&class.name))?.is_some() {
                return Err(MetaError::ClassExists(class.name.clone()));
            }
            let mut c = class.clone();
            c.created = Timespec::now();
            let existing: Vec<StorageClass> = scan_json(t, keys::CLASS_PREFIX)?;
            if existing.is_empty() {
                c.is_default = true;
            }
            if c.is_default {
                for mut o in existing.into_iter().filter(|o| o.is_default) {
                    o.is_default = false;
                    t.put(&keys::class(&o.name), &json(&o)?)?;
                }
            }
            t.put(&keys::class(&c.name), &json(&c)?)?;
            Ok(c)
        })
    }

    /// Replaces a class's settings. Existing volumes keep their block size and compression
    /// (their data is written that way); limits and cache defaults apply at their next mount.
    pub fn update_class(&self, class: &StorageClass) -> Result<StorageClass> {
        class.validate()?;
        self.write(true, |t| {
            let old = load_class(t, &class.name)?;
            let mut c = class.clone();
            c.created = old.created;
            if old.is_default && !c.is_default {
                return Err(MetaError::Invalid(
                    "a class stops being the default only when another class becomes it".into(),
                ));
            }
            if c.is_default && !old.is_default {
                let others: Vec<StorageClass> = scan_json(t, keys::CLASS_PREFIX)?;
                for mut o in others.into_iter().filter(|o| o.is_default) {
                    o.is_default = false;
                    t.put(&keys::class(&o.name), &json(&o)?)?;
                }
            }
            t.put(&keys::class(&c.name), &json(&c)?)?;
            Ok(c)
        })
    }

    /// A class by name.
    pub fn class(&self, name: &str) -> Result<StorageClass> {
        self.read(|t| load_class(t, name))
    }

    /// All classes, by name.
    pub fn list_classes(&self) -> Result<Vec<StorageClass>> {
        self.read(|t| scan_json(t, keys::CLASS_PREFIX))
    }

    /// Deletes a class no volume uses and that is not the default.
    pub fn delete_class(&self, name: &str) -> Result<StorageClass> {
        self.write(true, |t| {
            let c = load_class(t, name)?;
            let users: Vec<String> = all_volumes(t)?.into_iter().filter(|v| v.class == name).map(|v| v.name).collect();
            if !users.is_empty() {
                return Err(MetaError::Busy(format!("class {name} is used by volumes: {}", users.join(", "))));
            }
            if c.is_default {
                return Err(MetaError::Busy(format!(
                    "class {name} is the default; make another class the default first"
                )));
            }
            t.delete(&keys::class(name))?;
            Ok(c)
        })
    }

    // ---- policies ----

    /// Sets a scope's own rules (classes they name must exist).
    pub fn set_policy(&self, scope: &str, p: &Policy) -> Result<Policy> {
        self.scope(scope)?;
        self.write(true, |t| {
            let named = p.allowed_classes.iter().flatten().chain(p.default_class.iter()).chain(p.enforced_class.iter());
            for c in named {
                load_class(t, c)?;
            }
            if let (Some(d), Some(allowed)) = (&p.default_class, &p.allowed_classes)
                && !allowed.contains(d)
            {
                return Err(MetaError::Invalid(format!("default class {d} is not among the allowed classes")));
            }
            if p == &Policy::default() {
                t.delete(&keys::policy(scope))?;
            } else {
                t.put(&keys::policy(scope), &json(p)?)?;
            }
            Ok(p.clone())
        })
    }

    /// A scope's own rules.
    pub fn policy(&self, scope: &str) -> Result<Policy> {
        self.scope(scope)?;
        self.read(|t| load_policy(t, scope))
    }

    /// The rules in force at a scope, with where each comes from.
    pub fn effective_policy(&self, scope: &str) -> Result<EffectivePolicy> {
        self.scope(scope)?;
        self.read(|t| effective_in(t, scope))
    }

    // ---- provisioning ----

    /// Creates a volume if the policies of its scope allow it; the class is the enforced one,
    /// else the one asked for, else the scope's default, else the cluster's default class.
    pub fn provision_volume(&self, req: &VolumeRequest) -> Result<Volume> {
        crate::validate_name(&req.name)?;
        self.scope(&req.scope)?;
        let root = self.alloc_ino()?;
        let id = self.alloc_volume_id()?;
        self.write(true, |t| {
            if t.get(&keys::volume_name(&req.name))?.is_some() {
                return Err(MetaError::VolumeExists(req.name.clone()));
            }
            let e = effective_in(t, &req.scope)?;
            let class_name = match (&e.enforced_class, &req.class) {
                (Some(enf), Some(asked)) if &enf.value != asked => {
                    return Err(denied(
                        "enforced_class",
                        &enf.from,
                        format!("scope {} enforces class {}; {asked} may not be used", enf.from, enf.value),
                    ));
                }
                (Some(enf), _) => enf.value.clone(),
                (None, Some(asked)) => asked.clone(),
                (None, None) => match &e.default_class {
                    Some(d) => d.value.clone(),
                    None => {
                        let classes: Vec<StorageClass> = scan_json(t, keys::CLASS_PREFIX)?;
                        classes
                            .into_iter()
                            .find(|c| c.is_default)
                            .map(|c| c.name)
                            .ok_or_else(|| MetaError::NoClass("(no default class)".into()))?
                    }
                },
            };
            let class = load_class(t, &class_name)?;
            if let Some(allowed) = &e.allowed_classes
                && !allowed.value.contains(&class_name)
            {
                let from = first_refusing(t, &req.scope, |p| {
                    p.allowed_classes.as_ref().is_some_and(|l| !l.contains(&class_name))
                })?
                .unwrap_or_else(|| allowed.from.clone());
                return Err(denied(
                    "allowed_classes",
                    &from,
                    format!(
                        "class {class_name} is not allowed in scope {} (allowed: {})",
                        req.scope,
                        if allowed.value.is_empty() { "none".to_string() } else { allowed.value.join(", ") }
                    ),
                ));
            }
            let mode = req.access_mode.unwrap_or(AccessMode::ReadWriteMany);
            if !class.access_modes.contains(&mode) {
                return Err(MetaError::Invalid(format!(
                    "class {class_name} does not offer access mode {}",
                    mode.as_str()
                )));
            }
            if let Some(modes) = &e.access_modes
                && !modes.value.contains(&mode)
            {
                let from =
                    first_refusing(t, &req.scope, |p| p.access_modes.as_ref().is_some_and(|l| !l.contains(&mode)))?
                        .unwrap_or_else(|| modes.from.clone());
                return Err(denied(
                    "access_modes",
                    &from,
                    format!("access mode {} is not allowed in scope {}", mode.as_str(), req.scope),
                ));
            }
            check_size(t, &e, &req.scope, req.capacity, None)?;
            let ts = Timespec::now();
            let vol = Volume {
                id,
                name: req.name.clone(),
                root,
                class: class_name.clone(),
                capacity: req.capacity,
                inode_limit: req.inode_limit,
                block_size: class.block_size,
                store: class.backend.store_url(&req.default_store),
                compression: class.compression.as_str().to_string(),
                reclaim: req.reclaim.unwrap_or(class.reclaim),
                scope: req.scope.clone(),
                created: ts,
                access_mode: mode,
                origins: Vec::new(),
                building: false,
                gone: false,
                removing: false,
            };
            crate::volumes::init_volume(t, &vol)?;
            Ok(vol)
        })
    }

    /// Changes a volume's capacity: growing needs a class that allows expansion and room in
    /// every quota; shrinking below what is in use is refused.
    pub fn resize_volume(&self, name: &str, capacity: u64) -> Result<Volume> {
        let id = self.volume(name)?.id;
        self.write(true, |t| {
            let mut v: Volume =
                unjson(&t.get(&keys::volume(id))?.ok_or_else(|| MetaError::NoVolume(name.to_string()))?)?;
            let u: Usage = match t.get(&keys::usage(id))? {
                Some(b) => crate::codec::dec(&b)?,
                None => Usage::default(),
            };
            if capacity != 0 && capacity < u.bytes {
                return Err(MetaError::Invalid(format!("capacity {capacity} is below the {} bytes in use", u.bytes)));
            }
            let grows = capacity == 0 || (v.capacity != 0 && capacity > v.capacity);
            if grows {
                let class = load_class(t, &v.class)?;
                if !class.allow_expansion {
                    return Err(MetaError::Invalid(format!("class {} does not allow volumes to grow", v.class)));
                }
            }
            let e = effective_in(t, &v.scope)?;
            check_size(t, &e, &v.scope, capacity, Some(v.id))?;
            v.capacity = capacity;
            t.put(&keys::volume(id), &json(&v)?)?;
            Ok(v)
        })
    }

    /// Creates the built-in `default` class (blocks in the server's data directory) if there is
    /// no class at all.
    pub fn bootstrap_default_class(&self) -> Result<Option<StorageClass>> {
        if !self.list_classes()?.is_empty() {
            return Ok(None);
        }
        let c = StorageClass {
            description: "Blocks on the server's own disk".into(),
            is_default: true,
            ..StorageClass::local("default")
        };
        match self.create_class(&c) {
            Ok(c) => Ok(Some(c)),
            Err(MetaError::ClassExists(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_paths() {
        assert!(within("ml/vision", "ml"));
        assert!(within("ml", "cluster"));
        assert!(!within("mlx", "ml"));
        assert!(!within("ml", "ml/vision"));
        assert_eq!(parent("ml/vision"), Some("ml"));
        assert_eq!(parent("ml"), Some(CLUSTER));
        assert_eq!(chain("ml/vision"), vec!["cluster", "ml", "ml/vision"]);
        assert_eq!(validate_scope("ml/vision"), Ok(ScopeKind::Project));
        assert!(validate_scope("a/b/c").is_err());
        assert!(validate_scope("ml/../x").is_err());
        assert!(validate_scope("cluster/x").is_err());
    }

    #[test]
    fn backend_urls() {
        assert_eq!(Backend::Local { path: None }.store_url("file:///d"), "file:///d");
        assert_eq!(Backend::Local { path: Some("/x".into()) }.store_url("file:///d"), "file:///x");
        let s3 = Backend::S3 {
            endpoint: "http://h:9000".into(),
            bucket: "b".into(),
            prefix: "/p/".into(),
            region: String::new(),
        };
        assert_eq!(s3.store_url(""), "s3://b/p?endpoint=http://h:9000");
    }
}
