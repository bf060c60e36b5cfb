//! Objects as files of a volume: path resolution, atomic writes from a streamed body, streamed
//! reads, deletion, and ETags.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, Stream, StreamExt};
use md5::{Digest, Md5};
use strata_types::{Attr, Ctx, FileIdentity, FileType, RenameIf, Timespec};
use strata_vfs::Vfs;

use crate::checksum::Algo;
use crate::error::{GatewayError, Result};
use crate::keys::HIDDEN_PREFIX;
use crate::meta::ObjectMeta;

/// `renameat2`'s flag refusing to replace an existing target.
const RENAME_NOREPLACE: u32 = 1;

/// Size of each read from a file and of each buffered write: what one request holds in memory.
pub const CHUNK: usize = 1 << 20;

/// Extended attribute holding an object's ETag with the size and mtime it was computed for.
pub const ETAG_XATTR: &[u8] = b"user.s3.etag";

/// The gateway acts as root with permission checks off: what a request may do is decided by
/// its token at the server, as for a FUSE mount's kernel-checked requests.
pub fn ctx() -> Ctx {
    Ctx::root()
}

/// Looks up a path from the volume root; `None` when a segment is missing or not a directory.
/// The directories come through the name cache, the last name from the server: a request sees
/// the latest object of a key.
pub async fn resolve(vfs: &Vfs, segs: &[&str]) -> Result<Option<(u64, Attr)>> {
    let names: Vec<&[u8]> = segs.iter().map(|s| s.as_bytes()).collect();
    match vfs.walk(&ctx(), vfs.root(), &names, true).await {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.errno() == libc::ENOENT || e.errno() == libc::ENOTDIR => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The regular file of an object key; directories, links and missing paths are no object.
pub async fn resolve_object(vfs: &Vfs, key: &str, segs: &[&str]) -> Result<(u64, Attr)> {
    match resolve(vfs, segs).await? {
        Some((ino, a)) if a.kind == FileType::File => Ok((ino, a)),
        _ => Err(GatewayError::NoSuchKey(key.to_string())),
    }
}

/// The directories of a key, as [`ensure_dirs`] found or made them.
pub struct Dirs {
    /// The deepest one (where the key's file goes).
    pub ino: u64,
    /// The parent of each directory, from the root down.
    chain: Vec<u64>,
    /// Index of the first directory this call created, if any.
    first_new: Option<usize>,
}

impl Dirs {
    /// Removes the directories this call created if they are still empty, so a failed write
    /// leaves no trace.
    pub async fn undo(&self, vfs: &Vfs, segs: &[&str]) {
        if let Some(f) = self.first_new {
            prune_dirs(vfs, &self.chain[f..], &segs[f..]).await;
        }
    }
}

/// The directory of `segs` under the volume root, creating missing ones.
pub async fn ensure_dirs(vfs: &Vfs, segs: &[&str]) -> Result<Dirs> {
    let mut ino = vfs.root();
    let mut chain = Vec::with_capacity(segs.len());
    let mut first_new = None;
    for (i, s) in segs.iter().enumerate() {
        chain.push(ino);
        let found = match vfs.lookup_cached(&ctx(), ino, s.as_bytes()).await {
            Ok(found) => Some(found),
            Err(e) if e.errno() == libc::ENOENT => None,
            Err(e) => return Err(e.into()),
        };
        let (next, attr) = match found {
            Some(f) => f,
            None => match vfs.mkdir(&ctx(), ino, s.as_bytes(), 0o755, 0o022).await {
                Ok(made) => {
                    first_new = first_new.or(Some(i));
                    made
                }
                // Another request made it meanwhile.
                Err(e) if e.errno() == libc::EEXIST => vfs.lookup(&ctx(), ino, s.as_bytes()).await?,
                Err(e) => return Err(e.into()),
            },
        };
        if !attr.is_dir() {
            return Err(GatewayError::KeyConflict(format!(
                "{:?} is an object, so it cannot be a directory of other keys",
                segs[..=i].join("/")
            )));
        }
        ino = next;
    }
    Ok(Dirs { ino, chain, first_new })
}

/// A hidden, unique name for a file being written.
pub fn temp_name(what: &str) -> String {
    format!("{HIDDEN_PREFIX}{what}-{:016x}", rand::random::<u64>())
}

/// A file written from a body, still under its temporary name.
pub struct Written {
    /// Inode of the file.
    pub ino: u64,
    /// Bytes written.
    pub size: u64,
    /// MD5 of the content.
    pub md5: [u8; 16],
    /// The additional checksum asked for, base64.
    pub checksum: Option<String>,
    /// Attributes after the last write was committed.
    pub attr: Attr,
}

/// A new hidden file, open for writing.
pub struct NewFile {
    /// Its directory.
    pub dir: u64,
    /// Its (temporary) name.
    pub name: String,
    ino: u64,
    fh: u64,
}

/// Creates the hidden file `name` in `dir`.
pub async fn create_new(vfs: &Vfs, dir: u64, name: &str) -> Result<NewFile> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (ino, _, fh) = vfs.create(&ctx(), dir, name.as_bytes(), 0o644, 0o022, flags).await?;
    Ok(NewFile { dir, name: name.to_string(), ino, fh })
}

/// Makes the directories of a key and creates the hidden file `name` in the deepest. A delete
/// of the directory's last key removes the directory, and may do so between the two steps:
/// then they are taken again.
pub async fn create_in_dirs(vfs: &Vfs, dirs: &[&str], name: &str) -> Result<(Dirs, NewFile)> {
    let vanished = |e: &GatewayError| matches!(e, GatewayError::Vfs(v) if v.errno() == libc::ENOENT);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let made = match ensure_dirs(vfs, dirs).await {
            Ok(m) => m,
            Err(e) if vanished(&e) && attempt < 10 => continue,
            Err(e) => return Err(e),
        };
        match create_new(vfs, made.ino, name).await {
            Ok(f) => return Ok((made, f)),
            Err(e) if vanished(&e) && attempt < 10 => {}
            Err(e) => {
                made.undo(vfs, dirs).await;
                return Err(e);
            }
        }
    }
}

