//! Host paths (and NFS exports mounted on the host): a walk of the tree on a thread of its
//! own, and reads that skip the holes of sparse files (SEEK_DATA / SEEK_HOLE).

use std::collections::HashSet;
use std::fs::{File, Metadata, ReadDir};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use bytes::Bytes;
use strata_vfs::Timespec;
use tokio::sync::mpsc;

use super::{Checksum, Entry, Item, Kind};

/// Bytes read at once.
const READ: u64 = 1 << 20;

/// A directory or a file of this host.
pub struct HostSource {
    root: PathBuf,
    /// The root is one file, imported under its own name.
    single: bool,
}

fn io_msg(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "it vanished from the source during the import (no such file or directory)".into()
    } else {
        e.to_string()
    }
}

impl HostSource {
    /// Checks that `root` exists and is a directory or a file.
    pub async fn open(root: PathBuf) -> Result<HostSource> {
        let r = root.clone();
        let md = tokio::fs::metadata(&r).await;
        let md = match md {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("host path {} does not exist", r.display()),
            Err(e) => bail!("cannot read host path {}: {e}", r.display()),
        };
        if !md.is_dir() && !md.is_file() {
            bail!("host path {} is neither a directory nor a regular file", r.display());
        }
        Ok(HostSource { root, single: md.is_file() })
    }

    /// How the report names it.
    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// The host path of an entry.
    pub fn path_of(&self, rel: &[u8]) -> PathBuf {
        if self.single {
            return self.root.clone();
        }
        if rel.is_empty() { self.root.clone() } else { self.root.join(std::ffi::OsStr::from_bytes(rel)) }
    }

    /// Walks the tree on a thread of its own (blocking I/O), sending entries to `tx`; stops
    /// when the receiver is gone.
    pub fn list(&self, tx: mpsc::Sender<Item>) {
        let (root, single) = (self.root.clone(), self.single);
        let spawned = std::thread::Builder::new().name("import-walk".into()).spawn(move || {
            if single {
                let name = root.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_else(|| b"file".to_vec());
                let item = match std::fs::symlink_metadata(&root) {
                    Ok(md) => Item::Entry(entry_of(name, &md, &root)),
                    Err(e) => Item::Fatal(format!("{}: {}", root.display(), io_msg(&e))),
                };
                let _ = tx.blocking_send(item);
                return;
            }
            walk(&root, &tx);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the walk of the host path");
        }
    }

    /// Opens a file of the tree for reading (holes skipped).
    pub async fn read(&self, e: &Entry) -> Result<HostReader, String> {
        open_reader(self.path_of(&e.rel), e, true, true).await
    }

    /// The names in directory `rel`.
    pub async fn names(&self, rel: &[u8]) -> Result<Option<HashSet<Vec<u8>>>, String> {
        if self.single {
            let name = self.root.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            return Ok(Some(if rel.is_empty() { HashSet::from([name]) } else { HashSet::new() }));
        }
        dir_names(self.path_of(rel), None).await
    }
}

/// The names in host directory `path` (without `skip`); `None` when it is not a directory.
pub async fn dir_names(path: PathBuf, skip: Option<&'static str>) -> Result<Option<HashSet<Vec<u8>>>, String> {
    tokio::task::spawn_blocking(move || {
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut out = HashSet::new();
        for d in rd {
            let d = d.map_err(|e| format!("{}: {e}", path.display()))?;
            let name = d.file_name().into_vec();
            if skip.is_some_and(|s| name == s.as_bytes()) {
                continue;
            }
            out.insert(name);
        }
        Ok(Some(out))
    })
    .await
    .map_err(|e| e.to_string())?
}

fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec { sec, nsec: nsec.clamp(0, 999_999_999) as u32 }
}

/// The entry of a host file of any type.
fn entry_of(rel: Vec<u8>, md: &Metadata, path: &Path) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        match std::fs::read_link(path) {
            Ok(t) => Kind::Symlink(t.into_os_string().into_vec()),
            Err(e) => Kind::Special(format!("symbolic link not readable: {e}")),
        }
    } else {
        let what = if ft.is_block_device() {
            "block device"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        Kind::Special(format!("{what}: special files are not imported"))
    };
    Entry {
        rel,
        size: if ft.is_file() { md.len() } else { 0 },
        kind,
        mode: Some(md.mode() & 0o7777),
        mtime: Some(ts(md.mtime(), md.mtime_nsec())),
        atime: Some(ts(md.atime(), md.atime_nsec())),
        tag: None,
        checksum: Checksum::None,
    }
}

