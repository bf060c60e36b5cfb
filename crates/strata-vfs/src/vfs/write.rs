//! The write path: buffered writes, quota at write time, commits (with the small-block journal)
//! and chunk compaction.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_blocks::layout::{Source, block_key, visible};
use strata_proto::conv::{slice_from_pb, slice_to_pb};
use strata_proto::pb;
use strata_proto::wire::Method;
use strata_types::{CHUNK_SIZE, Slice};

use std::sync::Arc;

use super::{Vfs, attr_of};
use crate::error::{Result, VfsError};
use crate::writer::FileWriter;

/// Most bytes of blocks a durable commit journals instead of syncing their files (the
/// server accepts no more).
const JOURNAL_MAX: u64 = strata_types::MAX_JOURNAL_BYTES as u64;

/// Writes stay buffered at most this long before they are committed, even if the file is
/// never closed: a slow writer's data becomes visible and crash-safe, and no uploaded block
/// stays unreferenced for long (the server collects old unreferenced blocks).
const COMMIT_AFTER: Duration = Duration::from_secs(5);

impl Vfs {
    pub(super) async fn next_slice_id(&self) -> Result<u64> {
        let mut r = self.ids.lock().await;
        if r.0 >= r.1 {
            const BATCH: u64 = 256;
            let first = self
                .client
                .call::<_, pb::AllocResp>(Method::AllocSlices, |_| pb::AllocReq { count: BATCH })
                .await?
                .first;
            *r = (first, first + BATCH);
        }
        let id = r.0;
        r.0 += 1;
        Ok(id)
    }

    /// Buffers a write; returns the bytes accepted.
    pub async fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<usize> {
        let h = self.handle(fh)?;
        if !h.write {
            return Err(VfsError::from_errno(libc::EBADF));
        }
        if off.checked_add(data.len() as u64).is_none_or(|e| e > strata_types::MAX_FILE_SIZE) {
            return Err(VfsError::from_errno(libc::EFBIG));
        }
        self.qos.data(data.len() as u64).await;
        let w = {
            let mut m = Self::lock(&self.writers);
            m.entry(h.ino).or_default().clone()
        };
        let mut w = w.lock().await;
        let growth = match self.quota_check(h.ino, &w, off, data.len() as u64) {
            Ok(g) => g,
            Err(_) => {
                // The use last reported may be stale (another client deleted files, the volume
                // was expanded): ask the server before refusing.
                self.refresh_quota().await?;
                self.quota_check(h.ino, &w, off, data.len() as u64)?
            }
        };
        w.durable = false;
        w.write(&self.shared, off, data, || self.next_slice_id()).await?;
        w.growth += growth;
        if w.has_finished_chunks() && w.end - off >= CHUNK_SIZE {
            drop(w);
            self.commit(h.ino, false).await?;
        }
        crate::metrics::get().written_bytes.inc_by(data.len() as u64);
        Ok(data.len())
    }

