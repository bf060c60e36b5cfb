//! Test harness for integration tests on real FUSE mounts: a `strata server` on a free port
//! with its own data directory, a volume, and any number of `strata mount` processes of it, each
//! on its own mount point. Everything is torn down on drop (mounts first, then the server), and
//! the test fails if any service log holds an `ERROR` or `WARN` line it did not allow.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `strata` binary under test.
pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// A `strata` command with no token or server taken from the environment and plain logs.
pub fn strata() -> Command {
    let mut c = Command::new(strata_bin());
    c.env_remove("STRATA_TOKEN")
        .env_remove("STRATA_TOKEN_FILE")
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_MOUNT_CHILD")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    // The binary's own default filter is what users get; STRATA_IT_RUST_LOG overrides it.
    if let Ok(filter) = std::env::var("STRATA_IT_RUST_LOG") {
        c.env("RUST_LOG", filter);
    }
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!("command {cmd:?} did not finish within 60s; stderr: {}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
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
            level == "WARN" || level == "ERROR" || l.contains("panicked")
        })
        .collect()
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| strip_ansi(l)).collect::<Vec<_>>().join("\n")
}

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

/// Whether anything is mounted at `path` (canonical; works for dead FUSE mounts too).
pub fn mounted_at(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Lazily detaches whatever is mounted at `path` (a dead or hung FUSE mount).
pub fn umount_lazy(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Waits up to `timeout` for a child to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A running `strata server`.
pub struct ServerProc {
    child: Option<Child>,
    /// Logs of this server, one file per start.
    pub logs: Vec<PathBuf>,
}

/// A running `strata mount`.
pub struct MountProc {
    /// Mount point.
    pub path: PathBuf,
    /// Log file.
    pub log: PathBuf,
    child: Option<Child>,
}

impl MountProc {
    /// Process id of the mount process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("mount process running")
    }

    /// Kills the mount process with SIGKILL (a client crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the mount process to exit; its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        signal(&c, libc::SIGTERM);
        let st = wait_timeout(&mut c, timeout);
        if st.is_none() {
            self.child = Some(c);
        }
        st
    }

    /// Whether the mount process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the mount process cleanly (SIGTERM), then makes sure nothing stays mounted.
    pub fn stop(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGTERM);
            match wait_timeout(&mut c, Duration::from_secs(30)) {
                Some(st) if st.success() => {}
                Some(st) => notes.push(format!("mount {} exited with {st}", self.path.display())),
                None => {
                    notes.push(format!("mount {} did not stop within 30s of SIGTERM", self.path.display()));
                    signal(&c, libc::SIGKILL);
                    let _ = c.wait();
                }
            }
        }
        if mounted_at(&self.path) {
            umount_lazy(&self.path);
            if !wait_until(Duration::from_secs(5), || !mounted_at(&self.path)) {
                notes.push(format!("{} still mounted after umount -l", self.path.display()));
            }
        }
        notes
    }
}

/// Options of a test cluster.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Extra arguments of `strata server`.
    pub server_args: Vec<String>,
    /// Extra arguments of `strata volume create`.
    pub volume_args: Vec<String>,
    /// A PostgreSQL server (`postgres://user@host:port`) for the metadata, instead of
    /// `STRATA_IT_PG`.
    pub pg: Option<String>,
}

/// A server, one volume and its mounts, all private to one test.
pub struct Cluster {
    /// Root of everything this test creates.
    pub dir: PathBuf,
    /// Server data directory.
    pub data: PathBuf,
    /// `127.0.0.1:PORT` of the server.
    pub addr: String,
    /// The admin token file.
    pub token_file: PathBuf,
    /// Name of the volume.
    pub volume: String,
    /// The server process.
    pub server: ServerProc,
    /// The mounts, in the order they were made.
    pub mounts: Vec<MountProc>,
    /// More servers on the same metadata store and data directory (`start_peer`), with their
    /// addresses.
    pub peers: Vec<(String, ServerProc)>,
    server_args: Vec<String>,
    /// The PostgreSQL database of this cluster (`STRATA_IT_PG`): base URL and name.
    pg: Option<(String, String)>,
    /// Whether the volume keeps its blocks in the S3 store of `STRATA_IT_S3`.
    pub s3: bool,
    allowed: Vec<String>,
    extra_logs: Vec<PathBuf>,
    tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// A server with a volume and no mounts.
    pub fn new(name: &str) -> Cluster {
        Self::with_opts(name, Opts::default())
    }

