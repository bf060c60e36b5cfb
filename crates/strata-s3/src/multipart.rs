//! Multipart uploads: parts are files of a hidden directory of the volume
//! (`.strata-s3-uploads/<upload id>/<part number>`), assembled in order into a new file that is
//! then renamed over the key.

use std::sync::Arc;

use futures::StreamExt;
use md5::{Digest, Md5};
use strata_types::Attr;
use strata_vfs::Vfs;

use crate::checksum::{self, Algo, Wanted};
use crate::error::{GatewayError, Result};
use crate::keys::HIDDEN_PREFIX;
use crate::meta::{ObjectMeta, StoredChecksum};
use crate::objects::{self, Replace, ctx};

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

/// Extended attribute of a part holding its additional checksum (`ALGO value`).
const PART_CHECKSUM_XATTR: &[u8] = b"user.s3.part-checksum";

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
    /// Its additional checksum, if it has one.
    pub checksum: Option<(Algo, String)>,
}

/// Starts an upload for `key`, the object to get `meta`; returns its id. Uploads older than
/// `expiry` are removed first, so parts a client abandoned do not hold the volume's quota
/// forever.
pub async fn create(vfs: &Vfs, key: &str, meta: &ObjectMeta, expiry: std::time::Duration) -> Result<String> {
    expire(vfs, expiry).await;
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

/// What an upload's part is checked against besides its `Content-MD5`.
#[derive(Default)]
pub struct PartChecks {
    /// `Content-MD5`.
    pub md5: Option<String>,
    /// The additional checksum the request asks for.
    pub wanted: Option<Wanted>,
    /// The body's trailers, once it has ended.
    pub trailers: Option<s3s::TrailingHeaders>,
}

/// Stores a part from a streamed body (replacing an earlier upload of the same number);
/// returns its ETag and additional checksum. A part of an upload started with a checksum
/// algorithm gets that checksum even when the client sent none.
#[allow(clippy::too_many_arguments)]
pub async fn upload_part<S, E>(
    vfs: &Vfs,
    key: &str,
    id: &str,
    number: i32,
    body: S,
    limit: u64,
    checks: PartChecks,
) -> Result<(String, Option<(Algo, String)>)>
where
    S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_part_number(number)?;
    let (_, dir) = upload_dir(vfs, key, id).await?;
    let upload_algo = upload_meta(vfs, dir).await.upload_checksum.map(|u| u.0);
    let algo = match (&checks.wanted, upload_algo) {
        (Some(w), Some(a)) if w.algo != a => {
            return Err(GatewayError::InvalidRequest(format!(
                "the upload was started with checksum {}, this part carries {}",
                a.name(),
                w.algo.name()
            )));
        }
        (Some(w), _) => Some(w.algo),
        (None, a) => a,
    };
    let tmp = objects::temp_name("part");
    let w = objects::write_new(vfs, dir, &tmp, body, limit, algo).await?;
    let etag = objects::hex_md5(&w.md5);
    let sum = algo.zip(w.checksum.clone());
    let res = async {
        objects::check_md5(checks.md5.as_deref(), &w.md5)?;
        if let (Some(want), Some(got)) = (&checks.wanted, &w.checksum) {
            checksum::verify(want, got, checks.trailers.as_ref())?;
        }
        if let Some((a, v)) = &sum {
            vfs.setxattr(w.ino, PART_CHECKSUM_XATTR, format!("{} {v}", a.name()).as_bytes(), 0).await?;
        }
        vfs.setxattr(w.ino, PART_ETAG_XATTR, etag.as_bytes(), 0).await?;
        vfs.rename(&ctx(), dir, tmp.as_bytes(), dir, part_name(number).as_bytes(), 0).await?;
        Ok(())
    }
    .await;
    if res.is_err() {
        objects::discard(vfs, dir, &tmp).await;
    }
    res.map(|()| (etag, sum))
}

