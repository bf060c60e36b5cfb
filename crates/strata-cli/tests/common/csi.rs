//! The Kubernetes CSI driver of a cluster: `strata csi` on a unix socket of its own (with its
//! state directory and logs under the cluster's directory, attached to the cluster's server,
//! its FUSE workers run by the same `strata` binary), and gRPC clients of its Identity,
//! Controller and Node services for synchronous tests (a tokio runtime owned by the driver,
//! [`CsiDriver::block_on`]).
//!
//! Dropping a [`CsiDriver`] stops it (SIGTERM), unmounts whatever it published or staged and
//! waits for the FUSE workers to exit (they outlive the plugin by design), then fails the test
//! if its logs, or its workers' logs, hold a `WARN`/`ERROR` line not allowed with
//! [`CsiDriver::allow_log`]. The driver logs every refused call at WARN with the word
//! "refused"; tests that provoke refusals allow exactly the refusals they provoke (see
//! [`CsiDriver::allow_refusal`]). Declare the driver after its [`Cluster`], so that it is
//! dropped first, while the server still answers its workers.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_csi::pb;
use strata_csi::pb::controller_client::ControllerClient;
use strata_csi::pb::identity_client::IdentityClient;
use strata_csi::pb::node_client::NodeClient;
use strata_csi::pb::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use tonic::transport::{Channel, Endpoint};

use super::cluster::Cluster;
use super::procs::*;

pub use strata_csi::pb::volume_capability::access_mode::Mode;

/// A running `strata csi` of a cluster.
pub struct CsiDriver {
    /// `controller`, `node` or `all`.
    pub mode: String,
    /// `--node-id`.
    pub node_id: String,
    /// The unix socket it serves on.
    pub socket: PathBuf,
    /// Its state directory (records of staged and published volumes, worker logs in `logs/`).
    pub state_dir: PathBuf,
    /// The directory of its socket, state and logs.
    pub dir: PathBuf,
    /// Logs of its starts, one file each.
    pub logs: Vec<PathBuf>,
    /// The server it attaches to.
    pub server: String,
    /// The driver's own token file (`--token-file`).
    pub token_file: PathBuf,
    extra_args: Vec<String>,
    /// Allowed problem lines: each entry is needles that must all occur in the line.
    allowed: std::sync::Mutex<Vec<Vec<String>>>,
    proc_: Option<Service>,
    rt: tokio::runtime::Runtime,
}

impl CsiDriver {
    /// `strata csi --mode MODE --node-id NODE_ID` of cluster `c` (the admin token as the
    /// driver's own), once its socket answers Probe.
    pub fn start(c: &Cluster, mode: &str, node_id: &str) -> CsiDriver {
        Self::start_with(c, mode, node_id, &[])
    }

