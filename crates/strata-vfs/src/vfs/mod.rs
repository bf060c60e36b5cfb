//! The client file system: POSIX operations in terms of metadata RPCs and block I/O, shared by
//! every front-end (the FUSE mount, the NFS and S3 gateways).
//!
//! Consistency: close-to-open. `open` fetches fresh attributes and drops cached slice lists if
//! the file changed; `flush`/`close` commit buffered writes. A client always sees its own
//! writes: reads of a file with uncommitted data commit it first.
//!
//! The methods are grouped by path: attaching and detaching a volume (`attach`), names and
//! directories (`namespace`, with path walks and the name cache in `paths`), open files
//! (`files`), reads (`read`), writes and commits (`write`), quota and `statfs` (`quota`), and
//! extended attributes and locks (`locks_xattrs`).

pub mod attach;
mod files;
mod lease;
mod locks_xattrs;
mod namespace;
mod paths;
mod quota;
mod read;
mod warm;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_blocks::{BlockCache, BlockStore, Codec, DiskCache};
use strata_proto::conv::{attr_from_pb, volume_from_pb};
use strata_proto::pb;
use strata_types::{Attr, CHUNK_SIZE, Slice, VolumeInfo};
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::config::{BlocksMode, VfsConfig, blocks_route};
use crate::dircache::DirCache;
use crate::error::{Result, VfsError};
use crate::names::Names;
use crate::writer::{FileWriter, WriteShared};

use files::send_closes;
pub use locks_xattrs::{ByteLock, UNLOCK, VIRTUAL_XATTR_PREFIX};
pub use namespace::{DirEntry, DirPage};
use read::ReadState;
pub use warm::{CacheStats, Cached, Warmed};
use write::commit_old_writes;

struct Handle {
    ino: u64,
    write: bool,
    read: Mutex<ReadState>,
    dir: Option<Vec<DirEntry>>,
    /// The server counts this handle's file as open here (see [`Vfs::open_created`]).
    counted: bool,
}

#[derive(Default)]
struct InodeCache {
    attr: Option<Attr>,
    /// When `attr` came from the server.
    seen: Option<Instant>,
    chunks: HashMap<u32, Arc<Vec<Slice>>>,
}

/// How fresh attributes compare with what this client saw before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Never seen (or forgotten).
    New,
    /// Same size and modification time.
    Same,
    /// The file changed.
    Changed,
}

/// An opened file.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    /// Handle for later calls.
    pub fh: u64,
    /// The kernel's cached pages of the file are still valid.
    pub keep_cache: bool,
    /// The file changed since this client last saw it: attributes the kernel caches are stale.
    pub changed: bool,
}

/// File system statistics for `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    /// Total bytes.
    pub total: u64,
    /// Free bytes.
    pub free: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
}

