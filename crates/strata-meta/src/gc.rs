//! Garbage: slices whose last reference went (pending deletion of their blocks), the slices
//! still referenced, and the journal of small blocks a durable commit carried.

use std::collections::HashMap;

use crate::codec::{dec, dec_slices};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::types::*;

impl Meta {
    /// Slices whose blocks may be deleted now (their inode is not open anywhere).
    pub fn collectable(&self, limit: usize) -> Result<Vec<(u64, Pending)>> {
        // Page through the pending slices: those of open files are skipped, and must not hide
        // the ones behind them from a collector asking for `limit` at a time.
        let end = prefix_end(keys::PENDING_PREFIX);
        let mut start = keys::PENDING_PREFIX.to_vec();
        let mut out = Vec::new();
        while out.len() < limit {
            // Whether each inode is open is read in the page's own transaction (one lookup per
            // distinct inode).
            let (page, free) = self.read(|t| {
                let page = t.scan(&start, &end, 1024)?;
                let mut open: HashMap<Ino, bool> = HashMap::new();
                let mut free = Vec::with_capacity(page.len());
                for (k, v) in &page {
                    let id = keys::u64_at(k, 1).ok_or_else(|| MetaError::Corrupt("pending key".into()))?;
                    let p: Pending = dec(v)?;
                    if !self.is_open_seen(t, &mut open, p.ino)? {
                        free.push((id, p));
                    }
                }
                Ok((page, free))
            })?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for item in free {
                out.push(item);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Those of `ids` that are collectable now (see [`Meta::collectable`]): unreferenced, of
    /// an inode open nowhere, so nobody reads their blocks again.
    pub fn collectable_among(&self, ids: &[u64]) -> Result<std::collections::HashSet<u64>> {
        self.read(|t| {
            let mut out = std::collections::HashSet::new();
            let mut open: HashMap<Ino, bool> = HashMap::new();
            for id in ids {
                let Some(v) = t.get(&keys::pending(*id))? else { continue };
                let p: Pending = dec(&v)?;
                if !self.is_open_seen(t, &mut open, p.ino)? {
                    out.insert(*id);
                }
            }
            Ok(out)
        })
    }

    /// Every slice id the namespace still needs: referenced by a chunk, or awaiting collection.
    /// A block whose slice is not in this set was uploaded by a client that never committed it.
    pub fn referenced_slices(&self) -> Result<std::collections::HashSet<u64>> {
        self.read(|t| {
            let mut ids = std::collections::HashSet::new();
            for prefix in [&b"C"[..], keys::PENDING_PREFIX, b"ZC"] {
                let end = prefix_end(prefix);
                let mut from = prefix.to_vec();
                loop {
                    let batch = t.scan(&from, &end, 4096)?;
                    let Some((last, _)) = batch.last() else { break };
                    from = last.clone();
                    from.push(0);
                    for (k, v) in &batch {
                        if prefix == keys::PENDING_PREFIX {
                            ids.extend(keys::u64_at(k, 1));
                        } else if prefix == b"ZC" {
                            // Chunks as snapshots saw them.
                            if let Some(chunk) = crate::versions::dec_version(v)? {
                                ids.extend(dec_slices(&chunk)?.iter().map(|s| s.id).filter(|id| *id != 0));
                            }
                        } else {
                            ids.extend(dec_slices(v)?.iter().map(|s| s.id).filter(|id| *id != 0));
                        }
                    }
                }
            }
            Ok(ids)
        })
    }

    /// Up to `limit` journaled blocks, in key order after block key `after` (from the first
    /// when `None`): key and bytes as stored.
    pub fn journaled(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let end = prefix_end(keys::JOURNAL_PREFIX);
        let start = match after {
            // The smallest key greater than `after`'s.
            Some(k) => {
                let mut s = keys::journal(k);
                s.push(0);
                s
            }
            None => keys::JOURNAL_PREFIX.to_vec(),
        };
        self.read(|t| {
            t.scan(&start, &end, limit)?
                .into_iter()
                .map(|(k, v)| {
                    let key =
                        String::from_utf8(k[1..].to_vec()).map_err(|_| MetaError::Corrupt("journal key".into()))?;
                    Ok((key, v))
                })
                .collect()
        })
    }

    /// The journaled copy of one block (bytes as stored): what a reader gets while the server
    /// has not yet written the block's file. `None` when the block is not journaled.
    pub fn journaled_block(&self, block_key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|t| t.get(&keys::journal(block_key)))
    }

    /// Those of `block_keys` that are still journaled (their files may not be written yet).
    pub fn journaled_among(&self, block_keys: &[String]) -> Result<Vec<String>> {
        self.read(|t| {
            let mut out = Vec::new();
            for k in block_keys {
                if t.get(&keys::journal(k))?.is_some() {
                    out.push(k.clone());
                }
            }
            Ok(out)
        })
    }

    /// Drops journaled blocks whose files are durable.
    pub fn forget_journaled(&self, keys_done: &[String]) -> Result<()> {
        self.write(false, |t| {
            for k in keys_done {
                t.delete(&keys::journal(k))?;
            }
            Ok(())
        })
    }

    /// Forgets pending slices whose blocks are gone.
    pub fn forget_pending(&self, ids: &[u64]) -> Result<()> {
        self.write(false, |t| {
            for id in ids {
                t.delete(&keys::pending(*id))?;
            }
            Ok(())
        })
    }
}
