//! A test cluster: a `strata server` on a free port with its own data directory, a volume, any
//! number of `strata mount` processes of it (each on its own mount point), more servers on the
//! same store, and the CLI and token helpers that drive its control plane. Everything is torn
//! down on drop (mounts first, then the servers), and the test fails if any service log holds an
//! `ERROR` or `WARN` line it did not allow.
//!
//! The metadata engine and block store follow the environment (see `services`): SQLite and the
//! server's directory by default; with `STRATA_TEST_PG_URL` a fresh PostgreSQL database per
//! cluster, with `STRATA_TEST_S3_ENDPOINT` the volume in an S3 class under a prefix of its own.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::files::err_of;
use super::procs::*;
use super::services;

/// A `strata server` of a cluster: the running process, and the logs of all its starts.
pub struct ServerProc {
    proc_: Option<Service>,
    /// Logs of this server, one file per start.
    pub logs: Vec<PathBuf>,
}

impl ServerProc {
    fn new() -> ServerProc {
        ServerProc { proc_: None, logs: Vec::new() }
    }

    fn running(service: Service) -> ServerProc {
        ServerProc { logs: vec![service.log.clone()], proc_: Some(service) }
    }

    /// Kills it with SIGKILL (a crash).
    pub fn kill9(&mut self) {
        if let Some(mut s) = self.proc_.take() {
            s.kill9();
        }
    }

    /// Stops it with SIGTERM; what went wrong, if anything.
    pub fn stop(&mut self) -> Option<String> {
        self.proc_.take().and_then(|mut s| s.stop())
    }
}

/// A running `strata mount`: the process ([`Service`]: `pid`, `alive`, `kill9`, `terminate`,
/// `log`) and its mount point.
pub struct MountProc {
    /// Mount point.
    pub path: PathBuf,
    proc_: Service,
}

impl std::ops::Deref for MountProc {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.proc_
    }
}

impl std::ops::DerefMut for MountProc {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.proc_
    }
}

impl MountProc {
    /// Stops the mount process cleanly (SIGTERM), then makes sure nothing stays mounted.
    pub fn stop(&mut self) -> Vec<String> {
        let mut notes: Vec<String> = self.proc_.stop().into_iter().collect();
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
    /// A PostgreSQL server (`postgres://user@host:port`) for the metadata, instead of the one
    /// the environment names.
    pub pg: Option<String>,
    /// Keep the embedded SQLite store even when the environment names a PostgreSQL server
    /// (a test that moves a SQLite store to PostgreSQL).
    pub sqlite: bool,
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
    /// The PostgreSQL database of this cluster: base URL and name.
    pg: Option<(String, String)>,
    /// Whether the volume keeps its blocks in the S3 store the environment names.
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
            server: ServerProc::new(),
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
        let pg = if opts.sqlite { None } else { pg_database(name, opts.pg.clone()) };
        if let Some((base, db)) = pg {
            c.server_args.extend(["--meta".to_string(), format!("{base}/{db}")]);
            c.pg = Some((base, db));
        }
        c.start_server();
        let mut volume_args = opts.volume_args.clone();
        if !volume_args.iter().any(|a| a == "--class") && c.use_s3_class(name) {
            volume_args.extend(["--class".to_string(), "it-s3".to_string()]);
        }
        let mut args = vec!["volume", "create", &c.volume];
        args.extend(volume_args.iter().map(String::as_str));
        let out = c.cli_as(&c.token_file, &args);
        assert!(
            out.status.success(),
            "volume create failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.server_tail()
        );
        c
    }

    /// With an S3 store in the environment, creates class `it-s3` keeping blocks under a
    /// prefix of this cluster's own; whether it did.
    fn use_s3_class(&mut self, name: &str) -> bool {
        let Some(endpoint) = services::s3_endpoint() else { return false };
        let prefix = format!("it-{name}-{}-{}", std::process::id(), services::unique());
        self.s3_class("it-s3", &endpoint, &prefix);
        self.s3 = true;
        true
    }

    /// Creates storage class `class` keeping blocks in the S3 store at `endpoint` (bucket
    /// `strata-test`, credentials in the AWS_* variables) under `prefix`.
    pub fn s3_class(&self, class: &str, endpoint: &str, prefix: &str) {
        self.cli(&[
            "storageclass",
            "create",
            class,
            "--backend",
            "s3",
            "--bucket",
            services::S3_BUCKET,
            "--prefix",
            prefix,
            "--endpoint",
            endpoint,
        ]);
    }

    /// The `--meta` URL of the server, when it is not the default SQLite.
    pub fn meta_url(&self) -> Option<String> {
        self.pg.as_ref().map(|(base, db)| format!("{base}/{db}"))
    }

