//! One conformance suite every block store backend runs: a local directory always, and a real
//! S3-compatible server when `STRATA_TEST_S3_ENDPOINT` is set (scripts/test starts SeaweedFS and
//! sets it, with credentials in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).

use bytes::Bytes;
use futures::TryStreamExt;
use strata_blocks::layout::{block_key, volume_prefix};
use strata_blocks::{BlockError, BlockStore, Codec};

fn data(seed: u8, len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
}

async fn conformance(store: BlockStore, vol: u32) {
    let k1 = block_key(vol, 1, 0, 4 << 20);
    let k2 = block_key(vol, 2, 0, 1000);
    let big = data(1, 4 << 20);
    store.put(&k1, big.clone()).await.expect("put 4 MiB");
    store.put(&k2, data(2, 1000)).await.expect("put small");
    assert_eq!(store.get(&k1, 4 << 20).await.expect("get"), big);
    assert_eq!(store.get_range(&k1, 100..5000).await.expect("range"), big.slice(100..5000));
    assert!(matches!(store.get(&k1, 5).await, Err(BlockError::Short { .. } | BlockError::Corrupt { .. })));
    let mut listed: Vec<String> =
        store.list(&volume_prefix(vol)).map_ok(|m| m.location.to_string()).try_collect().await.expect("list");
    listed.sort();
    assert_eq!(listed.len(), 2, "listed {listed:?}");
    assert!(listed.iter().any(|k| k.ends_with("1_0_4194304")));
    store.delete(&k1).await.expect("delete");
    store.delete(&k1).await.expect("deleting twice is fine");
    assert!(matches!(store.get(&k1, 4 << 20).await, Err(BlockError::Missing(_))));
    store.delete(&k2).await.expect("delete");
    store.sync().await.expect("sync");
}

#[tokio::test]
async fn local_directory_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    conformance(BlockStore::open(&url).expect("open"), 1).await;
    conformance(BlockStore::open_with(&url, Codec::Zstd).expect("open"), 2).await;
}

fn s3_url() -> Option<String> {
    let endpoint = std::env::var("STRATA_TEST_S3_ENDPOINT").ok()?;
    let prefix = format!("t{}-{}", std::process::id(), rand_suffix());
    Some(format!("s3://strata-test/{prefix}?endpoint={endpoint}&retry_timeout=10"))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

#[tokio::test]
async fn s3_store_conforms() {
    let Some(url) = s3_url() else {
        eprintln!("s3_store_conforms: STRATA_TEST_S3_ENDPOINT not set; scripts/test sets it");
        return;
    };
    conformance(BlockStore::open(&url).expect("open"), 1).await;
    conformance(BlockStore::open_with(&url, Codec::Lz4).expect("open"), 2).await;
}

#[tokio::test]
async fn unreachable_s3_is_a_clear_error() {
    // Nothing listens on port 9 of loopback: requests fail fast after the short retry window.
    let store = BlockStore::open("s3://b/p?endpoint=http://127.0.0.1:9&retry_timeout=1").expect("open");
    let started = std::time::Instant::now();
    let err = store.get(&block_key(1, 1, 0, 10), 10).await.expect_err("no server");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "bounded by the retry timeout");
    assert!(matches!(err, BlockError::Store(_)), "{err:?}");
}
