//! The gateways together, as the README's walkthrough runs them: a volume exported over NFS
//! with an allow-list and a read-only export, a dataset copied in with nfs-cp, listed and read
//! with boto3 through the S3 gateway, and read on a FUSE mount: the same bytes every way.

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
