//! The gateway's errors and how each becomes an S3 error response.

use s3s::{S3Error, S3ErrorCode};
use strata_vfs::VfsError;

use crate::keys::KeyError;

/// What a gateway operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A file system call failed (with the errno the server or client chose).
    #[error(transparent)]
    Vfs(#[from] VfsError),
    /// The key cannot name a file.
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
    /// The bucket does not exist for these credentials.
    #[error("no such bucket {0:?}")]
    NoSuchBucket(String),
    /// No object under this key.
    #[error("no such key {0:?}")]
    NoSuchKey(String),
    /// A path segment of the key is an object, or the key is a directory of other keys.
    #[error("{0}")]
    KeyConflict(String),
    /// The body is larger than the gateway accepts in one request.
    #[error("the body is larger than the {0}-byte limit of this gateway")]
    TooLarge(u64),
    /// The request body could not be read.
    #[error("reading the request body: {0}")]
    Body(String),
    /// The upload id is unknown (or belongs to another key).
    #[error("no such upload {0:?}")]
    NoSuchUpload(String),
    /// A part of a completion request is missing or has another ETag.
    #[error("{0}")]
    InvalidPart(String),
    /// Parts of a completion request are not in ascending order.
    #[error("the parts are not in ascending order of part number")]
    InvalidPartOrder,
    /// A part other than the last is below the minimum size.
    #[error("{0}")]
    TooSmall(String),
    /// A request argument is out of range or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// An `If-Match` condition does not hold.
    #[error("the object's ETag does not match If-Match")]
    PreconditionFailed,
    /// A read's `If-None-Match` matched or `If-Modified-Since` did not hold: the client's copy
    /// is current (the ETag and Last-Modified go with the 304).
    #[error("not modified")]
    NotModified {
        /// The object's ETag.
        etag: String,
        /// Its Last-Modified, as an HTTP date.
        last_modified: String,
    },
    /// A request S3 refuses as malformed or contradictory.
    #[error("{0}")]
    InvalidRequest(String),
    /// An additional checksum sent does not match the body received.
    #[error("The {0} you specified did not match the calculated checksum.")]
    BadChecksum(&'static str),
    /// Something S3 has that this gateway does not do.
    #[error("{0}")]
    NotImplemented(String),
    /// A part number outside the object's parts.
    #[error("the requested part number is not satisfiable: the object has {0} part(s)")]
    InvalidPartNumber(i32),
    /// DeleteBucket of a bucket that still holds objects.
    #[error("the bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    /// CreateBucket of a name that exists (`own`: the caller's).
    #[error("the bucket {name:?} already exists")]
    BucketExists {
        /// Its name.
        name: String,
        /// It is the caller's own.
        own: bool,
    },
    /// A bucket name outside S3's rules.
    #[error("{0}")]
    InvalidBucketName(String),
    /// The operation conflicts with the resource's state (a volume mounted elsewhere).
    #[error("{0}")]
    Conflict(String),
    /// A version other than `null` (objects are unversioned).
    #[error("no version {0:?}: objects here have only the version \"null\"")]
    NoSuchVersion(String),
    /// Refused by the rules of the caller's scope or role.
    #[error("{0}")]
    AccessDenied(String),
    /// More user metadata than S3 allows.
    #[error("{0} bytes of user metadata; at most 2048 are allowed")]
    MetadataTooLarge(usize),
    /// A failure of the gateway itself.
    #[error("{0}")]
    Internal(String),
    /// The body's MD5 is not the `Content-MD5` sent with it.
    #[error("the Content-MD5 sent does not match the body received")]
    BadDigest,
    /// A tag set beyond S3's limits.
    #[error("{0}")]
    InvalidTag(String),
    /// The `Content-MD5` sent is not an MD5 digest.
    #[error("the Content-MD5 you specified is not valid")]
    InvalidDigest,
    /// A request body that is not the XML it should be.
    #[error("{0}")]
    MalformedXml(String),
    /// The requested range lies outside the object.
    #[error("the range is not satisfiable for an object of {0} bytes")]
    InvalidRange(u64),
}

/// Result alias of the gateway.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

fn msg(code: S3ErrorCode, m: impl Into<String>) -> S3Error {
    S3Error::with_message(code, m.into())
}

/// The S3 error for a failed file system call.
fn vfs_error(e: &VfsError) -> S3Error {
    match e {
        VfsError::Unauthenticated(m) => msg(S3ErrorCode::AccessDenied, format!("the token was refused: {m}")),
        VfsError::Denied(m) => msg(S3ErrorCode::AccessDenied, m.clone()),
        VfsError::Unavailable(m) => msg(S3ErrorCode::ServiceUnavailable, format!("strata server unreachable: {m}")),
        VfsError::Errno { errno, msg: m } => match *errno {
            libc::ENOENT => msg(S3ErrorCode::NoSuchKey, m.clone()),
            libc::EACCES | libc::EPERM | libc::EROFS => msg(S3ErrorCode::AccessDenied, m.clone()),
            libc::EDQUOT | libc::ENOSPC => quota_exceeded(m),
            libc::ENOTDIR | libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST => msg(
                S3ErrorCode::InvalidRequest,
                format!("the key conflicts with another key's directory in the volume: {m}"),
            ),
            libc::ENAMETOOLONG => msg(S3ErrorCode::KeyTooLongError, m.clone()),
            libc::EFBIG => msg(S3ErrorCode::EntityTooLarge, m.clone()),
            libc::EIO => msg(S3ErrorCode::InternalError, format!("I/O error: {m}")),
            _ => msg(S3ErrorCode::InternalError, m.clone()),
        },
        VfsError::Blocks(m) => msg(S3ErrorCode::InternalError, format!("block store: {m}")),
        VfsError::Server(m) => msg(S3ErrorCode::InternalError, format!("server: {m}")),
    }
}

/// A volume's byte or inode quota is used up. S3 has no code for it; 403 keeps SDKs from
/// retrying a request that cannot succeed.
fn quota_exceeded(m: &str) -> S3Error {
    let mut e = msg(
        S3ErrorCode::Custom("QuotaExceeded".into()),
        format!("the volume's quota is exhausted ({m}); free space or expand the volume"),
    );
    e.set_status_code(hyper::StatusCode::FORBIDDEN);
    e
}

impl From<GatewayError> for S3Error {
    fn from(e: GatewayError) -> Self {
        let text = e.to_string();
        match e {
            GatewayError::Vfs(v) => {
                let s3 = vfs_error(&v);
                // A client's mistake is answered, not logged; a failure of the gateway or of
                // what is behind it is logged where it becomes an answer.
                if s3.status_code().is_some_and(|c| c.is_server_error()) {
                    tracing::error!(error = %v, "request failed");
                }
                s3
            }
            GatewayError::Key(KeyError::TooLong) => msg(S3ErrorCode::KeyTooLongError, text),
            GatewayError::Key(_) => msg(S3ErrorCode::InvalidArgument, text),
            GatewayError::NoSuchBucket(_) => msg(S3ErrorCode::NoSuchBucket, text),
            GatewayError::NoSuchKey(_) => msg(S3ErrorCode::NoSuchKey, text),
            GatewayError::KeyConflict(_) => msg(S3ErrorCode::InvalidRequest, text),
            GatewayError::TooLarge(_) => msg(S3ErrorCode::EntityTooLarge, text),
            GatewayError::Body(_) => msg(S3ErrorCode::IncompleteBody, text),
            GatewayError::NoSuchUpload(_) => msg(S3ErrorCode::NoSuchUpload, text),
            GatewayError::InvalidPart(_) => msg(S3ErrorCode::InvalidPart, text),
            GatewayError::InvalidPartOrder => msg(S3ErrorCode::InvalidPartOrder, text),
            GatewayError::TooSmall(_) => msg(S3ErrorCode::EntityTooSmall, text),
            GatewayError::InvalidArgument(_) => msg(S3ErrorCode::InvalidArgument, text),
            GatewayError::InvalidRange(_) => msg(S3ErrorCode::InvalidRange, text),
            GatewayError::BadDigest => msg(S3ErrorCode::BadDigest, text),
            GatewayError::InvalidDigest => msg(S3ErrorCode::InvalidDigest, text),
            GatewayError::InvalidTag(_) => msg(S3ErrorCode::InvalidTag, text),
            GatewayError::MalformedXml(_) => msg(S3ErrorCode::MalformedXML, text),
            GatewayError::MetadataTooLarge(_) => msg(S3ErrorCode::MetadataTooLarge, text),
            GatewayError::Internal(_) => {
                tracing::error!(error = %text, "request failed");
                msg(S3ErrorCode::InternalError, text)
            }
            GatewayError::PreconditionFailed => msg(S3ErrorCode::PreconditionFailed, text),
            GatewayError::NotModified { etag, last_modified } => {
                let mut e = S3Error::new(S3ErrorCode::NotModified);
                let mut h = hyper::HeaderMap::new();
                if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("\"{etag}\"")) {
                    h.insert(hyper::header::ETAG, v);
                }
                if let Ok(v) = hyper::header::HeaderValue::from_str(&last_modified) {
                    h.insert(hyper::header::LAST_MODIFIED, v);
                }
                e.set_headers(h);
                e
            }
            GatewayError::InvalidRequest(_) => msg(S3ErrorCode::InvalidRequest, text),
            GatewayError::BadChecksum(_) => msg(S3ErrorCode::BadDigest, text),
            GatewayError::NotImplemented(_) => msg(S3ErrorCode::NotImplemented, text),
            GatewayError::InvalidPartNumber(_) => {
                let mut e = msg(S3ErrorCode::Custom("InvalidPartNumber".into()), text);
                e.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
                e
            }
            GatewayError::BucketNotEmpty(_) => msg(S3ErrorCode::BucketNotEmpty, text),
            GatewayError::BucketExists { own: true, .. } => msg(S3ErrorCode::BucketAlreadyOwnedByYou, text),
            GatewayError::BucketExists { own: false, .. } => msg(S3ErrorCode::BucketAlreadyExists, text),
            GatewayError::InvalidBucketName(_) => msg(S3ErrorCode::InvalidBucketName, text),
            GatewayError::Conflict(_) => msg(S3ErrorCode::OperationAborted, text),
            GatewayError::AccessDenied(_) => msg(S3ErrorCode::AccessDenied, text),
            GatewayError::NoSuchVersion(_) => msg(S3ErrorCode::NoSuchVersion, text),
        }
    }
}

