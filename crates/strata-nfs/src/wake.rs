//! Waiting for a connection's next call without threads waking each other.
//!
//! Each worker thread of a connection sleeps in an epoll set of its own, where the socket is
//! registered with `EPOLLEXCLUSIVE`: when a call arrives the kernel wakes one sleeper, and a
//! worker that has just taken a call hands nothing on. (Workers taking turns on a lock around
//! a blocking `read` cost a futex wake and a context switch per call, which on a small VM was a
//! third of the gateway's CPU time on metadata-heavy loads.) Two events complete it: `more`,
//! also exclusive, which a worker that finds further calls already waiting behind the one it
//! took signals to wake one more worker (calls that arrive together, as a kernel client sends
//! them, are then served in parallel, since their arrival woke only one); and `closing`,
//! registered without the flag, so one signal wakes every worker when the connection ends.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What a socket holds right now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Bytes of a call (perhaps only its start).
    Data,
    /// Nothing yet: another worker took the call that woke this one.
    Nothing,
    /// The peer closed the connection.
    Closed,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// An event workers of a connection wait on (an `eventfd`).
pub(crate) struct Event(OwnedFd);

impl Event {
    /// A new, unsignalled event.
    pub(crate) fn new() -> io::Result<Event> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a descriptor we own.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Event(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Signals the event: wakes one waiter where it is registered exclusive, all otherwise.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor this value keeps open. A
        // failure (the counter saturated) still leaves the event readable, which is all we need.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// One worker's place to sleep until its connection has a call or is closing.
pub(crate) struct Waiter {
    ep: OwnedFd,
    /// The connection's `more` event (owned by the connection, which outlives its workers).
    more: RawFd,
}

const SOCKET: u64 = 1;
const CLOSING: u64 = 2;
const MORE: u64 = 3;

impl Waiter {
    /// Watches `sock` and `more` (each wakes one of the connection's workers) and `closing`
    /// (wakes them all).
    pub(crate) fn new(sock: RawFd, more: &Event, closing: &Event) -> io::Result<Waiter> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a descriptor we own.
        let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `ep` was just returned by epoll_create1 and is owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let add = |fd: RawFd, events: libc::c_int, token: u64| -> io::Result<()> {
            let mut ev = libc::epoll_event { events: events as u32, u64: token };
            // SAFETY: `ev` is a live epoll_event; both descriptors are open.
            check(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
        };
        // EPOLLEXCLUSIVE allows no other flags (EPOLLRDHUP would be EINVAL); a hang-up is always reported.
        add(sock, libc::EPOLLIN | libc::EPOLLEXCLUSIVE, SOCKET)?;
        add(more.0.as_raw_fd(), libc::EPOLLIN | libc::EPOLLEXCLUSIVE, MORE)?;
        add(closing.0.as_raw_fd(), libc::EPOLLIN, CLOSING)?;
        Ok(Waiter { ep, more: more.0.as_raw_fd() })
    }

    /// Sleeps until the socket may hold a call; `false` when the connection is closing instead.
    pub(crate) fn wait(&self) -> io::Result<bool> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 3];
        loop {
            // SAFETY: `evs` is a live array of 3 events and we pass its length.
            let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), 3, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let ready = &evs[..n as usize];
            if ready.iter().any(|e| e.u64 == CLOSING) {
                return Ok(false);
            }
            if ready.iter().any(|e| e.u64 == MORE) {
                // This worker answers the signal; left set, it would wake the others in turn.
                let mut n: u64 = 0;
                // SAFETY: reads at most 8 bytes into a live u64 from the connection's eventfd,
                // which outlives this worker; non-blocking, and "nothing to read" is fine.
                let _ = unsafe { libc::read(self.more, (&mut n as *mut u64).cast(), 8) };
            }
            if !ready.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// Looks at `sock` without blocking or consuming anything.
pub(crate) fn pending(sock: &impl AsRawFd) -> io::Result<Pending> {
    let mut byte = [0u8; 1];
    // SAFETY: a peek of at most one byte into a live buffer, on a descriptor the caller keeps open.
    let n = unsafe { libc::recv(sock.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        0 => Ok(Pending::Closed),
        n if n > 0 => Ok(Pending::Data),
        _ => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => Ok(Pending::Nothing),
                io::ErrorKind::Interrupted => Ok(Pending::Nothing),
                _ => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        (c, s)
    }

    #[test]
    fn pending_tells_data_nothing_and_close_apart() {
        let (mut c, s) = pair();
        assert_eq!(pending(&s).expect("peek"), Pending::Nothing);
        c.write_all(b"x").expect("write");
        let (more, closing) = (Event::new().expect("eventfd"), Event::new().expect("eventfd"));
        let w = Waiter::new(s.as_raw_fd(), &more, &closing).expect("epoll");
        assert!(w.wait().expect("wait"), "readable socket wakes the waiter");
        assert_eq!(pending(&s).expect("peek"), Pending::Data);
        // The peek consumed nothing.
        assert_eq!(pending(&s).expect("peek"), Pending::Data);
        drop(c);
        let mut buf = [0u8; 1];
        std::io::Read::read_exact(&mut &s, &mut buf).expect("read the byte");
        assert_eq!(pending(&s).expect("peek"), Pending::Closed);
    }

    /// `n` threads waiting on one connection's socket and events; each sends what its wait
    /// returned. The returned stream is the connection's peer, kept open.
    fn waiters(n: usize) -> (TcpStream, Arc<Event>, Arc<Event>, std::sync::mpsc::Receiver<bool>) {
        let (c, s) = pair();
        let (more, closing) = (Arc::new(Event::new().expect("eventfd")), Arc::new(Event::new().expect("eventfd")));
        let s = Arc::new(s);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let (closing, more, s, tx) = (closing.clone(), more.clone(), s.clone(), tx.clone());
            std::thread::spawn(move || {
                let w = Waiter::new(s.as_raw_fd(), &more, &closing).expect("epoll");
                tx.send(w.wait().expect("wait")).expect("send");
            });
        }
        // Let them all reach epoll_wait.
        std::thread::sleep(Duration::from_millis(50));
        (c, more, closing, rx)
    }

    #[test]
    fn closing_wakes_every_waiter() {
        let (_c, _more, closing, rx) = waiters(4);
        closing.signal();
        for _ in 0..4 {
            let readable = rx.recv_timeout(Duration::from_secs(5)).expect("every waiter wakes");
            assert!(!readable, "woken by closing, not by data");
        }
    }

    #[test]
    fn more_wakes_one_waiter_and_closing_the_rest() {
        let (_c, more, closing, rx) = waiters(3);
        more.signal();
        assert!(rx.recv_timeout(Duration::from_secs(5)).expect("one waiter wakes"), "woken to look for a call");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "one signal wakes one waiter");
        closing.signal();
        for _ in 0..2 {
            assert!(!rx.recv_timeout(Duration::from_secs(5)).expect("the others wake"), "woken by closing");
        }
    }
}
