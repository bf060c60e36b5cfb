//! The client file system: POSIX operations in terms of metadata RPCs and block I/O, shared by
//! every front-end (FUSE today; NFS and S3 gateways later).
//!
//! Consistency: close-to-open. `open` fetches fresh attributes and drops cached slice lists if
//! the file changed; `flush`/`close` commit buffered writes. A client always sees its own
//! writes: reads of a file with uncommitted data commit it first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use strata_blocks::layout::{Source, block_key, chunk_pieces, visible};
use strata_blocks::{BlockCache, BlockError, BlockStore, Codec, DiskCache};
use strata_meta::{Attr, CHUNK_SIZE, Ctx, FileType, SetAttr, Slice};
use strata_proto::conv::*;
use strata_proto::pb;
use strata_proto::wire::Method;
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::error::{Result, VfsError};
use crate::writer::{FileWriter, WriteShared};

/// Client tunables.
///
/// The volume's storage class may supply defaults for the memory cache and the read-ahead
/// (`VolumeInfo::cache_mem_bytes`, `readahead_bytes`): they replace `mem_cache` and `readahead`
/// unless the mount set those explicitly (`mem_cache_explicit`, `readahead_explicit`).
#[derive(Clone, Debug)]
pub struct VfsConfig {
    /// Memory block cache size in bytes.
    pub mem_cache: u64,
    /// `mem_cache` was chosen by the user: the class's cache default does not replace it.
    pub mem_cache_explicit: bool,
    /// Local disk block cache (directory and size) for stores that are not local.
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
    /// Write-back buffer in bytes.
    pub buffer: u64,
    /// Concurrent block uploads.
    pub upload_parallel: usize,
    /// Largest read-ahead window in bytes (0: no read-ahead).
    pub readahead: u64,
    /// `readahead` was chosen by the user: the class's read-ahead default does not replace it.
    pub readahead_explicit: bool,
    /// Concurrent read-ahead fetches.
    pub prefetch_parallel: usize,
    /// How long the kernel caches attributes; directory attributes returned by this client's
    /// own changes are served from memory for at most this long.
    pub attr_ttl: Duration,
    /// How long block reads and writes retry an unreachable object store before failing
    /// with EIO (S3 stores; a long value makes I/O wait for the store to come back).
    pub store_retry_timeout: Duration,
    /// Whether blocks are read and written in the volume's store directly or through the
    /// server.
    pub blocks: BlocksMode,
}

/// Where a mount reads and writes blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlocksMode {
    /// Directly when this host sees the volume's store as the server does, else through the
    /// server (see [`blocks_route`]).
    #[default]
    Auto,
    /// Always directly in the volume's store (a shared directory or an object store).
    Direct,
    /// Always through `strata server`'s `Blocks` service.
    Server,
}

impl BlocksMode {
    /// The mode's name, as the mount option spells it.
    pub fn name(self) -> &'static str {
        match self {
            BlocksMode::Auto => "auto",
            BlocksMode::Direct => "direct",
            BlocksMode::Server => "server",
        }
    }
}

/// Decides how blocks go for a volume whose store is `store_url`, given the id the server
/// reports for it (`MountResp::store_id`): `Direct` or `Server` (never `Auto`) and why. An
/// explicit mode is kept. Object stores are reached directly. A block directory is used
/// directly only if it exists on this host and holds the server's id, i.e. this host sees the
/// server's own directory (a same-named local directory would be another disk); a server that
/// reports no id cannot serve blocks, so the directory is used directly as before. Reads a
/// small file: call it where blocking is allowed.
pub fn blocks_route(mode: BlocksMode, store_url: &str, store_id: &str) -> (BlocksMode, &'static str) {
    if mode != BlocksMode::Auto {
        return (mode, "chosen with --blocks");
    }
    let dir = match store_url.strip_prefix("file://") {
        Some(d) => std::path::Path::new(d),
        None if store_url.starts_with('/') => std::path::Path::new(store_url),
        None => return (BlocksMode::Direct, "the volume's store is an object store"),
    };
    if store_id.is_empty() {
        return (BlocksMode::Direct, "the server names no block directory id (an older server)");
    }
    match std::fs::read_to_string(dir.join(strata_blocks::store::STORE_ID_FILE)) {
        Ok(id) if id.trim() == store_id => (BlocksMode::Direct, "this host sees the server's block directory"),
        Ok(_) => (BlocksMode::Server, "the block directory here is not the server's (its id differs)"),
        Err(_) => (BlocksMode::Server, "the server's block directory is not visible on this host"),
    }
}

impl VfsConfig {
    /// Default memory block cache size.
    pub const DEFAULT_MEM_CACHE: u64 = 512 << 20;
    /// Default largest read-ahead window.
    pub const DEFAULT_READAHEAD: u64 = 64 << 20;

    /// This configuration with the volume's class defaults applied: a non-zero
    /// `cache_mem_bytes` / `readahead_bytes` replaces a setting the mount did not make
    /// explicitly.
    pub fn for_volume(&self, volume: &pb::VolumeInfo) -> VfsConfig {
        let mut cfg = self.clone();
        if !cfg.mem_cache_explicit && volume.cache_mem_bytes > 0 {
            cfg.mem_cache = volume.cache_mem_bytes;
        }
        if !cfg.readahead_explicit && volume.readahead_bytes > 0 {
            cfg.readahead = volume.readahead_bytes;
        }
        cfg
    }
}

impl Default for VfsConfig {
    fn default() -> Self {
        VfsConfig {
            mem_cache: Self::DEFAULT_MEM_CACHE,
            mem_cache_explicit: false,
            disk_cache: None,
            buffer: 512 << 20,
            upload_parallel: 16,
            readahead: Self::DEFAULT_READAHEAD,
            readahead_explicit: false,
            prefetch_parallel: 8,
            attr_ttl: Duration::from_secs(1),
            store_retry_timeout: Duration::from_secs(60),
            blocks: BlocksMode::Auto,
        }
    }
}

/// One page of a directory listing (see [`Vfs::list_dir`]).
#[derive(Clone, Debug)]
pub struct DirPage {
    /// Entries in name order.
    pub entries: Vec<DirEntry>,
    /// The directory's attributes.
    pub dir: Attr,
    /// Whether entries follow the last one.
    pub more: bool,
}

/// A directory entry as the front-end lists it.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode.
    pub ino: u64,
    /// Type.
    pub kind: FileType,
    /// Attributes, when known.
    pub attr: Option<Attr>,
}

/// A handle's read-ahead state: where the last read ended, the window, and how far ahead
/// blocks were already fetched.
#[derive(Default, Debug)]
struct ReadState {
    last_end: u64,
    window: u64,
    prefetched_to: u64,
}

