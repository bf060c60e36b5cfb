//! The `Blocks` service: a volume's blocks served from the server's own store, for clients on
//! hosts that cannot reach it (a class whose backend is the server's disk, and no object
//! store). Every call is authorized like the `Meta` service: the token is checked by the same
//! interceptor (so revocation and expiry apply at the next call), the volume's scope must be
//! within the token's, and viewers may not put. The bytes are opaque here: clients compress
//! and check them, the server stores and returns exactly what it was given.

use std::sync::Arc;

use bytes::Bytes;
use strata_blocks::BlockError;
use strata_blocks::layout::volume_of_block_key;
use strata_meta::error::libc_consts as errno;
use strata_meta::tokens::TokenRecord;
use strata_proto::pb::blocks_server::Blocks as BlocksRpc;
use strata_proto::{errno_status, pb};
use tonic::{Code, Request, Response, Status};

use crate::service::{blocking, check_scope, check_writer};
use crate::state::State;

/// Largest object a put may store for a block of `len` bytes: the codec's frame header (16
/// bytes) over a block stored raw, with room to spare; a key cannot carry an unbounded object.
fn max_stored(len: u32) -> usize {
    len as usize + 4096
}

/// The status for a block store failure.
fn block_status(e: BlockError) -> Status {
    match &e {
        BlockError::Missing(_) => errno_status(Code::NotFound, errno::ENOENT, e.to_string()),
        BlockError::Short { .. } => errno_status(Code::OutOfRange, errno::EIO, e.to_string()),
        _ => {
            tracing::error!(error = %e, "block store failed");
            errno_status(Code::Internal, errno::EIO, e.to_string())
        }
    }
}

/// The `Blocks` gRPC service.
pub struct BlocksService {
    st: Arc<State>,
}

impl BlocksService {
    /// A service over the shared server state.
    pub fn new(st: Arc<State>) -> Self {
        BlocksService { st }
    }

    /// Checks that `who` may read blocks of volume `vol` and opens its store: the volume's
    /// scope, or (for the blocks a clone or a data volume shares with its source) a clone of
    /// it in the token's scope, or a data volume of it shared with the token's scope.
    async fn readable_store(&self, who: &TokenRecord, vol: u32) -> Result<strata_blocks::BlockStore, Status> {
        match self.store(who, vol).await {
            Err(s) if s.code() == Code::PermissionDenied => {
                let shared = crate::service::shares_blocks(&self.st.meta, vol, who.scope.clone()).await?;
                if !shared {
                    return Err(s);
                }
                let st = self.st.clone();
                let vb = blocking(move || st.volume_blocks(vol)).await?;
                let st = self.st.clone();
                tokio::task::spawn_blocking(move || st.store(&vb.store))
                    .await
                    .map_err(|e| Status::internal(format!("store open task failed: {e}")))?
                    .map_err(block_status)
            }
            other => other,
        }
    }

    /// Checks that `who` may use volume `vol` and opens its store.
    async fn store(&self, who: &TokenRecord, vol: u32) -> Result<strata_blocks::BlockStore, Status> {
        // Both lookups are cached after a volume's first block call; only a miss reads the
        // metadata store or opens the directory.
        let vb = match self.st.cached_volume_blocks(vol) {
            Some(vb) => vb,
            None => {
                let st = self.st.clone();
                blocking(move || st.volume_blocks(vol)).await.map_err(|s| {
                    if s.code() == Code::NotFound {
                        errno_status(Code::NotFound, errno::ENOENT, format!("no volume with id {vol}"))
                    } else {
                        s
                    }
                })?
            }
        };
        check_scope(who, &vb.scope)?;
        if let Some(store) = self.st.cached_store(&vb.store) {
            return Ok(store);
        }
        let st = self.st.clone();
        let url = vb.store.clone();
        // Opening a directory store creates it: keep the disk off the runtime's workers.
        tokio::task::spawn_blocking(move || st.store(&url))
            .await
            .map_err(|e| Status::internal(format!("store open task failed: {e}")))?
            .map_err(block_status)
    }
}

/// The volume a request's key belongs to, refusing anything that is not a block key.
fn volume_of(key: &str) -> Result<u32, Status> {
    volume_of_block_key(key)
        .ok_or_else(|| errno_status(Code::InvalidArgument, errno::EINVAL, format!("not a block key: {key:?}")))
}

#[tonic::async_trait]
impl BlocksRpc for BlocksService {
    async fn get_block(&self, req: Request<pb::GetBlockReq>) -> Result<Response<pb::BlockData>, Status> {
        let who = crate::auth::principal(&req)?.clone();
        let r = req.into_inner();
        let vol = volume_of(&r.key)?;
        let store = self.readable_store(&who, vol).await?;
        let range = if r.ranged {
            let end = r
                .offset
                .checked_add(r.length)
                .filter(|e| *e <= u64::from(strata_blocks::layout::MAX_BLOCK_LEN) + 4096)
                .ok_or_else(|| errno_status(Code::InvalidArgument, errno::EINVAL, "range past any block"))?;
            Some(r.offset..end)
        } else {
            None
        };
        let data = store.get_stored(&r.key, range).await.map_err(block_status)?;
        Ok(Response::new(pb::BlockData { data }))
    }

    async fn put_block(&self, req: Request<pb::PutBlockReq>) -> Result<Response<pb::Empty>, Status> {
        let who = crate::auth::principal(&req)?.clone();
        check_writer(&who)?;
        let r = req.into_inner();
        let vol = volume_of(&r.key)?;
        let len = strata_blocks::layout::block_len_of_key(&r.key).unwrap_or(0);
        if r.data.len() > max_stored(len) {
            return Err(errno_status(
                Code::InvalidArgument,
                errno::EINVAL,
                format!("{} bytes do not fit block {}", r.data.len(), r.key),
            ));
        }
        let store = self.store(&who, vol).await?;
        let data: Bytes = r.data;
        store.put_stored(&r.key, data).await.map_err(block_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn check_read(&self, req: Request<pb::BlockKeyReq>) -> Result<Response<pb::Empty>, Status> {
        let who = crate::auth::principal(&req)?.clone();
        let vol = volume_of(&req.get_ref().key)?;
        self.readable_store(&who, vol).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn sync(&self, req: Request<pb::SyncBlocksReq>) -> Result<Response<pb::Empty>, Status> {
        let who = crate::auth::principal(&req)?.clone();
        let store = self.store(&who, req.get_ref().volume).await?;
        store.sync().await.map_err(block_status)?;
        Ok(Response::new(pb::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_block_keys_are_invalid() {
        assert_eq!(volume_of("v7/chunks/0/0/12_0_4096").ok(), Some(7));
        for bad in ["../v7/chunks/0/0/12_0_4096", "/etc/passwd", "v7/chunks/0/0/../../../../../meta.db", "admin.token"]
        {
            let e = volume_of(bad).expect_err(bad);
            assert_eq!(e.code(), Code::InvalidArgument);
            assert_eq!(strata_proto::status_errno(&e), Some(errno::EINVAL));
        }
    }
}
