//! The metadata half of `strata fsck`: a check of the namespace against itself, read from one
//! point in time of a live store ([`Meta::check_namespace`]), and the repairs that are safe
//! while clients work, each recomputed in its own transaction from the records as they are
//! then ([`Meta::repair_usage`], [`Meta::repair_link_count`], [`Meta::repair_dangling_entry`]).
//!
//! The check also gathers what the block half (in the server, which reaches the block stores)
//! needs: every slice some record still needs with the volume its blocks are named under,
//! the pending slices, and the journaled blocks; and names inodes by path for the report.

use std::collections::{HashMap, HashSet};

use crate::codec::{dec, dec_entry, dec_slices, enc};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::txn::{load_attr, store_attr};
use crate::types::*;
use crate::versions::MAX_LIVE_INO;

/// Records read per scan.
const PAGE: usize = 4096;

/// A namespace problem found by [`Meta::check_namespace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NsProblem {
    /// An entry names an inode that does not exist.
    DanglingEntry {
        /// The directory.
        parent: Ino,
        /// The entry's name.
        name: Vec<u8>,
        /// The missing inode.
        ino: Ino,
        /// What the entry says it is.
        kind: FileType,
    },
    /// An entry's type is not its inode's.
    KindMismatch {
        /// The directory.
        parent: Ino,
        /// The entry's name.
        name: Vec<u8>,
        /// The inode.
        ino: Ino,
    },
    /// An inode's link count is not the number of entries naming it (directories: 2 plus
    /// their subdirectories).
    LinkCount {
        /// The inode.
        ino: Ino,
        /// The count it records.
        have: u32,
        /// The count the entries give.
        want: u32,
    },
    /// An inode no entry names, neither a volume root nor unlinked while open.
    Unreachable {
        /// The inode.
        ino: Ino,
        /// Its type.
        kind: FileType,
        /// Its length.
        size: u64,
    },
    /// Records (chunks, xattrs, a symlink target) of an inode that does not exist.
    LeftoverRecords {
        /// The inode.
        ino: Ino,
    },
    /// A volume's usage counters disagree with its inodes.
    Usage {
        /// The volume.
        volume: u32,
        /// What the counters say.
        have: Usage,
        /// What the inodes add up to.
        want: Usage,
    },
    /// A volume's root directory is missing.
    MissingRoot {
        /// The volume.
        volume: u32,
    },
}

/// What uses a slice: who reports it, and under which volume's name its blocks are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceUse {
    /// Stored length of the slice (names its blocks).
    pub size: u32,
    /// The volume whose block names hold it (`None`: its inode and volume are unknown).
    pub volume: Option<u32>,
    /// An inode that references it.
    pub ino: Ino,
    /// Whether only snapshots' saved versions reference it.
    pub in_snapshot_only: bool,
}

/// The result of [`Meta::check_namespace`].
#[derive(Debug, Default)]
pub struct NsCheck {
    /// What is wrong.
    pub problems: Vec<NsProblem>,
    /// Every volume record, deleted ones kept for their clones included.
    pub volumes: HashMap<u32, Volume>,
    /// Every slice a chunk or a snapshot's saved chunk references.
    pub slices: HashMap<u64, SliceUse>,
    /// Slices waiting for their blocks to be deleted.
    pub pending: HashMap<u64, Pending>,
    /// Keys of the blocks whose durability is a journaled copy in the store.
    pub journaled: HashSet<String>,
    /// Inodes checked.
    pub inodes: u64,
    /// Directory entries checked.
    pub entries: u64,
    /// One name of each named inode: its directory and name.
    names: HashMap<Ino, (Ino, Vec<u8>)>,
    /// Volume roots, with the volume's name.
    roots: HashMap<Ino, String>,
    /// The volume of each inode.
    inode_volume: HashMap<Ino, u32>,
}

