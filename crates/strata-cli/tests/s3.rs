//! The S3 gateway end to end: a real server, a FUSE mount and `strata gateway s3` as separate
//! processes, driven by boto3 scenario scripts (`tests/s3/*.py`, each asserting and exiting
//! non-zero with a message on failure).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn cli(c: &Cluster, token_file: &Path, args: &[&str]) -> String {
    let tf = token_file.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &c.addr, "--token-file", &tf]);
    let out = run_strata(&all);
    assert!(out.status.success(), "strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issues a token, its secret in a file of the test directory; the file and the token's id.
fn token(c: &Cluster, name: &str, role: &str, scope: &str) -> (PathBuf, String) {
    let path = c.dir.join(format!("{name}.token"));
    let p = path.display().to_string();
    let out = cli(
        c,
        &c.token_file,
        &["token", "create", name, "--role", role, "--scope", scope, "--secret-file", &p, "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("token JSON");
    (path, v["id"].as_str().expect("token id").to_string())
}

/// An S3 key pair: the token's id and secret.
struct Pair {
    id: String,
    secret: String,
}

fn pair(token_file: &Path) -> Pair {
    let secret = std::fs::read_to_string(token_file).expect("token file").trim().to_string();
    Pair { id: strata_s3::public_id(&secret), secret }
}

/// A running `strata gateway s3`.
struct Gateway {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Gateway {
    fn start(c: &mut Cluster, token_files: &[&Path], extra: &[&str]) -> Gateway {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = c.dir.join("gateway.log");
        let f = File::create(&log).expect("gateway log");
        let mut cmd = strata();
        cmd.args(["gateway", "s3", "--listen", &addr, "--server", &c.addr]).args(extra);
        for tf in token_files {
            cmd.arg("--token-file").arg(tf);
        }
        let mut child = cmd.stdout(f.try_clone().expect("dup")).stderr(f).spawn().expect("spawn gateway");
        let up = wait_until(Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(Some(_))) || std::net::TcpStream::connect(&addr).is_ok()
        });
        if let Ok(Some(st)) = child.try_wait() {
            panic!("gateway exited ({st}):\n{}", tail(&log, 40));
        }
        assert!(up, "gateway did not listen on {addr} within 30s:\n{}", tail(&log, 40));
        c.watch_log(log.clone());
        Gateway { child, endpoint: format!("http://{addr}"), log }
    }

    /// Runs scenario `script` as `who` on `bucket`; panics with its output if it fails.
    fn scenario(&mut self, script: &str, who: &Pair, bucket: &str, extra: &[&str]) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/s3");
        let started = std::time::Instant::now();
        let out = run_cmd(
            Command::new("python3")
                .arg(dir.join(script))
                .args(["--endpoint", &self.endpoint, "--key", &who.id, "--secret", &who.secret, "--bucket", bucket])
                .args(extra)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_PROFILE")
                .stdin(Stdio::null()),
        );
        assert!(
            out.status.success(),
            "scenario {script} failed:\n{}{}\ngateway log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log, 30)
        );
        assert!(matches!(self.child.try_wait(), Ok(None)), "gateway died during {script}:\n{}", tail(&self.log, 30));
        eprintln!("{script}: passed in {:.1}s", started.elapsed().as_secs_f64());
    }

    /// Stops the gateway with SIGTERM; it must exit cleanly.
    fn stop(mut self) {
        signal(&self.child, libc::SIGTERM);
        let st = wait_timeout(&mut self.child, Duration::from_secs(30));
        assert!(st.is_some_and(|s| s.success()), "gateway stop: {st:?}\n{}", tail(&self.log, 30));
    }
}

impl Drop for Gateway {
    /// A failed test must not leave the gateway running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Names under `dir` that the gateway keeps for itself and must not leave behind.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if name == ".strata-s3-uploads" {
                // The uploads directory may stay; uploads in it may not.
                let n = std::fs::read_dir(&p).map(|r| r.count()).unwrap_or(0);
                if n > 0 {
                    out.push(p.clone());
                }
            } else if name.starts_with(".strata-s3-") {
                out.push(p.clone());
            } else if is_dir {
                todo.push(p);
            }
        }
    }
    out
}

