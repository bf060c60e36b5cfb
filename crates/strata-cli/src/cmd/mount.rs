//! `strata mount` and `strata umount`: the FUSE client.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use strata_fuse::{FuseOptions, StrataFs};
use strata_vfs::Vfs;

use crate::client_args::AttachArgs;
use crate::util::{is_strata_mount, parse_duration};

/// Mount a volume with FUSE. Consistency is close-to-open: what one client wrote and closed,
/// every client that opens the file afterwards reads; a client always sees its own writes.
#[derive(clap::Args, Debug, Clone)]
#[command(mut_arg("retry_timeout", |a| a.default_value("5m")))]
pub struct MountArgs {
    /// Volume to mount (see `strata volume list`).
    pub volume: String,
    /// Existing empty directory to mount it on.
    pub mountpoint: PathBuf,
    /// Run in the background once mounted; logs go to --log-file.
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Log file of a background mount [default: /tmp/strata-mount-VOLUME.log].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// How long the kernel caches name lookups (other clients' renames and deletes show up
    /// after at most this long).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub entry_ttl: Duration,
    /// Threads serving kernel requests.
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Do not read a directory whole when lookups in it miss (by default the second lookup
    /// that misses in a directory reads all its names and attributes, in pages, and later
    /// lookups in it are answered from that for --attr-ttl).
    #[arg(long)]
    pub no_dir_cache: bool,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Only the mounting user may use the mount (default: every user, with Unix permissions).
    #[arg(long)]
    pub no_allow_other: bool,
    /// Log as JSON lines (the same as `--log-format json`).
    #[arg(long, hide = true)]
    pub log_json: bool,
    /// Log format: `text` (one line per event) or `json` (one object per line, for log
    /// shippers).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::util::LogFormat,
    /// Name this client shows in `strata status` [default: HOST:MOUNTPOINT].
    #[arg(long)]
    pub client_name: Option<String>,
    /// Serve an already mounted `/dev/fuse` descriptor inherited under this number instead of
    /// mounting (the CSI node plugin's FUSE workers); SIGTERM then hands the connection over
    /// instead of unmounting.
    #[arg(long, value_name = "FD", hide = true)]
    pub fuse_fd: Option<i32>,
    /// With --fuse-fd: an earlier worker served this connection; take it over.
    #[arg(long, requires = "fuse_fd", hide = true)]
    pub resume: bool,
    /// With --fuse-fd: a file holding the session id of the worker that served this volume
    /// before; a new worker ends that session, then records its own.
    #[arg(long, requires = "fuse_fd", hide = true)]
    pub session_file: Option<PathBuf>,
    /// Peer cache: serve the blocks in this mount's caches to the volume's other mounts at
    /// ADDR (IP:PORT, an address they can reach), and get blocks from theirs. Each block has
    /// one owner among the mounts with a peer cache (rendezvous hashing of its key), which
    /// fetches it from the block store once for all of them, so a dataset read on N nodes is
    /// read from the store about once instead of N times. A peer that fails or is slower than
    /// --peer-timeout is passed over for the store. A peer hands a block only to a token the
    /// server says may read its volume.
    #[arg(long, value_name = "ADDR", help_heading = "Peer cache")]
    pub peer_cache: Option<std::net::SocketAddr>,
    /// How long a peer may take to answer for one block before it is read from the store.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Peer cache")]
    pub peer_timeout: Duration,
    #[command(flatten)]
    pub attach: AttachArgs,
}

impl MountArgs {
    fn fuse_options(&self) -> FuseOptions {
        FuseOptions {
            attr_ttl: self.attach.client.attr_ttl,
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

/// Attaches the volume for a mount at `mp`, named `--client-name` or HOST:MOUNTPOINT.
async fn attach(args: &MountArgs, token: &str, mp: &Path) -> Result<Arc<Vfs>> {
    let client_name =
        args.client_name.clone().unwrap_or_else(|| format!("{}:{}", strata_vfs::host_name(), mp.display()));
    if let Some(a) = args.peer_cache
        && (a.ip().is_unspecified() || a.port() == 0)
    {
        bail!("--peer-cache {a}: give the address and port other mounts reach this one at (not 0.0.0.0 or port 0)");
    }
    let cfg = strata_vfs::VfsConfig {
        peer_cache: args.peer_cache,
        peer_timeout: args.peer_timeout,
        dir_cache: !args.no_dir_cache,
        ..args.attach.client.vfs_config(false)
    };
    Vfs::attach(&args.attach.server.server, token, &args.volume, &client_name, cfg)
        .await
        .with_context(|| format!("cannot mount volume {}", args.volume))
}

/// Mounts `volume` at `mountpoint` and serves until `shutdown` completes or the file system is
/// unmounted from outside; then commits buffered writes and ends the session.
pub async fn serve(args: &MountArgs, token: &str, shutdown: impl Future<Output = ()>) -> Result<()> {
    strata_fuse::metrics::register();
    args.attach.client.metrics.start().await?;
    if let Some(fd) = args.fuse_fd {
        return serve_worker(args, token, fd, shutdown).await;
    }
    let mp = check_mountpoint(&args.mountpoint)?;
    let vfs = attach(args, token, &mp).await?;
    let fs = StrataFs::new(vfs.clone(), tokio::runtime::Handle::current(), args.fuse_options());
    let session = match strata_fuse::spawn(fs, &mp, &args.volume) {
        Ok(s) => s,
        Err(e) => {
            if let Err(d) = vfs.detach().await {
                tracing::warn!(error = %d, "ending the session failed");
            }
            return Err(anyhow::Error::new(e)
                .context(format!("cannot mount FUSE at {} (is /dev/fuse available and are you root?)", mp.display())));
        }
    };
    let mp2 = mp.clone();
    tokio::task::spawn_blocking(move || tune_readahead(&mp2, 16 * 1024));
    tracing::info!(volume = %args.volume, mountpoint = %mp.display(), "mounted");
    let ended_outside = tokio::select! {
        _ = shutdown => false,
        _ = wait_finished(&session) => true,
    };
    if ended_outside {
        tracing::info!("file system was unmounted");
    } else {
        tracing::info!(mountpoint = %mp.display(), "unmounting");
    }
    finish(session, &vfs, &mp, ended_outside).await
}

/// A FUSE worker of the CSI node plugin: serves the kernel connection on `fd`, which the plugin
/// mounted and keeps a copy of. Unmounting (by the plugin) ends it like a normal mount; SIGTERM
/// hands over: requests in flight finish, new ones wait in the kernel, buffered writes are
/// committed, and the process exits leaving the mount to the next worker.
async fn serve_worker(args: &MountArgs, token: &str, fd: i32, shutdown: impl Future<Output = ()>) -> Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::FileTypeExt;
    let path = format!("/proc/self/fd/{fd}");
    let is_fuse =
        std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(10, 229));
    if !is_fuse {
        bail!("--fuse-fd {fd} is not an open /dev/fuse descriptor");
    }
    // SAFETY: checked above to be open; this process owns it from here on.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mp = args.mountpoint.clone();
    let vfs = attach(args, token, &mp).await?;
    if let Some(f) = &args.session_file {
        hand_over_session(&vfs, f).await;
    }
    let fs = StrataFs::new(vfs.clone(), tokio::runtime::Handle::current(), args.fuse_options());
    let gate = fs.gate();
    let session = strata_fuse::serve_fd(fs, owned, args.resume, &args.volume)
        .with_context(|| format!("cannot serve the FUSE connection of {}", mp.display()))?;
    let mp2 = mp.clone();
    tokio::task::spawn_blocking(move || tune_readahead(&mp2, 16 * 1024));
    tracing::info!(volume = %args.volume, mountpoint = %mp.display(), resume = args.resume, "serving the kernel connection");
    let ended_outside = tokio::select! {
        _ = shutdown => false,
        _ = wait_finished(&session) => true,
    };
    if ended_outside {
        tracing::info!("file system was unmounted");
        return finish(session, &vfs, &mp, true).await;
    }
    tracing::info!("handing over: finishing requests in flight");
    gate.close().await;
    vfs.detach().await.context("committing buffered writes at hand-over")?;
    tracing::info!("handed over; the next worker takes the connection");
    // The session's threads wait in the kernel for requests that are no longer ours.
    std::process::exit(0);
}

/// Ends the session of the worker this one replaces (its id in `file`) and records this
/// worker's own there. Failing either only delays the end of the old session to its timeout.
async fn hand_over_session(vfs: &Vfs, file: &Path) {
    // Also without --resume: a plugin that lost a worker with its connection mounts afresh,
    // and the dead worker's session must end all the same.
    if let Ok(text) = std::fs::read_to_string(file)
        && let Ok(old) = text.trim().parse::<u64>()
        && old != vfs.session_id()
    {
        match vfs.end_session(old).await {
            Ok(()) => tracing::info!(session = old, "ended the session of the worker replaced"),
            Err(e) => tracing::warn!(session = old, error = %e, "cannot end the replaced worker's session"),
        }
    }
    if let Err(e) = std::fs::write(file, vfs.session_id().to_string()) {
        tracing::warn!(path = %file.display(), error = %e, "cannot record the session id");
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
        // The kernel answers a read that races the unmount's teardown with ECONNABORTED
        // instead of ENODEV (a request taken just as the connection closed): the same end.
        Ok(Ok(Err(e))) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            tracing::info!("FUSE connection closed while a request was in flight (unmount)")
        }
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "FUSE session ended with an error"),
        Ok(Err(_)) => tracing::warn!("FUSE session thread failed"),
        Err(_) => tracing::warn!("files still open 10s after unmount; committing and exiting"),
    }
    vfs.detach().await.context("committing buffered writes at unmount")?;
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
    let token = args.attach.token.resolve()?;
    if args.daemon && std::env::var_os("STRATA_MOUNT_CHILD").is_none() {
        return daemonize(&args);
    }
    crate::util::init_logging(args.log_json || args.log_format == crate::util::LogFormat::Json);
    let rt = crate::runtime()?;
    rt.block_on(async { serve(&args, &token, crate::cmd::server::shutdown_signal()).await })
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
