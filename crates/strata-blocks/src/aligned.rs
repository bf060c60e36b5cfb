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
    // The allocation need not be aligned: the bytes start at its first page boundary.
    let mut v: Vec<u8> = Vec::with_capacity(len + DIO_ALIGN);
    let start = v.as_ptr().align_offset(DIO_ALIGN).min(DIO_ALIGN);
    v.resize(start, 0);
    let mut body = r.into_stream();
    while let Some(chunk) = body.next().await {
        v.extend_from_slice(&chunk?);
    }
    // Bytes keeps the Vec's allocation as it is (no copy, whatever its spare capacity).
    Ok(Bytes::from(v).slice(start..))
}

/// Whether `data` can be written with `O_DIRECT` as it is.
pub fn is_direct_writable(data: &[u8]) -> bool {
    !data.is_empty() && data.len().is_multiple_of(DIO_ALIGN) && (data.as_ptr() as usize).is_multiple_of(DIO_ALIGN)
}

/// Writes `data` to a new file at `path` with `O_DIRECT`. `Ok(false)` when it cannot be done
/// that way (unaligned bytes, or a file system without `O_DIRECT`): nothing is left at `path`
/// then, and the caller writes the file the ordinary way.
pub fn write_direct(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    if !is_direct_writable(data) {
        return Ok(false);
    }
    let opened =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
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
        Err(e) => Err(e),
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
    fn direct_writes_round_trip_and_decline_what_they_cannot_take() {
        // /var/tmp, not /tmp: a tmpfs before Linux 6.6 refuses O_DIRECT (declined, not failed).
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let mut v: Vec<u8> = Vec::with_capacity((1 << 20) + DIO_ALIGN);
        let start = v.as_ptr().align_offset(DIO_ALIGN);
        v.resize(start, 0);
        v.extend_from_slice(&pattern(1 << 20));
        let block = Bytes::from(v).slice(start..);
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
