//! Blocks through `strata server`: an `object_store` backend over the server's `Blocks` gRPC
//! service, for mounts on hosts that cannot reach the volume's block store themselves (a class
//! whose backend is the server's disk, and no shared file system or object store).
//!
//! The codec still runs here, in the [`BlockStore`] this backend is wrapped in: the server
//! stores and returns exactly the bytes the client produced. Clients only get and put blocks
//! (listing and deleting are the server's collection's business), so every other operation is
//! refused as not supported. Calls are retried like metadata calls while the server is
//! unreachable, so a server restart is survived; failures end up as EIO (EACCES when the token
//! is refused).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use strata_blocks::{BlockError, BlockStore, Codec, SyncBlocks};
use strata_proto::pb;
use strata_proto::pb::blocks_client::BlocksClient;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::client::{TokenInterceptor, retry_transient};
use crate::error::{Result, VfsError};

/// Largest message either way: a 64 MiB block, its frame and the message's own framing.
const MAX_MESSAGE: usize = 256 << 20;

/// The name object_store errors give this backend.
const STORE: &str = "strata-server";

type BlocksRpc = BlocksClient<InterceptedService<Channel, TokenInterceptor>>;

/// A volume's blocks, fetched from and stored through `strata server`.
pub struct RemoteBlocks {
    rpc: BlocksRpc,
    server: String,
    volume: u32,
    retry_timeout: Duration,
}

impl fmt::Debug for RemoteBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteBlocks").field("server", &self.server).field("volume", &self.volume).finish()
    }
}

impl fmt::Display for RemoteBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StrataServer({}, volume {})", self.server, self.volume)
    }
}

