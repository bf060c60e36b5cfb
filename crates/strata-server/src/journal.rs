//! Small blocks whose durability a commit handed to the server: a durable commit of a few small
//! blocks of a local block directory carries their bytes in the metadata transaction, so one
//! metadata sync makes data and metadata durable. The client does not even write those files:
//! the server writes and syncs them in the background and then forgets the copies (readers
//! that come first get the copy, `JournaledBlock`), and block collection leaves a slice alone
//! while any of its blocks is journaled. After a crash the server rewrites any file the copy
//! shows to be missing or torn before it serves.

use std::collections::HashMap;

use strata_blocks::layout::volume_of_block_key;

use crate::state::State;

/// Most bytes of blocks one commit may journal.
pub const MAX_COMMIT_BYTES: usize = 256 << 10;

/// Journaled blocks handled per round (rows are at most 256 KiB: at most 64 MiB in memory).
const BATCH: usize = 256;

/// Makes every journaled block durable in its store (writing files clients left to the server,
/// rewriting files a crash tore) and forgets it; returns how many blocks were handled and how
/// many files were written.
pub async fn flush(st: &State) -> Result<(usize, usize), String> {
    let (mut done, mut rewritten) = (0, 0);
    loop {
        let meta = st.meta.clone();
        let batch = tokio::task::spawn_blocking(move || meta.journaled(BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok((done, rewritten));
        }
        let full = batch.len() == BATCH;
        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        let mut by_vol: HashMap<u32, Vec<(String, Vec<u8>)>> = HashMap::new();
        for (k, v) in batch {
            match volume_of_block_key(&k) {
                Some(vol) => by_vol.entry(vol).or_default().push((k, v)),
                // Never written by a commit (keys are checked there): nothing to sync.
                None => tracing::warn!(key = %k, "dropping a journaled block with a malformed key"),
            }
        }
        for (vol, blocks) in by_vol {
            let st2 = st.meta.clone();
            let url = match tokio::task::spawn_blocking(move || st2.volume_by_id(vol)).await {
                Ok(Ok(v)) => v.store,
                // The volume was deleted with its blocks.
                Ok(Err(strata_meta::MetaError::NoVolume(_))) => continue,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(e) => return Err(e.to_string()),
            };
            let store = st.store(&url).map_err(|e| e.to_string())?;
            rewritten += store.sync_journaled(blocks).await.map_err(|e| e.to_string())?;
        }
        done += keys.len();
        let meta = st.meta.clone();
        tokio::task::spawn_blocking(move || meta.forget_journaled(&keys))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !full {
            return Ok((done, rewritten));
        }
    }
}
