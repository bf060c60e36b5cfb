//! The options every client of a volume shares (`strata mount`, `strata gateway nfs`,
//! `strata gateway s3`): caches, write-back, retries and the block path. One set of flags,
//! one meaning; a command changes only a default, with `mut_arg`.

use std::path::PathBuf;
use std::time::Duration;

use strata_vfs::{BlocksMode, VfsConfig};

use crate::util::{ServerArgs, TokenArgs, parse_duration, parse_size};

/// Client cache, write-back and retry options.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Client cache and retries")]
pub struct ClientArgs {
    /// Memory for cached blocks, per attached volume [default: the storage class's setting,
    /// else 512M].
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Directory for the local-disk block cache of volumes whose blocks are not in a local
    /// directory (S3, or through the server); each volume gets a directory of its own in it,
    /// kept for the next mount [default: /var/cache/strata as root, else
    /// $XDG_CACHE_HOME/strata or ~/.cache/strata].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size of the local-disk block cache, per volume. It also leaves 10% of its file
    /// system free.
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub disk_cache_size: u64,
    /// No local-disk block cache: blocks are cached in memory only.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_disk_cache: bool,
    /// Keep the full blocks this client uploads in the local-disk cache too. By default only
    /// partial blocks (small files, file tails) go there: large writes such as checkpoints
    /// would cost a second write of every byte and evict the data jobs read.
    #[arg(long, conflicts_with = "no_disk_cache")]
    pub cache_large_writes: bool,
    /// Memory for written data not yet uploaded, per attached volume; writers wait when it is
    /// full.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub buffer_size: u64,
    /// Largest read-ahead window for sequential reads [default: the storage class's setting,
    /// else 64M].
    #[arg(long, value_parser = parse_size)]
    pub max_readahead: Option<u64>,
    /// Concurrent block uploads.
    #[arg(long, default_value_t = 16)]
    pub upload_parallel: usize,
    /// How long file attributes and names are reused before asking the server again: another
    /// client's changes show up after at most this long (this client's own at once). Longer is
    /// faster for metadata-heavy work; 0 asks every time.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub attr_ttl: Duration,
    /// How long an operation waits for an unreachable server (e.g. during a restart or a
    /// failover) before failing (EIO, NFS3ERR_JUKEBOX, S3 ServiceUnavailable).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub retry_timeout: Duration,
    /// How long block reads and writes retry an unreachable S3 store before failing; make it
    /// long (e.g. 1h) to have I/O wait for the store to come back instead.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub store_retry_timeout: Duration,
    /// How blocks are read and written: `direct` in the volume's store (a directory this host
    /// shares with the server, or an object store), `server` through `strata server`, or
    /// `auto`: direct for object stores and for a block directory this host sees as the server
    /// does (same id file), else through the server.
    #[arg(long, value_enum, default_value_t = BlocksArg::Auto)]
    pub blocks: BlocksArg,
    #[command(flatten)]
    pub metrics: crate::metrics_http::MetricsArgs,
}

/// Everything a client that attaches volumes with one token needs: the server, the token, and
/// the client options (`strata mount`, `strata gateway nfs`).
#[derive(clap::Args, Debug, Clone)]
pub struct AttachArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// The values of `--blocks`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlocksArg {
    /// Direct when this host sees the server's block store, else through the server.
    Auto,
    /// Always directly in the volume's block store.
    Direct,
    /// Always through `strata server`.
    Server,
}

impl From<BlocksArg> for BlocksMode {
    fn from(a: BlocksArg) -> Self {
        match a {
            BlocksArg::Auto => BlocksMode::Auto,
            BlocksArg::Direct => BlocksMode::Direct,
            BlocksArg::Server => BlocksMode::Server,
        }
    }
}

impl ClientArgs {
    /// The disk cache's directory: `--cache-dir`, else the default, unless `--no-disk-cache`.
    pub fn disk_cache_dir(&self) -> Option<PathBuf> {
        if self.no_disk_cache {
            return None;
        }
        if let Some(d) = &self.cache_dir {
            return Some(d.clone());
        }
        // A directory the user named must work (the mount fails if not); the default only
        // might: without it the mount caches in memory only, as it says.
        let d = default_cache_dir()?;
        match std::fs::create_dir_all(&d) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "no disk cache: cannot make the default cache directory");
                None
            }
        }
    }

    /// The client file system's settings; `name_cache` for front-ends without a kernel cache
    /// of names in front of them (the gateways).
    pub fn vfs_config(&self, name_cache: bool) -> VfsConfig {
        VfsConfig {
            mem_cache: self.cache_size.unwrap_or(VfsConfig::DEFAULT_MEM_CACHE),
            mem_cache_explicit: self.cache_size.is_some(),
            disk_cache: self.disk_cache_dir().map(|d| (d, self.disk_cache_size)),
            cache_large_writes: self.cache_large_writes,
            buffer: self.buffer_size,
            upload_parallel: self.upload_parallel,
            readahead: self.max_readahead.unwrap_or(VfsConfig::DEFAULT_READAHEAD),
            readahead_explicit: self.max_readahead.is_some(),
            attr_ttl: self.attr_ttl,
            retry_timeout: self.retry_timeout,
            store_retry_timeout: self.store_retry_timeout,
            blocks: self.blocks.into(),
            name_cache,
            ..VfsConfig::default()
        }
    }
}

/// Where disk caches go by default: the system's cache directory as root, else the user's.
fn default_cache_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/cache/strata"));
    }
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => Some(PathBuf::from(d).join("strata")),
        None => std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache/strata")),
    }
}
