//! Strata's plain shared types: what the metadata server, the client file system and every
//! front-end (FUSE, NFS, S3, CSI) say to each other, with no storage engine behind them.
//!
//! This crate has no I/O and no engine dependency, so a client links it without linking the
//! metadata engines (SQLite, PostgreSQL) that only `strata server` runs.

mod access;
mod attr;
pub mod limits;
mod name;
mod token;
mod volume;

pub use access::{AccessMode, ParseAccessModeError};
pub use attr::{
    Attr, Ctx, FileIdentity, FileType, Ino, MAY_EXEC, MAY_READ, MAY_WRITE, RenameIf, SetAttr, SetTime, Slice, Timespec,
};
pub use limits::*;
pub use name::{NameError, check_name};
pub use token::{hash_token, token_id};
pub use volume::VolumeInfo;
