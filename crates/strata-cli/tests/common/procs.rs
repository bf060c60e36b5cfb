//! Processes: the `strata` binary and short commands run to completion, the one launcher of
//! long-running processes ([`Service`]: servers, mounts, gateways, anything with a log and a
//! readiness check), free ports, signals and waits, and reading service logs.

use std::ffi::CString;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `strata` binary under test.
pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// `cmd` with no token or server taken from the environment and plain logs: what every
/// process of a test (`strata` itself, or a wrapper that runs it) is started with.
pub fn quiet_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("STRATA_TOKEN")
        .env_remove("STRATA_TOKEN_FILE")
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_MOUNT_CHILD")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    // The binary's own default filter is what users get; STRATA_IT_RUST_LOG overrides it.
    if let Ok(filter) = std::env::var("STRATA_IT_RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    cmd
}

/// A `strata` command with no token or server taken from the environment and plain logs.
pub fn strata() -> Command {
    let mut c = Command::new(strata_bin());
    quiet_env(&mut c);
    c
}

/// Runs a short `strata` command to completion (with a 60 s guard).
pub fn run_strata(args: &[&str]) -> Output {
    run_cmd(strata().args(args))
}

/// Runs a command to completion, killing it after 60 s. Output is drained while it runs, so a
/// command printing more than a pipe holds does not stall.
pub fn run_cmd(cmd: &mut Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn command");
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
    let Some(status) = wait_timeout(&mut child, Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = err.join().unwrap_or_default();
        panic!("command {cmd:?} did not finish within 60s; stderr: {}", String::from_utf8_lossy(&stderr));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// Runs a command that must succeed; its stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run_cmd(cmd);
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP port on 127.0.0.1 that nothing listens on, outside the ephemeral range (so that the
/// outgoing connections of parallel tests never take it while a server restarts).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 400) * 25;
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (base + n) % 10_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// Whether something accepts connections at `addr` (`host:port`).
pub fn listening(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Waits up to `timeout` for a child to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A long-running process of a test (a server, a mount, a gateway, a process in another
/// namespace), its output in a log file. Killed (SIGKILL) if still running when dropped, so a
/// failed test leaves nothing behind.
pub struct Service {
    /// What it is, for messages.
    pub name: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Starts `cmd` with its output in `log` (created), without waiting for anything.
    pub fn start(name: &str, cmd: &mut Command, log: &Path) -> Service {
        let f = File::create(log).unwrap_or_else(|e| panic!("{name} log {}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup log"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Service { name: name.to_string(), log: log.to_path_buf(), child: Some(child) }
    }

    /// Starts `cmd` like [`Service::start`] and waits until it is ready (see
    /// [`Service::wait_ready`]).
    pub fn start_ready(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        ready: impl FnMut() -> bool,
        context: impl Fn() -> String,
    ) -> Service {
        let mut s = Service::start(name, cmd, log);
        s.wait_ready(ready, context);
        s
    }

    /// Waits up to 30 s for `ready` to hold; panics with the end of the log (and `context()`)
    /// if the process exits or is not ready by then.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool, context: impl Fn() -> String) {
        let up = wait_until(Duration::from_secs(30), || !self.alive() || ready());
        if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!("{} exited ({st}):\n{}{}", self.name, tail(&self.log, 40), context());
        }
        assert!(up, "{} was not ready within 30s:\n{}{}", self.name, tail(&self.log, 40), context());
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether it was started and not stopped or killed since (it may have exited itself).
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for it to exit; its exit status (None: still
    /// running).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        signal(&c, libc::SIGTERM);
        let st = wait_timeout(&mut c, timeout);
        if st.is_none() {
            self.child = Some(c);
        }
        st
    }

    /// Stops it with SIGTERM, waiting up to `timeout` (then SIGKILL); what went wrong, if it
    /// did not exit by itself with success.
    pub fn stop_within(&mut self, timeout: Duration) -> Option<String> {
        self.child.as_ref()?;
        match self.terminate(timeout) {
            Some(st) if st.success() => None,
            Some(st) => Some(format!("{} exited with {st}", self.name)),
            None => {
                self.kill9();
                Some(format!("{} did not stop within {timeout:?} of SIGTERM", self.name))
            }
        }
    }

    /// [`Service::stop_within`] 30 s.
    pub fn stop(&mut self) -> Option<String> {
        self.stop_within(Duration::from_secs(30))
    }

    /// Stops it with SIGTERM; it must exit with success within 30 s.
    #[track_caller]
    pub fn stop_clean(&mut self) {
        if let Some(problem) = self.stop() {
            panic!("{problem}:\n{}", tail(&self.log, 30));
        }
    }
}

impl Drop for Service {
    /// Kills it if it is still running (a test that failed before stopping it), showing the end
    /// of its log when the test failed.
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("--- {} ({}) ---\n{}", self.name, self.log.display(), tail(&self.log, 40));
        }
        self.kill9();
    }
}

// ---- logs ----

/// Removes ANSI colour escapes from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Seconds into the day of a log line's RFC 3339 timestamp.
fn log_time(line: &str) -> Option<f64> {
    let t = strip_ansi(line);
    let ts = t.split_whitespace().next()?;
    let hms = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = hms.split(':');
    let (h, m, s) = (parts.next()?.parse::<f64>().ok()?, parts.next()?.parse::<f64>().ok()?, parts.next()?);
    Some(h * 3600.0 + m * 60.0 + s.parse::<f64>().ok()?)
}

/// Drops the one known-benign error of an unmount from a mount log: the kernel aborts a RELEASE
/// still in flight when the file system goes away right after a close, and fuser logs the failed
/// reply as an ERROR. Tolerated only from one second before the unmount began.
pub fn tolerate_unmount_race(text: &str) -> String {
    let marker = text.lines().find(|l| {
        l.contains("strata::cmd::mount: unmounting") || l.contains("strata::cmd::mount: file system was unmounted")
    });
    let Some(from) = marker.and_then(log_time) else { return text.to_string() };
    text.lines()
        .filter(|l| {
            !(l.contains("Failed to send FUSE reply: No such file or directory")
                && log_time(l).is_some_and(|t| t >= from - 1.0))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines of a log that report a problem: `WARN`/`ERROR` records or panics.
pub fn problem_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(strip_ansi)
        .filter(|l| {
            let mut words = l.split_whitespace();
            let _time = words.next();
            let level = words.next().unwrap_or("");
            // --log-format json lines carry the level as a field.
            let json = l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#);
            level == "WARN" || level == "ERROR" || json || l.contains("panicked")
        })
        .collect()
}

/// A log's text without colour escapes (empty if it cannot be read).
pub fn log_text(path: &Path) -> String {
    strip_ansi(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| strip_ansi(l)).collect::<Vec<_>>().join("\n")
}

// ---- mounts ----

/// Whether `path` (canonical) is currently a FUSE mount point of this process's namespace.
pub fn is_fuse_mount(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else { return false };
        f.get(4) == Some(&want.as_str()) && f.get(sep + 1).is_some_and(|t| t.starts_with("fuse"))
    })
}

/// Whether process `pid` sees a FUSE mount at `mp` (in its own mount namespace).
pub fn fuse_mounted_in(pid: u32, mp: &Path) -> bool {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).unwrap_or_default();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(&*mp.to_string_lossy()) && l.contains("fuse"))
}

/// Runs a command inside the mount namespace of process `pid`.
pub fn in_mount_ns(pid: u32, args: &[&str]) -> Output {
    run_cmd(Command::new("nsenter").args(["-t", &pid.to_string(), "-m", "--"]).args(args))
}

/// Whether anything is mounted at `path` (canonical; works for dead FUSE mounts too).
pub fn mounted_at(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Mount points of this process's namespace at or below `dir` (canonical), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Lazily detaches whatever is mounted at `path` (a dead or hung FUSE mount).
pub fn umount_lazy(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

// ---- metrics ----

/// Every sample of the `/metrics` at `url`, checked by prometheus-client's parsers
/// (tests/metrics/scrape.py): `name{label=value,...}` → value.
pub fn scrape(url: &str) -> std::collections::HashMap<String, f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/metrics/scrape.py");
    let out = run_cmd(Command::new("python3").args([script, url]));
    assert!(out.status.success(), "scrape {url}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("scrape output")
}

/// The value of `key` (0 when absent: a counter never incremented is not exposed).
pub fn val(m: &std::collections::HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}
