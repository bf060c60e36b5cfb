//! What `strata info` and `strata summary` show of a path: one inode with its chunks and
//! slices ([`Meta::inspect`]), and a tree of sizes and counts ([`Meta::summarize`]). Both read
//! one snapshot transaction, so a tree is summed as of one moment without holding up writers.

use crate::codec::{dec, dec_entry, dec_slices};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::types::*;

/// Records read per scan.
const PAGE: usize = 1024;

/// One inode as `strata info` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspected {
    /// The volume it is in.
    pub volume: Volume,
    /// Its number.
    pub ino: Ino,
    /// Its attributes.
    pub attr: Attr,
    /// Its chunks (index and slices, oldest first), for files.
    pub chunks: Vec<(u32, Vec<Slice>)>,
    /// Its target, for symlinks.
    pub target: Option<Vec<u8>>,
    /// How many entries it holds, for directories.
    pub entries: Option<u64>,
    /// How many extended attributes it has.
    pub xattrs: u64,
}

/// A directory tree's sizes and counts, as `strata summary` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryNode {
    /// The entry's name (the path asked for at the top).
    pub name: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// Bytes of the files under it (each name counted, as `du --count-links` does).
    pub size: u64,
    /// Files (and symlinks and other non-directories) under it, itself included.
    pub files: u64,
    /// Directories under it, itself included.
    pub dirs: u64,
    /// Its entries, largest first, down to the depth asked for.
    pub children: Vec<SummaryNode>,
}

/// Walks `path` (`/`-separated, from the volume's root) by entries.
fn resolve(t: &mut dyn KvTxn, root: Ino, path: &str) -> Result<Ino> {
    let mut ino = root;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(MetaError::Invalid("paths with '..' are not resolved; give the path from the root".into()));
        }
        match t.get(&keys::dentry(ino, part.as_bytes()))? {
            Some(v) => ino = dec_entry(&v)?.0,
            None => {
                // As a path walk says it: a file on the way is not a directory.
                let on_the_way: Option<Attr> = t.get(&keys::attr(ino))?.map(|v| dec(&v)).transpose()?;
                return Err(match on_the_way {
                    Some(a) if a.kind != FileType::Dir => MetaError::NotDir,
                    _ => MetaError::NotFound,
                });
            }
        }
    }
    Ok(ino)
}

fn volume_named(t: &mut dyn KvTxn, name: &str) -> Result<Volume> {
    let id = match t.get(&keys::volume_name(name))? {
        Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        Some(_) => return Err(MetaError::Corrupt(format!("volume name {name:?}"))),
        None => return Err(MetaError::NoVolume(name.to_string())),
    };
    crate::txn::load_volume(t, id)
}

/// Calls `f` for every record under `prefix`, a page at a time.
fn scan_all(t: &mut dyn KvTxn, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
    let end = prefix_end(prefix);
    let mut from = prefix.to_vec();
    loop {
        let page = t.scan(&from, &end, PAGE)?;
        let Some((last, _)) = page.last() else { return Ok(()) };
        from = last.clone();
        from.push(0);
        for (k, v) in &page {
            f(k, v)?;
        }
    }
}

