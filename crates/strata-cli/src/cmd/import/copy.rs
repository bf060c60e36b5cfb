//! The destination side of an import: directories made on demand, files written under a
//! hidden name in the staging directory, verified, and renamed over their final names.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use md5::{Digest, Md5};
use sha1::Sha1;
use strata_vfs::{Attr, Ctx, FileType, SetAttr, SetTime, Timespec, Vfs, VfsError};

use super::report::Outcome;
use super::{Checksum, Entry, EntryResult, Kind, Source};

/// The staging directory under the import's destination directory: files are written here
/// and renamed into place once verified. Whatever is in it when an import starts was left by
/// a killed run and is removed.
pub const STAGING: &str = ".strata-import";

/// Extended attribute holding the source's ETag or Git blob id of an imported file.
pub const ETAG_XATTR: &[u8] = b"user.strata.import.etag";

/// Bytes written to the volume at once (what one copy holds in memory, besides the source's
/// own read buffer).
const CHUNK: usize = 1 << 20;

/// Why one entry failed.
#[derive(Debug, Clone)]
pub struct FileError {
    /// The volume's quota is full (EDQUOT) or its store out of space: the import stops.
    pub full: bool,
    /// What happened.
    pub msg: String,
}

impl FileError {
    /// A failure of the source.
    pub fn source(msg: String) -> Self {
        FileError { full: false, msg }
    }

    fn dest(what: &str, e: VfsError) -> Self {
        let errno = e.errno();
        if errno == libc::EDQUOT || errno == libc::ENOSPC {
            let name = if errno == libc::EDQUOT { "EDQUOT" } else { "ENOSPC" };
            return FileError { full: true, msg: format!("{what}: {name} ({e}): the volume's quota is full") };
        }
        FileError { full: false, msg: format!("{what}: {e}") }
    }
}

fn ctx() -> Ctx {
    Ctx::root()
}

/// The destination directory of an import in an attached volume.
pub struct Dest {
    vfs: Arc<Vfs>,
    root: u64,
    staging: u64,
    /// Directories made or found, by path relative to the root (one entry per directory).
    dirs: Mutex<HashMap<Vec<u8>, u64>>,
    /// Directories this import made: nothing in them needs looking up.
    fresh: Mutex<HashSet<u64>>,
    next_tmp: AtomicU64,
}

