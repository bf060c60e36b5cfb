//! Operations on the metadata end to end (issue 17): `strata dump` of a live server while a
//! client writes, `strata load` into an empty store of either engine, and a server on the
//! restored store serving every file back exactly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (cpath(path), std::ffi::CString::new(name).expect("name"));
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and the buffer is as long as said.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (cpath(path), std::ffi::CString::new(name).expect("name"));
    // SAFETY: both strings are NUL-terminated and the value is as long as said.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {}: {}", path.display(), errname(errno()));
}

/// A tree of every kind of record: directories, files from empty to several blocks, a hard
/// link, a symlink, an xattr; then a snapshot, and changes after it (saved versions).
fn fill(c: &Cluster) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, Vec<u8>>) {
    let root = c.p(0, "fixed");
    std::fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
    for (i, len) in [0usize, 1, 4099, 70_000, (9 << 20) + 17].into_iter().enumerate() {
        write_synced(&root.join(format!("a/file{i}")), &random_bytes(100 + i as u64, len)).expect("write");
    }
    write_synced(&root.join("a/b/c/deep"), b"deep down").expect("write");
    std::fs::hard_link(root.join("a/file2"), root.join("a/b/hardlink")).expect("link");
    std::os::unix::fs::symlink("../file3", root.join("a/b/symlink")).expect("symlink");
    setxattr(&root.join("a/file1"), "user.origin", b"dump-test");
    let at_snapshot = file_tree(&root, true);
    c.cli(&["snapshot", "create", &c.volume, "s1"]);
    // Changes after the snapshot: the snapshot keeps the old versions.
    write_synced(&root.join("a/file3"), &random_bytes(7, 33_333)).expect("rewrite");
    std::fs::remove_file(root.join("a/file4")).expect("unlink");
    std::fs::rename(root.join("a/b/c/deep"), root.join("a/deep")).expect("rename");
    c.cli(&["scope", "create", "ml"]);
    c.cli(&["policy", "set", "ml", "--max-volume-size", "1G"]);
    c.issue_token_in("trainer", "editor", "ml");
    (file_tree(&root, true), at_snapshot)
}

/// The workload running during a dump: files written aside and renamed into place one after
/// another, so a consistent point in time holds `f00000`..`fN` and nothing else.
fn workload_file(i: usize) -> Vec<u8> {
    random_bytes(1000 + i as u64, 5000 + (i * 7919) % 150_000)
}

fn run_workload(dir: &Path, stop: &AtomicBool, done: &AtomicUsize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let tmp = dir.join(".tmp");
        std::fs::write(&tmp, workload_file(i)).expect("workload write");
        std::fs::rename(&tmp, dir.join(format!("f{i:05}"))).expect("workload rename");
        i += 1;
        done.store(i, Ordering::Relaxed);
    }
}

/// Sets its flag when dropped, a panic's unwinding included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Checks a restored workload directory: `f00000`..`fN` with no gap, each whole.
fn check_workload(dir: &Path) -> usize {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("workload dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".tmp")
        .collect();
    names.sort();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(n, &format!("f{i:05}"), "the files renamed into place form a prefix: {names:?}");
        assert_bytes_eq(&read_all(&dir.join(n)), &workload_file(i), n);
    }
    names.len()
}

fn dump(c: &Cluster, server: &str, file: &Path) {
    let f = file.display().to_string();
    let tf = c.token_file.display().to_string();
    let out = run_strata(&["dump", &f, "--server", server, "--token-file", &tf]);
    assert!(out.status.success(), "dump: {}", String::from_utf8_lossy(&out.stderr));
}

fn load(file: &Path, data: &Path, meta: Option<&str>) -> Output {
    let (f, d) = (file.display().to_string(), data.display().to_string());
    let mut args = vec!["load", &f, "--data", &d];
    if let Some(m) = meta {
        args.extend(["--meta", m]);
    }
    run_strata(&args)
}

/// The record lines of a dump (header and trailer left out), in order.
fn records(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("dump");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "a dump has a header and a trailer");
    let header: serde_json::Value = serde_json::from_str(lines[0]).expect("header JSON");
    assert_eq!(header["format"], "strata-dump");
    assert_eq!(header["version"], 1);
    let trailer: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).expect("trailer JSON");
    assert_eq!(trailer["end"], true);
    assert_eq!(trailer["records"].as_u64(), Some(lines.len() as u64 - 2));
    lines[1..lines.len() - 1].iter().map(|s| s.to_string()).collect()
}

