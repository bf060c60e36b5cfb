//! Multipart uploads: parts are files of a hidden directory of the volume
//! (`.strata-s3-uploads/<upload id>/<part number>`), assembled in order into a new file that is
//! then renamed over the key.

use std::sync::Arc;

use futures::StreamExt;
use md5::{Digest, Md5};
use strata_types::Attr;
use strata_vfs::Vfs;

use crate::error::{GatewayError, Result};
use crate::keys::HIDDEN_PREFIX;
use crate::meta::ObjectMeta;
use crate::objects::{self, ctx};

/// Largest part number S3 allows.
pub const MAX_PARTS: i32 = 10_000;

/// Smallest size of every part but the last, as in S3.
pub const MIN_PART: u64 = 5 << 20;

/// Extended attribute of an upload's directory naming the key it is for.
const KEY_XATTR: &[u8] = b"user.s3.key";

/// Extended attribute of an upload's directory holding the object's metadata.
const META_XATTR: &[u8] = b"user.s3.meta";

/// Extended attribute of a part holding its ETag.
const PART_ETAG_XATTR: &[u8] = b"user.s3.part-etag";

/// Name of the directory holding the uploads in progress, at the volume root.
pub fn uploads_dir() -> String {
    format!("{HIDDEN_PREFIX}uploads")
}

fn part_name(n: i32) -> String {
    format!("{n:05}")
}

fn check_part_number(n: i32) -> Result<()> {
    if !(1..=MAX_PARTS).contains(&n) {
        return Err(GatewayError::InvalidArgument(format!("part number {n} is not between 1 and {MAX_PARTS}")));
    }
    Ok(())
}

/// A part of an upload.
#[derive(Clone, Debug)]
pub struct PartInfo {
    /// Part number.
    pub number: i32,
    /// Its file.
    pub ino: u64,
    /// MD5 of its content, hex.
    pub etag: String,
    /// Attributes of its file.
    pub attr: Attr,
}

/// Starts an upload for `key`, the object to get `meta`; returns its id.
pub async fn create(vfs: &Vfs, key: &str, meta: &ObjectMeta) -> Result<String> {
    let root = objects::ensure_dirs(vfs, &[uploads_dir().as_str()]).await?.ino;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let (dir, _) = vfs.mkdir(&ctx(), root, id.as_bytes(), 0o700, 0).await?;
    vfs.setxattr(dir, META_XATTR, meta.encode().as_bytes(), 0).await?;
    // The key last: an upload directory without it is no upload (see `upload_dir`).
    vfs.setxattr(dir, KEY_XATTR, key.as_bytes(), 0).await?;
    Ok(id)
}

/// The directory of upload `id` for `key`; an id of another key is no upload of this one.
async fn upload_dir(vfs: &Vfs, key: &str, id: &str) -> Result<(u64, u64)> {
    let missing = || GatewayError::NoSuchUpload(id.to_string());
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(missing());
    }
    let Some((root, _)) = objects::resolve(vfs, &[uploads_dir().as_str()]).await? else { return Err(missing()) };
    let Some((dir, _)) = objects::resolve(vfs, &[uploads_dir().as_str(), id]).await? else { return Err(missing()) };
    match vfs.getxattr(dir, KEY_XATTR).await {
        Ok(k) if k == key.as_bytes() => Ok((root, dir)),
        Ok(_) => Err(missing()),
        Err(e) if e.errno() == libc::ENOENT => Err(missing()),
        Err(e) => Err(e.into()),
    }
}

/// Stores a part from a streamed body (replacing an earlier upload of the same number);
/// returns its ETag.
pub async fn upload_part<S, E>(
    vfs: &Vfs,
    key: &str,
    id: &str,
    number: i32,
    body: S,
    limit: u64,
    md5: Option<&str>,
) -> Result<String>
where
    S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_part_number(number)?;
    let (_, dir) = upload_dir(vfs, key, id).await?;
    let tmp = objects::temp_name("part");
    let w = objects::write_new(vfs, dir, &tmp, body, limit).await?;
    let etag = objects::hex_md5(&w.md5);
    let res = async {
        objects::check_md5(md5, &w.md5)?;
        vfs.setxattr(w.ino, PART_ETAG_XATTR, etag.as_bytes(), 0).await?;
        vfs.rename(&ctx(), dir, tmp.as_bytes(), dir, part_name(number).as_bytes(), 0).await?;
        Ok(())
    }
    .await;
    if res.is_err() {
        objects::discard(vfs, dir, &tmp).await;
    }
    res.map(|()| etag)
}

/// The parts uploaded so far, by part number.
pub async fn list_parts(vfs: &Vfs, key: &str, id: &str) -> Result<Vec<PartInfo>> {
    let (_, dir) = upload_dir(vfs, key, id).await?;
    parts_of(vfs, dir).await
}

