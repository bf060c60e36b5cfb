//! `strata warmup`: after a warm-up, reading the data makes no block-store requests.
//!
//! - In process: the real `Vfs` against a real server, its object store wrapped in a
//!   `FaultyStore` with no rules (which counts calls): after `Vfs::warm`, reading every file
//!   makes no get; with a memory cache too small for the data, the disk cache holds it; with
//!   neither big enough, the warm-up says so; a new client on the disk cache a warm-up filled
//!   finds every block there, a journaled one included.
//! - End to end on a FUSE mount: a fresh mount shows 0% cached, `strata warmup` loads it all,
//!   `--check` shows 100% and the exact bytes, reading back is exact and the mount's count of
//!   block-store gets (`strata.stats`) does not move; `--evict` brings it back to 0%. Bad
//!   paths, unreadable files and the reserved names are refused.

mod common;

use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use strata_blocks::faults::{FaultyStore, Op};
use strata_vfs::{Ctx, StoreLayer, Vfs, VfsConfig};

const MIB: usize = 1 << 20;

/// The test data: (path under the mount, length).
const FILES: &[(&str, usize)] = &[
    ("data/big", 9 * MIB + 12_345),
    ("data/sub/mid", 4 * MIB),
    ("data/sub/small", 1000),
    ("data/empty", 0),
    ("other/c", 3 * MIB + 7),
];

fn write_files(c: &Cluster, m: usize) -> u64 {
    for d in ["data", "data/sub", "other"] {
        std::fs::create_dir_all(c.p(m, d)).expect("mkdir");
    }
    for (i, (name, len)) in FILES.iter().enumerate() {
        std::fs::write(c.p(m, name), random_bytes(i as u64, *len)).expect("write");
    }
    // One small file fsynced: its block may still be journaled in the server when it is warmed.
    write_synced(&c.p(m, "data/sub/synced"), &random_bytes(99, 5000)).expect("write synced");
    FILES.iter().map(|(_, n)| *n as u64).sum::<u64>() + 5000
}

fn want(name: &str) -> Vec<u8> {
    if name == "data/sub/synced" {
        return random_bytes(99, 5000);
    }
    let (i, (_, len)) = FILES.iter().enumerate().find(|(_, (n, _))| *n == name).expect("known file");
    random_bytes(i as u64, *len)
}

fn all_names() -> Vec<&'static str> {
    FILES.iter().map(|(n, _)| *n).chain(["data/sub/synced"]).collect()
}

// ---- in process: the Vfs over a counting store ----

const ROOT: Ctx = Ctx { uid: 0, gid: 0, groups: Vec::new(), check: false };

async fn ino_of(vfs: &Vfs, path: &str) -> u64 {
    let names: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
    vfs.walk(&ROOT, vfs.root(), &names, true).await.expect("walk").0
}

