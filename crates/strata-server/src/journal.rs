//! Small blocks whose durability a commit handed to the server: a durable commit of a few small
//! blocks of a local block directory carries their bytes in the metadata transaction, so one
//! metadata sync makes data and metadata durable. The client does not even write those files:
//! the server writes and syncs them in the background and then forgets the copies (readers
//! that come first get the copy, `JournaledBlock`), and block collection leaves a slice alone
//! while any of its blocks is journaled. After a crash the server rewrites any file the copy
//! shows to be missing or torn before it serves.

use std::collections::HashMap;
use std::path::PathBuf;

use strata_blocks::BlockStore;
use strata_blocks::layout::{slice_of_key, volume_of_block_key};

use crate::gc::meta_task;
use crate::state::State;

/// Journaled blocks read at a time (rows are at most 256 KiB: at most 64 MiB in memory).
const BATCH: usize = 256;

/// Most journaled blocks one flush handles (the rest waits for the next): their keys are kept
/// until the single sync at its end.
const MAX_PER_FLUSH: usize = 64 << 10;

/// Journaled blocks forgotten per transaction.
const FORGET_BATCH: usize = 1024;

/// Makes journaled blocks durable in their stores (writing files clients left to the server,
/// rewriting files a crash tore; one sync per store at the end) and forgets them; returns how
/// many blocks were handled and how many files were written.
pub async fn flush(st: &State) -> Result<(usize, usize), String> {
    let (mut keys, mut written) = (Vec::new(), 0);
    let mut to_sync: HashMap<String, (BlockStore, Vec<PathBuf>)> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let meta = st.meta.clone();
        let from = after.clone();
        let batch = meta_task(move || meta.journaled(from.as_deref(), BATCH)).await?;
        let full = batch.len() == BATCH;
        after = batch.last().map(|(k, _)| k.clone());
        keys.extend(batch.iter().map(|(k, _)| k.clone()));
        // Blocks of slices nobody will read again (their file was deleted, and is open
        // nowhere) need no file: the row is just forgotten, and collection then finds nothing
        // to delete. Nothing makes such a slice referenced again.
        let ids: Vec<u64> = batch.iter().filter_map(|(k, _)| slice_of_key(k)).collect();
        let meta = st.meta.clone();
        let mut gone = meta_task(move || meta.collectable_among(&ids)).await?;
        // With unrecorded opens, a slice freed within the open grace may still be read by a
        // client whose server has not recorded its open yet: its block is written after all
        // (and collected later), as the collector waits too (`gc::collect_round`).
        let grace = st.meta.open_grace();
        if !grace.is_zero() && !gone.is_empty() {
            let accounted = {
                let meta = st.meta.clone();
                meta_task(move || meta.opens_accounted()).await?
            };
            let seen = st.pending_seen.lock().unwrap_or_else(|p| p.into_inner());
            gone.retain(|id| accounted && seen.get(id).is_some_and(|t| t.elapsed() >= grace));
        }
        let mut by_vol: HashMap<u32, Vec<(String, Vec<u8>)>> = HashMap::new();
        for (k, v) in batch {
            if slice_of_key(&k).is_some_and(|id| gone.contains(&id)) {
                continue;
            }
            match volume_of_block_key(&k) {
                Some(vol) => by_vol.entry(vol).or_default().push((k, v)),
                // Never written by a commit (keys are checked there): nothing to sync.
                None => tracing::warn!(key = %k, "dropping a journaled block with a malformed key"),
            }
        }
        for (vol, blocks) in by_vol {
            let st2 = st.meta.clone();
            let found = meta_task(move || match st2.volume_by_id(vol) {
                Ok(v) => Ok(Some(v.store)),
                // The volume was deleted with its blocks.
                Err(strata_meta::MetaError::NoVolume(_)) => Ok(None),
                Err(e) => Err(e),
            });
            let Some(url) = found.await? else { continue };
            let store = st.store(&url).map_err(|e| e.to_string())?;
            let (n, paths) = store.write_journaled(blocks).await.map_err(|e| e.to_string())?;
            written += n;
            to_sync.entry(url).or_insert_with(|| (store, Vec::new())).1.extend(paths);
        }
        if !full || keys.len() >= MAX_PER_FLUSH {
            break;
        }
    }
    // One sync per store for the whole flush: each is a burst of disk writes that calls in
    // progress (their own syncs) wait behind.
    for (_, (store, paths)) in to_sync {
        store.sync_paths(paths).await.map_err(|e| e.to_string())?;
    }
    for chunk in keys.chunks(FORGET_BATCH) {
        let (meta, chunk) = (st.meta.clone(), chunk.to_vec());
        meta_task(move || meta.forget_journaled(&chunk)).await?;
    }
    Ok((keys.len(), written))
}
