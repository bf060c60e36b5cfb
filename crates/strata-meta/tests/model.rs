//! Property tests of the metadata transactions: random sequences of namespace operations run
//! against `Meta` on a real SQLite file and, side by side, against a small in-memory model of
//! the tree (directories, files, symlinks, hard links, sizes, chunk slice lists, open files,
//! pending slices and volume usage).
//!
//! After every step the result must be the one the model predicts (`Ok`, or exactly the
//! `MetaError` variant), and the whole state must match: every live inode's attributes, every
//! directory's listing and lookups, every file's chunks, symlink targets, destroyed inodes being
//! gone, usage, and the set of collectable slices.
//!
//! `PROPTEST_CASES` overrides the number of cases (e.g. for a longer soak run).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::mem::discriminant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use common::TestFs;
use strata_meta::*;
use strata_meta::{RENAME_EXCHANGE, RENAME_NOREPLACE};

const C: u64 = CHUNK_SIZE;
/// A small alphabet so that names collide often.
const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"dd"];
/// An inode number never allocated in these tests (the largest live one: above it, inode
/// numbers name snapshots' views).
const NEVER_INO: Ino = strata_meta::versions::MAX_LIVE_INO;
/// Chunk indexes checked on every file beyond the ones the model knows of.
const PROBE_CHUNKS: [u32; 5] = [0, 1, 2, 3, u32::MAX - 1];
/// Extended attribute names.
const XATTRS: [&[u8]; 2] = [b"user.a", b"user.bb"];
/// Snapshot names: few, so that they collide.
const SNAPS: [&str; 3] = ["s0", "s1", "s2"];
/// The name of the volume under test.
const VOL: &str = "v";
/// The owner of snapshots made with one.
const OWNER: &str = "datavolume:x";

type TestResult = std::result::Result<(), TestCaseError>;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// Picks an existing inode: a directory, or (with `any`) any reachable inode, so that operations
/// also meet files where they expect directories.
#[derive(Clone, Copy, Debug)]
struct Pick {
    idx: Index,
    any: bool,
}

/// A directory entry's place: an existing entry (any directory, any name), or a name from the
/// alphabet in a picked directory (which may or may not exist).
#[derive(Clone, Copy, Debug)]
enum Loc {
    Entry(Index),
    Named(Pick, usize),
}

/// The inode an operation acts on: the one at a path, or one held open (possibly unlinked).
#[derive(Clone, Copy, Debug)]
enum Target {
    Path(Loc),
    Handle(Index),
    /// Any live regular file, linked or not.
    File(Index),
}

/// One slice of a `commit_writes` call.
#[derive(Clone, Copy, Debug)]
struct W {
    idx: u32,
    pos: u32,
    len: u32,
    off: u32,
    extra: u32,
    /// Stored size one byte short of `off + len` (invalid).
    short: bool,
    /// Refer again to a slice already in the chunk (another part of the same stored data).
    dup: Option<Index>,
}

#[derive(Clone, Debug)]
enum Op {
    Mknod {
        at: Loc,
        kind: FileType,
        excl: bool,
    },
    Link {
        src: Target,
        at: Loc,
    },
    Unlink {
        at: Loc,
    },
    Rmdir {
        at: Loc,
    },
    Rename {
        from: Loc,
        to: Loc,
        flags: u32,
    },
    /// Moves a directory below itself (or onto itself), or exchanges it with a descendant.
    RenameIntoSubtree {
        dir: Index,
        sub: Index,
        name: usize,
        flags: u32,
    },
    Truncate {
        target: Target,
        size: u64,
    },
    Write {
        target: Target,
        writes: Vec<W>,
    },
    /// Replaces the first `k` slices of a chunk with one (as the compactor does); with `stale`,
    /// the caller's view of the chunk is out of date and nothing may change.
    Compact {
        target: Target,
        chunk: Index,
        k: usize,
        stale: bool,
    },
    Open {
        at: Loc,
        session: u64,
    },
    /// Opens an entry, then unlinks it (the temporary-file pattern).
    OpenUnlink {
        at: Loc,
        session: u64,
    },
    Close {
        handle: Index,
    },
    CloseSession {
        session: u64,
    },
    /// Lists collectable slices and forgets them, as the block collector does.
    Collect,
    /// Drops `Meta` (losing the open table) and opens the same database again.
    Reopen,
    ReapOrphans,
    /// Destroys the inodes unlinked while open nowhere, as the server's reaper does.
    ReapDoomed,
    SetXattr {
        target: Target,
        name: usize,
        value: u8,
        flags: u32,
    },
    RemoveXattr {
        target: Target,
        name: usize,
    },
    /// Takes snapshot `SNAPS[name]` of the volume, with an owner or not.
    Snapshot {
        name: usize,
        owner: bool,
    },
    /// Deletes snapshot `SNAPS[name]`, as the owner or not.
    DeleteSnapshot {
        name: usize,
        as_owner: bool,
    },
    /// Tries one kind of write on a snapshot's inode (or between a snapshot and the live
    /// volume): refused as read-only, nothing changes.
    ViewWrite {
        snap: Index,
        node: Index,
        other: Index,
        how: u8,
    },
    /// Clones the volume under test as one of its snapshots saw it (or as it is now).
    Clone {
        snap: Option<Index>,
    },
    /// Goes on with another volume (the source or a clone): open files are closed and
    /// orphans reaped first, so that volumes not under test hold none.
    Switch {
        to: Index,
    },
}

fn pick() -> impl Strategy<Value = Pick> {
    (any::<Index>(), prop::bool::weighted(0.1)).prop_map(|(idx, any)| Pick { idx, any })
}

fn name() -> impl Strategy<Value = usize> {
    0..NAMES.len()
}

/// Mostly an existing entry: where an operation needs something to act on.
fn src() -> impl Strategy<Value = Loc> {
    prop_oneof![
        4 => any::<Index>().prop_map(Loc::Entry),
        1 => (pick(), name()).prop_map(|(p, n)| Loc::Named(p, n)),
    ]
}

/// Mostly a name in a directory: where an operation puts something.
fn dst() -> impl Strategy<Value = Loc> {
    prop_oneof![
        1 => any::<Index>().prop_map(Loc::Entry),
        4 => (pick(), name()).prop_map(|(p, n)| Loc::Named(p, n)),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => src().prop_map(Target::Path),
        3 => any::<Index>().prop_map(Target::File),
        1 => any::<Index>().prop_map(Target::Handle),
    ]
}

fn rename_flags() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(0),
        3 => Just(RENAME_NOREPLACE),
        3 => Just(RENAME_EXCHANGE),
        1 => Just(RENAME_NOREPLACE | RENAME_EXCHANGE),
        1 => Just(4),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(4095),
        Just(4096),
        Just(4097),
        0..3 * C,
        0..2 * C,
        Just(C - 1),
        Just(C),
        Just(C + 1),
        Just(2 * C + 12345),
        Just(MAX_FILE_SIZE),
        Just(MAX_FILE_SIZE + 1),
    ]
}

fn write() -> impl Strategy<Value = W> {
    let idx = prop_oneof![8 => Just(0u32), 5 => Just(1), 3 => Just(2), 1 => Just(u32::MAX - 1), 1 => Just(u32::MAX)];
    let pos = prop_oneof![Just(0u32), 0..C as u32, Just(C as u32 - 4096), 0u32..65536];
    let len = prop_oneof![1u32..5000, 1u32..(4 << 20), Just(4096)];
    let dup = prop::option::weighted(0.25, any::<Index>());
    (idx, pos, len, 0u32..3, 0u32..100, prop::bool::weighted(0.03), dup)
        .prop_map(|(idx, pos, len, off, extra, short, dup)| W { idx, pos, len, off, extra, short, dup })
}

/// Operations; with `snaps`, snapshots, their deletion, writes to them, clones and switching
/// between the volumes too.
fn op(reopen: bool, snaps: bool) -> BoxedStrategy<Op> {
    let kind = prop_oneof![4 => Just(FileType::File), 2 => Just(FileType::Dir), 1 => Just(FileType::Symlink)];
    let session = 1u64..3;
    let base = prop_oneof![
        12 => (dst(), kind, prop::bool::weighted(0.7)).prop_map(|(at, kind, excl)| Op::Mknod { at, kind, excl }),
        3 => (target(), dst()).prop_map(|(src, at)| Op::Link { src, at }),
        4 => src().prop_map(|at| Op::Unlink { at }),
        3 => src().prop_map(|at| Op::Rmdir { at }),
        8 => (src(), dst(), rename_flags()).prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        2 => (any::<Index>(), any::<Index>(), name(), rename_flags())
            .prop_map(|(dir, sub, name, flags)| Op::RenameIntoSubtree { dir, sub, name, flags }),
        4 => (target(), size()).prop_map(|(target, size)| Op::Truncate { target, size }),
        8 => (target(), prop::collection::vec(write(), 1..3)).prop_map(|(target, writes)| Op::Write { target, writes }),
        3 => (target(), any::<Index>(), 0usize..4, prop::bool::weighted(0.2))
            .prop_map(|(target, chunk, k, stale)| Op::Compact { target, chunk, k, stale }),
        3 => (src(), session.clone()).prop_map(|(at, session)| Op::Open { at, session }),
        2 => (src(), session.clone()).prop_map(|(at, session)| Op::OpenUnlink { at, session }),
        2 => any::<Index>().prop_map(|handle| Op::Close { handle }),
        1 => session.prop_map(|session| Op::CloseSession { session }),
        1 => Just(Op::Collect),
        1 => Just(Op::ReapDoomed),
        2 => (target(), 0..XATTRS.len(), any::<u8>(), prop_oneof![Just(0), Just(XATTR_CREATE), Just(XATTR_REPLACE)])
            .prop_map(|(target, name, value, flags)| Op::SetXattr { target, name, value, flags }),
        1 => (target(), 0..XATTRS.len()).prop_map(|(target, name)| Op::RemoveXattr { target, name }),
    ];
    let base = if snaps {
        let snap = prop_oneof![
        2 => (0..SNAPS.len(), prop::bool::weighted(0.2)).prop_map(|(name, owner)| Op::Snapshot { name, owner }),
            1 => (0..SNAPS.len(), prop::bool::weighted(0.8))
                .prop_map(|(name, as_owner)| Op::DeleteSnapshot { name, as_owner }),
            2 => (any::<Index>(), any::<Index>(), any::<Index>(), any::<u8>())
                .prop_map(|(snap, node, other, how)| Op::ViewWrite { snap, node, other, how }),
            1 => prop::option::weighted(0.7, any::<Index>()).prop_map(|snap| Op::Clone { snap }),
            1 => any::<Index>().prop_map(|to| Op::Switch { to }),
        ];
        prop_oneof![10 => base, 1 => snap].boxed()
    } else {
        base.boxed()
    };
    if reopen { prop_oneof![20 => base, 1 => Just(Op::Reopen), 1 => Just(Op::ReapOrphans)].boxed() } else { base }
}

