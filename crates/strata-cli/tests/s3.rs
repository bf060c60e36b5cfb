//! The S3 gateway end to end: a real server, a FUSE mount and `strata gateway s3` as separate
//! processes, driven by scenario scripts of two independent clients, boto3 and MinIO's SDK
//! (`tests/s3/*.py`, each asserting and exiting non-zero with a message on failure).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// An S3 key pair: the token's id and secret.
struct Pair {
    id: String,
    secret: String,
}

fn pair(token_file: &Path) -> Pair {
    let secret = std::fs::read_to_string(token_file).expect("token file").trim().to_string();
    Pair { id: strata_s3::public_id(&secret), secret }
}

/// Runs scenario `script` as `who` on `bucket` against the gateway; panics with its output if
/// it fails.
fn scenario(gw: &mut Gateway, script: &str, who: &Pair, bucket: &str, extra: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/s3");
    let started = std::time::Instant::now();
    let out = run_cmd(
        Command::new("python3")
            .arg(dir.join(script))
            .args(["--endpoint", &gw.endpoint(), "--key", &who.id, "--secret", &who.secret, "--bucket", bucket])
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
        tail(&gw.log, 30)
    );
    assert!(gw.alive(), "gateway died during {script}:\n{}", tail(&gw.log, 30));
    eprintln!("{script}: passed in {:.1}s", started.elapsed().as_secs_f64());
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
        c.cli(&["scope", "create", s]);
    }
    for (v, s) in [
        ("vision-data", "ml/vision"),
        ("vision-scratch", "ml/vision"),
        ("nlp-data", "ml/nlp"),
        ("vision-mounted", "ml/vision"),
    ] {
        c.cli(&["volume", "create", v, "--scope", s]);
    }
    // Scopes whose policies CreateBucket must follow: a size cap, and a total quota.
    for s in ["ml/capped", "ml/quota"] {
        c.cli(&["scope", "create", s]);
    }
    c.cli(&["storageclass", "create", "fast", "--compression", "lz4"]);
    c.cli(&["policy", "set", "ml/capped", "--max-volume-size", "1G", "--enforced-class", "fast"]);
    c.cli(&["policy", "set", "ml/quota", "--quota", "10G"]);
    let (capped_tf, _) = c.issue_token_in("capped-editor", "editor", "ml/capped");
    let (quota_tf, _) = c.issue_token_in("quota-editor", "editor", "ml/quota");
    c.cli(&["volume", "create", "tiny", "--capacity", "4M"]);
    let (editor_tf, editor_id) = c.issue_token_in("vision-editor", "editor", "ml/vision");
    let (viewer_tf, _) = c.issue_token_in("vision-viewer", "viewer", "ml/vision");
    let (nlp_tf, _) = c.issue_token_in("nlp-editor", "editor", "ml/nlp");
    let (admin, editor, viewer, nlp) = (pair(&admin_tf), pair(&editor_tf), pair(&viewer_tf), pair(&nlp_tf));
    assert_eq!(editor.id, editor_id, "access key id = the id `strata token create` shows");
    let m = c.mount(&[]);
    let mnt = c.mp(m).display().to_string();
    // A bucket mounted elsewhere, which DeleteBucket must refuse.
    let elsewhere = c.dir.join("mnt-elsewhere");
    std::fs::create_dir(&elsewhere).expect("mount point");
    c.mount_as("vision-mounted", &admin_tf, &elsewhere, &[]);
    let (capped, quota) = (pair(&capped_tf), pair(&quota_tf));
    let volume = c.volume.clone();
    let max = 12 << 20;
    let mut gw = Gateway::s3(
        &mut c,
        &[&admin_tf, &editor_tf, &viewer_tf, &nlp_tf, &capped_tf, &quota_tf],
        &["--max-object-size", "12M", "--retry-timeout", "1s", "--detach-idle", "2s"],
    );

    scenario(
        &mut gw,
        "objects.py",
        &admin,
        &volume,
        &["--other-bucket", "vision-data", "--max-object-size", &max.to_string(), "--mount", &mnt],
    );
    scenario(&mut gw, "multipart.py", &admin, &volume, &[]);
    scenario(&mut gw, "listing.py", &admin, &volume, &[]);
    scenario(&mut gw, "interop.py", &admin, &volume, &["--mount", &mnt]);
    scenario(
        &mut gw,
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
    // s3s logs every 5xx answer as an error; the scenarios ask for refusals with NotImplemented.
    c.allow_log("<Code>NotImplemented</Code>");
    scenario(&mut gw, "conditional.py", &admin, &volume, &["--mount", &mnt]);
    scenario(&mut gw, "checksums.py", &admin, &volume, &[]);
    scenario(&mut gw, "features.py", &admin, &volume, &[]);
    scenario(
        &mut gw,
        "buckets.py",
        &editor,
        "made-by-s3",
        &[
            "--other-key",
            &nlp.id,
            "--other-secret",
            &nlp.secret,
            "--capped-key",
            &capped.id,
            "--capped-secret",
            &capped.secret,
            "--quota-key",
            &quota.id,
            "--quota-secret",
            &quota.secret,
            "--viewer-key",
            &viewer.id,
            "--viewer-secret",
            &viewer.secret,
            "--mounted-bucket",
            "vision-mounted",
        ],
    );
    // The capped scope's bucket got the policy's maximum as its capacity, and its class.
    let listed = c.cli_ok_as(&capped_tf, &["volume", "list", "-o", "json"]);
    let vols: serde_json::Value = serde_json::from_str(&listed).expect("volume list json");
    let capped_vol = vols.as_array().and_then(|v| v.iter().find(|v| v["name"] == "made-by-s3-capped"));
    let capped_vol = capped_vol.unwrap_or_else(|| panic!("no bucket made in the capped scope: {listed}"));
    assert_eq!(
        (capped_vol["capacity"].as_u64(), capped_vol["class"].as_str()),
        (Some(1 << 30), Some("fast")),
        "{listed}"
    );
    scenario(&mut gw, "minio_client.py", &editor, "made-by-minio", &[]);
    // Uploads expire: a second gateway with a short expiry.
    let mut short = Gateway::s3(&mut c, &[&admin_tf], &["--multipart-expiry", "1s"]);
    scenario(&mut short, "expiry.py", &admin, &volume, &[]);
    short.stop();
    scenario(&mut gw, "garbage.py", &admin, &volume, &[]);
    // Refused, aborted, cut-off and failed writes leave no temporary file or upload behind.
    let clean = wait_until(Duration::from_secs(10), || leftovers(c.mp(m)).is_empty());
    assert!(clean, "the gateway left files behind: {:?}", leftovers(c.mp(m)));
    scenario(&mut gw, "quota.py", &admin, "tiny", &["--size", &(6 << 20).to_string()]);

    // The server away: 503 after --retry-timeout; back: the same attachment serves again.
    for needle in ["unreachable", "heartbeat failed", "request failed"] {
        c.allow_log(needle);
    }
    assert!(c.stop_server().is_empty(), "server stop");
    scenario(&mut gw, "unavailable.py", &admin, "tiny", &[]);
    c.start_server();
    scenario(&mut gw, "available.py", &admin, "tiny", &[]);

    // Revoked on the server: refused at the next request, though its attachment is open.
    c.cli(&["token", "revoke", &editor.id]);
    c.allow_log("token refused; no longer keeping its session");
    c.allow_log("server did not acknowledge the unmount");
    scenario(
        &mut gw,
        "revoked.py",
        &editor,
        "vision-data",
        &["--readable-key", "docs/readme.txt", "--other-key", &viewer.id, "--other-secret", &viewer.secret],
    );
    // An idle attachment is detached, so the volume can be deleted again.
    let deleted =
        wait_until(Duration::from_secs(20), || c.cli_as(&admin_tf, &["volume", "delete", "tiny"]).status.success());
    assert!(deleted, "volume tiny still attached after the gateway's idle time:\n{}", tail(&gw.log, 20));
    gw.stop();
}
