//! Separate hosts: the server and two clients each in a network namespace of their own (veth
//! pairs, addresses only inside the namespaces this test creates), and each client in a mount
//! namespace where the server's block directory is covered by an empty tmpfs, so blocks can
//! only travel through the server. What one client writes and closes, the other reads exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const MIB: usize = 1 << 20;

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = run_cmd(Command::new("ip").args(args));
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Network namespaces and the processes in them, removed on drop.
struct Hosts {
    names: Vec<String>,
    procs: Vec<Service>,
}

impl Hosts {
    /// A namespace for the server and one per client, each client joined to the server by a
    /// veth pair on its own /24: server side 10.201.N.1, client side 10.201.N.2.
    fn new(tag: &str, clients: usize) -> Hosts {
        let mut h = Hosts { names: Vec::new(), procs: Vec::new() };
        let srv = format!("st-{tag}-srv");
        ip(&["netns", "add", &srv]);
        h.names.push(srv.clone());
        ip(&["-n", &srv, "link", "set", "lo", "up"]);
        for n in 1..=clients {
            let cli = format!("st-{tag}-c{n}");
            ip(&["netns", "add", &cli]);
            h.names.push(cli.clone());
            let (a, b) = (format!("st{tag}s{n}"), format!("st{tag}c{n}"));
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            ip(&["link", "set", &a, "netns", &srv]);
            ip(&["link", "set", &b, "netns", &cli]);
            ip(&["-n", &srv, "addr", "add", &format!("10.201.{n}.1/24"), "dev", &a]);
            ip(&["-n", &cli, "addr", "add", &format!("10.201.{n}.2/24"), "dev", &b]);
            ip(&["-n", &srv, "link", "set", &a, "up"]);
            ip(&["-n", &cli, "link", "set", &b, "up"]);
            ip(&["-n", &cli, "link", "set", "lo", "up"]);
        }
        h
    }

    /// A process in namespace `ns`, output to `log`.
    fn spawn(&mut self, ns: &str, args: &[&str], log: &Path) -> u32 {
        let mut cmd = Command::new("ip");
        quiet_env(&mut cmd).args(["netns", "exec", ns]).args(args);
        let s = Service::start(&format!("{} in {ns}", args[0]), &mut cmd, log);
        let pid = s.pid();
        self.procs.push(s);
        pid
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Mount processes first (SIGTERM unmounts in their own namespace), the server last.
        for s in self.procs.iter_mut().rev() {
            let _ = s.stop_within(Duration::from_secs(20));
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn clients_on_separate_hosts_share_a_volume_through_the_server() {
    if !Path::new("/proc/self/ns/net").exists() || Command::new("ip").arg("-V").output().is_err() {
        panic!("network namespaces and iproute2 are needed (scripts/deps.sh installs iproute2)");
    }
    let tmp = tempfile::Builder::new().prefix("strata-it-hosts-").tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("path");
    let data = dir.join("data");
    // Each test names its namespaces apart: the two may run at once in one process.
    let tag = format!("h{:x}", std::process::id() % 0xfff);
    let mut h = Hosts::new(&tag, 2);
    let bin = strata_bin();
    let srv_ns = h.names[0].clone();
    h.spawn(
        &srv_ns,
        &[bin, "server", "--data", &data.to_string_lossy(), "--listen", "0.0.0.0:7420"],
        &dir.join("server.log"),
    );
    let token = data.join("admin.token");
    assert!(
        wait_until(Duration::from_secs(30), || token.exists()),
        "server did not start:\n{}",
        tail(&dir.join("server.log"), 20)
    );
    // The control plane from client host 1.
    let c1 = h.names[1].clone();
    let tf = token.to_string_lossy().into_owned();
    let on_host1 = |args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &c1, bin]).args(args).args(["--server", "10.201.1.1:7420", "--token-file", &tf]);
        run_cmd(&mut cmd)
    };
    let ok = wait_until(Duration::from_secs(30), || on_host1(&["volume", "list"]).status.success());
    assert!(ok, "server unreachable from client host 1:\n{}", tail(&dir.join("server.log"), 20));
    let out = on_host1(&["volume", "create", "shared"]);
    assert!(out.status.success(), "volume create: {}", String::from_utf8_lossy(&out.stderr));

