//! Advisory locks across two clients of one volume: fcntl byte-range locks (F_SETLK, F_SETLKW,
//! F_GETLK) and flock, exclusive and shared.

mod common;

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn fcntl_write_lock_across_clients() {
    let c = Cluster::with_mounts("fcntl", 2);
    std::fs::write(c.p(0, "f"), b"lock me").expect("create");
    let fa = open_rw(&c.p(0, "f"));
    let fb = open_rw(&c.p(1, "f"));

    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0), 0, "A takes a write lock on the whole file");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0), libc::EAGAIN, "B's write lock conflicts");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_RDLCK, 100, 10), libc::EAGAIN, "B's read lock conflicts");
    let held = getlk(&fb, libc::F_WRLCK, 0, 0).expect("F_GETLK on B reports A's lock");
    assert_eq!(i32::from(held.l_type), libc::F_WRLCK);
    assert_eq!((held.l_start, held.l_len), (0, 0), "whole-file lock reported as start 0, len 0");
    assert_eq!(held.l_pid, std::process::id() as i32, "holder pid");
    // Another process on the same client conflicts too (different lock owner).
    let fd = fa.as_raw_fd();
    let code = in_child(move || {
        let fl = flock_struct(libc::F_WRLCK, 0, 1);
        // SAFETY: raw fcntl in the forked child.
        if unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) } < 0 { errno() } else { 0 }
    });
    assert_eq!(code, libc::EAGAIN, "another process on client A");

    // A releases: B gets it.
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);
    assert!(getlk(&fb, libc::F_WRLCK, 0, 0).is_none(), "no conflicting lock after unlock");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0), 0, "B locks after A unlocked");
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0), libc::EAGAIN, "now A conflicts");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);

    // Byte ranges: disjoint ranges do not conflict, overlapping ones do.
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 100), 0);
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 100, 100), 0, "adjacent range");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 99, 2), libc::EAGAIN, "overlapping range");
    let held = getlk(&fb, libc::F_WRLCK, 50, 10).expect("A's range reported");
    assert_eq!((held.l_start, held.l_len), (0, 100));
    // Unlocking the middle of A's range frees just that part.
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_UNLCK, 40, 20), 0);
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 40, 20), 0, "freed middle");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 39, 1), libc::EAGAIN, "still held before the hole");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 60, 1), libc::EAGAIN, "still held after the hole");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);

    // Closing A's descriptor releases A's locks.
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0), 0);
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0), libc::EAGAIN);
    drop(fa);
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0), 0, "B locks after A closed");
}

#[test]
fn fcntl_setlkw_waits_for_the_other_client() {
    let c = Cluster::with_mounts("setlkw", 2);
    std::fs::write(c.p(0, "f"), b"x").expect("create");
    let fa = open_rw(&c.p(0, "f"));
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0), 0);
    let (tx, rx) = mpsc::channel();
    let pb = c.p(1, "f");
    let waiter = std::thread::spawn(move || {
        let fb = open_rw(&pb);
        let r = setlk(&fb, libc::F_SETLKW, libc::F_WRLCK, 0, 0);
        tx.send((r, Instant::now())).expect("send");
        // Hold it a moment, then give it back by closing.
        std::thread::sleep(Duration::from_millis(100));
        drop(fb);
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(rx.try_recv().is_err(), "F_SETLKW on B returned while A still held the lock");
    let released = Instant::now();
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);
    let (r, got) = rx.recv_timeout(Duration::from_secs(10)).expect("F_SETLKW on B returns after A unlocks");
    assert_eq!(r, 0, "F_SETLKW result: {}", errname(r));
    assert!(got >= released, "granted before the release");
    waiter.join().expect("waiter thread");
    // After B's close, A can lock again.
    assert!(
        wait_until(Duration::from_secs(5), || setlk(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0) == 0),
        "A relocks after B closed"
    );
}

