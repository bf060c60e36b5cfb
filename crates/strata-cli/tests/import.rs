//! `strata import` end to end: a real server, the import attaching the volume by itself (no
//! mount), and a FUSE mount of the volume to check the result byte for byte. Sources: a host
//! tree (small files, a sparse file, links, modes and times, a fifo), Git over file:// and
//! git://, and S3 (SeaweedFS; ignored without STRATA_TEST_S3_ENDPOINT). Also: an import killed
//! with SIGKILL and resumed, re-runs that copy nothing, --delete, and a quota that fills midway.

mod common;

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const MIB: usize = 1 << 20;

/// Runs `strata import ARGS -o json --no-progress` against the cluster with its admin token.
fn import(c: &Cluster, args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = vec!["import"];
    all.extend(args);
    all.extend(["-o", "json", "--no-progress"]);
    let out = c.cli_as(&c.token_file, &all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

/// [`import`], which must succeed; its report.
#[track_caller]
fn import_ok(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let (out, v) = import(c, args);
    assert!(
        out.status.success(),
        "strata import {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Sets a path's mtime (not following links) to `secs` seconds and `nsec` nanoseconds.
fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    let c = cpath(p);
    let ts = [libc::timespec { tv_sec: secs, tv_nsec: nsec }, libc::timespec { tv_sec: secs, tv_nsec: nsec }];
    // SAFETY: a valid path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}: {}", p.display(), errname(errno()));
}

/// Asserts that tree `got` (in a mount) has exactly the regular files, directories and links
/// of `want`, with the same bytes, permission bits and mtimes; special files of `want` are
/// expected to be absent. The number of files compared.
fn assert_same_tree(got: &Path, want: &Path, times: bool) -> usize {
    let mut n = 0;
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let (gd, wd) = (got.join(&rel), want.join(&rel));
        let mut wnames: Vec<_> = std::fs::read_dir(&wd)
            .expect("read source dir")
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_dir() || t.is_symlink()))
            .map(|e| e.file_name())
            .filter(|n| n != ".git")
            .collect();
        let mut gnames: Vec<_> = std::fs::read_dir(&gd)
            .unwrap_or_else(|e| panic!("read {}: {e}", gd.display()))
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| !(rel.as_os_str().is_empty() && n == ".strata-import"))
            .collect();
        wnames.sort();
        gnames.sort();
        assert_eq!(gnames, wnames, "names in {}", rel.display());
        for name in wnames {
            let r = rel.join(&name);
            let (g, w) = (got.join(&r), want.join(&r));
            let (gm, wm) =
                (std::fs::symlink_metadata(&g).expect("stat got"), std::fs::symlink_metadata(&w).expect("stat"));
            assert_eq!(gm.file_type(), wm.file_type(), "type of {}", r.display());
            if wm.file_type().is_symlink() {
                assert_eq!(std::fs::read_link(&g).ok(), std::fs::read_link(&w).ok(), "target of {}", r.display());
                continue;
            }
            assert_eq!(gm.mode() & 0o7777, wm.mode() & 0o7777, "mode of {}", r.display());
            if times {
                assert_eq!((gm.mtime(), gm.mtime_nsec()), (wm.mtime(), wm.mtime_nsec()), "mtime of {}", r.display());
            }
            if wm.is_dir() {
                todo.push(r);
            } else {
                assert_bytes_eq(&read_all(&g), &read_all(&w), &r.display().to_string());
                n += 1;
            }
        }
    }
    n
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in report {v}"))
}