/// Depth-first walk with one open directory per level.
fn walk(root: &Path, tx: &mpsc::Sender<Item>) {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) => {
            let _ = tx.blocking_send(Item::Fatal(format!("{}: {}", root.display(), io_msg(&e))));
            return;
        }
    };
    let mut stack: Vec<(ReadDir, Vec<u8>)> = vec![(rd, Vec::new())];
    while let Some((rd, prefix)) = stack.last_mut() {
        let Some(d) = rd.next() else {
            stack.pop();
            continue;
        };
        let prefix = prefix.clone();
        let name = match &d {
            Ok(d) => d.file_name().into_vec(),
            Err(e) => {
                let dir = String::from_utf8_lossy(&prefix).into_owned();
                if tx.blocking_send(Item::Fail(dir, format!("reading the directory: {e}"))).is_err() {
                    return;
                }
                stack.pop();
                continue;
            }
        };
        let mut rel = prefix;
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name);
        let path = root.join(std::ffi::OsStr::from_bytes(&rel));
        let item = match std::fs::symlink_metadata(&path) {
            Ok(md) => {
                let e = entry_of(rel.clone(), &md, &path);
                if md.is_dir() {
                    match std::fs::read_dir(&path) {
                        Ok(sub) => stack.push((sub, rel.clone())),
                        Err(err) => {
                            let _ = tx.blocking_send(Item::Fail(e.display(), format!("reading the directory: {err}")));
                        }
                    }
                }
                Item::Entry(e)
            }
            Err(e) => Item::Fail(String::from_utf8_lossy(&rel).into_owned(), io_msg(&e)),
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

/// Reads a host file in pieces of at most 1 MiB, skipping holes when `sparse`.
pub struct HostReader {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    /// Where the data region at `pos` ends.
    data_end: u64,
    size: u64,
    sparse: bool,
    /// The size and mtime the listing saw, checked again at the end.
    want: (u64, Option<Timespec>),
}

/// Opens `path` to read entry `e`.
/// `source_mtime`: whether the entry's mtime is the file's own (checked again at the end).
pub async fn open_reader(path: PathBuf, e: &Entry, sparse: bool, source_mtime: bool) -> Result<HostReader, String> {
    let p = path.clone();
    let file = tokio::task::spawn_blocking(move || File::open(&p))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|err| io_msg(&err))?;
    Ok(HostReader {
        path,
        file: Some(file),
        pos: 0,
        data_end: 0,
        size: e.size,
        sparse,
        want: (e.size, e.mtime.filter(|_| source_mtime)),
    })
}

/// One step of a read: the next data piece from `pos`, and where its data region ends.
fn step(f: &File, pos: u64, data_end: u64, size: u64, sparse: bool) -> Result<Option<(u64, Vec<u8>, u64)>, String> {
    let (mut pos, mut data_end) = (pos, data_end);
    if pos >= data_end {
        if sparse {
            let fd = f.as_raw_fd();
            // SAFETY: lseek on a descriptor this reader owns.
            let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
            if data < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    // No data from `pos` on: the rest is a hole.
                    Some(libc::ENXIO) => return Ok(None),
                    // No SEEK_DATA here: read everything.
                    _ => data_end = size,
                }
            } else {
                // SAFETY: as above.
                let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
                pos = data as u64;
                data_end = if hole < 0 { size } else { (hole as u64).min(size) };
            }
        } else {
            data_end = size;
        }
    }
    if pos >= size {
        return Ok(None);
    }
    let n = (data_end - pos).min(READ) as usize;
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, pos).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the file shrank while it was read".to_string()
        } else {
            e.to_string()
        }
    })?;
    Ok(Some((pos, buf, data_end)))
}

impl HostReader {
    /// The next piece of data.
    pub async fn next(&mut self) -> Result<Option<(u64, Bytes)>, String> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let Some(f) = self.file.take() else { return Ok(None) };
        let (pos, end, size, sparse) = (self.pos, self.data_end, self.size, self.sparse);
        let (f, r) = tokio::task::spawn_blocking(move || {
            let r = step(&f, pos, end, size, sparse);
            (f, r)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.file = Some(f);
        match r? {
            None => {
                self.pos = self.size;
                Ok(None)
            }
            Some((off, buf, data_end)) => {
                self.pos = off + buf.len() as u64;
                self.data_end = data_end;
                Ok(Some((off, Bytes::from(buf))))
            }
        }
    }

    /// Checks that the file still has the size and mtime it was listed with.
    pub async fn finish(self) -> Result<(), String> {
        let Some(f) = self.file else { return Ok(()) };
        let md = tokio::task::spawn_blocking(move || f.metadata()).await.map_err(|e| e.to_string())?;
        let md = md.map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mtime = ts(md.mtime(), md.mtime_nsec());
        if md.len() != self.want.0 || self.want.1.is_some_and(|m| m != mtime) {
            return Err("the file changed while it was read (it is copied by the next run)".into());
        }
        Ok(())
    }
}