/// Volume quotas: mostly none, sometimes tight enough to be hit.
fn quotas() -> impl Strategy<Value = (u64, u64)> {
    let capacity = prop_oneof![4 => Just(0u64), 1 => Just(1 << 20), 1 => Just(3 * C), 1 => Just(MAX_FILE_SIZE)];
    let inodes = prop_oneof![3 => Just(0u64), 1 => 2u64..12];
    (capacity, inodes)
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Node {
    kind: FileType,
    nlink: u32,
    size: u64,
    /// Directories: their parent (the root: itself).
    parent: Ino,
    chunks: BTreeMap<u32, Vec<Slice>>,
    target: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A snapshot as the model froze it when it was taken.
#[derive(Clone, Debug)]
struct Frozen {
    snap: Snapshot,
    /// Every inode the snapshot holds (reachable or not: open unlinked files and doomed inodes
    /// too), with the attributes it had when the snapshot was taken.
    nodes: BTreeMap<Ino, (Node, Attr)>,
    entries: BTreeMap<Ino, BTreeMap<Vec<u8>, Ino>>,
}

impl Frozen {
    /// Every slice id the snapshot's chunks refer to.
    fn slice_ids(&self) -> BTreeSet<u64> {
        self.nodes.values().flat_map(|(n, _)| n.chunks.values().flatten().map(|s| s.id)).filter(|id| *id != 0).collect()
    }

    fn view(&self, ino: Ino) -> Ino {
        view_ino(self.snap.epoch, ino)
    }
}

#[derive(Debug, Default)]
struct Model {
    vol: u32,
    name: String,
    /// A clone's sources (see `Volume::block_volume`).
    origins: Vec<(u32, u64)>,
    /// Slice ids other volumes (their live trees and snapshots) refer to: a clone shares
    /// slices with its source. Set before every step.
    elsewhere: BTreeSet<u64>,
    root: Ino,
    capacity: u64,
    inode_limit: u64,
    nodes: BTreeMap<Ino, Node>,
    entries: BTreeMap<Ino, BTreeMap<Vec<u8>, Ino>>,
    /// Open handles: (session, inode), in opening order.
    handles: Vec<(u64, Ino)>,
    /// Slices pending deletion, by id.
    pending: BTreeMap<u64, Pending>,
    /// Inodes destroyed, in order.
    destroyed: Vec<Ino>,
    /// Every slice id a successful commit recorded.
    committed: BTreeSet<u64>,
    /// Slice ids the collector forgot (their blocks are gone).
    forgotten: BTreeSet<u64>,
    /// Whether unlinks defer destruction (`Meta::set_defer_destroy`).
    defer: bool,
    /// Deferred: unlinked while open nowhere, out of the usage, rows kept until reaped; with
    /// whether `Meta::reap_doomed` still lists them (a reopen forgets the list).
    doomed: BTreeMap<Ino, (Node, bool)>,
    /// Live snapshots of the volume, oldest first.
    snaps: Vec<Frozen>,
    /// Deleted snapshots, in order.
    gone: Vec<Snapshot>,
}

fn charged(kind: FileType, size: u64) -> u64 {
    if kind == FileType::File { size.div_ceil(4096) * 4096 } else { 0 }
}

/// What a successful `mknod` does: return an existing file, or create a new inode.
#[derive(Debug)]
enum Made {
    Existing(Ino),
    New,
}

impl Model {
    fn new(vol: &Volume) -> Self {
        let mut m = Model {
            vol: vol.id,
            name: vol.name.clone(),
            origins: vol.origins.clone(),
            root: vol.root,
            capacity: vol.capacity,
            inode_limit: vol.inode_limit,
            ..Default::default()
        };
        m.nodes.insert(
            vol.root,
            Node {
                kind: FileType::Dir,
                nlink: 2,
                size: 0,
                parent: vol.root,
                chunks: BTreeMap::new(),
                target: vec![],
                xattrs: BTreeMap::new(),
            },
        );
        m.entries.insert(vol.root, BTreeMap::new());
        m
    }

    fn usage(&self) -> Usage {
        Usage { bytes: self.nodes.values().map(|n| charged(n.kind, n.size)).sum(), inodes: self.nodes.len() as u64 }
    }

    fn charge(&self, bytes: i64, inodes: i64) -> Result<()> {
        let u = self.usage();
        if bytes > 0 && self.capacity > 0 && u.bytes.saturating_add(bytes as u64) > self.capacity {
            return Err(MetaError::Quota);
        }
        if inodes > 0 && self.inode_limit > 0 && u.inodes + inodes as u64 > self.inode_limit {
            return Err(MetaError::Quota);
        }
        Ok(())
    }

    fn is_open(&self, ino: Ino) -> bool {
        self.handles.iter().any(|h| h.1 == ino)
    }

    fn dead(&self) -> Ino {
        self.destroyed.last().copied().unwrap_or(NEVER_INO)
    }

    /// Every inode reachable from the root (including the root), sorted.
    fn reachable(&self) -> Vec<Ino> {
        let mut set: BTreeSet<Ino> = self.entries.values().flat_map(|e| e.values().copied()).collect();
        set.insert(self.root);
        set.into_iter().collect()
    }

    fn dirs(&self) -> Vec<Ino> {
        self.nodes.iter().filter(|(_, n)| n.kind == FileType::Dir).map(|(i, _)| *i).collect()
    }

    fn pick(&self, p: Pick) -> Ino {
        let list = if p.any { self.reachable() } else { self.dirs() };
        list[p.idx.index(list.len())]
    }

    /// The directory and name a `Loc` stands for.
    fn loc(&self, at: Loc) -> (Ino, Vec<u8>) {
        match at {
            Loc::Named(p, n) => (self.pick(p), NAMES[n].to_vec()),
            Loc::Entry(i) => {
                let all: Vec<(Ino, &Vec<u8>)> =
                    self.entries.iter().flat_map(|(d, e)| e.keys().map(move |n| (*d, n))).collect();
                if all.is_empty() {
                    return (self.root, NAMES[0].to_vec());
                }
                let (d, n) = all[i.index(all.len())];
                (d, n.clone())
            }
        }
    }

    fn entry(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        self.entries.get(&dir).and_then(|e| e.get(name)).copied()
    }

    fn target(&self, t: Target) -> Ino {
        match t {
            Target::Path(at) => {
                let (dir, name) = self.loc(at);
                self.entry(dir, &name).unwrap_or_else(|| self.dead())
            }
            Target::Handle(i) if !self.handles.is_empty() => self.handles[i.index(self.handles.len())].1,
            Target::Handle(_) => self.dead(),
            Target::File(i) => {
                let files: Vec<Ino> =
                    self.nodes.iter().filter(|(_, n)| n.kind == FileType::File).map(|(i, _)| *i).collect();
                if files.is_empty() { self.dead() } else { files[i.index(files.len())] }
            }
        }
    }

    fn load_dir(&self, ino: Ino) -> Result<()> {
        match self.nodes.get(&ino) {
            None => Err(MetaError::NotFound),
            Some(n) if n.kind != FileType::Dir => Err(MetaError::NotDir),
            Some(_) => Ok(()),
        }
    }

    fn kind(&self, ino: Ino) -> FileType {
        self.nodes[&ino].kind
    }

    /// Whether `anc` is `ino` or one of its ancestors.
    fn is_ancestor(&self, anc: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            let p = self.nodes[&ino].parent;
            if p == ino {
                return false;
            }
            ino = p;
        }
    }

    fn free(&mut self, ino: Ino, slices: impl IntoIterator<Item = Slice>) {
        let mut seen = BTreeSet::new();
        let mut held = self.snap_held();
        held.extend(&self.elsewhere);
        for s in slices {
            if s.id != 0 && seen.insert(s.id) && !held.contains(&s.id) {
                let prev = self.pending.insert(s.id, Pending { volume: self.block_volume(s.id), size: s.size, ino });
                assert!(prev.is_none(), "model: slice {} freed twice", s.id);
            }
        }
    }

    fn destroy(&mut self, ino: Ino) {
        let n = self.nodes.remove(&ino).expect("model: destroying a missing inode");
        self.entries.remove(&ino);
        self.free(ino, n.chunks.into_values().flatten());
        self.destroyed.push(ino);
    }

    /// A link count reached zero: the inode lives on while open.
    fn release(&mut self, ino: Ino) {
        if self.is_open(ino) {
            return;
        }
        if self.defer {
            let n = self.nodes.remove(&ino).expect("model: releasing a missing inode");
            self.entries.remove(&ino);
            self.doomed.insert(ino, (n, true));
        } else {
            self.destroy(ino);
        }
    }

    /// A deferred destruction happens.
    fn reap(&mut self, ino: Ino) {
        let (n, _) = self.doomed.remove(&ino).expect("model: reaping an inode not doomed");
        self.free(ino, n.chunks.into_values().flatten());
        self.destroyed.push(ino);
    }

    fn drop_link(&mut self, ino: Ino) {
        let n = self.nodes.get_mut(&ino).expect("model: unlinking a missing inode");
        n.nlink -= 1;
        if n.nlink == 0 {
            self.release(ino);
        }
    }

    // ---- operations: check everything first, then change the state ----

    fn mknod(&self, parent: Ino, name: &[u8], kind: FileType, excl: bool) -> Result<Made> {
        self.load_dir(parent)?;
        if let Some(old) = self.entry(parent, name) {
            if kind == FileType::File && !excl && self.kind(old) == FileType::File {
                return Ok(Made::Existing(old));
            }
            return Err(MetaError::Exists);
        }
        self.charge(0, 1)?;
        Ok(Made::New)
    }

    fn add(&mut self, ino: Ino, parent: Ino, name: &[u8], kind: FileType, target: &[u8]) {
        let dir = kind == FileType::Dir;
        let node = Node {
            kind,
            nlink: if dir { 2 } else { 1 },
            size: if kind == FileType::Symlink { target.len() as u64 } else { 0 },
            parent,
            chunks: BTreeMap::new(),
            target: target.to_vec(),
            xattrs: BTreeMap::new(),
        };
        assert!(self.nodes.insert(ino, node).is_none(), "inode {ino} handed out twice");
        if dir {
            self.entries.insert(ino, BTreeMap::new());
            self.nodes.get_mut(&parent).expect("parent").nlink += 1;
        }
        self.entries.get_mut(&parent).expect("parent").insert(name.to_vec(), ino);
    }

    fn link(&mut self, ino: Ino, parent: Ino, name: &[u8]) -> Result<()> {
        let n = self.nodes.get(&ino).ok_or(MetaError::NotFound)?;
        if n.kind == FileType::Dir {
            return Err(MetaError::Perm);
        }
        self.load_dir(parent)?;
        if n.nlink == 0 {
            return Err(MetaError::NotFound);
        }
        if self.entry(parent, name).is_some() {
            return Err(MetaError::Exists);
        }
        self.entries.get_mut(&parent).expect("parent").insert(name.to_vec(), ino);
        self.nodes.get_mut(&ino).expect("inode").nlink += 1;
        Ok(())
    }

    fn unlink(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
        self.load_dir(parent)?;
        let ino = self.entry(parent, name).ok_or(MetaError::NotFound)?;
        if self.kind(ino) == FileType::Dir {
            return Err(MetaError::IsDir);
        }
        self.entries.get_mut(&parent).expect("parent").remove(name);
        self.drop_link(ino);
        Ok(())
    }

    fn rmdir(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
        self.load_dir(parent)?;
        let ino = self.entry(parent, name).ok_or(MetaError::NotFound)?;
        if self.kind(ino) != FileType::Dir {
            return Err(MetaError::NotDir);
        }
        if !self.entries[&ino].is_empty() {
            return Err(MetaError::NotEmpty);
        }
        self.entries.get_mut(&parent).expect("parent").remove(name);
        self.nodes.get_mut(&parent).expect("parent").nlink -= 1;
        self.destroy(ino);
        Ok(())
    }

    fn rename(&mut self, sp: Ino, sname: &[u8], dp: Ino, dname: &[u8], flags: u32) -> Result<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 || flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return Err(MetaError::Invalid(String::new()));
        }
        self.load_dir(sp)?;
        self.load_dir(dp)?;
        let sino = self.entry(sp, sname).ok_or(MetaError::NotFound)?;
        let skind = self.kind(sino);
        let dst = self.entry(dp, dname);
        if dst == Some(sino) {
            // Both names are links to one inode: nothing to do, unless the caller asked not to
            // replace an existing name.
            return if flags & RENAME_NOREPLACE != 0 { Err(MetaError::Exists) } else { Ok(()) };
        }
        if skind == FileType::Dir && sp != dp && self.is_ancestor(sino, dp) {
            return Err(MetaError::Invalid(String::new()));
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dino = dst.ok_or(MetaError::NotFound)?;
            let dkind = self.kind(dino);
            if dkind == FileType::Dir && sp != dp && self.is_ancestor(dino, sp) {
                return Err(MetaError::Invalid(String::new()));
            }
            self.entries.get_mut(&sp).expect("sp").insert(sname.to_vec(), dino);
            self.entries.get_mut(&dp).expect("dp").insert(dname.to_vec(), sino);
            if sp != dp {
                for (ino, kind, from, to) in [(sino, skind, sp, dp), (dino, dkind, dp, sp)] {
                    if kind == FileType::Dir {
                        self.nodes.get_mut(&ino).expect("moved").parent = to;
                        self.nodes.get_mut(&from).expect("from").nlink -= 1;
                        self.nodes.get_mut(&to).expect("to").nlink += 1;
                    }
                }
            }
            return Ok(());
        }
        if let Some(dino) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(MetaError::Exists);
            }
            let dkind = self.kind(dino);
            if skind == FileType::Dir {
                if dkind != FileType::Dir {
                    return Err(MetaError::NotDir);
                }
                if !self.entries[&dino].is_empty() {
                    return Err(MetaError::NotEmpty);
                }
                self.nodes.get_mut(&dp).expect("dp").nlink -= 1;
                self.destroy(dino);
            } else {
                if dkind == FileType::Dir {
                    return Err(MetaError::IsDir);
                }
                self.drop_link(dino);
            }
        }
        self.entries.get_mut(&sp).expect("sp").remove(sname);
        self.entries.get_mut(&dp).expect("dp").insert(dname.to_vec(), sino);
        if skind == FileType::Dir && sp != dp {
            self.nodes.get_mut(&sino).expect("moved").parent = dp;
            self.nodes.get_mut(&sp).expect("sp").nlink -= 1;
            self.nodes.get_mut(&dp).expect("dp").nlink += 1;
        }
        Ok(())
    }

    fn truncate(&mut self, ino: Ino, new: u64) -> Result<()> {
        let n = self.nodes.get(&ino).ok_or(MetaError::NotFound)?;
        match n.kind {
            FileType::File => {}
            FileType::Dir => return Err(MetaError::IsDir),
            _ => return Err(MetaError::Invalid(String::new())),
        }
        if new > MAX_FILE_SIZE {
            return Err(MetaError::TooBig);
        }
        let old = n.size;
        self.charge(charged(FileType::File, new) as i64 - charged(FileType::File, old) as i64, 0)?;
        let n = self.nodes.get_mut(&ino).expect("file");
        let mut freed = Vec::new();
        if new < old {
            let keep = new.div_ceil(C) as u32;
            freed = n.chunks.split_off(&keep).into_values().flatten().collect();
            if !new.is_multiple_of(C) {
                let idx = (new / C) as u32;
                if let Some(list) = n.chunks.get_mut(&idx) {
                    let pos = (new % C) as u32;
                    let end = (old - u64::from(idx) * C).min(C) as u32;
                    list.push(Slice { pos, id: 0, size: 0, off: 0, len: end - pos });
                }
            }
        }
        n.size = new;
        self.free(ino, freed);
        Ok(())
    }

    fn write(&mut self, ino: Ino, writes: &[(u32, Slice)]) -> Result<()> {
        let n = self.nodes.get(&ino).ok_or(MetaError::NotFound)?;
        if n.kind != FileType::File {
            return Err(MetaError::Invalid(String::new()));
        }
        let mut end = n.size;
        for (idx, s) in writes {
            if u64::from(s.pos) + u64::from(s.len) > C || u64::from(s.off) + u64::from(s.len) > u64::from(s.size) {
                return Err(MetaError::Invalid(String::new()));
            }
            end = end.max(u64::from(*idx) * C + u64::from(s.pos) + u64::from(s.len));
        }
        if end > MAX_FILE_SIZE {
            return Err(MetaError::TooBig);
        }
        self.charge(charged(FileType::File, end) as i64 - charged(FileType::File, n.size) as i64, 0)?;
        let n = self.nodes.get_mut(&ino).expect("file");
        n.size = end;
        for (idx, s) in writes {
            n.chunks.entry(*idx).or_default().push(*s);
            self.committed.insert(s.id);
        }
        Ok(())
    }

    /// What `compact_chunk` does: whether the chunk starts with `replaced`, and if so the swap.
    fn compact(&mut self, ino: Ino, idx: u32, replaced: &[Slice], with: Slice) -> bool {
        let Some(list) = self.nodes.get_mut(&ino).and_then(|n| n.chunks.get_mut(&idx)) else { return false };
        if list.len() < replaced.len() || list[..replaced.len()] != *replaced {
            return false;
        }
        let rest = list.split_off(replaced.len());
        let still: BTreeSet<u64> = rest.iter().map(|s| s.id).collect();
        *list = std::iter::once(with).chain(rest).collect();
        let mut freed = BTreeMap::new();
        for s in replaced.iter().filter(|s| !still.contains(&s.id)) {
            freed.entry(s.id).or_insert(*s);
        }
        self.committed.insert(with.id);
        self.free(ino, freed.into_values());
        true
    }

    fn close(&mut self, at: usize) -> (u64, Ino) {
        let (session, ino) = self.handles.remove(at);
        self.after_close(ino);
        (session, ino)
    }

    fn after_close(&mut self, ino: Ino) {
        if !self.is_open(ino) && self.nodes.get(&ino).is_some_and(|n| n.nlink == 0) {
            self.destroy(ino);
        }
    }

    fn close_session(&mut self, session: u64) {
        let inos: BTreeSet<Ino> = self.handles.iter().filter(|h| h.0 == session).map(|h| h.1).collect();
        self.handles.retain(|h| h.0 != session);
        for ino in inos {
            self.after_close(ino);
        }
    }

    /// Pending slices the collector may take now: their inode is not open.
    fn collectable(&self) -> Vec<(u64, Pending)> {
        self.pending.iter().filter(|(_, p)| !self.is_open(p.ino)).map(|(id, p)| (*id, *p)).collect()
    }

    fn orphans(&self) -> Vec<Ino> {
        self.nodes.iter().filter(|(i, n)| n.nlink == 0 && !self.is_open(**i)).map(|(i, _)| *i).collect()
    }

    // ---- snapshots ----

    /// Slice ids some live snapshot refers to.
    fn snap_held(&self) -> BTreeSet<u64> {
        self.snaps.iter().flat_map(Frozen::slice_ids).collect()
    }

    /// Slice ids the live volume's chunks refer to (doomed inodes' included: their rows stay).
    fn live_ids(&self) -> BTreeSet<u64> {
        self.nodes
            .values()
            .chain(self.doomed.values().map(|d| &d.0))
            .flat_map(|n| n.chunks.values().flatten().map(|s| s.id))
            .filter(|id| *id != 0)
            .collect()
    }

    /// The volume whose name a slice's blocks are under (a clone's shared slices: its source's).
    fn block_volume(&self, id: u64) -> u32 {
        let mut owner = self.vol;
        for (v, mark) in &self.origins {
            if id < *mark {
                owner = *v;
            } else {
                break;
            }
        }
        owner
    }

    fn snap_index(&self, name: &str) -> Option<usize> {
        self.snaps.iter().position(|f| f.snap.name == name)
    }

    /// A snapshot goes: the slices nothing else refers to become pending (under the live
    /// inode number of the chunk that held them).
    fn drop_snapshot(&mut self, at: usize) -> Frozen {
        let f = self.snaps.remove(at);
        let mut keep = self.live_ids();
        keep.extend(self.snap_held());
        keep.extend(&self.elsewhere);
        for (ino, (n, _)) in &f.nodes {
            for s in n.chunks.values().flatten() {
                if s.id != 0 && !keep.contains(&s.id) {
                    keep.insert(s.id);
                    let volume = self.block_volume(s.id);
                    let prev = self.pending.insert(s.id, Pending { volume, size: s.size, ino: *ino });
                    assert!(prev.is_none(), "model: slice {} freed twice", s.id);
                }
            }
        }
        f
    }

    /// Bytes only snapshot `f` refers to (what `snapshot_space` calls held).
    fn held_bytes(&self, f: &Frozen) -> u64 {
        let mut others = self.live_ids();
        others.extend(&self.elsewhere);
        for o in self.snaps.iter().filter(|o| o.snap.epoch != f.snap.epoch) {
            others.extend(o.slice_ids());
        }
        let mut sizes = BTreeMap::new();
        for (n, _) in f.nodes.values() {
            for s in n.chunks.values().flatten().filter(|s| s.id != 0 && !others.contains(&s.id)) {
                sizes.insert(s.id, u64::from(s.size));
            }
        }
        sizes.values().sum()
    }

    fn setxattr(&mut self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let n = self.nodes.get_mut(&ino).ok_or(MetaError::NotFound)?;
        let exists = n.xattrs.contains_key(name);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(MetaError::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(MetaError::NoAttr);
        }
        n.xattrs.insert(name.to_vec(), value.to_vec());
        Ok(())
    }

    fn removexattr(&mut self, ino: Ino, name: &[u8]) -> Result<()> {
        let n = self.nodes.get_mut(&ino).ok_or(MetaError::NotFound)?;
        n.xattrs.remove(name).map(|_| ()).ok_or(MetaError::NoAttr)
    }
}

