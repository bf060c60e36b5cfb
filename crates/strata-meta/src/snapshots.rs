//! Snapshots: taking one (a record, whatever the volume holds), listing, measuring what each
//! holds, and deleting one (its saved versions merged into the snapshot below it or freed, in
//! batches that a restarted server finishes). The versions themselves are kept by
//! [`crate::versions`].

use serde::{Deserialize, Serialize};

use crate::codec::{dec, dec_slices, enc};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::txn::*;
use crate::types::*;
use crate::versions::{MAX_LIVE_INO, SnapMark, VIEW_SHIFT, dec_version, volume_marks};

/// Snapshot epochs must fit the high bits of an inode number.
const MAX_EPOCH: u64 = (1 << (64 - VIEW_SHIFT)) - 1;
/// Saved versions handled per transaction when a snapshot is deleted, unless set otherwise
/// ([`Meta::set_snapshot_delete_batch`]).
pub const DEFAULT_SNAPSHOT_DELETE_BATCH: usize = 256;

/// A read-only, point-in-time view of a volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Its id: snapshots of all volumes are numbered in the order they were taken.
    pub epoch: u64,
    /// The volume it is of.
    pub volume: u32,
    /// Its name, unique within the volume.
    pub name: String,
    /// When it was taken.
    pub created: Timespec,
    /// Inodes numbered from here on were created after it.
    pub ino_mark: Ino,
    /// Bytes the volume used when it was taken.
    pub bytes: u64,
    /// Inodes the volume used when it was taken.
    pub inodes: u64,
    /// Being deleted: no longer readable, its versions are being merged or freed.
    #[serde(default)]
    pub deleting: bool,
    /// What made it, when not a user (e.g. `datavolume:NAME`): such snapshots are deleted
    /// through their owner.
    #[serde(default)]
    pub owner: Option<String>,
}

impl Snapshot {
    /// The inode number of the volume's root directory as seen in this snapshot.
    pub fn root(&self, vol: &Volume) -> Ino {
        crate::versions::view_ino(self.epoch, vol.root)
    }
}

/// What a snapshot holds: bytes it shares with the live volume and bytes only it keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSpace {
    /// Bytes of its files' data that are also the live volume's (or another snapshot's).
    pub shared_bytes: u64,
    /// Bytes of blocks nothing but this snapshot refers to: what deleting it frees.
    pub held_bytes: u64,
}

fn load_snapshots(t: &mut dyn KvTxn, vol: u32) -> Result<Vec<Snapshot>> {
    let p = keys::snapshot_prefix(vol);
    t.scan(&p, &prefix_end(&p), usize::MAX)?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(format!("snapshot: {e}"))))
        .collect()
}

fn store_snapshot(t: &mut dyn KvTxn, s: &Snapshot) -> Result<()> {
    t.put(&keys::snapshot(s.volume, s.epoch), &serde_json::to_vec(s).map_err(|e| MetaError::Corrupt(e.to_string()))?)
}

fn volume_id(t: &mut dyn KvTxn, name: &str) -> Result<u32> {
    let id = t.get(&keys::volume_name(name))?.ok_or_else(|| MetaError::NoVolume(name.to_string()))?;
    let id: [u8; 4] = id.as_slice().try_into().map_err(|_| MetaError::Corrupt("volume index".into()))?;
    Ok(u32::from_be_bytes(id))
}

fn counter(t: &mut dyn KvTxn, key: &[u8]) -> Result<u64> {
    Ok(match t.get(key)? {
        Some(v) => dec(&v)?,
        None => 0,
    })
}

/// The distinct slices (id, stored size) of an encoded chunk.
fn chunk_slices(raw: &[u8]) -> Result<Vec<(u64, u32)>> {
    let mut out: Vec<(u64, u32)> = dec_slices(raw)?.into_iter().filter(|s| s.id != 0).map(|s| (s.id, s.size)).collect();
    out.sort_unstable();
    out.dedup_by_key(|s| s.0);
    Ok(out)
}

