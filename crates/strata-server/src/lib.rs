//! `strata server`: the metadata service and control plane. It alone touches the metadata
//! store; clients reach it over authenticated gRPC.

pub mod admin;
pub mod auth;
pub mod blocks;
pub mod changes;
pub mod control;
pub mod fsck;
pub mod gc;
pub mod inspect;
pub mod journal;
pub mod metrics;
pub mod open_notes;
pub mod ops;
pub mod presence;
pub mod rest;
pub mod service;
pub mod state;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata_meta::{Meta, StateMode};
use strata_proto::pb::admin_server::AdminServer;
use strata_proto::pb::blocks_server::BlocksServer;
use strata_proto::pb::meta_server::MetaServer;
use tonic::service::interceptor::InterceptedService;

pub use gc::GcConfig;
use state::State;

/// Largest gRPC message either side accepts (big directories, long slice lists, and the
/// largest block: 64 MiB plus its frame and the message's own framing).
pub const MAX_MESSAGE: usize = 256 << 20;

/// Name of the admin token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// What can stop the server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The metadata store failed to open.
    #[error("metadata store: {0}")]
    Meta(#[from] strata_meta::MetaError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The RPC transport failed.
    #[error("rpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Blocks journaled before a crash could not be made durable again.
    #[error("restoring journaled blocks: {0}")]
    Journal(String),
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds `meta.db` (unless `meta_url` says otherwise), `blocks/` and `admin.token`.
    pub data_dir: PathBuf,
    /// Metadata store URL (`sqlite:///path` or `postgres://…`); default `DATA_DIR/meta.db`.
    pub meta_url: Option<String>,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Background loop timings.
    pub gc: GcConfig,
    /// Keep open files, sessions and locks in the metadata store even on SQLite (always so on
    /// PostgreSQL, where several servers may share the database).
    pub shared_state: bool,
}

/// A server ready to serve: store opened, token bootstrapped, port bound.
pub struct Server {
    st: Arc<State>,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    gc: GcConfig,
}

fn data_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::DataDir { path: path.to_path_buf(), source }
}

