//! The namespace: every POSIX metadata operation on names, attributes and extended
//! attributes as one transaction over the key-value engine.
//!
//! Invariants kept by every operation (and checked by the property tests):
//! - a directory's `nlink` is 2 plus its subdirectories; a file's is its number of entries;
//! - an inode with `nlink == 0` exists only while some session has it open (`O` marker);
//! - every slice id referenced by a chunk is either live or recorded as pending deletion once
//!   its last reference goes, never both;
//! - a volume's usage equals the sum over its inodes (count, and file sizes rounded to 4 KiB).

use std::collections::HashMap;

use crate::codec::{dec, dec_entry, enc_entry};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::txn::*;
use crate::types::*;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
const XATTR_SIZE_MAX: usize = 65536;

/// `rename` flag: fail if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// `rename` flag: swap source and target atomically.
pub const RENAME_EXCHANGE: u32 = 2;
/// `setxattr` flag: fail if the attribute exists.
pub const XATTR_CREATE: u32 = 1;
/// `setxattr` flag: fail if the attribute does not exist.
pub const XATTR_REPLACE: u32 = 2;

pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    Ok(strata_types::check_name(name)?)
}
/// Checks `mask` (4 read, 2 write, 1 exec) against an inode for the caller.
pub fn access(ctx: &Ctx, attr: &Attr, mask: u32) -> Result<()> {
    if attr.allows(ctx, mask) { Ok(()) } else { Err(MetaError::Access) }
}
pub(crate) fn sticky_ok(ctx: &Ctx, dir: &Attr, victim: &Attr) -> Result<()> {
    if ctx.check && dir.mode & S_ISVTX != 0 && ctx.uid != 0 && ctx.uid != dir.uid && ctx.uid != victim.uid {
        return Err(MetaError::Perm);
    }
    Ok(())
}

