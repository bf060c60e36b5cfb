//! The block layer on a store that misbehaves, in process (`strata_blocks::faults` around a
//! real local directory): what the end-to-end fault tests see through a mount when the S3 store
//! is taken away (`crates/strata-cli/tests/faults.rs`), checked where it is decided. A failing
//! store surfaces as `BlockError` with the errno callers report (EIO, EACCES when refused), a
//! slow one delays without failing, a torn write is never read back as data and the retried
//! put replaces it, a failed fetch is not cached, and concurrent readers of a slow block share
//! one fetch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use strata_blocks::conformance::{self, Offers, block_data};
use strata_blocks::faults::{FaultyStore, Op, Rule};
use strata_blocks::layout::{block_key, volume_prefix};
use strata_blocks::local::BlockDir;
use strata_blocks::{BlockCache, BlockError, BlockStore, Codec};

/// A faulty store over a fresh local directory, and a block store (uncompressed) over it.
fn faulty() -> (tempfile::TempDir, Arc<FaultyStore>, BlockStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyStore::new(Arc::new(BlockDir::new(dir.path().to_path_buf()).expect("block dir")));
    let store = fs.block_store(&format!("faulty+file://{}", dir.path().display()));
    (dir, fs, store)
}

#[track_caller]
fn assert_errno<T: std::fmt::Debug>(r: Result<T, BlockError>, errno: i32, what: &str) {
    match r {
        Err(e @ BlockError::Store(_)) => assert_eq!(e.errno(), errno, "{what}: {e}"),
        other => panic!("{what}: expected a store error, got {other:?}"),
    }
}

/// With no rules the wrapper is the store it wraps: it passes the conformance suite.
#[tokio::test]
async fn without_faults_the_wrapper_conforms() {
    let (_dir, fs, store) = faulty();
    conformance::check_every_codec(|codec| store.clone().with_codec(codec), 1, Offers::ALL).await;
    assert_eq!(fs.injected(), 0);
    assert!(fs.calls(Op::Put) > 0 && fs.calls(Op::Get) > 0 && fs.calls(Op::Delete) > 0 && fs.calls(Op::List) > 0);
}

/// The store gone (as when S3 is taken away): every operation fails with EIO, nothing is
/// returned as data, and everything works again once it is back.
#[tokio::test]
async fn a_store_gone_is_eio_and_back_is_fine() {
    let (_dir, fs, store) = faulty();
    let key = block_key(1, 7, 0, 5000);
    let data = block_data(7, 5000);
    store.put(&key, data.clone()).await.expect("put");
    for op in [Op::Put, Op::Get, Op::Delete, Op::List] {
        fs.inject(Rule::fail(op));
    }
    assert_errno(store.get(&key, 5000).await, libc::EIO, "read of uncached data");
    assert_errno(store.get_range(&key, 10..20).await, libc::EIO, "ranged read");
    assert_errno(store.put(&block_key(1, 8, 0, 3), block_data(8, 3)).await, libc::EIO, "write of new data");
    assert_errno(store.delete(&key).await, libc::EIO, "delete");
    let listed: Result<Vec<_>, _> = store.list(&volume_prefix(1)).try_collect().await;
    assert_errno(listed, libc::EIO, "listing");
    fs.heal();
    assert_eq!(store.get(&key, 5000).await.expect("read once the store is back"), data);
    store.put(&block_key(1, 8, 0, 3), block_data(8, 3)).await.expect("write once the store is back");
    assert!(fs.injected() >= 5, "{} faults injected", fs.injected());
}

/// A refusing store (a read-only or revoked credential) is EACCES, not EIO.
#[tokio::test]
async fn a_refusing_store_is_eacces() {
    let (_dir, fs, store) = faulty();
    fs.inject(Rule::deny(Op::Put));
    assert_errno(store.put(&block_key(1, 1, 0, 3), block_data(1, 3)).await, libc::EACCES, "refused put");
}

