//! The clients of `strata server`: the session client of a mount (framed transport, retries
//! while the server is unreachable so a restart is survived without a remount, transparent
//! re-registration of the session when the server no longer knows it) and the gRPC admin
//! client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let header = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| VfsError::Unauthenticated("the token holds characters not allowed in a header".into()))?;
    Ok((channel, TokenInterceptor { header }))
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

/// Connections of the framed transport, used one call at a time each.
struct Pool {
    /// The servers this client may use (several share one metadata database); new connections
    /// go to `current` and fail over to the next one that answers.
    addrs: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    token: String,
    idle: Mutex<Vec<TcpStream>>,
    idle_sync: Mutex<Vec<std::net::TcpStream>>,
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

    /// Server addresses in the order to try them: the current one first.
    fn candidates(&self) -> impl Iterator<Item = (usize, &str)> {
        let n = self.addrs.len();
        let first = self.current.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| (first + i) % n).map(|i| (i, self.addrs[i].as_str()))
    }

    fn failed_over(&self, from: usize, to: usize) {
        if from != to && self.current.swap(to, Ordering::Relaxed) != to {
            tracing::warn!(server = %self.addrs[to], previous = %self.addrs[from], "failed over to another strata server");
        }
    }

    fn connect_sync(&self) -> Result<std::net::TcpStream, Status> {
        let mut last = None;
        let from = self.current.load(Ordering::Relaxed) % self.addrs.len().max(1);
        for (i, addr) in self.candidates() {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => {
                    self.failed_over(from, i);
                    return Ok(s);
                }
                Err(e) => last = Some(unavailable(&format!("connect to {addr}"), e)),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no server address")))
    }

    async fn connect(&self) -> Result<TcpStream, Status> {
        let mut last = None;
        let from = self.current.load(Ordering::Relaxed) % self.addrs.len().max(1);
        for (i, addr) in self.candidates() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    self.failed_over(from, i);
                    return Ok(s);
                }
                Err(e) => last = Some(unavailable(&format!("connect to {addr}"), e)),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no server address")))
    }

    fn open_sync(&self) -> Result<std::net::TcpStream, Status> {
        use std::io::Write;
        let mut s = self.connect_sync()?;
        let _ = s.set_nodelay(true);
        s.write_all(&self.hello()).map_err(|e| unavailable("send hello", e))?;
        let (status, _, body) = wire::read_frame_sync(&mut s).map_err(|e| unavailable("read hello answer", e))?;
        if status != wire::OK {
            return Err(decode_error(body));
        }
        Ok(s)
    }

    fn unary_sync<Req: Message, Resp: Message + Default>(
        &self,
        method: wire::Method,
        req: &Req,
    ) -> Result<Resp, Status> {
        let idle = self.idle_sync.lock().ok().and_then(|mut v| v.pop());
        let mut s = match idle {
            Some(s) => s,
            None => self.open_sync()?,
        };
        let _busy = wire::Busy::start();
        wire::write_frame_sync(&mut s, method as u16, 0, &req.encode_to_vec())
            .map_err(|e| unavailable("send request", e))?;
        wire::spin_until_readable(&s, SPIN, 1);
        let (status, _, payload) = wire::read_frame_sync(&mut s).map_err(|e| unavailable("read response", e))?;
        if let Ok(mut v) = self.idle_sync.lock() {
            v.push(s);
        }
        decode_reply(status, payload)
    }

    async fn open(&self) -> Result<TcpStream, Status> {
        let mut s = self.connect().await?;
        let _ = s.set_nodelay(true);
        s.write_all(&self.hello()).await.map_err(|e| unavailable("send hello", e))?;
        let (status, _, body) = wire::read_frame(&mut s).await.map_err(|e| unavailable("read hello answer", e))?;
        if status != wire::OK {
            return Err(decode_error(body));
        }
        Ok(s)
    }

    async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        method: wire::Method,
        req: &Req,
    ) -> Result<Resp, Status> {
        if DIRECT.with(|d| d.get()) {
            return self.unary_sync(method, req);
        }
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut s = match idle {
            Some(s) => s,
            None => self.open().await?,
        };
        let body = req.encode_to_vec();
        wire::write_frame(&mut s, method as u16, 0, &body).await.map_err(|e| unavailable("send request", e))?;
        let (status, _, payload) = wire::read_frame(&mut s).await.map_err(|e| unavailable("read response", e))?;
        if let Ok(mut v) = self.idle.lock() {
            v.push(s);
        }
        decode_reply(status, payload)
    }
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
    volume: String,
    client_name: String,
    session: AtomicU64,
    retry_timeout: Duration,
    /// Inodes this client holds open, re-announced when the session is re-established.
    open: Mutex<HashMap<u64, u32>>,
    relogin: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects to `server` with `token` and registers a session for `volume`. `server` may list
    /// several comma-separated addresses of servers sharing one metadata store: the client
    /// uses the first that answers and fails over to another when it stops answering.
    pub async fn mount(
        server: &str,
        token: &str,
        volume: &str,
        client_name: &str,
        retry_timeout: Duration,
    ) -> Result<(Arc<Client>, pb::MountResp)> {
        let addrs: Vec<String> = server
            .split(',')
            .map(|a| a.trim().trim_start_matches("http://").trim_end_matches('/').to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if addrs.is_empty() {
            return Err(VfsError::errno_msg(libc::EINVAL, format!("no server address in {server:?}")));
        }
        let addr = addrs.join(",");
        let pool = Pool {
            addrs,
            current: std::sync::atomic::AtomicUsize::new(0),
            token: token.trim().to_string(),
            idle: Mutex::new(Vec::new()),
            idle_sync: Mutex::new(Vec::new()),
        };
        let conn = pool.open().await.map_err(|s| match VfsError::from_status(&s) {
            VfsError::Unavailable(m) => VfsError::Unavailable(format!("cannot reach strata server at {addr}: {m}")),
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
            volume: volume.to_string(),
            client_name: client_name.to_string(),
            session: AtomicU64::new(resp.session),
            retry_timeout,
            open: Mutex::new(HashMap::new()),
            relogin: tokio::sync::Mutex::new(()),
        });
        Ok((client, resp))
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
