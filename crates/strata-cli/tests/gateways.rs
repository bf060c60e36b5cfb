//! The gateways together, as the README's walkthrough runs them: a volume exported over NFS
//! with an allow-list and a read-only export, a dataset copied in with nfs-cp, listed and read
//! with boto3 through the S3 gateway, and read on a FUSE mount: the same bytes every way. And
//! what operators watch them with: every process's metrics, `strata stats` and `strata status`,
//! JSON logs, and the dashboard in a browser.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// boto3 through the S3 gateway: every key under `prefix` with its size and SHA-256, one per
/// line, sorted.
const LIST_AND_HASH: &str = r#"
import boto3, hashlib, sys
endpoint, secret_file, bucket, prefix = sys.argv[1:5]
secret = open(secret_file).read().strip()
key_id = hashlib.sha256(secret.encode()).hexdigest()[:12]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, region_name="us-east-1")
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 2}):
    keys += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
for key, size in sorted(keys):
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert len(body) == size, (key, len(body), size)
    print(key, size, hashlib.sha256(body).hexdigest())
"#;

/// SHA-256 of `data` (hex), by `sha256sum` through a file in `dir`.
fn sha256_hex(dir: &Path, data: &[u8]) -> String {
    let p = dir.join("hash-input");
    std::fs::write(&p, data).expect("write");
    let out = run_cmd(Command::new("sha256sum").arg(&p));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn dataset_in_over_nfs_out_over_s3_and_fuse() {
    if run_cmd(Command::new("python3").args(["-c", "import boto3"])).status.code() != Some(0) {
        panic!("boto3 is missing: scripts/deps.sh installs it");
    }
    let mut c = Cluster::with_mounts("gateways", 1);
    let vol = c.volume.clone();
    let editor = c.issue_token("nfs-writer", "editor");
    let viewer = c.issue_token("s3-reader", "viewer");

    // NFS: read-write for this host, read-only for everyone (here: also this host, on a second
    // path), and a path nobody here may mount.
    let mut nfs = Gateway::nfs_as(
        &mut c,
        &editor,
        &[
            &format!("/datasets={vol},allow=127.0.0.1/32,squash=none"),
            &format!("/datasets-ro={vol},ro,allow=0.0.0.0/0,squash=none"),
            &format!("/elsewhere={vol},allow=192.0.2.0/24"),
        ],
        &[],
    );
    let url = |path: &str| nfs.nfs_url(path);
    std::fs::create_dir(c.p(0, "train")).expect("mkdir on FUSE");

    let local = c.dir.join("dataset");
    std::fs::create_dir(&local).expect("mkdir");
    let mut files = vec![("train/shard-0.bin".to_string(), random_bytes(7, 6 * 1024 * 1024 + 3))];
    for i in 1..5 {
        files.push((format!("train/shard-{i}.bin"), random_bytes(7 + i, 300_000 * i as usize)));
    }
    for (key, data) in &files {
        let p = local.join(key.replace('/', "_"));
        std::fs::write(&p, data).expect("write");
        let out = run_cmd(Command::new("nfs-cp").arg(&p).arg(url(&format!("/datasets/{key}"))));
        assert!(out.status.success(), "nfs-cp {key}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The read-only export refuses a copy; the other subnet's export refuses the mount.
    let p = local.join("train_shard-0.bin");
    let out = run_cmd(Command::new("nfs-cp").arg(&p).arg(url("/datasets-ro/train/refused.bin")));
    assert!(!out.status.success(), "nfs-cp into a read-only export succeeded");
    let out = run_cmd(Command::new("nfs-ls").arg(url("/elsewhere")));
    assert!(!out.status.success(), "nfs-ls of an export for another subnet succeeded");
    // But the read-only export reads.
    let out = run_cmd(Command::new("nfs-cat").arg(url("/datasets-ro/train/shard-1.bin")));
    assert_bytes_eq(&out.stdout, &files[1].1, "nfs-cat through the read-only export");

    // S3, with a viewer token: list (paged) and get every object.
    let mut s3 = Gateway::s3(&mut c, &[&viewer], &[]);
    let out = run_cmd(Command::new("python3").args([
        "-c",
        LIST_AND_HASH,
        &s3.endpoint(),
        viewer.to_str().expect("utf8"),
        &vol,
        "train/",
    ]));
    assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut want: Vec<String> =
        files.iter().map(|(k, d)| format!("{k} {} {}", d.len(), sha256_hex(&c.dir, d))).collect();
    want.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want, "S3 listing and contents");

    // FUSE: the same bytes.
    for (key, data) in &files {
        assert_bytes_eq(&read_all(&c.p(0, key)), data, &format!("{key} on FUSE"));
    }
    assert!(!Path::new(&c.p(0, "train/refused.bin")).exists(), "the read-only export wrote a file");

    // The gateway knows the slices of a file it wrote from its own commit and reads it back
    // through the descriptor it wrote with; a rewrite on FUSE (same size, other bytes) still
    // shows through NFS once the gateway's attributes expire (--attr-ttl, 1 s).
    let (key, old) = &files[1];
    let out = run_cmd(Command::new("nfs-cat").arg(url(&format!("/datasets/{key}"))));
    assert_bytes_eq(&out.stdout, old, "read back over NFS");
    let newer = random_bytes(99, old.len());
    std::fs::write(c.p(0, key), &newer).expect("rewrite on FUSE");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = run_cmd(Command::new("nfs-cat").arg(url(&format!("/datasets/{key}"))));
    assert_bytes_eq(&out.stdout, &newer, "FUSE's rewrite read over NFS");
    s3.stop();
    nfs.stop();
}

/// A known workload through a mount, a second mount, the NFS and the S3 gateway, then each
/// process's `/metrics`: the byte counters moved by exactly what was written and read, the
/// latency histograms of the operations used have counts, and the server reports the sessions
/// and the volume's usage against its quota.
#[test]
fn metrics_count_a_known_workload() {
    if run_cmd(Command::new("python3").args(["-c", "import prometheus_client, boto3"])).status.code() != Some(0) {
        panic!("prometheus-client or boto3 is missing: scripts/deps.sh installs them");
    }
    let opts = Opts {
        volume_args: vec!["--capacity".into(), "1G".into(), "--inodes".into(), "1000".into()],
        server_args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    };
    let mut c = Cluster::with_opts("metrics", opts);
    let vol = c.volume.clone();
    let (m1, m2) = (free_port(), free_port());
    let writer = c.mount(&["--metrics", &format!("127.0.0.1:{m1}")]);
    let reader = c.mount(&["--metrics", &format!("127.0.0.1:{m2}")]);

    // N files of S bytes written on one mount (above the small-block journal's limit, so the
    // client puts the blocks itself), all read back on the other (its page cache is empty).
    const N: usize = 5;
    const S: usize = 1 << 20;
    std::fs::create_dir(c.p(writer, "m")).expect("mkdir");
    for i in 0..N {
        std::fs::write(c.p(writer, &format!("m/f{i}")), random_bytes(i as u64, S)).expect("write");
    }
    let mut read = 0;
    for i in 0..N {
        read += read_all(&c.p(reader, &format!("m/f{i}"))).len();
    }
    assert_eq!(read, N * S);

    let w = scrape(&format!("http://127.0.0.1:{m1}/metrics"));
    assert_eq!(val(&w, "strata_written_bytes_total{}"), (N * S) as f64, "bytes written");
    assert!(val(&w, "strata_fuse_ops_durations_histogram_seconds_count{method=create}") >= N as f64, "creates");
    assert!(val(&w, "strata_fuse_ops_durations_histogram_seconds_count{method=write}") >= N as f64, "writes");
    assert!(val(&w, "strata_fuse_ops_durations_histogram_seconds_count{method=mkdir}") == 1.0, "one mkdir");
    // Into a local block directory the writer writes blocks straight into their files.
    let puts = val(&w, "strata_object_request_durations_histogram_seconds_count{backend=file,method=put}")
        + val(&w, "strata_object_direct_writes_total{}");
    assert!(puts >= N as f64, "at least a block per file stored: {puts}");
    assert_eq!(
        val(&w, "strata_object_request_data_bytes_total{backend=file,method=put}"),
        (N * S) as f64,
        "bytes put to the block store"
    );
    assert_eq!(val(&w, "strata_used_buffer_size_bytes{}"), 0.0, "nothing left to upload after close");

    let r = scrape(&format!("http://127.0.0.1:{m2}/metrics"));
    assert_eq!(val(&r, "strata_read_bytes_total{}"), (N * S) as f64, "bytes read");
    assert_eq!(val(&r, "strata_written_bytes_total{}"), 0.0);
    assert!(val(&r, "strata_fuse_ops_durations_histogram_seconds_count{method=read}") >= N as f64, "reads");
    assert!(val(&r, "strata_fuse_ops_durations_histogram_seconds_count{method=lookup}") >= 1.0, "lookups");
    let (hits, misses) = (val(&r, "strata_blockcache_hits_total{}"), val(&r, "strata_blockcache_miss_total{}"));
    assert!(misses >= N as f64, "every file's first block was a miss: {misses} misses, {hits} hits");
    assert!(val(&r, "strata_blockcache_miss_bytes_total{}") >= (N * S) as f64, "every byte came from the store once");
    assert!(val(&r, "strata_blockcache_bytes{}") > 0.0, "the memory cache holds the blocks");
    assert!(
        val(&r, "strata_object_request_durations_histogram_seconds_count{backend=file,method=get}") >= N as f64,
        "block gets"
    );

    let s = scrape(&format!("http://{}/metrics", c.addr));
    assert_eq!(val(&s, "strata_sessions{}"), 2.0, "two mounts");
    let used = val(&s, &format!("strata_volume_used_bytes{{scope=cluster,volume={vol}}}"));
    assert!(used >= (N * S) as f64, "volume usage {used}");
    assert_eq!(val(&s, &format!("strata_volume_quota_bytes{{scope=cluster,volume={vol}}}")), (1u64 << 30) as f64);
    assert_eq!(val(&s, &format!("strata_volume_quota_inodes{{scope=cluster,volume={vol}}}")), 1000.0);
    assert!(val(&s, &format!("strata_volume_used_inodes{{scope=cluster,volume={vol}}}")) >= (N + 2) as f64);
    assert_eq!(val(&s, "strata_rpc_durations_histogram_seconds_count{method=Mount}"), 2.0, "two Mount calls");
    assert!(val(&s, "strata_rpc_durations_histogram_seconds_count{method=CommitWrites}") >= N as f64, "commits");
    assert!(val(&s, "strata_transaction_durations_histogram_seconds_count{engine=sqlite,kind=write}") > 0.0);
    assert!(s.contains_key("strata_pending_slices{}") && s.contains_key("strata_journal_backlog_blocks{}"));
    // The REST calls the cluster made (volume create) are timed by route.
    assert!(
        val(&s, "strata_rest_durations_histogram_seconds_count{method=POST,route=/v1/volumes,status=201}") == 1.0,
        "one volume created over REST"
    );

    // --log-format json: one object per line, the event's fields at the top level; a mount's
    // event names its session, volume and client (host and mount point).
    let log = c.server_log();
    let events: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let mounted: Vec<&serde_json::Value> = events.iter().filter(|e| e["message"] == "client mounted").collect();
    assert_eq!(mounted.len(), 2, "{log}");
    for e in mounted {
        assert!(e["session"].is_u64() && e["volume"] == vol.as_str(), "{e}");
        assert!(e["client"].as_str().is_some_and(|c| c.contains(":/")), "{e}");
    }

    // `strata stats`: a mount (through its strata.metrics xattr) and the server, one refresh.
    let reading = {
        let p = c.p(reader, "m/f0");
        std::thread::spawn(move || {
            for _ in 0..20 {
                let _ = std::fs::read(&p);
            }
        })
    };
    let mp = c.mp(reader).to_str().expect("utf8").to_string();
    let out = run_strata(&["stats", &mp, "-n", "1", "-i", "300ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stats: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("cache hits") && text.contains("OPERATION"), "{text}");
    reading.join().expect("reader");
    let out = run_strata(&["stats", &c.addr, "-n", "1", "-i", "300ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("sessions 2") && text.contains("RPC"), "{text}");
    for (args, phrase) in [
        (vec!["stats", "/nonexistent-dir"], "no such directory"),
        (vec!["stats", c.dir.to_str().expect("utf8")], "not a Strata mount point"),
        (vec!["stats", "127.0.0.1:1", "-n", "1"], "cannot reach 127.0.0.1:1"),
    ] {
        let out = run_strata(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(phrase) && err.lines().count() == 1, "{args:?}: {err}");
    }
    // `strata status`: this server up, both clients with host and mount point, the volume's
    // use against its quota.
    let st = c.cli(&["status"]);
    assert!(st.contains(&format!("{}   up", c.addr)), "{st}");
    assert!(st.contains(c.mp(writer).to_str().expect("utf8")) && st.contains("clients:  2"), "{st}");
    assert!(st.lines().any(|l| l.starts_with(&vol) && l.contains("1.0 GiB")), "{st}");
    let js: serde_json::Value = serde_json::from_str(&c.cli(&["status", "-o", "json"])).expect("status JSON");
    assert_eq!(js["servers"][0]["health"], "up", "{js}");
    assert_eq!(js["volumes"][0]["capacity"], 1u64 << 30, "{js}");
    // Each client says its version.
    let sessions = js["sessions"].as_array().expect("sessions");
    assert!(sessions.iter().all(|s| s["version"] == env!("CARGO_PKG_VERSION")), "{js}");

    // NFS: one file in with nfs-cp, read back with nfs-cat.
    let n1 = free_port();
    let mut nfs = Gateway::nfs(
        &mut c,
        &[&format!("/{vol}={vol},allow=127.0.0.1/32,squash=none")],
        &["--metrics", &format!("127.0.0.1:{n1}")],
    );
    let data = random_bytes(42, 300_000);
    let local = c.dir.join("nfs-in");
    std::fs::write(&local, &data).expect("write");
    let out = run_cmd(Command::new("nfs-cp").arg(&local).arg(nfs.nfs_url(&format!("/{vol}/nfs.bin"))));
    assert!(out.status.success(), "nfs-cp: {}", String::from_utf8_lossy(&out.stderr));
    let out = run_cmd(Command::new("nfs-cat").arg(nfs.nfs_url(&format!("/{vol}/nfs.bin"))));
    assert_bytes_eq(&out.stdout, &data, "nfs-cat");
    let g = scrape(&format!("http://127.0.0.1:{n1}/metrics"));
    assert_eq!(val(&g, "strata_written_bytes_total{}"), data.len() as f64, "bytes written over NFS");
    assert!(val(&g, "strata_nfs_ops_durations_histogram_seconds_count{procedure=WRITE}") >= 1.0);
    assert!(val(&g, "strata_nfs_ops_durations_histogram_seconds_count{procedure=READ}") >= 1.0);
    assert!(val(&g, "strata_nfs_ops_durations_histogram_seconds_count{procedure=MOUNT}") >= 1.0);
    nfs.stop();

    // S3: one put and one get with boto3.
    let s1 = free_port();
    let admin = c.token_file.clone();
    let mut s3 = Gateway::s3(&mut c, &[&admin], &["--metrics", &format!("127.0.0.1:{s1}")]);
    let script = r#"
import boto3, hashlib, sys
endpoint, secret_file, bucket = sys.argv[1:4]
secret = open(secret_file).read().strip()
key_id = hashlib.sha256(secret.encode()).hexdigest()[:12]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, region_name="us-east-1")
s3.put_object(Bucket=bucket, Key="s3/obj", Body=b"x" * 1000)
assert s3.get_object(Bucket=bucket, Key="s3/obj")["Body"].read() == b"x" * 1000
"#;
    let out = run_cmd(Command::new("python3").args([
        "-c",
        script,
        &s3.endpoint(),
        c.token_file.to_str().expect("utf8"),
        &vol,
    ]));
    assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
    let g = scrape(&format!("http://127.0.0.1:{s1}/metrics"));
    assert_eq!(val(&g, "strata_s3_ops_durations_histogram_seconds_count{operation=PutObject}"), 1.0);
    assert_eq!(val(&g, "strata_s3_ops_durations_histogram_seconds_count{operation=GetObject}"), 1.0);
    assert_eq!(val(&g, "strata_written_bytes_total{}"), 1000.0);
    s3.stop();

    // Bad input: a malformed address is a usage error; one in use is one clear line and exit 1.
    let out = run_strata(&["mount", &vol, "/nonexistent-mp", "--server", &c.addr, "--metrics", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_strata(&[
        "gateway",
        "s3",
        "--server",
        &c.addr,
        "--token-file",
        admin.to_str().expect("utf8"),
        "--metrics",
        &addr,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr} for --metrics")), "{err}");
}

/// The dashboard (/ui) in a real headless browser (tests/dashboard/browse.py: Debian's chromium
/// driven by playwright): an admin token sees every volume with its usage bar against its
/// quota, the connected client and the classes; a project viewer's token sees only its
/// project's volume. Screenshots go to $STRATA_SCREENSHOTS (docs/screenshots/ in the
/// repository) when it is set. Here, not in control.rs, so that it runs once: the page is the
/// same whatever the engine.
#[test]
fn dashboard_in_a_browser() {
    let probe = run_cmd(Command::new("python3").args(["-c", "import playwright"]));
    assert!(probe.status.success(), "playwright is missing: scripts/deps.sh installs it");
    assert!(Path::new("/usr/bin/chromium").exists(), "chromium is missing: scripts/deps.sh installs it");
    let opts = Opts { volume_args: vec!["--capacity".into(), "1G".into()], ..Default::default() };
    let mut c = Cluster::with_opts("dashboard", opts);
    let vol = c.volume.clone();
    c.cli(&["scope", "create", "ml"]);
    c.cli(&["scope", "create", "ml/vision"]);
    c.cli(&["policy", "set", "ml", "--max-volume-size", "100G"]);
    c.cli(&["volume", "create", "vision-ckpt", "--scope", "ml/vision", "--capacity", "2G", "--inodes", "100000"]);
    let (viewer, _) = c.issue_token_in("vision-viewer", "viewer", "ml/vision");
    let m = c.mount(&[]);
    std::fs::write(c.p(m, "train.bin"), random_bytes(1, 48 << 20)).expect("write");
    c.cli(&["snapshot", "create", &vol, "before-epoch-1"]);
    let shots = std::env::var("STRATA_SCREENSHOTS").map(std::path::PathBuf::from).unwrap_or_else(|_| c.dir.clone());
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/dashboard/browse.py");
    let out = run_cmd(Command::new("python3").arg(script).args([
        &format!("http://{}", c.addr),
        c.token_file.to_str().expect("utf8"),
        viewer.to_str().expect("utf8"),
        shots.to_str().expect("utf8"),
        &vol,
        "vision-ckpt",
        "--",
        "vision-ckpt",
    ]));
    assert!(
        out.status.success(),
        "browser: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shots.join("dashboard-admin.png").exists() && shots.join("dashboard-viewer.png").exists());
}