/// Writes a body into a new file as it arrives (at most `CHUNK` bytes held), refusing it past
/// `limit` bytes, computing its MD5 and the checksum `algo`, and closes it. On any failure the
/// file is removed.
pub async fn write_body<S, E>(vfs: &Vfs, f: NewFile, body: S, limit: u64, algo: Option<Algo>) -> Result<Written>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let res = fill(vfs, f.fh, body, limit, algo).await;
    let closed = vfs.release(f.fh).await;
    let res = match (res, closed) {
        (Ok(r), Ok(())) => Ok(r),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
    };
    let res = match res {
        Ok((size, md5, checksum)) => {
            vfs.getattr(f.ino).await.map(|attr| Written { ino: f.ino, size, md5, checksum, attr }).map_err(Into::into)
        }
        Err(e) => Err(e),
    };
    if res.is_err() {
        discard(vfs, f.dir, &f.name).await;
    }
    res
}

/// Creates the hidden file `name` in `dir` and writes a body into it (see [`write_body`]).
pub async fn write_new<S, E>(
    vfs: &Vfs,
    dir: u64,
    name: &str,
    body: S,
    limit: u64,
    algo: Option<Algo>,
) -> Result<Written>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let f = create_new(vfs, dir, name).await?;
    write_body(vfs, f, body, limit, algo).await
}

async fn fill<S, E>(
    vfs: &Vfs,
    fh: u64,
    mut body: S,
    limit: u64,
    algo: Option<Algo>,
) -> Result<(u64, [u8; 16], Option<String>)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut md5 = Md5::new();
    let mut sum = algo.map(Algo::hasher);
    let mut off = 0u64;
    let mut buf = BytesMut::with_capacity(CHUNK);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| GatewayError::Body(e.to_string()))?;
        if off + (buf.len() + chunk.len()) as u64 > limit {
            return Err(GatewayError::TooLarge(limit));
        }
        md5.update(&chunk);
        if let Some(h) = &mut sum {
            h.update(&chunk);
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= CHUNK {
            vfs.write(fh, off, &buf).await?;
            off += buf.len() as u64;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        vfs.write(fh, off, &buf).await?;
        off += buf.len() as u64;
    }
    vfs.flush(fh).await?;
    Ok((off, md5.finalize().into(), sum.map(|h| h.finish())))
}

