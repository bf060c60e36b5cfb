//! Reading and writing the namespace's records inside a transaction: attributes, entries,
//! volumes and their usage (with quota checks), slice references, and the destruction of an
//! inode. Every operation of the namespace is built from these.

use crate::codec::{dec, dec_entry, dec_slices, enc, push_slice};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::types::*;

pub(crate) fn now() -> Timespec {
    Timespec::now()
}

pub(crate) fn load_attr(t: &mut dyn KvTxn, ino: Ino) -> Result<Attr> {
    match t.get(&keys::attr(ino))? {
        Some(v) => dec(&v),
        None => Err(MetaError::NotFound),
    }
}

pub(crate) fn store_attr(t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
    t.put(&keys::attr(ino), &enc(a)?)
}

pub(crate) fn load_dir(t: &mut dyn KvTxn, ino: Ino) -> Result<Attr> {
    let a = load_attr(t, ino)?;
    if !a.is_dir() {
        return Err(MetaError::NotDir);
    }
    Ok(a)
}

pub(crate) fn get_entry(t: &mut dyn KvTxn, parent: Ino, name: &[u8]) -> Result<Option<(Ino, FileType)>> {
    match t.get(&keys::dentry(parent, name))? {
        Some(v) => Ok(Some(dec_entry(&v)?)),
        None => Ok(None),
    }
}

/// [`load_dir`] and [`get_entry`] in one read (one round trip on PostgreSQL).
pub(crate) fn load_dir_entry(t: &mut dyn KvTxn, parent: Ino, name: &[u8]) -> Result<(Attr, Option<(Ino, FileType)>)> {
    let mut got = t.get_many(&[keys::attr(parent).to_vec(), keys::dentry(parent, name).to_vec()])?.into_iter();
    let a: Attr = match got.next().flatten() {
        Some(v) => dec(&v)?,
        None => return Err(MetaError::NotFound),
    };
    if !a.is_dir() {
        return Err(MetaError::NotDir);
    }
    let e = got.next().flatten().map(|v| dec_entry(&v)).transpose()?;
    Ok((a, e))
}

/// [`load_dir_entry`] of a change to directory `parent`, which will then read volume `vol`'s
/// usage (and with `quota` its record, for a quota check): where reads cost round trips
/// those come in the same one. `vol` is the caller's guess of the directory's volume (an
/// inode never changes volume); a wrong or missing guess costs only the saving.
pub(crate) fn load_dir_entry_ahead(
    t: &mut dyn KvTxn,
    parent: Ino,
    name: &[u8],
    vol: Option<u32>,
    quota: bool,
) -> Result<(Attr, Option<(Ino, FileType)>)> {
    // A snapshot's directory is refused later, with the error its own reads give.
    if let Some(vol) = vol
        && t.caches_reads()
        && crate::versions::split_ino(parent).0 == 0
    {
        let mut ks = vec![keys::attr(parent).to_vec(), keys::dentry(parent, name).to_vec(), keys::usage(vol).to_vec()];
        if quota {
            ks.push(keys::volume(vol).to_vec());
        }
        t.get_many(&ks)?;
    }
    load_dir_entry(t, parent, name)
}

pub(crate) fn dir_is_empty(t: &mut dyn KvTxn, ino: Ino) -> Result<bool> {
    let p = keys::dentry_prefix(ino);
    Ok(t.scan(&p, &prefix_end(&p), 1)?.is_empty())
}

pub(crate) fn load_volume(t: &mut dyn KvTxn, id: u32) -> Result<Volume> {
    match t.get(&keys::volume(id))? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(format!("volume {id}: {e}"))),
        None => Err(MetaError::NoVolume(format!("#{id}"))),
    }
}

pub(crate) fn load_usage(t: &mut dyn KvTxn, vol: u32) -> Result<Usage> {
    match t.get(&keys::usage(vol))? {
        Some(v) => dec(&v),
        None => Ok(Usage::default()),
    }
}

/// Applies a usage change, refusing growth past the volume's quotas.
pub(crate) fn charge(t: &mut dyn KvTxn, vol: u32, bytes: i64, inodes: i64) -> Result<()> {
    if bytes == 0 && inodes == 0 {
        return Ok(());
    }
    let growing = bytes > 0 || inodes > 0;
    // Usage and volume in one read when both are needed.
    let (mut u, v) = if growing {
        let mut got = t.get_many(&[keys::usage(vol).to_vec(), keys::volume(vol).to_vec()])?.into_iter();
        let u = got.next().flatten().map(|v| dec(&v)).transpose()?.unwrap_or_default();
        let v: Volume = match got.next().flatten() {
            Some(v) => serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(format!("volume {vol}: {e}")))?,
            None => return Err(MetaError::NoVolume(format!("#{vol}"))),
        };
        (u, Some(v))
    } else {
        (load_usage(t, vol)?, None)
    };
    if let Some(v) = v {
        if bytes > 0 && v.capacity > 0 && u.bytes.saturating_add(bytes as u64) > v.capacity {
            return Err(MetaError::Quota);
        }
        if inodes > 0 && v.inode_limit > 0 && u.inodes.saturating_add(inodes as u64) > v.inode_limit {
            return Err(MetaError::Quota);
        }
    }
    u.bytes = u.bytes.saturating_add_signed(bytes);
    u.inodes = u.inodes.saturating_add_signed(inodes);
    t.put(&keys::usage(vol), &enc(&u)?)
}

