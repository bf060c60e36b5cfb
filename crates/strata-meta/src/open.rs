//! Open files and reaping: which inodes are open where (in this process, or as records shared
//! through the engine), unlinked inodes kept while open and destroyed at the last close, and
//! the deferred destruction of unlinked inodes open nowhere.
//!
//! With shared state an open is one lazy transaction (PostgreSQL's asynchronous commit, as
//! for creates): other servers see it at once, but a crash of the database itself may lose
//! it. Each server therefore mirrors its own sessions' opens in memory; when the engine says
//! it restarted, the server records them again, and for [`RESTART_GRACE`] no unlink destroys
//! a file at once (the reaper does it later, after checking the open records again), so an
//! open another server has not recorded again yet still keeps its file.
//!
//! Unrecorded opens. A server that hears every server's notes (the change relay, PostgreSQL
//! `LISTEN`/`NOTIFY`) may leave an open of a linked file unrecorded: the open reads the
//! attributes and writes nothing, and its close writes nothing either; a create's open is
//! noted in memory before the creating transaction commits. What an open record
//! protects is the file's data, from two things: its destruction after the last unlink, and
//! the collection of slices a write or truncate through another client freed. Both send a
//! doom note ([`doom_note`]) with their commit, in the same transaction, so every listening
//! server hears it exactly when the change is visible; a server that has the inode open
//! without a record then records its opens ([`Meta::record_opens`]). The destruction and the
//! collection wait [`OPEN_GRACE`] (the reaper, `strata-server`'s collector) and check the
//! records then. An open registers in memory before it reads the attributes, so either the
//! note comes after the registration, or the open saw the change (`nlink` 0) and records
//! itself. A server that stops hearing the relay records every open it holds and records
//! new ones until it hears it again; one that restarts, or a session that moves to another
//! server, is asked by the server to announce its opens again ([`Meta::touch_session`]).
//! A server that knows itself the only one ([`Meta::refresh_sole`]) destroys at once, as
//! without unrecorded opens: its own memory is then the whole truth.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::codec::{dec, enc};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::local::OpenTable;
use crate::meta::Meta;
use crate::txn::*;
use crate::types::*;

/// Records one more open of `ino` by `session` (shared state), inside the caller's transaction.
pub(crate) fn add_open(t: &mut dyn KvTxn, session: u64, ino: Ino) -> Result<()> {
    let held = t.get(&keys::open(ino, session))?;
    add_open_to(t, session, ino, held)
}

/// [`add_open`] of an inode this transaction creates.
pub(crate) fn add_open_new(t: &mut dyn KvTxn, session: u64, ino: Ino) -> Result<()> {
    add_open_to(t, session, ino, None)
}

/// [`add_open`] where the open record as it is (`held`) was read already.
fn add_open_to(t: &mut dyn KvTxn, session: u64, ino: Ino, held: Option<Vec<u8>>) -> Result<()> {
    let n: u32 = match held {
        Some(v) => dec(&v)?,
        None => 0,
    };
    t.put(&keys::open(ino, session), &enc(&n.saturating_add(1))?)?;
    t.put(&keys::session_open(session, ino), &[])
}

/// The recorded open count of `ino` by `session` (shared state).
pub(crate) fn open_count(t: &mut dyn KvTxn, ino: Ino, session: u64) -> Result<u32> {
    match t.get(&keys::open(ino, session))? {
        Some(v) => dec(&v),
        None => Ok(0),
    }
}

/// Records `n` opens of `ino` by `session` (shared state), with the session's index.
pub(crate) fn set_open_count(t: &mut dyn KvTxn, ino: Ino, session: u64, n: u32) -> Result<()> {
    t.put(&keys::open(ino, session), &enc(&n)?)?;
    t.put(&keys::session_open(session, ino), &[])
}

/// Removes every open record of a session (shared state) and returns the inodes it held.
pub(crate) fn drop_session_opens(t: &mut dyn KvTxn, session: u64) -> Result<Vec<Ino>> {
    let p = keys::session_open_prefix(session);
    let mut inos = Vec::new();
    for (k, _) in t.scan(&p, &prefix_end(&p), usize::MAX)? {
        let ino = keys::u64_at(&k, 9).ok_or_else(|| MetaError::Corrupt("session open key".into()))?;
        t.delete(&keys::open(ino, session))?;
        t.delete(&k)?;
        inos.push(ino);
    }
    Ok(inos)
}