/// Removes a temporary file, logging (not failing) if that is impossible.
pub async fn discard(vfs: &Vfs, dir: u64, name: &str) {
    if let Err(e) = vfs.unlink(&ctx(), dir, name.as_bytes()).await
        && e.errno() != libc::ENOENT
    {
        tracing::warn!(name, error = %e, "could not remove a temporary file");
    }
}

/// What a write may replace, checked by the server in the rename that publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Whatever object is there.
    Any,
    /// Nothing: the key must have no object (`If-None-Match: *`).
    Nothing,
    /// Exactly this file, unchanged since its ETag was checked (`If-Match`).
    Exactly(FileIdentity),
}

/// Records the ETag and metadata of a written file and renames it over `key_name` in `dir`
/// (readers see the old object or the new one, never a partial one), if what is there is what
/// `replace` allows (`PreconditionFailed` otherwise, and nothing is replaced).
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    vfs: &Vfs,
    dir: u64,
    tmp: &str,
    key_name: &str,
    w: &Written,
    etag: &str,
    meta: &ObjectMeta,
    replace: Replace,
) -> Result<()> {
    let record = format!("{etag} {}\n{}", stamp(w.attr.size, w.attr.mtime), meta.encode());
    let res = async {
        vfs.setxattr(w.ino, ETAG_XATTR, record.as_bytes(), 0).await?;
        let (flags, cond) = match replace {
            Replace::Any => (0, RenameIf::default()),
            Replace::Nothing => (RENAME_NOREPLACE, RenameIf::default()),
            Replace::Exactly(id) => (0, RenameIf { source: None, target: Some(id) }),
        };
        match vfs.rename_if(&ctx(), dir, tmp.as_bytes(), dir, key_name.as_bytes(), flags, cond).await {
            Ok(()) => Ok(()),
            Err(e) if replace != Replace::Any && (e.errno() == libc::EEXIST || e.errno() == libc::ECANCELED) => {
                Err(GatewayError::PreconditionFailed)
            }
            Err(e) => Err(e.into()),
        }
    }
    .await;
    if res.is_err() {
        discard(vfs, dir, tmp).await;
    }
    res
}

fn stamp(size: u64, mtime: Timespec) -> String {
    format!("{size} {}.{}", mtime.sec, mtime.nsec)
}

/// The ETag and metadata of a file of `size` bytes last changed at `mtime`: those recorded when
/// the gateway wrote it if the file has not changed since; otherwise (written through a mount)
/// no metadata and a stable tag of its inode, size and mtime, which changes whenever the
/// content does but is not an MD5 of it.
pub async fn recorded(vfs: &Vfs, ino: u64, size: u64, mtime: Timespec) -> (String, ObjectMeta) {
    from_record(vfs.getxattr(ino, ETAG_XATTR).await.ok(), ino, size, mtime)
}

/// [`recorded`], or `None` when the inode is gone (the key was overwritten or deleted since it
/// was looked up).
pub async fn recorded_live(vfs: &Vfs, ino: u64, size: u64, mtime: Timespec) -> Option<(String, ObjectMeta)> {
    match vfs.getxattr(ino, ETAG_XATTR).await {
        Err(e) if e.errno() == libc::ENOENT => None,
        r => Some(from_record(r.ok(), ino, size, mtime)),
    }
}

