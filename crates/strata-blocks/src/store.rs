//! The block store: immutable blocks under unique keys in any `object_store` backend.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{BlockError, Result};

/// A handle on one object store holding blocks.
#[derive(Clone, Debug)]
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    url: String,
}

impl BlockStore {
    /// Opens the store named by `url`: `file:///abs/dir` or an absolute directory path.
    pub fn open(url: &str) -> Result<Self> {
        let bad = |reason: &str| BlockError::BadUrl { url: url.to_string(), reason: reason.to_string() };
        let dir = if let Some(rest) = url.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if url.starts_with('/') {
            PathBuf::from(url)
        } else {
            return Err(bad("only file:// stores (a local or shared directory) are supported by this build"));
        };
        if !dir.is_absolute() {
            return Err(bad("the directory must be an absolute path"));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| BlockError::Io { what: format!("create block directory {}", dir.display()), source: e })?;
        let fs = crate::local::BlockDir::new(dir.clone()).map_err(|e| bad(&e.to_string()))?;
        Ok(BlockStore { store: Arc::new(fs), local_root: Some(dir), url: url.to_string() })
    }

    /// Wraps an existing object store (any backend).
    pub fn from_store(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        BlockStore { store, local_root: None, url: url.to_string() }
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether blocks are on a local directory (so a disk cache would only duplicate them).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Stores a block. On a local directory, large blocks also start their write-back at
    /// once, so a later fsync finds little left to flush (disk writes overlap the writing
    /// instead of all happening at the end).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let len = data.len();
        self.store.put(&Path::from(key), PutPayload::from_bytes(data)).await?;
        if let Some(root) = &self.local_root
            && len >= EARLY_WRITEBACK
        {
            let path = root.join(key);
            // Only a hint: failing to start write-back early costs nothing but speed.
            let _ = tokio::task::spawn_blocking(move || start_writeback(&path)).await;
        }
        Ok(())
    }

    /// Stores a block on the calling thread, for callers that may block (not runtime workers).
    /// `None` when the store is not a local directory (use [`BlockStore::put`]); an error means
    /// the caller should fall back to `put`, which also replaces a partial file.
    pub fn put_now(&self, key: &str, data: &Bytes) -> Option<Result<()>> {
        let root = self.local_root.as_ref()?;
        let payload = PutPayload::from_bytes(data.clone());
        Some(
            crate::local::write_new(&root.join(key), &payload)
                .map_err(|e| BlockError::Io { what: format!("write block {key}"), source: e }),
        )
    }

    /// Where a block lives on disk, for a local store.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(key))
    }

    /// Reads a whole block on the calling thread, for callers that may block; `None` when the
    /// store is not a local directory.
    pub fn get_now(&self, key: &str, want: usize) -> Option<Result<Bytes>> {
        let root = self.local_root.as_ref()?;
        Some(match std::fs::read(root.join(key)) {
            Ok(b) if b.len() == want => Ok(Bytes::from(b)),
            Ok(b) => Err(BlockError::Short { key: key.to_string(), got: b.len(), want }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlockError::Missing(key.to_string())),
            Err(e) => Err(BlockError::Io { what: format!("read block {key}"), source: e }),
        })
    }

    /// Reads a whole block, checking its length.
    pub async fn get(&self, key: &str, want: usize) -> Result<Bytes> {
        let got = match self.store.get(&Path::from(key)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Err(BlockError::Missing(key.to_string())),
            Err(e) => return Err(e.into()),
        };
        if got.len() != want {
            return Err(BlockError::Short { key: key.to_string(), got: got.len(), want });
        }
        Ok(got)
    }

    /// Reads part of a block.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = (range.end - range.start) as usize;
        let got = match self.store.get_range(&Path::from(key), range).await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Err(BlockError::Missing(key.to_string())),
            Err(e) => return Err(e.into()),
        };
        if got.len() != want {
            return Err(BlockError::Short { key: key.to_string(), got: got.len(), want });
        }
        Ok(got)
    }

    /// Deletes a block; a block already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Blocks under a key prefix, with their last modification, one page at a time.
    pub fn list(&self, prefix: &str) -> futures::stream::BoxStream<'static, Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        self.store.list(Some(&Path::from(prefix))).map(|r| r.map_err(BlockError::from)).boxed()
    }

    /// Makes every block stored so far durable. Local directories are synced with one
    /// `syncfs`; remote stores acknowledge puts only once durable.
    pub async fn sync(&self) -> Result<()> {
        let Some(root) = self.local_root.clone() else { return Ok(()) };
        tokio::task::spawn_blocking(move || syncfs(&root))
            .await
            .map_err(|e| BlockError::Io { what: "sync task".into(), source: std::io::Error::other(e) })?
    }
}

/// Blocks at least this large start their write-back as soon as they are stored.
const EARLY_WRITEBACK: usize = 1 << 20;

fn start_writeback(path: &FsPath) {
    if let Ok(f) = std::fs::File::open(path) {
        start_writeback_of(&f);
    }
}

/// Starts (without waiting for) the write-back of a file's dirty pages.
pub fn start_writeback_of(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a descriptor `f` keeps open for the call.
    unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

fn syncfs(dir: &FsPath) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f =
        std::fs::File::open(dir).map_err(|e| BlockError::Io { what: format!("open {}", dir.display()), source: e })?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(BlockError::Io {
            what: format!("syncfs {}", dir.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_range_delete() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| BlockError::Io { what: "tempdir".into(), source: e })?;
        let s = BlockStore::open(&format!("file://{}", dir.path().display()))?;
        s.put("v1/chunks/0/0/5_0_4", Bytes::from_static(b"abcd")).await?;
        assert_eq!(s.get("v1/chunks/0/0/5_0_4", 4).await?, Bytes::from_static(b"abcd"));
        assert_eq!(s.get_range("v1/chunks/0/0/5_0_4", 1..3).await?, Bytes::from_static(b"bc"));
        assert!(matches!(s.get("v1/chunks/0/0/5_0_4", 9).await, Err(BlockError::Short { .. })));
        s.sync().await?;
        s.delete("v1/chunks/0/0/5_0_4").await?;
        s.delete("v1/chunks/0/0/5_0_4").await?;
        assert!(matches!(s.get("v1/chunks/0/0/5_0_4", 4).await, Err(BlockError::Missing(_))));
        Ok(())
    }

    #[test]
    fn relative_and_unknown_urls_are_refused() {
        assert!(matches!(BlockStore::open("file://rel/dir"), Err(BlockError::BadUrl { .. })));
        assert!(matches!(BlockStore::open("ftp://x"), Err(BlockError::BadUrl { .. })));
    }
}
