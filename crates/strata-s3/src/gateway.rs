//! The S3 operations: s3s's trait implemented over the volumes the signing token may see.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use s3s::dto::*;
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use strata_types::{FileIdentity, FileType, Timespec};
use strata_vfs::Vfs;

use crate::attach::Attachments;
use crate::auth::{Keyring, Token};
use crate::checksum::{self, Algo, Wanted};
use crate::conditions::{self, Conditions, Kind, WriteIf};
use crate::error::{GatewayError, Result, bucket_error};
use crate::keys::split_key;
use crate::list::{self, Entry, Item, Marker, Query, Tree};
use crate::meta::{Headers, ObjectMeta, StoredChecksum, check_tags, parse_tagging};
use crate::multipart;
use crate::objects::{self, Replace, ctx};

/// Limits and defaults of the gateway.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body of one PUT or one part.
    pub max_object: u64,
    /// Multipart uploads untouched for this long are removed (with their parts).
    pub multipart_expiry: Duration,
    /// Capacity of a volume made by CreateBucket (0: none, unless the scope's policy sets a
    /// maximum size, which it then gets).
    pub bucket_capacity: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_object: 5 << 30, multipart_expiry: Duration::from_secs(7 * 24 * 3600), bucket_capacity: 0 }
    }
}

/// Most keys one DeleteObjects may name, as in S3.
pub const MAX_DELETE_KEYS: usize = 1000;

/// The S3 service over Strata volumes.
pub struct Gateway {
    keys: Arc<Keyring>,
    att: Arc<Attachments>,
    limits: Limits,
    region: String,
}

/// What a write checks its body against.
#[derive(Default)]
struct BodyChecks {
    md5: Option<String>,
    wanted: Option<Wanted>,
    trailers: Option<s3s::TrailingHeaders>,
}

/// An object as a read found it.
struct Found {
    ino: u64,
    attr: strata_types::Attr,
    tag: String,
    meta: ObjectMeta,
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

    /// Writes a body to a hidden file next to the key, checks it, and renames it into place if
    /// the key's current object is what `cond` allows.
    async fn store(
        &self,
        vfs: Arc<Vfs>,
        key: String,
        body: Option<StreamingBlob>,
        checks: BodyChecks,
        mut meta: ObjectMeta,
        cond: WriteIf,
    ) -> Result<(String, u64, Option<StoredChecksum>)> {
        let limit = self.limits.max_object;
        detached(async move {
            let segs = split_key(&key)?;
            let replace = replacing(&vfs, &key, &segs, &cond).await?;
            let (name, dirs) = segs.split_last().ok_or_else(|| GatewayError::NoSuchKey(key.clone()))?;
            let tmp = objects::temp_name("put");
            let (made, file) = objects::create_in_dirs(&vfs, dirs, &tmp).await?;
            let dir = made.ino;
            let algo = checks.wanted.as_ref().map(|w| w.algo);
            let written = async {
                let w = objects::write_body(&vfs, file, body.unwrap_or_else(empty_body), limit, algo).await?;
                let verdict = objects::check_md5(checks.md5.as_deref(), &w.md5).and_then(|()| {
                    match (&checks.wanted, &w.checksum) {
                        (Some(want), Some(got)) => checksum::verify(want, got, checks.trailers.as_ref()),
                        _ => Ok(()),
                    }
                });
                if let Err(e) = verdict {
                    objects::discard(&vfs, dir, &tmp).await;
                    return Err(e);
                }
                meta.checksum =
                    algo.zip(w.checksum.clone()).map(|(algo, value)| StoredChecksum { algo, value, composite: false });
                let etag = objects::hex_md5(&w.md5);
                objects::publish(&vfs, dir, &tmp, name, &w, &etag, &meta, replace).await?;
                Ok((etag, w.size, meta.checksum.clone()))
            }
            .await;
            if written.is_err() {
                made.undo(&vfs, dirs).await;
            }
            written
        })
        .await
    }

    /// Looks an object up with its ETag and metadata. An overwrite between the lookup and the
    /// read of the ETag destroys the looked-up inode: then the key is looked up again.
    async fn find(&self, vfs: &Vfs, key: &str) -> Result<Found> {
        let segs = split_key(key)?;
        find(vfs, key, &segs).await
    }
}

async fn find(vfs: &Vfs, key: &str, segs: &[&str]) -> Result<Found> {
    for _ in 0..10 {
        let (ino, attr) = objects::resolve_object(vfs, key, segs).await?;
        if let Some((tag, meta)) = objects::recorded_live(vfs, ino, attr.size, attr.mtime).await {
            return Ok(Found { ino, attr, tag, meta });
        }
    }
    Err(GatewayError::NoSuchKey(key.to_string()))
}

/// What a conditional write may replace: checked here first (so a refused write does not
/// upload its body for nothing) and again by the server in the rename that publishes it.
async fn replacing(vfs: &Vfs, key: &str, segs: &[&str], cond: &WriteIf) -> Result<Replace> {
    match cond {
        WriteIf::Always => Ok(Replace::Any),
        WriteIf::Absent => match objects::resolve(vfs, segs).await? {
            Some(_) => Err(GatewayError::PreconditionFailed),
            None => Ok(Replace::Nothing),
        },
        WriteIf::Matches(tag) => {
            // No object matches no ETag: 412, as RFC 9110 has it for a missing resource.
            let f = find(vfs, key, segs).await.map_err(|e| match e {
                GatewayError::NoSuchKey(_) => GatewayError::PreconditionFailed,
                e => e,
            })?;
            if tag.as_deref().is_some_and(|t| t != f.tag) {
                return Err(GatewayError::PreconditionFailed);
            }
            Ok(Replace::Exactly(FileIdentity::of(f.ino, &f.attr)))
        }
        WriteIf::NotMatching(tag) => match find(vfs, key, segs).await {
            Ok(f) if f.tag == *tag => Err(GatewayError::PreconditionFailed),
            Ok(f) => Ok(Replace::Exactly(FileIdentity::of(f.ino, &f.attr))),
            Err(GatewayError::NoSuchKey(_)) => Ok(Replace::Nothing),
            Err(e) => Err(e),
        },
    }
}