fn one_line_error(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{what}: exit status");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    err
}

/// A dump taken while a client writes, loaded into an empty store of `target` (a SQLite file,
/// or a new PostgreSQL database of `pg`), served by a new server on the same blocks: every
/// file reads back exactly, the workload as of one point in time, and a dump of the restored
/// store is the dump loaded.
fn dump_and_restore(name: &str, opts: Opts, pg_target: Option<String>) {
    let mut c = Cluster::with_opts(name, opts);
    c.mount(&[]);
    let (want, at_snapshot) = fill(&c);
    let file = c.dir.join("meta.dump");
    let (stop, done) = (AtomicBool::new(false), AtomicUsize::new(0));
    let work = c.p(0, "work");
    std::thread::scope(|s| {
        s.spawn(|| run_workload(&work, &stop, &done));
        // A failed check below must stop the workload too, or the scope waits for it forever.
        let _stop = StopOnDrop(&stop);
        assert!(wait_until(Duration::from_secs(20), || done.load(Ordering::Relaxed) >= 5), "the workload runs");
        dump(&c, &c.addr, &file);
        let at_dump = done.load(Ordering::Relaxed);
        // fsck while the client writes: nothing it does in flight is a problem.
        let (code, out, err) = admin(&c, &["fsck"]);
        assert_eq!(code, 0, "a live store under a workload checks clean: {out}{err}");
        // Still writing after the dump: none of that may be in it.
        assert!(wait_until(Duration::from_secs(20), || done.load(Ordering::Relaxed) >= at_dump + 3), "goes on");
        stop.store(true, Ordering::Relaxed);
    });
    let written = done.load(Ordering::Relaxed);
    let lines = records(&file);
    for t in [
        "inode",
        "entry",
        "chunk",
        "xattr",
        "symlink",
        "volume",
        "usage",
        "snapshot",
        "saved_version",
        "token",
        "storage_class",
        "scope",
        "policy",
        "counter",
    ] {
        assert!(lines.iter().any(|l| l.contains(&format!("\"t\":\"{t}\""))), "the dump holds {t} records");
    }

    // A store in use is refused, in one line, and left alone.
    let out = load(&file, &c.data, c.meta_url().as_deref());
    assert!(one_line_error(&out, "load into a used store").contains("not empty"));

    // The migration: the old server stops, the new one starts on the loaded store, the
    // blocks stay where they are.
    for m in c.mounts.iter_mut() {
        m.stop();
    }
    c.mounts.clear();
    assert!(c.stop_server().is_empty(), "server stopped cleanly");
    let data2 = c.dir.join("restored");
    let meta2 = pg_target.map(|base| {
        let db = format!("strata_it_{name}_{}_{}", std::process::id(), services::unique()).replace('-', "_");
        let out = services::psql(&base, &format!("CREATE DATABASE {db}"));
        assert!(out.status.success(), "create database: {}", String::from_utf8_lossy(&out.stderr));
        format!("{base}/{db}")
    });
    // A dump cut short is refused, and the store it left marked is refused by a server.
    let text = std::fs::read_to_string(&file).expect("dump");
    let cut = c.dir.join("cut.dump");
    std::fs::write(&cut, &text[..text.len() * 2 / 3]).expect("write");
    let out = load(&cut, &data2, meta2.as_deref());
    assert!(one_line_error(&out, "load of a cut dump").contains("cut short"));
    let out = load(&file, &data2, meta2.as_deref());
    assert!(out.status.success(), "load: {}", String::from_utf8_lossy(&out.stderr));

    let addr2 = format!("127.0.0.1:{}", free_port());
    let log = c.dir.join("restored-server.log");
    let mut cmd = strata();
    cmd.args(["server", "--data"]).arg(&data2).args(["--listen", &addr2]);
    if let Some(m) = &meta2 {
        cmd.args(["--meta", m]);
    }
    let a2 = addr2.clone();
    let mut restored = Service::start_ready("restored server", &mut cmd, &log, || listening(&a2), String::new);
    c.watch_log(log);

    // Round trip: the restored store dumps to the very records loaded.
    let again = c.dir.join("again.dump");
    dump(&c, &addr2, &again);
    // (But for journaled small blocks: a server starting writes their files and drops them.)
    let durable = |l: &String| !l.contains("\"t\":\"journaled_block\"");
    let again: Vec<String> = records(&again).into_iter().filter(durable).collect();
    let loaded: Vec<&String> = lines.iter().filter(|l| durable(l)).collect();
    let differ: Vec<&str> = again
        .iter()
        .filter(|l| !loaded.contains(l))
        .chain(loaded.iter().copied().filter(|l| !again.contains(l)))
        .map(|l| &l[..l.len().min(120)])
        .collect();
    assert!(differ.is_empty(), "the restored store dumps to the same records; these differ: {differ:?}");

    let i = c.mount_via(&addr2, &[]);
    assert_same_tree(&file_tree(&c.p(i, "fixed"), true), &want, "restored tree");
    assert_eq!(getxattr(&c.p(i, "fixed/a/file1"), "user.origin").as_deref(), Some(&b"dump-test"[..]));
    let n = check_workload(&c.p(i, "work"));
    assert!(n >= 5 && n < written, "the dump holds the workload as of one moment ({n} of {written} files)");
    let snap_mp = c.dir.join("snap");
    std::fs::create_dir_all(&snap_mp).expect("mkdir");
    let (vol, tf) = (format!("{}@s1", c.volume), c.token_file.clone());
    let s = c.mount_through(&addr2, &vol, &tf, &snap_mp, &[]);
    assert_same_tree(&file_tree(&c.p(s, "fixed"), true), &at_snapshot, "restored snapshot");
    let tf = c.token_file.display().to_string();
    let cli2 = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &addr2, "--token-file", &tf]);
        let out = run_strata(&all);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(cli2(&["token", "list"]).contains("trainer"));
    assert!(cli2(&["policy", "show", "ml", "-o", "json"]).contains("max_volume_size"));
    // The restored volume goes on working, and checks clean (the blocks the workload wrote
    // after the dump are unreferenced there, but younger than fsck's grace period).
    write_synced(&c.p(i, "after-restore"), b"new").expect("write after restore");
    let out = cli2(&["fsck"]);
    assert!(out.contains("no problems found"), "the restored store checks clean: {out}");
    for m in c.mounts.iter_mut().rev() {
        m.stop();
    }
    c.mounts.clear();
    assert!(restored.stop().is_none(), "restored server stopped cleanly");
}

