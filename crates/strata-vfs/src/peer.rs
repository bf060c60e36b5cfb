//! The peer cache: the clients of one volume serve the blocks of their caches to each other, so
//! a dataset read by many nodes is fetched from the block store about once, not once per node.
//!
//! Blocks are immutable, so any client's cached copy is as good as the store's. Every client
//! with a peer cache (`strata mount --peer-cache ADDR`) registers ADDR with its session; the
//! server hands each client the list of the volume's live peer caches (mount and heartbeat
//! answers). A block has one *owner* among them, by rendezvous (highest random weight) hashing
//! of the block key over the peers' addresses: every client computes the same owner from the
//! same list, and a peer joining or leaving moves only the blocks it wins or held. A client
//! missing a block asks its owner; the owner answers from its caches or fetches the block from
//! the store once (the cache's single-flight fetch), keeps it and answers. A client that owns
//! the block itself reads the store. A peer that fails, refuses or takes longer than the
//! timeout is passed over: that read goes to the store, and the peer is left out of the
//! placement for a while, so a dead node costs one failed connection, not one per block.
//!
//! Authorization: a request carries the caller's own token. The serving peer asks the server
//! whether that token may read the block's volume (`Blocks.CheckRead`, the same scope rules as
//! the server's own block service, answers kept for a few seconds, refusals never), checks
//! that the key is a block key of the volume it has attached, and only then answers. A peer
//! never hands a block to a token that could not read it from the store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_blocks::layout::{block_len_of_key, volume_of_block_key};
use strata_blocks::{BlockError, BlockStore};
use strata_proto::pb;
use strata_proto::pb::blocks_client::BlocksClient;
use strata_proto::pb::peer_client::PeerClient;
use strata_proto::pb::peer_server::{Peer as PeerRpc, PeerServer};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::client::TokenInterceptor;
use crate::error::{Result, VfsError};
use crate::vfs::Vfs;

/// Largest message either way: a 64 MiB block and its framing.
const MAX_MESSAGE: usize = 256 << 20;

/// How long a peer may take to answer for one block (it may be fetching it from the store)
/// before the block is read from the store instead.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer that failed is left out of the placement.
const DOWN_FOR: Duration = Duration::from_secs(10);

/// How long the server's yes to "may this token read this volume" is reused (about the server's
/// own token cache: 2 s with local state, 1 s with shared), so a revocation is seen within a
/// few seconds.
const AUTH_TTL: Duration = Duration::from_secs(2);

type PeerConn = PeerClient<InterceptedService<Channel, TokenInterceptor>>;

/// Counters of the peer cache, for `strata.stats` and the tests.
#[derive(Default, Debug)]
pub struct PeerCounters {
    /// Blocks this client got from another client's cache.
    pub gets: AtomicU64,
    /// Blocks read from the store because their owner failed, refused or was slow.
    pub fallbacks: AtomicU64,
    /// Blocks this client served to others.
    pub served: AtomicU64,
    /// Requests this client refused (token may not read the volume, not a key it serves).
    pub refused: AtomicU64,
}

/// One client's view of its volume's peer caches, and its own.
pub struct Peers {
    /// This client's own address, as registered with the server.
    me: String,
    /// The volume's live peer caches, sorted (this one's included).
    list: RwLock<Vec<String>>,
    /// Peers that failed recently, and since when.
    down: Mutex<HashMap<String, Instant>>,
    /// Connections to peers, made on first use.
    conns: Mutex<HashMap<String, PeerConn>>,
    token: TokenInterceptor,
    timeout: Duration,
    /// What happened so far.
    pub counters: PeerCounters,
}

