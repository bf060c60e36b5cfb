//! The block store: immutable blocks under unique keys in any `object_store` backend,
//! compressed as the volume says (see [`crate::codec`] for the stored format). Every read and
//! write path goes through the codec; callers always see the blocks' plain bytes.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::codec::Codec;
use crate::error::{BlockError, Result};
use crate::layout::block_len_of_key;

/// A handle on one object store holding blocks.
#[derive(Clone, Debug)]
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    url: String,
    codec: Codec,
    syncer: Option<Arc<dyn SyncBlocks>>,
    unsynced: Arc<Unsynced>,
    /// Reads from the store so far (see [`BlockStore::gets`]).
    gets: Arc<AtomicU64>,
    /// Which backend this is, for the metrics ([`crate::metrics::BACKENDS`]).
    backend: usize,
    /// A local directory whose file system takes `O_DIRECT` writes.
    direct_io: bool,
}

/// Block files of a local directory written since the last [`BlockStore::sync`]: syncing just
/// them costs what a file system's `fsync` of a few files costs, where `syncfs` would also wait
/// for every other writer of the same disk.
#[derive(Debug, Default)]
struct Unsynced {
    paths: std::sync::Mutex<(Vec<PathBuf>, bool)>,
    /// Held across a sync, so a sync that finds nothing left to do still waits for one in
    /// progress that took its files.
    syncing: tokio::sync::Mutex<()>,
}

/// Block files tracked at most between syncs; past this, a sync is one `syncfs`.
const TRACKED: usize = 4096;

/// Makes the blocks of a store durable when that is another process's job (blocks served by
/// `strata server`, whose `sync` syncs its own disk).
#[async_trait::async_trait]
pub trait SyncBlocks: Send + Sync + std::fmt::Debug {
    /// Makes every block stored so far durable.
    async fn sync(&self) -> Result<()>;
}

/// Name of the file holding a block directory's id, which `strata server` writes at the top
/// of each directory it serves (outside every volume's `v{id}/` prefix, so block collection
/// never sees it). A client finding the same id at the same path shares the directory.
pub const STORE_ID_FILE: &str = ".strata-store-id";

/// Blocks at least this large are compressed and decompressed on the runtime's blocking pool
/// (milliseconds of CPU), smaller ones on the calling task.
const OFFLOAD: usize = 128 << 10;

fn join_err(e: tokio::task::JoinError) -> BlockError {
    BlockError::Io { what: "block codec task".into(), source: std::io::Error::other(e) }
}

