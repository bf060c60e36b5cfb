//! Client sessions: one per mount, kept alive by heartbeats. A session that stops beating loses
//! its open files and locks, so a dead client never pins data or blocks others.
//!
//! With local state the table lives in this process. With shared state each session is a
//! record (`S id`) holding its last heartbeat as wall-clock time, so any server may expire a
//! session that has been silent towards *all* servers, and a client that fails over to another
//! server keeps its session, opens and locks. Servers sharing state therefore need clocks that
//! agree to well within the session timeout (NTP does).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::codec::{dec, enc};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::types::{Ino, Timespec};

/// A shared session's heartbeat time is written at most this often by one server: a call
/// within this interval of the last write needs no database round trip. Session timeouts are
/// many seconds, so the stored time is never staler than a small fraction of one.
const TOUCH_EVERY: Duration = Duration::from_millis(500);

pub use crate::types::SessionInfo;

fn poisoned() -> MetaError {
    MetaError::Engine("session table poisoned".into())
}

fn load(t: &mut dyn KvTxn, id: u64) -> Result<Option<SessionInfo>> {
    t.get(&keys::session(id))?.map(|v| decode(&v)).transpose()
}

/// A stored session, in this version's form or one before it.
fn decode(v: &[u8]) -> Result<SessionInfo> {
    dec::<SessionInfo>(v).or_else(|e| {
        dec::<crate::types::SessionInfoV2>(v)
            .map(SessionInfo::from)
            .or_else(|_| dec::<crate::types::SessionInfoV1>(v).map(SessionInfo::from))
            .map_err(|_| e)
    })
}

fn stale(s: &SessionInfo, now: Timespec, timeout: Duration) -> bool {
    let age_ns = (i128::from(now.sec) - i128::from(s.last_seen.sec)) * 1_000_000_000 + i128::from(now.nsec)
        - i128::from(s.last_seen.nsec);
    age_ns > timeout.as_nanos() as i128
}

impl Meta {
    /// Registers (or re-registers) a session. A session unknown so far that names open inodes
    /// (a client coming back after its server restarted or expired it) has them recorded as
    /// open again, in the same step. Returns whether the session was already known.
    pub fn register_session(&self, s: SessionInfo, reopened: &[Ino]) -> Result<bool> {
        if !self.is_shared() {
            let known = self.local_sessions.lock().map_err(|_| poisoned())?.contains_key(&s.id);
            if !known {
                for ino in reopened {
                    self.note_open(s.id, *ino)?;
                }
            }
            self.local_sessions.lock().map_err(|_| poisoned())?.insert(s.id, (s, Instant::now()));
            return Ok(known);
        }
        let id = s.id;
        if self.allows_unrecorded() {
            return self.register_announcing(s, reopened);
        }
        // Kept: it may record opens (see `Meta::open`).
        let known = self.write_kept(|t| {
            let known = load(t, id)?.is_some();
            if !known {
                for ino in reopened {
                    crate::open::add_open(t, id, *ino)?;
                }
            }
            t.put(&keys::session(id), &enc(&s)?)?;
            Ok(known)
        })?;
        if !known {
            for ino in reopened {
                self.mirror_open(id, *ino);
            }
        }
        self.note_touched(id);
        Ok(known)
    }

    /// [`Meta::register_session`] with unrecorded opens: a session registering here, new or
    /// known (a failover, a restart of its server, a move back), has every open it names
    /// recorded, at least as often as it names it and as often as this process holds it
    /// unrecorded (one too many keeps a file until the session ends; one too few could lose
    /// it), and the server it used before hears that it moved.
    fn register_announcing(&self, s: SessionInfo, reopened: &[Ino]) -> Result<bool> {
        let id = s.id;
        let mut named: HashMap<Ino, u32> = HashMap::new();
        for ino in reopened {
            *named.entry(*ino).or_insert(0) += 1;
        }
        // Held throughout when there is something to record: an open of this session here
        // waits for the records (a session registering has no call here until it is done).
        let mut table = self.opens.lock().map_err(|_| poisoned())?;
        table.moved_away.remove(&id);
        let here: HashMap<Ino, u32> =
            table.unrecorded.iter().filter_map(|(ino, m)| m.get(&id).map(|n| (*ino, *n))).collect();
        let mut table = if here.is_empty() && named.is_empty() {
            drop(table);
            None
        } else {
            Some(table)
        };
        let (known, counts) = self.write_kept(|t| {
            t.notify(&crate::open::moved_note(&s.server, id));
            let known = load(t, id)?.is_some();
            let mut counts: HashMap<Ino, u32> = HashMap::new();
            let inos: std::collections::HashSet<Ino> = named.keys().chain(here.keys()).copied().collect();
            for ino in inos {
                let have = crate::open::open_count(t, ino, id)?;
                let want = named.get(&ino).copied().unwrap_or(0).max(have + here.get(&ino).copied().unwrap_or(0));
                if want != have {
                    crate::open::set_open_count(t, ino, id, want)?;
                }
                if want > 0 {
                    counts.insert(ino, want);
                }
            }
            t.put(&keys::session(id), &enc(&s)?)?;
            Ok((known, counts))
        })?;
        // What this process mirrors of the session is what is recorded now.
        let mut check = Vec::new();
        let mut table = match table.take() {
            Some(t) => t,
            None => self.opens.lock().map_err(|_| poisoned())?,
        };
        for ino in here.keys() {
            if let Some(m) = table.unrecorded.get_mut(ino) {
                m.remove(&id);
                if m.is_empty() {
                    table.unrecorded.remove(ino);
                    if table.unlinked_open.remove(ino) {
                        check.push(*ino);
                    }
                }
            }
        }
        table.by_session.insert(id, counts);
        drop(table);
        for ino in check {
            // Its closes go through the records now; the reaper looks again.
            self.doom(ino);
        }
        self.note_touched(id);
        Ok(known)
    }

