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
/// An inode number never allocated in these tests.
const NEVER_INO: Ino = 1 << 40;
/// Chunk indexes checked on every file beyond the ones the model knows of.
const PROBE_CHUNKS: [u32; 5] = [0, 1, 2, 3, u32::MAX - 1];

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

fn op(reopen: bool) -> BoxedStrategy<Op> {
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
    ];
    if reopen {
        prop_oneof![20 => base, 1 => Just(Op::Reopen), 1 => Just(Op::ReapOrphans)].boxed()
    } else {
        base.boxed()
    }
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
}

#[derive(Debug, Default)]
struct Model {
    vol: u32,
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
            root: vol.root,
            capacity: vol.capacity,
            inode_limit: vol.inode_limit,
            ..Default::default()
        };
        m.nodes.insert(
            vol.root,
            Node { kind: FileType::Dir, nlink: 2, size: 0, parent: vol.root, chunks: BTreeMap::new(), target: vec![] },
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
        for s in slices {
            if s.id != 0 && seen.insert(s.id) {
                let prev = self.pending.insert(s.id, Pending { volume: self.vol, size: s.size, ino });
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
}

// ---------------------------------------------------------------------------------------------
// Running both side by side
// ---------------------------------------------------------------------------------------------

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
    model: Model,
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
        Harness { fs, model: Model::new(&vol), ctx }
    }

    fn meta(&self) -> &Meta {
        &self.fs.meta
    }

    fn step(&mut self, op: &Op) -> TestResult {
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
        }
        let usage = ok(self.meta().usage(self.model.vol), "usage")?;
        prop_assert_eq!(usage, self.model.usage(), "usage after {:?}", op);
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
        }
        for ino in &m.destroyed {
            prop_assert_eq!(meta.getattr(*ino), Err(MetaError::NotFound), "destroyed inode {} still there", ino);
            for idx in PROBE_CHUNKS {
                prop_assert_eq!(meta.read_chunk(*ino, idx), Err(MetaError::NotFound), "chunk of destroyed {}", ino);
            }
            prop_assert_eq!(meta.listxattr(*ino), Err(MetaError::NotFound));
        }
        prop_assert_eq!(ok(meta.usage(m.vol), "usage")?, m.usage(), "usage");
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
        let held: BTreeSet<u64> = m.pending.iter().filter(|(_, p)| m.is_open(p.ino)).map(|(id, _)| *id).collect();
        let want: BTreeSet<u64> = m
            .committed
            .iter()
            .filter(|id| !live.contains(id) && !m.forgotten.contains(id) && !held.contains(id))
            .copied()
            .collect();
        prop_assert_eq!(ids, want, "unreferenced slices vs collectable");
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
    Ok(h)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// Random operations agree with the model at every step.
    #[test]
    fn operations_match_model(quota in quotas(), defer in any::<bool>(), ops in prop::collection::vec(op(false), 1..80)) {
        run(quota, defer, &ops)?;
    }

    /// Reopening the database shows the same state (less the open table: unlinked open inodes
    /// become orphans, reaped by `reap_orphans`).
    #[test]
    fn reopen_shows_same_tree(quota in quotas(), defer in any::<bool>(), ops in prop::collection::vec(op(true), 1..80)) {
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
        // Opening once more changes nothing.
        h.fs.reopen();
        h.check_all()?;
    }
}
