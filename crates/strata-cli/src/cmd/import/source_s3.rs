//! S3 buckets and prefixes on any S3-compatible store, through `object_store`: the listing is
//! streamed page by page, objects are streamed and verified against their ETag when it is an
//! MD5 (single-part uploads).

use std::collections::HashSet;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use strata_vfs::Timespec;
use tokio::sync::mpsc;

use super::{Checksum, Entry, ImportArgs, Item, Kind};

/// An S3 bucket and prefix.
pub struct S3Source {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// Key prefix without a trailing `/` (empty: the whole bucket).
    prefix: String,
    endpoint: String,
}

/// Credentials of a profile of a shared-credentials file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Creds {
    key_id: String,
    secret: String,
    token: Option<String>,
}

/// Reads profile `profile` of an AWS shared-credentials file (INI).
async fn read_credentials(path: &FsPath, profile: &str) -> Result<Creds> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("cannot read credentials file {}", path.display()))?;
    parse_credentials(&text, profile).with_context(|| format!("credentials file {}, profile {profile}", path.display()))
}

fn parse_credentials(text: &str, profile: &str) -> Result<Creds> {
    let mut section = None::<String>;
    let mut found = false;
    let mut c = Creds::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let s = s.trim();
            let s = s.strip_prefix("profile ").map(str::trim).unwrap_or(s);
            section = Some(s.to_string());
            found |= s == profile;
            continue;
        }
        if section.as_deref() != Some(profile) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => c.key_id = v,
            "aws_secret_access_key" => c.secret = v,
            "aws_session_token" | "aws_security_token" => c.token = Some(v),
            _ => {}
        }
    }
    if !found {
        bail!("no such profile");
    }
    if c.key_id.is_empty() || c.secret.is_empty() {
        bail!("the profile lacks aws_access_key_id or aws_secret_access_key");
    }
    Ok(c)
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

