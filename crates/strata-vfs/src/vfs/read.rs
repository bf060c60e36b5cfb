//! The read path: slice lists, blocks through the caches, and read-ahead.

use std::sync::Arc;

use bytes::Bytes;
use strata_blocks::BlockError;
use strata_blocks::layout::{Source, block_key, chunk_pieces, visible};
use strata_proto::conv::slice_from_pb;
use strata_proto::pb;
use strata_proto::wire::Method;
use strata_types::Slice;

use super::{Handle, Vfs};
use crate::error::Result;

/// Shared zeros that holes are read as.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Blocks read in part lately, remembered so that a second partial read of one of them
/// fetches it whole, and files whose partial reads come back that way, whose other blocks are
/// then fetched whole at once (see [`RangedBlocks::again`]).
pub(super) struct RangedBlocks {
    seen: std::sync::Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    keys: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
    /// Per file: (blocks read in part or fetched whole at a first partial read, those of
    /// them read in part a second time).
    files: std::collections::HashMap<u64, (u32, u32)>,
}

impl RangedBlocks {
    /// How many blocks are remembered (4,096 blocks of 4 MiB: the last 16 GiB read at random).
    const KEEP: usize = 4096;
    /// A file is dense once this many of its blocks came back...
    const DENSE_AGAIN: u32 = 4;
    /// ...and they are at least a quarter of those it read in part.
    const DENSE_SHARE: u32 = 4;

    pub(super) fn new() -> Self {
        RangedBlocks { seen: std::sync::Mutex::new(Seen::default()) }
    }

    /// Notes a partial read of block `key` of file `ino`; whether to fetch the block whole.
    /// Random reads that come back to a block are dense (a data loader's records, a
    /// database's pages): one whole-block fetch then serves all later reads of it from the
    /// cache, where ranged reads would pay one store round trip each, and a store's round trip
    /// costs about as much for 4 MiB as for 4 KiB. So a block read in part a second time is
    /// fetched whole, and once a quarter of a file's blocks read in part came back (four at
    /// least), its other blocks are fetched whole at their first read: a dense reader then
    /// makes one GET per block, not two. Blocks fetched that way count as read in part and
    /// never come back, so a file whose reads turn sparse drops below the share and is read
    /// ranged again. Reads that never come back stay ranged, so sparse random access to a huge
    /// file costs no more than the bytes it asks for (plus one block per block read twice).
    pub(super) fn again(&self, ino: u64, key: &str) -> bool {
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let g = &mut *g;
        if g.files.len() > Self::KEEP {
            g.files.clear();
        }
        let file = g.files.entry(ino).or_default();
        if g.keys.remove(key) {
            file.1 += 1;
            return true;
        }
        file.0 += 1;
        if file.1 >= Self::DENSE_AGAIN && file.1 * Self::DENSE_SHARE >= file.0 {
            return true;
        }
        g.keys.insert(key.to_string());
        g.order.push_back(key.to_string());
        while g.order.len() > Self::KEEP {
            if let Some(old) = g.order.pop_front() {
                g.keys.remove(&old);
            }
        }
        false
    }
}

/// How [`Vfs::read_slice`] fetches blocks that are not cached.
#[derive(Clone, Copy)]
pub(super) enum Fetch {
    /// Whole blocks: sequential reads, compaction.
    Whole,
    /// Reads of file `ino` at random: ranged or whole, as [`RangedBlocks::again`] decides.
    Random(u64),
}

/// A handle's read-ahead state: where the last read ended, the window, and how far ahead
/// blocks were already fetched.
#[derive(Default, Debug)]
pub(super) struct ReadState {
    last_end: u64,
    window: u64,
    prefetched_to: u64,
}

impl ReadState {
    /// Notes a read of `off..end` with read-ahead up to `max` bytes; whether it continues a
    /// sequential stream (within 1 MiB of where the last read ended), after which read-ahead
    /// runs. The window doubles with each sequential read, from 8 MiB; any other read ends
    /// the stream.
    fn note_read(&mut self, off: u64, end: u64, max: u64) -> bool {
        let seq =
            off == self.last_end || (off > self.last_end.saturating_sub(1 << 20) && off <= self.last_end + (1 << 20));
        self.window = if seq { (self.window * 2).clamp(max.min(8 << 20), max) } else { 0 };
        if !seq {
            // A new stream (say the file read again from the start): what was fetched ahead
            // of the old one says nothing about this one.
            self.prefetched_to = end;
        }
        self.last_end = end;
        seq && self.window > 0
    }

