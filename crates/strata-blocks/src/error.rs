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
}

impl BlockError {
    /// The errno a POSIX caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            BlockError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

/// Result alias for the block layer.
pub type Result<T, E = BlockError> = std::result::Result<T, E>;
