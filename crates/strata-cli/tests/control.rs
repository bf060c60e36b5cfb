//! The control plane end to end: the README's new-user walkthrough with the CLI, policy
//! inheritance and enforcement over REST, the authorization matrix (role × scope × operation,
//! mounts included), quota exactness under two writing clients, revoked and expired tokens on a
//! live mount, and bad REST input getting a 4xx with a message.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

// ---- a raw HTTP/1.1 client: the tests also send what no well-behaved client would ----

/// One HTTP exchange on a fresh connection: the status and the body.
fn http_raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the REST API");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(request).expect("send request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    (status, if chunked { dechunk(body) } else { body.to_string() })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = s.split_once("\r\n") else { return out };
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// A JSON call with a bearer token (or none).
fn call(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let (status, text) = http_raw(addr, req.as_bytes());
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// A caller of the REST API with one token.
struct Rest {
    addr: String,
    token: String,
}

impl Rest {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.addr, method, path, Some(&self.token), body.as_ref())
    }

    /// A call that must succeed; its body.
    #[track_caller]
    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (st, v) = self.call(method, path, body);
        assert!((200..300).contains(&st), "{method} {path}: {st} {v}");
        v
    }

    /// Issues a token of `role` in `scope`; the new caller.
    fn issue(&self, name: &str, role: &str, scope: &str, ttl: Option<u64>) -> (Rest, String) {
        let mut body = json!({"name": name, "role": role, "scope": scope});
        if let Some(t) = ttl {
            body["ttl_seconds"] = json!(t);
        }
        let v = self.ok("POST", "/v1/tokens", Some(body));
        let id = v["id"].as_str().expect("token id").to_string();
        (Rest { addr: self.addr.clone(), token: v["token"].as_str().expect("secret").to_string() }, id)
    }

    /// Writes this caller's token to a file in `dir` (for `--token-file`).
    fn token_file(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.token"));
        std::fs::write(&p, &self.token).expect("write token file");
        p
    }
}

fn admin(c: &Cluster) -> Rest {
    Rest { addr: c.addr.clone(), token: c.token() }
}

/// Asserts an error answer: the status, a JSON error with a message, and these phrases in it.
#[track_caller]
fn assert_err(got: (u16, Value), status: u16, phrases: &[&str], what: &str) -> Value {
    let (st, v) = got;
    assert_eq!(st, status, "{what}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{what}: no error message in {v}"));
    assert!(!msg.is_empty(), "{what}: empty message");
    for p in phrases {
        assert!(msg.contains(p), "{what}: message lacks {p:?}: {msg}");
    }
    v
}

/// Classes `fast` and `cheap`; department `ml` with projects `vision` and `nlp`.
fn org(a: &Rest) {
    for (name, comp) in [("fast", "lz4"), ("cheap", "zstd")] {
        a.ok("POST", "/v1/storageclasses", Some(json!({"name": name, "compression": comp})));
    }
    for s in ["ml", "ml/vision", "ml/nlp"] {
        a.ok("POST", "/v1/scopes", Some(json!({"path": s})));
    }
}

fn volume(a: &Rest, name: &str, scope: &str, class: &str, capacity: u64) -> Value {
    a.ok("POST", "/v1/volumes", Some(json!({"name": name, "scope": scope, "class": class, "capacity": capacity})))
}

/// A failing command: exit code 1 and one `strata:` line with every phrase.
#[track_caller]
fn cli_fails(c: &Cluster, token_file: &Path, args: &[&str], phrases: &[&str]) {
    let out = c.cli_as(token_file, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "strata {args:?} should fail: {err}");
    assert!(err.starts_with("strata: ") && err.trim().lines().count() == 1, "one clear line: {err}");
    for p in phrases {
        assert!(err.contains(p), "strata {args:?}: stderr lacks {p:?}: {err}");
    }
}

// ---- the walkthrough ----