impl S3Source {
    /// Builds the client and reads the first page of the listing, so that a missing bucket
    /// or refused credentials fail at once with a clear message.
    pub async fn open(url: &str, args: &ImportArgs) -> Result<S3Source> {
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{url}: no bucket (s3://BUCKET[/PREFIX])");
        }
        let prefix = prefix.trim_matches('/').to_string();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&args.region)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_secs(60))
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(true),
            );
        let endpoint = args.endpoint.clone().unwrap_or_default();
        if !endpoint.is_empty() {
            b = b.with_endpoint(&endpoint).with_virtual_hosted_style_request(false);
        }
        if let Some(file) = &args.credentials_file {
            let c = read_credentials(file, &args.profile).await?;
            b = b.with_access_key_id(c.key_id).with_secret_access_key(c.secret);
            if let Some(t) = c.token {
                b = b.with_token(t);
            }
        } else if env_set("AWS_ACCESS_KEY_ID") && env_set("AWS_SECRET_ACCESS_KEY") {
            b = b
                .with_access_key_id(std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default())
                .with_secret_access_key(std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default());
            if env_set("AWS_SESSION_TOKEN") {
                b = b.with_token(std::env::var("AWS_SESSION_TOKEN").unwrap_or_default());
            }
        } else {
            // No credentials: a public bucket, read with unsigned requests.
            b = b.with_skip_signature(true);
        }
        let store = b.build().with_context(|| format!("cannot set up an S3 client for {url}"))?;
        let s = S3Source {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix,
            endpoint: if endpoint.is_empty() { "AWS".into() } else { endpoint },
        };
        let first = s.store.list_with_delimiter(s.prefix_path().as_ref()).await.map_err(|e| s.explain(&e))?;
        if first.objects.is_empty() && first.common_prefixes.is_empty() {
            bail!("nothing to import: no object under {}", s.describe());
        }
        Ok(s)
    }

    fn prefix_path(&self) -> Option<Path> {
        (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()))
    }

    /// A clear message for a failed request.
    fn explain(&self, e: &object_store::Error) -> anyhow::Error {
        let text = e.to_string();
        let (b, at) = (&self.bucket, &self.endpoint);
        if text.contains("NoSuchBucket")
            || (matches!(e, object_store::Error::NotFound { .. }) && self.prefix.is_empty())
        {
            anyhow::anyhow!("S3 bucket {b} does not exist at {at}")
        } else if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "401"]
            .iter()
            .any(|w| text.contains(w))
        {
            anyhow::anyhow!(
                "S3 at {at} refused the credentials for bucket {b} (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --credentials-file and --profile): {text}"
            )
        } else {
            anyhow::anyhow!("cannot list {} at {at}: {text}", self.describe())
        }
    }

    /// How the report names it.
    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The path of a key relative to the prefix.
    fn rel_of(&self, key: &str) -> Option<String> {
        let rel = if self.prefix.is_empty() { key } else { key.strip_prefix(&self.prefix)?.strip_prefix('/')? };
        (!rel.is_empty()).then(|| rel.to_string())
    }

    /// Lists the prefix page by page into `tx`.
    pub fn list(&self, tx: mpsc::Sender<Item>) {
        let listing: BoxStream<'static, object_store::Result<ObjectMeta>> =
            self.store.list(self.prefix_path().as_ref());
        let me = S3Source {
            store: self.store.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
        };
        tokio::spawn(async move {
            let mut listing = listing;
            while let Some(r) = listing.next().await {
                let item = match r {
                    Ok(m) => me.item_of(m),
                    Err(e) => Item::Fatal(me.explain(&e).to_string()),
                };
                let fatal = matches!(item, Item::Fatal(_));
                if tx.send(item).await.is_err() || fatal {
                    return;
                }
            }
        });
    }

    fn item_of(&self, m: ObjectMeta) -> Item {
        let key = m.location.to_string();
        let Some(rel) = self.rel_of(&key) else {
            return Item::Fail(key, "a key outside the prefix".into());
        };
        if rel.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Item::Fail(key, "a key that is no file path (empty, . or .. segments)".into());
        }
        let etag = m.e_tag.as_deref().map(|t| t.trim_matches('"').to_string());
        let checksum = match etag.as_deref().and_then(md5_of_etag) {
            Some(d) => Checksum::Md5(d),
            None => Checksum::None,
        };
        let mtime = Timespec { sec: m.last_modified.timestamp(), nsec: m.last_modified.timestamp_subsec_nanos() };
        Item::Entry(Entry {
            rel: rel.into_bytes(),
            kind: Kind::File,
            size: m.size,
            mode: Some(0o644),
            mtime: Some(mtime),
            atime: None,
            tag: Some(etag.unwrap_or_else(|| format!("{}@{}.{}", m.size, mtime.sec, mtime.nsec))),
            checksum,
        })
    }

    fn key_of(&self, rel: &[u8]) -> String {
        let rel = String::from_utf8_lossy(rel);
        if self.prefix.is_empty() { rel.into_owned() } else { format!("{}/{rel}", self.prefix) }
    }

    /// Opens an object as a stream.
    pub async fn read(&self, e: &Entry) -> Result<S3Reader, String> {
        let key = self.key_of(&e.rel);
        let path = Path::parse(&key).unwrap_or_else(|_| Path::from(key.as_str()));
        let got = match self.store.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err("it vanished from the source during the import (no such key)".into());
            }
            Err(err) => return Err(format!("reading s3 object {key}: {err}")),
        };
        let now = got.meta.e_tag.as_deref().map(|t| t.trim_matches('"'));
        if got.meta.size != e.size || (now.is_some() && now != e.tag.as_deref()) {
            return Err("the object changed in the source during the import (it is copied by the next run)".into());
        }
        Ok(S3Reader { stream: got.into_stream(), off: 0 })
    }

    /// The names in directory `rel` (one listing level).
    pub async fn names(&self, rel: &[u8]) -> Result<Option<HashSet<Vec<u8>>>, String> {
        let key = if rel.is_empty() { self.prefix.clone() } else { self.key_of(rel) };
        let p = (!key.is_empty()).then(|| Path::from(key.as_str()));
        let r = self.store.list_with_delimiter(p.as_ref()).await.map_err(|e| self.explain(&e).to_string())?;
        let mut out = HashSet::new();
        for name in r.common_prefixes.iter().chain(r.objects.iter().map(|o| &o.location)) {
            if let Some(last) = name.filename() {
                out.insert(last.as_bytes().to_vec());
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// The MD5 an ETag is, when it is one (not a multipart upload's `...-N`).
fn md5_of_etag(etag: &str) -> Option<[u8; 16]> {
    if etag.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(etag.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An object's body as it arrives.
pub struct S3Reader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    off: u64,
}

impl S3Reader {
    /// The next piece of the body.
    pub async fn next(&mut self) -> Result<Option<(u64, Bytes)>, String> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(b)) => {
                let off = self.off;
                self.off += b.len() as u64;
                Ok(Some((off, b)))
            }
            Some(Err(e)) => Err(format!("reading the object: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[profile other]\n\
                    aws_access_key_id=C\naws_secret_access_key=D\naws_session_token=T\n";
        let d = parse_credentials(text, "default").expect("default");
        assert_eq!(d, Creds { key_id: "A".into(), secret: "B".into(), token: None });
        let o = parse_credentials(text, "other").expect("other");
        assert_eq!(o.token.as_deref(), Some("T"));
        assert!(parse_credentials(text, "missing").is_err());
        assert!(parse_credentials("[x]\naws_access_key_id=A\n", "x").is_err());
    }

    #[test]
    fn etags() {
        assert_eq!(md5_of_etag("d41d8cd98f00b204e9800998ecf8427e").map(|d| d[0]), Some(0xd4));
        assert_eq!(md5_of_etag("d41d8cd98f00b204e9800998ecf8427e-2"), None);
        assert_eq!(md5_of_etag("zz1d8cd98f00b204e9800998ecf8427e"), None);
    }
}