    /// Uploads and commits this client's buffered writes to a file.
    pub async fn commit(&self, ino: u64, durable: bool) -> Result<()> {
        let Some(w) = self.writer(ino) else {
            if durable {
                // Blocks of earlier, non-durable commits (periodic ones, closes) may still be in
                // the page cache of a local store.
                self.store.sync().await?;
                self.client.call::<_, pb::Empty>(Method::Sync, |_| pb::Empty {}).await?;
            }
            return Ok(());
        };
        let mut w = w.lock().await;
        if let Some(e) = w.error.take() {
            return Err(e);
        }
        if durable && w.durable && !w.is_dirty() {
            // Repeated fsync or COMMIT with no write in between.
            return Ok(());
        }
        let outcome = self.commit_locked(&mut w, ino, durable).await;
        w.durable = durable && outcome.is_ok();
        // Committed or failed, the buffered writes are no longer pending: a failed commit's data
        // is gone and the caller learns it from the error.
        w.end = 0;
        w.mtime = None;
        w.dirty_since = None;
        self.pending_growth.fetch_sub(std::mem::take(&mut w.growth), Ordering::Relaxed);
        let (slices, r) = match outcome? {
            Some(done) => done,
            None => return Ok(()),
        };
        let (_, a) = attr_of(r.attr)?;
        self.quota_capacity.store(r.capacity, Ordering::Relaxed);
        self.quota_used.store(r.used_bytes, Ordering::Relaxed);
        for idx in r.crowded {
            self.start_compaction(ino, idx);
        }
        {
            let mut m = Self::lock(&self.inodes);
            let c = m.entry(ino).or_default();
            for n in &r.chunks {
                let ours: Vec<Slice> =
                    slices.iter().filter(|(i, s)| *i == n.index && s.len > 0).map(|(_, s)| *s).collect();
                let count = n.count as usize;
                match c.chunks.get_mut(&n.index) {
                    // The server appended ours after the list this client knew.
                    Some(list) if list.len() + ours.len() == count => Arc::make_mut(list).extend(ours),
                    // Another client wrote to the chunk meanwhile: read it again when needed.
                    Some(_) => {
                        c.chunks.remove(&n.index);
                    }
                    // Every slice of the chunk is one of ours (a new file written at once), so
                    // a read-back needs no call for the list.
                    None if ours.len() == count => {
                        c.chunks.insert(n.index, Arc::new(ours));
                    }
                    None => {}
                }
            }
            // A chunk written but not counted (a server that does not count): its cached list
            // lacks this commit's slices.
            for (idx, _) in &slices {
                if !r.chunks.iter().any(|n| n.index == *idx) {
                    c.chunks.remove(idx);
                }
            }
            c.attr = Some(a);
            c.seen = Some(Instant::now());
        }
        Ok(())
    }

    /// Uploads a file's buffered writes and commits them; `None` when there was nothing to commit.
    pub(super) async fn commit_locked(
        &self,
        w: &mut FileWriter,
        ino: u64,
        durable: bool,
    ) -> Result<Option<(Vec<(u32, Slice)>, pb::CommitResp)>> {
        let (slices, deferred) =
            if durable { w.drain_deferring(&self.shared).await? } else { (w.drain(&self.shared).await?, Vec::new()) };
        let journal = if durable { self.journal_of(&slices) } else { Vec::new() };
        let journaled: Vec<String> = journal.iter().map(|b| b.key.clone()).collect();
        // Deferred blocks the journal does not carry (too many bytes, or evicted from the
        // cache meanwhile) are stored the usual way, and synced below.
        let unjournaled = deferred.into_iter().filter(|(k, _)| !journaled.contains(k));
        futures::future::try_join_all(unjournaled.map(|(k, data)| {
            let store = self.store.clone();
            async move { store.put(&k, data).await }
        }))
        .await?;
        if durable {
            // Journaled blocks become durable with the metadata; any other block written
            // since the last sync (of this file or another) is synced here as before.
            self.store.forget_unsynced(&journaled);
            self.store.sync().await?;
        }
        if slices.is_empty() {
            if durable {
                self.client.call::<_, pb::Empty>(Method::Sync, |_| pb::Empty {}).await?;
            }
            return Ok(None);
        }
        let writes: Vec<pb::ChunkWrite> =
            slices.iter().map(|(idx, s)| pb::ChunkWrite { index: *idx, slice: Some(slice_to_pb(s)) }).collect();
        let r = self
            .client
            .call::<_, pb::CommitResp>(Method::CommitWrites, |session| pb::CommitReq {
                ino,
                writes: writes.clone(),
                durable,
                journal: journal.clone(),
                origin: session,
            })
            .await;
        // Not committed, so not journaled either; their slices are not referenced, so their
        // blocks (never written to the store) are not needed.
        Ok(Some((slices, r?)))
    }

    /// The blocks of `slices` that a durable commit can hand to the server instead of syncing
    /// them: only for a local block directory, and only a few small blocks still in the cache
    /// (a sync of large writes costs little next to writing them). Empty when not all qualify.
    pub(super) fn journal_of(&self, slices: &[(u32, Slice)]) -> Vec<pb::JournaledBlock> {
        if !self.store.is_local() || slices.iter().map(|(_, s)| u64::from(s.size)).sum::<u64>() > JOURNAL_MAX {
            return Vec::new();
        }
        let (mut out, mut total) = (Vec::new(), 0u64);
        for (_, s) in slices {
            for (i, len) in strata_blocks::layout::slice_blocks(s.size, self.volume.block_size) {
                let key = block_key(self.volume.id, s.id, i, len);
                let Some(data) = self.cache.peek(&key) else { return Vec::new() };
                let stored = self.store.stored_form(&data);
                // A compressed block that did not shrink is stored a little larger.
                total += stored.len() as u64;
                if total > JOURNAL_MAX {
                    return Vec::new();
                }
                out.push(pb::JournaledBlock { data: stored.to_vec(), key });
            }
        }
        out
    }