impl NsCheck {
    /// A path for inode `ino` as of the check: `VOLUME:/dir/name`, or a description when no
    /// name leads to it.
    pub fn path(&self, ino: Ino) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if let Some(v) = self.roots.get(&cur) {
                parts.reverse();
                return format!("{v}:/{}", parts.join("/"));
            }
            let Some((parent, name)) = self.names.get(&cur) else { break };
            parts.push(String::from_utf8_lossy(name).into_owned());
            cur = *parent;
        }
        match self.inode_volume.get(&ino).and_then(|v| self.volumes.get(v)) {
            Some(v) => format!("{}:<inode {ino}, no name>", v.name),
            None => format!("<inode {ino}>"),
        }
    }

    /// A path for entry `name` of directory `parent`.
    pub fn entry_path(&self, parent: Ino, name: &[u8]) -> String {
        let dir = self.path(parent);
        let sep = if dir.ends_with('/') { "" } else { "/" };
        format!("{dir}{sep}{}", String::from_utf8_lossy(name))
    }

    /// The volume of inode `ino`, if it exists.
    pub fn inode_volume(&self, ino: Ino) -> Option<u32> {
        self.inode_volume.get(&ino).copied()
    }

    /// The volume's name.
    pub fn volume_name(&self, id: u32) -> String {
        self.volumes.get(&id).map(|v| v.name.clone()).unwrap_or_else(|| format!("#{id}"))
    }
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

fn key_ino(k: &[u8]) -> Result<Ino> {
    keys::u64_at(k, 1).ok_or_else(|| MetaError::Corrupt(format!("record key {k:?}")))
}

/// What one inode record says, as far as the check needs it.
struct Facts {
    kind: FileType,
    nlink: u32,
    volume: u32,
    charged: u64,
    size: u64,
}

