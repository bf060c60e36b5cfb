//! Blocks served by `strata server` (`strata mount --blocks server`, and `auto` on a host that
//! does not see the server's block directory): bytes written by one mount are read back exactly
//! by another, fsync goes through the server's sync, a viewer's mount never stores a block, the
//! remote store passes the block-store checks through the real server, and a mount whose host
//! cannot see the block directory at all (hidden in its own mount namespace) still works.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use strata_blocks::conformance::{self, Offers};
use strata_blocks::layout::block_key;
use strata_blocks::{BlockError, Codec};
use strata_vfs::RemoteBlocks;

const MIB: usize = 1 << 20;

/// The `block path` line a mount logged, which says how its blocks go.
fn block_path_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().map(strip_ansi).find(|l| l.contains("block path")).unwrap_or_default()
}

fn goes(line: &str, how: &str) -> bool {
    line.contains(&format!("blocks={how}")) || line.contains(&format!("blocks=\"{how}\""))
}

/// Two mounts with `--blocks server`: large and small files, written and closed (or fsynced)
/// by one, are read back exactly by the other; a compressed volume's blocks reach the server's
/// disk as the client framed them.
#[test]
fn two_mounts_through_the_server() {
    let mut c = Cluster::new("blksrv");
    let a = c.mount(&["--blocks", "server"]);
    let b = c.mount(&["--blocks", "server"]);
    for m in [a, b] {
        let line = block_path_line(&c.mounts[m].log);
        assert!(goes(&line, "server") && line.contains("--blocks"), "mount {m}: {line:?}");
    }

    // A large file spanning several 4 MiB blocks and a short tail, written and closed by one.
    let big = random_bytes(1, 21 * MIB + 12_345);
    std::fs::write(c.p(a, "big"), &big).expect("write big");
    assert_bytes_eq(&read_all(&c.p(b, "big")), &big, "big file through the server");
    assert_bytes_eq(&read_at(&c.p(b, "big"), 9 * MIB as u64 + 77, 5000), &big[9 * MIB + 77..9 * MIB + 5077], "ranged");

    // Small files, the other way round.
    for (i, n) in [1usize, 4095, 4096, 100_000, 3 * MIB + 1].iter().enumerate() {
        let data = random_bytes(10 + i as u64, *n);
        std::fs::write(c.p(b, &format!("small{i}")), &data).expect("write small");
        assert_bytes_eq(&read_all(&c.p(a, &format!("small{i}"))), &data, &format!("small file of {n} bytes"));
    }

    // fsync: the blocks are synced by the server, then the commit; the reader sees it.
    let synced = random_bytes(3, 6 * MIB + 3);
    write_synced(&c.p(a, "synced"), &synced).expect("write and fsync through the server");
    assert_bytes_eq(&read_all(&c.p(b, "synced")), &synced, "fsynced file");

    // An overwrite in the middle (a new slice over the old blocks) reads back merged.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(c.p(b, "big")).expect("open for overwrite");
        f.write_all_at(b"OVERWRITTEN", 5 * MIB as u64).expect("overwrite");
        f.sync_all().expect("fsync");
    }
    let mut want = big.clone();
    want[5 * MIB..5 * MIB + 11].copy_from_slice(b"OVERWRITTEN");
    assert_bytes_eq(&read_all(&c.p(a, "big")), &want, "overwritten big file");

    // A compressed volume: the client compresses, the server stores the frames as they are.
    c.cli(&["storageclass", "create", "zs", "--compression", "zstd"]);
    c.cli(&["volume", "create", "zvol", "--class", "zs"]);
    let (za, zb) = (c.dir.join("za"), c.dir.join("zb"));
    for d in [&za, &zb] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let tf = c.token_file.clone();
    let ma = c.mount_as("zvol", &tf, &za, &["--blocks", "server"]);
    let mb = c.mount_as("zvol", &tf, &zb, &["--blocks", "server"]);
    let texty: Vec<u8> = (0..9 * MIB).map(|i| b"strata blocks "[(i / 7) % 14]).collect();
    std::fs::write(c.p(ma, "text"), &texty).expect("write compressible");
    assert_bytes_eq(&read_all(&c.p(mb, "text")), &texty, "compressed volume through the server");
    let vid = c.volume_id("zvol");
    let dir = c.data.join("blocks").join(format!("v{vid}"));
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("block dir").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert!(!files.is_empty(), "blocks of the compressed volume on the server's disk");
    for f in files {
        let bytes = std::fs::read(&f).expect("block file");
        assert_eq!(&bytes[..4], b"SBLK", "{} stored as the client framed it", f.display());
        assert!(bytes.len() < 1 << 20, "{} stored compressed ({} bytes)", f.display(), bytes.len());
    }
}

