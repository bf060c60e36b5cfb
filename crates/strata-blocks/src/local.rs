//! A local-directory object store for immutable, uniquely named blocks.
//!
//! `object_store`'s `LocalFileSystem` writes every object to a staging file and renames it into
//! place, so that a reader never sees a half-written object under a name that is being
//! replaced. Strata never replaces a block and never reads one before the metadata commit that
//! follows a completed put, so the rename (an extra journaled metadata operation per block,
//! most of the cost for small files) buys nothing here. This wrapper writes new blocks in
//! place and hands every other operation, and any put whose name already exists, to
//! `LocalFileSystem`.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// Blocks in a local (or shared) directory.
#[derive(Debug)]
pub struct BlockDir {
    root: PathBuf,
    inner: LocalFileSystem,
}

impl BlockDir {
    /// A store rooted at `root` (which must exist).
    pub fn new(root: PathBuf) -> Result<Self> {
        let inner = LocalFileSystem::new_with_prefix(&root)?;
        Ok(BlockDir { root, inner })
    }
}

impl fmt::Display for BlockDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockDir({})", self.root.display())
    }
}

/// Blocks at least this large, in page-aligned memory of whole pages, are written with
/// `O_DIRECT`: the device takes them from the writer's memory, with no copy into the page cache
/// and none of ext4's per-page work (a third of a client's CPU in a large sequential write,
/// profiled). They are large writes nobody on this node waits to read back through the page
/// cache; smaller blocks (small files) stay buffered, since a direct write makes its caller wait
/// for the device.
const DIRECT_FROM: usize = 1 << 20;

/// Whether [`write_new`] writes `data` with `O_DIRECT` (on a file system that takes it).
pub(crate) fn goes_direct(data: &[u8]) -> bool {
    data.len() >= DIRECT_FROM && crate::aligned::is_direct_writable(data)
}

/// Runs `make` (which creates the file at `path`), creating the file's missing directories and
/// running it again if they were missing.
fn in_dirs<T>(path: &std::path::Path, make: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    match make() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                create_dirs(parent)?;
            }
            make()
        }
        other => other,
    }
}

