//! The state of live clients kept in this process's memory (`StateMode::Local`): which
//! inodes are open per session, the sessions, and the advisory lock table with its rules
//! (which the records shared through the engine follow too). Plain data: nothing here reaches
//! the store.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::types::{Ino, SessionInfo};

/// Who has which inode open, per session: unlinked inodes live on while open anywhere, and the
/// collector keeps blocks an open file may still read.
#[derive(Default)]
pub(crate) struct OpenTable {
    pub(crate) by_ino: HashMap<Ino, u32>,
    pub(crate) by_session: HashMap<u64, HashMap<Ino, u32>>,
    /// Shared state: the opens of `by_session` that have no record in the engine yet (see
    /// `open.rs`), by inode and session.
    pub(crate) unrecorded: HashMap<Ino, HashMap<u64, u32>>,
    /// Shared state: inodes this process unlinked while it held unrecorded opens of them; the
    /// last of those opens to close hands the inode to the reaper.
    pub(crate) unlinked_open: std::collections::HashSet<Ino>,
    /// Shared state: sessions another server took over (a moved note) that have not
    /// registered here again: none of their opens here goes unrecorded, and their next call
    /// here makes them announce their opens.
    pub(crate) moved_away: std::collections::HashSet<u64>,
}

/// Local sessions: the record and the monotonic time of its last sign of life.
pub(crate) type LocalSessions = HashMap<u64, (SessionInfo, Instant)>;

/// A lock owner: a client session and the kernel's lock-owner id within it.
pub type Owner = (u64, u64);

/// Kind of lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Shared.
    Read,
    /// Exclusive.
    Write,
    /// Release.
    Unlock,
}

impl LockKind {
    /// From the wire code (0 read, 1 write, 2 unlock).
    pub fn from_code(c: u32) -> Option<Self> {
        match c {
            0 => Some(LockKind::Read),
            1 => Some(LockKind::Write),
            2 => Some(LockKind::Unlock),
            _ => None,
        }
    }

    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            LockKind::Read => 0,
            LockKind::Write => 1,
            LockKind::Unlock => 2,
        }
    }
}

/// One held byte range, `end` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// Holder.
    pub owner: Owner,
    /// First byte.
    pub start: u64,
    /// Last byte.
    pub end: u64,
    /// Read or write.
    pub kind: LockKind,
    /// Process id the holder reported.
    pub pid: u32,
}

/// All locks of one server process (local state).
#[derive(Default)]
pub struct LockTable {
    posix: HashMap<u64, Vec<Range>>,
}

fn conflicts(a: LockKind, b: LockKind) -> bool {
    a == LockKind::Write || b == LockKind::Write
}

/// The first lock in `list` of another owner that would block `kind` over `[start, end]`.
pub(crate) fn blocker(list: &[Range], owner: Owner, start: u64, end: u64, kind: LockKind) -> Option<Range> {
    list.iter().find(|r| r.owner != owner && r.start <= end && start <= r.end && conflicts(r.kind, kind)).copied()
}

/// Applies a lock change to one inode's ranges; `false` (and `list` unchanged) if another
/// owner's lock conflicts. Shared by the local table and the stored records, so both behave
/// the same.
pub(crate) fn apply(list: &mut Vec<Range>, owner: Owner, start: u64, end: u64, kind: LockKind, pid: u32) -> bool {
    if kind != LockKind::Unlock && blocker(list, owner, start, end, kind).is_some() {
        return false;
    }
    // Cut the range out of this owner's existing locks, keeping the parts outside it.
    let mut next = Vec::with_capacity(list.len() + 2);
    for r in list.drain(..) {
        if r.owner != owner || r.end < start || r.start > end {
            next.push(r);
            continue;
        }
        if r.start < start {
            next.push(Range { end: start - 1, ..r });
        }
        if r.end > end {
            next.push(Range { start: end + 1, ..r });
        }
    }
    if kind != LockKind::Unlock {
        next.push(Range { owner, start, end, kind, pid });
    }
    *list = next;
    true
}

impl LockTable {
    /// The first lock of another owner that would block `kind` over `[start, end]`.
    pub fn test(&self, ino: u64, owner: Owner, start: u64, end: u64, kind: LockKind) -> Option<Range> {
        blocker(self.posix.get(&ino)?, owner, start, end, kind)
    }

    /// Takes, changes or releases a byte-range lock; `false` if another owner's lock conflicts.
    pub fn set(&mut self, ino: u64, owner: Owner, start: u64, end: u64, kind: LockKind, pid: u32) -> bool {
        let list = self.posix.entry(ino).or_default();
        let ok = apply(list, owner, start, end, kind, pid);
        if list.is_empty() {
            self.posix.remove(&ino);
        }
        ok
    }

    /// Drops the locks an owner holds on an inode (its file was closed).
    pub fn release(&mut self, ino: u64, owner: Owner) {
        self.set(ino, owner, 0, u64::MAX, LockKind::Unlock, 0);
    }

    /// Drops every lock of a session (it unmounted or expired).
    pub fn release_session(&mut self, session: u64) {
        self.posix.retain(|_, v| {
            v.retain(|r| r.owner.0 != session);
            !v.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::LockKind::*;
    use super::*;

    #[test]
    fn readers_share_writers_exclude() {
        let mut t = LockTable::default();
        assert!(t.set(1, (1, 1), 0, 99, Read, 10));
        assert!(t.set(1, (2, 1), 50, 150, Read, 20));
        assert!(!t.set(1, (2, 1), 0, 10, Write, 20));
        assert_eq!(t.test(1, (2, 1), 0, 10, Write).map(|r| r.pid), Some(10));
        assert!(t.set(1, (2, 1), 100, 200, Write, 20), "beyond the other reader");
    }

    #[test]
    fn unlock_splits_a_range() {
        let mut t = LockTable::default();
        assert!(t.set(1, (1, 1), 0, 99, Write, 1));
        assert!(t.set(1, (1, 1), 40, 59, Unlock, 1));
        assert!(t.set(1, (2, 2), 40, 59, Write, 2));
        assert!(!t.set(1, (2, 2), 39, 40, Write, 2));
        assert!(!t.set(1, (2, 2), 59, 60, Write, 2));
        t.release(1, (1, 1));
        assert!(t.set(1, (2, 2), 0, u64::MAX, Write, 2));
    }

    #[test]
    fn session_release_drops_only_that_session() {
        let mut t = LockTable::default();
        assert!(t.set(5, (1, 1), 0, u64::MAX, Read, 1));
        assert!(t.set(5, (2, 1), 0, u64::MAX, Read, 2));
        assert!(!t.set(5, (3, 1), 0, u64::MAX, Write, 3));
        t.release_session(1);
        assert!(!t.set(5, (3, 1), 0, u64::MAX, Write, 3), "session 2 still shares it");
        t.release_session(2);
        assert!(t.set(5, (3, 1), 0, u64::MAX, Write, 3));
    }
}
