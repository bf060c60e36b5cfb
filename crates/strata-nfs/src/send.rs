//! Writing reply records to a connection. A READ's bytes that lie in mapped block files go to
//! the socket by page reference (`vmsplice` into a pipe, `splice` to the socket) instead of
//! being copied into it: on a sequential copy out the client waits for this copy, so a reply
//! that is queued at once saves it a part of every round trip.
//!
//! Only pages of immutable block files ([`strata_vfs::is_mapped`]) are sent by reference: the
//! socket holds them until the client has read them, long after the reply is dropped, and a
//! heap buffer could by then hold other bytes.

use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;

use crate::reply::Reply;

/// Replies carry at least this many mapped bytes before they are spliced: below it, the pipe's
/// extra calls cost more than the copy saves.
const SPLICE_AT_LEAST: usize = 64 << 10;

/// A mapped segment shorter than this is copied even within a spliced reply.
const SPLICE_SEGMENT_AT_LEAST: usize = 4 << 10;

/// Pipe capacity asked for; the kernel may give less (a limit for unprivileged users).
const PIPE_BYTES: i32 = 1 << 20;

/// The writing side of one connection: its socket, and the pipe its spliced replies pass through.
#[derive(Debug)]
pub struct Sender {
    sock: TcpStream,
    /// Empty between replies; dropped after any failure, which may leave bytes in it.
    pipe: Option<Pipe>,
}

#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A smaller pipe only means more calls per reply.
        // SAFETY: F_SETPIPE_SZ takes an int argument on a descriptor `write` keeps open.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        Ok(Pipe { read, write })
    }
}

impl Sender {
    /// A sender writing to `sock`.
    pub fn new(sock: TcpStream) -> Self {
        Sender { sock, pipe: None }
    }

    /// Writes the whole record; after an error the connection's stream is broken.
    pub fn send(&mut self, reply: &Reply) -> io::Result<()> {
        // Looked up once per segment: each lookup takes the registry's lock.
        let refs: Vec<bool> = reply.data.iter().map(by_reference).collect();
        let mapped: usize = reply.data.iter().zip(&refs).filter(|(_, r)| **r).map(|(d, _)| d.len()).sum();
        if mapped < SPLICE_AT_LEAST {
            return reply.write_to(&mut &self.sock);
        }
        let pipe = match self.pipe.take() {
            Some(p) => p,
            None => match Pipe::new() {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for splicing: copying the reply");
                    return reply.write_to(&mut &self.sock);
                }
            },
        };
        self.spliced(&pipe, reply, &refs)?;
        self.pipe = Some(pipe);
        Ok(())
    }

    /// Sends `reply`, the segments marked in `refs` by reference through `pipe`.
    fn spliced(&self, pipe: &Pipe, reply: &Reply, refs: &[bool]) -> io::Result<()> {
        let sock = self.sock.as_raw_fd();
        let last = reply.data.iter().rposition(|d| !d.is_empty());
        send_all(sock, &reply.head, last.is_some())?;
        for (i, (d, &by_ref)) in reply.data.iter().zip(refs).enumerate() {
            let more = last.is_some_and(|l| i < l);
            if by_ref {
                splice_all(pipe, sock, d, more)?;
            } else {
                send_all(sock, d, more)?;
            }
        }
        Ok(())
    }
}

fn by_reference(d: &Bytes) -> bool {
    d.len() >= SPLICE_SEGMENT_AT_LEAST && strata_vfs::is_mapped(d)
}

