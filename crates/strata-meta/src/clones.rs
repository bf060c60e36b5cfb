//! Clones: a new, writable volume whose tree starts as a snapshot's, sharing every block with
//! it. The tree's records are copied (one transaction per directory page) and every slice
//! gains a reference; no data is copied. Until the copy ends the clone is marked `building`:
//! nobody can mount it, and a server that restarts deletes it (freeing what it referenced).

use std::collections::{HashMap, VecDeque};

use crate::codec::{dec, dec_entry, enc, enc_entry};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::txn::*;
use crate::types::*;
use crate::versions::ref_chunk;

/// Entries copied per transaction.
const PAGE: usize = 256;

fn store_volume(t: &mut dyn KvTxn, v: &Volume) -> Result<()> {
    t.put(&keys::volume(v.id), &serde_json::to_vec(v).map_err(|e| MetaError::Corrupt(e.to_string()))?)
}

/// Copies inode `from` (a snapshot's view inode) as new inode `to` of volume `vol` under
/// parent `parent`: attributes, chunks (each slice gaining a reference), xattrs, target.
fn copy_inode(t: &mut dyn KvTxn, from: Ino, to: Ino, vol: u32, parent: Ino) -> Result<Attr> {
    let mut a = load_attr(t, from)?;
    a.volume = vol;
    a.parent = parent;
    store_attr(t, to, &a)?;
    if a.kind == FileType::File {
        let p = keys::chunk_prefix(from);
        for (k, v) in t.scan(&p, &prefix_end(&p), usize::MAX)? {
            let idx = u32::from_be_bytes(k[9..13].try_into().map_err(|_| MetaError::Corrupt("chunk key".into()))?);
            ref_chunk(t, &v)?;
            t.put(&keys::chunk(to, idx), &v)?;
        }
    }
    if a.kind == FileType::Symlink
        && let Some(target) = t.get(&keys::symlink(from))?
    {
        t.put(&keys::symlink(to), &target)?;
    }
    let xp = keys::xattr_prefix(from);
    for (k, v) in t.scan(&xp, &prefix_end(&xp), usize::MAX)? {
        t.put(&keys::xattr(to, &k[9..]), &v)?;
    }
    Ok(a)
}

impl Meta {
    /// Makes volume `target` (just provisioned, empty) a clone of `source` as snapshot
    /// `snapshot` saw it, or as it is now when `None` (through a snapshot taken and deleted
    /// for the purpose). The clone must keep its blocks in the source's store, and its quotas
    /// must hold the snapshot (EDQUOT otherwise).
    pub fn clone_volume(&self, target: &str, source: &str, snapshot: Option<&str>) -> Result<Volume> {
        let owner = format!("clone:{target}");
        let (snap, temporary) = match snapshot {
            Some(name) => (self.snapshot(source, name)?, false),
            None => (self.create_snapshot(source, &format!("clone-of-{source}-for-{target}"), Some(&owner))?, true),
        };
        let result = self.copy_snapshot(target, source, &snap);
        if temporary {
            self.delete_snapshot(source, &snap.name, Some(&owner))?;
        }
        if let Err(e) = &result {
            // Whatever was copied goes (and the references it took); if that fails too, both
            // are reported (a server restart removes a clone left half copied).
            if let Err(d) = self.delete_volume(target) {
                return Err(MetaError::Engine(format!("{e}; removing the half-made clone {target} failed too: {d}")));
            }
        }
        result
    }

