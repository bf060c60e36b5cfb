//! Advisory locks shared by all clients: byte ranges owned by (session, kernel lock owner).
//!
//! fcntl locks arrive with the process's owner id, flock locks as whole-file ranges with the
//! open file's owner id, so both contend across clients through one table. Blocking requests
//! are retried by the client; the server only answers "granted" or "would block".
//!
//! With local state the table lives in this process ([`LockTable`]); with shared state each
//! inode's ranges are one record (`F ino`) changed in one transaction, so two servers on one
//! database see each other's locks and a conflicting change of both is serialised by the
//! engine (PostgreSQL retries the loser, which then sees the winner's lock).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::codec::{dec, enc};
use crate::error::{MetaError, Result};
use crate::fs::Meta;
use crate::keys;
use crate::kv::{KvTxn, prefix_end};

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
fn blocker(list: &[Range], owner: Owner, start: u64, end: u64, kind: LockKind) -> Option<Range> {
    list.iter().find(|r| r.owner != owner && r.start <= end && start <= r.end && conflicts(r.kind, kind)).copied()
}

/// Applies a lock change to one inode's ranges; `false` (and `list` unchanged) if another
/// owner's lock conflicts. Shared by the local table and the stored records, so both behave
/// the same.
fn apply(list: &mut Vec<Range>, owner: Owner, start: u64, end: u64, kind: LockKind, pid: u32) -> bool {
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

fn load_ranges(t: &mut dyn KvTxn, ino: u64) -> Result<Vec<Range>> {
    match t.get(&keys::locks(ino))? {
        Some(v) => dec(&v),
        None => Ok(Vec::new()),
    }
}

/// Stores an inode's ranges and keeps the session index (`f session ino`) in step for `session`.
fn store_ranges(t: &mut dyn KvTxn, ino: u64, list: &[Range], session: u64) -> Result<()> {
    if list.is_empty() {
        t.delete(&keys::locks(ino))?;
    } else {
        t.put(&keys::locks(ino), &enc(&list)?)?;
    }
    if list.iter().any(|r| r.owner.0 == session) {
        t.put(&keys::session_lock(session, ino), &[])
    } else {
        t.delete(&keys::session_lock(session, ino))
    }
}

/// Drops every stored lock of a session, inside the caller's transaction.
pub(crate) fn release_session_in(t: &mut dyn KvTxn, session: u64) -> Result<()> {
    let p = keys::session_lock_prefix(session);
    for (k, _) in t.scan(&p, &prefix_end(&p), usize::MAX)? {
        let ino = keys::u64_at(&k, 9).ok_or_else(|| MetaError::Corrupt("session lock key".into()))?;
        let mut list = load_ranges(t, ino)?;
        list.retain(|r| r.owner.0 != session);
        store_ranges(t, ino, &list, session)?;
    }
    Ok(())
}

fn poisoned() -> MetaError {
    MetaError::Engine("lock table poisoned".into())
}

impl Meta {
    /// The first lock of another owner that would block `kind` over `[start, end]` of `ino`.
    pub fn lock_test(&self, ino: u64, owner: Owner, start: u64, end: u64, kind: LockKind) -> Result<Option<Range>> {
        if !self.is_shared() {
            return Ok(self.local_locks.lock().map_err(|_| poisoned())?.test(ino, owner, start, end, kind));
        }
        self.read(|t| Ok(blocker(&load_ranges(t, ino)?, owner, start, end, kind)))
    }

    /// Takes, changes or releases a byte-range lock; `false` if another owner's lock conflicts.
    pub fn lock_set(&self, ino: u64, owner: Owner, start: u64, end: u64, kind: LockKind, pid: u32) -> Result<bool> {
        if !self.is_shared() {
            return Ok(self.local_locks.lock().map_err(|_| poisoned())?.set(ino, owner, start, end, kind, pid));
        }
        self.write(false, |t| {
            let mut list = load_ranges(t, ino)?;
            if !apply(&mut list, owner, start, end, kind, pid) {
                return Ok(false);
            }
            store_ranges(t, ino, &list, owner.0)?;
            Ok(true)
        })
    }

    /// Drops the locks an owner holds on an inode (its file was closed).
    pub fn lock_release(&self, ino: u64, owner: Owner) -> Result<()> {
        self.lock_set(ino, owner, 0, u64::MAX, LockKind::Unlock, 0).map(|_| ())
    }

    /// Drops every lock of a session (it unmounted or expired).
    pub fn lock_release_session(&self, session: u64) -> Result<()> {
        if !self.is_shared() {
            self.local_locks.lock().map_err(|_| poisoned())?.release_session(session);
            return Ok(());
        }
        self.write(false, |t| release_session_in(t, session))
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
