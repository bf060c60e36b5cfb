//! Bad input to the CLI: each mistake gives exit code 1 and exactly one clear line on stderr,
//! `strata: ...`, and leaves nothing mounted.

mod common;

use std::process::Output;

use common::*;

/// Asserts a command failed with exit code 1 and one `strata: ` line mentioning every phrase.
#[track_caller]
fn assert_fails(out: &Output, phrases: &[&str], what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: exit status {:?}, stderr: {stderr}", out.status);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("strata: "), "{what}: stderr line does not start with 'strata: ': {stderr}");
    for p in phrases {
        assert!(lines[0].contains(p), "{what}: stderr lacks {p:?}: {stderr}");
    }
    lines[0].to_string()
}

#[test]
fn mount_mistakes() {
    let c = Cluster::new("badmount");
    let tf = c.token_file.to_string_lossy().into_owned();
    let mp = c.dir.join("mp");
    std::fs::create_dir(&mp).expect("mkdir");
    let mps = mp.to_string_lossy().into_owned();

    // No token at all (flags and environment).
    let out = run_strata(&["mount", &c.volume, &mps, "--server", &c.addr]);
    assert_fails(&out, &["no token given", "--token-file"], "mount with no token");

    // An empty token, and a token file that does not exist.
    let out = run_strata(&["mount", &c.volume, &mps, "--server", &c.addr, "--token", " "]);
    assert_fails(&out, &["token", "empty"], "mount with an empty token");
    let missing = c.dir.join("nope.token").to_string_lossy().into_owned();
    let out = run_strata(&["mount", &c.volume, &mps, "--server", &c.addr, "--token-file", &missing]);
    assert_fails(&out, &["cannot read token file", "nope.token"], "mount with a missing token file");

    // A wrong token, by flag and by environment.
    let out = run_strata(&["mount", &c.volume, &mps, "--server", &c.addr, "--token", "not-a-real-token"]);
    assert_fails(&out, &["authentication failed"], "mount with a wrong token");
    let out = run_cmd(strata().args(["mount", &c.volume, &mps, "--server", &c.addr]).env("STRATA_TOKEN", "wrong"));
    assert_fails(&out, &["authentication failed"], "mount with a wrong STRATA_TOKEN");

    // An unknown volume.
    let out = run_strata(&["mount", "no-such-volume", &mps, "--server", &c.addr, "--token-file", &tf]);
    assert_fails(&out, &["no-such-volume", "does not exist"], "mount of an unknown volume");

    // A missing mount point, and one that is a file.
    let gone = c.dir.join("gone").to_string_lossy().into_owned();
    let out = run_strata(&["mount", &c.volume, &gone, "--server", &c.addr, "--token-file", &tf]);
    assert_fails(&out, &["mount point", "gone", "No such file or directory"], "mount on a missing mount point");
    let out = run_strata(&["mount", &c.volume, &gone, "-d", "--server", &c.addr, "--token-file", &tf]);
    assert_fails(&out, &["mount point", "gone"], "background mount on a missing mount point");
    let file = c.dir.join("plainfile");
    std::fs::write(&file, b"x").expect("write");
    let out = run_strata(&["mount", &c.volume, &file.to_string_lossy(), "--server", &c.addr, "--token-file", &tf]);
    assert_fails(&out, &["not a directory"], "mount on a file");

    // No server listening.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = run_strata(&["mount", &c.volume, &mps, "--server", &dead, "--token-file", &tf]);
    assert_fails(&out, &["cannot reach strata server", &dead], "mount with no server listening");
    // A malformed server address.
    let out = run_strata(&["mount", &c.volume, &mps, "--server", "not an address", "--token-file", &tf]);
    assert_eq!(out.status.code(), Some(1), "bad server address: {}", String::from_utf8_lossy(&out.stderr));

    // A FUSE worker's descriptor that is not /dev/fuse (stdin), or not open at all.
    for fd in ["0", "99"] {
        let out = run_strata(&["mount", &c.volume, &mps, "--server", &c.addr, "--token-file", &tf, "--fuse-fd", fd]);
        assert_fails(&out, &["--fuse-fd", fd, "not an open /dev/fuse descriptor"], "mount with a bad --fuse-fd");
    }

    // A peer-cache address other mounts cannot reach.
    for addr in ["0.0.0.0:7430", "127.0.0.1:0"] {
        let out =
            run_strata(&["mount", &c.volume, &mps, "--server", &c.addr, "--token-file", &tf, "--peer-cache", addr]);
        assert_fails(&out, &["--peer-cache", addr, "not 0.0.0.0 or port 0"], "mount with an unreachable --peer-cache");
    }

    // A disk cache directory that cannot be made (blocks through the server use one).
    let not_dir = c.dir.join("cache-is-a-file");
    std::fs::write(&not_dir, b"x").expect("write a plain file");
    let bad_cache = not_dir.join("sub");
    let bad_cache = bad_cache.to_string_lossy();
    let out = run_strata(&[
        "mount",
        &c.volume,
        &mps,
        "--server",
        &c.addr,
        "--token-file",
        &tf,
        "--blocks",
        "server",
        "--cache-dir",
        &bad_cache,
    ]);
    // (The mount's INFO line on the block path comes first; the error is its last line.)
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(!out.status.success(), "mount with a --cache-dir that cannot be made succeeded");
    assert!(
        last.starts_with("strata: cannot mount")
            && last.contains("create cache directory")
            && last.contains(&*bad_cache),
        "mount with a --cache-dir that cannot be made: {err}"
    );

    // Nothing got mounted by any of this.
    assert!(!mounted_at(&mp), "a failed mount left {} mounted", mp.display());
    assert!(std::fs::read_dir(&mp).expect("readdir").next().is_none());

    // Unmounting something that is not a Strata mount.
    let out = run_strata(&["umount", &mps]);
    assert_fails(&out, &["not a Strata mount"], "umount of a plain directory");
}

