//! The block-store conformance suite (`strata_blocks::conformance`) on every store this crate
//! opens: a local directory always, and a real S3-compatible server (ignored unless run with
//! `--ignored`, which `scripts/test` does with SeaweedFS running and `STRATA_TEST_S3_ENDPOINT`
//! set, credentials in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`). Blocks served by
//! `strata server` run the same suite in `crates/strata-cli/tests/blocks.rs`.

#[path = "../../../tests/support/services.rs"]
mod services;

use strata_blocks::conformance::{self, Offers};
use strata_blocks::layout::block_key;
use strata_blocks::{BlockError, BlockStore};

#[tokio::test]
async fn local_directory_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    conformance::check_every_codec(|codec| BlockStore::open_with(&url, codec).expect("open"), 1, Offers::ALL).await;
}

#[tokio::test]
#[ignore = "needs S3: set STRATA_TEST_S3_ENDPOINT and the AWS_* credentials (scripts/test does)"]
async fn s3_store_conforms() {
    let url = services::s3_store_url(&services::need_s3(), "blocks", 10);
    conformance::check_every_codec(|codec| BlockStore::open_with(&url, codec).expect("open"), 1, Offers::ALL).await;
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