/// The note a transaction sends (with its commit) when it dooms data of `ino`: the inode lost
/// its last link, or slices of it were freed.
pub fn doom_note(ino: Ino) -> String {
    format!("{DOOM_NOTE}{ino}")
}

/// Sends the doom note of `ino` with the running transaction's commit (one note for all the
/// inodes the transaction dooms, as they fit).
pub(crate) fn notify_doom(t: &mut dyn KvTxn, ino: Ino) {
    t.notify_item(DOOM_NOTE, &ino.to_string());
}

/// How a doom note starts (a server's relay tells them from its change notes by it).
pub const DOOM_NOTE: &str = "-|doom|";

/// How a moved note starts.
const MOVED_NOTE: &str = "-|moved|";

/// The note a transaction sends (with its commit) when session `session` comes to server
/// `to`: the server it used before records its opens of it ([`Meta::session_moved`]).
pub fn moved_note(to: &str, session: u64) -> String {
    format!("{MOVED_NOTE}{session}|{to}")
}

/// The session and new server of a moved note; `None` for any other payload.
pub fn parse_moved_note(payload: &str) -> Option<(u64, String)> {
    let (session, to) = payload.strip_prefix(MOVED_NOTE)?.split_once('|')?;
    Some((session.parse().ok()?, to.to_string()))
}

/// The inodes of a doom note; `None` for any other payload.
pub fn parse_doom_note(payload: &str) -> Option<Vec<Ino>> {
    let rest = payload.strip_prefix(DOOM_NOTE)?;
    Some(rest.split(',').filter_map(|i| i.parse().ok()).collect())
}

/// With unrecorded opens, how long destruction and slice collection wait after a doom note:
/// well past the time a server takes to hear the note and record its opens, and past the
/// time one that stopped hearing the relay takes to notice (2 s) and record them all. It
/// also exceeds [`crate::servers::SERVER_FRESH`], so that a server that died before the
/// note is seen gone ([`Meta::opens_accounted`]) by the time the grace ends.
pub const OPEN_GRACE: Duration = Duration::from_secs(10);

/// How long a finding of [`Meta::refresh_sole`] holds.
pub const SOLE_VALID: Duration = Duration::from_millis(1500);

/// How long after its first report a server waits before leaving opens unrecorded: longer
/// than [`SOLE_VALID`] plus a refresh, so that every server that took itself for the only one
/// knows better by then.
pub const UNRECORDED_AFTER: Duration = Duration::from_secs(3);