impl Dest {
    /// Finds or makes directory `dir` of the volume and its staging directory, and removes
    /// what an earlier, killed import left in the latter.
    pub async fn open(vfs: Arc<Vfs>, dir: &[String]) -> Result<Dest, FileError> {
        let mut ino = vfs.root();
        for seg in dir {
            ino = mkdir_at(&vfs, ino, seg.as_bytes()).await?.0;
        }
        let staging = mkdir_at(&vfs, ino, STAGING.as_bytes()).await?.0;
        let d = Dest {
            vfs,
            root: ino,
            staging,
            dirs: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashSet::new()),
            next_tmp: AtomicU64::new(0),
        };
        let left = d.list(staging).await?;
        if !left.is_empty() {
            tracing::info!(files = left.len(), "removing temporaries of an earlier import");
        }
        for (name, _, _) in left {
            d.remove_tree(staging, &name).await?;
        }
        Ok(d)
    }

    /// The destination directory's inode.
    pub fn root(&self) -> u64 {
        self.root
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, u64>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory at `rel` (empty: the root), made with its parents if missing.
    pub async fn dir(&self, rel: &[u8]) -> Result<u64, FileError> {
        if rel.is_empty() {
            return Ok(self.root);
        }
        if let Some(&ino) = self.lock().get(rel) {
            return Ok(ino);
        }
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (Box::pin(self.dir(&rel[..i])).await?, &rel[i + 1..]),
            None => (self.root, rel),
        };
        let (ino, made) = mkdir_at(&self.vfs, parent, name).await?;
        if made {
            self.fresh.lock().unwrap_or_else(|p| p.into_inner()).insert(ino);
        }
        self.lock().insert(rel.to_vec(), ino);
        Ok(ino)
    }

    /// Sets a directory's permission bits and modification time.
    pub async fn set_dir_attrs(&self, rel: &[u8], mode: Option<u32>, mtime: Option<Timespec>) -> Result<(), FileError> {
        let ino = self.dir(rel).await?;
        let req = SetAttr { mode, mtime: mtime.map(SetTime::At), ..Default::default() };
        self.vfs.setattr(&ctx(), ino, &req).await.map_err(|e| FileError::dest("setting directory attributes", e))?;
        Ok(())
    }

    /// Every entry of directory `ino`: name, type, inode.
    pub async fn list(&self, ino: u64) -> Result<Vec<(Vec<u8>, FileType, u64)>, FileError> {
        let mut out = Vec::new();
        let mut after = Vec::new();
        loop {
            let page = self
                .vfs
                .list_dir(&ctx(), ino, false, &after, 1024)
                .await
                .map_err(|e| FileError::dest("listing a directory", e))?;
            let next = page.next_after();
            out.extend(page.entries.into_iter().map(|e| (e.name, e.kind, e.ino)));
            match next {
                Some(n) => after = n,
                None => return Ok(out),
            }
        }
    }

    /// Removes `name` from directory `parent`, a directory with everything in it; the number
    /// of files and links removed.
    pub async fn remove_tree(&self, parent: u64, name: &[u8]) -> Result<u64, FileError> {
        let (ino, a) = match self.vfs.lookup(&ctx(), parent, name).await {
            Ok(found) => found,
            Err(e) if e.errno() == libc::ENOENT => return Ok(0),
            Err(e) => return Err(FileError::dest("looking up what to remove", e)),
        };
        if a.kind != FileType::Dir {
            return match self.vfs.unlink(&ctx(), parent, name).await {
                Ok(()) => Ok(1),
                Err(e) if e.errno() == libc::ENOENT => Ok(0),
                Err(e) => Err(FileError::dest("removing a file", e)),
            };
        }
        let mut n = 0;
        for (child, _, _) in self.list(ino).await? {
            n += Box::pin(self.remove_tree(ino, &child)).await?;
        }
        self.lock().retain(|_, v| *v != ino);
        match self.vfs.rmdir(&ctx(), parent, name).await {
            Ok(()) => Ok(n),
            Err(e) if e.errno() == libc::ENOENT => Ok(n),
            Err(e) => Err(FileError::dest("removing a directory", e)),
        }
    }

    /// A new hidden name in the staging directory.
    fn temp_name(&self) -> String {
        format!("tmp-{}-{}", std::process::id(), self.next_tmp.fetch_add(1, Ordering::Relaxed))
    }

    /// Renames `tmp` of the staging directory over `name` in `dir` (a directory in the way
    /// is removed first); on failure the temporary is removed.
    async fn publish(&self, tmp: &str, dir: u64, name: &[u8]) -> Result<(), FileError> {
        let mut res = self.vfs.rename(&ctx(), self.staging, tmp.as_bytes(), dir, name, 0).await;
        if let Err(e) = &res
            && matches!(e.errno(), libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST | libc::ENOTDIR)
        {
            // A directory where the source now has a file or link.
            self.remove_tree(dir, name).await?;
            res = self.vfs.rename(&ctx(), self.staging, tmp.as_bytes(), dir, name, 0).await;
        }
        if let Err(e) = res {
            self.discard(tmp).await;
            return Err(FileError::dest("renaming into place", e));
        }
        Ok(())
    }

    async fn discard(&self, tmp: &str) {
        if let Err(e) = self.vfs.unlink(&ctx(), self.staging, tmp.as_bytes()).await
            && e.errno() != libc::ENOENT
        {
            tracing::warn!(name = tmp, error = %e, "could not remove a temporary file");
        }
    }

    /// What is at `name` in `dir` now, if anything.
    async fn existing(&self, dir: u64, name: &[u8]) -> Result<Option<(u64, Attr)>, FileError> {
        if self.fresh.lock().unwrap_or_else(|p| p.into_inner()).contains(&dir) {
            return Ok(None);
        }
        match self.vfs.lookup_cached(&ctx(), dir, name).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.errno() == libc::ENOENT => Ok(None),
            Err(e) => Err(FileError::dest("looking up the destination", e)),
        }
    }
}

