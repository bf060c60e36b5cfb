//! Whole directories a mount has read, so that looking up every name of a directory costs one
//! server round trip per page of entries instead of one per name.
//!
//! A FUSE mount's kernel asks for each name on its own (`LOOKUP`), and a cold `stat` of every
//! file of a dataset directory would otherwise be one server call per file. Once a mount has
//! missed twice in a directory it has no listing of, it reads the directory whole (names and
//! attributes, in pages, see `Vfs::lookup`) and answers later lookups in it here, positive and
//! negative, while the listing's lease holds. The attributes read with it go to the inode
//! cache, with the time they were read.
//!
//! A lease lasts the attribute lifetime (`VfsConfig::attr_ttl`), the same bound the kernel's own
//! caches of names and attributes already have: another client's change shows after at most
//! that long. This client's own changes update the listings at once (a created name is added,
//! a removed one removed, a rename moves the entry), so it always sees its own changes. A
//! listing read while this client changed the directory is thrown away (generations).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Entries of one directory read whole at most; a larger directory keeps the first ones (in
/// name order), which answer lookups only for names they hold.
pub(crate) const DIR_MAX: usize = 65_536;

/// Entries held in all listings at most; past it, expired listings go, then all of them.
const TOTAL_MAX: usize = 1 << 20;

/// Lookups that missed in a directory without a listing before it is read whole: a single
/// `stat` of one file of a big directory is not worth reading all of it.
const MISSES: u32 = 2;

/// While the server's change stream renews leases, a listing is used for this long at most.
pub(crate) const LEASE_MAX: Duration = Duration::from_secs(60);

/// Leases beyond the attribute lifetime hold only while the last renewal (the sending of a
/// `Watch` call that was answered) is at most this old.
pub(crate) const RENEWAL: Duration = Duration::from_secs(3);

/// What a listing says of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The name is this inode.
    Ino(u64),
    /// The directory holds no such name.
    Absent,
    /// No valid listing tells.
    Unknown,
}

/// A directory's listing and how lookups in it went.
#[derive(Default)]
struct Dir {
    /// Name → inode, when a listing is held.
    names: Option<HashMap<Vec<u8>, u64>>,
    /// Every name of the directory is in `names` (a directory past [`DIR_MAX`] is not).
    complete: bool,
    /// When the listing started to be read (its lease runs from there).
    read_at: Option<Instant>,
    /// Lookups that went to the server since the listing was dropped.
    misses: u32,
    /// A reading of the whole directory is under way.
    reading: bool,
    /// Changes of the directory this client made or learnt of: a reading started before one
    /// is not kept.
    generation: u64,
}

/// The listings of a mount.
pub(crate) struct DirCache {
    /// How long a listing is used (zero: never read whole).
    lease: Duration,
    dirs: Mutex<HashMap<u64, Dir>>,
    /// Entries held in all listings.
    total: Mutex<usize>,
    /// Inode → the directory whose listing names it (the last one, for hard links).
    parents: Mutex<HashMap<u64, u64>>,
    /// When the server's change stream last renewed leases (see `Vfs::watch_changes`).
    renewed: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps changed by whole inserts and removals: consistent even after a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A claim to read a directory whole, given by [`DirCache::miss`].
pub(crate) struct Reading {
    dir: u64,
    generation: u64,
    started: Instant,
}

impl DirCache {
    /// Listings used for `lease` (zero: off).
    pub(crate) fn new(lease: Duration) -> Self {
        DirCache {
            lease,
            dirs: Mutex::new(HashMap::new()),
            total: Mutex::new(0),
            parents: Mutex::new(HashMap::new()),
            renewed: Mutex::new(None),
        }
    }

    /// Whether listings are kept at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.lease.is_zero()
    }

    /// Whether what was read at `at` is still under lease: within the attribute lifetime, or
    /// within [`LEASE_MAX`] while the server's change stream renews leases (every change
    /// since then would have been heard of and dropped it).
    pub(crate) fn fresh(&self, at: Instant) -> bool {
        let age = at.elapsed();
        age < self.lease || (age < LEASE_MAX && lock(&self.renewed).is_some_and(|t| t.elapsed() < RENEWAL))
    }

    /// The change stream answered a call sent at `sent`: every change before then is known.
    pub(crate) fn renew(&self, sent: Instant) {
        *lock(&self.renewed) = Some(sent);
    }

    /// The change stream lost track: leases end at the attribute lifetime until it renews.
    pub(crate) fn unrenew(&self) {
        *lock(&self.renewed) = None;
    }

    fn valid(&self, d: &Dir) -> bool {
        d.names.is_some() && d.read_at.is_some_and(|t| self.fresh(t))
    }