/// Writes a new block file in place (creating its directories), failing if it exists.
pub(crate) fn write_new(path: &std::path::Path, payload: &PutPayload) -> std::io::Result<()> {
    let mut parts = payload.iter();
    if let (Some(only), None) = (parts.next(), parts.next())
        && goes_direct(only)
        && in_dirs(path, || crate::aligned::write_new_direct(path, only))?
    {
        return Ok(());
    }
    let mut file = in_dirs(path, || std::fs::OpenOptions::new().write(true).create_new(true).open(path))?;
    for part in payload.iter() {
        if let Err(e) = file.write_all(part) {
            // A full disk: no partial file is left under the block's name.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    }
    Ok(())
}

/// Creates a block directory and its missing parents, each marked as the top of a directory
/// hierarchy (ext4's `TOPDIR` flag, `chattr +T`): ext4 then spreads the directories created in
/// it over the disk's block groups instead of packing them next to their parent. New blocks
/// (in new directories, as slice ids grow) so land away from the inodes of blocks just
/// collected, which ext4 without a journal scans past on every file it creates (a tenth of a
/// millisecond per small file after a large delete, measured). Other file systems refuse the
/// flag, which changes nothing.
pub(crate) fn create_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            mark_topdir(dir);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                create_dirs(parent)?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => {
                    mark_topdir(dir);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// `FS_TOPDIR_FL` of `linux/fs.h`.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Sets the `TOPDIR` flag on a directory, if its file system has it (a hint: failures are
/// ignored).
fn mark_topdir(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(dir) else { return };
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls read or write one int through a valid pointer, on a descriptor `f`
    // keeps open for the calls.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) == 0 && flags & FS_TOPDIR_FL == 0 {
            flags |= FS_TOPDIR_FL;
            libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for BlockDir {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if !opts.attributes.is_empty() || !matches!(opts.mode, object_store::PutMode::Overwrite) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let path = self.root.join(location.as_ref());
        let p2 = path.clone();
        let pl = payload.clone();
        let res = tokio::task::spawn_blocking(move || write_new(&p2, &pl)).await;
        match res {
            Ok(Ok(())) => Ok(PutResult { e_tag: None, version: None, extensions: Default::default() }),
            // Already there (a retried put) or any failure: the staging path decides, and
            // replaces a partial file atomically.
            _ => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn writes_in_place_and_falls_back_for_existing_names() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| object_store::Error::Generic { store: "test", source: e.into() })?;
        let s = BlockDir::new(dir.path().to_path_buf())?;
        let key = Path::from("v1/chunks/0/0/7_0_3");
        s.put(&key, PutPayload::from_static(b"abc")).await?;
        assert_eq!(s.get(&key).await?.bytes().await?, bytes::Bytes::from_static(b"abc"));
        // A retried put of the same name (say after a partial write) replaces it whole.
        s.put(&key, PutPayload::from_static(b"xyz")).await?;
        assert_eq!(s.get(&key).await?.bytes().await?, bytes::Bytes::from_static(b"xyz"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("v1/chunks/0/0")).into_iter().flatten().collect();
        assert_eq!(leftovers.len(), 1, "no staging files left behind");
        Ok(())
    }

    /// Pages of the file at `path` in the page cache.
    fn resident_pages(path: &std::path::Path) -> usize {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).expect("open");
        let len = f.metadata().expect("stat").len() as usize;
        let mut vec = vec![0u8; len.div_ceil(4096)];
        // SAFETY: a read-only shared mapping of `len` bytes of an open file, unmapped before
        // return; mincore writes one byte per page into `vec`, which has room for them all.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    #[tokio::test]
    async fn large_aligned_blocks_skip_the_page_cache_and_others_use_it() -> Result<()> {
        let io = |e: std::io::Error| object_store::Error::Generic { store: "test", source: e.into() };
        let dir = tempfile::tempdir_in("/var/tmp").map_err(io)?;
        let s = BlockDir::new(dir.path().to_path_buf())?;
        let n = 4 << 20;
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        let mut buf = crate::aligned::Buf::with_capacity(n);
        buf.extend_from_slice(&data);
        let aligned = buf.into_bytes();
        let (big, odd) = (Path::from("v1/chunks/0/0/8_0_4194304"), Path::from("v1/chunks/0/0/9_0_4194303"));
        s.put(&big, PutPayload::from_bytes(aligned.clone())).await?;
        s.put(&odd, PutPayload::from_bytes(aligned.slice(1..))).await?;
        let (pbig, podd) = (dir.path().join(big.as_ref()), dir.path().join(odd.as_ref()));
        if crate::aligned::probe(dir.path()) {
            assert_eq!(resident_pages(&pbig), 0, "written with O_DIRECT: nothing in the page cache");
        }
        assert!(resident_pages(&podd) > 0, "unaligned: written through the page cache");
        assert!(std::fs::read(&pbig).map_err(io)? == data);
        assert!(std::fs::read(&podd).map_err(io)? == data[1..]);
        // A retried put of an existing name still replaces it whole, through the staging path.
        s.put(&big, PutPayload::from_bytes(aligned.slice(..n / 2))).await?;
        assert_eq!(std::fs::metadata(&pbig).map_err(io)?.len(), (n / 2) as u64);
        Ok(())
    }

    #[test]
    fn new_block_directories_are_marked_as_tops_on_ext4() -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir()?;
        let leaf = dir.path().join("v1/chunks/0/3");
        create_dirs(&leaf)?;
        create_dirs(&leaf)?;
        // SAFETY: statfs fills the struct through a valid pointer.
        let ext4 = unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
            libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == 0xEF53
        };
        for d in ["v1", "v1/chunks", "v1/chunks/0", "v1/chunks/0/3"] {
            let f = std::fs::File::open(dir.path().join(d))?;
            let mut flags: libc::c_int = 0;
            // SAFETY: reads one int through a valid pointer on an open descriptor.
            let got = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } == 0;
            if ext4 {
                assert!(got && flags & FS_TOPDIR_FL != 0, "{d}: flags {flags:#x}");
            }
        }
        Ok(())
    }
}
