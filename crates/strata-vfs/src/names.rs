//! Names a client has recently seen in directories, reused for the attribute lifetime, and
//! when to read a directory's names again whole.
//!
//! The gateways have no kernel dentry cache in front of them: NFS clients look every path up
//! name by name, and every S3 request names a whole path. Without a remembered answer each
//! name is a round trip to the metadata server, several times the gateway's own work. Names
//! are remembered, but expire after the attribute lifetime like every attribute; a client
//! going through a directory it listed would then pay one round trip per file. So once a
//! client has listed a directory, the first lookup in it that finds its names expired reads
//! the whole directory again, attributes included, a few hundred entries per call; this
//! continues for as long as the refreshed names are used (see [`Names::claim_refresh`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Names remembered at most; the table is emptied when it grows past this.
const NAMES: usize = 100_000;

/// Directories whose use is tracked at most; the oldest are dropped past this.
const DIRS: usize = 4096;

/// How long a client's listing, or the last refresh, keeps a directory worth refreshing.
const INTEREST: Duration = Duration::from_secs(30);

/// A refresh is repeated only if at least one in this many of its names were looked up.
const USEFUL_SHARE: usize = 8;

/// (directory, name).
type Key = (u64, Vec<u8>);

/// What a client knows of directories' names.
pub(crate) struct Names {
    /// How long a remembered name is used (zero: never remembered).
    ttl: Duration,
    /// (directory, name) → (inode, when it was seen).
    map: Mutex<HashMap<Key, (u64, Instant)>>,
    /// Directory → how its names were last read whole, and used since.
    dirs: Mutex<HashMap<u64, DirUse>>,
}

/// A directory whose names were read whole: by a client's listing or by a refresh.
struct DirUse {
    /// When.
    since: Instant,
    /// Whether by a client's listing, which shows interest in all of it.
    listed: bool,
    /// Entries a refresh read (unknown for a listing, and while a refresh runs).
    entries: usize,
    /// Lookups answered from remembered names in it since.
    hits: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps, each changed by whole inserts and removals: consistent even after a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Names {
    /// Names reused for `ttl` (zero: never).
    pub(crate) fn new(ttl: Duration) -> Self {
        Names { ttl, map: Mutex::new(HashMap::new()), dirs: Mutex::new(HashMap::new()) }
    }

    /// The inode a name was found to be within the lifetime, if any.
    pub(crate) fn get(&self, dir: u64, name: &[u8]) -> Option<u64> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = (dir, name.to_vec());
        let ino = lock(&self.map).get(&key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(ino, _)| *ino)?;
        if let Some(u) = lock(&self.dirs).get_mut(&dir) {
            u.hits += 1;
        }
        Some(ino)
    }

    /// Remembers what names in a directory are, under one lock.
    pub(crate) fn remember(&self, dir: u64, names: Vec<(Vec<u8>, u64)>) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut m = lock(&self.map);
        for (name, ino) in names {
            if m.len() >= NAMES {
                m.clear();
            }
            m.insert((dir, name), (ino, now));
        }
    }

    /// Forgets a name; returns the inode it named, if it was remembered.
    pub(crate) fn forget(&self, dir: u64, name: &[u8]) -> Option<u64> {
        if self.ttl.is_zero() {
            return None;
        }
        lock(&self.map).remove(&(dir, name.to_vec())).map(|(ino, _)| ino)
    }

    /// A client started listing a directory.
    pub(crate) fn listed(&self, dir: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut d = lock(&self.dirs);
        if d.len() >= DIRS && !d.contains_key(&dir) {
            d.retain(|_, u| u.since.elapsed() < INTEREST);
            if d.len() >= DIRS
                && let Some(oldest) = d.iter().min_by_key(|(_, u)| u.since).map(|(k, _)| *k)
            {
                d.remove(&oldest);
            }
        }
        d.insert(dir, DirUse { since: Instant::now(), listed: true, entries: 0, hits: 0 });
    }

    /// Whether a lookup that missed in `dir` should read the directory's names again whole;
    /// if so, the caller does it (and reports with [`Names::refreshed`]) and nobody else will
    /// for the next lifetime.
    ///
    /// Yes when the names last read whole have expired, within [`INTEREST`] of that reading,
    /// and it was a client's listing or a refresh at least an [`USEFUL_SHARE`]th of whose names
    /// were looked up again: a client going through the directory, not one name now and then.
    /// A miss while those names are still fresh is a name that was not there, and asks the
    /// server alone.
    pub(crate) fn claim_refresh(&self, dir: u64) -> bool {
        let mut d = lock(&self.dirs);
        let Some(u) = d.get_mut(&dir) else { return false };
        let age = u.since.elapsed();
        if age < self.ttl || age >= INTEREST || !(u.listed || u.hits.saturating_mul(USEFUL_SHARE) >= u.entries) {
            return false;
        }
        *u = DirUse { since: Instant::now(), listed: false, entries: usize::MAX, hits: 0 };
        true
    }

    /// A refresh read `entries` names of `dir`.
    pub(crate) fn refreshed(&self, dir: u64, entries: usize) {
        if let Some(u) = lock(&self.dirs).get_mut(&dir) {
            u.entries = entries;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ttl_ms: u64) -> Names {
        Names::new(Duration::from_millis(ttl_ms))
    }

    #[test]
    fn names_expire_after_the_lifetime_and_are_forgotten_on_request() {
        let n = names(40);
        n.remember(10, vec![(b"a".to_vec(), 100), (b"b".to_vec(), 101)]);
        assert_eq!(n.get(10, b"a"), Some(100));
        assert_eq!(n.get(11, b"a"), None, "another directory");
        assert_eq!(n.forget(10, b"a"), Some(100));
        assert_eq!(n.get(10, b"a"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(n.get(10, b"b"), None, "expired");
        let never = names(0);
        never.remember(10, vec![(b"a".to_vec(), 100)]);
        assert_eq!(never.get(10, b"a"), None);
        never.listed(10);
        assert!(!never.claim_refresh(10));
    }

    #[test]
    fn a_listed_directory_is_refreshed_once_its_names_expire_and_only_by_one_caller() {
        let n = names(30);
        assert!(!n.claim_refresh(10), "never listed");
        n.listed(10);
        assert!(!n.claim_refresh(10), "a miss among fresh names is a new name");
        std::thread::sleep(Duration::from_millis(40));
        assert!(n.claim_refresh(10));
        assert!(!n.claim_refresh(10), "claimed already");
        n.refreshed(10, 16);
        // Two of sixteen names used: worth refreshing again once they expire.
        n.remember(10, (0..16u64).map(|i| (format!("f{i}").into_bytes(), i)).collect());
        assert!(n.get(10, b"f1").is_some() && n.get(10, b"f2").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(n.claim_refresh(10));
        n.refreshed(10, 16);
        // One of sixteen: a name now and then; single lookups are cheaper.
        n.remember(10, (0..16u64).map(|i| (format!("f{i}").into_bytes(), i)).collect());
        assert!(n.get(10, b"f3").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!n.claim_refresh(10));
    }
}