/// The remote store through a real server: the block-store checks (whole and ranged reads,
/// wrong lengths, missing blocks, sync), with and without compression; then who may do what:
/// viewers read but never put, other scopes and revoked tokens get nothing, and keys that are
/// not block keys are refused.
#[test]
fn remote_store_conforms_and_is_authorized() {
    let mut c = Cluster::new("blkauth");
    c.allow_log("token");
    c.cli(&["scope", "create", "other"]);
    let vol = c.volume_id(&c.volume);
    let (viewer, _) = c.issue_token_in("viewer", "viewer", "cluster");
    let (stranger, _) = c.issue_token_in("stranger", "editor", "other");
    let (editor, editor_id) = c.issue_token_in("editor", "editor", "cluster");
    let secret = |p: &Path| std::fs::read_to_string(p).expect("token").trim().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let url = format!("file://{}", c.data.join("blocks").display());
    let admin = c.token();

    rt.block_on(async {
        let open = |tok: &str, codec: Codec| {
            RemoteBlocks::new(&c.addr, tok, vol, Duration::from_secs(5)).expect("remote").block_store(&url, codec)
        };
        // The conformance suite every block store runs, on every codec; what it cannot check
        // through clients (they never list or delete), the server's disk shows.
        let runs = conformance::check_every_codec(|codec| open(&admin, codec), vol, Offers::PUT_GET_SYNC).await;
        for (run, codec) in runs.iter().zip([Codec::None, Codec::Lz4, Codec::Zstd]) {
            let on_disk = std::fs::read(c.data.join("blocks").join(&run.big)).expect("block file");
            assert_eq!(on_disk.starts_with(b"SBLK"), codec.is_compressing(), "{codec:?}: stored as sent");
        }

        let k = runs[0].big.clone();
        let as_viewer = open(&secret(&viewer), Codec::None);
        assert_eq!(as_viewer.get_range(&k, 0..10).await.expect("a viewer reads").len(), 10);
        let e = as_viewer.put(&block_key(vol, 5000, 0, 3), Bytes::from_static(b"abc")).await.expect_err("viewer put");
        assert_eq!(e.errno(), libc::EACCES, "viewer put: {e}");
        assert_eq!(strata_vfs::VfsError::from(e).errno(), libc::EACCES);
        assert!(!c.data.join("blocks").join(block_key(vol, 5000, 0, 3)).exists(), "nothing stored");

        let as_stranger = open(&secret(&stranger), Codec::None);
        let e = as_stranger.get(&k, 4 << 20).await.expect_err("another scope's volume");
        assert_eq!(e.errno(), libc::EACCES, "{e}");
        let e = as_stranger.put(&block_key(vol, 5001, 0, 3), Bytes::from_static(b"abc")).await.expect_err("put");
        assert_eq!(e.errno(), libc::EACCES, "{e}");

        let store = open(&admin, Codec::None);
        for bad in ["../../admin.token", "/etc/passwd", "v1/chunks/0/0/../../../../meta.db", ".strata-store-id"] {
            assert!(store.get(bad, 3).await.is_err(), "{bad} read");
            assert!(store.put(bad, Bytes::from_static(b"abc")).await.is_err(), "{bad} written");
        }
        assert!(store.put(&block_key(vol, 5002, 0, 3), Bytes::from(vec![0u8; 1 << 20])).await.is_err(), "oversized");
        let missing_volume = block_key(vol + 100, 1, 0, 3);
        assert!(matches!(store.get(&missing_volume, 3).await, Err(BlockError::Missing(_))), "unknown volume");

        // Revocation applies at the very next call.
        let as_editor = open(&secret(&editor), Codec::None);
        as_editor.put(&block_key(vol, 5003, 0, 3), Bytes::from_static(b"abc")).await.expect("editor put");
        c.cli(&["token", "revoke", &editor_id]);
        let e = as_editor.get(&block_key(vol, 5003, 0, 3), 3).await.expect_err("revoked");
        assert_eq!(e.errno(), libc::EACCES, "{e}");
    });

    // A viewer's mount through the server reads, and never writes.
    let adm = c.mount(&["--blocks", "server"]);
    std::fs::write(c.p(adm, "f"), b"from the admin").expect("write");
    let mp = c.dir.join("viewer-mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let name = c.volume.clone();
    let vm = c.mount_as(&name, &viewer, &mp, &["--blocks", "server"]);
    assert_eq!(std::fs::read(c.p(vm, "f")).expect("viewer reads"), b"from the admin");
    assert_eq!(err_of(write_synced(&c.p(vm, "g"), b"x").map_err(std::io::Error::from_raw_os_error)), libc::EACCES);
    assert_eq!(
        err_of(std::fs::OpenOptions::new().write(true).open(c.p(vm, "f"))),
        libc::EACCES,
        "viewer opens for writing"
    );
}

/// A mount on a "host" that cannot see the server's data directory at all (a tmpfs over it in
/// the mount's own namespace): `auto` sends blocks through the server, and its files are the
/// same bytes a mount that shares the directory reads and writes.
#[test]
fn hidden_block_directory_goes_through_the_server() {
    let mut c = Cluster::new("blkhide");
    let host = c.mount(&[]);
    let line = block_path_line(&c.mounts[host].log);
    assert!(goes(&line, "direct") && line.contains("sees the server"), "host mount: {line:?}");

    // The token lives in the data directory, which the hidden mount cannot see.
    let tf = c.dir.join("admin.copy");
    std::fs::copy(&c.token_file, &tf).expect("copy token");
    let mp = c.dir.join("hidden");
    std::fs::create_dir(&mp).expect("mkdir");
    let log = c.dir.join("hidden-mount.log");
    c.watch_log(log.clone());
    let script = format!(
        "mount -t tmpfs tmpfs '{}' && exec '{}' mount '{}' '{}' --server {} --token-file '{}' --cache-size 64M",
        c.data.display(),
        strata_bin(),
        c.volume,
        mp.display(),
        c.addr,
        tf.display()
    );
    let mut cmd = Command::new("unshare");
    quiet_env(&mut cmd).args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let mut hidden = Service::start("hidden mount", &mut cmd, &log);
    let pid = hidden.pid();
    hidden.wait_ready(|| fuse_mounted_in(pid, &mp), String::new);
    let in_ns = |cmd: &str| in_mount_ns(pid, &["sh", "-c", cmd]);
    assert!(!is_fuse_mount(&mp), "the hidden mount is visible only in its namespace");
    let line = block_path_line(&log);
    assert!(goes(&line, "server") && line.contains("not visible"), "hidden mount: {line:?}");
    let ls = in_ns(&format!("ls -A '{}'", c.data.display()));
    assert!(ls.status.success() && ls.stdout.is_empty(), "the data directory is hidden: {ls:?}");

    // Written in the namespace, read on the host mount (which reads the directory itself).
    let data = random_bytes(7, 9 * MIB + 5);
    let src = c.dir.join("src.bin");
    std::fs::write(&src, &data).expect("source");
    let w = in_ns(&format!("cp '{}' '{}/from-hidden' && sync", src.display(), mp.display()));
    assert!(w.status.success(), "write in the namespace: {}", String::from_utf8_lossy(&w.stderr));
    assert_bytes_eq(&read_all(&c.p(host, "from-hidden")), &data, "hidden mount's file on the host");

    // Written on the host mount, read in the namespace.
    let other = random_bytes(8, 5 * MIB + 17);
    std::fs::write(c.p(host, "from-host"), &other).expect("host write");
    let back = c.dir.join("back.bin");
    let r = in_ns(&format!("cat '{}/from-host' > '{}'", mp.display(), back.display()));
    assert!(r.status.success(), "read in the namespace: {}", String::from_utf8_lossy(&r.stderr));
    assert_bytes_eq(&std::fs::read(&back).expect("copied back"), &other, "host file in the hidden mount");
    let small = in_ns(&format!("printf tiny > '{}/small' && cat '{}/small'", mp.display(), mp.display()));
    assert_eq!(small.stdout, b"tiny");
    assert_eq!(std::fs::read(c.p(host, "small")).expect("small"), b"tiny");
    let _ = hidden.stop();
}

/// A server restart under `--blocks server` mounts: a write and a read issued while the server
/// is down (block puts and gets retried like metadata calls) complete once it is back.
#[test]
fn server_restart_is_survived_through_the_server() {
    let mut c = Cluster::new("blkrestart");
    c.allow_log("strata server unreachable");
    c.allow_log("heartbeat failed");
    let a = c.mount(&["--blocks", "server"]);
    let b = c.mount(&["--blocks", "server"]);
    let before = random_bytes(21, 9 * MIB + 1);
    std::fs::write(c.p(a, "before"), &before).expect("write before the restart");

    c.kill9_server();
    let during = random_bytes(22, 9 * MIB + 2);
    let (wpath, wdata) = (c.p(a, "during"), during.clone());
    let writer = std::thread::spawn(move || std::fs::write(&wpath, &wdata).map_err(|e| e.to_string()));
    // B never read this file: its bytes must come from the server once it is back.
    let rpath = c.p(b, "before");
    let reader = std::thread::spawn(move || std::fs::read(&rpath).map_err(|e| e.to_string()));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!writer.is_finished() && !reader.is_finished(), "I/O finished while the server was down");
    c.start_server();

    assert_eq!(writer.join().expect("writer"), Ok(()), "write issued while the server was down");
    let got = reader.join().expect("reader").expect("read issued while the server was down");
    assert_bytes_eq(&got, &before, "read through the server after its restart");
    assert_bytes_eq(&read_all(&c.p(b, "during")), &during, "written during the restart");
}
