//! Cache warm-up: loading a file's blocks into this client's caches ahead of its reads,
//! telling how much of a file is cached, and dropping a file's blocks from the caches.
//!
//! A file is mapped to blocks exactly as the read path maps it (chunks → visible slice
//! segments → blocks, see `read.rs`), so the blocks warmed are the blocks a read asks the
//! caches for: once a file is warm and nothing was evicted since, reading it makes no request
//! to the block store. Byte counts are of the file: a block partly covered by later slices
//! counts only for its visible bytes, and holes count as cached (they are read as zeros).
//! The front-ends decide who may do this (the FUSE mount: read permission on the file).

use futures::StreamExt;
use strata_blocks::BlockError;
use strata_blocks::layout::{Source, block_key, chunk_pieces, visible};
use strata_types::FileType;

use super::Vfs;
use crate::error::Result;

/// How much of a file is in this client's caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cached {
    /// Bytes of the file whose blocks are cached (holes included).
    pub cached: u64,
    /// The file's size.
    pub total: u64,
}

/// What a warm-up did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Bytes of blocks read from the block store for it (whole blocks).
    pub fetched: u64,
    /// How much of the file is cached afterwards: less than all of it when the caches are
    /// too small to hold it (or the file changed meanwhile).
    pub now: Cached,
}

/// The caches' counters, for a front-end to show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads from the block store so far (whole or ranged blocks).
    pub block_gets: u64,
    /// Bytes in the memory cache.
    pub mem_bytes: u64,
    /// Bytes in the disk cache (0 without one).
    pub disk_bytes: u64,
    /// Blocks got from other clients' caches (the peer cache; 0 without one).
    pub peer_gets: u64,
    /// Blocks read from the store because their peer failed or was slow.
    pub peer_fallbacks: u64,
    /// Blocks served to other clients.
    pub peer_served: u64,
    /// Requests of other clients refused.
    pub peer_refused: u64,
    /// Peer caches of the volume known (this one's included; 0 without a peer cache).
    pub peers: u64,
}

/// One block of a file: its key, its length, and how many of the file's bytes it holds.
struct FileBlock {
    key: String,
    len: u32,
    visible: u64,
}

impl Vfs {
    /// The blocks behind a file's bytes as they are now (fresh attributes; slice lists as the
    /// read path has them), each once, in file order; and the file's size.
    async fn file_blocks(&self, ino: u64) -> Result<(Vec<FileBlock>, u64)> {
        if let Some(w) = self.writer(ino)
            && w.lock().await.is_dirty()
        {
            // What this client wrote and has not committed is read from its buffers; the
            // blocks to warm are the committed ones.
            self.commit(ino, false).await?;
        }
        let a = self.getattr(ino).await?;
        if a.kind != FileType::File {
            return Ok((Vec::new(), 0));
        }
        let size = a.size;
        let bs = u64::from(self.volume.block_size);
        let mut blocks: Vec<FileBlock> = Vec::new();
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (idx, pos, n) in chunk_pieces(0, size) {
            let slices = self.chunk(ino, idx).await?;
            for seg in visible(&slices, pos, n) {
                let Source::Data { id, size: ssize, off } = seg.src else { continue };
                let (start, end) = (u64::from(off), u64::from(off) + u64::from(seg.len));
                for b in start / bs..=(end - 1) / bs {
                    let blen = (u64::from(ssize) - b * bs).min(bs);
                    let key = block_key(self.volume.id, id, b as u32, blen as u32);
                    let shown = end.min(b * bs + blen) - start.max(b * bs);
                    match at.get(&key) {
                        Some(&i) => blocks[i].visible += shown,
                        None => {
                            at.insert(key.clone(), blocks.len());
                            blocks.push(FileBlock { key, len: blen as u32, visible: shown });
                        }
                    }
                }
            }
        }
        Ok((blocks, size))
    }

    fn cached_of(&self, blocks: &[FileBlock], size: u64) -> Cached {
        let missing: u64 = blocks.iter().filter(|b| !self.cache.contains(&b.key)).map(|b| b.visible).sum();
        Cached { cached: size.saturating_sub(missing), total: size }
    }

    /// How much of a file is cached here, without loading anything.
    pub async fn cached(&self, ino: u64) -> Result<Cached> {
        let (blocks, size) = self.file_blocks(ino).await?;
        Ok(self.cached_of(&blocks, size))
    }

    /// Loads every block of a file into this client's caches (memory, and disk when the mount
    /// has a disk cache), several at a time, and says how much is cached afterwards. Fetches
    /// count against the mount's QoS byte limit like reads.
    pub async fn warm(&self, ino: u64) -> Result<Warmed> {
        let (blocks, size) = self.file_blocks(ino).await?;
        let parallel = self.cfg.prefetch_parallel.max(1);
        let loads = blocks.iter().filter(|b| !self.cache.contains(&b.key)).map(|b| self.warm_block(&b.key, b.len));
        let results: Vec<Result<u64>> = futures::stream::iter(loads).buffer_unordered(parallel).collect().await;
        let mut fetched = 0;
        for r in results {
            fetched += r?;
        }
        Ok(Warmed { fetched, now: self.cached_of(&blocks, size) })
    }

    /// Loads one block; the bytes read from the store for it.
    async fn warm_block(&self, key: &str, len: u32) -> Result<u64> {
        self.qos.data(u64::from(len)).await;
        match self.cache.warm(&self.store, key, len as usize).await {
            Ok(true) => Ok(u64::from(len)),
            Ok(false) => Ok(0),
            // A block file the server's journal flush has not written yet (see the read path;
            // asked whatever the store looks like here, since a layered one hides its kind).
            Err(BlockError::Missing(_) | BlockError::Short { .. }) => {
                // The copy goes to memory only (as on the read path); a warm-up must leave it
                // on disk too, or a small memory cache drops it before the reads come.
                let data = self.journaled_copy(key, len as usize).await?;
                self.cache.write_disk(key, data).await;
                Ok(u64::from(len))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops a file's blocks from this client's caches (memory and disk) and, for a block
    /// directory on this host, the block files' pages from the kernel's page cache. The bytes
    /// of the file that were cached before.
    pub async fn evict(&self, ino: u64) -> Result<u64> {
        let (blocks, size) = self.file_blocks(ino).await?;
        let before = self.cached_of(&blocks, size);
        let holes = size - blocks.iter().map(|b| b.visible).sum::<u64>().min(size);
        for b in &blocks {
            self.cache.remove(&b.key).await;
        }
        if self.store.is_local() {
            let (store, keys) = (self.store.clone(), blocks.into_iter().map(|b| b.key).collect::<Vec<_>>());
            let dropped = tokio::task::spawn_blocking(move || keys.iter().try_for_each(|k| store.drop_pages(k))).await;
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(ino, error = %e, "could not drop block pages"),
                Err(e) => tracing::debug!(ino, error = %e, "page drop task failed"),
            }
        }
        Ok(before.cached.saturating_sub(holes))
    }

    /// The caches' counters.
    pub fn cache_stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            block_gets: self.store.gets(),
            mem_bytes: self.cache.mem_bytes(),
            disk_bytes: self.cache.disk_bytes(),
            peer_gets: self.peer_counters().map_or(0, |c| c.gets.load(Relaxed)),
            peer_fallbacks: self.peer_counters().map_or(0, |c| c.fallbacks.load(Relaxed)),
            peer_served: self.peer_counters().map_or(0, |c| c.served.load(Relaxed)),
            peer_refused: self.peer_counters().map_or(0, |c| c.refused.load(Relaxed)),
            peers: self.peer_count().unwrap_or(0) as u64,
        }
    }
}
