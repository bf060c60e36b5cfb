//! Helpers shared by the metadata integration tests: a `Meta` over a real SQLite file in a
//! temporary directory, callers, and short-hands for the common operations.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use strata_meta::kv::sqlite::SqliteEngine;
use strata_meta::*;

#[path = "../../../../tests/support/services.rs"]
mod services;

/// A `Meta` over a real engine that lives as long as this value: a SQLite file in a temporary
/// directory, or, when the environment names a PostgreSQL server (`STRATA_TEST_PG_URL`, see
/// `tests/support/services.rs`), a fresh database on it. The same suite thus runs
/// against every engine.
pub struct TestFs {
    pub meta: Meta,
    /// Where `meta` (and every further instance opened on the store) keeps client state.
    pub mode: StateMode,
    /// The metadata URL (`sqlite:///…` or `postgres://…/db`).
    pub url: String,
    pg: Option<(String, String)>,
    // Dropped last: the database file goes with it.
    _dir: Option<tempfile::TempDir>,
}

impl TestFs {
    /// A fresh, empty metadata store.
    pub fn new() -> TestFs {
        Self::with_mode(StateMode::Local)
    }

    /// A fresh store whose client state (opens, sessions, locks) is shared through the engine,
    /// so that several `Meta` instances on it behave like several servers.
    pub fn shared() -> TestFs {
        Self::with_mode(StateMode::Shared)
    }

    /// Another `Meta` on the same store (another server process).
    pub fn another(&self) -> Meta {
        open_url_mode(&self.url, self.mode)
    }

    fn with_mode(mode: StateMode) -> TestFs {
        if let Some(base) = services::pg_url() {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let db =
                format!("strata_test_{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let mut admin =
                postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls).expect("connect to PostgreSQL");
            admin.batch_execute(&format!("CREATE DATABASE {db}")).expect("create test database");
            let url = format!("{base}/{db}");
            let meta = open_url_mode(&url, mode);
            return TestFs { meta, mode, url, pg: Some((base, db)), _dir: None };
        }
        let dir = scratch_dir();
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let meta = open_url_mode(&url, mode);
        TestFs { meta, mode, url, pg: None, _dir: Some(dir) }
    }

    /// Drops the current `Meta` (and its open table) and opens the same store again.
    pub fn reopen(&mut self) {
        // The old engine must go first so that its connections are closed.
        let placeholder = Meta::new(Arc::new(SqliteEngine::memory().expect("memory engine"))).expect("meta");
        drop(std::mem::replace(&mut self.meta, placeholder));
        self.meta = open_url_mode(&self.url, self.mode);
    }

    /// Creates a volume with default options and returns it.
    pub fn volume(&self, name: &str) -> Volume {
        self.meta.create_volume(name, &NewVolume::default()).expect("create volume")
    }
}

impl Drop for TestFs {
    fn drop(&mut self) {
        if let Some((base, db)) = self.pg.take() {
            let placeholder = Meta::new(Arc::new(SqliteEngine::memory().expect("memory engine"))).expect("meta");
            drop(std::mem::replace(&mut self.meta, placeholder));
            if let Ok(mut admin) = postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            }
        }
    }
}

/// A temporary directory for a database: on a memory file system where there is one (a real
/// file all the same, but durable commits cost no disk flush), else in the usual place.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("strata-meta-test").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temporary directory")
}

/// Opens `Meta` on a metadata URL.
pub fn open_url(url: &str) -> Meta {
    open_url_mode(url, StateMode::Local)
}

/// Opens `Meta` on a metadata URL with client state kept as `mode` says.
pub fn open_url_mode(url: &str, mode: StateMode) -> Meta {
    Meta::with_mode(strata_meta::kv::open(url).expect("open engine"), mode).expect("open meta")
}

/// Opens `Meta` on the SQLite file at `path`.
pub fn open_meta(path: &Path) -> Meta {
    open_url(&format!("sqlite://{}", path.display()))
}

/// An unprivileged caller whose permissions are checked.
pub fn user(uid: u32, gid: u32) -> Ctx {
    Ctx { uid, gid, groups: Vec::new(), check: true }
}

/// The superuser with permission checks on.
pub fn checked_root() -> Ctx {
    Ctx { uid: 0, gid: 0, groups: Vec::new(), check: true }
}

/// Creates a regular file (exclusive) and returns its inode.
pub fn mkfile(m: &Meta, ctx: &Ctx, parent: Ino, name: &str, mode: u32) -> Result<Ino> {
    m.mknod(ctx, parent, name.as_bytes(), FileType::File, mode, 0, 0, b"", true).map(|r| r.0)
}

/// Creates a directory and returns its inode.
pub fn mkdir(m: &Meta, ctx: &Ctx, parent: Ino, name: &str, mode: u32) -> Result<Ino> {
    m.mknod(ctx, parent, name.as_bytes(), FileType::Dir, mode, 0, 0, b"", true).map(|r| r.0)
}

/// Creates a symbolic link and returns its inode.
pub fn symlink(m: &Meta, ctx: &Ctx, parent: Ino, name: &str, target: &str) -> Result<Ino> {
    m.mknod(ctx, parent, name.as_bytes(), FileType::Symlink, 0o777, 0, 0, target.as_bytes(), true).map(|r| r.0)
}

/// A whole-slice write of `len` bytes at `pos` in a chunk, with a freshly allocated id.
pub fn slice(m: &Meta, pos: u32, len: u32) -> Slice {
    let id = m.alloc_slice_ids(1).expect("slice id");
    Slice { pos, id, size: len, off: 0, len }
}

/// Creates regular file `name` in `dir` holding one committed slice of `len` bytes at offset 0;
/// the file and the slice.
pub fn file_with_slice(m: &Meta, dir: Ino, name: &str, len: u32) -> (Ino, Slice) {
    let f = mkfile(m, &Ctx::root(), dir, name, 0o644).expect("create the file");
    let s = slice(m, 0, len);
    m.commit_writes(f, &[(0, s)]).expect("commit its slice");
    (f, s)
}

/// Ids of every slice pending deletion that the collector may take now, sorted.
pub fn collectable_ids(m: &Meta) -> Vec<u64> {
    let mut ids: Vec<u64> = m.collectable(usize::MAX).expect("collectable").into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    ids
}

/// Names in a directory, in listing order.
pub fn names(m: &Meta, dir: Ino) -> Vec<String> {
    m.readdir(&Ctx::root(), dir, false)
        .expect("readdir")
        .into_iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}
