//! PostgreSQL and S3 for the tests: the ones the environment names (shared with every crate's
//! tests, see `tests/support/services.rs`), and private ones a test starts and stops itself
//! (to take them away under a working cluster) with `scripts/postgres.sh` and `scripts/s3.sh`.

use std::path::PathBuf;
use std::process::{Command, Output};

#[path = "../../../../tests/support/services.rs"]
mod shared;
pub use shared::*;

use super::procs::{free_port, run_cmd, run_ok};

/// Runs SQL with `psql` on database `postgres` of the server at `base`.
pub fn psql(base: &str, sql: &str) -> Output {
    run_cmd(Command::new("psql").args(["-qX", &format!("{base}/postgres"), "-c", sql]))
}

/// The repository's scripts directory.
fn script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts").join(name).display().to_string()
}

/// Runs `bash scripts/NAME ARGS`, which must succeed; its stdout.
fn run_script(name: &str, args: &[&str]) -> String {
    run_ok(Command::new("bash").arg(script(name)).args(args))
}

/// A private server started by one of the scripts (`start DIR PORT` / `stop DIR`), stopped on
/// drop; it can be taken down and brought back on the same port and data.
pub struct ScriptedServer {
    script: &'static str,
    _dir: tempfile::TempDir,
    /// Where its data lives (the script's DIR).
    data: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl ScriptedServer {
    fn start(script: &'static str, name: &str, sub: &str) -> ScriptedServer {
        let dir = tempfile::Builder::new().prefix(&format!("strata-it-{name}-")).tempdir().expect("tempdir");
        let data = dir.path().join(sub).display().to_string();
        let s = ScriptedServer { script, _dir: dir, data, port: free_port() };
        s.up();
        s
    }

    /// A private PostgreSQL server (Debian's, as `scripts/postgres.sh` runs it).
    pub fn postgres() -> ScriptedServer {
        ScriptedServer::start("postgres.sh", "pg", "pg")
    }

    /// A private SeaweedFS S3 gateway (`scripts/s3.sh`; the credentials it prints must be in
    /// the environment of whatever uses it).
    pub fn s3() -> ScriptedServer {
        need_s3_credentials();
        ScriptedServer::start("s3.sh", "s3", "s3")
    }

    /// Starts it (again).
    pub fn up(&self) {
        run_script(self.script, &["start", &self.data, &self.port.to_string()]);
    }

    /// Stops it.
    pub fn down(&self) {
        run_script(self.script, &["stop", &self.data]);
    }

    /// Stops it as a crash would (PostgreSQL: what asynchronous commits had not written yet
    /// is lost).
    pub fn crash(&self) {
        run_script(self.script, &["crash", &self.data]);
    }

    /// PostgreSQL's base URL (`postgres://postgres@127.0.0.1:PORT`).
    pub fn pg_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The S3 endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.down();
    }
}