#[test]
fn flock_across_clients() {
    let c = Cluster::with_mounts("flock", 2);
    std::fs::write(c.p(0, "f"), b"x").expect("create");
    let fa = open_rw(&c.p(0, "f"));
    let fb = open_rw(&c.p(1, "f"));
    assert_eq!(flock(&fa, libc::LOCK_EX | libc::LOCK_NB), 0, "A takes flock LOCK_EX");
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), libc::EWOULDBLOCK, "B's LOCK_EX conflicts");
    assert_eq!(flock(&fb, libc::LOCK_SH | libc::LOCK_NB), libc::EWOULDBLOCK, "B's LOCK_SH conflicts");
    assert_eq!(flock(&fa, libc::LOCK_UN), 0);
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), 0, "B gets it after A's LOCK_UN");
    assert_eq!(flock(&fa, libc::LOCK_SH | libc::LOCK_NB), libc::EWOULDBLOCK);
    // Closing releases the flock.
    drop(fb);
    assert!(
        wait_until(Duration::from_secs(5), || flock(&fa, libc::LOCK_EX | libc::LOCK_NB) == 0),
        "A gets the flock after B closed"
    );
    // Blocking flock on B waits until A releases.
    let (tx, rx) = mpsc::channel();
    let pb = c.p(1, "f");
    let waiter = std::thread::spawn(move || {
        let fb = open_rw(&pb);
        let r = flock(&fb, libc::LOCK_EX);
        tx.send(r).expect("send");
        drop(fb);
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(rx.try_recv().is_err(), "blocking flock on B returned while A held it");
    drop(fa);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).expect("flock on B returns after A closes"), 0);
    waiter.join().expect("waiter");
}

#[test]
fn shared_locks_across_clients() {
    let c = Cluster::with_mounts("shared", 2);
    std::fs::write(c.p(0, "f"), b"x").expect("create");
    let fa = open_rw(&c.p(0, "f"));
    let fb = open_rw(&c.p(1, "f"));
    // fcntl read locks are shared; a write lock then conflicts with the other reader.
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_RDLCK, 0, 0), 0);
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_RDLCK, 0, 0), 0, "B shares the read lock");
    assert!(getlk(&fb, libc::F_RDLCK, 0, 0).is_none(), "a read lock does not block readers");
    let held = getlk(&fb, libc::F_WRLCK, 0, 0).expect("A's read lock blocks B's write lock");
    assert_eq!(i32::from(held.l_type), libc::F_RDLCK);
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0), libc::EAGAIN, "upgrade blocked by A's read lock");
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_WRLCK, 0, 0), 0, "B upgrades once A let go");
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_RDLCK, 0, 0), libc::EAGAIN, "B's write lock blocks A's read");
    assert_eq!(setlk(&fb, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);

    // flock LOCK_SH likewise.
    assert_eq!(flock(&fa, libc::LOCK_SH | libc::LOCK_NB), 0);
    assert_eq!(flock(&fb, libc::LOCK_SH | libc::LOCK_NB), 0, "B shares the flock");
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), libc::EWOULDBLOCK, "B's upgrade blocked by A");
    assert_eq!(flock(&fa, libc::LOCK_UN), 0);
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), 0, "B upgrades once A let go");
}

/// flock is a whole-file lock in the same cluster-wide table as fcntl locks, owned by the open
/// file: as on Linux NFS mounts (where the client emulates flock with byte-range locks), a
/// flock and an fcntl lock on one file exclude each other, on any client. (FUSE through fuser
/// does not say which kind a request is; see ARCHITECTURE.md.)
#[test]
fn flock_and_fcntl_locks_share_one_table_like_nfs() {
    let c = Cluster::with_mounts("lockkinds", 2);
    std::fs::write(c.p(0, "f"), b"x").expect("create");
    let fa = open_rw(&c.p(0, "f"));
    let fb = open_rw(&c.p(1, "f"));
    let fa2 = open_rw(&c.p(0, "f"));
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0), 0);
    assert_eq!(flock(&fa2, libc::LOCK_EX | libc::LOCK_NB), libc::EAGAIN, "flock on A against A's fcntl lock");
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), libc::EAGAIN, "flock on B against A's fcntl lock");
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_UNLCK, 0, 0), 0);
    assert_eq!(flock(&fb, libc::LOCK_EX | libc::LOCK_NB), 0, "free once the fcntl lock went");
    assert_eq!(setlk(&fa, libc::F_SETLK, libc::F_RDLCK, 0, 0), libc::EAGAIN, "and fcntl against B's flock");
}