#[test]
fn volume_mistakes() {
    let c = Cluster::new("badvol");
    let tf = c.token_file.to_string_lossy().into_owned();
    let vol = |args: &[&str]| {
        let mut v = vec!["volume"];
        v.extend_from_slice(args);
        v.extend(["--server", &c.addr, "--token-file", &tf]);
        run_strata(&v)
    };
    let out = vol(&["create", "bad/name"]);
    assert_fails(&out, &["cannot create volume", "may hold only letters"], "volume name with a slash");
    let long = "v".repeat(300);
    let out = vol(&["create", &long]);
    assert_fails(&out, &["1 to 253 characters", "300"], "300-character volume name");
    let out = vol(&["create", "with space"]);
    assert_fails(&out, &["may hold only letters"], "volume name with a space");
    let out = vol(&["create", ""]);
    assert_fails(&out, &["1 to 253 characters"], "empty volume name");
    let out = vol(&["create", ".hidden"]);
    assert_fails(&out, &["must start with a letter or digit"], "name starting with '.'");
    let out = vol(&["create", &c.volume]);
    assert_fails(&out, &["already exists"], "duplicate volume");
    let out = vol(&["delete", "no-such-volume"]);
    assert_fails(&out, &["no-such-volume", "not found"], "deleting an unknown volume");
    let out = vol(&["create", "v2", "--capacity", "lots"]);
    assert_eq!(out.status.code(), Some(2), "bad size is a usage error: {}", String::from_utf8_lossy(&out.stderr));

    // Without a token, or with a wrong one.
    let out = run_strata(&["volume", "list", "--server", &c.addr]);
    assert_fails(&out, &["no token given"], "volume list without a token");
    let out = run_strata(&["volume", "list", "--server", &c.addr, "--token", "wrong"]);
    assert_fails(&out, &["authentication failed"], "volume list with a wrong token");

    // The good path: JSON output lists the volume, and a new one is created.
    let out = vol(&["create", "good.name_1-x", "-o", "json"]);
    assert!(out.status.success(), "create: {}", String::from_utf8_lossy(&out.stderr));
    let out = vol(&["list", "-o", "json"]);
    assert!(out.status.success(), "list: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("volume list JSON");
    let mut names: Vec<&str> = v.as_array().expect("array").iter().filter_map(|x| x["name"].as_str()).collect();
    names.sort();
    let mut want = vec![c.volume.as_str(), "good.name_1-x"];
    want.sort();
    assert_eq!(names, want);
}

/// The good path of the same commands: `mount -d` returns once mounted, a second mount on the
/// same point is refused, `strata umount` refuses a busy mount without --lazy, then unmounts and
/// the background process exits after committing.
#[test]
fn background_mount_and_strata_umount() {
    let mut c = Cluster::new("daemon");
    let tf = c.token_file.to_string_lossy().into_owned();
    let mp = c.dir.join("bg");
    std::fs::create_dir(&mp).expect("mkdir");
    let mps = mp.to_string_lossy().into_owned();
    let log = c.dir.join("bg.log");
    c.watch_log(log.clone());
    let logs = log.to_string_lossy().into_owned();
    let out =
        run_strata(&["mount", &c.volume, &mps, "-d", "--log-file", &logs, "--server", &c.addr, "--token-file", &tf]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "mount -d: {}", String::from_utf8_lossy(&out.stderr));
    assert!(is_fuse_mount(&mp), "mounted when `mount -d` returns");
    let pid: i32 = stdout
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split([',', ')']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"));

    // Mounting again on the same point is refused.
    let out = run_strata(&["mount", &c.volume, &mps, "--server", &c.addr, "--token-file", &tf]);
    assert_fails(&out, &["already a Strata mount"], "second mount on the same mount point");

    let data = random_bytes(70, (2 << 20) + 1);
    std::fs::write(mp.join("f"), &data).expect("write through the background mount");
    {
        let _busy = std::fs::File::open(mp.join("f")).expect("open");
        let out = run_strata(&["umount", &mps]);
        assert_fails(&out, &["busy", "--lazy"], "umount with a file open");
        assert!(is_fuse_mount(&mp), "a refused umount leaves the mount in place");
    }
    let out = run_strata(&["umount", &mps]);
    assert!(out.status.success(), "umount: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!mounted_at(&mp), "unmounted when `strata umount` returns");
    // SAFETY: kill(pid, 0) only probes for the process.
    let gone = wait_until(std::time::Duration::from_secs(20), || unsafe { libc::kill(pid, 0) } != 0);
    assert!(gone, "background mount process {pid} still running after umount");
    let i = c.mount(&[]);
    assert_bytes_eq(&read_all(&c.p(i, "f")), &data, "file written through the background mount");
}
