//! Write-back buffering: writes accumulate into slices (one open slice per chunk), full blocks
//! are uploaded in the background as soon as they fill, and a flush uploads the partial tails
//! and hands the finished slices to the caller to commit in one metadata transaction.
//!
//! Nothing here is visible to other clients until that commit, so a client that dies mid-write
//! leaves the file as it was at its last commit (old data or zeros, never partial garbage).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use strata_blocks::aligned::Buf;
use strata_blocks::layout::{block_key, chunk_pieces};
use strata_blocks::{BlockCache, BlockStore};
use strata_types::{Slice, Timespec};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{Result, VfsError};

/// Memory is accounted in units of this many bytes.
const UNIT: usize = 1024;

/// Shared by every file writer of a mount.
pub struct WriteShared {
    /// Where blocks go.
    pub store: BlockStore,
    /// Written blocks are cached for read-back.
    pub cache: Arc<BlockCache>,
    /// Volume id (part of block keys).
    pub volume: u32,
    /// Block size.
    pub block_size: u32,
    /// Bytes of buffered, not yet uploaded data (in `UNIT`s).
    pub memory: Arc<Semaphore>,
    /// Concurrent block uploads.
    pub uploads: Arc<Semaphore>,
    /// Full uploaded blocks go to the disk cache too, not only to memory.
    pub cache_large_writes: bool,
    /// Uploads holding write-back memory.
    pub(crate) in_flight: Arc<InFlight>,
}

/// How many uploads hold write-back memory, and a signal when the last one gives it back:
/// while some run, a writer out of memory gets some by waiting.
#[derive(Default)]
pub(crate) struct InFlight {
    n: AtomicUsize,
    idle: Notify,
}

/// An upload's write-back memory, counted among the uploads in flight while held.
struct Held {
    memory: Option<OwnedSemaphorePermit>,
    flight: Option<Arc<InFlight>>,
}

impl Held {
    fn new(sh: &WriteShared, memory: Option<OwnedSemaphorePermit>) -> Self {
        let flight = memory.as_ref().map(|_| {
            sh.in_flight.n.fetch_add(1, Ordering::SeqCst);
            sh.in_flight.clone()
        });
        Held { memory, flight }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The memory first: a writer woken by the last upload's end finds it free.
        drop(self.memory.take());
        if let Some(f) = self.flight.take()
            && f.n.fetch_sub(1, Ordering::SeqCst) == 1
        {
            f.idle.notify_waiters();
        }
    }
}

impl WriteShared {
    /// Limits: `buffer` bytes of write-back memory, `parallel` concurrent uploads.
    pub fn new(
        store: BlockStore,
        cache: Arc<BlockCache>,
        volume: u32,
        block_size: u32,
        buffer: u64,
        parallel: usize,
    ) -> Self {
        let units = (buffer as usize / UNIT).clamp(block_size as usize / UNIT * 2, Semaphore::MAX_PERMITS);
        let memory = Arc::new(Semaphore::new(units));
        crate::metrics::track_budget(&memory, units, UNIT);
        WriteShared {
            store,
            cache,
            volume,
            block_size,
            memory,
            uploads: Arc::new(Semaphore::new(parallel.max(1))),
            cache_large_writes: false,
            in_flight: Arc::default(),
        }
    }
}

struct OpenSlice {
    pos: u32,
    id: u64,
    len: u32,
    buf: Buf,
    permit: Option<OwnedSemaphorePermit>,
    blocks_sent: u32,
    /// The block being written straight to its file (large writes to a local store).
    direct: Option<DirectBlock>,
}

/// A block file filled in place, named as if it will be full; renamed at the end of the slice
/// if it is not.
struct DirectBlock {
    file: std::fs::File,
    path: std::path::PathBuf,
    written: usize,
}

/// A slice this large switches to writing its blocks straight into their files (local stores
/// without compression, threads that may block): one copy of the data instead of two, no
/// hand-off per block.
const DIRECT_AFTER: usize = 1 << 20;

fn io_err(what: &str, e: std::io::Error) -> VfsError {
    tracing::error!(error = %e, "{what}");
    VfsError::errno_msg(e.raw_os_error().unwrap_or(libc::EIO), format!("{what}: {e}"))
}

