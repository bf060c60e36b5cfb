//! Volumes: creating, describing, resizing and deleting the top-level namespaces, and their
//! usage.

use crate::codec::{dec_entry, enc};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::txn::*;
use crate::types::*;

/// Directory entries removed per transaction when a volume is deleted.
const VOLUME_REMOVE_BATCH: usize = 256;

/// Options of a new volume.
#[derive(Clone, Debug, Default)]
pub struct NewVolume {
    /// Storage class.
    pub class: String,
    /// Byte quota, 0 for none.
    pub capacity: u64,
    /// Inode quota, 0 for none.
    pub inode_limit: u64,
    /// Block size (0 for the default).
    pub block_size: u32,
    /// Block store URL.
    pub store: String,
    /// Compression.
    pub compression: String,
    /// Reclaim policy.
    pub reclaim: Reclaim,
    /// Owning scope.
    pub scope: String,
}

/// Stores a new volume: its record, name, usage and empty root directory.
pub(crate) fn init_volume(t: &mut dyn KvTxn, vol: &Volume) -> Result<()> {
    let ts = vol.created;
    let attr = Attr {
        kind: FileType::Dir,
        mode: 0o777,
        uid: 0,
        gid: 0,
        rdev: 0,
        nlink: 2,
        size: 0,
        atime: ts,
        mtime: ts,
        ctime: ts,
        parent: vol.root,
        volume: vol.id,
    };
    store_attr(t, vol.root, &attr)?;
    t.put(&keys::volume(vol.id), &serde_json::to_vec(vol).map_err(|e| MetaError::Corrupt(e.to_string()))?)?;
    t.put(&keys::volume_name(&vol.name), &vol.id.to_be_bytes())?;
    t.put(&keys::usage(vol.id), &enc(&Usage { bytes: 0, inodes: 1 })?)
}

impl Meta {
    /// Creates a volume with an empty root directory.
    pub fn create_volume(&self, name: &str, opts: &NewVolume) -> Result<Volume> {
        crate::validate_name(name)?;
        let root = self.alloc_ino()?;
        let id = self.alloc_volume_id()?;
        self.write(true, |t| {
            if t.get(&keys::volume_name(name))?.is_some() {
                return Err(MetaError::VolumeExists(name.to_string()));
            }
            let vol = Volume {
                id,
                name: name.to_string(),
                root,
                class: opts.class.clone(),
                capacity: opts.capacity,
                inode_limit: opts.inode_limit,
                block_size: if opts.block_size == 0 { DEFAULT_BLOCK_SIZE } else { opts.block_size },
                store: opts.store.clone(),
                compression: if opts.compression.is_empty() { "none".into() } else { opts.compression.clone() },
                reclaim: opts.reclaim,
                scope: if opts.scope.is_empty() { "cluster".into() } else { opts.scope.clone() },
                created: now(),
                access_mode: AccessMode::ReadWriteMany,
                origins: Vec::new(),
                building: false,
                gone: false,
                removing: false,
            };
            init_volume(t, &vol)?;
            Ok(vol)
        })
    }

    /// Reserves a volume id.
    pub(crate) fn alloc_volume_id(&self) -> Result<u32> {
        let id = self.bump_counter("volume", 1)?;
        u32::try_from(id).map_err(|_| MetaError::Invalid("too many volumes".into()))
    }

    /// A volume by name.
    pub fn volume(&self, name: &str) -> Result<Volume> {
        self.read(|t| {
            let id = t.get(&keys::volume_name(name))?.ok_or_else(|| MetaError::NoVolume(name.to_string()))?;
            let id: [u8; 4] = id.as_slice().try_into().map_err(|_| MetaError::Corrupt("volume index".into()))?;
            load_volume(t, u32::from_be_bytes(id))
        })
    }

    /// A volume by id.
    pub fn volume_by_id(&self, id: u32) -> Result<Volume> {
        self.read(|t| load_volume(t, id))
    }

