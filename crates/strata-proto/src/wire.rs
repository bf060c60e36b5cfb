//! The framed transport: the `Meta` service's messages over a plain TCP connection, one request
//! at a time per connection. It exists because a metadata call is latency-bound: on a small
//! machine a gRPC round trip costs about twice a bare socket round trip (HTTP/2 framing and
//! several task hand-offs per call), and file system workloads are chains of such calls.
//!
//! A connection starts with the 8-byte [`MAGIC`] and the token (u32 length + bytes); the
//! server answers one response frame (empty on success). Then each request is a frame
//! `len u32 | method u16 | 0 u16 | id u32 | payload` and each response
//! `len u32 | status u16 | 0 u16 | id u32 | payload`, where status 0 carries the response
//! message and status 1 an [`RpcError`](crate::pb::RpcError). All integers are big-endian.
//! The server listens for both this and gRPC on one port and tells them apart by the magic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pb::RpcError;

/// First bytes of a framed-transport connection (gRPC connections start with "PRI * HT").
pub const MAGIC: &[u8; 8] = b"STRATA1\0";
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 256 << 20;
/// Frame status: success.
pub const OK: u16 = 0;
/// Frame status: the payload is an `RpcError`.
pub const ERR: u16 = 1;

/// The one table of the `Meta` service's calls: `Name = wire number => generated method
/// (request type)`. It hands the table to the macro `$then`, which generates what it needs:
/// [`Method`] here, the framed transport's dispatch in `strata-server`. Adding a call is a
/// line here, the `rpc` in `strata.proto`, and its handler.
#[macro_export]
macro_rules! meta_methods {
    ($then:ident) => {
        $then! {
            Mount = 1 => mount(MountReq),
            Heartbeat = 2 => heartbeat(SessionReq),
            Unmount = 3 => unmount(SessionReq),
            Lookup = 4 => lookup(LookupReq),
            GetAttr = 5 => get_attr(InoReq),
            SetAttr = 6 => set_attr(SetAttrReq),
            Mknod = 7 => mknod(MknodReq),
            Link = 8 => link(LinkReq),
            Unlink = 9 => unlink(NameReq),
            Rmdir = 10 => rmdir(NameReq),
            Rename = 11 => rename(RenameReq),
            Readlink = 12 => readlink(InoReq),
            Readdir = 13 => readdir(ReaddirReq),
            Open = 14 => open(OpenReq),
            Close = 15 => close(CloseReq),
            ReadChunk = 16 => read_chunk(ChunkReq),
            CommitWrites = 17 => commit_writes(CommitReq),
            CompactChunk = 18 => compact_chunk(CompactReq),
            AllocSlices = 19 => alloc_slices(AllocReq),
            Sync = 20 => sync(Empty),
            GetXattr = 21 => get_xattr(XattrReq),
            ListXattr = 22 => list_xattr(InoReq),
            SetXattr = 23 => set_xattr(XattrReq),
            RemoveXattr = 24 => remove_xattr(XattrReq),
            StatFs = 25 => stat_fs(StatFsReq),
            GetLock = 26 => get_lock(LockReq),
            SetLock = 27 => set_lock(LockReq),
            ReleaseLocks = 28 => release_locks(ReleaseLocksReq),
            JournaledBlock = 29 => journaled_block(BlockKeyReq),
            Watch = 30 => watch(WatchReq),
        }
    };
}

macro_rules! method_enum {
    ($($name:ident = $n:literal => $handler:ident($req:ident)),* $(,)?) => {
        /// The calls of the `Meta` service, by wire number.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u16)]
        pub enum Method { $($name = $n),* }

        impl Method {
            /// Every call, in wire-number order.
            pub const ALL: &[Method] = &[$(Method::$name),*];

            /// The method for a wire number.
            pub fn from_u16(v: u16) -> Option<Self> {
                match v { $($n => Some(Method::$name),)* _ => None }
            }

            /// The call's name, as in `strata.proto`.
            pub fn name(self) -> &'static str {
                match self { $(Method::$name => stringify!($name),)* }
            }

            /// The name of the call's request message.
            pub fn request(self) -> &'static str {
                match self { $(Method::$name => stringify!($req),)* }
            }
        }
    };
}

meta_methods!(method_enum);

/// A whole frame (header and payload) ready to be written with one call.
fn encode_frame(kind: u16, id: u32, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    if payload.len() > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"));
    }
    let mut buf = Vec::with_capacity(12 + payload.len());
    buf.put_u32(payload.len() as u32);
    buf.put_u16(kind);
    buf.put_u16(0);
    buf.put_u32(id);
    buf.extend_from_slice(payload);
    Ok(buf)
}

/// A frame header: (payload length, method or status, id); oversized frames are an error.
fn parse_header(head: &[u8; 12]) -> std::io::Result<(usize, u16, u32)> {
    let mut h = &head[..];
    let len = h.get_u32() as usize;
    let kind = h.get_u16();
    let _ = h.get_u16();
    let id = h.get_u32();
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes is too large")));
    }
    Ok((len, kind, id))
}

/// Writes one frame with a single write call.
pub async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    kind: u16,
    id: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&encode_frame(kind, id, payload)?).await
}

/// Reads one frame: (method or status, id, payload). Oversized frames are an error.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u16, u32, Bytes)> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).await?;
    let (len, kind, id) = parse_header(&head)?;
    let mut body = BytesMut::zeroed(len);
    r.read_exact(&mut body).await?;
    Ok((kind, id, body.freeze()))
}

/// Writes one frame on a blocking stream with a single write call.
pub fn write_frame_sync<W: std::io::Write>(w: &mut W, kind: u16, id: u32, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&encode_frame(kind, id, payload)?)
}

