//! The records the namespace is made of: inode attributes, directory entries, chunk slices,
//! volumes and tokens.

use serde::{Deserialize, Serialize};

/// An inode number, unique across the whole server (all volumes).
pub type Ino = u64;

/// Bytes per chunk: a file is a sequence of chunks, each a list of slices.
pub const CHUNK_SIZE: u64 = 64 << 20;
/// Default bytes per block: slices are stored as blocks of at most this size.
pub const DEFAULT_BLOCK_SIZE: u32 = 4 << 20;
/// Longest file name, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest symbolic link target, in bytes.
pub const PATH_MAX: usize = 4096;
/// Largest file: what 64-bit offsets of 64 MiB chunks with 32-bit chunk indexes allow.
pub const MAX_FILE_SIZE: u64 = CHUNK_SIZE * (u32::MAX as u64);
/// Most hard links to one inode.
pub const LINK_MAX: u32 = 65_000;

/// The type of an inode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
}

impl FileType {
    /// The `S_IFMT` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::File => 0o100000,
            FileType::Dir => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
            FileType::CharDev => 0o020000,
            FileType::BlockDev => 0o060000,
        }
    }

    /// The type named by the `S_IFMT` bits of `mode`, if any.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 | 0 => FileType::File,
            0o040000 => FileType::Dir,
            0o120000 => FileType::Symlink,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            0o020000 => FileType::CharDev,
            0o060000 => FileType::BlockDev,
            _ => return None,
        })
    }

    /// A stable small integer for the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The type for a wire code.
    pub fn from_code(c: u32) -> Option<Self> {
        Some(match c {
            0 => FileType::File,
            1 => FileType::Dir,
            2 => FileType::Symlink,
            3 => FileType::Fifo,
            4 => FileType::Socket,
            5 => FileType::CharDev,
            6 => FileType::BlockDev,
            _ => return None,
        })
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Timespec {
    /// Whole seconds (may be negative).
    pub sec: i64,
    /// Nanoseconds, below one billion.
    pub nsec: u32,
}

impl Timespec {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timespec { sec: d.as_secs() as i64, nsec: d.subsec_nanos() }
    }
}

/// Inode attributes, as stored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode type.
    pub kind: FileType,
    /// Permission bits including set-uid, set-gid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Hard link count (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Length in bytes (symlinks: target length).
    pub size: u64,
    /// Last access.
    pub atime: Timespec,
    /// Last data change.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
    /// Directories: the parent directory (the volume root points at itself).
    pub parent: Ino,
    /// The volume this inode belongs to.
    pub volume: u32,
}

impl Attr {
    /// Whether this inode is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Dir
    }

    /// `st_mode`: type bits plus permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.mode_bits() | (self.mode & 0o7777)
    }

    /// Bytes charged against quota: a regular file's size rounded up to 4 KiB.
    pub fn charged_bytes(&self) -> u64 {
        match self.kind {
            FileType::File => self.size.div_ceil(4096) * 4096,
            _ => 0,
        }
    }
}

/// What a commit of writes leaves behind, read in the commit's own transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// The file's attributes after the commit.
    pub attr: Attr,
    /// How many slices each written chunk holds now.
    pub chunk_slices: Vec<(u32, usize)>,
    /// Bytes charged to the file's volume.
    pub used_bytes: u64,
    /// The volume's capacity in bytes (0: none).
    pub capacity: u64,
}

/// One write's data inside a chunk. Later slices in a chunk's list cover earlier ones.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slice {
    /// Offset of this slice's visible data within the chunk.
    pub pos: u32,
    /// Slice id: names its blocks; 0 means a hole (reads as zeros).
    pub id: u64,
    /// Total bytes stored under this id (its blocks hold exactly this many).
    pub size: u32,
    /// Offset of the visible data inside the stored slice.
    pub off: u32,
    /// Visible length.
    pub len: u32,
}

/// One page of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirPage {
    /// The entries, in name order.
    pub entries: Vec<Entry>,
    /// The directory's attributes.
    pub dir: Attr,
    /// Whether entries follow the last one (the page was cut at its limit).
    pub more: bool,
}

/// A directory entry as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name within the directory.
    pub name: Vec<u8>,
    /// Inode it points to.
    pub ino: Ino,
    /// Its type.
    pub kind: FileType,
    /// Its attributes, when asked for (readdirplus).
    pub attr: Option<Attr>,
}

/// A time to set: now (by the server clock) or a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// The current time.
    Now,
    /// A given time.
    At(Timespec),
}

/// Attribute changes requested by `setattr`; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New length (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

/// Who is calling: used for ownership of new inodes and, when `check` is set, permission checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ctx {
    /// Caller's uid.
    pub uid: u32,
    /// Caller's primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Check Unix permissions here (front-ends whose kernel already checked pass `false`).
    pub check: bool,
}

impl Ctx {
    /// The superuser, with permission checks off.
    pub fn root() -> Self {
        Ctx { uid: 0, gid: 0, groups: Vec::new(), check: false }
    }

    /// Whether the caller is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// What happens to a volume's data when it is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reclaim {
    /// Delete metadata and blocks.
    #[default]
    Delete,
    /// Keep everything; only detach the volume from use.
    Retain,
}

/// A volume: a top-level namespace with its own root, quota and storage class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Numeric id, used in block keys.
    pub id: u32,
    /// Unique name.
    pub name: String,
    /// Root directory inode.
    pub root: Ino,
    /// Storage class name.
    #[serde(default)]
    pub class: String,
    /// Byte quota; 0 means unlimited.
    #[serde(default)]
    pub capacity: u64,
    /// Inode quota; 0 means unlimited.
    #[serde(default)]
    pub inode_limit: u64,
    /// Block size for new data.
    pub block_size: u32,
    /// Where blocks live, as a URL (`file:///path`).
    pub store: String,
    /// Compression of new blocks ("none", "lz4", "zstd").
    #[serde(default)]
    pub compression: String,
    /// Reclaim policy.
    #[serde(default)]
    pub reclaim: Reclaim,
    /// Owning scope ("cluster" until scopes exist).
    #[serde(default)]
    pub scope: String,
    /// Creation time.
    pub created: Timespec,
    /// How it may be attached.
    #[serde(default = "default_access_mode")]
    pub access_mode: crate::control::AccessMode,
}

fn default_access_mode() -> crate::control::AccessMode {
    crate::control::AccessMode::ReadWriteMany
}

/// Space and inodes a volume uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes charged (sizes rounded up to 4 KiB).
    pub bytes: u64,
    /// Inodes in use.
    pub inodes: u64,
}

/// A slice whose last reference went; its blocks are deleted by the collector.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Volume whose store holds the blocks.
    pub volume: u32,
    /// Stored slice size (names the blocks).
    pub size: u32,
    /// The inode it belonged to: blocks wait while that inode is open anywhere.
    pub ino: Ino,
}
