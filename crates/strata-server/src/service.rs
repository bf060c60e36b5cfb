//! The file system RPC service: each call authenticates, then runs one metadata transaction
//! on the blocking pool (never on a runtime thread).

use std::sync::Arc;

use strata_meta::control::within;
use strata_meta::tokens::{Role, TokenRecord};
use strata_meta::{FileType, MetaError, Timespec};
use strata_proto::conv::*;
use strata_proto::pb::meta_server::Meta as MetaRpc;
use strata_proto::{errno_status, pb};
use tonic::{Code, Request, Response, Status};

use crate::state::State;
use strata_meta::locks::LockKind;
use strata_meta::sessions::SessionInfo;

/// A chunk with more slices than this is handed back to the client to compact: reads cost
/// grows with the list, and overwrites keep covered blocks alive.
const COMPACT_AFTER: usize = 64;

/// A session's peer cache is offered to the volume's other clients while the session was heard
/// from within this (three heartbeats): a client that died drops out of the placement soon,
/// and clients meanwhile fall back to the store for its blocks.
const PEER_FRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// The status for a metadata error, carrying its errno.
pub fn meta_status(e: MetaError) -> Status {
    let code = match &e {
        MetaError::NotFound | MetaError::NoVolume(_) => Code::NotFound,
        MetaError::Exists | MetaError::VolumeExists(_) => Code::AlreadyExists,
        MetaError::Quota => Code::ResourceExhausted,
        MetaError::Access | MetaError::Perm => Code::PermissionDenied,
        MetaError::Invalid(_) | MetaError::NameTooLong => Code::InvalidArgument,
        MetaError::Engine(_) | MetaError::Corrupt(_) => Code::Internal,
        MetaError::ReadOnly => Code::PermissionDenied,
        _ => Code::FailedPrecondition,
    };
    errno_status(code, e.errno(), e.to_string())
}

/// Runs a metadata transaction. On the multi-threaded runtime it runs on this worker inside
/// `block_in_place` (the runtime moves this worker's other tasks elsewhere while it blocks),
/// which costs less than a hand-off to the blocking pool for transactions that take tens of
/// microseconds, and stays safe when one has to wait for the disk.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> strata_meta::Result<T> + Send + 'static,
) -> Result<T, Status> {
    let multi = tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
    let res = if multi {
        tokio::task::block_in_place(f)
    } else {
        tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("metadata task failed: {e}")))?
    };
    res.map_err(meta_status)
}

fn libc_eacces() -> i32 {
    strata_meta::error::libc_consts::EACCES
}

fn unknown_session() -> Status {
    let mut s = Status::failed_precondition("unknown session: re-register");
    s.metadata_mut().insert(strata_proto::SESSION_KEY, tonic::metadata::MetadataValue::from_static("unknown"));
    s
}

/// The session a change is made for, as its caller says (0: not said).
fn origin(c: &Option<pb::Caller>) -> u64 {
    c.as_ref().map_or(0, |c| c.origin)
}

fn attr_resp(ino: u64, a: &strata_meta::Attr) -> Response<pb::AttrResp> {
    Response::new(pb::AttrResp { attr: Some(attr_to_pb(ino, a)), parent: None })
}

/// A directory's attributes right after a change to it, so the client need not ask again (the
/// kernel drops a directory's cached attributes whenever an entry in it changes).
fn dir_after(meta: &strata_meta::Meta, ino: u64) -> Option<pb::Attr> {
    meta.getattr(ino).ok().map(|a| attr_to_pb(ino, &a))
}

/// Whether a token of `scope` may read blocks kept under volume `vol`'s name without holding
/// `vol`: a clone of it in the scope, or a data volume of it shared with the scope.
pub(crate) async fn shares_blocks(meta: &Arc<strata_meta::Meta>, vol: u32, scope: String) -> Result<bool, Status> {
    let meta = meta.clone();
    blocking(move || {
        let via_clone =
            meta.list_volumes()?.iter().any(|(v, _)| within(&v.scope, &scope) && v.origins.iter().any(|o| o.0 == vol));
        Ok(via_clone || meta.list_datavolumes()?.iter().any(|d| d.volume == vol && d.readable_by(&scope)))
    })
    .await
}

/// A read-only view a mount asks for by name.
struct View {
    volume: u32,
    root: u64,
    label: String,
    bytes: u64,
    inodes: u64,
}

