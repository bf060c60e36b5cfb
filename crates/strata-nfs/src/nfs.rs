//! The NFSv3 program (RFC 1813): every procedure, on the client VFS of each export.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use nfs3_types::nfs3::{
    ACCESS3resok, COMMIT3resok, FSINFO3resok, FSSTAT3resok, LOOKUP3resok, Nfs3Option, PATHCONF3resok, READLINK3resok,
    SETATTR3resok, WRITE3resok, cookieverf3, nfs_fh3, nfspath3, nfsstat3, nfstime3, stable_how, writeverf3,
};
use nfs3_types::xdr_codec::Opaque;
use strata_types::{Attr, Ctx, FileType, NameError, SetAttr, SetTime, Timespec};
use strata_vfs::VfsError;

use crate::attr::{self, access, fattr, handle_status, post_op, status, wcc};
use crate::gateway::{Export, Gateway};
use crate::reply::Reply;
use crate::xdr::{pack_into, put_u32};
use strata_nfs_wire::args::{CreateHow, NodeKind};
use strata_nfs_wire::{Decoder, NfsCall, UnixCred, XdrError, decode_nfs};

/// Largest READ and WRITE transfer offered (FSINFO rtmax/wtmax).
pub const MAX_IO: u32 = 1 << 20;

type NfsResult<T> = Result<T, nfsstat3>;

/// What a call of the NFS program comes to.
pub enum Outcome {
    /// The result (status and body) was appended to the reply.
    Done,
    /// The arguments did not decode.
    Garbage(XdrError),
    /// No such procedure.
    NoProc,
}

/// Words of the failure body after an error status: attributes and wcc data the failure
/// carries, sent as "not present", which every client accepts.
fn fail_words(proc_: u32) -> usize {
    match proc_ {
        1 => 0,
        3..=6 | 16..=20 => 1,
        15 => 3,
        14 => 4,
        _ => 2,
    }
}

/// A name an existing entry may have (`.` and `..` included).
fn check_name(name: &[u8]) -> NfsResult<()> {
    match strata_types::check_name(name) {
        Err(NameError::Dot) => Ok(()),
        r => r.map_err(name_status),
    }
}

/// A name a new entry may have.
fn check_new_name(name: &[u8]) -> NfsResult<()> {
    strata_types::check_name(name).map_err(name_status)
}

fn name_status(e: NameError) -> nfsstat3 {
    match e {
        NameError::TooLong => nfsstat3::NFS3ERR_NAMETOOLONG,
        NameError::Dot => nfsstat3::NFS3ERR_EXIST,
        NameError::Empty | NameError::BadByte => nfsstat3::NFS3ERR_INVAL,
    }
}

fn fh3(data: Vec<u8>) -> nfs_fh3 {
    nfs_fh3 { data: Opaque::owned(data) }
}

fn times_of(s: &SetAttr) -> bool {
    s.uid.is_some() || s.gid.is_some() || s.size.is_some() || s.atime.is_some() || s.mtime.is_some()
}