    // Each client: its own host address, the block directory hidden, the volume mounted.
    let blocks = data.join("blocks");
    let mut pids = Vec::new();
    let mut mps: Vec<PathBuf> = Vec::new();
    for n in 1..=2 {
        let mp = dir.join(format!("mnt{n}"));
        std::fs::create_dir(&mp).expect("mount point");
        let script = format!(
            "mount -t tmpfs tmpfs {blocks} && exec {bin} mount shared {mp} --server 10.201.{n}.1:7420 \
             --token-file {tf} --attr-ttl 0 --entry-ttl 0",
            blocks = blocks.display(),
            mp = mp.display()
        );
        let ns = h.names[n].clone();
        let pid = h.spawn(&ns, &["sh", "-c", &script], &dir.join(format!("mount{n}.log")));
        assert!(
            wait_until(Duration::from_secs(30), || fuse_mounted_in(pid, &mp)),
            "client {n} did not mount:\n{}",
            tail(&dir.join(format!("mount{n}.log")), 20)
        );
        pids.push(pid);
        mps.push(mp);
    }
    // The clients chose to move blocks through the server, and really cannot see its blocks.
    for n in 1..=2 {
        let log = std::fs::read_to_string(dir.join(format!("mount{n}.log"))).unwrap_or_default();
        assert!(
            log.lines().any(|l| l.contains("block path") && l.contains("blocks=\"server\"")),
            "client {n} does not move blocks through the server:\n{log}"
        );
    }
    let out = in_mount_ns(pids[0], &["ls", "-A", &blocks.to_string_lossy()]);
    assert!(out.status.success() && out.stdout.is_empty(), "client 1 sees the block directory: {out:?}");

