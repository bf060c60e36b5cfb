//! The Controller service: volumes created, listed, resized and deleted through Strata's
//! control plane, each call with the token of the volume's namespace.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::caps;
use crate::control::{ControlError, ControlPlane, SnapshotRecord, VolumeRecord, VolumeRequest};
use crate::logged;
use crate::pb::controller_server::Controller;
use crate::pb::controller_service_capability::{Rpc, rpc};
use crate::pb::volume_capability::access_mode::Mode;
use crate::pb::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use crate::pb::{self, ControllerServiceCapability, controller_service_capability};
use crate::views::{self, View};

/// StorageClass parameter naming the Strata storage class.
pub const PARAM_CLASS: &str = "strata.io/class";
/// StorageClass parameter naming the scope, `${pvc.namespace}` replaced.
pub const PARAM_SCOPE: &str = "strata.io/scope";
/// StorageClass parameter with the inode quota.
pub const PARAM_INODES: &str = "strata.io/inodes";
/// StorageClass parameter with the reclaim policy of the data (`delete` or `retain`).
pub const PARAM_RECLAIM: &str = "strata.io/reclaim";
/// StorageClass parameter: claims of the class are the named data volume, read-only (volume id
/// `dv:NAME@VERSION`); nothing is provisioned.
pub const PARAM_DATAVOLUME: &str = "strata.io/datavolume";
/// StorageClass parameter with [`PARAM_DATAVOLUME`]: the version claims get (default: the
/// latest when the claim is provisioned; the volume keeps that version).
pub const PARAM_DATAVOLUME_VERSION: &str = "strata.io/datavolume-version";
/// Mutable parameter (VolumeAttributesClass): the data rate limit per mount in bytes per second,
/// a plain number or with a binary suffix (`100M`, `1Gi`); 0 for none.
pub const PARAM_MAX_BANDWIDTH: &str = "strata.io/max-bandwidth";
/// Mutable parameter (VolumeAttributesClass): operations per second per mount; 0 for none.
pub const PARAM_MAX_IOPS: &str = "strata.io/max-iops";
/// Parameters the external provisioner adds with `--extra-create-metadata`.
const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

/// What a ListVolumes page token starts with (then the last name of the page before): any
/// other token, a bare name or a number included, is refused as one this driver never gave.
const PAGE_TOKEN: &str = "after:";

/// Volume context key: the volume may be published to one pod only (ReadWriteOncePod).
pub const CTX_SINGLE_POD: &str = "strata.io/single-pod";
/// Volume context key: the volume's Strata access mode (ReadOnlyMany volumes mount read-only).
pub const CTX_ACCESS: &str = "strata.io/access";
/// Volume context key: the data volume a `dv:` volume is.
pub const CTX_DATAVOLUME: &str = "strata.io/datavolume";
/// Volume context key: the data volume's version a `dv:` volume is.
pub const CTX_DATAVOLUME_VERSION: &str = "strata.io/datavolume-version";
/// Prefix of the parameters the external provisioner and snapshotter add themselves.
const CO_PARAM_PREFIX: &str = "csi.storage.k8s.io/";

/// The Controller service.
pub struct ControllerService {
    control: Arc<dyn ControlPlane>,
    /// The driver's own token: listing and capacity, never provisioning.
    token: Option<String>,
}

/// The parameters of a StorageClass, checked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    class: Option<String>,
    scope: Option<String>,
    inodes: u64,
    reclaim: Option<String>,
    datavolume: Option<String>,
    datavolume_version: Option<u32>,
}

fn parse_params(p: &HashMap<String, String>) -> Result<Params, Status> {
    let mut out = Params::default();
    for (k, v) in p {
        match k.as_str() {
            PARAM_CLASS => out.class = Some(v.clone()).filter(|v| !v.is_empty()),
            PARAM_SCOPE => out.scope = Some(v.clone()).filter(|v| !v.is_empty()),
            PARAM_INODES => {
                out.inodes =
                    v.parse().map_err(|_| Status::invalid_argument(format!("{PARAM_INODES}: {v:?} is not a count")))?
            }
            PARAM_RECLAIM => match v.to_ascii_lowercase().as_str() {
                "delete" | "retain" => out.reclaim = Some(v.to_ascii_lowercase()),
                _ => return Err(Status::invalid_argument(format!("{PARAM_RECLAIM}: {v:?} is not delete or retain"))),
            },
            PARAM_DATAVOLUME => {
                if views::view(&views::datavolume_id(v, 1)).is_none() {
                    return Err(Status::invalid_argument(format!(
                        "{PARAM_DATAVOLUME}: {v:?} is not a data volume name"
                    )));
                }
                out.datavolume = Some(v.clone());
            }
            PARAM_DATAVOLUME_VERSION => {
                out.datavolume_version = Some(v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Status::invalid_argument(format!("{PARAM_DATAVOLUME_VERSION}: {v:?} is not a version number"))
                })?)
            }
            PVC_NAMESPACE | PVC_NAME | PV_NAME => {}
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown parameter {k:?} (known: {PARAM_CLASS}, {PARAM_SCOPE}, {PARAM_INODES}, {PARAM_RECLAIM}, \
                     {PARAM_DATAVOLUME}, {PARAM_DATAVOLUME_VERSION})"
                )));
            }
        }
    }
    if out.datavolume.is_some() {
        let with = [
            (PARAM_CLASS, out.class.is_some()),
            (PARAM_SCOPE, out.scope.is_some()),
            (PARAM_INODES, out.inodes != 0),
            (PARAM_RECLAIM, out.reclaim.is_some()),
        ];
        if let Some((k, _)) = with.iter().find(|(_, set)| *set) {
            return Err(Status::invalid_argument(format!(
                "{k} does not apply to a data volume ({PARAM_DATAVOLUME}): nothing is provisioned"
            )));
        }
    } else if out.datavolume_version.is_some() {
        return Err(Status::invalid_argument(format!("{PARAM_DATAVOLUME_VERSION} needs {PARAM_DATAVOLUME}")));
    }
    if let Some(t) = out.scope.take() {
        let mut s = t.clone();
        for (var, key) in [("${pvc.namespace}", PVC_NAMESPACE), ("${pvc.name}", PVC_NAME)] {
            if s.contains(var) {
                let val = p.get(key).filter(|v| !v.is_empty()).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{PARAM_SCOPE} {t:?} uses {var}, but the request does not carry {key} \
                         (run the external-provisioner with --extra-create-metadata)"
                    ))
                })?;
                s = s.replace(var, val);
            }
        }
        out.scope = Some(s);
    }
    Ok(out)
}