    /// [`CsiDriver::start`] with more arguments of `strata csi` (e.g. `--max-volumes 2`).
    pub fn start_with(c: &Cluster, mode: &str, node_id: &str, extra: &[&str]) -> CsiDriver {
        let dir = c.dir.join(format!("csi-{node_id}"));
        std::fs::create_dir_all(&dir).expect("csi directory");
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
        let mut d = CsiDriver {
            mode: mode.to_string(),
            node_id: node_id.to_string(),
            socket: dir.join("csi.sock"),
            state_dir: dir.join("state"),
            logs: Vec::new(),
            server: c.addr.clone(),
            token_file: c.token_file.clone(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            allowed: Default::default(),
            dir,
            proc_: None,
            rt,
        };
        d.launch();
        d
    }

    fn launch(&mut self) {
        assert!(self.proc_.is_none(), "CSI driver already running");
        let log = self.dir.join(format!("csi.{}.log", self.logs.len() + 1));
        let mut cmd = strata();
        cmd.arg("csi")
            .args(["--mode", &self.mode])
            .arg("--endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["--node-id", &self.node_id])
            .args(["--server", &self.server])
            .arg("--token-file")
            .arg(&self.token_file)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--worker-bin")
            .arg(strata_bin())
            .args(&self.extra_args);
        let (rt, socket) = (&self.rt, self.socket.clone());
        let ready = || {
            socket.exists()
                && rt.block_on(async {
                    let probe = async {
                        let mut c = IdentityClient::new(channel(&socket).await.ok()?);
                        c.probe(pb::ProbeRequest {}).await.ok()
                    };
                    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten().is_some()
                })
        };
        let s = Service::start_ready("strata csi", &mut cmd, &log, ready, String::new);
        self.proc_ = Some(s);
        self.logs.push(log);
    }

    /// The log of its latest start.
    pub fn log(&self) -> &Path {
        self.logs.last().expect("started")
    }

    /// The text of all its logs.
    pub fn log_text(&self) -> String {
        self.logs.iter().map(|l| log_text(l)).collect::<Vec<_>>().join("\n")
    }

    /// The logs of its FUSE workers (one per staging path).
    pub fn worker_logs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.state_dir.join("logs"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The driver process.
    pub fn service(&mut self) -> &mut Service {
        self.proc_.as_mut().expect("CSI driver not running")
    }

    /// Kills the driver with SIGKILL (its FUSE workers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut s) = self.proc_.take() {
            s.kill9();
        }
    }

    /// Stops the driver with SIGTERM; what went wrong, if anything.
    pub fn stop(&mut self) -> Option<String> {
        self.proc_.take().and_then(|mut s| s.stop())
    }

    /// Starts it again on the same socket and state directory (killing it first with SIGKILL
    /// if it is still running), with a new log file; returns once it answers Probe.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Allows log lines (of the driver and its workers) containing `needle`.
    pub fn allow_log(&self, needle: &str) {
        self.allowed.lock().expect("allowed").push(vec![needle.to_string()]);
    }

    /// Allows the WARN line of a refused call of `method` (e.g. `CreateVolume`) with gRPC code
    /// `code` (tonic's name, e.g. `InvalidArgument`).
    pub fn allow_refusal(&self, method: &str, code: &str) {
        self.allowed.lock().expect("allowed").push(vec![
            "refused".into(),
            format!("method=\"{method}\""),
            format!("code={code}"),
        ]);
    }

    // ---- clients ----

    /// Runs a future to completion on the driver's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A new channel to the socket.
    pub fn channel(&self) -> Channel {
        self.rt.block_on(channel(&self.socket)).unwrap_or_else(|e| panic!("connect {}: {e}", self.socket.display()))
    }

    /// A client of the Identity service.
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel())
    }

    /// A client of the Controller service.
    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel())
    }

    /// A client of the Node service.
    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel())
    }

    // ---- teardown ----

    /// Stops the driver, unmounts what it published and staged, waits for its workers; the
    /// problems seen (unclean exits, leftover mounts, unexpected log lines).
    fn teardown(&mut self) -> Vec<String> {
        let mut notes: Vec<String> = self.stop().into_iter().collect();
        let records = |sub: &str| -> Vec<serde_json::Value> {
            std::fs::read_dir(self.state_dir.join(sub))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        for p in records("published") {
            if let Some(t) = p["target"].as_str() {
                while mounted_at(Path::new(t)) {
                    umount_lazy(Path::new(t));
                }
            }
        }
        for s in records("staged") {
            let Some(staging) = s["staging"].as_str() else { continue };
            while mounted_at(Path::new(staging)) {
                umount_lazy(Path::new(staging));
            }
            let pid = s["pid"].as_i64().unwrap_or(0) as i32;
            if pid > 0 && !wait_until(Duration::from_secs(10), || !pid_alive(pid)) {
                notes.push(format!("FUSE worker {pid} of {staging} still running 10 s after unmount; killed"));
                // SAFETY: plain kill(2) of a worker this test's driver started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let mut logs = self.logs.clone();
        logs.extend(self.worker_logs());
        let allowed = self.allowed.lock().map(|a| a.clone()).unwrap_or_default();
        for log in logs {
            let text = tolerate_unmount_race(&std::fs::read_to_string(&log).unwrap_or_default());
            for l in problem_lines(&text) {
                if !allowed.iter().any(|all| all.iter().all(|a| l.contains(a.as_str()))) {
                    notes.push(format!("{}: {l}", log.display()));
                }
            }
        }
        notes
    }
}

impl Drop for CsiDriver {
    fn drop(&mut self) {
        let notes = self.teardown();
        if std::thread::panicking() {
            for l in &self.logs {
                eprintln!("--- {} ---\n{}", l.display(), tail(l, 40));
            }
            if !notes.is_empty() {
                eprintln!("CSI driver teardown problems:\n{}", notes.join("\n"));
            }
            return;
        }
        assert!(notes.is_empty(), "unexpected problems in CSI driver logs or teardown:\n{}", notes.join("\n"));
    }
}

/// Whether a process exists (not reaped: zombies of the driver count as gone).
fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rfind(')').and_then(|i| s[i + 2..].chars().next()).is_some_and(|st| st != 'Z'),
        Err(_) => false,
    }
}

/// A gRPC channel over the unix socket at `path`.
pub async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is a placeholder: every connection goes to the socket.
    Endpoint::try_from("http://[::]:50051")
        .expect("static URI")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// A mount capability with access mode `mode` (file system type left unspecified).
pub fn mount_cap(mode: Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A mount capability with mount flags.
pub fn mount_cap_flags(mode: Mode, flags: &[&str]) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            mount_flags: flags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A block capability with access mode `mode`.
pub fn block_cap(mode: Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// CSI secrets carrying a Strata token.
pub fn secrets(token: &str) -> HashMap<String, String> {
    HashMap::from([(strata_csi::TOKEN_KEY.to_string(), token.to_string())])
}
