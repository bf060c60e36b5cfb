//! File data in the namespace: committing written slices to chunks, reading a chunk's slice
//! list, and swapping a compacted slice in.

use crate::codec::{dec_slices, push_slice};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::meta::Meta;
use crate::txn::*;
use crate::types::*;

impl Meta {
    /// Records written slices and the new length, in one transaction.
    pub fn commit_writes(&self, ino: Ino, writes: &[(u32, Slice)]) -> Result<Attr> {
        Ok(self.commit_writes_with(ino, writes, &[], false)?.attr)
    }

    /// [`Meta::commit_writes`], where `durable` makes this commit and every one before it durable. `journal` holds blocks of
    /// these slices (key, bytes as stored) that the client wrote to a local block directory but
    /// did not sync: they are kept with the commit, so one sync of the metadata makes the data
    /// durable too, until the server has synced the block files ([`Meta::journaled`],
    /// [`Meta::forget_journaled`]) or, after a crash, rewritten them from here.
    pub fn commit_writes_with(
        &self,
        ino: Ino,
        writes: &[(u32, Slice)],
        journal: &[(String, Vec<u8>)],
        durable: bool,
    ) -> Result<Committed> {
        self.write(durable, |t| {
            for (key, data) in journal {
                t.put(&keys::journal(key), data)?;
            }
            // The attributes and every chunk written, in one read.
            let mut want = vec![keys::attr(ino).to_vec()];
            for (idx, s) in writes {
                let ck = keys::chunk(ino, *idx).to_vec();
                if s.len > 0 && !want.contains(&ck) {
                    want.push(ck);
                }
            }
            let got = t.get_many(&want)?;
            let mut read: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> = want.into_iter().zip(got).collect();
            let mut a: Attr = match read.remove(keys::attr(ino).as_slice()).flatten() {
                Some(v) => crate::codec::dec(&v)?,
                None => return Err(MetaError::NotFound),
            };
            if a.kind != FileType::File {
                return Err(MetaError::Invalid("write to a non-file".into()));
            }
            let mut end = a.size;
            for (idx, s) in writes {
                if u64::from(s.pos) + u64::from(s.len) > CHUNK_SIZE
                    || s.off.checked_add(s.len).is_none_or(|e| e > s.size)
                {
                    return Err(MetaError::Invalid("slice outside its chunk".into()));
                }
                if s.len > 0 {
                    end = end.max(u64::from(*idx) * CHUNK_SIZE + u64::from(s.pos) + u64::from(s.len));
                }
            }
            if end > MAX_FILE_SIZE {
                return Err(MetaError::TooBig);
            }
            let before = a.charged_bytes() as i64;
            a.size = end;
            charge(t, a.volume, a.charged_bytes() as i64 - before, 0)?;
            let mut chunk_slices: Vec<(u32, usize)> = Vec::new();
            for (idx, s) in writes.iter().filter(|(_, s)| s.len > 0) {
                let ck = keys::chunk(ino, *idx);
                let mut raw = match read.remove(ck.as_slice()) {
                    Some(v) => v.unwrap_or_default(),
                    None => t.get(&ck)?.unwrap_or_default(),
                };
                push_slice(&mut raw, s);
                t.put(&ck, &raw)?;
                let n = raw.len() / crate::codec::SLICE_LEN;
                match chunk_slices.iter_mut().find(|(i, _)| i == idx) {
                    Some(e) => e.1 = n,
                    None => chunk_slices.push((*idx, n)),
                }
            }
            let ts = now();
            a.mtime = ts;
            a.ctime = ts;
            store_attr(t, ino, &a)?;
            let used_bytes = load_usage(t, a.volume)?.bytes;
            let capacity = load_volume(t, a.volume)?.capacity;
            Ok(Committed { attr: a, chunk_slices, used_bytes, capacity })
        })
    }

    /// The slice list of one chunk, oldest first.
    pub fn read_chunk(&self, ino: Ino, idx: u32) -> Result<Vec<Slice>> {
        self.read_latest(|t| match t.get(&keys::chunk(ino, idx))? {
            Some(raw) => dec_slices(&raw),
            None => {
                load_attr(t, ino)?;
                Ok(Vec::new())
            }
        })
    }

    /// Replaces the first `replaced` slices of a chunk with one slice holding the same bytes,
    /// if the list still starts with exactly those slices. Returns whether it did.
    pub fn compact_chunk(&self, ino: Ino, idx: u32, replaced: &[Slice], with: Slice) -> Result<bool> {
        self.write(false, |t| {
            let ck = keys::chunk(ino, idx);
            let Some(raw) = t.get(&ck)? else { return Ok(false) };
            let cur = dec_slices(&raw)?;
            if cur.len() < replaced.len() || cur[..replaced.len()] != *replaced {
                return Ok(false);
            }
            let a = load_attr(t, ino)?;
            let mut out = Vec::with_capacity((cur.len() - replaced.len() + 1) * crate::codec::SLICE_LEN);
            push_slice(&mut out, &with);
            for s in &cur[replaced.len()..] {
                push_slice(&mut out, s);
            }
            t.put(&ck, &out)?;
            let still: std::collections::HashSet<u64> = cur[replaced.len()..].iter().map(|s| s.id).collect();
            let mut seen = std::collections::HashSet::new();
            for s in replaced {
                if s.id != 0 && !still.contains(&s.id) && seen.insert(s.id) {
                    free_slice(t, a.volume, ino, s)?;
                }
            }
            Ok(true)
        })
    }
}
