//! Strata's client file system library: one implementation of POSIX semantics on the client
//! side, under every front-end (the FUSE mount, the NFS and S3 gateways): attaching a volume,
//! names and paths (with the gateways' name cache), reads with caching and read-ahead, writes
//! with write-back buffering and commits.

pub mod client;
pub mod config;
mod dircache;
pub mod error;
pub mod metrics;
mod names;
pub mod peer;
pub mod qos;
pub mod remote;
pub mod vfs;
pub mod writer;

pub use client::{Client, TokenInterceptor, admin, allow_blocking_io, connect};
pub use config::{BlocksMode, StoreLayer, VfsConfig, blocks_route};
pub use error::{Result, VfsError};
pub use qos::Qos;
pub use remote::RemoteBlocks;
pub use strata_blocks::mapped::is_mapped;
pub use strata_types::{Attr, Ctx, FileIdentity, FileType, RenameIf, SetAttr, SetTime, Timespec, VolumeInfo};
pub use vfs::attach::host_name;
pub use vfs::{ByteLock, CacheStats, Cached, DirEntry, DirPage, Opened, StatFs, Vfs, Warmed};