/// The README's walkthrough: list classes, make a project token, create an allowed volume and
/// see a forbidden one refused with the reason, mount with the project token, fill it to
/// EDQUOT, expand it online and go on, and fail to touch another project's volume.
#[test]
fn new_user_walkthrough() {
    let mut c = Cluster::new("walk");
    let admin_tf = c.token_file.clone();
    let out = c.cli_ok_as(&admin_tf, &["storageclass", "list"]);
    assert!(out.contains("default") && out.contains("NAME"), "class table: {out}");
    c.cli_ok_as(&admin_tf, &["storageclass", "create", "fast", "--description", "NVMe", "--compression", "lz4"]);
    for s in ["ml", "ml/vision", "ml/nlp"] {
        c.cli_ok_as(&admin_tf, &["scope", "create", s]);
    }
    c.cli_ok_as(&admin_tf, &["policy", "set", "ml", "--allowed-classes", "fast", "--max-volume-size", "1G"]);
    let shown = c.cli_ok_as(&admin_tf, &["policy", "show", "ml/vision"]);
    assert!(shown.contains("allowed_classes") && shown.contains("fast") && shown.contains("ml"), "{shown}");

    let vis_tf = c.dir.join("vision.token");
    let vis = vis_tf.to_string_lossy().into_owned();
    let tok: Value = serde_json::from_str(&c.cli_ok_as(
        &admin_tf,
        &[
            "token",
            "create",
            "vision-ci",
            "--scope",
            "ml/vision",
            "--role",
            "editor",
            "--secret-file",
            &vis,
            "-o",
            "json",
        ],
    ))
    .expect("token JSON");
    assert!(tok.get("token").is_none(), "the secret went to the file only: {tok}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&vis_tf).expect("secret file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "secret file mode");
    // An existing file is refused before a token is issued.
    cli_fails(
        &c,
        &admin_tf,
        &["token", "create", "again", "--role", "viewer", "--secret-file", &vis],
        &["vision.token"],
    );

    // Allowed: the project's volume in the allowed class, within the size limit.
    c.cli_ok_as(&vis_tf, &["volume", "create", "data", "--class", "fast", "--capacity", "8M"]);
    // Refused, each naming the rule and the scope that set it.
    cli_fails(
        &c,
        &vis_tf,
        &["volume", "create", "big", "--class", "fast", "--capacity", "2G"],
        &["max_volume_size", "scope ml"],
    );
    cli_fails(
        &c,
        &vis_tf,
        &["volume", "create", "other", "--class", "default", "--capacity", "8M"],
        &["allowed_classes", "scope ml"],
    );
    // The project token sees only its volume.
    let list: Value = serde_json::from_str(&c.cli_ok_as(&vis_tf, &["volume", "list", "-o", "json"])).expect("json");
    let names: Vec<&str> = list.as_array().expect("array").iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["data"]);

    // Mount with the project token and fill it to its quota.
    let mp = c.dir.join("mnt-data");
    std::fs::create_dir(&mp).expect("mount point");
    let m = c.mount_as("data", &vis_tf, &mp, &["--attr-ttl", "0"]);
    let st = statvfs(c.mp(m));
    assert_eq!(st.0, 8 * MIB, "df shows the volume's size");
    let chunk = random_bytes(7, MIB as usize);
    let f = File::create(c.p(m, "fill")).expect("create");
    let mut written = 0u64;
    let err = loop {
        match f.write_all_at(&chunk, written).and_then(|_| f.sync_data()) {
            Ok(()) => written += MIB,
            Err(e) => break e.raw_os_error(),
        }
        assert!(written <= 16 * MIB, "the quota never bites");
    };
    assert_eq!(err, Some(libc::EDQUOT), "writing past the quota");
    assert!(written >= 6 * MIB, "only {written} bytes fit into 8 MiB");

    // Expand online: the mount sees the new size and writing goes on.
    let out = c.cli_ok_as(&vis_tf, &["volume", "expand", "data", "--capacity", "32M"]);
    assert!(out.contains("32.0 MiB"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || statvfs(c.mp(m)).0 == 32 * MIB), "df after expansion");
    for i in 0..4 {
        f.write_all_at(&chunk, written + i * MIB).expect("write after expansion");
    }
    f.sync_all().expect("fsync after expansion");
    drop(f);
    let back = read_all(&c.p(m, "fill"));
    assert_eq!(back.len() as u64, written + 4 * MIB);
    for (i, part) in back.chunks(MIB as usize).enumerate() {
        assert_bytes_eq(part, &chunk, &format!("MiB {i} of the filled file"));
    }
    // Shrinking below the use is refused.
    cli_fails(&c, &vis_tf, &["volume", "expand", "data", "--capacity", "1M"], &["below"]);

    // Another project's volume: not listed, not described, not mounted, not changed.
    let admin_rest = admin(&c);
    volume(&admin_rest, "nlp-data", "ml/nlp", "fast", 8 * MIB);
    cli_fails(&c, &vis_tf, &["volume", "describe", "nlp-data"], &["not found"]);
    cli_fails(&c, &vis_tf, &["volume", "delete", "nlp-data"], &["not found"]);
    cli_fails(&c, &vis_tf, &["volume", "expand", "nlp-data", "--capacity", "16M"], &["not found"]);
    let mp2 = c.dir.join("nlp");
    std::fs::create_dir(&mp2).expect("mount point");
    cli_fails(&c, &vis_tf, &["mount", "nlp-data", &mp2.to_string_lossy()], &["nlp-data"]);
    assert!(!is_fuse_mount(&mp2));
}

