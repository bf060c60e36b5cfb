//! Strata attributes and errors in NFSv3's terms.

use nfs3_types::nfs3::{Nfs3Option, fattr3, ftype3, nfsstat3, nfstime3, specdata3, wcc_attr, wcc_data};
use strata_nfs_wire::{Sattr, SetTime3};
use strata_types::{Attr, Ctx, FileType, MAY_EXEC, MAY_READ, MAY_WRITE, SetAttr, SetTime, Timespec};
use strata_vfs::VfsError;

/// ACCESS3 bits (RFC 1813).
pub mod access {
    /// Read data or list a directory.
    pub const READ: u32 = 0x01;
    /// Look names up in a directory.
    pub const LOOKUP: u32 = 0x02;
    /// Rewrite data or change a directory's entries.
    pub const MODIFY: u32 = 0x04;
    /// Write past the end or add entries.
    pub const EXTEND: u32 = 0x08;
    /// Delete entries of a directory.
    pub const DELETE: u32 = 0x10;
    /// Execute a file.
    pub const EXECUTE: u32 = 0x20;
}

fn time(t: Timespec) -> nfstime3 {
    nfstime3 { seconds: t.sec.clamp(0, i64::from(u32::MAX)) as u32, nseconds: t.nsec }
}

fn ftype(k: FileType) -> ftype3 {
    match k {
        FileType::File => ftype3::NF3REG,
        FileType::Dir => ftype3::NF3DIR,
        FileType::Symlink => ftype3::NF3LNK,
        FileType::Fifo => ftype3::NF3FIFO,
        FileType::Socket => ftype3::NF3SOCK,
        FileType::CharDev => ftype3::NF3CHR,
        FileType::BlockDev => ftype3::NF3BLK,
    }
}

fn set_time(t: SetTime3) -> Option<SetTime> {
    match t {
        SetTime3::Keep => None,
        SetTime3::Now => Some(SetTime::Now),
        SetTime3::At(sec, nsec) => Some(SetTime::At(Timespec { sec: i64::from(sec), nsec })),
    }
}

/// The attribute changes an `sattr3` asks for.
pub fn setattr(s: &Sattr) -> SetAttr {
    SetAttr { mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, atime: set_time(s.atime), mtime: set_time(s.mtime) }
}

/// `fattr3` of an inode of volume `fsid`.
pub fn fattr(ino: u64, a: &Attr, fsid: u64) -> fattr3 {
    let rdev = u64::from(a.rdev);
    fattr3 {
        type_: ftype(a.kind),
        mode: a.mode & 0o7777,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        used: a.size.div_ceil(4096) * 4096,
        rdev: specdata3 { specdata1: libc::major(rdev), specdata2: libc::minor(rdev) },
        fsid,
        fileid: ino,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
    }
}

/// `post_op_attr` from attributes, if known.
pub fn post_op(ino: u64, a: Option<&Attr>, fsid: u64) -> Nfs3Option<fattr3> {
    a.map_or(Nfs3Option::None, |a| Nfs3Option::Some(fattr(ino, a, fsid)))
}

/// `wcc_data` with attributes before (when known) and after.
pub fn wcc(ino: u64, before: Option<&Attr>, after: Option<&Attr>, fsid: u64) -> wcc_data {
    wcc_data {
        before: before.map_or(Nfs3Option::None, |b| {
            Nfs3Option::Some(wcc_attr { size: b.size, mtime: time(b.mtime), ctime: time(b.ctime) })
        }),
        after: post_op(ino, after, fsid),
    }
}

/// The NFS status for a client error.
pub fn status(e: &VfsError) -> nfsstat3 {
    if let VfsError::Unavailable(_) = e {
        // The server is away (restart, failover): tell the client to retry later.
        return nfsstat3::NFS3ERR_JUKEBOX;
    }
    errno_status(e.errno())
}

/// The status of an operation on what a handle names: a missing object is a stale handle
/// (it was deleted), not a missing name.
pub fn handle_status(e: &VfsError) -> nfsstat3 {
    if e.errno() == libc::ENOENT { nfsstat3::NFS3ERR_STALE } else { status(e) }
}

