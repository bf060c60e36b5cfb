//! Client sessions: one per mount, kept alive by heartbeats. A session that stops beating
//! loses its open files and locks, so a dead client never pins data or blocks others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use strata_meta::Timespec;

/// What the server knows of one client session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Session id.
    pub id: u64,
    /// Volume id it mounted.
    pub volume: u32,
    /// Volume name.
    pub volume_name: String,
    /// Client description (host and mount point).
    pub client: String,
    /// When it registered.
    pub since: Timespec,
    /// Last heartbeat or call.
    pub last_seen: Instant,
}

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<u64, Session>>,
}

impl Sessions {
    /// Registers (or re-registers) a session.
    pub fn insert(&self, s: Session) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(s.id, s);
        }
    }

    /// Marks a session alive; `false` if it is unknown.
    pub fn touch(&self, id: u64) -> bool {
        self.map.lock().ok().and_then(|mut m| m.get_mut(&id).map(|s| s.last_seen = Instant::now())).is_some()
    }

    /// Whether a session is known.
    pub fn contains(&self, id: u64) -> bool {
        self.map.lock().map(|m| m.contains_key(&id)).unwrap_or(false)
    }

    /// Removes a session.
    pub fn remove(&self, id: u64) -> Option<Session> {
        self.map.lock().ok()?.remove(&id)
    }

    /// Sessions silent for longer than `timeout`, removed from the table.
    pub fn expire(&self, timeout: std::time::Duration) -> Vec<Session> {
        let Ok(mut m) = self.map.lock() else { return Vec::new() };
        let dead: Vec<u64> = m.values().filter(|s| s.last_seen.elapsed() > timeout).map(|s| s.id).collect();
        dead.into_iter().filter_map(|id| m.remove(&id)).collect()
    }

    /// A snapshot of all sessions.
    pub fn list(&self) -> Vec<Session> {
        let mut v: Vec<Session> = self.map.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        v.sort_by_key(|s| s.id);
        v
    }
}
