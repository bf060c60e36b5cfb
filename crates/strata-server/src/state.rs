//! State shared by the services and background tasks of one server process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use strata_blocks::BlockStore;
use strata_meta::{Meta, Timespec};

use crate::auth::Auth;

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
}

impl State {
    /// Shared state over a namespace.
    pub fn new(meta: Arc<Meta>, data_dir: PathBuf, default_store: String, server_id: String) -> Self {
        State {
            auth: Auth::new(meta.clone()),
            meta,
            server_id,
            started: Timespec::now(),
            data_dir,
            default_store,
            stores: Mutex::new(HashMap::new()),
            volume_scopes: std::sync::RwLock::new(HashMap::new()),
        }
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

    /// Drops a deleted volume from the caches.
    pub fn forget_volume(&self, id: u32) {
        if let Ok(mut m) = self.volume_scopes.write() {
            m.remove(&id);
        }
    }

    /// The block store at `url`, opened once.
    pub fn store(&self, url: &str) -> strata_blocks::Result<BlockStore> {
        if let Ok(m) = self.stores.lock()
            && let Some(s) = m.get(url)
        {
            return Ok(s.clone());
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
    pub async fn sessions(&self) -> strata_meta::Result<Vec<crate::sessions::Session>> {
        let meta = self.meta.clone();
        tokio::task::spawn_blocking(move || meta.sessions())
            .await
            .map_err(|e| strata_meta::MetaError::Engine(format!("session listing task failed: {e}")))?
    }
}