/// Bytes of the blocks only snapshot `epoch` of volume `vol` refers to (what deleting it
/// frees): slices of the chunks it saved, and that no older snapshot reads through it, that
/// have no other holder. Every chunk record holding a slice (live, saved by a
/// snapshot, a clone's) owns one reference, and `R id` counts those beyond the first, so a
/// slice of a saved chunk without `R` is this snapshot's alone.
pub(crate) fn held_bytes(t: &mut dyn KvTxn, vol: u32, epoch: u64) -> Result<u64> {
    let marks = volume_marks(t, vol)?;
    let below: Option<SnapMark> = marks.iter().rev().find(|m| m.epoch < epoch && !m.deleting).copied();
    let p = keys::version_index_prefix(epoch);
    let end = prefix_end(&p);
    let mut from = p.to_vec();
    let mut held = 0u64;
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = t.scan(&from, &end, 1024)?;
        let Some((last, _)) = page.last() else { break };
        from = last.clone();
        from.push(0);
        for (ik, _) in &page {
            let key = &ik[9..];
            if key.first() != Some(&b'C') {
                continue;
            }
            let Some(raw) = t.get(&keys::version(key, epoch))? else { continue };
            let Some(mine) = dec_version(&raw)? else { continue };
            // A version the snapshot below also reads (it saved none of its own since) is
            // shared with it: deleting this snapshot would hand it down, not free it.
            if let Some(q) = below
                && keys::u64_at(key, 1).unwrap_or(0) < q.ino_mark
            {
                let between: Vec<Vec<u8>> = marks
                    .iter()
                    .filter(|m| m.epoch >= q.epoch && m.epoch < epoch)
                    .map(|m| keys::version(key, m.epoch))
                    .collect();
                if t.get_many(&between)?.iter().all(Option::is_none) {
                    continue;
                }
            }
            for (id, size) in chunk_slices(&mine)? {
                if seen.insert(id) && t.get(&keys::slice_refs(id))?.is_none() {
                    held += u64::from(size);
                }
            }
        }
    }
    Ok(held)
}

/// Bytes held only by the snapshots of volume `vol` (what they add to their scope's use).
pub(crate) fn snapshots_held(t: &mut dyn KvTxn, vol: u32) -> Result<u64> {
    let mut total = 0u64;
    for s in load_snapshots(t, vol)? {
        if !s.deleting {
            total = total.saturating_add(held_bytes(t, vol, s.epoch)?);
        }
    }
    Ok(total)
}

