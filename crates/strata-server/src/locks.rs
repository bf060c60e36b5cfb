//! Advisory locks: the table and its rules live in `strata_meta::locks` (in this process, or
//! shared through the metadata store between servers); re-exported for the services.

pub use strata_meta::locks::{LockKind, LockTable, Owner, Range};