impl Meta {
    /// Checks the namespace against itself as of one point in time (one snapshot
    /// transaction: clients go on working): entries against inodes, link counts, inodes
    /// nothing names, usage counters against the inodes of each volume; and gathers the
    /// slices whose blocks must exist. Memory grows with the number of inodes and slices.
    pub fn check_namespace(&self) -> Result<NsCheck> {
        let mut out = NsCheck::default();
        self.kv.read_snapshot(&mut |t| {
            out = check_in(t)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Every volume record, deleted ones kept for their clones' blocks included.
    pub fn all_volumes(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        self.kv.read(&mut |t| {
            out.clear();
            scan_all(t, keys::VOLUME_PREFIX, |k, v| {
                if k.len() == 5 {
                    out.push(serde_json::from_slice(v).map_err(|e| MetaError::Corrupt(format!("volume record: {e}")))?);
                }
                Ok(())
            })
        })?;
        Ok(out)
    }

    /// Recomputes volume `vol`'s usage from its inodes, in one transaction (so from the
    /// records as they are now, whatever the check saw), and stores it. Returns the counters
    /// before and after.
    pub fn repair_usage(&self, vol: u32) -> Result<(Usage, Usage)> {
        self.write(true, |t| {
            let have: Usage = match t.get(&keys::usage(vol))? {
                Some(v) => dec(&v)?,
                None => Usage::default(),
            };
            let want = usage_of(t, vol)?;
            if want != have {
                t.put(&keys::usage(vol), &enc(&want)?)?;
            }
            Ok((have, want))
        })
    }

    /// Sets inode `ino`'s link count to the number of entries naming it (directories: 2 plus
    /// their subdirectories), counted in the same transaction. An inode nothing names is left
    /// alone (it is reported, not destroyed). Returns the count before and after when it
    /// changed.
    pub fn repair_link_count(&self, ino: Ino) -> Result<Option<(u32, u32)>> {
        // Unversioned: every link change writes the inode, saving its version for the
        // snapshots before; a snapshot with no saved version reads the live record, so it
        // had the wrong count too, and gets the right one with it.
        let mut out = None;
        self.kv.write(true, &mut |t| {
            out = relink(t, ino)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Gives entry `name` of directory `parent`, whose inode is missing, its inode back: the
    /// records still there (chunks, symlink target, entries of a directory) are kept, and the
    /// attributes rebuilt from them (owner root, mode 0644, 0755 for directories, 0777 for
    /// symlinks; length from the chunks or the target). The volume's usage is not changed
    /// here (repair it after). Returns the attributes made, or `None` when the entry is gone or
    /// its inode exists by now.
    pub fn repair_dangling_entry(&self, parent: Ino, name: &[u8]) -> Result<Option<Attr>> {
        // Unversioned: the record went without a version being saved, so snapshots taken
        // before read it from the live record too, and get it back with it (a versioned write
        // would save "absent" for them).
        let mut out = None;
        self.kv.write(true, &mut |t| {
            out = rebuild_inode(t, parent, name)?;
            Ok(())
        })?;
        Ok(out)
    }
}

/// [`Meta::repair_link_count`] in a transaction.
fn relink(t: &mut dyn KvTxn, ino: Ino) -> Result<Option<(u32, u32)>> {
    let mut a = match load_attr(t, ino) {
        Ok(a) => a,
        Err(MetaError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let want = links_now(t, ino, &a)?;
    if want == 0 || want == a.nlink {
        return Ok(None);
    }
    let have = a.nlink;
    a.nlink = want;
    store_attr(t, ino, &a)?;
    Ok(Some((have, want)))
}

/// [`Meta::repair_dangling_entry`] in a transaction.
fn rebuild_inode(t: &mut dyn KvTxn, parent: Ino, name: &[u8]) -> Result<Option<Attr>> {
    let Some(v) = t.get(&keys::dentry(parent, name))? else { return Ok(None) };
    let (ino, kind) = dec_entry(&v)?;
    if t.get(&keys::attr(ino))?.is_some() {
        return Ok(None);
    }
    let dir = load_attr(t, parent)?;
    let mode = match kind {
        FileType::Dir => 0o755,
        FileType::Symlink => 0o777,
        _ => 0o644,
    };
    let mut a = Attr::new(kind, mode, 0, 0);
    a.volume = dir.volume;
    let now = Timespec::now();
    (a.atime, a.mtime, a.ctime) = (now, now, now);
    match kind {
        FileType::Dir => a.parent = parent,
        FileType::Symlink => a.size = t.get(&keys::symlink(ino))?.map_or(0, |s| s.len() as u64),
        FileType::File => a.size = extent_of(t, ino)?,
        _ => {}
    }
    a.nlink = links_now(t, ino, &a)?.max(1);
    store_attr(t, ino, &a)?;
    Ok(Some(a))
}

/// The end of the last byte any chunk of file `ino` covers.
fn extent_of(t: &mut dyn KvTxn, ino: Ino) -> Result<u64> {
    let mut end = 0u64;
    scan_all(t, &keys::chunk_prefix(ino), |k, v| {
        let idx = k.get(9..13).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
        let idx = u64::from(idx);
        for s in dec_slices(v)? {
            end = end.max(idx * CHUNK_SIZE + u64::from(s.pos) + u64::from(s.len));
        }
        Ok(())
    })?;
    Ok(end)
}

/// The link count the entries give inode `ino` now.
fn links_now(t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<u32> {
    let mut n = 0u32;
    if a.kind == FileType::Dir {
        scan_all(t, &keys::dentry_prefix(ino), |_, v| {
            if dec_entry(v)?.1 == FileType::Dir {
                n += 1;
            }
            Ok(())
        })?;
        return Ok(n + 2);
    }
    scan_all(t, b"D", |_, v| {
        if dec_entry(v)?.0 == ino {
            n += 1;
        }
        Ok(())
    })?;
    Ok(n)
}

/// What volume `vol`'s usage counters should say: its inodes and their charged bytes, less
/// what unlinks of files still open gave back already.
fn usage_of(t: &mut dyn KvTxn, vol: u32) -> Result<Usage> {
    let mut u = Usage::default();
    let mut given = Vec::new();
    scan_all(t, keys::SUSTAINED_PREFIX, |k, v| {
        if let Some(b) = keys::uncharged_bytes(v) {
            given.push((key_ino(k)?, b));
        }
        Ok(())
    })?;
    let mut vols: HashMap<Ino, u32> = HashMap::new();
    scan_all(t, b"A", |k, v| {
        let ino = key_ino(k)?;
        if ino > MAX_LIVE_INO {
            return Ok(());
        }
        let a: Attr = dec(v)?;
        vols.insert(ino, a.volume);
        if a.volume == vol {
            u.bytes += a.charged_bytes();
            u.inodes += 1;
        }
        Ok(())
    })?;
    for (ino, b) in given {
        if vols.get(&ino) == Some(&vol) {
            u.bytes = u.bytes.saturating_sub(b);
            u.inodes = u.inodes.saturating_sub(1);
        }
    }
    Ok(u)
}

fn check_in(t: &mut dyn KvTxn) -> Result<NsCheck> {
    let mut c = NsCheck::default();
    scan_all(t, keys::VOLUME_PREFIX, |k, v| {
        if k.len() != 5 {
            return Ok(());
        }
        let vol: Volume = serde_json::from_slice(v).map_err(|e| MetaError::Corrupt(format!("volume record: {e}")))?;
        c.volumes.insert(vol.id, vol);
        Ok(())
    })?;
    for v in c.volumes.values() {
        if !v.gone {
            c.roots.insert(v.root, v.name.clone());
        }
    }
    // A clone being copied is checked once it is built: its records arrive over many
    // transactions.
    let building: HashSet<u32> = c.volumes.values().filter(|v| v.building).map(|v| v.id).collect();
    let mut facts: HashMap<Ino, Facts> = HashMap::new();
    scan_all(t, b"A", |k, v| {
        let ino = key_ino(k)?;
        let a: Attr = dec(v)?;
        facts.insert(
            ino,
            Facts { kind: a.kind, nlink: a.nlink, volume: a.volume, charged: a.charged_bytes(), size: a.size },
        );
        c.inode_volume.insert(ino, a.volume);
        Ok(())
    })?;
    c.inodes = facts.len() as u64;
    for v in c.volumes.values() {
        if !v.gone && !v.building && !facts.contains_key(&v.root) {
            c.problems.push(NsProblem::MissingRoot { volume: v.id });
        }
    }
    // Entries: who names whom, and how many subdirectories each directory has.
    let mut links: HashMap<Ino, u32> = HashMap::new();
    let mut subdirs: HashMap<Ino, u32> = HashMap::new();
    let mut problems = Vec::new();
    scan_all(t, b"D", |k, v| {
        let parent = key_ino(k)?;
        let name = k[9..].to_vec();
        let (ino, kind) = dec_entry(v)?;
        c.entries += 1;
        *links.entry(ino).or_default() += 1;
        if kind == FileType::Dir {
            *subdirs.entry(parent).or_default() += 1;
        }
        if facts.get(&parent).is_some_and(|f| building.contains(&f.volume)) {
            c.names.entry(ino).or_insert((parent, name));
            return Ok(());
        }
        match facts.get(&ino) {
            None => problems.push(NsProblem::DanglingEntry { parent, name: name.clone(), ino, kind }),
            Some(f) if f.kind != kind => problems.push(NsProblem::KindMismatch { parent, name: name.clone(), ino }),
            Some(_) => {}
        }
        c.names.entry(ino).or_insert((parent, name));
        Ok(())
    })?;
    c.problems.extend(problems);
    let mut sustained: HashMap<Ino, Option<u64>> = HashMap::new();
    scan_all(t, keys::SUSTAINED_PREFIX, |k, v| {
        sustained.insert(key_ino(k)?, keys::uncharged_bytes(v));
        Ok(())
    })?;
    // Link counts, inodes nothing names, usage per volume.
    // Per volume: bytes charged, bytes given back early, inodes.
    let mut usage: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    let mut inos: Vec<&Ino> = facts.keys().collect();
    inos.sort();
    for ino in inos {
        let f = &facts[ino];
        if *ino > MAX_LIVE_INO {
            continue;
        }
        if building.contains(&f.volume) {
            continue;
        }
        let u = usage.entry(f.volume).or_default();
        u.0 += f.charged;
        match sustained.get(ino) {
            Some(Some(given)) => u.1 += given,
            _ => u.2 += 1,
        }
        let named = links.get(ino).copied().unwrap_or(0);
        let root = c.roots.contains_key(ino);
        if named == 0 && !root {
            if !sustained.contains_key(ino) {
                c.problems.push(NsProblem::Unreachable { ino: *ino, kind: f.kind, size: f.size });
            }
            continue;
        }
        let want = if f.kind == FileType::Dir { 2 + subdirs.get(ino).copied().unwrap_or(0) } else { named };
        if f.nlink != want {
            c.problems.push(NsProblem::LinkCount { ino: *ino, have: f.nlink, want });
        }
    }
    let mut vols: Vec<&Volume> = c.volumes.values().filter(|v| !v.gone && !v.building).collect();
    vols.sort_by_key(|v| v.id);
    for v in vols {
        let have: Usage = match t.get(&keys::usage(v.id))? {
            Some(b) => dec(&b)?,
            None => Usage::default(),
        };
        let (charged, given, inodes) = usage.get(&v.id).copied().unwrap_or_default();
        let want = Usage { bytes: charged.saturating_sub(given), inodes };
        if have != want {
            c.problems.push(NsProblem::Usage { volume: v.id, have, want });
        }
    }
    // Slices: of live chunks, then of snapshots' saved chunks.
    let mut leftovers: HashSet<Ino> = HashSet::new();
    let volumes = &c.volumes;
    let block_volume = |vol: u32, id: u64| volumes.get(&vol).map(|v| v.block_volume(id));
    scan_all(t, b"C", |k, v| {
        let ino = key_ino(k)?;
        let vol = facts.get(&ino).map(|f| f.volume);
        if vol.is_none() {
            leftovers.insert(ino);
        }
        for s in dec_slices(v)? {
            if s.id != 0 {
                let volume = vol.and_then(|vol| block_volume(vol, s.id));
                c.slices.insert(s.id, SliceUse { size: s.size, volume, ino, in_snapshot_only: false });
            }
        }
        Ok(())
    })?;
    for prefix in [&b"X"[..], b"L"] {
        scan_all(t, prefix, |k, _| {
            let ino = key_ino(k)?;
            if !facts.contains_key(&ino) {
                leftovers.insert(ino);
            }
            Ok(())
        })?;
    }
    // The records of an inode a dangling entry names are what its repair rebuilds it from.
    for p in &c.problems {
        if let NsProblem::DanglingEntry { ino, .. } = p {
            leftovers.remove(ino);
        }
    }
    // Records of an inode whose volume is unknown may be a clone's being copied.
    if !building.is_empty() {
        leftovers.clear();
    }
    let mut leftovers: Vec<Ino> = leftovers.into_iter().collect();
    leftovers.sort();
    c.problems.extend(leftovers.into_iter().map(|ino| NsProblem::LeftoverRecords { ino }));
    let mut epoch_volume: HashMap<u64, u32> = HashMap::new();
    scan_all(t, b"w", |k, v| {
        let vol = u32::from_be_bytes(v.try_into().map_err(|_| MetaError::Corrupt("snapshot volume".into()))?);
        epoch_volume.insert(key_ino(k)?, vol);
        Ok(())
    })?;
    scan_all(t, b"ZC", |k, v| {
        let Some((key, epoch)) = keys::parse_version(k) else { return Ok(()) };
        let Some(chunk) = crate::versions::dec_version(v)? else { return Ok(()) };
        let ino = key_ino(key)?;
        let vol = epoch_volume.get(&epoch).copied();
        for s in dec_slices(&chunk)? {
            if s.id != 0 && !c.slices.contains_key(&s.id) {
                let volume = vol.and_then(|vol| block_volume(vol, s.id));
                c.slices.insert(s.id, SliceUse { size: s.size, volume, ino, in_snapshot_only: true });
            }
        }
        Ok(())
    })?;
    scan_all(t, keys::PENDING_PREFIX, |k, v| {
        c.pending.insert(key_ino(k)?, dec(v)?);
        Ok(())
    })?;
    scan_all(t, keys::JOURNAL_PREFIX, |k, _| {
        c.journaled.insert(String::from_utf8_lossy(&k[1..]).into_owned());
        Ok(())
    })?;
    Ok(c)
}
