//! One VFS attachment per (token, volume), opened on first use and kept while used: each
//! request acts through the session of exactly the token that signed it. Attaching,
//! heartbeats and detaching are the VFS's own (`Vfs::attach`, `Vfs::detach`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_vfs::{Vfs, VfsConfig, VfsError, VolumeInfo};

use crate::auth::Token;

/// How the gateway reaches the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `HOST:PORT`, or several of one cluster separated by commas.
    pub server: String,
    /// Client tunables of each attachment (its `retry_timeout` is how long a call waits for
    /// an unreachable server before failing).
    pub vfs: VfsConfig,
    /// Name the sessions are registered under (`strata status` shows it).
    pub client_name: String,
    /// Extra buckets: bucket name -> what it serves (`VOLUME@SNAPSHOT` or
    /// `dv:NAME[@VERSION]`, read-only), for views whose names S3 does not allow as bucket names.
    pub aliases: HashMap<String, String>,
}

struct Attached {
    vfs: Arc<Vfs>,
    last_used: Instant,
}

/// The open attachments.
pub struct Attachments {
    cfg: ServerConfig,
    // Held across a mount so two first requests for one volume do not open two sessions.
    map: tokio::sync::Mutex<HashMap<(String, String), Attached>>,
}

impl Attachments {
    /// No attachments yet.
    pub fn new(cfg: ServerConfig) -> Self {
        Attachments { cfg, map: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// The attachment of `volume` for `token`, mounting it on first use. A volume outside the
    /// token's scope fails as the server answers it: not found.
    pub async fn get(&self, token: &Token, volume: &str) -> Result<Arc<Vfs>, VfsError> {
        let key = (token.id.clone(), volume.to_string());
        let mut map = self.map.lock().await;
        if let Some(a) = map.get_mut(&key) {
            a.last_used = Instant::now();
            return Ok(a.vfs.clone());
        }
        let name = format!("{} (token {})", self.cfg.client_name, token.id);
        let target = self.cfg.aliases.get(volume).map(String::as_str).unwrap_or(volume);
        let vfs = Vfs::attach(&self.cfg.server, &token.secret, target, &name, self.cfg.vfs.clone()).await?;
        tracing::info!(volume, token = %token.id, "attached volume");
        map.insert(key, Attached { vfs: vfs.clone(), last_used: Instant::now() });
        Ok(vfs)
    }

    /// The volumes `token` may see, as the server lists them for it.
    pub async fn list_volumes(&self, token: &Token) -> Result<Vec<VolumeInfo>, VfsError> {
        let mut out = strata_vfs::client::list_volumes(&self.cfg.server, &token.secret).await?;
        // Aliased views the token may attach (attaching checks it), under their bucket names.
        for alias in self.cfg.aliases.keys() {
            if let Ok(vfs) = self.get(token, alias).await {
                out.push(VolumeInfo { name: alias.clone(), ..vfs.volume().clone() });
            }
        }
        Ok(out)
    }

    /// Creates volume `name` in `token`'s scope (CreateBucket), through the server's
    /// provisioning path and policies.
    pub async fn create_volume(&self, token: &Token, name: &str, capacity: u64) -> Result<VolumeInfo, VfsError> {
        strata_vfs::client::create_volume(&self.cfg.server, &token.secret, name, capacity, true).await
    }

    /// Deletes volume `name` (DeleteBucket): ends this gateway's own idle sessions on it first,
    /// since the server refuses to delete a mounted volume; a session of another client (or a
    /// request of this gateway still reading it) keeps it, and the server says so.
    pub async fn delete_volume(&self, token: &Token, name: &str) -> Result<(), VfsError> {
        let mine: Vec<Attached> = {
            let mut map = self.map.lock().await;
            let keys: Vec<(String, String)> = map
                .iter()
                .filter(|((_, v), a)| v == name && Arc::strong_count(&a.vfs) == 1)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for a in mine {
            if let Err(e) = a.vfs.detach().await {
                tracing::warn!(volume = name, error = %e, "detaching before a bucket deletion failed");
            }
        }
        strata_vfs::client::delete_volume(&self.cfg.server, &token.secret, name).await
    }

    /// Ends the sessions unused for `idle`: an attached volume counts as mounted, which keeps
    /// it from being deleted, and each session costs the server a heartbeat.
    pub async fn detach_idle(&self, idle: Duration) {
        let idle_ones: Vec<((String, String), Attached)> = {
            let mut map = self.map.lock().await;
            // Only the map holds an attachment no request is using (requests and read streams
            // keep a clone while they run, and take one only under this lock).
            let keys: Vec<(String, String)> = map
                .iter()
                .filter(|(_, a)| a.last_used.elapsed() >= idle && Arc::strong_count(&a.vfs) == 1)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k).map(|a| (k, a))).collect()
        };
        for ((token, volume), a) in idle_ones {
            match a.vfs.detach().await {
                Ok(()) => tracing::info!(volume, token, "detached idle volume"),
                Err(e) => tracing::warn!(volume, token, error = %e, "detaching an idle volume failed"),
            }
        }
    }

    /// Detaches idle volumes in the background (every quarter of `idle`, at least every 30 s)
    /// for as long as the attachments exist.
    pub fn spawn_reaper(self: &Arc<Self>, idle: Duration) {
        let me = Arc::downgrade(self);
        let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(att) = me.upgrade() else { return };
                att.detach_idle(idle).await;
            }
        });
    }

    /// Commits buffered writes and ends every session (at shutdown), all at once and for at
    /// most `limit`: with the server gone nothing can be committed, and a stop must not wait
    /// for each session's retries in turn.
    pub async fn close_all(&self, limit: Duration) {
        let all: Vec<((String, String), Attached)> = self.map.lock().await.drain().collect();
        let detach = futures::future::join_all(all.into_iter().map(|((token, volume), a)| async move {
            match a.vfs.detach().await {
                Ok(()) => tracing::info!(volume, token, "detached volume"),
                Err(e) => tracing::error!(volume, token, error = %e, "could not commit at detach"),
            }
        }));
        if tokio::time::timeout(limit, detach).await.is_err() {
            tracing::error!("volumes not detached within {limit:?} (is the server reachable?); stopping anyway");
        }
    }
}