/// The NFS status for an errno.
pub fn errno_status(errno: i32) -> nfsstat3 {
    match errno {
        libc::EPERM => nfsstat3::NFS3ERR_PERM,
        libc::ENOENT => nfsstat3::NFS3ERR_NOENT,
        libc::ENXIO => nfsstat3::NFS3ERR_NXIO,
        libc::EACCES => nfsstat3::NFS3ERR_ACCES,
        libc::EEXIST => nfsstat3::NFS3ERR_EXIST,
        libc::EXDEV => nfsstat3::NFS3ERR_XDEV,
        libc::ENODEV => nfsstat3::NFS3ERR_NODEV,
        libc::ENOTDIR => nfsstat3::NFS3ERR_NOTDIR,
        libc::EISDIR => nfsstat3::NFS3ERR_ISDIR,
        libc::EINVAL | libc::ELOOP => nfsstat3::NFS3ERR_INVAL,
        libc::EFBIG => nfsstat3::NFS3ERR_FBIG,
        libc::ENOSPC => nfsstat3::NFS3ERR_NOSPC,
        libc::EROFS => nfsstat3::NFS3ERR_ROFS,
        libc::EMLINK => nfsstat3::NFS3ERR_MLINK,
        libc::ENAMETOOLONG => nfsstat3::NFS3ERR_NAMETOOLONG,
        libc::ENOTEMPTY => nfsstat3::NFS3ERR_NOTEMPTY,
        libc::EDQUOT => nfsstat3::NFS3ERR_DQUOT,
        libc::ESTALE => nfsstat3::NFS3ERR_STALE,
        libc::EOPNOTSUPP => nfsstat3::NFS3ERR_NOTSUPP,
        libc::EAGAIN => nfsstat3::NFS3ERR_JUKEBOX,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

/// The ACCESS bits `ctx` has on an inode by its mode bits (`read_only`: the export refuses
/// changes).
pub fn allowed(a: &Attr, ctx: &Ctx, read_only: bool) -> u32 {
    use access::*;
    let bits = a.permitted(ctx);
    let mut out = 0;
    if bits & MAY_READ != 0 {
        out |= READ;
    }
    if bits & MAY_WRITE != 0 && !read_only {
        out |= MODIFY | EXTEND;
        if a.kind == FileType::Dir {
            out |= DELETE;
        }
    }
    if bits & MAY_EXEC != 0 {
        out |= if a.kind == FileType::Dir { LOOKUP } else { EXECUTE };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: FileType, mode: u32, uid: u32, gid: u32) -> Attr {
        Attr { size: 5000, parent: 1, volume: 1, ..Attr::new(kind, mode, uid, gid) }
    }

    fn ctx(uid: u32, gid: u32) -> Ctx {
        Ctx { uid, gid, groups: vec![], check: true }
    }

    #[test]
    fn access_follows_mode_bits() {
        use access::*;
        let f = attr(FileType::File, 0o640, 10, 20);
        assert_eq!(allowed(&f, &ctx(10, 1), false), READ | MODIFY | EXTEND);
        assert_eq!(allowed(&f, &ctx(11, 20), false), READ);
        assert_eq!(allowed(&f, &ctx(12, 21), false), 0);
        assert_eq!(allowed(&f, &ctx(0, 0), false), READ | MODIFY | EXTEND);
        assert_eq!(allowed(&f, &ctx(10, 1), true), READ);
        let d = attr(FileType::Dir, 0o755, 10, 20);
        assert_eq!(allowed(&d, &ctx(10, 1), false), READ | MODIFY | EXTEND | DELETE | LOOKUP);
        assert_eq!(allowed(&d, &ctx(99, 99), false), READ | LOOKUP);
    }

    #[test]
    fn errors_map_to_nfs_statuses() {
        assert_eq!(errno_status(libc::EDQUOT), nfsstat3::NFS3ERR_DQUOT);
        assert_eq!(errno_status(libc::ENOTEMPTY), nfsstat3::NFS3ERR_NOTEMPTY);
        assert_eq!(status(&VfsError::Unavailable("x".into())), nfsstat3::NFS3ERR_JUKEBOX);
        assert_eq!(status(&VfsError::Denied("x".into())), nfsstat3::NFS3ERR_ACCES);
        assert_eq!(errno_status(libc::EBADMSG), nfsstat3::NFS3ERR_IO);
    }

    #[test]
    fn fattr_carries_identity() {
        let f = fattr(77, &attr(FileType::File, 0o644, 1, 2), 9);
        assert_eq!((f.fileid, f.fsid, f.size, f.used), (77, 9, 5000, 8192));
        assert_eq!(f.type_, ftype3::NF3REG);
    }
}