async fn upload_meta(vfs: &Vfs, dir: u64) -> ObjectMeta {
    match vfs.getxattr(dir, META_XATTR).await {
        Ok(v) => ObjectMeta::decode(&String::from_utf8_lossy(&v)),
        Err(_) => ObjectMeta::default(),
    }
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
        let checksum = match vfs.getxattr(e.ino, PART_CHECKSUM_XATTR).await {
            Ok(v) => {
                String::from_utf8_lossy(&v).split_once(' ').and_then(|(a, v)| Some((Algo::parse(a)?, v.to_string())))
            }
            Err(_) => None,
        };
        parts.push(PartInfo { number, ino: e.ino, etag, attr, checksum });
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// A part as a completion request lists it.
#[derive(Clone, Debug)]
pub struct ListedPart {
    /// Part number.
    pub number: i32,
    /// The ETag the client got for it.
    pub etag: String,
    /// The checksum the client got for it, if it lists one.
    pub checksum: Option<(Algo, String)>,
}

/// What a completed upload became.
#[derive(Clone, Debug)]
pub struct Completed {
    /// The multipart ETag.
    pub etag: String,
    /// The object's additional checksum.
    pub checksum: Option<StoredChecksum>,
}

/// Assembles the listed parts in order into the object `key` (replacing what `replace` allows)
/// and ends the upload; returns the multipart ETag (MD5 of the parts' MD5s, dash, part count)
/// and the object's checksum. `expected` is a whole-object checksum the client sent. Completing
/// an upload that already completed into the key's current object answers that object again, so
/// a client that lost the first answer can retry.
pub async fn complete(
    vfs: &Arc<Vfs>,
    key: &str,
    segs: &[&str],
    id: &str,
    wanted: &[ListedPart],
    expected: Option<(Algo, String)>,
    replace: Replace,
) -> Result<Completed> {
    let (root, dir) = match upload_dir(vfs, key, id).await {
        Ok(d) => d,
        Err(GatewayError::NoSuchUpload(_)) => return completed_before(vfs, key, segs, id).await,
        Err(e) => return Err(e),
    };
    if wanted.is_empty() {
        return Err(GatewayError::MalformedXml("a multipart upload needs at least one part".into()));
    }
    if wanted.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err(GatewayError::InvalidPartOrder);
    }
    let mut meta = upload_meta(vfs, dir).await;
    let have = parts_of(vfs, dir).await?;
    let mut chosen = Vec::with_capacity(wanted.len());
    let mut digests = Md5::new();
    let mut part_sums = Vec::new();
    for (i, w) in wanted.iter().enumerate() {
        let n = w.number;
        check_part_number(n)?;
        let p = have
            .iter()
            .find(|p| p.number == n)
            .ok_or_else(|| GatewayError::InvalidPart(format!("part {n} was not uploaded")))?;
        if w.etag.trim_matches('"') != p.etag {
            return Err(GatewayError::InvalidPart(format!("part {n} has ETag {:?}, not {:?}", p.etag, w.etag)));
        }
        if let Some((a, v)) = &w.checksum
            && p.checksum.as_ref().is_some_and(|(pa, pv)| pa == a && pv != v)
        {
            return Err(GatewayError::InvalidPart(format!("part {n} has another {} checksum", a.name())));
        }
        if i + 1 < wanted.len() && p.attr.size < MIN_PART {
            return Err(GatewayError::TooSmall(format!(
                "part {n} is {} bytes; every part but the last must be at least {MIN_PART} bytes",
                p.attr.size
            )));
        }
        let raw = hex::decode(&p.etag).map_err(|_| GatewayError::InvalidPart(format!("part {n} is damaged")))?;
        digests.update(&raw);
        if let Some((_, v)) = &p.checksum {
            part_sums.push(v.clone());
        }
        chosen.push((p.ino, p.attr.size));
    }
    let etag = format!("{}-{}", hex::encode(digests.finalize()), wanted.len());
    // The object's checksum: the upload's algorithm over the whole object (hashed while it is
    // assembled) or over its parts' checksums.
    let (algo, full) = match meta.upload_checksum {
        Some((a, full)) => (Some(a), full),
        None => (None, false),
    };
    if let Some(a) = algo
        && !full
        && part_sums.len() != wanted.len()
    {
        return Err(GatewayError::InvalidPart(format!("every part of this upload needs a {} checksum", a.name())));
    }
    let composite = match algo {
        Some(a) if !full => Some(a.composite(&part_sums)?),
        _ => None,
    };
    meta.upload_checksum = None;
    meta.upload_id = Some(id.to_string());
    meta.set_parts(&chosen.iter().map(|c| c.1).collect::<Vec<_>>());
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
    let whole = if full { algo } else { None };
    let written = match objects::write_body(vfs, file, Box::pin(body), u64::MAX, whole).await {
        Ok(w) => {
            let value = composite.clone().or(w.checksum.clone());
            meta.checksum = algo.zip(value).map(|(a, value)| StoredChecksum { algo: a, value, composite: !full });
            let checked = match (&expected, &meta.checksum) {
                (Some((a, v)), Some(c)) if *a == c.algo && strip_count(v) != c.value => {
                    Err(GatewayError::BadChecksum(a.name()))
                }
                (Some((a, _)), c) if c.as_ref().is_none_or(|c| c.algo != *a) => Err(GatewayError::InvalidRequest(
                    format!("the upload was not started with checksum algorithm {}", a.name()),
                )),
                _ => Ok(()),
            };
            match checked {
                Ok(()) => objects::publish(vfs, target, &tmp, name, &w, &etag, &meta, replace).await,
                Err(e) => {
                    objects::discard(vfs, target, &tmp).await;
                    Err(e)
                }
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        made.undo(vfs, dirs).await;
        return Err(e);
    }
    remove_upload(vfs, root, dir, id).await;
    Ok(Completed { etag, checksum: meta.checksum })
}

/// A composite checksum as clients send it may carry S3's `-N` suffix.
fn strip_count(v: &str) -> &str {
    match v.rsplit_once('-') {
        Some((head, n)) if n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => v,
    }
}

/// The answer to a repeated completion: the key's object, if upload `id` made it.
async fn completed_before(vfs: &Vfs, key: &str, segs: &[&str], id: &str) -> Result<Completed> {
    let missing = || GatewayError::NoSuchUpload(id.to_string());
    let (ino, a) = match objects::resolve_object(vfs, key, segs).await {
        Ok(found) => found,
        Err(GatewayError::NoSuchKey(_)) => return Err(missing()),
        Err(e) => return Err(e),
    };
    match objects::recorded_live(vfs, ino, a.size, a.mtime).await {
        Some((etag, meta)) if meta.upload_id.as_deref() == Some(id) => Ok(Completed { etag, checksum: meta.checksum }),
        _ => Err(missing()),
    }
}

/// Removes the uploads started more than `expiry` ago.
pub async fn expire(vfs: &Vfs, expiry: std::time::Duration) {
    let Ok(Some((root, _))) = objects::resolve(vfs, &[uploads_dir().as_str()]).await else { return };
    let Ok(fh) = vfs.opendir(&ctx(), root, true).await else { return };
    let entries = vfs.readdir(fh, 0);
    vfs.releasedir(fh);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for (_, e) in entries.unwrap_or_default() {
        let Ok(id) = String::from_utf8(e.name) else { continue };
        if id.len() != 32 {
            continue;
        }
        let started = e.attr.map(|a| a.ctime.sec).unwrap_or(i64::MAX);
        if started >= 0 && (now.saturating_sub(started as u64)) > expiry.as_secs() {
            tracing::info!(upload = %id, "removing an expired multipart upload");
            remove_upload(vfs, root, e.ino, &id).await;
        }
    }
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