    // A large file (several blocks) and small files written by one, read exactly by the other.
    let big = random_bytes(42, 21 * MIB + 123);
    let src = dir.join("big.src");
    std::fs::write(&src, &big).expect("source file");
    let dst1 = mps[0].join("big");
    let out = in_mount_ns(pids[0], &["cp", &src.to_string_lossy(), &dst1.to_string_lossy()]);
    assert!(out.status.success(), "cp on client 1: {}", String::from_utf8_lossy(&out.stderr));
    let out = in_mount_ns(
        pids[0],
        &["sh", "-c", &format!("for i in 1 2 3 4 5; do echo small-$i > {}/s$i; done", mps[0].display())],
    );
    assert!(out.status.success(), "small files on client 1: {}", String::from_utf8_lossy(&out.stderr));
    let out = in_mount_ns(pids[1], &["cmp", &src.to_string_lossy(), &mps[1].join("big").to_string_lossy()]);
    assert!(out.status.success(), "client 2 reads the big file differently: {}", String::from_utf8_lossy(&out.stdout));
    for i in 1..=5 {
        let out = in_mount_ns(pids[1], &["cat", &mps[1].join(format!("s{i}")).to_string_lossy()]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("small-{i}\n"), "small file {i} on client 2");
    }
    // And the other way round, with a rename seen across hosts.
    let out = in_mount_ns(
        pids[1],
        &["sh", "-c", &format!("echo back > {0}/from2 && mv {0}/from2 {0}/from2.done", mps[1].display())],
    );
    assert!(out.status.success(), "client 2 writes: {}", String::from_utf8_lossy(&out.stderr));
    let out = in_mount_ns(pids[0], &["cat", &mps[0].join("from2.done").to_string_lossy()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "back\n", "client 1 reads client 2's file");
    // The blocks are on the server's disk (seen from the test's own namespace).
    assert!(dir_has_files(&blocks), "no blocks on the server's disk");
    for (n, log) in ["server.log", "mount1.log", "mount2.log"].iter().enumerate() {
        let text = tolerate_unmount_race(&std::fs::read_to_string(dir.join(log)).unwrap_or_default());
        let bad = problem_lines(&text);
        assert!(bad.is_empty(), "host {n} log has problems:\n{}", bad.join("\n"));
    }
    drop(h);
}

// ---- the peer cache: clients on one LAN serving blocks to each other ----

/// Hosts on one LAN: a namespace holding a bridge, the server's and each client's namespace
/// attached to it (10.203.S.1 the server, 10.203.S.1N client N), and this test's own
/// namespace attached too (10.203.S.254), where it forwards a port to the S3 server on its
/// loopback. S is picked per run so concurrent runs do not share a subnet.
struct Lan {
    hosts: Hosts,
    subnet: u8,
}

impl Lan {
    fn new(tag: &str, clients: usize) -> Lan {
        let mut hosts = Hosts { names: Vec::new(), procs: Vec::new() };
        let subnet = (std::process::id() % 250 + 1) as u8;
        let lan = format!("st-{tag}-lan");
        ip(&["netns", "add", &lan]);
        hosts.names.push(lan.clone());
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan, "link", "set", "br0", "up"]);
        // Host 0 is the server, then the clients; the test's own side last.
        for n in 0..=clients {
            let ns = if n == 0 { format!("st-{tag}-srv") } else { format!("st-{tag}-c{n}") };
            ip(&["netns", "add", &ns]);
            hosts.names.push(ns.clone());
            let host_ip = if n == 0 { format!("10.203.{subnet}.1/24") } else { format!("10.203.{subnet}.1{n}/24") };
            Self::attach(&lan, &format!("sp{tag}{n}"), Some(&ns), &host_ip);
        }
        Self::attach(&lan, &format!("sp{tag}t"), None, &format!("10.203.{subnet}.254/24"));
        Lan { hosts, subnet }
    }

    /// A veth pair from the bridge to namespace `ns` (this test's own when `None`), with `addr`.
    fn attach(lan: &str, name: &str, ns: Option<&str>, addr: &str) {
        let (a, b) = (format!("{name}a"), format!("{name}b"));
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", lan]);
        ip(&["-n", lan, "link", "set", &a, "master", "br0"]);
        ip(&["-n", lan, "link", "set", &a, "up"]);
        match ns {
            Some(ns) => {
                ip(&["link", "set", &b, "netns", ns]);
                ip(&["-n", ns, "addr", "add", addr, "dev", &b]);
                ip(&["-n", ns, "link", "set", &b, "up"]);
                ip(&["-n", ns, "link", "set", "lo", "up"]);
            }
            None => {
                ip(&["addr", "add", addr, "dev", &b]);
                ip(&["link", "set", &b, "up"]);
            }
        }
    }

    fn addr(&self, host: usize) -> String {
        if host == 0 { format!("10.203.{}.1", self.subnet) } else { format!("10.203.{}.1{host}", self.subnet) }
    }

    /// Forwards `ADDR(254):PORT` to `target` (the S3 server on this namespace's loopback), so
    /// the hosts reach it; returns the port. The forwarder lives as long as the process.
    fn forward(&self, target: &str) -> u16 {
        let l = std::net::TcpListener::bind(format!("10.203.{}.254:0", self.subnet)).expect("bind forwarder");
        let port = l.local_addr().expect("addr").port();
        let target = target.to_string();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(a) = conn else { continue };
                let Ok(b) = std::net::TcpStream::connect(&target) else { continue };
                let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    })
                };
                pipe(a, b2);
                pipe(b, a2);
            }
        });
        port
    }
}