    /// What the directory's listing says of `name`.
    pub(crate) fn get(&self, dir: u64, name: &[u8]) -> Found {
        if !self.enabled() || name == b"." || name == b".." {
            return Found::Unknown;
        }
        let dirs = lock(&self.dirs);
        let Some(d) = dirs.get(&dir).filter(|d| self.valid(d)) else { return Found::Unknown };
        match d.names.as_ref().and_then(|n| n.get(name)) {
            Some(ino) => Found::Ino(*ino),
            None if d.complete => Found::Absent,
            None => Found::Unknown,
        }
    }

    /// A lookup in `dir` found no answer here; `Some` when the caller should read the
    /// directory whole now (and report with [`DirCache::store`] or [`DirCache::failed`]).
    pub(crate) fn miss(&self, dir: u64) -> Option<Reading> {
        if !self.enabled() {
            return None;
        }
        let mut dirs = lock(&self.dirs);
        let d = dirs.entry(dir).or_default();
        if self.valid(d) || d.reading {
            // A listing of a big directory without the name, or another caller reads it.
            return None;
        }
        d.misses += 1;
        if d.misses < MISSES {
            return None;
        }
        d.reading = true;
        Some(Reading { dir, generation: d.generation, started: Instant::now() })
    }

    /// Keeps what a reading found, unless the directory changed meanwhile.
    pub(crate) fn store(&self, r: Reading, names: HashMap<Vec<u8>, u64>, complete: bool) {
        let added = names.len();
        let mut dirs = lock(&self.dirs);
        let Some(d) = dirs.get_mut(&r.dir) else { return };
        d.reading = false;
        if d.generation != r.generation {
            return;
        }
        {
            let mut parents = lock(&self.parents);
            for ino in names.values() {
                parents.insert(*ino, r.dir);
            }
        }
        let old = d.names.replace(names).map_or(0, |n| n.len());
        d.complete = complete;
        d.read_at = Some(r.started);
        d.misses = 0;
        drop(dirs);
        self.account(added, old);
    }

    /// A reading failed: lookups in the directory go to the server.
    pub(crate) fn failed(&self, r: Reading) {
        if let Some(d) = lock(&self.dirs).get_mut(&r.dir) {
            d.reading = false;
        }
    }

    /// Adjusts the count of entries held, and makes room when it is too large.
    fn account(&self, added: usize, removed: usize) {
        let mut total = lock(&self.total);
        *total = (*total + added).saturating_sub(removed);
        if *total <= TOTAL_MAX {
            return;
        }
        let mut dirs = lock(&self.dirs);
        dirs.retain(|_, d| d.reading || self.valid(d));
        let mut held: usize = dirs.values().filter_map(|d| d.names.as_ref()).map(HashMap::len).sum();
        if held > TOTAL_MAX {
            for d in dirs.values_mut() {
                d.names = None;
                d.generation += 1;
            }
            held = 0;
            lock(&self.parents).clear();
        }
        *total = held;
    }

    /// This client created `name` as `ino` in `dir`.
    pub(crate) fn added(&self, dir: u64, name: &[u8], ino: u64) {
        if !self.enabled() {
            return;
        }
        let mut dirs = lock(&self.dirs);
        let Some(d) = dirs.get_mut(&dir) else { return };
        d.generation += 1;
        if let Some(n) = d.names.as_mut() {
            let new = n.insert(name.to_vec(), ino).is_none();
            lock(&self.parents).insert(ino, dir);
            drop(dirs);
            if new {
                self.account(1, 0);
            }
        }
    }

    /// This client created directory `dir`: it is empty, a listing without reading it.
    pub(crate) fn created_dir(&self, dir: u64) {
        if !self.enabled() {
            return;
        }
        let d = Dir { names: Some(HashMap::new()), complete: true, read_at: Some(Instant::now()), ..Dir::default() };
        lock(&self.dirs).insert(dir, d);
    }