/// Refuses what S3 has and this gateway does not do, rather than ignoring it.
fn refuse_unsupported(what: &[(&str, bool)]) -> Result<()> {
    match what.iter().find(|(_, sent)| *sent) {
        Some((name, _)) => Err(GatewayError::NotImplemented(format!("{name} is not supported by this gateway"))),
        None => Ok(()),
    }
}

/// Canned ACLs: only `private` (the owner's full control) is what a bucket or object has.
fn refuse_acl(acl: Option<&str>, grants: bool) -> Result<()> {
    if acl.is_some_and(|a| a != "private") || grants {
        return Err(GatewayError::NotImplemented(
            "ACLs other than \"private\" are not supported: access is decided by Strata tokens and scopes".into(),
        ));
    }
    Ok(())
}

fn http_date_of(t: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

/// The checksum fields of an answer: the stored checksum when `mode` asks for it.
fn checksum_out(meta: &ObjectMeta, enabled: bool) -> (Checksum, Option<ChecksumType>) {
    match (&meta.checksum, enabled) {
        (Some(c), true) => {
            let value = if c.composite { format!("{}-{}", c.value, meta.parts_count()) } else { c.value.clone() };
            let kind = if c.composite { ChecksumType::COMPOSITE } else { ChecksumType::FULL_OBJECT };
            (checksum::set(c.algo, value), Some(ChecksumType::from_static(kind)))
        }
        _ => (Checksum::default(), None),
    }
}

fn mode_enabled(m: Option<&ChecksumMode>) -> bool {
    m.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED))
}

/// An `If-Match` / `If-None-Match` header of a request whose input does not carry it
/// (CopyObject's destination).
fn etag_header(headers: &hyper::HeaderMap, name: &str) -> Option<ETagCondition> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    if v == "*" {
        return Some(ETagCondition::Any);
    }
    Some(ETagCondition::ETag(ETag::Strong(v.trim_start_matches("W/").trim_matches('"').to_string())))
}

/// The byte range of a read: a part, a `Range`, or everything.
fn read_range(size: u64, meta: &ObjectMeta, part: Option<i32>, range: Option<&Range>) -> Result<(u64, u64, bool)> {
    match (part, range) {
        (Some(_), Some(_)) => {
            Err(GatewayError::InvalidRequest("Cannot specify both Range header and partNumber query parameter".into()))
        }
        (Some(n), None) => {
            let count = meta.parts_count().max(1);
            if n < 1 || n as u32 > count {
                return Err(GatewayError::InvalidPartNumber(count as i32));
            }
            match meta.part_range(n as u32) {
                Some((from, to)) => Ok((from, to.min(size), true)),
                None => Ok((0, size, false)),
            }
        }
        (None, Some(r)) => {
            let got = r.check(size).map_err(|_| GatewayError::InvalidRange(size))?;
            Ok((got.start, got.end, true))
        }
        (None, None) => Ok((0, size, false)),
    }
}

/// Objects have one version, `null`: any other is not there.
fn no_version(v: Option<&str>) -> Result<()> {
    match v {
        Some(v) if v != "null" => Err(GatewayError::NoSuchVersion(v.to_string())),
        _ => Ok(()),
    }
}

/// `x-amz-expected-bucket-owner`: the account of a bucket is the token that sees it, so any
/// other expected owner is refused as S3 refuses a bucket of another account.
fn expected_owner(token: &Token, expected: Option<&str>) -> Result<()> {
    match expected {
        Some(e) if e != token.id => Err(GatewayError::AccessDenied(format!("the bucket is not owned by {e:?}"))),
        _ => Ok(()),
    }
}

fn owner(token: &Token) -> Owner {
    Owner { id: Some(token.id.clone()), display_name: Some(token.id.clone()) }
}

fn full_control(token: &Token) -> Grant {
    Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::CANONICAL_USER),
            id: Some(token.id.clone()),
            display_name: Some(token.id.clone()),
            email_address: None,
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }
}

/// S3's bucket naming rules (general purpose buckets).
pub fn check_bucket_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(GatewayError::InvalidBucketName(format!("the bucket name {name:?} {why}")));
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("may hold only lowercase letters, digits, '.' and '-'");
    }
    let first_last = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !first_last(name.as_bytes()[0]) || !first_last(name.as_bytes()[name.len() - 1]) {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("must not have adjacent periods or a period next to a hyphen");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    if name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        return bad("uses a prefix or suffix S3 reserves");
    }
    Ok(())
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