/// Writes as much of `data` as fits in the slice's current block, straight to its file.
fn write_direct(sh: &WriteShared, s: &mut OpenSlice, data: &[u8]) -> Result<usize> {
    use std::io::Write;
    if sh.store.is_compressed() {
        return Err(VfsError::errno_msg(libc::EIO, "direct block write on a compressed volume"));
    }
    let bs = sh.block_size as usize;
    if s.direct.is_none() {
        let key = block_key(sh.volume, s.id, s.blocks_sent, sh.block_size);
        let Some(path) = sh.store.local_path(&key) else {
            return Err(VfsError::errno_msg(libc::EIO, "direct block write on a remote store"));
        };
        let open = || std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path);
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io_err("create block directory", e))?;
                }
                open().map_err(|e| io_err("create block file", e))?
            }
            Err(e) => return Err(io_err("create block file", e)),
        };
        let buffered = std::mem::take(&mut s.buf);
        file.write_all(buffered.as_slice()).map_err(|e| io_err("write block", e))?;
        s.permit = None;
        s.direct = Some(DirectBlock { file, path, written: buffered.len() });
    }
    let Some(d) = s.direct.as_mut() else { return Ok(0) };
    let take = (bs - d.written).min(data.len());
    d.file.write_all(&data[..take]).map_err(|e| io_err("write block", e))?;
    d.written += take;
    s.len += take as u32;
    if d.written == bs {
        strata_blocks::store::start_writeback_of(&d.file);
        sh.store.note_written(d.path.clone());
        sh.store.note_direct_write(bs);
        s.direct = None;
        s.blocks_sent += 1;
    }
    Ok(take)
}

/// Ends a directly written block that is shorter than a full one: its name must say its size.
fn close_direct(sh: &WriteShared, id: u64, block: u32, d: DirectBlock) -> Result<()> {
    drop(d.file);
    let key = block_key(sh.volume, id, block, d.written as u32);
    let Some(to) = sh.store.local_path(&key) else { return Ok(()) };
    std::fs::rename(&d.path, &to).map_err(|e| io_err("rename block", e))?;
    sh.store.note_written(to);
    sh.store.note_direct_write(d.written);
    Ok(())
}

/// The dirty state of one file in this client.
#[derive(Default)]
pub struct FileWriter {
    open: BTreeMap<u32, OpenSlice>,
    finished: Vec<(u32, Slice)>,
    uploads: Vec<JoinHandle<Result<()>>>,
    /// One past the highest byte written and not yet committed.
    pub end: u64,
    /// Time of the last uncommitted write.
    pub mtime: Option<Timespec>,
    /// Quota growth of the buffered writes (see `Vfs::quota_check`).
    pub growth: u64,
    /// When the oldest uncommitted write happened (for the periodic commit).
    pub dirty_since: Option<std::time::Instant>,
    /// A failure of a background commit, reported by the next flush, fsync or close (the data
    /// it held is lost, and the application must learn it like a failed write-back).
    pub error: Option<VfsError>,
    /// Nothing was written since the last durable commit: another one has nothing to do.
    pub durable: bool,
    /// While a durable commit drains: the short blocks kept out of the local store (in the
    /// cache only), for the commit to journal (the server then writes their files) or write.
    deferred: Option<Vec<(String, Bytes)>>,
}

impl FileWriter {
    /// Whether anything is waiting to be committed.
    pub fn is_dirty(&self) -> bool {
        !self.open.is_empty() || !self.finished.is_empty() || !self.uploads.is_empty() || self.error.is_some()
    }

