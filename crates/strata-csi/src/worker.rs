//! FUSE workers: one `strata mount --fuse-fd` process per staged volume, started detached from
//! the plugin (a plugin restart leaves them running) and replaced on the same kernel
//! connection when they die, because the plugin keeps a copy of each `/dev/fuse` descriptor.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::state::{Staged, StateDir, start_time};

/// The descriptor number a worker finds its `/dev/fuse` connection under.
const WORKER_FD: RawFd = 3;

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The `strata` executable (read at every start: an upgraded binary takes over at the next
    /// worker start).
    pub program: PathBuf,
    /// The Strata server (`HOST:PORT`).
    pub server: String,
    /// More arguments for `strata mount` (cache sizes and the like).
    pub extra_args: Vec<String>,
}

/// A staged volume's worker, as supervised.
pub struct Slot {
    /// The record (pid updated on every replacement).
    pub staged: Mutex<Staged>,
    /// The plugin's copy of the kernel connection; None if it was lost.
    fd: Mutex<Option<OwnedFd>>,
    /// Set while unstaging: an exit is then the end, not a crash.
    stopping: AtomicBool,
    /// Woken when the supervisor sees the worker gone for good.
    ended: tokio::sync::Notify,
    done: AtomicBool,
}

impl Slot {
    /// A slot for a running worker.
    pub fn new(staged: Staged, fd: Option<OwnedFd>) -> Arc<Slot> {
        Arc::new(Slot {
            staged: Mutex::new(staged),
            fd: Mutex::new(fd),
            stopping: AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
            done: AtomicBool::new(false),
        })
    }

    /// A copy of the record.
    pub fn record(&self) -> Staged {
        self.staged.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Whether the worker is running now.
    pub fn alive(&self) -> bool {
        let s = self.record();
        s.pid > 0 && start_time(s.pid) == Some(s.start_time)
    }

    /// Whether the plugin still holds the kernel connection.
    pub fn holds_connection(&self) -> bool {
        self.fd.lock().is_ok_and(|f| f.is_some())
    }

    /// Stops replacing the worker and lets go of the connection (unstaging).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Ok(mut f) = self.fd.lock() {
            f.take();
        }
    }

    /// Waits until the worker is gone for good, at most `limit`; kills it after that.
    pub async fn wait_ended(&self, limit: Duration) {
        let wait = async {
            while !self.done.load(Ordering::SeqCst) && self.alive() {
                let _ = tokio::time::timeout(Duration::from_millis(100), self.ended.notified()).await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            let pid = self.record().pid;
            tracing::warn!(pid, "worker did not exit after unmount; killing it");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Starts a worker for `s` on connection `fd`; returns its pid and start time.
pub fn spawn(
    cmd: &WorkerCommand,
    state: &StateDir,
    node_id: &str,
    s: &Staged,
    fd: BorrowedFd<'_>,
    resume: bool,
) -> io::Result<(i32, u64)> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(state.log_path(&s.staging))?;
    let mut c = Command::new(&cmd.program);
    c.arg("mount")
        .arg(&s.volume)
        .arg(&s.staging)
        .arg("--server")
        .arg(&cmd.server)
        .arg("--token-file")
        .arg(state.token_path(&s.staging))
        .arg("--fuse-fd")
        .arg(WORKER_FD.to_string())
        .arg("--session-file")
        .arg(state.session_path(&s.staging))
        .arg("--client-name")
        .arg(format!("csi:{node_id}:{}", s.volume))
        .args(&cmd.extra_args);
    if resume {
        c.arg("--resume");
    }
    if s.read_only {
        c.arg("--read-only");
    }
    c.env_remove("STRATA_TOKEN").stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    let raw = fd.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            // Its own session: signals to the plugin's process group do not reach it.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if raw == WORKER_FD {
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, WORKER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn()?;
    let pid = child.id() as i32;
    // Not waited on through `child`: the supervisor reaps it (see `reap`).
    std::mem::forget(child);
    let st = start_time(pid).unwrap_or(0);
    Ok((pid, st))
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A copy of a running worker's `/dev/fuse` descriptor (after a plugin restart).
pub fn fetch_connection(pid: i32) -> io::Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: plain system call on a valid pidfd; a non-negative result is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), WORKER_FD, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if link != std::path::Path::new("/dev/fuse") {
        return Err(io::Error::other(format!(
            "worker {pid}'s descriptor {WORKER_FD} is {}, not /dev/fuse",
            link.display()
        )));
    }
    Ok(fd)
}

/// Waits until process `pid` (started at `start`) has exited.
pub async fn wait_exit(pid: i32, start: u64) {
    if start_time(pid) != Some(start) {
        return;
    }
    let registered = pidfd_open(pid).and_then(|fd| {
        // SAFETY: an OwnedFd stays open and unchanged for as long as the AsyncFd owns it.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(|e| e.into_parts().1)
    });
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while start_time(pid) == Some(start) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    reap(pid);
}

/// Collects the exit status of a worker this process started (others are not its children).
fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
}

/// Keeps a worker running for `slot` until it is stopped: a worker that exits while the volume
/// is staged is replaced by a new one on the same connection.
pub async fn supervise(slot: Arc<Slot>, cmd: WorkerCommand, state: StateDir, node_id: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let s = slot.record();
        wait_exit(s.pid, s.start_time).await;
        if slot.stopping.load(Ordering::SeqCst) {
            break;
        }
        let fd = slot.fd.lock().ok().and_then(|f| f.as_ref().and_then(|f| f.try_clone().ok()));
        let Some(fd) = fd else {
            tracing::error!(volume = %s.volume, staging = %s.staging.display(), "FUSE worker gone and the connection with it: the mount is lost until the volume is staged again");
            break;
        };
        tracing::warn!(volume = %s.volume, pid = s.pid, "FUSE worker exited; starting a replacement on the same connection");
        match spawn(&cmd, &state, &node_id, &s, fd.as_fd(), true) {
            Ok((pid, start)) => {
                let rec = {
                    let mut g = slot.staged.lock().unwrap_or_else(|p| p.into_inner());
                    g.pid = pid;
                    g.start_time = start;
                    g.clone()
                };
                if let Err(e) = state.save_staged(&rec) {
                    tracing::warn!(error = %e, "cannot save the worker's record");
                }
                tracing::info!(volume = %s.volume, pid, "replacement FUSE worker started");
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::error!(volume = %s.volume, error = %e, "cannot start a replacement worker; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    slot.done.store(true, Ordering::SeqCst);
    slot.ended.notify_waiters();
}

use std::os::fd::AsFd;
