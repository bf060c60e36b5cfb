//! Background work: expiring silent sessions, destroying unlinked files nobody holds open, and
//! deleting the blocks of slices whose last reference went.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_blocks::layout::{block_key, slice_blocks};
use strata_meta::DEFAULT_BLOCK_SIZE;

use crate::state::State;

/// Timings of the background loop.
#[derive(Clone, Copy, Debug)]
pub struct GcConfig {
    /// Pause between rounds.
    pub interval: Duration,
    /// A session silent this long is ended.
    pub session_timeout: Duration,
    /// After a start, how long clients get to re-announce open files before unlinked files
    /// are destroyed.
    pub orphan_grace: Duration,
}

/// Runs the background loop until the process ends.
pub async fn run(st: Arc<State>, cfg: GcConfig) {
    let started = Instant::now();
    let mut reaped = false;
    loop {
        tokio::time::sleep(cfg.interval).await;
        for s in st.sessions.expire(cfg.session_timeout) {
            tracing::warn!(session = s.id, client = %s.client, "session expired without unmounting");
            st.end_session(s.id).await;
        }
        if !reaped && started.elapsed() >= cfg.orphan_grace {
            let meta = st.meta.clone();
            match tokio::task::spawn_blocking(move || meta.reap_orphans()).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(files = n, "destroyed unlinked files left open before a restart"),
                Ok(Err(e)) => tracing::error!(error = %e, "reaping unlinked files failed"),
                _ => {}
            }
            reaped = true;
        }
        if let Err(e) = collect_round(&st).await {
            tracing::error!(error = %e, "block collection round failed");
        }
    }
}

/// Deletes the blocks of one batch of unreferenced slices; returns how many slices went.
pub async fn collect_round(st: &State) -> Result<usize, String> {
    let meta = st.meta.clone();
    let batch = tokio::task::spawn_blocking(move || meta.collectable(1000))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if batch.is_empty() {
        return Ok(0);
    }
    let mut done = Vec::with_capacity(batch.len());
    for (id, p) in batch {
        let (url, bs) = match st.meta.volume_by_id(p.volume) {
            Ok(v) => (v.store, v.block_size),
            // The volume is gone; its blocks were in the default store.
            Err(_) => (st.default_store.clone(), DEFAULT_BLOCK_SIZE),
        };
        let store = st.store(&url).map_err(|e| e.to_string())?;
        let keys: Vec<String> = slice_blocks(p.size, bs).map(|(i, len)| block_key(p.volume, id, i, len)).collect();
        let deletes = keys.into_iter().map(|k| {
            let store = store.clone();
            async move { store.delete(&k).await }
        });
        let results: Vec<_> = futures::stream::iter(deletes).buffer_unordered(16).collect().await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            tracing::warn!(slice = id, error = %e, "could not delete a block; will retry");
            continue;
        }
        done.push(id);
    }
    let n = done.len();
    let meta = st.meta.clone();
    tokio::task::spawn_blocking(move || meta.forget_pending(&done))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    tracing::debug!(slices = n, "collected unreferenced blocks");
    Ok(n)
}