    /// The range to fetch ahead of a sequential read that ended at `from`, in a file of
    /// `fsize` bytes (and notes it fetched); `None` when what is already fetched covers
    /// enough of the window.
    fn ahead(&mut self, from: u64, fsize: u64) -> Option<(u64, u64)> {
        let stop = fsize.min(from + self.window);
        let start = from.max(self.prefetched_to);
        if start >= stop || start.saturating_sub(from) > self.window / 2 {
            return None;
        }
        self.prefetched_to = stop;
        Some((start, stop))
    }
}

impl Vfs {
    pub(super) async fn chunk(&self, ino: u64, idx: u32) -> Result<Arc<Vec<Slice>>> {
        if let Some(c) = Self::lock(&self.inodes).get(&ino).and_then(|c| c.chunks.get(&idx)).cloned() {
            return Ok(c);
        }
        let r = self.client.call::<_, pb::ChunkResp>(Method::ReadChunk, |_| pb::ChunkReq { ino, index: idx }).await?;
        let list = Arc::new(r.slices.iter().map(slice_from_pb).collect::<Vec<_>>());
        Self::lock(&self.inodes).entry(ino).or_default().chunks.insert(idx, list.clone());
        Ok(list)
    }

    pub(super) fn file_size(&self, ino: u64) -> Option<u64> {
        Self::lock(&self.inodes).get(&ino).and_then(|c| c.attr).map(|a| a.size)
    }

    /// Reads up to `size` bytes at `off`.
    pub async fn read(&self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let segs = self.read_bytes(fh, off, size).await?;
        let mut out = Vec::with_capacity(segs.iter().map(Bytes::len).sum());
        for s in &segs {
            out.extend_from_slice(s);
        }
        Ok(out)
    }

    /// Reads up to `size` bytes at `off` as the cached blocks' own bytes, in order (holes as
    /// shared zeros): a caller that sends them with vectored writes copies nothing.
    pub async fn read_bytes(&self, fh: u64, off: u64, size: u32) -> Result<Vec<Bytes>> {
        let h = self.handle(fh)?;
        let ino = h.ino;
        if let Some(w) = self.writer(ino)
            && w.lock().await.is_dirty()
        {
            self.commit(ino, false).await?;
        }
        let fsize = match self.file_size(ino) {
            Some(s) => s,
            None => {
                let a = self.getattr(ino).await?;
                self.observe(ino, &a);
                a.size
            }
        };
        if off >= fsize {
            self.qos.op().await;
            return Ok(Vec::new());
        }
        let end = fsize.min(off + u64::from(size));
        self.qos.data(end - off).await;
        let sequential = h.read.lock().unwrap_or_else(|p| p.into_inner()).note_read(off, end, self.cfg.readahead);
        let out = self.read_range(ino, off, end, sequential).await?;
        if sequential
            && end < fsize
            && let Some(me) = self.me.upgrade()
        {
            // In the background: starting the fetches may wait for a free prefetch slot (and a
            // chunk's slice list), which this read's answer must not.
            tokio::spawn(async move { me.readahead(&h, ino, end, fsize).await });
        }
        crate::metrics::get().read_bytes.inc_by(end - off);
        Ok(out)
    }