/// Retries a call interrupted by a signal.
fn retry(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = f();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Copies `buf` into the socket; `more` holds the segment back for the bytes that follow.
fn send_all(sock: RawFd, mut buf: &[u8], more: bool) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    while !buf.is_empty() {
        // SAFETY: sends from a live slice of `buf.len()` bytes.
        let n = retry(|| unsafe { libc::send(sock, buf.as_ptr().cast(), buf.len(), flags) })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Hands `data`'s pages to the pipe and moves them on to the socket, a pipeful at a time.
fn splice_all(pipe: &Pipe, sock: RawFd, data: &[u8], more: bool) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        let iov = IoSlice::new(rest);
        // SAFETY: the iovec describes a live slice; without SPLICE_F_GIFT the kernel only takes
        // references to its pages, which stay valid however long it holds them (see the module).
        let n =
            retry(|| unsafe { libc::vmsplice(pipe.write.as_raw_fd(), (&raw const iov).cast::<libc::iovec>(), 1, 0) })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let flags = if more || done + n < data.len() { libc::SPLICE_F_MORE } else { 0 };
            // SAFETY: moves at most `left` bytes between two descriptors we keep open.
            let m = retry(|| unsafe {
                libc::splice(pipe.read.as_raw_fd(), std::ptr::null_mut(), sock, std::ptr::null_mut(), left, flags)
            })?;
            if m == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= m;
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn mapped(data: &[u8]) -> io::Result<(Bytes, tempfile::TempPath)> {
        let mut f = tempfile::NamedTempFile::new()?;
        f.write_all(data)?;
        let (file, path) = f.into_parts();
        // SAFETY: the temporary file is not written again (only deleted, by a test).
        let b = unsafe { strata_blocks::mapped::map_immutable(&file, data.len()) }?;
        Ok((b, path))
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn reply(head: &[u8], segments: Vec<Bytes>) -> Reply {
        let mut r = Reply { head: [&[0u8; 4][..], head].concat(), data: Vec::new() };
        r.push_opaque(segments);
        r.seal();
        r
    }

    /// A loopback connection: (sending side, receiving side), with socket buffers of `buf` bytes.
    fn connection(buf: i32) -> io::Result<(Sender, TcpStream)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        for (fd, opt) in [(client.as_raw_fd(), libc::SO_RCVBUF), (server.as_raw_fd(), libc::SO_SNDBUF)] {
            // SAFETY: sets an int option from a live int on a descriptor the stream keeps open.
            let rc = unsafe {
                libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const buf).cast(), size_of::<i32>() as u32)
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok((Sender::new(server), client))
    }

    #[test]
    fn mapped_and_copied_segments_arrive_in_order() -> io::Result<()> {
        let (map, _path) = mapped(&pattern(3 << 20, 7))?;
        let heap = Bytes::from(pattern(70_000, 99));
        // Mapped, heap, a short mapped slice (copied), the mapped rest; odd lengths, so padded.
        let big = || {
            reply(&[1, 2, 3, 4], vec![map.slice(5..2_000_001), heap.clone(), map.slice(10..20), map.slice(2_000_001..)])
        };
        let replies = [big(), reply(&[9], vec![Bytes::from_static(b"xyz")]), big()];
        let want: Vec<u8> = replies.iter().flat_map(Reply::to_vec).collect();
        let (mut tx, mut rx) = connection(64 << 10)?;
        // Far more than the socket buffers hold: the peer reads while the replies are sent.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).map(|_| got)
        });
        for r in &replies {
            tx.send(r)?;
        }
        assert!(tx.pipe.is_some(), "the large replies went through the pipe");
        drop(tx);
        let got = reader.join().map_err(|_| io::Error::other("reader panicked"))??;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the peer read other bytes than were sent");
        Ok(())
    }

    #[test]
    fn bytes_in_flight_outlive_the_mapping_and_the_file() -> io::Result<()> {
        let data = pattern(128 << 10, 3);
        let (map, path) = mapped(&data)?;
        let r = reply(&[5], vec![map.clone()]);
        let want = r.to_vec();
        // Buffers that hold the whole reply: it is all sent before the peer reads a byte.
        let (mut tx, mut rx) = connection(1 << 20)?;
        tx.send(&r)?;
        assert!(tx.pipe.is_some(), "the reply went through the pipe");
        drop((r, map, tx));
        path.close()?;
        let mut got = Vec::new();
        rx.read_to_end(&mut got)?;
        assert!(got == want, "bytes in flight changed after the mapping and its file went away");
        Ok(())
    }

    #[test]
    fn small_and_heap_replies_are_copied() -> io::Result<()> {
        let (map, _path) = mapped(&pattern(1 << 20, 1))?;
        let (mut tx, mut rx) = connection(1 << 20)?;
        let small = reply(&[1], vec![map.slice(..SPLICE_AT_LEAST - 1)]);
        let heap = reply(&[2], vec![Bytes::from(pattern(200_000, 2))]);
        tx.send(&small)?;
        tx.send(&heap)?;
        assert!(tx.pipe.is_none(), "no pipe for replies without enough mapped bytes");
        drop(tx);
        let mut got = Vec::new();
        rx.read_to_end(&mut got)?;
        assert!(got == [small.to_vec(), heap.to_vec()].concat());
        Ok(())
    }
}
