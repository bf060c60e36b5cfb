//! Attaching exports to volumes and serving connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Mutex;
use strata_types::{Ctx, FileType};
use strata_vfs::{Vfs, VfsConfig};

use crate::export::ExportSpec;
use crate::files::OpenFiles;
use crate::gateway::{Export, Gateway};
use crate::handle::HandleKey;
use crate::send::Sender;
use crate::wake::{Event, Pending, Waiter, pending};
use std::os::fd::AsRawFd;
use strata_nfs_wire::rpc::{RecordError, read_record};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A volume could not be attached.
    #[error("export {path}: {msg}")]
    Export {
        /// The export path.
        path: String,
        /// What failed.
        msg: String,
    },
    /// Two exports share a path.
    #[error("export path {0} is given twice")]
    Duplicate(String),
}

/// How the gateway reaches the server.
pub struct Attach<'a> {
    /// Server address(es), comma-separated.
    pub server: &'a str,
    /// Token of exports that name none.
    pub token: &'a str,
    /// Client settings for every volume (its `retry_timeout` is how long calls wait for an
    /// unreachable server).
    pub vfs: VfsConfig,
}

/// Attaches every export to its volume with its token (one session per volume and token) and
/// finds the exported directories.
pub async fn attach(specs: Vec<ExportSpec>, how: &Attach<'_>) -> Result<Vec<Arc<Export>>, StartError> {
    let mut sessions: Vec<(String, String, Arc<Vfs>, Arc<OpenFiles>)> = Vec::new();
    let mut out: Vec<Arc<Export>> = Vec::new();
    let host = strata_vfs::host_name();
    for spec in specs {
        let fail = |msg: String| StartError::Export { path: spec.path.clone(), msg };
        if out.iter().any(|e| e.spec.path == spec.path) {
            return Err(StartError::Duplicate(spec.path.clone()));
        }
        let token = match &spec.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| fail(format!("token file {}: {e}", f.display())))?
                .trim()
                .to_string(),
            None => how.token.trim().to_string(),
        };
        let found = sessions.iter().find(|s| s.0 == spec.volume && s.1 == token).map(|s| (s.2.clone(), s.3.clone()));
        let (vfs, files) = match found {
            Some(v) => v,
            None => {
                let name = format!("{host}:nfs{}", spec.path);
                let vfs = Vfs::attach(how.server, &token, &spec.volume, &name, how.vfs.clone())
                    .await
                    .map_err(|e| fail(format!("cannot attach volume {}: {e}", spec.volume)))?;
                let files = OpenFiles::new(vfs.clone());
                sessions.push((spec.volume.clone(), token.clone(), vfs.clone(), files.clone()));
                (vfs, files)
            }
        };
        let parts: Vec<&[u8]> = spec.subpath.split('/').filter(|p| !p.is_empty()).map(str::as_bytes).collect();
        let root = if parts.is_empty() {
            vfs.root()
        } else {
            let (ino, a) = vfs
                .walk(&Ctx::root(), vfs.root(), &parts, true)
                .await
                .map_err(|e| fail(format!("directory {} of volume {}: {e}", spec.subpath, spec.volume)))?;
            if a.kind != FileType::Dir {
                return Err(fail(format!("{} of volume {} is not a directory", spec.subpath, spec.volume)));
            }
            ino
        };
        let key = HandleKey::new(&spec.path, vfs.volume().id, &spec.subpath, &token);
        if out.iter().any(|e| e.key.export_id() == key.export_id()) {
            return Err(fail("its handle id collides with another export's; choose another path".into()));
        }
        // A snapshot of a volume is another file system: its root's high bits (the snapshot's
        // epoch) go into the id.
        let fsid = u64::from(vfs.volume().id) | ((vfs.volume().root >> 40) << 32);
        tracing::info!(
            export = %spec.path, volume = %spec.volume, dir = %spec.subpath, read_only = spec.read_only,
            squash = ?spec.squash, allow = ?spec.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "export ready"
        );
        out.push(Arc::new(Export { spec, vfs, root, key, files, fsid }));
    }
    Ok(out)
}

/// The distinct volume sessions behind the exports.
pub fn sessions(g: &Gateway) -> Vec<Arc<Vfs>> {
    let mut v: Vec<Arc<Vfs>> = Vec::new();
    for e in g.exports() {
        if !v.iter().any(|x| Arc::ptr_eq(x, &e.vfs)) {
            v.push(e.vfs.clone());
        }
    }
    v
}

/// Threads serving the calls of one connection (more calls wait; TCP pushes back on the client).
const PER_CONNECTION: usize = 8;

