//! The S3 operations: s3s's trait implemented over the volumes the signing token may see.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use strata_types::{FileType, Timespec};
use strata_vfs::Vfs;

use crate::attach::Attachments;
use crate::auth::{Keyring, Token};
use crate::error::{GatewayError, Result, bucket_error};
use crate::keys::split_key;
use crate::list::{self, Entry, Item, Marker, Query, Tree};
use crate::meta::ObjectMeta;
use crate::multipart;
use crate::objects::{self, ctx};

/// Limits of one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body of one PUT or one part.
    pub max_object: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_object: 5 << 30 }
    }
}

/// The S3 service over Strata volumes.
pub struct Gateway {
    keys: Arc<Keyring>,
    att: Arc<Attachments>,
    limits: Limits,
    region: String,
}

impl Gateway {
    /// A gateway acting with the tokens of `keys` through `att`.
    pub fn new(keys: Arc<Keyring>, att: Arc<Attachments>, limits: Limits, region: String) -> Self {
        Gateway { keys, att, limits, region }
    }

    fn token<T>(&self, req: &S3Request<T>) -> S3Result<Arc<Token>> {
        let Some(c) = &req.credentials else {
            return Err(s3_error!(AccessDenied, "anonymous requests are not served: sign with a token's key pair"));
        };
        self.keys.get(&c.access_key).ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }

    async fn volume(&self, token: &Token, bucket: &str) -> Result<Arc<Vfs>> {
        self.att.get(token, bucket).await.map_err(|e| bucket_error(bucket, e))
    }

    fn check_size(&self, len: Option<i64>) -> Result<()> {
        match len {
            Some(n) if n < 0 => Err(GatewayError::InvalidArgument("negative Content-Length".into())),
            Some(n) if n as u64 > self.limits.max_object => Err(GatewayError::TooLarge(self.limits.max_object)),
            _ => Ok(()),
        }
    }

    /// Writes a body to a hidden file next to the key and renames it into place.
    async fn store(
        &self,
        vfs: Arc<Vfs>,
        key: String,
        body: Option<StreamingBlob>,
        md5: Option<String>,
        meta: ObjectMeta,
    ) -> Result<(String, u64)> {
        let limit = self.limits.max_object;
        detached(async move {
            let segs = split_key(&key)?;
            let (name, dirs) = segs.split_last().ok_or_else(|| GatewayError::NoSuchKey(key.clone()))?;
            let tmp = objects::temp_name("put");
            let (made, file) = objects::create_in_dirs(&vfs, dirs, &tmp).await?;
            let dir = made.ino;
            let written = async {
                let w = objects::write_body(&vfs, file, body.unwrap_or_else(empty_body), limit).await?;
                if let Err(e) = objects::check_md5(md5.as_deref(), &w.md5) {
                    objects::discard(&vfs, dir, &tmp).await;
                    return Err(e);
                }
                let etag = objects::hex_md5(&w.md5);
                objects::publish(&vfs, dir, &tmp, name, &w, &etag, &meta).await?;
                Ok((etag, w.size))
            }
            .await;
            if written.is_err() {
                made.undo(&vfs, dirs).await;
            }
            written
        })
        .await
    }
}

fn empty_body() -> StreamingBlob {
    StreamingBlob::wrap(futures::stream::empty::<std::io::Result<bytes::Bytes>>())
}

/// Runs a write to its end in a task of its own. hyper drops a request's future when its
/// connection goes away; a write cut off at an arbitrary await would leave its temporary file
/// and open handle behind, while a whole one sees the body fail and cleans up.
async fn detached<T: Send + 'static>(work: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(work).await.unwrap_or_else(|e| Err(GatewayError::Internal(format!("write task failed: {e}"))))
}

/// Checks a read's `If-Match` / `If-None-Match` against the object's ETag (S3 clients use
/// them to make sure the ranges of one download come from one version).
fn preconditions(if_match: Option<&ETagCondition>, if_none_match: Option<&ETagCondition>, tag: &str) -> Result<()> {
    let matches = |c: &ETagCondition| c.is_any() || c.as_etag().is_some_and(|e| e.value() == tag);
    if if_match.is_some_and(|c| !matches(c)) {
        return Err(GatewayError::PreconditionFailed);
    }
    if if_none_match.is_some_and(matches) {
        return Err(GatewayError::NotModified);
    }
    Ok(())
}

fn timestamp(t: Timespec) -> Timestamp {
    let at = if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
    };
    Timestamp::from(at)
}

fn etag(s: String) -> ETag {
    ETag::Strong(s)
}