impl RemoteBlocks {
    /// Blocks of volume `volume` served by `server`, as `token`. Connects at the first call
    /// (and again after a server restart); must be called inside a Tokio runtime.
    pub fn new(server: &str, token: &str, volume: u32, retry_timeout: Duration) -> Result<Arc<Self>> {
        let url = if server.contains("://") { server.to_string() } else { format!("http://{server}") };
        let channel = Endpoint::from_shared(url)
            .map_err(|e| VfsError::errno_msg(libc::EINVAL, format!("bad server address {server:?}: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            // Blocks are megabytes: let HTTP/2 flow control grow past its 64 KiB start.
            .http2_adaptive_window(true)
            .connect_lazy();
        let rpc = BlocksClient::with_interceptor(channel, TokenInterceptor::new(token)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Arc::new(RemoteBlocks { rpc, server: server.to_string(), volume, retry_timeout }))
    }

    /// A block store over this backend: `url` names it in logs, `codec` encodes blocks here.
    pub fn block_store(self: &Arc<Self>, url: &str, codec: Codec) -> BlockStore {
        BlockStore::from_store(self.clone(), url).with_codec(codec).with_sync(self.clone()).with_backend("server")
    }

    async fn get(&self, key: &str, range: Option<std::ops::Range<u64>>) -> Result<Bytes, Status> {
        let req = pb::GetBlockReq {
            key: key.to_string(),
            ranged: range.is_some(),
            offset: range.as_ref().map_or(0, |r| r.start),
            length: range.as_ref().map_or(0, |r| r.end.saturating_sub(r.start)),
        };
        retry_transient(self.retry_timeout, "get block", || {
            let (mut rpc, req) = (self.rpc.clone(), req.clone());
            async move { rpc.get_block(req).await.map(|r| r.into_inner().data) }
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), Status> {
        let req = pb::PutBlockReq { key: key.to_string(), data };
        retry_transient(self.retry_timeout, "put block", || {
            let (mut rpc, req) = (self.rpc.clone(), req.clone());
            async move { rpc.put_block(req).await.map(|_| ()) }
        })
        .await
    }
}

/// The object_store error for a failed call, keeping the distinctions callers act on (a
/// missing block, a refused token).
fn store_error(key: &str, s: Status) -> object_store::Error {
    let path = key.to_string();
    match s.code() {
        tonic::Code::NotFound => object_store::Error::NotFound { path, source: Box::new(s) },
        tonic::Code::PermissionDenied => object_store::Error::PermissionDenied { path, source: Box::new(s) },
        tonic::Code::Unauthenticated => object_store::Error::Unauthenticated { path, source: Box::new(s) },
        _ => object_store::Error::Generic { store: STORE, source: Box::new(s) },
    }
}

fn not_supported(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{what} is not offered by blocks served through strata server").into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for RemoteBlocks {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // Blocks are written once under unique names; conditional puts are never asked for.
        if !matches!(opts.mode, PutMode::Overwrite) {
            return Err(not_supported("a conditional put"));
        }
        let key = location.as_ref();
        self.put(key, Bytes::from(payload)).await.map_err(|s| store_error(key, s))?;
        Ok(PutResult { e_tag: None, version: None, extensions: Default::default() })
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_supported("multipart upload"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if options.head {
            return Err(not_supported("head"));
        }
        let range = match options.range {
            None => None,
            Some(GetRange::Bounded(r)) => Some(r),
            Some(_) => return Err(not_supported("an open-ended range")),
        };
        let key = location.as_ref();
        let start = range.as_ref().map_or(0, |r| r.start);
        let data = self.get(key, range).await.map_err(|s| store_error(key, s))?;
        let end = start + data.len() as u64;
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: Default::default(),
            size: end,
            e_tag: None,
            version: None,
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed()),
            meta,
            range: start..end,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(not_supported("delete"))).boxed()
    }

    fn list(&self, _prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        futures::stream::once(async { Err(not_supported("list")) }).boxed()
    }

    async fn list_with_delimiter(&self, _prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Err(not_supported("list"))
    }

    async fn copy_opts(&self, _from: &Path, _to: &Path, _options: CopyOptions) -> object_store::Result<()> {
        Err(not_supported("copy"))
    }
}

#[async_trait::async_trait]
impl SyncBlocks for RemoteBlocks {
    async fn sync(&self) -> strata_blocks::Result<()> {
        let volume = self.volume;
        retry_transient(self.retry_timeout, "sync blocks", || {
            let mut rpc = self.rpc.clone();
            async move { rpc.sync(pb::SyncBlocksReq { volume }).await.map(|_| ()) }
        })
        .await
        .map_err(|s| BlockError::Store(store_error(&format!("v{}", self.volume), s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_meaning() {
        let e = BlockError::Store(store_error("k", Status::permission_denied("viewer")));
        assert_eq!(e.errno(), libc::EACCES);
        assert_eq!(VfsError::from(e).errno(), libc::EACCES);
        let e = BlockError::Store(store_error("k", Status::unauthenticated("revoked")));
        assert_eq!(VfsError::from(e).errno(), libc::EACCES);
        assert!(matches!(store_error("k", Status::not_found("gone")), object_store::Error::NotFound { .. }));
        let e = BlockError::Store(store_error("k", Status::internal("disk")));
        assert_eq!(VfsError::from(e).errno(), libc::EIO);
    }

    #[tokio::test]
    async fn what_clients_never_do_is_refused() {
        let r = RemoteBlocks::new("127.0.0.1:9", "t", 1, Duration::ZERO).expect("lazy");
        let p = Path::from("v1/chunks/0/0/1_0_1");
        assert!(matches!(r.list_with_delimiter(None).await, Err(object_store::Error::NotSupported { .. })));
        assert!(matches!(
            r.copy_opts(&p, &p, CopyOptions::default()).await,
            Err(object_store::Error::NotSupported { .. })
        ));
        let opts = GetOptions { range: Some(GetRange::Suffix(3)), ..Default::default() };
        assert!(matches!(r.get_opts(&p, opts).await, Err(object_store::Error::NotSupported { .. })));
    }
}