impl BlockStore {
    /// Opens the store named by `url`: `file:///abs/dir` or an absolute directory path.
    /// Blocks are stored uncompressed (see [`BlockStore::open_with`]).
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, Codec::None)
    }

    /// Opens the store named by `url`, storing blocks with `codec`.
    pub fn open_with(url: &str, codec: Codec) -> Result<Self> {
        let bad = |reason: &str| BlockError::BadUrl { url: url.to_string(), reason: reason.to_string() };
        if url.starts_with("s3://") {
            let store = crate::s3::open(url).map_err(|reason| bad(&reason))?;
            return Ok(BlockStore {
                store,
                local_root: None,
                url: url.to_string(),
                codec,
                syncer: None,
                unsynced: Arc::default(),
                gets: Arc::default(),
                backend: crate::metrics::backend_of(url),
                direct_io: false,
            });
        }
        let dir = if let Some(rest) = url.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if url.starts_with('/') {
            PathBuf::from(url)
        } else {
            return Err(bad("block stores are file:///absolute/dir or s3://bucket/prefix"));
        };
        if !dir.is_absolute() {
            return Err(bad("the directory must be an absolute path"));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| BlockError::Io { what: format!("create block directory {}", dir.display()), source: e })?;
        let fs = crate::local::BlockDir::new(dir.clone()).map_err(|e| bad(&e.to_string()))?;
        let direct_io = crate::aligned::probe(&dir);
        Ok(BlockStore {
            store: Arc::new(fs),
            local_root: Some(dir),
            url: url.to_string(),
            codec,
            syncer: None,
            unsynced: Arc::default(),
            gets: Arc::default(),
            backend: crate::metrics::backend_of(url),
            direct_io,
        })
    }

    /// Wraps an existing object store (any backend), blocks uncompressed.
    pub fn from_store(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        BlockStore {
            store,
            local_root: None,
            url: url.to_string(),
            codec: Codec::None,
            syncer: None,
            unsynced: Arc::default(),
            gets: Arc::default(),
            backend: crate::metrics::backend_of(url),
            direct_io: false,
        }
    }

    /// The same store, counted in the metrics as the backend `name` of
    /// [`crate::metrics::BACKENDS`] (a store reached through the server is `server`).
    pub fn with_backend(mut self, name: &str) -> Self {
        self.backend = crate::metrics::BACKENDS.iter().position(|b| *b == name).unwrap_or(self.backend);
        self
    }

    /// Counts a block of `bytes` written straight into its file in this local store (no put
    /// request to time): `object_direct_writes` and the put bytes of `object_request_data_bytes`.
    pub fn note_direct_write(&self, bytes: usize) {
        let m = crate::metrics::get();
        m.direct_writes.inc();
        m.bytes.add(self.backend * crate::metrics::METHODS.len() + crate::metrics::PUT, bytes as u64);
    }

    fn timed<T>(&self, method: usize, t: std::time::Instant, r: &Result<T>, bytes: usize) {
        crate::metrics::get().request(self.backend, method, t, r.is_ok(), bytes);
    }

    /// The same store, made durable by `syncer` in [`BlockStore::sync`] (for a store whose
    /// puts are not durable when acknowledged).
    pub fn with_sync(mut self, syncer: Arc<dyn SyncBlocks>) -> Self {
        self.syncer = Some(syncer);
        self
    }

    /// The same store with blocks stored with `codec`.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How blocks are stored.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether stored objects are compressed (framed) rather than the blocks' bytes: block
    /// files must then not be written in place, and a block is only ever read whole.
    pub fn is_compressed(&self) -> bool {
        self.codec.is_compressing()
    }

    async fn encode(&self, data: Bytes) -> Result<Bytes> {
        let codec = self.codec;
        if !codec.is_compressing() {
            return Ok(data);
        }
        if data.len() < OFFLOAD {
            return Ok(codec.encode(&data));
        }
        tokio::task::spawn_blocking(move || codec.encode(&data)).await.map_err(join_err)
    }

    /// A block's bytes from the form it is stored in (checked like a read from the store).
    pub async fn decode(&self, key: &str, want: usize, stored: Bytes) -> Result<Bytes> {
        let codec = self.codec;
        if !codec.is_compressing() || want < OFFLOAD {
            return codec.decode(key, want, stored);
        }
        let key = key.to_string();
        tokio::task::spawn_blocking(move || codec.decode(&key, want, stored)).await.map_err(join_err)?
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads of blocks from the store so far, whole or ranged, by this handle and its clones
    /// (a local directory's reads included): what a warmed cache should keep at zero.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    fn count_get(&self) {
        self.gets.fetch_add(1, Ordering::Relaxed);
    }

    /// The object store under this block store.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Whether blocks are on a local directory (so a disk cache would only duplicate them).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Whether a large block put here from page-aligned memory goes to the disk with
    /// `O_DIRECT`, without a copy (a local directory that takes it, blocks stored as given).
    pub fn writes_direct(&self) -> bool {
        self.direct_io && !self.is_compressed()
    }

    /// Whether [`BlockStore::put`] of `data` goes to the disk with `O_DIRECT` (so the page
    /// cache will not hold it).
    pub fn puts_direct(&self, data: &[u8]) -> bool {
        self.writes_direct() && crate::local::goes_direct(data)
    }

    /// Stores a block. On a local directory, large blocks also start their write-back at
    /// once, so a later fsync finds little left to flush (disk writes overlap the writing
    /// instead of all happening at the end).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let stored = self.encode(data).await?;
        self.put_stored(key, stored).await
    }

    /// Stores an object exactly as given, bypassing the codec: for `strata server` serving
    /// blocks its clients already encoded (their codec, not the server's, decides the format).
    pub async fn put_stored(&self, key: &str, stored: Bytes) -> Result<()> {
        let t = std::time::Instant::now();
        let n = stored.len();
        let r = self.put_stored_untimed(key, stored).await;
        self.timed(crate::metrics::PUT, t, &r, n);
        r
    }

    /// [`Self::put_stored`] without its metrics.
    async fn put_stored_untimed(&self, key: &str, stored: Bytes) -> Result<()> {
        let len = stored.len();
        // Written with O_DIRECT (see `local::write_new`): no dirty pages to start on.
        let direct = self.direct_io && crate::local::goes_direct(&stored);
        self.store.put(&Path::from(key), PutPayload::from_bytes(stored)).await?;
        if let Some(root) = &self.local_root {
            let path = root.join(key);
            self.note_written(path.clone());
            if len >= EARLY_WRITEBACK && !direct {
                // Only a hint: failing to start write-back early costs nothing but speed.
                let _ = tokio::task::spawn_blocking(move || start_writeback(&path)).await;
            }
        }
        Ok(())
    }

    /// Stores a block on the calling thread, for callers that may block (not runtime workers).
    /// `None` when the store is not a local directory (use [`BlockStore::put`]); an error means
    /// the caller should fall back to `put`, which also replaces a partial file.
    pub fn put_now(&self, key: &str, data: &Bytes) -> Option<Result<()>> {
        let t = std::time::Instant::now();
        let r = self.put_now_untimed(key, data)?;
        self.timed(crate::metrics::PUT, t, &r, data.len());
        Some(r)
    }

    /// [`Self::put_now`] without its metrics.
    fn put_now_untimed(&self, key: &str, data: &Bytes) -> Option<Result<()>> {
        let root = self.local_root.as_ref()?;
        let payload = PutPayload::from_bytes(self.codec.encode(data));
        let path = root.join(key);
        let res = crate::local::write_new(&path, &payload)
            .map_err(|e| BlockError::Io { what: format!("write block {key}"), source: e });
        if res.is_ok() {
            self.note_written(path);
        }
        Some(res)
    }

    /// Records a block file written in this local store outside [`BlockStore::put`] (straight
    /// into its file), so that the next [`BlockStore::sync`] makes it durable.
    pub fn note_written(&self, path: PathBuf) {
        if self.local_root.is_none() {
            return;
        }
        let mut u = self.unsynced.paths.lock().unwrap_or_else(|p| p.into_inner());
        if u.0.len() >= TRACKED {
            u.1 = true;
            u.0.clear();
        } else if !u.1 {
            u.0.push(path);
        }
    }

    /// Takes blocks off the list the next [`BlockStore::sync`] makes durable: a commit that
    /// journals them with the metadata leaves their files' sync to the server.
    pub fn forget_unsynced(&self, keys: &[String]) {
        let Some(root) = &self.local_root else { return };
        let mut u = self.unsynced.paths.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            let path = root.join(k);
            if let Some(i) = u.0.iter().rposition(|p| *p == path) {
                u.0.swap_remove(i);
            }
        }
    }

    /// The bytes a block is stored as (what its file holds in a local store).
    pub fn stored_form(&self, data: &Bytes) -> Bytes {
        self.codec.encode(data)
    }

    /// Writes the files of journaled blocks (key, bytes as stored) of this local store, as
    /// background work; returns how many files were written and the paths to sync (see
    /// [`BlockStore::sync_paths`]). A missing file is written from the journal: clients leave
    /// the files of small blocks a durable commit journals to the server (block collection
    /// waits for that). A file that exists but holds other bytes (torn by a crash mid-write)
    /// is replaced. Keys must be checked block keys.
    pub async fn write_journaled(&self, blocks: Vec<(String, Vec<u8>)>) -> Result<(usize, Vec<PathBuf>)> {
        let Some(root) = self.local_root.clone() else { return Ok((0, Vec::new())) };
        crate::background::run(move || {
            let mut written = 0;
            let mut paths = Vec::with_capacity(blocks.len());
            for (key, data) in blocks {
                let path = root.join(&key);
                let io = |e| BlockError::Io { what: format!("write journaled block {key}"), source: e };
                let data = Bytes::from(data);
                // Synced later with the others, so no sync of its own.
                match crate::local::write_new(&path, &PutPayload::from_bytes(data.clone())) {
                    Ok(()) => written += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if std::fs::read(&path).map_err(io)? != data {
                            replace(&path, &data).map_err(io)?;
                            written += 1;
                        }
                    }
                    Err(e) => return Err(io(e)),
                }
                paths.push(path);
            }
            Ok((written, paths))
        })
        .await
        .unwrap_or_else(|| panicked("journal write task"))
    }

    /// Makes files of this local store durable, with their directories, as background work:
    /// one `syncfs` beats hundreds of fsyncs, each a journal commit.
    pub async fn sync_paths(&self, paths: Vec<PathBuf>) -> Result<()> {
        let Some(root) = self.local_root.clone() else { return Ok(()) };
        if paths.is_empty() {
            return Ok(());
        }
        crate::background::run(move || if paths.len() > 64 { syncfs(&root) } else { sync_files(&paths) })
            .await
            .unwrap_or_else(|| panicked("sync task"))
    }

    /// Where a block lives on disk, for a local store. The file holds the stored (possibly
    /// compressed) form: see [`BlockStore::is_compressed`] before writing it directly.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(key))
    }

    /// Asks the kernel to drop the cached pages of a local block file (`POSIX_FADV_DONTNEED`);
    /// nothing for other stores or a file that is gone. Blocks on the file system: call it
    /// where blocking is allowed. Pages still mapped by a holder of the block stay.
    pub fn drop_pages(&self, key: &str) -> Result<()> {
        use std::os::fd::AsRawFd;
        let Some(path) = self.local_path(key) else { return Ok(()) };
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BlockError::Io { what: format!("open block {key}"), source: e }),
        };
        // SAFETY: a plain system call on a descriptor this function owns.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            let source = std::io::Error::from_raw_os_error(rc);
            return Err(BlockError::Io { what: format!("drop cached pages of block {key}"), source });
        }
        Ok(())
    }

    /// Reads a whole block on the calling thread, for callers that may block; `None` when the
    /// store is not a local directory.
    pub fn get_now(&self, key: &str, want: usize) -> Option<Result<Bytes>> {
        let t = std::time::Instant::now();
        let r = self.get_now_untimed(key, want)?;
        self.timed(crate::metrics::GET, t, &r, r.as_ref().map_or(0, Bytes::len));
        Some(r)
    }

    /// [`Self::get_now`] without its metrics.
    fn get_now_untimed(&self, key: &str, want: usize) -> Option<Result<Bytes>> {
        let root = self.local_root.as_ref()?;
        self.count_get();
        if self.codec == Codec::None && want >= MAP_AT_LEAST {
            return Some(map_block(&root.join(key), key, want));
        }
        Some(match std::fs::read(root.join(key)) {
            Ok(b) => self.codec.decode(key, want, Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlockError::Missing(key.to_string())),
            Err(e) => Err(BlockError::Io { what: format!("read block {key}"), source: e }),
        })
    }

    /// Reads a whole block, checking its length (and, compressed, its integrity).
    pub async fn get(&self, key: &str, want: usize) -> Result<Bytes> {
        if self.local_root.is_some() {
            // Straight into an unzeroed buffer: the object store's local reader zero-fills
            // its buffer first, which for a block read from disk costs as much as the copy.
            let me = self.clone();
            let key2 = key.to_string();
            return tokio::task::spawn_blocking(move || me.get_now(&key2, want))
                .await
                .map_err(|e| BlockError::Io { what: format!("read block {key}"), source: std::io::Error::other(e) })?
                .unwrap_or_else(|| Err(BlockError::Missing(key.to_string())));
        }
        self.count_get();
        let t = std::time::Instant::now();
        let got = match self.store.get(&Path::from(key)).await {
            // Page-aligned, so that the disk cache can write it without a copy.
            Ok(r) => crate::aligned::collect(r).await.map_err(BlockError::from),
            Err(object_store::Error::NotFound { .. }) => Err(BlockError::Missing(key.to_string())),
            Err(e) => Err(e.into()),
        };
        self.timed(crate::metrics::GET, t, &got, got.as_ref().map_or(0, Bytes::len));
        self.decode(key, want, got?).await
    }

    /// Reads a stored object as it is (no decoding, no length check), whole or the exact
    /// `range`: for `strata server` serving blocks to clients that decode them.
    pub async fn get_stored(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let t = std::time::Instant::now();
        let r = self.get_stored_untimed(key, range).await;
        self.timed(crate::metrics::GET, t, &r, r.as_ref().map_or(0, Bytes::len));
        r
    }

    /// [`Self::get_stored`] without its metrics.
    async fn get_stored_untimed(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.count_get();
        let path = Path::from(key);
        let got = match &range {
            Some(r) => self.store.get_range(&path, r.clone()).await,
            None => match self.store.get(&path).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            },
        };
        let got = match got {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Err(BlockError::Missing(key.to_string())),
            Err(e) => return Err(e.into()),
        };
        if let Some(r) = range {
            let want = r.end.saturating_sub(r.start) as usize;
            if got.len() != want {
                return Err(BlockError::Short { key: key.to_string(), got: got.len(), want });
            }
        }
        Ok(got)
    }

    /// Reads part of a block. A compressed block is fetched whole, decoded and sliced (its
    /// length comes from its key); callers that may read more of it should go through
    /// [`crate::BlockCache::fetch`] instead, which keeps the whole block.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let t = std::time::Instant::now();
        let r = self.get_range_untimed(key, range).await;
        self.timed(crate::metrics::GET, t, &r, r.as_ref().map_or(0, Bytes::len));
        r
    }

    /// [`Self::get_range`] without its metrics.
    async fn get_range_untimed(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if self.is_compressed() {
            let len = block_len_of_key(key).ok_or_else(|| BlockError::UnnamedLength(key.to_string()))?;
            if range.start > range.end || range.end > u64::from(len) {
                return Err(BlockError::Short { key: key.to_string(), got: len as usize, want: range.end as usize });
            }
            let whole = self.get(key, len as usize).await?;
            return Ok(whole.slice(range.start as usize..range.end as usize));
        }
        let want = (range.end - range.start) as usize;
        self.count_get();
        let got = match self.store.get_range(&Path::from(key), range).await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Err(BlockError::Missing(key.to_string())),
            Err(e) => return Err(e.into()),
        };
        if got.len() != want {
            return Err(BlockError::Short { key: key.to_string(), got: got.len(), want });
        }
        Ok(got)
    }

    /// Deletes a block; a block already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let t = std::time::Instant::now();
        let r = self.delete_untimed(key).await;
        self.timed(crate::metrics::DELETE, t, &r, 0);
        r
    }

    /// [`Self::delete`] without its metrics.
    async fn delete_untimed(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes blocks that may be missing, as background work: in a local directory on the
    /// low-priority background thread, elsewhere a few at a time.
    pub async fn delete_background(&self, keys: Vec<String>) -> Result<()> {
        let Some(root) = self.local_root.clone() else {
            use futures::StreamExt;
            let deletes = keys.into_iter().map(|k| async move { self.delete(&k).await });
            let results: Vec<Result<()>> = futures::stream::iter(deletes).buffer_unordered(16).collect().await;
            return results.into_iter().collect();
        };
        crate::background::run(move || {
            for k in &keys {
                match std::fs::remove_file(root.join(k)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(BlockError::Io { what: format!("delete block {k}"), source: e });
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|| panicked("delete task"))
    }

    /// Blocks under a key prefix, with their last modification, one page at a time.
    pub fn list(&self, prefix: &str) -> futures::stream::BoxStream<'static, Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        self.store.list(Some(&Path::from(prefix))).map(|r| r.map_err(BlockError::from)).boxed()
    }

    /// Makes every block stored so far durable. In a local directory the block files written
    /// since the last sync and their directories are synced (one `syncfs` when there were very
    /// many); stores with a [`SyncBlocks`] sync through it; object stores acknowledge puts only
    /// once durable.
    pub async fn sync(&self) -> Result<()> {
        if let Some(s) = &self.syncer {
            return s.sync().await;
        }
        let Some(root) = self.local_root.clone() else { return Ok(()) };
        let _one = self.unsynced.syncing.lock().await;
        let (paths, overflow) = {
            let mut u = self.unsynced.paths.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut u.0), std::mem::take(&mut u.1))
        };
        if paths.is_empty() && !overflow {
            return Ok(());
        }
        let unsynced = self.unsynced.clone();
        let res = tokio::task::spawn_blocking(move || if overflow { syncfs(&root) } else { sync_files(&paths) })
            .await
            .map_err(|e| BlockError::Io { what: "sync task".into(), source: std::io::Error::other(e) })?;
        if res.is_err() {
            // Not known to be durable: the next sync must cover them again.
            unsynced.paths.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        }
        res
    }
}

