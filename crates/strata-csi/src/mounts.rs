//! The mount system calls the node needs, and what `/proc/self/mountinfo` says.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Mounts a FUSE file system for `volume` at `target` and returns the `/dev/fuse` descriptor
/// that serves it (the kernel's INIT waits on it for a worker).
pub fn fuse_mount(target: &Path, volume: &str, read_only: bool) -> io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    let fd: OwnedFd = dev.into();
    let data = format!("fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", fd.as_raw_fd());
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    let (src, tgt, fstype, data) =
        (CString::new(format!("strata:{volume}"))?, cpath(target)?, CString::new("fuse.strata")?, CString::new(data)?);
    // SAFETY: every pointer is a valid NUL-terminated string for the duration of the call.
    check(unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) })?;
    Ok(fd)
}

/// Bind-mounts `src` at `dst`, read-only if asked.
pub fn bind(src: &Path, dst: &Path, read_only: bool) -> io::Result<()> {
    let (s, d) = (cpath(src)?, cpath(dst)?);
    // SAFETY: valid NUL-terminated paths; null fstype and data are allowed for a bind.
    check(unsafe { libc::mount(s.as_ptr(), d.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) })?;
    if read_only {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        // SAFETY: as above.
        if let Err(e) =
            check(unsafe { libc::mount(std::ptr::null(), d.as_ptr(), std::ptr::null(), flags, std::ptr::null()) })
        {
            let _ = unmount(dst);
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts `path`; lazily if it is busy. False if nothing was mounted there.
pub fn unmount(path: &Path) -> io::Result<bool> {
    let p = cpath(path)?;
    // SAFETY: valid NUL-terminated path.
    match check(unsafe { libc::umount2(p.as_ptr(), 0) }) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            // SAFETY: as above.
            check(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) })?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub point: PathBuf,
    /// The path within its file system that is mounted there (`/` unless a bind of a subtree).
    pub root: PathBuf,
    /// File system type, e.g. `fuse.strata`.
    pub fstype: String,
    /// Mount source, e.g. `strata:VOLUME`.
    pub source: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let g: Vec<&str> = post.split(' ').collect();
            if f.len() < 6 || g.len() < 2 {
                return None;
            }
            Some(MountEntry {
                point: PathBuf::from(unescape(f[4])),
                root: PathBuf::from(unescape(f[3])),
                fstype: g[0].to_string(),
                source: unescape(g[1]),
                read_only: f[5].split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// What is mounted at `path` now (the topmost mount), if anything.
pub fn mounted_at(path: &Path) -> Option<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    parse_mountinfo(&text).into_iter().rev().find(|m| m.point == want || m.point == path)
}

/// `statvfs` of a path.
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let p = cpath(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: valid path; `st` is large enough and written by the call on success.
    check(unsafe { libc::statvfs(p.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: the call succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read_with_escapes() {
        let t = "36 35 0:45 / /var/lib/kubelet/pods/a\\040b/mount rw,nosuid,nodev,relatime shared:1 - fuse.strata strata:vol1 rw,user_id=0\n\
                 37 35 0:45 /sub /mnt/x ro,relatime - fuse.strata strata:vol1 rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].point, PathBuf::from("/var/lib/kubelet/pods/a b/mount"));
        assert_eq!((m[0].fstype.as_str(), m[0].source.as_str(), m[0].read_only), ("fuse.strata", "strata:vol1", false));
        assert_eq!((m[1].root.clone(), m[1].read_only), (PathBuf::from("/sub"), true));
    }
}
