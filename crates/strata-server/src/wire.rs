//! The framed transport's server side: connections that start with the Strata magic are served
//! here, calling the same `Meta` service implementation as gRPC.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use strata_proto::pb;
use strata_proto::pb::meta_server::Meta as MetaRpc;
use strata_proto::wire::{self, ERR, MAGIC, Method, OK};
use tokio::net::TcpStream;
use tonic::Status;

use crate::auth::Principal;
use crate::service::MetaService;
use crate::state::State;

/// How long a connection thread polls for the next request after answering one: a client in
/// a loop of calls sends it within tens of microseconds.
const SPIN: std::time::Duration = std::time::Duration::from_micros(30);

/// Longest token accepted in a connection hello.
const MAX_TOKEN: usize = 4096;

/// Whether a freshly accepted connection speaks the framed transport (it starts with the
/// magic); waits up to `timeout` for its first bytes.
pub async fn is_framed(sock: &TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; 8];
    let peek = async {
        loop {
            match sock.peek(&mut buf).await {
                Ok(n) if n >= MAGIC.len() => return buf == *MAGIC,
                Ok(0) | Err(_) => return false,
                Ok(n) if buf[..n] != MAGIC[..n] => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    };
    tokio::time::timeout(timeout, peek).await.unwrap_or(false)
}

fn send_error(sock: &mut std::net::TcpStream, id: u32, s: &Status) -> std::io::Result<()> {
    wire::write_frame_sync(sock, ERR, id, &wire::status_to_error(s).encode_to_vec())
}

/// Serves one framed connection on the calling (dedicated) thread until the peer closes it or
/// breaks the protocol. Calls run start to finish on this thread: the kernel wakes it when a
/// request arrives and nothing else is handed between threads, which is what makes a metadata
/// call cheap. Metadata handlers are driven with `rt.block_on`, outside the runtime's workers.
pub fn serve_conn(st: Arc<State>, svc: Arc<MetaService>, mut sock: std::net::TcpStream, rt: tokio::runtime::Handle) {
    let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let secret = match hello(&mut sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(peer, error = %e, "bad connection hello");
            return;
        }
    };
    if let Err(s) = st.auth.principal(&secret) {
        let _ = send_error(&mut sock, 0, &s);
        return;
    }
    if wire::write_frame_sync(&mut sock, OK, 0, &[]).is_err() {
        return;
    }
    loop {
        wire::spin_until_readable(&sock, SPIN, 0);
        let (method, id, payload) = match wire::read_frame_sync(&mut sock) {
            Ok(f) => f,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(peer, error = %e, "closing a framed connection");
                }
                return;
            }
        };
        let started = std::time::Instant::now();
        // A watch waits for changes, idle: it must not keep other connections from polling.
        let busy = (method != Method::Watch as u16).then(wire::Busy::start);
        // Checked on every call, so a revoked token stops working at once.
        let res = match st.auth.principal(&secret) {
            // A watch waits on this thread itself: a runtime timer would panic when the
            // runtime shuts down under it.
            Ok(p) if method == Method::Watch as u16 => watch(&svc, &p, payload),
            Ok(p) => rt.block_on(dispatch(&svc, p, method, payload)),
            Err(s) => Err(s),
        };
        tracing::trace!(method, micros = started.elapsed().as_micros() as u64, ok = res.is_ok(), "call");
        crate::metrics::get().framed(method, started, res.is_ok());
        let sent = match res {
            Ok(body) => wire::write_frame_sync(&mut sock, OK, id, &body),
            Err(s) => send_error(&mut sock, id, &s),
        };
        drop(busy);
        if sent.is_err() {
            return;
        }
    }
}

fn watch(svc: &MetaService, p: &Principal, payload: Bytes) -> Result<Vec<u8>, Status> {
    let r = pb::WatchReq::decode(payload).map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
    Ok(svc.watch_blocking(&p.0, &r)?.encode_to_vec())
}

fn hello(sock: &mut std::net::TcpStream) -> std::io::Result<String> {
    use std::io::Read;
    let mut magic = [0u8; 8];
    sock.read_exact(&mut magic)?;
    let mut len = [0u8; 4];
    sock.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_TOKEN {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "token too long"));
    }
    let mut tok = vec![0u8; len];
    sock.read_exact(&mut tok)?;
    String::from_utf8(tok).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "token is not UTF-8"))
}

macro_rules! route {
    ($svc:expr, $p:expr, $payload:expr, $m:ident, $req:ty) => {{
        let msg = <$req>::decode($payload).map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
        let mut r = tonic::Request::new(msg);
        r.extensions_mut().insert($p);
        let resp = MetaRpc::$m(&**$svc, r).await?;
        Ok(resp.into_inner().encode_to_vec())
    }};
}

macro_rules! dispatch_table {
    ($($name:ident = $n:literal => $handler:ident($req:ident)),* $(,)?) => {
        /// Runs one framed call through the same handler gRPC uses.
        async fn dispatch(svc: &Arc<MetaService>, p: Principal, method: u16, payload: Bytes) -> Result<Vec<u8>, Status> {
            let m = Method::from_u16(method).ok_or_else(|| Status::unimplemented(format!("unknown method {method}")))?;
            match m {
                $(Method::$name => route!(svc, p, payload, $handler, pb::$req),)*
            }
        }
    };
}

strata_proto::meta_methods!(dispatch_table);