fn from_record(record: Option<Vec<u8>>, ino: u64, size: u64, mtime: Timespec) -> (String, ObjectMeta) {
    let stamp = stamp(size, mtime);
    if let Some(v) = record
        && let Ok(s) = std::str::from_utf8(&v)
    {
        let (first, rest) = s.split_once('\n').unwrap_or((s, ""));
        if let Some((etag, at)) = first.split_once(' ')
            && at == stamp
        {
            return (etag.to_string(), ObjectMeta::decode(rest));
        }
    }
    let mut h = Md5::new();
    h.update(format!("{ino}:{stamp}"));
    (hex::encode(h.finalize()), ObjectMeta::default())
}

/// Changes the metadata recorded with an object's file (its tags), keeping its ETag. The record
/// holds the size and mtime it is for, so a write through a mount meanwhile leaves it stale,
/// as for any object changed through a mount.
pub async fn rewrite_meta(vfs: &Vfs, ino: u64, a: &Attr, change: impl FnOnce(&mut ObjectMeta)) -> Result<()> {
    let (etag, mut meta) = recorded(vfs, ino, a.size, a.mtime).await;
    change(&mut meta);
    let record = format!("{etag} {}\n{}", stamp(a.size, a.mtime), meta.encode());
    vfs.setxattr(ino, ETAG_XATTR, record.as_bytes(), 0).await?;
    Ok(())
}

/// The ETag alone (see [`recorded`]).
pub async fn etag_of(vfs: &Vfs, ino: u64, size: u64, mtime: Timespec) -> String {
    recorded(vfs, ino, size, mtime).await.0
}

/// A stream of a file's bytes in `[from, to)`, read `CHUNK` at a time by a task that stops
/// when the receiver goes away, so memory per reader stays at a couple of chunks.
pub async fn read_stream(vfs: Arc<Vfs>, ino: u64, from: u64, to: u64) -> Result<ByteReceiver> {
    let opened = vfs.open(&ctx(), ino, libc::O_RDONLY).await?;
    Ok(stream_open(vfs, opened.fh, from, to))
}

/// Chunks of an object as a reader task sends them.
pub type ByteReceiver = futures::channel::mpsc::Receiver<std::result::Result<Bytes, std::io::Error>>;

