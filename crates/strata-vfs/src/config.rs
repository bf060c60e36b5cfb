//! What a client of a volume can tune, and how it reaches the volume's blocks.

use std::time::Duration;

use object_store::ObjectStore;
use strata_types::VolumeInfo;

/// Client tunables.
///
/// The volume's storage class may supply defaults for the memory cache and the read-ahead
/// (`VolumeInfo::cache_mem_bytes`, `readahead_bytes`): they replace `mem_cache` and `readahead`
/// unless the mount set those explicitly (`mem_cache_explicit`, `readahead_explicit`).
#[derive(Clone, Debug)]
pub struct VfsConfig {
    /// Memory block cache size in bytes.
    pub mem_cache: u64,
    /// `mem_cache` was chosen by the user: the class's cache default does not replace it.
    pub mem_cache_explicit: bool,
    /// Local disk block cache (directory and size) for stores that are not local.
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
    /// Full blocks this client uploads go to the disk cache too (partial ones always do).
    pub cache_large_writes: bool,
    /// Write-back buffer in bytes.
    pub buffer: u64,
    /// Concurrent block uploads.
    pub upload_parallel: usize,
    /// Largest read-ahead window in bytes (0: no read-ahead).
    pub readahead: u64,
    /// `readahead` was chosen by the user: the class's read-ahead default does not replace it.
    pub readahead_explicit: bool,
    /// Concurrent read-ahead fetches.
    pub prefetch_parallel: usize,
    /// How long attributes (and, with `name_cache`, names) are reused: the kernel's cache for
    /// a FUSE mount, the gateway's own for the others; directory attributes returned by this
    /// client's own changes are served from memory for at most this long.
    pub attr_ttl: Duration,
    /// How long a metadata call waits for an unreachable server (a restart, a failover)
    /// before failing with EIO.
    pub retry_timeout: Duration,
    /// How long block reads and writes retry an unreachable object store before failing
    /// with EIO (S3 stores; a long value makes I/O wait for the store to come back).
    pub store_retry_timeout: Duration,
    /// Whether blocks are read and written in the volume's store directly or through the
    /// server.
    pub blocks: BlocksMode,
    /// Remember names looked up with [`crate::Vfs::lookup_cached`] for `attr_ttl`: for
    /// front-ends with no kernel cache of their own (the gateways); FUSE mounts leave it off.
    pub name_cache: bool,
    /// Read a directory whole (names and attributes, in pages) when lookups in it miss, and
    /// answer later lookups and attribute requests from it for `attr_ttl` (see `dircache.rs`):
    /// for FUSE mounts, whose kernel checks permissions itself; the gateways leave it off.
    pub dir_cache: bool,
    /// A layer put around the volume's object store (tests count or fail its calls with it);
    /// the block store is then reached only through the layer, as an object store.
    pub store_layer: Option<StoreLayer>,
    /// Serve this client's cached blocks to the volume's other clients at this address, and
    /// get blocks from theirs (the peer cache, see `crate::peer`); `None`: off.
    pub peer_cache: Option<std::net::SocketAddr>,
    /// How long a peer may take to answer for a block before it is read from the store.
    pub peer_timeout: Duration,
}

/// An object store as the block store holds it.
type Store = std::sync::Arc<dyn ObjectStore>;

/// Wraps an object store in another (see [`VfsConfig::store_layer`]).
#[derive(Clone)]
pub struct StoreLayer(std::sync::Arc<dyn Fn(Store) -> Store + Send + Sync>);

impl StoreLayer {
    /// A layer made by `f`.
    pub fn new(f: impl Fn(Store) -> Store + Send + Sync + 'static) -> Self {
        StoreLayer(std::sync::Arc::new(f))
    }

    /// `store` inside the layer.
    pub fn wrap(&self, store: Store) -> Store {
        (self.0)(store)
    }
}

impl std::fmt::Debug for StoreLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLayer")
    }
}

/// Where a mount reads and writes blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlocksMode {
    /// Directly when this host sees the volume's store as the server does, else through the
    /// server (see [`blocks_route`]).
    #[default]
    Auto,
    /// Always directly in the volume's store (a shared directory or an object store).
    Direct,
    /// Always through `strata server`'s `Blocks` service.
    Server,
}

impl BlocksMode {
    /// The mode's name, as the mount option spells it.
    pub fn name(self) -> &'static str {
        match self {
            BlocksMode::Auto => "auto",
            BlocksMode::Direct => "direct",
            BlocksMode::Server => "server",
        }
    }
}

/// Decides how blocks go for a volume whose store is `store_url`, given the id the server
/// reports for it (`MountResp::store_id`): `Direct` or `Server` (never `Auto`) and why. An
/// explicit mode is kept. Object stores are reached directly. A block directory is used
/// directly only if it exists on this host and holds the server's id, i.e. this host sees the
/// server's own directory (a same-named local directory would be another disk); a server that
/// reports no id cannot serve blocks, so the directory is used directly as before. Reads a
/// small file: call it where blocking is allowed.
pub fn blocks_route(mode: BlocksMode, store_url: &str, store_id: &str) -> (BlocksMode, &'static str) {
    if mode != BlocksMode::Auto {
        return (mode, "chosen with --blocks");
    }
    let dir = match store_url.strip_prefix("file://") {
        Some(d) => std::path::Path::new(d),
        None if store_url.starts_with('/') => std::path::Path::new(store_url),
        None => return (BlocksMode::Direct, "the volume's store is an object store"),
    };
    if store_id.is_empty() {
        return (BlocksMode::Direct, "the server names no block directory id (an older server)");
    }
    match std::fs::read_to_string(dir.join(strata_blocks::store::STORE_ID_FILE)) {
        Ok(id) if id.trim() == store_id => (BlocksMode::Direct, "this host sees the server's block directory"),
        Ok(_) => (BlocksMode::Server, "the block directory here is not the server's (its id differs)"),
        Err(_) => (BlocksMode::Server, "the server's block directory is not visible on this host"),
    }
}

