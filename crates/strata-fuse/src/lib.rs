//! The FUSE front-end: translates kernel requests into client file system calls. It holds no
//! file system logic of its own beyond the kernel's conventions (inode 1 is the root, errno
//! replies, attribute and entry cache lifetimes).

pub mod metrics;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use strata_types::{Attr, Ctx, FileType, SetAttr, SetTime, Timespec};
use strata_vfs::vfs::VIRTUAL_XATTR_PREFIX;
use strata_vfs::{ByteLock, Vfs, VfsError};

/// Mount settings of the FUSE front-end.
#[derive(Clone, Debug)]
pub struct FuseOptions {
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache name lookups.
    pub entry_ttl: Duration,
    /// Threads serving kernel requests.
    pub threads: usize,
    /// Let users other than the mounting one use the mount.
    pub allow_other: bool,
    /// Mount read-only.
    pub read_only: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            threads: 8,
            allow_other: true,
            read_only: false,
        }
    }
}

/// The FUSE file system over a mounted volume.
pub struct StrataFs {
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Handle,
    opts: FuseOptions,
    /// Inodes on which this mount ever took a lock: only those need lock release on close.
    locked: Mutex<HashSet<u64>>,
    /// Channel for invalidating kernel caches, set once the session is running.
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// Serves a kernel connection an earlier process served: unknown handles are its.
    resumed: bool,
    /// Lets requests through, or holds them while the worker hands over.
    gate: Arc<Gate>,
}

/// Requests in flight, and a switch that stops new ones for a hand-over: a held request stays
/// unanswered in the kernel, which sends it again to the next worker (see [`serve_fd`]).
#[derive(Debug, Default)]
pub struct Gate {
    closed: std::sync::atomic::AtomicBool,
    inflight: std::sync::atomic::AtomicUsize,
}

impl Gate {
    fn enter(&self) -> GateGuard<'_> {
        use std::sync::atomic::Ordering::SeqCst;
        self.inflight.fetch_add(1, SeqCst);
        if self.closed.load(SeqCst) {
            self.inflight.fetch_sub(1, SeqCst);
            // Never answered here: the next worker answers it after the resend.
            loop {
                std::thread::park();
            }
        }
        GateGuard(self)
    }

    /// Stops taking requests and waits until none is in flight.
    pub async fn close(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.closed.store(true, SeqCst);
        while self.inflight.load(SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

struct GateGuard<'a>(&'a Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn errno(e: &VfsError) -> Errno {
    let n = e.errno();
    if n == libc::EIO {
        warn_io(e);
    }
    Errno::from_i32(n)
}

/// Logs an I/O error handed to an application (a store refusing our credentials, a server
/// gone past the retry timeout): the application sees only EIO, so the reason must be in the
/// mount's log. At most one line a second, with how many were left out since the last.
fn warn_io(e: &VfsError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) == now {
        LEFT_OUT.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let left_out = LEFT_OUT.swap(0, Ordering::Relaxed);
    tracing::warn!(error = %e, left_out, "I/O error (EIO) returned to an application");
}

fn systime(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(u64::from(t.nsec))
    }
}

/// A time from the kernel. fuser 0.18 (pinned) builds pre-1970 times as epoch − (|sec| + nsec)
/// instead of epoch − |sec| + nsec; undo exactly that so `{-86400, 5}` stays `{-86400, 5}`.
fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec { sec: d.as_secs() as i64, nsec: d.subsec_nanos() },
        Err(e) => {
            let d = e.duration();
            Timespec { sec: -(d.as_secs() as i64), nsec: d.subsec_nanos() }
        }
    }
}

