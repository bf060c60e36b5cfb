//! Strata's NFSv3 gateway: volumes exported to NFS clients through the same client VFS as FUSE
//! mounts, with per-export address allow-lists, read-only exports and id squashing, the MOUNT
//! program and a portmapper answer on one TCP port.
//!
//! Replies are encoded with `nfs3_types`; records and arguments are decoded by the bounded
//! decoder of `strata-nfs-wire`, since every byte comes from the network.

pub mod attr;
pub mod dispatch;
pub mod export;
pub mod files;
pub mod gateway;
pub mod handle;
pub mod metrics;
pub mod nfs;
pub mod reply;
pub mod send;
pub mod server;
mod wake;
pub mod xdr;

pub use strata_nfs_wire::{args, rpc};

pub use export::{ExportSpec, Squash};
pub use gateway::{Export, Gateway};
pub use reply::Reply;
pub use server::{Attach, StartError, attach, serve, sessions};
