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
    let tag = format!("{:x}", std::process::id() % 0xffff);
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
