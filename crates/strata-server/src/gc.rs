//! Background work: expiring silent sessions, destroying unlinked files nobody holds open
//! (right after their unlink, and after a restart), and deleting the blocks of slices whose
//! last reference went.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Pause between sweeps for blocks no slice references (uploads of crashed clients).
    pub sweep_interval: Duration,
    /// An unreferenced block younger than this is left alone (its client may still commit it).
    pub orphan_block_age: Duration,
    /// How long journaled blocks may wait for their files (sooner when many are waiting).
    pub journal_delay: Duration,
    /// Saved record versions a snapshot's deletion handles per transaction.
    pub snapshot_delete_batch: usize,
    /// Pause between a snapshot deletion's transactions (tests catch a deletion midway).
    pub snapshot_delete_pause: Duration,
    /// On PostgreSQL, how long unlinked files and freed slices wait after their doom note,
    /// so that opens may go unrecorded (`open_notes.rs`); zero records every open.
    pub open_grace: Duration,
}

/// What a background step's error says when the runtime shut down under it (the server is
/// stopping): the step did not fail, so nothing is logged and the loop ends.
pub(crate) const STOPPING: &str = "the server is stopping";

/// Runs metadata work on the blocking pool, its errors as text; a task cancelled by the
/// runtime's shutdown is [`STOPPING`].
pub(crate) async fn meta_task<T: Send + 'static>(
    f: impl FnOnce() -> strata_meta::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) if e.is_cancelled() => Err(STOPPING.to_string()),
        Err(e) => Err(format!("background task failed: {e}")),
    }
}

/// Journaled blocks committed since the last flush that start one at the next round.
const JOURNAL_HIGH: usize = 16 << 10;

/// Runs the background loop until the process ends.
pub async fn run(st: Arc<State>, cfg: GcConfig) {
    let started = Instant::now();
    let mut reaped = false;
    let mut last_sweep: Option<Instant> = None;
    let mut last_flush = Instant::now();
    loop {
        tokio::time::sleep(cfg.interval).await;
        // Journaled blocks are durable already: their files are written in batches, and not
        // at all for files deleted meanwhile.
        let waiting = st.journaled_since_flush.load(std::sync::atomic::Ordering::Relaxed);
        if last_flush.elapsed() >= cfg.journal_delay || waiting >= JOURNAL_HIGH {
            last_flush = Instant::now();
            st.journaled_since_flush.fetch_sub(waiting, std::sync::atomic::Ordering::Relaxed);
            match crate::journal::flush(&st).await {
                Err(e) if e == STOPPING => return,
                Err(e) => tracing::error!(error = %e, "writing journaled blocks failed; will retry"),
                Ok(_) => {}
            }
        }
        // With shared state any server may end a session silent towards all of them.
        let (meta, timeout) = (st.meta.clone(), cfg.session_timeout);
        match meta_task(move || meta.expire_sessions(timeout)).await {
            Ok(dead) => {
                for s in dead {
                    tracing::warn!(session = s.id, volume = %s.volume_name, client = %s.client, "session expired without unmounting");
                }
            }
            Err(e) if e == STOPPING => return,
            Err(e) => tracing::error!(error = %e, "expiring silent sessions failed"),
        }
        if !reaped && started.elapsed() >= cfg.orphan_grace {
            let meta = st.meta.clone();
            match meta_task(move || meta.reap_orphans()).await {
                Ok(n) if n > 0 => tracing::info!(files = n, "destroyed unlinked files left open before a restart"),
                Ok(_) => {}
                Err(e) if e == STOPPING => return,
                Err(e) => tracing::error!(error = %e, "reaping unlinked files failed"),
            }
            reaped = true;
        }
        match collect_round(&st).await {
            Err(e) if e == STOPPING => return,
            Err(e) => tracing::error!(error = %e, "block collection round failed"),
            Ok(_) => {}
        }
        if started.elapsed() >= cfg.orphan_grace && last_sweep.is_none_or(|t| t.elapsed() >= cfg.sweep_interval) {
            last_sweep = Some(Instant::now());
            match sweep_unreferenced(&st, cfg.orphan_block_age).await {
                Ok(n) if n > 0 => tracing::info!(blocks = n, "deleted blocks no slice references"),
                Ok(_) => {}
                Err(e) if e == STOPPING => return,
                Err(e) => tracing::error!(error = %e, "sweep for unreferenced blocks failed"),
            }
        }
    }
}