thread_local! {
    /// Inodes the transaction running on this thread dooms (see `Meta::doom_at_commit`).
    static STAGED_DOOMS: std::cell::RefCell<Vec<Ino>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// After an engine restart, how long unlinks leave destruction to the reaper: long enough for
/// every server to notice the restart (each reaches the database at least every few seconds,
/// for its heartbeat) and record its clients' opens again.
pub const RESTART_GRACE: Duration = Duration::from_secs(30);

impl Meta {
    /// Drops a link whose count reached zero: kept while open, destroyed otherwise.
    pub(crate) fn release_inode(&self, t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
        if self.allows_unrecorded() {
            notify_doom(t, ino);
        }
        // Held here unrecorded: its last close here (if it comes before the note) reaps it.
        if self.held_here(ino, true) || self.is_open_recorded(t, ino)? {
            store_attr(t, ino, a)?;
            t.put(&keys::sustained(ino), &[])
        } else if self.defers_destroy() || self.restart_deferring() || self.allows_unrecorded() {
            // With unrecorded opens even the only server leaves it to the reaper: an open
            // registering here after the check above is found there.
            // The usage goes back now, so quotas see the space at once; the rows go later.
            store_attr(t, ino, a)?;
            t.put(&keys::sustained(ino), &keys::uncharged(a.charged_bytes()))?;
            charge(t, a.volume, -(a.charged_bytes() as i64), -1)?;
            self.doom_at_commit(ino);
            Ok(())
        } else {
            destroy(t, ino, a)
        }
    }

    /// Puts `ino` on the doomed list, for [`Meta::reap_doomed`], outside a transaction.
    pub(crate) fn doom(&self, ino: Ino) {
        self.doomed().push((ino, Instant::now()));
    }

    /// Dooms `ino` once the running transaction commits ([`Meta::write`] pushes it then):
    /// the grace must run from the commit, which sends the doom note, however long retries
    /// take; a transaction that rolls back dooms nothing.
    fn doom_at_commit(&self, ino: Ino) {
        STAGED_DOOMS.with(|d| d.borrow_mut().push(ino));
    }

    /// What the transaction now ending staged with [`Meta::doom_at_commit`]: doomed when it
    /// ended (`true`), dropped before every attempt (`false`).
    pub(crate) fn settle_staged_dooms(&self, committed: bool) {
        let staged = STAGED_DOOMS.with(|d| std::mem::take(&mut *d.borrow_mut()));
        if committed && !staged.is_empty() {
            let now = Instant::now();
            self.doomed().extend(staged.into_iter().map(|ino| (ino, now)));
        }
    }

    /// Whether this process holds `ino` open without a record; with `mark`, an unrecorded
    /// open found here is noted so that its last close hands the inode to the reaper. Check
    /// and mark are one step under the table's lock, as the close's are.
    fn held_here(&self, ino: Ino, mark: bool) -> bool {
        if !self.allows_unrecorded() {
            return false;
        }
        // A poisoned table counts as open: keeping a file is safe, destroying it is not.
        let Ok(mut o) = self.opens.lock() else { return true };
        if !o.unrecorded.contains_key(&ino) {
            return false;
        }
        if mark {
            o.unlinked_open.insert(ino);
        }
        true
    }

    /// Shared state: lets opens of linked files go unrecorded while [`Meta::set_relay_heard`]
    /// says this process hears every server's doom notes (see the module's documentation).
    /// Every server on the store must say so (they all defer destruction for it). No effect
    /// with local state.
    pub fn set_unrecorded_opens(&self, on: bool) {
        self.unrecorded_opens.store(on && self.is_shared(), Ordering::Relaxed);
    }

    /// Whether opens may go unrecorded on this store ([`Meta::set_unrecorded_opens`]).
    pub fn allows_unrecorded(&self) -> bool {
        self.unrecorded_opens.load(Ordering::Relaxed)
    }

    /// Whether destruction waits for doom notes to be heard: opens may go unrecorded, and
    /// another server may hold some.
    fn waits_for_notes(&self) -> bool {
        self.allows_unrecorded() && !self.is_sole()
    }

    fn is_sole(&self) -> bool {
        self.sole_until.lock().map(|u| u.is_some_and(|u| Instant::now() < u)).unwrap_or(false)
    }

    /// With unrecorded opens: finds out whether this process (server `me`) is the only server
    /// of the store, which it then takes as known for [`SOLE_VALID`]: no other server has a
    /// record, and every session names `me`. A server that starts takes
    /// [`UNRECORDED_AFTER`] before leaving opens unrecorded, so the others learn of it first.
    pub fn refresh_sole(&self, me: &str) -> Result<bool> {
        let until = Instant::now() + SOLE_VALID;
        // Every session registered or heard through this process: a session that named this
        // address before a restart may hold opens the previous process never recorded.
        let sole = self.servers()?.iter().all(|r| r.addr == me) && {
            let sessions = self.sessions()?;
            let touched = self.touched.lock().map_err(|_| MetaError::Engine("session table poisoned".into()))?;
            sessions.iter().all(|s| s.server == me && touched.contains_key(&s.id))
        };
        if let Ok(mut u) = self.sole_until.lock() {
            *u = sole.then_some(until);
        }
        Ok(sole)
    }

    /// Says whether this process hears every server's notes now (its relay listens and heard
    /// from the database lately). While it does not, opens are recorded.
    pub fn set_relay_heard(&self, heard: bool) {
        self.relay_heard.store(heard, Ordering::Relaxed);
    }

    /// How long destruction waits after a doom note (tests shorten it).
    pub fn set_open_grace(&self, grace: Duration) {
        self.open_grace_ms.store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    /// How long destruction and slice collection wait after a doom note: zero unless opens
    /// may go unrecorded.
    pub fn open_grace(&self) -> Duration {
        if self.waits_for_notes() {
            Duration::from_millis(self.open_grace_ms.load(Ordering::Relaxed))
        } else {
            Duration::ZERO
        }
    }

    /// Whether this process holds opens not recorded in the engine.
    pub fn has_unrecorded_opens(&self) -> bool {
        // Local state keeps its opens in the same table, busy with them all the time: never
        // any unrecorded there.
        if !self.allows_unrecorded() {
            return false;
        }
        // Busy (recording, perhaps waiting for the database): say yes rather than wait.
        match self.opens.try_lock() {
            Ok(o) => !o.unrecorded.is_empty(),
            Err(_) => true,
        }
    }

    /// Records this process's unrecorded opens of `only` (every one with `None`): a doom note
    /// named them, or this process may have missed notes. Returns how many (session, inode)
    /// pairs it recorded; those of sessions that ended are dropped.
    pub fn record_opens(&self, only: Option<&[Ino]>) -> Result<usize> {
        match only {
            Some(inos) => {
                let inos: std::collections::HashSet<Ino> = inos.iter().copied().collect();
                self.record_where(|ino, _| inos.contains(&ino), false)
            }
            None => self.record_where(|_, _| true, false),
        }
    }

    /// A session of this process moved to server `to` (a moved note, see
    /// [`moved_note`]): its unrecorded opens here are recorded, and its next call here is
    /// taken as a first contact, so that it announces its opens again. Nothing happens for
    /// `to` this server.
    pub fn session_moved(&self, session: u64, to: &str, me: &str) -> Result<usize> {
        if to == me {
            return Ok(0);
        }
        if let Ok(mut m) = self.touched.lock() {
            m.remove(&session);
        }
        // First: an open of the session registering here from now on is recorded.
        self.open_table()?.moved_away.insert(session);
        // The client announced every open it holds to the new server, these among them: a
        // record is at least this count, not this count more.
        self.record_where(|_, s| s == session, true)
    }

    /// Records this process's unrecorded opens that `pick(inode, session)` chooses: added to
    /// the record, or with `at_least`, raising it to their count.
    fn record_where(&self, pick: impl Fn(Ino, u64) -> bool, at_least: bool) -> Result<usize> {
        // Held throughout, so that an open or close of these inodes waits for the records
        // and then finds them.
        let mut o = self.open_table()?;
        let todo: Vec<(Ino, u64, u32)> = o
            .unrecorded
            .iter()
            .flat_map(|(i, m)| m.iter().map(move |(s, n)| (*i, *s, *n)))
            .filter(|(i, s, _)| pick(*i, *s))
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        self.write(false, |t| {
            for &(ino, session, n) in &todo {
                if t.get(&keys::session(session))?.is_none() {
                    continue;
                }
                let have = open_count(t, ino, session)?;
                let want = if at_least { have.max(n) } else { have.saturating_add(n) };
                set_open_count(t, ino, session, want)?;
            }
            Ok(())
        })?;
        let mut check = Vec::new();
        for (ino, session, _) in &todo {
            if let Some(m) = o.unrecorded.get_mut(ino) {
                m.remove(session);
                if m.is_empty() {
                    o.unrecorded.remove(ino);
                    // Its closes go through the records now; the reaper looks again (the
                    // session may have ended, leaving no record to close).
                    if o.unlinked_open.remove(ino) {
                        check.push(*ino);
                    }
                }
            }
        }
        drop(o);
        for ino in check {
            self.doom(ino);
        }
        Ok(todo.len())
    }

    /// An open that needs no record now: this process hears every doom note.
    /// `None` for a session another server took over: its opens here are recorded.
    fn open_unrecorded(&self, session: u64, ino: Ino) -> Result<Option<Attr>> {
        if !self.register_unrecorded(session, ino)? {
            return Ok(None);
        }
        // Registered first: a doom committed after this read is heard, and finds it.
        let a = match self.read_latest(|t| load_attr(t, ino)) {
            Ok(a) => a,
            Err(e) => {
                self.close_unrecorded(session, ino);
                return Err(e);
            }
        };
        if a.nlink == 0 {
            // Doomed already: its note may have gone by.
            if let Err(e) = self.record_opens(Some(&[ino])) {
                self.close_unrecorded(session, ino);
                return Err(e);
            }
        }
        Ok(Some(a))
    }

    /// Notes one more unrecorded open of `ino` by `session` in this process's table; `false`
    /// (nothing noted) for a session another server took over, whose opens are recorded.
    fn register_unrecorded(&self, session: u64, ino: Ino) -> Result<bool> {
        let mut o = self.open_table()?;
        if o.moved_away.contains(&session) {
            return Ok(false);
        }
        *o.by_session.entry(session).or_default().entry(ino).or_insert(0) += 1;
        *o.unrecorded.entry(ino).or_default().entry(session).or_insert(0) += 1;
        Ok(true)
    }

    /// For a create by `session`: notes the new inode `ino` open without a record, before the
    /// transaction that makes it commits, so that every doom note of it finds the open (nothing
    /// can doom an inode before it exists). `false` when opens are recorded now: the creating
    /// transaction records it then. A create that does not happen undoes this with
    /// [`Meta::close`].
    pub(crate) fn open_new_unrecorded(&self, session: u64, ino: Ino) -> Result<bool> {
        if !self.leaves_opens_unrecorded() {
            return Ok(false);
        }
        self.register_unrecorded(session, ino)
    }

    /// Whether an open made now may go unrecorded: the store allows it and this process hears
    /// every doom note.
    fn leaves_opens_unrecorded(&self) -> bool {
        self.allows_unrecorded() && self.relay_heard.load(Ordering::Relaxed)
    }

    /// Closes one unrecorded open of `ino` by `session`; `false` if it has none.
    fn close_unrecorded(&self, session: u64, ino: Ino) -> bool {
        let Ok(mut o) = self.opens.lock() else { return false };
        let Some(m) = o.unrecorded.get_mut(&ino) else { return false };
        let Some(n) = m.get_mut(&session) else { return false };
        *n -= 1;
        let mut last_of_unlinked = false;
        if *n == 0 {
            m.remove(&session);
            if m.is_empty() {
                o.unrecorded.remove(&ino);
                last_of_unlinked = o.unlinked_open.remove(&ino);
            }
        }
        drop(o);
        self.mirror_close(session, ino);
        if last_of_unlinked {
            // Unlinked here while open here, and the note that would have recorded this open
            // has not come yet: the reaper checks the records.
            self.doom(ino);
        }
        true
    }

    /// The doomed list; a panic elsewhere cannot leave a list of inode numbers inconsistent,
    /// and every entry is checked again when reaped, so a poisoned lock is simply taken.
    pub(crate) fn doomed(&self) -> std::sync::MutexGuard<'_, Vec<(Ino, Instant)>> {
        self.doomed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn defers_destroy(&self) -> bool {
        self.defer_destroy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Shared state: whether destruction waits because the engine restarted lately (or just
    /// now, and this process has not recorded its opens again yet).
    fn restart_deferring(&self) -> bool {
        if !self.is_shared() {
            return false;
        }
        if self.kv.restarts() != self.restarts_handled.load(Ordering::Relaxed) {
            return true;
        }
        let until = *self.restart_defer_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|u| Instant::now() < u)
    }

    /// Shared state: whether the engine restarted since [`Meta::after_engine_restart`] last
    /// ran (a cheap check, for a server's background loop).
    pub fn engine_restarted(&self) -> bool {
        self.is_shared() && self.kv.restarts() != self.restarts_handled.load(Ordering::Relaxed)
    }

    /// Shared state, after the engine restarted: records this process's sessions' opens
    /// again (a crash of the database may have lost their lazy commits) and starts
    /// [`RESTART_GRACE`]. Returns how many open records it wrote. A count already higher in
    /// the engine is kept: one too many keeps a file until its session ends, one too few
    /// could destroy a file still open.
    pub fn after_engine_restart(&self) -> Result<usize> {
        let seen = self.kv.restarts();
        if !self.is_shared() || seen == self.restarts_handled.load(Ordering::Relaxed) {
            return Ok(0);
        }
        // Held throughout: an open registered meanwhile must not be counted as recorded.
        let mut table = self.open_table()?;
        let mine: Vec<(u64, Ino, u32)> =
            table.by_session.iter().flat_map(|(s, m)| m.iter().map(move |(ino, n)| (*s, *ino, *n))).collect();
        let written = self.write_kept(|t| {
            let mut written = 0;
            for &(session, ino, n) in &mine {
                // A session that ended meanwhile (here or on another server) holds nothing.
                if t.get(&keys::session(session))?.is_none() {
                    continue;
                }
                if open_count(t, ino, session)? < n {
                    set_open_count(t, ino, session, n)?;
                    written += 1;
                }
            }
            Ok(written)
        })?;
        // Every open this process holds is recorded now.
        table.unrecorded.clear();
        let check: Vec<Ino> = table.unlinked_open.drain().collect();
        drop(table);
        for ino in check {
            self.doom(ino);
        }
        // The grace runs from the moment the opens are back.
        *self.restart_defer_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + RESTART_GRACE);
        self.restarts_handled.store(seen, Ordering::Relaxed);
        Ok(written)
    }

    /// Shared state: notes in this process's mirror that `session` opened `ino` once more.
    pub(crate) fn mirror_open(&self, session: u64, ino: Ino) {
        if let Ok(mut o) = self.opens.lock() {
            *o.by_session.entry(session).or_default().entry(ino).or_insert(0) += 1;
        }
    }

    /// Shared state: notes in this process's mirror that `session` closed `ino` once.
    fn mirror_close(&self, session: u64, ino: Ino) {
        if let Ok(mut o) = self.opens.lock()
            && let Some(m) = o.by_session.get_mut(&session)
            && let Some(n) = m.get_mut(&ino)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&ino);
                if m.is_empty() {
                    o.by_session.remove(&session);
                }
            }
        }
    }

    /// With local state, makes unlinks of files open nowhere leave the inode's destruction
    /// (its chunk rows, freeing its slices) to [`Meta::reap_doomed`]: a server calls that in
    /// the background, so an unlink's transaction stays as small as when the file is open.
    /// The usage is given back by the unlink either way. No effect with shared state.
    pub fn set_defer_destroy(&self, on: bool) {
        self.defer_destroy.store(on && !self.is_shared(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How many unlinked inodes wait for [`Meta::reap_doomed`].
    pub fn doomed_count(&self) -> usize {
        self.doomed().len()
    }

    /// Destroys the inodes unlinked since the last call that are still open nowhere (an
    /// inode opened meanwhile waits for its last close); returns how many went. A crash
    /// loses nothing: their sustained records stay, for [`Meta::reap_orphans`].
    pub fn reap_doomed(&self) -> Result<usize> {
        const BATCH: usize = 512;
        if self.restart_deferring() {
            // Opens the engine lost may not be recorded again yet.
            return Ok(0);
        }
        // With unrecorded opens, only those doomed a grace ago: their opens are recorded.
        let grace = self.open_grace();
        let inos: Vec<Ino> = {
            let mut d = self.doomed();
            let now = Instant::now();
            let (ripe, young): (Vec<_>, Vec<_>) = d.drain(..).partition(|(_, at)| now.duration_since(*at) >= grace);
            *d = young;
            ripe.into_iter().map(|(ino, _)| ino).collect()
        };
        if !inos.is_empty() && !grace.is_zero() && !self.opens_accounted()? {
            // Some session's opens went with a server that is gone: they wait for it.
            let back = Instant::now().checked_sub(grace).unwrap_or_else(Instant::now);
            self.doomed().extend(inos.iter().map(|ino| (*ino, back)));
            return Ok(0);
        }
        let mut n = 0;
        for (i, batch) in inos.chunks(BATCH).enumerate() {
            let done = self.write(false, |t| {
                let mut k = 0;
                for ino in batch {
                    if self.reap_in(t, *ino)? {
                        k += 1;
                    }
                }
                Ok(k)
            });
            match done {
                Ok(k) => n += k,
                Err(e) => {
                    // Back in the list for the next call.
                    let back = Instant::now().checked_sub(grace).unwrap_or_else(Instant::now);
                    self.doomed().extend(inos[i * BATCH..].iter().map(|ino| (*ino, back)));
                    return Err(e);
                }
            }
        }
        Ok(n)
    }

    pub(crate) fn open_table(&self) -> Result<std::sync::MutexGuard<'_, OpenTable>> {
        self.opens.lock().map_err(|_| MetaError::Engine("open table poisoned".into()))
    }

    /// Whether any session has `ino` open. With shared state this reads the open records in
    /// the caller's transaction, so an open committed by another server is seen (or the two
    /// transactions conflict and one is retried).
    /// [`Meta::is_open`], asked once per inode in one transaction (`seen` remembers answers).
    pub(crate) fn is_open_seen(&self, t: &mut dyn KvTxn, seen: &mut HashMap<Ino, bool>, ino: Ino) -> Result<bool> {
        if let Some(o) = seen.get(&ino) {
            return Ok(*o);
        }
        let o = self.is_open(t, ino)?;
        seen.insert(ino, o);
        Ok(o)
    }

    pub(crate) fn is_open(&self, t: &mut dyn KvTxn, ino: Ino) -> Result<bool> {
        // This process's unrecorded opens count too.
        Ok(self.held_here(ino, false) || self.is_open_recorded(t, ino)?)
    }

    /// [`Meta::is_open`] without this process's unrecorded opens.
    fn is_open_recorded(&self, t: &mut dyn KvTxn, ino: Ino) -> Result<bool> {
        if self.is_shared() {
            let p = keys::open_prefix(ino);
            return Ok(!t.scan(&p, &prefix_end(&p), 1)?.is_empty());
        }
        // A poisoned table counts as open: keeping a file is safe, destroying it is not.
        Ok(self.opens.lock().map(|o| o.by_ino.contains_key(&ino)).unwrap_or(true))
    }

    /// Every inode some session has open.
    pub(crate) fn open_inodes(&self) -> Result<Vec<Ino>> {
        if !self.is_shared() {
            return Ok(self.open_table()?.by_ino.keys().copied().collect());
        }
        let mut out: Vec<Ino> = Vec::new();
        let end = prefix_end(keys::OPEN_PREFIX);
        let mut from = keys::OPEN_PREFIX.to_vec();
        loop {
            let page = self.read(|t| t.scan(&from, &end, 4096))?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (k, _) in &page {
                if let Some(ino) = keys::u64_at(k, 1)
                    && out.last() != Some(&ino)
                {
                    out.push(ino);
                }
            }
        }
        Ok(out)
    }

    /// Records that `session` opened `ino` and returns its current attributes.
    pub fn open(&self, session: u64, ino: Ino) -> Result<Attr> {
        if self.leaves_opens_unrecorded()
            && let Some(a) = self.open_unrecorded(session, ino)?
        {
            return Ok(a);
        }
        if self.is_shared() {
            // One transaction: an unlink on another server either sees this open or came first.
            // Lazy, as creates are: the mirror covers a database crash (see the module's doc).
            let a = self.write(false, |t| {
                // Attributes and this session's open record in one read.
                let mut got = t.get_many(&[keys::attr(ino).to_vec(), keys::open(ino, session).to_vec()])?.into_iter();
                let a: Attr = match got.next().flatten() {
                    Some(v) => dec(&v)?,
                    None => return Err(MetaError::NotFound),
                };
                add_open_to(t, session, ino, got.next().flatten())?;
                Ok(a)
            })?;
            self.mirror_open(session, ino);
            return Ok(a);
        }
        self.note_open(session, ino)?;
        match self.getattr(ino) {
            Ok(a) => Ok(a),
            Err(e) => {
                self.close(session, ino)?;
                Err(e)
            }
        }
    }

    /// Records an open without reading attributes (a reconnecting client re-announcing).
    pub fn note_open(&self, session: u64, ino: Ino) -> Result<()> {
        if self.is_shared() {
            self.write(false, |t| add_open(t, session, ino))?;
            self.mirror_open(session, ino);
            return Ok(());
        }
        let mut o = self.open_table()?;
        *o.by_ino.entry(ino).or_insert(0) += 1;
        *o.by_session.entry(session).or_default().entry(ino).or_insert(0) += 1;
        Ok(())
    }

    /// Records a close; the last close of an unlinked inode destroys it.
    pub fn close(&self, session: u64, ino: Ino) -> Result<()> {
        if self.is_shared() {
            if self.close_unrecorded(session, ino) {
                return Ok(());
            }
            let later = self.waits_for_notes();
            // The last close and the destruction are one transaction, so an open through
            // another server cannot slip in between (with unrecorded opens, the destruction
            // waits for the reaper instead: see the module's documentation).
            let closed = self.write(false, |t| {
                let k = keys::open(ino, session);
                // The sustained record, which the last close reads, comes with the open
                // record (engines keep what a transaction read).
                let mut got = t.get_many(&[k.to_vec(), keys::sustained(ino).to_vec()])?.into_iter();
                let Some(v) = got.next().flatten() else { return Ok(false) };
                let sustained = got.next().flatten().is_some();
                let n: u32 = dec(&v)?;
                if n > 1 {
                    t.put(&k, &enc(&(n - 1))?)?;
                    return Ok(false);
                }
                t.delete(&k)?;
                t.delete(&keys::session_open(session, ino))?;
                if later {
                    return Ok(sustained);
                }
                self.reap_in(t, ino).map(|_| false)
            });
            return match closed {
                Ok(doomed) => {
                    self.mirror_close(session, ino);
                    if doomed {
                        self.doom(ino);
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            };
        }
        let last = {
            let mut o = self.open_table()?;
            if let Some(s) = o.by_session.get_mut(&session)
                && let Some(n) = s.get_mut(&ino)
            {
                *n -= 1;
                if *n == 0 {
                    s.remove(&ino);
                }
            } else {
                return Ok(());
            }
            match o.by_ino.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    o.by_ino.remove(&ino);
                    true
                }
            }
        };
        if last {
            self.reap_if_unlinked(ino)?;
        }
        Ok(())
    }

    /// Shared state: forgets what this process mirrors of a session's opens (it ended); an
    /// inode unlinked here while held only by it goes to the reaper.
    pub(crate) fn forget_session_opens(&self, session: u64) {
        let mut check = Vec::new();
        if let Ok(mut o) = self.opens.lock() {
            o.by_session.remove(&session);
            let mut emptied = Vec::new();
            o.unrecorded.retain(|ino, m| {
                m.remove(&session);
                if m.is_empty() {
                    emptied.push(*ino);
                }
                !m.is_empty()
            });
            for ino in emptied {
                if o.unlinked_open.remove(&ino) {
                    check.push(ino);
                }
            }
        }
        for ino in check {
            self.doom(ino);
        }
    }

    /// Forgets every open of a session (it closed or expired).
    pub fn close_session(&self, session: u64) -> Result<()> {
        if self.is_shared() {
            self.forget_session_opens(session);
            for ino in self.write(false, |t| drop_session_opens(t, session))? {
                self.reap_if_unlinked(ino)?;
            }
            return Ok(());
        }
        let inos: Vec<(Ino, u32)> = {
            let o = self.open_table()?;
            o.by_session.get(&session).map(|m| m.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default()
        };
        for (ino, n) in inos {
            for _ in 0..n {
                self.close(session, ino)?;
            }
        }
        if let Ok(mut o) = self.opens.lock() {
            o.by_session.remove(&session);
        }
        Ok(())
    }

    /// Destroys `ino` if it is unlinked and nobody has it open, inside the caller's
    /// transaction. Returns whether a sustained record was settled.
    pub(crate) fn reap_in(&self, t: &mut dyn KvTxn, ino: Ino) -> Result<bool> {
        let Some(mark) = t.get(&keys::sustained(ino))? else { return Ok(false) };
        if self.held_here(ino, true) || self.is_open_recorded(t, ino)? {
            return Ok(false);
        }
        match load_attr(t, ino) {
            Ok(a) if a.nlink == 0 => match keys::uncharged_bytes(&mark) {
                Some(given) => destroy_uncharged(t, ino, &a, given)?,
                None => destroy(t, ino, &a)?,
            },
            Ok(_) | Err(MetaError::NotFound) => t.delete(&keys::sustained(ino))?,
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    pub(crate) fn reap_if_unlinked(&self, ino: Ino) -> Result<bool> {
        if self.waits_for_notes() {
            // Another server may hold it open unrecorded until it heard the doom note.
            self.doom(ino);
            return Ok(false);
        }
        self.write(false, |t| self.reap_in(t, ino))
    }

    /// Destroys unlinked inodes nobody has open any more (after a restart, once clients had
    /// time to re-announce their open files).
    pub fn reap_orphans(&self) -> Result<usize> {
        let inos: Vec<Ino> = self.read(|t| {
            Ok(t.scan(keys::SUSTAINED_PREFIX, &prefix_end(keys::SUSTAINED_PREFIX), 10_000)?
                .into_iter()
                .filter_map(|(k, _)| keys::u64_at(&k, 1))
                .collect())
        })?;
        let mut n = 0;
        for ino in inos {
            if self.reap_if_unlinked(ino)? {
                n += 1;
            }
        }
        Ok(n)
    }
}
