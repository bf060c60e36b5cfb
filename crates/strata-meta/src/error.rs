//! Errors of metadata operations, each mapped to the errno a POSIX caller expects.

/// Result alias for metadata operations.
pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Everything a metadata operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// ENOENT.
    #[error("no such file or directory")]
    NotFound,
    /// EEXIST.
    #[error("file exists")]
    Exists,
    /// ENOTDIR.
    #[error("not a directory")]
    NotDir,
    /// EISDIR.
    #[error("is a directory")]
    IsDir,
    /// ENOTEMPTY.
    #[error("directory not empty")]
    NotEmpty,
    /// EINVAL with the reason.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// ENAMETOOLONG.
    #[error("file name too long")]
    NameTooLong,
    /// EPERM.
    #[error("operation not permitted")]
    Perm,
    /// EACCES.
    #[error("permission denied")]
    Access,
    /// EXDEV: the operation would cross volumes.
    #[error("cross-volume link or rename")]
    CrossDevice,
    /// EDQUOT.
    #[error("disk quota exceeded")]
    Quota,
    /// ENODATA: no such extended attribute.
    #[error("no such attribute")]
    NoAttr,
    /// ERANGE.
    #[error("value out of range")]
    Range,
    /// EMLINK.
    #[error("too many links")]
    TooManyLinks,
    /// EFBIG.
    #[error("file too large")]
    TooBig,
    /// EAGAIN: a lock is held by someone else.
    #[error("resource temporarily unavailable")]
    WouldBlock,
    /// EBUSY.
    #[error("resource busy: {0}")]
    Busy(String),
    /// The named volume does not exist (ENOENT at the POSIX edge).
    #[error("volume {0:?} not found")]
    NoVolume(String),
    /// The named volume already exists (EEXIST at the POSIX edge).
    #[error("volume {0:?} already exists")]
    VolumeExists(String),
    /// A policy refused a provisioning request.
    #[error("refused by the {rule} policy of scope {scope}: {message}")]
    PolicyDenied {
        /// The rule that refused (`allowed_classes`, `enforced_class`, `max_volume_size`,
        /// `quota`, `access_modes`).
        rule: String,
        /// The scope whose policy set the rule.
        scope: String,
        /// Explanation.
        message: String,
    },
    /// The named storage class does not exist.
    #[error("storage class {0:?} not found")]
    NoClass(String),
    /// The named storage class already exists.
    #[error("storage class {0:?} already exists")]
    ClassExists(String),
    /// The named scope does not exist.
    #[error("scope {0:?} not found")]
    NoScope(String),
    /// The storage engine failed (EIO).
    #[error("metadata engine: {0}")]
    Engine(String),
    /// The store was written by a newer Strata, whose records this build may misread (EIO).
    #[error(
        "the metadata store was written by a newer Strata ({what} version {found}; this build knows up to {supported}): \
         upgrade strata to use it"
    )]
    NewerStore {
        /// Which version: the namespace's schema, or the engine's tables.
        what: &'static str,
        /// The version found in the store.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A stored record did not decode (EIO): the store holds something this version cannot read.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// EROFS: a write to a snapshot (or another read-only view).
    #[error("read-only file system")]
    ReadOnly,
    /// ECANCELED: a conditional operation found its file changed (see `RenameIf`).
    #[error("condition not met: {0}")]
    ConditionFailed(String),
    /// ESTALE: an inode of a snapshot that was deleted.
    #[error("stale file handle: {0}")]
    Stale(String),
}

impl MetaError {
    /// The errno a POSIX caller sees for this error.
    pub fn errno(&self) -> i32 {
        use MetaError::*;
        match self {
            NotFound | NoVolume(_) | NoClass(_) | NoScope(_) => libc_consts::ENOENT,
            Exists | VolumeExists(_) | ClassExists(_) => libc_consts::EEXIST,
            PolicyDenied { .. } => libc_consts::EPERM,
            NotDir => libc_consts::ENOTDIR,
            IsDir => libc_consts::EISDIR,
            NotEmpty => libc_consts::ENOTEMPTY,
            Invalid(_) => libc_consts::EINVAL,
            NameTooLong => libc_consts::ENAMETOOLONG,
            Perm => libc_consts::EPERM,
            Access => libc_consts::EACCES,
            CrossDevice => libc_consts::EXDEV,
            Quota => libc_consts::EDQUOT,
            NoAttr => libc_consts::ENODATA,
            Range => libc_consts::ERANGE,
            TooManyLinks => libc_consts::EMLINK,
            TooBig => libc_consts::EFBIG,
            WouldBlock => libc_consts::EAGAIN,
            Busy(_) => libc_consts::EBUSY,
            ReadOnly => libc_consts::EROFS,
            Stale(_) => libc_consts::ESTALE,
            ConditionFailed(_) => libc_consts::ECANCELED,
            Engine(_) | Corrupt(_) | NewerStore { .. } => libc_consts::EIO,
        }
    }

    /// The error for a given errno, used where errors cross the RPC boundary.
    pub fn from_errno(errno: i32, msg: &str) -> Self {
        use MetaError::*;
        match errno {
            libc_consts::ENOENT => NotFound,
            libc_consts::EEXIST => Exists,
            libc_consts::ENOTDIR => NotDir,
            libc_consts::EISDIR => IsDir,
            libc_consts::ENOTEMPTY => NotEmpty,
            libc_consts::EINVAL => Invalid(msg.to_string()),
            libc_consts::ENAMETOOLONG => NameTooLong,
            libc_consts::EPERM => Perm,
            libc_consts::EACCES => Access,
            libc_consts::EXDEV => CrossDevice,
            libc_consts::EDQUOT => Quota,
            libc_consts::ENODATA => NoAttr,
            libc_consts::ERANGE => Range,
            libc_consts::EMLINK => TooManyLinks,
            libc_consts::EFBIG => TooBig,
            libc_consts::EAGAIN => WouldBlock,
            libc_consts::EBUSY => Busy(msg.to_string()),
            libc_consts::EROFS => ReadOnly,
            libc_consts::ESTALE => Stale(msg.to_string()),
            libc_consts::ECANCELED => ConditionFailed(msg.to_string()),
            _ => Engine(msg.to_string()),
        }
    }
}

impl From<strata_types::ParseAccessModeError> for MetaError {
    fn from(e: strata_types::ParseAccessModeError) -> Self {
        MetaError::Invalid(e.to_string())
    }
}

impl From<strata_types::NameError> for MetaError {
    fn from(e: strata_types::NameError) -> Self {
        use strata_types::NameError;
        match e {
            NameError::TooLong => MetaError::NameTooLong,
            // Every directory has these already; an entry by that name would be shadowed.
            NameError::Dot => MetaError::Exists,
            NameError::Empty | NameError::BadByte => MetaError::Invalid("bad file name".into()),
        }
    }
}

impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> Self {
        MetaError::Engine(e.to_string())
    }
}

impl From<postcard::Error> for MetaError {
    fn from(e: postcard::Error) -> Self {
        MetaError::Corrupt(e.to_string())
    }
}

/// Linux errno values; kept here so this crate needs no libc binding.
pub mod libc_consts {
    #![allow(missing_docs)]
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const EMLINK: i32 = 31;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const EDQUOT: i32 = 122;
    pub const EROFS: i32 = 30;
    pub const ESTALE: i32 = 116;
    pub const ECANCELED: i32 = 125;
}