/// Characters a URL-encoded listing leaves as they are (RFC 3986 unreserved, and '/').
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Directories of a volume as the listing walks them.
struct VfsTree<'a>(&'a Vfs);

impl Tree for VfsTree<'_> {
    async fn children(&self, dir: u64) -> Result<Vec<Entry>, strata_vfs::VfsError> {
        // A directory removed since its parent was read (its last key deleted) holds nothing.
        let fh = match self.0.opendir(&ctx(), dir, true).await {
            Ok(fh) => fh,
            Err(e) if e.errno() == libc::ENOENT => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let listed = self.0.readdir(fh, 0);
        self.0.releasedir(fh);
        let mut out = Vec::new();
        for (_, e) in listed? {
            if e.kind != FileType::File && e.kind != FileType::Dir {
                continue;
            }
            if e.name == b"." || e.name == b".." {
                continue;
            }
            // Names that are not UTF-8 cannot be keys.
            let Ok(name) = String::from_utf8(e.name) else { continue };
            let attr = match e.attr {
                Some(a) => a,
                None => match self.0.getattr(e.ino).await {
                    Ok(a) => a,
                    Err(e) if e.errno() == libc::ENOENT => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push(Entry { name, ino: e.ino, dir: e.kind == FileType::Dir, size: attr.size, mtime: attr.mtime });
        }
        Ok(out)
    }
}

fn parts_of(m: Option<CompletedMultipartUpload>) -> Vec<(i32, String)> {
    m.and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.part_number.unwrap_or(0), p.e_tag.map(|e| e.value().to_string()).unwrap_or_default()))
        .collect()
}

fn query(
    prefix: Option<String>,
    delimiter: Option<String>,
    after: Option<Marker>,
    max_keys: Option<i32>,
) -> Result<Query> {
    let max = match max_keys {
        Some(n) if n < 0 => return Err(GatewayError::InvalidArgument("max-keys must not be negative".into())),
        Some(n) => (n as usize).min(1000),
        None => 1000,
    };
    Ok(Query { prefix: prefix.unwrap_or_default(), delimiter: delimiter.unwrap_or_default(), after, max })
}

/// A page of a listing as S3 shows it.
struct Listing {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    truncated: bool,
    next: Option<Marker>,
}