#[test]
fn s3_gateway() {
    let mut c = Cluster::new("s3");
    let admin_tf = c.token_file.clone();
    for s in ["ml", "ml/vision", "ml/nlp"] {
        cli(&c, &admin_tf, &["scope", "create", s]);
    }
    for (v, s) in [("vision-data", "ml/vision"), ("vision-scratch", "ml/vision"), ("nlp-data", "ml/nlp")] {
        cli(&c, &admin_tf, &["volume", "create", v, "--scope", s]);
    }
    cli(&c, &admin_tf, &["volume", "create", "tiny", "--capacity", "4M"]);
    let (editor_tf, editor_id) = token(&c, "vision-editor", "editor", "ml/vision");
    let (viewer_tf, _) = token(&c, "vision-viewer", "viewer", "ml/vision");
    let (nlp_tf, _) = token(&c, "nlp-editor", "editor", "ml/nlp");
    let (admin, editor, viewer, nlp) = (pair(&admin_tf), pair(&editor_tf), pair(&viewer_tf), pair(&nlp_tf));
    assert_eq!(editor.id, editor_id, "access key id = the id `strata token create` shows");
    let m = c.mount(&[]);
    let mnt = c.mp(m).display().to_string();
    let volume = c.volume.clone();
    let max = 12 << 20;
    let mut gw = Gateway::start(
        &mut c,
        &[&admin_tf, &editor_tf, &viewer_tf, &nlp_tf],
        &["--max-object-size", "12M", "--retry-timeout", "1s", "--detach-idle", "2s"],
    );

    gw.scenario(
        "objects.py",
        &admin,
        &volume,
        &["--other-bucket", "vision-data", "--max-object-size", &max.to_string(), "--mount", &mnt],
    );
    gw.scenario("multipart.py", &admin, &volume, &[]);
    gw.scenario("listing.py", &admin, &volume, &[]);
    gw.scenario("interop.py", &admin, &volume, &["--mount", &mnt]);
    gw.scenario(
        "access.py",
        &editor,
        "vision-data",
        &[
            "--readable-key",
            "docs/readme.txt",
            "--viewer-key",
            &viewer.id,
            "--viewer-secret",
            &viewer.secret,
            "--other-key",
            &nlp.id,
            "--other-secret",
            &nlp.secret,
            "--other-bucket",
            "nlp-data",
        ],
    );
    gw.scenario("garbage.py", &admin, &volume, &[]);
    // Refused, aborted, cut-off and failed writes leave no temporary file or upload behind.
    let clean = wait_until(Duration::from_secs(10), || leftovers(c.mp(m)).is_empty());
    assert!(clean, "the gateway left files behind: {:?}", leftovers(c.mp(m)));
    gw.scenario("quota.py", &admin, "tiny", &["--size", &(6 << 20).to_string()]);

    // The server away: 503 after --retry-timeout; back: the same attachment serves again.
    for needle in ["unreachable", "heartbeat failed", "request failed"] {
        c.allow_log(needle);
    }
    assert!(c.stop_server().is_empty(), "server stop");
    gw.scenario("unavailable.py", &admin, "tiny", &[]);
    c.start_server();
    gw.scenario("available.py", &admin, "tiny", &[]);

    // Revoked on the server: refused at the next request, though its attachment is open.
    cli(&c, &admin_tf, &["token", "revoke", &editor.id]);
    c.allow_log("token refused; no longer keeping its session");
    c.allow_log("server did not acknowledge the unmount");
    gw.scenario(
        "revoked.py",
        &editor,
        "vision-data",
        &["--readable-key", "docs/readme.txt", "--other-key", &viewer.id, "--other-secret", &viewer.secret],
    );
    // An idle attachment is detached, so the volume can be deleted again.
    let deleted = wait_until(Duration::from_secs(20), || {
        run_strata(&["volume", "delete", "tiny", "--server", &c.addr, "--token-file", &admin_tf.display().to_string()])
            .status
            .success()
    });
    assert!(deleted, "volume tiny still attached after the gateway's idle time:\n{}", tail(&gw.log, 20));
    gw.stop();
}
