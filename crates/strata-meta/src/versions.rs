//! Snapshots as versions of records: every transaction runs on a [`Versioned`] view of the
//! engine's transaction, which
//!
//! - before the first change of a namespace record (attributes, entries, chunks, xattrs,
//!   symlink targets) after its volume's latest snapshot, saves the value the record had then
//!   (`Z key epoch`, indexed by `z epoch key`), adding a reference to every slice a saved chunk
//!   holds, so the live volume can go on freeing slices the snapshot still reads;
//! - answers reads of a snapshot's inodes (numbers with the snapshot's epoch in their high
//!   bits, see [`view_ino`]) from the saved versions, falling back to the live record where
//!   nothing changed since, and refuses writes to them (EROFS).
//!
//! Taking a snapshot only writes its record: the cost of a snapshot is paid by the first
//! change of each record after it, one saved version per changed record.

use std::collections::HashMap;

use crate::codec::{dec, dec_entry, dec_slices, enc, enc_entry};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvPairs, KvTxn, prefix_end};
use crate::types::{Attr, Ino};

/// Inode numbers below `1 << VIEW_SHIFT` are live inodes; above, the high bits name the
/// snapshot (its epoch) whose view of the inode in the low bits is meant.
pub const VIEW_SHIFT: u32 = 40;
/// The largest live inode number.
pub const MAX_LIVE_INO: Ino = (1 << VIEW_SHIFT) - 1;

/// The number of inode `ino` as seen in snapshot `epoch`.
pub fn view_ino(epoch: u64, ino: Ino) -> Ino {
    if epoch == 0 { ino } else { (epoch << VIEW_SHIFT) | (ino & MAX_LIVE_INO) }
}

/// The snapshot epoch (0: live) and the live inode number of a (view) inode number.
pub fn split_ino(ino: Ino) -> (u64, Ino) {
    (ino >> VIEW_SHIFT, ino & MAX_LIVE_INO)
}

/// What versioning needs of one snapshot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapMark {
    pub epoch: u64,
    /// Inodes numbered from here on did not exist when it was taken.
    pub ino_mark: Ino,
    pub deleting: bool,
}

/// Whether `key` is a namespace record and, if so, the inode it belongs to.
fn record_ino(key: &[u8]) -> Option<Ino> {
    match key.first()? {
        // Exactly 9 bytes for `C` is the prefix of a file's chunks (a scan's start).
        b'A' | b'L' if key.len() == 9 => keys::u64_at(key, 1),
        b'C' if key.len() == 13 || key.len() == 9 => keys::u64_at(key, 1),
        b'D' | b'X' if key.len() >= 9 => keys::u64_at(key, 1),
        _ => None,
    }
}

/// `key` with its inode replaced.
fn with_ino(key: &[u8], ino: Ino) -> Vec<u8> {
    let mut k = key.to_vec();
    k[1..9].copy_from_slice(&ino.to_be_bytes());
    k
}

fn enc_version(v: Option<&[u8]>) -> Vec<u8> {
    match v {
        None => vec![0],
        Some(b) => {
            let mut out = Vec::with_capacity(b.len() + 1);
            out.push(1);
            out.extend_from_slice(b);
            out
        }
    }
}

pub(crate) fn dec_version(v: &[u8]) -> Result<Option<Vec<u8>>> {
    match v.first() {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(v[1..].to_vec())),
        _ => Err(MetaError::Corrupt("record version".into())),
    }
}

/// Adds one reference to every distinct slice of an encoded chunk.
pub(crate) fn ref_chunk(t: &mut dyn KvTxn, raw: &[u8]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for s in dec_slices(raw)? {
        if s.id != 0 && seen.insert(s.id) {
            let rk = keys::slice_refs(s.id);
            let n: u64 = match t.get(&rk)? {
                Some(v) => dec(&v)?,
                None => 0,
            };
            t.put(&rk, &enc(&(n + 1))?)?;
        }
    }
    Ok(())
}

/// The snapshots of a volume, oldest first.
pub(crate) fn volume_marks(t: &mut dyn KvTxn, vol: u32) -> Result<Vec<SnapMark>> {
    let p = keys::snapshot_prefix(vol);
    let mut out = Vec::new();
    for (_, v) in t.scan(&p, &prefix_end(&p), usize::MAX)? {
        let s: crate::Snapshot =
            serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(format!("snapshot: {e}")))?;
        out.push(SnapMark { epoch: s.epoch, ino_mark: s.ino_mark, deleting: s.deleting });
    }
    Ok(out)
}

