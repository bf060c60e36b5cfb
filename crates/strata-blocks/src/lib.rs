//! Strata's data layout and block storage: files are chunks of slices of immutable blocks,
//! stored through `object_store` and cached on clients. Blocks are never modified in place.

pub mod aligned;
pub mod background;
pub mod cache;
pub mod codec;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod error;
#[cfg(feature = "testing")]
pub mod faults;
pub mod layout;
pub mod local;
pub mod mapped;
pub mod metrics;
pub mod s3;
pub mod store;

pub use cache::{BlockCache, DiskCache};
pub use codec::Codec;
pub use error::{BlockError, Result};
pub use store::{BlockStore, SyncBlocks};
