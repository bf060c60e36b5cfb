//! Snapshots, clones and data volumes through the control plane, end to end: the `strata`
//! command and the REST API against a real server, with data written through a FUSE mount.
//! Snapshot space after an overwrite, clones (data equal, independent afterwards, a class in
//! another store and a quota too small refused), and data volumes across scopes (the owner
//! publishes and shares; a shared scope reads but never changes; a third scope sees nothing).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const MIB: usize = 1 << 20;

/// One JSON call on a fresh connection: the status and the body.
fn call(addr: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n");
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = TcpStream::connect(addr).expect("connect to the REST API");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(req.as_bytes()).expect("send request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "unexpected chunked answer");
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

fn token_of(tf: &Path) -> String {
    std::fs::read_to_string(tf).expect("token file").trim().to_string()
}

/// `strata ARGS -o json` as the holder of `tf`, parsed.
#[track_caller]
fn json_as(c: &Cluster, tf: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = c.cli_ok_as(tf, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("strata {args:?} -o json: {e}: {out}"))
}

/// A failing command: exit code 1, one `strata:` line with every phrase.
#[track_caller]
fn cli_fails(c: &Cluster, tf: &Path, args: &[&str], phrases: &[&str]) {
    let out = c.cli_as(tf, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "strata {args:?} should fail: {err}");
    assert!(err.starts_with("strata: ") && err.trim().lines().count() == 1, "one clear line: {err}");
    for p in phrases {
        assert!(err.contains(p), "strata {args:?}: stderr lacks {p:?}: {err}");
    }
}

fn new_mount_point(c: &Cluster, name: &str) -> PathBuf {
    let p = c.dir.join(name);
    std::fs::create_dir_all(&p).expect("mount point");
    p
}

/// Snapshots (space after an overwrite through a mount, who may take them) and clones through
/// the CLI and REST (same data, independent afterwards, refusals with clear messages).
#[test]
fn snapshots_and_clones() {
    let mut c = Cluster::new("snaps");
    let admin = c.token_file.clone();
    let vol = c.volume.clone();
    let m = c.mount(&["--attr-ttl", "0"]);
    let old = random_bytes(1, 8 * MIB);
    write_synced(&c.p(m, "a"), &old).expect("write a");
    write_synced(&c.p(m, "b"), b"small").expect("write b");

    let s = json_as(&c, &admin, &["snapshot", "create", &vol, "s1"]);
    assert_eq!(s["name"], "s1");
    assert_eq!(s["volume"], vol.as_str());
    let bytes = s["bytes"].as_u64().expect("bytes");
    assert!(bytes >= 8 * MIB as u64, "snapshot size {s}");
    assert_eq!((s["held_bytes"].as_u64(), s["shared_bytes"].as_u64()), (Some(0), Some(bytes)), "{s}");
    assert!(s["created"].as_str().is_some_and(|t| t.ends_with('Z')), "{s}");
    cli_fails(&c, &admin, &["snapshot", "create", &vol, "s1"], &["already has a snapshot named s1"]);
    cli_fails(&c, &admin, &["snapshot", "create", &vol, "bad/name"], &["name"]);

    // Overwrite a: its old blocks are now held by s1 alone; b stays shared.
    let new = random_bytes(2, 8 * MIB);
    write_synced(&c.p(m, "a"), &new).expect("overwrite a");
    let d = json_as(&c, &admin, &["snapshot", "describe", &vol, "s1"]);
    let held = d["held_bytes"].as_u64().expect("held");
    assert!(held >= 8 * MIB as u64 && held < bytes, "held after the overwrite: {d}");
    assert_eq!(d["shared_bytes"].as_u64(), Some(bytes - held), "{d}");
    let list = json_as(&c, &admin, &["snapshot", "list", &vol]);
    assert_eq!(list.as_array().map(|l| l.len()), Some(1), "{list}");
    assert_eq!(list[0]["held_bytes"].as_u64(), Some(held));
    let table = c.cli(&["snapshot", "list", &vol]);
    assert!(table.starts_with("NAME") && table.contains("s1") && table.contains("HELD"), "{table}");

    // Viewers see snapshots and take none; other scopes do not see the volume at all.
    c.cli(&["scope", "create", "ml"]);
    let (viewer, _) = c.issue_token_in("viewer", "viewer", "cluster");
    let (other, _) = c.issue_token_in("other", "admin", "ml");
    assert_eq!(json_as(&c, &viewer, &["snapshot", "list", &vol])[0]["name"], "s1");
    cli_fails(&c, &viewer, &["snapshot", "create", &vol, "s2"], &["permission denied"]);
    cli_fails(&c, &viewer, &["snapshot", "delete", &vol, "s1"], &["permission denied"]);
    cli_fails(&c, &other, &["snapshot", "list", &vol], &["not found"]);
    cli_fails(&c, &other, &["snapshot", "describe", &vol, "s1"], &["not found"]);
    cli_fails(&c, &admin, &["snapshot", "describe", &vol, "nope"], &["not found"]);

    // Clone through the CLI from the snapshot: the data as it was; capacity from the source.
    let cl = json_as(&c, &admin, &["volume", "create", "clone1", "--from", &format!("{vol}@s1")]);
    assert_eq!(cl["used_bytes"].as_u64(), Some(bytes), "{cl}");
    let mp = new_mount_point(&c, "clone1");
    let cm = c.mount_as("clone1", &admin, &mp, &["--attr-ttl", "0"]);
    // The tree as the snapshot saw it (the bytes themselves: `clone_data_is_the_sources`).
    assert_eq!(std::fs::metadata(c.p(cm, "a")).expect("clone1/a").len(), old.len() as u64);
    assert_eq!(std::fs::metadata(c.p(cm, "b")).expect("clone1/b").len(), 5);
    // Independent afterwards, both ways.
    write_synced(&c.p(cm, "b"), b"clone's own").expect("write the clone");
    write_synced(&c.p(m, "c"), b"source's own").expect("write the source");
    assert_eq!(std::fs::read(c.p(cm, "b")).expect("clone b"), b"clone's own");
    assert_eq!(std::fs::read(c.p(m, "b")).expect("source b"), b"small");
    assert!(!c.p(cm, "c").exists(), "the clone does not see the source's new file");

    // Clone through REST from the volume as it is now.
    let tok = c.token();
    let (st, v) = call(&c.addr, "POST", "/v1/volumes", &tok, Some(json!({"name": "clone2", "from": vol})));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["used_bytes"].as_u64(), json_as(&c, &admin, &["volume", "describe", &vol])["used_bytes"].as_u64());
    let mp2 = new_mount_point(&c, "clone2");
    let cm2 = c.mount_as("clone2", &admin, &mp2, &["--attr-ttl", "0"]);
    let mut names: Vec<String> = std::fs::read_dir(c.mp(cm2))
        .expect("list clone2")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "clone2 is the volume as it is now");

    // Refusals: a class in another store, a quota too small, a source that is not there.
    let elsewhere = c.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("dir");
    c.cli(&["storageclass", "create", "elsewhere", "--backend", "local", "--path", &elsewhere.to_string_lossy()]);
    let (st, v) =
        call(&c.addr, "POST", "/v1/volumes", &tok, Some(json!({"name": "clone3", "from": vol, "class": "elsewhere"})));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("shares its source's blocks")), "{v}");
    cli_fails(
        &c,
        &admin,
        &["volume", "create", "clone3", "--from", &format!("{vol}@s1"), "--capacity", "1M"],
        &["cannot clone", "quota cannot hold", "--capacity"],
    );
    cli_fails(&c, &admin, &["volume", "describe", "clone3"], &["not found"]);
    cli_fails(&c, &admin, &["volume", "create", "clone3", "--from", &format!("{vol}@nope")], &["not found"]);
    cli_fails(&c, &other, &["volume", "create", "clone3", "--from", &vol, "--scope", "ml"], &["not found"]);
    let (st, v) = call(&c.addr, "POST", "/v1/volumes", &tok, Some(json!({"name": "clone3", "from": "a@"})));
    assert_eq!(st, 400, "{v}");

    // Deleting the snapshot frees what it held; the clone made from it still reads its data.
    let out = c.cli(&["snapshot", "delete", &vol, "s1"]);
    assert!(out.contains("deleted snapshot") && out.contains("freed"), "{out}");
    assert_eq!(json_as(&c, &admin, &["snapshot", "list", &vol]), json!([]));
    assert_eq!(std::fs::metadata(c.p(cm, "a")).expect("clone1/a").len(), old.len() as u64);
}

