//! State shared by the services and background tasks of one server process.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_blocks::BlockStore;
use strata_meta::{Meta, Timespec};

use crate::auth::Auth;

/// Most inodes whose volume is remembered (about 40 bytes each).
const INODE_VOLUMES_MAX: usize = 1 << 18;

/// Everything the services share.
pub struct State {
    /// The namespace.
    pub meta: Arc<Meta>,
    /// This server as named in session records (its listen address).
    pub server_id: String,
    /// Token verification.
    pub auth: Auth,
    /// Process start.
    pub started: Timespec,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Block store URL for new volumes.
    pub default_store: String,
    stores: Mutex<HashMap<String, BlockStore>>,
    /// Scope of each volume, for authorizing calls by inode.
    volume_scopes: std::sync::RwLock<HashMap<u32, String>>,
    /// Volume of each inode seen by a call: an inode never moves to another volume and its
    /// number is never reused, so authorizing a call by inode needs no transaction after the
    /// first.
    inode_volumes: std::sync::RwLock<HashMap<u64, u32>>,
    /// Blocks journaled by commits since the last journal flush (see `gc::run`).
    pub journaled_since_flush: std::sync::atomic::AtomicUsize,
    /// Scope and block store of each volume, for serving its blocks.
    volume_blocks: std::sync::RwLock<HashMap<u32, VolumeBlocks>>,
    /// Ids of the block directories served, by store URL.
    store_ids: Mutex<HashMap<String, String>>,
    /// Changes for clients' leases (`Watch`).
    pub changes: Arc<crate::changes::Changes>,
    /// When the collector first found each pending slice collectable: with unrecorded opens
    /// it waits out the open grace before deleting its blocks (see `gc::collect_round`).
    pub pending_seen: Mutex<HashMap<u64, std::time::Instant>>,
    /// When this server's record first reached the metadata store (`presence`).
    pub first_report: Mutex<Option<std::time::Instant>>,
}

/// Who may use a volume's blocks and where they are (neither changes in a volume's life).
#[derive(Clone, Debug)]
pub struct VolumeBlocks {
    /// The volume's scope.
    pub scope: String,
    /// The volume's block store URL.
    pub store: String,
}

pub use strata_blocks::store::STORE_ID_FILE;

impl State {
    /// Shared state over a namespace.
    pub fn new(meta: Arc<Meta>, data_dir: PathBuf, default_store: String, server_id: String) -> Self {
        State {
            auth: Auth::new(meta.clone()),
            meta,
            started: Timespec::now(),
            data_dir,
            default_store,
            stores: Mutex::new(HashMap::new()),
            volume_scopes: std::sync::RwLock::new(HashMap::new()),
            inode_volumes: std::sync::RwLock::new(HashMap::new()),
            journaled_since_flush: std::sync::atomic::AtomicUsize::new(0),
            volume_blocks: std::sync::RwLock::new(HashMap::new()),
            store_ids: Mutex::new(HashMap::new()),
            changes: Arc::new(crate::changes::Changes::new(&server_id)),
            pending_seen: Mutex::new(HashMap::new()),
            first_report: Mutex::new(None),
            server_id,
        }
    }

    /// A volume's scope and block store (cached; a metadata read the first time, so call it
    /// where blocking is allowed).
    pub fn volume_blocks(&self, id: u32) -> strata_meta::Result<VolumeBlocks> {
        if let Some(v) = self.cached_volume_blocks(id) {
            return Ok(v);
        }
        let v = self.meta.volume_by_id(id)?;
        let vb = VolumeBlocks { scope: v.scope, store: v.store };
        if let Ok(mut m) = self.volume_blocks.write() {
            m.insert(id, vb.clone());
        }
        Ok(vb)
    }

    /// A volume's scope and block store if already known (never blocks).
    pub fn cached_volume_blocks(&self, id: u32) -> Option<VolumeBlocks> {
        self.volume_blocks.read().ok().and_then(|m| m.get(&id).cloned())
    }

    /// The block store at `url` if already opened (never blocks).
    pub fn cached_store(&self, url: &str) -> Option<BlockStore> {
        self.stores.lock().ok().and_then(|m| m.get(url).cloned())
    }