    fn note_touched(&self, id: u64) {
        if let Ok(mut m) = self.touched.lock() {
            m.insert(id, Instant::now());
        }
    }

    /// Marks a session alive (heard from through `server`); `false` if it is unknown.
    pub fn touch_session(&self, id: u64, server: &str) -> Result<bool> {
        if !self.is_shared() {
            let mut m = self.local_sessions.lock().map_err(|_| poisoned())?;
            return Ok(match m.get_mut(&id) {
                Some((s, at)) => {
                    *at = Instant::now();
                    s.last_seen = Timespec::now();
                    true
                }
                None => false,
            });
        }
        let last = self.touched.lock().ok().and_then(|m| m.get(&id).copied());
        let unrecorded = self.allows_unrecorded();
        if unrecorded && self.opens.lock().map(|o| o.moved_away.contains(&id)).unwrap_or(true) {
            // Another server took it over since: it announces its opens here again.
            if let Ok(mut m) = self.touched.lock() {
                m.remove(&id);
            }
            return Ok(false);
        }
        if last.is_none() && unrecorded {
            // First word from this session to this process (a failover, or this server
            // restarted): its opens here may be unrecorded ones of a server that is gone, so
            // it is taken as unknown, and registers again announcing what it has open.
            return Ok(false);
        }
        if last.is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
            return Ok(true);
        }
        let alive = self.write(false, |t| {
            let Some(mut s) = load(t, id)? else { return Ok(false) };
            if s.server != server && unrecorded {
                // It went through another server since (whose moved note this process may
                // not have heard): it must announce its opens here again.
                return Ok(false);
            }
            s.last_seen = Timespec::now();
            if s.server != server {
                s.server = server.to_string();
            }
            t.put(&keys::session(id), &enc(&s)?)?;
            Ok(true)
        })?;
        if alive {
            self.note_touched(id);
        } else if let Ok(mut m) = self.touched.lock() {
            m.remove(&id);
        }
        Ok(alive)
    }

    /// The volume a session has mounted; `None` if the session is unknown.
    pub fn session_volume(&self, id: u64) -> Result<Option<u32>> {
        if !self.is_shared() {
            return Ok(self.local_sessions.lock().map_err(|_| poisoned())?.get(&id).map(|(s, _)| s.volume));
        }
        Ok(self.read_latest(|t| load(t, id))?.map(|s| s.volume))
    }

    /// The peer caches of volume `vol`'s sessions heard from within `fresh`, sorted and
    /// without repeats (see `SessionInfo::peer`).
    pub fn volume_peers(&self, vol: u32, fresh: Duration) -> Result<Vec<String>> {
        let now = Timespec::now();
        let mut v: Vec<String> = self
            .sessions()?
            .into_iter()
            .filter(|s| s.volume == vol && !s.peer.is_empty() && !stale(s, now, fresh))
            .map(|s| s.peer)
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// All sessions, by id.
    pub fn sessions(&self) -> Result<Vec<SessionInfo>> {
        let mut v: Vec<SessionInfo> = if self.is_shared() {
            self.read(|t| {
                t.scan(keys::SESSION_PREFIX, &prefix_end(keys::SESSION_PREFIX), usize::MAX)?
                    .iter()
                    .map(|(_, v)| decode(v))
                    .collect()
            })?
        } else {
            self.local_sessions.lock().map_err(|_| poisoned())?.values().map(|(s, _)| s.clone()).collect()
        };
        v.sort_by_key(|s| s.id);
        Ok(v)
    }

    /// Ends a session (it unmounted): its locks and open files are released. Returns what was
    /// known of it.
    pub fn end_session(&self, id: u64) -> Result<Option<SessionInfo>> {
        if !self.is_shared() {
            let known = self.local_sessions.lock().map_err(|_| poisoned())?.remove(&id).map(|(s, _)| s);
            self.lock_release_session(id)?;
            self.close_session(id)?;
            return Ok(known);
        }
        self.end_shared(id, None)
    }

    /// Ends every session silent for longer than `timeout` (towards every server sharing the
    /// state) and returns them.
    pub fn expire_sessions(&self, timeout: Duration) -> Result<Vec<SessionInfo>> {
        if !self.is_shared() {
            let dead: Vec<SessionInfo> = {
                let mut m = self.local_sessions.lock().map_err(|_| poisoned())?;
                let ids: Vec<u64> = m.iter().filter(|(_, (_, at))| at.elapsed() > timeout).map(|(id, _)| *id).collect();
                ids.into_iter().filter_map(|id| m.remove(&id).map(|(s, _)| s)).collect()
            };
            for s in &dead {
                self.lock_release_session(s.id)?;
                self.close_session(s.id)?;
            }
            return Ok(dead);
        }
        let now = Timespec::now();
        let candidates: Vec<u64> =
            self.sessions()?.into_iter().filter(|s| stale(s, now, timeout)).map(|s| s.id).collect();
        let mut out = Vec::new();
        for id in candidates {
            // Re-checked inside the ending transaction: the session may have beaten meanwhile,
            // and when several servers expire at once only one of them ends it.
            if let Some(s) = self.end_shared(id, Some(timeout))? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Ends a shared session (only if still stale past `timeout`, when given): one transaction
    /// removes its record, locks and open records; unlinked files it held open last are then
    /// destroyed one transaction each.
    fn end_shared(&self, id: u64, timeout: Option<Duration>) -> Result<Option<SessionInfo>> {
        let (known, inos) = self.write(false, |t| {
            let s = load(t, id)?;
            if let Some(timeout) = timeout
                && s.as_ref().is_none_or(|s| !stale(s, Timespec::now(), timeout))
            {
                return Ok((None, Vec::new()));
            }
            if s.is_some() {
                t.delete(&keys::session(id))?;
            }
            crate::locks::release_session_in(t, id)?;
            let inos = crate::open::drop_session_opens(t, id)?;
            Ok((s, inos))
        })?;
        self.forget_session_opens(id);
        if let Ok(mut m) = self.touched.lock() {
            m.remove(&id);
        }
        for ino in inos {
            self.reap_if_unlinked(ino)?;
        }
        Ok(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// A record as servers before client versions wrote it.
    #[derive(Serialize)]
    struct Old {
        id: u64,
        volume: u32,
        volume_name: String,
        client: String,
        since: Timespec,
        last_seen: Timespec,
        server: String,
    }

    #[test]
    fn sessions_stored_before_versions_still_decode() {
        let t = Timespec { sec: 5, nsec: 6 };
        let old = Old {
            id: 7,
            volume: 3,
            volume_name: "v".into(),
            client: "host:/mnt".into(),
            since: t,
            last_seen: t,
            server: "s:1".into(),
        };
        let s = decode(&enc(&old).unwrap()).unwrap();
        assert_eq!((s.id, s.client.as_str(), s.version.as_str()), (7, "host:/mnt", ""));
        let v2 = SessionInfo { version: "0.1.0".into(), ..s };
        assert_eq!(decode(&enc(&v2).unwrap()).unwrap(), v2);
        let new = SessionInfo { peer: "10.0.0.1:7430".into(), ..v2.clone() };
        assert_eq!(decode(&enc(&new).unwrap()).unwrap(), new);
    }

    #[test]
    fn sessions_stored_before_peer_caches_still_decode() {
        let t = Timespec { sec: 5, nsec: 6 };
        #[derive(Serialize)]
        struct V2 {
            old: Old,
            version: String,
        }
        let old = Old {
            id: 8,
            volume: 3,
            volume_name: "v".into(),
            client: "host:/mnt".into(),
            since: t,
            last_seen: t,
            server: "s:1".into(),
        };
        let s = decode(&enc(&V2 { old, version: "0.2.0".into() }).unwrap()).unwrap();
        assert_eq!((s.id, s.version.as_str(), s.peer.as_str()), (8, "0.2.0", ""));
    }
}