// ---------------------------------------------------------------------------------------------
// Running both side by side
// ---------------------------------------------------------------------------------------------

/// A frozen copy of the volume's inodes (every one with rows: open unlinked and doomed ones
/// too), with the attributes they have now.
fn freeze(meta: &Meta, m: &Model) -> std::result::Result<BTreeMap<Ino, (Node, Attr)>, TestCaseError> {
    let mut nodes = BTreeMap::new();
    for (ino, n) in m.nodes.iter().chain(m.doomed.iter().map(|(i, d)| (i, &d.0))) {
        let a = ok(meta.getattr(*ino), "getattr as the volume is frozen")?;
        nodes.insert(*ino, (n.clone(), a));
    }
    Ok(nodes)
}

fn fail(what: impl Debug) -> TestCaseError {
    TestCaseError::fail(format!("{what:?}"))
}

fn ok<T>(r: Result<T>, what: &str) -> std::result::Result<T, TestCaseError> {
    r.map_err(|e| fail(format!("{what}: unexpected {e:?}")))
}

/// The real result must be the predicted one: both `Ok`, or errors of the same variant (and
/// so the same errno).
fn same<T: Debug, U: Debug>(op: &Op, real: &Result<T>, want: &Result<U>) -> TestResult {
    match (real, want) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(a), Err(b)) if discriminant(a) == discriminant(b) && a.errno() == b.errno() => Ok(()),
        _ => Err(fail(format!("{op:?}: got {real:?}, model predicts {want:?}"))),
    }
}

