//! Client block caches: a bounded memory cache with single-flight fetches, and an optional
//! bounded local-disk cache for stores that are not already on a local disk.
//!
//! Blocks are immutable, so a cached block is never stale: caches only ever evict. Both caches
//! hold blocks decoded (as the application reads them): the store's codec runs once per fetch,
//! and a block that fails its checks is never cached.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{BlockError, Result};
use crate::store::BlockStore;

#[derive(Clone, Default)]
struct ByteWeighter;

impl quick_cache::Weighter<String, Bytes> for ByteWeighter {
    fn weight(&self, _k: &String, v: &Bytes) -> u64 {
        v.len() as u64 + 64
    }
}

/// Counts evictions from memory for `strata_blockcache_evict`.
#[derive(Clone, Default)]
struct CountEvictions;

impl quick_cache::Lifecycle<String, Bytes> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _key: String, _val: Bytes) {
        crate::metrics::get().cache_evictions.inc();
    }
}

type MemCache = quick_cache::sync::Cache<String, Bytes, ByteWeighter, quick_cache::DefaultHashBuilder, CountEvictions>;

/// The caches of this process, for the size gauges (a gateway has one per attached volume).
type LiveCache = (std::sync::Weak<MemCache>, Option<std::sync::Weak<DiskCache>>);
static LIVE: Mutex<Vec<LiveCache>> = Mutex::new(Vec::new());

/// Bytes held by every live cache of this process: (memory, disk).
pub fn held() -> (u64, u64) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|(m, _)| m.strong_count() > 0);
    let mem = live.iter().filter_map(|(m, _)| m.upgrade()).map(|m| m.weight()).sum();
    let disk = live.iter().filter_map(|(_, d)| d.as_ref()?.upgrade()).map(|d| d.used()).sum();
    (mem, disk)
}

/// Caches whole blocks in memory and, optionally, on local disk.
pub struct BlockCache {
    mem: Arc<MemCache>,
    disk: Option<Arc<DiskCache>>,
}

impl BlockCache {
    /// A cache of at most `mem_bytes` in memory, backed by `disk` if given.
    pub fn new(mem_bytes: u64, disk: Option<DiskCache>) -> Self {
        let items = (mem_bytes / (1 << 20)).max(16) as usize;
        // quick_cache keeps 97% of a shard for blocks read twice by default, leaving new blocks
        // a cold ring smaller than one 4 MiB block: once the cache is full, each block read
        // ahead evicted the one before it before the reader got there, and a long sequential
        // read fetched most blocks twice. Half for new blocks holds a whole read-ahead window.
        let opts = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(mem_bytes.max(1))
            .hot_allocation(0.5)
            .build()
            .expect("estimated items and weight capacity are set");
        let mem =
            Arc::new(quick_cache::sync::Cache::with_options(opts, ByteWeighter, Default::default(), CountEvictions));
        let disk = disk.map(Arc::new);
        crate::metrics::get();
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push((Arc::downgrade(&mem), disk.as_ref().map(Arc::downgrade)));
        BlockCache { mem, disk }
    }

    /// A block if it is in memory.
    pub fn peek(&self, key: &str) -> Option<Bytes> {
        self.mem.get(key)
    }

    /// Puts a block just written into the cache, so the writer reads it back without a fetch.
    pub fn insert(&self, key: &str, data: Bytes) {
        self.mem.insert(key.to_string(), data);
    }

    /// Puts a block just stored into memory and (in the background) onto the disk cache, so
    /// that it is read back from this host even after memory has let it go.
    pub fn insert_stored(&self, key: &str, data: Bytes) {
        if let Some(d) = &self.disk {
            let (d, key, data) = (d.clone(), key.to_string(), data.clone());
            tokio::spawn(async move { d.write(&key, data).await });
        }
        self.mem.insert(key.to_string(), data);
    }

