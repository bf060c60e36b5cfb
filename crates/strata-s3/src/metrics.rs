//! Per-operation latency of the S3 gateway (`strata_s3_ops_durations_histogram_seconds`). The
//! operation is told from the request line the way S3 defines it for path-style requests
//! (method, whether a bucket and a key are named, and the sub-resource in the query), before
//! s3s parses it, so refused and malformed requests are counted too.

use std::sync::OnceLock;
use std::time::Instant;

use strata_metrics::OpHistograms;

const OPS: &[&str] = &[
    "ListBuckets",
    "CreateBucket",
    "HeadBucket",
    "DeleteBucket",
    "ListObjects",
    "GetObject",
    "HeadObject",
    "PutObject",
    "CopyObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
    "ListMultipartUploads",
    "other",
];

fn ops() -> &'static OpHistograms {
    static M: OnceLock<OpHistograms> = OnceLock::new();
    M.get_or_init(|| {
        let h = OpHistograms::new("operation", OPS);
        strata_metrics::register(
            "s3_ops_durations_histogram_seconds",
            "S3 requests answered, by operation, in seconds",
            h.clone(),
        );
        h
    })
}

/// Registers the metrics (so a scrape before the first request lists them).
pub fn register() {
    ops();
}

/// The operation of a path-style request.
pub fn operation(method: &str, path: &str, query: &str, copy_source: bool) -> &'static str {
    let path = path.trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b, k),
        None => (path, ""),
    };
    let has = |q: &str| query.split('&').any(|p| p == q || p.starts_with(&format!("{q}=")));
    match (method, bucket.is_empty(), key.is_empty()) {
        ("GET", true, _) => "ListBuckets",
        ("PUT", false, true) => "CreateBucket",
        ("HEAD", false, true) => "HeadBucket",
        ("DELETE", false, true) => "DeleteBucket",
        ("GET", false, true) if has("uploads") => "ListMultipartUploads",
        ("GET", false, true) => "ListObjects",
        ("POST", false, true) if has("delete") => "DeleteObjects",
        ("GET", false, false) if has("uploadId") => "ListParts",
        ("GET", false, false) => "GetObject",
        ("HEAD", false, false) => "HeadObject",
        ("PUT", false, false) if has("uploadId") => "UploadPart",
        ("PUT", false, false) if copy_source => "CopyObject",
        ("PUT", false, false) => "PutObject",
        ("DELETE", false, false) if has("uploadId") => "AbortMultipartUpload",
        ("DELETE", false, false) => "DeleteObject",
        ("POST", false, false) if has("uploads") => "CreateMultipartUpload",
        ("POST", false, false) if has("uploadId") => "CompleteMultipartUpload",
        _ => "other",
    }
}

/// Records a request of `op` (from [`operation`]) that started at `t`.
pub fn record(op: &str, t: Instant) {
    let h = ops();
    let i = h.index(op).unwrap_or(OPS.len() - 1);
    h.get(i).since(t);
}

#[cfg(test)]
mod tests {
    use super::operation;

    #[test]
    fn operations() {
        assert_eq!(operation("GET", "/", "", false), "ListBuckets");
        assert_eq!(operation("GET", "/vol", "list-type=2&prefix=a", false), "ListObjects");
        assert_eq!(operation("GET", "/vol/", "list-type=2", false), "ListObjects");
        assert_eq!(operation("PUT", "/vol/a/b", "", false), "PutObject");
        assert_eq!(operation("PUT", "/vol/a/b", "", true), "CopyObject");
        assert_eq!(operation("PUT", "/vol/a", "partNumber=1&uploadId=x", false), "UploadPart");
        assert_eq!(operation("POST", "/vol/a", "uploads", false), "CreateMultipartUpload");
        assert_eq!(operation("POST", "/vol", "delete", false), "DeleteObjects");
        assert_eq!(operation("HEAD", "/vol/a", "", false), "HeadObject");
    }
}