    /// This client removed `name` from `dir` (or tried to: the outcome may be unknown); the
    /// inode it named, if the listing knew it.
    pub(crate) fn removed(&self, dir: u64, name: &[u8]) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        let mut dirs = lock(&self.dirs);
        let d = dirs.get_mut(&dir)?;
        d.generation += 1;
        let ino = d.names.as_mut().and_then(|n| n.remove(name));
        drop(dirs);
        if let Some(i) = ino {
            let mut parents = lock(&self.parents);
            if parents.get(&i) == Some(&dir) {
                parents.remove(&i);
            }
            drop(parents);
            self.account(0, 1);
        }
        ino
    }

    /// Forgets a directory's listing: it changed in a way not known here.
    pub(crate) fn drop_dir(&self, dir: u64) {
        if !self.enabled() {
            return;
        }
        let mut dirs = lock(&self.dirs);
        let Some(d) = dirs.get_mut(&dir) else { return };
        d.generation += 1;
        d.complete = false;
        let Some(names) = d.names.take() else { return };
        drop(dirs);
        {
            let mut parents = lock(&self.parents);
            for ino in names.values() {
                if parents.get(ino) == Some(&dir) {
                    parents.remove(ino);
                }
            }
        }
        self.account(0, names.len());
    }

    /// Whether a valid listing names `ino`: only then are its attributes reused under the
    /// listing's lease (what a listing does not name, nothing here would forget).
    pub(crate) fn names_ino(&self, ino: u64) -> bool {
        let Some(dir) = lock(&self.parents).get(&ino).copied() else { return false };
        lock(&self.dirs).get(&dir).is_some_and(|d| self.valid(d))
    }

    /// Forgets every listing (the server can no longer say what changed).
    pub(crate) fn clear(&self) {
        let mut dirs = lock(&self.dirs);
        for d in dirs.values_mut() {
            d.generation += 1;
            d.complete = false;
            d.names = None;
        }
        drop(dirs);
        lock(&self.parents).clear();
        *lock(&self.total) = 0;
    }

    /// Whether a valid listing holds every name of `dir` (a name it lacks is then known absent).
    pub(crate) fn holds(&self, dir: u64) -> bool {
        lock(&self.dirs).get(&dir).is_some_and(|d| d.complete && self.valid(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[(&str, u64)]) -> HashMap<Vec<u8>, u64> {
        n.iter().map(|(k, v)| (k.as_bytes().to_vec(), *v)).collect()
    }

    #[test]
    fn a_directory_is_read_at_the_second_miss_and_answers_both_ways_until_its_lease_ends() {
        let c = DirCache::new(Duration::from_millis(50));
        assert_eq!(c.get(1, b"a"), Found::Unknown);
        assert!(c.miss(1).is_none(), "one miss is a single lookup");
        let r = c.miss(1).expect("second miss reads the directory");
        assert!(c.miss(1).is_none(), "one reader at a time");
        c.store(r, names(&[("a", 10), ("b", 11)]), true);
        assert!(c.names_ino(10) && !c.names_ino(12));
        assert_eq!(c.get(1, b"a"), Found::Ino(10));
        assert_eq!(c.get(1, b"zz"), Found::Absent);
        assert_eq!(c.get(1, b".."), Found::Unknown, "dots are never listed names");
        assert_eq!(c.get(2, b"a"), Found::Unknown, "another directory");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(1, b"a"), Found::Unknown, "lease over");
        assert!(!c.names_ino(10), "attributes are not reused past the lease");
    }

    #[test]
    fn a_renewed_lease_outlives_the_attribute_lifetime() {
        let c = DirCache::new(Duration::from_millis(30));
        c.miss(1);
        let r = c.miss(1).expect("read");
        c.store(r, names(&[("a", 10)]), true);
        c.renew(Instant::now());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(1, b"a"), Found::Ino(10), "renewed by the change stream");
        c.unrenew();
        assert_eq!(c.get(1, b"a"), Found::Unknown, "no longer renewed");
    }

    #[test]
    fn own_changes_update_listings_and_void_readings_in_flight() {
        let c = DirCache::new(Duration::from_secs(30));
        c.miss(1);
        let r = c.miss(1).expect("read");
        c.added(1, b"new", 12);
        c.store(r, names(&[("a", 10)]), true);
        assert_eq!(c.get(1, b"a"), Found::Unknown, "read before a change of ours: not kept");
        let r = c.miss(1).expect("a voided reading is tried again at the next miss");
        c.store(r, names(&[("a", 10), ("new", 12)]), true);
        c.added(1, b"c", 13);
        assert_eq!(c.get(1, b"c"), Found::Ino(13));
        assert_eq!(c.removed(1, b"a"), Some(10));
        assert_eq!(c.get(1, b"a"), Found::Absent);
        assert_eq!(c.removed(1, b"x"), None);
        assert!(c.names_ino(13) && !c.names_ino(10));
        c.drop_dir(1);
        assert_eq!(c.get(1, b"c"), Found::Unknown);
        assert!(!c.names_ino(13));
        c.created_dir(5);
        assert_eq!(c.get(5, b"anything"), Found::Absent, "a directory just made is empty");
    }

    #[test]
    fn an_incomplete_listing_answers_only_for_names_it_holds() {
        let c = DirCache::new(Duration::from_secs(30));
        c.miss(1);
        let r = c.miss(1).expect("read");
        c.store(r, names(&[("a", 10)]), false);
        assert_eq!(c.get(1, b"a"), Found::Ino(10));
        assert_eq!(c.get(1, b"b"), Found::Unknown);
        assert!(c.miss(1).is_none(), "not read again while the listing holds");
        let off = DirCache::new(Duration::ZERO);
        assert!(off.miss(1).is_none() && off.miss(1).is_none());
    }
}