    /// A whole block: from memory, disk, or the store; concurrent callers share one fetch.
    pub async fn fetch(&self, store: &BlockStore, key: &str, len: usize) -> Result<Bytes> {
        self.fetch_with(key, len, store.get(key, len)).await
    }

    /// A whole block like [`BlockCache::fetch`], with `load` (run only when the block is in
    /// neither tier, and by one caller of many) getting it from wherever it comes from: the
    /// store, or another client's cache (the peer cache).
    pub async fn fetch_with(
        &self,
        key: &str,
        len: usize,
        load: impl std::future::Future<Output = Result<Bytes>>,
    ) -> Result<Bytes> {
        let missed = AtomicBool::new(false);
        let r = self
            .mem
            .get_or_insert_async(key, async {
                if let Some(d) = &self.disk
                    && let Some(b) = d.read(key, len).await
                {
                    return Ok(b);
                }
                missed.store(true, Ordering::Relaxed);
                let b = load.await?;
                if let Some(d) = &self.disk {
                    let (d, key, b) = (d.clone(), key.to_string(), b.clone());
                    tokio::spawn(async move { d.write(&key, b).await });
                }
                Ok::<_, BlockError>(b)
            })
            .await;
        if r.is_ok() {
            crate::metrics::get().cache(!missed.load(Ordering::Relaxed), len);
        }
        r
    }

    /// A whole block like [`BlockCache::fetch`], reading a local store on the calling thread
    /// (for callers that may block) instead of through the runtime's blocking pool.
    pub async fn fetch_now(&self, store: &BlockStore, key: &str, len: usize) -> Result<Bytes> {
        if !store.is_local() {
            return self.fetch(store, key, len).await;
        }
        match self.mem.get_value_or_guard(key, Some(std::time::Duration::ZERO)) {
            quick_cache::sync::GuardResult::Value(b) => {
                crate::metrics::get().cache(true, len);
                Ok(b)
            }
            quick_cache::sync::GuardResult::Guard(g) => match store.get_now(key, len) {
                Some(Ok(b)) => {
                    crate::metrics::get().cache(false, len);
                    let _ = g.insert(b.clone());
                    Ok(b)
                }
                Some(Err(e)) => Err(e),
                None => {
                    drop(g);
                    self.fetch(store, key, len).await
                }
            },
            // Someone (read-ahead) is loading it: wait for that instead of reading it twice.
            quick_cache::sync::GuardResult::Timeout => self.fetch(store, key, len).await,
        }
    }

    /// Bytes held in memory.
    pub fn mem_bytes(&self) -> u64 {
        self.mem.weight()
    }

    /// Bytes held on disk (0 without a disk cache).
    pub fn disk_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.used())
    }

    /// Whether this cache has a disk tier.
    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// Whether a block is cached, in memory or on disk (without touching its recency).
    pub fn contains(&self, key: &str) -> bool {
        self.mem.contains_key(key) || self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// Loads a block into the caches ahead of a read: into memory (from disk if it is there,
    /// else from the store) and, with a disk cache, onto disk, waiting for that write (unlike
    /// [`BlockCache::fetch`], which writes the disk copy in the background) so that a caller
    /// asking afterwards sees it cached. Whether the block came from the store.
    pub async fn warm(&self, store: &BlockStore, key: &str, len: usize) -> Result<bool> {
        let fetched = AtomicBool::new(false);
        let data = self
            .mem
            .get_or_insert_async(key, async {
                if let Some(d) = &self.disk
                    && let Some(b) = d.read(key, len).await
                {
                    return Ok(b);
                }
                fetched.store(true, Ordering::Relaxed);
                store.get(key, len).await
            })
            .await?;
        if let Some(d) = &self.disk {
            // `write` skips a block already on disk.
            d.write(key, data).await;
        }
        Ok(fetched.load(Ordering::Relaxed))
    }

    /// Writes a block onto the disk cache, if there is one, waiting for that write (as
    /// [`BlockCache::warm`] does): for a block got from elsewhere than the store (the server's
    /// journal) that must stay on this host once memory lets it go.
    pub async fn write_disk(&self, key: &str, data: Bytes) {
        if let Some(d) = &self.disk {
            d.write(key, data).await;
        }
    }

    /// Drops a block from memory and from disk.
    pub async fn remove(&self, key: &str) {
        self.mem.remove(key);
        if let Some(d) = &self.disk {
            d.remove(key).await;
        }
    }
}