/// Reads one frame from a blocking stream.
pub fn read_frame_sync<R: std::io::Read>(r: &mut R) -> std::io::Result<(u16, u32, Bytes)> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)?;
    let (len, kind, id) = parse_header(&head)?;
    let mut body = BytesMut::zeroed(len);
    r.read_exact(&mut body)?;
    Ok((kind, id, body.freeze()))
}

/// Threads of this process polling a socket right now (see [`spin_until_readable`]).
static SPINNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Calls this process is working on or waiting for (see [`Busy`]).
static BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Marks a call in progress (a server handling a request, a client waiting for an answer)
/// while it lives; [`spin_until_readable`] polls only when little else is going on.
pub struct Busy(());

impl Busy {
    /// Counts the calling thread as busy until the guard drops.
    pub fn start() -> Busy {
        BUSY.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Polls a socket for up to `spin` before the caller blocks reading it, if no more than
/// `busy` calls (the caller's own included) are in progress in this process. Answers (and,
/// from a client calling in a loop, the next request) usually come within tens of
/// microseconds; catching them awake saves the sleep and the wake-up, which on virtual machines
/// (an interrupt to an idle virtual CPU) costs as much as the call itself. When other calls are
/// in progress the cores have work, and a poller would only take them from the threads it waits
/// for; so would more pollers than spare cores.
pub fn spin_until_readable(s: &std::net::TcpStream, spin: std::time::Duration, busy: usize) {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let limit = *LIMIT
        .get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).saturating_sub(1).max(1));
    if BUSY.load(Ordering::Acquire) > busy {
        return;
    }
    if SPINNING.fetch_add(1, Ordering::AcqRel) >= limit {
        SPINNING.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    while started.elapsed() < spin && BUSY.load(Ordering::Relaxed) <= busy {
        // SAFETY: a peek of at most one byte into a live buffer on a descriptor `s` keeps open.
        let n = unsafe { libc::recv(s.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n != -1 {
            break;
        }
        std::hint::spin_loop();
    }
    SPINNING.fetch_sub(1, Ordering::AcqRel);
}

/// The wire form of a failed call.
pub fn status_to_error(s: &tonic::Status) -> RpcError {
    RpcError {
        code: s.code() as i32,
        errno: crate::status_errno(s).unwrap_or(0),
        message: s.message().to_string(),
        session_unknown: s.metadata().get(crate::SESSION_KEY).is_some(),
    }
}

/// A failed call as the status a gRPC client would have seen.
pub fn error_to_status(e: RpcError) -> tonic::Status {
    let mut s = if e.errno != 0 {
        crate::errno_status(tonic::Code::from_i32(e.code), e.errno, e.message)
    } else {
        tonic::Status::new(tonic::Code::from_i32(e.code), e.message)
    };
    if e.session_unknown {
        s.metadata_mut().insert(crate::SESSION_KEY, tonic::metadata::MetadataValue::from_static("unknown"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() -> std::io::Result<()> {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, Method::Lookup as u16, 7, b"hello").await?;
        let (k, id, p) = read_frame(&mut b).await?;
        assert_eq!((Method::from_u16(k), id, &p[..]), (Some(Method::Lookup), 7, &b"hello"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_fail() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut head = Vec::new();
        head.put_u32(u32::MAX);
        head.put_u16(4);
        head.put_u16(0);
        head.put_u32(1);
        a.write_all(&head).await.expect("write");
        assert!(read_frame(&mut b).await.is_err(), "a 4 GiB frame is refused before reading it");
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, 0]).await.expect("write");
        drop(a);
        assert!(read_frame(&mut b).await.is_err(), "a truncated header is an error");
    }

    #[test]
    fn blocking_frames_round_trip() -> std::io::Result<()> {
        let mut buf = Vec::new();
        write_frame_sync(&mut buf, OK, 9, b"abc")?;
        let (k, id, p) = read_frame_sync(&mut &buf[..])?;
        assert_eq!((k, id, &p[..]), (OK, 9, &b"abc"[..]));
        assert!(read_frame_sync(&mut &buf[..5]).is_err());
        Ok(())
    }

    #[test]
    fn errors_keep_errno_and_session_flag() {
        let mut s = crate::errno_status(tonic::Code::NotFound, 2, "gone");
        s.metadata_mut().insert(crate::SESSION_KEY, tonic::metadata::MetadataValue::from_static("unknown"));
        let back = error_to_status(status_to_error(&s));
        assert_eq!(back.code(), tonic::Code::NotFound);
        assert_eq!(crate::status_errno(&back), Some(2));
        assert!(back.metadata().get(crate::SESSION_KEY).is_some());
        assert_eq!(Method::from_u16(999), None);
    }

    #[test]
    fn the_method_table_is_the_protos_meta_service() {
        let proto = include_str!("../proto/strata.proto");
        let start = proto.find("service Meta {").expect("service Meta");
        let body = &proto[start..start + proto[start..].find('}').expect("end of service")];
        let rpcs: Vec<(String, String)> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| {
                let (name, rest) = l.split_once('(').expect("rpc line");
                (name.trim().to_string(), rest.split(')').next().unwrap_or("").trim().to_string())
            })
            .collect();
        let table: Vec<(String, String)> =
            Method::ALL.iter().map(|m| (m.name().to_string(), m.request().to_string())).collect();
        assert_eq!(table, rpcs, "the table in wire.rs and the rpcs of strata.proto differ");
        for (i, m) in Method::ALL.iter().enumerate() {
            assert_eq!(Method::from_u16(*m as u16), Some(*m));
            assert!(Method::ALL[..i].iter().all(|o| *o as u16 != *m as u16), "wire number {} twice", *m as u16);
        }
    }
}