struct Harness {
    fs: TestFs,
    /// The volume under test.
    model: Model,
    /// The other volumes (the source, clones), with no open files and no doomed inodes.
    others: Vec<Model>,
    /// Clones made so far.
    clones: usize,
    ctx: Ctx,
}

impl Harness {
    fn new(capacity: u64, inode_limit: u64) -> Self {
        let fs = TestFs::new();
        let vol = fs
            .meta
            .create_volume("v", &NewVolume { capacity, inode_limit, ..Default::default() })
            .expect("create volume");
        // An ordinary user with permission checks on: every inode it meets is its own (or the
        // world-writable root), so checks pass and results do not depend on them.
        let ctx = Ctx { uid: 1000, gid: 1000, groups: vec![1000], check: true };
        Harness { fs, model: Model::new(&vol), others: Vec::new(), clones: 0, ctx }
    }

    fn meta(&self) -> &Meta {
        &self.fs.meta
    }

    /// What the other volumes' trees and snapshots refer to.
    fn refresh_elsewhere(&mut self) {
        self.model.elsewhere = self.others.iter().flat_map(|o| o.live_ids().into_iter().chain(o.snap_held())).collect();
    }

    fn step(&mut self, op: &Op) -> TestResult {
        self.refresh_elsewhere();
        let m = &mut self.model;
        match *op {
            Op::Mknod { at, kind, excl } => {
                let (parent, name) = m.loc(at);
                let name = name.as_slice();
                let target = [b"target-".as_slice(), name].concat();
                let want = m.mknod(parent, name, kind, excl);
                let real = self.fs.meta.mknod(&self.ctx, parent, name, kind, 0o755, 0o022, 0, &target, excl);
                same(op, &real, &want)?;
                match (want, real) {
                    (Ok(Made::Existing(old)), Ok((ino, _, created))) => {
                        prop_assert_eq!((ino, created), (old, false), "{:?}: open-or-create of an existing file", op);
                    }
                    (Ok(Made::New), Ok((ino, attr, created))) => {
                        prop_assert!(created, "{:?}: new inode not reported as created", op);
                        prop_assert_eq!(attr.kind, kind);
                        m.add(ino, parent, name, kind, &target);
                    }
                    _ => {}
                }
            }
            Op::Link { src, at } => {
                let ino = m.target(src);
                let (parent, name) = m.loc(at);
                let real = self.fs.meta.link(&self.ctx, ino, parent, &name);
                let want = m.link(ino, parent, &name);
                same(op, &real, &want)?;
                if let Ok(a) = real {
                    prop_assert_eq!(a.nlink, m.nodes[&ino].nlink, "{:?}: returned attributes", op);
                }
            }
            Op::Unlink { at } => {
                let (parent, name) = m.loc(at);
                let real = self.fs.meta.unlink(&self.ctx, parent, &name);
                same(op, &real, &m.unlink(parent, &name))?;
            }
            Op::Rmdir { at } => {
                let (parent, name) = m.loc(at);
                let real = self.fs.meta.rmdir(&self.ctx, parent, &name);
                same(op, &real, &m.rmdir(parent, &name))?;
            }
            Op::Rename { from, to, flags } => {
                let ((sp, sname), (dp, dname)) = (m.loc(from), m.loc(to));
                let real = self.fs.meta.rename(&self.ctx, sp, &sname, dp, &dname, flags);
                same(op, &real, &m.rename(sp, &sname, dp, &dname, flags))?;
            }
            Op::RenameIntoSubtree { dir, sub, name, flags } => {
                let dirs: Vec<Ino> = m.dirs().into_iter().filter(|d| *d != m.root).collect();
                if dirs.is_empty() {
                    return Ok(());
                }
                let dir = dirs[dir.index(dirs.len())];
                let below: Vec<Ino> = m.dirs().into_iter().filter(|d| m.is_ancestor(dir, *d)).collect();
                let sub = below[sub.index(below.len())];
                let sp = m.nodes[&dir].parent;
                let sname = m.entries[&sp].iter().find(|(_, i)| **i == dir).map(|(n, _)| n.clone()).expect("entry");
                let real = self.fs.meta.rename(&self.ctx, sp, &sname, sub, NAMES[name], flags);
                let want = m.rename(sp, &sname, sub, NAMES[name], flags);
                same(op, &real, &want)?;
            }
            Op::Truncate { target, size } => {
                let ino = m.target(target);
                let req = SetAttr { size: Some(size), ..Default::default() };
                let real = self.fs.meta.setattr(&self.ctx, ino, &req);
                same(op, &real, &m.truncate(ino, size))?;
                if let Ok(a) = real {
                    prop_assert_eq!(a.size, size);
                }
            }
            Op::Write { target, ref writes } => {
                let ino = m.target(target);
                let first = ok(self.fs.meta.alloc_slice_ids(writes.len() as u64), "alloc_slice_ids")?;
                let slices: Vec<(u32, Slice)> = writes
                    .iter()
                    .zip(first..)
                    .map(|(w, id)| {
                        let size = if w.short { w.off + w.len - 1 } else { w.off + w.len + w.extra };
                        let fresh = Slice { pos: w.pos, id, size, off: w.off, len: w.len };
                        let stored: Vec<Slice> = m
                            .nodes
                            .get(&ino)
                            .and_then(|n| n.chunks.get(&w.idx))
                            .map(|l| l.iter().filter(|s| s.id != 0).copied().collect())
                            .unwrap_or_default();
                        let slice = match w.dup {
                            Some(i) if !w.short && !stored.is_empty() => {
                                let s = stored[i.index(stored.len())];
                                let off = w.off.min(s.size - 1);
                                Slice { pos: w.pos, id: s.id, size: s.size, off, len: w.len.min(s.size - off) }
                            }
                            _ => fresh,
                        };
                        (w.idx, slice)
                    })
                    .collect();
                let real = self.fs.meta.commit_writes(ino, &slices);
                same(op, &real, &m.write(ino, &slices))?;
                if let Ok(a) = real {
                    prop_assert_eq!(a.size, m.nodes[&ino].size, "{:?}: returned size", op);
                }
            }
            Op::Compact { target, chunk, k, stale } => {
                let ino = m.target(target);
                let chunks = m.nodes.get(&ino).map(|n| n.chunks.clone()).unwrap_or_default();
                let idx =
                    if chunks.is_empty() { 0 } else { *chunks.keys().nth(chunk.index(chunks.len())).expect("idx") };
                let list = chunks.get(&idx).cloned().unwrap_or_default();
                let mut replaced: Vec<Slice> = list.iter().take(k).copied().collect();
                if stale {
                    match replaced.first_mut() {
                        Some(s) => s.len ^= 1,
                        None => replaced.push(Slice { pos: 0, id: 1 << 50, size: 1, off: 0, len: 1 }),
                    }
                }
                let span = replaced.iter().map(|s| s.pos + s.len).max().unwrap_or(1);
                let id = ok(self.fs.meta.alloc_slice_ids(1), "alloc_slice_ids")?;
                let with = Slice { pos: 0, id, size: span, off: 0, len: span };
                let real = ok(self.fs.meta.compact_chunk(ino, idx, &replaced, with), "compact_chunk")?;
                prop_assert_eq!(real, m.compact(ino, idx, &replaced, with), "{:?}: compacted", op);
            }
            Op::Open { at, session } => {
                let ino = m.target(Target::Path(at));
                let real = self.fs.meta.open(session, ino);
                let want = if m.nodes.contains_key(&ino) { Ok(()) } else { Err(MetaError::NotFound) };
                same(op, &real, &want)?;
                if real.is_ok() {
                    m.handles.push((session, ino));
                }
            }
            Op::OpenUnlink { at, session } => {
                self.step(&Op::Open { at, session })?;
                self.step(&Op::Unlink { at })?;
            }
            Op::Close { handle } => {
                if m.handles.is_empty() {
                    return Ok(());
                }
                let (session, ino) = m.close(handle.index(m.handles.len()));
                ok(self.fs.meta.close(session, ino), "close")?;
            }
            Op::CloseSession { session } => {
                m.close_session(session);
                ok(self.fs.meta.close_session(session), "close_session")?;
            }
            Op::Collect => {
                self.check_collectable()?;
                let ids: Vec<u64> = self.model.collectable().into_iter().map(|(id, _)| id).collect();
                ok(self.fs.meta.forget_pending(&ids), "forget_pending")?;
                for id in ids {
                    self.model.pending.remove(&id);
                    self.model.forgotten.insert(id);
                }
            }
            Op::Reopen => {
                self.fs.reopen();
                self.fs.meta.set_defer_destroy(m.defer);
                m.handles.clear();
                for d in m.doomed.values_mut() {
                    d.1 = false;
                }
            }
            Op::ReapOrphans => {
                let orphans = m.orphans();
                let doomed: Vec<Ino> = m.doomed.keys().copied().collect();
                let n = ok(self.fs.meta.reap_orphans(), "reap_orphans")?;
                prop_assert_eq!(n, orphans.len() + doomed.len(), "orphans reaped");
                for ino in orphans {
                    m.destroy(ino);
                }
                for ino in doomed {
                    m.reap(ino);
                }
            }
            Op::ReapDoomed => {
                let listed: Vec<Ino> = m.doomed.iter().filter(|(_, d)| d.1).map(|(i, _)| *i).collect();
                let n = ok(self.fs.meta.reap_doomed(), "reap_doomed")?;
                prop_assert_eq!(n, listed.len(), "doomed inodes reaped");
                for ino in listed {
                    m.reap(ino);
                }
            }
            Op::SetXattr { target, name, value, flags } => {
                let ino = m.target(target);
                let v = vec![value; usize::from(value % 5)];
                let real = self.fs.meta.setxattr(ino, XATTRS[name], &v, flags);
                same(op, &real, &m.setxattr(ino, XATTRS[name], &v, flags))?;
            }
            Op::RemoveXattr { target, name } => {
                let ino = m.target(target);
                let real = self.fs.meta.removexattr(ino, XATTRS[name]);
                same(op, &real, &m.removexattr(ino, XATTRS[name]))?;
            }
            Op::Snapshot { name, owner } => {
                let owner = owner.then_some(OWNER);
                let real = self.fs.meta.create_snapshot(&m.name, SNAPS[name], owner);
                let want = if m.snap_index(SNAPS[name]).is_some() { Err(MetaError::Exists) } else { Ok(()) };
                same(op, &real, &want)?;
                if let Ok(snap) = real {
                    let u = m.usage();
                    prop_assert_eq!(
                        (snap.volume, snap.name.as_str(), snap.owner.as_deref(), snap.deleting),
                        (m.vol, SNAPS[name], owner, false),
                        "{:?}: the record",
                        op
                    );
                    prop_assert_eq!((snap.bytes, snap.inodes), (u.bytes, u.inodes), "{:?}: usage recorded", op);
                    let last = m.snaps.iter().map(|f| &f.snap).chain(&m.gone).map(|s| s.epoch).max().unwrap_or(0);
                    prop_assert!(snap.epoch > last, "{:?}: epoch {} after {}", op, snap.epoch, last);
                    let nodes = freeze(&self.fs.meta, m)?;
                    for ino in nodes.keys() {
                        prop_assert!(*ino < snap.ino_mark, "{:?}: inode {} at or above the mark", op, ino);
                    }
                    m.snaps.push(Frozen { snap, nodes, entries: m.entries.clone() });
                }
            }
            Op::DeleteSnapshot { name, as_owner } => {
                let real = self.fs.meta.delete_snapshot(&m.name, SNAPS[name], as_owner.then_some(OWNER));
                let want = match m.snap_index(SNAPS[name]) {
                    None => Err(MetaError::NoVolume(String::new())),
                    Some(i) if m.snaps[i].snap.owner.is_some() && !as_owner => Err(MetaError::Busy(String::new())),
                    Some(i) => Ok(i),
                };
                same(op, &real, &want)?;
                if let (Ok(got), Ok(i)) = (real, want) {
                    let mut s = m.drop_snapshot(i).snap;
                    s.deleting = true;
                    prop_assert_eq!(&got, &s, "{:?}: returned record", op);
                    m.gone.push(s);
                }
            }
            Op::ViewWrite { snap, node, other, how } => self.view_write(op, snap, node, other, how)?,
            Op::Clone { snap } => {
                let meta = &self.fs.meta;
                let name = format!("c{}", self.clones);
                self.clones += 1;
                ok(meta.create_volume(&name, &NewVolume::default()), "create the clone's volume")?;
                let (nodes, entries, sname) = match snap {
                    Some(i) if !m.snaps.is_empty() => {
                        let f = &m.snaps[i.index(m.snaps.len())];
                        (f.nodes.clone(), f.entries.clone(), Some(f.snap.name.clone()))
                    }
                    _ => (freeze(meta, m)?, m.entries.clone(), None),
                };
                let cv = ok(meta.clone_volume(&name, &m.name, sname.as_deref()), "clone_volume")?;
                prop_assert!(!cv.building, "{:?}: clone still building", op);
                prop_assert_eq!(cv.origins.first().map(|o| o.0), Some(m.vol), "{:?}: the clone's origin", op);
                // Walk both trees side by side: the inodes the clone made for the snapshot's.
                let mut map = BTreeMap::from([(m.root, cv.root)]);
                let mut queue = vec![m.root];
                while let Some(d) = queue.pop() {
                    let listed = ok(meta.readdir(&self.ctx, map[&d], false), "readdir in the clone")?;
                    let got: Vec<(Vec<u8>, FileType)> = listed.iter().map(|e| (e.name.clone(), e.kind)).collect();
                    let want: Vec<(Vec<u8>, FileType)> =
                        entries[&d].iter().map(|(n, i)| (n.clone(), nodes[i].0.kind)).collect();
                    prop_assert_eq!(got, want, "{:?}: listing of the clone's copy of {}", op, d);
                    for (e, fi) in listed.iter().zip(entries[&d].values()) {
                        match map.get(fi) {
                            Some(ci) => prop_assert_eq!(*ci, e.ino, "{:?}: hard links to {} in the clone", op, fi),
                            None => {
                                map.insert(*fi, e.ino);
                                if e.kind == FileType::Dir {
                                    queue.push(*fi);
                                }
                            }
                        }
                    }
                }
                let mut c = Model::new(&cv);
                c.defer = m.defer;
                c.nodes.clear();
                c.entries.clear();
                for (fi, ci) in &map {
                    let (n, a) = &nodes[fi];
                    let mut n = n.clone();
                    let got = ok(meta.getattr(*ci), "getattr in the clone")?;
                    let mut want = *a;
                    want.volume = cv.id;
                    if n.kind == FileType::Dir {
                        n.parent = map[&n.parent];
                        want.parent = n.parent;
                        c.entries.insert(*ci, entries[fi].iter().map(|(k, i)| (k.clone(), map[i])).collect());
                    } else {
                        // Which of its directories a file names as parent is no matter.
                        want.parent = got.parent;
                    }
                    prop_assert_eq!(got, want, "{:?}: attributes of the clone's copy of {}", op, fi);
                    c.nodes.insert(*ci, n);
                }
                prop_assert_eq!(ok(meta.usage(cv.id), "usage of the clone")?, c.usage(), "{:?}: clone's usage", op);
                self.others.push(c);
                // The checks after this step count the clone among the slices' holders.
                self.refresh_elsewhere();
            }
            Op::Switch { to } => {
                if self.others.is_empty() {
                    return Ok(());
                }
                for session in [1, 2] {
                    self.step(&Op::CloseSession { session })?;
                }
                self.step(&Op::ReapOrphans)?;
                let i = to.index(self.others.len());
                std::mem::swap(&mut self.model, &mut self.others[i]);
                // The store-wide books go with the volume under test.
                let (old, new) = (&mut self.others[i], &mut self.model);
                new.pending = std::mem::take(&mut old.pending);
                new.committed = std::mem::take(&mut old.committed);
                new.forgotten = std::mem::take(&mut old.forgotten);
                self.refresh_elsewhere();
            }
        }
        let usage = ok(self.meta().usage(self.model.vol), "usage")?;
        prop_assert_eq!(usage, self.model.usage(), "usage after {:?}", op);
        Ok(())
    }

