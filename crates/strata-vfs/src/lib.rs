//! Strata's client file system library: one implementation of POSIX semantics on the client
//! side, under every front-end (FUSE mount, and later the NFS and S3 gateways).

pub mod client;
pub mod error;
pub mod qos;
pub mod remote;
pub mod vfs;
pub mod writer;

pub use client::{Client, TokenInterceptor, admin, allow_blocking_io, connect};
pub use error::{Result, VfsError};
pub use qos::Qos;
pub use remote::RemoteBlocks;
pub use strata_blocks::mapped::is_mapped;
pub use vfs::{BlocksMode, DirEntry, DirPage, Opened, StatFs, Vfs, VfsConfig, blocks_route};