/// The error of a background task that panicked.
fn panicked<T>(what: &str) -> Result<T> {
    Err(BlockError::Io { what: what.into(), source: std::io::Error::other("panicked") })
}

/// Blocks at least this large start their write-back as soon as they are stored.
const EARLY_WRITEBACK: usize = 1 << 20;

fn start_writeback(path: &FsPath) {
    if let Ok(f) = std::fs::File::open(path) {
        start_writeback_of(&f);
    }
}

/// Starts (without waiting for) the write-back of a file's dirty pages.
pub fn start_writeback_of(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a descriptor `f` keeps open for the call.
    unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Syncs files' data and then the directories holding them (new names must be durable too).
/// A file gone since (collected, or renamed into its final name, which is listed too) needs
/// nothing.
fn sync_files(paths: &[PathBuf]) -> Result<()> {
    let io = |what: String| move |source| BlockError::Io { what, source };
    let mut dirs: Vec<&FsPath> = Vec::new();
    for d in paths.iter().filter_map(|p| p.parent()) {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    // The directories' entries and the files' data are independent: sync them at the same
    // time, so the file system can commit both in one journal flush.
    std::thread::scope(|scope| {
        let entries = scope.spawn(|| -> Result<()> {
            for d in &dirs {
                match std::fs::File::open(d).and_then(|f| f.sync_all()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(format!("fsync {}", d.display()))(e));
                    }
                    _ => {}
                }
            }
            Ok(())
        });
        for p in paths {
            match std::fs::File::open(p) {
                Ok(f) => f.sync_data().map_err(io(format!("fsync {}", p.display())))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("open {}", p.display()))(e)),
            }
        }
        entries
            .join()
            .unwrap_or_else(|_| Err(io("fsync of block directories".into())(std::io::Error::other("panicked"))))
    })
}

