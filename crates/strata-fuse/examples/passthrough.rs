//! The FUSE ceiling: a file system that does nothing but pass every request to a local
//! directory, served by the same FUSE library, thread count, capabilities and TTLs as
//! `strata mount`. `bench/run.sh --targets ...,passthrough` runs the workloads on it, so the
//! benchmark tables show what FUSE itself allows on this machine beside Strata's figures.
//!
//! `passthrough SOURCE MOUNTPOINT [--threads N] [--ttl-ms MS]`; runs until unmounted.
//! Inode numbers are the source's own (the source root is inode 1), and each inode maps to
//! the last path it was seen under, which is all the benchmark workloads need.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// A directory's entries as read at opendir: inode, type, name.
type Listing = Arc<Vec<(u64, FileType, OsString)>>;

struct Passthrough {
    source_ino: u64,
    ttl: Duration,
    paths: RwLock<HashMap<u64, PathBuf>>,
    files: RwLock<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Listing>>,
    next_fh: AtomicU64,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::from_nanos(nsec as u64)
    }
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn check(rc: libc::c_int) -> Result<(), Errno> {
    if rc < 0 { Err(errno(std::io::Error::last_os_error())) } else { Ok(()) }
}

impl Passthrough {
    /// FUSE inode of a source inode: the source root is 1 (and whatever had 1 takes its number).
    fn ino(&self, st_ino: u64) -> u64 {
        match st_ino {
            i if i == self.source_ino => 1,
            1 => self.source_ino,
            i => i,
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.read().map_err(|_| Errno::EIO)?.get(&ino.0).cloned().ok_or(Errno::ESTALE)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr(&self, md: &std::fs::Metadata) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.ino(md.ino())),
            size: md.size(),
            blocks: md.blocks(),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind(md.mode()),
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: md.blksize() as u32,
            flags: 0,
        }
    }

    /// Stats `path` and remembers it as the path of its inode.
    fn remember(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let md = std::fs::symlink_metadata(&path).map_err(errno)?;
        let attr = self.attr(&md);
        self.paths.write().map_err(|_| Errno::EIO)?.insert(attr.ino.0, path);
        Ok(attr)
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.files.read().map_err(|_| Errno::EIO)?.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_file(&self, f: File) -> Result<FileHandle, Errno> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.write().map_err(|_| Errno::EIO)?.insert(fh, Arc::new(f));
        Ok(FileHandle(fh))
    }

    fn open_flags(flags: i32) -> OpenOptions {
        let mut o = OpenOptions::new();
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => o.write(true),
            libc::O_RDWR => o.read(true).write(true),
            _ => o.read(true),
        };
        o.custom_flags(flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC));
        if flags & libc::O_TRUNC != 0 {
            o.truncate(true);
        }
        o
    }

    #[allow(clippy::too_many_arguments)] // the arguments of FUSE's setattr
    fn setattr_inner(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let path = self.path(ino)?;
        let c = cpath(&path)?;
        if let Some(mode) = mode {
            // SAFETY: `c` is a valid NUL-terminated path.
            check(unsafe { libc::chmod(c.as_ptr(), mode & 0o7777) })?;
        }
        if uid.is_some() || gid.is_some() {
            let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
            // SAFETY: as above.
            check(unsafe { libc::lchown(c.as_ptr(), u, g) })?;
        }
        if let Some(size) = size {
            match fh {
                Some(fh) => self.file(fh)?.set_len(size).map_err(errno)?,
                None => OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(size)).map_err(errno)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let ts = |t: Option<TimeOrNow>| match t {
                None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
                Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
                Some(TimeOrNow::SpecificTime(t)) => {
                    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                    libc::timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as i64 }
                }
            };
            let times = [ts(atime), ts(mtime)];
            // SAFETY: `c` is valid and `times` holds two timespecs.
            check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
        }
        self.remember(path)
    }

    /// The entries of a directory, read once at opendir (offsets index this list).
    fn list(&self, ino: INodeNo) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let path = self.path(ino)?;
        let mut out = Vec::new();
        for e in std::fs::read_dir(&path).map_err(errno)? {
            let e = e.map_err(errno)?;
            let ft = e.file_type().map_err(errno)?;
            let k = if ft.is_dir() {
                FileType::Directory
            } else if ft.is_symlink() {
                FileType::Symlink
            } else {
                FileType::RegularFile
            };
            out.push((self.ino(e.ino()), k, e.file_name()));
        }
        Ok(out)
    }
}