    pub(super) async fn read_range(&self, ino: u64, off: u64, end: u64, whole_blocks: bool) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        for (idx, pos, n) in chunk_pieces(off, end - off) {
            let slices = self.chunk(ino, idx).await?;
            for seg in visible(&slices, pos, n) {
                match seg.src {
                    Source::Data { id, size, off: soff } => {
                        let mut sink = |b: Bytes| out.push(b);
                        let fetch = if whole_blocks { Fetch::Whole } else { Fetch::Random(ino) };
                        self.read_slice(id, size, soff, seg.len as usize, fetch, &mut sink).await?;
                    }
                    _ => {
                        let mut left = seg.len as usize;
                        while left > 0 {
                            let k = left.min(ZEROS.len());
                            out.push(Bytes::from_static(&ZEROS[..k]));
                            left -= k;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads `len` bytes of slice `id` from `soff` on, handing them to `sink` in order.
    pub(super) async fn read_slice(
        &self,
        id: u64,
        size: u32,
        soff: u32,
        len: usize,
        fetch: Fetch,
        sink: &mut (dyn FnMut(Bytes) + Send),
    ) -> Result<()> {
        let bs = self.volume.block_size;
        let mut done = 0usize;
        while done < len {
            let pos = soff + done as u32;
            let b = pos / bs;
            let bstart = b * bs;
            let blen = (size - bstart).min(bs);
            let key = block_key(self.volume.block_volume(id), id, b, blen);
            let in_block = (pos - bstart) as usize;
            let n = (blen as usize - in_block).min(len - done);
            if let Some(data) = self.cache.peek(&key) {
                sink(data.slice(in_block..in_block + n));
            } else if matches!(fetch, Fetch::Whole)
                || self.peers.is_some()
                || blen <= 256 * 1024
                || n * 4 >= blen as usize
                || self.store.is_compressed()
                || self.cache.contains(&key)
                || matches!(fetch, Fetch::Random(ino) if self.ranged.again(ino, &key))
            {
                // Whole blocks through the cache (a compressed block can only be read whole;
                // one on the disk cache is read from there, not from the store).
                let fetched = if let Some(peer) = self.peers.as_ref().and_then(|p| p.owner(&key)) {
                    self.fetch_from_peer(&peer, &key, blen as usize).await
                } else if crate::client::can_block() {
                    self.cache.fetch_now(&self.store, &key, blen as usize).await
                } else {
                    self.cache.fetch(&self.store, &key, blen as usize).await
                };
                let data = match fetched {
                    // A short file may be one the server's journal flush is writing right now.
                    Err(BlockError::Missing(_) | BlockError::Short { .. }) if self.store.is_local() => {
                        self.journaled_copy(&key, blen as usize).await?
                    }
                    r => r?,
                };
                sink(data.slice(in_block..in_block + n));
            } else {
                match self.store.get_range(&key, in_block as u64..(in_block + n) as u64).await {
                    // A short file may be one the server's journal flush is writing right now.
                    Err(BlockError::Missing(_) | BlockError::Short { .. }) if self.store.is_local() => {
                        sink(self.journaled_copy(&key, blen as usize).await?.slice(in_block..in_block + n))
                    }
                    r => sink(r?),
                }
            }
            done += n;
        }
        Ok(())
    }

    /// A whole block through the caches, from its owner's cache when this client does not
    /// have it (falling back to the store).
    async fn fetch_from_peer(&self, owner: &str, key: &str, len: usize) -> std::result::Result<Bytes, BlockError> {
        match &self.peers {
            Some(p) => self.cache.fetch_with(key, len, p.get(owner, key, len, &self.store)).await,
            None => self.cache.fetch(&self.store, key, len).await,
        }
    }

    /// A block for another client of the volume (the peer cache): from this client's caches,
    /// else from the store (once, however many ask), kept in the caches.
    pub(crate) async fn peer_serve(&self, key: &str, len: usize) -> std::result::Result<Bytes, BlockError> {
        self.cache.fetch(&self.store, key, len).await
    }

    /// The peer cache's counters, with a peer cache on.
    pub fn peer_counters(&self) -> Option<&crate::peer::PeerCounters> {
        self.peers.as_deref().map(|p| &p.counters)
    }

    /// How many peer caches the volume has (this one's included), with a peer cache on.
    pub fn peer_count(&self) -> Option<usize> {
        self.peers.as_deref().map(crate::peer::Peers::len)
    }

    /// A block whose file is missing (or still being written) in the local store: a durable
    /// commit may have left the file to the server, which writes it within a background round
    /// and until then answers with the journaled copy. Without a copy the file was written
    /// meanwhile, or is lost.
    pub(super) async fn journaled_copy(&self, key: &str, len: usize) -> Result<Bytes> {
        let r = self
            .client
            .call::<_, pb::BytesResp>(Method::JournaledBlock, |_| pb::BlockKeyReq { key: key.to_string() })
            .await;
        match r {
            Ok(r) => {
                let data = self.store.decode(key, len, Bytes::from(r.data)).await?;
                self.cache.insert(key, data.clone());
                Ok(data)
            }
            Err(e) if e.errno() == libc::ENOENT => Ok(self.cache.fetch(&self.store, key, len).await?),
            Err(e) => Err(e),
        }
    }

    /// Starts background fetches of the blocks after a sequential read.
    pub(super) async fn readahead(&self, h: &Handle, ino: u64, from: u64, fsize: u64) {
        let Some((start, stop)) = h.read.lock().unwrap_or_else(|p| p.into_inner()).ahead(from, fsize) else {
            return;
        };
        let bs = u64::from(self.volume.block_size);
        for (idx, pos, n) in chunk_pieces(start, stop - start) {
            let Ok(slices) = self.chunk(ino, idx).await else {
                return;
            };
            for seg in visible(&slices, pos, n) {
                let Source::Data { id, size, off } = seg.src else {
                    continue;
                };
                let first = u64::from(off) / bs;
                let last = (u64::from(off) + u64::from(seg.len) - 1) / bs;
                for b in first..=last {
                    let blen = (u64::from(size) - b * bs).min(bs) as u32;
                    let key = block_key(self.volume.block_volume(id), id, b as u32, blen);
                    if self.cache.peek(&key).is_some() {
                        continue;
                    }
                    let Ok(permit) = self.prefetch.clone().acquire_owned().await else {
                        return;
                    };
                    let (cache, store) = (self.cache.clone(), self.store.clone());
                    let peer = self.peers.as_ref().and_then(|p| Some((p.clone(), p.owner(&key)?)));
                    tokio::spawn(async move {
                        let r = match peer {
                            Some((peers, owner)) => {
                                cache
                                    .fetch_with(&key, blen as usize, peers.get(&owner, &key, blen as usize, &store))
                                    .await
                            }
                            None => cache.fetch(&store, &key, blen as usize).await,
                        };
                        if let Err(e) = r {
                            tracing::debug!(key, error = %e, "read-ahead fetch failed");
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_read_in_part_twice_is_fetched_whole() {
        let r = RangedBlocks::new();
        assert!(!r.again(1, "a"), "first partial read stays ranged");
        assert!(!r.again(1, "b"));
        assert!(r.again(1, "a"), "second partial read of a: whole");
        for i in 0..RangedBlocks::KEEP {
            r.again(2 + i as u64, &format!("x{i}"));
        }
        assert!(!r.again(1, "b"), "forgotten after KEEP other blocks");
    }

    #[test]
    fn a_file_whose_blocks_come_back_is_read_whole_until_its_reads_turn_sparse() {
        let r = RangedBlocks::new();
        // Eight blocks read in part, four of them twice: dense (4 of 8 came back).
        for b in 0..8 {
            assert!(!r.again(7, &format!("f/{b}")));
        }
        for b in 0..4 {
            assert!(r.again(7, &format!("f/{b}")), "block {b} read twice");
        }
        // New blocks of the file are now fetched whole at their first read...
        let mut whole = 0;
        while r.again(7, &format!("f/new{whole}")) {
            whole += 1;
        }
        // ...until they outnumber the blocks that came back four to one: 8 blocks.
        assert_eq!(whole, 8, "whole-block first reads before the file counts as sparse");
        // Another file read sparsely never turns dense: its reads stay ranged.
        for b in 0..1000 {
            assert!(!r.again(9, &format!("g/{b}")), "sparse block {b}");
        }
        // Nor does a file with a few blocks that came back among many that did not.
        for b in 0..3 {
            assert!(r.again(9, &format!("g/{b}")));
        }
        assert!(!r.again(9, "g/next"));
    }

    #[test]
    fn read_ahead_grows_with_a_stream_and_restarts_after_a_jump() {
        const MIB: u64 = 1 << 20;
        let (max, fsize) = (64 * MIB, 1 << 40);
        let mut st = ReadState::default();
        // A stream from the start: the window starts at 8 MiB and doubles up to the maximum.
        assert!(st.note_read(0, MIB, max));
        assert_eq!(st.ahead(MIB, fsize), Some((MIB, 9 * MIB)));
        let mut at = MIB;
        for want in [16, 32, 64] {
            assert!(st.note_read(at, at + MIB, max));
            at += MIB;
            assert_eq!(st.window, want * MIB);
            let (_, stop) = st.ahead(at, fsize).expect("fetches ahead");
            assert_eq!(stop, at + want * MIB);
        }
        // While more than half the window is fetched already, nothing more is fetched; the
        // window stays at the maximum.
        assert!(st.note_read(at, at + MIB, max));
        assert_eq!(st.window, max);
        assert_eq!(st.ahead(at + MIB, fsize), None, "{st:?}");
        // A jump ends the stream: no read-ahead, and the old stream's fetches are forgotten.
        assert!(!st.note_read(500 * MIB, 501 * MIB, max));
        assert_eq!((st.window, st.prefetched_to), (0, 501 * MIB));
        // The next sequential read restarts it from 8 MiB at the new place, not behind or past it.
        assert!(st.note_read(501 * MIB, 502 * MIB, max));
        assert_eq!(st.ahead(502 * MIB, fsize), Some((502 * MIB, 510 * MIB)));
        // Reading the file again from the start is a new stream too.
        assert!(!st.note_read(0, MIB, max));
        assert!(st.note_read(MIB, 2 * MIB, max));
        assert_eq!(st.ahead(2 * MIB, fsize), Some((2 * MIB, 10 * MIB)));
        // Never past the end of the file; with read-ahead off, none at all.
        assert_eq!(ReadState { window: 8 * MIB, ..Default::default() }.ahead(MIB, 3 * MIB), Some((MIB, 3 * MIB)));
        let mut off = ReadState::default();
        assert!(!off.note_read(0, MIB, 0) && !off.note_read(MIB, 2 * MIB, 0));
    }
}