/// Resolves `VOLUME@SNAPSHOT` (the token's scope must hold the volume) and
/// `dv:NAME[@VERSION]` (the data volume must be the scope's or shared with it; the latest
/// version when none is named). `None` for a plain volume name. What the scope may not see is
/// reported as not found.
fn resolve_view(meta: &strata_meta::Meta, name: &str, scope: &str) -> strata_meta::Result<Option<View>> {
    use strata_meta::MetaError;
    if let Some(rest) = name.strip_prefix("dv:") {
        let (dv, version) = match rest.split_once('@') {
            Some((n, v)) => {
                let v = v.strip_prefix('v').unwrap_or(v);
                let n_ver: u32 = v.parse().map_err(|_| MetaError::Invalid(format!("version {v:?} is not a number")))?;
                (n, Some(n_ver))
            }
            None => (rest, None),
        };
        let d = meta.datavolume(dv)?;
        if !d.readable_by(scope) {
            return Err(MetaError::NoVolume(format!("data volume {dv}")));
        }
        let ver = d.version(version)?;
        let vol = meta.volume_by_id(d.volume)?;
        return Ok(Some(View {
            volume: vol.id,
            root: strata_meta::view_ino(ver.epoch, vol.root),
            label: format!("dv:{}@{}", d.name, ver.number),
            bytes: ver.bytes,
            inodes: ver.inodes,
        }));
    }
    let Some((vname, sname)) = name.split_once('@') else { return Ok(None) };
    let vol = meta.volume(vname)?;
    if !within(&vol.scope, scope) {
        return Err(MetaError::NoVolume(vname.to_string()));
    }
    let snap = meta.snapshot(vname, sname)?;
    Ok(Some(View {
        volume: vol.id,
        root: snap.root(&vol),
        label: format!("{vname}@{sname}"),
        bytes: snap.bytes,
        inodes: snap.inodes,
    }))
}

/// Refuses a token whose scope does not contain `scope` (a volume's), with EACCES.
pub(crate) fn check_scope(who: &TokenRecord, scope: &str) -> Result<(), Status> {
    if within(scope, &who.scope) {
        Ok(())
    } else {
        Err(errno_status(
            Code::PermissionDenied,
            libc_eacces(),
            format!("this token (scope {}) may not use volumes of scope {scope}", who.scope),
        ))
    }
}

/// Refuses read-only (viewer) tokens, with EACCES.
pub(crate) fn check_writer(who: &TokenRecord) -> Result<(), Status> {
    if who.role == Role::Viewer {
        return Err(errno_status(Code::PermissionDenied, libc_eacces(), "this token is read-only (viewer)"));
    }
    Ok(())
}

fn bad_kind() -> Status {
    errno_status(Code::InvalidArgument, 22, "unknown file type")
}

/// The `Meta` gRPC service.
pub struct MetaService {
    st: Arc<State>,
}

impl MetaService {
    /// A service over the shared server state.
    pub fn new(st: Arc<State>) -> Self {
        MetaService { st }
    }

    async fn session(&self, id: u64) -> Result<(), Status> {
        let st = self.st.clone();
        let touch = move || st.meta.touch_session(id, &st.server_id);
        // Local state is a map in memory, touched right here; shared state may need a
        // database round trip.
        let known = if self.st.meta.is_shared() { blocking(touch).await? } else { touch().map_err(meta_status)? };
        if known { Ok(()) } else { Err(unknown_session()) }
    }

    /// Authorizes a call: viewers may not change anything, and every inode it touches must be
    /// in a volume of the token's scope. An inode that does not exist is left to the operation
    /// to report.
    async fn guard<T>(&self, req: &Request<T>, inos: &[u64], write: bool) -> Result<(), Status> {
        let who = crate::auth::principal(req)?;
        if write {
            check_writer(who)?;
        }
        for ino in inos {
            let ino = *ino;
            let (epoch, _) = strata_meta::split_ino(ino);
            if epoch != 0 {
                if write {
                    return Err(meta_status(strata_meta::MetaError::ReadOnly));
                }
                self.check_view(who, ino, epoch).await?;
                continue;
            }
            let vol = match self.st.cached_inode_volume(ino) {
                Some(v) => v,
                None => {
                    let meta = self.st.meta.clone();
                    match blocking(move || meta.getattr(ino)).await {
                        Ok(a) => {
                            self.st.note_inode_volume(ino, a.volume);
                            a.volume
                        }
                        Err(_) => continue,
                    }
                }
            };
            self.check_volume(who, vol)?;
        }
        Ok(())
    }