/// The value record `key` (a live key) had at snapshot `epoch` of a volume whose snapshots
/// are `marks`: its version saved by the first snapshot at or after `epoch` that holds one,
/// else the live value.
pub(crate) fn value_at(t: &mut dyn KvTxn, marks: &[SnapMark], key: &[u8], epoch: u64) -> Result<Option<Vec<u8>>> {
    let later: Vec<Vec<u8>> = marks.iter().filter(|m| m.epoch >= epoch).map(|m| keys::version(key, m.epoch)).collect();
    if !later.is_empty()
        && let Some(v) = t.get_many(&later)?.into_iter().flatten().next()
    {
        return dec_version(&v);
    }
    t.get(key)
}

/// A key of a snapshot's inode, resolved: the snapshot's epoch, its volume's snapshots, and
/// the live key.
type ViewKey = (u64, Vec<SnapMark>, Vec<u8>);

/// The transaction every [`crate::Meta`] operation runs on (see the module's comment).
pub(crate) struct Versioned<'a> {
    inner: &'a mut dyn KvTxn,
    /// Whether any snapshot exists; `None` until asked.
    any: Option<bool>,
    /// Known to have no snapshots (local state: this process writes every record).
    known_none: bool,
    vol_of: HashMap<Ino, Option<u32>>,
    marks: HashMap<u32, Vec<SnapMark>>,
    /// Snapshot epoch -> its volume (None: no such snapshot).
    epoch_vol: HashMap<u64, Option<u32>>,
    /// A write transaction (reads never change usage).
    writing: bool,
    /// A snapshot's record was read: the transaction acts on a snapshot.
    saw_view: bool,
}

impl<'a> Versioned<'a> {
    /// A view of `inner`; `known_none` skips every check for stores known to hold no snapshot.
    pub(crate) fn new(inner: &'a mut dyn KvTxn, known_none: bool, writing: bool) -> Self {
        Versioned {
            inner,
            any: None,
            known_none,
            vol_of: HashMap::new(),
            marks: HashMap::new(),
            epoch_vol: HashMap::new(),
            writing,
            saw_view: false,
        }
    }

    /// Whether the transaction will ask [`Versioned::any_snapshots`] and has not yet.
    fn wants_snapshot_count(&self) -> bool {
        self.writing && !self.known_none && self.any.is_none()
    }

    fn any_snapshots(&mut self) -> Result<bool> {
        if self.known_none {
            return Ok(false);
        }
        if let Some(a) = self.any {
            return Ok(a);
        }
        let n: u64 = match self.inner.get(keys::SNAPSHOT_COUNT)? {
            Some(v) => dec(&v)?,
            None => 0,
        };
        self.any = Some(n > 0);
        Ok(n > 0)
    }

    fn marks(&mut self, vol: u32) -> Result<&[SnapMark]> {
        if !self.marks.contains_key(&vol) {
            let m = volume_marks(self.inner, vol)?;
            self.marks.insert(vol, m);
        }
        Ok(&self.marks[&vol])
    }

    fn volume_of(&mut self, ino: Ino) -> Result<Option<u32>> {
        if let Some(v) = self.vol_of.get(&ino) {
            return Ok(*v);
        }
        let v = match self.inner.get(&keys::attr(ino))? {
            Some(raw) => Some(dec::<Attr>(&raw)?.volume),
            None => None,
        };
        self.vol_of.insert(ino, v);
        Ok(v)
    }

    /// Saves the version of live record `key` its volume's latest snapshot must keep, before
    /// the record changes.
    fn preserve(&mut self, key: &[u8]) -> Result<()> {
        let Some(ino) = record_ino(key) else { return Ok(()) };
        if !self.any_snapshots()? {
            return Ok(());
        }
        let Some(vol) = self.volume_of(ino)? else { return Ok(()) };
        let marks = self.marks(vol)?.to_vec();
        // Writes after a snapshot that is being deleted save for the one below it.
        let Some(target) = marks.iter().rev().find(|m| !m.deleting).copied() else { return Ok(()) };
        if ino >= target.ino_mark {
            return Ok(());
        }
        let vk = keys::version(key, target.epoch);
        if self.inner.get(&vk)?.is_some() {
            return Ok(());
        }
        let old = value_at(self.inner, &marks, key, target.epoch)?;
        if key[0] == b'C'
            && let Some(raw) = &old
        {
            ref_chunk(self.inner, raw)?;
        }
        self.inner.put(&vk, &enc_version(old.as_deref()))?;
        self.inner.put(&keys::version_index(target.epoch, key), &[])
    }

