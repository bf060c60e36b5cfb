//! Blocks fetched into page-aligned memory, and written to the disk cache from it with
//! `O_DIRECT`.
//!
//! A block fetched from S3 goes to the memory cache and to the disk cache. Written through the
//! page cache, the disk copy costs a kernel copy, page-cache pages and buffer heads for every
//! 4 KiB, and later write-back: the largest share of a client's CPU on cold S3 reads (a profile
//! of four sequential readers: 25-45% of the mount's samples in `ext4_buffered_write_iter`), on
//! machines where the client competes with everything else for the cores. A block whose bytes
//! start on a page boundary and span whole pages is written with `O_DIRECT` instead: the
//! device reads it from the block's own memory, and the page cache does not keep a second copy
//! of what the memory cache already holds.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetResult, GetResultPayload};

/// The alignment of buffers, offsets and lengths that `O_DIRECT` is given (the page size,
/// which satisfies every device's logical block size).
pub const DIO_ALIGN: usize = 4096;

/// The body of a whole-object GET, in memory that starts on a page boundary.
pub async fn collect(r: GetResult) -> object_store::Result<Bytes> {
    if matches!(r.payload, GetResultPayload::File(..)) {
        return r.bytes().await;
    }
    let len = usize::try_from(r.range.end - r.range.start).unwrap_or(0);
    let mut buf = Buf::with_capacity(len.max(ALIGN_FROM));
    let mut body = r.into_stream();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.into_bytes())
}

/// Whether `data` can be written with `O_DIRECT` as it is.
pub fn is_direct_writable(data: &[u8]) -> bool {
    !data.is_empty() && data.len().is_multiple_of(DIO_ALIGN) && (data.as_ptr() as usize).is_multiple_of(DIO_ALIGN)
}

/// Writes `data` to a new file at `path` with `O_DIRECT`, replacing any file there. `Ok(false)`
/// when it cannot be done that way (unaligned bytes, or a file system without `O_DIRECT`):
/// nothing is left at `path` then, and the caller writes the file the ordinary way.
pub fn write_direct(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    write_direct_with(path, data, false)
}

/// [`write_direct`] of a file that must not exist yet (`EEXIST` if it does).
pub fn write_new_direct(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    write_direct_with(path, data, true)
}