/// A host tree: `dirs` × `per_dir` small files, a sparse file, links, modes, times, a fifo.
fn make_host_tree(root: &Path, dirs: usize, per_dir: usize) -> usize {
    let mut files = 0;
    for d in 0..dirs {
        let dir = root.join(format!("d{d:02}/sub"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..per_dir {
            let p = dir.join(format!("f{f:03}.bin"));
            std::fs::write(&p, random_bytes((d * 1000 + f) as u64, 100 + (f * 37) % 3000)).expect("write");
            files += 1;
        }
    }
    // A sparse file: data at 0 and at 5 MiB, a hole at the end (8 MiB long).
    let sparse = File::create(root.join("sparse.img")).expect("create");
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&random_bytes(7, 64 << 10), 0).expect("write");
    sparse.write_all_at(&random_bytes(8, 64 << 10), 5 << 20).expect("write");
    sparse.set_len(8 << 20).expect("truncate");
    drop(sparse);
    std::fs::write(root.join("secret.txt"), b"only me").expect("write");
    std::fs::set_permissions(root.join("secret.txt"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(root.join("empty"), b"").expect("write");
    symlink("d00/sub/f000.bin", root.join("link-rel")).expect("symlink");
    symlink("/nonexistent/target", root.join("link-dangling")).expect("symlink");
    let fifo = cpath(&root.join("pipe"));
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    set_mtime(&root.join("secret.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("link-rel"), 1_500_000_000, 0);
    std::fs::set_permissions(root.join("d01"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    for d in 0..dirs {
        set_mtime(&root.join(format!("d{d:02}/sub")), 1_400_000_000 + d as i64, 0);
        set_mtime(&root.join(format!("d{d:02}")), 1_400_000_000 + d as i64, 500);
    }
    files + 4
}

#[test]
fn host_path_import_resume_and_delete() {
    let mut c = Cluster::new("import-host");
    let src = c.dir.join("src");
    let files = make_host_tree(&src, 20, 100);
    let vol = c.volume.clone();
    let dest = format!("{vol}:/data/set");
    let started = std::time::Instant::now();
    let r = import_ok(&c, &[src.to_str().expect("path"), &dest, "--threads", "8"]);
    eprintln!("imported {files} files in {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(num(&r, "copied"), files as u64 + 2, "files and links copied: {r}");
    assert_eq!(num(&r, "failed"), 0, "{r}");
    assert_eq!(num(&r, "skipped"), 1, "the fifo: {r}");
    assert!(r["skips"][0]["reason"].as_str().is_some_and(|s| s.contains("fifo")), "{r}");

    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let got = c.p(0, "data/set");
    assert_eq!(assert_same_tree(&got, &src, true), files);
    // Nothing left in the staging directory.
    assert_eq!(std::fs::read_dir(got.join(".strata-import")).expect("staging").count(), 0);

    // Nothing changed: nothing copied.
    let r = import_ok(&c, &[src.to_str().expect("path"), &dest]);
    assert_eq!((num(&r, "copied"), num(&r, "unchanged")), (0, files as u64 + 2), "{r}");

    // One file changed, one added, one removed: without --delete the removed one stays.
    std::fs::write(src.join("d03/sub/f001.bin"), b"changed").expect("write");
    std::fs::write(src.join("d03/new.txt"), b"new").expect("write");
    std::fs::remove_file(src.join("d04/sub/f002.bin")).expect("rm");
    std::fs::remove_dir_all(src.join("d05")).expect("rm");
    let r = import_ok(&c, &[src.to_str().expect("path"), &dest]);
    assert_eq!((num(&r, "copied"), num(&r, "deleted")), (2, 0), "{r}");
    assert!(got.join("d04/sub/f002.bin").exists(), "kept without --delete");
    let r = import_ok(&c, &[src.to_str().expect("path"), &dest, "--delete"]);
    assert_eq!((num(&r, "copied"), num(&r, "deleted")), (0, 1 + 100), "{r}");
    assert_same_tree(&got, &src, true);

    // A single file, and a missing path.
    let r = import_ok(&c, &[src.join("run.sh").to_str().expect("path"), &format!("{vol}:/one")]);
    assert_eq!(num(&r, "copied"), 1, "{r}");
    assert_bytes_eq(&read_all(&c.p(0, "one/run.sh")), b"#!/bin/sh\necho hi\n", "single file");
    let (out, _) = import(&c, &["/nonexistent/dir", &dest]);
    assert!(!out.status.success());
    assert!(text(&out).contains("host path /nonexistent/dir does not exist"), "{}", text(&out));
}

/// Kills an import with SIGKILL midway (a bandwidth limit on the volume makes it slow), then
/// runs it again: only what was missing is copied, the result is exact.
#[test]
fn killed_import_resumes() {
    let mut c = Cluster::new("import-kill");
    let vol = c.volume.clone();
    c.cli(&["volume", "qos", &vol, "--max-bandwidth", "4M"]);
    let src = c.dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..24 {
        std::fs::write(src.join(format!("shard{i:02}")), random_bytes(i, MIB + i as usize)).expect("write");
    }
    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let dest = c.p(0, "in");
    let mut cmd = strata();
    cmd.args(["import", src.to_str().expect("path"), &format!("{vol}:/in"), "--threads", "2", "--no-progress"])
        .args(["--server", &c.addr, "--token-file", c.token_file.to_str().expect("path")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn import");
    let some = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(&dest)
            .map(|d| d.flatten().filter(|e| e.file_name() != ".strata-import").count() >= 4)
            .unwrap_or(false)
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    assert!(some, "the import made no progress");
    // Whatever is under a final name is complete.
    let done: Vec<_> = std::fs::read_dir(&dest)
        .expect("dest")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".strata-import")
        .collect();
    assert!(done.len() < 24, "the import finished before it was killed");
    for n in &done {
        assert_bytes_eq(&read_all(&dest.join(n)), &read_all(&src.join(n)), &n.to_string_lossy());
    }
    c.cli(&["volume", "qos", &vol, "--clear"]);
    let r = import_ok(&c, &[src.to_str().expect("path"), &format!("{vol}:/in")]);
    assert_eq!(num(&r, "copied") + num(&r, "unchanged"), 24, "{r}");
    assert_eq!(num(&r, "unchanged"), done.len() as u64, "only the missing files are copied: {r}");
    assert_same_tree(&dest, &src, true);
    assert_eq!(std::fs::read_dir(dest.join(".strata-import")).expect("staging").count(), 0, "temporaries removed");
}

/// A volume quota that fills midway stops the import with EDQUOT; what was imported stays.
#[test]
fn quota_fills_midway() {
    let mut c = Cluster::with_opts(
        "import-quota",
        Opts { volume_args: vec!["--capacity".into(), "8M".into()], ..Default::default() },
    );
    let vol = c.volume.clone();
    let src = c.dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..12 {
        std::fs::write(src.join(format!("f{i:02}")), random_bytes(100 + i, MIB)).expect("write");
    }
    let (out, r) = import(&c, &[src.to_str().expect("path"), &format!("{vol}:/q"), "--threads", "1"]);
    assert!(!out.status.success(), "an import past the quota succeeded: {}", text(&out));
    assert!(text(&out).contains("EDQUOT"), "{}", text(&out));
    assert!(r["stopped"].as_str().is_some_and(|s| s.contains("EDQUOT")), "{r}");
    let copied = num(&r, "copied");
    assert!((1..12).contains(&copied), "{r}");
    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let mut seen = 0;
    for e in std::fs::read_dir(c.p(0, "q")).expect("dest").flatten() {
        if e.file_name() == ".strata-import" {
            continue;
        }
        assert_bytes_eq(&read_all(&e.path()), &read_all(&src.join(e.file_name())), &e.file_name().to_string_lossy());
        seen += 1;
    }
    assert_eq!(seen, copied, "every file the report counts is there, complete");
}

/// Runs git in `dir`; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args),
    )
    .trim()
    .to_string()
}

/// A repository with a tag v1 (first commit), a branch `feature` (from it) and main (a second
/// commit); the id of the first commit.
fn make_repo(repo: &Path) -> String {
    std::fs::create_dir_all(repo.join("dir")).expect("mkdir");
    git(repo, &["init", "-q"]);
    std::fs::write(repo.join("a.txt"), b"first\n").expect("write");
    std::fs::write(repo.join("dir/b.bin"), random_bytes(3, 200_000)).expect("write");
    std::fs::write(repo.join("crlf.txt"), b"line\r\nline\r\n").expect("write");
    std::fs::write(repo.join(".gitattributes"), b"*.txt text eol=crlf\n").expect("write");
    std::fs::write(repo.join("run.sh"), b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    symlink("dir/b.bin", repo.join("link")).expect("symlink");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "first"]);
    git(repo, &["tag", "v1"]);
    let first = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["branch", "feature"]);
    std::fs::write(repo.join("a.txt"), b"second\n").expect("write");
    std::fs::write(repo.join("c.txt"), b"new in main\n").expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "second"]);
    git(repo, &["checkout", "-q", "feature"]);
    std::fs::write(repo.join("f.txt"), b"feature\n").expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "feature"]);
    git(repo, &["checkout", "-q", "main"]);
    first
}

/// The blob of `path` at `rev`, as git stores it.
fn blob(repo: &Path, rev: &str, path: &str) -> Vec<u8> {
    run_cmd(Command::new("git").arg("-C").arg(repo).args(["cat-file", "blob", &format!("{rev}:{path}")])).stdout
}

#[test]
fn git_sources() {
    let mut c = Cluster::new("import-git");
    let vol = c.volume.clone();
    let repo = c.dir.join("repo");
    let first = make_repo(&repo);
    let url = format!("git+file://{}", repo.display());
    let r = import_ok(&c, &[&url, &format!("{vol}:/tag"), "--ref", "v1"]);
    assert_eq!(num(&r, "failed"), 0, "{r}");
    import_ok(&c, &[&url, &format!("{vol}:/branch"), "--ref", "feature"]);
    import_ok(&c, &[&url, &format!("{vol}:/commit"), "--ref", &first]);
    import_ok(&c, &[&url, &format!("{vol}:/main")]);
    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    for (dir, rev, files) in [
        ("tag", "v1", &["a.txt", "dir/b.bin", "crlf.txt", "run.sh", ".gitattributes"][..]),
        ("branch", "feature", &["a.txt", "f.txt", "dir/b.bin"][..]),
        ("commit", first.as_str(), &["a.txt", "crlf.txt"][..]),
        ("main", "main", &["a.txt", "c.txt", "dir/b.bin"][..]),
    ] {
        for f in files {
            assert_bytes_eq(&read_all(&c.p(0, &format!("{dir}/{f}"))), &blob(&repo, rev, f), &format!("{dir}/{f}"));
        }
        assert!(!c.p(0, &format!("{dir}/.git")).exists(), ".git is not imported");
        assert_eq!(std::fs::read_link(c.p(0, &format!("{dir}/link"))).ok(), Some(PathBuf::from("dir/b.bin")));
    }
    let mode = std::fs::metadata(c.p(0, "tag/run.sh")).expect("stat").mode() & 0o777;
    assert_eq!(mode, 0o755, "executable bit");
    assert!(!c.p(0, "tag/f.txt").exists() && !c.p(0, "tag/c.txt").exists(), "the tag's tree only");
    // A re-run copies nothing; moving the ref copies what changed, --delete removes the rest.
    let r = import_ok(&c, &[&url, &format!("{vol}:/tag"), "--ref", "v1"]);
    assert_eq!(num(&r, "copied"), 0, "{r}");
    let r = import_ok(&c, &[&url, &format!("{vol}:/tag"), "--ref", "feature", "--delete"]);
    assert_eq!((num(&r, "copied"), num(&r, "deleted")), (1, 0), "f.txt: {r}");
    let r = import_ok(&c, &[&url, &format!("{vol}:/branch"), "--ref", "main", "--delete"]);
    assert_eq!((num(&r, "copied"), num(&r, "deleted")), (2, 1), "a.txt and c.txt in, f.txt out: {r}");
    assert!(!c.p(0, "branch/f.txt").exists());

    // Over the network: git daemon (git://).
    let port = free_port();
    let mut daemon = Command::new("git")
        .args(["daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1", &format!("--port={port}")])
        .arg(format!("--base-path={}", c.dir.display()))
        .arg(&c.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // `git daemon` runs git-daemon as a child: a group of their own, killed as one.
        .process_group(0)
        .spawn()
        .expect("git daemon");
    assert!(wait_until(Duration::from_secs(10), || listening(&format!("127.0.0.1:{port}"))), "git daemon");
    let remote = format!("git://127.0.0.1:{port}/repo");
    let r = import(&c, &[&remote, &format!("{vol}:/net"), "--git", "--ref", "v1"]);
    let missing = import(&c, &[&format!("git://127.0.0.1:{port}/nothing.git"), &format!("{vol}:/x")]);
    // SAFETY: a plain signal to the process group made above.
    unsafe { libc::kill(-(daemon.id() as i32), libc::SIGKILL) };
    let _ = daemon.wait();
    assert!(r.0.status.success(), "import over git://: {}", text(&r.0));
    assert_bytes_eq(&read_all(&c.p(0, "net/dir/b.bin")), &blob(&repo, "v1", "dir/b.bin"), "over git://");
    assert!(!missing.0.status.success());
    assert!(text(&missing.0).contains("not found"), "{}", text(&missing.0));

    // Over HTTP (the dumb protocol, from a plain file server: git fetches the whole history).
    git(&repo, &["update-server-info"]);
    let port = free_port();
    let mut http = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&c.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    assert!(wait_until(Duration::from_secs(10), || listening(&format!("127.0.0.1:{port}"))), "http.server");
    let r = import(&c, &[&format!("http://127.0.0.1:{port}/repo/.git"), &format!("{vol}:/http"), "--ref", "feature"]);
    let _ = http.kill();
    let _ = http.wait();
    assert!(r.0.status.success(), "import over http://: {}", text(&r.0));
    assert_bytes_eq(&read_all(&c.p(0, "http/f.txt")), b"feature\n", "over http://");

    let (out, _) = import(&c, &["git+file:///nonexistent/repo", &format!("{vol}:/x")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("Git repository file:///nonexistent/repo not found"), "{}", text(&out));
    let (out, _) = import(&c, &[&url, &format!("{vol}:/x"), "--ref", "no-such-branch"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("has no branch, tag or commit no-such-branch"), "{}", text(&out));
}

/// boto3: makes bucket `bucket` (if missing) and puts objects KEY=SIZE:SEED (a multipart
/// upload above 5 MiB), each body also in a file next to the script.
const PUT_OBJECTS: &str = r#"
import boto3, sys, random
from botocore.config import Config
endpoint, bucket = sys.argv[1:3]
# Checksums only where S3 requires them: SeaweedFS stalls on some of boto3's newer trailers.
cfg = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
try:
    s3.create_bucket(Bucket=bucket)
except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
    pass
PART = 5 << 20
for spec in sys.argv[3:]:
    key, rest = spec.split("=")
    size, seed = map(int, rest.split(":"))
    body = random.Random(seed).randbytes(size)
    # A client per object: after an empty PUT, SeaweedFS stalls the next request on that
    # connection.
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
    if size <= PART:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    else:
        up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for n, off in enumerate(range(0, size, PART), 1):
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=body[off:off + PART])
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
    open(sys.argv[0] + "." + key.replace("/", "_"), "wb").write(body)
"#;

#[test]
#[ignore = "needs S3: set STRATA_TEST_S3_ENDPOINT and the AWS_* credentials (scripts/s3.sh prints them)"]
fn s3_source() {
    let endpoint = services::need_s3();
    let mut c = Cluster::new("import-s3");
    let vol = c.volume.clone();
    // The bucket the suites share (a new bucket is a new SeaweedFS collection, with volumes of
    // its own), under a prefix of this test's.
    let bucket = services::S3_BUCKET;
    let top = format!("import-{}-{}", std::process::id(), services::unique() % 1_000_000);
    let script = c.dir.join("put.py");
    std::fs::write(&script, PUT_OBJECTS).expect("script");
    let objects = [
        ("train/a/1.bin", 1000, 1),
        ("train/a/2.bin", 0, 2),
        ("train/b/3.bin", 300_000, 3),
        ("train/big.bin", 11 * MIB, 4),
        ("other/x.bin", 10, 5),
    ];
    let specs: Vec<String> = objects.iter().map(|(k, s, seed)| format!("{top}/{k}={s}:{seed}")).collect();
    run_ok(Command::new("python3").arg(&script).args([&endpoint, bucket]).args(&specs));
    let body = |key: &str| read_all(&PathBuf::from(format!("{}.{top}_{}", script.display(), key.replace('/', "_"))));

    let src = format!("s3://{bucket}/{top}/train");
    let r = import_ok(&c, &[&src, &format!("{vol}:/ds"), "--endpoint", &endpoint]);
    assert_eq!((num(&r, "copied"), num(&r, "failed")), (4, 0), "{r}");
    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    for (k, _, _) in &objects[..4] {
        let rel = k.strip_prefix("train/").expect("prefix");
        assert_bytes_eq(&read_all(&c.p(0, &format!("ds/{rel}"))), &body(k), k);
    }
    assert!(!c.p(0, "ds/other").exists() && !c.p(0, "ds/x.bin").exists(), "the prefix only");
    // Unchanged: nothing copied; the whole prefix with a credentials file.
    let r = import_ok(&c, &[&src, &format!("{vol}:/ds"), "--endpoint", &endpoint]);
    assert_eq!((num(&r, "copied"), num(&r, "unchanged")), (0, 4), "{r}");
    // A credentials file takes precedence over the AWS_* variables (which the volume's own
    // block store may need, so they stay): its good profile works, its bad one is refused.
    let creds = c.dir.join("aws-credentials");
    let (id, secret) = (
        std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
    );
    std::fs::write(
        &creds,
        format!("[other]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n[bad]\naws_access_key_id = {id}\naws_secret_access_key = nope\n"),
    )
    .expect("write");
    let creds = creds.to_str().expect("path");
    let all = format!("{vol}:/all");
    let whole = format!("s3://{bucket}/{top}");
    import_ok(&c, &[&whole, &all, "--endpoint", &endpoint, "--credentials-file", creds, "--profile", "other"]);
    let (out, _) =
        import(&c, &[&whole, &all, "--endpoint", &endpoint, "--credentials-file", creds, "--profile", "bad"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("refused the credentials"), "{}", text(&out));
    assert_bytes_eq(&read_all(&c.p(0, "all/other/x.bin")), &body("other/x.bin"), "a whole prefix");
    assert_bytes_eq(&read_all(&c.p(0, "all/train/big.bin")), &body("train/big.bin"), "a multipart upload");

    // A missing bucket, bad credentials.
    let (out, _) = import(&c, &["s3://no-such-bucket-here/x", &format!("{vol}:/x"), "--endpoint", &endpoint]);
    assert!(!out.status.success());
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    let out = run_cmd(
        strata()
            .args(["import", &src, &format!("{vol}:/x"), "--endpoint", &endpoint])
            .args(["--server", &c.addr, "--token-file", c.token_file.to_str().expect("path")])
            .env("AWS_ACCESS_KEY_ID", "wrong")
            .env("AWS_SECRET_ACCESS_KEY", "wrong"),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("refused the credentials"), "{}", text(&out));
}