fn parts_of(m: Option<CompletedMultipartUpload>) -> Vec<multipart::ListedPart> {
    m.and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let c = Checksum {
                checksum_crc32: p.checksum_crc32,
                checksum_crc32c: p.checksum_crc32c,
                checksum_sha1: p.checksum_sha1,
                checksum_sha256: p.checksum_sha256,
                checksum_crc64nvme: p.checksum_crc64nvme,
                ..Default::default()
            };
            multipart::ListedPart {
                number: p.part_number.unwrap_or(0),
                etag: p.e_tag.map(|e| e.value().to_string()).unwrap_or_default(),
                checksum: checksum::ALL.into_iter().find_map(|a| checksum::get(&c, a).map(|v| (a, v))),
            }
        })
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
        let i = &req.input;
        let max = match i.max_buckets {
            Some(n) if !(1..=10_000).contains(&n) => {
                return Err(GatewayError::InvalidArgument("max-buckets must be between 1 and 10000".into()).into());
            }
            Some(n) => n as usize,
            None => usize::MAX,
        };
        let mut vols = self.att.list_volumes(&token).await.map_err(GatewayError::Vfs)?;
        vols.sort_by(|a, b| a.name.cmp(&b.name));
        let after = i.continuation_token.clone().filter(|t| !t.is_empty());
        let prefix = i.prefix.clone().unwrap_or_default();
        let mut shown: Vec<_> = vols
            .into_iter()
            .filter(|v| v.name.starts_with(&prefix) && after.as_ref().is_none_or(|a| v.name > *a))
            .collect();
        let truncated = shown.len() > max;
        shown.truncate(max);
        let continuation_token = if truncated { shown.last().map(|v| v.name.clone()) } else { None };
        let buckets = shown
            .into_iter()
            .map(|v| Bucket {
                name: Some(v.name),
                creation_date: Some(timestamp(Timespec { sec: v.created_sec, nsec: 0 })),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner(&token)),
            continuation_token,
            prefix: i.prefix.clone(),
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        check_bucket_name(&i.bucket)?;
        if self.att.is_alias(&i.bucket) {
            return Err(GatewayError::BucketExists { name: i.bucket.clone(), own: false }.into());
        }
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write.is_some()
            || i.grant_write_acp.is_some();
        refuse_acl(i.acl.as_ref().map(|a| a.as_str()), grants)?;
        refuse_unsupported(&[
            ("object lock", i.object_lock_enabled_for_bucket == Some(true)),
            // Only the bucket owner owns objects here (S3's default, BucketOwnerEnforced).
            (
                "object ownership other than BucketOwnerEnforced",
                i.object_ownership.as_ref().is_some_and(|o| o.as_str() != ObjectOwnership::BUCKET_OWNER_ENFORCED),
            ),
        ])?;
        if let Some(loc) = i.create_bucket_configuration.as_ref().and_then(|c| c.location_constraint.as_ref())
            && loc.as_str() != self.region
        {
            return Err(s3_error!(
                InvalidLocationConstraint,
                "this gateway serves region {:?}, not {:?}",
                self.region,
                loc.as_str()
            ));
        }
        match self.att.create_volume(&token, &i.bucket, self.limits.bucket_capacity).await {
            Ok(v) => tracing::info!(bucket = %i.bucket, class = %v.class, capacity = v.capacity, "created bucket"),
            Err(e) if e.errno() == libc::EEXIST => {
                let own = self.att.list_volumes(&token).await.is_ok_and(|vs| vs.iter().any(|v| v.name == i.bucket));
                // S3 in us-east-1 answers the owner's re-creation with 200 (elsewhere 409).
                if !(own && self.region == "us-east-1") {
                    return Err(GatewayError::BucketExists { name: i.bucket.clone(), own }.into());
                }
            }
            Err(e) if e.errno() == libc::EPERM || e.errno() == libc::EACCES => {
                return Err(GatewayError::AccessDenied(format!("cannot create bucket {:?}: {e}", i.bucket)).into());
            }
            Err(e) => return Err(GatewayError::Vfs(e).into()),
        }
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{}", i.bucket)) }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let token = self.token(&req)?;
        let bucket = req.input.bucket.clone();
        if self.att.is_alias(&bucket) {
            return Err(GatewayError::AccessDenied(format!(
                "bucket {bucket:?} is a read-only view given to the gateway with --bucket; it cannot be deleted"
            ))
            .into());
        }
        let name = bucket.clone();
        self.att
            .delete_volume(&token, &bucket, |vfs| async move {
                let q = Query { max: 1, ..Default::default() };
                let page = list::page(&VfsTree(&vfs), vfs.root(), &q).await.map_err(GatewayError::Vfs)?;
                if page.items.is_empty() { Ok(()) } else { Err(GatewayError::BucketNotEmpty(name)) }
            })
            .await?;
        tracing::info!(bucket = %bucket, "deleted bucket");
        Ok(S3Response::new(DeleteBucketOutput {}))
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

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let token = self.token(&req)?;
        self.volume(&token, &req.input.bucket).await?;
        // No status: versioning was never enabled.
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn get_bucket_acl(&self, req: S3Request<GetBucketAclInput>) -> S3Result<S3Response<GetBucketAclOutput>> {
        let token = self.token(&req)?;
        self.volume(&token, &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketAclOutput { owner: Some(owner(&token)), grants: Some(vec![full_control(&token)]) }))
    }

    async fn get_object_acl(&self, req: S3Request<GetObjectAclInput>) -> S3Result<S3Response<GetObjectAclOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        self.find(&vfs, &i.key).await?;
        Ok(S3Response::new(GetObjectAclOutput {
            owner: Some(owner(&token)),
            grants: Some(vec![full_control(&token)]),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        expected_owner(&token, i.expected_bucket_owner.as_deref())?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let f = self.find(&vfs, &i.key).await?;
        let cond = Conditions {
            if_match: i.if_match.clone(),
            if_none_match: i.if_none_match.clone(),
            if_modified_since: i.if_modified_since.clone(),
            if_unmodified_since: i.if_unmodified_since.clone(),
        };
        cond.check(Kind::Read, &f.tag, f.attr.mtime)?;
        let size = f.attr.size;
        let (from, to, partial) = read_range(size, &f.meta, i.part_number, i.range.as_ref())?;
        let content_range = partial.then(|| format!("bytes {}-{}/{size}", from, to.saturating_sub(1)));
        let whole = !partial || (i.part_number.is_some() && f.meta.parts.is_empty());
        let (sum, checksum_type) = checksum_out(&f.meta, mode_enabled(i.checksum_mode.as_ref()) && whole);
        let m = &f.meta;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some((to - from) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(f.tag.clone())),
            last_modified: Some(timestamp(f.attr.mtime)),
            metadata: m.user_map(),
            content_type: Some(m.content_type_or_default()),
            cache_control: m.headers.cache_control.clone(),
            content_disposition: m.headers.content_disposition.clone(),
            content_encoding: m.headers.content_encoding.clone(),
            content_language: m.headers.content_language.clone(),
            expires: m.headers.expires.as_deref().and_then(parse_http_date),
            parts_count: i.part_number.and(Some(m.parts_count() as i32)).filter(|n| *n > 0),
            checksum_crc32: sum.checksum_crc32,
            checksum_crc32c: sum.checksum_crc32c,
            checksum_sha1: sum.checksum_sha1,
            checksum_sha256: sum.checksum_sha256,
            checksum_crc64nvme: sum.checksum_crc64nvme,
            checksum_type,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        expected_owner(&token, i.expected_bucket_owner.as_deref())?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let segs = split_key(&i.key)?;
        let (ino, a, fh) = objects::open_object(&vfs, &i.key, &segs).await?;
        let (tag, meta) = objects::recorded(&vfs, ino, a.size, a.mtime).await;
        let cond = Conditions {
            if_match: i.if_match.clone(),
            if_none_match: i.if_none_match.clone(),
            if_modified_since: i.if_modified_since.clone(),
            if_unmodified_since: i.if_unmodified_since.clone(),
        };
        let checked = cond
            .check(Kind::Read, &tag, a.mtime)
            .and_then(|()| read_range(a.size, &meta, i.part_number, i.range.as_ref()));
        let (from, to, partial) = match checked {
            Ok(c) => c,
            Err(e) => {
                objects::close(&vfs, fh).await;
                return Err(e.into());
            }
        };
        let content_range = partial.then(|| format!("bytes {}-{}/{}", from, to.saturating_sub(1), a.size));
        let whole = !partial || (i.part_number.is_some() && meta.parts.is_empty());
        let (sum, checksum_type) = checksum_out(&meta, mode_enabled(i.checksum_mode.as_ref()) && whole);
        let rx = objects::stream_open(vfs, fh, from, to);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(rx)),
            content_length: Some((to - from) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(tag)),
            last_modified: Some(timestamp(a.mtime)),
            metadata: meta.user_map(),
            content_type: Some(meta.content_type_or_default()),
            cache_control: meta.headers.cache_control.clone(),
            content_disposition: meta.headers.content_disposition.clone(),
            content_encoding: meta.headers.content_encoding.clone(),
            content_language: meta.headers.content_language.clone(),
            expires: meta.headers.expires.as_deref().and_then(parse_http_date),
            parts_count: i.part_number.and(Some(meta.parts_count() as i32)).filter(|n| *n > 0),
            tag_count: (!meta.tags.is_empty()).then_some(meta.tags.len() as i32),
            checksum_crc32: sum.checksum_crc32,
            checksum_crc32c: sum.checksum_crc32c,
            checksum_sha1: sum.checksum_sha1,
            checksum_sha256: sum.checksum_sha256,
            checksum_crc64nvme: sum.checksum_crc64nvme,
            checksum_type,
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let f = self.find(&vfs, &i.key).await?;
        let tag_set = f.meta.tags.into_iter().map(|(k, v)| Tag { key: Some(k), value: Some(v) }).collect();
        Ok(S3Response::new(GetObjectTaggingOutput { tag_set, version_id: None }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        no_version(i.version_id.as_deref())?;
        let tags: Vec<(String, String)> =
            i.tagging.tag_set.into_iter().map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default())).collect();
        check_tags(&tags)?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let f = self.find(&vfs, &i.key).await?;
        objects::rewrite_meta(&vfs, f.ino, &f.attr, |m| m.tags = tags).await?;
        Ok(S3Response::new(PutObjectTaggingOutput { version_id: None }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let f = self.find(&vfs, &i.key).await?;
        objects::rewrite_meta(&vfs, f.ino, &f.attr, |m| m.tags.clear()).await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput { version_id: None }))
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let f = self.find(&vfs, &i.key).await?;
        // One header may list several, comma-separated.
        let wants = |what: &str| {
            i.object_attributes.iter().flat_map(|a| a.as_str().split(',')).any(|a| a.trim().eq_ignore_ascii_case(what))
        };
        let (sum, _) = checksum_out(&f.meta, true);
        let checksum = (wants(ObjectAttributes::CHECKSUM) && f.meta.checksum.is_some()).then(|| {
            let mut c = sum;
            c.checksum_type = f.meta.checksum.as_ref().map(|c| {
                ChecksumType::from_static(if c.composite { ChecksumType::COMPOSITE } else { ChecksumType::FULL_OBJECT })
            });
            c
        });
        let object_parts = (wants(ObjectAttributes::OBJECT_PARTS) && !f.meta.parts.is_empty()).then(|| {
            let count = f.meta.parts_count() as i32;
            let marker = i.part_number_marker.unwrap_or(0).max(0);
            let max = i.max_parts.unwrap_or(1000).clamp(0, 1000);
            let shown: Vec<i32> = ((marker + 1)..=count).take(max as usize).collect();
            let truncated = shown.last().is_some_and(|l| *l < count);
            let parts = shown
                .iter()
                .map(|n| ObjectPart {
                    part_number: Some(*n),
                    size: f.meta.part_range(*n as u32).map(|(a, b)| (b - a) as i64),
                    ..Default::default()
                })
                .collect();
            GetObjectAttributesParts {
                total_parts_count: Some(count),
                part_number_marker: Some(marker),
                next_part_number_marker: shown.last().copied().filter(|_| truncated),
                max_parts: Some(max),
                is_truncated: Some(truncated),
                parts: Some(parts),
            }
        });
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: wants(ObjectAttributes::ETAG).then(|| etag(f.tag.clone())),
            last_modified: Some(timestamp(f.attr.mtime)),
            object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(f.attr.size as i64),
            storage_class: wants(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            checksum,
            object_parts,
            ..Default::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let token = self.token(&req)?;
        let wanted = checksum::wanted(&req.headers, None)?;
        let trailers = req.trailing_headers.clone();
        let i = req.input;
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write_acp.is_some();
        refuse_acl(i.acl.as_ref().map(|a| a.as_str()), grants)?;
        refuse_unsupported(&[
            ("server-side encryption", i.server_side_encryption.is_some() || i.sse_customer_algorithm.is_some()),
            ("object lock", i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some()),
            ("website redirects", i.website_redirect_location.is_some()),
            ("appending writes (x-amz-write-offset-bytes)", i.write_offset_bytes.is_some()),
            (
                "storage classes other than STANDARD",
                i.storage_class.as_ref().is_some_and(|c| c.as_str() != StorageClass::STANDARD),
            ),
        ])?;
        let cond = conditions::write_if(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        expected_owner(&token, i.expected_bucket_owner.as_deref())?;
        self.check_size(i.content_length)?;
        split_key(&i.key)?;
        let mut meta = ObjectMeta::new(i.content_type, i.metadata)?.with_headers(Headers {
            cache_control: i.cache_control,
            content_disposition: i.content_disposition,
            content_encoding: i.content_encoding,
            content_language: i.content_language,
            expires: i.expires.as_ref().and_then(http_date_of),
        });
        meta.tags = i.tagging.as_deref().map(parse_tagging).transpose()?.unwrap_or_default();
        let vfs = self.volume(&token, &i.bucket).await?;
        let checks = BodyChecks { md5: i.content_md5.clone(), wanted, trailers };
        let (tag, size, sum) = self.store(vfs, i.key.clone(), i.body, checks, meta, cond).await?;
        tracing::debug!(bucket = %i.bucket, key = %i.key, size, "put");
        let stored = ObjectMeta { checksum: sum, ..Default::default() };
        let (sum, checksum_type) = checksum_out(&stored, true);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(tag)),
            checksum_crc32: sum.checksum_crc32,
            checksum_crc32c: sum.checksum_crc32c,
            checksum_sha1: sum.checksum_sha1,
            checksum_sha256: sum.checksum_sha256,
            checksum_crc64nvme: sum.checksum_crc64nvme,
            checksum_type,
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let token = self.token(&req)?;
        let dest_cond = conditions::write_if(
            etag_header(&req.headers, "if-match").as_ref(),
            etag_header(&req.headers, "if-none-match").as_ref(),
        )?;
        let i = req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, version_id } = &i.copy_source else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
        };
        no_version(version_id.as_deref())?;
        expected_owner(&token, i.expected_bucket_owner.as_deref())?;
        expected_owner(&token, i.expected_source_bucket_owner.as_deref())?;
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write_acp.is_some();
        refuse_acl(i.acl.as_ref().map(|a| a.as_str()), grants)?;
        refuse_unsupported(&[
            ("server-side encryption", i.server_side_encryption.is_some() || i.sse_customer_algorithm.is_some()),
            ("object lock", i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some()),
            ("website redirects", i.website_redirect_location.is_some()),
        ])?;
        split_key(&i.key)?;
        let src_segs = split_key(src_key)?;
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && **src_bucket == *i.bucket && **src_key == *i.key && i.checksum_algorithm.is_none() {
            return Err(GatewayError::InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without changing the \
                 object's metadata, storage class, website redirect location or encryption attributes."
                    .into(),
            )
            .into());
        }
        let new_meta = if replace {
            Some(ObjectMeta::new(i.content_type.clone(), i.metadata.clone())?.with_headers(Headers {
                cache_control: i.cache_control.clone(),
                content_disposition: i.content_disposition.clone(),
                content_encoding: i.content_encoding.clone(),
                content_language: i.content_language.clone(),
                expires: i.expires.as_ref().and_then(http_date_of),
            }))
        } else {
            None
        };
        let src = self.volume(&token, src_bucket).await?;
        let dst = self.volume(&token, &i.bucket).await?;
        let (ino, a, fh) = objects::open_object(&src, src_key, &src_segs).await?;
        let (src_tag, src_meta) = objects::recorded(&src, ino, a.size, a.mtime).await;
        let cond = Conditions {
            if_match: i.copy_source_if_match.clone(),
            if_none_match: i.copy_source_if_none_match.clone(),
            if_modified_since: i.copy_source_if_modified_since.clone(),
            if_unmodified_since: i.copy_source_if_unmodified_since.clone(),
        };
        let mut checked = cond.check(Kind::CopySource, &src_tag, a.mtime);
        if checked.is_ok() && a.size > self.limits.max_object {
            checked = Err(GatewayError::TooLarge(self.limits.max_object));
        }
        if let Err(e) = checked {
            objects::close(&src, fh).await;
            return Err(e.into());
        }
        let declared = i.checksum_algorithm.as_ref().map(|a| a.as_str().to_string());
        let algo = match declared {
            Some(d) => Some(
                Algo::parse(&d)
                    .ok_or_else(|| GatewayError::InvalidRequest(format!("unknown checksum algorithm {d:?}")))?,
            ),
            None => src_meta.checksum.as_ref().map(|c| c.algo),
        };
        let src_tags = src_meta.tags.clone();
        let mut meta = new_meta.unwrap_or(src_meta);
        meta.tags = match i.tagging_directive.as_ref().map(|d| d.as_str()) {
            Some(TaggingDirective::REPLACE) => i.tagging.as_deref().map(parse_tagging).transpose()?.unwrap_or_default(),
            _ => src_tags,
        };
        meta.parts.clear();
        meta.upload_id = None;
        let checks = BodyChecks {
            wanted: algo.map(|algo| Wanted { algo, source: checksum::Source::Compute }),
            ..Default::default()
        };
        let rx = objects::stream_open(src, fh, 0, a.size);
        let (tag, _, sum) =
            self.store(dst.clone(), i.key.clone(), Some(StreamingBlob::wrap(rx)), checks, meta, dest_cond).await?;
        let (_, new) = objects::resolve_object(&dst, &i.key, &split_key(&i.key)?).await?;
        let (sum, checksum_type) = checksum_out(&ObjectMeta { checksum: sum, ..Default::default() }, true);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(tag)),
                last_modified: Some(timestamp(new.mtime)),
                checksum_crc32: sum.checksum_crc32,
                checksum_crc32c: sum.checksum_crc32c,
                checksum_sha1: sum.checksum_sha1,
                checksum_sha256: sum.checksum_sha256,
                checksum_crc64nvme: sum.checksum_crc64nvme,
                checksum_type,
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let token = self.token(&req)?;
        let i = &req.input;
        refuse_unsupported(&[
            ("x-amz-if-match-last-modified-time", i.if_match_last_modified_time.is_some()),
            ("x-amz-if-match-size", i.if_match_size.is_some()),
        ])?;
        no_version(i.version_id.as_deref())?;
        expected_owner(&token, i.expected_bucket_owner.as_deref())?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let segs = split_key(&i.key)?;
        let expect = match &i.if_match {
            None => None,
            Some(c) => {
                let f = find(&vfs, &i.key, &segs).await.map_err(|e| match e {
                    GatewayError::NoSuchKey(_) => GatewayError::PreconditionFailed,
                    e => e,
                })?;
                if c.as_etag().is_some_and(|e| e.value() != f.tag) {
                    return Err(GatewayError::PreconditionFailed.into());
                }
                Some(FileIdentity::of(f.ino, &f.attr))
            }
        };
        objects::remove_object(&vfs, &segs, expect).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        if i.delete.objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "a DeleteObjects request may name at most {MAX_DELETE_KEYS} keys, not {}",
                i.delete.objects.len()
            ));
        }
        let vfs = self.volume(&token, &i.bucket).await?;
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in i.delete.objects {
            let res = match split_key(&o.key) {
                Ok(segs) => match &o.e_tag {
                    None => objects::remove_object(&vfs, &segs, None).await,
                    Some(want) => match find(&vfs, &o.key, &segs).await {
                        Ok(f) if want.value() == f.tag => {
                            objects::remove_object(&vfs, &segs, Some(FileIdentity::of(f.ino, &f.attr))).await
                        }
                        Ok(_) => Err(GatewayError::PreconditionFailed),
                        Err(e) => Err(e),
                    },
                },
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
        // An empty token is no token (some clients send `continuation-token=` on the first page).
        let continuation = i.continuation_token.clone().filter(|t| !t.is_empty());
        let after = match (&continuation, &i.start_after) {
            (Some(t), _) => Some(
                Marker::from_token(t)
                    .ok_or_else(|| GatewayError::InvalidArgument("the continuation token is not valid".into()))?,
            ),
            (None, Some(s)) if !s.is_empty() => Some(Marker { key: s.clone(), is_prefix: false }),
            (None, _) => None,
        };
        let q = query(i.prefix.clone(), i.delimiter.clone(), after, i.max_keys)?;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let who = i.fetch_owner.unwrap_or(false).then(|| owner(&token));
        let mut l = listing(&vfs, &q, url).await?;
        for o in &mut l.contents {
            o.owner = who.clone();
        }
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
        let mut l = listing(&vfs, &q, url).await?;
        // Version 1 always names the owner.
        for o in &mut l.contents {
            o.owner = Some(owner(&token));
        }
        let enc = |s: String| if url { url_encode(&s) } else { s };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            // S3 encodes the keys, markers and delimiter of a version 1 listing, not its prefix
            // (and SDKs decode accordingly).
            prefix: Some(q.prefix),
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

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        let vfs = self.volume(&token, &i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let delimiter = i.delimiter.clone().unwrap_or_default();
        // Unversioned: every object is its only version, "null"; the key marker alone places a page.
        let after = i
            .key_marker
            .clone()
            .filter(|m| !m.is_empty())
            .map(|m| Marker { is_prefix: list::rollup(&prefix, &delimiter, &m).is_some_and(|cp| cp == m), key: m });
        let q = query(i.prefix.clone(), i.delimiter.clone(), after, i.max_keys)?;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let l = listing(&vfs, &q, url).await?;
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let versions = l
            .contents
            .into_iter()
            .map(|o| ObjectVersion {
                key: o.key,
                size: o.size,
                last_modified: o.last_modified,
                e_tag: o.e_tag,
                is_latest: Some(true),
                version_id: Some("null".into()),
                owner: Some(owner(&token)),
                storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let next = l.next.map(|m| enc(m.key));
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(q.prefix)),
            delimiter: i.delimiter.map(enc),
            key_marker: i.key_marker.map(enc),
            version_id_marker: i.version_id_marker,
            next_version_id_marker: next.as_ref().map(|_| "null".to_string()),
            next_key_marker: next,
            max_keys: Some(q.max as i32),
            is_truncated: Some(l.truncated),
            encoding_type: i.encoding_type,
            versions: Some(versions),
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
        let grants = i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write_acp.is_some();
        refuse_acl(i.acl.as_ref().map(|a| a.as_str()), grants)?;
        refuse_unsupported(&[
            ("server-side encryption", i.server_side_encryption.is_some() || i.sse_customer_algorithm.is_some()),
            ("object lock", i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some()),
            ("website redirects", i.website_redirect_location.is_some()),
        ])?;
        split_key(&i.key)?;
        let tags = i.tagging.as_deref().map(parse_tagging).transpose()?.unwrap_or_default();
        let algo =
            match i.checksum_algorithm.as_ref() {
                None => None,
                Some(a) => Some(Algo::parse(a.as_str()).ok_or_else(|| {
                    GatewayError::InvalidRequest(format!("unknown checksum algorithm {:?}", a.as_str()))
                })?),
            };
        let full = match i.checksum_type.as_ref().map(|t| t.as_str()) {
            None => algo.is_some_and(|a| a == Algo::Crc64Nvme),
            Some(ChecksumType::FULL_OBJECT) if algo.is_some_and(Algo::is_crc) => true,
            Some(ChecksumType::COMPOSITE) if algo.is_some_and(|a| a != Algo::Crc64Nvme) => false,
            Some(t) => {
                return Err(GatewayError::InvalidRequest(format!(
                    "checksum type {t} does not go with algorithm {:?}",
                    algo.map(Algo::name)
                ))
                .into());
            }
        };
        let mut meta = ObjectMeta::new(i.content_type, i.metadata)?.with_headers(Headers {
            cache_control: i.cache_control,
            content_disposition: i.content_disposition,
            content_encoding: i.content_encoding,
            content_language: i.content_language,
            expires: i.expires.as_ref().and_then(http_date_of),
        });
        meta.upload_checksum = algo.map(|a| (a, full));
        meta.tags = tags;
        let vfs = self.volume(&token, &i.bucket).await?;
        let id = multipart::create(&vfs, &i.key, &meta, self.limits.multipart_expiry).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            checksum_algorithm: algo.map(|a| ChecksumAlgorithm::from(a.name().to_string())),
            checksum_type: algo.map(|_| {
                ChecksumType::from_static(if full { ChecksumType::FULL_OBJECT } else { ChecksumType::COMPOSITE })
            }),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let token = self.token(&req)?;
        let wanted = checksum::wanted(&req.headers, None)?;
        let trailers = req.trailing_headers.clone();
        let i = req.input;
        refuse_unsupported(&[("server-side encryption", i.sse_customer_algorithm.is_some())])?;
        self.check_size(i.content_length)?;
        split_key(&i.key)?;
        let vfs = self.volume(&token, &i.bucket).await?;
        let limit = self.limits.max_object;
        let (key, id, number) = (i.key.clone(), i.upload_id.clone(), i.part_number);
        let checks = multipart::PartChecks { md5: i.content_md5.clone(), wanted, trailers };
        let body = i.body.unwrap_or_else(empty_body);
        let (tag, sum) =
            detached(async move { multipart::upload_part(&vfs, &key, &id, number, body, limit, checks).await }).await?;
        let c = sum.map(|(a, v)| checksum::set(a, v)).unwrap_or_default();
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(tag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            checksum_crc64nvme: c.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let token = self.token(&req)?;
        let i = req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, version_id } = &i.copy_source else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
        };
        no_version(version_id.as_deref())?;
        refuse_unsupported(&[("server-side encryption", i.sse_customer_algorithm.is_some())])?;
        split_key(&i.key)?;
        let src_segs = split_key(src_key)?;
        let src = self.volume(&token, src_bucket).await?;
        let dst = self.volume(&token, &i.bucket).await?;
        let (ino, a, fh) = objects::open_object(&src, src_key, &src_segs).await?;
        let (src_tag, _) = objects::recorded(&src, ino, a.size, a.mtime).await;
        let cond = Conditions {
            if_match: i.copy_source_if_match.clone(),
            if_none_match: i.copy_source_if_none_match.clone(),
            if_modified_since: i.copy_source_if_modified_since.clone(),
            if_unmodified_since: i.copy_source_if_unmodified_since.clone(),
        };
        let range = cond.check(Kind::CopySource, &src_tag, a.mtime).and_then(|()| match &i.copy_source_range {
            None => Ok((0, a.size)),
            Some(r) => copy_range(r, a.size),
        });
        let (from, to) = match range {
            Ok(r) if r.1 - r.0 > self.limits.max_object => Err(GatewayError::TooLarge(self.limits.max_object)),
            other => other,
        }
        .inspect_err(|_| {
            let (src, fh) = (src.clone(), fh);
            tokio::spawn(async move { objects::close(&src, fh).await });
        })?;
        let rx = objects::stream_open(src, fh, from, to);
        let (key, id, number) = (i.key.clone(), i.upload_id.clone(), i.part_number);
        let (tag, sum) = detached(async move {
            multipart::upload_part(&dst, &key, &id, number, rx, u64::MAX, multipart::PartChecks::default()).await
        })
        .await?;
        let c = sum.map(|(a, v)| checksum::set(a, v)).unwrap_or_default();
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(tag)),
                last_modified: Some(timestamp(a.mtime)),
                checksum_crc32: c.checksum_crc32,
                checksum_crc32c: c.checksum_crc32c,
                checksum_sha1: c.checksum_sha1,
                checksum_sha256: c.checksum_sha256,
                checksum_crc64nvme: c.checksum_crc64nvme,
            }),
            copy_source_version_id: None,
            ..Default::default()
        }))
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
            .map(|p| {
                let c = p.checksum.map(|(a, v)| checksum::set(a, v)).unwrap_or_default();
                Part {
                    part_number: Some(p.number),
                    e_tag: Some(etag(p.etag)),
                    size: Some(p.attr.size as i64),
                    last_modified: Some(timestamp(p.attr.mtime)),
                    checksum_crc32: c.checksum_crc32,
                    checksum_crc32c: c.checksum_crc32c,
                    checksum_sha1: c.checksum_sha1,
                    checksum_sha256: c.checksum_sha256,
                    checksum_crc64nvme: c.checksum_crc64nvme,
                }
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
            owner: Some(owner(&token)),
            initiator: Some(Initiator { id: Some(token.id.clone()), display_name: Some(token.id.clone()) }),
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
        let cond = conditions::write_if(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        let expected = [
            (Algo::Crc32, &i.checksum_crc32),
            (Algo::Crc32c, &i.checksum_crc32c),
            (Algo::Sha1, &i.checksum_sha1),
            (Algo::Sha256, &i.checksum_sha256),
            (Algo::Crc64Nvme, &i.checksum_crc64nvme),
        ]
        .into_iter()
        .find_map(|(a, v)| v.clone().map(|v| (a, v)));
        let vfs = self.volume(&token, &i.bucket).await?;
        let wanted = parts_of(i.multipart_upload);
        let (key, id, n) = (i.key.clone(), i.upload_id.clone(), wanted.len());
        let done = detached(async move {
            let segs = split_key(&key)?;
            let replace = replacing(&vfs, &key, &segs, &cond).await?;
            multipart::complete(&vfs, &key, &segs, &id, &wanted, expected, replace).await
        })
        .await?;
        tracing::debug!(bucket = %i.bucket, key = %i.key, parts = n, "multipart upload completed");
        let count = done.etag.rsplit_once('-').and_then(|(_, n)| n.parse::<u32>().ok()).unwrap_or(0);
        let shown = ObjectMeta { checksum: done.checksum, parts: vec![(0, count)], ..Default::default() };
        let (sum, checksum_type) = checksum_out(&shown, true);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(etag(done.etag)),
            checksum_crc32: sum.checksum_crc32,
            checksum_crc32c: sum.checksum_crc32c,
            checksum_sha1: sum.checksum_sha1,
            checksum_sha256: sum.checksum_sha256,
            checksum_crc64nvme: sum.checksum_crc64nvme,
            checksum_type,
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
        multipart::expire(&vfs, self.limits.multipart_expiry).await;
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
                owner: Some(owner(&token)),
                initiator: Some(Initiator { id: Some(token.id.clone()), display_name: Some(token.id.clone()) }),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
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

/// The byte range `[from, to)` of an `x-amz-copy-source-range` (`bytes=first-last`, both
/// given, as S3 requires) within a source of `size` bytes.
fn copy_range(r: &str, size: u64) -> Result<(u64, u64)> {
    let bad = || GatewayError::InvalidArgument(format!("invalid x-amz-copy-source-range {r:?}: use bytes=first-last"));
    let (first, last) = r.trim().strip_prefix("bytes=").and_then(|s| s.split_once('-')).ok_or_else(bad)?;
    let (first, last): (u64, u64) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
    if first > last {
        return Err(bad());
    }
    if last >= size {
        return Err(GatewayError::InvalidRange(size));
    }
    Ok((first, last + 1))
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
    fn bucket_names() {
        for ok in ["abc", "my-bucket.data", "a1b", "x".repeat(63).as_str()] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["a", "Bad_Name", "192.168.5.123", "-abc", "abc-", "a..b", "a.-b", "xn--abc", "x".repeat(64).as_str()]
        {
            assert!(matches!(check_bucket_name(bad), Err(GatewayError::InvalidBucketName(_))), "{bad}");
        }
    }

    #[test]
    fn copy_ranges() {
        assert_eq!(copy_range("bytes=0-9", 100).unwrap(), (0, 10));
        assert_eq!(copy_range("bytes=90-99", 100).unwrap(), (90, 100));
        assert!(matches!(copy_range("bytes=90-100", 100), Err(GatewayError::InvalidRange(_))));
        assert!(copy_range("bytes=5-", 100).is_err());
        assert!(copy_range("bytes=9-5", 100).is_err());
    }

    #[test]
    fn timestamps() {
        let t = timestamp(Timespec { sec: 1, nsec: 5 });
        let st: SystemTime = UNIX_EPOCH + Duration::new(1, 5);
        assert_eq!(format!("{t:?}"), format!("{:?}", Timestamp::from(st)));
    }
}
