//! Names and directories: lookups, attributes, creating, linking, removing and renaming
//! entries, and directory listings.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use strata_proto::conv::{attr_from_pb, ctx_to_pb, identity_to_pb, setattr_to_pb};
use strata_proto::pb;
use strata_proto::wire::Method;
use strata_types::{Attr, Ctx, FileType, RenameIf, SetAttr};

use super::{Handle, Vfs, attr_of};
use crate::dircache::{DIR_MAX, Found};
use crate::error::{Result, VfsError};
use crate::writer::FileWriter;

/// The caller of a change made by `session` (its own watch skips the change).
pub(super) fn caller(ctx: &Ctx, session: u64) -> pb::Caller {
    pb::Caller { origin: session, ..ctx_to_pb(ctx) }
}

/// Entries per call when a directory is read whole for lookups.
const WHOLE_PAGE: u32 = 1024;

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

impl Vfs {
    /// Looks a name up in a directory. With `VfsConfig::dir_cache`, from the directory's
    /// listing while its lease holds (read whole at the second miss, see `dircache.rs`) for
    /// callers whose permissions were checked already (`Ctx::check` off: the kernel's).
    pub async fn lookup(&self, ctx: &Ctx, parent: u64, name: &[u8]) -> Result<(u64, Attr)> {
        // "." and ".." (the kernel's parent lookups of exported file systems) and names past
        // NAME_MAX (ENAMETOOLONG, not "absent") are the server's to answer.
        if self.dircache.enabled()
            && !ctx.check
            && name != b"."
            && name != b".."
            && name.len() <= strata_types::limits::NAME_MAX
            && let Some(found) = self.lookup_listed(parent, name).await?
        {
            return Ok(found);
        }
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
    pub(super) fn note_dirs(&self, dirs: &[&Option<pb::Attr>]) {
        let fresh: Vec<(u64, Attr)> = dirs.iter().filter_map(|d| d.as_ref()).filter_map(attr_from_pb).collect();
        let now = Instant::now();
        {
            let mut m = Self::lock(&self.changed_dirs);
            for d in &fresh {
                m.insert(d.0, (d.1, now));
            }
        }
        let mut m = self.inode_cache();
        for (ino, a) in &fresh {
            Self::note_seen(&mut m, *ino, a, now);
        }
    }

    /// A lookup answered by the directory's listing: `Ok(None)` when it does not know (no
    /// listing, a name past a big directory's first entries, attributes no longer leased).
    async fn lookup_listed(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Attr)>> {
        let mut found = self.dircache.get(parent, name);
        if found == Found::Unknown
            && let Some(reading) = self.dircache.miss(parent)
        {
            self.read_whole(reading, parent).await;
            found = self.dircache.get(parent, name);
        }
        match found {
            Found::Absent => Err(VfsError::from_errno(libc::ENOENT)),
            Found::Unknown => Ok(None),
            Found::Ino(ino) => match self.leased_attr(ino) {
                Some(a) => {
                    self.qos.op().await;
                    Ok(Some((ino, self.overlay(ino, a).await)))
                }
                None => Ok(None),
            },
        }
    }

    /// Reads a directory whole into its listing (up to `DIR_MAX` entries), a page per call;
    /// the entries' attributes go to the inode cache. A failure leaves lookups to the server.
    async fn read_whole(&self, reading: crate::dircache::Reading, dir: u64) {
        let root = Ctx::root();
        let (mut after, mut names) = (Vec::new(), std::collections::HashMap::new());
        loop {
            let page = match self.list_dir(&root, dir, true, &after, WHOLE_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(dir, error = %e, "reading a directory whole");
                    return self.dircache.failed(reading);
                }
            };
            let next = page.next_after();
            names.extend(page.entries.into_iter().map(|e| (e.name, e.ino)));
            match next {
                Some(a) if names.len() < DIR_MAX => after = a,
                Some(_) => return self.dircache.store(reading, names, false),
                None => return self.dircache.store(reading, names, true),
            }
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
        if let Some(a) = self.leased_attr(ino) {
            return Ok(self.overlay(ino, a).await);
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
        let r = self
            .client
            .call::<_, pb::AttrResp>(Method::SetAttr, |session| pb::SetAttrReq {
                caller: Some(caller(ctx, session)),
                ..msg.clone()
            })
            .await?;
        let (_, a) = attr_of(r.attr)?;
        if req.size.is_some() {
            // Slices changed under any cached list.
            Self::lock(&self.inodes).entry(ino).or_default().chunks.clear();
        }
        self.observe(ino, &a);
        Ok(self.overlay(ino, a).await)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn make(
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
                caller: Some(caller(ctx, session)),
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
            .await
            .inspect_err(|e| {
                if e.errno() == libc::ENOENT {
                    // The directory is gone: a name remembered for it is checked afresh.
                    self.forget_attr(parent);
                    self.dircache.drop_dir(parent);
                }
            })?;
        let (ino, a) = attr_of(r.attr)?;
        self.observe(ino, &a);
        self.note_dirs(&[&r.parent]);
        self.names.remember(parent, vec![(name.to_vec(), ino)]);
        self.dircache.added(parent, name, ino);
        if kind == FileType::Dir && r.created {
            self.dircache.created_dir(ino);
        }
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
            .call::<_, pb::AttrResp>(Method::Link, |session| pb::LinkReq {
                caller: Some(caller(ctx, session)),
                ino,
                new_parent: parent,
                new_name: name.to_vec(),
            })
            .await?;
        let (_, a) = attr_of(r.attr)?;
        self.observe(ino, &a);
        self.note_dirs(&[&r.parent]);
        self.names.remember(parent, vec![(name.to_vec(), ino)]);
        self.dircache.added(parent, name, ino);
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

    pub(super) async fn remove(&self, method: Method, ctx: &Ctx, parent: u64, name: &[u8]) -> Result<()> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::DirChange>(method, |session| pb::NameReq {
                caller: Some(caller(ctx, session)),
                parent,
                name: name.to_vec(),
            })
            .await;
        // Whatever the outcome, the name may no longer be what was remembered.
        self.forget_name(parent, name);
        let r = r.inspect_err(|_| self.dircache.drop_dir(parent))?;
        match self.dircache.removed(parent, name) {
            Some(ino) => {
                self.expire_attr(ino);
                if method == Method::Rmdir {
                    self.dircache.drop_dir(ino);
                }
            }
            // Its link count changed, and no listing says which inode it is.
            None => self.attrs_stale_now(),
        }
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
        self.rename_if(ctx, parent, name, newparent, newname, flags, RenameIf::default()).await
    }

    /// [`Vfs::rename`] only if the source and target are still the files `cond` names, checked
    /// by the server in the rename's own transaction; `ECANCELED` when they are not.
    #[allow(clippy::too_many_arguments)]
    pub async fn rename_if(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        cond: RenameIf,
    ) -> Result<()> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::DirChange>(Method::Rename, |session| pb::RenameReq {
                caller: Some(caller(ctx, session)),
                parent,
                name: name.to_vec(),
                new_parent: newparent,
                new_name: newname.to_vec(),
                flags,
                if_source: cond.source.as_ref().map(identity_to_pb),
                if_target: cond.target.as_ref().map(identity_to_pb),
            })
            .await;
        self.forget_name(parent, name);
        self.forget_name(newparent, newname);
        let r = r.inspect_err(|_| {
            self.dircache.drop_dir(parent);
            self.dircache.drop_dir(newparent);
        })?;
        self.renamed_in_listings(parent, name, newparent, newname, flags);
        self.note_dirs(&[&r.parent, &r.new_parent]);
        Ok(())
    }

    /// Moves a renamed entry between this client's listings, and forgets the attributes of the
    /// inodes involved (change time, link count, a directory's parent).
    fn renamed_in_listings(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: u32) {
        const RENAME_EXCHANGE: u32 = 2;
        let src = self.dircache.removed(parent, name);
        let dst = self.dircache.removed(newparent, newname);
        match (src, dst) {
            (Some(s), Some(d)) if flags & RENAME_EXCHANGE != 0 => {
                self.dircache.added(newparent, newname, s);
                self.dircache.added(parent, name, d);
            }
            _ if flags & RENAME_EXCHANGE != 0 => {
                self.dircache.drop_dir(parent);
                self.dircache.drop_dir(newparent);
            }
            (Some(s), _) => self.dircache.added(newparent, newname, s),
            (None, _) => self.dircache.drop_dir(newparent),
        }
        for ino in [src, dst].into_iter().flatten() {
            self.expire_attr(ino);
        }
        if src.is_none() || (dst.is_none() && !self.dircache.holds(newparent)) {
            self.attrs_stale_now();
        }
    }

    /// Target of a symbolic link.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.qos.op().await;
        Ok(self.client.call::<_, pb::BytesResp>(Method::Readlink, |_| pb::InoReq { ino }).await?.data)
    }

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
}