fn write_direct_with(path: &Path, data: &[u8], new: bool) -> std::io::Result<bool> {
    if !is_direct_writable(data) {
        return Ok(false);
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).custom_flags(libc::O_DIRECT);
    if new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    let mut f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // The file may have been created before the flag was refused.
            if new {
                let _ = std::fs::remove_file(path);
            }
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    match f.write_all(data) {
        Ok(()) => Ok(true),
        // Some file systems accept the flag at open and refuse the write.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            drop(f);
            std::fs::remove_file(path)?;
            Ok(false)
        }
        Err(e) => {
            // A full disk: no partial file is left under a block's name.
            drop(f);
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Whether files in `dir` can be written with `O_DIRECT` (tmpfs before Linux 6.6, some FUSE
/// and network file systems refuse it), found by writing and removing one page.
pub fn probe(dir: &Path) -> bool {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".strata-direct-probe.{}.{n}", std::process::id()));
    let mut page = Buf::with_capacity(DIO_ALIGN);
    page.extend_from_slice(&[0u8; DIO_ALIGN]);
    let ok = matches!(write_new_direct(&path, page.as_slice()), Ok(true));
    let _ = std::fs::remove_file(&path);
    ok
}

/// A buffer filled by appends whose bytes start on a page boundary (when it was made for at
/// least [`ALIGN_FROM`] bytes), so that a block built in it can be written with `O_DIRECT`.
///
/// Block-sized buffers ([`RECYCLE_FROM`] and up) are anonymous mappings on huge pages, kept in
/// a pool when let go: fresh memory costs a page fault and a zeroed page for every 4 KiB (a
/// fifth of a client's CPU in a large write, profiled), and pinning small pages for an
/// `O_DIRECT` write costs another tenth; a reused huge-page buffer costs neither.
pub struct Buf(Inner);

enum Inner {
    /// Heap memory; the bytes start at `start`.
    Heap { v: Vec<u8>, start: usize },
    /// A block buffer, `len` bytes filled.
    Mapped { map: Anon, len: usize },
}

impl Default for Buf {
    fn default() -> Self {
        Buf(Inner::Heap { v: Vec::new(), start: 0 })
    }
}

/// Buffers made for fewer bytes are not aligned: nothing that small is written directly, and a
/// page of slack per small file would add up.
pub const ALIGN_FROM: usize = DIO_ALIGN;

/// Buffers made for at least this many bytes (blocks) are mapped, and pooled when let go.
pub const RECYCLE_FROM: usize = 1 << 20;

/// How much memory let-go block buffers may keep for reuse.
const POOL_BYTES: usize = 64 << 20;

/// Huge-page size: mapped buffers this large start on such a boundary.
const HUGE: usize = 2 << 20;

impl Buf {
    /// An empty buffer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        if cap >= RECYCLE_FROM {
            let size = cap.next_multiple_of(DIO_ALIGN);
            if let Some(map) = from_pool(size).or_else(|| Anon::new(size)) {
                return Buf(Inner::Mapped { map, len: 0 });
            }
        }
        if cap < ALIGN_FROM {
            return Buf(Inner::Heap { v: Vec::with_capacity(cap), start: 0 });
        }
        let mut v: Vec<u8> = Vec::with_capacity(cap + DIO_ALIGN);
        let start = v.as_ptr().align_offset(DIO_ALIGN).min(DIO_ALIGN);
        v.resize(start, 0);
        Buf(Inner::Heap { v, start })
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data` (growing like a `Vec` past the room it was made with, unaligned then).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        match &mut self.0 {
            Inner::Heap { v, .. } => v.extend_from_slice(data),
            Inner::Mapped { map, len } if *len + data.len() <= map.size => {
                // SAFETY: the mapping has room for `len + data.len()` bytes, and `data` (a
                // shared borrow) cannot overlap it while `self` is borrowed mutably.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), map.ptr.add(*len), data.len()) };
                *len += data.len();
            }
            Inner::Mapped { .. } => {
                let mut v = Vec::with_capacity(self.len() + data.len());
                v.extend_from_slice(self.as_slice());
                v.extend_from_slice(data);
                self.0 = Inner::Heap { v, start: 0 };
            }
        }
    }

    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Inner::Heap { v, start } => &v[*start..],
            Inner::Mapped { map, len } => map.filled(*len),
        }
    }

    /// The bytes held, in the same memory. A block buffer goes back to the pool when the last
    /// `Bytes` of it is dropped.
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            // Bytes keeps the Vec's allocation as it is (no copy, whatever its spare capacity).
            Inner::Heap { v, start } => Bytes::from(v).slice(start..),
            Inner::Mapped { map, len } => Bytes::from_owner(Recycled { map: Some(map), len }),
        }
    }
}

/// A private anonymous mapping of `size` bytes, readable and writable, owned by this value.
struct Anon {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: the mapping is owned by this value alone; it is written only through `&mut` access
// to the `Buf` holding it, and read through shared references.
unsafe impl Send for Anon {}
// SAFETY: as above.
unsafe impl Sync for Anon {}

impl Anon {
    /// A new mapping (`size` a multiple of the page size), on a huge-page boundary and advised
    /// to use huge pages when at least one fits. `None` when memory cannot be mapped.
    fn new(size: usize) -> Option<Anon> {
        let huge = size >= HUGE;
        let room = if huge { size + HUGE } else { size };
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new private anonymous mapping at an address of the kernel's choice.
        let res =
            unsafe { libc::mmap(std::ptr::null_mut(), room, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if res == libc::MAP_FAILED {
            return None;
        }
        let base = res as usize;
        let start = if huge { base.next_multiple_of(HUGE) } else { base };
        // SAFETY: unmaps the parts of the reservation before `start` and after `start + size`,
        // which nothing references; then advises on the part kept, which this value owns.
        unsafe {
            if start > base {
                libc::munmap(res, start - base);
            }
            if base + room > start + size {
                libc::munmap((start + size) as *mut libc::c_void, base + room - start - size);
            }
            if huge {
                // Only advice: without transparent huge pages the buffer uses small pages.
                libc::madvise(start as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
            }
        }
        Some(Anon { ptr: start as *mut u8, size })
    }

    /// The first `len` bytes.
    fn filled(&self, len: usize) -> &[u8] {
        // SAFETY: `len <= size` (kept by `Buf`), and the bytes were written by `Buf` or are
        // the zeros of a fresh mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, len.min(self.size)) }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `new` kept, which nothing references any more.
        unsafe { libc::munmap(self.ptr.cast(), self.size) };
    }
}

/// Block buffers let go, for the next block filled or fetched.
static POOL: std::sync::Mutex<Vec<Anon>> = std::sync::Mutex::new(Vec::new());

/// A pooled buffer of at least `want` bytes (and not wastefully more).
fn from_pool(want: usize) -> Option<Anon> {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let i = pool.iter().position(|m| m.size >= want && m.size <= want.saturating_mul(2))?;
    Some(pool.swap_remove(i))
}

/// The owner of a block buffer's bytes (see [`Buf::into_bytes`]).
struct Recycled {
    map: Option<Anon>,
    len: usize,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |m| m.filled(self.len))
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.iter().map(|m| m.size).sum::<usize>() + map.size <= POOL_BYTES {
            pool.push(map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// A GET whose body arrives in chunks of `chunk` bytes, as an HTTP body does.
    async fn get_result(data: &[u8], chunk: usize) -> GetResult {
        use object_store::{ObjectStore, ObjectStoreExt};
        let store = object_store::memory::InMemory::new();
        let path = object_store::path::Path::from("k");
        store.put(&path, data.to_vec().into()).await.expect("put");
        let mut r = store.get_opts(&path, Default::default()).await.expect("get");
        let chunks: Vec<object_store::Result<Bytes>> =
            data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        r.payload = GetResultPayload::Stream(futures::stream::iter(chunks).boxed());
        r
    }

    #[tokio::test]
    async fn a_collected_body_is_aligned_and_exact_whatever_its_chunks() {
        for n in [1usize, 4095, 4096, 100_000, 4 << 20] {
            let data = pattern(n);
            for chunk in [1usize, 1000, 16384, n] {
                if n > 100_000 && chunk < 1000 {
                    continue;
                }
                let got = collect(get_result(&data, chunk).await).await.expect("collect");
                assert_eq!(&got[..], &data[..], "{n} bytes in chunks of {chunk}");
                assert_eq!(got.as_ptr() as usize % DIO_ALIGN, 0, "{n} bytes start on a page");
            }
        }
    }

    #[test]
    fn block_buffers_are_aligned_exact_and_reused_once_let_go() {
        // A size no other test asks for (the pool is shared), two huge pages and some.
        let n = (3 << 20) + 3 * DIO_ALIGN;
        let data = pattern(n);
        let mut b = Buf::with_capacity(n);
        for piece in data.chunks(1 << 20) {
            b.extend_from_slice(piece);
        }
        let bytes = b.into_bytes();
        assert_eq!(bytes.as_ptr() as usize % HUGE, 0, "a block buffer starts on a huge page");
        assert!(bytes[..] == data[..]);
        let (at, tail) = (bytes.as_ptr() as usize, bytes.slice(n - 10..));
        drop(bytes);
        assert_eq!(&tail[..], &data[n - 10..], "a slice keeps the buffer");
        drop(tail);
        let pooled = POOL.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|m| m.ptr as usize == at);
        assert!(pooled, "a let-go block buffer waits in the pool");
        // Past its room a buffer moves to the heap, keeping every byte.
        let mut small = Buf::with_capacity(RECYCLE_FROM);
        small.extend_from_slice(&data[..RECYCLE_FROM - 1]);
        small.extend_from_slice(&data[RECYCLE_FROM - 1..RECYCLE_FROM + 5000]);
        assert!(small.as_slice() == &data[..RECYCLE_FROM + 5000]);
        assert!(small.into_bytes()[..] == data[..RECYCLE_FROM + 5000]);
        // Small and middling buffers are heap memory, the latter page-aligned.
        let mut mid = Buf::with_capacity(64 << 10);
        mid.extend_from_slice(&data[..64 << 10]);
        assert!(is_direct_writable(mid.as_slice()));
        assert!(Buf::with_capacity(100).is_empty());
    }

    #[test]
    fn direct_writes_round_trip_and_decline_what_they_cannot_take() {
        // /var/tmp, not /tmp: a tmpfs before Linux 6.6 refuses O_DIRECT (declined, not failed).
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let mut buf = Buf::with_capacity(1 << 20);
        buf.extend_from_slice(&pattern(1 << 20));
        let block = buf.into_bytes();
        let p = dir.path().join("block");
        let written = write_direct(&p, &block).expect("direct write");
        if written {
            assert_eq!(std::fs::read(&p).expect("read back"), &block[..]);
        } else {
            assert!(!p.exists(), "a declined direct write leaves no file");
        }
        // Unaligned start or a partial last page: declined before anything is created.
        let q = dir.path().join("odd");
        assert!(!write_direct(&q, &block[1..]).expect("declined"));
        assert!(!write_direct(&q, &block[..DIO_ALIGN + 1]).expect("declined"));
        assert!(!q.exists());
    }
}