    /// Buffers `data` at file offset `off`. `new_id` hands out fresh slice ids.
    pub async fn write<F, Fut>(&mut self, sh: &WriteShared, off: u64, data: &[u8], mut new_id: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<u64>>,
    {
        if data.is_empty() {
            return Ok(());
        }
        let bs = sh.block_size as usize;
        // In-place block-file writes put the bytes in the page cache as they come; a compressed
        // volume's blocks must go through the codec, so they always take the buffered path. So
        // do blocks of a store that takes O_DIRECT: a copy into an aligned buffer, then the
        // device reads it from there, costs less CPU than ext4's buffered write of each page.
        let direct_ok =
            sh.store.is_local() && !sh.store.is_compressed() && !sh.store.writes_direct() && crate::client::can_block();
        let mut consumed = 0usize;
        for (idx, pos, n) in chunk_pieces(off, data.len() as u64) {
            let mut rest = &data[consumed..consumed + n as usize];
            consumed += n as usize;
            let mut at = pos;
            let mut spare: Option<OwnedSemaphorePermit> = None;
            while !rest.is_empty() {
                if self.open.get(&idx).is_none_or(|s| s.pos + s.len != at) {
                    self.finish_slice(sh, idx).await?;
                    let id = new_id().await?;
                    self.open.insert(
                        idx,
                        OpenSlice {
                            pos: at,
                            id,
                            len: 0,
                            buf: Buf::default(),
                            permit: None,
                            blocks_sent: 0,
                            direct: None,
                        },
                    );
                }
                if direct_ok
                    && let Some(s) = self.open.get_mut(&idx)
                    && (s.direct.is_some() || s.len as usize + rest.len() >= DIRECT_AFTER)
                {
                    let take = write_direct(sh, s, rest)?;
                    rest = &rest[take..];
                    at += take as u32;
                    continue;
                }
                let have = self.open.get(&idx).map(|s| s.buf.len()).unwrap_or(0);
                let take = (bs - have).min(rest.len());
                let units = take.div_ceil(UNIT) as u32;
                let permit = match spare.take() {
                    Some(p) if p.num_permits() >= units as usize => p,
                    other => {
                        drop(other);
                        match sh.memory.clone().try_acquire_many_owned(units) {
                            Ok(p) => p,
                            Err(_) => {
                                spare = Some(self.wait_for_memory(sh, units).await?);
                                continue;
                            }
                        }
                    }
                };
                let Some(s) = self.open.get_mut(&idx) else {
                    continue;
                };
                if s.buf.is_empty() {
                    // A small first write may be a small file: room for it alone. A large one
                    // gets the whole block's buffer (aligned, so it can be written directly).
                    let small = s.len == 0 && rest.len() < bs.min(strata_blocks::aligned::RECYCLE_FROM);
                    s.buf = Buf::with_capacity(if small { rest.len() } else { bs });
                }
                s.buf.extend_from_slice(&rest[..take]);
                s.len += take as u32;
                match &mut s.permit {
                    Some(p) => p.merge(permit),
                    None => s.permit = Some(permit),
                }
                rest = &rest[take..];
                at += take as u32;
                if s.buf.len() == bs {
                    let buf = std::mem::take(&mut s.buf);
                    let block = s.blocks_sent;
                    s.blocks_sent += 1;
                    let permit = s.permit.take();
                    let id = s.id;
                    self.upload(sh, id, block, buf, permit);
                }
            }
            if u64::from(pos + n) == strata_types::CHUNK_SIZE {
                // The slice reached the end of its chunk: nothing can extend it.
                self.finish_slice(sh, idx).await?;
            }
        }
        self.end = self.end.max(off + data.len() as u64);
        self.mtime = Some(Timespec::now());
        self.dirty_since.get_or_insert_with(std::time::Instant::now);
        Ok(())
    }

    /// Waits for `units` of write-back memory. Uploads in flight give theirs back as they end,
    /// so while any run, waiting is enough. With none, the memory is all in blocks still
    /// being filled: this file's are pushed out (uploaded partial, their slices finished) so
    /// that waiting makes progress. Pushing them out only then keeps a store slower than the
    /// writers from splitting blocks into partial uploads (more objects, more requests).
    async fn wait_for_memory(&mut self, sh: &WriteShared, units: u32) -> Result<OwnedSemaphorePermit> {
        let acquire = sh.memory.clone().acquire_many_owned(units);
        tokio::pin!(acquire);
        loop {
            let idle = sh.in_flight.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so the last upload's end is not missed.
            idle.as_mut().enable();
            if sh.in_flight.n.load(Ordering::SeqCst) == 0 {
                let idxs: Vec<u32> = self.open.keys().copied().collect();
                for i in idxs {
                    self.finish_slice(sh, i).await?;
                }
            }
            tokio::select! {
                // The memory first: the last upload gives its memory back before it signals.
                biased;
                p = &mut acquire => return p.map_err(|_| VfsError::errno_msg(libc::EIO, "write buffer closed")),
                () = &mut idle => {}
            }
        }
    }

    fn upload(&mut self, sh: &WriteShared, id: u64, block: u32, buf: Buf, permit: Option<OwnedSemaphorePermit>) {
        let key = block_key(sh.volume, id, block, buf.len() as u32);
        if let Some(deferred) = self.deferred.as_mut().filter(|_| buf.len() < sh.block_size as usize) {
            let data = buf.into_bytes();
            sh.cache.insert(&key, data.clone());
            deferred.push((key, data));
            drop(permit);
            return;
        }
        // A short (tail) block on a thread that may block and a local store: write it right
        // here. Small files then cost no hand-off between threads at close.
        if buf.len() < sh.block_size as usize && crate::client::can_block() {
            let data = buf.into_bytes();
            match sh.store.put_now(&key, &data) {
                Some(Ok(())) => {
                    sh.cache.insert(&key, data);
                    drop(permit);
                    return;
                }
                Some(Err(e)) => {
                    tracing::debug!(key, error = %e, "in-place block write failed; retrying through the store")
                }
                None => {}
            }
            return self.spawn_upload(sh, key, data, permit);
        }
        self.spawn_upload(sh, key, buf.into_bytes(), permit);
    }

    fn spawn_upload(&mut self, sh: &WriteShared, key: String, data: Bytes, permit: Option<OwnedSemaphorePermit>) {
        let (store, cache, uploads) = (sh.store.clone(), sh.cache.clone(), sh.uploads.clone());
        // A full block is part of a large write (a checkpoint, a copied dataset): on the disk
        // cache it would cost a second write of every byte and evict what jobs read, as
        // JuiceFS also decides (`--cache-large-write`). Small files and tails go there.
        let to_disk = sh.cache_large_writes || data.len() < sh.block_size as usize;
        // A full block a local store writes with O_DIRECT is read back from its file, as one
        // written in place is: kept in memory too, every block of a long write would be fresh
        // memory (a page fault per 4 KiB) instead of a reused buffer.
        let keep = to_disk || !sh.store.puts_direct(&data);
        let held = Held::new(sh, permit);
        self.uploads.push(tokio::spawn(async move {
            let _slot = uploads.acquire_owned().await.map_err(|_| VfsError::errno_msg(libc::EIO, "uploads closed"))?;
            store.put(&key, data.clone()).await.map_err(|e| {
                tracing::error!(key, error = %e, "block upload failed");
                VfsError::from(e)
            })?;
            if to_disk {
                cache.insert_stored(&key, data);
            } else if keep {
                cache.insert(&key, data);
            }
            drop(held);
            Ok(())
        }));
    }

    async fn finish_slice(&mut self, sh: &WriteShared, idx: u32) -> Result<()> {
        let Some(mut s) = self.open.remove(&idx) else {
            return Ok(());
        };
        if s.len == 0 {
            return Ok(());
        }
        if let Some(d) = s.direct.take() {
            close_direct(sh, s.id, s.blocks_sent, d)?;
        }
        if !s.buf.is_empty() {
            let buf = std::mem::take(&mut s.buf);
            let permit = s.permit.take();
            self.upload(sh, s.id, s.blocks_sent, buf, permit);
        }
        self.finished.push((idx, Slice { pos: s.pos, id: s.id, size: s.len, off: 0, len: s.len }));
        // Keep the number of in-flight handles bounded for long sequential writes.
        if self.uploads.len() > 64 {
            self.reap_uploads(false).await?;
        }
        Ok(())
    }

    async fn reap_uploads(&mut self, all: bool) -> Result<()> {
        let mut first_err = None;
        let handles = std::mem::take(&mut self.uploads);
        for h in handles {
            if !all && !h.is_finished() {
                self.uploads.push(h);
                continue;
            }
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(e) => first_err = first_err.or(Some(VfsError::errno_msg(libc::EIO, format!("upload task: {e}")))),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Uploads everything buffered and returns the slices to commit, in write order. On an
    /// upload error the slices are dropped (their data is lost to the caller, who gets EIO).
    pub async fn drain(&mut self, sh: &WriteShared) -> Result<Vec<(u32, Slice)>> {
        let idxs: Vec<u32> = self.open.keys().copied().collect();
        for idx in idxs {
            self.finish_slice(sh, idx).await?;
        }
        let res = self.reap_uploads(true).await;
        let slices = std::mem::take(&mut self.finished);
        res.map(|()| slices)
    }

    /// [`FileWriter::drain`] for a durable commit to a local store: the short blocks not yet
    /// stored are not written but returned (key, bytes), to be journaled with the commit or,
    /// if they cannot be, stored by the caller before it commits.
    pub async fn drain_deferring(&mut self, sh: &WriteShared) -> Result<(Vec<(u32, Slice)>, Vec<(String, Bytes)>)> {
        if !sh.store.is_local() {
            return Ok((self.drain(sh).await?, Vec::new()));
        }
        self.deferred = Some(Vec::new());
        let res = self.drain(sh).await;
        let deferred = self.deferred.take().unwrap_or_default();
        Ok((res?, deferred))
    }

    /// Whether there are finished slices worth committing before the file is closed (whole
    /// chunks written), so long writes become visible and crash-safe progressively.
    pub fn has_finished_chunks(&self) -> bool {
        !self.finished.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_blocks::Codec;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"0123456789abcdef"[(i / 7 + i / 4096) % 16]).collect()
    }

    /// Writes `total` bytes in 128 KiB pieces from a thread that may block (as a FUSE thread
    /// does), drains, and reads every block back through the store.
    async fn write_and_check(codec: Codec) -> (tempfile::TempDir, Vec<(u32, Slice)>, usize) {
        crate::client::allow_blocking_io();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open_with(&dir.path().display().to_string(), codec).expect("store");
        let bs: u32 = 1 << 20;
        let sh = WriteShared::new(store.clone(), Arc::new(BlockCache::new(64 << 20, None)), 1, bs, 64 << 20, 4);
        let total = 3 * bs as usize + 12345;
        let content = data(total);
        let mut w = FileWriter::default();
        let mut next = 100u64;
        for (i, piece) in content.chunks(128 << 10).enumerate() {
            let off = (i * (128 << 10)) as u64;
            w.write(&sh, off, piece, || {
                next += 1;
                std::future::ready(Ok(next))
            })
            .await
            .expect("write");
        }
        let handed_off = w.uploads.len();
        let slices = w.drain(&sh).await.expect("drain");
        assert_eq!(slices.len(), 1);
        let s = slices[0].1;
        assert_eq!(s.len as usize, total);
        let mut back = Vec::new();
        for (i, len) in strata_blocks::layout::slice_blocks(s.size, bs) {
            back.extend_from_slice(&store.get(&block_key(1, s.id, i, len), len as usize).await.expect("get"));
        }
        assert!(back == content, "{codec:?}: blocks hold what was written");
        (dir, slices, handed_off)
    }

    #[tokio::test]
    async fn compressed_volumes_never_write_block_files_directly() {
        for codec in [Codec::Lz4, Codec::Zstd] {
            let (dir, slices, handed_off) = write_and_check(codec).await;
            assert_eq!(handed_off, 3, "{codec:?}: the full blocks were uploaded through the store");
            let s = slices[0].1;
            for (i, len) in strata_blocks::layout::slice_blocks(s.size, 1 << 20) {
                let file = std::fs::read(dir.path().join(block_key(1, s.id, i, len))).expect("block file");
                assert_eq!(file[..4], strata_blocks::codec::MAGIC, "{codec:?} block {i} went through the codec");
                assert!(file.len() < len as usize / 2, "{codec:?} block {i} is compressed");
            }
        }
    }

    /// On a store that is not a local directory, uploaded blocks go to the disk cache only
    /// when partial (a small file, a tail), unless the mount asked for large writes too.
    #[tokio::test]
    async fn only_partial_uploads_go_to_the_disk_cache_by_default() {
        let bs: u32 = 1 << 20;
        let total = 2 * bs as usize + 12345;
        let content = data(total);
        for large in [false, true] {
            let cache_dir = tempfile::tempdir().expect("tempdir");
            let disk = strata_blocks::DiskCache::open(cache_dir.path().join("c"), 64 << 20).expect("disk cache");
            let store = BlockStore::from_store(Arc::new(object_store::memory::InMemory::new()), "memory://writer-test");
            let sh = WriteShared {
                cache_large_writes: large,
                ..WriteShared::new(store, Arc::new(BlockCache::new(64 << 20, Some(disk))), 1, bs, 64 << 20, 4)
            };
            let mut w = FileWriter::default();
            w.write(&sh, 0, &content, || std::future::ready(Ok(7))).await.expect("write");
            let slices = w.drain(&sh).await.expect("drain");
            assert_eq!(slices[0].1.len as usize, total);
            let key = |i: u32, len: u32| cache_dir.path().join("c").join(block_key(1, 7, i, len));
            // The disk copies are written in the background.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !key(2, 12345).exists() && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(key(2, 12345).exists(), "large={large}: the tail block is on the disk cache");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            for i in 0..2 {
                assert_eq!(key(i, bs).exists(), large, "large={large}: full block {i} on the disk cache");
            }
        }
    }

    /// A store slower than the writer fills the write-back memory mid-block: the writer waits
    /// for uploads in flight instead of uploading its partly filled block, so the file is one
    /// slice of whole blocks (one object each) and the bytes are exact.
    #[tokio::test]
    async fn a_full_buffer_waits_for_uploads_rather_than_splitting_blocks() {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let bs: u32 = 1 << 20;
        let total = 6 * bs as usize + 4321;
        let content = data(total);
        let mem = Arc::new(object_store::memory::InMemory::new());
        let store = BlockStore::from_store(mem.clone(), "memory://writer-full");
        // The smallest buffer (two blocks) and one upload at a time. Writes of 1,000 bytes
        // are accounted a unit (1 KiB) each, so the memory runs out in the middle of a block.
        let sh = WriteShared::new(store, Arc::new(BlockCache::new(64 << 20, None)), 1, bs, 0, 1);
        let mut w = FileWriter::default();
        let mut next = 7;
        for (i, piece) in content.chunks(1000).enumerate() {
            w.write(&sh, (i * 1000) as u64, piece, || {
                next += 1;
                std::future::ready(Ok(next))
            })
            .await
            .expect("write");
        }
        let slices = w.drain(&sh).await.expect("drain");
        assert_eq!(slices.len(), 1, "one slice: {slices:?}");
        let objects: Vec<_> = mem.list(None).try_collect().await.expect("list");
        let mut sizes: Vec<u64> = objects.iter().map(|o| o.size).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [4321, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20], "whole blocks and the tail");
        let id = slices[0].1.id;
        let mut back = Vec::new();
        for b in 0..7u32 {
            let len = if b == 6 { 4321 } else { bs };
            back.extend_from_slice(&sh.store.get(&block_key(1, id, b, len), len as usize).await.expect("get"));
        }
        assert!(back == content, "the blocks hold the bytes written");
        assert_eq!(sh.memory.available_permits(), (2 * bs as usize) / UNIT, "all the memory is back");
    }

