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

use crate::codec::{dec, enc};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
pub use crate::local::{LockKind, LockTable, Owner, Range};
use crate::local::{apply, blocker};
use crate::meta::Meta;

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
        // Kept: a lock lost with the database's process would let another owner take it.
        self.write_kept(|t| {
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
        self.write_kept(|t| release_session_in(t, session))
    }
}