/// A client's `strata.stats` counters (read in its mount namespace).
fn mount_stats(pid: u32, mp: &Path) -> std::collections::HashMap<String, u64> {
    let py = "import os,sys; print(os.getxattr(sys.argv[1], 'strata.stats').decode())";
    let out = in_mount_ns(pid, &["python3", "-c", py, &mp.to_string_lossy()]);
    assert!(out.status.success(), "strata.stats: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Three clients on separate hosts read one dataset from S3: with the peer cache off each reads
/// every block from the store; with it on the blocks are read from the store once in all. A
/// peer killed mid-read costs nothing but store reads (byte-exact results), and a peer hands
/// nothing to a token that cannot read the volume.
#[test]
#[ignore = "needs S3: set STRATA_TEST_S3_ENDPOINT (scripts/s3.sh)"]
fn a_peer_cache_reads_a_dataset_from_the_store_once_per_cluster() {
    if !Path::new("/proc/self/ns/net").exists() || Command::new("ip").arg("-V").output().is_err() {
        panic!("network namespaces and iproute2 are needed (scripts/deps.sh installs iproute2)");
    }
    let endpoint = services::need_s3();
    let tmp = tempfile::Builder::new().prefix("strata-it-peers-").tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(tmp.path()).expect("path");
    let data = dir.join("data");
    let tag = format!("l{:x}", std::process::id() % 0xfff);
    let mut lan = Lan::new(&tag, 3);
    let s3_port = lan.forward(endpoint.trim_start_matches("http://"));
    let lan_s3 = format!("http://10.203.{}.254:{s3_port}", lan.subnet);
    let bin = strata_bin();
    let srv = lan.addr(0);
    let srv_ns = lan.hosts.names[1].clone();
    lan.hosts.spawn(
        &srv_ns,
        &[bin, "server", "--data", &data.to_string_lossy(), "--listen", "0.0.0.0:7420"],
        &dir.join("server.log"),
    );
    let token = data.join("admin.token");
    assert!(
        wait_until(Duration::from_secs(30), || token.exists()),
        "server did not start:\n{}",
        tail(&dir.join("server.log"), 20)
    );
    let tf = token.to_string_lossy().into_owned();
    let server = format!("{srv}:7420");
    // The control plane from this test's own side of the LAN.
    let cli = |args: &[&str]| {
        let out = run_cmd(strata().args(args).args(["--server", &server, "--token-file", &tf]));
        assert!(out.status.success(), "strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(30), || run_cmd(strata().args([
            "volume",
            "list",
            "--server",
            &server,
            "--token-file",
            &tf
        ]))
        .status
        .success()),
        "server unreachable:\n{}",
        tail(&dir.join("server.log"), 20)
    );
    let prefix = format!("peers-{}-{}", std::process::id(), services::unique());
    cli(&[
        "storageclass",
        "create",
        "s3peers",
        "--backend",
        "s3",
        "--bucket",
        services::S3_BUCKET,
        "--prefix",
        &prefix,
        "--endpoint",
        &lan_s3,
        "--block-size",
        "1M",
    ]);
    cli(&["volume", "create", "ds", "--class", "s3peers"]);
    cli(&["scope", "create", "other"]);
    let stranger = dir.join("stranger.token");
    cli(&[
        "token",
        "create",
        "stranger",
        "--role",
        "editor",
        "--scope",
        "other",
        "--secret-file",
        &stranger.to_string_lossy(),
    ]);

    // The dataset, on this side: 8 files of 3 MiB and one of 5.5 MiB (30 blocks of 1 MiB), and
    // a 24 MiB file for the killed peer.
    let src = dir.join("src");
    std::fs::create_dir(&src).expect("src");
    let mut names = Vec::new();
    let mut blocks = 0usize;
    for i in 0..9 {
        let len = if i == 8 { 5 * MIB + MIB / 2 } else { 3 * MIB };
        std::fs::write(src.join(format!("f{i}")), random_bytes(100 + i as u64, len)).expect("source");
        names.push(format!("f{i}"));
        blocks += len.div_ceil(MIB);
    }
    let big = random_bytes(7, 24 * MIB);
    std::fs::write(src.join("big"), &big).expect("source");

    // Mounts client N, with `extra` options; its pid and mount point.
    let mount = |lan: &mut Lan, n: usize, round: &str, extra: &[String]| -> (u32, PathBuf) {
        let mp = dir.join(format!("mnt-{round}-{n}"));
        std::fs::create_dir(&mp).expect("mount point");
        let script = format!(
            "exec {bin} mount ds {mp} --server {server} --token-file {tf} --cache-size 256M \
             --cache-dir {cache} {extra}",
            mp = mp.display(),
            // Every host and round starts cold: a disk cache of its own, not the default one
            // that the next mount of the volume on this machine would read.
            cache = dir.join(format!("cache-{round}-{n}")).display(),
            extra = extra.join(" ")
        );
        let ns = lan.hosts.names[n + 1].clone();
        let log = dir.join(format!("mount-{round}-{n}.log"));
        let pid = lan.hosts.spawn(&ns, &["sh", "-c", &script], &log);
        assert!(
            wait_until(Duration::from_secs(30), || fuse_mounted_in(pid, &mp)),
            "client {n} did not mount:\n{}",
            tail(&log, 20)
        );
        (pid, mp)
    };
    let stop_all = |lan: &mut Lan| {
        for mut s in lan.hosts.procs.drain(1..) {
            if let Some(problem) = s.stop() {
                panic!("{problem}:\n{}", tail(&s.log, 20));
            }
        }
    };
    // Every client checks every file of `files` against the source, all at once.
    let read_all = |clients: &[(u32, PathBuf)], files: &[String]| {
        std::thread::scope(|sc| {
            for (n, (pid, mp)) in clients.iter().enumerate() {
                let script = files
                    .iter()
                    .map(|f| format!("cmp {} {}", src.join(f).display(), mp.join(f).display()))
                    .collect::<Vec<_>>()
                    .join(" && ");
                sc.spawn(move || {
                    let out = in_mount_ns(*pid, &["sh", "-c", &script]);
                    assert!(out.status.success(), "client {} reads differently: {out:?}", n + 1);
                });
            }
        });
    };

    // The writer: client 1, no peer cache; unmounted before anyone reads.
    let w = mount(&mut lan, 1, "write", &[]);
    let all: Vec<String> = names.iter().cloned().chain(["big".to_string()]).collect();
    let cp = all.iter().map(|f| format!("cp {} {}", src.join(f).display(), w.1.join(f).display())).collect::<Vec<_>>();
    let out = in_mount_ns(w.0, &["sh", "-c", &cp.join(" && ")]);
    assert!(out.status.success(), "writing the dataset: {}", String::from_utf8_lossy(&out.stderr));
    stop_all(&mut lan);

    // Peer cache off: every client reads every block from the store.
    let clients: Vec<_> = (1..=3).map(|n| mount(&mut lan, n, "off", &[])).collect();
    read_all(&clients, &names);
    let off: u64 = clients.iter().map(|(pid, mp)| mount_stats(*pid, mp)["block_gets"]).sum();
    stop_all(&mut lan);

    // Peer cache on: once every client knows all three peers, the blocks come from the store
    // once in all.
    let clients: Vec<_> = (1..=3)
        .map(|n| {
            let peer = format!("--peer-cache {}:7430", lan.addr(n));
            mount(&mut lan, n, "on", &[peer])
        })
        .collect();
    let all_known = wait_until(Duration::from_secs(20), || {
        clients.iter().all(|(pid, mp)| mount_stats(*pid, mp).get("peers") == Some(&3))
    });
    assert!(all_known, "the clients did not learn of each other:\n{}", tail(&dir.join("mount-on-1.log"), 20));
    read_all(&clients, &names);
    let stats: Vec<_> = clients.iter().map(|(pid, mp)| mount_stats(*pid, mp)).collect();
    let on: u64 = stats.iter().map(|s| s["block_gets"]).sum();
    let from_peers: u64 = stats.iter().map(|s| s["peer_gets"]).sum();
    let fallbacks: u64 = stats.iter().map(|s| s["peer_fallbacks"]).sum();
    eprintln!(
        "dataset of {blocks} blocks read by 3 clients: {off} store GETs without the peer cache, {on} with it ({from_peers} blocks from peers, {fallbacks} fallbacks)"
    );
    assert_eq!(off, 3 * blocks as u64, "without the peer cache each client reads each block once");
    assert_eq!(fallbacks, 0, "no peer failed: {stats:?}");
    assert_eq!(on, blocks as u64, "with the peer cache each block is read from the store once: {stats:?}");
    assert_eq!(from_peers, 2 * blocks as u64, "the other two clients got each block from its owner: {stats:?}");

    // A peer killed while client 1 reads a file nobody read yet: client 1 and then client 2
    // read it exactly, the dead peer's blocks from the store.
    let (p1, p2) = (clients[0].clone(), clients[1].clone());
    let big_name = vec!["big".to_string()];
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| read_all(std::slice::from_ref(&p1), &big_name));
        std::thread::sleep(Duration::from_millis(150));
        lan.hosts.procs[3].kill9();
        reader.join().expect("client 1 read");
    });
    read_all(std::slice::from_ref(&p2), &big_name);
    let (s1, s2) = (mount_stats(p1.0, &p1.1), mount_stats(p2.0, &p2.1));
    assert!(
        s1["peer_fallbacks"] + s2["peer_fallbacks"] >= 1,
        "the dead peer's blocks were read from the store: {s1:?} {s2:?}"
    );

    // A token that cannot read the volume gets nothing from a peer; the admin's gets the block.
    let info = cli(&["info", "ds:/big", "--json"]);
    let key = info
        .split('"')
        .find(|s| s.contains("/chunks/") && s.ends_with(&format!("_{}", MIB)))
        .expect("a block key of big")
        .to_string();
    let index: usize = key.rsplit('_').nth(1).and_then(|i| i.parse().ok()).expect("block index");
    let peer_url = format!("http://{}:7430", lan.addr(1));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ask = |token: Option<String>, key: String| {
        rt.block_on(async {
            let ch =
                tonic::transport::Endpoint::from_shared(peer_url.clone()).expect("url").connect().await.expect("peer");
            let mut rpc = strata_proto::pb::peer_client::PeerClient::new(ch).max_decoding_message_size(64 << 20);
            let mut req = tonic::Request::new(strata_proto::pb::BlockKeyReq { key });
            if let Some(t) = token {
                req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("header"));
            }
            rpc.get_peer_block(req).await.map(|r| r.into_inner().data)
        })
    };
    let secret = |p: &Path| std::fs::read_to_string(p).expect("token").trim().to_string();
    let got = ask(Some(secret(&token)), key.clone()).expect("the admin's token reads the block");
    assert_eq!(&got[..], &big[index * MIB..(index + 1) * MIB], "{key}");
    for (who, t) in [
        ("another scope's token", Some(secret(&stranger))),
        ("no token", None),
        ("a made-up token", Some("nope".into())),
    ] {
        let e = ask(t, key.clone()).expect_err(who);
        assert!(matches!(e.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated), "{who}: {e:?}");
    }
    let other_volume = key.replacen(&key[..key.find('/').expect("key")], "v999", 1);
    let e = ask(Some(secret(&token)), other_volume).expect_err("another volume's key");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(mount_stats(p1.0, &p1.1)["peer_refused"] >= 4, "client 1 counted its refusals");

    stop_all(&mut lan);
    for log in ["server.log", "mount-on-1.log", "mount-on-2.log", "mount-off-1.log"] {
        let text = tolerate_unmount_race(&std::fs::read_to_string(dir.join(log)).unwrap_or_default());
        let bad: Vec<_> = problem_lines(&text).into_iter().filter(|l| !l.contains("token")).collect();
        assert!(bad.is_empty(), "{log} has problems:\n{}", bad.join("\n"));
    }
    drop(lan);
}