impl Meta {
    /// Inode `path` of volume `volume` (live, not a snapshot) with its chunks and slices.
    pub fn inspect(&self, volume: &str, path: &str) -> Result<Inspected> {
        let mut out = None;
        self.kv.read_snapshot(&mut |t| {
            let vol = volume_named(t, volume)?;
            let ino = resolve(t, vol.root, path)?;
            let attr: Attr = match t.get(&keys::attr(ino))? {
                Some(v) => dec(&v)?,
                None => {
                    return Err(MetaError::Corrupt(format!("inode {ino} of {path:?} is missing (run strata fsck)")));
                }
            };
            let mut chunks = Vec::new();
            scan_all(t, &keys::chunk_prefix(ino), |k, v| {
                let idx = k.get(9..13).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
                chunks.push((idx, dec_slices(v)?));
                Ok(())
            })?;
            let target = if attr.kind == FileType::Symlink { t.get(&keys::symlink(ino))? } else { None };
            let mut entries = None;
            if attr.kind == FileType::Dir {
                let mut n = 0;
                scan_all(t, &keys::dentry_prefix(ino), |_, _| {
                    n += 1;
                    Ok(())
                })?;
                entries = Some(n);
            }
            let mut xattrs = 0;
            scan_all(t, &keys::xattr_prefix(ino), |_, _| {
                xattrs += 1;
                Ok(())
            })?;
            out = Some(Inspected { volume: vol, ino, attr, chunks, target, entries, xattrs });
            Ok(())
        })?;
        out.ok_or_else(|| MetaError::Engine("inspection produced no result".into()))
    }

    /// The sizes and counts of the tree at `path` of volume `volume`, with its entries down
    /// to `depth` levels (0: the total only), at most `limit` entries per directory shown
    /// (the largest; the rest are still counted).
    pub fn summarize(&self, volume: &str, path: &str, depth: u32, limit: usize) -> Result<SummaryNode> {
        let mut out = None;
        self.kv.read_snapshot(&mut |t| {
            let vol = volume_named(t, volume)?;
            let ino = resolve(t, vol.root, path)?;
            let attr: Attr = match t.get(&keys::attr(ino))? {
                Some(v) => dec(&v)?,
                None => return Err(MetaError::NotFound),
            };
            let mut top = sum_tree(t, ino, &attr, depth, limit)?;
            top.name = format!("{volume}:/{}", path.trim_start_matches('/'));
            out = Some(top);
            Ok(())
        })?;
        out.ok_or_else(|| MetaError::Engine("summary produced no result".into()))
    }
}

/// Sums the tree under `ino`; keeps the nodes `depth` levels down.
fn sum_tree(t: &mut dyn KvTxn, ino: Ino, attr: &Attr, depth: u32, limit: usize) -> Result<SummaryNode> {
    if attr.kind != FileType::Dir {
        return Ok(SummaryNode { size: attr.size, files: 1, ..Default::default() });
    }
    let mut node = SummaryNode { dir: true, dirs: 1, ..Default::default() };
    // Entries a page at a time, their attributes read together; subdirectories after the
    // page, so only one page of entries per level is held.
    let p = keys::dentry_prefix(ino);
    let end = prefix_end(&p);
    let mut from = p.to_vec();
    loop {
        let page = t.scan(&from, &end, PAGE)?;
        let Some((last, _)) = page.last() else { break };
        from = last.clone();
        from.push(0);
        let mut kids = Vec::with_capacity(page.len());
        for (k, v) in &page {
            kids.push((k[9..].to_vec(), dec_entry(v)?.0));
        }
        let attrs = t.get_many(&kids.iter().map(|(_, i)| keys::attr(*i).to_vec()).collect::<Vec<_>>())?;
        for ((name, child), a) in kids.into_iter().zip(attrs) {
            // An entry whose inode is missing counts for nothing (strata fsck reports it).
            let Some(a) = a else { continue };
            let a: Attr = dec(&a)?;
            let mut sub = sum_tree(t, child, &a, depth.saturating_sub(1), limit)?;
            node.size += sub.size;
            node.files += sub.files;
            node.dirs += sub.dirs;
            if depth > 0 {
                sub.name = String::from_utf8_lossy(&name).into_owned();
                node.children.push(sub);
                if node.children.len() > limit.saturating_mul(2).max(64) {
                    keep_largest(&mut node.children, limit);
                }
            }
        }
    }
    keep_largest(&mut node.children, limit);
    Ok(node)
}

fn keep_largest(nodes: &mut Vec<SummaryNode>, limit: usize) {
    nodes.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
    nodes.truncate(limit);
}