/// Uncompressed blocks at least this large are mapped rather than read.
const MAP_AT_LEAST: usize = 64 << 10;

/// A whole uncompressed block file, mapped: its bytes are the page cache's, with no copy into
/// (and no zero-filled pages of) a buffer of ours. Block files are never changed once written,
/// only deleted or replaced by a rename, which leaves a mapping intact.
fn map_block(path: &FsPath, key: &str, want: usize) -> Result<Bytes> {
    let io = |e| BlockError::Io { what: format!("read block {key}"), source: e };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlockError::Missing(key.to_string())),
        Err(e) => return Err(io(e)),
    };
    let len = f.metadata().map_err(io)?.len();
    if len != want as u64 {
        return Err(BlockError::Short { key: key.to_string(), got: len as usize, want });
    }
    // SAFETY: block files are immutable (see above).
    unsafe { crate::mapped::map_immutable(&f, want) }.map_err(io)
}

/// Replaces an existing block file's content atomically (a new file renamed over it, so no
/// reader or second writer ever sees it partly written); not synced.
fn replace(path: &FsPath, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tmp = path.as_os_str().to_owned();
    // Unique per writer: several servers may flush one shared directory's journal at once.
    tmp.push(format!(".j{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    let written = f.write_all(data).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn syncfs(dir: &FsPath) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f =
        std::fs::File::open(dir).map_err(|e| BlockError::Io { what: format!("open {}", dir.display()), source: e })?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(BlockError::Io {
            what: format!("syncfs {}", dir.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(s: &BlockStore) -> (usize, bool) {
        let u = s.unsynced.paths.lock().unwrap_or_else(|p| p.into_inner());
        (u.0.len(), u.1)
    }

    #[tokio::test]
    async fn sync_covers_what_was_written_then_nothing() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| BlockError::Io { what: "tempdir".into(), source: e })?;
        let s = BlockStore::open(&format!("file://{}", dir.path().display()))?;
        s.put("v1/chunks/0/0/5_0_4", Bytes::from_static(b"abcd")).await?;
        assert!(s.put_now("v1/chunks/0/0/6_0_4", &Bytes::from_static(b"efgh")).is_some_and(|r| r.is_ok()));
        assert_eq!(tracked(&s), (2, false));
        s.sync().await?;
        assert_eq!(tracked(&s), (0, false));
        // A block collected before the sync needs nothing.
        s.put("v1/chunks/0/0/7_0_4", Bytes::from_static(b"ijkl")).await?;
        s.delete("v1/chunks/0/0/7_0_4").await?;
        s.sync().await?;
        // Past the tracking limit, one syncfs covers everything.
        for i in 0..=TRACKED {
            s.note_written(dir.path().join(format!("x{i}")));
        }
        assert_eq!(tracked(&s), (0, true));
        s.sync().await?;
        assert_eq!(tracked(&s), (0, false));
        Ok(())
    }

    #[tokio::test]
    async fn journaled_blocks_are_synced_and_repaired() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| BlockError::Io { what: "tempdir".into(), source: e })?;
        let s = BlockStore::open(&format!("file://{}", dir.path().display()))?;
        let (k1, k2, k3) = ("v1/chunks/0/0/5_0_4", "v1/chunks/0/0/6_0_4", "v1/chunks/0/0/7_0_4");
        for k in [k1, k2, k3] {
            assert!(s.put_now(k, &Bytes::from_static(b"abcd")).is_some_and(|r| r.is_ok()));
        }
        // Journaled blocks leave the list the next sync covers.
        s.forget_unsynced(&[k1.to_string(), k2.to_string()]);
        assert_eq!(tracked(&s), (1, false));
        let path = |k: &str| dir.path().join(k);
        std::fs::remove_file(path(k1)).map_err(|e| BlockError::Io { what: "rm".into(), source: e })?;
        std::fs::write(path(k2), b"ab").map_err(|e| BlockError::Io { what: "tear".into(), source: e })?;
        let j = |k: &str| (k.to_string(), b"abcd".to_vec());
        // A missing file is one the client left to the server, or lost in a crash: written.
        let (n, paths) = s.write_journaled(vec![j(k1), j(k3)]).await?;
        assert_eq!((n, paths.clone()), (1, vec![path(k1), path(k3)]));
        s.sync_paths(paths).await?;
        assert_eq!(s.get(k1, 4).await?, Bytes::from_static(b"abcd"));
        // Missing and torn files are rewritten; intact ones are not.
        std::fs::remove_file(path(k1)).map_err(|e| BlockError::Io { what: "rm".into(), source: e })?;
        assert_eq!(s.write_journaled(vec![j(k1), j(k2), j(k3)]).await?.0, 2);
        let names = std::fs::read_dir(path(k1).parent().expect("dir"))
            .map_err(|e| BlockError::Io { what: "ls".into(), source: e })?
            .count();
        assert_eq!(names, 3, "no temporary file is left");
        for k in [k1, k2, k3] {
            assert_eq!(s.get(k, 4).await?, Bytes::from_static(b"abcd"), "{k}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn large_local_blocks_are_mapped_and_checked() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| BlockError::Io { what: "tempdir".into(), source: e })?;
        let s = BlockStore::open(&format!("file://{}", dir.path().display()))?;
        let data = Bytes::from((0..MAP_AT_LEAST + 3).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let key = format!("v1/chunks/0/0/5_0_{}", data.len());
        s.put(&key, data.clone()).await?;
        assert_eq!(s.get(&key, data.len()).await?, data);
        let mapped = s.get_now(&key, data.len()).expect("local")?;
        // The mapping stays readable after the file is deleted (block collection).
        s.delete(&key).await?;
        assert_eq!(mapped, data);
        assert!(matches!(s.get(&key, data.len()).await, Err(BlockError::Missing(_))));
        std::fs::write(dir.path().join(&key), &data[..100])
            .map_err(|e| BlockError::Io { what: "tear".into(), source: e })?;
        assert!(matches!(s.get(&key, data.len()).await, Err(BlockError::Short { got: 100, .. })));
        Ok(())
    }

    #[tokio::test]
    async fn put_get_range_delete() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| BlockError::Io { what: "tempdir".into(), source: e })?;
        let s = BlockStore::open(&format!("file://{}", dir.path().display()))?;
        s.put("v1/chunks/0/0/5_0_4", Bytes::from_static(b"abcd")).await?;
        assert_eq!(s.get("v1/chunks/0/0/5_0_4", 4).await?, Bytes::from_static(b"abcd"));
        assert_eq!(s.get_range("v1/chunks/0/0/5_0_4", 1..3).await?, Bytes::from_static(b"bc"));
        assert!(matches!(s.get("v1/chunks/0/0/5_0_4", 9).await, Err(BlockError::Short { .. })));
        s.sync().await?;
        s.delete("v1/chunks/0/0/5_0_4").await?;
        s.delete("v1/chunks/0/0/5_0_4").await?;
        assert!(matches!(s.get("v1/chunks/0/0/5_0_4", 4).await, Err(BlockError::Missing(_))));
        Ok(())
    }

    fn texty(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| b"abcdefgh"[(i / 3 + i / 1000) % 8]).collect::<Vec<u8>>())
    }

    fn tmp_store(codec: Codec) -> (tempfile::TempDir, BlockStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = BlockStore::open_with(&format!("file://{}", dir.path().display()), codec).expect("open");
        (dir, s)
    }

    #[tokio::test]
    async fn compressed_put_get_range_on_a_directory() -> Result<()> {
        for codec in [Codec::Lz4, Codec::Zstd] {
            let (dir, s) = tmp_store(codec);
            assert!(s.is_compressed());
            // Large (compressed off the runtime's workers) and small blocks.
            for n in [4 << 20, 3000] {
                let key = crate::layout::block_key(1, 42, 0, n as u32);
                let data = texty(n);
                s.put(&key, data.clone()).await?;
                let on_disk = std::fs::read(dir.path().join(&key)).expect("block file");
                assert_eq!(on_disk[..4], crate::codec::MAGIC, "{codec:?}: stored framed");
                assert!(on_disk.len() < n / 2, "{codec:?}: stored compressed ({} bytes)", on_disk.len());
                assert_eq!(s.get(&key, n).await?, data);
                assert_eq!(s.get_now(&key, n).expect("local")?, data);
                assert_eq!(s.get_range(&key, 1000..2500).await?, data.slice(1000..2500));
                assert_eq!(s.get_range(&key, 0..n as u64).await?, data);
                assert!(matches!(s.get_range(&key, 10..n as u64 + 1).await, Err(BlockError::Short { .. })));
                assert!(matches!(s.get(&key, n - 1).await, Err(BlockError::Corrupt { .. })));
            }
            // The in-place path stores the same format.
            let key = crate::layout::block_key(1, 43, 0, 5000);
            s.put_now(&key, &texty(5000)).expect("local")?;
            assert_eq!(std::fs::read(dir.path().join(&key)).expect("file")[..4], crate::codec::MAGIC);
            assert_eq!(s.get(&key, 5000).await?, texty(5000));
            assert!(matches!(s.get_range("no-length", 0..1).await, Err(BlockError::UnnamedLength(_))));
            assert!(matches!(s.get(&crate::layout::block_key(1, 44, 0, 9), 9).await, Err(BlockError::Missing(_))));
        }
        Ok(())
    }

    #[tokio::test]
    async fn damaged_block_files_are_errors() -> Result<()> {
        for codec in [Codec::Lz4, Codec::Zstd] {
            let (dir, s) = tmp_store(codec);
            let n = 1 << 20;
            let key = crate::layout::block_key(2, 7, 0, n as u32);
            s.put(&key, texty(n)).await?;
            let path = dir.path().join(&key);
            let good = std::fs::read(&path).expect("read");
            let mut flipped = good.clone();
            let mid = good.len() / 2;
            flipped[mid] ^= 0x10;
            for bad in [good[..good.len() - 7].to_vec(), flipped] {
                std::fs::write(&path, &bad).expect("damage");
                assert!(matches!(s.get(&key, n).await, Err(BlockError::Corrupt { .. })), "{codec:?}");
                assert!(matches!(s.get_now(&key, n).expect("local"), Err(BlockError::Corrupt { .. })));
                assert!(matches!(s.get_range(&key, 0..10).await, Err(BlockError::Corrupt { .. })));
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn uncompressed_store_keeps_blocks_as_written() -> Result<()> {
        let (dir, s) = tmp_store(Codec::None);
        assert!(!s.is_compressed());
        let key = crate::layout::block_key(1, 5, 0, 3000);
        s.put(&key, texty(3000)).await?;
        assert_eq!(std::fs::read(dir.path().join(&key)).expect("file"), texty(3000).to_vec());
        assert_eq!(s.get_range(&key, 5..9).await?, texty(3000).slice(5..9));
        Ok(())
    }

    #[test]
    fn relative_and_unknown_urls_are_refused() {
        assert!(matches!(BlockStore::open("file://rel/dir"), Err(BlockError::BadUrl { .. })));
        assert!(matches!(BlockStore::open("ftp://x"), Err(BlockError::BadUrl { .. })));
    }
}