async fn listing(vfs: &Vfs, q: &Query, url: bool) -> Result<Listing> {
    let page = list::page(&VfsTree(vfs), vfs.root(), q).await?;
    let enc = |s: String| if url { url_encode(&s) } else { s };
    let next = if page.truncated { page.items.last().map(Item::marker) } else { None };
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for item in page.items {
        match item {
            Item::Object { key, entry } => contents.push(Object {
                key: Some(enc(key)),
                size: Some(entry.size as i64),
                last_modified: Some(timestamp(entry.mtime)),
                e_tag: Some(etag(objects::etag_of(vfs, entry.ino, entry.size, entry.mtime).await)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            }),
            Item::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(enc(p)) }),
        }
    }
    Ok(Listing { contents, prefixes, truncated: page.truncated, next })
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let token = self.token(&req)?;
        let vols = self.att.list_volumes(&token).await.map_err(GatewayError::Vfs)?;
        let buckets = vols
            .into_iter()
            .map(|v| Bucket {
                name: Some(v.name),
                creation_date: Some(timestamp(Timespec { sec: v.created_sec, nsec: 0 })),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let token = self.token(&req)?;
        self.volume(&token, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let token = self.token(&req)?;
        self.volume(&token, &req.input.bucket).await?;
        // S3 answers an empty constraint for us-east-1.
        let location_constraint =
            (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let segs = split_key(&i.key)?;
        // An overwrite between the lookup and the read of the ETag destroys the looked-up
        // inode: look the key up again.
        let mut attempt = 0;
        let (a, tag, meta) = loop {
            let (ino, a) = objects::resolve_object(&vfs, &i.key, &segs).await?;
            match objects::recorded_live(&vfs, ino, a.size, a.mtime).await {
                Some((tag, meta)) => break (a, tag, meta),
                None if attempt < 10 => attempt += 1,
                None => return Err(GatewayError::NoSuchKey(i.key.clone()).into()),
            }
        };
        preconditions(i.if_match.as_ref(), i.if_none_match.as_ref(), &tag)?;
        let (len, content_range) = match &i.range {
            Some(r) => {
                let got = r.check(a.size).map_err(|_| GatewayError::InvalidRange(a.size))?;
                (got.end - got.start, Some(format!("bytes {}-{}/{}", got.start, got.end - 1, a.size)))
            }
            None => (a.size, None),
        };
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(tag)),
            last_modified: Some(timestamp(a.mtime)),
            metadata: meta.user_map(),
            content_type: meta.content_type,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let segs = split_key(&i.key)?;
        let (ino, a, fh) = objects::open_object(&vfs, &i.key, &segs).await?;
        let (tag, meta) = objects::recorded(&vfs, ino, a.size, a.mtime).await;
        let checked =
            preconditions(i.if_match.as_ref(), i.if_none_match.as_ref(), &tag).and_then(|()| match &i.range {
                Some(r) => {
                    let got = r.check(a.size).map_err(|_| GatewayError::InvalidRange(a.size))?;
                    Ok((got.start, got.end, Some(format!("bytes {}-{}/{}", got.start, got.end - 1, a.size))))
                }
                None => Ok((0, a.size, None)),
            });
        let (from, to, content_range) = match checked {
            Ok(c) => c,
            Err(e) => {
                objects::close(&vfs, fh).await;
                return Err(e.into());
            }
        };
        let e_tag = Some(etag(tag));
        let rx = objects::stream_open(vfs, fh, from, to);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(rx)),
            content_length: Some((to - from) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag,
            last_modified: Some(timestamp(a.mtime)),
            metadata: meta.user_map(),
            content_type: meta.content_type,
            ..Default::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        self.check_size(i.content_length)?;
        split_key(&i.key)?;
        let meta = ObjectMeta::new(i.content_type, i.metadata)?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let (tag, size) = self.store(vfs, i.key.clone(), i.body, i.content_md5.clone(), meta).await?;
        tracing::debug!(bucket = %i.bucket, key = %i.key, size, "put");
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag(tag)), ..Default::default() }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &i.copy_source else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
        };
        split_key(&i.key)?;
        let src_segs = split_key(src_key)?;
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let new_meta = if replace { Some(ObjectMeta::new(i.content_type.clone(), i.metadata.clone())?) } else { None };
        let src = self.volume(&token, src_bucket).await?;
        let dst = self.volume(&token, &i.bucket).await?;
        let (ino, a, fh) = objects::open_object(&src, src_key, &src_segs).await?;
        if a.size > self.limits.max_object {
            objects::close(&src, fh).await;
            return Err(GatewayError::TooLarge(self.limits.max_object).into());
        }
        let meta = match new_meta {
            Some(m) => m,
            None => objects::recorded(&src, ino, a.size, a.mtime).await.1,
        };
        let rx = objects::stream_open(src, fh, 0, a.size);
        let (tag, _) = self.store(dst.clone(), i.key.clone(), Some(StreamingBlob::wrap(rx)), None, meta).await?;
        let (_, new) = objects::resolve_object(&dst, &i.key, &split_key(&i.key)?).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(tag)),
                last_modified: Some(timestamp(new.mtime)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let segs = split_key(&i.key)?;
        objects::remove_object(&vfs, &segs).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in i.delete.objects {
            let res = match split_key(&o.key) {
                Ok(segs) => objects::remove_object(&vfs, &segs).await,
                Err(e) => Err(e.into()),
            };
            match res {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject { key: Some(o.key), ..Default::default() }),
                Err(e) => {
                    let e = S3Error::from(e);
                    errors.push(s3s::dto::Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(o.key),
                        message: e.message().map(str::to_string),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let token = self.token(&req)?;
        let i = req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let after = match (&i.continuation_token, &i.start_after) {
            (Some(t), _) => Some(
                Marker::from_token(t)
                    .ok_or_else(|| GatewayError::InvalidArgument("the continuation token is not valid".into()))?,
            ),
            (None, Some(s)) => Some(Marker { key: s.clone(), is_prefix: false }),
            (None, None) => None,
        };
        let q = query(i.prefix.clone(), i.delimiter.clone(), after, i.max_keys)?;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let l = listing(&vfs, &q, url).await?;
        let enc = |s: String| if url { url_encode(&s) } else { s };
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(q.prefix)),
            delimiter: i.delimiter.map(enc),
            max_keys: Some(q.max as i32),
            key_count: Some((l.contents.len() + l.prefixes.len()) as i32),
            continuation_token: i.continuation_token,
            next_continuation_token: l.next.map(|m| m.token()),
            is_truncated: Some(l.truncated),
            start_after: i.start_after.map(enc),
            encoding_type: i.encoding_type,
            contents: Some(l.contents),
            common_prefixes: Some(l.prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let delimiter = i.delimiter.clone().unwrap_or_default();
        // Version 1 resumes at a plain marker string: a common prefix returned last comes back
        // as the marker, and every key under it must then be skipped.
        let after = i
            .marker
            .clone()
            .filter(|m| !m.is_empty())
            .map(|m| Marker { is_prefix: list::rollup(&prefix, &delimiter, &m).is_some_and(|cp| cp == m), key: m });
        let q = query(i.prefix.clone(), i.delimiter.clone(), after, i.max_keys)?;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let l = listing(&vfs, &q, url).await?;
        let enc = |s: String| if url { url_encode(&s) } else { s };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(q.prefix)),
            delimiter: i.delimiter.map(enc),
            marker: i.marker.map(enc),
            next_marker: l.next.filter(|_| !delimiter.is_empty()).map(|m| enc(m.key)),
            max_keys: Some(q.max as i32),
            is_truncated: Some(l.truncated),
            encoding_type: i.encoding_type,
            contents: Some(l.contents),
            common_prefixes: Some(l.prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        split_key(&i.key)?;
        let meta = ObjectMeta::new(i.content_type, i.metadata)?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let id = multipart::create(&vfs, &i.key, &meta).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        self.check_size(i.content_length)?;
        split_key(&i.key)?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let limit = self.limits.max_object;
        let (key, id, number, md5) = (i.key.clone(), i.upload_id.clone(), i.part_number, i.content_md5.clone());
        let body = i.body.unwrap_or_else(empty_body);
        let tag =
            detached(async move { multipart::upload_part(&vfs, &key, &id, number, body, limit, md5.as_deref()).await })
                .await?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag(tag)), ..Default::default() }))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let marker = i.part_number_marker.unwrap_or(0);
        let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let all: Vec<_> = multipart::list_parts(&vfs, &i.key, &i.upload_id)
            .await?
            .into_iter()
            .filter(|p| p.number > marker)
            .collect();
        let truncated = all.len() > max;
        let shown: Vec<_> = all.into_iter().take(max).collect();
        let next = if truncated { shown.last().map(|p| p.number) } else { None };
        let parts = shown
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.number),
                e_tag: Some(etag(p.etag)),
                size: Some(p.attr.size as i64),
                last_modified: Some(timestamp(p.attr.mtime)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        split_key(&i.key)?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let wanted = parts_of(i.multipart_upload);
        let (key, id, n) = (i.key.clone(), i.upload_id.clone(), wanted.len());
        let tag = detached(async move {
            let segs = split_key(&key)?;
            multipart::complete(&vfs, &key, &segs, &id, &wanted).await
        })
        .await?;
        tracing::debug!(bucket = %i.bucket, key = %i.key, parts = n, "multipart upload completed");
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(etag(tag)),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let key_marker = i.key_marker.clone().unwrap_or_default();
        let id_marker = i.upload_id_marker.clone().unwrap_or_default();
        // After the markers: keys past the key marker, or the same key with a later id.
        let after = |u: &multipart::UploadInfo| match (key_marker.is_empty(), id_marker.is_empty()) {
            (true, _) => true,
            (false, true) => u.key > key_marker,
            (false, false) => (u.key.as_str(), u.id.as_str()) > (key_marker.as_str(), id_marker.as_str()),
        };
        let all: Vec<_> =
            multipart::list_uploads(&vfs, i.prefix.as_deref().unwrap_or("")).await?.into_iter().filter(after).collect();
        let truncated = all.len() > max;
        let shown: Vec<_> = all.into_iter().take(max).collect();
        let (next_key, next_id) = match shown.last() {
            Some(u) if truncated => (Some(u.key.clone()), Some(u.id.clone())),
            _ => (None, None),
        };
        let uploads = shown
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.id),
                initiated: Some(timestamp(u.initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        multipart::abort(&vfs, &i.key, &i.upload_id).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b/c+d%"), "a%20b/c%2Bd%25");
        assert_eq!(url_encode("ü"), "%C3%BC");
    }

    #[test]
    fn conditions() {
        let tag = |t: &str| ETagCondition::ETag(ETag::Strong(t.into()));
        assert!(preconditions(None, None, "abc").is_ok());
        assert!(preconditions(Some(&tag("abc")), None, "abc").is_ok());
        assert!(preconditions(Some(&ETagCondition::Any), None, "abc").is_ok());
        assert!(matches!(preconditions(Some(&tag("x")), None, "abc"), Err(GatewayError::PreconditionFailed)));
        assert!(matches!(preconditions(None, Some(&tag("abc")), "abc"), Err(GatewayError::NotModified)));
        assert!(preconditions(None, Some(&tag("x")), "abc").is_ok());
    }

    #[test]
    fn timestamps() {
        let t = timestamp(Timespec { sec: 1, nsec: 5 });
        let st: SystemTime = UNIX_EPOCH + Duration::new(1, 5);
        assert_eq!(format!("{t:?}"), format!("{:?}", Timestamp::from(st)));
    }
}