async fn parts_of(vfs: &Vfs, dir: u64) -> Result<Vec<PartInfo>> {
    let fh = vfs.opendir(&ctx(), dir, true).await?;
    let entries = vfs.readdir(fh, 0);
    vfs.releasedir(fh);
    let mut parts = Vec::new();
    for (_, e) in entries? {
        let Some(number) = std::str::from_utf8(&e.name).ok().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let attr = match e.attr {
            Some(a) => a,
            None => vfs.getattr(e.ino).await?,
        };
        let etag = String::from_utf8_lossy(&vfs.getxattr(e.ino, PART_ETAG_XATTR).await?).into_owned();
        parts.push(PartInfo { number, ino: e.ino, etag, attr });
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// Assembles the listed parts in order into the object `key` and ends the upload; returns the
/// multipart ETag (MD5 of the parts' MD5s, dash, part count).
pub async fn complete(vfs: &Arc<Vfs>, key: &str, segs: &[&str], id: &str, wanted: &[(i32, String)]) -> Result<String> {
    let (root, dir) = upload_dir(vfs, key, id).await?;
    if wanted.is_empty() {
        return Err(GatewayError::InvalidArgument("a multipart upload needs at least one part".into()));
    }
    if wanted.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(GatewayError::InvalidPartOrder);
    }
    let have = parts_of(vfs, dir).await?;
    let mut chosen = Vec::with_capacity(wanted.len());
    let mut digests = Md5::new();
    for (i, (n, etag)) in wanted.iter().enumerate() {
        check_part_number(*n)?;
        let p = have
            .iter()
            .find(|p| p.number == *n)
            .ok_or_else(|| GatewayError::InvalidPart(format!("part {n} was not uploaded")))?;
        if etag.trim_matches('"') != p.etag {
            return Err(GatewayError::InvalidPart(format!("part {n} has ETag {:?}, not {etag:?}", p.etag)));
        }
        if i + 1 < wanted.len() && p.attr.size < MIN_PART {
            return Err(GatewayError::TooSmall(format!(
                "part {n} is {} bytes; every part but the last must be at least {MIN_PART} bytes",
                p.attr.size
            )));
        }
        let raw = hex::decode(&p.etag).map_err(|_| GatewayError::InvalidPart(format!("part {n} is damaged")))?;
        digests.update(&raw);
        chosen.push((p.ino, p.attr.size));
    }
    let etag = format!("{}-{}", hex::encode(digests.finalize()), wanted.len());
    let meta = match vfs.getxattr(dir, META_XATTR).await {
        Ok(v) => ObjectMeta::decode(&String::from_utf8_lossy(&v)),
        Err(_) => ObjectMeta::default(),
    };
    let (name, dirs) = segs.split_last().ok_or_else(|| GatewayError::NoSuchKey(key.to_string()))?;
    let tmp = objects::temp_name("put");
    let (made, file) = objects::create_in_dirs(vfs, dirs, &tmp).await?;
    let target = made.ino;
    let reader = vfs.clone();
    let body = futures::stream::iter(chosen)
        .then(move |(ino, size)| objects::read_stream(reader.clone(), ino, 0, size))
        .flat_map(|r| match r {
            Ok(rx) => rx.map(|c| c.map_err(|e| e.to_string())).boxed(),
            Err(e) => futures::stream::once(async move { Err(e.to_string()) }).boxed(),
        });
    let written = match objects::write_body(vfs, file, Box::pin(body), u64::MAX).await {
        Ok(w) => objects::publish(vfs, target, &tmp, name, &w, &etag, &meta).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        made.undo(vfs, dirs).await;
        return Err(e);
    }
    remove_upload(vfs, root, dir, id).await;
    Ok(etag)
}

/// An upload in progress.
#[derive(Clone, Debug)]
pub struct UploadInfo {
    /// The key it is for.
    pub key: String,
    /// Its id.
    pub id: String,
    /// When it was started (its directory's change time).
    pub initiated: strata_types::Timespec,
}

/// The uploads in progress whose key starts with `prefix`, by key then id.
pub async fn list_uploads(vfs: &Vfs, prefix: &str) -> Result<Vec<UploadInfo>> {
    let Some((root, _)) = objects::resolve(vfs, &[uploads_dir().as_str()]).await? else { return Ok(Vec::new()) };
    let fh = vfs.opendir(&ctx(), root, true).await?;
    let entries = vfs.readdir(fh, 0);
    vfs.releasedir(fh);
    let mut out = Vec::new();
    for (_, e) in entries? {
        let Ok(id) = String::from_utf8(e.name) else { continue };
        if id.len() != 32 {
            continue;
        }
        let key = match vfs.getxattr(e.ino, KEY_XATTR).await {
            Ok(k) => String::from_utf8_lossy(&k).into_owned(),
            // Removed meanwhile (completed or aborted).
            Err(_) => continue,
        };
        if key.starts_with(prefix) {
            let initiated = e.attr.map(|a| a.ctime).unwrap_or_default();
            out.push(UploadInfo { key, id, initiated });
        }
    }
    out.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));
    Ok(out)
}

/// Ends an upload, removing its parts.
pub async fn abort(vfs: &Vfs, key: &str, id: &str) -> Result<()> {
    let (root, dir) = upload_dir(vfs, key, id).await?;
    remove_upload(vfs, root, dir, id).await;
    Ok(())
}

async fn remove_upload(vfs: &Vfs, root: u64, dir: u64, id: &str) {
    let names: Vec<Vec<u8>> = match vfs.opendir(&ctx(), dir, false).await {
        Ok(fh) => {
            let r = vfs.readdir(fh, 0);
            vfs.releasedir(fh);
            r.map(|v| v.into_iter().map(|(_, e)| e.name).filter(|n| n != b"." && n != b"..").collect())
                .unwrap_or_default()
        }
        Err(_) => Vec::new(),
    };
    for n in names {
        if let Err(e) = vfs.unlink(&ctx(), dir, &n).await {
            tracing::warn!(upload = id, error = %e, "could not remove a part");
        }
    }
    if let Err(e) = vfs.rmdir(&ctx(), root, id.as_bytes()).await {
        tracing::warn!(upload = id, error = %e, "could not remove an upload's directory");
    }
}