impl VfsConfig {
    /// Default memory block cache size.
    pub const DEFAULT_MEM_CACHE: u64 = 512 << 20;
    /// Default largest read-ahead window.
    pub const DEFAULT_READAHEAD: u64 = 64 << 20;

    /// This configuration with the volume's class defaults applied: a non-zero
    /// `cache_mem_bytes` / `readahead_bytes` replaces a setting the mount did not make
    /// explicitly.
    pub fn for_volume(&self, volume: &VolumeInfo) -> VfsConfig {
        let mut cfg = self.clone();
        if !cfg.mem_cache_explicit && volume.cache_mem_bytes > 0 {
            cfg.mem_cache = volume.cache_mem_bytes;
        }
        if !cfg.readahead_explicit && volume.readahead_bytes > 0 {
            cfg.readahead = volume.readahead_bytes;
        }
        cfg
    }
}

impl Default for VfsConfig {
    fn default() -> Self {
        VfsConfig {
            mem_cache: Self::DEFAULT_MEM_CACHE,
            mem_cache_explicit: false,
            disk_cache: None,
            cache_large_writes: false,
            buffer: 512 << 20,
            upload_parallel: 16,
            readahead: Self::DEFAULT_READAHEAD,
            readahead_explicit: false,
            prefetch_parallel: 8,
            attr_ttl: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(60),
            store_retry_timeout: Duration::from_secs(60),
            blocks: BlocksMode::Auto,
            name_cache: false,
            dir_cache: false,
            store_layer: None,
            peer_cache: None,
            peer_timeout: crate::peer::DEFAULT_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(cache_mem_bytes: u64, readahead_bytes: u64) -> VolumeInfo {
        VolumeInfo { cache_mem_bytes, readahead_bytes, ..Default::default() }
    }

    #[test]
    fn class_cache_defaults_replace_the_mount_defaults() {
        let cfg = VfsConfig::default().for_volume(&volume(2 << 30, 256 << 20));
        assert_eq!((cfg.mem_cache, cfg.readahead), (2 << 30, 256 << 20));
    }

    #[test]
    fn zero_in_the_class_keeps_the_mount_settings() {
        let cfg = VfsConfig::default().for_volume(&volume(0, 0));
        assert_eq!((cfg.mem_cache, cfg.readahead), (VfsConfig::DEFAULT_MEM_CACHE, VfsConfig::DEFAULT_READAHEAD));
        let cfg = VfsConfig::default().for_volume(&volume(1 << 30, 0));
        assert_eq!((cfg.mem_cache, cfg.readahead), (1 << 30, VfsConfig::DEFAULT_READAHEAD));
    }

    #[test]
    fn explicit_mount_settings_win_over_the_class() {
        let mine = VfsConfig {
            mem_cache: 100 << 20,
            mem_cache_explicit: true,
            readahead: 4 << 20,
            readahead_explicit: true,
            ..VfsConfig::default()
        };
        let cfg = mine.for_volume(&volume(2 << 30, 256 << 20));
        assert_eq!((cfg.mem_cache, cfg.readahead), (100 << 20, 4 << 20));
        // Each flag covers its own setting only.
        let half = VfsConfig { readahead_explicit: false, ..mine };
        let cfg = half.for_volume(&volume(2 << 30, 256 << 20));
        assert_eq!((cfg.mem_cache, cfg.readahead), (100 << 20, 256 << 20));
    }

    #[test]
    fn auto_goes_direct_only_to_the_servers_own_directory() {
        use strata_blocks::store::STORE_ID_FILE;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let auto = |url: &str, id: &str| blocks_route(BlocksMode::Auto, url, id).0;
        assert_eq!(auto("s3://bucket/prefix", ""), BlocksMode::Direct);
        assert_eq!(auto(&url, "abc"), BlocksMode::Server, "no id file here");
        std::fs::write(dir.path().join(STORE_ID_FILE), "xyz\n").expect("write");
        assert_eq!(auto(&url, "abc"), BlocksMode::Server, "another directory of the same name");
        std::fs::write(dir.path().join(STORE_ID_FILE), "abc\n").expect("write");
        assert_eq!(auto(&url, "abc"), BlocksMode::Direct);
        assert_eq!(auto(&dir.path().display().to_string(), "abc"), BlocksMode::Direct, "a bare path");
        assert_eq!(auto("file:///nonexistent/strata/blocks", "abc"), BlocksMode::Server);
        assert_eq!(auto("file:///nonexistent/strata/blocks", ""), BlocksMode::Direct, "an older server");
        assert_eq!(blocks_route(BlocksMode::Server, "s3://b/p", "").0, BlocksMode::Server);
        assert_eq!(blocks_route(BlocksMode::Direct, &url, "nope").0, BlocksMode::Direct);
    }
}