/// (capacity, used) in bytes as `df` sees them.
fn statvfs(p: &Path) -> (u64, u64) {
    let cp = cpath(p);
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: cp is a valid C string and st a valid out-pointer.
    let rc = unsafe { libc::statvfs(cp.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}: {}", p.display(), errname(errno()));
    let bs = st.f_frsize;
    (st.f_blocks * bs, (st.f_blocks - st.f_bfree) * bs)
}

// ---- policies ----

/// Inheritance and enforcement: a department's rules bind its projects; a project narrows and
/// never widens them; each refusal names the rule and the scope that set it.
#[test]
fn policy_inheritance_and_enforcement() {
    let c = Cluster::new("policy");
    let a = admin(&c);
    org(&a);
    let put = |scope: &str, rules: Value| a.ok("PUT", &format!("/v1/policies/{scope}"), Some(rules));
    let create = |who: &Rest, name: &str, scope: &str, class: Option<&str>, cap: u64| {
        let mut b = json!({"name": name, "scope": scope, "capacity": cap});
        if let Some(cl) = class {
            b["class"] = json!(cl);
        }
        who.call("POST", "/v1/volumes", Some(b))
    };
    let refused = |got: (u16, Value), rule: &str, scope: &str, what: &str| {
        let v = assert_err(got, 403, &[], what);
        assert_eq!(v["error"]["code"], "policy_denied", "{what}: {v}");
        assert_eq!(v["error"]["rule"], rule, "{what}: {v}");
        assert_eq!(v["error"]["scope"], scope, "{what}: {v}");
    };

    put("ml", json!({"allowed_classes": ["fast", "cheap"], "max_volume_size": 64 * MIB, "quota": 100 * MIB}));
    put("ml/vision", json!({"allowed_classes": ["fast", "default"], "default_class": "fast"}));

    // A project narrows the classes; naming one the department does not allow widens nothing.
    let eff = a.ok("GET", "/v1/policies/ml/vision/effective", None);
    assert_eq!(eff["allowed_classes"]["value"], json!(["fast"]), "{eff}");
    assert_eq!(eff["allowed_classes"]["from"], "ml/vision", "{eff}");
    assert_eq!(eff["max_volume_size"]["from"], "ml", "{eff}");
    refused(create(&a, "v1", "ml/vision", Some("cheap"), MIB), "allowed_classes", "ml/vision", "cheap in vision");
    refused(create(&a, "v2", "ml/vision", Some("default"), MIB), "allowed_classes", "ml", "default in vision");
    refused(create(&a, "v3", "ml/nlp", Some("default"), MIB), "allowed_classes", "ml", "default in nlp");
    // The project's default class is used when none is named.
    let v = create(&a, "v4", "ml/vision", None, MIB);
    assert_eq!(v.0, 201, "{}", v.1);
    assert_eq!(v.1["class"], "fast");
    // Size: the department's maximum binds; a project may lower it, not raise it.
    refused(create(&a, "v5", "ml/nlp", Some("cheap"), 65 * MIB), "max_volume_size", "ml", "too big in nlp");
    put("ml/nlp", json!({"max_volume_size": 1024 * MIB}));
    refused(create(&a, "v6", "ml/nlp", Some("cheap"), 65 * MIB), "max_volume_size", "ml", "raised in nlp");
    put("ml/nlp", json!({"max_volume_size": 16 * MIB}));
    refused(create(&a, "v7", "ml/nlp", Some("cheap"), 32 * MIB), "max_volume_size", "ml/nlp", "lowered in nlp");
    refused(create(&a, "v8", "ml/nlp", Some("cheap"), 0), "max_volume_size", "ml/nlp", "no size under a max");
    // Quota of the department over all its projects: 1 + 16 + 64 ≤ 100, then refused.
    assert_eq!(create(&a, "v9", "ml/nlp", Some("cheap"), 16 * MIB).0, 201);
    assert_eq!(create(&a, "v10", "ml/vision", Some("fast"), 64 * MIB).0, 201);
    refused(create(&a, "v11", "ml/vision", Some("fast"), 32 * MIB), "quota", "ml", "department quota");
    // Growing counts against the quota too.
    let (st, v) = a.call("PATCH", "/v1/volumes/v10", Some(json!({"capacity": 96 * MIB})));
    refused((st, v), "max_volume_size", "ml", "grow past the maximum");
    let (st, v) = a.call("PATCH", "/v1/volumes/v4", Some(json!({"capacity": 40 * MIB})));
    refused((st, v), "quota", "ml", "grow past the department quota");

    // An enforced class: the department's wins over the project's wishes.
    put("ml", json!({"enforced_class": "cheap"}));
    refused(create(&a, "v12", "ml/nlp", Some("fast"), MIB), "enforced_class", "ml", "enforced class");
    let v = create(&a, "v13", "ml/nlp", None, MIB);
    assert_eq!((v.0, v.1["class"].as_str()), (201, Some("cheap")), "{}", v.1);
    // Access modes.
    put("ml/nlp", json!({"access_modes": ["ReadOnlyMany"]}));
    let mut b = json!({"name": "v14", "scope": "ml/nlp", "access_mode": "ReadWriteMany"});
    refused(a.call("POST", "/v1/volumes", Some(b.clone())), "access_modes", "ml/nlp", "access mode");
    b["access_mode"] = json!("ReadOnlyMany");
    assert_eq!(a.call("POST", "/v1/volumes", Some(b)).0, 201);

    // A policy naming an unknown class is refused; the CLI shows where each rule comes from.
    assert_err(a.call("PUT", "/v1/policies/ml", Some(json!({"allowed_classes": ["nope"]}))), 404, &["nope"], "bad");
    let shown = c.cli_ok_as(&c.token_file, &["policy", "show", "ml/nlp"]);
    assert!(shown.contains("enforced_class") && shown.contains("cheap"), "{shown}");
}

// ---- authorization ----

/// Every role in every scope against every control operation, and mounts: a project token never
/// lists, reads or changes another project's volume; a viewer never writes.
#[test]
fn authorization_matrix() {
    let mut c = Cluster::new("authz");
    let a = admin(&c);
    org(&a);
    volume(&a, "vis", "ml/vision", "fast", 64 * MIB);
    volume(&a, "nlp", "ml/nlp", "fast", 64 * MIB);
    let callers: Vec<(&str, &str, Rest)> = [
        ("admin", "ml"),
        ("editor", "ml"),
        ("admin", "ml/vision"),
        ("editor", "ml/vision"),
        ("viewer", "ml/vision"),
        ("node", "ml/vision"),
        ("editor", "ml/nlp"),
    ]
    .into_iter()
    .map(|(role, scope)| (role, scope, a.issue(&format!("{role}@{scope}"), role, scope, None).0))
    .collect();
    let within = |target: &str, scope: &str| target == scope || target.starts_with(&format!("{scope}/"));

    let mut n = 0;
    for (role, scope, who) in &callers {
        let what = |op: &str| format!("{role} of {scope}: {op}");
        let writer = matches!(*role, "admin" | "editor");
        // Listing shows exactly the volumes at or below the token's scope.
        let list = who.ok("GET", "/v1/volumes", None);
        let mut seen: Vec<String> =
            list.as_array().expect("list").iter().filter_map(|v| v["name"].as_str().map(String::from)).collect();
        seen.sort();
        let want: Vec<String> = [("nlp", "ml/nlp"), ("vis", "ml/vision")]
            .iter()
            .filter(|(_, s)| within(s, scope))
            .map(|(v, _)| v.to_string())
            .collect();
        assert_eq!(seen, want, "{}", what("list volumes"));
        for (vol, vscope) in [("vis", "ml/vision"), ("nlp", "ml/nlp")] {
            let mine = within(vscope, scope);
            let (st, _) = who.call("GET", &format!("/v1/volumes/{vol}"), None);
            assert_eq!(st, if mine { 200 } else { 404 }, "{}", what(&format!("describe {vol}")));
            // Resizing to the same size changes nothing but passes every check.
            let (st, v) = who.call("PATCH", &format!("/v1/volumes/{vol}"), Some(json!({"capacity": 64 * MIB})));
            let want = if !writer {
                403
            } else if mine {
                200
            } else {
                404
            };
            assert_eq!(st, want, "{}: {v}", what(&format!("resize {vol}")));
            n += 2;
        }
        // Create (and delete again) a volume in each project.
        for target in ["ml/vision", "ml/nlp"] {
            n += 1;
            let name = format!("t{n}");
            let (st, v) = who.call(
                "POST",
                "/v1/volumes",
                Some(json!({"name": name, "scope": target, "class": "fast", "capacity": MIB})),
            );
            let allowed = writer && within(target, scope);
            assert_eq!(st, if allowed { 201 } else { 403 }, "{}: {v}", what(&format!("create in {target}")));
            if allowed {
                who.ok("DELETE", &format!("/v1/volumes/{name}"), None);
            } else {
                assert_eq!(v["error"]["code"], "forbidden", "{v}");
            }
        }
        // Tokens, scopes and policies: admins of the scope or above.
        for target in ["ml/vision", "ml/nlp"] {
            let admin_here = *role == "admin" && within(target, scope);
            let (st, _) = who.call("POST", "/v1/tokens", Some(json!({"name": "x", "role": "viewer", "scope": target})));
            assert_eq!(st, if admin_here { 201 } else { 403 }, "{}", what(&format!("issue a token in {target}")));
            let (st, _) = who.call("PUT", &format!("/v1/policies/{target}"), Some(json!({})));
            assert_eq!(st, if admin_here { 200 } else { 403 }, "{}", what(&format!("set the policy of {target}")));
            let (st, _) = who.call("GET", &format!("/v1/policies/{target}/effective"), None);
            let reads = within(target, scope) || within(scope, target);
            assert_eq!(st, if reads { 200 } else { 403 }, "{}", what(&format!("read the policy of {target}")));
        }
        let (st, _) = who.call("POST", "/v1/scopes", Some(json!({"path": format!("{scope}-x")})));
        assert_eq!(st, 403, "{}", what("create a scope beside its own"));
        let (st, _) = who.call("GET", "/v1/tokens", None);
        assert_eq!(st, if *role == "admin" { 200 } else { 403 }, "{}", what("list tokens"));
        // Storage classes: anyone lists them; only cluster admins change them.
        assert_eq!(who.call("GET", "/v1/storageclasses", None).0, 200, "{}", what("list classes"));
        let (st, _) = who.call("POST", "/v1/storageclasses", Some(json!({"name": "mine"})));
        assert_eq!(st, 403, "{}", what("create a class"));
        let (st, _) = who.call("DELETE", "/v1/storageclasses/cheap", None);
        assert_eq!(st, 403, "{}", what("delete a class"));
    }

    // Mounts: project tokens mount their project's volume; viewers read and never write.
    std::fs::create_dir(c.dir.join("seed")).expect("mkdir");
    let vis_editor = c.dir.join("editor.token");
    std::fs::write(&vis_editor, &callers[3].2.token).expect("token");
    let e = c.mount_as("vis", &vis_editor, &c.dir.join("seed"), &["--attr-ttl", "0", "--entry-ttl", "0"]);
    write_synced(&c.p(e, "hello"), b"from the editor").expect("editor writes");
    for (i, (role, scope, who)) in callers.iter().enumerate() {
        let tf = who.token_file(&c.dir, &format!("t{i}"));
        let mp = c.dir.join(format!("m{i}"));
        std::fs::create_dir(&mp).expect("mkdir");
        let out = c.cli_as(&tf, &["mount", "vis", &mp.to_string_lossy(), "-d"]);
        if !within("ml/vision", scope) {
            assert_eq!(out.status.code(), Some(1), "{role} of {scope} mounted another project's volume");
            assert!(!is_fuse_mount(&mp));
            let out = c.cli_as(&tf, &["mount", "nlp", &mp.to_string_lossy(), "-d"]);
            assert!(out.status.success(), "{role} of {scope} mounts its own: {}", String::from_utf8_lossy(&out.stderr));
            assert!(wait_until(Duration::from_secs(10), || is_fuse_mount(&mp)));
            assert!(!mp.join("hello").exists(), "another volume's namespace");
            run_strata(&["umount", &mp.to_string_lossy()]);
            continue;
        }
        assert!(out.status.success(), "{role} of {scope} mount: {}", String::from_utf8_lossy(&out.stderr));
        assert!(wait_until(Duration::from_secs(10), || is_fuse_mount(&mp)), "mounted");
        assert_eq!(std::fs::read(mp.join("hello")).expect("read"), b"from the editor", "{role} reads");
        let w = write_synced(&mp.join(format!("by-{i}")), b"x");
        if *role == "viewer" {
            assert_eq!(w, Err(libc::EACCES), "a viewer writes");
            let f = std::fs::OpenOptions::new().write(true).open(mp.join("hello"));
            assert_eq!(f.err().and_then(|e| e.raw_os_error()), Some(libc::EACCES), "viewer opens for writing");
            assert_eq!(err_of(std::fs::remove_file(mp.join("hello"))), libc::EACCES, "viewer unlinks");
        } else {
            assert_eq!(w, Ok(()), "{role} of {scope} writes");
        }
        let out = run_strata(&["umount", &mp.to_string_lossy()]);
        assert!(out.status.success(), "umount: {}", String::from_utf8_lossy(&out.stderr));
        assert!(wait_until(Duration::from_secs(10), || !is_fuse_mount(&mp)));
    }
}

// ---- quotas ----

/// Two clients write at once into one volume until the quota stops them: nothing fsynced is
/// lost, the total never passes the quota, and the volume's reported use is exactly the sum of
/// what the files hold.
#[test]
fn quota_exact_with_two_writers() {
    let mut c = Cluster::with_opts(
        "quota2",
        Opts { volume_args: vec!["--capacity".into(), "48M".into()], ..Default::default() },
    );
    c.mount(&["--attr-ttl", "0"]);
    c.mount(&["--attr-ttl", "0"]);
    let cap = 48 * MIB;
    let chunk = 256 * 1024u64;
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let path = c.p(i, &format!("w{i}"));
            std::thread::spawn(move || {
                let data = random_bytes(100 + i as u64, chunk as usize);
                let f = File::create(&path).expect("create");
                let (mut off, mut durable) = (0u64, 0u64);
                let err = loop {
                    if let Err(e) = f.write_all_at(&data, off) {
                        break e.raw_os_error();
                    }
                    off += chunk;
                    if off % MIB == 0 {
                        match f.sync_data() {
                            Ok(()) => durable = off,
                            Err(e) => break e.raw_os_error(),
                        }
                    }
                    assert!(off <= 2 * cap, "the quota never bites");
                };
                let closed = std::os::fd::IntoRawFd::into_raw_fd(f);
                // SAFETY: closing the descriptor we own.
                unsafe { libc::close(closed) };
                (err, durable, data)
            })
        })
        .collect();
    let results: Vec<_> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
    let mut total = 0;
    for (i, (err, durable, data)) in results.iter().enumerate() {
        assert_eq!(*err, Some(libc::EDQUOT), "writer {i} stops on the quota");
        // Read through the other client: what was fsynced is there, byte for byte.
        let back = read_all(&c.p(1 - i, &format!("w{i}")));
        assert!(back.len() as u64 >= *durable, "writer {i}: {} bytes, {durable} fsynced", back.len());
        for (k, part) in back.chunks(chunk as usize).enumerate() {
            assert_bytes_eq(part, &data[..part.len()], &format!("writer {i} chunk {k}"));
        }
        total += back.len() as u64;
    }
    assert!(total <= cap, "{total} bytes held in a {cap}-byte volume");
    assert!(total >= cap - 4 * MIB, "only {total} of {cap} bytes were filled");
    let (st, v) = call(&c.addr, "GET", &format!("/v1/volumes/{}", c.volume), Some(&c.token()), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["used_bytes"].as_u64(), Some(total), "use = the sum of file sizes: {v}");
    assert_eq!(statvfs(c.mp(0)).1, total, "df's use");
    // Deleting gives the room back to both clients at once.
    std::fs::remove_file(c.p(0, "w0")).expect("unlink");
    write_synced(&c.p(1, "after"), &random_bytes(9, 4 * MIB as usize)).expect("write after freeing room");
}