    /// One write involving a snapshot's inode: it must fail with `ReadOnly` (and change
    /// nothing, which the checks after the step see).
    fn view_write(&mut self, op: &Op, snap: Index, node: Index, other: Index, how: u8) -> TestResult {
        let (meta, m, ctx) = (&self.fs.meta, &self.model, &self.ctx);
        if m.snaps.is_empty() {
            return Ok(());
        }
        let f = &m.snaps[snap.index(m.snaps.len())];
        let inos: Vec<Ino> = f.nodes.keys().copied().collect();
        let ino = inos[node.index(inos.len())];
        let n = &f.nodes[&ino].0;
        let (v, vroot, root) = (f.view(ino), f.view(m.root), m.root);
        let vdir = if n.kind == FileType::Dir { v } else { vroot };
        let snap_entries: Vec<(Ino, &Vec<u8>, Ino)> =
            f.entries.iter().flat_map(|(d, e)| e.iter().map(move |(k, i)| (*d, k, *i))).collect();
        let live_entries: Vec<(Ino, &Vec<u8>, Ino)> =
            m.entries.iter().flat_map(|(d, e)| e.iter().map(move |(k, i)| (*d, k, *i))).collect();
        let snap_entry = (!snap_entries.is_empty()).then(|| snap_entries[other.index(snap_entries.len())]);
        let live_entry = (!live_entries.is_empty()).then(|| live_entries[other.index(live_entries.len())]);
        let live_file = live_entries.iter().map(|e| e.2).find(|i| m.kind(*i) != FileType::Dir);
        let chunk = n.chunks.iter().find(|(_, l)| !l.is_empty());
        let zz: &[u8] = b"zz";
        let (what, r): (&str, Result<()>) = match how % 14 {
            0 => ("mknod", meta.mknod(ctx, vdir, zz, FileType::File, 0o644, 0, 0, b"", true).map(drop)),
            1 => ("symlink", meta.mknod(ctx, vdir, zz, FileType::Symlink, 0o777, 0, 0, b"t", true).map(drop)),
            2 => {
                let req = SetAttr { mtime: Some(SetTime::Now), ..Default::default() };
                ("touch", meta.setattr(ctx, v, &req).map(drop))
            }
            3 if n.kind == FileType::File => {
                let req = SetAttr { size: Some(n.size / 2), ..Default::default() };
                ("truncate", meta.setattr(ctx, v, &req).map(drop))
            }
            4 if n.kind == FileType::File => {
                let id = ok(meta.alloc_slice_ids(1), "alloc_slice_ids")?;
                (
                    "commit_writes",
                    meta.commit_writes(v, &[(0, Slice { pos: 0, id, size: 10, off: 0, len: 10 })]).map(drop),
                )
            }
            5 if !n.xattrs.is_empty() => ("removexattr", meta.removexattr(v, n.xattrs.keys().next().expect("xattr"))),
            6 => match snap_entry {
                Some((d, name, i)) if f.nodes[&i].0.kind != FileType::Dir => {
                    ("unlink", meta.unlink(ctx, f.view(d), name))
                }
                Some((d, name, i)) if f.entries[&i].is_empty() => ("rmdir", meta.rmdir(ctx, f.view(d), name)),
                Some((d, name, _)) => ("rename", meta.rename(ctx, f.view(d), name, f.view(d), zz, 0)),
                None => ("mknod", meta.mknod(ctx, vroot, zz, FileType::Dir, 0o755, 0, 0, b"", true).map(drop)),
            },
            7 if snap_entry.is_some() => {
                let (d, name, _) = snap_entry.expect("entry");
                ("rename out of the snapshot", meta.rename(ctx, f.view(d), name, root, zz, 0))
            }
            8 if live_entry.is_some() => {
                let (d, name, _) = live_entry.expect("entry");
                ("rename into the snapshot", meta.rename(ctx, d, name, vdir, zz, 0))
            }
            9 if snap_entry.is_some() && live_entry.is_some() => {
                let ((sd, sname, _), (ld, lname, _)) = (snap_entry.expect("entry"), live_entry.expect("entry"));
                ("exchange", meta.rename(ctx, ld, lname, f.view(sd), sname, RENAME_EXCHANGE))
            }
            10 if n.kind != FileType::Dir => ("link out of the snapshot", meta.link(ctx, v, root, zz).map(drop)),
            11 if live_file.is_some() => {
                ("link into the snapshot", meta.link(ctx, live_file.expect("file"), vdir, zz).map(drop))
            }
            12 if chunk.is_some() => {
                let (idx, list) = chunk.expect("chunk");
                let span = list.iter().map(|s| s.pos + s.len).max().unwrap_or(1);
                let id = ok(meta.alloc_slice_ids(1), "alloc_slice_ids")?;
                let with = Slice { pos: 0, id, size: span, off: 0, len: span };
                ("compact_chunk", meta.compact_chunk(v, *idx, list, with).map(drop))
            }
            _ => ("setxattr", meta.setxattr(v, XATTRS[0], b"x", 0)),
        };
        match r {
            Err(MetaError::ReadOnly) => Ok(()),
            r => Err(fail(format!(
                "{op:?}: {what} on snapshot inode {v:#x} (live {ino}, {:?}): got {r:?}, want ReadOnly",
                n.kind
            ))),
        }
    }

