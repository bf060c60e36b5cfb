//! S3-compatible block stores: `s3://BUCKET/PREFIX?endpoint=URL&region=R&retry_timeout=SECS`.
//!
//! Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and the
//! other variables `object_store` reads), so secrets never sit in volume records. Requests are
//! retried with backoff by `object_store` for up to `retry_timeout` (default 60 s) and time out
//! after 30 s each; past that the caller gets an error (EIO at the file system).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

/// The parts of an `s3://` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct S3Url {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (no leading or trailing `/`).
    pub prefix: String,
    /// Endpoint URL of an S3-compatible server (empty: AWS).
    pub endpoint: String,
    /// Region (default `us-east-1`).
    pub region: String,
    /// How long a failing request is retried.
    pub retry_timeout: Duration,
}

/// Parses an `s3://` URL.
pub fn parse(url: &str) -> Result<S3Url, String> {
    let rest = url.strip_prefix("s3://").ok_or("not an s3:// URL")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err("no bucket".into());
    }
    let mut u = S3Url {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        endpoint: String::new(),
        region: "us-east-1".into(),
        retry_timeout: Duration::from_secs(60),
    };
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("bad query item {kv:?}"))?;
        match k {
            "endpoint" => u.endpoint = v.to_string(),
            "region" => u.region = v.to_string(),
            "retry_timeout" => {
                let secs: u64 = v.parse().map_err(|_| format!("retry_timeout {v:?} is not a number of seconds"))?;
                u.retry_timeout = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown option {other:?} (endpoint, region, retry_timeout)")),
        }
    }
    Ok(u)
}

/// `url` with its retry timeout set to `t` if it names an S3 store; other URLs unchanged.
pub fn with_retry_timeout(url: &str, t: Duration) -> String {
    let Some(rest) = url.strip_prefix("s3://") else { return url.to_string() };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut q: Vec<&str> = query.split('&').filter(|kv| !kv.is_empty() && !kv.starts_with("retry_timeout=")).collect();
    let rt = format!("retry_timeout={}", t.as_secs().max(1));
    q.push(&rt);
    format!("s3://{path}?{}", q.join("&"))
}

/// Opens the store an `s3://` URL names.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, String> {
    let u = parse(url)?;
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&u.bucket)
        .with_region(&u.region)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 1000,
            retry_timeout: u.retry_timeout,
        })
        .with_client_options(
            ClientOptions::new()
                .with_timeout(Duration::from_secs(30))
                .with_connect_timeout(Duration::from_secs(5))
                .with_allow_http(true),
        );
    if !u.endpoint.is_empty() {
        b = b.with_endpoint(&u.endpoint).with_virtual_hosted_style_request(false);
    }
    let s3 = b.build().map_err(|e| e.to_string())?;
    Ok(if u.prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, u.prefix.as_str())) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_timeout_is_set_once() {
        let u = with_retry_timeout("s3://b/p?endpoint=http://h:1&retry_timeout=5", Duration::from_secs(600));
        assert_eq!(u, "s3://b/p?endpoint=http://h:1&retry_timeout=600");
        assert_eq!(parse(&u).expect("parse").retry_timeout, Duration::from_secs(600));
        assert_eq!(with_retry_timeout("s3://b", Duration::from_secs(2)), "s3://b?retry_timeout=2");
        assert_eq!(with_retry_timeout("file:///x", Duration::from_secs(2)), "file:///x");
    }

    #[test]
    fn urls_parse() {
        let u = parse("s3://b/a/b/?endpoint=http://127.0.0.1:8333&region=r1&retry_timeout=5").expect("parse");
        assert_eq!(u.bucket, "b");
        assert_eq!(u.prefix, "a/b");
        assert_eq!(u.endpoint, "http://127.0.0.1:8333");
        assert_eq!(u.region, "r1");
        assert_eq!(u.retry_timeout, Duration::from_secs(5));
        assert!(parse("s3:///x").is_err());
        assert!(parse("s3://b?bogus=1").is_err());
        assert!(parse("s3://b?retry_timeout=soon").is_err());
    }
}
