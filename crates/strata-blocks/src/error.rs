//! Errors of the block layer.

/// Block layer errors.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A block that metadata references is missing from the store.
    #[error("block {0} is missing from the object store")]
    Missing(String),
    /// The store URL is not usable.
    #[error("bad block store URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Local disk I/O failed (cache or sync).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A block came back shorter than its name says.
    #[error("block {key} holds {got} bytes, expected {want}")]
    Short {
        /// Block key.
        key: String,
        /// Bytes read.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// A stored block failed its checks (header, length, decompression or checksum): its
    /// bytes are never returned as data.
    #[error("block {key} is corrupt: {reason}")]
    Corrupt {
        /// Block key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A volume asks for a block compression this build does not know.
    #[error("unknown block compression {0:?} (this build knows none, lz4, zstd)")]
    UnknownCodec(String),
    /// A disk cache directory is in use by another process.
    #[error("cache directory {0} is in use by another process")]
    Busy(String),
    /// Part of a compressed block was asked for under a key that does not name the block's
    /// length (compressed blocks are read whole, so the length must be known).
    #[error("block key {0:?} does not name the block's length")]
    UnnamedLength(String),
}

impl BlockError {
    /// The errno a POSIX caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            BlockError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            // A store that refuses the caller's credentials (blocks served by `strata server`
            // to a read-only or revoked token) is a permission problem, not an I/O failure.
            BlockError::Store(
                object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. },
            ) => libc::EACCES,
            BlockError::Store(e) => out_of_room(e).unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

/// The errno of a local disk that is full, over quota or read-only, found among an object
/// store error's causes: a writer must learn that (`ENOSPC`), not a bare I/O error. Other
/// causes stay EIO (a missing block is data loss to the reader, not `ENOENT`).
fn out_of_room(e: &object_store::Error) -> Option<i32> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(n) = c.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error)
            && matches!(n, libc::ENOSPC | libc::EDQUOT | libc::EROFS)
        {
            return Some(n);
        }
        cause = c.source();
    }
    None
}

/// Result alias for the block layer.
pub type Result<T, E = BlockError> = std::result::Result<T, E>;