impl Server {
    /// Opens the data directory and binds the listen address.
    pub async fn bind(cfg: &ServerConfig) -> Result<Self, ServerError> {
        let dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(data_err(&dir))?;
        let dir = std::fs::canonicalize(&dir).map_err(data_err(&cfg.data_dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(data_err(&dir))?;
        let url = cfg.meta_url.clone().unwrap_or_else(|| format!("sqlite://{}", dir.join("meta.db").display()));
        let shared = cfg.shared_state;
        let meta_url = url.clone();
        let meta = tokio::task::spawn_blocking(move || -> Result<(Meta, Option<String>), ServerError> {
            let kv = strata_meta::kv::open(&url)?;
            // A PostgreSQL database is there to be shared by several servers; SQLite is one
            // server's embedded store, where in-memory state is faster.
            let mode = if shared || kv.name() == "postgres" { StateMode::Shared } else { StateMode::Local };
            let m = Meta::with_mode(kv, mode)?;
            if let Some(c) = m.bootstrap_default_class()? {
                tracing::info!(class = %c.name, "created the default storage class");
            }
            let t = m.bootstrap_admin_token()?;
            Ok((m, t))
        })
        .await
        .map_err(|e| ServerError::DataDir { path: dir.clone(), source: std::io::Error::other(e) })??;
        let (meta, new_token) = meta;
        let token_path = dir.join(ADMIN_TOKEN_FILE);
        if let Some(secret) = new_token {
            write_secret(&token_path, &secret).map_err(data_err(&token_path))?;
            tracing::info!(path = %token_path.display(), "created the admin token");
        } else if !token_path.exists() {
            // Normal for the second server of a shared database: the first one wrote it.
            tracing::info!(
                path = %token_path.display(),
                "no admin token file here: the server that first used this metadata store wrote it"
            );
        }
        let blocks = dir.join("blocks");
        std::fs::create_dir_all(&blocks).map_err(data_err(&blocks))?;
        let listen_err = |source| ServerError::Listen { addr: cfg.listen, source };
        let listener = std::net::TcpListener::bind(cfg.listen).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let on_postgres = meta.engine() == "postgres";
        let st =
            Arc::new(State::new(Arc::new(meta), dir.clone(), format!("file://{}", blocks.display()), server_id(addr)));
        if on_postgres && !cfg.gc.open_grace.is_zero() {
            // Opens of linked files go unrecorded while the relay is heard (`open_notes.rs`).
            st.meta.set_open_grace(cfg.gc.open_grace);
            st.meta.set_unrecorded_opens(true);
            let (tx, rx) = std::sync::mpsc::channel();
            st.changes.send_open_notes(tx);
            let (meta, me) = (st.meta.clone(), st.server_id.clone());
            std::thread::Builder::new()
                .name("strata-open-notes".into())
                .spawn(move || open_notes::record_noted_opens(meta, rx, me))
                .map_err(|e| ServerError::DataDir { path: dir.clone(), source: e })?;
        }
        if on_postgres {
            // Clients of the other servers on this database learn of changes made here.
            st.changes.relay_through_postgres(&meta_url);
        }
        Ok(Server { st, listener, addr, gc: cfg.gc })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let st = self.st.clone();
        // Blocks whose durability rests on journaled copies (commits just before a crash):
        // rewritten where the copy shows them missing or torn, before anyone reads them.
        match journal::flush(&st).await {
            Ok((n, fixed)) if n > 0 => tracing::info!(blocks = n, rewritten = fixed, "synced journaled blocks"),
            Ok(_) => {}
            Err(e) => return Err(ServerError::Journal(e)),
        }
        // Work a crash cut short: snapshot and volume deletions are finished; clones half copied are
        // removed (with shared state another server may be copying one right now, so only a
        // server that owns the store does this).
        let meta = st.meta.clone();
        let resumed = tokio::task::spawn_blocking(move || -> strata_meta::Result<(usize, usize, Vec<String>)> {
            let n = meta.resume_snapshot_deletions()?;
            let vols = meta.resume_volume_removals()?;
            let clones = if meta.is_shared() { Vec::new() } else { meta.remove_unfinished_clones()? };
            Ok((n, vols, clones))
        })
        .await;
        match resumed {
            Ok(Ok((n, vols, clones))) => {
                if n > 0 {
                    tracing::info!(snapshots = n, "finished deleting snapshots");
                }
                if vols > 0 {
                    tracing::info!(volumes = vols, "finished deleting volumes");
                }
                for c in clones {
                    tracing::warn!(volume = %c, "removed a clone that a crash left half copied; create it again");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "finishing interrupted snapshot work failed; the next start repeats it")
            }
            Err(e) => tracing::error!(error = %e, "snapshot recovery task failed"),
        }
        let gc = tokio::spawn(gc::run(st.clone(), self.gc));
        st.meta.set_defer_destroy(true);
        st.meta.set_snapshot_delete_batch(self.gc.snapshot_delete_batch);
        st.meta.set_snapshot_delete_pause(self.gc.snapshot_delete_pause);
        let reaper = tokio::spawn(gc::reap_doomed(st.clone()));
        let presence = tokio::spawn(presence::run(st.clone()));
        let svc = Arc::new(service::MetaService::new(st.clone()));
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|source| ServerError::Listen { addr: self.addr, source })?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio::spawn(accept(listener, tx, st.clone(), svc.clone()));
        let grpc_conns = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let a1 = st.clone();
        let meta = InterceptedService::new(
            MetaServer::from_arc(svc).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
            move |r| a1.auth.check(r),
        );
        let a2 = st.clone();
        let admin =
            InterceptedService::new(AdminServer::new(admin::AdminService::new(st.clone())), move |r| a2.auth.check(r));
        let a3 = st.clone();
        let blocks = InterceptedService::new(
            BlocksServer::new(blocks::BlocksService::new(st.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            move |r| a3.auth.check(r),
        );
        let state = if st.meta.is_shared() { "shared" } else { "local" };
        tracing::info!(addr = %self.addr, data = %st.data_dir.display(), engine = st.meta.engine(), state, "strata server listening");
        metrics::get();
        let res = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .layer(strata_metrics::grpc::Timing(metrics::grpc))
            // Blocks are megabytes: let HTTP/2 flow control grow past its 64 KiB start.
            .http2_adaptive_window(Some(true))
            .add_service(meta)
            .add_service(admin)
            .add_service(blocks)
            .serve_with_incoming_shutdown(grpc_conns, shutdown)
            .await;
        gc.abort();
        reaper.abort();
        presence.abort();
        presence::forget(&st).await;
        acceptor.abort();
        // Unlinked files not destroyed yet would otherwise wait for the next start's reaping.
        let meta = st.meta.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || meta.reap_doomed()).await {
            tracing::warn!(error = %e, "destroying unlinked files failed; the next start does it");
        }
        // Make everything committed so far durable before exiting.
        if let Err(e) = journal::flush(&st).await {
            tracing::error!(error = %e, "final sync of journaled blocks failed; the next start repeats it");
        }
        let meta = st.meta.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || meta.sync()).await {
            tracing::error!(error = %e, "final metadata sync failed");
        }
        res.map_err(ServerError::from)
    }
}

/// What a connection speaks, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    /// The framed transport (`STRATA1\0`).
    Framed,
    /// An HTTP/1.x request: the REST API.
    Http1,
    /// Anything else: gRPC (the HTTP/2 preface `PRI * HTTP/2.0`).
    Grpc,
}

/// Longest HTTP/1 method token recognised.
const MAX_METHOD: usize = 15;