    /// For a key of a snapshot's inode: the snapshot's epoch, its volume's snapshots, and
    /// the live key. `Ok(None)` for live keys.
    fn view_of(&mut self, key: &[u8]) -> Result<Option<ViewKey>> {
        let Some(ino) = record_ino(key) else { return Ok(None) };
        let (epoch, live) = split_ino(ino);
        if epoch == 0 {
            return Ok(None);
        }
        // A snapshot's records are read from several, which must agree.
        self.inner.need_snapshot()?;
        let vol = match self.epoch_vol.get(&epoch) {
            Some(v) => *v,
            None => {
                let v = match self.inner.get(&keys::snapshot_volume(epoch))? {
                    Some(b) => Some(u32::from_be_bytes(
                        b.as_slice().try_into().map_err(|_| MetaError::Corrupt("snapshot volume".into()))?,
                    )),
                    None => None,
                };
                self.epoch_vol.insert(epoch, v);
                v
            }
        };
        // An epoch no snapshot has (or had, once its deletion ended) holds no records.
        let Some(vol) = vol else { return Ok(Some((epoch, Vec::new(), with_ino(key, live)))) };
        let stale = || MetaError::Stale(format!("snapshot {epoch} is being deleted"));
        let marks = self.marks(vol)?.to_vec();
        match marks.iter().find(|m| m.epoch == epoch) {
            Some(m) if !m.deleting => {}
            _ => return Err(stale()),
        }
        Ok(Some((epoch, marks, with_ino(key, live))))
    }

    /// A value read through a snapshot, with the inode numbers it holds moved into the view.
    fn to_view(&self, epoch: u64, live_key: &[u8], v: Vec<u8>) -> Result<Vec<u8>> {
        match live_key[0] {
            b'A' => {
                let mut a: Attr = dec(&v)?;
                a.parent = view_ino(epoch, a.parent);
                enc(&a)
            }
            b'D' => {
                let (ino, kind) = dec_entry(&v)?;
                Ok(enc_entry(view_ino(epoch, ino), kind).to_vec())
            }
            _ => Ok(v),
        }
    }

    fn view_get(&mut self, epoch: u64, marks: &[SnapMark], live_key: &[u8]) -> Result<Option<Vec<u8>>> {
        let ino = record_ino(live_key).unwrap_or(0);
        let Some(m) = marks.iter().find(|m| m.epoch == epoch) else { return Ok(None) };
        if ino >= m.ino_mark {
            return Ok(None);
        }
        match value_at(self.inner, marks, live_key, epoch)? {
            Some(v) => Ok(Some(self.to_view(epoch, live_key, v)?)),
            None => Ok(None),
        }
    }

    /// A range scan of one inode's records as a snapshot saw them: the live records and the
    /// saved versions merged, page by page.
    fn view_scan(&mut self, epoch: u64, marks: &[SnapMark], start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs> {
        let view_ino_of = record_ino(start).unwrap_or(0);
        let Some(m) = marks.iter().find(|m| m.epoch == epoch) else { return Ok(Vec::new()) };
        if split_ino(view_ino_of).1 >= m.ino_mark {
            return Ok(Vec::new());
        }
        let live_start = with_ino(start, split_ino(view_ino_of).1);
        // A prefix's end may be shorter than a record key (a carry out of the inode's last
        // byte); padded with zeros it bounds the same records.
        let mut end9 = end.to_vec();
        if end9.len() < 9 {
            end9.resize(9, 0);
        }
        let (_, end_live_ino) = split_ino(keys::u64_at(&end9, 1).unwrap_or(0));
        let live_end = with_ino(&end9, end_live_ino);
        let page = limit.clamp(1, 1024);
        let mut out: KvPairs = Vec::new();
        let mut cur = live_start;
        while out.len() < limit {
            let live = self.inner.scan(&cur, &live_end, page)?;
            let zend = [&b"Z"[..], &live_end].concat();
            let zpage = page.saturating_mul(marks.len().max(1));
            // A saved version of the record just before `cur` sorts after `cur` (its epoch's
            // bytes follow the key), so the range brings it back; a page of nothing else must
            // not become the bound (the scan would never move on): skip past it.
            let mut zfrom = [&b"Z"[..], &cur].concat();
            let (saved, saved_full) = loop {
                let page = self.inner.scan(&zfrom, &zend, zpage)?;
                let full = page.len() == zpage;
                let next = page.last().map(|(k, _)| [k.as_slice(), &[0]].concat());
                let kept: KvPairs = page
                    .into_iter()
                    .filter(|(k, _)| keys::parse_version(k).is_none_or(|(rk, _)| rk >= cur.as_slice()))
                    .collect();
                match next {
                    Some(n) if kept.is_empty() && full => zfrom = n,
                    _ => break (kept, full),
                }
            };
            // Everything up to `bound` was seen by both scans.
            let mut bound: Option<Vec<u8>> = None;
            if live.len() == page {
                bound = live.last().map(|(k, _)| k.clone());
            }
            if saved_full && let Some((k, _)) = saved.last() {
                let (rk, _) = keys::parse_version(k).ok_or_else(|| MetaError::Corrupt("version key".into()))?;
                if bound.as_ref().is_none_or(|b| rk < b.as_slice()) {
                    bound = Some(rk.to_vec());
                }
            }
            let mut cands: Vec<Vec<u8>> = live.into_iter().map(|(k, _)| k).collect();
            // Every record with a saved version is a candidate, whatever the version's epoch
            // (the page may hold only some versions of its last record): `value_at` reads the
            // right one.
            for (k, _) in &saved {
                if let Some((rk, _)) = keys::parse_version(k) {
                    cands.push(rk.to_vec());
                }
            }
            cands.sort();
            cands.dedup();
            // A saved version of the record just before `cur` sorts after `cur` (its epoch's
            // bytes follow the key), so the range brings it back: not this page's.
            cands.retain(|k| k.as_slice() >= cur.as_slice() && bound.as_ref().is_none_or(|b| k <= b));
            for k in &cands {
                if let Some(v) = value_at(self.inner, marks, k, epoch)? {
                    let vk = with_ino(k, view_ino(epoch, record_ino(k).unwrap_or(0)));
                    let v = self.to_view(epoch, k, v)?;
                    out.push((vk, v));
                    if out.len() == limit {
                        break;
                    }
                }
            }
            match bound {
                Some(mut b) => {
                    b.push(0);
                    cur = b;
                }
                None => break,
            }
        }
        Ok(out)
    }
}

impl KvTxn for Versioned<'_> {
    fn caches_reads(&self) -> bool {
        self.inner.caches_reads()
    }