/// A bounded directory of cached blocks, least recently used evicted first. One process
/// uses a directory at a time (it holds an exclusive lock on `.lock` in it), since the index
/// of what is there and how much room it takes lives in that process.
pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<DiskIndex>,
    /// The lock on the directory, held for as long as the cache lives.
    _lock: std::fs::File,
    /// Names temporary files uniquely (a crash leaves some; they are removed at open).
    tmp_seq: std::sync::atomic::AtomicU64,
    /// When free space on the cache's file system was last checked, and whether it was short.
    room: Mutex<(Option<std::time::Instant>, bool)>,
}

/// The least free space (a fraction of the file system) the disk cache leaves: below it,
/// blocks are not written to the cache, so a full disk costs cache misses, not failures.
const MIN_FREE: f64 = 0.10;

/// Name of the lock file in a cache directory.
const LOCK_FILE: &str = ".lock";

#[derive(Default)]
struct DiskIndex {
    entries: HashMap<String, (u64, u64)>,
    order: BTreeMap<u64, String>,
    tick: u64,
    total: u64,
}

impl DiskIndex {
    fn touch(&mut self, key: &str) -> bool {
        let Some((size, old)) = self.entries.get(key).copied() else { return false };
        self.order.remove(&old);
        self.tick += 1;
        self.order.insert(self.tick, key.to_string());
        self.entries.insert(key.to_string(), (size, self.tick));
        true
    }

    fn add(&mut self, key: &str, size: u64) {
        if self.touch(key) {
            return;
        }
        self.tick += 1;
        self.order.insert(self.tick, key.to_string());
        self.entries.insert(key.to_string(), (size, self.tick));
        self.total += size;
    }

    fn remove(&mut self, key: &str) {
        if let Some((size, t)) = self.entries.remove(key) {
            self.order.remove(&t);
            self.total -= size;
        }
    }

    fn pop_oldest(&mut self) -> Option<String> {
        let (_, key) = self.order.pop_first()?;
        if let Some((size, _)) = self.entries.remove(&key) {
            self.total -= size;
        }
        Some(key)
    }
}