/// What `first` (the bytes received so far) starts, or `None` while it could still be more than
/// one protocol. HTTP/1 is any method token (uppercase letters) and a space, so that the REST
/// API answers methods it does not serve with 405 instead of a dropped connection; the HTTP/2
/// preface (`PRI * HTTP/2.0`) is gRPC.
fn classify(first: &[u8]) -> Option<Proto> {
    let magic = strata_proto::wire::MAGIC;
    if first.starts_with(magic) {
        return Some(Proto::Framed);
    }
    if magic.starts_with(first) {
        return None;
    }
    const H2: &[u8] = b"PRI ";
    if first.starts_with(H2) {
        return Some(Proto::Grpc);
    }
    let token = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match first.get(token) {
        None if token <= MAX_METHOD => None,
        Some(b' ') if token >= 1 => Some(Proto::Http1),
        _ => Some(Proto::Grpc),
    }
}

/// Waits up to `timeout` for a connection's first bytes and tells what it speaks (gRPC, which
/// answers anything unknown, when it says nothing in time).
async fn sniff(sock: &tokio::net::TcpStream, timeout: Duration) -> Proto {
    let mut buf = [0u8; MAX_METHOD + 1];
    let peek = async {
        loop {
            match sock.peek(&mut buf).await {
                Ok(0) | Err(_) => return Proto::Grpc,
                Ok(n) => match classify(&buf[..n]) {
                    Some(p) => return p,
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                },
            }
        }
    };
    tokio::time::timeout(timeout, peek).await.unwrap_or(Proto::Grpc)
}

/// Accepts connections and routes each by its first bytes: the framed transport is served
/// here, HTTP/1 requests go to the REST API, everything else is handed to gRPC.
async fn accept(
    listener: tokio::net::TcpListener,
    grpc: tokio::sync::mpsc::Sender<std::io::Result<tokio::net::TcpStream>>,
    st: Arc<State>,
    svc: Arc<service::MetaService>,
) {
    let rest = rest::router(st.clone());
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let (grpc, st, svc, rest) = (grpc.clone(), st.clone(), svc.clone(), rest.clone());
        tokio::spawn(async move {
            let proto = sniff(&sock, Duration::from_secs(10)).await;
            if proto == Proto::Http1 {
                rest::serve_conn(rest, sock).await;
            } else if proto == Proto::Framed {
                let rt = tokio::runtime::Handle::current();
                let std_sock = sock.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s));
                match std_sock {
                    Ok(s) => {
                        let spawned = std::thread::Builder::new()
                            .name("strata-conn".into())
                            .spawn(move || wire::serve_conn(st, svc, s, rt));
                        if let Err(e) = spawned {
                            tracing::error!(error = %e, "cannot start a connection thread");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot take over a framed connection"),
                }
            } else {
                let _ = grpc.send(Ok(sock)).await;
            }
        });
    }
}

/// How this server names itself in session and server records: its listen address, or, for
/// an address of every interface (`0.0.0.0:7420`, which every server of a cluster may use),
/// this host's name and the port, so that servers on different hosts never share a name
/// (unrecorded opens tell servers apart by it, see `open_notes.rs`).
fn server_id(addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if host.is_empty() || host == "localhost" {
        // No name to go by: one of this process's own.
        return format!("{addr}#{:08x}", rand::random::<u32>());
    }
    format!("{host}:{}", addr.port())
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Default background timings.
pub fn default_gc() -> GcConfig {
    GcConfig {
        interval: Duration::from_secs(1),
        session_timeout: Duration::from_secs(60),
        orphan_grace: Duration::from_secs(120),
        sweep_interval: Duration::from_secs(3600),
        orphan_block_age: Duration::from_secs(3600),
        journal_delay: Duration::from_secs(1),
        snapshot_delete_batch: strata_meta::DEFAULT_SNAPSHOT_DELETE_BATCH,
        snapshot_delete_pause: Duration::ZERO,
        open_grace: strata_meta::OPEN_GRACE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(classify(b"STRATA1\0"), Some(Proto::Framed));
        assert_eq!(classify(b"STRA"), None);
        assert_eq!(classify(b"PRI * HTTP/2.0"), Some(Proto::Grpc));
        assert_eq!(classify(b"GET /v1/volumes HTTP/1.1"), Some(Proto::Http1));
        assert_eq!(classify(b"DELETE /"), Some(Proto::Http1));
        assert_eq!(classify(b"PATCH /"), Some(Proto::Http1));
        assert_eq!(classify(b"PU"), None);
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b"X"), None);
        assert_eq!(classify(b"x"), Some(Proto::Grpc));
        assert_eq!(classify(b"QUERY /"), Some(Proto::Http1));
        assert_eq!(classify(b"TRACE /"), Some(Proto::Http1));
        assert_eq!(classify(b"PRI"), None);
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQ"), Some(Proto::Grpc));
        assert_eq!(classify(b"PRI "), Some(Proto::Grpc));
    }
}
