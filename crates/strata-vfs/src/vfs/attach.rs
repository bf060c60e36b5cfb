//! Attaching a volume: the one way every front-end (FUSE mount, NFS and S3 gateways, and the
//! CSI node) opens a session on a volume, keeps it alive, and ends it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use strata_proto::pb;
use strata_proto::wire::Method;

use super::Vfs;
use crate::client::Client;
use crate::config::VfsConfig;
use crate::error::{Result, VfsError};

/// How often an attached client tells the server it is alive (the server ends sessions silent
/// for its `--session-timeout`).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// This host's name, for naming sessions (`strata status` shows them).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

impl Vfs {
    /// Attaches `volume` with `token`: registers a session with the first of `server`'s
    /// comma-separated addresses that answers (waiting up to `cfg.retry_timeout` for one), and
    /// keeps it alive with a heartbeat until [`Vfs::detach`]. A token the server refuses stops
    /// the heartbeat (every later call of that token is refused too). `client_name` is how
    /// `strata status` shows the session.
    pub async fn attach(
        server: &str,
        token: &str,
        volume: &str,
        client_name: &str,
        cfg: VfsConfig,
    ) -> Result<Arc<Vfs>> {
        let peer_addr = cfg.peer_cache.map(|a| a.to_string()).unwrap_or_default();
        let (client, resp) =
            Client::mount_serving(server, token, volume, client_name, cfg.retry_timeout, &peer_addr).await?;
        let vfs = Vfs::new(client, resp, cfg)?;
        if let Some(addr) = vfs.cfg.peer_cache {
            let mut volumes = vec![vfs.volume.id];
            volumes.extend(&vfs.volume.origin_volumes);
            match crate::peer::serve(addr, &vfs, volumes, server) {
                Ok(task) => *Self::lock(&vfs.peer_task) = Some(task),
                Err(e) => {
                    // The session is registered: end it rather than leave it to expire.
                    let _ = vfs.detach().await;
                    return Err(e);
                }
            }
        }
        let task = tokio::spawn(keep_alive(Arc::downgrade(&vfs)));
        *Self::lock(&vfs.keepalive) = Some(task);
        Ok(vfs)
    }

    /// Commits every buffered write, stops the heartbeat and ends the session. The first
    /// commit that failed is returned (after the session ended): its data is lost.
    pub async fn detach(&self) -> Result<()> {
        if let Some(t) = Self::lock(&self.keepalive).take() {
            t.abort();
        }
        if let Some(t) = Self::lock(&self.peer_task).take() {
            t.abort();
        }
        let inos: Vec<u64> = Self::lock(&self.writers).keys().copied().collect();
        let mut first_err = None;
        for ino in inos {
            if let Err(e) = self.commit(ino, false).await {
                tracing::error!(ino, error = %e, "could not commit buffered writes at unmount");
                first_err = first_err.or(Some(e));
            }
        }
        let waited = Instant::now();
        while self.pending_closes.load(Ordering::Relaxed) > 0 && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let session = self.client.session();
        if let Err(e) = self.client.call::<_, pb::Empty>(Method::Unmount, |_| pb::SessionReq { session }).await {
            tracing::warn!(error = %e, "server did not acknowledge the unmount");
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// This attachment's session id.
    pub fn session_id(&self) -> u64 {
        self.client.session()
    }

    /// Ends another session of this volume now, e.g. the one of a FUSE worker that died and
    /// was replaced (the server would end it only after its session timeout, holding its
    /// opens and locks until then).
    pub async fn end_session(&self, session: u64) -> Result<()> {
        self.client.call::<_, pb::Empty>(Method::Unmount, |_| pb::SessionReq { session }).await?;
        Ok(())
    }

    /// Sends a heartbeat (re-registering the session if the server restarted) and takes up
    /// the volume's QoS limits as the server reports them now.
    async fn heartbeat(&self) -> Result<()> {
        let r: pb::HeartbeatResp = self.client.call(Method::Heartbeat, |session| pb::SessionReq { session }).await?;
        if let Some(p) = &self.peers
            && r.qos_known
        {
            // `qos_known`: the server looked the volume up, so the list is its answer.
            p.set(r.peers);
        }
        if r.qos_known && self.qos.set(r.qos_bytes_per_sec, r.qos_ops_per_sec) {
            tracing::info!(
                volume = %self.volume.name,
                bytes_per_sec = r.qos_bytes_per_sec,
                ops_per_sec = r.qos_ops_per_sec,
                "QoS limits changed"
            );
        }
        Ok(())
    }
}

impl Drop for Vfs {
    fn drop(&mut self) {
        if let Some(t) = Self::lock(&self.keepalive).take() {
            t.abort();
        }
        if let Some(t) = Self::lock(&self.peer_task).take() {
            t.abort();
        }
    }
}

/// Keeps a session alive until it is detached, its file system is gone, or its token is
/// refused.
async fn keep_alive(vfs: Weak<Vfs>) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        let Some(v) = vfs.upgrade() else { return };
        match v.heartbeat().await {
            Ok(()) => {}
            Err(e @ VfsError::Unauthenticated(_)) => {
                tracing::warn!(volume = %v.volume.name, error = %e, "token refused; no longer keeping its session");
                return;
            }
            Err(e) => tracing::warn!(volume = %v.volume.name, error = %e, "heartbeat failed"),
        }
    }
}
