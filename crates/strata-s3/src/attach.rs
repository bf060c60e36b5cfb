//! One VFS attachment per (token, volume), opened on first use and kept while used: each
//! request acts through the session of exactly the token that signed it. Attaching,
//! heartbeats and detaching are the VFS's own (`Vfs::attach`, `Vfs::detach`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_vfs::{Vfs, VfsConfig, VfsError, VolumeInfo};

use crate::auth::Token;
use crate::error::GatewayError;

async fn detach_quietly(vfs: &Vfs, volume: &str) {
    if let Err(e) = vfs.detach().await {
        tracing::warn!(volume, error = %e, "detaching before a bucket deletion failed");
    }
}

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

    /// Whether `bucket` is a view given with `--bucket` (a snapshot or data volume, read-only).
    pub fn is_alias(&self, bucket: &str) -> bool {
        self.cfg.aliases.contains_key(bucket)
    }

    /// Creates volume `name` in `token`'s scope (CreateBucket), through the server's
    /// provisioning path and policies.
    pub async fn create_volume(&self, token: &Token, name: &str, capacity: u64) -> Result<VolumeInfo, VfsError> {
        strata_vfs::client::create_volume(&self.cfg.server, &token.secret, name, capacity, true).await
    }

    /// Deletes volume `name` (DeleteBucket) if `check` passes on it (the bucket is empty).
    /// The check, the end of this gateway's own sessions on the volume (the server refuses to
    /// delete a mounted volume) and the deletion happen under the attachments' lock, so no
    /// request of this gateway can write to the volume between the check and the deletion;
    /// any other client's session keeps the volume, and the server says so.
    pub async fn delete_volume<F, Fut>(&self, token: &Token, name: &str, check: F) -> Result<(), GatewayError>
    where
        F: FnOnce(Arc<Vfs>) -> Fut,
        Fut: std::future::Future<Output = Result<(), GatewayError>>,
    {
        let mut map = self.map.lock().await;
        let keys: Vec<(String, String)> = map.keys().filter(|(_, v)| v == name).cloned().collect();
        if keys.iter().any(|k| map.get(k).is_some_and(|a| Arc::strong_count(&a.vfs) > 1)) {
            return Err(GatewayError::Conflict(format!("bucket {name:?} is being read or written; try again")));
        }
        let own = (token.id.clone(), name.to_string());
        let (vfs, fresh) = match map.get(&own) {
            Some(a) => (a.vfs.clone(), false),
            None => {
                let client = format!("{} (token {})", self.cfg.client_name, token.id);
                let vfs = Vfs::attach(&self.cfg.server, &token.secret, name, &client, self.cfg.vfs.clone())
                    .await
                    .map_err(|e| crate::error::bucket_error(name, e))?;
                (vfs, true)
            }
        };
        let checked = check(vfs.clone()).await;
        let mut ending: Vec<Arc<Vfs>> = keys.iter().filter_map(|k| map.remove(k)).map(|a| a.vfs).collect();
        if fresh {
            ending.push(vfs);
        } else {
            drop(vfs);
        }
        if checked.is_err() {
            // Nothing is deleted: what was attached stays so.
            for (k, v) in keys.into_iter().zip(ending.iter().cloned()) {
                map.insert(k, Attached { vfs: v, last_used: Instant::now() });
            }
            if fresh && let Some(v) = ending.last() {
                detach_quietly(v, name).await;
            }
            return checked;
        }
        for v in &ending {
            detach_quietly(v, name).await;
        }
        strata_vfs::client::delete_volume(&self.cfg.server, &token.secret, name).await.map_err(|e| match e.errno() {
            // The server's conflict for a volume still mounted somewhere.
            libc::EEXIST | libc::EBUSY => GatewayError::Conflict(format!("cannot delete bucket {name:?}: {e}")),
            libc::EPERM | libc::EACCES => GatewayError::AccessDenied(format!("cannot delete bucket {name:?}: {e}")),
            _ => crate::error::bucket_error(name, e),
        })
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

    /// Removes multipart uploads untouched for `expiry` in the attached volumes, in the
    /// background (every half of `expiry`, at least every 10 minutes), for as long as the
    /// attachments exist; uploads of a volume are also expired whenever one is started or
    /// listed there.
    pub fn spawn_upload_expiry(self: &Arc<Self>, expiry: Duration) {
        let me = Arc::downgrade(self);
        let every = (expiry / 2).clamp(Duration::from_secs(1), Duration::from_secs(600));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(att) = me.upgrade() else { return };
                let attached: Vec<Arc<Vfs>> = att.map.lock().await.values().map(|a| a.vfs.clone()).collect();
                drop(att);
                for vfs in attached {
                    crate::multipart::expire(&vfs, expiry).await;
                }
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