    /// All volumes with their usage, by name.
    pub fn list_volumes(&self) -> Result<Vec<(Volume, Usage)>> {
        self.read(|t| {
            let mut out = Vec::new();
            for (_, v) in t.scan(keys::VOLUME_PREFIX, &prefix_end(keys::VOLUME_PREFIX), usize::MAX)? {
                let vol: Volume = serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                if vol.gone || vol.building {
                    continue;
                }
                let u = load_usage(t, vol.id)?;
                out.push((vol, u));
            }
            out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            Ok(out)
        })
    }

    /// Changes a volume's quotas; shrinking below current use is refused.
    pub fn set_volume_quota(&self, name: &str, capacity: Option<u64>, inode_limit: Option<u64>) -> Result<Volume> {
        let id = self.volume(name)?.id;
        self.write(true, |t| {
            let mut v = load_volume(t, id)?;
            let u = load_usage(t, id)?;
            if let Some(c) = capacity {
                if c != 0 && c < u.bytes {
                    return Err(MetaError::Invalid(format!("capacity {c} is below the {} bytes in use", u.bytes)));
                }
                v.capacity = c;
            }
            if let Some(n) = inode_limit {
                if n != 0 && n < u.inodes {
                    return Err(MetaError::Invalid(format!("inode limit {n} is below the {} inodes in use", u.inodes)));
                }
                v.inode_limit = n;
            }
            t.put(&keys::volume(id), &serde_json::to_vec(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?)?;
            Ok(v)
        })
    }

    /// Deletes a volume. With the delete reclaim policy its whole tree goes and its slices are
    /// queued for block deletion; with retain, only the name is released and the data stays.
    pub fn delete_volume(&self, name: &str) -> Result<Volume> {
        let vol = self.volume(name)?;
        let opened = self.open_inodes()?.into_iter().any(|ino| self.getattr(ino).is_ok_and(|a| a.volume == vol.id));
        if opened {
            return Err(MetaError::Busy(format!("volume {name} has open files")));
        }
        let snaps = self.list_snapshots(name)?;
        if let Some(s) = snaps.iter().find(|s| s.owner.is_none() && !s.deleting) {
            return Err(MetaError::Busy(format!("volume {name} has snapshots (first: {}); delete them first", s.name)));
        }
        // First, in one transaction: the name is free and the volume hidden at once.
        let removing = vol.reclaim != Reclaim::Retain;
        self.write(true, |t| {
            t.delete(&keys::volume_name(name))?;
            t.delete(&keys::volume_qos(vol.id))?;
            let mut gone = load_volume(t, vol.id)?;
            gone.gone = true;
            gone.removing = removing;
            put_volume(t, &gone)
        })?;
        // Then its tree, in transactions of bounded size: one transaction over a large tree
        // would be starved by concurrent writers on PostgreSQL (its serializable reads touch
        // everything they write). A crash midway is finished at the next start.
        self.finish_volume_removal(vol.id)?;
        Ok(vol)
    }

    /// Finishes removing the trees of volumes whose deletion a crash cut short; returns how
    /// many it finished.
    pub fn resume_volume_removals(&self) -> Result<usize> {
        let pending: Vec<u32> = self.read(|t| {
            let mut out = Vec::new();
            for (_, v) in t.scan(keys::VOLUME_PREFIX, &prefix_end(keys::VOLUME_PREFIX), usize::MAX)? {
                let vol: Volume = serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                if vol.removing {
                    out.push(vol.id);
                }
            }
            Ok(out)
        })?;
        for id in &pending {
            self.finish_volume_removal(*id)?;
        }
        Ok(pending.len())
    }

    /// Removes the tree of deleted volume `id` (marked `removing`) in batches, then its record
    /// unless snapshots or clones still read its blocks.
    fn finish_volume_removal(&self, id: u32) -> Result<()> {
        loop {
            let done = self.write(true, |t| {
                let Ok(mut vol) = load_volume(t, id) else { return Ok(true) };
                if vol.removing {
                    let mut budget = VOLUME_REMOVE_BATCH;
                    if !remove_tree_some(t, vol.root, &mut budget)? {
                        return Ok(false);
                    }
                    if let Ok(a) = load_attr(t, vol.root) {
                        destroy(t, vol.root, &a)?;
                    }
                    t.delete(&keys::usage(vol.id))?;
                    vol.removing = false;
                }
                // Kept, hidden, while snapshots (of data volumes) or clones still read its
                // blocks: its record names their store.
                if crate::snapshots::still_needed(t, vol.id)? {
                    put_volume(t, &vol)?;
                } else {
                    t.delete(&keys::volume(vol.id))?;
                }
                Ok(true)
            })?;
            if done {
                return Ok(());
            }
        }
    }

    /// Sets (`Some((bytes_per_sec, ops_per_sec))`, 0 = unlimited) or clears (`None`: back to
    /// its class's) a volume's own QoS limits per mount.
    pub fn set_volume_qos(&self, name: &str, qos: Option<(u64, u64)>) -> Result<Volume> {
        if let Some((b, o)) = qos {
            for (what, v) in [("bandwidth limit", b), ("operations limit", o)] {
                if v > crate::control::MAX_SETTING {
                    return Err(MetaError::Invalid(format!(
                        "{what} {v} is more than the largest allowed, {}",
                        crate::control::MAX_SETTING
                    )));
                }
            }
        }
        let id = self.volume(name)?.id;
        self.write(true, |t| {
            let v = load_volume(t, id)?;
            match qos {
                Some(q) => t.put(&keys::volume_qos(id), &enc(&q)?)?,
                None => t.delete(&keys::volume_qos(id))?,
            }
            Ok(v)
        })
    }

    /// A volume's own QoS limits per mount, `(bytes_per_sec, ops_per_sec)`, if it has any.
    pub fn volume_qos(&self, id: u32) -> Result<Option<(u64, u64)>> {
        self.read(|t| load_volume_qos(t, id))
    }

    /// The QoS limits a mount of volume `id` gets: its own if set, else its class's (none if
    /// the class is gone).
    pub fn effective_qos(&self, id: u32) -> Result<(u64, u64)> {
        self.read(|t| {
            if let Some(q) = load_volume_qos(t, id)? {
                return Ok(q);
            }
            let v = load_volume(t, id)?;
            Ok(match t.get(&keys::class(&v.class))? {
                Some(b) => {
                    let c: crate::control::StorageClass =
                        serde_json::from_slice(&b).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                    (c.qos.bytes_per_sec, c.qos.ops_per_sec)
                }
                None => (0, 0),
            })
        })
    }

    /// Space and inode use of a volume.
    pub fn usage(&self, vol: u32) -> Result<Usage> {
        self.read(|t| load_usage(t, vol))
    }
}

fn load_volume_qos(t: &mut dyn KvTxn, id: u32) -> Result<Option<(u64, u64)>> {
    t.get(&keys::volume_qos(id))?.map(|b| crate::codec::dec(&b)).transpose()
}

fn put_volume(t: &mut dyn KvTxn, v: &Volume) -> Result<()> {
    t.put(&keys::volume(v.id), &serde_json::to_vec(v).map_err(|e| MetaError::Corrupt(e.to_string()))?)
}

/// Removes up to `budget` entries of the tree under `root`, deepest first (a directory's
/// entry goes only once the directory is empty, so what is left stays reachable from the root
/// for the next batch); true when the tree is empty.
fn remove_tree_some(t: &mut dyn KvTxn, root: Ino, budget: &mut usize) -> Result<bool> {
    let mut stack = vec![root];
    while let Some(&dir) = stack.last() {
        let p = keys::dentry_prefix(dir);
        let page = t.scan(&p, &prefix_end(&p), (*budget).clamp(1, 64))?;
        if page.is_empty() {
            stack.pop();
            continue;
        }
        for (k, v) in page {
            if *budget == 0 {
                return Ok(false);
            }
            let (ino, kind) = dec_entry(&v)?;
            if kind == FileType::Dir {
                let cp = keys::dentry_prefix(ino);
                if !t.scan(&cp, &prefix_end(&cp), 1)?.is_empty() {
                    stack.push(ino);
                    break;
                }
            }
            t.delete(&k)?;
            *budget -= 1;
            if let Ok(mut a) = load_attr(t, ino) {
                a.nlink = a.nlink.saturating_sub(1);
                if a.nlink == 0 || kind == FileType::Dir {
                    destroy(t, ino, &a)?;
                } else {
                    store_attr(t, ino, &a)?;
                }
            }
        }
        if *budget == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}