/// Rules match by operation and key prefix, and a counted rule is spent after its calls.
#[tokio::test]
async fn faults_match_by_operation_prefix_and_count() {
    let (_dir, fs, store) = faulty();
    let (k1, k2) = (block_key(1, 1, 0, 100), block_key(2, 1, 0, 100));
    fs.inject(Rule::fail(Op::Put).under(&volume_prefix(2)).times(2));
    store.put(&k1, block_data(1, 100)).await.expect("another volume's put");
    assert_errno(store.put(&k2, block_data(2, 100)).await, libc::EIO, "first put");
    assert_errno(store.put(&k2, block_data(2, 100)).await, libc::EIO, "second put");
    store.put(&k2, block_data(2, 100)).await.expect("the rule is spent after two");
    assert_eq!(store.get(&k2, 100).await.expect("get is another operation"), block_data(2, 100));
    assert_eq!((fs.injected(), fs.calls(Op::Put), fs.calls(Op::Get)), (2, 4, 1));
}

/// A put torn after its first bytes (the writer died mid-write on a plain directory) is an
/// error; reading the block is an error too, never its partial bytes (uncompressed: its length
/// is wrong; compressed: its frame is), also through the cache, which keeps nothing; the put
/// retried replaces the partial file, and the block reads back whole.
#[tokio::test]
async fn a_torn_put_is_never_read_as_data_and_a_retry_replaces_it() {
    for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
        let (_dir, fs, store) = faulty();
        let store = store.with_codec(codec);
        let cache = BlockCache::new(64 << 20, None);
        let n = 1 << 20;
        let key = block_key(1, 9, 0, n as u32);
        let data = block_data(9, n);
        fs.inject(Rule::torn_put(1000).times(1));
        assert_errno(store.put(&key, data.clone()).await, libc::EIO, "torn put");
        let read = store.get(&key, n).await;
        assert!(matches!(read, Err(BlockError::Short { .. } | BlockError::Corrupt { .. })), "{codec:?}: {read:?}");
        let cached = cache.fetch(&store, &key, n).await;
        assert!(matches!(cached, Err(BlockError::Short { .. } | BlockError::Corrupt { .. })), "{codec:?}: {cached:?}");
        assert!(cache.peek(&key).is_none(), "{codec:?}: a block that failed its checks is not cached");
        store.put(&key, data.clone()).await.expect("the retried put");
        assert_eq!(store.get(&key, n).await.expect("read after the retry"), data, "{codec:?}");
        assert_eq!(cache.fetch(&store, &key, n).await.expect("fetch after the retry"), data, "{codec:?}");
    }
}

/// A failed fetch is not remembered: the next one goes to the store again and succeeds.
#[tokio::test]
async fn a_failed_fetch_is_not_cached() {
    let (_dir, fs, store) = faulty();
    let cache = BlockCache::new(64 << 20, None);
    let key = block_key(1, 3, 0, 4096);
    store.put(&key, block_data(3, 4096)).await.expect("put");
    fs.inject(Rule::fail(Op::Get).times(1));
    assert_errno(cache.fetch(&store, &key, 4096).await, libc::EIO, "fetch with the store failing");
    assert_eq!(cache.fetch(&store, &key, 4096).await.expect("fetch once it works"), block_data(3, 4096));
    assert_eq!(fs.calls(Op::Get), 2);
}

/// A slow store (the patient mount's case): reads wait and then return the right bytes, and
/// readers of the same block meanwhile share one fetch from the store.
#[tokio::test]
async fn a_slow_store_delays_and_concurrent_readers_share_one_fetch() {
    let (_dir, fs, store) = faulty();
    let cache = Arc::new(BlockCache::new(64 << 20, None));
    let key = block_key(1, 4, 0, 1 << 20);
    let data = block_data(4, 1 << 20);
    store.put(&key, data.clone()).await.expect("put");
    let delay = Duration::from_millis(400);
    fs.inject(Rule::delay(Op::Get, delay));
    let started = Instant::now();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (cache, store, key) = (cache.clone(), store.clone(), key.clone());
            tokio::spawn(async move { cache.fetch(&store, &key, 1 << 20).await })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.expect("reader").expect("a delayed read succeeds"), data);
    }
    assert!(started.elapsed() >= delay, "the reads waited for the store ({:?})", started.elapsed());
    assert_eq!(fs.calls(Op::Get), 1, "one fetch for four readers");
    assert_eq!(cache.fetch(&store, &key, 1 << 20).await.expect("cached"), data);
    assert_eq!(fs.calls(Op::Get), 1, "then served from memory");
}