    /// Every live snapshot reads as the model froze it; deleted ones hold nothing (`Stale`
    /// while being deleted, `NotFound` once gone).
    fn check_snapshots(&self) -> TestResult {
        let (meta, m) = (self.meta(), &self.model);
        let listed = ok(meta.list_snapshots(&m.name), "list_snapshots")?;
        let want: Vec<Snapshot> = m.snaps.iter().map(|f| f.snap.clone()).collect();
        prop_assert_eq!(listed, want, "snapshots listed");
        for f in &m.snaps {
            prop_assert_eq!(ok(meta.snapshot(&m.name, &f.snap.name), "snapshot")?, f.snap.clone());
            self.check_view(f)?;
            let space = ok(meta.snapshot_space(&f.snap), "snapshot_space")?;
            prop_assert_eq!(space.held_bytes, m.held_bytes(f), "bytes only snapshot {} holds", f.snap.name);
        }
        for s in m.gone.iter().rev().take(2) {
            let root = view_ino(s.epoch, m.root);
            let r = meta.getattr(root);
            prop_assert!(
                matches!(r, Err(MetaError::Stale(_) | MetaError::NotFound)),
                "root of deleted {}: {:?}",
                s.name,
                r
            );
            let r = meta.readdir(&self.ctx, root, false);
            prop_assert!(
                matches!(r, Err(MetaError::Stale(_) | MetaError::NotFound)),
                "listing of deleted {}: {:?}",
                s.name,
                r
            );
            prop_assert!(meta.snapshot(&m.name, &s.name).is_err() || m.snap_index(&s.name).is_some());
        }
        Ok(())
    }

    /// Walks one snapshot's view and compares it with its frozen copy.
    fn check_view(&self, f: &Frozen) -> TestResult {
        let (meta, m, ctx) = (self.meta(), &self.model, &self.ctx);
        let sn = &f.snap.name;
        let want_attr = |ino: Ino| {
            let mut a = f.nodes[&ino].1;
            a.parent = f.view(a.parent);
            a
        };
        for (ino, (n, _)) in &f.nodes {
            let v = f.view(*ino);
            let want = want_attr(*ino);
            prop_assert_eq!(ok(meta.getattr(v), "getattr in a snapshot")?, want, "attributes of {} in {}", ino, sn);
            match n.kind {
                FileType::Dir => {
                    let listed = ok(meta.readdir(ctx, v, true), "readdir in a snapshot")?;
                    let got: Vec<(Vec<u8>, Ino, FileType)> =
                        listed.iter().map(|e| (e.name.clone(), e.ino, e.kind)).collect();
                    let wanted: Vec<(Vec<u8>, Ino, FileType)> =
                        f.entries[ino].iter().map(|(name, i)| (name.clone(), f.view(*i), f.nodes[i].0.kind)).collect();
                    prop_assert_eq!(got, wanted, "listing of directory {} in {}", ino, sn);
                    for (e, i) in listed.iter().zip(f.entries[ino].values()) {
                        prop_assert_eq!(e.attr, Some(want_attr(*i)), "readdirplus attributes in {}", sn);
                        let found = ok(meta.lookup(ctx, v, &e.name), "lookup in a snapshot")?;
                        prop_assert_eq!(found, (e.ino, want_attr(*i)), "lookup of a listed name in {}", sn);
                    }
                    for name in NAMES {
                        if !f.entries[ino].contains_key(name) {
                            let r = meta.lookup(ctx, v, name).map(|x| x.0);
                            prop_assert_eq!(r, Err(MetaError::NotFound), "lookup of a missing name in {}", sn);
                        }
                    }
                    let (up, _) = ok(meta.lookup(ctx, v, b".."), "lookup .. in a snapshot")?;
                    prop_assert_eq!(up, f.view(n.parent), "'..' of {} in {}", ino, sn);
                    // Page by page, one name at a time.
                    let mut after = Vec::new();
                    let mut paged = Vec::new();
                    loop {
                        let page = ok(meta.readdir_page(ctx, v, false, &after, 1), "readdir_page in a snapshot")?;
                        prop_assert_eq!(page.dir, want, "readdir_page's directory attributes in {}", sn);
                        prop_assert!(page.entries.len() <= 1);
                        for e in &page.entries {
                            prop_assert!(
                                paged.last().map(|p: &(Vec<u8>, Ino)| &p.0) < Some(&e.name),
                                "listing of {} in {} after {:?}: {:?} again or out of order",
                                ino,
                                sn,
                                after,
                                e.name
                            );
                            paged.push((e.name.clone(), e.ino));
                        }
                        match page.entries.last() {
                            Some(e) if page.more => after = e.name.clone(),
                            _ => break,
                        }
                    }
                    let all: Vec<(Vec<u8>, Ino)> = listed.iter().map(|e| (e.name.clone(), e.ino)).collect();
                    prop_assert_eq!(paged, all, "listing of {} page by page in {}", ino, sn);
                }
                FileType::File => {
                    let idxs: BTreeSet<u32> = n.chunks.keys().copied().chain(PROBE_CHUNKS).collect();
                    for idx in idxs {
                        let got = ok(meta.read_chunk(v, idx), "read_chunk in a snapshot")?;
                        let want = n.chunks.get(&idx).cloned().unwrap_or_default();
                        prop_assert_eq!(got, want, "chunk {} of {} in {}", idx, ino, sn);
                    }
                }
                FileType::Symlink => {
                    prop_assert_eq!(ok(meta.readlink(v), "readlink in a snapshot")?, n.target.clone());
                }
                _ => {}
            }
            let names = ok(meta.listxattr(v), "listxattr in a snapshot")?;
            prop_assert_eq!(names, n.xattrs.keys().cloned().collect::<Vec<_>>(), "xattrs of {} in {}", ino, sn);
            for x in XATTRS {
                let r = meta.getxattr(v, x);
                match n.xattrs.get(x) {
                    Some(val) => prop_assert_eq!(r, Ok(val.clone()), "xattr of {} in {}", ino, sn),
                    None => prop_assert_eq!(r, Err(MetaError::NoAttr), "missing xattr of {} in {}", ino, sn),
                }
            }
        }
        // Inodes made after it are not in it.
        for ino in m.nodes.keys().filter(|i| !f.nodes.contains_key(i)) {
            let r = meta.getattr(f.view(*ino)).map(drop);
            prop_assert_eq!(r, Err(MetaError::NotFound), "inode {} made after snapshot {}", ino, sn);
        }
        Ok(())
    }

    /// Compares the whole state with the model.
    fn check_all(&self) -> TestResult {
        let (meta, m) = (self.meta(), &self.model);
        // The model's own invariants.
        for (ino, n) in &m.nodes {
            let links = m.entries.values().flat_map(|e| e.values()).filter(|i| *i == ino).count();
            if n.kind == FileType::Dir {
                let subdirs = m.entries[ino].values().filter(|i| m.kind(**i) == FileType::Dir).count();
                prop_assert_eq!(n.nlink as usize, 2 + subdirs, "model: nlink of directory {}", ino);
                prop_assert_eq!(links, usize::from(*ino != m.root), "model: links to directory {}", ino);
            } else {
                prop_assert_eq!(n.nlink as usize, links, "model: nlink of {}", ino);
            }
        }
        for (ino, n) in &m.nodes {
            let a = ok(meta.getattr(*ino), "getattr of a live inode")?;
            prop_assert_eq!(a.kind, n.kind, "kind of {}", ino);
            prop_assert_eq!(a.nlink, n.nlink, "nlink of {} ({:?})", ino, n.kind);
            prop_assert_eq!(a.size, n.size, "size of {}", ino);
            prop_assert_eq!(a.volume, m.vol, "volume of {}", ino);
            match n.kind {
                FileType::Dir => {
                    prop_assert_eq!(a.parent, n.parent, "parent of directory {}", ino);
                    let listed = ok(meta.readdir(&self.ctx, *ino, true), "readdir")?;
                    let got: Vec<(Vec<u8>, Ino, FileType)> =
                        listed.iter().map(|e| (e.name.clone(), e.ino, e.kind)).collect();
                    let want: Vec<(Vec<u8>, Ino, FileType)> =
                        m.entries[ino].iter().map(|(name, i)| (name.clone(), *i, m.kind(*i))).collect();
                    prop_assert_eq!(got, want, "listing of directory {}", ino);
                    for e in &listed {
                        let attr = ok(meta.getattr(e.ino), "getattr")?;
                        prop_assert_eq!(e.attr, Some(attr), "readdirplus attributes");
                        let (found, _) = ok(meta.lookup(&self.ctx, *ino, &e.name), "lookup")?;
                        prop_assert_eq!(found, e.ino, "lookup of a listed name");
                    }
                    for name in NAMES {
                        if !m.entries[ino].contains_key(name) {
                            let r = meta.lookup(&self.ctx, *ino, name);
                            prop_assert_eq!(r.map(|x| x.0), Err(MetaError::NotFound), "lookup of a missing name");
                        }
                    }
                    let (up, _) = ok(meta.lookup(&self.ctx, *ino, b".."), "lookup ..")?;
                    prop_assert_eq!(up, n.parent, "'..' of {}", ino);
                }
                FileType::File => {
                    let idxs: BTreeSet<u32> = n.chunks.keys().copied().chain(PROBE_CHUNKS).collect();
                    for idx in idxs {
                        let got = ok(meta.read_chunk(*ino, idx), "read_chunk")?;
                        let want = n.chunks.get(&idx).cloned().unwrap_or_default();
                        prop_assert_eq!(got, want, "chunk {} of {}", idx, ino);
                    }
                }
                FileType::Symlink => {
                    prop_assert_eq!(ok(meta.readlink(*ino), "readlink")?, n.target.clone());
                }
                _ => {}
            }
            let names = ok(meta.listxattr(*ino), "listxattr")?;
            prop_assert_eq!(names, n.xattrs.keys().cloned().collect::<Vec<_>>(), "xattrs of {}", ino);
            for x in XATTRS {
                let r = meta.getxattr(*ino, x);
                match n.xattrs.get(x) {
                    Some(v) => prop_assert_eq!(r, Ok(v.clone()), "xattr of {}", ino),
                    None => prop_assert_eq!(r, Err(MetaError::NoAttr), "missing xattr of {}", ino),
                }
            }
        }
        for ino in &m.destroyed {
            prop_assert_eq!(meta.getattr(*ino), Err(MetaError::NotFound), "destroyed inode {} still there", ino);
            for idx in PROBE_CHUNKS {
                prop_assert_eq!(meta.read_chunk(*ino, idx), Err(MetaError::NotFound), "chunk of destroyed {}", ino);
            }
            prop_assert_eq!(meta.listxattr(*ino), Err(MetaError::NotFound));
        }
        prop_assert_eq!(ok(meta.usage(m.vol), "usage")?, m.usage(), "usage");
        self.check_snapshots()?;
        self.check_collectable()
    }