impl From<KeyError> for S3Error {
    fn from(e: KeyError) -> Self {
        GatewayError::Key(e).into()
    }
}

/// Maps a failure to open a bucket: a volume the token cannot see does not exist for it.
pub fn bucket_error(bucket: &str, e: VfsError) -> GatewayError {
    match e.errno() {
        libc::ENOENT | libc::EINVAL => GatewayError::NoSuchBucket(bucket.to_string()),
        _ => GatewayError::Vfs(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: GatewayError) -> String {
        S3Error::from(e).code().as_str().to_string()
    }

    #[test]
    fn errno_mapping() {
        let v = |errno| GatewayError::Vfs(VfsError::from_errno(errno));
        assert_eq!(code(v(libc::ENOENT)), "NoSuchKey");
        assert_eq!(code(v(libc::EACCES)), "AccessDenied");
        assert_eq!(code(v(libc::EPERM)), "AccessDenied");
        assert_eq!(code(v(libc::EDQUOT)), "QuotaExceeded");
        assert_eq!(code(v(libc::ENOTDIR)), "InvalidRequest");
        assert_eq!(code(GatewayError::Vfs(VfsError::Unavailable("down".into()))), "ServiceUnavailable");
        assert_eq!(code(GatewayError::Vfs(VfsError::Unauthenticated("revoked".into()))), "AccessDenied");
        assert_eq!(code(bucket_error("b", VfsError::from_errno(libc::ENOENT))), "NoSuchBucket");
        let q = S3Error::from(v(libc::ENOSPC));
        assert_eq!(q.status_code(), Some(hyper::StatusCode::FORBIDDEN));
        let u = S3Error::from(GatewayError::Vfs(VfsError::Unavailable("down".into())));
        assert_eq!(u.status_code(), Some(hyper::StatusCode::SERVICE_UNAVAILABLE));
    }
}
