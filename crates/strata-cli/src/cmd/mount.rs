//! `strata mount` and `strata umount`: the FUSE client.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use strata_fuse::{FuseOptions, StrataFs};
use strata_vfs::{BlocksMode, Client, Vfs, VfsConfig};

use crate::util::{ServerArgs, TokenArgs, is_strata_mount, parse_duration, parse_size};

/// Mount a volume with FUSE. Consistency is close-to-open: what one client wrote and closed,
/// every client that opens the file afterwards reads; a client always sees its own writes.
#[derive(clap::Args, Debug, Clone)]
pub struct MountArgs {
    /// Volume to mount (see `strata volume list`).
    pub volume: String,
    /// Existing empty directory to mount it on.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Run in the background once mounted; logs go to --log-file.
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Log file of a background mount [default: /tmp/strata-mount-VOLUME.log].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// How long the kernel caches file attributes (size, times, mode). Longer is faster for
    /// metadata-heavy work; other clients' changes show up after at most this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub attr_ttl: Duration,
    /// How long the kernel caches name lookups (other clients' renames and deletes show up
    /// after at most this long).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub entry_ttl: Duration,
    /// Memory for cached blocks [default: the storage class's setting, else 512M].
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Directory for a local-disk block cache (used when blocks are not on a local directory).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size of the local-disk block cache.
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub disk_cache_size: u64,
    /// Memory for buffered writes not yet uploaded; writers wait when it is full.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub buffer_size: u64,
    /// Largest read-ahead window for sequential reads [default: the storage class's setting,
    /// else 64M].
    #[arg(long, value_parser = parse_size)]
    pub max_readahead: Option<u64>,
    /// Concurrent block uploads.
    #[arg(long, default_value_t = 16)]
    pub upload_parallel: usize,
    /// Threads serving kernel requests.
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// How long an operation waits for an unreachable server (e.g. during a restart) before
    /// failing with EIO.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub retry_timeout: Duration,
    /// How long block reads and writes retry an unreachable S3 store before failing with EIO;
    /// make it long (e.g. 1h) to have I/O wait for the store to come back instead.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub store_retry_timeout: Duration,
    /// How blocks are read and written: `direct` in the volume's store (a directory this host
    /// shares with the server, or an object store), `server` through `strata server`, or
    /// `auto`: direct for object stores and for a block directory this host sees as the server
    /// does (same id file), else through the server.
    #[arg(long, value_enum, default_value_t = BlocksArg::Auto)]
    pub blocks: BlocksArg,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Only the mounting user may use the mount (default: every user, with Unix permissions).
    #[arg(long)]
    pub no_allow_other: bool,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
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

impl MountArgs {
    fn vfs_config(&self) -> VfsConfig {
        VfsConfig {
            mem_cache: self.cache_size.unwrap_or(VfsConfig::DEFAULT_MEM_CACHE),
            mem_cache_explicit: self.cache_size.is_some(),
            disk_cache: self.cache_dir.clone().map(|d| (d, self.disk_cache_size)),
            buffer: self.buffer_size,
            upload_parallel: self.upload_parallel,
            readahead: self.max_readahead.unwrap_or(VfsConfig::DEFAULT_READAHEAD),
            readahead_explicit: self.max_readahead.is_some(),
            attr_ttl: self.attr_ttl,
            store_retry_timeout: self.store_retry_timeout,
            blocks: self.blocks.into(),
            ..VfsConfig::default()
        }
    }