impl Meta {
    /// Attributes of an inode.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.read_latest(|t| load_attr(t, ino))
    }

    /// Finds `name` in directory `parent`.
    pub fn lookup(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<(Ino, Attr)> {
        // The entry's inode is read after the entry: attributes as fresh as a getattr's, or
        // NotFound if it went meanwhile, as if the lookup came after.
        self.read_latest(|t| {
            // The entry is read with the directory (one round trip), and used only if the
            // caller may search it.
            let (p, entry) = load_dir_entry(t, parent, name)?;
            access(ctx, &p, 1)?;
            if name == b"." {
                return Ok((parent, p));
            }
            if name == b".." {
                return Ok((p.parent, load_attr(t, p.parent)?));
            }
            if name.len() > NAME_MAX {
                return Err(MetaError::NameTooLong);
            }
            let (ino, _) = entry.ok_or(MetaError::NotFound)?;
            Ok((ino, load_attr(t, ino)?))
        })
    }

    /// Creates a file, directory, symlink or special file. For a regular file without `excl`,
    /// an existing regular file of that name is returned instead (the open-or-create case).
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        target: &[u8],
        excl: bool,
    ) -> Result<(Ino, Attr, bool)> {
        let c = self.mknod_open(0, ctx, parent, name, kind, mode, umask, rdev, target, excl, None)?;
        Ok((c.ino, c.attr, c.created))
    }

    /// [`Meta::mknod`], and the inode returned is then open by `session` (none: 0); with the
    /// parent's attributes after it. With shared state a created inode's open is recorded in
    /// the creating transaction, so a create costs one transaction, not two; where opens may
    /// go unrecorded (`open.rs`) it is not recorded at all, so that its close writes nothing
    /// either. `vol`, the parent's volume if the caller knows it, lets the transaction read
    /// the volume's usage with its first read.
    #[allow(clippy::too_many_arguments)]
    pub fn mknod_open(
        &self,
        session: u64,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        target: &[u8],
        excl: bool,
        vol: Option<u32>,
    ) -> Result<Created> {
        let res = self.mknod_in(session, ctx, parent, name, kind, mode, umask, rdev, target, excl, vol)?;
        if session != 0 && !(res.created && self.is_shared()) {
            // An existing file (open-or-create) is opened like any other.
            self.note_open(session, res.ino)?;
        }
        Ok(res)
    }

    #[allow(clippy::too_many_arguments)]
    fn mknod_in(
        &self,
        session: u64,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        target: &[u8],
        excl: bool,
        vol: Option<u32>,
    ) -> Result<Created> {
        check_name(name)?;
        if kind == FileType::Symlink && (target.is_empty() || target.len() > PATH_MAX) {
            return Err(if target.is_empty() { MetaError::NotFound } else { MetaError::NameTooLong });
        }
        let ino = self.alloc_ino()?;
        // The creator's open: noted in memory before the commit where it may go unrecorded,
        // recorded by the creating transaction otherwise.
        let shared_open = session != 0 && self.is_shared();
        let unrecorded = shared_open && self.open_new_unrecorded(session, ino)?;
        let res = self.write(false, |t| {
            let (mut p, entry) = load_dir_entry_ahead(t, parent, name, vol, true)?;
            if p.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            if let Some((old, okind)) = entry {
                if kind == FileType::File && !excl && okind == FileType::File {
                    return Ok(Created { ino: old, attr: load_attr(t, old)?, created: false, parent: p });
                }
                return Err(MetaError::Exists);
            }
            access(ctx, &p, 3)?;
            if kind == FileType::Dir && p.nlink >= LINK_MAX {
                return Err(MetaError::TooManyLinks);
            }
            let ts = now();
            let mut perm = if kind == FileType::Symlink { 0o777 } else { mode & 0o7777 & !umask };
            let gid = if p.mode & S_ISGID != 0 {
                if kind == FileType::Dir {
                    perm |= S_ISGID;
                }
                p.gid
            } else {
                ctx.gid
            };
            if ctx.check && perm & S_ISGID != 0 && kind != FileType::Dir && ctx.uid != 0 && !ctx.in_group(gid) {
                perm &= !S_ISGID;
            }
            let attr = Attr {
                kind,
                mode: perm,
                uid: ctx.uid,
                gid,
                rdev,
                nlink: if kind == FileType::Dir { 2 } else { 1 },
                size: if kind == FileType::Symlink { target.len() as u64 } else { 0 },
                atime: ts,
                mtime: ts,
                ctime: ts,
                parent,
                volume: p.volume,
            };
            charge(t, p.volume, 0, 1)?;
            store_attr(t, ino, &attr)?;
            if kind == FileType::Symlink {
                t.put(&keys::symlink(ino), target)?;
            }
            t.put(&keys::dentry(parent, name), &enc_entry(ino, kind))?;
            if kind == FileType::Dir {
                p.nlink += 1;
            }
            p.mtime = ts;
            p.ctime = ts;
            store_attr(t, parent, &p)?;
            if shared_open && !unrecorded {
                // A new inode: nothing recorded it open yet.
                crate::open::add_open_new(t, session, ino)?;
            }
            Ok(Created { ino, attr, created: true, parent: p })
        });
        match &res {
            // This process's mirror notes a recorded open too.
            Ok(c) if c.created && shared_open && !unrecorded => self.mirror_open(session, ino),
            Ok(c) if c.created => {}
            // No inode was made: the open noted for it goes. (A failure here leaves at most a
            // record of an inode that does not exist, dropped with the session.)
            _ if unrecorded => {
                let _ = self.close(session, ino);
            }
            _ => {}
        }
        res
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    pub fn link(&self, ctx: &Ctx, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        // A snapshot's inode gains no name, even one it could not have (nlink 0).
        if crate::versions::split_ino(ino).0 != 0 || crate::versions::split_ino(newparent).0 != 0 {
            return Err(MetaError::ReadOnly);
        }
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            if a.is_dir() {
                return Err(MetaError::Perm);
            }
            let mut p = load_dir(t, newparent)?;
            if p.volume != a.volume {
                return Err(MetaError::CrossDevice);
            }
            if p.nlink == 0 || a.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            if get_entry(t, newparent, newname)?.is_some() {
                return Err(MetaError::Exists);
            }
            access(ctx, &p, 3)?;
            if a.nlink >= LINK_MAX {
                return Err(MetaError::TooManyLinks);
            }
            let ts = now();
            a.nlink += 1;
            a.ctime = ts;
            p.mtime = ts;
            p.ctime = ts;
            t.put(&keys::dentry(newparent, newname), &enc_entry(ino, a.kind))?;
            store_attr(t, ino, &a)?;
            store_attr(t, newparent, &p)?;
            Ok(a)
        })
    }

    /// Removes a non-directory entry.
    pub fn unlink(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        self.unlink_in(ctx, parent, name, None).map(|_| ())
    }

    /// [`Meta::unlink`], with the parent's attributes after it; `vol` as for
    /// [`Meta::mknod_open`].
    pub fn unlink_in(&self, ctx: &Ctx, parent: Ino, name: &[u8], vol: Option<u32>) -> Result<Attr> {
        if name.len() > NAME_MAX {
            return Err(MetaError::NameTooLong);
        }
        self.write(false, |t| {
            let (mut p, entry) = load_dir_entry_ahead(t, parent, name, vol, false)?;
            let (ino, kind) = entry.ok_or(MetaError::NotFound)?;
            if kind == FileType::Dir {
                return Err(MetaError::IsDir);
            }
            access(ctx, &p, 3)?;
            let mut a = load_attr(t, ino)?;
            sticky_ok(ctx, &p, &a)?;
            let ts = now();
            t.delete(&keys::dentry(parent, name))?;
            p.mtime = ts;
            p.ctime = ts;
            store_attr(t, parent, &p)?;
            a.nlink = a.nlink.saturating_sub(1);
            a.ctime = ts;
            if a.nlink == 0 {
                self.release_inode(t, ino, &a)?;
            } else {
                store_attr(t, ino, &a)?;
            }
            Ok(p)
        })
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(MetaError::Invalid("cannot remove '.'".into()));
        }
        if name == b".." {
            return Err(MetaError::NotEmpty);
        }
        if name.len() > NAME_MAX {
            return Err(MetaError::NameTooLong);
        }
        self.write(false, |t| {
            let mut p = load_dir(t, parent)?;
            let (ino, kind) = get_entry(t, parent, name)?.ok_or(MetaError::NotFound)?;
            if kind != FileType::Dir {
                return Err(MetaError::NotDir);
            }
            access(ctx, &p, 3)?;
            let a = load_attr(t, ino)?;
            sticky_ok(ctx, &p, &a)?;
            if !dir_is_empty(t, ino)? {
                return Err(MetaError::NotEmpty);
            }
            let ts = now();
            t.delete(&keys::dentry(parent, name))?;
            p.nlink = p.nlink.saturating_sub(1);
            p.mtime = ts;
            p.ctime = ts;
            store_attr(t, parent, &p)?;
            destroy(t, ino, &a)
        })
    }

    /// Renames `sp/sname` to `dp/dname`, replacing a compatible target atomically.
    pub fn rename(&self, ctx: &Ctx, sp: Ino, sname: &[u8], dp: Ino, dname: &[u8], flags: u32) -> Result<()> {
        self.rename_if(ctx, sp, sname, dp, dname, flags, RenameIf::default())
    }

    /// [`Meta::rename`] only if the source and target are still the files `cond` names
    /// (`ConditionFailed` otherwise), checked in the rename's transaction: a compare-and-swap
    /// of a name, which the S3 gateway's conditional writes rely on.
    #[allow(clippy::too_many_arguments)]
    pub fn rename_if(
        &self,
        ctx: &Ctx,
        sp: Ino,
        sname: &[u8],
        dp: Ino,
        dname: &[u8],
        flags: u32,
        cond: RenameIf,
    ) -> Result<()> {
        check_name(dname)?;
        if sname.len() > NAME_MAX {
            return Err(MetaError::NameTooLong);
        }
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 || flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return Err(MetaError::Invalid("unsupported rename flags".into()));
        }
        self.write(false, |t| {
            // Parent attributes are edited through this map so that sp == dp stays one record.
            let mut dirs: HashMap<Ino, Attr> = HashMap::new();
            dirs.insert(sp, load_dir(t, sp)?);
            if dp != sp {
                dirs.insert(dp, load_dir(t, dp)?);
            }
            let (sino, skind) = get_entry(t, sp, sname)?.ok_or(MetaError::NotFound)?;
            let (spa, dpa) = (dirs[&sp], dirs[&dp]);
            if spa.volume != dpa.volume {
                return Err(MetaError::CrossDevice);
            }
            if dpa.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            access(ctx, &spa, 3)?;
            access(ctx, &dpa, 3)?;
            let mut sa = load_attr(t, sino)?;
            sticky_ok(ctx, &spa, &sa)?;
            let dst = get_entry(t, dp, dname)?;
            if let Some(want) = cond.source
                && !want.matches(sino, &sa)
            {
                return Err(MetaError::ConditionFailed("the source is not the expected file".into()));
            }
            if let Some(want) = cond.target {
                let same = match dst {
                    Some((dino, FileType::File)) => want.matches(dino, &load_attr(t, dino)?),
                    _ => false,
                };
                if !same {
                    return Err(MetaError::ConditionFailed("the target is not the expected file".into()));
                }
            }
            if let Some((dino, _)) = dst
                && dino == sino
            {
                // Two names of one inode: nothing to do, unless the caller forbade replacing.
                return if flags & RENAME_NOREPLACE != 0 { Err(MetaError::Exists) } else { Ok(()) };
            }
            if skind == FileType::Dir && sp != dp {
                access(ctx, &sa, 2)?;
                // A directory may not move below itself.
                let mut cur = dp;
                loop {
                    if cur == sino {
                        return Err(MetaError::Invalid("cannot move a directory into itself".into()));
                    }
                    let ca = if let Some(a) = dirs.get(&cur) { *a } else { load_attr(t, cur)? };
                    if ca.parent == cur {
                        break;
                    }
                    cur = ca.parent;
                }
            }
            let ts = now();
            if flags & RENAME_EXCHANGE != 0 {
                let (dino, dkind) = dst.ok_or(MetaError::NotFound)?;
                let mut da = load_attr(t, dino)?;
                sticky_ok(ctx, &dpa, &da)?;
                if dkind == FileType::Dir && sp != dp {
                    access(ctx, &da, 2)?;
                    let mut cur = sp;
                    loop {
                        if cur == dino {
                            return Err(MetaError::Invalid("cannot move a directory into itself".into()));
                        }
                        let ca = if let Some(a) = dirs.get(&cur) { *a } else { load_attr(t, cur)? };
                        if ca.parent == cur {
                            break;
                        }
                        cur = ca.parent;
                    }
                }
                t.put(&keys::dentry(sp, sname), &enc_entry(dino, dkind))?;
                t.put(&keys::dentry(dp, dname), &enc_entry(sino, skind))?;
                if sp != dp {
                    if skind == FileType::Dir {
                        sa.parent = dp;
                        dirs.entry(dp).and_modify(|a| a.nlink += 1);
                        dirs.entry(sp).and_modify(|a| a.nlink -= 1);
                    }
                    if dkind == FileType::Dir {
                        da.parent = sp;
                        dirs.entry(sp).and_modify(|a| a.nlink += 1);
                        dirs.entry(dp).and_modify(|a| a.nlink -= 1);
                    }
                }
                sa.ctime = ts;
                da.ctime = ts;
                store_attr(t, sino, &sa)?;
                store_attr(t, dino, &da)?;
            } else {
                if let Some((dino, dkind)) = dst {
                    if flags & RENAME_NOREPLACE != 0 {
                        return Err(MetaError::Exists);
                    }
                    let mut da = load_attr(t, dino)?;
                    sticky_ok(ctx, &dpa, &da)?;
                    if skind == FileType::Dir {
                        if dkind != FileType::Dir {
                            return Err(MetaError::NotDir);
                        }
                        if !dir_is_empty(t, dino)? {
                            return Err(MetaError::NotEmpty);
                        }
                        dirs.entry(dp).and_modify(|a| a.nlink -= 1);
                        destroy(t, dino, &da)?;
                    } else {
                        if dkind == FileType::Dir {
                            return Err(MetaError::IsDir);
                        }
                        da.nlink = da.nlink.saturating_sub(1);
                        da.ctime = ts;
                        if da.nlink == 0 {
                            self.release_inode(t, dino, &da)?;
                        } else {
                            store_attr(t, dino, &da)?;
                        }
                    }
                }
                t.delete(&keys::dentry(sp, sname))?;
                t.put(&keys::dentry(dp, dname), &enc_entry(sino, skind))?;
                if skind == FileType::Dir && sp != dp {
                    sa.parent = dp;
                    dirs.entry(sp).and_modify(|a| a.nlink -= 1);
                    dirs.entry(dp).and_modify(|a| a.nlink += 1);
                }
                sa.ctime = ts;
                store_attr(t, sino, &sa)?;
            }
            for (ino, mut a) in dirs {
                a.mtime = ts;
                a.ctime = ts;
                // The moved directory may also be one of the parents' records only if it is
                // its own parent, which the loop check above rules out.
                store_attr(t, ino, &a)?;
            }
            Ok(())
        })
    }

    /// Target of a symbolic link.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.read(|t| {
            let a = load_attr(t, ino)?;
            if a.kind != FileType::Symlink {
                return Err(MetaError::Invalid("not a symbolic link".into()));
            }
            t.get(&keys::symlink(ino))?.ok_or_else(|| MetaError::Corrupt(format!("symlink {ino} without target")))
        })
    }

    /// Entries of a directory (without "." and ".."), optionally with their attributes.
    pub fn readdir(&self, ctx: &Ctx, ino: Ino, plus: bool) -> Result<Vec<Entry>> {
        Ok(self.readdir_page(ctx, ino, plus, b"", 0)?.entries)
    }

    /// Entries of a directory in name order: those after the name `after` (all when empty), at
    /// most `limit` of them (0: no limit); with the directory's attributes and whether more
    /// entries follow. A large directory is listed page by page, each page one transaction.
    pub fn readdir_page(&self, ctx: &Ctx, ino: Ino, plus: bool, after: &[u8], limit: usize) -> Result<DirPage> {
        self.read(|t| {
            let dir = load_dir(t, ino)?;
            access(ctx, &dir, 4)?;
            let p = keys::dentry_prefix(ino);
            // The first key after `after`: names never hold a NUL byte, so nothing lies between.
            let start = if after.is_empty() { p.to_vec() } else { [&p[..], after, &[0]].concat() };
            let want = if limit == 0 { usize::MAX } else { limit.saturating_add(1) };
            let mut out = Vec::new();
            for (k, v) in t.scan(&start, &prefix_end(&p), want)? {
                let (child, kind) = dec_entry(&v)?;
                out.push(Entry { name: k[9..].to_vec(), ino: child, kind, attr: None });
            }
            let more = limit != 0 && out.len() > limit;
            if more {
                out.truncate(limit);
            }
            if plus {
                let keys: Vec<Vec<u8>> = out.iter().map(|e| keys::attr(e.ino).to_vec()).collect();
                for (e, v) in out.iter_mut().zip(t.get_many(&keys)?) {
                    e.attr = Some(dec(&v.ok_or(MetaError::NotFound)?)?);
                }
            }
            Ok(DirPage { entries: out, dir, more })
        })
    }

    /// Changes attributes; a size change truncates or extends the file.
    pub fn setattr(&self, ctx: &Ctx, ino: Ino, req: &SetAttr) -> Result<Attr> {
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            let ts = now();
            let owner = !ctx.check || ctx.uid == 0 || ctx.uid == a.uid;
            if let Some(mode) = req.mode {
                if !owner {
                    return Err(MetaError::Perm);
                }
                let mut m = mode & 0o7777;
                if ctx.check && ctx.uid != 0 && !ctx.in_group(req.gid.unwrap_or(a.gid)) {
                    m &= !S_ISGID;
                }
                a.mode = m;
            }
            if req.uid.is_some() || req.gid.is_some() {
                let new_uid = req.uid.unwrap_or(a.uid);
                let new_gid = req.gid.unwrap_or(a.gid);
                if ctx.check && ctx.uid != 0 {
                    if new_uid != a.uid || ctx.uid != a.uid {
                        return Err(MetaError::Perm);
                    }
                    if new_gid != a.gid && !ctx.in_group(new_gid) {
                        return Err(MetaError::Perm);
                    }
                }
                if ctx.check && req.mode.is_none() && !a.is_dir() {
                    a.mode &= !S_ISUID;
                    if a.mode & 0o010 != 0 {
                        a.mode &= !S_ISGID;
                    }
                }
                a.uid = new_uid;
                a.gid = new_gid;
            }
            if let Some(size) = req.size {
                match a.kind {
                    FileType::File => {}
                    FileType::Dir => return Err(MetaError::IsDir),
                    _ => return Err(MetaError::Invalid("truncate of a special file".into())),
                }
                access(ctx, &a, 2)?;
                set_length(t, ino, &mut a, size)?;
                a.mtime = ts;
            }
            let may_touch = owner || access(ctx, &a, 2).is_ok();
            for (want, slot) in [(req.atime, &mut a.atime), (req.mtime, &mut a.mtime)] {
                match want {
                    Some(SetTime::Now) if !may_touch => return Err(MetaError::Access),
                    Some(SetTime::Now) => *slot = ts,
                    Some(SetTime::At(_)) if !owner => return Err(MetaError::Perm),
                    Some(SetTime::At(x)) => *slot = x,
                    None => {}
                }
            }
            a.ctime = ts;
            store_attr(t, ino, &a)?;
            Ok(a)
        })
    }

    /// Value of an extended attribute.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        if name.len() > XATTR_NAME_MAX {
            return Err(MetaError::Range);
        }
        self.read(|t| {
            load_attr(t, ino)?;
            t.get(&keys::xattr(ino, name))?.ok_or(MetaError::NoAttr)
        })
    }

    /// Names of all extended attributes.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.read(|t| {
            load_attr(t, ino)?;
            let p = keys::xattr_prefix(ino);
            Ok(t.scan(&p, &prefix_end(&p), usize::MAX)?.into_iter().map(|(k, _)| k[9..].to_vec()).collect())
        })
    }

    /// Sets an extended attribute (`XATTR_CREATE` / `XATTR_REPLACE` flags).
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(MetaError::Range);
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(MetaError::TooBig);
        }
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            let k = keys::xattr(ino, name);
            let exists = t.get(&k)?.is_some();
            if flags & XATTR_CREATE != 0 && exists {
                return Err(MetaError::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(MetaError::NoAttr);
            }
            t.put(&k, value)?;
            a.ctime = now();
            store_attr(t, ino, &a)
        })
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        if name.len() > XATTR_NAME_MAX {
            return Err(MetaError::Range);
        }
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            let k = keys::xattr(ino, name);
            if t.get(&k)?.is_none() {
                return Err(MetaError::NoAttr);
            }
            t.delete(&k)?;
            a.ctime = now();
            store_attr(t, ino, &a)
        })
    }
}