    /// The id of the block directory `url` names, created in it at first use; empty for
    /// stores that are not directories. Clients compare it with the file they see at the same
    /// path to tell whether they share the server's directory. Touches the disk the first
    /// time: call it where blocking is allowed.
    pub fn store_id(&self, url: &str) -> std::io::Result<String> {
        let dir = match url.strip_prefix("file://") {
            Some(d) => Path::new(d),
            None if url.starts_with('/') => Path::new(url),
            None => return Ok(String::new()),
        };
        if let Ok(m) = self.store_ids.lock()
            && let Some(id) = m.get(url)
        {
            return Ok(id.clone());
        }
        let id = ensure_store_id(dir)?;
        if let Ok(mut m) = self.store_ids.lock() {
            m.insert(url.to_string(), id.clone());
        }
        Ok(id)
    }

    /// The scope a volume belongs to (cached; volumes never change scope).
    pub fn volume_scope(&self, id: u32) -> strata_meta::Result<String> {
        if let Ok(m) = self.volume_scopes.read()
            && let Some(s) = m.get(&id)
        {
            return Ok(s.clone());
        }
        // Reached from async handlers: a PostgreSQL read must leave the runtime context.
        let scope = crate::auth::off_worker(|| self.meta.volume_by_id(id))?.scope;
        if let Ok(mut m) = self.volume_scopes.write() {
            m.insert(id, scope.clone());
        }
        Ok(scope)
    }

    /// The volume inode `ino` was seen in, if known.
    pub fn cached_inode_volume(&self, ino: u64) -> Option<u32> {
        self.inode_volumes.read().ok()?.get(&ino).copied()
    }

    /// Notes the volume of inode `ino` (the cache starts over past a bound).
    pub fn note_inode_volume(&self, ino: u64, vol: u32) {
        if let Ok(mut m) = self.inode_volumes.write() {
            if m.len() >= INODE_VOLUMES_MAX {
                m.clear();
            }
            m.insert(ino, vol);
        }
    }

    /// Drops a deleted volume from the caches.
    pub fn forget_volume(&self, id: u32) {
        if let Ok(mut m) = self.volume_scopes.write() {
            m.remove(&id);
        }
        if let Ok(mut m) = self.volume_blocks.write() {
            m.remove(&id);
        }
    }

    /// The block store at `url`, opened once.
    pub fn store(&self, url: &str) -> strata_blocks::Result<BlockStore> {
        if let Some(s) = self.cached_store(url) {
            return Ok(s);
        }
        let s = BlockStore::open(url)?;
        if let Ok(mut m) = self.stores.lock() {
            m.insert(url.to_string(), s.clone());
        }
        Ok(s)
    }

    /// Ends a session: its locks and open files are released.
    pub async fn end_session(&self, id: u64) {
        let meta = self.meta.clone();
        match tokio::task::spawn_blocking(move || meta.end_session(id)).await {
            Ok(Ok(Some(s))) => {
                tracing::info!(session = id, volume = %s.volume_name, client = %s.client, "session ended")
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(session = id, error = %e, "releasing the session's locks and open files failed")
            }
            Err(e) => tracing::error!(session = id, error = %e, "session cleanup task failed"),
        }
    }

    /// All sessions (of every server, with shared state), read off the runtime's threads.
    pub async fn sessions(&self) -> strata_meta::Result<Vec<strata_meta::sessions::SessionInfo>> {
        let meta = self.meta.clone();
        tokio::task::spawn_blocking(move || meta.sessions())
            .await
            .map_err(|e| strata_meta::MetaError::Engine(format!("session listing task failed: {e}")))?
    }
}

/// Reads the id file of a block directory, or creates it with a new random id.
fn ensure_store_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(STORE_ID_FILE);
    let read = |p: &Path| -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(p) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    if let Some(id) = read(&path)? {
        return Ok(id);
    }
    std::fs::create_dir_all(dir)?;
    let id = format!("{:032x}", rand::random::<u128>());
    // Written aside and linked into place: a reader never sees a partial id, and of two
    // servers sharing the directory the first link wins (link never replaces).
    let tmp = dir.join(format!("{STORE_ID_FILE}.{}.tmp", std::process::id()));
    let linked = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.ok_or_else(|| std::io::Error::other(format!("{} is empty", path.display())))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ensure_store_id(dir.path()).expect("create");
        assert_eq!(a.len(), 32);
        assert_eq!(ensure_store_id(dir.path()).expect("read"), a);
        assert_eq!(std::fs::read_to_string(dir.path().join(STORE_ID_FILE)).expect("file").trim(), a);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(ensure_store_id(other.path()).expect("create"), a, "each directory its own id");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(left.len(), 1, "no staging file left behind");
    }
}
