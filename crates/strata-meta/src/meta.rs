//! The metadata service's handle on its store: the engine, where the state of live clients is
//! kept, transactions, id counters, and the schema version check at open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codec::{dec, enc};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvEngine, KvTxn};
use crate::local::{LocalSessions, LockTable, OpenTable};
use crate::types::Ino;

const IDS_PER_BATCH: u64 = 1024;

/// The version of the namespace's records this build writes (`!schema`); a store that says
/// more was written by a newer Strata and is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

/// Checks a store's recorded schema version against [`SCHEMA_VERSION`].
fn check_schema(v: &[u8]) -> Result<()> {
    let found: u32 = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| MetaError::Corrupt(format!("schema version {:?}", String::from_utf8_lossy(v))))?;
    if found > SCHEMA_VERSION {
        return Err(MetaError::NewerStore { what: "schema", found, supported: SCHEMA_VERSION });
    }
    Ok(())
}

/// Where the state of live clients (open files, sessions, advisory locks) is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateMode {
    /// In this process's memory: fastest, correct while one server uses the store.
    Local,
    /// As records in the key-value engine: every server on the store sees the same opens,
    /// sessions and locks (several `strata server` processes on one PostgreSQL database).
    Shared,
}

/// The metadata service's view of the namespace.
pub struct Meta {
    pub(crate) kv: Arc<dyn KvEngine>,
    pub(crate) mode: StateMode,
    /// Who has what open: local state's only record; with shared state, this process's own
    /// sessions' opens as they also stand in the engine, to record them again after the
    /// engine lost its last commits (see `Meta::after_engine_restart`).
    pub(crate) opens: Mutex<OpenTable>,
    /// Local state only.
    pub(crate) local_sessions: Mutex<LocalSessions>,
    /// Local state only.
    pub(crate) local_locks: Mutex<LockTable>,
    /// Shared state only: when this process last stored each session's heartbeat.
    pub(crate) touched: Mutex<HashMap<u64, std::time::Instant>>,
    pub(crate) inos: Mutex<(u64, u64)>,
    /// Local state only: whether unlinks leave destruction to [`Meta::reap_doomed`].
    pub(crate) defer_destroy: std::sync::atomic::AtomicBool,
    /// Unlinked inodes open nowhere, waiting for [`Meta::reap_doomed`], with when they were
    /// doomed.
    pub(crate) doomed: Mutex<Vec<(Ino, std::time::Instant)>>,
    /// Shared state: whether opens may go unrecorded while the relay is heard (`open.rs`).
    pub(crate) unrecorded_opens: std::sync::atomic::AtomicBool,
    /// Shared state: whether this process hears every server's notes now.
    pub(crate) relay_heard: std::sync::atomic::AtomicBool,
    /// Shared state with unrecorded opens: how long destruction waits after a doom note.
    pub(crate) open_grace_ms: std::sync::atomic::AtomicU64,
    /// Shared state: until when this process is known to be the only server of the store
    /// (`Meta::refresh_sole`).
    pub(crate) sole_until: Mutex<Option<std::time::Instant>>,
    /// Shared state: the engine restarts this process has handled ([`KvEngine::restarts`]).
    pub(crate) restarts_handled: std::sync::atomic::AtomicU64,
    /// Shared state: until when, after an engine restart, destruction waits for the reaper.
    pub(crate) restart_defer_until: Mutex<Option<std::time::Instant>>,
    /// Local state only: whether the store may hold snapshots (until one is made, writes skip
    /// versioning without asking the store).
    pub(crate) snapshots_seen: std::sync::atomic::AtomicBool,
    /// Saved versions a snapshot's deletion handles per transaction.
    pub(crate) snapshot_delete_batch: std::sync::atomic::AtomicUsize,
    /// Microseconds between a snapshot deletion's transactions.
    pub(crate) snapshot_delete_pause: std::sync::atomic::AtomicU64,
}

impl Meta {
    /// The namespace over an engine, with the state of live clients in this process (one
    /// server per store).
    pub fn new(kv: Arc<dyn KvEngine>) -> Result<Self> {
        Self::with_mode(kv, StateMode::Local)
    }