    fn need_snapshot(&mut self) -> Result<()> {
        self.inner.need_snapshot()
    }

    fn notify(&mut self, payload: &str) {
        self.inner.notify(payload)
    }

    fn notify_item(&mut self, prefix: &str, item: &str) {
        self.inner.notify_item(prefix, item)
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.view_of(key)? {
            None => {
                // A write that acts on a snapshot's inode (creating in one of its directories,
                // say) is refused before it could be charged to a volume, so EROFS comes
                // before EDQUOT.
                if self.writing && self.saw_view && key.first() == Some(&b'U') {
                    return Err(MetaError::ReadOnly);
                }
                if self.wants_snapshot_count() && key != keys::SNAPSHOT_COUNT {
                    let mut got = self.get_many(&[key.to_vec()])?;
                    return Ok(got.pop().flatten());
                }
                self.inner.get(key)
            }
            Some((epoch, marks, live)) => {
                self.saw_view = true;
                self.view_get(epoch, &marks, &live)
            }
        }
    }

    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.iter().all(|k| record_ino(k).is_none_or(|i| split_ino(i).0 == 0)) {
            // As in `get`: EROFS before EDQUOT.
            if self.writing && self.saw_view && keys.iter().any(|k| k.first() == Some(&b'U')) {
                return Err(MetaError::ReadOnly);
            }
            if self.wants_snapshot_count() {
                // Whether snapshots exist is asked by the transaction's first change: read it
                // with its first read instead (one round trip less on PostgreSQL).
                let mut with = keys.to_vec();
                with.push(keys::SNAPSHOT_COUNT.to_vec());
                let mut got = self.inner.get_many(&with)?;
                let n: u64 = got.pop().flatten().map(|v| dec(&v)).transpose()?.unwrap_or(0);
                self.any = Some(n > 0);
                return Ok(got);
            }
            return self.inner.get_many(keys);
        }
        keys.iter().map(|k| self.get(k)).collect()
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.view_of(key)?.is_some() {
            return Err(MetaError::ReadOnly);
        }
        // A new inode's volume is in the attributes being written: an inode numbered before a
        // snapshot (from a batch taken earlier) but created after it must save "absent".
        if key[0] == b'A'
            && key.len() == 9
            && let Ok(a) = dec::<Attr>(value)
        {
            let ino = keys::u64_at(key, 1).unwrap_or(0);
            if self.vol_of.get(&ino).copied().flatten().is_none() {
                self.vol_of.insert(ino, Some(a.volume));
            }
        }
        self.preserve(key)?;
        self.inner.put(key, value)
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        if self.view_of(key)?.is_some() {
            return Err(MetaError::ReadOnly);
        }
        self.preserve(key)?;
        self.inner.delete(key)
    }

    fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs> {
        match self.view_of(start)? {
            None => self.inner.scan(start, end, limit),
            Some((epoch, marks, _)) => self.view_scan(epoch, &marks, start, end, limit),
        }
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<usize> {
        if self.view_of(start)?.is_some() {
            return Err(MetaError::ReadOnly);
        }
        if record_ino(start).is_some() && self.any_snapshots()? {
            let mut n = 0;
            loop {
                let batch = self.inner.scan(start, end, 1024)?;
                if batch.is_empty() {
                    return Ok(n);
                }
                for (k, _) in batch {
                    self.preserve(&k)?;
                    self.inner.delete(&k)?;
                    n += 1;
                }
            }
        }
        self.inner.delete_range(start, end)
    }
}
