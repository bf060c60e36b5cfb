//! Strata's NFSv3 gateway: volumes exported to NFS clients through the same client VFS as FUSE
//! mounts, with per-export address allow-lists, read-only exports and id squashing, the MOUNT
//! program and a portmapper answer on one TCP port.
//!
//! Replies are encoded with `nfs3_types`; arguments are decoded by this crate's bounded
//! decoder (see [`xdr`]), since every byte comes from the network.

pub mod args;
pub mod attr;
pub mod export;
pub mod files;
pub mod gateway;
pub mod handle;
pub mod nfs;
pub mod rpc;
pub mod server;
pub mod xdr;

pub use export::{ExportSpec, Squash};
pub use gateway::{Export, Gateway};
pub use server::{Attach, StartError, attach, serve, sessions};