/// Makes directory `name` in `parent` unless it is there (something else in the way is
/// removed); its inode, and whether this call made it.
async fn mkdir_at(vfs: &Vfs, parent: u64, name: &[u8]) -> Result<(u64, bool), FileError> {
    for _ in 0..3 {
        match vfs.lookup_cached(&ctx(), parent, name).await {
            Ok((ino, a)) if a.kind == FileType::Dir => return Ok((ino, false)),
            Ok(_) => {
                // A file or link where the source has a directory.
                if let Err(e) = vfs.unlink(&ctx(), parent, name).await
                    && e.errno() != libc::ENOENT
                {
                    return Err(FileError::dest("replacing a file by a directory", e));
                }
            }
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(FileError::dest("looking up a directory", e)),
        }
        match vfs.mkdir(&ctx(), parent, name, 0o755, 0).await {
            Ok((ino, _)) => return Ok((ino, true)),
            // Made by another task meanwhile.
            Err(e) if e.errno() == libc::EEXIST => continue,
            Err(e) => return Err(FileError::dest("making a directory", e)),
        }
    }
    Err(FileError { full: false, msg: "a directory kept changing while it was made".into() })
}

/// Imports one file or symbolic link, unless the destination already has it.
pub async fn import_entry(source: &Source, dest: &Dest, e: &Entry) -> EntryResult {
    let (dir_rel, name) = match e.rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&e.rel[..i], &e.rel[i + 1..]),
        None => (&e.rel[..0], &e.rel[..]),
    };
    let dir = dest.dir(dir_rel).await?;
    let existing = dest.existing(dir, name).await?;
    match &e.kind {
        Kind::Symlink(target) => put_symlink(dest, dir, name, target, e, existing).await,
        _ => {
            if let Some((ino, a)) = existing
                && unchanged(dest, ino, &a, e).await
            {
                return Ok(Outcome::Unchanged);
            }
            put_file(source, dest, dir, name, e).await
        }
    }
}

/// Whether the file at the destination is the entry's content already.
async fn unchanged(dest: &Dest, ino: u64, a: &Attr, e: &Entry) -> bool {
    if a.kind != FileType::File || a.size != e.size {
        return false;
    }
    match &e.tag {
        Some(tag) => dest.vfs.getxattr(ino, ETAG_XATTR).await.is_ok_and(|v| v == tag.as_bytes()),
        None => Some(a.mtime) == e.mtime && e.mode.is_none_or(|m| a.mode & 0o7777 == m & 0o7777),
    }
}

async fn put_symlink(
    dest: &Dest,
    dir: u64,
    name: &[u8],
    target: &[u8],
    e: &Entry,
    existing: Option<(u64, Attr)>,
) -> EntryResult {
    if let Some((ino, a)) = existing
        && a.kind == FileType::Symlink
        && dest.vfs.readlink(ino).await.is_ok_and(|t| t == target)
    {
        return Ok(Outcome::Unchanged);
    }
    let tmp = dest.temp_name();
    let (ino, _) = dest
        .vfs
        .symlink(&ctx(), dest.staging, tmp.as_bytes(), target)
        .await
        .map_err(|err| FileError::dest("making a symbolic link", err))?;
    if let Some(t) = e.mtime {
        let req = SetAttr { mtime: Some(SetTime::At(t)), atime: e.atime.map(SetTime::At), ..Default::default() };
        if let Err(err) = dest.vfs.setattr(&ctx(), ino, &req).await {
            dest.discard(&tmp).await;
            return Err(FileError::dest("setting a link's times", err));
        }
    }
    dest.publish(&tmp, dir, name).await?;
    Ok(Outcome::Copied(0))
}

/// The running checksum of a copy.
enum Hasher {
    None,
    Md5(Box<Md5>),
    Sha1(Box<Sha1>),
}

impl Hasher {
    fn new(c: &Checksum, size: u64) -> Hasher {
        match c {
            Checksum::None => Hasher::None,
            Checksum::Md5(_) => Hasher::Md5(Box::default()),
            Checksum::GitBlob(_) => {
                let mut h = Sha1::default();
                h.update(format!("blob {size}\0").as_bytes());
                Hasher::Sha1(Box::new(h))
            }
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::None => {}
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
        }
    }