    /// A server with a volume and `n` mounts (default options).
    pub fn with_mounts(name: &str, n: usize) -> Cluster {
        let mut c = Self::new(name);
        for _ in 0..n {
            c.mount(&[]);
        }
        c
    }

    /// A server with options, and a volume.
    pub fn with_opts(name: &str, opts: Opts) -> Cluster {
        let tmp = tempfile::Builder::new().prefix(&format!("strata-it-{name}-")).tempdir().expect("tempdir");
        let dir = std::fs::canonicalize(tmp.path()).expect("tempdir path");
        let data = dir.join("data");
        let port = free_port();
        let mut c = Cluster {
            token_file: data.join("admin.token"),
            data,
            addr: format!("127.0.0.1:{port}"),
            volume: format!("vol-{name}"),
            server: ServerProc { child: None, logs: Vec::new() },
            mounts: Vec::new(),
            peers: Vec::new(),
            server_args: opts.server_args.clone(),
            pg: None,
            s3: false,
            allowed: Vec::new(),
            extra_logs: Vec::new(),
            dir,
            tmp: Some(tmp),
        };
        if let Some((base, db)) = pg_database(name, opts.pg.clone()) {
            c.server_args.extend(["--meta".to_string(), format!("{base}/{db}")]);
            c.pg = Some((base, db));
        }
        c.start_server();
        let mut volume_args = opts.volume_args.clone();
        if !volume_args.iter().any(|a| a == "--class") && c.use_s3_class(name) {
            volume_args.extend(["--class".to_string(), "it-s3".to_string()]);
        }
        let mut args = vec!["volume", "create", &c.volume, "--server", &c.addr];
        let tf = c.token_file.display().to_string();
        args.extend(["--token-file", &tf]);
        args.extend(volume_args.iter().map(String::as_str));
        let out = run_strata(&args);
        assert!(
            out.status.success(),
            "volume create failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.server_tail()
        );
        c
    }

    /// With `STRATA_IT_S3` (an S3 endpoint; credentials in the AWS_* variables), creates class
    /// `it-s3` keeping blocks under a prefix of this cluster's own; whether it did.
    fn use_s3_class(&mut self, name: &str) -> bool {
        let Ok(endpoint) = std::env::var("STRATA_IT_S3") else { return false };
        let prefix = format!("it-{name}-{}-{}", std::process::id(), unique());
        let tf = self.token_file.display().to_string();
        let out = run_strata(&[
            "storageclass",
            "create",
            "it-s3",
            "--backend",
            "s3",
            "--bucket",
            "strata-test",
            "--prefix",
            &prefix,
            "--endpoint",
            &endpoint,
            "--server",
            &self.addr,
            "--token-file",
            &tf,
        ]);
        assert!(out.status.success(), "create the S3 class: {}", String::from_utf8_lossy(&out.stderr));
        self.s3 = true;
        true
    }

    /// The `--meta` URL of the server, when it is not the default SQLite.
    pub fn meta_url(&self) -> Option<String> {
        self.pg.as_ref().map(|(base, db)| format!("{base}/{db}"))
    }

    /// Issues a token of `role` in the cluster scope (with the admin token); the file its secret
    /// was written to.
    pub fn issue_token(&self, name: &str, role: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.token"));
        let tf = self.token_file.display().to_string();
        let secret = path.display().to_string();
        let out = run_strata(&[
            "token",
            "create",
            name,
            "--role",
            role,
            "--secret-file",
            &secret,
            "--server",
            &self.addr,
            "--token-file",
            &tf,
        ]);
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        path
    }