async fn read_file(vfs: &Vfs, ino: u64) -> Vec<u8> {
    let fh = vfs.open(&ROOT, ino, libc::O_RDONLY).await.expect("open").fh;
    let mut out = Vec::new();
    loop {
        let got = vfs.read(fh, out.len() as u64, MIB as u32).await.expect("read");
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    vfs.release(fh).await.expect("release");
    out
}

/// Attaches the volume with `cfg`, its store counted; the Vfs and the counter.
async fn attach_counted(c: &Cluster, mut cfg: VfsConfig) -> (Arc<Vfs>, Arc<FaultyStore>) {
    let slot: Arc<Mutex<Option<Arc<FaultyStore>>>> = Arc::default();
    let s = slot.clone();
    cfg.store_layer = Some(StoreLayer::new(move |inner| {
        let f = FaultyStore::new(inner);
        *s.lock().expect("slot") = Some(f.clone());
        f
    }));
    let vfs = Vfs::attach(&c.addr, &c.token(), &c.volume, "warmup-test", cfg).await.expect("attach");
    let counter = slot.lock().expect("slot").clone().expect("the layer was used");
    (vfs, counter)
}

#[test]
fn a_warmed_vfs_reads_without_block_store_gets() {
    let mut c = Cluster::new("warmvfs");
    let m = c.mount(&[]);
    let total = write_files(&c, m);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cache_dir = c.dir.join("disk-cache");
    let small_mem = 8 << 20;
    let setups = [
        ("memory cache", VfsConfig { mem_cache: 1 << 30, ..VfsConfig::default() }),
        (
            "small memory cache over a disk cache",
            VfsConfig { mem_cache: small_mem, disk_cache: Some((cache_dir, 256 << 20)), ..VfsConfig::default() },
        ),
    ];
    rt.block_on(async {
        for (what, cfg) in setups {
            let (vfs, store) = attach_counted(&c, cfg).await;
            let mut inos = Vec::new();
            for name in all_names() {
                inos.push((name, ino_of(&vfs, name).await));
            }
            let mut cached = 0;
            for &(name, ino) in &inos {
                assert_eq!(vfs.cached(ino).await.expect("cached").cached, 0, "{what}: {name} cold");
                let w = vfs.warm(ino).await.expect("warm");
                assert_eq!(w.now.cached, w.now.total, "{what}: {name} all cached after its warm-up");
                cached += w.now.total;
            }
            assert_eq!(cached, total, "{what}");
            let gets = store.calls(Op::Get);
            assert!(gets > 0, "{what}: the warm-up read the store");
            let counted = vfs.cache_stats().block_gets;
            for &(name, ino) in &inos {
                assert_eq!(vfs.cached(ino).await.expect("cached").cached, want(name).len() as u64, "{what}: {name}");
                assert_bytes_eq(&read_file(&vfs, ino).await, &want(name), &format!("{what}: {name}"));
            }
            assert_eq!(store.calls(Op::Get), gets, "{what}: reading warmed files made block-store gets");
            assert_eq!(vfs.cache_stats().block_gets, counted, "{what}: the mount's own count agrees");

            // Evicted, nothing is cached, and reading goes to the store again.
            let (_, big) = inos[0];
            let gone = vfs.evict(big).await.expect("evict");
            assert_eq!(gone, want("data/big").len() as u64, "{what}: evict says what was cached");
            assert_eq!(vfs.cached(big).await.expect("cached").cached, 0, "{what}: evicted");
            assert_bytes_eq(&read_file(&vfs, big).await, &want("data/big"), &format!("{what}: after evict"));
            assert!(store.calls(Op::Get) > gets, "{what}: an evicted file is read from the store");
            vfs.detach().await.expect("detach");
        }

        // Neither cache can hold it: the warm-up says so rather than claiming it all.
        let (vfs, _) = attach_counted(&c, VfsConfig { mem_cache: small_mem, ..VfsConfig::default() }).await;
        let big = ino_of(&vfs, "data/big").await;
        let w = vfs.warm(big).await.expect("warm");
        assert_eq!(w.now.total, want("data/big").len() as u64);
        assert!(w.now.cached < w.now.total, "a 9 MiB file in an 8 MiB cache: {w:?}");
        vfs.detach().await.expect("detach");
    });
}

#[test]
fn a_warm_up_leaves_every_block_on_the_disk_cache() {
    // The fsynced file's block stays in the server's journal, so its warm-up takes the
    // journaled copy rather than the store's.
    let opts = Opts { server_args: vec!["--journal-delay".into(), "1h".into()], ..Opts::default() };
    let mut c = Cluster::with_opts("warmdisk", opts);
    let m = c.mount(&[]);
    let total = write_files(&c, m);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cache_dir = c.dir.join("disk-cache");
    let cfg =
        || VfsConfig { mem_cache: 1 << 20, disk_cache: Some((cache_dir.clone(), 256 << 20)), ..VfsConfig::default() };
    rt.block_on(async {
        let (vfs, _) = attach_counted(&c, cfg()).await;
        for name in all_names() {
            let w = vfs.warm(ino_of(&vfs, name).await).await.expect("warm");
            assert_eq!(w.now.cached, w.now.total, "{name} all cached after its warm-up");
        }
        vfs.detach().await.expect("detach");
        drop(vfs);

        // A new client on the same disk cache, with next to no memory cache: what it finds
        // cached is what the warm-up left on disk.
        let (vfs, store) = attach_counted(&c, cfg()).await;
        let mut cached = 0;
        for name in all_names() {
            let ino = ino_of(&vfs, name).await;
            let now = vfs.cached(ino).await.expect("cached");
            assert_eq!(now.cached, now.total, "{name}: on the disk cache");
            cached += now.cached;
            assert_bytes_eq(&read_file(&vfs, ino).await, &want(name), name);
        }
        assert_eq!(cached, total);
        assert_eq!(store.calls(Op::Get), 0, "reading what the disk cache holds made block-store gets");
        vfs.detach().await.expect("detach");
    });
}

// ---- end to end: the command on a FUSE mount ----

fn xattr(path: &Path, name: &str) -> Result<String, i32> {
    let (p, n) = (cpath(path), CString::new(name).expect("name"));
    let mut buf = [0u8; 512];
    // SAFETY: valid C strings and a buffer of the size passed.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 { Err(errno()) } else { Ok(String::from_utf8_lossy(&buf[..r as usize]).into_owned()) }
}

fn block_gets(mp: &Path) -> u64 {
    let s = xattr(mp, "strata.stats").expect("strata.stats");
    s.split_whitespace().find_map(|w| w.strip_prefix("block_gets=")).and_then(|v| v.parse().ok()).expect("block_gets")
}

fn warmup(dir: &Path, args: &[&str]) -> std::process::Output {
    run_cmd(strata().current_dir(dir).arg("warmup").args(args))
}

#[track_caller]
fn warmup_ok(dir: &Path, args: &[&str]) -> String {
    let out = warmup(dir, args);
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "strata warmup {args:?}: {so}\n{se}");
    so.into_owned()
}

