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

/// A read-only mapping of a whole block file, listed in the registry while it lives.
struct Mapping(memmap2::Mmap);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        live().remove(&(self.0.as_ptr() as usize));
    }
}

/// Maps the first `len` bytes of `f` read-only, faulted in, as `Bytes` that own the mapping.
///
/// # Safety
/// `f` must be a block file that is never written again: deleting it or renaming another
/// file over it is allowed, changing its bytes or truncating it is not.
pub unsafe fn map_immutable(f: &File, len: usize) -> std::io::Result<Bytes> {
    // SAFETY: read-only, and the caller promises the file's bytes never change.
    let map = unsafe { memmap2::MmapOptions::new().len(len).populate().map(f) }?;
    if !map.is_empty() {
        let start = map.as_ptr() as usize;
        live().insert(start, start + map.len());
    }
    Ok(Bytes::from_owner(Mapping(map)))
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
}
