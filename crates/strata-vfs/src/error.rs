//! Client errors, each with the errno the application sees.

use strata_proto::status_errno;

/// What a client operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VfsError {
    /// A POSIX error from the server or this client.
    #[error("{msg}")]
    Errno {
        /// The errno.
        errno: i32,
        /// Explanation.
        msg: String,
    },
    /// The token was refused.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    /// The token may not do this.
    #[error("permission denied: {0}")]
    Denied(String),
    /// The server could not be reached in time.
    #[error("strata server unreachable: {0}")]
    Unavailable(String),
    /// The block store failed.
    #[error("block store: {0}")]
    Blocks(String),
    /// Anything else the server reported.
    #[error("server error: {0}")]
    Server(String),
}

impl VfsError {
    /// The errno for the application.
    pub fn errno(&self) -> i32 {
        match self {
            VfsError::Errno { errno, .. } => *errno,
            VfsError::Unauthenticated(_) | VfsError::Denied(_) => libc::EACCES,
            VfsError::Unavailable(_) | VfsError::Blocks(_) | VfsError::Server(_) => libc::EIO,
        }
    }

    /// An errno error with a message.
    pub fn errno_msg(errno: i32, msg: impl Into<String>) -> Self {
        VfsError::Errno { errno, msg: msg.into() }
    }

    /// A plain errno error.
    pub fn from_errno(errno: i32) -> Self {
        VfsError::Errno { errno, msg: std::io::Error::from_raw_os_error(errno).to_string() }
    }

    /// Maps a failed RPC.
    pub fn from_status(s: &tonic::Status) -> Self {
        if let Some(errno) = status_errno(s) {
            return VfsError::Errno { errno, msg: s.message().to_string() };
        }
        match s.code() {
            tonic::Code::Unauthenticated => VfsError::Unauthenticated(s.message().to_string()),
            tonic::Code::PermissionDenied => VfsError::Denied(s.message().to_string()),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => VfsError::Unavailable(s.message().to_string()),
            _ => VfsError::Server(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

impl From<strata_blocks::BlockError> for VfsError {
    fn from(e: strata_blocks::BlockError) -> Self {
        // A store refusing the token (blocks served by the server) is EACCES like any other
        // refused call; every other block failure but a full disk is an I/O error.
        match e.errno() {
            libc::EACCES => VfsError::Denied(e.to_string()),
            // A full or read-only disk under a local store: the writer's own errno.
            n @ (libc::ENOSPC | libc::EDQUOT | libc::EROFS) => VfsError::errno_msg(n, e.to_string()),
            _ => VfsError::Blocks(e.to_string()),
        }
    }
}

/// Result alias for client operations.
pub type Result<T, E = VfsError> = std::result::Result<T, E>;
