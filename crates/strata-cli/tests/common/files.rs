//! Data and file helpers: deterministic bytes and their comparison, reads and synced writes
//! that report errnos, advisory locks, and running code as another user or process.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A deterministic pseudo-random byte stream (xorshift64*).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a 64 of a byte slice, for compact comparisons in messages.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Asserts two byte strings are equal, reporting the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: contents differ (got {} bytes, hash {:x}; want {} bytes, hash {:x}); first difference at {:?}",
        got.len(),
        fnv(got),
        want.len(),
        fnv(want),
        first
    );
}

/// Reads a whole file.
pub fn read_all(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())).read_to_end(&mut v).expect("read");
    v
}

/// Reads `len` bytes at `off` (fewer at end of file).
pub fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], off + done as u64).expect("pread");
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// Writes `data` to `path` (created or truncated), fsyncs and closes it; the errno of the
/// first failure.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<(), i32> {
    let mut f = File::create(path).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    f.write_all(data).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    f.sync_all().map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Writes `data` at `off` of `path` (created if missing, never truncated) and fsyncs; the
/// errno of the first failure.
pub fn write_synced_at(path: &Path, off: u64, data: &[u8]) -> Result<(), i32> {
    let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path);
    let f = f.map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    f.write_all_at(data, off).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    f.sync_all().map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// The errno of the last failed libc call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The errno of a failed `io::Result`, panicking if it succeeded.
#[track_caller]
pub fn err_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

/// A path as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Name of an errno, for messages.
pub fn errname(e: i32) -> String {
    format!("{} ({e})", std::io::Error::from_raw_os_error(e))
}

/// Asserts that a libc-style return value is an error with the given errno.
#[track_caller]
pub fn assert_errno(rc: i64, want: i32, what: &str) {
    let e = errno();
    assert!(rc < 0, "{what}: expected {}, but it succeeded", errname(want));
    assert_eq!(e, want, "{what}: expected {}, got {}", errname(want), errname(e));
}

// ---- advisory locks ----

/// Opens (creating) a file for reading and writing.
pub fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).expect("open rw")
}

/// A `struct flock` for a lock of `kind` on `len` bytes at `start` (0: to the end).
pub fn flock_struct(kind: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: plain-old-data struct; every field is set below or meaningfully zero.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// fcntl(F_SETLK / F_SETLKW); 0 or the errno.
pub fn setlk(f: &File, cmd: i32, kind: i32, start: i64, len: i64) -> i32 {
    let fl = flock_struct(kind, start, len);
    // SAFETY: valid descriptor and flock struct.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &fl) };
    if rc < 0 { errno() } else { 0 }
}

/// fcntl(F_GETLK): the conflicting lock, if any.
pub fn getlk(f: &File, kind: i32, start: i64, len: i64) -> Option<libc::flock> {
    let mut fl = flock_struct(kind, start, len);
    // SAFETY: valid descriptor and flock struct.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    assert_eq!(rc, 0, "F_GETLK: {}", errname(errno()));
    if i32::from(fl.l_type) == libc::F_UNLCK { None } else { Some(fl) }
}

/// flock(2); 0 or the errno.
pub fn flock(f: &File, op: i32) -> i32 {
    // SAFETY: valid descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
    if rc < 0 { errno() } else { 0 }
}

/// fcntl(F_SETLK) of a lock of `kind` on the whole file; 0 or the errno.
pub fn lock_whole(f: &File, kind: i32) -> i32 {
    setlk(f, libc::F_SETLK, kind, 0, 0)
}

// ---- other users and processes ----

/// Runs `f` in a forked child that first drops to `uid`/`gid` (no supplementary groups); returns
/// the child's exit code. `f` must only make raw system calls (no allocation, no locks): it runs
/// between fork and exit of a multi-threaded process. Its return value is the exit code.
pub fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    fork_run(Some((uid, gid)), f)
}

/// Runs `f` in a forked child (another process, same credentials); same rules as [`as_user`].
pub fn in_child(f: impl FnOnce() -> i32) -> i32 {
    fork_run(None, f)
}

fn fork_run(user: Option<(u32, u32)>, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes async-signal-safe system calls and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if let Some((uid, gid)) = user
                && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                libc::_exit(200);
            }
            let code = f();
            libc::_exit(code);
        }
        let mut status = 0;
        let r = libc::waitpid(pid, &mut status, 0);
        assert_eq!(r, pid, "waitpid");
        assert!(libc::WIFEXITED(status), "child did not exit normally (status {status})");
        libc::WEXITSTATUS(status)
    }
}

/// Whether a directory tree holds any file but dot-files (a block store's id marker).
pub fn dir_has_files(p: &Path) -> bool {
    let dot = |e: &std::fs::DirEntry| e.file_name().as_encoded_bytes().starts_with(b".");
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().any(|e| (e.path().is_file() && !dot(&e)) || dir_has_files(&e.path())))
        .unwrap_or(false)
}

/// Every file and symlink under `dir` with its content (a symlink's target), by path relative
/// to `dir`; with `dirs`, every directory too (as `path/`, empty).
pub fn file_tree(dir: &Path, dirs: bool) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())).flatten() {
            let p = e.path();
            let t = e.file_type().expect("file type");
            let rel = p.strip_prefix(dir).expect("under dir").display().to_string();
            if t.is_dir() {
                if dirs {
                    out.insert(format!("{rel}/"), Vec::new());
                }
                todo.push(p);
            } else if t.is_symlink() {
                out.insert(rel, std::fs::read_link(&p).expect("readlink").display().to_string().into_bytes());
            } else {
                out.insert(rel, std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())));
            }
        }
    }
    out
}

/// Asserts two [`file_tree`]s hold the same names and contents.
pub fn assert_same_tree(
    got: &std::collections::BTreeMap<String, Vec<u8>>,
    want: &std::collections::BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    let (g, w): (Vec<&String>, Vec<&String>) = (got.keys().collect(), want.keys().collect());
    assert_eq!(g, w, "{what}: names differ");
    for (k, v) in want {
        assert_bytes_eq(&got[k], v, &format!("{what}: {k}"));
    }
}