    #[tokio::test]
    async fn uncompressed_local_volumes_keep_plain_block_files() {
        let (dir, slices, handed_off) = write_and_check(Codec::None).await;
        let direct = strata_blocks::aligned::probe(dir.path());
        if direct {
            assert_eq!(handed_off, 3, "full blocks were buffered, then written with O_DIRECT");
        } else {
            assert_eq!(handed_off, 0, "past 1 MiB the blocks were written straight into their files");
        }
        let s = slices[0].1;
        // Either way, blocks are plain files of the block's bytes.
        let first = std::fs::read(dir.path().join(block_key(1, s.id, 0, 1 << 20))).expect("block file");
        assert_eq!(first, data(1 << 20));
    }

    /// A tmpfs of `size` mounted on a new directory, unmounted when dropped.
    struct SmallDisk(tempfile::TempDir);

    impl SmallDisk {
        fn new(size: &str) -> Self {
            let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mounting a tmpfs needs root, as the FUSE tests do");
            SmallDisk(dir)
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0.path()).status();
        }
    }

    /// Every block file under `dir` holds the bytes its name says: nothing partial is left.
    fn blocks_are_whole(dir: &std::path::Path) -> usize {
        let mut n = 0;
        for e in walk(dir) {
            let name = e.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with(".strata") {
                continue;
            }
            let want = strata_blocks::layout::block_len_of_key(&name).unwrap_or(u32::MAX);
            let got = std::fs::metadata(&e).expect("stat").len();
            assert_eq!(got, u64::from(want), "{} holds what its name says", e.display());
            n += 1;
        }
        n
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
        out
    }

    /// A local store on a disk that fills up mid-write: the writer learns ENOSPC (not EIO),
    /// and no block file is left holding part of a block, on the direct and buffered paths.
    #[tokio::test]
    async fn a_full_disk_fails_the_write_with_enospc_and_leaves_no_partial_block() {
        crate::client::allow_blocking_io();
        let disk = SmallDisk::new("3m");
        let store = BlockStore::open(&disk.0.path().display().to_string()).expect("store");
        let bs: u32 = 1 << 20;
        let sh = WriteShared::new(store.clone(), Arc::new(BlockCache::new(64 << 20, None)), 1, bs, 64 << 20, 4);
        let content = data(8 * bs as usize);
        let mut w = FileWriter::default();
        let mut next = 100u64;
        let mut failed = None;
        for (i, piece) in content.chunks(128 << 10).enumerate() {
            let off = (i * (128 << 10)) as u64;
            let r = w
                .write(&sh, off, piece, || {
                    next += 1;
                    std::future::ready(Ok(next))
                })
                .await;
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => w.drain(&sh).await.expect_err("8 MiB cannot fit in 3 MiB"),
        };
        assert_eq!(err.errno(), libc::ENOSPC, "{err}");
        let whole = blocks_are_whole(disk.0.path());
        assert!((1..=3).contains(&whole), "{whole} blocks fit");
    }
}