#[test]
fn warmup_check_and_evict_on_a_mount() {
    let mut c = Cluster::new("warmup");
    let m = c.mount(&[]);
    let total = write_files(&c, m);
    let data_bytes = total - FILES.iter().find(|(n, _)| *n == "other/c").map_or(0, |(_, n)| *n as u64);
    // A fresh mount: its caches are cold.
    c.mounts[m].stop();
    // Room to spare: the memory cache is split in shards, each with its own share.
    let m = c.mount(&["--cache-size", "512M"]);
    let mp = c.mp(m).to_path_buf();

    let out = warmup_ok(&mp, &["--check", "data", "other"]);
    assert!(out.contains(&format!("data: 0.0% cached (0 of {data_bytes} bytes")), "{out}");
    assert!(out.contains(&format!("total: 0.0% cached (0 of {total} bytes")), "{out}");

    let out = warmup_ok(&mp, &["data", "other", "--threads", "3"]);
    assert!(out.contains(&format!("total: 100.0% cached ({total} of {total} bytes")), "{out}");
    assert!(out.contains("warmed in"), "{out}");
    let out = warmup_ok(&mp, &["--check", "data", "other/c"]);
    assert!(out.contains(&format!("data: 100.0% cached ({data_bytes} of {data_bytes} bytes")), "{out}");
    assert!(out.contains(&format!("total: 100.0% cached ({total} of {total} bytes")), "{out}");

    // Reading it all back: exact, and not one block fetched.
    let before = block_gets(&mp);
    for name in all_names() {
        assert_bytes_eq(&read_all(&c.p(m, name)), &want(name), name);
    }
    assert_eq!(block_gets(&mp), before, "reading warmed files made block-store requests");

    // Evicted: 0% again, and a read goes to the store.
    let out = warmup_ok(&mp, &["--evict", "data", "other"]);
    assert!(out.contains(&format!("evicted {total} bytes")), "{out}");
    let out = warmup_ok(&mp, &["--check", "data", "other"]);
    assert!(out.contains(&format!("total: 0.0% cached (0 of {total} bytes")), "{out}");
    assert_bytes_eq(&read_all(&c.p(m, "data/big")), &want("data/big"), "after evict");
    assert!(block_gets(&mp) > before, "an evicted file is read from the store");

    // Paths that are not there or not on a Strata mount.
    let out = warmup(&mp, &["no/such/file"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no such file or directory"), "{err}");
    let out = warmup(&mp, &[c.dir.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not on a Strata mount"), "{err}");

    // The names are the mount's own: not listed, not stored, and only for readers.
    let secret = c.p(m, "data/sub/mid");
    assert!(xattr(&secret, "strata.warmup").is_ok());
    let (p, n) = (cpath(&secret), CString::new("strata.warmup").expect("name"));
    // SAFETY: valid C strings and a value of the length passed.
    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_errno(rc as i64, libc::EPERM, "setxattr strata.warmup");
    let mut list = [0u8; 1024];
    // SAFETY: a valid C string and a buffer of the size passed.
    let len = unsafe { libc::listxattr(p.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    assert!(len >= 0 && !String::from_utf8_lossy(&list[..len as usize]).contains("strata."), "listed");
    assert_eq!(xattr(&secret, "strata.nonsense"), Err(libc::ENODATA));
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65534;
    let try_warm = |path: &Path| {
        let p = cpath(path);
        let n = &n;
        as_user(NOBODY, NOBODY, move || {
            let mut b = [0u8; 128];
            // SAFETY: raw syscall on strings prepared before fork.
            let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), b.as_mut_ptr().cast(), b.len()) };
            if r < 0 { errno() } else { 0 }
        })
    };
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(try_warm(&secret), 0, "another user who may read the file warms it");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(try_warm(&secret), libc::EACCES, "a user who cannot read the file cannot warm it");
}