/// Whether a volume's record must outlive its deletion: snapshots of it remain, or clones
/// share its blocks.
pub(crate) fn still_needed(t: &mut dyn KvTxn, vol: u32) -> Result<bool> {
    let p = keys::snapshot_prefix(vol);
    if !t.scan(&p, &prefix_end(&p), 1)?.is_empty() {
        return Ok(true);
    }
    for (_, v) in t.scan(keys::VOLUME_PREFIX, &prefix_end(keys::VOLUME_PREFIX), usize::MAX)? {
        let other: Volume = serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        if other.id != vol && other.origins.iter().any(|(o, _)| *o == vol) {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Meta {
    /// Takes a snapshot of volume `volume` named `name`: one transaction writing one record,
    /// whatever the volume holds. It sees every commit before it and none after.
    pub fn create_snapshot(&self, volume: &str, name: &str, owner: Option<&str>) -> Result<Snapshot> {
        crate::validate_name(name)?;
        // Before the transaction: every write ordered after it must version its records.
        self.snapshots_seen.store(true, std::sync::atomic::Ordering::Release);
        self.write(true, |t| {
            let vol = volume_id(t, volume)?;
            let v = load_volume(t, vol)?;
            if v.building {
                return Err(MetaError::Busy(format!("volume {volume} is still being cloned")));
            }
            if load_snapshots(t, vol)?.iter().any(|s| s.name == name) {
                return Err(MetaError::Exists);
            }
            let epoch = counter(t, &keys::counter("snapshot"))? + 1;
            if epoch > MAX_EPOCH {
                return Err(MetaError::Invalid("out of snapshot numbers".into()));
            }
            t.put(&keys::counter("snapshot"), &enc(&epoch)?)?;
            // Inodes are handed out in batches from this counter: every inode numbered at or
            // above it is created after this transaction.
            let ino_mark = match t.get(&keys::counter("inode"))? {
                Some(b) => dec::<u64>(&b)?,
                None => 1,
            }
            .min(MAX_LIVE_INO + 1);
            let u = load_usage(t, vol)?;
            let s = Snapshot {
                epoch,
                volume: vol,
                name: name.to_string(),
                created: now(),
                ino_mark,
                bytes: u.bytes,
                inodes: u.inodes,
                deleting: false,
                owner: owner.map(str::to_string),
            };
            store_snapshot(t, &s)?;
            t.put(&keys::snapshot_volume(epoch), &vol.to_be_bytes())?;
            let n = counter(t, keys::SNAPSHOT_COUNT)?;
            t.put(keys::SNAPSHOT_COUNT, &enc(&(n + 1))?)?;
            Ok(s)
        })
    }

    /// The snapshots of a volume, oldest first (those being deleted included, marked so).
    pub fn list_snapshots(&self, volume: &str) -> Result<Vec<Snapshot>> {
        self.read(|t| {
            let vol = volume_id(t, volume)?;
            load_snapshots(t, vol)
        })
    }

    /// A volume's snapshot by name (not one being deleted).
    pub fn snapshot(&self, volume: &str, name: &str) -> Result<Snapshot> {
        self.list_snapshots(volume)?
            .into_iter()
            .find(|s| s.name == name && !s.deleting)
            .ok_or_else(|| MetaError::NoVolume(format!("{volume}@{name}")))
    }

    /// A snapshot by epoch, if it exists.
    pub fn snapshot_by_epoch(&self, epoch: u64) -> Result<Option<Snapshot>> {
        self.read(|t| {
            let Some(b) = t.get(&keys::snapshot_volume(epoch))? else { return Ok(None) };
            let vol = u32::from_be_bytes(b.as_slice().try_into().map_err(|_| MetaError::Corrupt("snapshot".into()))?);
            match t.get(&keys::snapshot(vol, epoch))? {
                Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?)),
                None => Ok(None),
            }
        })
    }

    /// Bytes a snapshot shares and bytes only it holds (reads every version it saved).
    pub fn snapshot_space(&self, s: &Snapshot) -> Result<SnapshotSpace> {
        let held = self.read(|t| held_bytes(t, s.volume, s.epoch))?;
        Ok(SnapshotSpace { shared_bytes: s.bytes.saturating_sub(held), held_bytes: held })
    }

    /// Deletes a snapshot: it stops being readable at once; its saved versions go to the
    /// snapshot below it (when that one still needs them) or are freed, in batches. A
    /// snapshot with an owner is refused unless `owner` names it.
    pub fn delete_snapshot(&self, volume: &str, name: &str, owner: Option<&str>) -> Result<Snapshot> {
        let vol = self.read(|t| volume_id(t, volume))?;
        self.delete_snapshot_by_volume(vol, name, owner)
    }

    /// [`Meta::delete_snapshot`] by volume id (also of a deleted volume kept for its
    /// snapshots).
    pub(crate) fn delete_snapshot_of(&self, vol: u32, name: &str, owner: Option<&str>) -> Result<()> {
        self.delete_snapshot_by_volume(vol, name, owner).map(|_| ())
    }

    fn delete_snapshot_by_volume(&self, vol: u32, name: &str, owner: Option<&str>) -> Result<Snapshot> {
        let volume = vol.to_string();
        let volume = volume.as_str();
        let s = self.write(true, |t| {
            let mut s = load_snapshots(t, vol)?
                .into_iter()
                .find(|s| s.name == name && !s.deleting)
                .ok_or_else(|| MetaError::NoVolume(format!("{volume}@{name}")))?;
            if s.owner.is_some() && s.owner.as_deref() != owner {
                return Err(MetaError::Busy(format!(
                    "snapshot {name} belongs to {}; delete it through its owner",
                    s.owner.as_deref().unwrap_or_default()
                )));
            }
            s.deleting = true;
            store_snapshot(t, &s)?;
            Ok(s)
        })?;
        self.finish_snapshot_deletion(s.volume, s.epoch)?;
        Ok(s)
    }

    /// Finishes the deletion of every snapshot marked deleted (after a crash); returns how
    /// many it finished.
    pub fn resume_snapshot_deletions(&self) -> Result<usize> {
        let pending: Vec<(u32, u64)> = self.read(|t| {
            let mut out = Vec::new();
            for (_, v) in t.scan(keys::SNAPSHOT_PREFIX, &prefix_end(keys::SNAPSHOT_PREFIX), usize::MAX)? {
                let s: Snapshot = serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                if s.deleting {
                    out.push((s.volume, s.epoch));
                }
            }
            Ok(out)
        })?;
        for (vol, epoch) in &pending {
            self.finish_snapshot_deletion(*vol, *epoch)?;
        }
        Ok(pending.len())
    }

    /// Sets how many saved versions a snapshot's deletion handles per transaction.
    pub fn set_snapshot_delete_batch(&self, n: usize) {
        self.snapshot_delete_batch.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets a pause between a snapshot deletion's transactions (a test's way to catch a
    /// deletion midway; none by default).
    pub fn set_snapshot_delete_pause(&self, pause: std::time::Duration) {
        let micros = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        self.snapshot_delete_pause.store(micros, std::sync::atomic::Ordering::Relaxed);
    }

    fn finish_snapshot_deletion(&self, vol: u32, epoch: u64) -> Result<()> {
        let batch = self.snapshot_delete_batch.load(std::sync::atomic::Ordering::Relaxed);
        let pause = self.snapshot_delete_pause.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            if pause > 0 {
                std::thread::sleep(std::time::Duration::from_micros(pause));
            }
            let done = self.write(false, |t| {
                let p = keys::version_index_prefix(epoch);
                let page = t.scan(&p, &prefix_end(&p), batch)?;
                if page.is_empty() {
                    if t.get(&keys::snapshot(vol, epoch))?.is_some() {
                        t.delete(&keys::snapshot(vol, epoch))?;
                        t.delete(&keys::snapshot_volume(epoch))?;
                        let n = counter(t, keys::SNAPSHOT_COUNT)?;
                        t.put(keys::SNAPSHOT_COUNT, &enc(&n.saturating_sub(1))?)?;
                        // A deleted volume kept for its snapshots goes with the last one.
                        if let Ok(v) = load_volume(t, vol)
                            && v.gone
                            && !v.removing
                            && !still_needed(t, vol)?
                        {
                            t.delete(&keys::volume(vol))?;
                            t.delete(&keys::usage(vol))?;
                        }
                    }
                    return Ok(true);
                }
                let marks = volume_marks(t, vol)?;
                let below: Option<SnapMark> = marks.iter().rev().find(|m| m.epoch < epoch && !m.deleting).copied();
                for (ik, _) in &page {
                    let key = ik[9..].to_vec();
                    t.delete(ik)?;
                    let vk = keys::version(&key, epoch);
                    let Some(raw) = t.get(&vk)? else { continue };
                    t.delete(&vk)?;
                    let ino = keys::u64_at(&key, 1).unwrap_or(0);
                    // The snapshot below reads this version unless it saved its own (or one
                    // between them did).
                    let moves = match below {
                        Some(q) if ino < q.ino_mark => {
                            let between: Vec<Vec<u8>> = marks
                                .iter()
                                .filter(|m| m.epoch >= q.epoch && m.epoch < epoch)
                                .map(|m| keys::version(&key, m.epoch))
                                .collect();
                            t.get_many(&between)?.iter().all(Option::is_none).then_some(q.epoch)
                        }
                        _ => None,
                    };
                    match moves {
                        Some(q) => {
                            t.put(&keys::version(&key, q), &raw)?;
                            t.put(&keys::version_index(q, &key), &[])?;
                        }
                        None => {
                            if key.first() == Some(&b'C')
                                && let Some(chunk) = dec_version(&raw)?
                            {
                                free_chunk(t, vol, ino, &chunk)?;
                            }
                        }
                    }
                }
                Ok(false)
            })?;
            if done {
                return Ok(());
            }
        }
    }
}