#[test]
fn dump_of_a_live_server_restores_into_sqlite() {
    // The source follows the environment (SQLite, or PostgreSQL with STRATA_TEST_PG_URL).
    dump_and_restore("dump-sqlite", Opts::default(), None);
}

#[test]
#[ignore = "needs PostgreSQL (STRATA_TEST_PG_URL)"]
fn sqlite_dump_loads_into_postgres() {
    let pg = services::need_pg();
    dump_and_restore("dump-pg", Opts { sqlite: true, ..Opts::default() }, Some(pg));
}

#[test]
fn dump_and_load_refuse_bad_arguments_in_one_line() {
    let c = Cluster::new("dump-args");
    let f = c.dir.join("out.dump").display().to_string();
    let out = run_strata(&["dump", &f, "--server", "127.0.0.1:1", "--token", "x"]);
    assert!(one_line_error(&out, "unreachable server").contains("cannot reach"));
    let out = run_strata(&["dump", &f, "--server", &c.addr, "--token", "not-a-token"]);
    assert!(one_line_error(&out, "bad token").contains("authentication failed"));
    let (viewer, _) = c.issue_token_in("v", "viewer", "cluster");
    let out = c.cli_as(&viewer, &["dump", &c.dir.join("v.dump").display().to_string()]);
    assert!(one_line_error(&out, "viewer token").contains("permission denied"));
    assert!(!c.dir.join("v.dump").exists() && !c.dir.join("v.dump.partial").exists(), "nothing left behind");
    let out = run_strata(&["load", "/nonexistent/dump", "--data", &c.dir.join("d").display().to_string()]);
    assert!(one_line_error(&out, "missing dump").contains("cannot open"));
    let junk = c.dir.join("junk");
    std::fs::write(&junk, "hello\n").expect("write");
    let out = run_strata(&["load", &junk.display().to_string(), "--data", &c.dir.join("d2").display().to_string()]);
    assert!(one_line_error(&out, "not a dump").contains("not a Strata dump"));
    let out = run_strata(&["load", &junk.display().to_string()]);
    assert!(one_line_error(&out, "no store").contains("--data"));
    for cmd in ["dump", "load"] {
        let out = run_strata(&[cmd, "--help"]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Usage"), "{cmd} --help");
    }
}

// ---- fsck and gc ----

/// Runs `strata ARGS` as the cluster's admin; exit code and stdout.
fn admin(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = c.cli_as(&c.token_file, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The problems of a `strata fsck --json` run, as (kind, path, fixed) and the summary.
fn fsck_json(c: &Cluster, extra: &[&str]) -> (i32, Vec<serde_json::Value>, serde_json::Value) {
    let mut args = vec!["fsck", "--json"];
    args.extend(extra);
    let (code, out, err) = admin(c, &args);
    let mut problems = Vec::new();
    let mut summary = serde_json::Value::Null;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}\n{err}"));
        match v["type"].as_str() {
            Some("problem") => problems.push(v),
            Some("summary") => summary = v,
            other => panic!("unexpected report line {other:?}: {line}"),
        }
    }
    assert!(summary.is_object(), "fsck ends with a summary: {out}\n{err}");
    (code, problems, summary)
}

/// Changes one record of the cluster's metadata store behind the server's back (SQLite or
/// PostgreSQL): `value` None deletes it.
fn poke(c: &Cluster, key: &[u8], value: Option<&[u8]>) {
    let k = key.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let v = value.map(|v| v.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let out = match c.meta_url() {
        Some(url) => {
            let sql = match &v {
                None => format!("DELETE FROM strata_kv WHERE k = '\\x{k}'::bytea"),
                Some(v) => format!("UPDATE strata_kv SET v = '\\x{v}'::bytea WHERE k = '\\x{k}'::bytea"),
            };
            run_cmd(std::process::Command::new("psql").args(["-qX", &url, "-c", &sql]))
        }
        None => {
            let db = c.data.join("meta.db").display().to_string();
            let sql = match &v {
                None => format!("DELETE FROM kv WHERE k = x'{k}'"),
                Some(v) => format!("UPDATE kv SET v = x'{v}' WHERE k = x'{k}'"),
            };
            let py = format!(
                "import sqlite3; d = sqlite3.connect({db:?}, timeout=30); n = d.execute({sql:?}).rowcount; d.commit(); \
                 assert n == 1, n"
            );
            run_cmd(std::process::Command::new("python3").args(["-c", &py]))
        }
    };
    assert!(out.status.success(), "poke {k}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The block files of a file, in order, as `strata info` names them.
fn blocks_of(c: &Cluster, rel: &str) -> Vec<std::path::PathBuf> {
    let info: serde_json::Value =
        serde_json::from_str(&c.cli(&["info", &format!("{}:/{rel}", c.volume), "--json"])).expect("info JSON");
    let files: Vec<std::path::PathBuf> = info["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .flat_map(|c| c["slices"].as_array().expect("slices"))
        .flat_map(|s| s["blocks"].as_array().expect("blocks"))
        .map(|b| std::path::PathBuf::from(b["file"].as_str().expect("a block file")))
        .collect();
    assert!(!files.is_empty(), "{rel} has blocks: {info}");
    files
}

fn set_age(path: &Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(path).expect("open block");
    f.set_modified(std::time::SystemTime::now() - age).expect("set mtime");
}

fn key_of(tag: u8, n: u64) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

#[test]
fn fsck_reports_each_corruption_and_repairs_what_it_claims() {
    use std::os::unix::fs::MetadataExt;
    // In the server's directory whatever the environment says: the corruptions are made on
    // block files.
    let opts = Opts { volume_args: vec!["--class".into(), "default".into()], ..Opts::default() };
    let mut c = Cluster::with_opts("fsck", opts);
    c.mount(&[]);
    let vol = c.volume_id(&c.volume);
    std::fs::create_dir_all(c.p(0, "a/b")).expect("mkdir");
    std::fs::write(c.p(0, "a/lost-block"), random_bytes(1, 5_000_000)).expect("write");
    std::fs::write(c.p(0, "a/b/short-block"), random_bytes(2, 100_003)).expect("write");
    std::fs::write(c.p(0, "a/no-inode"), random_bytes(3, 70_001)).expect("write");
    std::fs::write(c.p(0, "a/fine"), random_bytes(4, 4_321)).expect("write");
    std::fs::hard_link(c.p(0, "a/fine"), c.p(0, "a/b/fine-link")).expect("link");
    // Blocks only a snapshot still needs are not orphans.
    std::fs::write(c.p(0, "a/snapshotted"), random_bytes(5, 12_345)).expect("write");
    c.cli(&["snapshot", "create", &c.volume, "keep"]);
    std::fs::remove_file(c.p(0, "a/snapshotted")).expect("unlink");

    // Healthy: clean, and exit 0.
    let (code, out, err) = admin(&c, &["fsck"]);
    assert_eq!(code, 0, "a healthy store is clean: {out}{err}");
    assert!(out.contains("no problems found"), "{out}");
    let (code, out, _) = admin(&c, &["gc", "--grace", "0s"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 leaked blocks"), "{out}");
    let before = c.dir.join("before.dump");
    dump(&c, &c.addr, &before);

    // The corruptions.
    let lost = blocks_of(&c, "a/lost-block").pop().expect("a block");
    std::fs::remove_file(&lost).expect("delete a block");
    let short = blocks_of(&c, "a/b/short-block").remove(0);
    std::fs::File::options().write(true).open(&short).and_then(|f| f.set_len(5_000)).expect("truncate a block");
    // Blocks of slices nobody ever committed, at the keys a client would have used.
    let orphan_key = |id: u64| format!("v{vol}/chunks/{}/{}/{id}_0_100", id / 1_000_000, id / 1000);
    let orphan_at = |id: u64| {
        let p = c.data.join("blocks").join(orphan_key(id));
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        p
    };
    let old_orphan = orphan_at(7_000_001);
    std::fs::write(&old_orphan, [7u8; 100]).expect("orphan");
    set_age(&old_orphan, Duration::from_secs(3 * 3600));
    let young_orphan = orphan_at(7_000_002);
    std::fs::write(&young_orphan, [8u8; 100]).expect("orphan");
    let usage_key = {
        let mut k = vec![b'U'];
        k.extend_from_slice(&vol.to_be_bytes());
        k
    };
    poke(&c, &usage_key, Some(&[0x07, 0x07]));
    let lost_ino = std::fs::metadata(c.p(0, "a/no-inode")).expect("stat").ino();
    poke(&c, &key_of(b'A', lost_ino), None);
    // A hard link's entry removed behind the server's back: its file's link count is wrong.
    let fine_ino = std::fs::metadata(c.p(0, "a/fine")).expect("stat").ino();
    let mut link_entry = key_of(b'D', std::fs::metadata(c.p(0, "a/b")).expect("stat").ino());
    link_entry.extend_from_slice(b"fine-link");
    poke(&c, &link_entry, None);

    let (code, problems, summary) = fsck_json(&c, &[]);
    assert_eq!(code, 1, "problems found: exit 1");
    let seen: Vec<(String, String)> = problems
        .iter()
        .map(|p| (p["kind"].as_str().unwrap_or("").to_string(), p["path"].as_str().unwrap_or("").to_string()))
        .collect();
    let v = &c.volume;
    let want = [
        ("missing_block".to_string(), format!("{v}:/a/lost-block")),
        ("bad_block_length".to_string(), format!("{v}:/a/b/short-block")),
        ("orphan_block".to_string(), format!("file://{} {}", c.data.join("blocks").display(), orphan_key(7_000_001))),
        ("usage".to_string(), format!("{v}:/")),
        ("dangling_entry".to_string(), format!("{v}:/a/no-inode")),
        ("link_count".to_string(), format!("{v}:/a/fine")),
    ];
    let mut sorted = seen.clone();
    sorted.sort();
    let mut want_sorted = want.to_vec();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted, "each corruption reported once, with its path: {problems:#?}");
    assert_eq!(summary["young_blocks"], 1, "the young orphan is left alone: {summary}");

    let (code, problems, summary) = fsck_json(&c, &["--repair"]);
    assert_eq!(code, 1, "the missing and truncated blocks cannot be repaired");
    for p in &problems {
        let fixable = p["fix"].is_string();
        assert_eq!(p["fixed"].as_bool(), fixable.then_some(true), "repaired exactly what it can: {p}");
    }
    assert_eq!(summary["fixed"], 4, "{summary}");
    assert!(!old_orphan.exists() && young_orphan.exists(), "the old orphan went, the young one stayed");
    assert!(short.exists(), "a truncated block is left for a person to look at");

    // Nothing else changed: the store dumps to what it held before, but for the corrupted and
    // repaired records.
    let after = c.dir.join("after.dump");
    dump(&c, &c.addr, &after);
    let durable = |l: &String| !l.contains("\"t\":\"journaled_block\"");
    let (b, a): (Vec<String>, Vec<String>) =
        (records(&before).into_iter().filter(durable).collect(), records(&after).into_iter().filter(durable).collect());
    let hex = |k: &[u8]| format!("\"k\":\"{}\"", k.iter().map(|x| format!("{x:02x}")).collect::<String>());
    let (rebuilt, relinked, removed) = (hex(&key_of(b'A', lost_ino)), hex(&key_of(b'A', fine_ino)), hex(&link_entry));
    let differ: Vec<&String> = b.iter().filter(|l| !a.contains(l)).chain(a.iter().filter(|l| !b.contains(l))).collect();
    for key in [&rebuilt, &relinked] {
        assert_eq!(differ.iter().filter(|l| l.contains(key.as_str())).count(), 2, "{key} changed: {differ:?}");
    }
    assert_eq!(differ.iter().filter(|l| l.contains(removed.as_str())).count(), 1, "the removed entry: {differ:?}");
    assert_eq!(differ.len(), 5, "nothing else changed: {differ:?}");
    // (Once the mount's attribute cache, 1 s, lets it see the repair.)
    let relinked =
        wait_until(Duration::from_secs(5), || std::fs::metadata(c.p(0, "a/fine")).is_ok_and(|m| m.nlink() == 1));
    assert!(relinked, "the link count the entries give");
    assert_bytes_eq(&read_all(&c.p(0, "a/no-inode")), &random_bytes(3, 70_001), "the rebuilt file's data");

    // Only what cannot be repaired is left.
    let (code, problems, _) = fsck_json(&c, &[]);
    assert_eq!(code, 1);
    let mut kinds: Vec<&str> = problems.iter().map(|p| p["kind"].as_str().unwrap_or("")).collect();
    kinds.sort();
    assert_eq!(kinds, ["bad_block_length", "missing_block"]);

    // gc: the young orphan is a leaked block once --grace allows it; --delete deletes it.
    let (code, out, _) = admin(&c, &["gc", "--grace", "0s"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("leaked_block") && out.contains(&orphan_key(7_000_002)) && out.contains("1 leaked blocks"),
        "{out}"
    );
    assert!(young_orphan.exists(), "a dry run deletes nothing");
    let (code, out, _) = admin(&c, &["gc", "--grace", "0s", "--delete"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deleted 1 leaked blocks"), "{out}");
    assert!(!young_orphan.exists());

    // Pending slices: data a truncation freed waits while a client holds its file open.
    std::fs::write(c.p(0, "a/late"), random_bytes(9, 54_321)).expect("write");
    let held = std::fs::File::open(c.p(0, "a/late")).expect("open");
    std::fs::write(c.p(0, "a/late"), b"new").expect("truncate and write");
    let (code, out, _) = admin(&c, &["gc", "--delete"]);
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = admin(&c, &["gc"]);
    assert!(out.contains("1 slices (54321 bytes) pending deletion"), "held open, not collected: {out}");
    drop(held);
    let collected = wait_until(Duration::from_secs(20), || {
        admin(&c, &["gc", "--delete"]);
        admin(&c, &["gc"]).1.contains("0 slices (0 bytes) pending")
    });
    assert!(collected, "collected once closed");
    let (code, out, err) = admin(&c, &["fsck", "--grace", "0s"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("orphan_block"), "nothing left over: {out}");
}

#[test]
fn fsck_and_gc_refuse_bad_arguments_in_one_line() {
    let c = Cluster::new("fsck-args");
    for cmd in ["fsck", "gc"] {
        let out = run_strata(&[cmd, "--server", "127.0.0.1:1", "--token", "x"]);
        assert!(one_line_error(&out, "unreachable").contains("cannot reach"));
        let out = run_strata(&[cmd, "--server", &c.addr, "--token", "x", "--grace", "soon"]);
        assert_eq!(out.status.code(), Some(2), "clap's usage error");
        let (viewer, _) = c.issue_token_in(&format!("v-{cmd}"), "viewer", "cluster");
        let out = c.cli_as(&viewer, &[cmd]);
        assert!(one_line_error(&out, "viewer").contains("permission denied"));
        let out = run_strata(&[cmd, "--help"]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--grace"));
    }
}

// ---- info and summary ----

#[test]
fn info_and_summary_show_what_a_tree_is_made_of() {
    use std::os::unix::fs::MetadataExt;
    let mut c = Cluster::new("info");
    c.mount(&[]);
    std::fs::create_dir_all(c.p(0, "d/e")).expect("mkdir");
    std::fs::write(c.p(0, "d/big"), random_bytes(1, 9_000_000)).expect("write");
    std::fs::write(c.p(0, "d/e/small"), b"hello").expect("write");
    std::os::unix::fs::symlink("big", c.p(0, "d/link")).expect("symlink");
    let v = c.volume.clone();

    // By a path in the mount and by VOLUME:/path: the same inode.
    let big = c.p(0, "d/big").display().to_string();
    for path in [big.as_str(), &format!("{v}:/d/big")] {
        let info: serde_json::Value = serde_json::from_str(&c.cli(&["info", path, "--json"])).expect("JSON");
        assert_eq!(info["ino"].as_u64(), Some(std::fs::metadata(c.p(0, "d/big")).expect("stat").ino()));
        assert_eq!(info["kind"], "file");
        assert_eq!(info["size"], 9_000_000);
        assert_eq!(info["path"], format!("{v}:/d/big"));
        let blocks: Vec<&serde_json::Value> = info["chunks"]
            .as_array()
            .expect("chunks")
            .iter()
            .flat_map(|c| c["slices"].as_array().expect("slices"))
            .flat_map(|s| s["blocks"].as_array().expect("blocks"))
            .collect();
        let total: u64 = blocks.iter().map(|b| b["len"].as_u64().expect("len")).sum();
        assert!(total >= 9_000_000, "the blocks hold the file: {total}");
        for b in &blocks {
            assert_eq!(b["state"], "ok", "{b}");
            if !c.s3 {
                let file = b["file"].as_str().expect("block file");
                assert_eq!(std::fs::metadata(file).expect("block file").len(), b["len"].as_u64().expect("len"));
            }
        }
    }
    let text = c.cli(&["info", &format!("{v}:/d/link")]);
    assert!(text.contains("symlink") && text.contains("target: big"), "{text}");
    let text = c.cli(&["info", &format!("{v}:/d")]);
    assert!(text.contains("directory") && text.contains("3 entries"), "{text}");

    let sum: serde_json::Value =
        serde_json::from_str(&c.cli(&["summary", &format!("{v}:/d"), "--depth", "2", "--json"])).expect("JSON");
    assert_eq!(sum["size"], 9_000_000 + 5 + 3);
    assert_eq!(sum["files"], 3);
    assert_eq!(sum["dirs"], 2);
    let names: Vec<&str> =
        sum["children"].as_array().expect("children").iter().map(|c| c["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["big", "e", "link"], "largest first");
    assert_eq!(sum["children"][1]["children"][0]["name"], "small");
    let text = c.cli(&["summary", c.mp(0).to_str().expect("utf-8"), "--depth", "0"]);
    assert!(text.contains(&format!("{v}:/")) && text.contains("8.6 MiB"), "{text}");

    // Bad paths and tokens: one line, exit 1.
    c.cli(&["scope", "create", "elsewhere"]);
    let (outsider, _) = c.issue_token_in("outsider", "viewer", "elsewhere");
    for (args, needle) in [
        (vec!["info".to_string(), format!("{v}:/nope")], "no such file"),
        (vec!["info".to_string(), "nope".to_string()], "not VOLUME:/path"),
        (vec!["summary".to_string(), "no-such-volume:/".to_string()], "not found"),
        (vec!["info".to_string(), format!("{v}:/d/big/x")], "not a directory"),
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = c.cli_as(&c.token_file, &a);
        assert!(one_line_error(&out, &args.join(" ")).contains(needle), "{args:?}");
    }
    let out = c.cli_as(&outsider, &["info", &format!("{v}:/d")]);
    assert!(one_line_error(&out, "outsider").contains("not found"), "a token of another scope sees nothing");
    let out = run_strata(&["summary", &format!("{v}:/"), "--server", "127.0.0.1:1", "--token", "x"]);
    assert!(one_line_error(&out, "unreachable").contains("cannot reach"));
}