/// A stable 64-bit hash (FNV-1a with a final mix): every client, whatever its version, must
/// place a block on the same peer.
pub(crate) fn hash2(a: &str, b: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain(std::iter::once(0xff)).chain(b.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV alone spreads similar keys poorly over the high bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner of `key` among `peers` by rendezvous hashing: the peer with the highest weight.
pub fn owner_of<'a>(key: &str, peers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    peers.into_iter().max_by_key(|p| (hash2(p, key), *p))
}

impl Peers {
    /// The peer cache of a client serving at `me` and presenting `token` to other peers.
    pub fn new(me: &str, token: &str, timeout: Duration) -> Result<Arc<Peers>> {
        Ok(Arc::new(Peers {
            me: me.to_string(),
            list: RwLock::new(Vec::new()),
            down: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            token: TokenInterceptor::new(token)?,
            timeout,
            counters: PeerCounters::default(),
        }))
    }

    /// This client's address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Takes up the list of live peers the server reported.
    pub fn set(&self, mut peers: Vec<String>) {
        peers.sort();
        peers.dedup();
        let mut l = self.list.write().unwrap_or_else(|p| p.into_inner());
        if *l != peers {
            tracing::info!(peers = peers.len(), list = %peers.join(","), "peer cache: the volume's peers changed");
            *l = peers;
        }
    }

    /// How many peers are known (this one included).
    pub fn len(&self) -> usize {
        self.list.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The peer to ask for `key`: its owner among the peers not recently failed; `None` when
    /// that is this client (or no peer is known): the block is then read from the store.
    pub fn owner(&self, key: &str) -> Option<String> {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let up = list.iter().map(String::as_str).filter(|p| down.get(*p).is_none_or(|at| at.elapsed() >= DOWN_FOR));
        // This client is always a candidate, listed or not (its session may not be yet).
        let me = (!list.contains(&self.me)).then_some(self.me.as_str());
        let owner = owner_of(key, up.chain(me))?;
        (owner != self.me).then(|| owner.to_string())
    }

    fn conn(&self, peer: &str) -> Result<PeerConn> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conns.get(peer) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{peer}"))
            .map_err(|e| VfsError::errno_msg(libc::EINVAL, format!("bad peer address {peer:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            .connect_lazy();
        let c = PeerClient::with_interceptor(channel, self.token.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        conns.insert(peer.to_string(), c.clone());
        Ok(c)
    }

    /// Block `key` of `len` bytes from its owner `peer`, or from `store` when the peer fails,
    /// refuses, answers wrongly or takes longer than the timeout.
    pub async fn get(&self, peer: &str, key: &str, len: usize, store: &BlockStore) -> strata_blocks::Result<Bytes> {
        let asked = async {
            let mut c = self.conn(peer).map_err(|e| Status::invalid_argument(e.to_string()))?;
            c.get_peer_block(pb::BlockKeyReq { key: key.to_string() }).await.map(|r| r.into_inner().data)
        };
        let why = match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(data)) if data.len() == len => {
                self.counters.gets.fetch_add(1, Ordering::Relaxed);
                return Ok(data);
            }
            Ok(Ok(data)) => format!("answered {} bytes for a block of {len}", data.len()),
            Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        let newly = self.down.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.to_string(), Instant::now());
        if newly.is_none_or(|at| at.elapsed() >= DOWN_FOR) {
            tracing::info!(peer, key, reason = %why, "peer cache: peer passed over for a while; reading from the store");
        }
        store.get(key, len).await
    }
}

/// Answers other clients' requests for blocks of the attached volume.
struct PeerService {
    vfs: Weak<Vfs>,
    /// The volumes whose block keys this client serves: its volume and those it shares blocks
    /// with (a clone's or a data volume's origins).
    volumes: Vec<u32>,
    /// The server's block service, to check callers' tokens.
    server: Channel,
    /// (token hash, volume) the server said may read, and when it said so.
    allowed: Mutex<HashMap<([u8; 32], u32), Instant>>,
}

impl PeerService {
    /// Checks with the server that `token` may read blocks of `vol` (answers reused briefly).
    async fn check(&self, token: &str, key: &str, vol: u32) -> std::result::Result<(), Status> {
        let h = strata_types::hash_token(token);
        if let Some(at) = self.allowed.lock().unwrap_or_else(|p| p.into_inner()).get(&(h, vol))
            && at.elapsed() < AUTH_TTL
        {
            return Ok(());
        }
        let icpt = TokenInterceptor::new(token).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let mut rpc = BlocksClient::with_interceptor(self.server.clone(), icpt);
        match rpc.check_read(pb::BlockKeyReq { key: key.to_string() }).await {
            Ok(_) => {
                let mut m = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
                m.retain(|_, at| at.elapsed() < AUTH_TTL);
                m.insert((h, vol), Instant::now());
                Ok(())
            }
            Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated | Code::NotFound) => {
                Err(Status::permission_denied(format!("this token may not read volume {vol}'s blocks")))
            }
            Err(s) => Err(Status::unavailable(format!("cannot check the token with the server: {}", s.message()))),
        }
    }
}

/// The bearer token of a request.
fn bearer<T>(req: &Request<T>) -> Option<&str> {
    req.metadata().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

#[tonic::async_trait]
impl PeerRpc for PeerService {
    async fn get_peer_block(
        &self,
        req: Request<pb::BlockKeyReq>,
    ) -> std::result::Result<Response<pb::BlockData>, Status> {
        let vfs = self.vfs.upgrade().ok_or_else(|| Status::unavailable("unmounting"))?;
        let refuse = |s: Status| {
            if let Some(c) = vfs.peer_counters() {
                c.refused.fetch_add(1, Ordering::Relaxed);
            }
            s
        };
        let token = bearer(&req).ok_or_else(|| refuse(Status::unauthenticated("no token")))?.to_string();
        let key = req.into_inner().key;
        let (Some(vol), Some(len)) = (volume_of_block_key(&key), block_len_of_key(&key)) else {
            return Err(refuse(Status::invalid_argument(format!("not a block key: {key:?}"))));
        };
        if !self.volumes.contains(&vol) {
            return Err(refuse(Status::permission_denied(format!("blocks of volume {vol} are not served here"))));
        }
        self.check(&token, &key, vol).await.map_err(refuse)?;
        let data = vfs.peer_serve(&key, len as usize).await.map_err(|e| match e {
            BlockError::Missing(_) => Status::not_found(e.to_string()),
            e => Status::unavailable(e.to_string()),
        })?;
        if let Some(c) = vfs.peer_counters() {
            c.served.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Response::new(pb::BlockData { data }))
    }
}

/// Listens at `addr` (bound now, so a bad address fails the mount) and serves the blocks of
/// `vfs`'s caches to the volume's other clients until the task is aborted.
pub fn serve(addr: SocketAddr, vfs: &Arc<Vfs>, volumes: Vec<u32>, server: &str) -> Result<tokio::task::JoinHandle<()>> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
        VfsError::errno_msg(libc::EADDRNOTAVAIL, format!("cannot listen for the peer cache on {addr}: {e}"))
    })?;
    std_listener.set_nonblocking(true).map_err(|e| VfsError::errno_msg(libc::EIO, e.to_string()))?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| VfsError::errno_msg(libc::EIO, format!("peer cache listener: {e}")))?;
    let first = server.split(',').map(str::trim).find(|s| !s.is_empty()).unwrap_or(server);
    let url = if first.contains("://") { first.to_string() } else { format!("http://{first}") };
    let channel = Endpoint::from_shared(url)
        .map_err(|e| VfsError::errno_msg(libc::EINVAL, format!("bad server address {server:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect_lazy();
    let svc = PeerService { vfs: Arc::downgrade(vfs), volumes, server: channel, allowed: Mutex::new(HashMap::new()) };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = tonic::transport::Server::builder().add_service(
        PeerServer::new(svc).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
    );
    tracing::info!(%addr, "peer cache: serving this mount's cached blocks to the volume's other clients");
    Ok(tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "peer cache server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_blocks_and_moves_only_a_leavers() {
        let peers = ["10.0.0.1:7430", "10.0.0.2:7430", "10.0.0.3:7430"];
        let keys: Vec<String> = (0..3000).map(|i| format!("v1/chunks/0/0/{i}_0_4194304")).collect();
        let mut per = HashMap::new();
        for k in &keys {
            *per.entry(owner_of(k, peers).expect("owner")).or_insert(0) += 1;
        }
        for p in peers {
            let n = per[p];
            assert!((800..1200).contains(&n), "{p} owns {n} of 3000 blocks: {per:?}");
        }
        // Without peer 2, its blocks move and no other block does.
        for k in &keys {
            let before = owner_of(k, peers).expect("owner");
            let after = owner_of(k, [peers[0], peers[2]]).expect("owner");
            if before != peers[1] {
                assert_eq!(before, after, "{k} moved");
            }
        }
        // The order peers are listed in does not matter.
        assert!(keys.iter().all(|k| owner_of(k, peers) == owner_of(k, [peers[2], peers[0], peers[1]])));
        assert_eq!(owner_of("k", std::iter::empty()), None);
    }

    #[tokio::test]
    async fn a_client_owns_blocks_of_its_own_and_skips_failed_peers() {
        let p = Peers::new("10.0.0.1:7430", "t", Duration::from_millis(200)).expect("peers");
        assert_eq!(p.owner("v1/chunks/0/0/1_0_1"), None, "alone: every block is its own");
        p.set(vec!["10.0.0.2:7430".into(), "10.0.0.1:7430".into(), "10.0.0.3:7430".into()]);
        let keys: Vec<String> = (0..300).map(|i| format!("v1/chunks/0/0/{i}_0_1")).collect();
        let mine = keys.iter().filter(|k| p.owner(k).is_none()).count();
        assert!((60..140).contains(&mine), "owns {mine} of 300");
        // A peer nobody listens at: the read falls back to the store and the peer is skipped.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(&dir.path().display().to_string()).expect("store");
        store.put("v1/chunks/0/0/1_0_5", Bytes::from_static(b"hello")).await.expect("put");
        let got = p.get("127.0.0.1:9", "v1/chunks/0/0/1_0_5", 5, &store).await.expect("from the store");
        assert_eq!(got, Bytes::from_static(b"hello"));
        assert_eq!(p.counters.fallbacks.load(Ordering::Relaxed), 1);
        p.set(vec!["127.0.0.1:9".into(), "10.0.0.1:7430".into()]);
        assert!(keys.iter().all(|k| p.owner(k).is_none()), "the failed peer owns nothing for a while");
    }
}
