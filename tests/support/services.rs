//! Which PostgreSQL server and S3-compatible store the tests use: one pair of variables for every
//! suite of every crate, read here and nowhere else. Included with `#[path]` by the test helpers
//! of strata-meta, strata-blocks and strata-cli (a file, not a crate: test helpers only).
//!
//! - `STRATA_TEST_PG_URL`: a PostgreSQL server, `postgres://user@host:port` (no database: the
//!   tests create and drop their own).
//! - `STRATA_TEST_S3_ENDPOINT`: an S3-compatible server, `http://host:port`, whose credentials
//!   are in `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; blocks go to bucket `strata-test`
//!   under a prefix per test.
//!
//! `scripts/test` starts both (`scripts/postgres.sh`, `scripts/s3.sh`) and sets them for the
//! steps that use them. Suites that run on the defaults (SQLite, a local directory) run on these
//! instead when they are set; tests that cannot run without them are `#[ignore]`d with the
//! variable to set, and fail (never pass silently) when run with `--ignored` without it.
#![allow(dead_code)]

/// The variable naming the PostgreSQL server.
pub const PG_URL: &str = "STRATA_TEST_PG_URL";
/// The variable naming the S3 endpoint.
pub const S3_ENDPOINT: &str = "STRATA_TEST_S3_ENDPOINT";
/// The bucket S3 tests keep their blocks in.
pub const S3_BUCKET: &str = "strata-test";

fn var(name: &str) -> Option<String> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().trim_end_matches('/');
    (!v.is_empty()).then(|| v.to_string())
}

/// The PostgreSQL server to use, if any (`postgres://user@host:port`, no trailing `/`).
pub fn pg_url() -> Option<String> {
    var(PG_URL)
}

/// The S3 endpoint to use, if any.
pub fn s3_endpoint() -> Option<String> {
    var(S3_ENDPOINT)
}

/// The PostgreSQL server, for a test that needs one: panics naming the variable if unset.
#[track_caller]
pub fn need_pg() -> String {
    pg_url().unwrap_or_else(|| panic!("this test needs PostgreSQL: set {PG_URL}=postgres://user@host:port"))
}

/// The S3 endpoint, for a test that needs one: panics naming what is missing.
#[track_caller]
pub fn need_s3() -> String {
    let endpoint = s3_endpoint().unwrap_or_else(|| panic!("this test needs S3: set {S3_ENDPOINT}=http://host:port"));
    need_s3_credentials();
    endpoint
}

/// Panics unless the S3 credentials are in the environment (for tests that start their own S3
/// server with those credentials, as `scripts/s3.sh` does).
#[track_caller]
pub fn need_s3_credentials() {
    for v in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(var(v).is_some(), "this test needs S3 credentials: set {v} (scripts/s3.sh prints them)");
    }
}

/// A block store URL in the S3 store the environment names, under a prefix of its own that
/// starts with `tag`; requests retried for `retry_timeout` seconds.
pub fn s3_store_url(endpoint: &str, tag: &str, retry_timeout: u32) -> String {
    let prefix = format!("{tag}-{}-{}", std::process::id(), unique());
    format!("s3://{S3_BUCKET}/{prefix}?endpoint={endpoint}&retry_timeout={retry_timeout}")
}

/// A number unique within this process and unlikely to repeat across runs.
pub fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    ((N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u64) << 32) | nanos as u64
}