/// The mutable parameters of a VolumeAttributesClass, checked: the limits they set (None: not
/// given).
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Mutable {
    bytes_per_sec: Option<u64>,
    ops_per_sec: Option<u64>,
}

impl Mutable {
    fn is_empty(&self) -> bool {
        self.bytes_per_sec.is_none() && self.ops_per_sec.is_none()
    }

    /// The limits a volume gets: those given, the volume's own for those not (none if it has
    /// none).
    fn applied_to(&self, current: Option<(u64, u64)>) -> (u64, u64) {
        let (b, o) = current.unwrap_or((0, 0));
        (self.bytes_per_sec.unwrap_or(b), self.ops_per_sec.unwrap_or(o))
    }
}

/// Largest limit the server accepts.
const MAX_LIMIT: u64 = 1 << 60;

/// Parses a rate: a number, optionally with a binary unit (`K`, `M`, `G`, `T`, alone or
/// followed by `i`, `B` or `iB`; `100M` is 100 MiB/s).
fn parse_rate(key: &str, v: &str) -> Result<u64, Status> {
    let bad = || Status::invalid_argument(format!("{key}: {v:?} is not a number (try 500, 100M, 1Gi)"));
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "ki" | "kb" | "kib" => 10,
        "m" | "mi" | "mb" | "mib" => 20,
        "g" | "gi" | "gb" | "gib" => 30,
        "t" | "ti" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    match n.checked_mul(1u64 << shift) {
        Some(x) if x <= MAX_LIMIT => Ok(x),
        _ => Err(Status::invalid_argument(format!("{key}: {v:?} is more than the largest allowed, {MAX_LIMIT}"))),
    }
}

fn parse_mutable(p: &HashMap<String, String>) -> Result<Mutable, Status> {
    let mut out = Mutable::default();
    for (k, v) in p {
        match k.as_str() {
            PARAM_MAX_BANDWIDTH => out.bytes_per_sec = Some(parse_rate(k, v)?),
            PARAM_MAX_IOPS => {
                let n: u64 = v.trim().parse().map_err(|_| {
                    Status::invalid_argument(format!("{PARAM_MAX_IOPS}: {v:?} is not a count of operations"))
                })?;
                if n > MAX_LIMIT {
                    return Err(Status::invalid_argument(format!(
                        "{PARAM_MAX_IOPS}: {n} is more than the largest allowed, {MAX_LIMIT}"
                    )));
                }
                out.ops_per_sec = Some(n);
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown mutable parameter {k:?} (known: {PARAM_MAX_BANDWIDTH}, {PARAM_MAX_IOPS})"
                )));
            }
        }
    }
    Ok(out)
}

/// The Strata volume name for a CSI volume name: the name itself where Strata allows it
/// (Kubernetes' `pvc-<uuid>` names are), else a digest of it, so any name the spec allows maps
/// to exactly one volume.
pub fn volume_name(csi_name: &str) -> String {
    let valid = !csi_name.is_empty()
        && csi_name.len() <= 253
        && csi_name.as_bytes()[0].is_ascii_alphanumeric()
        && csi_name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        csi_name.to_string()
    } else {
        format!("csi-{}", &hex::encode(Sha256::digest(csi_name.as_bytes()))[..40])
    }
}

/// The token in a call's secrets, if any.
fn secret_token(secrets: &HashMap<String, String>) -> Option<&str> {
    secrets.get(crate::TOKEN_KEY).map(|t| t.trim()).filter(|t| !t.is_empty())
}

fn required<'a>(v: &'a str, what: &str) -> Result<&'a str, Status> {
    if v.is_empty() { Err(Status::invalid_argument(format!("{what} is required"))) } else { Ok(v) }
}

fn need_token(secrets: &HashMap<String, String>, what: &str) -> Result<String, Status> {
    secret_token(secrets).map(str::to_string).ok_or_else(|| {
        Status::unauthenticated(format!(
            "no Strata token to {what}: the StorageClass must name a Secret (csi.storage.k8s.io/*-secret-name, \
             namespace ${{pvc.namespace}}) and that Secret must exist in the claim's namespace with key \"{}\"",
            crate::TOKEN_KEY
        ))
    })
}

/// The bytes a capacity range asks for: required, else the limit, else none (0).
fn wanted(range: Option<&pb::CapacityRange>) -> Result<(u64, u64, u64), Status> {
    let Some(r) = range else { return Ok((0, 0, 0)) };
    if r.required_bytes < 0 || r.limit_bytes < 0 {
        return Err(Status::invalid_argument("capacity_range must not be negative"));
    }
    let (req, lim) = (r.required_bytes as u64, r.limit_bytes as u64);
    if lim != 0 && req > lim {
        return Err(Status::out_of_range(format!("required_bytes {req} exceeds limit_bytes {lim}")));
    }
    Ok((if req != 0 { req } else { lim }, req, lim))
}

