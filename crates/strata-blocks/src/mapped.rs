//! Block files mapped into memory, and a registry of the live mappings.
//!
//! A sender may hand the kernel pages by reference (`vmsplice`) instead of copying them, but
//! only pages whose bytes never change afterwards, even once our mapping is gone: the pages
//! of an immutable block file are such pages (deleting or renaming over the file leaves a
//! referenced page as it was), while a heap buffer is reused for other bytes once freed.
//! [`is_mapped`] tells the two apart.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

/// Live mappings: first byte's address -> one past the last.
static LIVE: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

fn live() -> MutexGuard<'static, BTreeMap<usize, usize>> {
    // The map holds plain ranges, each inserted or removed whole: it is consistent even when
    // a holder panicked.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mappings at least this long start on a huge-page boundary and ask for huge pages.
const HUGE: usize = 2 << 20;

/// A read-only mapping of a whole block file, listed in the registry while it lives.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; reading it from any thread
// is as safe as reading a `&[u8]`.
unsafe impl Send for Mapping {}
// SAFETY: as above; nothing writes through the pointer.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop` unmaps them.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        live().remove(&(self.ptr as usize));
        // SAFETY: unmaps exactly the range `map_file` mapped, which nothing references any more.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Maps the first `len` bytes of `f` read-only, faulted in, as `Bytes` that own the mapping.
///
/// A mapping of 2 MiB or more starts on a 2 MiB boundary and is advised to use huge pages
/// before it is faulted in, so that a cold block enters the page cache as 2 MiB folios mapped
/// by one page-table entry each. With 4 KiB pages, the faults, page-cache insertions and
/// unmapping of a cold block took three quarters of the NFS gateway's CPU time on a sequential
/// copy out (perf, 1 GiB of 4 MiB blocks), more than nfs-ganesha's whole read-and-copy path.
///
/// # Safety
/// `f` must be a block file that is never written again: deleting it or renaming another
/// file over it is allowed, changing its bytes or truncating it is not.
pub unsafe fn map_immutable(f: &File, len: usize) -> std::io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let map = map_file(f, len)?;
    let start = map.ptr as usize;
    live().insert(start, start + len);
    Ok(Bytes::from_owner(map))
}

fn map_file(f: &File, len: usize) -> std::io::Result<Mapping> {
    use std::os::fd::AsRawFd;
    let prot = libc::PROT_READ;
    let huge = len >= HUGE;
    let ptr = if huge {
        // Reserve room for an aligned start, map the file over the aligned part, and give
        // back the slack on either side.
        let room = len + HUGE;
        // SAFETY: an anonymous, inaccessible reservation at an address of the kernel's choice.
        let res = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                room,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if res == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = res as usize;
        let aligned = base.next_multiple_of(HUGE);
        // SAFETY: `aligned..aligned + len` lies inside the reservation, which only we use;
        // MAP_FIXED replaces that part of it.
        let p = unsafe {
            libc::mmap(aligned as *mut libc::c_void, len, prot, libc::MAP_SHARED | libc::MAP_FIXED, f.as_raw_fd(), 0)
        };
        let err = (p == libc::MAP_FAILED).then(std::io::Error::last_os_error);
        // SAFETY: both ranges are parts of the reservation outside the file mapping (the
        // whole reservation when the file could not be mapped).
        unsafe {
            match err {
                Some(_) => libc::munmap(res, room),
                None => {
                    if aligned > base {
                        libc::munmap(res, aligned - base);
                    }
                    let end = aligned + len;
                    if base + room > end {
                        libc::munmap(end as *mut libc::c_void, base + room - end);
                    }
                    0
                }
            };
        }
        if let Some(e) = err {
            return Err(e);
        }
        p
    } else {
        // SAFETY: a new read-only mapping at an address of the kernel's choice.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        p
    };
    let map = Mapping { ptr, len };
    if huge {
        // Only advice: without transparent huge pages the mapping just uses small pages.
        // SAFETY: advises on a range this mapping owns.
        unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
    }
    populate(&map)?;
    Ok(map)
}

/// Faults the whole mapping in now, so the reads that follow never wait for the disk while
/// holding a connection's thread.
fn populate(map: &Mapping) -> std::io::Result<()> {
    // SAFETY: advises on a range `map` owns; the call only faults pages in.
    if unsafe { libc::madvise(map.ptr, map.len, libc::MADV_POPULATE_READ) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        // A read error of the file (EIO) or no memory: the block cannot be read.
        return Err(e);
    }
    // Kernels before 5.14 lack MADV_POPULATE_READ: touch one byte of every page.
    let bytes = map.as_ref();
    let mut sum = 0u8;
    for i in (0..bytes.len()).step_by(4096) {
        // SAFETY: `i` is within the mapping; a volatile read is not optimised away.
        sum ^= unsafe { std::ptr::read_volatile(bytes.as_ptr().add(i)) };
    }
    std::hint::black_box(sum);
    Ok(())
}

/// Whether all of `bytes` lies in one live mapping made by [`map_immutable`]: its pages keep
/// their bytes for as long as anything references them.
pub fn is_mapped(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let (start, end) = (bytes.as_ptr() as usize, bytes.as_ptr() as usize + bytes.len());
    live().range(..=start).next_back().is_some_and(|(_, &stop)| end <= stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn mapped_bytes_are_known_until_the_mapping_is_dropped() -> std::io::Result<()> {
        let mut f = tempfile::tempfile()?;
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        f.write_all(&data)?;
        // SAFETY: the temporary file is not written again.
        let b = unsafe { map_immutable(&f, data.len()) }?;
        assert_eq!(&b[..], &data[..]);
        assert!(is_mapped(&b));
        assert!(is_mapped(&b.slice(4096..90_000)));
        assert!(!is_mapped(&b.slice(5..5)), "empty slices are never by reference");
        let heap = Bytes::from(data.clone());
        assert!(!is_mapped(&heap));
        let tail = b.slice(99_000..);
        drop(b);
        assert!(is_mapped(&tail), "a slice keeps the mapping alive");
        Ok(())
    }

    #[test]
    fn large_blocks_map_whole_from_a_huge_page_boundary() -> std::io::Result<()> {
        let mut f = tempfile::tempfile()?;
        let data: Vec<u8> = (0..(3 << 20) + 5u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data)?;
        // SAFETY: the temporary file is not written again.
        let b = unsafe { map_immutable(&f, data.len()) }?;
        assert_eq!(b.as_ptr() as usize % HUGE, 0);
        assert!(b[..] == data[..], "mapped bytes differ from the file's");
        assert!(is_mapped(&b.slice(HUGE - 10..HUGE + 10)));
        let start = b.as_ptr() as usize;
        drop(b);
        assert!(!live().contains_key(&start), "the registry forgets a dropped mapping");
        Ok(())
    }

    #[test]
    fn a_file_shorter_than_the_mapping_is_an_error() -> std::io::Result<()> {
        let mut f = tempfile::tempfile()?;
        f.write_all(&[7u8; 4096])?;
        // SAFETY: the temporary file is not written again.
        let r = unsafe { map_immutable(&f, 4 << 20) };
        assert!(r.is_err(), "pages past the end of the file cannot be faulted in");
        // SAFETY: as above.
        assert!(unsafe { map_immutable(&f, 0) }?.is_empty());
        Ok(())
    }
}
