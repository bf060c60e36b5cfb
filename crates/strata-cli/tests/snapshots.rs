//! Snapshots, clones and data volumes end to end: real servers and FUSE mounts driven through
//! the `strata` command, an S3 client through the gateway, and SIGKILLed servers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Fills `dir` with a small tree: nested directories, files of several sizes, a symlink.
fn populate(dir: &Path, seed: u64, files: usize) {
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let len = [0usize, 1, 4095, 70_000, 1 << 20][i % 5] + i;
        std::fs::write(sub.join(format!("f{i}")), random_bytes(seed + i as u64, len)).expect("write");
    }
    let _ = std::os::unix::fs::symlink("d0/f0", dir.join("link"));
}

fn new_dir(c: &Cluster, name: &str) -> PathBuf {
    let p = c.dir.join(name);
    std::fs::create_dir_all(&p).expect("mount point");
    p
}

fn errno_of(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    r.expect_err("must fail").raw_os_error().unwrap_or(0)
}

#[test]
fn snapshots_read_as_taken_and_clones_live_on_their_own() {
    let mut c = Cluster::new("snap");
    let vol = c.volume.clone();
    let m = c.mount(&[]);
    populate(c.mp(m), 1, 60);
    let before = file_tree(c.mp(m), false);
    c.cli(&["snapshot", "create", &vol, "s1"]);

    // After it: overwrite, append, delete, create, rename.
    std::fs::write(c.p(m, "d0/f0"), b"changed").expect("overwrite");
    let mut f = std::fs::OpenOptions::new().append(true).open(c.p(m, "d1/f1")).expect("open");
    std::io::Write::write_all(&mut f, b"more").expect("append");
    drop(f);
    std::fs::remove_file(c.p(m, "d2/f2")).expect("unlink");
    std::fs::write(c.p(m, "new"), b"new").expect("create");
    std::fs::rename(c.p(m, "d3"), c.p(m, "d3-renamed")).expect("rename");
    let after = file_tree(c.mp(m), false);

    let sp = new_dir(&c, "snap-mnt");
    let token = c.token_file.clone();
    let s = c.mount_as(&format!("{vol}@s1"), &token, &sp, &[]);
    assert_same_tree(&file_tree(c.mp(s), false), &before, "the snapshot");
    assert_same_tree(&file_tree(c.mp(m), false), &after, "the live volume");
    // Read-only, whatever is tried.
    assert_eq!(errno_of(std::fs::write(c.p(s, "x"), b"x")), libc::EROFS);
    assert_eq!(errno_of(std::fs::remove_file(c.p(s, "d0/f0"))), libc::EROFS);
    assert_eq!(errno_of(std::fs::OpenOptions::new().write(true).open(c.p(s, "d0/f0"))), libc::EROFS);
    // The NFS gateway exports it read-only: libnfs's client reads it and cannot write.
    let mut g = Gateway::nfs(&mut c, &[&format!("/s1={vol}@s1,squash=none")], &[]);
    let cat = run_cmd(Command::new("nfs-cat").arg(g.nfs_url("/s1/d2/f2")));
    assert!(cat.status.success(), "nfs-cat: {}", String::from_utf8_lossy(&cat.stderr));
    assert_bytes_eq(&cat.stdout, &before["d2/f2"], "d2/f2 over NFS");
    let local = c.dir.join("upload");
    std::fs::write(&local, b"x").expect("local file");
    let cp = run_cmd(Command::new("nfs-cp").arg(&local).arg(g.nfs_url("/s1/uploaded")));
    assert!(!cp.status.success(), "nfs-cp into a snapshot succeeded");
    g.stop();
    // df of the snapshot: what it held.
    let out = run_ok(Command::new("df").arg("-B1").arg(c.mp(s)));
    assert!(out.contains("strata"), "{out}");

    // Listing with what each snapshot holds.
    let list = c.cli(&["snapshot", "list", &vol, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list).expect("snapshot list JSON");
    let s1 = v.as_array().and_then(|a| a.iter().find(|x| x["name"] == "s1")).expect("s1 listed").clone();
    assert!(s1["held_bytes"].as_u64().expect("held_bytes") > 0, "{s1}");
    assert!(s1["shared_bytes"].as_u64().is_some(), "{s1}");

    // A clone of the snapshot: the same tree, then a life of its own.
    c.cli(&["volume", "create", "clone1", "--from", &format!("{vol}@s1")]);
    let cp = new_dir(&c, "clone-mnt");
    let k = c.mount_as("clone1", &token, &cp, &[]);
    assert_same_tree(&file_tree(c.mp(k), false), &before, "the clone");
    std::fs::write(c.p(k, "d0/f0"), b"clone's own").expect("write in the clone");
    std::fs::remove_file(c.p(k, "d1/f1")).expect("unlink in the clone");
    assert_same_tree(&file_tree(c.mp(s), false), &before, "the snapshot after the clone changed");
    assert_eq!(std::fs::read(c.p(m, "d0/f0")).expect("live"), b"changed");
    // A clone of the live volume as it is now.
    c.cli(&["volume", "create", "clone2", "--from", &vol]);
    let cp2 = new_dir(&c, "clone2-mnt");
    let k2 = c.mount_as("clone2", &token, &cp2, &[]);
    assert_same_tree(&file_tree(c.mp(k2), false), &after, "the clone of the live volume");

    // A mounted snapshot is not deleted, nor a volume with snapshots.
    let out = c.cli_as(&token, &["snapshot", "delete", &vol, "s1"]);
    assert!(!out.status.success(), "a mounted snapshot was deleted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mounted"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.cli_as(&token, &["volume", "delete", &vol]);
    assert!(!out.status.success(), "a volume with snapshots was deleted");
    c.mounts[s].stop();
    let out = c.cli_as(&token, &["snapshot", "delete", &vol, "s1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same_tree(&file_tree(c.mp(k), false), &file_tree(c.mp(k), false), "the clone after its snapshot went");
    assert_eq!(std::fs::read(c.p(k, "d2/f2")).expect("clone keeps its data"), before["d2/f2"]);
}

#[test]
fn data_volumes_are_shared_read_only_with_versions() {
    let mut c = Cluster::new("dv");
    for s in ["lab", "lab/a", "lab/b", "lab/c"] {
        c.cli(&["scope", "create", s]);
    }
    let (a_admin, _) = c.issue_token_in("a-admin", "admin", "lab/a");
    let (a_editor, _) = c.issue_token_in("a-editor", "editor", "lab/a");
    let (b_admin, _) = c.issue_token_in("b-admin", "admin", "lab/b");
    let (c_admin, _) = c.issue_token_in("c-admin", "admin", "lab/c");
    c.cli_ok_as(&a_editor, &["volume", "create", "prep", "--scope", "lab/a"]);
    let pm = new_dir(&c, "prep");
    let p = c.mount_as("prep", &a_editor, &pm, &[]);
    populate(c.mp(p), 7, 40);
    let v1 = file_tree(c.mp(p), false);
    c.cli_ok_as(&a_editor, &["datavolume", "create", "imagenet", "--from", "prep", "--description", "images"]);
    // Sharing is the owning scope's admins' to do.
    let out = c.cli_as(&a_editor, &["datavolume", "share", "imagenet", "lab/b"]);
    assert!(!out.status.success(), "an editor shared a data volume");
    c.cli_ok_as(&a_admin, &["datavolume", "share", "imagenet", "lab/b"]);

    // B mounts it read-only and reads it exactly; C does not even see it.
    let bm = new_dir(&c, "b-v1");
    let b1 = c.mount_as("dv:imagenet@1", &b_admin, &bm, &[]);
    assert_same_tree(&file_tree(c.mp(b1), false), &v1, "B's mount of version 1");
    assert_eq!(errno_of(std::fs::write(c.p(b1, "x"), b"x")), libc::EROFS);
    let listed = c.cli_ok_as(&b_admin, &["datavolume", "list", "-o", "json"]);
    assert!(listed.contains("imagenet"), "{listed}");
    let cl = c.cli_ok_as(&c_admin, &["datavolume", "list", "-o", "json"]);
    assert!(!cl.contains("imagenet"), "C sees it: {cl}");
    let cm = new_dir(&c, "c-mnt");
    let out = run_cmd(
        strata()
            .args(["mount", "dv:imagenet", &cm.display().to_string(), "--server", &c.addr, "--token-file"])
            .arg(&c_admin),
    );
    assert!(!out.status.success(), "C mounted a data volume not shared with it");
    // B may not update, delete or re-share it.
    for args in [
        &["datavolume", "update", "imagenet"][..],
        &["datavolume", "delete", "imagenet"],
        &["datavolume", "share", "imagenet", "lab/c"],
    ] {
        assert!(!c.cli_as(&b_admin, args).status.success(), "B could {args:?}");
    }

    // A new version does not change what the old version's mount reads.
    std::fs::write(c.p(p, "d0/f0"), b"v2 content").expect("change the source");
    std::fs::remove_file(c.p(p, "d1/f1")).expect("unlink in the source");
    let v2 = file_tree(c.mp(p), false);
    c.cli_ok_as(&a_editor, &["datavolume", "update", "imagenet"]);
    let desc = c.cli_ok_as(&b_admin, &["datavolume", "describe", "imagenet", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_str(&desc).expect("describe JSON");
    assert_eq!(d["versions"].as_array().map(Vec::len), Some(2), "{desc}");
    assert_same_tree(&file_tree(c.mp(b1), false), &v1, "the version 1 mount after version 2");
    let bm2 = new_dir(&c, "b-latest");
    let b2 = c.mount_as("dv:imagenet", &b_admin, &bm2, &[]);
    assert_same_tree(&file_tree(c.mp(b2), false), &v2, "B's mount of the latest version");

    // Through the S3 gateway, with B's key, as a bucket alias.
    let mut gw = Gateway::s3(&mut c, &[&b_admin], &["--bucket", "imagenet-v1=dv:imagenet@1"]);
    let secret = std::fs::read_to_string(&b_admin).expect("token").trim().to_string();
    let script = r#"
import os, sys, boto3
from botocore.config import Config
ep, key, secret, outdir = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="imagenet-v1"):
    for o in page.get("Contents", []):
        if o["Key"] == "link":
            continue
        path = os.path.join(outdir, o["Key"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(s3.get_object(Bucket="imagenet-v1", Key=o["Key"])["Body"].read())
try:
    s3.put_object(Bucket="imagenet-v1", Key="x", Body=b"x")
    print("PUT SUCCEEDED")
except Exception:
    pass
# A view is neither created nor deleted as a bucket.
for op, want in [(s3.create_bucket, "BucketAlreadyExists"), (s3.delete_bucket, "AccessDenied")]:
    try:
        op(Bucket="imagenet-v1")
        print("VIEW CHANGED")
    except s3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != want:
            print("VIEW CHANGED", e)
"#;
    let outdir = new_dir(&c, "s3-copy");
    let out = run_ok(Command::new("python3").args([
        "-c",
        script,
        &gw.endpoint(),
        &strata_s3::public_id(&secret),
        &secret,
        &outdir.display().to_string(),
    ]));
    assert!(!out.contains("PUT SUCCEEDED"), "a read-only bucket took a PUT");
    assert!(!out.contains("VIEW CHANGED"), "a view was created or deleted as a bucket: {out}");
    let mut want = v1.clone();
    want.remove("link");
    assert_same_tree(&file_tree(&outdir, false), &want, "version 1 through S3");
    gw.stop();

    // Ending the share ends B's access at its next call.
    c.cli_ok_as(&a_admin, &["datavolume", "unshare", "imagenet", "lab/b"]);
    let denied = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(c.p(b1, "d5")).is_err() || std::fs::read(c.p(b1, "d5/f5")).is_err()
    });
    assert!(denied, "B still reads after the share ended");
    c.allow_log("not shared with its scope");
}

/// The server SIGKILLed while it deletes a snapshot and while it copies a clone: after a
/// restart, every file of every remaining snapshot reads exactly (nothing freed early), the
/// half-made clone is gone, and once everything is deleted the block directory empties
/// (nothing leaked).
#[test]
fn server_killed_mid_snapshot_delete_and_mid_clone() {
    let mut c = Cluster::with_opts(
        "snapcrash",
        Opts {
            // Two saved versions per transaction, 20 ms apart: the deletion of 300 files'
            // versions lasts over 3 s on any engine, so the kill lands in the middle of it.
            server_args: ["--gc-interval", "100ms", "--orphan-grace", "0s", "--sweep-interval", "1s"]
                .iter()
                .chain(
                    ["--orphan-block-age", "1s", "--snapshot-delete-batch", "2", "--snapshot-delete-pause", "20ms"]
                        .iter(),
                )
                .map(|s| s.to_string())
                .collect(),
            volume_args: vec!["--class".into(), "default".into()],
            ..Default::default()
        },
    );
    c.allow_log("strata server unreachable");
    c.allow_log("heartbeat failed");
    c.allow_log("removed a clone that a crash left half copied");
    let vol = c.volume.clone();
    let m = c.mount(&[]);
    let many = 300;
    for i in 0..many {
        std::fs::write(c.p(m, &format!("f{i}")), random_bytes(i as u64, 100 + i)).expect("write");
    }
    c.cli(&["snapshot", "create", &vol, "old"]);
    let old = file_tree(c.mp(m), false);
    c.cli(&["snapshot", "create", &vol, "big"]);
    // Every file changed after "big": its deletion has a version of each to merge or free.
    for i in 0..many {
        std::fs::write(c.p(m, &format!("f{i}")), random_bytes(10_000 + i as u64, 50 + i)).expect("rewrite");
    }
    let live = file_tree(c.mp(m), false);
    // Kill the server while it deletes "big".
    let mut del = strata()
        .args(["snapshot", "delete", &vol, "big", "--server", &c.addr, "--token-file"])
        .arg(&c.token_file)
        .spawn()
        .expect("snapshot delete");
    // Kill once the deletion is under way (the snapshot no longer listed), not after a fixed
    // delay: before it, the server computes what the snapshot holds, which takes longer on
    // PostgreSQL, and a kill there would leave nothing to resume.
    let started =
        wait_until(Duration::from_secs(60), || !c.cli(&["snapshot", "list", &vol, "-o", "json"]).contains("\"big\""));
    assert!(started, "the deletion of snapshot big never started");
    c.kill9_server();
    let deleted = del.wait().map(|s| s.success()).unwrap_or(false);
    assert!(!deleted, "the deletion ended before the server was killed: make it longer");
    c.start_server();
    // And while it copies a clone.
    let mut clone = strata()
        .args(["volume", "create", "half", "--from", &format!("{vol}@old"), "--server", &c.addr, "--token-file"])
        .arg(&c.token_file)
        .spawn()
        .expect("clone");
    std::thread::sleep(Duration::from_millis(150));
    c.kill9_server();
    let cloned = clone.wait().map(|s| s.success()).unwrap_or(false);
    c.start_server();

    let token = c.token_file.clone();
    let sp = new_dir(&c, "old-mnt");
    let s = c.mount_as(&format!("{vol}@old"), &token, &sp, &[]);
    assert_same_tree(&file_tree(c.mp(s), false), &old, "snapshot old after the crashes");
    assert_same_tree(&file_tree(c.mp(m), false), &live, "the live volume after the crashes");
    let list = c.cli(&["snapshot", "list", &vol, "-o", "json"]);
    assert!(!list.contains("\"big\""), "the deletion was not finished after the restart: {list}");
    let vols = c.cli(&["volume", "list", "-o", "json"]);
    if cloned {
        // The clone finished before the kill: it must be whole.
        let hp = new_dir(&c, "half-mnt");
        let h = c.mount_as("half", &token, &hp, &[]);
        assert_same_tree(&file_tree(c.mp(h), false), &old, "the clone that finished");
        c.mounts[h].stop();
    } else {
        assert!(!vols.contains("\"half\""), "a half-made clone survived the restart: {vols}");
    }

    // Delete everything: nothing may stay behind in the block directory.
    c.mounts[s].stop();
    c.mounts[m].stop();
    c.cli(&["snapshot", "delete", &vol, "old"]);
    if cloned {
        c.cli(&["volume", "delete", "half"]);
    }
    c.cli(&["volume", "delete", &vol]);
    let blocks = c.data.join("blocks");
    let empty = wait_until(Duration::from_secs(60), || count_files(&blocks) == 0);
    assert!(empty, "{} block files leaked", count_files(&blocks));
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(_) if !name.starts_with('.') => n += 1,
                _ => {}
            }
        }
    }
    n
}
