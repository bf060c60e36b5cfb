//! Strata metadata: the namespace (inodes, entries, chunks of slices), volumes and tokens, kept
//! as transactions over a key-value engine (SQLite or PostgreSQL). Only `strata-server` depends
//! on this crate (checked by `strata-cli/tests/architecture.rs`): clients reach the namespace
//! through the server's RPC, so every rule is enforced in one place. The plain types it stores
//! (`Attr`, `Slice`, ...) are `strata-types`', re-exported here.

pub mod check;
mod chunks;
mod clones;
pub mod codec;
pub mod control;
mod datavolumes;
pub mod dump;
pub mod error;
mod gc;
pub mod inspect;
pub mod keys;
pub mod kv;
mod local;
pub mod locks;
mod meta;
pub mod namespace;
mod open;
pub mod servers;
pub mod sessions;
mod snapshots;
pub mod tokens;
mod txn;
pub mod types;
pub mod versions;
mod volumes;

pub use datavolumes::{DataVersion, DataVolume};
pub use error::{MetaError, Result};
pub use kv::NOTE_CHANNEL;
pub use meta::{Meta, SCHEMA_VERSION, StateMode};
pub use namespace::{RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE, access};
pub use open::{
    OPEN_GRACE, RESTART_GRACE, SOLE_VALID, UNRECORDED_AFTER, doom_note, moved_note, parse_doom_note, parse_moved_note,
};
pub use snapshots::{DEFAULT_SNAPSHOT_DELETE_BATCH, Snapshot, SnapshotSpace};
pub use types::*;
pub use versions::{split_ino, view_ino};
pub use volumes::NewVolume;

/// Checks a volume (or other object) name: 1 to 253 characters of `[A-Za-z0-9._-]`, starting
/// with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 253 {
        return Err(MetaError::Invalid(format!("name must be 1 to 253 characters, got {}", name.len())));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(MetaError::Invalid(format!(
            "name {name:?} may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit"
        )));
    }
    Ok(())
}