/// Serves connections on plain threads until the listener fails; calls run on `rt`.
///
/// Each connection gets a few threads, each sleeping until the kernel wakes one of them for the
/// next record ([`crate::wake`]), which it reads, runs and answers. A client with one call in
/// flight is served by one thread from end to end and no thread wakes another, and the VFS's
/// calls to the server go over blocking sockets (`allow_blocking_io`), which on these
/// latency-bound metadata paths saves several thread wake-ups per NFS call.
///
/// At most `max_connections` connections are served at once: one more is closed as soon as it
/// is accepted (each connection holds [`PER_CONNECTION`] threads).
pub fn serve(
    g: Arc<Gateway>,
    listener: std::net::TcpListener,
    rt: tokio::runtime::Handle,
    max_connections: usize,
) -> std::io::Result<()> {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (sock, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: keep serving the connections there are.
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if live.load(Ordering::Acquire) >= max_connections {
            tracing::warn!(client = %peer, limit = max_connections, "refused a connection: too many connections");
            drop(sock);
            continue;
        }
        live.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(live.clone());
        let _ = sock.set_nodelay(true);
        if let Err(e) = connection(g.clone(), sock, peer, rt.clone(), slot) {
            tracing::warn!(client = %peer, error = %e, "cannot serve a connection");
        }
    }
}

struct Conn {
    /// Held while a worker reads one record, so records are never interleaved.
    reading: Mutex<()>,
    writer: Mutex<Sender>,
    sock: std::net::TcpStream,
    /// Wakes one more worker: calls are waiting behind the one just taken.
    more: Event,
    /// Wakes every worker: the connection is over.
    closing: Event,
    peer: SocketAddr,
    /// Counts the connection until its last worker lets go of it.
    _slot: Slot,
}

/// One live connection of a listener's count; released when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn connection(
    g: Arc<Gateway>,
    sock: std::net::TcpStream,
    peer: SocketAddr,
    rt: tokio::runtime::Handle,
    slot: Slot,
) -> std::io::Result<()> {
    tracing::debug!(client = %peer, "connected");
    let conn = Arc::new(Conn {
        reading: Mutex::new(()),
        writer: Mutex::new(Sender::new(sock.try_clone()?)),
        sock,
        more: Event::new()?,
        closing: Event::new()?,
        peer,
        _slot: slot,
    });
    for i in 0..PER_CONNECTION {
        let waiter = Waiter::new(conn.sock.as_raw_fd(), &conn.more, &conn.closing)?;
        let (g, conn, rt) = (g.clone(), conn.clone(), rt.clone());
        std::thread::Builder::new().name(format!("nfs-conn-{i}")).spawn(move || worker(&g, &conn, &waiter, &rt))?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection's next record, `Ok(None)` when another worker took it, `Err` when the
/// connection is over (closed, broken, or sent something that is not RPC).
fn next_record(conn: &Conn) -> Result<Option<Vec<u8>>, ()> {
    let _turn = lock(&conn.reading);
    match pending(&conn.sock) {
        Ok(Pending::Data) => {}
        Ok(Pending::Nothing) => return Ok(None),
        Ok(Pending::Closed) => return Err(()),
        Err(e) => {
            tracing::debug!(client = %conn.peer, error = %e, "connection ended");
            return Err(());
        }
    }
    match read_record(&mut &conn.sock) {
        Ok(Some(r)) if r.len() >= 8 => {
            // More calls already here (a client sending several at once) woke nobody else.
            if pending(&conn.sock).is_ok_and(|p| p == Pending::Data) {
                conn.more.signal();
            }
            Ok(Some(r))
        }
        Ok(Some(r)) => {
            // Not even a transaction id and message type: nothing can be answered.
            tracing::warn!(client = %conn.peer, bytes = r.len(), "closing the connection: record too short for RPC");
            Err(())
        }
        Ok(None) => Err(()),
        Err(RecordError::Io(e)) => {
            tracing::debug!(client = %conn.peer, error = %e, "connection ended");
            Err(())
        }
        Err(e) => {
            tracing::warn!(client = %conn.peer, error = %e, "closing the connection");
            Err(())
        }
    }
}

fn worker(g: &Gateway, conn: &Conn, waiter: &Waiter, rt: &tokio::runtime::Handle) {
    strata_vfs::allow_blocking_io();
    let ip: IpAddr = conn.peer.ip();
    loop {
        match waiter.wait() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(client = %conn.peer, error = %e, "closing the connection: waiting for calls failed");
                break;
            }
        }
        let record = match next_record(conn) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(()) => break,
        };
        match rt.block_on(g.dispatch(ip, &record)) {
            Some(reply) => {
                if lock(&conn.writer).send(&reply).is_err() {
                    break;
                }
            }
            None => tracing::debug!(client = %ip, "ignored a record that is not a call"),
        }
        // No polling for the next call here: the client needs a core to read this reply and
        // send that call, and a worker polling for it (with the metadata server's thread
        // polling after its answer) left it none on two cores. Without the 30 µs poll, stat
        // was 5,800-8,300 instead of 2,700-4,100 calls/s, create 700-790 instead of 570-660
        // files/s (libnfs, four alternations).
    }
    // Wakes the other workers of this connection, whichever way it ended.
    conn.closing.signal();
    let _ = conn.sock.shutdown(std::net::Shutdown::Both);
}