impl ReadState {
    /// Notes a read of `off..end` with read-ahead up to `max` bytes; whether it continues a
    /// sequential stream (within 1 MiB of where the last read ended), after which read-ahead
    /// runs. The window doubles with each sequential read, from 8 MiB; any other read ends
    /// the stream.
    fn note_read(&mut self, off: u64, end: u64, max: u64) -> bool {
        let seq =
            off == self.last_end || (off > self.last_end.saturating_sub(1 << 20) && off <= self.last_end + (1 << 20));
        self.window = if seq { (self.window * 2).clamp(max.min(8 << 20), max) } else { 0 };
        if !seq {
            // A new stream (say the file read again from the start): what was fetched ahead
            // of the old one says nothing about this one.
            self.prefetched_to = end;
        }
        self.last_end = end;
        seq && self.window > 0
    }

    /// The range to fetch ahead of a sequential read that ended at `from`, in a file of
    /// `fsize` bytes (and notes it fetched); `None` when what is already fetched covers
    /// enough of the window.
    fn ahead(&mut self, from: u64, fsize: u64) -> Option<(u64, u64)> {
        let stop = fsize.min(from + self.window);
        let start = from.max(self.prefetched_to);
        if start >= stop || start.saturating_sub(from) > self.window / 2 {
            return None;
        }
        self.prefetched_to = stop;
        Some((start, stop))
    }
}

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
    volume: pb::VolumeInfo,
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
}

fn attr_of(p: Option<pb::Attr>) -> Result<(u64, Attr)> {
    p.as_ref().and_then(attr_from_pb).ok_or_else(|| VfsError::Server("malformed attributes from server".into()))
}

impl Vfs {
    /// A client file system over a registered session. The volume's storage class sets the
    /// block compression, the mount's QoS limits and cache defaults (see [`VfsConfig`]).
    pub fn new(client: Arc<Client>, mount: pb::MountResp, cfg: VfsConfig) -> Result<Arc<Self>> {
        let volume = mount.volume.ok_or_else(|| VfsError::Server("mount reply without volume".into()))?;
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
        let disk = match (&cfg.disk_cache, store.is_local()) {
            (Some((dir, size)), false) => Some(DiskCache::open(dir.clone(), *size)?),
            _ => None,
        };
        let cache = Arc::new(BlockCache::new(cfg.mem_cache, disk));
        let shared = WriteShared::new(
            store.clone(),
            cache.clone(),
            volume.id,
            volume.block_size,
            cfg.buffer,
            cfg.upload_parallel,
        );
        let pending_closes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (close_tx, close_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(send_closes(client.clone(), close_rx, pending_closes.clone()));
        let vfs = Arc::new_cyclic(|me| Vfs {
            me: me.clone(),
            compacting: Mutex::new(std::collections::HashSet::new()),
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
            cfg,
        });
        tokio::spawn(commit_old_writes(Arc::downgrade(&vfs)));
        Ok(vfs)
    }

    /// The volume's root inode.
    pub fn root(&self) -> u64 {
        self.volume.root
    }

    /// The mounted volume.
    pub fn volume(&self) -> &pb::VolumeInfo {
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

    /// The RPC client (for heartbeats and unmount).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
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

    // ---- names ----

    /// Looks a name up in a directory.
    pub async fn lookup(&self, ctx: &Ctx, parent: u64, name: &[u8]) -> Result<(u64, Attr)> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::AttrResp>(Method::Lookup, |_| pb::LookupReq {
                caller: Some(ctx_to_pb(ctx)),
                parent,
                name: name.to_vec(),
            })
            .await?;
        let (ino, a) = attr_of(r.attr)?;
        self.observe(ino, &a);
        let a = self.overlay(ino, a).await;
        Ok((ino, a))
    }

    /// Records directories changed by this client, from a change's reply.
    fn note_dirs(&self, dirs: &[&Option<pb::Attr>]) {
        let mut m = Self::lock(&self.changed_dirs);
        for d in dirs.iter().filter_map(|d| d.as_ref()).filter_map(attr_from_pb) {
            m.insert(d.0, (d.1, Instant::now()));
        }
    }

    /// Current attributes. The kernel forgets a directory's attributes whenever an entry in it
    /// changes and asks again before the next change; if this client made that change within
    /// the attribute lifetime, the reply it got already holds the answer.
    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        if let Some((a, at)) = Self::lock(&self.changed_dirs).remove(&ino)
            && at.elapsed() < self.cfg.attr_ttl
        {
            return Ok(a);
        }
        self.qos.op().await;
        let r = self.client.call::<_, pb::AttrResp>(Method::GetAttr, |_| pb::InoReq { ino }).await?;
        let (_, a) = attr_of(r.attr)?;
        self.observe(ino, &a);
        Ok(self.overlay(ino, a).await)
    }

    /// Changes attributes; a size change commits pending writes first.
    pub async fn setattr(&self, ctx: &Ctx, ino: u64, req: &SetAttr) -> Result<Attr> {
        self.qos.op().await;
        if req.size.is_some() {
            self.commit(ino, false).await?;
        }
        let msg = setattr_to_pb(ctx, ino, req);
        let r = self.client.call::<_, pb::AttrResp>(Method::SetAttr, |_| msg.clone()).await?;
        let (_, a) = attr_of(r.attr)?;
        if req.size.is_some() {
            // Slices changed under any cached list.
            Self::lock(&self.inodes).entry(ino).or_default().chunks.clear();
        }
        self.observe(ino, &a);
        Ok(self.overlay(ino, a).await)
    }

