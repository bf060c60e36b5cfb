//! Client sessions: kept by `strata_meta::sessions` (in this process, or shared through the
//! metadata store so that a client may fail over between servers); re-exported here.

pub use strata_meta::sessions::SessionInfo as Session;