    // ---- the control plane ----

    /// Runs `strata ARGS` against this cluster's server with the token in `token_file`.
    pub fn cli_as(&self, token_file: &Path, args: &[&str]) -> Output {
        let tf = token_file.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.addr, "--token-file", &tf]);
        run_strata(&all)
    }

    /// [`Cluster::cli_as`], which must succeed; its stdout.
    #[track_caller]
    pub fn cli_ok_as(&self, token_file: &Path, args: &[&str]) -> String {
        let out = self.cli_as(token_file, args);
        assert!(out.status.success(), "strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `strata ARGS` as the admin, which must succeed; its stdout.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_ok_as(&self.token_file, args)
    }

    /// Issues a token of `role` in `scope` (with the admin token), its secret in a new file of
    /// the test directory; the file and the token's id.
    #[track_caller]
    pub fn issue_token_in(&self, name: &str, role: &str, scope: &str) -> (PathBuf, String) {
        let path = self.dir.join(format!("{name}.token"));
        let p = path.display().to_string();
        let out =
            self.cli(&["token", "create", name, "--role", role, "--scope", scope, "--secret-file", &p, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("token JSON");
        (path, v["id"].as_str().expect("token id").to_string())
    }

    /// Issues a token of `role` in the cluster scope; the file its secret was written to.
    pub fn issue_token(&self, name: &str, role: &str) -> PathBuf {
        self.issue_token_in(name, role, "cluster").0
    }

    /// The id of volume `name`.
    pub fn volume_id(&self, name: &str) -> u32 {
        let out = self.cli(&["volume", "describe", name, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("volume JSON");
        v["id"].as_u64().expect("volume id") as u32
    }

    /// The admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).expect("token file").trim().to_string()
    }

    // ---- logs ----

    /// Allows log lines containing `needle` (for expected warnings).
    pub fn allow_log(&mut self, needle: &str) {
        self.allowed.push(needle.to_string());
    }

    /// Also checks this log file at teardown.
    pub fn watch_log(&mut self, path: PathBuf) {
        self.extra_logs.push(path);
    }

    /// The text of the log of the server's latest start.
    pub fn server_log(&self) -> String {
        self.server.logs.last().map(|p| log_text(p)).unwrap_or_default()
    }

    fn server_tail(&self) -> String {
        self.server.logs.last().map(|l| tail(l, 40)).unwrap_or_default()
    }

    // ---- servers ----

    /// Starts (or restarts) the server on the same port and data directory.
    pub fn start_server(&mut self) {
        assert!(self.server.proc_.is_none(), "server already running");
        let log = self.dir.join(format!("server.{}.log", self.server.logs.len() + 1));
        self.server.proc_ = Some(self.spawn_server(&self.addr, &log));
        self.server.logs.push(log);
    }

    /// A server with this cluster's arguments and data directory listening on `addr`, its
    /// output in `log`, once it listens. Not stopped or checked by the cluster: the caller's.
    pub fn spawn_server(&self, addr: &str, log: &Path) -> Service {
        let mut cmd = strata();
        cmd.arg("server").arg("--data").arg(&self.data).arg("--listen").arg(addr).args(&self.server_args);
        let token = self.token_file.clone();
        Service::start_ready("strata server", &mut cmd, log, || listening(addr) && token.exists(), String::new)
    }

    /// Starts one more server with the same arguments and data directory on a new port (with
    /// `--meta postgres://…` in the options, a second server on the same database); returns its
    /// index in `peers`.
    pub fn start_peer(&mut self) -> usize {
        let i = self.peers.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = self.dir.join(format!("peer{i}.log"));
        let s = self.spawn_server(&addr, &log);
        self.peers.push((addr, ServerProc::running(s)));
        i
    }

    /// Kills peer server `i` with SIGKILL (a crash).
    pub fn kill9_peer(&mut self, i: usize) {
        self.peers[i].1.kill9();
    }

    /// Kills the server with SIGKILL (a crash).
    pub fn kill9_server(&mut self) {
        self.server.kill9();
    }

    /// Stops the server with SIGTERM; returns problems seen.
    pub fn stop_server(&mut self) -> Vec<String> {
        self.server.stop().into_iter().collect()
    }

    // ---- mounts ----

    /// A new, empty mount point in the test directory.
    fn new_mount_point(&self) -> PathBuf {
        let path = self.dir.join(format!("mnt{}", self.mounts.len()));
        std::fs::create_dir_all(&path).expect("mount point");
        path
    }

    /// Mounts the volume once more on a new mount point; `extra` are more `strata mount` flags.
    pub fn mount(&mut self, extra: &[&str]) -> usize {
        let path = self.new_mount_point();
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
        let token_file = self.token_file.clone();
        self.mount_through_with(server, &token_file, extra)
    }

    /// Mounts the volume on a new mount point through `server` with the token in `token_file`.
    pub fn mount_through_with(&mut self, server: &str, token_file: &Path, extra: &[&str]) -> usize {
        let path = self.new_mount_point();
        let volume = self.volume.clone();
        self.mount_through(server, &volume, token_file, &path, extra)
    }

    /// Mounts `volume` on `path` (an existing directory) through `server` with the token in
    /// `token_file`.
    pub fn mount_through(
        &mut self,
        server: &str,
        volume: &str,
        token_file: &Path,
        path: &Path,
        extra: &[&str],
    ) -> usize {
        let path = std::fs::canonicalize(path).expect("mount point");
        let i = self.mounts.len();
        let log = self.dir.join(format!("mount{i}.log"));
        let mut cmd = strata();
        cmd.arg("mount").arg(volume).arg(&path).arg("--server").arg(server).arg("--token-file").arg(token_file).args([
            "--cache-size",
            "128M",
            "--buffer-size",
            "256M",
        ]);
        // A disk cache of the mount's own under the test's directory (where blocks are not
        // on a local disk), not the host's default one that outlives the test.
        if !extra.iter().any(|a| *a == "--cache-dir" || *a == "--no-disk-cache") {
            cmd.arg("--cache-dir").arg(self.dir.join(format!("cache{i}")));
        }
        cmd.args(extra);
        let server_log = || format!("\nserver:\n{}", self.server_tail());
        let proc_ = Service::start_ready("strata mount", &mut cmd, &log, || is_fuse_mount(&path), server_log);
        self.mounts.push(MountProc { path, proc_ });
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

    // ---- teardown ----

    fn teardown(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        // Mounts the test made itself (`strata mount -d`) and left behind when it failed: gone
        // before their server, or removing the test directory would wait on them for good.
        for mp in mounts_under(&self.dir) {
            if !self.mounts.iter().any(|m| m.path == mp) {
                umount_lazy(&mp);
            }
        }
        // Newest first: a later mount may reuse the mount point of an earlier, crashed one.
        for m in self.mounts.iter_mut().rev() {
            notes.extend(m.stop());
        }
        notes.extend(self.stop_server());
        for (addr, peer) in &mut self.peers {
            if let Some(problem) = peer.stop() {
                notes.push(format!("peer server {addr} did not stop cleanly: {problem}"));
            }
        }
        if let Some((base, db)) = self.pg.take() {
            let out = services::psql(&base, &format!("DROP DATABASE IF EXISTS {db}"));
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
        let still_mounted = mounts_under(&self.dir);
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

/// With a PostgreSQL server given (`postgres://user@host:port`, no database) or named by the
/// environment, a fresh database for one cluster: its base URL and name.
fn pg_database(name: &str, base: Option<String>) -> Option<(String, String)> {
    let base = base.or_else(services::pg_url)?.trim_end_matches('/').to_string();
    let db = format!(
        "strata_it_{}_{}_{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        services::unique()
    );
    let out = services::psql(&base, &format!("CREATE DATABASE {db}"));
    assert!(out.status.success(), "create database {db}: {}", String::from_utf8_lossy(&out.stderr));
    Some((base, db))
}

/// Lookup and directory-listing calls a server answered so far (from its metrics).
fn lookups_and_listings(server: &str) -> (f64, f64) {
    let m = scrape(&format!("http://{server}/metrics"));
    (
        val(&m, "strata_rpc_durations_histogram_seconds_count{method=Lookup}"),
        val(&m, "strata_rpc_durations_histogram_seconds_count{method=Readdir}"),
    )
}

/// Mount `a` (default caches: 1 s leases) reads a directory whole when it stats every file of
/// it cold, through `server_a`, instead of one lookup per file; then it sees mount `b`'s
/// creates, unlinks, renames, mode and size changes in that directory within the documented
/// bound (the listing's lease plus the kernel's own lifetime: 2 s), and its own at once.
pub fn listings_follow_other_clients(c: &Cluster, a: usize, b: usize, server_a: &str) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const N: usize = 400;
    std::fs::create_dir(c.p(b, "listed")).expect("mkdir on B");
    for i in 0..N {
        std::fs::write(c.p(b, &format!("listed/f{i:04}")), b"x").expect("create on B");
    }
    // Quiet for a while first: the change stream must stay trusted when nothing happens (a
    // relay that stopped reading its notes after a quiet beat answered every watch "lost",
    // and its clients dropped their caches and asked again in a loop).
    let watches = |m: &std::collections::HashMap<String, f64>| {
        val(m, "strata_rpc_durations_histogram_seconds_count{method=Watch}")
    };
    let quiet_from = watches(&scrape(&format!("http://{server_a}/metrics")));
    std::thread::sleep(Duration::from_millis(2500));
    let quiet = watches(&scrape(&format!("http://{server_a}/metrics"))) - quiet_from;
    assert!(quiet <= 20.0, "{quiet} watch calls in 2.5 quiet seconds (long polls of 1 s each)");
    let before = lookups_and_listings(server_a);
    for i in 0..N {
        let md = std::fs::metadata(c.p(a, &format!("listed/f{i:04}"))).expect("stat on A");
        assert_eq!(md.len(), 1, "f{i:04} on A");
    }
    let after = lookups_and_listings(server_a);
    let (lookups, listings) = (after.0 - before.0, after.1 - before.1);
    assert!(lookups <= (N / 10) as f64, "cold stat of {N} files on A made {lookups} Lookup calls");
    assert!(listings >= 1.0, "A read the directory whole ({listings} listing calls)");

    // B changes the directory; A sees each change within the bound.
    std::fs::write(c.p(b, "listed/new"), b"new!").expect("create on B");
    std::fs::remove_file(c.p(b, "listed/f0000")).expect("unlink on B");
    std::fs::rename(c.p(b, "listed/f0001"), c.p(b, "listed/g0001")).expect("rename on B");
    std::fs::set_permissions(c.p(b, "listed/f0002"), std::fs::Permissions::from_mode(0o600)).expect("chmod on B");
    std::fs::write(c.p(b, "listed/f0003"), b"longer").expect("rewrite on B");
    let changed = Instant::now();
    let seen = || {
        let md = |n: &str| std::fs::metadata(c.p(a, &format!("listed/{n}")));
        md("new").is_ok_and(|m| m.len() == 4)
            && md("f0000").is_err()
            && md("f0001").is_err()
            && md("g0001").is_ok()
            && md("f0002").is_ok_and(|m| m.mode() & 0o777 == 0o600)
            && md("f0003").is_ok_and(|m| m.len() == 6)
    };
    assert!(wait_until(Duration::from_secs(4), seen), "A does not see B's changes after {:?}", changed.elapsed());
    assert!(changed.elapsed() < Duration::from_millis(3000), "A saw B's changes only after {:?}", changed.elapsed());

    // A's own changes show at once, whatever its listing holds.
    let p = |n: &str| c.p(a, &format!("listed/{n}"));
    for i in 10..N {
        let _ = std::fs::metadata(p(&format!("f{i:04}"))).expect("stat on A");
    }
    std::fs::write(p("mine"), b"mine").expect("create on A");
    assert_eq!(std::fs::metadata(p("mine")).expect("own create").len(), 4);
    std::fs::remove_file(p("f0004")).expect("unlink on A");
    assert_eq!(err_of(std::fs::metadata(p("f0004"))), libc::ENOENT, "own unlink");
    std::fs::rename(p("f0005"), p("h0005")).expect("rename on A");
    assert_eq!(err_of(std::fs::metadata(p("f0005"))), libc::ENOENT, "own rename: old name");
    assert!(std::fs::metadata(p("h0005")).is_ok(), "own rename: new name");
    let moved = std::fs::metadata(p("f0006")).expect("f0006").ino();
    std::fs::rename(p("f0006"), p("f0007")).expect("rename over on A");
    assert_eq!(std::fs::metadata(p("f0007")).expect("replaced").ino(), moved, "own rename over a name");
    assert_eq!(err_of(std::fs::metadata(p("f0006"))), libc::ENOENT);
    std::fs::set_permissions(p("f0008"), std::fs::Permissions::from_mode(0o640)).expect("chmod on A");
    assert_eq!(std::fs::metadata(p("f0008")).expect("own chmod").mode() & 0o777, 0o640);
    std::fs::hard_link(p("f0009"), p("l0009")).expect("link on A");
    assert_eq!(std::fs::metadata(p("f0009")).expect("linked").nlink(), 2);
    std::fs::remove_file(p("l0009")).expect("unlink a link on A");
    assert_eq!(std::fs::metadata(p("f0009")).expect("unlinked link").nlink(), 1, "own unlink of a hard link");
    std::fs::create_dir(p("sub")).expect("mkdir on A");
    assert_eq!(err_of(std::fs::metadata(p("sub/none"))), libc::ENOENT);
    std::fs::write(p("sub/one"), b"1").expect("create in a new directory");
    assert_eq!(std::fs::read(p("sub/one")).expect("read back"), b"1");
}