// ---- tokens ----

/// A revoked or expired token fails at once, also on a live mount: the next operation gets
/// EACCES and REST calls 401.
#[test]
fn revoked_and_expired_tokens() {
    let mut c = Cluster::new("revoke");
    c.allow_log("token");
    let a = admin(&c);
    a.ok("POST", "/v1/scopes", Some(json!({"path": "team"})));
    // Volumes of the cluster scope are visible to cluster tokens only: use a team volume.
    volume(&a, "team-vol", "team", "default", 64 * MIB);
    let (node, node_id) = a.issue("node-1", "node", "team", None);
    let (short, _) = a.issue("short", "editor", "team", Some(3));

    let mounts: Vec<usize> = [(&node, "node"), (&short, "short")]
        .iter()
        .map(|(who, name)| {
            let tf = who.token_file(&c.dir, name);
            let mp = c.dir.join(name);
            std::fs::create_dir(&mp).expect("mkdir");
            c.mount_as("team-vol", &tf, &mp, &["--attr-ttl", "0", "--entry-ttl", "0"])
        })
        .collect();
    write_synced(&c.p(mounts[0], "a"), b"before").expect("write with a live token");
    assert_eq!(std::fs::read(c.p(mounts[1], "a")).expect("read"), b"before");

    // Revocation: the very next operation of the live mount is refused.
    a.ok("DELETE", &format!("/v1/tokens/{node_id}"), None);
    assert_eq!(err_of(std::fs::read(c.p(mounts[0], "a"))), libc::EACCES, "read after revocation");
    assert_eq!(err_of(std::fs::read_dir(c.mp(mounts[0]))), libc::EACCES, "readdir after revocation");
    assert_eq!(write_synced(&c.p(mounts[0], "b"), b"x"), Err(libc::EACCES), "create after revocation");
    assert_err(node.call("GET", "/v1/volumes", None), 401, &[], "REST after revocation");

    // Expiry: the 3-second token works, then stops working by itself.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(err_of(std::fs::read(c.p(mounts[1], "a"))), libc::EACCES, "read after expiry");
    assert_err(short.call("GET", "/v1/volumes", None), 401, &["expired"], "REST after expiry");
    // The data is untouched: the admin still reads it.
    std::fs::create_dir(c.dir.join("adm")).expect("mkdir");
    let at = c.token_file.clone();
    let m = c.mount_as("team-vol", &at, &c.dir.join("adm"), &[]);
    assert_eq!(std::fs::read(c.p(m, "a")).expect("read"), b"before");
}