    /// The blocks a durable commit journals, checked: well-formed keys of the committed slices,
    /// in volumes the caller may write whose stores are this server's local directories.
    async fn check_journal(
        &self,
        who: &TokenRecord,
        r: &pb::CommitReq,
        writes: &[(u32, strata_meta::Slice)],
    ) -> Result<Vec<(String, Vec<u8>)>, Status> {
        if r.journal.is_empty() {
            return Ok(Vec::new());
        }
        if !r.durable {
            return Err(Status::invalid_argument("journaled blocks need a durable commit"));
        }
        if r.journal.iter().map(|b| b.data.len()).sum::<usize>() > strata_meta::MAX_JOURNAL_BYTES {
            return Err(Status::invalid_argument("too many journaled bytes for one commit"));
        }
        let mut vols: Vec<u32> = Vec::new();
        for b in &r.journal {
            let vol = strata_blocks::layout::volume_of_block_key(&b.key)
                .ok_or_else(|| Status::invalid_argument(format!("journaled block {:?}: not a block key", b.key)))?;
            let id = strata_blocks::layout::slice_of_key(&b.key).unwrap_or(0);
            if !writes.iter().any(|(_, s)| s.id == id) {
                return Err(Status::invalid_argument(format!("journaled block {} is not of a committed slice", b.key)));
            }
            if !vols.contains(&vol) {
                vols.push(vol);
            }
        }
        for vol in vols {
            self.check_volume(who, vol)?;
            let st = self.st.clone();
            let vb = blocking(move || st.volume_blocks(vol)).await?;
            let local = self.st.store(&vb.store).map(|s| s.is_local()).unwrap_or(false);
            if !local {
                return Err(Status::failed_precondition(format!(
                    "volume {vol}'s blocks are not in a directory of this server: sync them instead of journaling"
                )));
            }
        }
        Ok(r.journal.iter().map(|b| (b.key.clone(), b.data.clone())).collect())
    }

    /// Authorizes a read of a snapshot's inode: the token's scope holds the volume, or the
    /// snapshot is a data volume's version shared with the token's scope. Checked at every
    /// call, so ending a share ends access at the next one.
    async fn check_view(&self, who: &TokenRecord, ino: u64, epoch: u64) -> Result<(), Status> {
        let meta = self.st.meta.clone();
        let scope = who.scope.clone();
        let allowed = blocking(move || {
            let Some(snap) = meta.snapshot_by_epoch(epoch)? else { return Ok(None) };
            let vol = meta.volume_by_id(snap.volume)?;
            if !vol.gone && within(&vol.scope, &scope) {
                return Ok(Some(true));
            }
            // The snapshot read above names its data volume: no second read of it.
            let Some(dv) = snap.owner.as_deref().and_then(|o| o.strip_prefix("datavolume:")) else {
                return Ok(Some(false));
            };
            match meta.datavolume(dv) {
                Ok(d) => Ok(Some(d.readable_by(&scope))),
                Err(strata_meta::MetaError::NoVolume(_)) => Ok(Some(false)),
                Err(e) => Err(e),
            }
        })
        .await?;
        match allowed {
            // Gone: the operation reports it.
            None => Ok(()),
            Some(true) => Ok(()),
            Some(false) => Err(errno_status(
                Code::PermissionDenied,
                libc_eacces(),
                format!("this token (scope {}) may not read inode {ino}: not shared with its scope", who.scope),
            )),
        }
    }

    /// Notes a change for clients' leases (`changes.rs`), in the volume `guard` found for the
    /// inodes.
    fn changed(&self, origin: u64, inos: &[u64]) {
        let vol = inos.iter().find_map(|i| self.st.cached_inode_volume(*i)).unwrap_or(0);
        self.st.changes.note(vol, origin, inos);
    }

    /// `Watch` on the calling thread (the framed transport's connection threads).
    pub fn watch_blocking(&self, who: &TokenRecord, r: &pb::WatchReq) -> Result<pb::WatchResp, Status> {
        self.check_volume(who, r.volume)?;
        Ok(self.st.changes.watch_blocking(r))
    }