/// Drops one reference to a slice; the last one queues its blocks for deletion.
pub(crate) fn free_slice(t: &mut dyn KvTxn, vol: u32, ino: Ino, s: &Slice) -> Result<()> {
    if s.id == 0 {
        return Ok(());
    }
    let rk = keys::slice_refs(s.id);
    if let Some(v) = t.get(&rk)? {
        let n: u64 = dec(&v)?;
        if n > 1 {
            t.put(&rk, &enc(&(n - 1))?)?;
        } else {
            t.delete(&rk)?;
        }
        return Ok(());
    }
    // A clone's slices shared with its source have their blocks under the source's name.
    let owner = match load_volume(t, vol) {
        Ok(v) => v.block_volume(s.id),
        Err(_) => vol,
    };
    // Servers holding the file open without a record hear of it, and record their opens
    // before the slice's blocks may go (see `open.rs`).
    crate::open::notify_doom(t, ino);
    t.put(&keys::pending(s.id), &enc(&Pending { volume: owner, size: s.size, ino })?)
}

/// Frees every distinct slice of an encoded chunk list.
pub(crate) fn free_chunk(t: &mut dyn KvTxn, vol: u32, ino: Ino, raw: &[u8]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for s in dec_slices(raw)? {
        if s.id != 0 && seen.insert(s.id) {
            free_slice(t, vol, ino, &s)?;
        }
    }
    Ok(())
}

/// Removes an inode and everything hanging off it.
pub(crate) fn destroy(t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
    destroy_rest(t, ino, a)?;
    charge(t, a.volume, -(a.charged_bytes() as i64), -1)
}

/// [`destroy`] of an inode whose unlink gave `given` bytes and the inode back to the volume;
/// what it was charged since (a commit of writes buffered before the unlink) goes back now.
pub(crate) fn destroy_uncharged(t: &mut dyn KvTxn, ino: Ino, a: &Attr, given: u64) -> Result<()> {
    destroy_rest(t, ino, a)?;
    // Positive after a truncation that gave back part of `given` twice: restored without a
    // quota check, as it only undoes that.
    let delta = given as i64 - a.charged_bytes() as i64;
    if delta == 0 {
        return Ok(());
    }
    let mut u = load_usage(t, a.volume)?;
    u.bytes = u.bytes.saturating_add_signed(delta);
    t.put(&keys::usage(a.volume), &enc(&u)?)
}

/// [`destroy`] but for the usage.
pub(crate) fn destroy_rest(t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
    if a.kind == FileType::File {
        let p = keys::chunk_prefix(ino);
        let end = prefix_end(&p);
        loop {
            let batch = t.scan(&p, &end, 1024)?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in &batch {
                // The record goes first: a snapshot saving it takes its references before
                // they are dropped.
                t.delete(k)?;
                free_chunk(t, a.volume, ino, v)?;
            }
        }
    }
    if a.kind == FileType::Symlink {
        t.delete(&keys::symlink(ino))?;
    }
    let xp = keys::xattr_prefix(ino);
    t.delete_range(&xp, &prefix_end(&xp))?;
    t.delete(&keys::attr(ino))?;
    t.delete(&keys::sustained(ino))
}

/// Shrinks or grows a file's length inside a transaction.
pub(crate) fn set_length(t: &mut dyn KvTxn, ino: Ino, a: &mut Attr, new: u64) -> Result<()> {
    if new > MAX_FILE_SIZE {
        return Err(MetaError::TooBig);
    }
    let old = a.size;
    if new < old {
        let keep = new.div_ceil(CHUNK_SIZE);
        let start = keys::chunk(ino, keep as u32);
        let end = prefix_end(&keys::chunk_prefix(ino));
        loop {
            let batch = t.scan(&start, &end, 1024)?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in &batch {
                // The record goes first: a snapshot saving it takes its references before
                // they are dropped.
                t.delete(k)?;
                free_chunk(t, a.volume, ino, v)?;
            }
        }
        if !new.is_multiple_of(CHUNK_SIZE) {
            // Cover the cut-off tail with a hole so a later extension reads zeros.
            let idx = (new / CHUNK_SIZE) as u32;
            let ck = keys::chunk(ino, idx);
            if let Some(mut raw) = t.get(&ck)? {
                let pos = (new % CHUNK_SIZE) as u32;
                let chunk_end = (old - u64::from(idx) * CHUNK_SIZE).min(CHUNK_SIZE) as u32;
                push_slice(&mut raw, &Slice { pos, id: 0, size: 0, off: 0, len: chunk_end - pos });
                t.put(&ck, &raw)?;
            }
        }
    }
    let before = a.charged_bytes() as i64;
    a.size = new;
    charge(t, a.volume, a.charged_bytes() as i64 - before, 0)
}
