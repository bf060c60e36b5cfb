//! Paths and the name cache: how front-ends without a kernel dentry cache (the NFS and S3
//! gateways) look names up and walk paths, one implementation for all of them.
//!
//! A name looked up, created or listed is remembered for the attribute lifetime
//! (`VfsConfig::attr_ttl`, when `VfsConfig::name_cache` is on); what this client removes or
//! renames is forgotten at once, and another client's changes show after at most that lifetime,
//! as on a FUSE mount. A remembered name is used only for callers who may search its directory
//! (the server checks that on the lookups it answers).

use strata_types::{Attr, Ctx, FileType, MAY_EXEC};

use super::Vfs;
use super::namespace::DirPage;
use crate::error::{Result, VfsError};

/// Entries a refresh of a directory's names reads at most.
const REFRESH_MAX: usize = 16_384;
/// Entries per call of a refresh.
const REFRESH_PAGE: u32 = 512;

impl DirPage {
    /// The name the next page starts after, when one follows this page.
    pub fn next_after(&self) -> Option<Vec<u8>> {
        self.entries.last().filter(|_| self.more).map(|e| e.name.clone())
    }
}

impl Vfs {
    /// Looks a name up through the name cache: a name remembered within the attribute lifetime
    /// costs no server call; in a directory a client listed, the first lookup that finds its
    /// names expired reads the whole directory again (a page of a few hundred entries per
    /// call) instead of one call per name; otherwise the server answers, and the name is
    /// remembered. `.` and `..` are not names here (see [`Vfs::dots`]).
    pub async fn lookup_cached(&self, ctx: &Ctx, dir: u64, name: &[u8]) -> Result<(u64, Attr)> {
        if let Some(found) = self.remembered(ctx, dir, name).await {
            return Ok(found);
        }
        if self.names.claim_refresh(dir) {
            self.refresh_names(ctx, dir).await;
            if let Some(found) = self.remembered(ctx, dir, name).await {
                return Ok(found);
            }
        }
        let (ino, a) = self.lookup(ctx, dir, name).await?;
        self.names.remember(dir, vec![(name.to_vec(), ino)]);
        Ok((ino, a))
    }

    /// Walks `names` down from directory `from`, through the name cache for every name but
    /// the last when `fresh_last` is set (an object store's read must see the latest object,
    /// while its directories may be as old as the attribute lifetime). ENOTDIR when a name
    /// before the last is not a directory; an empty path is `from` itself.
    pub async fn walk(&self, ctx: &Ctx, from: u64, names: &[&[u8]], fresh_last: bool) -> Result<(u64, Attr)> {
        let (mut ino, mut attr) = (from, None::<Attr>);
        for (i, name) in names.iter().enumerate() {
            if attr.is_some_and(|a| a.kind != FileType::Dir) {
                return Err(VfsError::from_errno(libc::ENOTDIR));
            }
            let found = if fresh_last && i + 1 == names.len() {
                self.lookup(ctx, ino, name).await?
            } else {
                self.lookup_cached(ctx, ino, name).await?
            };
            (ino, attr) = (found.0, Some(found.1));
        }
        match attr {
            Some(a) => Ok((ino, a)),
            None => Ok((ino, self.getattr_within(ino, self.cfg.attr_ttl).await?)),
        }
    }

    /// A gateway's client started listing `dir` from its beginning: it is likely to look its
    /// names up next (see [`Vfs::lookup_cached`]).
    pub fn listing_started(&self, dir: u64) {
        self.names.listed(dir);
    }

    /// Remembers the names a listing sent to a gateway's client, under one lock.
    pub fn remember_names(&self, dir: u64, names: Vec<(Vec<u8>, u64)>) {
        self.names.remember(dir, names);
    }

    /// Forgets a name (removed or renamed by this client), and the attributes of what it
    /// named, whose link count changed.
    pub(super) fn forget_name(&self, dir: u64, name: &[u8]) {
        if let Some(ino) = self.names.forget(dir, name) {
            self.forget_attr(ino);
        }
    }

    /// A name's inode and attributes from what is remembered, if the caller may search the
    /// directory.
    async fn remembered(&self, ctx: &Ctx, dir: u64, name: &[u8]) -> Option<(u64, Attr)> {
        let ino = self.names.get(dir, name)?;
        let d = match self.cached_attr(dir) {
            Some(a) if a.nlink > 0 => a,
            _ => self.getattr_within(dir, self.cfg.attr_ttl).await.ok().filter(|a| a.nlink > 0)?,
        };
        if !d.allows(ctx, MAY_EXEC) {
            return None;
        }
        match self.getattr_within(ino, self.cfg.attr_ttl).await {
            Ok(a) if a.nlink > 0 => Some((ino, a)),
            // Gone meanwhile: ask the server what the name is now.
            _ => {
                self.forget_name(dir, name);
                None
            }
        }
    }

    /// Reads a directory's names and their attributes again whole (up to [`REFRESH_MAX`]), a
    /// page per call, and remembers them. A failure (say the caller may not read the
    /// directory) only leaves the names as they were: lookups then ask the server one by one.
    async fn refresh_names(&self, ctx: &Ctx, dir: u64) {
        let (mut after, mut read) = (Vec::new(), 0);
        loop {
            let page = match self.list_dir(ctx, dir, true, &after, REFRESH_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(dir, error = %e, "refreshing a directory's names");
                    break;
                }
            };
            read += page.entries.len();
            let next = page.next_after();
            self.names.remember(dir, page.entries.into_iter().map(|e| (e.name, e.ino)).collect());
            match next {
                Some(a) if read < REFRESH_MAX => after = a,
                _ => break,
            }
        }
        tracing::debug!(dir, entries = read, "read a directory's names again");
        self.names.refreshed(dir, read);
    }
}