macro_rules! reply {
    ($reply:expr, $res:expr, |$v:ident| $ok:expr) => {
        match $res {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

impl Filesystem for Passthrough {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // What `strata mount` asks for (strata-fuse's init), so only the work behind differs.
        for cap in [
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(cap);
        }
        strata_fuse::request_sizes(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply!(reply, self.child(parent, name).and_then(|p| self.remember(p)), |a| reply.entry(
            &self.ttl,
            &a,
            Generation(0)
        ));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let res = match fh.map(|fh| self.file(fh)) {
            Some(Ok(f)) => f.metadata().map(|md| self.attr(&md)).map_err(errno),
            _ => self.path(ino).and_then(|p| std::fs::symlink_metadata(p).map(|md| self.attr(&md)).map_err(errno)),
        };
        reply!(reply, res, |a| reply.attr(&self.ttl, &a));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let res = self.setattr_inner(ino, mode, uid, gid, size, atime, mtime, fh);
        reply!(reply, res, |a| reply.attr(&self.ttl, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self.path(ino).and_then(|p| std::fs::read_link(p).map_err(errno));
        reply!(reply, res, |t| reply.data(t.as_os_str().as_bytes()));
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let res = self.child(parent, name).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: `c` is a valid NUL-terminated path.
            check(unsafe { libc::mknod(c.as_ptr(), mode & !umask, rdev as libc::dev_t) })?;
            self.remember(p)
        });
        reply!(reply, res, |a| reply.entry(&self.ttl, &a, Generation(0)));
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let res = self.child(parent, name).and_then(|p| {
            std::fs::DirBuilder::new().mode(mode & !umask).create(&p).map_err(errno)?;
            self.remember(p)
        });
        reply!(reply, res, |a| reply.entry(&self.ttl, &a, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.child(parent, name).and_then(|p| std::fs::remove_file(p).map_err(errno));
        reply!(reply, res, |_v| reply.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.child(parent, name).and_then(|p| std::fs::remove_dir(p).map_err(errno));
        reply!(reply, res, |_v| reply.ok());
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let res = self.child(parent, link_name).and_then(|p| {
            std::os::unix::fs::symlink(target, &p).map_err(errno)?;
            self.remember(p)
        });
        reply!(reply, res, |a| reply.entry(&self.ttl, &a, Generation(0)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let res = (|| {
            let (from, to) = (self.child(parent, name)?, self.child(newparent, newname)?);
            std::fs::rename(&from, &to).map_err(errno)?;
            // Every remembered path under the old name now lives under the new one.
            let mut paths = self.paths.write().map_err(|_| Errno::EIO)?;
            for p in paths.values_mut() {
                if let Ok(rest) = p.strip_prefix(&from) {
                    *p = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
                }
            }
            Ok(())
        })();
        reply!(reply, res, |_v| reply.ok());
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let res = (|| {
            let (from, to) = (self.path(ino)?, self.child(newparent, newname)?);
            std::fs::hard_link(&from, &to).map_err(errno)?;
            self.remember(to)
        })();
        reply!(reply, res, |a| reply.entry(&self.ttl, &a, Generation(0)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self
            .path(ino)
            .and_then(|p| Self::open_flags(flags.0).open(p).map_err(errno))
            .and_then(|f| self.add_file(f));
        reply!(reply, res, |fh| reply.opened(fh, FopenFlags::empty()));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let res = self.file(fh).and_then(|f| {
            let mut buf = vec![0u8; size as usize];
            let mut n = 0;
            while n < buf.len() {
                match f.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(n);
            Ok(buf)
        });
        reply!(reply, res, |b| reply.data(&b));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = self.file(fh).and_then(|f| f.write_all_at(data, offset).map_err(errno));
        reply!(reply, res, |_v| reply.written(data.len() as u32));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut files) = self.files.write() {
            files.remove(&fh.0);
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let res = self.file(fh).and_then(|f| if datasync { f.sync_data() } else { f.sync_all() }.map_err(errno));
        reply!(reply, res, |_v| reply.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let res = self.list(ino).and_then(|entries| {
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.dirs.lock().map_err(|_| Errno::EIO)?.insert(fh, Arc::new(entries));
            Ok(FileHandle(fh))
        });
        reply!(reply, res, |fh| reply.opened(fh, FopenFlags::empty()));
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.dirs.lock().ok().and_then(|d| d.get(&fh.0).cloned()) {
            Some(e) => e,
            None => return reply.error(Errno::EBADF),
        };
        for (i, (ino, k, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *k, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let entries = match self.dirs.lock().ok().and_then(|d| d.get(&fh.0).cloned()) {
            Some(e) => e,
            None => return reply.error(Errno::EBADF),
        };
        let dir = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        for (i, (_, _, name)) in entries.iter().enumerate().skip(offset as usize) {
            let Ok(a) = self.remember(dir.join(name)) else { continue };
            if reply.add(a.ino, i as u64 + 1, name, &self.ttl, &a, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        if let Ok(mut d) = self.dirs.lock() {
            d.remove(&fh.0);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let res = self.path(ino).and_then(|p| {
            let c = cpath(&p)?;
            // SAFETY: `c` is valid; `st` is written by statvfs before it is read.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
            Ok(st)
        });
        reply!(reply, res, |s| reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32
        ));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let res = self.child(parent, name).and_then(|p| {
            let mut o = Self::open_flags(flags);
            o.create(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                // Creating needs write access to the descriptor in std; the kernel's open
                // was read-only, so the handle is used for reads only.
                o.write(true);
            }
            let f = o.open(&p).map_err(errno)?;
            let attr = self.remember(p)?;
            Ok((attr, self.add_file(f)?))
        });
        reply!(reply, res, |v| reply.created(&self.ttl, &v.0, Generation(0), v.1, FopenFlags::empty()));
    }
}

fn usage() -> ! {
    eprintln!("usage: passthrough SOURCE MOUNTPOINT [--threads N] [--ttl-ms MS]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(source), Some(mnt)) = (args.next(), args.next()) else { usage() };
    let (mut threads, mut ttl_ms) = (8usize, 1000u64);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.to_str().and_then(|s| s.parse::<u64>().ok())).unwrap_or_else(|| usage());
        match a.to_str() {
            Some("--threads") => threads = v as usize,
            Some("--ttl-ms") => ttl_ms = v,
            _ => usage(),
        }
    }
    let source = PathBuf::from(source);
    let md = match std::fs::metadata(&source) {
        Ok(md) if md.is_dir() => md,
        _ => {
            eprintln!("passthrough: {} is not a directory", source.display());
            std::process::exit(1)
        }
    };
    let fs = Passthrough {
        source_ino: md.ino(),
        ttl: Duration::from_millis(ttl_ms),
        paths: RwLock::new(HashMap::from([(1, source.clone())])),
        files: RwLock::new(HashMap::new()),
        dirs: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
    };
    let mut cfg = fuser::Config::default();
    cfg.mount_options =
        vec![MountOption::FSName("passthrough".into()), MountOption::DefaultPermissions, MountOption::RW];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = true;
    if let Err(e) = fuser::mount(fs, Path::new(&mnt), &cfg) {
        eprintln!("passthrough: cannot serve {}: {e}", Path::new(&mnt).display());
        std::process::exit(1);
    }
}