    /// The admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).expect("token file").trim().to_string()
    }

    /// Allows log lines containing `needle` (for expected warnings).
    pub fn allow_log(&mut self, needle: &str) {
        self.allowed.push(needle.to_string());
    }

    /// Also checks this log file at teardown.
    pub fn watch_log(&mut self, path: PathBuf) {
        self.extra_logs.push(path);
    }

    fn server_tail(&self) -> String {
        self.server.logs.last().map(|l| tail(l, 40)).unwrap_or_default()
    }

    /// Starts (or restarts) the server on the same port and data directory.
    pub fn start_server(&mut self) {
        assert!(self.server.child.is_none(), "server already running");
        let log = self.dir.join(format!("server.{}.log", self.server.logs.len() + 1));
        self.server.child = Some(self.spawn_server(&self.addr, &log));
        self.server.logs.push(log);
    }

    fn spawn_server(&self, addr: &str, log: &Path) -> Child {
        let f = File::create(log).expect("server log");
        let mut cmd = strata();
        cmd.arg("server")
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(addr)
            .args(&self.server_args)
            .stdout(f.try_clone().expect("dup"))
            .stderr(f);
        let mut child = cmd.spawn().expect("spawn strata server");
        let ok = wait_until(Duration::from_secs(30), || {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            TcpStream::connect(addr).is_ok() && self.token_file.exists()
        });
        if let Ok(Some(st)) = child.try_wait() {
            panic!("strata server exited ({st}):\n{}", tail(log, 40));
        }
        assert!(ok, "strata server did not listen on {addr} within 30s:\n{}", tail(log, 40));
        child
    }

    /// Starts one more server with the same arguments and data directory on a new port (with
    /// `--meta postgres://…` in the options, a second server on the same database); returns its
    /// index in `peers`.
    pub fn start_peer(&mut self) -> usize {
        let i = self.peers.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = self.dir.join(format!("peer{i}.log"));
        let child = self.spawn_server(&addr, &log);
        self.peers.push((addr, ServerProc { child: Some(child), logs: vec![log] }));
        i
    }

    /// Kills peer server `i` with SIGKILL (a crash).
    pub fn kill9_peer(&mut self, i: usize) {
        if let Some(mut c) = self.peers[i].1.child.take() {
            signal(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Kills the server with SIGKILL (a crash).
    pub fn kill9_server(&mut self) {
        if let Some(mut c) = self.server.child.take() {
            signal(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM; returns problems seen.
    pub fn stop_server(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(mut c) = self.server.child.take() {
            signal(&c, libc::SIGTERM);
            match wait_timeout(&mut c, Duration::from_secs(30)) {
                Some(st) if st.success() => {}
                Some(st) => notes.push(format!("server exited with {st}")),
                None => {
                    notes.push("server did not stop within 30s of SIGTERM".into());
                    signal(&c, libc::SIGKILL);
                    let _ = c.wait();
                }
            }
        }
        notes
    }

    /// Mounts the volume once more on a new mount point; `extra` are more `strata mount` flags.
    pub fn mount(&mut self, extra: &[&str]) -> usize {
        let i = self.mounts.len();
        let path = self.dir.join(format!("mnt{i}"));
        std::fs::create_dir_all(&path).expect("mount point");
        self.mount_at(&path, extra)
    }

    /// Mounts the volume on `path` (an existing directory).
    pub fn mount_at(&mut self, path: &Path, extra: &[&str]) -> usize {
        let (volume, token_file) = (self.volume.clone(), self.token_file.clone());
        self.mount_as(&volume, &token_file, path, extra)
    }

    /// Mounts `volume` on `path` (an existing directory) with the token in `token_file`.
    pub fn mount_as(&mut self, volume: &str, token_file: &Path, path: &Path, extra: &[&str]) -> usize {
        let server = self.addr.clone();
        self.mount_through(&server, volume, token_file, path, extra)
    }

    /// Mounts the volume on a new mount point through `server` (an address, or several
    /// comma-separated to fail over between).
    pub fn mount_via(&mut self, server: &str, extra: &[&str]) -> usize {
        let i = self.mounts.len();
        let path = self.dir.join(format!("mnt{i}"));
        std::fs::create_dir_all(&path).expect("mount point");
        let (volume, token_file) = (self.volume.clone(), self.token_file.clone());
        self.mount_through(server, &volume, &token_file, &path, extra)
    }

    /// Mounts the volume on a new mount point through `server` with the token in `token_file`.
    pub fn mount_through_with(&mut self, server: &str, token_file: &Path, extra: &[&str]) -> usize {
        let i = self.mounts.len();
        let path = self.dir.join(format!("mnt{i}"));
        std::fs::create_dir_all(&path).expect("mount point");
        let volume = self.volume.clone();
        self.mount_through(server, &volume, token_file, &path, extra)
    }

    fn mount_through(&mut self, server: &str, volume: &str, token_file: &Path, path: &Path, extra: &[&str]) -> usize {
        let path = &std::fs::canonicalize(path).expect("mount point");
        let i = self.mounts.len();
        let log = self.dir.join(format!("mount{i}.log"));
        let f = File::create(&log).expect("mount log");
        let mut cmd = strata();
        cmd.arg("mount")
            .arg(volume)
            .arg(path)
            .arg("--server")
            .arg(server)
            .arg("--token-file")
            .arg(token_file)
            .args(["--cache-size", "128M", "--buffer-size", "256M"])
            .args(extra)
            .stdout(f.try_clone().expect("dup"))
            .stderr(f);
        let mut child = cmd.spawn().expect("spawn strata mount");
        let up = wait_until(Duration::from_secs(30), || matches!(child.try_wait(), Ok(Some(_))) || is_fuse_mount(path));
        if let Ok(Some(st)) = child.try_wait() {
            panic!("strata mount exited ({st}):\n{}\nserver:\n{}", tail(&log, 40), self.server_tail());
        }
        assert!(up, "mount did not come up at {} within 30s:\n{}", path.display(), tail(&log, 40));
        self.mounts.push(MountProc { path: path.to_path_buf(), log, child: Some(child) });
        i
    }

    /// Mount point of mount `i`.
    pub fn mp(&self, i: usize) -> &Path {
        &self.mounts[i].path
    }

    /// Path `rel` inside mount `i`.
    pub fn p(&self, i: usize, rel: &str) -> PathBuf {
        self.mounts[i].path.join(rel)
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        // Newest first: a later mount may reuse the mount point of an earlier, crashed one.
        for m in self.mounts.iter_mut().rev() {
            notes.extend(m.stop());
        }
        notes.extend(self.stop_server());
        for (addr, peer) in &mut self.peers {
            if let Some(mut c) = peer.child.take() {
                signal(&c, libc::SIGTERM);
                if wait_timeout(&mut c, Duration::from_secs(30)).is_none_or(|st| !st.success()) {
                    notes.push(format!("peer server {addr} did not stop cleanly"));
                    signal(&c, libc::SIGKILL);
                    let _ = c.wait();
                }
            }
        }
        if let Some((base, db)) = self.pg.take() {
            let out = run_cmd(
                Command::new("psql")
                    .args(["-qX", &format!("{base}/postgres"), "-c"])
                    .arg(format!("DROP DATABASE IF EXISTS {db}")),
            );
            if !out.status.success() {
                notes.push(format!("drop database {db}: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        let mut logs: Vec<PathBuf> = self.server.logs.clone();
        logs.extend(self.peers.iter().flat_map(|(_, p)| p.logs.iter().cloned()));
        logs.extend(self.mounts.iter().map(|m| m.log.clone()));
        logs.extend(self.extra_logs.iter().cloned());
        for log in logs {
            let text = tolerate_unmount_race(&std::fs::read_to_string(&log).unwrap_or_default());
            for l in problem_lines(&text) {
                if !self.allowed.iter().any(|a| l.contains(a.as_str())) {
                    notes.push(format!("{}: {l}", log.file_name().unwrap_or_default().to_string_lossy()));
                }
            }
        }
        notes
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let notes = self.teardown();
        let still_mounted: Vec<&PathBuf> = self.mounts.iter().map(|m| &m.path).filter(|p| mounted_at(p)).collect();
        if !still_mounted.is_empty() || std::env::var_os("STRATA_IT_KEEP").is_some() {
            // Never delete through a live mount; leave the directory for inspection.
            if let Some(t) = self.tmp.take() {
                eprintln!("keeping {}", t.keep().display());
            }
        }
        if std::thread::panicking() {
            if !notes.is_empty() {
                eprintln!("teardown problems:\n{}", notes.join("\n"));
            }
            for m in &self.mounts {
                eprintln!("--- {} ---\n{}", m.log.display(), tail(&m.log, 30));
            }
            if let Some(l) = self.server.logs.last() {
                eprintln!("--- {} ---\n{}", l.display(), tail(l, 30));
            }
            return;
        }
        assert!(notes.is_empty(), "unexpected problems in service logs or teardown:\n{}", notes.join("\n"));
    }
}

/// A number unique within this process and unlikely to repeat across runs.
fn unique() -> u64 {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    ((N.fetch_add(1, Ordering::Relaxed) as u64) << 32) | nanos as u64
}

/// With `STRATA_IT_PG` (`postgres://user@host:port`, no database), a fresh database for one
/// cluster: its base URL and name.
fn pg_database(name: &str, base: Option<String>) -> Option<(String, String)> {
    let base = base.or_else(|| std::env::var("STRATA_IT_PG").ok())?.trim_end_matches('/').to_string();
    let db = format!(
        "strata_it_{}_{}_{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        unique()
    );
    let out = run_cmd(
        Command::new("psql").args(["-qX", &format!("{base}/postgres"), "-c"]).arg(format!("CREATE DATABASE {db}")),
    );
    assert!(out.status.success(), "create database {db}: {}", String::from_utf8_lossy(&out.stderr));
    Some((base, db))
}

// ---- data helpers ----

/// A deterministic pseudo-random byte stream (xorshift64*).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a 64 of a byte slice, for compact comparisons in messages.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Asserts two byte strings are equal, reporting the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: contents differ (got {} bytes, hash {:x}; want {} bytes, hash {:x}); first difference at {:?}",
        got.len(),
        fnv(got),
        want.len(),
        fnv(want),
        first
    );
}

/// Reads a whole file.
pub fn read_all(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())).read_to_end(&mut v).expect("read");
    v
}

/// Reads `len` bytes at `off` (fewer at end of file).
pub fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], off + done as u64).expect("pread");
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// The errno of the last failed libc call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The errno of a failed `io::Result`, panicking if it succeeded.
#[track_caller]
pub fn err_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

/// A path as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Name of an errno, for messages.
pub fn errname(e: i32) -> String {
    format!("{} ({e})", std::io::Error::from_raw_os_error(e))
}

/// Asserts that a libc-style return value is an error with the given errno.
#[track_caller]
pub fn assert_errno(rc: i64, want: i32, what: &str) {
    let e = errno();
    assert!(rc < 0, "{what}: expected {}, but it succeeded", errname(want));
    assert_eq!(e, want, "{what}: expected {}, got {}", errname(want), errname(e));
}

/// Runs `f` in a forked child that first drops to `uid`/`gid` (no supplementary groups); returns
/// the child's exit code. `f` must only make raw system calls (no allocation, no locks): it runs
/// between fork and exit of a multi-threaded process. Its return value is the exit code.
pub fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    fork_run(Some((uid, gid)), f)
}

/// Runs `f` in a forked child (another process, same credentials); same rules as [`as_user`].
pub fn in_child(f: impl FnOnce() -> i32) -> i32 {
    fork_run(None, f)
}

fn fork_run(user: Option<(u32, u32)>, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes async-signal-safe system calls and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if let Some((uid, gid)) = user
                && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                libc::_exit(200);
            }
            let code = f();
            libc::_exit(code);
        }
        let mut status = 0;
        let r = libc::waitpid(pid, &mut status, 0);
        assert_eq!(r, pid, "waitpid");
        assert!(libc::WIFEXITED(status), "child did not exit normally (status {status})");
        libc::WEXITSTATUS(status)
    }
}
