//! The gateway's state: exports attached to volumes, the write verifier, directory listings in
//! use; and the dispatch of calls to the NFS, MOUNT and portmapper programs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use nfs3_types::mount::{dirpath, export_node, exports, fhandle3, mountres3, mountres3_ok, mountstat3};
use nfs3_types::nfs3::nfsstat3;
use nfs3_types::xdr_codec::{List, Opaque};
use strata_meta::{Ctx, FileType};
use strata_vfs::{DirEntry, Vfs};

use crate::export::ExportSpec;
use crate::files::OpenFiles;
use crate::handle::{HandleError, HandleKey, export_of};
use crate::names::Names;
use crate::nfs::Outcome;
use crate::reply::Reply;
use crate::xdr::{pack_into, put_u32};
use strata_nfs_wire::rpc::{self, Accept, Call};
use strata_nfs_wire::{MountCall, PortmapCall, XdrError, decode_mount, decode_portmap};

/// Program numbers.
pub const PORTMAP: u32 = 100_000;
/// Program numbers.
pub const NFS: u32 = 100_003;
/// Program numbers.
pub const MOUNT: u32 = 100_005;

/// One export, attached to its volume.
pub struct Export {
    /// Its rules.
    pub spec: ExportSpec,
    /// The volume's client file system.
    pub vfs: Arc<Vfs>,
    /// The exported directory's inode.
    pub root: u64,
    /// Issues and checks this export's handles.
    pub key: HandleKey,
    /// Files open for NFS clients.
    pub files: Arc<OpenFiles>,
    /// `fsid` in attributes: the volume's id.
    pub fsid: u64,
}

/// A directory listing as it arrives: pages in name order, "." and ".." first, appended by a
/// fetch that runs ahead of the client paging through them.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    pages: Vec<Arc<Vec<DirEntry>>>,
    /// How the fetch ended; `None` while pages are still coming.
    end: Option<Result<(), nfsstat3>>,
}

impl Progress {
    fn push(&mut self, page: Vec<DirEntry>) {
        self.pages.push(Arc::new(page));
    }

    /// The entries from position `start` on that have arrived, with their positions.
    pub(crate) fn from(&self, start: usize) -> impl Iterator<Item = (usize, &DirEntry)> {
        let (mut first, mut base) = (0, 0);
        while first < self.pages.len() && base + self.pages[first].len() <= start {
            base += self.pages[first].len();
            first += 1;
        }
        self.pages[first..]
            .iter()
            .flat_map(|p| p.iter())
            .enumerate()
            .skip(start.saturating_sub(base))
            .map(move |(i, e)| (base + i, e))
    }

    /// The listed directory's own attributes (those of its "." entry).
    pub(crate) fn dir_attr(&self) -> Option<strata_meta::Attr> {
        self.pages.first().and_then(|p| p.first()).and_then(|e| e.attr)
    }

    /// How the fetch ended, once it has.
    pub(crate) fn end(&self) -> Option<Result<(), nfsstat3>> {
        self.end
    }
}

struct Listing {
    verf: u64,
    progress: watch::Receiver<Progress>,
    at: Instant,
}

/// Listings kept for clients paging through a directory.
const LISTINGS: usize = 1024;
/// How long a listing is paged from before it is read again.
const LISTING_TTL: Duration = Duration::from_secs(30);
/// Entries fetched before the first reply: a few replies' worth, so that the client's first
/// calls are answered while the rest of a large directory is still being read.
const FIRST_PAGE: u32 = 128;
/// Entries per later fetch: small enough that the fetches keep ahead of a client reading
/// 50 entries per call, large enough that few calls go to the server.
const NEXT_PAGE: u32 = 512;