    /// Feeds `n` zero bytes (a hole of the source).
    fn zeros(&mut self, mut n: u64) {
        if matches!(self, Hasher::None) {
            return;
        }
        let z = [0u8; 8192];
        while n > 0 {
            let k = n.min(z.len() as u64) as usize;
            self.update(&z[..k]);
            n -= k as u64;
        }
    }

    /// Checks the digest against the source's.
    fn check(self, want: &Checksum) -> Result<(), String> {
        let (got, want) = match (self, want) {
            (Hasher::Md5(h), Checksum::Md5(w)) => (hex(&(*h).finalize()), hex(w)),
            (Hasher::Sha1(h), Checksum::GitBlob(w)) => (hex(&(*h).finalize()), hex(w)),
            _ => return Ok(()),
        };
        if got != want {
            return Err(format!("checksum mismatch: the source says {want}, the bytes read give {got}"));
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Copies a file's content to a temporary, verifies it, and renames it into place.
async fn put_file(source: &Source, dest: &Dest, dir: u64, name: &[u8], e: &Entry) -> EntryResult {
    let mut reader = source.read(e).await.map_err(FileError::source)?;
    let tmp = dest.temp_name();
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (ino, _, fh) = dest
        .vfs
        .create(&ctx(), dest.staging, tmp.as_bytes(), 0o600, 0, flags)
        .await
        .map_err(|err| FileError::dest("creating a temporary file", err))?;
    let res = async {
        let mut hash = Hasher::new(&e.checksum, e.size);
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut buf_off = 0u64;
        // Where the bytes read so far end (holes included).
        let mut end = 0u64;
        while let Some((off, data)) = reader.next().await.map_err(FileError::source)? {
            if off < end || off + data.len() as u64 > e.size {
                return Err(FileError::source(format!(
                    "the source changed while it was read: {} bytes at {off} of a {}-byte file",
                    data.len(),
                    e.size
                )));
            }
            hash.zeros(off - end);
            hash.update(&data);
            if off != buf_off + buf.len() as u64 && !buf.is_empty() {
                write(dest, fh, buf_off, &buf).await?;
                buf.clear();
            }
            if buf.is_empty() {
                buf_off = off;
            }
            buf.extend_from_slice(&data);
            end = off + data.len() as u64;
            if buf.len() >= CHUNK {
                write(dest, fh, buf_off, &buf).await?;
                buf_off += buf.len() as u64;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            write(dest, fh, buf_off, &buf).await?;
        }
        reader.finish().await.map_err(FileError::source)?;
        hash.zeros(e.size - end);
        dest.vfs.flush(fh).await.map_err(|err| FileError::dest("writing", err))?;
        let mut req = SetAttr {
            mode: Some(e.mode.unwrap_or(0o644) & 0o7777),
            mtime: e.mtime.map(SetTime::At),
            atime: e.atime.map(SetTime::At),
            ..Default::default()
        };
        if end < e.size {
            // A hole at the end: the length, without writing zeros.
            req.size = Some(e.size);
        }
        let a = dest.vfs.setattr(&ctx(), ino, &req).await.map_err(|err| FileError::dest("setting attributes", err))?;
        if a.size != e.size {
            return Err(FileError::source(format!("size mismatch: the source says {}, {} written", e.size, a.size)));
        }
        hash.check(&e.checksum).map_err(FileError::source)?;
        if let Some(tag) = &e.tag {
            dest.vfs
                .setxattr(ino, ETAG_XATTR, tag.as_bytes(), 0)
                .await
                .map_err(|err| FileError::dest("recording the source's ETag", err))?;
        }
        Ok(())
    }
    .await;
    let closed = dest.vfs.release(fh).await.map_err(|err| FileError::dest("closing", err));
    if let Err(err) = res.and(closed) {
        dest.discard(&tmp).await;
        return Err(err);
    }
    dest.publish(&tmp, dir, name).await?;
    Ok(Outcome::Copied(e.size))
}

async fn write(dest: &Dest, fh: u64, off: u64, data: &[u8]) -> Result<(), FileError> {
    dest.vfs.write(fh, off, data).await.map_err(|e| FileError::dest("writing", e))?;
    Ok(())
}