// ---- bad input ----

/// Malformed or absurd requests get a 4xx with a message, never a 5xx, a panic or a hang.
#[test]
fn bad_requests_get_4xx() {
    let c = Cluster::new("badrest");
    let a = admin(&c);
    org(&a);
    let post = |path: &str, body: Value| a.call("POST", path, Some(body));
    let long = "a".repeat(254);
    let cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        ("unknown class", post("/v1/volumes", json!({"name": "x", "class": "nope"})), 404, "nope"),
        ("unknown scope", post("/v1/volumes", json!({"name": "x", "scope": "no/where"})), 404, "no"),
        ("negative size", post("/v1/volumes", json!({"name": "x", "capacity": -1})), 400, "capacity"),
        ("absurd size", post("/v1/volumes", json!({"name": "x", "capacity": 1u64 << 62})), 400, "capacity"),
        ("size as text", post("/v1/volumes", json!({"name": "x", "capacity": "10G"})), 400, "capacity"),
        ("slash in name", post("/v1/volumes", json!({"name": "a/b"})), 400, "a/b"),
        ("dot-dot name", post("/v1/volumes", json!({"name": ".."})), 400, ""),
        ("long name", post("/v1/volumes", json!({"name": long})), 400, "253"),
        ("empty name", post("/v1/volumes", json!({"name": ""})), 400, ""),
        ("unknown field", post("/v1/volumes", json!({"name": "x", "size": 5})), 400, "size"),
        ("bad access mode", post("/v1/volumes", json!({"name": "x", "access_mode": "RWZ"})), 400, ""),
        ("slash in class", post("/v1/storageclasses", json!({"name": "a/b"})), 400, ""),
        ("bad block size", post("/v1/storageclasses", json!({"name": "b", "block_size": 12345})), 400, "block"),
        ("bad compression", post("/v1/storageclasses", json!({"name": "b", "compression": "rar"})), 400, ""),
        (
            "relative path",
            post("/v1/storageclasses", json!({"name": "b", "backend": {"type": "local", "path": "rel"}})),
            400,
            "",
        ),
        ("deep scope", post("/v1/scopes", json!({"path": "a/b/c"})), 400, ""),
        ("scope parent missing", post("/v1/scopes", json!({"path": "zz/top"})), 404, "zz"),
        ("existing scope", post("/v1/scopes", json!({"path": "ml"})), 409, "ml"),
        ("bad role", post("/v1/tokens", json!({"name": "t", "role": "god"})), 400, "god"),
        ("zero ttl", post("/v1/tokens", json!({"name": "t", "role": "viewer", "ttl_seconds": 0})), 400, "ttl"),
        (
            "token for unknown scope",
            post("/v1/tokens", json!({"name": "t", "role": "viewer", "scope": "nope"})),
            404,
            "",
        ),
        ("resize unknown", a.call("PATCH", "/v1/volumes/ghost", Some(json!({"capacity": 1}))), 404, "ghost"),
        (
            "resize to text",
            a.call("PATCH", &format!("/v1/volumes/{}", c.volume), Some(json!({"capacity": "x"}))),
            400,
            "",
        ),
        ("delete unknown token", a.call("DELETE", "/v1/tokens/ffff", None), 404, ""),
        ("delete class in use", a.call("DELETE", "/v1/storageclasses/default", None), 409, "default"),
        ("policy of unknown scope", a.call("GET", "/v1/policies/nope", None), 404, "nope"),
        ("empty policy scope part", a.call("GET", "/v1/policies/ml//x", None), 400, ""),
        ("bad percent encoding", a.call("GET", "/v1/policies/ml%ZZ", None), 400, ""),
        ("policy max size zero", a.call("PUT", "/v1/policies/ml", Some(json!({"max_volume_size": 0}))), 400, ""),
        ("unknown route", a.call("GET", "/v1/nothing", None), 404, ""),
        ("wrong method", a.call("PUT", "/v1/volumes", Some(json!({}))), 405, ""),
        ("no token", call(&c.addr, "GET", "/v1/volumes", None, None), 401, "token"),
        ("wrong token", call(&c.addr, "GET", "/v1/volumes", Some("strata_nope"), None), 401, ""),
    ];
    for (what, got, status, phrase) in cases {
        let phrases: Vec<&str> = if phrase.is_empty() { vec![] } else { vec![phrase] };
        assert_err(got, status, &phrases, what);
    }

    // Bodies that are not JSON, too large, or of the wrong type.
    let t = c.token();
    let raw_len = |body: &str, len: usize, ctype: &str| {
        let req = format!(
            "POST /v1/volumes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {t}\r\n\
             Content-Type: {ctype}\r\nContent-Length: {len}\r\n\r\n{body}"
        );
        http_raw(&c.addr, req.as_bytes())
    };
    let raw = |body: &str, ctype: &str| raw_len(body, body.len(), ctype);
    for (what, (st, body), want) in [
        ("truncated JSON", raw("{\"name\": ", "application/json"), 400),
        ("not JSON", raw("name=x", "application/json"), 400),
        ("JSON array", raw("[1,2]", "application/json"), 400),
        ("form body", raw("name=x", "application/x-www-form-urlencoded"), 415),
        // Refused on its declared length, before the body is sent.
        ("huge body", raw_len("{", 2 << 20, "application/json"), 413),
    ] {
        assert_eq!(st, want, "{what}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
    }
    // Garbage instead of HTTP: the connection closes, the server lives on.
    let mut s = TcpStream::connect(&c.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = s.write_all(b"GET /\x00\x01\x02 HTTP/9.9\r\n\r\n");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    assert_eq!(a.call("GET", "/v1/storageclasses", None).0, 200, "server still answers");
    // The OpenAPI document is served without a token.
    let (st, doc) = call(&c.addr, "GET", "/openapi.json", None, None);
    assert_eq!(st, 200);
    assert!(doc["paths"]["/v1/volumes"]["post"].is_object(), "openapi document");
    // The CLI turns refusals into one line and exit code 1.
    cli_fails(&c, &c.token_file, &["volume", "create", "a/b"], &["a/b"]);
    cli_fails(&c, &c.token_file, &["volume", "create", "x", "--class", "nope"], &["nope"]);
    cli_fails(&c, &c.token_file, &["storageclass", "delete", "default"], &["default"]);
}

// ---- a volume's own QoS ----

/// A volume's QoS limits over REST and the CLI: set, shown, partly changed, cleared; refused
/// to a viewer, to another project's editor, and for out-of-range values; gone with the volume.
#[test]
fn volume_qos_set_shown_and_cleared() {
    let c = Cluster::new("vqos");
    let a = admin(&c);
    org(&a);
    volume(&a, "q", "ml/vision", "fast", 0);
    let path = "/v1/volumes/q/qos";
    let v = a.ok("GET", "/v1/volumes/q", None);
    assert!(v.get("qos").is_none(), "no override yet: {v}");

    // REST: set, shown by get and list, cleared.
    let v = a.ok("PUT", path, Some(json!({"bytes_per_sec": 100 * MIB, "ops_per_sec": 500})));
    assert_eq!(v["qos"], json!({"bytes_per_sec": 100 * MIB, "ops_per_sec": 500}), "{v}");
    assert_eq!(a.ok("GET", "/v1/volumes/q", None)["qos"]["ops_per_sec"], 500);
    let list = a.ok("GET", "/v1/volumes", None);
    let q = list.as_array().expect("array").iter().find(|v| v["name"] == "q").expect("listed").clone();
    assert_eq!(q["qos"]["bytes_per_sec"], 100 * MIB, "{q}");
    let v = a.ok("DELETE", path, None);
    assert!(v.get("qos").is_none(), "cleared: {v}");
    assert!(a.ok("GET", "/v1/volumes/q", None).get("qos").is_none());

    // Refusals.
    assert_err(a.call("PUT", "/v1/volumes/nope/qos", Some(json!({"bytes_per_sec": 1}))), 404, &["nope"], "unknown");
    assert_err(
        a.call("PUT", path, Some(json!({"bytes_per_sec": (1u64 << 60) + 1}))),
        400,
        &["largest allowed"],
        "too large",
    );
    assert_err(a.call("PUT", path, Some(json!({"bytes": 1}))), 400, &[], "unknown field");
    let (viewer, _) = a.issue("vis-viewer", "viewer", "ml/vision", None);
    assert_err(viewer.call("PUT", path, Some(json!({"bytes_per_sec": 1}))), 403, &[], "a viewer sets");
    assert_err(viewer.call("DELETE", path, None), 403, &[], "a viewer clears");
    let (nlp, _) = a.issue("nlp-editor", "editor", "ml/nlp", None);
    assert_err(nlp.call("PUT", path, Some(json!({"bytes_per_sec": 1}))), 404, &[], "another project's editor");
    let (vis, _) = a.issue("vis-editor", "editor", "ml/vision", None);
    assert_eq!(
        vis.ok("PUT", path, Some(json!({"ops_per_sec": 9})))["qos"],
        json!({"bytes_per_sec": 0, "ops_per_sec": 9})
    );

    // The CLI: describe shows it; one limit given keeps the other; --clear goes back.
    let admin_tf = c.token_file.clone();
    let shown = c.cli_ok_as(&admin_tf, &["volume", "describe", "q"]);
    assert!(shown.contains("9 IOPS") && shown.contains("the volume's own"), "{shown}");
    let out = c.cli_ok_as(&admin_tf, &["volume", "qos", "q", "--max-bandwidth", "100M"]);
    assert!(out.contains("100.0 MiB/s") && out.contains("9 IOPS"), "{out}");
    let out = c.cli_ok_as(&admin_tf, &["volume", "qos", "q", "--max-iops", "500"]);
    assert!(out.contains("100.0 MiB/s") && out.contains("500 IOPS"), "{out}");
    let v: Value =
        serde_json::from_str(&c.cli_ok_as(&admin_tf, &["volume", "describe", "q", "-o", "json"])).expect("json");
    assert_eq!(v["qos"], json!({"bytes_per_sec": 100 * MIB, "ops_per_sec": 500}), "{v}");
    let out = c.cli_ok_as(&admin_tf, &["volume", "qos", "q", "--clear"]);
    assert!(out.contains("the class's"), "{out}");
    let shown = c.cli_ok_as(&admin_tf, &["volume", "describe", "q"]);
    assert!(shown.contains("the class's") && !shown.contains("IOPS"), "{shown}");
    cli_fails(&c, &admin_tf, &["volume", "qos", "q"], &["--max-bandwidth"]);
    let viewer_tf = viewer.token_file(&c.dir, "viewer");
    cli_fails(&c, &viewer_tf, &["volume", "qos", "q", "--max-iops", "5"], &["q"]);
    cli_fails(&c, &viewer_tf, &["volume", "qos", "q", "--clear"], &["q"]);

    // Deleted with the volume: a new volume of the same name starts without one.
    a.ok("PUT", path, Some(json!({"bytes_per_sec": 1})));
    a.ok("DELETE", "/v1/volumes/q", None);
    volume(&a, "q", "ml/vision", "fast", 0);
    assert!(a.ok("GET", "/v1/volumes/q", None).get("qos").is_none());
}

/// Seconds to write `mib` MiB to a new file in `dir` and fsync it.
fn timed_write(dir: &Path, name: &str, mib: usize) -> f64 {
    let t = std::time::Instant::now();
    let mut f = File::create(dir.join(name)).expect("create");
    let chunk = random_bytes(3, MIB as usize);
    for _ in 0..mib {
        f.write_all(&chunk).expect("write");
    }
    f.sync_all().expect("fsync");
    t.elapsed().as_secs_f64()
}

/// `strata volume qos` reaches a live mount within seconds (its next heartbeat), without a
/// remount: 4 MiB at 1 MiB/s take about 3 s once it has; clearing lifts the limit again.
#[test]
fn volume_qos_reaches_a_live_mount() {
    let mut c = Cluster::new("vqoslive");
    let m = c.mount(&[]);
    let log = c.dir.join(format!("mount{m}.log"));
    let changes = || std::fs::read_to_string(&log).unwrap_or_default().matches("QoS limits changed").count();
    let quick = timed_write(c.mp(m), "before", 8);
    assert!(quick < 4.0, "unlimited: 8 MiB took {quick:.1} s");

    let vol = c.volume.clone();
    c.cli(&["volume", "qos", &vol, "--max-bandwidth", "1M"]);
    assert!(wait_until(Duration::from_secs(15), || changes() >= 1), "the mount never took up the new limit");
    // The bucket starts full (1 MiB), so 4 MiB take about 3 s.
    let slow = timed_write(c.mp(m), "limited", 4);
    assert!(slow >= 2.0, "limited to 1 MiB/s: 4 MiB took only {slow:.1} s");

    c.cli(&["volume", "qos", &vol, "--clear"]);
    assert!(wait_until(Duration::from_secs(15), || changes() >= 2), "the mount never dropped the limit");
    let quick = timed_write(c.mp(m), "after", 8);
    assert!(quick < 4.0, "cleared: 8 MiB took {quick:.1} s (limited, they would take 7)");
    assert_eq!(read_all(&c.p(m, "limited")).len() as u64, 4 * MIB);
}