    fn fuse_options(&self) -> FuseOptions {
        FuseOptions {
            attr_ttl: self.attr_ttl,
            entry_ttl: self.entry_ttl,
            threads: self.threads,
            allow_other: !self.no_allow_other,
            read_only: self.read_only,
        }
    }
}

fn check_mountpoint(p: &Path) -> Result<PathBuf> {
    let md = std::fs::metadata(p).map_err(|e| anyhow!("mount point {}: {e}", p.display()))?;
    if !md.is_dir() {
        bail!("mount point {} is not a directory", p.display());
    }
    if is_strata_mount(p) {
        bail!("{} is already a Strata mount (unmount it with `strata umount {}`)", p.display(), p.display());
    }
    std::fs::canonicalize(p).with_context(|| format!("mount point {}", p.display()))
}

/// Raises the kernel's read-ahead for this mount so sequential reads arrive in large requests.
fn tune_readahead(mp: &Path, kb: u64) {
    let Ok(md) = std::fs::metadata(mp) else { return };
    let dev = md.dev();
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    if let Err(e) = std::fs::write(&path, kb.to_string()) {
        tracing::debug!(path, error = %e, "could not raise read-ahead");
    }
}

/// Mounts `volume` at `mountpoint` and serves until `shutdown` completes or the file system is
/// unmounted from outside; then commits buffered writes and ends the session.
pub async fn serve(args: &MountArgs, token: &str, shutdown: impl Future<Output = ()>) -> Result<()> {
    let mp = check_mountpoint(&args.mountpoint)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let client_name = format!("{}:{}", host.trim(), mp.display());
    let (client, resp) = Client::mount(&args.server.server, token, &args.volume, &client_name, args.retry_timeout)
        .await
        .with_context(|| format!("cannot mount volume {}", args.volume))?;
    let vfs = Vfs::new(client, resp, args.vfs_config())?;
    let fs = StrataFs::new(vfs.clone(), tokio::runtime::Handle::current(), args.fuse_options());
    let session = strata_fuse::spawn(fs, &mp, &args.volume)
        .with_context(|| format!("cannot mount FUSE at {} (is /dev/fuse available and are you root?)", mp.display()))?;
    let vfs2 = vfs.clone();
    let mp2 = mp.clone();
    tokio::task::spawn_blocking(move || tune_readahead(&mp2, 16 * 1024));
    let heart = tokio::spawn(heartbeat(vfs2));
    tracing::info!(volume = %args.volume, mountpoint = %mp.display(), "mounted");
    let ended_outside = tokio::select! {
        _ = shutdown => false,
        _ = wait_finished(&session) => true,
    };
    heart.abort();
    if ended_outside {
        tracing::info!("file system was unmounted");
    } else {
        tracing::info!(mountpoint = %mp.display(), "unmounting");
    }
    finish(session, &vfs, &mp, ended_outside).await
}

async fn heartbeat(vfs: Arc<Vfs>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Err(e) = vfs.heartbeat().await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

async fn wait_finished(s: &fuser::BackgroundSession) {
    while !s.guard.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn finish(session: fuser::BackgroundSession, vfs: &Arc<Vfs>, mp: &Path, ended_outside: bool) -> Result<()> {
    if !ended_outside {
        // Detach lazily: the mount leaves the namespace now; files still open keep working
        // until they are closed, or until the grace below runs out.
        if let Err(e) = detach(mp) {
            tracing::warn!(mountpoint = %mp.display(), error = %e, "could not detach the mount");
        }
    }
    // A plain thread, not the blocking pool: if files stay open it is abandoned at exit, and
    // the runtime must not wait for it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(session.join());
    });
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "FUSE session ended with an error"),
        Ok(Err(_)) => tracing::warn!("FUSE session thread failed"),
        Err(_) => tracing::warn!("files still open 10s after unmount; committing and exiting"),
    }
    vfs.unmount().await.context("committing buffered writes at unmount")?;
    tracing::info!("unmounted");
    Ok(())
}

/// Lazily unmounts a FUSE mount point (root can; other users go through fusermount3).
fn detach(mp: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(mp).status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(err),
    }
}

/// Runs `strata mount`.
pub fn run(args: MountArgs) -> Result<()> {
    let token = args.token.resolve()?;
    if args.daemon && std::env::var_os("STRATA_MOUNT_CHILD").is_none() {
        return daemonize(&args);
    }
    crate::util::init_logging(args.log_json);
    let rt = crate::runtime()?;
    rt.block_on(serve(&args, &token, crate::cmd::server::shutdown_signal()))
}

fn daemonize(args: &MountArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    check_mountpoint(&args.mountpoint)?;
    let log = args.log_file.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/strata-mount-{}.log", args.volume)));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("cannot find the strata executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env("STRATA_MOUNT_CHILD", "1")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no state of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background mount")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if is_strata_mount(&args.mountpoint) {
            println!(
                "mounted {} at {} (pid {}, log {})",
                args.volume,
                args.mountpoint.display(),
                child.id(),
                log.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            bail!("background mount exited ({status}): {last}");
        }
        if Instant::now() > deadline {
            bail!("background mount did not come up within 60s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unmount a Strata mount; the mount process commits buffered writes and exits.
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Mount point.
    pub mountpoint: PathBuf,
    /// Detach now even if files are open (the mount goes away when they are closed).
    #[arg(long)]
    pub lazy: bool,
}

/// Runs `strata umount`.
pub fn umount(args: UmountArgs) -> Result<()> {
    if !is_strata_mount(&args.mountpoint) {
        bail!("{} is not a Strata mount", args.mountpoint.display());
    }
    let c = std::ffi::CString::new(args.mountpoint.as_os_str().as_encoded_bytes())?;
    let flags = if args.lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            let st = std::process::Command::new("fusermount3").arg("-u").arg(&args.mountpoint).status();
            if matches!(st, Ok(s) if s.success()) {
                return Ok(());
            }
        }
        if e.raw_os_error() == Some(libc::EBUSY) {
            bail!("{} is busy (files open); close them or use --lazy", args.mountpoint.display());
        }
        bail!("cannot unmount {}: {e}", args.mountpoint.display());
    }
    Ok(())
}