/// A mounted volume, as seen by one client.
pub struct Vfs {
    client: Arc<Client>,
    volume: VolumeInfo,
    store: BlockStore,
    cache: Arc<BlockCache>,
    shared: WriteShared,
    writers: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<FileWriter>>>>,
    inodes: Mutex<HashMap<u64, InodeCache>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Directory attributes from this client's own changes, each used once (see `getattr`).
    changed_dirs: Mutex<HashMap<u64, (Attr, Instant)>>,
    pending_closes: Arc<std::sync::atomic::AtomicUsize>,
    closes: tokio::sync::mpsc::UnboundedSender<u64>,
    compacting: Mutex<std::collections::HashSet<(u64, u32)>>,
    /// Blocks read in part lately (a second partial read fetches the block whole).
    ranged: read::RangedBlocks,
    /// The volume's byte quota as last reported (0: none).
    quota_capacity: AtomicU64,
    /// The volume's use as last reported.
    quota_used: AtomicU64,
    /// Growth buffered by this client and not yet committed.
    pending_growth: AtomicU64,
    me: std::sync::Weak<Vfs>,
    next_fh: AtomicU64,
    ids: tokio::sync::Mutex<(u64, u64)>,
    prefetch: Arc<Semaphore>,
    qos: crate::qos::Qos,
    cfg: VfsConfig,
    /// Names recently looked up through [`Vfs::lookup_cached`], and directories worth reading
    /// again whole.
    names: Names,
    /// Directories read whole, for lookups (FUSE mounts; see `dircache.rs`).
    dircache: DirCache,
    /// Attributes seen before this are not reused under a lease: this client changed an inode
    /// it could not name (a removed or replaced entry no listing held).
    attrs_valid_from: Mutex<Instant>,
    /// The task keeping the session alive (see [`Vfs::attach`]).
    keepalive: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The volume's peer caches, with a peer cache on (see [`crate::peer`]).
    peers: Option<Arc<crate::peer::Peers>>,
    /// The task serving this client's blocks to its peers.
    peer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn attr_of(p: Option<pb::Attr>) -> Result<(u64, Attr)> {
    p.as_ref().and_then(attr_from_pb).ok_or_else(|| VfsError::Server("malformed attributes from server".into()))
}

impl Vfs {
    /// A client file system over a registered session. The volume's storage class sets the
    /// block compression, the mount's QoS limits and cache defaults (see [`VfsConfig`]).
    fn new(client: Arc<Client>, mount: pb::MountResp, cfg: VfsConfig) -> Result<Arc<Self>> {
        let volume =
            mount.volume.map(volume_from_pb).ok_or_else(|| VfsError::Server("mount reply without volume".into()))?;
        if mount.chunk_size != CHUNK_SIZE {
            return Err(VfsError::Server(format!(
                "server uses {}-byte chunks, this client {CHUNK_SIZE}: versions do not match",
                mount.chunk_size
            )));
        }
        let codec = Codec::parse(&volume.compression).map_err(|e| {
            VfsError::errno_msg(libc::EPROTONOSUPPORT, format!("volume {:?}: {e}; upgrade this client", volume.name))
        })?;
        let cfg = cfg.for_volume(&volume);
        let qos = crate::qos::Qos::new(volume.qos_bytes_per_sec, volume.qos_ops_per_sec);
        if qos.is_limited() || codec.is_compressing() {
            tracing::info!(
                volume = %volume.name,
                compression = codec.name(),
                bytes_per_sec = qos.bytes_per_sec(),
                ops_per_sec = qos.ops_per_sec(),
                "storage class settings"
            );
        }
        let (route, why) = match cfg.blocks {
            BlocksMode::Auto => {
                let decide = || blocks_route(BlocksMode::Auto, &volume.store, &mount.store_id);
                // A stat and a tiny read, once: moved off the worker where the runtime allows.
                if tokio::runtime::Handle::try_current()
                    .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
                {
                    tokio::task::block_in_place(decide)
                } else {
                    decide()
                }
            }
            m => blocks_route(m, &volume.store, &mount.store_id),
        };
        tracing::info!(volume = %volume.name, blocks = route.name(), store = %volume.store, reason = why, "block path");
        let store = match route {
            BlocksMode::Server => {
                crate::remote::RemoteBlocks::new(client.server(), client.token(), volume.id, client.retry_timeout())?
                    .block_store(&volume.store, codec)
            }
            _ => {
                let url = strata_blocks::s3::with_retry_timeout(&volume.store, cfg.store_retry_timeout);
                BlockStore::open_with(&url, codec)?
            }
        };
        let store = match &cfg.store_layer {
            Some(layer) => BlockStore::from_store(layer.wrap(store.object_store()), store.url()).with_codec(codec),
            None => store,
        };
        let disk = match (&cfg.disk_cache, store.is_local()) {
            (Some((dir, size)), false) => open_disk_cache(dir, *size, &volume)?,
            _ => None,
        };
        let cache = Arc::new(BlockCache::new(cfg.mem_cache, disk));
        let shared = WriteShared {
            cache_large_writes: cfg.cache_large_writes,
            ..WriteShared::new(
                store.clone(),
                cache.clone(),
                volume.id,
                volume.block_size,
                cfg.buffer,
                cfg.upload_parallel,
            )
        };
        let peers = match cfg.peer_cache {
            Some(addr) => {
                let p = crate::peer::Peers::new(&addr.to_string(), client.token(), cfg.peer_timeout)?;
                p.set(mount.peers.clone());
                Some(p)
            }
            None => None,
        };
        let pending_closes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (close_tx, close_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(send_closes(client.clone(), close_rx, pending_closes.clone()));
        let vfs = Arc::new_cyclic(|me| Vfs {
            me: me.clone(),
            compacting: Mutex::new(std::collections::HashSet::new()),
            ranged: read::RangedBlocks::new(),
            quota_capacity: AtomicU64::new(volume.capacity),
            quota_used: AtomicU64::new(volume.used_bytes),
            pending_growth: AtomicU64::new(0),
            client,
            store,
            cache,
            shared,
            writers: Mutex::new(HashMap::new()),
            inodes: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            changed_dirs: Mutex::new(HashMap::new()),
            pending_closes: pending_closes.clone(),
            closes: close_tx,
            next_fh: AtomicU64::new(1),
            ids: tokio::sync::Mutex::new((0, 0)),
            prefetch: Arc::new(Semaphore::new(cfg.prefetch_parallel.max(1))),
            qos,
            volume,
            names: Names::new(if cfg.name_cache { cfg.attr_ttl } else { Duration::ZERO }),
            dircache: DirCache::new(if cfg.dir_cache { cfg.attr_ttl } else { Duration::ZERO }),
            attrs_valid_from: Mutex::new(Instant::now()),
            keepalive: Mutex::new(None),
            peers,
            peer_task: Mutex::new(None),
            cfg,
        });
        tokio::spawn(commit_old_writes(Arc::downgrade(&vfs)));
        if vfs.dircache.enabled() {
            tokio::spawn(lease::watch_changes(Arc::downgrade(&vfs)));
        }
        Ok(vfs)
    }

    /// The volume's root inode.
    pub fn root(&self) -> u64 {
        self.volume.root
    }

    /// The attached volume, as described when it was attached.
    pub fn volume(&self) -> &VolumeInfo {
        &self.volume
    }

    /// The configuration in force (the mount's, with the volume's class defaults applied).
    pub fn config(&self) -> &VfsConfig {
        &self.cfg
    }

    /// The mount's QoS limits.
    pub fn qos(&self) -> &crate::qos::Qos {
        &self.qos
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic while holding one of these maps leaves plain data; keep serving.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records attributes fresh from the server and says how they compare with what this
    /// client saw before; a changed file loses its cached slice lists.
    fn observe(&self, ino: u64, fresh: &Attr) -> Seen {
        Self::note_seen(&mut self.inode_cache(), ino, fresh, Instant::now())
    }

    /// The per-inode cache, pruned to the open inodes when it has grown large.
    fn inode_cache(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InodeCache>> {
        let mut m = Self::lock(&self.inodes);
        if m.len() > 200_000 {
            let open: std::collections::HashSet<u64> = Self::lock(&self.handles).values().map(|h| h.ino).collect();
            m.retain(|k, _| open.contains(k));
        }
        m
    }

    /// [`Vfs::observe`] inside a held cache lock (one lock for a whole listing).
    fn note_seen(m: &mut HashMap<u64, InodeCache>, ino: u64, fresh: &Attr, now: Instant) -> Seen {
        let c = m.entry(ino).or_default();
        let seen = match c.attr {
            None => Seen::New,
            Some(old) if old.mtime == fresh.mtime && old.size == fresh.size => Seen::Same,
            Some(_) => Seen::Changed,
        };
        if seen != Seen::Same {
            c.chunks.clear();
        }
        c.attr = Some(*fresh);
        c.seen = Some(now);
        seen
    }

    fn writer(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<FileWriter>>> {
        Self::lock(&self.writers).get(&ino).cloned()
    }

    /// Overlays uncommitted local writes on server attributes.
    async fn overlay(&self, ino: u64, mut a: Attr) -> Attr {
        if let Some(w) = self.writer(ino) {
            Self::overlay_with(&*w.lock().await, &mut a);
        }
        a
    }

    fn overlay_with(w: &FileWriter, a: &mut Attr) {
        if w.is_dirty() {
            a.size = a.size.max(w.end);
            if let Some(t) = w.mtime {
                a.mtime = a.mtime.max(t);
                a.ctime = a.ctime.max(t);
            }
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        Self::lock(&self.handles).insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        Self::lock(&self.handles).get(&fh).cloned().ok_or_else(|| VfsError::from_errno(libc::EBADF))
    }

    /// The inode behind a handle.
    pub fn handle_ino(&self, fh: u64) -> Result<u64> {
        Ok(self.handle(fh)?.ino)
    }

    /// Bytes held by the memory block cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.mem_bytes()
    }

    /// The attributes last seen from the server for an inode, if any (no round trip).
    pub fn cached_attr(&self, ino: u64) -> Option<Attr> {
        Self::lock(&self.inodes).get(&ino).and_then(|c| c.attr)
    }

    /// Attributes no older than `max_age` (with this client's uncommitted writes), from what
    /// was last seen or else from the server: a front-end's attribute cache, like the kernel's
    /// for FUSE mounts.
    pub async fn getattr_within(&self, ino: u64, max_age: Duration) -> Result<Attr> {
        let cached = Self::lock(&self.inodes)
            .get(&ino)
            .and_then(|c| c.attr.zip(c.seen))
            .filter(|(_, seen)| seen.elapsed() < max_age)
            .map(|(a, _)| a);
        match cached {
            Some(a) => Ok(self.overlay(ino, a).await),
            None => self.getattr(ino).await,
        }
    }

    /// Attributes read under a listing's lease (see `dircache.rs`) that still hold: of an inode
    /// a valid listing names (not a file with several links), read within the lease, and after
    /// the last change of this client to an inode it could not name.
    fn leased_attr(&self, ino: u64) -> Option<Attr> {
        if !self.dircache.enabled() || !self.dircache.names_ino(ino) {
            return None;
        }
        let from = *Self::lock(&self.attrs_valid_from);
        Self::lock(&self.inodes)
            .get(&ino)
            .and_then(|c| c.attr.zip(c.seen))
            .filter(|(_, seen)| *seen >= from && self.dircache.fresh(*seen))
            // Another link's removal elsewhere would change the count unnoticed.
            .filter(|(a, _)| a.kind == strata_types::FileType::Dir || a.nlink <= 1)
            .map(|(a, _)| a)
    }

    /// No attribute seen until now is reused under a lease.
    fn attrs_stale_now(&self) {
        *Self::lock(&self.attrs_valid_from) = Instant::now();
    }

    /// Stops reusing the attributes seen of an inode under a lease (they changed), keeping
    /// them to tell at the next open whether the file changed.
    fn expire_attr(&self, ino: u64) {
        if let Some(c) = Self::lock(&self.inodes).get_mut(&ino) {
            c.seen = None;
        }
    }

    /// Forgets the attributes seen of an inode (it was removed or changed elsewhere).
    pub fn forget_attr(&self, ino: u64) {
        if let Some(c) = Self::lock(&self.inodes).get_mut(&ino) {
            c.attr = None;
            c.seen = None;
        }
    }
}

/// The disk cache of `volume` under `base`: a directory of its own per volume and store
/// (`NAME-HASH`, the hash over the store URL, the volume's id and creation time, so a volume
/// made again under an old name and id never reads the old one's blocks), reused by the next
/// mount of the volume on this host. A directory another live mount holds is skipped for the
/// next one (`NAME-HASH.1`, ...); with all taken, the mount has no disk cache.
fn open_disk_cache(base: &std::path::Path, size: u64, volume: &VolumeInfo) -> Result<Option<DiskCache>> {
    const TRIES: usize = 4;
    let who = format!("{}\u{1f}{}\u{1f}{}", volume.id, volume.created_sec, volume.store);
    let name: String =
        volume.name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let stem = format!("{name}-{:016x}", crate::peer::hash2("disk-cache", &who));
    let dir = base.join(&stem);
    for i in 0..TRIES {
        let d = if i == 0 { dir.clone() } else { base.join(format!("{stem}.{i}")) };
        match DiskCache::open(d, size) {
            Ok(c) => {
                tracing::info!(volume = %volume.name, dir = %c.dir().display(), size, "disk cache");
                return Ok(Some(c));
            }
            Err(strata_blocks::BlockError::Busy(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    tracing::warn!(volume = %volume.name, dir = %dir.display(), "disk cache directories all in use by other mounts; no disk cache");
    Ok(None)
}
