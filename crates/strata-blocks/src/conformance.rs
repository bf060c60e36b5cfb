//! The block-store conformance suite: what every [`BlockStore`] must do, whatever
//! `ObjectStore` it runs on (a local directory, an S3 bucket, blocks served by `strata server`
//! through `strata_vfs::RemoteBlocks`, or a test double). In the style of `object_store`'s
//! `integration` module: a test of each backend opens a store and calls [`check`] (or
//! [`check_every_codec`]), which panics on the first failed expectation.
//!
//! Compiled with the `testing` feature (dev-dependencies turn it on); not a stable API.

use bytes::Bytes;
use futures::TryStreamExt;

use crate::layout::{block_key, volume_prefix};
use crate::{BlockError, BlockStore, Codec};

/// Length of the large block of a run: a whole default-size block.
pub const BIG: usize = 4 << 20;
/// Length of the small block of a run.
pub const SMALL: usize = 1000;

/// What a store offers besides putting, getting and syncing blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offers {
    /// Listing the blocks under a prefix.
    pub list: bool,
    /// Deleting blocks.
    pub delete: bool,
}

impl Offers {
    /// Everything: a directory or an object store that block collection runs on.
    pub const ALL: Offers = Offers { list: true, delete: true };
    /// Only puts, gets and syncs: blocks served to clients by `strata server`, which never
    /// list or delete (collection is the server's business).
    pub const PUT_GET_SYNC: Offers = Offers { list: false, delete: false };
}

/// The keys of the blocks one run stored (still in the store unless it offers deletion).
#[derive(Clone, Debug)]
pub struct Written {
    /// The [`BIG`]-byte block.
    pub big: String,
    /// The [`SMALL`]-byte block.
    pub small: String,
}

/// `len` bytes of a pattern that differs with `seed`.
pub fn block_data(seed: u64, len: usize) -> Bytes {
    let s = seed as u8;
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(s) ^ (i >> 16) as u8).collect::<Vec<u8>>())
}

/// Runs every check on `store` with blocks of volume `vol` whose slice ids follow `first_id`
/// (`first_id + 1` to `first_id + 3`). When the store lists, the volume's prefix must hold no
/// other blocks.
///
/// Checks: whole and ranged reads of what was put, a put repeated under the same key (a
/// retried put) is fine, a read with the wrong length is an error (never short data), a
/// missing block is [`BlockError::Missing`], a range past the end of an uncompressed block is
/// an error, listing finds exactly the blocks put, deletion is idempotent and leaves the block
/// missing, and `sync` succeeds.
pub async fn check(store: &BlockStore, vol: u32, first_id: u64, offers: Offers) -> Written {
    let codec = store.codec();
    let big_key = block_key(vol, first_id + 1, 0, BIG as u32);
    let small_key = block_key(vol, first_id + 2, 0, SMALL as u32);
    let big = block_data(first_id + 1, BIG);
    let small = block_data(first_id + 2, SMALL);
    store.put(&big_key, big.clone()).await.expect("put 4 MiB");
    store.put(&small_key, small.clone()).await.expect("put small");
    store.put(&small_key, small.clone()).await.expect("a retried put");
    assert_eq!(store.get(&big_key, BIG).await.expect("get"), big, "{codec:?}: whole block");
    assert_eq!(store.get_range(&big_key, 100..5000).await.expect("range"), big.slice(100..5000), "{codec:?}");
    assert_eq!(store.get(&small_key, SMALL).await.expect("get small"), small, "{codec:?}: small block");
    let wrong_length = store.get(&big_key, 5).await;
    assert!(
        matches!(wrong_length, Err(BlockError::Short { .. } | BlockError::Corrupt { .. })),
        "{codec:?}: a read with the wrong length: {wrong_length:?}"
    );
    let gone = block_key(vol, first_id + 3, 0, 10);
    assert!(matches!(store.get(&gone, 10).await, Err(BlockError::Missing(_))), "{codec:?}: missing block");
    if !store.is_compressed() {
        let past = (BIG - 10) as u64..(BIG + 10) as u64;
        assert!(store.get_range(&big_key, past).await.is_err(), "{codec:?}: range past the end");
    }
    if offers.list {
        let mut listed: Vec<String> =
            store.list(&volume_prefix(vol)).map_ok(|m| m.location.to_string()).try_collect().await.expect("list");
        listed.sort();
        assert_eq!(listed.len(), 2, "{codec:?}: listed {listed:?}");
        let name = format!("{}_0_{BIG}", first_id + 1);
        assert!(listed.iter().any(|k| k.ends_with(&name)), "{codec:?}: {name} not in {listed:?}");
    }
    if offers.delete {
        store.delete(&big_key).await.expect("delete");
        store.delete(&big_key).await.expect("deleting twice is fine");
        assert!(matches!(store.get(&big_key, BIG).await, Err(BlockError::Missing(_))), "{codec:?}: deleted");
        store.delete(&small_key).await.expect("delete");
    }
    store.sync().await.expect("sync");
    Written { big: big_key, small: small_key }
}

/// [`check`] once per codec on the store `open` returns for it, each run with ids of its own
/// (1001.., 2001.., 3001..); what each run left.
pub async fn check_every_codec(open: impl Fn(Codec) -> BlockStore, vol: u32, offers: Offers) -> Vec<Written> {
    assert!(!offers.list || offers.delete, "a store that lists must delete, or runs would see each other's blocks");
    let mut out = Vec::new();
    for (n, codec) in [Codec::None, Codec::Lz4, Codec::Zstd].into_iter().enumerate() {
        let store = open(codec);
        assert_eq!(store.codec(), codec, "the store opened for {codec:?}");
        out.push(check(&store, vol, 1000 * (n as u64 + 1), offers).await);
    }
    out
}