    /// The namespace over an engine, keeping the state of live clients as `mode` says.
    pub fn with_mode(kv: Arc<dyn KvEngine>, mode: StateMode) -> Result<Self> {
        let restarts = kv.restarts();
        let m = Meta {
            kv,
            mode,
            opens: Mutex::new(OpenTable::default()),
            local_sessions: Mutex::new(HashMap::new()),
            local_locks: Mutex::new(LockTable::default()),
            touched: Mutex::new(HashMap::new()),
            inos: Mutex::new((0, 0)),
            defer_destroy: std::sync::atomic::AtomicBool::new(false),
            doomed: Mutex::new(Vec::new()),
            unrecorded_opens: std::sync::atomic::AtomicBool::new(false),
            relay_heard: std::sync::atomic::AtomicBool::new(false),
            open_grace_ms: std::sync::atomic::AtomicU64::new(crate::open::OPEN_GRACE.as_millis() as u64),
            sole_until: Mutex::new(None),
            restarts_handled: std::sync::atomic::AtomicU64::new(restarts),
            restart_defer_until: Mutex::new(None),
            snapshots_seen: std::sync::atomic::AtomicBool::new(true),
            snapshot_delete_batch: std::sync::atomic::AtomicUsize::new(crate::snapshots::DEFAULT_SNAPSHOT_DELETE_BATCH),
            snapshot_delete_pause: std::sync::atomic::AtomicU64::new(0),
        };
        m.write(false, |t| {
            if t.get(crate::dump::LOADING)?.is_some() {
                return Err(MetaError::Invalid(
                    "a `strata load` into this store did not finish; run it again (it starts over)".into(),
                ));
            }
            Ok(())
        })?;
        m.write(false, |t| match t.get(keys::SCHEMA)? {
            None => t.put(keys::SCHEMA, SCHEMA_VERSION.to_string().as_bytes()),
            Some(v) => check_schema(&v),
        })?;
        let any = m.read(|t| Ok(t.get(keys::SNAPSHOT_COUNT)?.map(|v| dec::<u64>(&v)).transpose()?.unwrap_or(0) > 0))?;
        m.snapshots_seen.store(any, std::sync::atomic::Ordering::Release);
        Ok(m)
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        self.kv.name()
    }

    /// Where the state of live clients is kept.
    pub fn mode(&self) -> StateMode {
        self.mode
    }

    /// Whether the state of live clients is shared through the engine.
    pub fn is_shared(&self) -> bool {
        self.mode == StateMode::Shared
    }

    /// Whether transactions may skip versioning: local state, and no snapshot made yet.
    fn no_snapshots(&self) -> bool {
        self.mode == StateMode::Local && !self.snapshots_seen.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn read<R>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<R>) -> Result<R> {
        let mut out = None;
        self.kv.read(&mut |t| {
            out = Some(f(&mut crate::versions::Versioned::new(t, true, false))?);
            Ok(())
        })?;
        out.ok_or_else(|| MetaError::Engine("transaction produced no result".into()))
    }

    /// [`Meta::read`] whose reads need not see one point in time (see [`KvEngine::read_latest`]).
    pub(crate) fn read_latest<R>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<R>) -> Result<R> {
        let mut out = None;
        self.kv.read_latest(&mut |t| {
            out = Some(f(&mut crate::versions::Versioned::new(t, true, false))?);
            Ok(())
        })?;
        out.ok_or_else(|| MetaError::Engine("transaction produced no result".into()))
    }

    pub(crate) fn write<R>(&self, durable: bool, mut f: impl FnMut(&mut dyn KvTxn) -> Result<R>) -> Result<R> {
        let mut out = None;
        let res = self.kv.write(durable, &mut |t| {
            // An attempt starts with nothing staged (see `Meta::doom_at_commit`).
            self.settle_staged_dooms(false);
            // Asked inside the transaction: a snapshot marks the store before its own
            // transaction, so every write ordered after it sees the mark.
            let none = self.no_snapshots();
            out = Some(f(&mut crate::versions::Versioned::new(t, none, true))?);
            Ok(())
        });
        // Pushed even when the transaction failed: its commit may have happened (a connection
        // lost at COMMIT), and a doom of one that did not finds no sustained record.
        self.settle_staged_dooms(true);
        res?;
        out.ok_or_else(|| MetaError::Engine("transaction produced no result".into()))
    }

    /// [`Meta::write`] of client state other servers rely on (see [`KvEngine::write_kept`]).
    pub(crate) fn write_kept<R>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<R>) -> Result<R> {
        let mut out = None;
        let res = self.kv.write_kept(&mut |t| {
            self.settle_staged_dooms(false);
            let none = self.no_snapshots();
            out = Some(f(&mut crate::versions::Versioned::new(t, none, true))?);
            Ok(())
        });
        // Pushed even when the transaction failed: its commit may have happened (a connection
        // lost at COMMIT), and a doom of one that did not finds no sustained record.
        self.settle_staged_dooms(true);
        res?;
        out.ok_or_else(|| MetaError::Engine("transaction produced no result".into()))
    }

    pub(crate) fn bump_counter(&self, name: &str, n: u64) -> Result<u64> {
        self.write(false, |t| {
            let k = keys::counter(name);
            let cur: u64 = match t.get(&k)? {
                Some(v) => dec(&v)?,
                None => 1,
            };
            t.put(&k, &enc(&(cur + n))?)?;
            Ok(cur)
        })
    }

    pub(crate) fn alloc_ino(&self) -> Result<Ino> {
        let mut r = self.inos.lock().map_err(|_| MetaError::Engine("inode allocator poisoned".into()))?;
        if r.0 >= r.1 {
            let first = self.bump_counter("inode", IDS_PER_BATCH)?;
            *r = (first, first + IDS_PER_BATCH);
        }
        let ino = r.0;
        if ino > crate::versions::MAX_LIVE_INO {
            return Err(MetaError::Invalid("out of inode numbers".into()));
        }
        r.0 += 1;
        Ok(ino)
    }

    /// Reserves `n` consecutive slice ids and returns the first.
    pub fn alloc_slice_ids(&self, n: u64) -> Result<u64> {
        self.bump_counter("slice", n.max(1))
    }

    /// Makes every earlier commit durable.
    pub fn sync(&self) -> Result<()> {
        self.write(true, |_| Ok(()))
    }
}