/// A clone reads its source's bytes (as of the snapshot), also after the snapshot is deleted,
/// and its own writes never reach the source.
#[test]
#[ignore = "needs the clone data path: mounts reading blocks kept under a clone's origins (strata-vfs/strata-proto, merged separately)"]
fn clone_data_is_the_sources() {
    let mut c = Cluster::new("clonedata");
    let admin = c.token_file.clone();
    let vol = c.volume.clone();
    let m = c.mount(&["--attr-ttl", "0"]);
    let old = random_bytes(5, 6 * MIB);
    write_synced(&c.p(m, "a"), &old).expect("write a");
    c.cli(&["snapshot", "create", &vol, "s1"]);
    let new = random_bytes(6, 6 * MIB);
    write_synced(&c.p(m, "a"), &new).expect("overwrite a");
    c.cli(&["volume", "create", "clone1", "--from", &format!("{vol}@s1")]);
    c.cli(&["volume", "create", "clone2", "--from", &vol]);
    let (mp1, mp2) = (new_mount_point(&c, "clone1"), new_mount_point(&c, "clone2"));
    let c1 = c.mount_as("clone1", &admin, &mp1, &["--attr-ttl", "0"]);
    let c2 = c.mount_as("clone2", &admin, &mp2, &["--attr-ttl", "0"]);
    assert_bytes_eq(&read_all(&c.p(c1, "a")), &old, "clone1/a is the snapshot's");
    assert_bytes_eq(&read_all(&c.p(c2, "a")), &new, "clone2/a is the volume's now");
    write_synced_at(&c.p(c1, "a"), 0, b"clone").expect("write the clone");
    assert_bytes_eq(&read_all(&c.p(m, "a")), &new, "the source after the clone wrote");
    c.cli(&["snapshot", "delete", &vol, "s1"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_bytes_eq(&read_all(&c.p(c1, "a"))[5..], &old[5..], "clone1/a after the snapshot went");
}

/// Data volumes across scopes: project A publishes one and shares it with project B; B lists,
/// describes and reads it but may not update, delete or re-share it (403); project C sees
/// nothing (404); versions carry sizes and dates; unsharing ends B's view.
#[test]
fn datavolumes_across_scopes() {
    let mut c = Cluster::new("dvs");
    let admin = c.token_file.clone();
    for s in ["ml", "ml/a", "ml/b", "ops", "ops/c"] {
        c.cli(&["scope", "create", s]);
    }
    let (admin_a, _) = c.issue_token_in("admin-a", "admin", "ml/a");
    let (editor_a, _) = c.issue_token_in("editor-a", "editor", "ml/a");
    let (admin_b, _) = c.issue_token_in("admin-b", "admin", "ml/b");
    let (viewer_b, _) = c.issue_token_in("viewer-b", "viewer", "ml/b");
    let (admin_c, _) = c.issue_token_in("admin-c", "admin", "ops/c");
    c.cli_ok_as(&editor_a, &["volume", "create", "src-a"]);
    c.cli_ok_as(&admin_b, &["volume", "create", "src-b"]);
    let mp = new_mount_point(&c, "src-a");
    let m = c.mount_as("src-a", &editor_a, &mp, &["--attr-ttl", "0"]);
    write_synced(&c.p(m, "one"), &random_bytes(3, MIB)).expect("write one");

    // Project A publishes.
    let d =
        json_as(&c, &editor_a, &["datavolume", "create", "ds", "--from", "src-a", "--description", "the training set"]);
    assert_eq!(
        (d["name"].as_str(), d["scope"].as_str(), d["origin"].as_str()),
        (Some("ds"), Some("ml/a"), Some("owned"))
    );
    assert_eq!((d["source_volume"].as_str(), d["latest"].as_u64()), (Some("src-a"), Some(1)), "{d}");
    let v1 = d["versions"][0]["bytes"].as_u64().expect("version bytes");
    assert!(v1 >= MIB as u64, "{d}");
    cli_fails(&c, &editor_a, &["datavolume", "create", "ds", "--from", "src-a"], &["exists"]);
    cli_fails(&c, &editor_a, &["datavolume", "create", "ds2", "--from", "src-b"], &["not found"]);
    cli_fails(
        &c,
        &editor_a,
        &["datavolume", "create", "ds2", "--from", "src-a", "--scope", "ml/b"],
        &["permission denied"],
    );
    cli_fails(
        &c,
        &admin,
        &["datavolume", "create", "ds2", "--from", "src-a", "--scope", "ops"],
        &["outside scope ops"],
    );
    // Its versions are snapshots of the source, deleted only through the data volume.
    let snaps = json_as(&c, &editor_a, &["snapshot", "list", "src-a"]);
    assert_eq!(snaps[0]["owner"], "datavolume:ds", "{snaps}");
    let sname = snaps[0]["name"].as_str().expect("snapshot name").to_string();
    cli_fails(&c, &editor_a, &["snapshot", "delete", "src-a", &sname], &["datavolume:ds"]);

    // Sharing is the owning scope's admins' alone.
    cli_fails(&c, &editor_a, &["datavolume", "share", "ds", "ml/b"], &["permission denied"]);
    let d = json_as(&c, &admin_a, &["datavolume", "share", "ds", "ml/b"]);
    assert_eq!(d["shares"], json!(["ml/b"]));
    cli_fails(&c, &admin_a, &["datavolume", "share", "ds", "no/such"], &["not found"]);
    cli_fails(&c, &admin_a, &["datavolume", "share", "ds", "a/b/c"], &["too deep"]);

    // A new version from the volume as it is now.
    write_synced(&c.p(m, "two"), &random_bytes(4, 2 * MIB)).expect("write two");
    let d = json_as(&c, &editor_a, &["datavolume", "update", "ds"]);
    assert_eq!(d["latest"].as_u64(), Some(2), "{d}");
    let versions = d["versions"].as_array().expect("versions");
    assert_eq!(versions.iter().map(|v| v["number"].as_u64().unwrap_or(0)).collect::<Vec<_>>(), vec![1, 2]);
    assert!(versions[1]["bytes"].as_u64().unwrap_or(0) >= v1 + 2 * MIB as u64, "{d}");
    assert!(versions.iter().all(|v| v["created"].as_str().is_some_and(|t| t.ends_with('Z'))), "{d}");
    let table = c.cli_ok_as(&editor_a, &["datavolume", "describe", "ds"]);
    assert!(table.contains("VERSION") && table.contains("the training set") && table.contains("ml/b"), "{table}");

    // Project B, shared: lists and describes it, changes nothing.
    for tf in [&admin_b, &viewer_b] {
        let l = json_as(&c, tf, &["datavolume", "list"]);
        assert_eq!(l.as_array().map(|l| l.len()), Some(1), "{l}");
        assert_eq!((l[0]["name"].as_str(), l[0]["origin"].as_str()), (Some("ds"), Some("shared")), "{l}");
        let d = json_as(&c, tf, &["datavolume", "describe", "ds"]);
        assert_eq!((d["versions"].as_array().map(|v| v.len()), d["shares"].clone()), (Some(2), json!(["ml/b"])));
    }
    let b = token_of(&admin_b);
    for (method, path) in [
        ("POST", "/v1/datavolumes/ds/versions"),
        ("DELETE", "/v1/datavolumes/ds"),
        ("DELETE", "/v1/datavolumes/ds/versions/1"),
        ("PUT", "/v1/datavolumes/ds/shares/ops/c"),
        ("DELETE", "/v1/datavolumes/ds/shares/ml%2Fb"),
    ] {
        let (st, v) = call(&c.addr, method, path, &b, None);
        assert_eq!(st, 403, "{method} {path} by a shared scope: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("owned by scope ml/a")), "{v}");
    }
    cli_fails(&c, &admin_b, &["datavolume", "update", "ds"], &["permission denied", "only read"]);
    cli_fails(&c, &admin_b, &["datavolume", "delete", "ds"], &["permission denied"]);
    cli_fails(&c, &admin_b, &["datavolume", "share", "ds", "ops/c"], &["permission denied"]);

    // Project C: not shared, not acknowledged.
    assert_eq!(json_as(&c, &admin_c, &["datavolume", "list"]), json!([]));
    cli_fails(&c, &admin_c, &["datavolume", "describe", "ds"], &["not found"]);
    let cc = token_of(&admin_c);
    for (method, path) in [
        ("GET", "/v1/datavolumes/ds"),
        ("POST", "/v1/datavolumes/ds/versions"),
        ("DELETE", "/v1/datavolumes/ds"),
        ("PUT", "/v1/datavolumes/ds/shares/ops/c"),
    ] {
        let (st, v) = call(&c.addr, method, path, &cc, None);
        assert_eq!(st, 404, "{method} {path} by an unrelated scope: {v}");
    }
    // The cluster admin sees it as owned (its scope is above the owner).
    assert_eq!(json_as(&c, &admin, &["datavolume", "list"])[0]["origin"], "owned");

    // Unsharing ends B's view at once.
    let out = c.cli_ok_as(&admin_a, &["datavolume", "unshare", "ds", "ml/b"]);
    assert!(out.contains("no longer shared"), "{out}");
    assert_eq!(json_as(&c, &admin_b, &["datavolume", "list"]), json!([]));
    cli_fails(&c, &admin_b, &["datavolume", "describe", "ds"], &["not found"]);
    cli_fails(&c, &admin_a, &["datavolume", "unshare", "ds", "ml/b"], &["not shared"]);

    // Versions and the data volume go; they outlive nothing they should not.
    let d = json_as(&c, &editor_a, &["datavolume", "delete", "ds", "--version", "1"]);
    assert_eq!(d["versions"].as_array().map(|v| v.len()), Some(1), "{d}");
    cli_fails(&c, &editor_a, &["datavolume", "delete", "ds", "--version", "1"], &["no version 1"]);
    let (st, v) = call(&c.addr, "DELETE", "/v1/datavolumes/ds/versions/x", &token_of(&editor_a), None);
    assert_eq!(st, 400, "{v}");
    let out = c.cli_ok_as(&editor_a, &["datavolume", "delete", "ds"]);
    assert!(out.contains("deleted data volume ds"), "{out}");
    assert_eq!(json_as(&c, &editor_a, &["datavolume", "list"]), json!([]));
    assert_eq!(json_as(&c, &editor_a, &["snapshot", "list", "src-a"]), json!([]));
}
