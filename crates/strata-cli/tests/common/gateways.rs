//! `strata gateway nfs` and `strata gateway s3` processes of a test cluster, started through
//! the one launcher ([`Service`]), their logs checked with the cluster's at teardown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cluster::Cluster;
use super::procs::*;

/// A running `strata gateway nfs|s3` on 127.0.0.1.
pub struct Gateway {
    /// `nfs` or `s3`.
    pub kind: &'static str,
    /// Its port.
    pub port: u16,
    /// The log of its latest start.
    pub log: PathBuf,
    /// Environment of the gateway process (a log filter, say), from its next start on.
    pub env: Vec<(String, String)>,
    args: Vec<String>,
    starts: usize,
    proc_: Option<Service>,
}

impl Gateway {
    /// An NFS gateway with these `--export`s and `extra` flags, reaching the server with the
    /// cluster's admin token.
    pub fn nfs(c: &mut Cluster, exports: &[&str], extra: &[&str]) -> Gateway {
        let token_file = c.token_file.clone();
        Self::nfs_as(c, &token_file, exports, extra)
    }

    /// An NFS gateway reaching the server with the token in `token_file`.
    pub fn nfs_as(c: &mut Cluster, token_file: &Path, exports: &[&str], extra: &[&str]) -> Gateway {
        let mut args: Vec<String> = exports.iter().flat_map(|e| ["--export".to_string(), e.to_string()]).collect();
        args.extend(["--token-file".to_string(), token_file.display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::start(c, "nfs", args)
    }

    /// An S3 gateway serving the volumes the tokens in `token_files` may see.
    pub fn s3(c: &mut Cluster, token_files: &[&Path], extra: &[&str]) -> Gateway {
        let mut args: Vec<String> =
            token_files.iter().flat_map(|t| ["--token-file".to_string(), t.display().to_string()]).collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::start(c, "s3", args)
    }

    fn start(c: &mut Cluster, kind: &'static str, args: Vec<String>) -> Gateway {
        let port = free_port();
        let mut g = Gateway { kind, port, log: PathBuf::new(), env: Vec::new(), args, starts: 0, proc_: None };
        g.spawn(c);
        g
    }

    fn spawn(&mut self, c: &mut Cluster) {
        self.starts += 1;
        self.log = c.dir.join(format!("{}-gateway.{}.{}.log", self.kind, self.port, self.starts));
        c.watch_log(self.log.clone());
        let addr = self.addr();
        let mut cmd = strata();
        cmd.args(["gateway", self.kind, "--listen", &addr, "--server", &c.addr])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let name = format!("{} gateway", self.kind);
        // The NFS gateway listens before it has attached its exports (and before it handles
        // SIGTERM): it is ready once it answers a call. The S3 gateway listens after.
        let nfs = self.kind == "nfs";
        let ready = || if nfs { nfs_answers(&addr) } else { listening(&addr) };
        self.proc_ = Some(Service::start_ready(&name, &mut cmd, &self.log, ready, String::new));
    }

    /// Stops it with SIGTERM; it must exit with success.
    #[track_caller]
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc_.take() {
            p.stop_clean();
        }
    }

    /// Stops it cleanly and starts it again with the same arguments (and `env`).
    pub fn restart(&mut self, c: &mut Cluster) {
        self.stop();
        self.spawn(c);
    }

    /// Whether it is running.
    pub fn alive(&mut self) -> bool {
        self.proc_.as_mut().is_some_and(|p| p.alive())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (the S3 endpoint).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A libnfs URL of `path` (export path included), for nfs-cp, nfs-ls, nfs-cat.
    pub fn nfs_url(&self, path: &str) -> String {
        format!("nfs://127.0.0.1{path}?nfsport={0}&mountport={0}&version=3", self.port)
    }
}

/// Whether an NFS server at `addr` answers a NULL call (NFS v3, no credentials).
fn nfs_answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    // xid, CALL, RPC version 2, program NFS (100003), version 3, procedure NULL, AUTH_NONE
    // credential and verifier.
    let words: [u32; 10] = [0x5354_5241, 0, 2, 100_003, 3, 0, 0, 0, 0, 0];
    let mut record = (0x8000_0000u32 | (words.len() * 4) as u32).to_be_bytes().to_vec();
    record.extend(words.iter().flat_map(|w| w.to_be_bytes()));
    let mut mark = [0u8; 4];
    s.write_all(&record).is_ok() && s.read_exact(&mut mark).is_ok()
}