impl DiskCache {
    /// Opens (and indexes what is already in) a cache directory of at most `capacity` bytes.
    /// Fails with [`BlockError::Busy`] when another process uses the directory.
    pub fn open(dir: PathBuf, capacity: u64) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| BlockError::Io { what: format!("create cache directory {}", dir.display()), source: e })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BlockError::Io { what: format!("open {}", lock_path.display()), source: e })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(BlockError::Busy(dir.display().to_string())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(BlockError::Io { what: format!("lock {}", lock_path.display()), source: e });
            }
        }
        let mut found = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let Ok(md) = e.metadata() else { continue };
                if md.is_dir() {
                    stack.push(e.path());
                } else if let Ok(rel) = e.path().strip_prefix(&dir) {
                    let key = rel.to_string_lossy().to_string();
                    if key == LOCK_FILE {
                        continue;
                    }
                    if key.ends_with(".tmp") {
                        let _ = std::fs::remove_file(e.path());
                        continue;
                    }
                    found.push((md.modified().ok(), key, md.len()));
                }
            }
        }
        found.sort();
        let mut idx = DiskIndex::default();
        for (_, k, n) in found {
            idx.add(&k, n);
        }
        Ok(DiskCache {
            dir,
            capacity,
            index: Mutex::new(idx),
            _lock: lock,
            tmp_seq: std::sync::atomic::AtomicU64::new(0),
            room: Mutex::new((None, false)),
        })
    }

    /// The directory this cache keeps its blocks in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether the cache's file system is short of free space (checked at most once a second).
    fn short_of_room(&self) -> bool {
        let Ok(mut room) = self.room.lock() else { return true };
        if room.0.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return room.1;
        }
        let short = free_fraction(&self.dir).is_some_and(|f| f < MIN_FREE);
        if short && !room.1 {
            tracing::warn!(dir = %self.dir.display(), "disk cache: less than 10% of its file system is free; not caching more blocks");
        }
        *room = (Some(std::time::Instant::now()), short);
        short
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// A cached block, if present and of the right length.
    pub async fn read(&self, key: &str, len: usize) -> Option<Bytes> {
        if !self.index.lock().ok()?.touch(key) {
            return None;
        }
        let p = self.path(key);
        let got = tokio::task::spawn_blocking(move || read_cached(&p, len)).await.ok()?;
        match got {
            Ok(Some(b)) => Some(b),
            _ => {
                if let Ok(mut i) = self.index.lock() {
                    i.remove(key);
                }
                None
            }
        }
    }

    /// Stores a block, evicting the least recently used ones past capacity. Failures only
    /// cost a future cache miss, so they are logged, not returned.
    pub async fn write(&self, key: &str, data: Bytes) {
        if self.contains(key) || self.short_of_room() {
            return;
        }
        let p = self.path(key);
        let n = data.len() as u64;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Unique per write: two writes of one block (a fetch and a warm-up) must not
            // share a temporary file.
            let tmp = p.with_extension(format!("{seq}.tmp"));
            if !crate::aligned::write_direct(&tmp, &data)? {
                std::fs::write(&tmp, &data)?;
            }
            std::fs::rename(&tmp, &p)
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(key, error = %e, "disk cache write failed");
                return;
            }
            Err(_) => return,
        }
        let victims = {
            let Ok(mut i) = self.index.lock() else { return };
            i.add(key, n);
            let mut v = Vec::new();
            while i.total > self.capacity {
                match i.pop_oldest() {
                    Some(k) => v.push(k),
                    None => break,
                }
            }
            v
        };
        crate::metrics::get().cache_evictions.inc_by(victims.len() as u64);
        for k in victims {
            let _ = tokio::fs::remove_file(self.path(&k)).await;
        }
    }

    /// Whether a block is cached on disk (without touching its recency).
    pub fn contains(&self, key: &str) -> bool {
        self.index.lock().is_ok_and(|i| i.entries.contains_key(key))
    }

    /// Drops a block from the cache; a file that cannot be removed only costs its space until
    /// the next eviction or restart, so failures are logged, not returned.
    pub async fn remove(&self, key: &str) {
        let known = match self.index.lock() {
            Ok(mut i) => {
                let known = i.entries.contains_key(key);
                i.remove(key);
                known
            }
            Err(_) => return,
        };
        if known
            && let Err(e) = tokio::fs::remove_file(self.path(key)).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!(key, error = %e, "disk cache remove failed");
        }
    }

    /// Bytes currently cached on disk.
    pub fn used(&self) -> u64 {
        self.index.lock().map(|i| i.total).unwrap_or(0)
    }
}

/// A cached block file of `len` bytes (`None` if it has another length). Blocks of 64 KiB and
/// more are mapped, not read: a random 4 KiB read of a block that memory let go then costs a
/// page of I/O, not the whole block, and the bytes are the page cache's, not a copy. Cache
/// files are never changed once written (a write renames a new file into place, eviction
/// deletes), which leaves a mapping intact, and only this process uses the directory.
fn read_cached(path: &std::path::Path, len: usize) -> std::io::Result<Option<Bytes>> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.len() != len as u64 {
        return Ok(None);
    }
    if len >= 64 * 1024 {
        // SAFETY: cache files are immutable once in place (see above).
        return unsafe { crate::mapped::map_immutable(&f, len) }.map(Some);
    }
    let mut buf = Vec::with_capacity(len);
    std::io::Read::read_to_end(&mut { f }, &mut buf)?;
    Ok((buf.len() == len).then(|| Bytes::from(buf)))
}