    /// `collectable` lists exactly the slices no live chunk references any more (less those the
    /// collector already forgot and those of inodes still open), each once.
    fn check_collectable(&self) -> TestResult {
        let (meta, m) = (self.meta(), &self.model);
        let mut got = ok(meta.collectable(usize::MAX), "collectable")?;
        got.sort_by_key(|x| x.0);
        let ids: BTreeSet<u64> = got.iter().map(|x| x.0).collect();
        prop_assert_eq!(ids.len(), got.len(), "a slice listed twice");
        prop_assert_eq!(&got, &m.collectable(), "collectable slices");
        // A collector taking a few at a time gets the first ones, whatever open files hold.
        let few = ok(meta.collectable(2), "collectable(2)")?;
        prop_assert_eq!(&few[..], &got[..got.len().min(2)], "collectable(2)");
        // Asked about given slices (every one committed), the same answer.
        let all: Vec<u64> = m.committed.iter().copied().collect();
        let among: BTreeSet<u64> = ok(meta.collectable_among(&all), "collectable_among")?.into_iter().collect();
        prop_assert_eq!(&among, &ids, "collectable_among");
        // The same, derived without the model's pending list: committed ids that no chunk of a
        // live inode holds any more.
        let mut live = BTreeSet::new();
        for (ino, n) in m.nodes.iter().chain(m.doomed.iter().map(|(i, d)| (i, &d.0))) {
            for idx in n.chunks.keys() {
                live.extend(ok(meta.read_chunk(*ino, *idx), "read_chunk")?.iter().map(|s| s.id));
            }
        }
        // And those snapshots still read.
        let mut snapped = BTreeSet::new();
        for f in &m.snaps {
            for (ino, (n, _)) in &f.nodes {
                for idx in n.chunks.keys() {
                    snapped.extend(
                        ok(meta.read_chunk(f.view(*ino), *idx), "read_chunk in a snapshot")?.iter().map(|s| s.id),
                    );
                }
            }
        }
        let held: BTreeSet<u64> = m.pending.iter().filter(|(_, p)| m.is_open(p.ino)).map(|(id, _)| *id).collect();
        let want: BTreeSet<u64> = m
            .committed
            .iter()
            .filter(|id| {
                !live.contains(id)
                    && !snapped.contains(id)
                    && !m.elsewhere.contains(id)
                    && !m.forgotten.contains(id)
                    && !held.contains(id)
            })
            .copied()
            .collect();
        prop_assert_eq!(ids, want, "unreferenced slices vs collectable");
        // What the block collector must keep: slices of live chunks, of snapshots, and pending.
        let referenced: BTreeSet<u64> = ok(meta.referenced_slices(), "referenced_slices")?.into_iter().collect();
        let mut expect: BTreeSet<u64> =
            live.iter().chain(&snapped).chain(&m.elsewhere).chain(m.pending.keys()).copied().collect();
        expect.remove(&0);
        prop_assert_eq!(referenced, expect, "referenced slices");
        for id in &live {
            prop_assert!(!held.contains(id), "live slice {} pending", id);
        }
        Ok(())
    }
}

/// Runs `ops` on a fresh volume, comparing the whole state with the model after every step;
/// with `defer`, unlinks leave destruction to `reap_doomed` (local state only).
fn run(quota: (u64, u64), defer: bool, ops: &[Op]) -> std::result::Result<Harness, TestCaseError> {
    let mut h = Harness::new(quota.0, quota.1);
    h.fs.meta.set_defer_destroy(defer);
    h.model.defer = defer && !h.fs.meta.is_shared();
    h.check_all()?;
    for op in ops {
        h.step(op)?;
        h.check_all().map_err(|e| fail(format!("after {op:?}: {e}")))?;
    }
    h.check_fsck()?;
    Ok(h)
}

impl Harness {
    /// `strata fsck`'s namespace check finds nothing wrong in a state the operations left,
    /// and needs the blocks of exactly the slices the collector keeps.
    fn check_fsck(&self) -> TestResult {
        let meta = self.meta();
        let check = ok(meta.check_namespace(), "check_namespace")?;
        prop_assert!(check.problems.is_empty(), "fsck finds problems: {:?}", check.problems);
        let referenced: BTreeSet<u64> = ok(meta.referenced_slices(), "referenced_slices")?.into_iter().collect();
        let needed: BTreeSet<u64> = check.slices.keys().chain(check.pending.keys()).copied().collect();
        prop_assert_eq!(needed, referenced, "slices fsck needs vs the collector keeps");
        Ok(())
    }
}

proptest! {
    // The engine under test is a key-value store either way and the model's logic is the
    // same: PostgreSQL, where each step is many round trips, runs fewer cases (CI's budget).
    #![proptest_config(ProptestConfig {
        cases: cases(if std::env::var_os("STRATA_TEST_PG_URL").is_some() { 64 } else { 256 }),
        ..ProptestConfig::default()
    })]

    /// Random operations agree with the model at every step.
    #[test]
    fn operations_match_model(quota in quotas(), defer in any::<bool>(), ops in prop::collection::vec(op(false, false), 1..80)) {
        run(quota, defer, &ops)?;
    }

    /// Reopening the database shows the same state (less the open table: unlinked open inodes
    /// become orphans, reaped by `reap_orphans`).
    #[test]
    fn reopen_shows_same_tree(quota in quotas(), defer in any::<bool>(), ops in prop::collection::vec(op(true, false), 1..80)) {
        let mut h = run(quota, defer, &ops)?;
        h.fs.reopen();
        h.model.handles.clear();
        h.check_all()?;
        let orphans = h.model.orphans();
        let doomed: Vec<Ino> = h.model.doomed.keys().copied().collect();
        prop_assert_eq!(h.fs.meta.reap_orphans().map_err(fail)?, orphans.len() + doomed.len());
        for ino in orphans {
            h.model.destroy(ino);
        }
        for ino in doomed {
            h.model.reap(ino);
        }
        h.check_all()?;
        h.check_fsck()?;
        // Opening once more changes nothing.
        h.fs.reopen();
        h.check_all()?;
    }
}