    fn guard_volume<T>(&self, req: &Request<T>, vol: u32) -> Result<(), Status> {
        self.check_volume(crate::auth::principal(req)?, vol)
    }

    /// The peer caches of volume `vol`'s live sessions (heard from within three heartbeats);
    /// none when that cannot be told (the peer cache is an optimisation: clients then read the
    /// store).
    async fn peers(&self, vol: u32) -> Vec<String> {
        let meta = self.st.meta.clone();
        match blocking(move || meta.volume_peers(vol, PEER_FRESH)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(volume = vol, error = %e.message(), "cannot list the volume's peer caches");
                Vec::new()
            }
        }
    }

    fn check_volume(&self, who: &TokenRecord, vol: u32) -> Result<(), Status> {
        let scope = match self.st.volume_scope(vol) {
            Ok(s) => s,
            Err(strata_meta::MetaError::NoVolume(_)) => return Ok(()),
            Err(e) => return Err(meta_status(e)),
        };
        check_scope(who, &scope)
    }
}

#[tonic::async_trait]
impl MetaRpc for MetaService {
    async fn mount(&self, req: Request<pb::MountReq>) -> Result<Response<pb::MountResp>, Status> {
        let who = crate::auth::principal(&req)?.clone();
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let name = r.volume.clone();
        let scope = who.scope.clone();
        let (vol, usage, class, qos, view) = blocking(move || {
            let view = resolve_view(&meta, &name, &scope)?;
            let v = match &view {
                Some(view) => meta.volume_by_id(view.volume)?,
                None => meta.volume(&name)?,
            };
            let u = meta.usage(v.id)?;
            let c = meta.class(&v.class).ok();
            let q = meta.volume_qos(v.id)?;
            Ok((v, u, c, q, view))
        })
        .await?;
        if view.is_none() && !within(&vol.scope, &who.scope) {
            // Other scopes' volumes are not acknowledged.
            return Err(meta_status(strata_meta::MetaError::NoVolume(vol.name)));
        }
        if vol.building {
            return Err(meta_status(strata_meta::MetaError::Busy(format!(
                "volume {} is still being cloned",
                vol.name
            ))));
        }
        let id = if r.session != 0 { r.session } else { rand::random::<u64>() | 1 };
        let now = Timespec::now();
        let vol_id = vol.id;
        let s = SessionInfo {
            id,
            volume: vol.id,
            // A read-only view does not keep its volume from being deleted.
            volume_name: view.as_ref().map(|v| v.label.clone()).unwrap_or_else(|| vol.name.clone()),
            client: r.client,
            since: now,
            last_seen: now,
            server: self.st.server_id.clone(),
            version: r.client_version,
            peer: r.peer_addr,
        };
        // A client coming back after a server restart (or an expiry) re-announces what it holds
        // open; a session still known keeps its records as they are.
        let reopened = if r.session != 0 { r.open_inos } else { Vec::new() };
        let client = s.client.clone();
        let meta = self.st.meta.clone();
        blocking(move || meta.register_session(s, &reopened)).await?;
        tracing::info!(session = id, volume = %vol.name, client = %client, "client mounted");
        // The marker a client compares to tell whether it sees this directory (first use
        // writes it: off the runtime's workers).
        let st = self.st.clone();
        let url = vol.store.clone();
        let store_id = match tokio::task::spawn_blocking(move || st.store_id(&url)).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                tracing::warn!(store = %vol.store, error = %e, "cannot write the block directory's id; clients will not use it directly");
                String::new()
            }
            Err(e) => return Err(Status::internal(format!("store id task failed: {e}"))),
        };
        let mut info = vol.info(&usage);
        if let Some(v) = &view {
            info.root = v.root;
            info.read_only = true;
            info.view = v.label.clone();
            info.used_bytes = v.bytes;
            info.used_inodes = v.inodes;
            info.access_mode = strata_meta::AccessMode::ReadOnlyMany.as_str().to_string();
        }
        if let Some(c) = &class {
            c.apply_client_settings(&mut info);
        }
        // The volume's own limits, if it has any, replace its class's.
        if let Some((bytes, ops)) = qos {
            info.qos_bytes_per_sec = bytes;
            info.qos_ops_per_sec = ops;
        }
        let peers = self.peers(vol_id).await;
        Ok(Response::new(pb::MountResp {
            session: id,
            volume: Some(volume_to_pb(info)),
            chunk_size: strata_meta::CHUNK_SIZE,
            store_id,
            peers,
        }))
    }

    async fn heartbeat(&self, req: Request<pb::SessionReq>) -> Result<Response<pb::HeartbeatResp>, Status> {
        let id = req.get_ref().session;
        self.session(id).await?;
        // The volume's QoS as it is now, so that a change reaches mounts without a remount.
        // Not knowing it (the volume just went away, the database hiccuped) is no reason to
        // fail the heartbeat: the client keeps its limits.
        let meta = self.st.meta.clone();
        let qos = blocking(move || match meta.session_volume(id)? {
            Some(vol) => meta.effective_qos(vol).map(|q| Some((vol, q))),
            None => Ok(None),
        })
        .await;
        Ok(Response::new(match qos {
            Ok(Some((vol, (bytes, ops)))) => pb::HeartbeatResp {
                qos_bytes_per_sec: bytes,
                qos_ops_per_sec: ops,
                qos_known: true,
                peers: self.peers(vol).await,
            },
            Ok(None) => pb::HeartbeatResp::default(),
            Err(e) => {
                tracing::debug!(session = id, error = %e.message(), "cannot tell a session's volume QoS");
                pb::HeartbeatResp::default()
            }
        }))
    }

    async fn unmount(&self, req: Request<pb::SessionReq>) -> Result<Response<pb::Empty>, Status> {
        let id = req.get_ref().session;
        self.st.end_session(id).await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn lookup(&self, req: Request<pb::LookupReq>) -> Result<Response<pb::AttrResp>, Status> {
        self.guard(&req, &[req.get_ref().parent], false).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (ino, a) = blocking(move || meta.lookup(&ctx_from_pb(r.caller.as_ref()), r.parent, &r.name)).await?;
        Ok(attr_resp(ino, &a))
    }

    async fn get_attr(&self, req: Request<pb::InoReq>) -> Result<Response<pb::AttrResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let ino = req.get_ref().ino;
        let meta = self.st.meta.clone();
        let a = blocking(move || meta.getattr(ino)).await?;
        Ok(attr_resp(ino, &a))
    }

    async fn set_attr(&self, req: Request<pb::SetAttrReq>) -> Result<Response<pb::AttrResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], true).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (ino, origin) = (r.ino, origin(&r.caller));
        let a = blocking(move || meta.setattr(&ctx_from_pb(r.caller.as_ref()), r.ino, &setattr_from_pb(&r))).await?;
        self.changed(origin, &[ino]);
        Ok(attr_resp(ino, &a))
    }

    async fn mknod(&self, req: Request<pb::MknodReq>) -> Result<Response<pb::MknodResp>, Status> {
        self.guard(&req, &[req.get_ref().parent], true).await?;
        let r = req.into_inner();
        let kind = FileType::from_code(r.kind).ok_or_else(bad_kind)?;
        if r.session != 0 {
            self.session(r.session).await?;
        }
        let meta = self.st.meta.clone();
        let (dir, origin) = (r.parent, origin(&r.caller));
        // The guard above learned the parent's volume.
        let vol = self.st.cached_inode_volume(dir);
        let c = blocking(move || {
            // Opened by the session as created (one transaction with shared state).
            meta.mknod_open(
                r.session,
                &ctx_from_pb(r.caller.as_ref()),
                r.parent,
                &r.name,
                kind,
                r.mode,
                r.umask,
                r.rdev,
                &r.target,
                r.excl,
                vol,
            )
        })
        .await?;
        if c.created {
            self.changed(origin, &[dir]);
        }
        Ok(Response::new(pb::MknodResp {
            attr: Some(attr_to_pb(c.ino, &c.attr)),
            created: c.created,
            parent: Some(attr_to_pb(dir, &c.parent)),
        }))
    }

    async fn link(&self, req: Request<pb::LinkReq>) -> Result<Response<pb::AttrResp>, Status> {
        self.guard(&req, &[req.get_ref().ino, req.get_ref().new_parent], true).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (ino, dir, origin) = (r.ino, r.new_parent, origin(&r.caller));
        let (a, parent) = blocking(move || {
            let a = meta.link(&ctx_from_pb(r.caller.as_ref()), r.ino, r.new_parent, &r.new_name)?;
            Ok((a, dir_after(&meta, r.new_parent)))
        })
        .await?;
        self.changed(origin, &[dir, ino]);
        Ok(Response::new(pb::AttrResp { attr: Some(attr_to_pb(ino, &a)), parent }))
    }

    async fn unlink(&self, req: Request<pb::NameReq>) -> Result<Response<pb::DirChange>, Status> {
        self.guard(&req, &[req.get_ref().parent], true).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (dir, origin) = (r.parent, origin(&r.caller));
        let vol = self.st.cached_inode_volume(dir);
        let p = blocking(move || meta.unlink_in(&ctx_from_pb(r.caller.as_ref()), r.parent, &r.name, vol)).await?;
        self.changed(origin, &[dir]);
        Ok(Response::new(pb::DirChange { parent: Some(attr_to_pb(dir, &p)), new_parent: None }))
    }

    async fn rmdir(&self, req: Request<pb::NameReq>) -> Result<Response<pb::DirChange>, Status> {
        self.guard(&req, &[req.get_ref().parent], true).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (dir, origin) = (r.parent, origin(&r.caller));
        let parent = blocking(move || {
            meta.rmdir(&ctx_from_pb(r.caller.as_ref()), r.parent, &r.name)?;
            Ok(dir_after(&meta, r.parent))
        })
        .await?;
        self.changed(origin, &[dir]);
        Ok(Response::new(pb::DirChange { parent, new_parent: None }))
    }

    async fn rename(&self, req: Request<pb::RenameReq>) -> Result<Response<pb::DirChange>, Status> {
        self.guard(&req, &[req.get_ref().parent, req.get_ref().new_parent], true).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (dirs, origin) =
            (if r.parent == r.new_parent { vec![r.parent] } else { vec![r.parent, r.new_parent] }, origin(&r.caller));
        let (parent, new_parent) = blocking(move || {
            let cond = strata_meta::RenameIf {
                source: r.if_source.as_ref().map(identity_from_pb),
                target: r.if_target.as_ref().map(identity_from_pb),
            };
            let ctx = ctx_from_pb(r.caller.as_ref());
            meta.rename_if(&ctx, r.parent, &r.name, r.new_parent, &r.new_name, r.flags, cond)?;
            let np = if r.new_parent != r.parent { dir_after(&meta, r.new_parent) } else { None };
            Ok((dir_after(&meta, r.parent), np))
        })
        .await?;
        self.changed(origin, &dirs);
        Ok(Response::new(pb::DirChange { parent, new_parent }))
    }

    async fn readlink(&self, req: Request<pb::InoReq>) -> Result<Response<pb::BytesResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let ino = req.get_ref().ino;
        let meta = self.st.meta.clone();
        let data = blocking(move || meta.readlink(ino)).await?;
        Ok(Response::new(pb::BytesResp { data }))
    }

    async fn readdir(&self, req: Request<pb::ReaddirReq>) -> Result<Response<pb::ReaddirResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let ino = r.ino;
        let page = blocking(move || {
            meta.readdir_page(&ctx_from_pb(r.caller.as_ref()), r.ino, r.plus, &r.after, r.limit as usize)
        })
        .await?;
        let entries = page
            .entries
            .into_iter()
            .map(|e| pb::DirEntry {
                ino: e.ino,
                kind: e.kind.code(),
                attr: e.attr.as_ref().map(|a| attr_to_pb(e.ino, a)),
                name: e.name,
            })
            .collect();
        Ok(Response::new(pb::ReaddirResp { entries, more: page.more, dir: Some(attr_to_pb(ino, &page.dir)) }))
    }

    async fn open(&self, req: Request<pb::OpenReq>) -> Result<Response<pb::OpenResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], req.get_ref().write).await?;
        let r = req.into_inner();
        self.session(r.session).await?;
        let meta = self.st.meta.clone();
        let (a, chunk0) = blocking(move || {
            let a = meta.open(r.session, r.ino)?;
            let chunk0 = if a.kind == FileType::File && a.size > 0 { meta.read_chunk(r.ino, 0)? } else { Vec::new() };
            Ok((a, chunk0))
        })
        .await?;
        Ok(Response::new(pb::OpenResp {
            attr: Some(attr_to_pb(r.ino, &a)),
            chunk0: chunk0.iter().map(slice_to_pb).collect(),
        }))
    }

    async fn close(&self, req: Request<pb::CloseReq>) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        self.session(r.session).await?;
        let meta = self.st.meta.clone();
        blocking(move || {
            for ino in r.inos {
                meta.close(r.session, ino)?;
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn read_chunk(&self, req: Request<pb::ChunkReq>) -> Result<Response<pb::ChunkResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let slices = blocking(move || meta.read_chunk(r.ino, r.index)).await?;
        Ok(Response::new(pb::ChunkResp { slices: slices.iter().map(slice_to_pb).collect() }))
    }

    async fn commit_writes(&self, req: Request<pb::CommitReq>) -> Result<Response<pb::CommitResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], true).await?;
        let req_who = crate::auth::principal(&req)?.clone();
        let r = req.into_inner();
        let writes: Vec<(u32, strata_meta::Slice)> = r
            .writes
            .iter()
            .map(|w| w.slice.as_ref().map(|s| (w.index, slice_from_pb(s))))
            .collect::<Option<_>>()
            .ok_or_else(|| Status::invalid_argument("write without a slice"))?;
        let journal = self.check_journal(&req_who, &r, &writes).await?;
        let meta = self.st.meta.clone();
        let ino = r.ino;
        let journaled = journal.len();
        let bytes: u64 = writes.iter().map(|(_, s)| u64::from(s.len)).sum();
        let origin = r.origin;
        let c = blocking(move || meta.commit_writes_with(ino, &writes, &journal, r.durable)).await?;
        self.changed(origin, &[ino]);
        if let Some(vol) = self.st.cached_inode_volume(ino) {
            crate::metrics::get().committed(vol, bytes);
        }
        if journaled > 0 {
            self.st.journaled_since_flush.fetch_add(journaled, std::sync::atomic::Ordering::Relaxed);
        }
        let crowded = c.chunk_slices.iter().filter(|(_, n)| *n > COMPACT_AFTER).map(|(i, _)| *i).collect();
        Ok(Response::new(pb::CommitResp {
            attr: Some(attr_to_pb(ino, &c.attr)),
            crowded,
            capacity: c.capacity,
            used_bytes: c.used_bytes,
            chunks: c
                .chunk_slices
                .iter()
                .map(|(i, n)| pb::ChunkSlices { index: *i, count: u32::try_from(*n).unwrap_or(u32::MAX) })
                .collect(),
        }))
    }

    async fn compact_chunk(&self, req: Request<pb::CompactReq>) -> Result<Response<pb::BoolResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], true).await?;
        let r = req.into_inner();
        let with = r.with.as_ref().map(slice_from_pb).ok_or_else(|| Status::invalid_argument("no new slice"))?;
        let replaced: Vec<_> = r.replaced.iter().map(slice_from_pb).collect();
        let meta = self.st.meta.clone();
        let ok = blocking(move || meta.compact_chunk(r.ino, r.index, &replaced, with)).await?;
        Ok(Response::new(pb::BoolResp { ok }))
    }

    async fn alloc_slices(&self, req: Request<pb::AllocReq>) -> Result<Response<pb::AllocResp>, Status> {
        self.guard(&req, &[], true).await?;
        let n = req.get_ref().count.clamp(1, 1 << 20);
        let meta = self.st.meta.clone();
        let first = blocking(move || meta.alloc_slice_ids(n)).await?;
        Ok(Response::new(pb::AllocResp { first }))
    }

    async fn journaled_block(&self, req: Request<pb::BlockKeyReq>) -> Result<Response<pb::BytesResp>, Status> {
        let key = req.get_ref().key.clone();
        let vol = strata_blocks::layout::volume_of_block_key(&key)
            .ok_or_else(|| Status::invalid_argument(format!("{key:?} is not a block key")))?;
        self.guard(&req, &[], false).await?;
        if let Err(s) = self.guard_volume(&req, vol) {
            // A block a clone or a shared data volume reads under its source's name.
            let scope = crate::auth::principal(&req)?.scope.clone();
            if !shares_blocks(&self.st.meta, vol, scope).await? {
                return Err(s);
            }
        }
        let meta = self.st.meta.clone();
        match blocking(move || meta.journaled_block(&key)).await? {
            Some(data) => Ok(Response::new(pb::BytesResp { data })),
            None => Err(errno_status(Code::NotFound, strata_meta::error::libc_consts::ENOENT, "no journaled copy")),
        }
    }

    async fn sync(&self, _req: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        let meta = self.st.meta.clone();
        blocking(move || meta.sync()).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_xattr(&self, req: Request<pb::XattrReq>) -> Result<Response<pb::BytesResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let data = blocking(move || meta.getxattr(r.ino, &r.name)).await?;
        Ok(Response::new(pb::BytesResp { data }))
    }

    async fn list_xattr(&self, req: Request<pb::InoReq>) -> Result<Response<pb::ListXattrResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let ino = req.get_ref().ino;
        let meta = self.st.meta.clone();
        let names = blocking(move || meta.listxattr(ino)).await?;
        Ok(Response::new(pb::ListXattrResp { names }))
    }

    async fn set_xattr(&self, req: Request<pb::XattrReq>) -> Result<Response<pb::Empty>, Status> {
        self.guard(&req, &[req.get_ref().ino], true).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (ino, origin) = (r.ino, r.origin);
        blocking(move || meta.setxattr(r.ino, &r.name, &r.value, r.flags)).await?;
        self.changed(origin, &[ino]);
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_xattr(&self, req: Request<pb::XattrReq>) -> Result<Response<pb::Empty>, Status> {
        self.guard(&req, &[req.get_ref().ino], true).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        let (ino, origin) = (r.ino, r.origin);
        blocking(move || meta.removexattr(r.ino, &r.name)).await?;
        self.changed(origin, &[ino]);
        Ok(Response::new(pb::Empty {}))
    }

    async fn watch(&self, req: Request<pb::WatchReq>) -> Result<Response<pb::WatchResp>, Status> {
        self.guard_volume(&req, req.get_ref().volume)?;
        Ok(Response::new(self.st.changes.watch(req.get_ref()).await))
    }

    async fn stat_fs(&self, req: Request<pb::StatFsReq>) -> Result<Response<pb::StatFsResp>, Status> {
        self.guard_volume(&req, req.get_ref().volume)?;
        let vol = req.get_ref().volume;
        let meta = self.st.meta.clone();
        let (v, u) = blocking(move || Ok((meta.volume_by_id(vol)?, meta.usage(vol)?))).await?;
        Ok(Response::new(pb::StatFsResp {
            capacity: v.capacity,
            used_bytes: u.bytes,
            inode_limit: v.inode_limit,
            used_inodes: u.inodes,
        }))
    }

    async fn get_lock(&self, req: Request<pb::LockReq>) -> Result<Response<pb::LockResp>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let r = req.into_inner();
        self.session(r.session).await?;
        let kind = LockKind::from_code(r.kind).ok_or_else(|| Status::invalid_argument("bad lock kind"))?;
        let meta = self.st.meta.clone();
        let found = blocking(move || meta.lock_test(r.ino, (r.session, r.owner), r.start, r.end, kind)).await?;
        Ok(Response::new(match found {
            Some(l) => pb::LockResp { kind: l.kind.code(), start: l.start, end: l.end, pid: l.pid },
            None => pb::LockResp { kind: LockKind::Unlock.code(), start: 0, end: 0, pid: 0 },
        }))
    }

    async fn set_lock(&self, req: Request<pb::LockReq>) -> Result<Response<pb::Empty>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let r = req.into_inner();
        self.session(r.session).await?;
        let kind = LockKind::from_code(r.kind).ok_or_else(|| Status::invalid_argument("bad lock kind"))?;
        if r.end < r.start {
            return Err(errno_status(Code::InvalidArgument, 22, "lock range ends before it starts"));
        }
        let meta = self.st.meta.clone();
        if blocking(move || meta.lock_set(r.ino, (r.session, r.owner), r.start, r.end, kind, r.pid)).await? {
            Ok(Response::new(pb::Empty {}))
        } else {
            Err(errno_status(Code::FailedPrecondition, 11, "conflicting lock held"))
        }
    }

    async fn release_locks(&self, req: Request<pb::ReleaseLocksReq>) -> Result<Response<pb::Empty>, Status> {
        self.guard(&req, &[req.get_ref().ino], false).await?;
        let r = req.into_inner();
        let meta = self.st.meta.clone();
        blocking(move || meta.lock_release(r.ino, (r.session, r.owner))).await?;
        Ok(Response::new(pb::Empty {}))
    }
}