/// The gateway: exports and protocol state shared by all connections.
pub struct Gateway {
    exports: Vec<Arc<Export>>,
    /// WRITE/COMMIT verifier: new at every start, so clients resend unstable writes a restart
    /// may have lost.
    pub(crate) verf: [u8; 8],
    port: u16,
    listings: Mutex<HashMap<(u32, u64), Listing>>,
    next_listing: std::sync::atomic::AtomicU64,
    /// How long attributes and name lookups are reused (0: always asked).
    pub(crate) attr_ttl: Duration,
    /// Names recently seen in directories, and directories worth reading again whole.
    pub(crate) names: Names,
}

/// Entries a refresh of a directory's names reads at most.
const REFRESH_MAX: usize = 16_384;

impl Gateway {
    /// A gateway over attached exports, answering the portmapper with `port`; attributes and
    /// lookups are reused for `attr_ttl` (as a FUSE mount's kernel does), so another client's
    /// change shows after at most that long, while this gateway's own changes show at once.
    pub fn new(exports: Vec<Arc<Export>>, port: u16, attr_ttl: Duration) -> Arc<Self> {
        let mut verf = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut verf);
        Arc::new(Gateway {
            exports,
            verf,
            port,
            listings: Mutex::new(HashMap::new()),
            next_listing: std::sync::atomic::AtomicU64::new(1),
            attr_ttl,
            names: Names::new(attr_ttl),
        })
    }

    /// The inode a name was found to be recently, if within the attribute lifetime.
    pub(crate) fn cached_name(&self, ex: &Export, dir: u64, name: &[u8]) -> Option<u64> {
        self.names.get(ex.key.export_id(), dir, name)
    }

    /// Remembers what a name is.
    pub(crate) fn remember_name(&self, ex: &Export, dir: u64, name: &[u8], ino: u64) {
        self.remember_names(ex, dir, vec![(name.to_vec(), ino)]);
    }

    /// Remembers what the names of a listing reply are, under one lock.
    pub(crate) fn remember_names(&self, ex: &Export, dir: u64, names: Vec<(Vec<u8>, u64)>) {
        self.names.remember(ex.key.export_id(), dir, names);
    }

    /// Reads a directory's names and their attributes again whole (up to [`REFRESH_MAX`]), a
    /// page per call, and remembers them. A failure (say the caller may not read the
    /// directory) only leaves the names as they were: lookups then ask the server one by one.
    pub(crate) async fn refresh_names(&self, ex: &Export, ctx: &Ctx, dir: u64) {
        let id = ex.key.export_id();
        let (mut after, mut read) = (Vec::new(), 0);
        loop {
            let page = match ex.vfs.list_dir(ctx, dir, true, &after, NEXT_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(dir, error = %e, "refreshing a directory's names");
                    break;
                }
            };
            read += page.entries.len();
            let next = next_after(&page.entries, page.more);
            self.names.remember(id, dir, page.entries.into_iter().map(|e| (e.name, e.ino)).collect());
            match next {
                Some(a) if read < REFRESH_MAX => after = a,
                _ => break,
            }
        }
        tracing::debug!(dir, entries = read, "read a directory's names again");
        self.names.refreshed(id, dir, read);
    }

    /// Forgets a name (removed or renamed through this gateway), and the attributes of what it
    /// named, whose link count changed.
    pub(crate) fn forget_name(&self, ex: &Export, dir: u64, name: &[u8]) {
        if let Some(ino) = self.names.forget(ex.key.export_id(), dir, name) {
            ex.vfs.forget_attr(ino);
        }
    }

    /// The exports.
    pub fn exports(&self) -> &[Arc<Export>] {
        &self.exports
    }

    /// The export and inode a handle names, for a client at `peer`.
    pub(crate) fn resolve(&self, fh: &[u8], peer: IpAddr) -> Result<(Arc<Export>, u64), nfsstat3> {
        let id = export_of(fh).map_err(|_| nfsstat3::NFS3ERR_BADHANDLE)?;
        let ex = self.exports.iter().find(|e| e.key.export_id() == id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        if !ex.spec.allows(peer) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let ino = ex.key.decode(fh).map_err(|e| match e {
            HandleError::Malformed => nfsstat3::NFS3ERR_BADHANDLE,
            HandleError::Stale => nfsstat3::NFS3ERR_STALE,
        })?;
        Ok((ex.clone(), ino))
    }

    /// A directory's entries: the listing a client is paging through (same verifier), or a
    /// fresh one. A client continuing with a verifier the gateway no longer has gets a fresh
    /// listing from the same position rather than an error, as most servers do.
    ///
    /// A fresh listing holds the directory's first page at once; the rest is fetched in the
    /// background, page by page, while the client reads the first.
    pub(crate) async fn listing(
        &self,
        ex: &Export,
        ctx: &Ctx,
        dir: u64,
        cookie: u64,
        verf: u64,
        plus: bool,
    ) -> Result<(u64, watch::Receiver<Progress>), nfsstat3> {
        let key = (ex.key.export_id(), dir);
        if cookie != 0 {
            let m = self.listings.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = m.get(&key).filter(|l| l.verf == verf && l.at.elapsed() < LISTING_TTL) {
                return Ok((l.verf, l.progress.clone()));
            }
        }
        let page =
            ex.vfs.list_dir(ctx, dir, plus, &[], FIRST_PAGE).await.map_err(|e| crate::attr::handle_status(&e))?;
        self.names.listed(ex.key.export_id(), dir);
        let after = next_after(&page.entries, page.more);
        let mut first = Vec::with_capacity(page.entries.len() + 2);
        first.extend(ex.vfs.dots(dir, page.dir));
        first.extend(page.entries);
        let mut progress = Progress::default();
        progress.push(first);
        if after.is_none() {
            progress.end = Some(Ok(()));
        }
        let (tx, rx) = watch::channel(progress);
        if let Some(after) = after {
            tokio::spawn(fetch_rest(ex.vfs.clone(), ctx.clone(), dir, plus, after, tx));
        }
        let verf = self.next_listing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut m = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= LISTINGS {
            m.retain(|_, l| l.at.elapsed() < LISTING_TTL);
            if m.len() >= LISTINGS
                && let Some(oldest) = m.iter().min_by_key(|(_, l)| l.at).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        m.insert(key, Listing { verf, progress: rx.clone(), at: Instant::now() });
        Ok((verf, rx))
    }

    /// Answers one call with a framed reply record; `None` when nothing can be answered.
    pub async fn dispatch(&self, peer: IpAddr, record: &[u8]) -> Option<Reply> {
        let mut call = match rpc::parse_call(record) {
            Ok(c) => c,
            Err(rpc::BadCall::RpcMismatch(xid)) => return Some(Reply::framed(rpc::frame(rpc::rpc_mismatch(xid)))),
            Err(rpc::BadCall::BadCred(xid)) => {
                return Some(Reply::framed(rpc::frame(rpc::auth_error(xid, rpc::AUTH_BADCRED))));
            }
            Err(rpc::BadCall::NotACall | rpc::BadCall::Unanswerable(_)) => return None,
        };
        if call.flavor != rpc::AUTH_NULL && call.flavor != rpc::AUTH_UNIX {
            return Some(Reply::framed(rpc::frame(rpc::auth_error(call.xid, rpc::AUTH_TOOWEAK))));
        }
        let xid = call.xid;
        let reply = match (call.prog, call.vers) {
            (NFS, 3) => {
                // Record mark (set below) and accepted-reply header, then the result in place.
                let mut out = Reply { head: Vec::with_capacity(512), data: Vec::new() };
                out.head.extend_from_slice(&[0; 4]);
                out.head.extend_from_slice(&rpc::accepted(xid, Accept::Success));
                let cred = call.cred.clone();
                return Some(match self.nfs(peer, cred.as_ref(), call.proc_, &mut call.args, &mut out).await {
                    Outcome::Done => {
                        out.seal();
                        out
                    }
                    Outcome::Garbage(e) => Reply::framed(rpc::frame(garbage(xid, call.prog, call.proc_, &e))),
                    Outcome::NoProc => Reply::framed(rpc::frame(rpc::accepted(xid, Accept::ProcUnavail))),
                });
            }
            (MOUNT, 3) => match self.mount(peer, &mut call).await {
                Ok(Some(body)) => success(xid, &body),
                Ok(None) => rpc::accepted(xid, Accept::ProcUnavail),
                Err(e) => garbage(xid, call.prog, call.proc_, &e),
            },
            (PORTMAP, 2) => match self.portmap(&mut call) {
                Ok(Some(body)) => success(xid, &body),
                Ok(None) => rpc::accepted(xid, Accept::ProcUnavail),
                Err(e) => garbage(xid, call.prog, call.proc_, &e),
            },
            (NFS | MOUNT, _) => rpc::accepted(xid, Accept::ProgMismatch(3, 3)),
            (PORTMAP, _) => rpc::accepted(xid, Accept::ProgMismatch(2, 2)),
            _ => rpc::accepted(xid, Accept::ProgUnavail),
        };
        Some(Reply::framed(rpc::frame(reply)))
    }

    /// The MOUNT program (RFC 1813, appendix I).
    async fn mount(&self, peer: IpAddr, call: &mut Call<'_>) -> Result<Option<Vec<u8>>, XdrError> {
        let Some(m) = decode_mount(call.proc_, &mut call.args)? else { return Ok(None) };
        let mut out = Vec::new();
        match m {
            MountCall::Null | MountCall::UmntAll | MountCall::Umnt(_) => {}
            MountCall::Mnt(path) => {
                let res = self.mnt(peer, call.cred.as_ref(), path).await;
                let shown = String::from_utf8_lossy(path);
                match &res {
                    Ok(_) => tracing::info!(client = %peer, path = %shown, "mounted"),
                    Err(st) => tracing::info!(client = %peer, path = %shown, status = %st, "mount refused"),
                }
                let reply = match res {
                    Ok(fh) => mountres3::Ok(mountres3_ok {
                        fhandle: fhandle3(Opaque::owned(fh)),
                        auth_flavors: vec![rpc::AUTH_UNIX, rpc::AUTH_NULL],
                    }),
                    Err(st) => mountres3::Err(st),
                };
                pack_into(&mut out, &reply);
            }
            // The gateway keeps no list of mounts.
            MountCall::Dump => put_u32(&mut out, 0),
            MountCall::Export => {
                let list: exports = List(
                    self.exports
                        .iter()
                        .map(|e| export_node {
                            ex_dir: dirpath(Opaque::owned(e.spec.path.clone().into_bytes())),
                            ex_groups: List(
                                e.spec
                                    .allow
                                    .iter()
                                    .map(|n| nfs3_types::mount::name(Opaque::owned(n.to_string().into_bytes())))
                                    .collect(),
                            ),
                        })
                        .collect(),
                );
                pack_into(&mut out, &list);
            }
        }
        Ok(Some(out))
    }

    /// MNT: the handle of an export's directory (or of a directory below it).
    async fn mnt(&self, peer: IpAddr, cred: Option<&rpc::UnixCred>, path: &[u8]) -> Result<Vec<u8>, mountstat3> {
        let path = std::str::from_utf8(path).map_err(|_| mountstat3::MNT3ERR_INVAL)?;
        let path = crate::export::normalize(path).ok_or(mountstat3::MNT3ERR_INVAL)?;
        let ex = self
            .exports
            .iter()
            .filter(|e| path == e.spec.path || e.spec.path == "/" || path.starts_with(&format!("{}/", e.spec.path)))
            .max_by_key(|e| e.spec.path.len())
            .ok_or(mountstat3::MNT3ERR_NOENT)?;
        if !ex.spec.allows(peer) {
            return Err(mountstat3::MNT3ERR_ACCES);
        }
        let ctx = ex.spec.ctx(cred);
        let mut ino = ex.root;
        for part in path[ex.spec.path.len()..].split('/').filter(|p| !p.is_empty()) {
            let (next, a) = ex.vfs.lookup(&ctx, ino, part.as_bytes()).await.map_err(|e| match e.errno() {
                libc::ENOENT => mountstat3::MNT3ERR_NOENT,
                libc::EACCES | libc::EPERM => mountstat3::MNT3ERR_ACCES,
                libc::ENOTDIR => mountstat3::MNT3ERR_NOTDIR,
                _ => mountstat3::MNT3ERR_IO,
            })?;
            if a.kind != FileType::Dir {
                return Err(mountstat3::MNT3ERR_NOTDIR);
            }
            ino = next;
        }
        Ok(ex.key.encode(ino))
    }

    /// Enough of the portmapper (version 2) for clients to find the gateway's one port.
    fn portmap(&self, call: &mut Call<'_>) -> Result<Option<Vec<u8>>, XdrError> {
        let Some(p) = decode_portmap(call.proc_, &mut call.args)? else { return Ok(None) };
        let mut out = Vec::new();
        const TCP: u32 = 6;
        match p {
            PortmapCall::Null => {}
            PortmapCall::GetPort(prog, vers, prot) => {
                let served = prot == TCP && (prog == NFS || prog == MOUNT) && vers == 3;
                put_u32(&mut out, if served { u32::from(self.port) } else { 0 });
            }
            PortmapCall::Dump => {
                for (prog, vers) in [(NFS, 3), (MOUNT, 3), (PORTMAP, 2)] {
                    put_u32(&mut out, 1);
                    for v in [prog, vers, TCP, u32::from(self.port)] {
                        put_u32(&mut out, v);
                    }
                }
                put_u32(&mut out, 0);
            }
        }
        Ok(Some(out))
    }

    /// Closes files idle for `idle`, committing what was written to them.
    pub async fn close_idle(&self, idle: Duration) -> usize {
        let mut n = 0;
        for e in &self.exports {
            n += e.files.close_idle(idle).await;
        }
        n
    }
}

fn success(xid: u32, body: &[u8]) -> Vec<u8> {
    let mut r = rpc::accepted(xid, Accept::Success);
    r.extend_from_slice(body);
    r
}

fn garbage(xid: u32, prog: u32, proc_: u32, e: &XdrError) -> Vec<u8> {
    tracing::debug!(prog, proc_, error = %e, "undecodable arguments");
    rpc::accepted(xid, Accept::GarbageArgs)
}

/// The name the next page of a listing starts after, when one follows `entries`.
fn next_after(entries: &[DirEntry], more: bool) -> Option<Vec<u8>> {
    entries.last().filter(|_| more).map(|e| e.name.clone())
}

/// Fetches a directory's pages after the name `after` into `tx` until the last, or until
/// nobody reads the listing any more.
async fn fetch_rest(vfs: Arc<Vfs>, ctx: Ctx, dir: u64, plus: bool, mut after: Vec<u8>, tx: watch::Sender<Progress>) {
    loop {
        if tx.is_closed() {
            return;
        }
        match vfs.list_dir(&ctx, dir, plus, &after, NEXT_PAGE).await {
            Ok(page) => {
                let next = next_after(&page.entries, page.more);
                let done = next.is_none();
                tx.send_modify(|p| {
                    p.push(page.entries);
                    if done {
                        p.end = Some(Ok(()));
                    }
                });
                match next {
                    Some(n) => after = n,
                    None => return,
                }
            }
            Err(e) => {
                tx.send_modify(|p| p.end = Some(Err(crate::attr::handle_status(&e))));
                return;
            }
        }
    }
}