    #[allow(clippy::too_many_arguments)]
    async fn make(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        kind: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        target: &[u8],
        excl: bool,
        open: bool,
    ) -> Result<(u64, Attr, bool)> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::MknodResp>(Method::Mknod, |session| pb::MknodReq {
                caller: Some(ctx_to_pb(ctx)),
                parent,
                name: name.to_vec(),
                kind: kind.code(),
                mode,
                umask,
                rdev,
                target: target.to_vec(),
                excl,
                session: if open { session } else { 0 },
            })
            .await?;
        let (ino, a) = attr_of(r.attr)?;
        self.observe(ino, &a);
        self.note_dirs(&[&r.parent]);
        Ok((ino, a, r.created))
    }

    /// Creates a special file or an empty regular file.
    pub async fn mknod(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<(u64, Attr)> {
        let kind = FileType::from_mode(mode).ok_or_else(|| VfsError::from_errno(libc::EINVAL))?;
        if kind == FileType::Dir || kind == FileType::Symlink {
            return Err(VfsError::from_errno(libc::EINVAL));
        }
        let (ino, a, _) = self.make(ctx, parent, name, kind, mode, umask, rdev, &[], true, false).await?;
        Ok((ino, a))
    }

    /// Creates a directory.
    pub async fn mkdir(&self, ctx: &Ctx, parent: u64, name: &[u8], mode: u32, umask: u32) -> Result<(u64, Attr)> {
        let (ino, a, _) = self.make(ctx, parent, name, FileType::Dir, mode, umask, 0, &[], true, false).await?;
        Ok((ino, a))
    }

    /// Creates a symbolic link.
    pub async fn symlink(&self, ctx: &Ctx, parent: u64, name: &[u8], target: &[u8]) -> Result<(u64, Attr)> {
        let (ino, a, _) = self.make(ctx, parent, name, FileType::Symlink, 0o777, 0, 0, target, true, false).await?;
        Ok((ino, a))
    }

    /// Adds a hard link.
    pub async fn link(&self, ctx: &Ctx, ino: u64, parent: u64, name: &[u8]) -> Result<Attr> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::AttrResp>(Method::Link, |_| pb::LinkReq {
                caller: Some(ctx_to_pb(ctx)),
                ino,
                new_parent: parent,
                new_name: name.to_vec(),
            })
            .await?;
        let (_, a) = attr_of(r.attr)?;
        self.observe(ino, &a);
        self.note_dirs(&[&r.parent]);
        Ok(self.overlay(ino, a).await)
    }

    /// Removes a file name.
    pub async fn unlink(&self, ctx: &Ctx, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(Method::Unlink, ctx, parent, name).await
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, ctx: &Ctx, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(Method::Rmdir, ctx, parent, name).await
    }

    async fn remove(&self, method: Method, ctx: &Ctx, parent: u64, name: &[u8]) -> Result<()> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::DirChange>(method, |_| pb::NameReq {
                caller: Some(ctx_to_pb(ctx)),
                parent,
                name: name.to_vec(),
            })
            .await?;
        self.note_dirs(&[&r.parent, &r.new_parent]);
        Ok(())
    }

    /// Renames (flags: RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2).
    pub async fn rename(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::DirChange>(Method::Rename, |_| pb::RenameReq {
                caller: Some(ctx_to_pb(ctx)),
                parent,
                name: name.to_vec(),
                new_parent: newparent,
                new_name: newname.to_vec(),
                flags,
            })
            .await?;
        self.note_dirs(&[&r.parent, &r.new_parent]);
        Ok(())
    }

    /// Target of a symbolic link.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.qos.op().await;
        Ok(self.client.call::<_, pb::BytesResp>(Method::Readlink, |_| pb::InoReq { ino }).await?.data)
    }

    // ---- directories ----

    /// Opens a directory, reading its whole listing (with attributes when `plus`).
    pub async fn opendir(&self, ctx: &Ctx, ino: u64, plus: bool) -> Result<u64> {
        let page = self.list_dir(ctx, ino, plus, &[], 0).await?;
        let mut entries = Vec::with_capacity(page.entries.len() + 2);
        entries.extend(self.dots(ino, page.dir));
        entries.extend(page.entries);
        Ok(self.add_handle(Handle { ino, write: false, read: Mutex::default(), dir: Some(entries), counted: false }))
    }

    /// The "." and ".." entries of directory `ino`, whose attributes are `dir` (".." of the
    /// volume's root is the root itself).
    pub fn dots(&self, ino: u64, dir: Attr) -> [DirEntry; 2] {
        let parent = if ino == self.volume.root { ino } else { dir.parent };
        [
            DirEntry { name: b".".to_vec(), ino, kind: FileType::Dir, attr: Some(dir) },
            DirEntry { name: b"..".to_vec(), ino: parent, kind: FileType::Dir, attr: None },
        ]
    }

    /// One page of a directory's entries in name order, without "." and "..": those after the
    /// name `after` (from the first when empty), at most `limit` (0: all), with this client's
    /// buffered writes shown in the sizes; with the directory's attributes and whether more
    /// entries follow.
    pub async fn list_dir(&self, ctx: &Ctx, ino: u64, plus: bool, after: &[u8], limit: u32) -> Result<DirPage> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::ReaddirResp>(Method::Readdir, |_| pb::ReaddirReq {
                caller: Some(ctx_to_pb(ctx)),
                ino,
                plus,
                after: after.to_vec(),
                limit,
            })
            .await?;
        let dir = match r.dir.as_ref().and_then(attr_from_pb) {
            Some((_, a)) => {
                self.observe(ino, &a);
                a
            }
            // A server that predates listing pages sends all entries and no attributes.
            None => self.getattr(ino).await?,
        };
        let mut entries = Vec::with_capacity(r.entries.len());
        for e in r.entries {
            let kind = FileType::from_code(e.kind).ok_or_else(|| VfsError::Server("bad entry type".into()))?;
            let attr = e.attr.as_ref().and_then(attr_from_pb).map(|(_, a)| a);
            entries.push(DirEntry { name: e.name, ino: e.ino, kind, attr });
        }
        // One lock of each map for the whole page, not one per entry.
        {
            let mut m = self.inode_cache();
            let now = Instant::now();
            for e in &entries {
                if let Some(a) = &e.attr {
                    Self::note_seen(&mut m, e.ino, a, now);
                }
            }
        }
        let written: Vec<(usize, Arc<tokio::sync::Mutex<FileWriter>>)> = {
            let w = Self::lock(&self.writers);
            entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.attr.is_some())
                .filter_map(|(i, e)| w.get(&e.ino).map(|x| (i, x.clone())))
                .collect()
        };
        for (i, w) in written {
            if let Some(a) = entries[i].attr.as_mut() {
                Self::overlay_with(&*w.lock().await, a);
            }
        }
        Ok(DirPage { entries, dir, more: r.more })
    }

    /// Entries of an open directory from position `offset` on (positions are list indexes).
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<(u64, DirEntry)>> {
        let h = self.handle(fh)?;
        let list = h.dir.as_ref().ok_or_else(|| VfsError::from_errno(libc::ENOTDIR))?;
        Ok(list.iter().enumerate().skip(offset as usize).map(|(i, e)| (i as u64 + 1, e.clone())).collect())
    }

    /// Closes a directory.
    pub fn releasedir(&self, fh: u64) {
        Self::lock(&self.handles).remove(&fh);
    }

    // ---- files ----

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        Self::lock(&self.handles).insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        Self::lock(&self.handles).get(&fh).cloned().ok_or_else(|| VfsError::from_errno(libc::EBADF))
    }

    /// Opens a file (close-to-open: with attributes fresh from the server).
    pub async fn open(&self, ctx: &Ctx, ino: u64, flags: i32) -> Result<Opened> {
        self.qos.op().await;
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let r =
            self.client.call::<_, pb::OpenResp>(Method::Open, |session| pb::OpenReq { session, ino, write }).await?;
        let (_, mut a) = attr_of(r.attr)?;
        let chunk0: Vec<Slice> = r.chunk0.iter().map(slice_from_pb).collect();
        self.client.opened(ino);
        if flags & libc::O_TRUNC != 0 && write && a.kind == FileType::File {
            match self.setattr(ctx, ino, &SetAttr { size: Some(0), ..Default::default() }).await {
                Ok(na) => a = na,
                Err(e) => {
                    self.close_ino(ino).await;
                    return Err(e);
                }
            }
        }
        let seen = self.observe(ino, &a);
        let keep = seen == Seen::Same && self.writer(ino).is_none();
        if a.size > 0 && flags & libc::O_TRUNC == 0 {
            Self::lock(&self.inodes).entry(ino).or_default().chunks.entry(0).or_insert_with(|| Arc::new(chunk0));
        }
        let fh = self.add_handle(Handle { ino, write, read: Mutex::default(), dir: None, counted: true });
        Ok(Opened { fh, keep_cache: keep, changed: seen == Seen::Changed })
    }

    /// Opens for writing a file this client has just created, without a call to the server:
    /// creating it proved the right to write it. The server does not count it as open here, so
    /// the file goes at once if another client unlinks it (as over NFS, which has no opens).
    pub fn open_created(&self, ino: u64) -> u64 {
        self.add_handle(Handle { ino, write: true, read: Mutex::default(), dir: None, counted: false })
    }

    /// Creates and opens a regular file (`O_EXCL` honoured).
    pub async fn create(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(u64, Attr, u64)> {
        // One operation: `make` counts it.
        let excl = flags & libc::O_EXCL != 0;
        let (ino, mut a, created) =
            self.make(ctx, parent, name, FileType::File, mode, umask, 0, &[], excl, true).await?;
        self.client.opened(ino);
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        if !created && flags & libc::O_TRUNC != 0 && write {
            a = self.setattr(ctx, ino, &SetAttr { size: Some(0), ..Default::default() }).await?;
        }
        self.observe(ino, &a);
        let fh = self.add_handle(Handle { ino, write, read: Mutex::default(), dir: None, counted: true });
        Ok((ino, a, fh))
    }

    async fn next_slice_id(&self) -> Result<u64> {
        let mut r = self.ids.lock().await;
        if r.0 >= r.1 {
            const BATCH: u64 = 256;
            let first = self
                .client
                .call::<_, pb::AllocResp>(Method::AllocSlices, |_| pb::AllocReq { count: BATCH })
                .await?
                .first;
            *r = (first, first + BATCH);
        }
        let id = r.0;
        r.0 += 1;
        Ok(id)
    }

    /// Buffers a write; returns the bytes accepted.
    pub async fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<usize> {
        let h = self.handle(fh)?;
        if !h.write {
            return Err(VfsError::from_errno(libc::EBADF));
        }
        if off.checked_add(data.len() as u64).is_none_or(|e| e > strata_meta::MAX_FILE_SIZE) {
            return Err(VfsError::from_errno(libc::EFBIG));
        }
        self.qos.data(data.len() as u64).await;
        let w = {
            let mut m = Self::lock(&self.writers);
            m.entry(h.ino).or_default().clone()
        };
        let mut w = w.lock().await;
        let growth = match self.quota_check(h.ino, &w, off, data.len() as u64) {
            Ok(g) => g,
            Err(_) => {
                // The use last reported may be stale (another client deleted files, the volume
                // was expanded): ask the server before refusing.
                self.refresh_quota().await?;
                self.quota_check(h.ino, &w, off, data.len() as u64)?
            }
        };
        w.durable = false;
        w.write(&self.shared, off, data, || self.next_slice_id()).await?;
        w.growth += growth;
        if w.has_finished_chunks() && w.end - off >= CHUNK_SIZE {
            drop(w);
            self.commit(h.ino, false).await?;
        }
        Ok(data.len())
    }

    /// Refuses a write that would take the volume past its byte quota (EDQUOT at `write`, not
    /// only at `close`), from the use the server last reported plus what this client has
    /// buffered. The server checks again at commit; this only makes the common case prompt.
    /// Returns the growth the write adds, already counted as pending.
    fn quota_check(&self, ino: u64, w: &FileWriter, off: u64, len: u64) -> Result<u64> {
        let cap = self.quota_capacity.load(Ordering::Relaxed);
        if cap == 0 {
            return Ok(0);
        }
        let size = self.file_size(ino).unwrap_or(0).max(w.end);
        let round = |n: u64| n.div_ceil(4096) * 4096;
        let growth = round(off + len).saturating_sub(round(size));
        if growth == 0 {
            return Ok(0);
        }
        let used = self.quota_used.load(Ordering::Relaxed);
        let pending = self.pending_growth.fetch_add(growth, Ordering::Relaxed);
        if used.saturating_add(pending).saturating_add(growth) > cap {
            self.pending_growth.fetch_sub(growth, Ordering::Relaxed);
            return Err(VfsError::errno_msg(libc::EDQUOT, "disk quota exceeded"));
        }
        Ok(growth)
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

    /// Forgets the attributes seen of an inode (it was removed or changed elsewhere).
    pub fn forget_attr(&self, ino: u64) {
        if let Some(c) = Self::lock(&self.inodes).get_mut(&ino) {
            c.attr = None;
            c.seen = None;
        }
    }

    /// Uploads and commits this client's buffered writes to a file.
    pub async fn commit(&self, ino: u64, durable: bool) -> Result<()> {
        let Some(w) = self.writer(ino) else {
            if durable {
                // Blocks of earlier, non-durable commits (periodic ones, closes) may still be in
                // the page cache of a local store.
                self.store.sync().await?;
                self.client.call::<_, pb::Empty>(Method::Sync, |_| pb::Empty {}).await?;
            }
            return Ok(());
        };
        let mut w = w.lock().await;
        if let Some(e) = w.error.take() {
            return Err(e);
        }
        if durable && w.durable && !w.is_dirty() {
            // Repeated fsync or COMMIT with no write in between.
            return Ok(());
        }
        let outcome = self.commit_locked(&mut w, ino, durable).await;
        w.durable = durable && outcome.is_ok();
        // Committed or failed, the buffered writes are no longer pending: a failed commit's data
        // is gone and the caller learns it from the error.
        w.end = 0;
        w.mtime = None;
        w.dirty_since = None;
        self.pending_growth.fetch_sub(std::mem::take(&mut w.growth), Ordering::Relaxed);
        let (slices, r) = match outcome? {
            Some(done) => done,
            None => return Ok(()),
        };
        let (_, a) = attr_of(r.attr)?;
        self.quota_capacity.store(r.capacity, Ordering::Relaxed);
        self.quota_used.store(r.used_bytes, Ordering::Relaxed);
        for idx in r.crowded {
            self.start_compaction(ino, idx);
        }
        {
            let mut m = Self::lock(&self.inodes);
            let c = m.entry(ino).or_default();
            for n in &r.chunks {
                let ours: Vec<Slice> =
                    slices.iter().filter(|(i, s)| *i == n.index && s.len > 0).map(|(_, s)| *s).collect();
                let count = n.count as usize;
                match c.chunks.get_mut(&n.index) {
                    // The server appended ours after the list this client knew.
                    Some(list) if list.len() + ours.len() == count => Arc::make_mut(list).extend(ours),
                    // Another client wrote to the chunk meanwhile: read it again when needed.
                    Some(_) => {
                        c.chunks.remove(&n.index);
                    }
                    // Every slice of the chunk is one of ours (a new file written at once), so
                    // a read-back needs no call for the list.
                    None if ours.len() == count => {
                        c.chunks.insert(n.index, Arc::new(ours));
                    }
                    None => {}
                }
            }
            // A chunk written but not counted (a server that does not count): its cached list
            // lacks this commit's slices.
            for (idx, _) in &slices {
                if !r.chunks.iter().any(|n| n.index == *idx) {
                    c.chunks.remove(idx);
                }
            }
            c.attr = Some(a);
            c.seen = Some(Instant::now());
        }
        Ok(())
    }

    /// Uploads a file's buffered writes and commits them; `None` when there was nothing to commit.
    async fn commit_locked(
        &self,
        w: &mut FileWriter,
        ino: u64,
        durable: bool,
    ) -> Result<Option<(Vec<(u32, Slice)>, pb::CommitResp)>> {
        let (slices, deferred) =
            if durable { w.drain_deferring(&self.shared).await? } else { (w.drain(&self.shared).await?, Vec::new()) };
        let journal = if durable { self.journal_of(&slices) } else { Vec::new() };
        let journaled: Vec<String> = journal.iter().map(|b| b.key.clone()).collect();
        // Deferred blocks the journal does not carry (too many bytes, or evicted from the
        // cache meanwhile) are stored the usual way, and synced below.
        let unjournaled = deferred.into_iter().filter(|(k, _)| !journaled.contains(k));
        futures::future::try_join_all(unjournaled.map(|(k, data)| {
            let store = self.store.clone();
            async move { store.put(&k, data).await }
        }))
        .await?;
        if durable {
            // Journaled blocks become durable with the metadata; any other block written
            // since the last sync (of this file or another) is synced here as before.
            self.store.forget_unsynced(&journaled);
            self.store.sync().await?;
        }
        if slices.is_empty() {
            if durable {
                self.client.call::<_, pb::Empty>(Method::Sync, |_| pb::Empty {}).await?;
            }
            return Ok(None);
        }
        let writes: Vec<pb::ChunkWrite> =
            slices.iter().map(|(idx, s)| pb::ChunkWrite { index: *idx, slice: Some(slice_to_pb(s)) }).collect();
        let r = self
            .client
            .call::<_, pb::CommitResp>(Method::CommitWrites, |_| pb::CommitReq {
                ino,
                writes: writes.clone(),
                durable,
                journal: journal.clone(),
            })
            .await;
        // Not committed, so not journaled either; their slices are not referenced, so their
        // blocks (never written to the store) are not needed.
        Ok(Some((slices, r?)))
    }

    /// The blocks of `slices` that a durable commit can hand to the server instead of syncing
    /// them: only for a local block directory, and only a few small blocks still in the cache
    /// (a sync of large writes costs little next to writing them). Empty when not all qualify.
    fn journal_of(&self, slices: &[(u32, Slice)]) -> Vec<pb::JournaledBlock> {
        if !self.store.is_local() || slices.iter().map(|(_, s)| u64::from(s.size)).sum::<u64>() > JOURNAL_MAX {
            return Vec::new();
        }
        let (mut out, mut total) = (Vec::new(), 0u64);
        for (_, s) in slices {
            for (i, len) in strata_blocks::layout::slice_blocks(s.size, self.volume.block_size) {
                let key = block_key(self.volume.id, s.id, i, len);
                let Some(data) = self.cache.peek(&key) else { return Vec::new() };
                let stored = self.store.stored_form(&data);
                // A compressed block that did not shrink is stored a little larger.
                total += stored.len() as u64;
                if total > JOURNAL_MAX {
                    return Vec::new();
                }
                out.push(pb::JournaledBlock { data: stored.to_vec(), key });
            }
        }
        out
    }

    fn start_compaction(&self, ino: u64, idx: u32) {
        let Some(me) = self.me.upgrade() else { return };
        if !Self::lock(&self.compacting).insert((ino, idx)) {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = me.compact(ino, idx).await {
                tracing::warn!(ino, chunk = idx, error = %e, "chunk compaction failed; the file is intact");
            }
            Self::lock(&me.compacting).remove(&(ino, idx));
        });
    }

    /// Rewrites a chunk's visible bytes as one slice and swaps it in for the slices it covers,
    /// if nobody changed the chunk meanwhile. The new blocks are made durable first, because
    /// the old ones are collected once the swap commits.
    async fn compact(&self, ino: u64, idx: u32) -> Result<()> {
        let r = self.client.call::<_, pb::ChunkResp>(Method::ReadChunk, |_| pb::ChunkReq { ino, index: idx }).await?;
        let slices: Vec<Slice> = r.slices.iter().map(slice_from_pb).collect();
        if slices.len() < 2 {
            return Ok(());
        }
        let start = slices.iter().map(|s| s.pos).min().unwrap_or(0);
        let end = slices.iter().map(|s| s.pos + s.len).max().unwrap_or(0);
        let mut buf = vec![0u8; (end - start) as usize];
        for seg in visible(&slices, start, end - start) {
            if let Source::Data { id, size, off } = seg.src {
                let mut at = (seg.pos - start) as usize;
                let mut sink = |b: Bytes| {
                    buf[at..at + b.len()].copy_from_slice(&b);
                    at += b.len();
                };
                self.read_slice(id, size, off, seg.len as usize, true, &mut sink).await?;
            }
        }
        let id = self.next_slice_id().await?;
        let total = buf.len() as u32;
        let bs = self.volume.block_size as usize;
        let data = bytes::Bytes::from(buf);
        for (i, len) in strata_blocks::layout::slice_blocks(total, self.volume.block_size) {
            let from = i as usize * bs;
            self.store.put(&block_key(self.volume.id, id, i, len), data.slice(from..from + len as usize)).await?;
        }
        self.store.sync().await?;
        let with = Slice { pos: start, id, size: total, off: 0, len: total };
        let done = self
            .client
            .call::<_, pb::BoolResp>(Method::CompactChunk, |_| pb::CompactReq {
                ino,
                index: idx,
                replaced: r.slices.clone(),
                with: Some(slice_to_pb(&with)),
            })
            .await?;
        if let Some(c) = Self::lock(&self.inodes).get_mut(&ino) {
            c.chunks.remove(&idx);
        }
        if !done.ok {
            // The chunk changed meanwhile; the new blocks are unreferenced and never read.
            tracing::debug!(ino, chunk = idx, "compaction lost a race; will retry after the next commit");
        }
        Ok(())
    }

    /// Called at each `close` of a descriptor: commits buffered writes.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        if self.qos.is_limited()
            && let Some(w) = self.writer(h.ino)
            && w.lock().await.is_dirty()
        {
            // Only a flush with something to commit reaches the server.
            self.qos.op().await;
        }
        self.commit(h.ino, false).await
    }

    /// Makes a file's data durable.
    pub async fn fsync(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        self.qos.op().await;
        self.commit(h.ino, true).await
    }

    /// Makes all committed metadata durable (directories' fsync).
    pub async fn sync_meta(&self) -> Result<()> {
        self.qos.op().await;
        self.client.call::<_, pb::Empty>(Method::Sync, |_| pb::Empty {}).await?;
        Ok(())
    }

    /// Tells the server a file was closed. Nothing waits on the answer (it only matters for
    /// files unlinked while open and for block collection), so closes are queued and sent in
    /// batches by a background task.
    async fn close_ino(&self, ino: u64) {
        self.client.closed(ino);
        self.pending_closes.fetch_add(1, Ordering::Relaxed);
        if self.closes.send(ino).is_err() {
            self.pending_closes.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Releases a handle (last close of a descriptor): commits anything left and closes.
    pub async fn release(&self, fh: u64) -> Result<()> {
        let h = Self::lock(&self.handles).remove(&fh).ok_or_else(|| VfsError::from_errno(libc::EBADF))?;
        let res = self.commit(h.ino, false).await;
        let still_open = Self::lock(&self.handles).values().any(|o| o.ino == h.ino);
        if !still_open {
            let mut m = Self::lock(&self.writers);
            let idle = m.get(&h.ino).is_some_and(|w| w.try_lock().is_ok_and(|g| !g.is_dirty()));
            if idle {
                m.remove(&h.ino);
            }
        }
        if h.counted {
            self.close_ino(h.ino).await;
        }
        res
    }

    async fn chunk(&self, ino: u64, idx: u32) -> Result<Arc<Vec<Slice>>> {
        if let Some(c) = Self::lock(&self.inodes).get(&ino).and_then(|c| c.chunks.get(&idx)).cloned() {
            return Ok(c);
        }
        let r = self.client.call::<_, pb::ChunkResp>(Method::ReadChunk, |_| pb::ChunkReq { ino, index: idx }).await?;
        let list = Arc::new(r.slices.iter().map(slice_from_pb).collect::<Vec<_>>());
        Self::lock(&self.inodes).entry(ino).or_default().chunks.insert(idx, list.clone());
        Ok(list)
    }

    fn file_size(&self, ino: u64) -> Option<u64> {
        Self::lock(&self.inodes).get(&ino).and_then(|c| c.attr).map(|a| a.size)
    }

    /// Reads up to `size` bytes at `off`.
    pub async fn read(&self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let segs = self.read_bytes(fh, off, size).await?;
        let mut out = Vec::with_capacity(segs.iter().map(Bytes::len).sum());
        for s in &segs {
            out.extend_from_slice(s);
        }
        Ok(out)
    }

    /// Reads up to `size` bytes at `off` as the cached blocks' own bytes, in order (holes as
    /// shared zeros): a caller that sends them with vectored writes copies nothing.
    pub async fn read_bytes(&self, fh: u64, off: u64, size: u32) -> Result<Vec<Bytes>> {
        let h = self.handle(fh)?;
        let ino = h.ino;
        if let Some(w) = self.writer(ino)
            && w.lock().await.is_dirty()
        {
            self.commit(ino, false).await?;
        }
        let fsize = match self.file_size(ino) {
            Some(s) => s,
            None => {
                let a = self.getattr(ino).await?;
                self.observe(ino, &a);
                a.size
            }
        };
        if off >= fsize {
            self.qos.op().await;
            return Ok(Vec::new());
        }
        let end = fsize.min(off + u64::from(size));
        self.qos.data(end - off).await;
        let sequential = h.read.lock().unwrap_or_else(|p| p.into_inner()).note_read(off, end, self.cfg.readahead);
        let out = self.read_range(ino, off, end, sequential).await?;
        if sequential
            && end < fsize
            && let Some(me) = self.me.upgrade()
        {
            // In the background: starting the fetches may wait for a free prefetch slot (and a
            // chunk's slice list), which this read's answer must not.
            tokio::spawn(async move { me.readahead(&h, ino, end, fsize).await });
        }
        Ok(out)
    }

    async fn read_range(&self, ino: u64, off: u64, end: u64, whole_blocks: bool) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        for (idx, pos, n) in chunk_pieces(off, end - off) {
            let slices = self.chunk(ino, idx).await?;
            for seg in visible(&slices, pos, n) {
                match seg.src {
                    Source::Data { id, size, off: soff } => {
                        let mut sink = |b: Bytes| out.push(b);
                        self.read_slice(id, size, soff, seg.len as usize, whole_blocks, &mut sink).await?;
                    }
                    _ => {
                        let mut left = seg.len as usize;
                        while left > 0 {
                            let k = left.min(ZEROS.len());
                            out.push(Bytes::from_static(&ZEROS[..k]));
                            left -= k;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads `len` bytes of slice `id` from `soff` on, handing them to `sink` in order.
    async fn read_slice(
        &self,
        id: u64,
        size: u32,
        soff: u32,
        len: usize,
        whole: bool,
        sink: &mut (dyn FnMut(Bytes) + Send),
    ) -> Result<()> {
        let bs = self.volume.block_size;
        let mut done = 0usize;
        while done < len {
            let pos = soff + done as u32;
            let b = pos / bs;
            let bstart = b * bs;
            let blen = (size - bstart).min(bs);
            let key = block_key(self.volume.id, id, b, blen);
            let in_block = (pos - bstart) as usize;
            let n = (blen as usize - in_block).min(len - done);
            if let Some(data) = self.cache.peek(&key) {
                sink(data.slice(in_block..in_block + n));
            } else if whole || blen <= 256 * 1024 || n * 4 >= blen as usize || self.store.is_compressed() {
                // Whole blocks through the cache (a compressed block can only be read whole).
                let fetched = if crate::client::can_block() {
                    self.cache.fetch_now(&self.store, &key, blen as usize).await
                } else {
                    self.cache.fetch(&self.store, &key, blen as usize).await
                };
                let data = match fetched {
                    Err(BlockError::Missing(_)) if self.store.is_local() => {
                        self.journaled_copy(&key, blen as usize).await?
                    }
                    r => r?,
                };
                sink(data.slice(in_block..in_block + n));
            } else {
                match self.store.get_range(&key, in_block as u64..(in_block + n) as u64).await {
                    Err(BlockError::Missing(_)) if self.store.is_local() => {
                        sink(self.journaled_copy(&key, blen as usize).await?.slice(in_block..in_block + n))
                    }
                    r => sink(r?),
                }
            }
            done += n;
        }
        Ok(())
    }

    /// A block whose file is missing from the local store: a durable commit may have left the
    /// file to the server, which writes it within a background round and until then answers
    /// with the journaled copy. Without a copy the file was written meanwhile, or is lost.
    async fn journaled_copy(&self, key: &str, len: usize) -> Result<Bytes> {
        let r = self
            .client
            .call::<_, pb::BytesResp>(Method::JournaledBlock, |_| pb::BlockKeyReq { key: key.to_string() })
            .await;
        match r {
            Ok(r) => {
                let data = self.store.decode(key, len, Bytes::from(r.data)).await?;
                self.cache.insert(key, data.clone());
                Ok(data)
            }
            Err(e) if e.errno() == libc::ENOENT => Ok(self.cache.fetch(&self.store, key, len).await?),
            Err(e) => Err(e),
        }
    }

    /// Starts background fetches of the blocks after a sequential read.
    async fn readahead(&self, h: &Handle, ino: u64, from: u64, fsize: u64) {
        let Some((start, stop)) = h.read.lock().unwrap_or_else(|p| p.into_inner()).ahead(from, fsize) else {
            return;
        };
        let bs = u64::from(self.volume.block_size);
        for (idx, pos, n) in chunk_pieces(start, stop - start) {
            let Ok(slices) = self.chunk(ino, idx).await else {
                return;
            };
            for seg in visible(&slices, pos, n) {
                let Source::Data { id, size, off } = seg.src else {
                    continue;
                };
                let first = u64::from(off) / bs;
                let last = (u64::from(off) + u64::from(seg.len) - 1) / bs;
                for b in first..=last {
                    let blen = (u64::from(size) - b * bs).min(bs) as u32;
                    let key = block_key(self.volume.id, id, b as u32, blen);
                    if self.cache.peek(&key).is_some() {
                        continue;
                    }
                    let Ok(permit) = self.prefetch.clone().acquire_owned().await else {
                        return;
                    };
                    let (cache, store) = (self.cache.clone(), self.store.clone());
                    tokio::spawn(async move {
                        if let Err(e) = cache.fetch(&store, &key, blen as usize).await {
                            tracing::debug!(key, error = %e, "read-ahead fetch failed");
                        }
                        drop(permit);
                    });
                }
            }
        }
    }

    // ---- extended attributes, statfs, locks ----

    /// Value of an extended attribute.
    pub async fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::BytesResp>(Method::GetXattr, |_| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: Vec::new(),
                flags: 0,
            })
            .await?;
        Ok(r.data)
    }

    /// Names of the extended attributes.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.qos.op().await;
        Ok(self.client.call::<_, pb::ListXattrResp>(Method::ListXattr, |_| pb::InoReq { ino }).await?.names)
    }

    /// Sets an extended attribute.
    pub async fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        self.qos.op().await;
        self.client
            .call::<_, pb::Empty>(Method::SetXattr, |_| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: value.to_vec(),
                flags,
            })
            .await?;
        Ok(())
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        self.qos.op().await;
        self.client
            .call::<_, pb::Empty>(Method::RemoveXattr, |_| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: Vec::new(),
                flags: 0,
            })
            .await?;
        Ok(())
    }

    /// Asks the server for the volume's capacity and use, for the quota check at write.
    async fn refresh_quota(&self) -> Result<pb::StatFsResp> {
        let r =
            self.client.call::<_, pb::StatFsResp>(Method::StatFs, |_| pb::StatFsReq { volume: self.volume.id }).await?;
        self.quota_capacity.store(r.capacity, Ordering::Relaxed);
        self.quota_used.store(r.used_bytes, Ordering::Relaxed);
        Ok(r)
    }

    /// Volume size and use; an unlimited volume reports the block store's disk.
    pub async fn statfs(&self) -> Result<StatFs> {
        self.qos.op().await;
        let r = self.refresh_quota().await?;
        let (total, free) = if r.capacity > 0 {
            (r.capacity, r.capacity.saturating_sub(r.used_bytes))
        } else {
            let (t, f) = self.store_disk().unwrap_or((1 << 50, 1 << 50));
            (t.max(r.used_bytes), f)
        };
        let (files, ffree) = if r.inode_limit > 0 {
            (r.inode_limit, r.inode_limit.saturating_sub(r.used_inodes))
        } else {
            (r.used_inodes + (1 << 32), 1 << 32)
        };
        Ok(StatFs { total, free, files, ffree })
    }

    fn store_disk(&self) -> Option<(u64, u64)> {
        // Blocks served by the server: a directory of that name here is not where they are.
        if !self.store.is_local() {
            return None;
        }
        let path = self.volume.store.strip_prefix("file://")?;
        let st = nix_statvfs(path)?;
        Some(st)
    }

    /// The first lock that would conflict (POSIX semantics), if any.
    pub async fn getlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: u32,
        pid: u32,
    ) -> Result<Option<(u32, u64, u64, u32)>> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::LockResp>(Method::GetLock, |session| pb::LockReq {
                session,
                ino,
                owner,
                start,
                end,
                kind,
                pid,
            })
            .await?;
        Ok(if r.kind == 2 { None } else { Some((r.kind, r.start, r.end, r.pid)) })
    }

    /// Takes or releases a lock; with `wait`, retries until granted.
    #[allow(clippy::too_many_arguments)]
    pub async fn setlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: u32,
        pid: u32,
        wait: bool,
    ) -> Result<()> {
        self.qos.op().await;
        let mut delay = Duration::from_millis(5);
        let started = Instant::now();
        loop {
            let res = self
                .client
                .call::<_, pb::Empty>(Method::SetLock, |session| pb::LockReq {
                    session,
                    ino,
                    owner,
                    start,
                    end,
                    kind,
                    pid,
                })
                .await;
            match res {
                Err(e) if wait && e.errno() == libc::EAGAIN => {
                    if started.elapsed() > Duration::from_secs(60) {
                        delay = Duration::from_millis(500);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// Drops the locks an owner holds on a file (on close).
    pub async fn release_locks(&self, ino: u64, owner: u64) -> Result<()> {
        self.client
            .call::<_, pb::Empty>(Method::ReleaseLocks, |session| pb::ReleaseLocksReq { session, ino, owner })
            .await?;
        Ok(())
    }

    /// The inode behind a handle.
    pub fn handle_ino(&self, fh: u64) -> Result<u64> {
        Ok(self.handle(fh)?.ino)
    }

    /// Commits everything and ends the session.
    pub async fn unmount(&self) -> Result<()> {
        let inos: Vec<u64> = Self::lock(&self.writers).keys().copied().collect();
        let mut first_err = None;
        for ino in inos {
            if let Err(e) = self.commit(ino, false).await {
                tracing::error!(ino, error = %e, "could not commit buffered writes at unmount");
                first_err = first_err.or(Some(e));
            }
        }
        let waited = Instant::now();
        while self.pending_closes.load(Ordering::Relaxed) > 0 && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let session = self.client.session();
        if let Err(e) = self.client.call::<_, pb::Empty>(Method::Unmount, |_| pb::SessionReq { session }).await {
            tracing::warn!(error = %e, "server did not acknowledge the unmount");
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends a heartbeat (re-registering the session if the server restarted).
    pub async fn heartbeat(&self) -> Result<()> {
        self.client.call::<_, pb::Empty>(Method::Heartbeat, |session| pb::SessionReq { session }).await?;
        Ok(())
    }

    /// Bytes held by the memory block cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.mem_bytes()
    }
}

/// Writes stay buffered at most this long before they are committed, even if the file is
/// never closed: a slow writer's data becomes visible and crash-safe, and no uploaded block
/// stays unreferenced for long (the server collects old unreferenced blocks).
/// Most bytes of blocks a durable commit journals instead of syncing their files (the
/// server's limit, `strata_server::journal::MAX_COMMIT_BYTES`, is the same).
const JOURNAL_MAX: u64 = 256 << 10;

/// Shared zeros that holes are read as.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

const COMMIT_AFTER: Duration = Duration::from_secs(5);

/// Commits buffered writes older than [`COMMIT_AFTER`] until the file system goes away.
async fn commit_old_writes(vfs: std::sync::Weak<Vfs>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(vfs) = vfs.upgrade() else { return };
        let due: Vec<u64> = Vfs::lock(&vfs.writers)
            .iter()
            .filter(|(_, w)| w.try_lock().is_ok_and(|g| g.dirty_since.is_some_and(|t| t.elapsed() >= COMMIT_AFTER)))
            .map(|(ino, _)| *ino)
            .collect();
        for ino in due {
            if let Err(e) = vfs.commit(ino, false).await {
                tracing::error!(ino, error = %e, "background commit of buffered writes failed; the next close reports it");
                if let Some(w) = vfs.writer(ino) {
                    w.lock().await.error = Some(e);
                }
            }
        }
    }
}

/// Sends queued closes, as many per call as have piled up.
async fn send_closes(
    client: Arc<Client>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(first) = rx.recv().await {
        let mut inos = vec![first];
        while inos.len() < 4096
            && let Ok(more) = rx.try_recv()
        {
            inos.push(more);
        }
        let n = inos.len();
        let res =
            client.call::<_, pb::Empty>(Method::Close, |session| pb::CloseReq { session, inos: inos.clone() }).await;
        if let Err(e) = res {
            tracing::warn!(files = n, error = %e, "closes not recorded by the server");
        }
        pending.fetch_sub(n, Ordering::Relaxed);
    }
}

fn nix_statvfs(path: &str) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(cache_mem_bytes: u64, readahead_bytes: u64) -> pb::VolumeInfo {
        pb::VolumeInfo { cache_mem_bytes, readahead_bytes, ..Default::default() }
    }

    #[test]
    fn read_ahead_grows_with_a_stream_and_restarts_after_a_jump() {
        const MIB: u64 = 1 << 20;
        let (max, fsize) = (64 * MIB, 1 << 40);
        let mut st = ReadState::default();
        // A stream from the start: the window starts at 8 MiB and doubles up to the maximum.
        assert!(st.note_read(0, MIB, max));
        assert_eq!(st.ahead(MIB, fsize), Some((MIB, 9 * MIB)));
        let mut at = MIB;
        for want in [16, 32, 64] {
            assert!(st.note_read(at, at + MIB, max));
            at += MIB;
            assert_eq!(st.window, want * MIB);
            let (_, stop) = st.ahead(at, fsize).expect("fetches ahead");
            assert_eq!(stop, at + want * MIB);
        }
        // While more than half the window is fetched already, nothing more is fetched; the
        // window stays at the maximum.
        assert!(st.note_read(at, at + MIB, max));
        assert_eq!(st.window, max);
        assert_eq!(st.ahead(at + MIB, fsize), None, "{st:?}");
        // A jump ends the stream: no read-ahead, and the old stream's fetches are forgotten.
        assert!(!st.note_read(500 * MIB, 501 * MIB, max));
        assert_eq!((st.window, st.prefetched_to), (0, 501 * MIB));
        // The next sequential read restarts it from 8 MiB at the new place, not behind or past it.
        assert!(st.note_read(501 * MIB, 502 * MIB, max));
        assert_eq!(st.ahead(502 * MIB, fsize), Some((502 * MIB, 510 * MIB)));
        // Reading the file again from the start is a new stream too.
        assert!(!st.note_read(0, MIB, max));
        assert!(st.note_read(MIB, 2 * MIB, max));
        assert_eq!(st.ahead(2 * MIB, fsize), Some((2 * MIB, 10 * MIB)));
        // Never past the end of the file; with read-ahead off, none at all.
        assert_eq!(ReadState { window: 8 * MIB, ..Default::default() }.ahead(MIB, 3 * MIB), Some((MIB, 3 * MIB)));
        let mut off = ReadState::default();
        assert!(!off.note_read(0, MIB, 0) && !off.note_read(MIB, 2 * MIB, 0));
    }

    #[test]
    fn class_cache_defaults_replace_the_mount_defaults() {
        let cfg = VfsConfig::default().for_volume(&volume(2 << 30, 256 << 20));
        assert_eq!((cfg.mem_cache, cfg.readahead), (2 << 30, 256 << 20));
    }

    #[test]
    fn zero_in_the_class_keeps_the_mount_settings() {
        let cfg = VfsConfig::default().for_volume(&volume(0, 0));
        assert_eq!((cfg.mem_cache, cfg.readahead), (VfsConfig::DEFAULT_MEM_CACHE, VfsConfig::DEFAULT_READAHEAD));
        let cfg = VfsConfig::default().for_volume(&volume(1 << 30, 0));
        assert_eq!((cfg.mem_cache, cfg.readahead), (1 << 30, VfsConfig::DEFAULT_READAHEAD));
    }

    #[test]
    fn explicit_mount_settings_win_over_the_class() {
        let mine = VfsConfig {
            mem_cache: 100 << 20,
            mem_cache_explicit: true,
            readahead: 4 << 20,
            readahead_explicit: true,
            ..VfsConfig::default()
        };
        let cfg = mine.for_volume(&volume(2 << 30, 256 << 20));
        assert_eq!((cfg.mem_cache, cfg.readahead), (100 << 20, 4 << 20));
        // Each flag covers its own setting only.
        let half = VfsConfig { readahead_explicit: false, ..mine };
        let cfg = half.for_volume(&volume(2 << 30, 256 << 20));
        assert_eq!((cfg.mem_cache, cfg.readahead), (100 << 20, 256 << 20));
    }

    #[test]
    fn auto_goes_direct_only_to_the_servers_own_directory() {
        use strata_blocks::store::STORE_ID_FILE;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let auto = |url: &str, id: &str| blocks_route(BlocksMode::Auto, url, id).0;
        assert_eq!(auto("s3://bucket/prefix", ""), BlocksMode::Direct);
        assert_eq!(auto(&url, "abc"), BlocksMode::Server, "no id file here");
        std::fs::write(dir.path().join(STORE_ID_FILE), "xyz\n").expect("write");
        assert_eq!(auto(&url, "abc"), BlocksMode::Server, "another directory of the same name");
        std::fs::write(dir.path().join(STORE_ID_FILE), "abc\n").expect("write");
        assert_eq!(auto(&url, "abc"), BlocksMode::Direct);
        assert_eq!(auto(&dir.path().display().to_string(), "abc"), BlocksMode::Direct, "a bare path");
        assert_eq!(auto("file:///nonexistent/strata/blocks", "abc"), BlocksMode::Server);
        assert_eq!(auto("file:///nonexistent/strata/blocks", ""), BlocksMode::Direct, "an older server");
        assert_eq!(blocks_route(BlocksMode::Server, "s3://b/p", "").0, BlocksMode::Server);
        assert_eq!(blocks_route(BlocksMode::Direct, &url, "nope").0, BlocksMode::Direct);
    }
}