    fn copy_snapshot(&self, target: &str, source: &str, snap: &crate::Snapshot) -> Result<Volume> {
        let src = self.volume(source)?;
        let mut vol = self.volume(target)?;
        if vol.store != src.store || vol.block_size != src.block_size {
            return Err(MetaError::Invalid(format!(
                "a clone shares its source's blocks, so its class must keep them where {source}'s does ({})",
                src.store
            )));
        }
        // The snapshot's use is an upper bound of what the copy holds (it also counts files
        // unlinked while open, which are not copied).
        if (vol.capacity > 0 && snap.bytes > vol.capacity) || (vol.inode_limit > 0 && snap.inodes > vol.inode_limit) {
            return Err(MetaError::Quota);
        }
        vol = self.write(true, |t| {
            let mut v = load_volume(t, vol.id)?;
            // Every slice numbered from here on is the clone's own.
            let mark = match t.get(&keys::counter("slice"))? {
                Some(b) => dec::<u64>(&b)?,
                None => 1,
            };
            v.origins = std::iter::once((src.id, mark)).chain(src.origins.iter().copied()).collect();
            v.building = true;
            store_volume(t, &v)?;
            Ok(v)
        })?;
        let view_root = snap.root(&src);
        // The root's own attributes and xattrs.
        self.write(false, |t| copy_inode(t, view_root, vol.root, vol.id, vol.root).map(|_| ()))?;
        // Breadth first, one page of one directory per transaction; `seen` maps the inodes
        // met so far, so hard links stay links.
        let mut seen: HashMap<Ino, Ino> = HashMap::new();
        // What the copy holds, charged as the live volume charges it.
        let (mut bytes, mut inodes) = (0u64, 1u64);
        let mut dirs: VecDeque<(Ino, Ino)> = VecDeque::from([(view_root, vol.root)]);
        while let Some((from_dir, to_dir)) = dirs.pop_front() {
            let mut after: Vec<u8> = Vec::new();
            loop {
                let p = keys::dentry_prefix(from_dir);
                let start = if after.is_empty() { p.to_vec() } else { [&p[..], &after, &[0]].concat() };
                let page = self.read(|t| t.scan(&start, &prefix_end(&p), PAGE))?;
                let Some((last, _)) = page.last() else { break };
                after = last[9..].to_vec();
                let mut fresh: Vec<Ino> = Vec::new();
                for (_, v) in &page {
                    let (child, _) = dec_entry(v)?;
                    if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(child) {
                        e.insert(self.alloc_ino()?);
                        fresh.push(child);
                    }
                }
                let (more, b, n) = self.write(false, |t| {
                    let (mut subdirs, mut b, mut n) = (Vec::new(), 0u64, 0u64);
                    // Two names of one inode in one page: copied once.
                    let mut copied = std::collections::HashSet::new();
                    for (k, v) in &page {
                        let (child, kind) = dec_entry(v)?;
                        let to = seen[&child];
                        if fresh.contains(&child) && copied.insert(child) {
                            let a = copy_inode(t, child, to, vol.id, to_dir)?;
                            b += a.charged_bytes();
                            n += 1;
                            if kind == FileType::Dir {
                                subdirs.push((child, to));
                            }
                        }
                        t.put(&keys::dentry(to_dir, &k[9..]), &enc_entry(to, kind))?;
                    }
                    Ok((subdirs, b, n))
                })?;
                bytes += b;
                inodes += n;
                dirs.extend(more);
                if page.len() < PAGE {
                    break;
                }
            }
        }
        self.write(true, |t| {
            let mut v = load_volume(t, vol.id)?;
            v.building = false;
            store_volume(t, &v)?;
            t.put(&keys::usage(v.id), &enc(&Usage { bytes, inodes })?)?;
            Ok(v)
        })
    }

    /// Deletes the clones a crash left half copied; returns their names.
    pub fn remove_unfinished_clones(&self) -> Result<Vec<String>> {
        let unfinished: Vec<String> = self.read(|t| {
            let mut out = Vec::new();
            for (_, v) in t.scan(keys::VOLUME_PREFIX, &prefix_end(keys::VOLUME_PREFIX), usize::MAX)? {
                let v: Volume = serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                if v.building && !v.gone {
                    out.push(v.name);
                }
            }
            Ok(out)
        })?;
        for name in &unfinished {
            self.delete_volume(name)?;
        }
        // Snapshots taken for clones that never finished.
        let mut leftovers = Vec::new();
        for (v, _) in self.list_volumes()? {
            for s in self.list_snapshots(&v.name)? {
                if let Some(target) = s.owner.as_deref().and_then(|o| o.strip_prefix("clone:"))
                    && !s.deleting
                    && !matches!(self.volume(target), Ok(t) if t.building)
                {
                    leftovers.push((v.name.clone(), s.name.clone(), s.owner.clone()));
                }
            }
        }
        for (v, s, owner) in leftovers {
            self.delete_snapshot(&v, &s, owner.as_deref())?;
        }
        Ok(unfinished)
    }
}