proptest! {
    // Each step also walks every snapshot: fewer cases than the tests above.
    // On PostgreSQL every step's walk is many round trips: fewer cases there.
    #![proptest_config(ProptestConfig {
        cases: cases(if std::env::var_os("STRATA_TEST_PG_URL").is_some() { 12 } else { 64 }),
        ..ProptestConfig::default()
    })]

    /// Snapshots, clones and writes to snapshots among the operations (and reopening): after
    /// every step, besides the live state, every snapshot reads as the model froze it, and
    /// slices become collectable exactly when the last of the live trees and snapshots that
    /// refer to them lets go.
    #[test]
    fn snapshots_match_model(quota in quotas(), defer in any::<bool>(), ops in prop::collection::vec(op(true, true), 1..80)) {
        run(quota, defer, &ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots: focused, deterministic tests
// ---------------------------------------------------------------------------------------------

/// Every key and value of the store, read through the engine directly.
fn dump(url: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let kv = strata_meta::kv::open(url).expect("open engine");
    let mut out = BTreeMap::new();
    kv.read(&mut |t| {
        out = t.scan(&[], &[0xff; 64], usize::MAX)?.into_iter().collect();
        Ok(())
    })
    .expect("dump the store");
    out
}

/// The keys whose value differs between two dumps (added, changed or removed).
fn changed(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeSet<Vec<u8>> {
    a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// Names of a directory read page by page, `limit` at a time.
fn paged_names(m: &Meta, dir: Ino, limit: usize) -> Vec<Vec<u8>> {
    let mut after = Vec::new();
    let mut out = Vec::new();
    loop {
        let page = m.readdir_page(&Ctx::root(), dir, false, &after, limit).expect("readdir_page");
        assert!(limit == 0 || page.entries.len() <= limit, "page longer than its limit");
        for e in &page.entries {
            // (Also keeps a listing that repeats itself from looping forever.)
            assert!(
                out.last() < Some(&e.name),
                "listing of {dir:#x} after {after:?}: {:?} again or out of order",
                e.name
            );
            out.push(e.name.clone());
        }
        match page.entries.last() {
            Some(e) if page.more => after = e.name.clone(),
            _ => return out,
        }
    }
}

/// Taking a snapshot of a volume of a few thousand files writes its record and nothing else;
/// the first change of a file after it saves that file's records only. The view of a large
/// directory then lists, page by page, what it held, however the live directory changes.
#[test]
fn snapshot_writes_one_record_whatever_the_volume_holds() {
    let fs = TestFs::new();
    let (m, ctx) = (&fs.meta, Ctx::root());
    let vol = fs.volume(VOL);
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for d in 0..4 {
        let dir = common::mkdir(m, &ctx, vol.root, &format!("d{d}"), 0o755).expect("mkdir");
        dirs.push(dir);
        for i in 0..600 {
            let f = common::mkfile(m, &ctx, dir, &format!("f{i:03}"), 0o644).expect("mkfile");
            if i % 50 == 0 {
                m.commit_writes(f, &[(0, common::slice(m, 0, 100))]).expect("write");
            }
            files.push(f);
        }
    }
    let before = dump(&fs.url);
    let snap = m.create_snapshot(VOL, "big", None).expect("snapshot");
    let after = dump(&fs.url);
    let want: BTreeSet<Vec<u8>> = [
        keys::snapshot(vol.id, snap.epoch).to_vec(),
        keys::snapshot_volume(snap.epoch).to_vec(),
        keys::counter("snapshot"),
        keys::SNAPSHOT_COUNT.to_vec(),
    ]
    .into_iter()
    .collect();
    assert_eq!(changed(&before, &after), want, "keys a snapshot writes");
    assert_eq!(m.list_snapshots(VOL).expect("list"), vec![snap.clone()]);
    assert_eq!((snap.inodes, snap.bytes), (1 + 4 + 2400, 48 * 4096));

    // One file's first change saves its own records only.
    let f = files[0];
    m.commit_writes(f, &[(0, common::slice(m, 100, 10))]).expect("write after the snapshot");
    let later = dump(&fs.url);
    let saved: Vec<&Vec<u8>> = later.keys().filter(|k| k.first() == Some(&b'Z')).collect();
    assert_eq!(saved.len(), 2, "versions saved by one write: {saved:?}");
    for k in &saved {
        let (rk, epoch) = keys::parse_version(k).expect("version key");
        assert_eq!((keys::u64_at(rk, 1), epoch), (Some(f), snap.epoch), "a version of another record: {rk:?}");
    }
    assert_eq!(later.keys().filter(|k| k.first() == Some(&b'z')).count(), 2, "version index entries");
    assert_eq!(m.read_chunk(view_ino(snap.epoch, f), 0).expect("chunk in the snapshot").len(), 1);
    assert_eq!(m.read_chunk(f, 0).expect("live chunk").len(), 2);

    // The view of a large directory, paged, after the live one changed around every page.
    let d0 = dirs[0];
    let old = paged_names(m, d0, 0);
    assert_eq!(old.len(), 600);
    for i in (0..600).step_by(3) {
        m.unlink(&ctx, d0, format!("f{i:03}").as_bytes()).expect("unlink");
    }
    for i in 0..100 {
        common::mkfile(m, &ctx, d0, &format!("g{i:03}"), 0o644).expect("mkfile");
        common::mkfile(m, &ctx, d0, &format!("f{i:03}x"), 0o644).expect("mkfile");
    }
    let vd0 = view_ino(snap.epoch, d0);
    assert_eq!(paged_names(m, d0, 0).len(), 600 - 200 + 200);
    let (found, _) = m.lookup(&ctx, vd0, b"f000").expect("lookup in the snapshot");
    assert_eq!(split_ino(found), (snap.epoch, files[0]));
    assert_eq!(m.lookup(&ctx, vd0, b"g000").map(|x| x.0), Err(MetaError::NotFound));
    for limit in [0, 1, 2, 7, 100, 599, 600, 601] {
        assert_eq!(paged_names(m, vd0, limit), old, "snapshot listing, {limit} a page");
    }
}

/// Writes racing snapshots from another thread land wholly before or wholly after each:
/// a commit of slices to three chunks shows all three or none, a rename shows the file in
/// exactly one of its directories, and later snapshots see at least what earlier ones saw.
#[test]
fn writes_racing_a_snapshot_land_wholly_before_or_after() {
    const COMMITS: u32 = 80;
    const CHUNKS: u32 = 3;
    let fs = TestFs::new();
    let (m, ctx) = (&fs.meta, Ctx::root());
    let vol = fs.volume(VOL);
    let f = common::mkfile(m, &ctx, vol.root, "f", 0o644).expect("mkfile");
    let a = common::mkdir(m, &ctx, vol.root, "a", 0o755).expect("mkdir");
    let b = common::mkdir(m, &ctx, vol.root, "b", 0o755).expect("mkdir");
    common::mkfile(m, &ctx, a, "x", 0o644).expect("mkfile");
    let done = std::sync::atomic::AtomicBool::new(false);
    let snaps = std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            for k in 0..COMMITS {
                let first = m.alloc_slice_ids(u64::from(CHUNKS)).expect("ids");
                let writes: Vec<(u32, Slice)> = (0..CHUNKS)
                    .map(|c| (c, Slice { pos: k * 10, id: first + u64::from(c), size: 10, off: 0, len: 10 }))
                    .collect();
                m.commit_writes(f, &writes).expect("commit");
                let (from, to) = if k % 2 == 0 { (a, b) } else { (b, a) };
                m.rename(&Ctx::root(), from, b"x", to, b"x", 0).expect("rename");
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut snaps = Vec::new();
        while !done.load(std::sync::atomic::Ordering::Acquire) && snaps.len() < 150 {
            snaps.push(m.create_snapshot(VOL, &format!("r{}", snaps.len()), None).expect("snapshot"));
            std::thread::yield_now();
        }
        writer.join().expect("writer");
        snaps
    });
    snaps.windows(2).for_each(|w| assert!(w[0].epoch < w[1].epoch));
    let mut seen = Vec::new();
    for s in &snaps {
        let v = |ino| view_ino(s.epoch, ino);
        let lists: Vec<Vec<Slice>> = (0..CHUNKS).map(|c| m.read_chunk(v(f), c).expect("chunk")).collect();
        let n = lists[0].len();
        for (c, list) in lists.iter().enumerate() {
            assert_eq!(list.len(), n, "snapshot {}: chunk {c} has {} commits, chunk 0 {n}", s.name, list.len());
            for (k, sl) in list.iter().enumerate() {
                assert_eq!(sl.pos as usize, k * 10, "snapshot {}: commit {k} of chunk {c}", s.name);
                assert_eq!(sl.id - lists[0][k].id, c as u64, "snapshot {}: slices of one commit", s.name);
            }
        }
        let size = m.getattr(v(f)).expect("getattr").size;
        let want = if n == 0 { 0 } else { 2 * C + 10 * n as u64 };
        assert_eq!(size, want, "snapshot {}: size after {n} commits", s.name);
        let in_a = m.lookup(&ctx, v(a), b"x").is_ok();
        let in_b = m.lookup(&ctx, v(b), b"x").is_ok();
        assert!(in_a != in_b, "snapshot {}: the renamed file in a: {in_a}, in b: {in_b}", s.name);
        seen.push(n);
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "later snapshots saw less: {seen:?}");
    let all: Vec<Vec<Slice>> = (0..CHUNKS).map(|c| m.read_chunk(f, c).expect("chunk")).collect();
    assert!(all.iter().all(|l| l.len() == COMMITS as usize));
}

/// Minimal case: a snapshot's listing resumed after a name whose entry changed since (here:
/// removed) must go on with the next name. `Versioned::view_scan` also takes the saved
/// versions of the resume point's own record (`Z key epoch` sorts after `key NUL`, as the
/// epoch starts with NUL bytes), so the same name comes back on every page: a client paging
/// through the directory never gets to its end.
#[test]
fn snapshot_listing_resumes_after_a_changed_name() {
    let fs = TestFs::new();
    let (m, ctx) = (&fs.meta, Ctx::root());
    let vol = fs.volume(VOL);
    common::mkfile(m, &ctx, vol.root, "a", 0o644).expect("mkfile");
    common::mkfile(m, &ctx, vol.root, "b", 0o644).expect("mkfile");
    let snap = m.create_snapshot(VOL, "s", None).expect("snapshot");
    m.unlink(&ctx, vol.root, b"a").expect("unlink");
    let page = m.readdir_page(&ctx, snap.root(&vol), false, b"a", 1).expect("readdir_page");
    let names: Vec<&[u8]> = page.entries.iter().map(|e| e.name.as_slice()).collect();
    assert_eq!(names, [b"b".as_slice()], "the page after \"a\"");
}

/// Minimal case: an inode created after a snapshot, numbered from the inode batch this
/// process took before it (below the snapshot's `ino_mark`), must not be in the snapshot. Its
/// first records are written while it has no attributes yet, so `Versioned::preserve` finds no
/// volume for it and saves no (absent) version: the snapshot then reads the live inode.
#[test]
fn inode_created_after_a_snapshot_is_not_in_it() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume(VOL);
    let snap = m.create_snapshot(VOL, "s", None).expect("snapshot");
    let (f, _) = common::file_with_slice(m, vol.root, "f", 100);
    assert!(f < snap.ino_mark, "this case needs an inode of the batch taken before the snapshot");
    assert_eq!(m.getattr(view_ino(snap.epoch, f)).map(drop), Err(MetaError::NotFound), "the new inode in the snapshot");
    assert_eq!(
        m.read_chunk(view_ino(snap.epoch, f), 0).map(drop),
        Err(MetaError::NotFound),
        "its chunk in the snapshot"
    );
}

/// Minimal case: a clone shares its snapshot's slices, so once the live volume dropped them,
/// deleting the snapshot frees nothing: `snapshot_space` must not count them as held by the
/// snapshot alone (`held_bytes` looks at the live volume's chunk and the volume's other
/// snapshots, never at clones).
#[test]
fn slices_a_clone_shares_are_not_held_by_the_snapshot_alone() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume(VOL);
    let (f, s) = common::file_with_slice(m, vol.root, "f", 1000);
    let snap = m.create_snapshot(VOL, "s", None).expect("snapshot");
    fs.volume("c");
    m.clone_volume("c", VOL, Some("s")).expect("clone");
    m.setattr(&Ctx::root(), f, &SetAttr { size: Some(0), ..Default::default() }).expect("truncate");
    assert_eq!(m.snapshot_space(&snap).expect("space").held_bytes, 0, "bytes the clone shares");
    m.delete_snapshot(VOL, "s", None).expect("delete the snapshot");
    assert!(!common::collectable_ids(m).contains(&s.id), "a slice the clone still reads is collectable");
}

/// Minimal case: a clone copies the snapshot's tree, so its usage is that tree's; an open,
/// unlinked file the source still counted (and the snapshot record's `inodes`/`bytes` with it)
/// is not copied, yet `copy_snapshot` sets the clone's usage to the snapshot's numbers.
#[test]
fn clone_usage_is_what_it_copied() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume(VOL);
    let (f, _) = common::file_with_slice(m, vol.root, "f", 5000);
    m.open(1, f).expect("open");
    m.unlink(&Ctx::root(), vol.root, b"f").expect("unlink");
    fs.volume("c");
    let c = m.clone_volume("c", VOL, None).expect("clone");
    assert_eq!(common::names(m, c.root), Vec::<String>::new());
    assert_eq!(m.usage(c.id).expect("usage"), Usage { bytes: 0, inodes: 1 }, "the clone's usage");
}

/// Minimal case: a write to a snapshot fails with EROFS, whatever the live volume's quotas
/// say (`mknod` in a snapshot of a volume at its inode limit reports EDQUOT).
#[test]
fn write_to_a_snapshot_is_read_only_before_over_quota() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = m.create_volume(VOL, &NewVolume { inode_limit: 1, ..Default::default() }).expect("volume");
    let snap = m.create_snapshot(VOL, "s", None).expect("snapshot");
    let r = common::mkfile(m, &Ctx::root(), snap.root(&vol), "f", 0o644);
    assert_eq!(r, Err(MetaError::ReadOnly));
}