fn kind(k: FileType) -> fuser::FileType {
    match k {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Dir => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
        FileType::CharDev => fuser::FileType::CharDevice,
        FileType::BlockDev => fuser::FileType::BlockDevice,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    match t? {
        TimeOrNow::Now => Some(SetTime::Now),
        TimeOrNow::SpecificTime(s) => Some(SetTime::At(timespec(s))),
    }
}

fn ctx(req: &Request) -> Ctx {
    // The kernel checked permissions already (default_permissions).
    Ctx { uid: req.uid(), gid: req.gid(), groups: Vec::new(), check: false }
}

impl StrataFs {
    /// A FUSE file system serving `vfs`, running async work on `rt`.
    pub fn new(vfs: Arc<Vfs>, rt: tokio::runtime::Handle, mut opts: FuseOptions) -> Self {
        // A snapshot or a data volume is mounted read-only whatever was asked.
        opts.read_only |= vfs.volume().read_only;
        StrataFs {
            vfs,
            rt,
            opts,
            locked: Mutex::new(HashSet::new()),
            notifier: Arc::new(OnceLock::new()),
            resumed: false,
            gate: Arc::default(),
        }
    }

    /// The gate of this file system's requests, for a hand-over (see [`Gate::close`]).
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Runs a client operation to completion on this FUSE thread.
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        let _in = self.gate.enter();
        strata_vfs::allow_blocking_io();
        self.rt.block_on(f)
    }

    /// The mount's own extended attributes, answered here and never stored (`strata warmup`
    /// talks to the mount through them): `strata.warmup` loads a file's blocks into this
    /// mount's caches, `strata.cached` tells how much of it is there, `strata.evict` drops it,
    /// `strata.stats` (any inode) gives the caches' counters, and `strata.metrics` the mount's
    /// metrics (the Prometheus exposition without histogram buckets). Values are `key=value` words.
    /// Their names are outside the kernel's xattr namespaces, so the kernel asks for read
    /// permission on the inode before the request reaches us (`default_permissions`): a user
    /// who may not read a file can neither warm, inspect nor evict it.
    fn virtual_xattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, VfsError> {
        let text = match name {
            b"strata.warmup" => {
                let w = self.run(self.vfs.warm(ino))?;
                format!("fetched={} cached={} total={}", w.fetched, w.now.cached, w.now.total)
            }
            b"strata.cached" => {
                let c = self.run(self.vfs.cached(ino))?;
                format!("cached={} total={}", c.cached, c.total)
            }
            b"strata.evict" => {
                let evicted = self.run(self.vfs.evict(ino))?;
                let c = self.run(self.vfs.cached(ino))?;
                format!("evicted={evicted} cached={} total={}", c.cached, c.total)
            }
            // This process's metrics (`strata stats MOUNTPOINT`), without histogram buckets.
            b"strata.metrics" => return Ok(strata_metrics::encode_compact().into_bytes()),
            b"strata.stats" => {
                let s = self.vfs.cache_stats();
                format!(
                    "block_gets={} mem_cache_bytes={} disk_cache_bytes={} peer_gets={} peer_fallbacks={} \
                     peer_served={} peer_refused={} peers={}",
                    s.block_gets,
                    s.mem_bytes,
                    s.disk_bytes,
                    s.peer_gets,
                    s.peer_fallbacks,
                    s.peer_served,
                    s.peer_refused,
                    s.peers
                )
            }
            _ => return Err(VfsError::from_errno(libc::ENODATA)),
        };
        Ok(text.into_bytes())
    }

    /// The handle to use for the kernel's `fh`: on a resumed connection, one the earlier worker
    /// gave out is opened again first.
    fn fh(&self, fh: FileHandle, ino: INodeNo, write: bool) -> u64 {
        if self.resumed && self.vfs.handle_ino(fh.0).is_err() {
            let i = self.ino(ino);
            if let Err(e) = self.run(self.vfs.adopt(fh.0, i, write)) {
                tracing::warn!(fh = fh.0, ino = i, error = %e, "cannot reopen a handle of the earlier worker");
            }
        }
        fh.0
    }

    fn ino(&self, i: INodeNo) -> u64 {
        if i.0 == 1 { self.vfs.root() } else { i.0 }
    }

    fn fuse_ino(&self, ino: u64) -> INodeNo {
        if ino == self.vfs.root() { INodeNo(1) } else { INodeNo(ino) }
    }

    fn attr(&self, ino: u64, a: &Attr) -> FileAttr {
        FileAttr {
            ino: self.fuse_ino(ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: systime(a.atime),
            mtime: systime(a.mtime),
            ctime: systime(a.ctime),
            crtime: systime(a.ctime),
            kind: kind(a.kind),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    fn entry(&self, reply: ReplyEntry, res: Result<(u64, Attr), VfsError>) {
        match res {
            Ok((ino, a)) => reply.entry(&self.opts.entry_ttl, &self.attr(ino, &a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn empty(reply: ReplyEmpty, res: Result<(), VfsError>) {
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn note_lock(&self, ino: u64) {
        if let Ok(mut s) = self.locked.lock() {
            s.insert(ino);
        }
    }

    fn has_locked(&self, ino: u64) -> bool {
        self.locked.lock().map(|s| s.contains(&ino)).unwrap_or(true)
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_EXPORT_SUPPORT,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::debug!(?cap, "kernel lacks a FUSE capability");
            }
        }
        request_sizes(config);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _op = crate::metrics::start(crate::metrics::LOOKUP);
        let res = self.run(self.vfs.lookup(&ctx(req), self.ino(parent), name.as_bytes()));
        self.entry(reply, res);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _op = crate::metrics::start(crate::metrics::GETATTR);
        let i = self.ino(ino);
        match self.run(self.vfs.getattr(i)) {
            Ok(a) => reply.attr(&self.opts.attr_ttl, &self.attr(i, &a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _op = crate::metrics::start(crate::metrics::SETATTR);
        let i = self.ino(ino);
        let s =
            SetAttr { mode: mode.map(|m| m & 0o7777), uid, gid, size, atime: set_time(atime), mtime: set_time(mtime) };
        match self.run(self.vfs.setattr(&ctx(req), i, &s)) {
            Ok(a) => reply.attr(&self.opts.attr_ttl, &self.attr(i, &a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _op = crate::metrics::start(crate::metrics::READLINK);
        match self.run(self.vfs.readlink(self.ino(ino))) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let _op = crate::metrics::start(crate::metrics::MKNOD);
        let res = self.run(self.vfs.mknod(&ctx(req), self.ino(parent), name.as_bytes(), mode, umask, rdev));
        self.entry(reply, res);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let _op = crate::metrics::start(crate::metrics::MKDIR);
        let res = self.run(self.vfs.mkdir(&ctx(req), self.ino(parent), name.as_bytes(), mode, umask));
        self.entry(reply, res);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = crate::metrics::start(crate::metrics::UNLINK);
        Self::empty(reply, self.run(self.vfs.unlink(&ctx(req), self.ino(parent), name.as_bytes())));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = crate::metrics::start(crate::metrics::RMDIR);
        Self::empty(reply, self.run(self.vfs.rmdir(&ctx(req), self.ino(parent), name.as_bytes())));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let _op = crate::metrics::start(crate::metrics::SYMLINK);
        let res = self.run(self.vfs.symlink(
            &ctx(req),
            self.ino(parent),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        ));
        self.entry(reply, res);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _op = crate::metrics::start(crate::metrics::RENAME);
        let res = self.run(self.vfs.rename(
            &ctx(req),
            self.ino(parent),
            name.as_bytes(),
            self.ino(newparent),
            newname.as_bytes(),
            flags.bits(),
        ));
        Self::empty(reply, res);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let _op = crate::metrics::start(crate::metrics::LINK);
        let i = self.ino(ino);
        let res = self.run(self.vfs.link(&ctx(req), i, self.ino(newparent), newname.as_bytes()));
        self.entry(reply, res.map(|a| (i, a)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _op = crate::metrics::start(crate::metrics::OPEN);
        match self.run(self.vfs.open(&ctx(req), self.ino(ino), flags.0)) {
            Ok(o) => {
                if o.changed
                    && let Some(n) = self.notifier.get()
                {
                    // The kernel may still hold this file's old size and times for up to the
                    // attribute lifetime; close-to-open needs the fresh ones now. (A negative
                    // offset invalidates attributes only; pages go because of !KEEP_CACHE.)
                    if let Err(e) = n.inval_inode(ino, -1, 0) {
                        tracing::debug!(ino = ino.0, error = %e, "attribute invalidation failed");
                    }
                }
                let flags = if o.keep_cache { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                reply.opened(FileHandle(o.fh), flags)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _op = crate::metrics::start(crate::metrics::READ);
        let fh = self.fh(fh, ino, false);
        // The cached blocks' own bytes go to the kernel as they are: a read within one block
        // (nearly all of them) is copied once, by the kernel, instead of first into a buffer.
        match self.run(self.vfs.read_bytes(fh, offset, size)) {
            Ok(segs) => match segs.as_slice() {
                [] => reply.data(&[]),
                [one] => reply.data(one),
                many => reply.data(&many.concat()),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _op = crate::metrics::start(crate::metrics::WRITE);
        let fh = self.fh(fh, ino, true);
        match self.run(self.vfs.write(fh, offset, data)) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        let _op = crate::metrics::start(crate::metrics::FLUSH);
        let i = self.ino(ino);
        let fh = self.fh(fh, ino, false);
        let res = self.run(async {
            let r = self.vfs.flush(fh).await;
            if self.has_locked(i) {
                self.vfs.release_locks(i, lock_owner.0).await?;
            }
            r
        });
        Self::empty(reply, res);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _op = crate::metrics::start(crate::metrics::RELEASE);
        let i = self.ino(ino);
        if self.resumed && self.vfs.handle_ino(fh.0).is_err() {
            // The earlier worker's handle, never used since: nothing of it is held here.
            return reply.ok();
        }
        let res = self.run(async {
            if let Some(owner) = lock_owner
                && self.has_locked(i)
            {
                self.vfs.release_locks(i, owner.0).await?;
            }
            self.vfs.release(fh.0).await
        });
        Self::empty(reply, res);
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _op = crate::metrics::start(crate::metrics::FSYNC);
        let fh = self.fh(fh, ino, false);
        Self::empty(reply, self.run(self.vfs.fsync(fh)));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _op = crate::metrics::start(crate::metrics::OPENDIR);
        match self.run(self.vfs.opendir(&ctx(req), self.ino(ino), true)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let _op = crate::metrics::start(crate::metrics::READDIR);
        let fh = self.fh(fh, ino, false);
        match self.vfs.readdir(fh, offset) {
            Ok(list) => {
                for (next, e) in list {
                    if reply.add(self.fuse_ino(e.ino), next, kind(e.kind), OsStr::from_bytes(&e.name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let _op = crate::metrics::start(crate::metrics::READDIRPLUS);
        let dir = self.ino(ino);
        let fh = self.fh(fh, ino, false);
        match self.vfs.readdir(fh, offset) {
            Ok(list) => {
                for (next, e) in list {
                    let a = match e.attr {
                        Some(a) => a,
                        // Only ".." lacks attributes; the kernel does not instantiate it.
                        None => match self.run(self.vfs.getattr(e.ino)) {
                            Ok(a) => a,
                            Err(err) => {
                                tracing::debug!(dir, error = %err, "no attributes for a directory entry");
                                continue;
                            }
                        },
                    };
                    let fa = self.attr(e.ino, &a);
                    if reply.add(fa.ino, next, OsStr::from_bytes(&e.name), &self.opts.entry_ttl, &fa, Generation(0)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        let _op = crate::metrics::start(crate::metrics::RELEASEDIR);
        self.vfs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _op = crate::metrics::start(crate::metrics::FSYNCDIR);
        Self::empty(reply, self.run(self.vfs.sync_meta()));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _op = crate::metrics::start(crate::metrics::STATFS);
        match self.run(self.vfs.statfs()) {
            Ok(s) => {
                const BS: u64 = 4096;
                reply.statfs(s.total / BS, s.free / BS, s.free / BS, s.files, s.ffree, BS as u32, 255, BS as u32)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _op = crate::metrics::start(crate::metrics::SETXATTR);
        let res = self.run(self.vfs.setxattr(self.ino(ino), name.as_bytes(), value, flags as u32));
        Self::empty(reply, res);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _op = crate::metrics::start(crate::metrics::GETXATTR);
        let (ino, name) = (self.ino(ino), name.as_bytes());
        let value = if name.starts_with(VIRTUAL_XATTR_PREFIX) {
            self.virtual_xattr(ino, name)
        } else {
            self.run(self.vfs.getxattr(ino, name))
        };
        match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _op = crate::metrics::start(crate::metrics::LISTXATTR);
        match self.run(self.vfs.listxattr(self.ino(ino))) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32);
                } else if buf.len() > size as usize {
                    reply.error(Errno::ERANGE);
                } else {
                    reply.data(&buf);
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = crate::metrics::start(crate::metrics::REMOVEXATTR);
        Self::empty(reply, self.run(self.vfs.removexattr(self.ino(ino), name.as_bytes())));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _op = crate::metrics::start(crate::metrics::CREATE);
        match self.run(self.vfs.create(&ctx(req), self.ino(parent), name.as_bytes(), mode, umask, flags)) {
            Ok((ino, a, fh)) => reply.created(
                &self.opts.entry_ttl,
                &self.attr(ino, &a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let _op = crate::metrics::start(crate::metrics::GETLK);
        let lock = ByteLock { owner: lock_owner.0, start, end, kind: typ as u32, pid };
        match self.run(self.vfs.getlk(self.ino(ino), &lock)) {
            Ok(Some(l)) => reply.locked(l.start, l.end, l.kind as i32, l.pid),
            Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let _op = crate::metrics::start(crate::metrics::SETLK);
        let i = self.ino(ino);
        self.note_lock(i);
        let lock = ByteLock { owner: lock_owner.0, start, end, kind: typ as u32, pid };
        let res = self.run(self.vfs.setlk(i, &lock, sleep));
        Self::empty(reply, res);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _op = crate::metrics::start(crate::metrics::FALLOCATE);
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let i = self.ino(ino);
        let fh = self.fh(fh, ino, true);
        let res = self.run(async {
            self.vfs.flush(fh).await?;
            let a = self.vfs.getattr(i).await?;
            let end = offset.checked_add(length).ok_or_else(|| VfsError::from_errno(libc::EFBIG))?;
            if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > a.size {
                self.vfs.setattr(&ctx(req), i, &SetAttr { size: Some(end), ..Default::default() }).await?;
            }
            Ok(())
        });
        Self::empty(reply, res);
    }
}

/// Asks the kernel for 1 MiB writes, the most read-ahead it allows and a deep background
/// queue (also used by the benchmarks' FUSE ceiling, so that it negotiates exactly this).
pub fn request_sizes(config: &mut KernelConfig) {
    let _ = config.set_max_write(1 << 20);
    let max_ra = match config.set_max_readahead(u32::MAX) {
        Ok(_) => u32::MAX,
        Err(max) => max,
    };
    let _ = config.set_max_readahead(max_ra);
    let _ = config.set_max_background(64);
    let _ = config.set_congestion_threshold(48);
}

/// Mount options for the kernel.
pub fn mount_config(opts: &FuseOptions, volume: &str) -> fuser::Config {
    use fuser::MountOption;
    let mut mo = vec![
        MountOption::FSName(format!("strata:{volume}")),
        MountOption::Subtype("strata".into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::Exec,
    ];
    mo.push(if opts.read_only { MountOption::RO } else { MountOption::RW });
    let mut cfg = fuser::Config::default();
    cfg.mount_options = mo;
    cfg.acl = if opts.allow_other { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    cfg.n_threads = Some(opts.threads.max(1));
    cfg.clone_fd = true;
    cfg
}

/// Mounts `fs` at `mountpoint` and serves it on background threads.
pub fn spawn(fs: StrataFs, mountpoint: &Path, volume: &str) -> std::io::Result<fuser::BackgroundSession> {
    let cfg = mount_config(&fs.opts, volume);
    let notifier = fs.notifier.clone();
    let session = fuser::spawn_mount(fs, mountpoint, &cfg)?;
    let _ = notifier.set(session.notifier());
    Ok(session)
}

/// Serves `fs` on `fd`, a `/dev/fuse` descriptor already mounted by someone else (the CSI node
/// plugin, which keeps a copy). Without `resume` the kernel's INIT is still waiting and is
/// answered as usual. With `resume` an earlier worker answered it and died or handed over: the
/// session is started on a stand-in INIT, then put on `fd`, and the kernel is asked to send
/// again every request the earlier worker read and never answered (`FUSE_NOTIFY_RESEND`, Linux
/// 6.9), so the callers waiting on them get their answers from this process. `fd` stays open
/// under its number, where the plugin finds it again after its own restart.
pub fn serve_fd(
    mut fs: StrataFs,
    fd: std::os::fd::OwnedFd,
    resume: bool,
    volume: &str,
) -> std::io::Result<fuser::BackgroundSession> {
    use std::os::fd::{AsFd, AsRawFd, IntoRawFd};
    let mut cfg = mount_config(&fs.opts, volume);
    // One shared descriptor: a cloned one is the kernel's own queue, whose unanswered requests
    // the kernel fails when the process holding it dies, instead of keeping them to resend.
    cfg.clone_fd = false;
    let notifier = fs.notifier.clone();
    let session = if resume {
        fs.resumed = true;
        fs.vfs.number_handles_from(handle_base());
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        nix::unistd::write(&ours, &stand_in_init()).map_err(std::io::Error::from)?;
        let session = fuser::Session::from_fd(fs, theirs, cfg.acl, cfg)?;
        let target = session.as_fd().as_raw_fd();
        let raw = fd.into_raw_fd();
        // SAFETY: both descriptors are open and owned here; dup2 swaps what `target` refers to
        // in one step, so the session never sees a closed descriptor.
        if unsafe { libc::dup2(raw, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        drop(ours);
        // `raw` stays open on purpose (see above).
        let bg = session.spawn()?;
        let _ = resend(raw);
        bg
    } else {
        fuser::Session::from_fd(fs, fd, cfg.acl, cfg)?.spawn()?
    };
    let _ = notifier.set(session.notifier());
    Ok(session)
}

/// Handle numbers of this process start above any an earlier worker gave out: at the clock's
/// nanoseconds, which no earlier worker's count reached.
fn handle_base() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1 << 62)
}

/// A FUSE_INIT as the kernel sends it (header, then `fuse_init_in` of ABI 7.36+), offering every
/// capability: the session then enables what this file system asks for, as the kernel did
/// when the first worker answered the real one.
fn stand_in_init() -> Vec<u8> {
    const FUSE_INIT: u32 = 26;
    const INIT_LEN: u32 = 40 + 64;
    let mut m = Vec::with_capacity(INIT_LEN as usize);
    m.extend_from_slice(&INIT_LEN.to_ne_bytes());
    m.extend_from_slice(&FUSE_INIT.to_ne_bytes());
    m.extend_from_slice(&1u64.to_ne_bytes()); // unique
    m.extend_from_slice(&0u64.to_ne_bytes()); // nodeid
    m.extend_from_slice(&[0u8; 12]); // uid, gid, pid
    m.extend_from_slice(&[0u8; 4]); // total_extlen, padding
    for v in [7u32, 36, 1 << 20, u32::MAX, u32::MAX] {
        // major, minor, max_readahead, flags, flags2
        m.extend_from_slice(&v.to_ne_bytes());
    }
    m.extend_from_slice(&[0u8; 44]); // unused
    m
}

/// Asks the kernel to queue again the requests read from this connection and not answered.
fn resend(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    let mut m = Vec::with_capacity(16);
    m.extend_from_slice(&16u32.to_ne_bytes());
    m.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    m.extend_from_slice(&0u64.to_ne_bytes());
    // SAFETY: `fd` is open; the buffer is valid for its length.
    let n = unsafe { libc::write(fd, m.as_ptr().cast(), m.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        // Kernels before 6.9 lack it: requests the earlier worker held stay unanswered.
        tracing::warn!(error = %e, "the kernel cannot resend the earlier worker's requests");
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_the_kernel_conventions() {
        for t in [
            Timespec { sec: 0, nsec: 0 },
            Timespec { sec: 1_700_000_000, nsec: 123 },
            Timespec { sec: -86400, nsec: 0 },
        ] {
            assert_eq!(timespec(systime(t)), t);
        }
        // What fuser 0.18 hands us for the kernel's {-86400 s, 5 ns}.
        let from_fuser = UNIX_EPOCH - Duration::new(86400, 5);
        assert_eq!(timespec(from_fuser), Timespec { sec: -86400, nsec: 5 });
    }
}