fn fits(capacity: u64, req: u64, lim: u64) -> bool {
    (req == 0 || capacity == 0 || capacity >= req) && (lim == 0 || (capacity != 0 && capacity <= lim))
}

/// The CSI snapshot of a Strata snapshot: ready at once (snapshots are instant), its size what
/// the volume held when it was taken.
fn csi_snapshot(s: &SnapshotRecord) -> pb::Snapshot {
    pb::Snapshot {
        size_bytes: i64::try_from(s.bytes).unwrap_or(i64::MAX),
        snapshot_id: views::snapshot_id(&s.volume, &s.name),
        source_volume_id: s.volume.clone(),
        creation_time: Some(prost_types::Timestamp { seconds: s.created.0, nanos: s.created.1 }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// The CSI volume of a data volume's version (`dv:NAME@VERSION`): read-only, many nodes.
fn csi_datavolume(name: &str, version: u32, capacity: u64) -> pb::Volume {
    let ctx = HashMap::from([
        (CTX_ACCESS.to_string(), strata_types::AccessMode::ReadOnlyMany.as_str().to_string()),
        (CTX_DATAVOLUME.to_string(), name.to_string()),
        (CTX_DATAVOLUME_VERSION.to_string(), version.to_string()),
    ]);
    pb::Volume {
        capacity_bytes: i64::try_from(capacity).unwrap_or(i64::MAX),
        volume_id: views::datavolume_id(name, version),
        volume_context: ctx,
        content_source: None,
        accessible_topology: Vec::new(),
    }
}

/// INVALID_ARGUMENT unless every capability is a read-only one (what a view serves).
fn read_only_caps(caps: &[pb::VolumeCapability], what: &str) -> Result<(), String> {
    if caps.is_empty() {
        return Err("volume_capabilities is required".into());
    }
    for c in caps {
        let m = caps::check(c)?;
        if !matches!(m, Mode::MultiNodeReaderOnly | Mode::SingleNodeReaderOnly) {
            return Err(format!(
                "{what} is read-only: access mode {} is not served (only MULTI_NODE_READER_ONLY and \
                 SINGLE_NODE_READER_ONLY: a ReadOnlyMany claim)",
                m.as_str_name()
            ));
        }
    }
    Ok(())
}

fn csi_volume(v: &VolumeRecord, single_pod: bool) -> pb::Volume {
    let mut ctx = HashMap::new();
    ctx.insert("strata.io/scope".to_string(), v.scope.clone());
    ctx.insert("strata.io/class".to_string(), v.class.clone());
    ctx.insert(CTX_ACCESS.to_string(), v.access_mode.as_str().to_string());
    if single_pod {
        ctx.insert(CTX_SINGLE_POD.to_string(), "true".to_string());
    }
    pb::Volume {
        capacity_bytes: i64::try_from(v.capacity).unwrap_or(i64::MAX),
        volume_id: v.name.clone(),
        volume_context: ctx,
        content_source: None,
        accessible_topology: Vec::new(),
    }
}

impl ControllerService {
    /// A controller acting through `control`; `token` is the driver's own.
    pub fn new(control: Arc<dyn ControlPlane>, token: Option<String>) -> Self {
        ControllerService { control, token }
    }

    /// The token for a read: the call's, else the driver's own.
    fn read_token(&self, secrets: &HashMap<String, String>) -> Result<String, Status> {
        secret_token(secrets).map(str::to_string).or_else(|| self.token.clone()).ok_or_else(|| {
            Status::failed_precondition("the controller has no token of its own (start it with --token-file)")
        })
    }

    async fn create(&self, r: pb::CreateVolumeRequest) -> Result<pb::CreateVolumeResponse, Status> {
        if r.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let access = caps::access(&r.volume_capabilities)?;
        let (capacity, req, lim) = wanted(r.capacity_range.as_ref())?;
        let params = parse_params(&r.parameters)?;
        if let Some(dv) = &params.datavolume {
            return self.create_datavolume(&r, dv, params.datavolume_version).await;
        }
        let mutable = parse_mutable(&r.mutable_parameters)?;
        let token = need_token(&r.secrets, "create the volume")?;
        let source = self.content_source(&token, &r).await?;
        if let Some((_, bytes)) = &source
            && capacity != 0
            && capacity < *bytes
        {
            return Err(Status::out_of_range(format!(
                "the capacity asked, {capacity} bytes, cannot hold the source's {bytes} bytes"
            )));
        }
        let name = volume_name(&r.name);
        let compatible = |v: &VolumeRecord| -> Result<(), Status> {
            let class_ok = params.class.as_ref().is_none_or(|c| *c == v.class);
            let scope_ok = params.scope.as_ref().is_none_or(|s| *s == v.scope);
            if fits(v.capacity, req, lim)
                && class_ok
                && scope_ok
                && caps::serves(v.access_mode, &r.volume_capabilities).is_ok()
            {
                Ok(())
            } else {
                Err(Status::already_exists(format!(
                    "volume {name} exists with capacity {}, class {}, scope {}, access {}: not what this request asks",
                    v.capacity,
                    v.class,
                    v.scope,
                    v.access_mode.as_str()
                )))
            }
        };
        let answer = |v: &VolumeRecord| {
            let mut out = csi_volume(v, access.single_pod);
            out.content_source = r.volume_content_source.clone();
            pb::CreateVolumeResponse { volume: Some(out) }
        };
        if let Some(v) = self.control.get_volume(&token, &name).await? {
            compatible(&v)?;
            let v = self.modify_qos(&token, v, &mutable).await?;
            return Ok(answer(&v));
        }
        let want = VolumeRequest {
            name: name.clone(),
            scope: params.scope.clone(),
            class: params.class.clone(),
            capacity,
            inodes: params.inodes,
            access_mode: Some(access.mode),
            reclaim: params.reclaim.clone(),
            from: source.as_ref().map(|(from, _)| from.clone()),
        };
        let v = match self.control.create_volume(&token, &want).await {
            Ok(v) => v,
            // Two calls for one name raced: the other one created it.
            Err(ControlError::AlreadyExists(m)) => match self.control.get_volume(&token, &name).await? {
                Some(v) => {
                    compatible(&v)?;
                    v
                }
                None => return Err(Status::already_exists(m)),
            },
            // The source went since it was looked up.
            Err(ControlError::NotFound(m)) if source.is_some() => return Err(Status::not_found(m)),
            // An unknown class or scope: the request's parameters are wrong (NOT_FOUND is for
            // a missing content source in CreateVolume).
            Err(ControlError::NotFound(m)) => return Err(Status::invalid_argument(m)),
            Err(e) => return Err(e.into()),
        };
        // The VolumeAttributesClass's limits; a retry after a failure here finds the volume
        // and sets them then.
        let v = self.modify_qos(&token, v, &mutable).await?;
        Ok(answer(&v))
    }

    /// What a volume is cloned from (`VOLUME` or `VOLUME@SNAPSHOT`) and the bytes it holds, by
    /// the request's content source (None: an empty volume); NOT_FOUND if the source is absent.
    async fn content_source(&self, token: &str, r: &pb::CreateVolumeRequest) -> Result<Option<(String, u64)>, Status> {
        let snapshot = |volume: String, snapshot: String| async move {
            match self.control.get_snapshot(token, &volume, &snapshot).await? {
                Some(s) if s.owner.is_none() => {
                    Ok::<_, Status>(Some((views::snapshot_id(&volume, &snapshot), s.bytes)))
                }
                _ => Err(Status::not_found(format!("no snapshot {}", views::snapshot_id(&volume, &snapshot)))),
            }
        };
        match r.volume_content_source.as_ref().and_then(|s| s.r#type.as_ref()) {
            None => Ok(None),
            Some(SourceType::Snapshot(SnapshotSource { snapshot_id })) => match views::view(snapshot_id) {
                Some(View::Snapshot { volume, snapshot: s }) => snapshot(volume, s).await,
                _ => Err(Status::not_found(format!("no snapshot {snapshot_id:?}: not an id this driver gives"))),
            },
            Some(SourceType::Volume(VolumeSource { volume_id })) => match views::view(volume_id) {
                // A volume that is a snapshot: the same as cloning the snapshot.
                Some(View::Snapshot { volume, snapshot: s }) => snapshot(volume, s).await,
                Some(View::Data { .. }) => Err(Status::invalid_argument(format!(
                    "volume {volume_id} is a data volume, which cannot be cloned (make a volume from it with \
                     `strata volume create` and copy, or mount it read-only)"
                ))),
                None => match self.control.get_volume(token, volume_id).await? {
                    Some(v) => Ok(Some((v.name, v.used_bytes))),
                    None => Err(Status::not_found(format!("no volume {volume_id}"))),
                },
            },
        }
    }

    /// CreateVolume of a data-volume StorageClass: the claim is the data volume's version,
    /// read-only; nothing is provisioned.
    async fn create_datavolume(
        &self,
        r: &pb::CreateVolumeRequest,
        name: &str,
        version: Option<u32>,
    ) -> Result<pb::CreateVolumeResponse, Status> {
        read_only_caps(&r.volume_capabilities, &format!("data volume {name}")).map_err(Status::invalid_argument)?;
        if r.volume_content_source.is_some() {
            return Err(Status::invalid_argument(format!(
                "a data volume ({PARAM_DATAVOLUME}) claim cannot have a content source"
            )));
        }
        if !r.mutable_parameters.is_empty() {
            return Err(Status::invalid_argument("a data volume's QoS cannot be set (mutable_parameters)"));
        }
        let (_, req, lim) = wanted(r.capacity_range.as_ref())?;
        let token = need_token(&r.secrets, "read the data volume")?;
        let Some(d) = self.control.get_datavolume(&token, name).await? else {
            if let Some(own) = &self.token
                && *own != token
                && let Ok(Some(d)) = self.control.get_datavolume(own, name).await
            {
                return Err(Status::permission_denied(format!(
                    "data volume {name} of scope {} is not shared with the scope of the claim's token",
                    d.scope
                )));
            }
            return Err(Status::not_found(format!("no data volume {name} the claim's token may read")));
        };
        let found = match version {
            Some(n) => d.versions.iter().find(|(v, _)| *v == n),
            None => d.versions.last(),
        };
        let Some(&(n, bytes)) = found else {
            return Err(Status::not_found(match version {
                Some(n) => format!("data volume {name} has no version {n}"),
                None => format!("data volume {name} has no versions"),
            }));
        };
        // The claim's size, to bind; the view's size otherwise (it is never written).
        let mut capacity = bytes.max(req);
        if lim != 0 {
            capacity = capacity.min(lim);
        }
        Ok(pb::CreateVolumeResponse { volume: Some(csi_datavolume(name, n, capacity)) })
    }

    /// The CSI volume of a view's id (ControllerGetVolume, ValidateVolumeCapabilities).
    async fn view_volume(&self, token: &str, id: &str) -> Result<pb::Volume, Status> {
        let missing = || Status::not_found(format!("no volume {id}"));
        match views::view(id).ok_or_else(missing)? {
            View::Data { name, version } => {
                let d = self.control.get_datavolume(token, &name).await?.ok_or_else(missing)?;
                let v = match version {
                    Some(n) => d.versions.iter().find(|(v, _)| *v == n),
                    None => d.versions.last(),
                };
                let &(n, bytes) = v.ok_or_else(missing)?;
                let mut out = csi_datavolume(&name, n, bytes);
                out.volume_id = id.to_string();
                Ok(out)
            }
            View::Snapshot { volume, snapshot } => {
                let s = self.control.get_snapshot(token, &volume, &snapshot).await?.ok_or_else(missing)?;
                let ctx = HashMap::from([(
                    CTX_ACCESS.to_string(),
                    strata_types::AccessMode::ReadOnlyMany.as_str().to_string(),
                )]);
                Ok(pb::Volume {
                    capacity_bytes: i64::try_from(s.bytes).unwrap_or(i64::MAX),
                    volume_id: id.to_string(),
                    volume_context: ctx,
                    content_source: None,
                    accessible_topology: Vec::new(),
                })
            }
        }
    }

    /// Gives volume `v` the QoS limits of `m` (the others as they are), if that changes them.
    async fn modify_qos(&self, token: &str, v: VolumeRecord, m: &Mutable) -> Result<VolumeRecord, Status> {
        if m.is_empty() {
            return Ok(v);
        }
        let want = m.applied_to(v.qos);
        if v.qos == Some(want) {
            return Ok(v);
        }
        match self.control.set_volume_qos(token, &v.name, Some(want)).await {
            Ok(v) => Ok(v),
            Err(ControlError::NotFound(m)) => Err(Status::not_found(m)),
            Err(e) => Err(e.into()),
        }
    }

    async fn modify(&self, r: pb::ControllerModifyVolumeRequest) -> Result<pb::ControllerModifyVolumeResponse, Status> {
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let mutable = parse_mutable(&r.mutable_parameters)?;
        if views::is_view(&r.volume_id) {
            return Err(Status::invalid_argument(format!(
                "volume {} is a read-only view (a snapshot or a data volume): its QoS cannot be set",
                r.volume_id
            )));
        }
        let token = need_token(&r.secrets, "modify the volume")?;
        let Some(v) = self.control.get_volume(&token, &r.volume_id).await? else {
            self.hidden(&r.secrets, &r.volume_id, "not found with the call's token").await?;
            return Err(Status::not_found(format!("no volume {}", r.volume_id)));
        };
        self.modify_qos(&token, v, &mutable).await?;
        Ok(pb::ControllerModifyVolumeResponse {})
    }

    async fn delete(&self, r: pb::DeleteVolumeRequest) -> Result<pb::DeleteVolumeResponse, Status> {
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        if views::is_view(&r.volume_id) {
            // A snapshot's or a data volume's view: it belongs to its volume or its owner, and
            // the claim only named it.
            return Ok(pb::DeleteVolumeResponse {});
        }
        let token = self.read_token(&r.secrets)?;
        match self.control.delete_volume(&token, &r.volume_id).await {
            Ok(()) => Ok(pb::DeleteVolumeResponse {}),
            Err(ControlError::NotFound(m)) => {
                // Reporting OK for a volume that exists would let the CO forget a volume that
                // was never deleted.
                self.hidden(&r.secrets, &r.volume_id, &m).await?;
                Ok(pb::DeleteVolumeResponse {})
            }
            Err(e) => Err(e.into()),
        }
    }

    /// PERMISSION_DENIED if `volume`, which the call's token did not find, exists where the
    /// driver's own token sees it: the server hides other scopes' volumes from a token.
    async fn hidden(&self, secrets: &HashMap<String, String>, volume: &str, why: &str) -> Result<(), Status> {
        if let Some(own) = &self.token
            && secret_token(secrets).is_some_and(|t| t != own)
            && let Ok(Some(v)) = self.control.get_volume(own, volume).await
        {
            return Err(Status::permission_denied(format!(
                "volume {} exists in scope {}, which the token of this call cannot reach ({why})",
                v.name, v.scope
            )));
        }
        Ok(())
    }

    async fn expand(&self, r: pb::ControllerExpandVolumeRequest) -> Result<pb::ControllerExpandVolumeResponse, Status> {
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let Some(range) = r.capacity_range.as_ref() else {
            return Err(Status::invalid_argument("capacity_range is required"));
        };
        let (capacity, _, lim) = wanted(Some(range))?;
        if capacity == 0 {
            return Err(Status::invalid_argument("capacity_range must ask for some bytes"));
        }
        if views::is_view(&r.volume_id) {
            return Err(Status::invalid_argument(format!(
                "volume {} is a read-only view (a snapshot or a data volume) and cannot be expanded",
                r.volume_id
            )));
        }
        let token = need_token(&r.secrets, "expand the volume")?;
        let Some(v) = self.control.get_volume(&token, &r.volume_id).await? else {
            self.hidden(&r.secrets, &r.volume_id, "not found with the call's token").await?;
            return Err(Status::not_found(format!("no volume {}", r.volume_id)));
        };
        if let Some(cap) = &r.volume_capability {
            caps::serves(v.access_mode, std::slice::from_ref(cap)).map_err(Status::invalid_argument)?;
        }
        // Never shrink: a request for less than the volume has is already satisfied.
        let v = if v.capacity != 0 && v.capacity >= capacity {
            v
        } else {
            if v.capacity == 0 && lim == 0 {
                return Ok(pb::ControllerExpandVolumeResponse { capacity_bytes: 0, node_expansion_required: true });
            }
            self.control.resize_volume(&token, &r.volume_id, capacity).await?
        };
        // The quota is the server's: nothing to resize on a node, but NodeExpandVolume checks
        // that the node's mounts report the new size before the CO tells the pod's user.
        Ok(pb::ControllerExpandVolumeResponse {
            capacity_bytes: i64::try_from(v.capacity).unwrap_or(i64::MAX),
            node_expansion_required: true,
        })
    }

    async fn validate(
        &self,
        r: pb::ValidateVolumeCapabilitiesRequest,
    ) -> Result<pb::ValidateVolumeCapabilitiesResponse, Status> {
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        parse_params(&r.parameters)?;
        parse_mutable(&r.mutable_parameters)?;
        let token = self.read_token(&r.secrets)?;
        let serves = if views::is_view(&r.volume_id) {
            self.view_volume(&token, &r.volume_id).await?;
            read_only_caps(&r.volume_capabilities, &format!("volume {}", r.volume_id))
        } else {
            let v = self
                .control
                .get_volume(&token, &r.volume_id)
                .await?
                .ok_or_else(|| Status::not_found(format!("no volume {}", r.volume_id)))?;
            caps::serves(v.access_mode, &r.volume_capabilities)
        };
        Ok(match serves {
            Ok(()) => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(pb::validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(why) => pb::ValidateVolumeCapabilitiesResponse { confirmed: None, message: why },
        })
    }

    async fn list(&self, r: pb::ListVolumesRequest) -> Result<pb::ListVolumesResponse, Status> {
        if r.max_entries < 0 {
            return Err(Status::invalid_argument("max_entries must not be negative"));
        }
        // The token names the last volume of the previous page: names come sorted, so volumes
        // created or deleted between pages neither repeat nor hide the others.
        let after_name = match r.starting_token.as_str() {
            "" => "",
            t => match t.strip_prefix(PAGE_TOKEN) {
                Some(name) if !name.is_empty() && volume_name(name) == name => name,
                _ => {
                    return Err(Status::aborted(format!(
                        "starting_token {:?} is not one this driver gave",
                        r.starting_token
                    )));
                }
            },
        };
        let token = self.read_token(&HashMap::new())?;
        let mut all = self.control.list_volumes(&token).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let after: Vec<_> = all.into_iter().filter(|v| v.name.as_str() > after_name).collect();
        let max = if r.max_entries == 0 { usize::MAX } else { r.max_entries as usize };
        let more = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let next_token = if more {
            page.last().map(|v| format!("{PAGE_TOKEN}{}", v.name)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListVolumesResponse {
            entries: page
                .iter()
                .map(|v| pb::list_volumes_response::Entry { volume: Some(csi_volume(v, false)), status: None })
                .collect(),
            next_token,
        })
    }

    async fn capacity(&self, r: pb::GetCapacityRequest) -> Result<pb::GetCapacityResponse, Status> {
        if !r.volume_capabilities.is_empty() {
            caps::access(&r.volume_capabilities)?;
        }
        // The external-provisioner's capacity tracking passes the StorageClass parameters
        // alone, without the claim's metadata: a templated scope names no one scope here and
        // is not expanded (see below).
        let mut plain = r.parameters.clone();
        let templated = plain.get(PARAM_SCOPE).is_some_and(|s| s.contains("${"));
        if templated {
            plain.remove(PARAM_SCOPE);
        }
        let params = parse_params(&plain)?;
        let token = self.read_token(&HashMap::new())?;
        if let Some(c) = &params.class
            && !self.control.class_exists(&token, c).await?
        {
            return Err(Status::invalid_argument(format!("no storage class {c}")));
        }
        // A templated scope names no one scope: answer for the driver's token's.
        let scope = params.scope.as_deref().filter(|s| !s.contains("${"));
        let room = self.control.room(&token, scope).await?;
        let clamp = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        Ok(pb::GetCapacityResponse {
            available_capacity: room.available.map_or(i64::MAX, clamp),
            maximum_volume_size: room.max_volume_size.map(clamp),
            minimum_volume_size: None,
        })
    }

    async fn get(&self, r: pb::ControllerGetVolumeRequest) -> Result<pb::ControllerGetVolumeResponse, Status> {
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let token = self.read_token(&HashMap::new())?;
        if views::is_view(&r.volume_id) {
            let v = self.view_volume(&token, &r.volume_id).await?;
            return Ok(pb::ControllerGetVolumeResponse { volume: Some(v), status: None });
        }
        let v = self
            .control
            .get_volume(&token, &r.volume_id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no volume {}", r.volume_id)))?;
        Ok(pb::ControllerGetVolumeResponse { volume: Some(csi_volume(&v, false)), status: None })
    }

    async fn snapshot_create(&self, r: pb::CreateSnapshotRequest) -> Result<pb::CreateSnapshotResponse, Status> {
        let source = required(&r.source_volume_id, "source_volume_id")?;
        required(&r.name, "name")?;
        if let Some(k) = r.parameters.keys().find(|k| !k.starts_with(CO_PARAM_PREFIX)) {
            return Err(Status::invalid_argument(format!("unknown snapshot parameter {k:?} (there are none)")));
        }
        if views::is_view(source) {
            return Err(Status::invalid_argument(format!(
                "volume {source} is a read-only view (a snapshot or a data volume): it has no snapshots of its own"
            )));
        }
        let token = need_token(&r.secrets, "take the snapshot")?;
        let name = volume_name(&r.name);
        let answer = |s: &SnapshotRecord| -> Result<pb::CreateSnapshotResponse, Status> {
            if s.owner.is_some() {
                return Err(Status::already_exists(format!(
                    "snapshot {} exists and belongs to {}",
                    views::snapshot_id(&s.volume, &s.name),
                    s.owner.as_deref().unwrap_or("")
                )));
            }
            Ok(pb::CreateSnapshotResponse { snapshot: Some(csi_snapshot(s)) })
        };
        if let Some(s) = self.control.get_snapshot(&token, source, &name).await? {
            return answer(&s);
        }
        if self.control.get_volume(&token, source).await?.is_none() {
            self.hidden(&r.secrets, source, "not found with the call's token").await?;
            return Err(Status::not_found(format!("no volume {source}")));
        }
        // A CSI snapshot name names one snapshot, whatever its volume.
        if let Some(other) = self.control.list_snapshots(&token, None).await?.iter().find(|s| s.name == name) {
            return Err(Status::already_exists(format!(
                "snapshot name {} is taken by snapshot {} of another volume",
                r.name,
                views::snapshot_id(&other.volume, &other.name)
            )));
        }
        match self.control.create_snapshot(&token, source, &name).await {
            Ok(s) => answer(&s),
            // Two calls for one name raced.
            Err(ControlError::AlreadyExists(m)) => match self.control.get_snapshot(&token, source, &name).await? {
                Some(s) => answer(&s),
                None => Err(Status::already_exists(m)),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn snapshot_delete(&self, r: pb::DeleteSnapshotRequest) -> Result<pb::DeleteSnapshotResponse, Status> {
        let id = required(&r.snapshot_id, "snapshot_id")?;
        // An id this driver never gave names no snapshot: nothing to delete.
        let Some(View::Snapshot { volume, snapshot }) = views::view(id) else {
            return Ok(pb::DeleteSnapshotResponse {});
        };
        let token = self.read_token(&r.secrets)?;
        match self.control.delete_snapshot(&token, &volume, &snapshot).await {
            Ok(()) => Ok(pb::DeleteSnapshotResponse {}),
            Err(ControlError::NotFound(m)) => {
                // Reporting OK for a snapshot that exists would let the CO forget it.
                if let Some(own) = &self.token
                    && secret_token(&r.secrets).is_some_and(|t| t != own)
                    && let Ok(Some(_)) = self.control.get_snapshot(own, &volume, &snapshot).await
                {
                    return Err(Status::permission_denied(format!(
                        "snapshot {id} exists where the token of this call cannot reach ({m})"
                    )));
                }
                Ok(pb::DeleteSnapshotResponse {})
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn snapshot_list(&self, r: pb::ListSnapshotsRequest) -> Result<pb::ListSnapshotsResponse, Status> {
        if r.max_entries < 0 {
            return Err(Status::invalid_argument("max_entries must not be negative"));
        }
        // As ListVolumes: the token names the last snapshot id of the page before.
        let after_id = match r.starting_token.as_str() {
            "" => "",
            t => match t.strip_prefix(PAGE_TOKEN) {
                Some(id) if matches!(views::view(id), Some(View::Snapshot { .. })) => id,
                _ => {
                    return Err(Status::aborted(format!(
                        "starting_token {:?} is not one this driver gave",
                        r.starting_token
                    )));
                }
            },
        };
        let token = self.read_token(&r.secrets)?;
        let all = if !r.snapshot_id.is_empty() {
            match views::view(&r.snapshot_id) {
                Some(View::Snapshot { volume, snapshot })
                    if r.source_volume_id.is_empty() || r.source_volume_id == volume =>
                {
                    self.control.get_snapshot(&token, &volume, &snapshot).await?.into_iter().collect()
                }
                _ => Vec::new(),
            }
        } else if !r.source_volume_id.is_empty() {
            if views::is_view(&r.source_volume_id) {
                Vec::new()
            } else {
                match self.control.list_snapshots(&token, Some(&r.source_volume_id)).await {
                    Ok(v) => v,
                    Err(ControlError::NotFound(_)) => Vec::new(),
                    Err(e) => return Err(e.into()),
                }
            }
        } else {
            self.control.list_snapshots(&token, None).await?
        };
        // Snapshots data volumes or clones own are not the CO's.
        let mut all: Vec<pb::Snapshot> = all.iter().filter(|s| s.owner.is_none()).map(csi_snapshot).collect();
        all.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        let after: Vec<_> = all.into_iter().filter(|s| s.snapshot_id.as_str() > after_id).collect();
        let max = if r.max_entries == 0 { usize::MAX } else { r.max_entries as usize };
        let more = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let next_token = if more {
            page.last().map(|s| format!("{PAGE_TOKEN}{}", s.snapshot_id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListSnapshotsResponse {
            entries: page.into_iter().map(|s| pb::list_snapshots_response::Entry { snapshot: Some(s) }).collect(),
            next_token,
        })
    }
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{what} is not supported by this driver")))
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        r: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let r = r.into_inner();
        let name = r.name.clone();
        logged("CreateVolume", &volume_name(&name), self.create(r).await)
    }

    async fn delete_volume(
        &self,
        r: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("DeleteVolume", &id, self.delete(r).await)
    }

    async fn controller_publish_volume(
        &self,
        _: Request<pb::ControllerPublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerPublishVolumeResponse>, Status> {
        unimplemented("ControllerPublishVolume")
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<pb::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerUnpublishVolumeResponse>, Status> {
        unimplemented("ControllerUnpublishVolume")
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<pb::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<pb::ValidateVolumeCapabilitiesResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("ValidateVolumeCapabilities", &id, self.validate(r).await)
    }

    async fn list_volumes(
        &self,
        r: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        logged("ListVolumes", "", self.list(r.into_inner()).await)
    }

    async fn get_capacity(
        &self,
        r: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        logged("GetCapacity", "", self.capacity(r.into_inner()).await)
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<pb::ControllerGetCapabilitiesResponse>, Status> {
        let caps = ADVERTISED
            .iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(Rpc { r#type: *t as i32 })),
            })
            .collect();
        Ok(Response::new(pb::ControllerGetCapabilitiesResponse { capabilities: caps }))
    }

    async fn create_snapshot(
        &self,
        r: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let r = r.into_inner();
        let id = views::snapshot_id(&r.source_volume_id, &volume_name(&r.name));
        logged("CreateSnapshot", &id, self.snapshot_create(r).await)
    }

    async fn delete_snapshot(
        &self,
        r: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let r = r.into_inner();
        let id = r.snapshot_id.clone();
        logged("DeleteSnapshot", &id, self.snapshot_delete(r).await)
    }

    async fn list_snapshots(
        &self,
        r: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        logged("ListSnapshots", "", self.snapshot_list(r.into_inner()).await)
    }

    async fn controller_expand_volume(
        &self,
        r: Request<pb::ControllerExpandVolumeRequest>,
    ) -> Result<Response<pb::ControllerExpandVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("ControllerExpandVolume", &id, self.expand(r).await)
    }

    async fn controller_get_volume(
        &self,
        r: Request<pb::ControllerGetVolumeRequest>,
    ) -> Result<Response<pb::ControllerGetVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("ControllerGetVolume", &id, self.get(r).await)
    }

    async fn controller_modify_volume(
        &self,
        r: Request<pb::ControllerModifyVolumeRequest>,
    ) -> Result<Response<pb::ControllerModifyVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = r.volume_id.clone();
        logged("ControllerModifyVolume", &id, self.modify(r).await)
    }
}

/// The controller capabilities the driver advertises.
const ADVERTISED: [rpc::Type; 9] = [
    rpc::Type::CreateDeleteVolume,
    rpc::Type::ListVolumes,
    rpc::Type::GetCapacity,
    rpc::Type::ExpandVolume,
    rpc::Type::GetVolume,
    rpc::Type::ModifyVolume,
    rpc::Type::CreateDeleteSnapshot,
    rpc::Type::ListSnapshots,
    rpc::Type::CloneVolume,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_valid_unique_volume_names() {
        let k8s = "pvc-0f6b1a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(volume_name(k8s), k8s);
        let odd = volume_name("my volume/ü");
        assert!(odd.starts_with("csi-") && odd.len() == 44);
        assert_ne!(odd, volume_name("my volume/u"));
        let long = "a".repeat(300);
        assert_eq!(volume_name(&long), volume_name(&long));
        assert!(volume_name(&long).len() <= 253);
    }

    #[test]
    fn scope_templates_take_the_claims_namespace() {
        let mut p = HashMap::new();
        p.insert(PARAM_SCOPE.to_string(), "ml/${pvc.namespace}".to_string());
        assert!(parse_params(&p).is_err(), "no namespace passed: refused, not guessed");
        p.insert(PVC_NAMESPACE.to_string(), "vision".to_string());
        assert_eq!(parse_params(&p).expect("params").scope.as_deref(), Some("ml/vision"));
        p.insert("strata.io/colour".to_string(), "blue".to_string());
        assert!(parse_params(&p).is_err(), "unknown parameters are refused");
    }

    #[test]
    fn mutable_parameters_are_qos_limits() {
        let p = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let m = parse_mutable(&p(&[(PARAM_MAX_BANDWIDTH, "100M"), (PARAM_MAX_IOPS, "500")])).expect("ok");
        assert_eq!(m, Mutable { bytes_per_sec: Some(100 << 20), ops_per_sec: Some(500) });
        assert_eq!(m.applied_to(None), (100 << 20, 500));
        for (v, want) in [("1048576", 1 << 20), ("1G", 1 << 30), ("1Gi", 1 << 30), ("64KiB", 64 << 10), ("0", 0)] {
            assert_eq!(parse_mutable(&p(&[(PARAM_MAX_BANDWIDTH, v)])).expect(v).bytes_per_sec, Some(want), "{v}");
        }
        for bad in ["", "fast", "1.5G", "-1", "10X", "2000000P"] {
            assert!(parse_mutable(&p(&[(PARAM_MAX_BANDWIDTH, bad)])).is_err(), "{bad:?}");
        }
        assert!(parse_mutable(&p(&[(PARAM_MAX_IOPS, "1k")])).is_err());
        assert!(parse_mutable(&p(&[("strata.io/colour", "blue")])).is_err(), "unknown");
        // One not given keeps the volume's own.
        let only_iops = parse_mutable(&p(&[(PARAM_MAX_IOPS, "7")])).expect("ok");
        assert_eq!(only_iops.applied_to(Some((5, 6))), (5, 7));
        assert!(parse_mutable(&HashMap::new()).expect("empty").is_empty());
    }

    #[test]
    fn capacity_ranges() {
        let r = |req, lim| pb::CapacityRange { required_bytes: req, limit_bytes: lim };
        assert_eq!(wanted(Some(&r(10, 0))).expect("ok").0, 10);
        assert_eq!(wanted(Some(&r(0, 20))).expect("ok").0, 20);
        assert!(wanted(Some(&r(30, 20))).is_err());
        assert!(wanted(Some(&r(-1, 0))).is_err());
        assert!(fits(10, 10, 0) && fits(10, 5, 10) && !fits(10, 11, 0) && !fits(0, 0, 10));
    }
}
