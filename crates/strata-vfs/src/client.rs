//! The RPC client to `strata server`: bearer token on every call, retries while the server is
//! unreachable (a restart is survived without a remount), and transparent re-registration of
//! the session when the server no longer knows it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_proto::pb;
use strata_proto::pb::admin_client::AdminClient;
use strata_proto::pb::meta_client::MetaClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

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

type Rpc = MetaClient<InterceptedService<Channel, TokenInterceptor>>;
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

/// A mounted session's RPC client.
pub struct Client {
    rpc: Rpc,
    volume: String,
    client_name: String,
    session: AtomicU64,
    retry_timeout: Duration,
    /// Inodes this client holds open, re-announced when the session is re-established.
    open: Mutex<HashMap<u64, u32>>,
    relogin: tokio::sync::Mutex<()>,
}

impl Client {
    /// Registers a session for `volume` and returns the client and the server's answer.
    pub async fn mount(
        channel: Channel,
        auth: TokenInterceptor,
        volume: &str,
        client_name: &str,
        retry_timeout: Duration,
    ) -> Result<(Arc<Client>, pb::MountResp)> {
        let rpc = MetaClient::with_interceptor(channel, auth)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let resp = rpc
            .clone()
            .mount(pb::MountReq {
                volume: volume.to_string(),
                client: client_name.to_string(),
                open_inos: Vec::new(),
                session: 0,
            })
            .await
            .map_err(|s| match VfsError::from_status(&s) {
                VfsError::Errno { errno, .. } if errno == libc::ENOENT => VfsError::errno_msg(
                    libc::ENOENT,
                    format!("volume {volume:?} does not exist (see `strata volume list`)"),
                ),
                e => e,
            })?
            .into_inner();
        let client = Arc::new(Client {
            rpc,
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
        let resp = self
            .rpc
            .clone()
            .mount(pb::MountReq {
                volume: self.volume.clone(),
                client: self.client_name.clone(),
                open_inos: open,
                session: seen,
            })
            .await
            .map_err(|s| VfsError::from_status(&s))?
            .into_inner();
        self.session.store(resp.session, Ordering::Relaxed);
        tracing::info!(session = resp.session, "session re-established with the server");
        Ok(())
    }

    /// Runs one RPC, retrying while the server is unreachable and re-registering the session
    /// if the server forgot it.
    pub async fn call<T, F, Fut>(&self, what: &'static str, mut f: F) -> Result<T>
    where
        F: FnMut(Rpc, u64) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.retry_timeout;
        let mut delay = Duration::from_millis(20);
        let mut relogins = 0;
        let mut warned = false;
        loop {
            let session = self.session();
            match f(self.rpc.clone(), session).await {
                Ok(r) => {
                    if warned {
                        tracing::info!(op = what, "strata server reachable again");
                    }
                    return Ok(r.into_inner());
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
                        tracing::warn!(op = what, error = %s.message(), "strata server unreachable; retrying");
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
