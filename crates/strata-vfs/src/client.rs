//! The clients of `strata server`: the session client of a mount (framed transport, retries
//! while the server is unreachable so a restart is survived without a remount, transparent
//! re-registration of the session when the server no longer knows it) and the gRPC admin
//! client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use strata_proto::pb;
use strata_proto::pb::admin_client::AdminClient;
use strata_proto::wire;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::error::{Result, VfsError};

/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 256 << 20;

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct TokenInterceptor {
    header: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl TokenInterceptor {
    /// An interceptor presenting `token`.
    pub fn new(token: &str) -> Result<Self> {
        let header = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| VfsError::Unauthenticated("the token holds characters not allowed in a header".into()))?;
        Ok(TokenInterceptor { header })
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.header.clone());
        Ok(req)
    }
}

type AdminRpc = AdminClient<InterceptedService<Channel, TokenInterceptor>>;

/// Connects to a server: the address and the token to present.
pub async fn connect(server: &str, token: &str, connect_timeout: Duration) -> Result<(Channel, TokenInterceptor)> {
    let url = if server.contains("://") { server.to_string() } else { format!("http://{server}") };
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|e| VfsError::errno_msg(libc::EINVAL, format!("bad server address {server:?}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = ep
        .connect()
        .await
        .map_err(|e| VfsError::Unavailable(format!("cannot reach strata server at {url}: {}", source_chain(&e))))?;
    Ok((channel, TokenInterceptor::new(token)?))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An admin client (volumes, status).
pub fn admin(channel: Channel, auth: TokenInterceptor) -> AdminRpc {
    AdminClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Runs an idempotent gRPC call with the mount's retry policy (the one [`Client::call`]
/// follows): failures that mean the server is unreachable or restarting are retried with
/// backoff (20 ms doubling to 1 s) until `retry_timeout` has passed; others return at once.
pub(crate) async fn retry_transient<T, Fut>(
    retry_timeout: Duration,
    what: &str,
    mut call: impl FnMut() -> Fut,
) -> Result<T, Status>
where
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + retry_timeout;
    let mut delay = Duration::from_millis(20);
    let mut warned = false;
    loop {
        match call().await {
            Ok(r) => {
                if warned {
                    tracing::info!(op = what, "strata server reachable again");
                }
                return Ok(r);
            }
            Err(s) if transient(&s) && Instant::now() < deadline => {
                if !warned {
                    tracing::warn!(op = what, error = %s.message(), "strata server unreachable; retrying");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(s) => return Err(s),
        }
    }
}

fn transient(s: &Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled)
        || (s.code() == tonic::Code::Unknown && s.message().contains("transport"))
}

fn session_unknown(s: &Status) -> bool {
    s.metadata().get(strata_proto::SESSION_KEY).is_some()
}

thread_local! {
    static DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one that may block on the network (a FUSE request thread, not a
/// runtime worker). Its calls then use plain blocking sockets: the thread sleeps in `read` and
/// the kernel wakes it directly when the answer arrives, one thread hand-off less per call
/// than waking it through the runtime's I/O driver.
pub fn allow_blocking_io() {
    DIRECT.with(|d| d.set(true));
}

/// Whether the calling thread may block (see [`allow_blocking_io`]).
pub fn can_block() -> bool {
    DIRECT.with(|d| d.get())
}

/// How long connecting to one server may take before the next listed one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections of the framed transport, used one call at a time each, to one of several
/// servers: the one that answered last, or the next listed one when it stops answering.
struct Pool {
    addrs: Vec<String>,
    /// Index in `addrs` of the server new connections go to.
    current: AtomicUsize,
    token: String,
    /// Idle connections with the index of the server they lead to.
    idle: Mutex<Vec<(usize, TcpStream)>>,
    idle_sync: Mutex<Vec<(usize, std::net::TcpStream)>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {e}"))
}

impl Pool {
    fn hello(&self) -> Vec<u8> {
        let mut hello = Vec::with_capacity(12 + self.token.len());
        hello.extend_from_slice(wire::MAGIC);
        hello.extend_from_slice(&(self.token.len() as u32).to_be_bytes());
        hello.extend_from_slice(self.token.as_bytes());
        hello
    }

    fn new(addrs: Vec<String>, token: &str) -> Pool {
        Pool {
            addrs,
            current: AtomicUsize::new(0),
            token: token.trim().to_string(),
            idle: Mutex::new(Vec::new()),
            idle_sync: Mutex::new(Vec::new()),
        }
    }

    /// The servers to try, the current one first.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let start = self.current.load(Ordering::Relaxed);
        (0..self.addrs.len()).map(move |i| (start + i) % self.addrs.len())
    }

    /// Moves new connections to server `idx` after the current one failed.
    fn switch_to(&self, idx: usize) {
        if self.current.swap(idx, Ordering::Relaxed) != idx {
            tracing::warn!(server = %self.addrs[idx], "switched to another strata server");
            // All calls go to one server: one that hears from a session its record does not
            // name makes it register again (open files the servers have not recorded).
            if let Ok(mut v) = self.idle.lock() {
                v.retain(|(i, _)| *i == idx);
            }
            if let Ok(mut v) = self.idle_sync.lock() {
                v.retain(|(i, _)| *i == idx);
            }
        }
    }

    /// An idle connection to the current server, if there is one.
    fn take_idle<T>(&self, pool: &Mutex<Vec<(usize, T)>>) -> Option<(usize, T)> {
        let cur = self.current.load(Ordering::Relaxed);
        let mut v = pool.lock().ok()?;
        while let Some((idx, s)) = v.pop() {
            if idx == cur {
                return Some((idx, s));
            }
        }
        None
    }

    /// Keeps a connection for later calls, unless the client moved to another server.
    fn put_idle<T>(&self, pool: &Mutex<Vec<(usize, T)>>, idx: usize, s: T) {
        if idx == self.current.load(Ordering::Relaxed)
            && let Ok(mut v) = pool.lock()
        {
            v.push((idx, s));
        }
    }

    /// Forgets idle connections to a server that just failed a call: they would fail too.
    fn drop_idle(&self, idx: usize) {
        if let Ok(mut v) = self.idle.lock() {
            v.retain(|(i, _)| *i != idx);
        }
        if let Ok(mut v) = self.idle_sync.lock() {
            v.retain(|(i, _)| *i != idx);
        }
    }

    fn open_one_sync(&self, addr: &str) -> Result<std::net::TcpStream, Status> {
        use std::io::Write;
        use std::net::ToSocketAddrs;
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| unavailable(&format!("resolve {addr}"), e))?
            .next()
            .ok_or_else(|| unavailable(&format!("resolve {addr}"), "no address"))?;
        let mut s = std::net::TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT)
            .map_err(|e| unavailable(&format!("connect to {addr}"), e))?;
        let _ = s.set_nodelay(true);
        s.write_all(&self.hello()).map_err(|e| unavailable("send hello", e))?;
        let (status, _, body) = wire::read_frame_sync(&mut s).map_err(|e| unavailable("read hello answer", e))?;
        if status != wire::OK {
            return Err(decode_error(body));
        }
        Ok(s)
    }

    fn open_sync(&self) -> Result<(usize, std::net::TcpStream), Status> {
        let mut last = None;
        for idx in self.order() {
            match self.open_one_sync(&self.addrs[idx]) {
                Ok(s) => {
                    self.switch_to(idx);
                    return Ok((idx, s));
                }
                Err(e) if transient(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no server address")))
    }

    fn unary_sync<Req: Message, Resp: Message + Default>(
        &self,
        method: wire::Method,
        req: &Req,
    ) -> Result<Resp, Status> {
        let idle = self.take_idle(&self.idle_sync);
        let (idx, mut s) = match idle {
            Some(c) => c,
            None => self.open_sync()?,
        };
        let _busy = wire::Busy::start();
        let fail = |what: &str, e: std::io::Error| {
            self.drop_idle(idx);
            unavailable(what, e)
        };
        wire::write_frame_sync(&mut s, method as u16, 0, &req.encode_to_vec()).map_err(|e| fail("send request", e))?;
        wire::spin_until_readable(&s, SPIN, 1);
        let (status, _, payload) = wire::read_frame_sync(&mut s).map_err(|e| fail("read response", e))?;
        self.put_idle(&self.idle_sync, idx, s);
        decode_reply(status, payload)
    }

    async fn open_one(&self, addr: &str) -> Result<TcpStream, Status> {
        let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unavailable(&format!("connect to {addr}"), "timed out"))?
            .map_err(|e| unavailable(&format!("connect to {addr}"), e))?;
        let _ = s.set_nodelay(true);
        s.write_all(&self.hello()).await.map_err(|e| unavailable("send hello", e))?;
        let (status, _, body) = wire::read_frame(&mut s).await.map_err(|e| unavailable("read hello answer", e))?;
        if status != wire::OK {
            return Err(decode_error(body));
        }
        Ok(s)
    }

    async fn open(&self) -> Result<(usize, TcpStream), Status> {
        let mut last = None;
        for idx in self.order().collect::<Vec<_>>() {
            match self.open_one(&self.addrs[idx]).await {
                Ok(s) => {
                    self.switch_to(idx);
                    return Ok((idx, s));
                }
                Err(e) if transient(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no server address")))
    }

    async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        method: wire::Method,
        req: &Req,
    ) -> Result<Resp, Status> {
        if DIRECT.with(|d| d.get()) {
            return self.unary_sync(method, req);
        }
        let idle = self.take_idle(&self.idle);
        let (idx, mut s) = match idle {
            Some(c) => c,
            None => self.open().await?,
        };
        let fail = |what: &str, e: std::io::Error| {
            self.drop_idle(idx);
            unavailable(what, e)
        };
        let body = req.encode_to_vec();
        wire::write_frame(&mut s, method as u16, 0, &body).await.map_err(|e| fail("send request", e))?;
        let (status, _, payload) = wire::read_frame(&mut s).await.map_err(|e| fail("read response", e))?;
        self.put_idle(&self.idle, idx, s);
        decode_reply(status, payload)
    }
}

/// The volumes `token` may see, as the first of `server`'s addresses that answers lists them.
pub async fn list_volumes(server: &str, token: &str) -> Result<Vec<strata_types::VolumeInfo>> {
    let mut last = VfsError::errno_msg(libc::EINVAL, "no server address given");
    for addr in server_list(server) {
        let (channel, auth) = match connect(&addr, token, Duration::from_secs(5)).await {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        return match admin(channel, auth).list_volumes(pb::Empty {}).await {
            Ok(r) => Ok(r.into_inner().volumes.into_iter().map(strata_proto::conv::volume_from_pb).collect()),
            Err(s) => Err(VfsError::from_status(&s)),
        };
    }
    Err(last)
}

/// Creates volume `name` in the token's scope through the server's provisioning path (its
/// policies decide the class; with `fit_to_policy` a capacity above the scope's maximum, or
/// none where one is set, becomes that maximum).
pub async fn create_volume(
    server: &str,
    token: &str,
    name: &str,
    capacity: u64,
    fit_to_policy: bool,
) -> Result<strata_types::VolumeInfo> {
    let req = pb::CreateVolumeReq { name: name.to_string(), capacity, fit_to_policy, ..Default::default() };
    admin_call(server, token, |mut a| async move { a.create_volume(req).await.map(|r| r.into_inner()) })
        .await
        .map(strata_proto::conv::volume_from_pb)
}

/// Deletes volume `name` (refused while it is mounted anywhere).
pub async fn delete_volume(server: &str, token: &str, name: &str) -> Result<()> {
    let req = pb::VolumeName { name: name.to_string() };
    admin_call(server, token, |mut a| async move { a.delete_volume(req).await.map(|_| ()) }).await
}

/// The error of a control-plane call, with the errno its status code stands for (the control
/// plane answers by code: conflicts are `AlreadyExists`, policy refusals `PermissionDenied`).
fn admin_error(s: &tonic::Status) -> VfsError {
    let errno = match s.code() {
        tonic::Code::AlreadyExists => libc::EEXIST,
        tonic::Code::PermissionDenied => libc::EPERM,
        tonic::Code::NotFound => libc::ENOENT,
        tonic::Code::InvalidArgument => libc::EINVAL,
        _ => return VfsError::from_status(s),
    };
    VfsError::errno_msg(errno, s.message())
}

/// One call of the admin service at the first of `server`'s addresses that answers.
async fn admin_call<T, F, Fut>(server: &str, token: &str, call: F) -> Result<T>
where
    F: FnOnce(AdminRpc) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
{
    let mut last = VfsError::errno_msg(libc::EINVAL, "no server address given");
    for addr in server_list(server) {
        match connect(&addr, token, Duration::from_secs(5)).await {
            Ok((channel, auth)) => return call(admin(channel, auth)).await.map_err(|s| admin_error(&s)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The servers of a `--server` value: addresses separated by commas.
pub fn server_list(server: &str) -> Vec<String> {
    server
        .split(',')
        .map(|a| a.trim().trim_start_matches("http://").trim_end_matches('/').to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// How long a blocking call polls for its answer before sleeping in `read`.
const SPIN: Duration = Duration::from_micros(40);

fn decode_error(body: bytes::Bytes) -> Status {
    match pb::RpcError::decode(body) {
        Ok(err) => wire::error_to_status(err),
        Err(e) => Status::internal(format!("bad error frame: {e}")),
    }
}

fn decode_reply<Resp: Message + Default>(status: u16, payload: bytes::Bytes) -> Result<Resp, Status> {
    if status == wire::OK {
        Resp::decode(payload).map_err(|e| Status::internal(format!("malformed response: {e}")))
    } else {
        Err(decode_error(payload))
    }
}

/// A mounted session's RPC client.
pub struct Client {
    pool: Pool,
    server: String,
    volume: String,
    client_name: String,
    /// Where this client serves its block cache (sent again when the session is re-registered).
    peer_addr: String,
    session: AtomicU64,
    retry_timeout: Duration,
    /// Inodes this client holds open, re-announced when the session is re-established.
    open: Mutex<HashMap<u64, u32>>,
    relogin: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects to `server` with `token` and registers a session for `volume`.
    pub async fn mount(
        server: &str,
        token: &str,
        volume: &str,
        client_name: &str,
        retry_timeout: Duration,
    ) -> Result<(Arc<Client>, pb::MountResp)> {
        Self::mount_serving(server, token, volume, client_name, retry_timeout, "").await
    }

    /// [`Client::mount`] for a client that serves its block cache to the volume's other
    /// clients at `peer_addr` (empty: it serves none).
    pub async fn mount_serving(
        server: &str,
        token: &str,
        volume: &str,
        client_name: &str,
        retry_timeout: Duration,
        peer_addr: &str,
    ) -> Result<(Arc<Client>, pb::MountResp)> {
        let addrs = server_list(server);
        if addrs.is_empty() {
            return Err(VfsError::errno_msg(libc::EINVAL, "no server address given"));
        }
        let pool = Pool::new(addrs, token);
        let conn = pool.open().await.map_err(|s| match VfsError::from_status(&s) {
            VfsError::Unavailable(m) => {
                VfsError::Unavailable(format!("cannot reach strata server at {}: {m}", pool.addrs.join(", ")))
            }
            e => e,
        })?;
        if let Ok(mut v) = pool.idle.lock() {
            v.push(conn);
        }
        let req = pb::MountReq {
            volume: volume.to_string(),
            client: client_name.to_string(),
            open_inos: Vec::new(),
            session: 0,
            client_version: env!("CARGO_PKG_VERSION").into(),
            peer_addr: peer_addr.to_string(),
        };
        let resp: pb::MountResp =
            pool.unary(wire::Method::Mount, &req).await.map_err(|s| match VfsError::from_status(&s) {
                VfsError::Errno { errno, .. } if errno == libc::ENOENT => VfsError::errno_msg(
                    libc::ENOENT,
                    format!("volume {volume:?} does not exist (see `strata volume list`)"),
                ),
                e => e,
            })?;
        let client = Arc::new(Client {
            pool,
            server: server.to_string(),
            volume: volume.to_string(),
            client_name: client_name.to_string(),
            peer_addr: peer_addr.to_string(),
            session: AtomicU64::new(resp.session),
            retry_timeout,
            open: Mutex::new(HashMap::new()),
            relogin: tokio::sync::Mutex::new(()),
        });
        Ok((client, resp))
    }

    /// The server address this client was given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The token this client presents.
    pub(crate) fn token(&self) -> &str {
        &self.pool.token
    }

    /// How long calls wait for an unreachable server.
    pub fn retry_timeout(&self) -> Duration {
        self.retry_timeout
    }

    /// This client's session id.
    pub fn session(&self) -> u64 {
        self.session.load(Ordering::Relaxed)
    }

    /// Notes a file this client opened.
    pub fn opened(&self, ino: u64) {
        if let Ok(mut m) = self.open.lock() {
            *m.entry(ino).or_insert(0) += 1;
        }
    }

    /// Notes a file this client closed.
    pub fn closed(&self, ino: u64) {
        if let Ok(mut m) = self.open.lock()
            && let Some(n) = m.get_mut(&ino)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&ino);
            }
        }
    }

    async fn reregister(&self, seen: u64) -> Result<()> {
        let _g = self.relogin.lock().await;
        if self.session() != seen {
            return Ok(());
        }
        let open: Vec<u64> = self
            .open
            .lock()
            .map(|m| m.iter().flat_map(|(ino, n)| std::iter::repeat_n(*ino, *n as usize)).collect())
            .unwrap_or_default();
        let req = pb::MountReq {
            volume: self.volume.clone(),
            client: self.client_name.clone(),
            open_inos: open,
            session: seen,
            client_version: env!("CARGO_PKG_VERSION").into(),
            peer_addr: self.peer_addr.clone(),
        };
        let resp: pb::MountResp =
            self.pool.unary(wire::Method::Mount, &req).await.map_err(|s| VfsError::from_status(&s))?;
        self.session.store(resp.session, Ordering::Relaxed);
        tracing::info!(session = resp.session, "session re-established with the server");
        Ok(())
    }

    /// Runs one call, retrying while the server is unreachable and re-registering the session
    /// if the server forgot it. `make` builds the request for the current session id.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: wire::Method,
        mut make: impl FnMut(u64) -> Req,
    ) -> Result<Resp> {
        let deadline = Instant::now() + self.retry_timeout;
        let mut delay = Duration::from_millis(20);
        let mut relogins = 0;
        let mut warned = false;
        loop {
            let session = self.session();
            match self.pool.unary(method, &make(session)).await {
                Ok(r) => {
                    if warned {
                        tracing::info!(op = ?method, "strata server reachable again");
                    }
                    return Ok(r);
                }
                Err(s) if session_unknown(&s) && relogins < 3 => {
                    relogins += 1;
                    if let Err(e) = self.reregister(session).await {
                        if Instant::now() >= deadline {
                            return Err(e);
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
                Err(s) if transient(&s) && Instant::now() < deadline => {
                    if !warned {
                        tracing::warn!(op = ?method, error = %s.message(), "strata server unreachable; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(s) => return Err(VfsError::from_status(&s)),
            }
        }
    }
}