    pub(super) fn start_compaction(&self, ino: u64, idx: u32) {
        let Some(me) = self.me.upgrade() else { return };
        if !Self::lock(&self.compacting).insert((ino, idx)) {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = me.compact(ino, idx).await {
                tracing::warn!(ino, chunk = idx, error = %e, "chunk compaction failed; the file is intact");
            }
            Self::lock(&me.compacting).remove(&(ino, idx));
        });
    }

    /// Rewrites a chunk's visible bytes as one slice and swaps it in for the slices it covers,
    /// if nobody changed the chunk meanwhile. The new blocks are made durable first, because
    /// the old ones are collected once the swap commits.
    pub(super) async fn compact(&self, ino: u64, idx: u32) -> Result<()> {
        let r = self.client.call::<_, pb::ChunkResp>(Method::ReadChunk, |_| pb::ChunkReq { ino, index: idx }).await?;
        let slices: Vec<Slice> = r.slices.iter().map(slice_from_pb).collect();
        if slices.len() < 2 {
            return Ok(());
        }
        let start = slices.iter().map(|s| s.pos).min().unwrap_or(0);
        let end = slices.iter().map(|s| s.pos + s.len).max().unwrap_or(0);
        let mut buf = vec![0u8; (end - start) as usize];
        for seg in visible(&slices, start, end - start) {
            if let Source::Data { id, size, off } = seg.src {
                let mut at = (seg.pos - start) as usize;
                let mut sink = |b: Bytes| {
                    buf[at..at + b.len()].copy_from_slice(&b);
                    at += b.len();
                };
                self.read_slice(id, size, off, seg.len as usize, super::read::Fetch::Whole, &mut sink).await?;
            }
        }
        let id = self.next_slice_id().await?;
        let total = buf.len() as u32;
        let bs = self.volume.block_size as usize;
        let data = bytes::Bytes::from(buf);
        for (i, len) in strata_blocks::layout::slice_blocks(total, self.volume.block_size) {
            let from = i as usize * bs;
            self.store.put(&block_key(self.volume.id, id, i, len), data.slice(from..from + len as usize)).await?;
        }
        self.store.sync().await?;
        let with = Slice { pos: start, id, size: total, off: 0, len: total };
        let done = self
            .client
            .call::<_, pb::BoolResp>(Method::CompactChunk, |_| pb::CompactReq {
                ino,
                index: idx,
                replaced: r.slices.clone(),
                with: Some(slice_to_pb(&with)),
            })
            .await?;
        if let Some(c) = Self::lock(&self.inodes).get_mut(&ino) {
            c.chunks.remove(&idx);
        }
        if !done.ok {
            // The chunk changed meanwhile; the new blocks are unreferenced and never read.
            tracing::debug!(ino, chunk = idx, "compaction lost a race; will retry after the next commit");
        }
        Ok(())
    }

    /// Makes all committed metadata durable (directories' fsync).
    pub async fn sync_meta(&self) -> Result<()> {
        self.qos.op().await;
        self.client.call::<_, pb::Empty>(Method::Sync, |_| pb::Empty {}).await?;
        Ok(())
    }
}

/// Commits buffered writes older than [`COMMIT_AFTER`] until the file system goes away.
pub(super) async fn commit_old_writes(vfs: std::sync::Weak<Vfs>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(vfs) = vfs.upgrade() else { return };
        let due: Vec<u64> = Vfs::lock(&vfs.writers)
            .iter()
            .filter(|(_, w)| w.try_lock().is_ok_and(|g| g.dirty_since.is_some_and(|t| t.elapsed() >= COMMIT_AFTER)))
            .map(|(ino, _)| *ino)
            .collect();
        for ino in due {
            if let Err(e) = vfs.commit(ino, false).await {
                tracing::error!(ino, error = %e, "background commit of buffered writes failed; the next close reports it");
                if let Some(w) = vfs.writer(ino) {
                    w.lock().await.error = Some(e);
                }
            }
        }
    }
}
