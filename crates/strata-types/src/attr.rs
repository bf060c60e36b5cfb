//! Inode attributes, who is calling, and the slices files are made of.

use serde::{Deserialize, Serialize};

/// An inode number, unique across the whole server (all volumes).
pub type Ino = u64;

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

/// A regular file as a conditional rename expects to find it: this inode, of this size, last
/// changed at this time. A write through any client changes the size or mtime, so a match
/// means the content is the one the caller examined.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Inode number.
    pub ino: Ino,
    /// Size in bytes.
    pub size: u64,
    /// Last data change.
    pub mtime: Timespec,
}

impl FileIdentity {
    /// The identity of inode `ino` with attributes `a`.
    pub fn of(ino: Ino, a: &Attr) -> Self {
        FileIdentity { ino, size: a.size, mtime: a.mtime }
    }

    /// Whether inode `ino` with attributes `a` is this file, unchanged.
    pub fn matches(&self, ino: Ino, a: &Attr) -> bool {
        *self == FileIdentity::of(ino, a)
    }
}

/// Conditions of a rename, checked in the same transaction as the rename itself.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameIf {
    /// The source must be this file.
    pub source: Option<FileIdentity>,
    /// The target must exist and be this file.
    pub target: Option<FileIdentity>,
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

/// Permission to read (a file's data, a directory's names).
pub const MAY_READ: u32 = 4;
/// Permission to write (a file's data, a directory's entries).
pub const MAY_WRITE: u32 = 2;
/// Permission to execute a file or search a directory.
pub const MAY_EXEC: u32 = 1;

impl Attr {
    /// The attributes of a new inode of `kind` with permission bits `mode`, owned by
    /// `uid:gid`: one link, empty, all times zero, in no directory or volume yet.
    pub fn new(kind: FileType, mode: u32, uid: u32, gid: u32) -> Attr {
        Attr {
            kind,
            mode,
            uid,
            gid,
            rdev: 0,
            nlink: 1,
            size: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            parent: 0,
            volume: 0,
        }
    }

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

    /// The permissions ([`MAY_READ`], [`MAY_WRITE`], [`MAY_EXEC`]) the mode bits give `ctx` on
    /// this inode, whether or not `ctx` asks for checks. The superuser may read and write
    /// anything, search any directory, and execute a file that anybody may execute.
    pub fn permitted(&self, ctx: &Ctx) -> u32 {
        if ctx.uid == 0 {
            let exec = if self.is_dir() || self.mode & 0o111 != 0 { MAY_EXEC } else { 0 };
            return MAY_READ | MAY_WRITE | exec;
        }
        let bits = if ctx.uid == self.uid {
            self.mode >> 6
        } else if ctx.in_group(self.gid) {
            self.mode >> 3
        } else {
            self.mode
        };
        bits & 7
    }

    /// Whether `ctx` may do everything in `mask` (a union of `MAY_*`): always for a caller
    /// whose front-end checked permissions already (`ctx.check` off).
    pub fn allows(&self, ctx: &Ctx, mask: u32) -> bool {
        !ctx.check || self.permitted(ctx) & mask == mask
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: FileType, mode: u32, uid: u32, gid: u32) -> Attr {
        Attr::new(kind, mode, uid, gid)
    }

    fn user(uid: u32, gid: u32, groups: Vec<u32>) -> Ctx {
        Ctx { uid, gid, groups, check: true }
    }

    #[test]
    fn mode_bits_by_owner_group_and_others() {
        let f = attr(FileType::File, 0o640, 10, 20);
        assert_eq!(f.permitted(&user(10, 1, vec![])), MAY_READ | MAY_WRITE);
        assert_eq!(f.permitted(&user(11, 20, vec![])), MAY_READ);
        assert_eq!(f.permitted(&user(11, 1, vec![20])), MAY_READ, "a supplementary group");
        assert_eq!(f.permitted(&user(12, 21, vec![])), 0);
        // The owner's bits apply to the owner even when the group's would give more.
        let g = attr(FileType::File, 0o070, 10, 20);
        assert_eq!(g.permitted(&user(10, 20, vec![])), 0);
    }

    #[test]
    fn root_executes_only_what_someone_may() {
        let root = user(0, 0, vec![]);
        assert_eq!(attr(FileType::File, 0o000, 5, 5).permitted(&root), MAY_READ | MAY_WRITE);
        assert_eq!(attr(FileType::File, 0o001, 5, 5).permitted(&root), 7);
        assert_eq!(attr(FileType::Dir, 0o000, 5, 5).permitted(&root), 7);
    }

    #[test]
    fn unchecked_callers_are_allowed_everything() {
        let f = attr(FileType::File, 0o000, 5, 5);
        assert!(!f.allows(&user(9, 9, vec![]), MAY_READ));
        assert!(f.allows(&Ctx { check: false, ..user(9, 9, vec![]) }, MAY_READ | MAY_WRITE | MAY_EXEC));
        assert!(f.allows(&user(9, 9, vec![]), 0));
    }
}