/// Opens an object's file for reading: its inode, attributes and handle. A PUT renames a new
/// file over the key between the lookup and the open, destroying the old inode, so a vanished
/// inode means "look again", not "no such key".
pub async fn open_object(vfs: &Vfs, key: &str, segs: &[&str]) -> Result<(u64, Attr, u64)> {
    let mut attempt = 0;
    loop {
        let (ino, a) = resolve_object(vfs, key, segs).await?;
        match vfs.open(&ctx(), ino, libc::O_RDONLY).await {
            Ok(o) => return Ok((ino, a, o.fh)),
            Err(e) if e.errno() == libc::ENOENT && attempt < 10 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Closes a handle that will not be read after all.
pub async fn close(vfs: &Vfs, fh: u64) {
    if let Err(e) = vfs.release(fh).await {
        tracing::debug!(error = %e, "closing a read handle");
    }
}

/// [`read_stream`] of an already open handle, which the reader task closes at the end.
pub fn stream_open(vfs: Arc<Vfs>, fh: u64, from: u64, to: u64) -> ByteReceiver {
    let (mut tx, rx) = futures::channel::mpsc::channel(1);
    tokio::spawn(async move {
        let mut pos = from;
        while pos < to {
            let want = (to - pos).min(CHUNK as u64) as u32;
            let item = match vfs.read(fh, pos, want).await {
                Ok(d) if d.is_empty() => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the object became shorter while it was read",
                )),
                Ok(d) => {
                    pos += d.len() as u64;
                    Ok(Bytes::from(d))
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        close(&vfs, fh).await;
    });
    rx
}

/// Removes an object's file if there is one (deleting a missing key succeeds, as in S3), then
/// the directories the key leaves empty, so they do not linger as prefixes. With `expect`, only
/// that file, unchanged (`PreconditionFailed` otherwise): it is first renamed away under that
/// condition, atomically, then unlinked.
pub async fn remove_object(vfs: &Vfs, segs: &[&str], expect: Option<FileIdentity>) -> Result<()> {
    let Some((name, dirs)) = segs.split_last() else { return Ok(()) };
    let mut chain = vec![vfs.root()];
    for d in dirs {
        let parent = chain[chain.len() - 1];
        match vfs.lookup_cached(&ctx(), parent, d.as_bytes()).await {
            Ok((ino, a)) if a.is_dir() => chain.push(ino),
            Ok(_) => return Ok(()),
            Err(e) if e.errno() == libc::ENOENT => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let dir = chain[chain.len() - 1];
    if let Some(id) = expect {
        let tmp = temp_name("del");
        let cond = RenameIf { source: Some(id), target: None };
        return match vfs.rename_if(&ctx(), dir, name.as_bytes(), dir, tmp.as_bytes(), RENAME_NOREPLACE, cond).await {
            Ok(()) => {
                discard(vfs, dir, &tmp).await;
                prune_dirs(vfs, &chain, dirs).await;
                Ok(())
            }
            Err(e) if e.errno() == libc::ECANCELED || e.errno() == libc::ENOENT => {
                Err(GatewayError::PreconditionFailed)
            }
            Err(e) => Err(e.into()),
        };
    }
    match vfs.lookup(&ctx(), dir, name.as_bytes()).await {
        Ok((_, a)) if a.kind == FileType::File => match vfs.unlink(&ctx(), dir, name.as_bytes()).await {
            Ok(()) => {}
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(e.into()),
        },
        Ok(_) => return Ok(()),
        Err(e) if e.errno() == libc::ENOENT => {}
        Err(e) => return Err(e.into()),
    }
    prune_dirs(vfs, &chain, dirs).await;
    Ok(())
}

/// Removes empty directories from the deepest of a key's directories upwards, stopping at the
/// first that is not empty (or cannot be removed: that only leaves an empty prefix behind).
pub async fn prune_dirs(vfs: &Vfs, chain: &[u64], dirs: &[&str]) {
    for i in (0..dirs.len()).rev() {
        match vfs.rmdir(&ctx(), chain[i], dirs[i].as_bytes()).await {
            Ok(()) => {}
            Err(e) => {
                if e.errno() != libc::ENOTEMPTY && e.errno() != libc::ENOENT {
                    tracing::debug!(dir = dirs[i], error = %e, "left an empty directory");
                }
                return;
            }
        }
    }
}

/// Refuses a body whose MD5 is not the `Content-MD5` the client sent (base64), if it sent one:
/// `InvalidDigest` when what was sent is no MD5 at all, `BadDigest` when it is another one.
pub fn check_md5(expected: Option<&str>, got: &[u8; 16]) -> Result<()> {
    use base64::Engine as _;
    let Some(want) = expected.map(str::trim) else { return Ok(()) };
    if base64::engine::general_purpose::STANDARD.decode(want).map_or(true, |d| d.len() != 16) {
        return Err(GatewayError::InvalidDigest);
    }
    if want != base64(got) {
        return Err(GatewayError::BadDigest);
    }
    Ok(())
}

/// Standard base64 with padding (what `Content-MD5` carries).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// MD5 digests as S3 shows them.
pub fn hex_md5(d: &[u8; 16]) -> String {
    hex::encode(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_digests() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        let d: [u8; 16] = Md5::digest(b"hello").into();
        assert_eq!(base64(&d), "XUFAKrxLKna5cZ2REBfFkg==");
        assert!(check_md5(Some("XUFAKrxLKna5cZ2REBfFkg=="), &d).is_ok());
        assert!(check_md5(None, &d).is_ok());
        assert!(matches!(check_md5(Some("AAAAAAAAAAAAAAAAAAAAAA=="), &d), Err(GatewayError::BadDigest)));
        assert!(matches!(check_md5(Some("AAAA"), &d), Err(GatewayError::InvalidDigest)));
        assert!(matches!(check_md5(Some(""), &d), Err(GatewayError::InvalidDigest)));
    }
}