impl Gateway {
    /// Runs one NFS procedure for a caller at `peer`, appending its result to `out` (which
    /// holds the reply's headers; a READ's data follows as the block cache's own buffers).
    pub async fn nfs(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        proc_: u32,
        d: &mut Decoder<'_>,
        out: &mut Reply,
    ) -> Outcome {
        let base = out.head.len();
        let res = match self.nfs_proc(peer, cred, proc_, d, out).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::NoProc,
            Err(e) => return Outcome::Garbage(e),
        };
        if let Err(st) = res {
            out.head.truncate(base);
            out.data.clear();
            pack_into(&mut out.head, &st);
            for _ in 0..fail_words(proc_) {
                put_u32(&mut out.head, 0);
            }
        }
        Outcome::Done
    }

    /// Decodes arguments (`Err` = garbage), then runs the procedure, writing NFS3_OK and the
    /// result to `out` or returning its error status.
    async fn nfs_proc(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        proc_: u32,
        d: &mut Decoder<'_>,
        reply: &mut Reply,
    ) -> Result<Option<NfsResult<()>>, XdrError> {
        let Some(call) = decode_nfs(proc_, d)? else { return Ok(None) };
        Ok(Some(match call {
            NfsCall::Read(fh, off, count) => self.read(peer, cred, fh, off, count, reply).await,
            call => self.proc_in_head(peer, cred, call, &mut reply.head).await,
        }))
    }

    /// Runs a procedure whose whole result goes in the reply's head (all but READ).
    async fn proc_in_head(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        call: NfsCall<'_>,
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        match call {
            // Void result: no status either.
            NfsCall::Null => Ok(()),
            NfsCall::Getattr(fh) => self.getattr(peer, fh, out).await,
            NfsCall::Setattr(fh, s, guard) => self.setattr(peer, cred, fh, attr::setattr(&s), guard, out).await,
            NfsCall::Lookup(w) => self.lookup(peer, cred, w.dir, w.name, out).await,
            NfsCall::Access(fh, want) => self.access(peer, cred, fh, want, out).await,
            NfsCall::Readlink(fh) => self.readlink(peer, fh, out).await,
            // Answered by `nfs_proc`, which gives it the whole reply for its data.
            NfsCall::Read(..) => Err(nfsstat3::NFS3ERR_SERVERFAULT),
            NfsCall::Write { fh, offset, count, stable, data } => {
                self.write(peer, cred, fh, offset, count, stable, data, out).await
            }
            NfsCall::Create(w, how) => self.create(peer, cred, w.dir, w.name, how, out).await,
            NfsCall::Mkdir(w, s) => self.make(peer, cred, w.dir, w.name, Make::Dir(attr::setattr(&s)), out).await,
            NfsCall::Symlink(w, s, target) => {
                let what = Make::Symlink(attr::setattr(&s), target.to_vec());
                self.make(peer, cred, w.dir, w.name, what, out).await
            }
            NfsCall::Mknod(w, what) => self.make(peer, cred, w.dir, w.name, Make::Node(what), out).await,
            NfsCall::Remove(w) => self.remove(peer, cred, w.dir, w.name, false, out).await,
            NfsCall::Rmdir(w) => self.remove(peer, cred, w.dir, w.name, true, out).await,
            NfsCall::Rename(from, to) => self.rename(peer, cred, (from.dir, from.name), (to.dir, to.name), out).await,
            NfsCall::Link(fh, w) => self.link(peer, cred, fh, w.dir, w.name, out).await,
            NfsCall::Readdir(fh, cookie, verf, count) => {
                self.readdir(peer, cred, fh, cookie, verf, count, count, false, out).await
            }
            NfsCall::Readdirplus(fh, cookie, verf, dircount, maxcount) => {
                self.readdir(peer, cred, fh, cookie, verf, dircount, maxcount, true, out).await
            }
            NfsCall::Fsstat(fh) => self.fsstat(peer, fh, out).await,
            NfsCall::Fsinfo(fh) => self.fsinfo(peer, fh, out).await,
            NfsCall::Pathconf(fh) => self.pathconf(peer, fh, out).await,
            NfsCall::Commit(fh, _, _) => self.commit(peer, fh, out).await,
        }
    }

    /// Current attributes of an inode (within the attribute lifetime); a deleted one is stale.
    async fn attr(&self, ex: &Export, ino: u64) -> NfsResult<Attr> {
        match ex.vfs.getattr_within(ino, self.attr_ttl).await {
            Ok(a) if a.nlink == 0 => {
                ex.files.forget(ino).await;
                Err(nfsstat3::NFS3ERR_STALE)
            }
            Ok(a) => Ok(a),
            Err(e) => Err(handle_status(&e)),
        }
    }

    /// The status of an operation that failed in directories `dirs`: ENOENT there may mean a
    /// directory itself is gone (deleted, perhaps by another client, whatever the caches
    /// still say), which is a stale handle (RFC 1813), not a missing name. Linux clients redo
    /// a path lookup on ESTALE, not on ENOENT. Asked of the server only on this error path.
    async fn in_dirs_status(ex: &Export, dirs: &[u64], e: &VfsError) -> nfsstat3 {
        if e.errno() == libc::ENOENT {
            for &dir in dirs {
                match ex.vfs.getattr_within(dir, Duration::ZERO).await {
                    Ok(a) if a.nlink == 0 => return nfsstat3::NFS3ERR_STALE,
                    Err(d) if d.errno() == libc::ENOENT => return nfsstat3::NFS3ERR_STALE,
                    _ => {}
                }
            }
        }
        status(e)
    }

    /// Attributes for a reply's optional fields: cached, else asked for, else left out.
    async fn some_attr(ex: &Export, ino: u64) -> Option<Attr> {
        match ex.vfs.getattr(ino).await {
            Ok(a) => Some(a),
            Err(_) => ex.vfs.cached_attr(ino),
        }
    }

    fn writable(ex: &Export) -> NfsResult<()> {
        if ex.spec.read_only { Err(nfsstat3::NFS3ERR_ROFS) } else { Ok(()) }
    }

    async fn getattr(&self, peer: IpAddr, fh: &[u8], out: &mut Vec<u8>) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let a = self.attr(&ex, ino).await?;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &fattr(ino, &a, ex.fsid));
        Ok(())
    }

    async fn setattr(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        fh: &[u8],
        s: SetAttr,
        guard: Option<(u32, u32)>,
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let before = self.attr(&ex, ino).await?;
        if let Some(want) = guard
            && (i64::from(want.0) != before.ctime.sec || want.1 != before.ctime.nsec)
        {
            return Err(nfsstat3::NFS3ERR_NOT_SYNC);
        }
        Self::writable(&ex)?;
        let ctx = ex.spec.ctx(cred);
        let after = ex.vfs.setattr(&ctx, ino, &s).await.map_err(|e| handle_status(&e))?;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &SETATTR3resok { obj_wcc: wcc(ino, Some(&before), Some(&after), ex.fsid) });
        Ok(())
    }

    /// The inode a name in a directory stands for, `.` and `..` included (never above the
    /// export's root).
    async fn lookup_ino(&self, ex: &Export, ctx: &Ctx, dir: u64, name: &[u8]) -> NfsResult<(u64, Attr)> {
        check_name(name).map_err(|e| if e == nfsstat3::NFS3ERR_INVAL { nfsstat3::NFS3ERR_NOENT } else { e })?;
        match name {
            b"." => Ok((dir, self.attr(ex, dir).await?)),
            b".." => {
                let d = self.attr(ex, dir).await?;
                if d.kind != FileType::Dir {
                    return Err(nfsstat3::NFS3ERR_NOTDIR);
                }
                let up = if dir == ex.root { dir } else { d.parent };
                Ok((up, self.attr(ex, up).await?))
            }
            _ => match ex.vfs.lookup_cached(ctx, dir, name).await {
                Ok(found) => Ok(found),
                Err(e) => Err(Self::in_dirs_status(ex, &[dir], &e).await),
            },
        }
    }

    async fn lookup(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        dir: &[u8],
        name: &[u8],
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, dino) = self.resolve(dir, peer)?;
        let ctx = ex.spec.ctx(cred);
        let (ino, a) = self.lookup_ino(&ex, &ctx, dino, name).await?;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(
            out,
            &LOOKUP3resok {
                object: fh3(ex.key.encode(ino)),
                obj_attributes: post_op(ino, Some(&a), ex.fsid),
                dir_attributes: post_op(dino, ex.vfs.cached_attr(dino).as_ref(), ex.fsid),
            },
        );
        Ok(())
    }

    async fn access(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        fh: &[u8],
        want: u32,
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let a = self.attr(&ex, ino).await?;
        let ctx = ex.spec.ctx(cred);
        let got = attr::allowed(&a, &ctx, ex.spec.read_only) & want;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &ACCESS3resok { obj_attributes: post_op(ino, Some(&a), ex.fsid), access: got });
        Ok(())
    }

    async fn readlink(&self, peer: IpAddr, fh: &[u8], out: &mut Vec<u8>) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let a = self.attr(&ex, ino).await?;
        if a.kind != FileType::Symlink {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let target = ex.vfs.readlink(ino).await.map_err(|e| status(&e))?;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(
            out,
            &READLINK3resok { symlink_attributes: post_op(ino, Some(&a), ex.fsid), data: nfspath3::from(target) },
        );
        Ok(())
    }

    /// Refuses data access the caller's ids do not allow. The owner may always read and write
    /// (a file created read-only must still take the writes of the open that created it).
    fn check_data(a: &Attr, ctx: &Ctx, write: bool) -> NfsResult<()> {
        match a.kind {
            FileType::File => {}
            FileType::Dir => return Err(nfsstat3::NFS3ERR_ISDIR),
            _ => return Err(nfsstat3::NFS3ERR_INVAL),
        }
        if ctx.uid == 0 || ctx.uid == a.uid {
            return Ok(());
        }
        let need = if write { access::MODIFY } else { access::READ };
        let got = attr::allowed(a, ctx, false);
        // Reading needs read permission, or execute (a program being loaded).
        if got & need != 0 || (!write && got & access::EXECUTE != 0) { Ok(()) } else { Err(nfsstat3::NFS3ERR_ACCES) }
    }

    /// Attributes for a permission check: the ones last seen (no round trip) or fresh ones.
    async fn check_attr(&self, ex: &Export, ino: u64) -> NfsResult<Attr> {
        match ex.vfs.cached_attr(ino) {
            Some(a) if a.nlink > 0 => Ok(a),
            _ => self.attr(ex, ino).await,
        }
    }

    async fn read(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        fh: &[u8],
        off: u64,
        count: u32,
        out: &mut Reply,
    ) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let a = self.check_attr(&ex, ino).await?;
        Self::check_data(&a, &ex.spec.ctx(cred), false)?;
        let f = ex.files.get(ino, false).await.map_err(|e| handle_status(&e))?;
        let count = count.min(MAX_IO);
        let data = ex.vfs.read_bytes(f.fh, off, count).await.map_err(|e| status(&e))?;
        let len: usize = data.iter().map(|d| d.len()).sum();
        let after = ex.vfs.cached_attr(ino);
        let eof = (len as u32) < count || after.is_some_and(|a| off + len as u64 >= a.size);
        // READ3resok field by field up to the data's length; the data itself goes out as the
        // cache's buffers.
        pack_into(&mut out.head, &nfsstat3::NFS3_OK);
        pack_into(&mut out.head, &post_op(ino, after.as_ref(), ex.fsid));
        put_u32(&mut out.head, len as u32);
        put_u32(&mut out.head, u32::from(eof));
        put_u32(&mut out.head, len as u32);
        out.push_opaque(data);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        fh: &[u8],
        off: u64,
        count: u32,
        stable: u32,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        Self::writable(&ex)?;
        if count as usize != data.len() {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        if data.len() > MAX_IO as usize {
            return Err(nfsstat3::NFS3ERR_FBIG);
        }
        let before = self.check_attr(&ex, ino).await?;
        Self::check_data(&before, &ex.spec.ctx(cred), true)?;
        let f = ex.files.get(ino, true).await.map_err(|e| handle_status(&e))?;
        ex.vfs.write(f.fh, off, data).await.map_err(|e| status(&e))?;
        let committed = if stable == 0 {
            stable_how::UNSTABLE
        } else {
            ex.vfs.fsync(f.fh).await.map_err(|e| status(&e))?;
            stable_how::FILE_SYNC
        };
        let mut after = ex.vfs.cached_attr(ino);
        if let Some(a) = after.as_mut() {
            a.size = a.size.max(off + data.len() as u64);
        }
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(
            out,
            &WRITE3resok {
                file_wcc: wcc(ino, None, after.as_ref(), ex.fsid),
                count: data.len() as u32,
                committed,
                verf: writeverf3(self.verf),
            },
        );
        Ok(())
    }

    async fn commit(&self, peer: IpAddr, fh: &[u8], out: &mut Vec<u8>) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        self.check_attr(&ex, ino).await?;
        // A file deleted meanwhile (here or by another client) is a stale handle, whether or
        // not this gateway still holds it open: ENOENT is no COMMIT status (RFC 1813 3.3.21).
        ex.vfs.commit(ino, true).await.map_err(|e| handle_status(&e))?;
        // A file whose last name is gone answers STALE, at once and later alike (as GETATTR
        // does): what this gateway still held open of it reached no file anyone can open. A
        // commit with data refreshed the attributes; one with nothing left to send (the data
        // went with an earlier flush or close) did not, so the attributes are asked again
        // once older than the attribute lifetime, never taken from the cache as they stand.
        let after = self.attr(&ex, ino).await?;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &COMMIT3resok { file_wcc: wcc(ino, None, Some(&after), ex.fsid), verf: writeverf3(self.verf) });
        Ok(())
    }

    /// Appends a created object's handle, attributes and the directory's wcc data.
    async fn made(&self, ex: &Export, dir: u64, ino: u64, a: &Attr, out: &mut Vec<u8>) {
        let dir_after = Self::some_attr(ex, dir).await;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &Nfs3Option::Some(fh3(ex.key.encode(ino))));
        pack_into(out, &post_op(ino, Some(a), ex.fsid));
        pack_into(out, &wcc(dir, None, dir_after.as_ref(), ex.fsid));
    }

    /// Applies what creation itself did not set (owner, size, times).
    async fn apply_rest(ex: &Export, ctx: &Ctx, ino: u64, a: Attr, s: &SetAttr) -> NfsResult<Attr> {
        let rest = SetAttr { mode: None, ..s.clone() };
        let needed = rest.uid.is_some_and(|u| u != a.uid) || rest.gid.is_some_and(|g| g != a.gid) || times_of(&rest);
        if !needed {
            return Ok(a);
        }
        ex.vfs.setattr(ctx, ino, &rest).await.map_err(|e| status(&e))
    }

    async fn create(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        dir: &[u8],
        name: &[u8],
        how: CreateHow,
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, dino) = self.resolve(dir, peer)?;
        Self::writable(&ex)?;
        check_new_name(name)?;
        let ctx = ex.spec.ctx(cred);
        let mode = |s: &SetAttr| libc::S_IFREG | s.mode.unwrap_or(0o644);
        let (ino, a) = match &how {
            CreateHow::Unchecked(s) => match ex.vfs.mknod(&ctx, dino, name, mode(&attr::setattr(s)), 0, 0).await {
                Ok((ino, a)) => {
                    ex.files.created(ino);
                    (ino, Self::apply_rest(&ex, &ctx, ino, a, &attr::setattr(s)).await?)
                }
                Err(e) if e.errno() == libc::EEXIST => {
                    let (ino, a) = ex.vfs.lookup(&ctx, dino, name).await.map_err(|e| status(&e))?;
                    if a.kind != FileType::File {
                        return Err(nfsstat3::NFS3ERR_EXIST);
                    }
                    match s.size {
                        Some(size) => {
                            let t = SetAttr { size: Some(size), ..Default::default() };
                            (ino, ex.vfs.setattr(&ctx, ino, &t).await.map_err(|e| status(&e))?)
                        }
                        None => (ino, a),
                    }
                }
                Err(e) => return Err(Self::in_dirs_status(&ex, &[dino], &e).await),
            },
            CreateHow::Guarded(s) => {
                let s = attr::setattr(s);
                let (ino, a) = match ex.vfs.mknod(&ctx, dino, name, mode(&s), 0, 0).await {
                    Ok(made) => made,
                    Err(e) => return Err(Self::in_dirs_status(&ex, &[dino], &e).await),
                };
                ex.files.created(ino);
                (ino, Self::apply_rest(&ex, &ctx, ino, a, &s).await?)
            }
            CreateHow::Exclusive(verf) => {
                // The verifier is kept in the times until the client sets real attributes, so
                // a retransmitted CREATE finds its own file (RFC 1813, 3.3.8).
                let stamp = verifier_times(verf);
                match ex.vfs.mknod(&ctx, dino, name, libc::S_IFREG | 0o600, 0, 0).await {
                    Ok((ino, _)) => {
                        ex.files.created(ino);
                        let t = SetAttr {
                            atime: Some(SetTime::At(stamp.0)),
                            mtime: Some(SetTime::At(stamp.1)),
                            ..Default::default()
                        };
                        (ino, ex.vfs.setattr(&ctx, ino, &t).await.map_err(|e| status(&e))?)
                    }
                    Err(e) if e.errno() == libc::EEXIST => {
                        let (ino, a) = ex.vfs.lookup(&ctx, dino, name).await.map_err(|e| status(&e))?;
                        if a.kind != FileType::File || a.atime != stamp.0 || a.mtime != stamp.1 {
                            return Err(nfsstat3::NFS3ERR_EXIST);
                        }
                        (ino, a)
                    }
                    Err(e) => return Err(Self::in_dirs_status(&ex, &[dino], &e).await),
                }
            }
        };
        self.made(&ex, dino, ino, &a, out).await;
        Ok(())
    }

    async fn make(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        dir: &[u8],
        name: &[u8],
        what: Make,
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, dino) = self.resolve(dir, peer)?;
        Self::writable(&ex)?;
        check_new_name(name)?;
        let ctx = ex.spec.ctx(cred);
        let v = &ex.vfs;
        let made = match &what {
            Make::Dir(s) => v.mkdir(&ctx, dino, name, s.mode.unwrap_or(0o755), 0).await.map(|r| (r, s.clone())),
            Make::Symlink(s, target) => {
                if target.is_empty() {
                    return Err(nfsstat3::NFS3ERR_INVAL);
                }
                v.symlink(&ctx, dino, name, target).await.map(|r| (r, s.clone()))
            }
            Make::Node(k) => {
                let (kind, s, rdev) = match k {
                    NodeKind::Chr(s, ma, mi) => (libc::S_IFCHR, s, libc::makedev(*ma, *mi) as u32),
                    NodeKind::Blk(s, ma, mi) => (libc::S_IFBLK, s, libc::makedev(*ma, *mi) as u32),
                    NodeKind::Sock(s) => (libc::S_IFSOCK, s, 0),
                    NodeKind::Fifo(s) => (libc::S_IFIFO, s, 0),
                    NodeKind::Other => return Err(nfsstat3::NFS3ERR_BADTYPE),
                };
                let s = attr::setattr(s);
                v.mknod(&ctx, dino, name, kind | s.mode.unwrap_or(0o644), 0, rdev).await.map(|r| (r, s))
            }
        };
        let ((ino, a), s) = match made {
            Ok(m) => m,
            Err(e) => return Err(Self::in_dirs_status(&ex, &[dino], &e).await),
        };
        let a = if matches!(what, Make::Symlink(..)) {
            // Symbolic links have no mode of their own; owner changes apply.
            Self::apply_rest(&ex, &ctx, ino, a, &SetAttr { uid: s.uid, gid: s.gid, ..Default::default() }).await?
        } else {
            Self::apply_rest(&ex, &ctx, ino, a, &s).await?
        };
        self.made(&ex, dino, ino, &a, out).await;
        Ok(())
    }

    async fn remove(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        dir: &[u8],
        name: &[u8],
        is_dir: bool,
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, dino) = self.resolve(dir, peer)?;
        Self::writable(&ex)?;
        check_name(name)?;
        if name == b"." || name == b".." {
            return Err(if is_dir { nfsstat3::NFS3ERR_INVAL } else { nfsstat3::NFS3ERR_ISDIR });
        }
        let ctx = ex.spec.ctx(cred);
        let r = if is_dir { ex.vfs.rmdir(&ctx, dino, name).await } else { ex.vfs.unlink(&ctx, dino, name).await };
        if let Err(e) = r {
            return Err(Self::in_dirs_status(&ex, &[dino], &e).await);
        }
        let after = Self::some_attr(&ex, dino).await;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &wcc(dino, None, after.as_ref(), ex.fsid));
        Ok(())
    }

    async fn rename(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        from: (&[u8], &[u8]),
        to: (&[u8], &[u8]),
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, fdir) = self.resolve(from.0, peer)?;
        let (ex2, tdir) = self.resolve(to.0, peer)?;
        if !Arc::ptr_eq(&ex, &ex2) {
            return Err(nfsstat3::NFS3ERR_XDEV);
        }
        Self::writable(&ex)?;
        check_new_name(from.1).map_err(|e| if e == nfsstat3::NFS3ERR_EXIST { nfsstat3::NFS3ERR_INVAL } else { e })?;
        check_new_name(to.1).map_err(|e| if e == nfsstat3::NFS3ERR_EXIST { nfsstat3::NFS3ERR_INVAL } else { e })?;
        let ctx = ex.spec.ctx(cred);
        if let Err(e) = ex.vfs.rename(&ctx, fdir, from.1, tdir, to.1, 0).await {
            return Err(Self::in_dirs_status(&ex, &[fdir, tdir], &e).await);
        }
        let fa = Self::some_attr(&ex, fdir).await;
        let ta = if tdir == fdir { fa } else { Self::some_attr(&ex, tdir).await };
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &wcc(fdir, None, fa.as_ref(), ex.fsid));
        pack_into(out, &wcc(tdir, None, ta.as_ref(), ex.fsid));
        Ok(())
    }

    async fn link(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        fh: &[u8],
        dir: &[u8],
        name: &[u8],
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let (ex2, dino) = self.resolve(dir, peer)?;
        if !Arc::ptr_eq(&ex, &ex2) {
            return Err(nfsstat3::NFS3ERR_XDEV);
        }
        Self::writable(&ex)?;
        check_new_name(name)?;
        let ctx = ex.spec.ctx(cred);
        let a = match ex.vfs.link(&ctx, ino, dino, name).await {
            Ok(a) => a,
            // The directory or the file may be the one gone.
            Err(e) => return Err(Self::in_dirs_status(&ex, &[dino, ino], &e).await),
        };
        let da = Self::some_attr(&ex, dino).await;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &post_op(ino, Some(&a), ex.fsid));
        pack_into(out, &wcc(dino, None, da.as_ref(), ex.fsid));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn readdir(
        &self,
        peer: IpAddr,
        cred: Option<&UnixCred>,
        fh: &[u8],
        cookie: u64,
        verf: [u8; 8],
        dircount: u32,
        maxcount: u32,
        plus: bool,
        out: &mut Vec<u8>,
    ) -> NfsResult<()> {
        let (ex, dino) = self.resolve(fh, peer)?;
        let ctx = ex.spec.ctx(cred);
        let (verf, mut rx) = self.listing(&ex, &ctx, dino, cookie, u64::from_be_bytes(verf), plus).await?;
        let dir_attr = rx.borrow().dir_attr();
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(out, &post_op(dino, dir_attr.as_ref(), ex.fsid));
        pack_into(out, &cookieverf3(verf.to_be_bytes()));
        // Room: the reply so far plus the end of the list (no more entries, eof).
        let limit = (maxcount as usize).min(MAX_IO as usize);
        let mut used = out.len() + 8;
        let mut names = 0usize;
        let mut next = usize::try_from(cookie).unwrap_or(usize::MAX);
        let mut sent = 0;
        // Names sent, which LOOKUPs that follow then find without asking the server.
        let mut listed: Vec<(Vec<u8>, u64)> = Vec::new();
        let eof = 'fill: loop {
            // Entries that have arrived go out at once; the reply waits for more only when it
            // has room left and the listing is still being fetched.
            let progress = rx.borrow_and_update().clone();
            for (i, e) in progress.from(next) {
                let name_len = e.name.len() + crate::xdr::pad(e.name.len());
                let entry_name = 8 + 4 + name_len + 8;
                let (ino, attr) = if e.name == b".." && dino == ex.root { (dino, dir_attr) } else { (e.ino, e.attr) };
                let mut entry = Vec::with_capacity(entry_name + 140);
                put_u32(&mut entry, 1); // value follows
                entry.extend_from_slice(&ino.to_be_bytes());
                pack_into(&mut entry, &nfs3_types::nfs3::filename3::from(e.name.as_slice()));
                entry.extend_from_slice(&(i as u64 + 1).to_be_bytes());
                if plus {
                    pack_into(&mut entry, &post_op(ino, attr.as_ref(), ex.fsid));
                    let handle = if e.name == b".." && attr.is_none() {
                        Nfs3Option::None
                    } else {
                        Nfs3Option::Some(fh3(ex.key.encode(ino)))
                    };
                    pack_into(&mut entry, &handle);
                }
                if used + entry.len() > limit || (plus && names + entry_name > dircount.max(512) as usize) {
                    break 'fill false;
                }
                if plus && e.name != b"." && e.name != b".." {
                    listed.push((e.name.clone(), e.ino));
                }
                used += entry.len();
                names += entry_name;
                out.extend_from_slice(&entry);
                sent += 1;
                next = i + 1;
            }
            match progress.end() {
                Some(Ok(())) => break true,
                Some(Err(st)) => return Err(st),
                None => {
                    if rx.changed().await.is_err() {
                        // The fetch is gone without saying how it ended.
                        return Err(nfsstat3::NFS3ERR_IO);
                    }
                }
            }
        };
        if sent == 0 && !eof {
            return Err(nfsstat3::NFS3ERR_TOOSMALL);
        }
        ex.vfs.remember_names(dino, listed);
        put_u32(out, 0); // no more entries
        pack_into(out, &eof);
        Ok(())
    }

    async fn fsstat(&self, peer: IpAddr, fh: &[u8], out: &mut Vec<u8>) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let a = self.attr(&ex, ino).await?;
        let s = ex.vfs.statfs().await.map_err(|e| status(&e))?;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(
            out,
            &FSSTAT3resok {
                obj_attributes: post_op(ino, Some(&a), ex.fsid),
                tbytes: s.total,
                fbytes: s.free,
                abytes: s.free,
                tfiles: s.files,
                ffiles: s.ffree,
                afiles: s.ffree,
                invarsec: 0,
            },
        );
        Ok(())
    }

    async fn fsinfo(&self, peer: IpAddr, fh: &[u8], out: &mut Vec<u8>) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let a = self.attr(&ex, ino).await?;
        const FSF3_LINK: u32 = 1;
        const FSF3_SYMLINK: u32 = 2;
        const FSF3_HOMOGENEOUS: u32 = 8;
        const FSF3_CANSETTIME: u32 = 0x10;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(
            out,
            &FSINFO3resok {
                obj_attributes: post_op(ino, Some(&a), ex.fsid),
                rtmax: MAX_IO,
                rtpref: MAX_IO,
                rtmult: 4096,
                wtmax: MAX_IO,
                wtpref: MAX_IO,
                wtmult: 4096,
                dtpref: 64 * 1024,
                maxfilesize: strata_types::MAX_FILE_SIZE,
                time_delta: nfstime3 { seconds: 0, nseconds: 1 },
                properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME,
            },
        );
        Ok(())
    }

    async fn pathconf(&self, peer: IpAddr, fh: &[u8], out: &mut Vec<u8>) -> NfsResult<()> {
        let (ex, ino) = self.resolve(fh, peer)?;
        let a = self.attr(&ex, ino).await?;
        pack_into(out, &nfsstat3::NFS3_OK);
        pack_into(
            out,
            &PATHCONF3resok {
                obj_attributes: post_op(ino, Some(&a), ex.fsid),
                linkmax: u32::MAX,
                name_max: strata_types::NAME_MAX as u32,
                no_trunc: true,
                chown_restricted: true,
                case_insensitive: false,
                case_preserving: true,
            },
        );
        Ok(())
    }
}

/// What MKDIR, SYMLINK and MKNOD make.
enum Make {
    Dir(SetAttr),
    Symlink(SetAttr, Vec<u8>),
    Node(NodeKind),
}

/// The (atime, mtime) an exclusive CREATE's verifier is kept in.
fn verifier_times(v: &[u8; 8]) -> (Timespec, Timespec) {
    let a = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let m = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
    (Timespec { sec: i64::from(a), nsec: 0 }, Timespec { sec: i64::from(m), nsec: 0 })
}