/// How often unlinked files wait for destruction at most (see [`reap_doomed`]).
const REAP_EVERY: Duration = Duration::from_millis(20);

/// How often a server asks whether it is the only one (`Meta::refresh_sole`): well within
/// `strata_meta::SOLE_VALID`.
const SOLE_EVERY: Duration = Duration::from_millis(500);

/// Destroys unlinked files open nowhere in batches, off the unlinks' own transactions
/// ([`strata_meta::Meta::set_defer_destroy`]); runs until the process ends.
pub async fn reap_doomed(st: Arc<State>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sole_checked: Option<Instant> = None;
    loop {
        tick.tick().await;
        if st.meta.allows_unrecorded() && sole_checked.is_none_or(|t| t.elapsed() >= SOLE_EVERY) {
            sole_checked = Some(Instant::now());
            let (meta, me) = (st.meta.clone(), st.server_id.clone());
            match meta_task(move || meta.refresh_sole(&me)).await {
                Err(e) if e == STOPPING => return,
                Err(e) => tracing::debug!(error = %e, "cannot tell whether this is the only server"),
                Ok(_) => {}
            }
        }
        // Opens go unrecorded only while every doom note is heard (and once the other servers
        // know of this one); when that stops, the ones held are recorded (and again each tick,
        // for opens that raced with the switch).
        let known = st
            .first_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() >= strata_meta::UNRECORDED_AFTER);
        let heard = known && st.changes.relay_heard();
        st.meta.set_relay_heard(heard);
        if !heard && st.meta.has_unrecorded_opens() {
            let meta = st.meta.clone();
            match meta_task(move || meta.record_opens(None)).await {
                Ok(n) => tracing::info!(opens = n, "change relay not heard: open files recorded"),
                Err(e) if e == STOPPING => return,
                Err(e) => {
                    // The database is likely away too; its return records them (or this).
                    tracing::debug!(error = %e, "recording open files while the change relay is not heard failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if st.meta.engine_restarted() {
            let meta = st.meta.clone();
            match meta_task(move || meta.after_engine_restart()).await {
                Ok(n) => tracing::warn!(
                    open_records = n,
                    grace_secs = strata_meta::RESTART_GRACE.as_secs(),
                    "PostgreSQL restarted and may have lost its last asynchronous commits: this server's open files are recorded again, and unlinked files wait out the grace before destruction"
                ),
                Err(e) if e == STOPPING => return,
                Err(e) => {
                    tracing::error!(error = %e, "recording open files again after a PostgreSQL restart failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if st.meta.doomed_count() == 0 {
            continue;
        }
        let meta = st.meta.clone();
        match meta_task(move || meta.reap_doomed()).await {
            Ok(_) => {}
            Err(e) if e == STOPPING => return,
            Err(e) => tracing::error!(error = %e, "destroying unlinked files failed; will retry"),
        }
    }
}

/// Deletes blocks that no slice references and that are older than `min_age`: what clients
/// uploaded and never committed (they crashed, or lost the server for longer than their retry
/// timeout). Clients commit buffered writes within seconds, so an hour-old unreferenced block
/// is garbage. Returns how many blocks went.
pub async fn sweep_unreferenced(st: &State, min_age: Duration) -> Result<usize, String> {
    use futures::TryStreamExt;
    let meta = st.meta.clone();
    let vols = {
        let meta = meta.clone();
        meta_task(move || meta.list_volumes()).await?
    };
    // Listed before the referenced set is read, so a block committed meanwhile is in the set.
    let mut candidates = Vec::new();
    let now = std::time::SystemTime::now();
    for (vol, _) in &vols {
        let store = st.store(&vol.store).map_err(|e| e.to_string())?;
        let mut listing = store.list(&strata_blocks::layout::volume_prefix(vol.id));
        while let Some(obj) = listing.try_next().await.map_err(|e| e.to_string())? {
            let age = now.duration_since(obj.last_modified.into()).unwrap_or_default();
            if age < min_age {
                continue;
            }
            if let Some(id) = strata_blocks::layout::slice_of_key(obj.location.as_ref()) {
                candidates.push((store.clone(), obj.location.to_string(), id));
            }
        }
    }
    if candidates.is_empty() {
        return Ok(0);
    }
    let live = meta_task(move || meta.referenced_slices()).await?;
    let mut n = 0;
    for (store, key, id) in candidates {
        if live.contains(&id) {
            continue;
        }
        match store.delete(&key).await {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(key, error = %e, "could not delete an unreferenced block"),
        }
    }
    Ok(n)
}

/// Deletes the blocks of one batch of unreferenced slices; returns how many slices went.
pub async fn collect_round(st: &State) -> Result<usize, String> {
    let meta = st.meta.clone();
    let mut batch = meta_task(move || meta.collectable(1000)).await?;
    // A slice freed through another server may still be read by a client holding its file
    // open unrecorded on a third; that server records the open when it hears the slice's doom
    // note, so the blocks go only once the grace has passed since the slice was first seen
    // here (which is after it was freed).
    let grace = st.meta.open_grace();
    if !grace.is_zero() {
        {
            let mut seen = st.pending_seen.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let ids: std::collections::HashSet<u64> = batch.iter().map(|(id, _)| *id).collect();
            // Those no longer collectable (their file was opened again) start over.
            seen.retain(|id, _| ids.contains(id));
            batch.retain(|(id, _)| now.duration_since(*seen.entry(*id).or_insert(now)) >= grace);
        }
        // And none while a session's opens went with a server that is gone.
        if !batch.is_empty() {
            let meta = st.meta.clone();
            if !meta_task(move || meta.opens_accounted()).await? {
                return Ok(0);
            }
        }
    }
    if batch.is_empty() {
        return Ok(0);
    }
    let mut slices = Vec::with_capacity(batch.len());
    for (id, p) in batch {
        let (url, bs) = match crate::auth::off_worker(|| st.meta.volume_by_id(p.volume)) {
            Ok(v) => (v.store, v.block_size),
            // The volume is gone; its blocks were in the default store.
            Err(_) => (st.default_store.clone(), DEFAULT_BLOCK_SIZE),
        };
        let keys: Vec<String> = slice_blocks(p.size, bs).map(|(i, len)| block_key(p.volume, id, i, len)).collect();
        slices.push((id, url, keys));
    }
    // A slice with blocks still journaled waits for the next round: the journal's flush may
    // be writing their files (clients leave that to the server), so deleting them now could
    // leave a file behind. A pending slice gains no journaled blocks, so the wait ends.
    let all: Vec<String> = slices.iter().flat_map(|(_, _, k)| k.iter().cloned()).collect();
    let meta = st.meta.clone();
    let journaled: std::collections::HashSet<String> =
        meta_task(move || meta.journaled_among(&all)).await?.into_iter().collect();
    let mut done = Vec::with_capacity(slices.len());
    for (id, url, keys) in slices {
        if keys.iter().any(|k| journaled.contains(k)) {
            continue;
        }
        let store = st.store(&url).map_err(|e| e.to_string())?;
        if let Err(e) = store.delete_background(keys).await {
            tracing::warn!(slice = id, error = %e, "could not delete a block; will retry");
            continue;
        }
        done.push(id);
    }
    let n = done.len();
    let meta = st.meta.clone();
    meta_task(move || meta.forget_pending(&done)).await?;
    tracing::debug!(slices = n, "collected unreferenced blocks");
    Ok(n)
}
