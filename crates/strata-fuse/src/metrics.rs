//! Per-operation latency of the FUSE mount (`strata_fuse_ops_durations_histogram_seconds`,
//! JuiceFS's name), measured from the kernel's request to the reply.

use std::sync::OnceLock;
use std::time::Instant;

use strata_metrics::OpHistograms;

/// The FUSE operations measured.
pub const OPS: &[&str] = &[
    "lookup",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "fsyncdir",
    "statfs",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "create",
    "getlk",
    "setlk",
    "fallocate",
];
/// Index of `lookup` in [`OPS`].
pub const LOOKUP: usize = 0;
/// Index of `getattr` in [`OPS`].
pub const GETATTR: usize = 1;
/// Index of `setattr` in [`OPS`].
pub const SETATTR: usize = 2;
/// Index of `readlink` in [`OPS`].
pub const READLINK: usize = 3;
/// Index of `mknod` in [`OPS`].
pub const MKNOD: usize = 4;
/// Index of `mkdir` in [`OPS`].
pub const MKDIR: usize = 5;
/// Index of `unlink` in [`OPS`].
pub const UNLINK: usize = 6;
/// Index of `rmdir` in [`OPS`].
pub const RMDIR: usize = 7;
/// Index of `symlink` in [`OPS`].
pub const SYMLINK: usize = 8;
/// Index of `rename` in [`OPS`].
pub const RENAME: usize = 9;
/// Index of `link` in [`OPS`].
pub const LINK: usize = 10;
/// Index of `open` in [`OPS`].
pub const OPEN: usize = 11;
/// Index of `read` in [`OPS`].
pub const READ: usize = 12;
/// Index of `write` in [`OPS`].
pub const WRITE: usize = 13;
/// Index of `flush` in [`OPS`].
pub const FLUSH: usize = 14;
/// Index of `release` in [`OPS`].
pub const RELEASE: usize = 15;
/// Index of `fsync` in [`OPS`].
pub const FSYNC: usize = 16;
/// Index of `opendir` in [`OPS`].
pub const OPENDIR: usize = 17;
/// Index of `readdir` in [`OPS`].
pub const READDIR: usize = 18;
/// Index of `readdirplus` in [`OPS`].
pub const READDIRPLUS: usize = 19;
/// Index of `releasedir` in [`OPS`].
pub const RELEASEDIR: usize = 20;
/// Index of `fsyncdir` in [`OPS`].
pub const FSYNCDIR: usize = 21;
/// Index of `statfs` in [`OPS`].
pub const STATFS: usize = 22;
/// Index of `setxattr` in [`OPS`].
pub const SETXATTR: usize = 23;
/// Index of `getxattr` in [`OPS`].
pub const GETXATTR: usize = 24;
/// Index of `listxattr` in [`OPS`].
pub const LISTXATTR: usize = 25;
/// Index of `removexattr` in [`OPS`].
pub const REMOVEXATTR: usize = 26;
/// Index of `create` in [`OPS`].
pub const CREATE: usize = 27;
/// Index of `getlk` in [`OPS`].
pub const GETLK: usize = 28;
/// Index of `setlk` in [`OPS`].
pub const SETLK: usize = 29;
/// Index of `fallocate` in [`OPS`].
pub const FALLOCATE: usize = 30;

fn ops() -> &'static OpHistograms {
    static M: OnceLock<OpHistograms> = OnceLock::new();
    M.get_or_init(|| {
        let h = OpHistograms::new("method", OPS);
        strata_metrics::register(
            "fuse_ops_durations_histogram_seconds",
            "FUSE operations by method, in seconds",
            h.clone(),
        );
        h
    })
}

/// Registers the metrics (so a scrape before the first operation lists them).
pub fn register() {
    ops();
}

/// Records the operation when dropped.
pub struct OpTimer(usize, Instant);

/// Starts timing operation `op` (an index of [`OPS`]).
pub fn start(op: usize) -> OpTimer {
    OpTimer(op, Instant::now())
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        ops().get(self.0).since(self.1);
    }
}