/// Free space of the file system holding `dir`, as a fraction of its size.
fn free_fraction(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `st` is written by statvfs before it is read.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    (st.f_blocks > 0).then(|| st.f_bavail as f64 / st.f_blocks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_directory_serves_one_process_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DiskCache::open(dir.path().to_path_buf(), 10).expect("open");
        assert!(matches!(DiskCache::open(dir.path().to_path_buf(), 10), Err(BlockError::Busy(_))));
        drop(first);
        let again = DiskCache::open(dir.path().to_path_buf(), 10).expect("free again once closed");
        assert_eq!(again.used(), 0, "the lock file is not a block");
    }

    #[tokio::test]
    async fn disk_cache_evicts_least_recent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = DiskCache::open(dir.path().to_path_buf(), 10).expect("open");
        c.write("a/1", Bytes::from_static(b"12345")).await;
        c.write("a/2", Bytes::from_static(b"12345")).await;
        assert!(c.read("a/1", 5).await.is_some());
        c.write("a/3", Bytes::from_static(b"12345")).await;
        assert!(c.read("a/2", 5).await.is_none(), "least recently used went first");
        assert!(c.read("a/1", 5).await.is_some());
        assert!(c.read("a/3", 5).await.is_some());
        assert_eq!(c.used(), 10);
        drop(c);
        let again = DiskCache::open(dir.path().to_path_buf(), 10).expect("reopen");
        assert_eq!(again.used(), 10, "index rebuilt from the directory");
    }

    #[tokio::test]
    async fn aligned_and_unaligned_blocks_come_back_from_disk_exact() {
        // On the disk, not /tmp: the aligned block takes the O_DIRECT path where it can.
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let c = DiskCache::open(dir.path().to_path_buf(), 64 << 20).expect("open");
        let n = 4 << 20;
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let mut buf = crate::aligned::Buf::with_capacity(n);
        buf.extend_from_slice(&data);
        let aligned = buf.into_bytes();
        assert!(crate::aligned::is_direct_writable(&aligned));
        c.write("v/aligned", aligned).await;
        // Off a page boundary, and a length of no whole pages: the page cache's way.
        let odd = Bytes::from(data.clone()).slice(1..n - 100);
        c.write("v/odd", odd.clone()).await;
        assert_eq!(&c.read("v/aligned", n).await.expect("cached")[..], &data[..]);
        assert_eq!(c.read("v/odd", odd.len()).await.expect("cached"), odd);
        assert_eq!(c.used(), (n + odd.len()) as u64);
        let left: Vec<_> =
            std::fs::read_dir(dir.path().join("v")).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file left behind: {left:?}");
    }

    #[test]
    fn blocks_read_ahead_survive_a_full_cache() {
        // A long sequential read: the cache has long been full of blocks nobody reads again,
        // and the blocks fetched ahead of the reader must still be there when it arrives.
        let cache = BlockCache::new(64 << 20, None);
        let block = Bytes::from(vec![7u8; 1 << 20]);
        for i in 0..200 {
            cache.insert(&format!("b/{i}"), block.clone());
        }
        let missing: Vec<_> = (192..200).filter(|i| cache.peek(&format!("b/{i}")).is_none()).collect();
        assert!(missing.is_empty(), "the last 8 MiB inserted into a 64 MiB cache were evicted: {missing:?}");
    }

    #[tokio::test]
    async fn fetch_goes_to_store_once() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(&dir.path().display().to_string())?;
        store.put("k", Bytes::from_static(b"data")).await?;
        let cache = BlockCache::new(1 << 20, None);
        assert_eq!(cache.fetch(&store, "k", 4).await?, Bytes::from_static(b"data"));
        store.delete("k").await?;
        assert_eq!(cache.fetch(&store, "k", 4).await?, Bytes::from_static(b"data"), "served from memory");
        Ok(())
    }

    #[tokio::test]
    async fn warm_fills_both_tiers_and_remove_empties_them() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(&dir.path().display().to_string())?;
        store.put("k", Bytes::from_static(b"data")).await?;
        let disk_dir = tempfile::tempdir().expect("tempdir");
        let cache = BlockCache::new(1 << 20, Some(DiskCache::open(disk_dir.path().to_path_buf(), 1 << 20)?));
        assert!(!cache.contains("k"));
        assert!(cache.warm(&store, "k", 4).await?, "first warm-up reads the store");
        assert!(cache.contains("k") && cache.peek("k").is_some() && cache.disk_bytes() == 4, "in both tiers");
        let gets = store.gets();
        assert!(!cache.warm(&store, "k", 4).await?, "already warm");
        cache.mem.remove("k");
        assert!(cache.contains("k"), "still on disk");
        assert!(!cache.warm(&store, "k", 4).await?, "back into memory from disk");
        assert_eq!(store.gets(), gets, "no store read for a warm block");
        cache.remove("k").await;
        assert!(!cache.contains("k") && cache.disk_bytes() == 0);
        assert!(!disk_dir.path().join("k").exists(), "the disk copy is deleted");
        Ok(())
    }

    #[tokio::test]
    async fn compressed_blocks_are_cached_decoded() -> Result<()> {
        for codec in [crate::Codec::Lz4, crate::Codec::Zstd] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = BlockStore::open_with(&dir.path().display().to_string(), codec)?;
            let data = Bytes::from((0..(2 << 20)).map(|i| (i / 100 % 7) as u8).collect::<Vec<u8>>());
            let (k1, k2) = (crate::layout::block_key(1, 1, 0, 2 << 20), crate::layout::block_key(1, 2, 0, 2 << 20));
            store.put(&k1, data.clone()).await?;
            store.put(&k2, data.clone()).await?;
            let disk_dir = tempfile::tempdir().expect("tempdir");
            let disk = DiskCache::open(disk_dir.path().to_path_buf(), 64 << 20)?;
            let cache = BlockCache::new(64 << 20, Some(disk));
            assert_eq!(cache.fetch(&store, &k1, 2 << 20).await?, data);
            assert_eq!(cache.fetch_now(&store, &k2, 2 << 20).await?, data);
            assert_eq!(cache.peek(&k1), Some(data.clone()), "whole decoded block in memory");
            assert_eq!(cache.peek(&k2), Some(data.clone()));
            store.delete(&k1).await?;
            store.delete(&k2).await?;
            assert_eq!(cache.fetch(&store, &k1, 2 << 20).await?, data, "served from memory");
            assert_eq!(cache.fetch_now(&store, &k2, 2 << 20).await?, data, "served from memory");
        }
        Ok(())
    }

    #[tokio::test]
    async fn corrupt_blocks_are_not_cached() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open_with(&dir.path().display().to_string(), crate::Codec::Lz4)?;
        let key = crate::layout::block_key(1, 3, 0, 100_000);
        store.put(&key, Bytes::from(vec![7u8; 100_000])).await?;
        let path = dir.path().join(&key);
        let good = std::fs::read(&path).expect("read");
        std::fs::write(&path, &good[..good.len() - 1]).expect("truncate");
        let cache = BlockCache::new(1 << 20, None);
        assert!(matches!(cache.fetch(&store, &key, 100_000).await, Err(BlockError::Corrupt { .. })));
        assert!(matches!(cache.fetch_now(&store, &key, 100_000).await, Err(BlockError::Corrupt { .. })));
        assert!(cache.peek(&key).is_none());
        std::fs::write(&path, &good).expect("repair");
        assert_eq!(cache.fetch(&store, &key, 100_000).await?, Bytes::from(vec![7u8; 100_000]));
        Ok(())
    }
}
