//! The control plane as one API with authorization: storage classes, volumes, scopes, tokens
//! and policies. The REST API and the admin gRPC service both call it, so every path applies the
//! same rules.
//!
//! Who may do what: a token acts in its scope and every scope below it. `admin` does
//! everything there (classes need a cluster admin); `editor` creates, grows and deletes volumes
//! and writes data; `viewer` lists and reads; `node` is what mounts use: data access only.

use std::sync::Arc;

use strata_meta::control::{self, AccessMode, EffectivePolicy, Policy, Scope, StorageClass, VolumeRequest, within};
use strata_meta::tokens::{Role, TokenRecord};
use strata_meta::{MetaError, Reclaim, Timespec, Usage, Volume};

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

    /// Creates a volume where the caller may and the policies allow.
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
        let vr = VolumeRequest {
            name: req.name,
            scope,
            class: req.class,
            capacity: req.capacity,
            inode_limit: req.inodes,
            access_mode,
            reclaim,
            default_store: self.st.default_store.clone(),
        };
        let meta = self.st.meta.clone();
        let (volume, usage) = run(move || {
            let v = meta.provision_volume(&vr)?;
            let u = meta.usage(v.id)?;
            Ok((v, u))
        })
        .await?;
        tracing::info!(volume = %volume.name, scope = %volume.scope, class = %volume.class, "volume created");
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
        self.st.auth.clear();
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
