//! Faults of the scale-out engines with real processes: one of two servers killed while clients
//! work, the S3 store gone for a while, PostgreSQL restarted. Each test runs its own PostgreSQL
//! or S3 server (the shared ones of `scripts/test` must stay up for the other tests), so it
//! needs Debian's PostgreSQL and SeaweedFS's `weed` (both installed by `scripts/deps.sh`) and
//! the S3 credentials of `scripts/s3.sh` in the environment. They are ignored by a plain
//! `cargo test`; `scripts/test` runs them with `--ignored` in a step of their own, where they
//! fail if what they need is missing. (How the block layer meets a failing store, in process:
//! `crates/strata-blocks/tests/store_faults.rs`.)

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// A cluster whose metadata is on a PostgreSQL server of its own (which the test may stop), its
/// clients allowed to report the server unreachable meanwhile.
fn on_private_postgres(name: &str) -> (services::ScriptedServer, Cluster) {
    let pg = services::ScriptedServer::postgres();
    let mut c = Cluster::with_opts(name, Opts { pg: Some(pg.pg_url()), ..Default::default() });
    c.allow_log("strata server unreachable");
    // The servers' change relay reports a database that went away (clients' leases end).
    c.allow_log("change relay");
    // A server that finds the database restarted records its open files again and says so.
    c.allow_log("PostgreSQL restarted");
    (pg, c)
}

/// Two servers on one PostgreSQL database; clients list both. Killing the one they talk to
/// does not stop them: they carry on through the other, and nothing fsynced is lost.
#[test]
#[ignore = "starts its own PostgreSQL: scripts/test runs it with --ignored"]
fn clients_fail_over_to_the_other_server() {
    let (_pg, mut c) = on_private_postgres("failover");
    c.allow_log("switched to another strata server");
    assert!(c.meta_url().is_some(), "PostgreSQL metadata");
    // The second server: same database, same block directory (one machine), its own port.
    let addr2 = format!("127.0.0.1:{}", free_port());
    let mut b = c.spawn_server(&addr2, &c.dir.join("server-b.log"));
    let both = format!("{},{}", c.addr, addr2);
    let a = c.mount(&["--server", &both, "--attr-ttl", "0", "--entry-ttl", "0"]);
    let other = format!("{addr2},{}", c.addr);
    let r = c.mount(&["--server", &other, "--attr-ttl", "0", "--entry-ttl", "0"]);

    let data = random_bytes(5, 8 * MIB as usize);
    write_synced_at(&c.p(a, "before"), 0, &data[..4 * MIB as usize]).expect("write before the kill");
    // A writer keeps going through the kill of the server it talks to.
    let path = c.p(a, "during");
    let d2 = data.clone();
    let writer = std::thread::spawn(move || {
        let mut done = 0u64;
        while done < 8 * MIB {
            write_synced_at(&path, done, &d2[done as usize..(done + MIB) as usize])?;
            done += MIB;
            std::thread::sleep(Duration::from_millis(150));
        }
        Ok::<u64, i32>(done)
    });
    std::thread::sleep(Duration::from_millis(400));
    c.kill9_server();
    let started = Instant::now();
    assert_eq!(writer.join().expect("writer"), Ok(8 * MIB), "writes went on through the other server");
    assert!(started.elapsed() < Duration::from_secs(60), "failover took {:?}", started.elapsed());
    // Both clients keep working on the namespace through server B.
    std::fs::rename(c.p(a, "before"), c.p(a, "renamed")).expect("rename after the kill");
    assert_bytes_eq(&read_all(&c.p(r, "during")), &data, "file written across the kill");
    assert_bytes_eq(&read_all(&c.p(r, "renamed")), &data[..4 * MIB as usize], "file written before");
    let mut f = File::create(c.p(r, "from-r")).expect("create through B");
    f.write_all(b"after").expect("write");
    drop(f);
    assert_eq!(std::fs::read(c.p(a, "from-r")).expect("read"), b"after");
    let names: Vec<String> = std::fs::read_dir(c.mp(a))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert!(names.contains(&"renamed".to_string()) && !names.contains(&"before".to_string()), "{names:?}");
    // Server A comes back; clients may use either.
    c.start_server();
    let _ = b.stop();
    assert_eq!(std::fs::read(c.p(r, "from-r")).expect("read after B stopped"), b"after");
    let text = std::fs::read_to_string(&b.log).unwrap_or_default();
    assert!(!text.contains("panicked") && !text.contains(" ERROR "), "server B log:\n{text}");
}

/// PostgreSQL restarts under a working mount: the server reconnects and the mount carries on.
#[test]
#[ignore = "starts its own PostgreSQL: scripts/test runs it with --ignored"]
fn server_reconnects_after_postgres_restarts() {
    let (pg, mut c) = on_private_postgres("pgrestart");
    c.allow_log("postgres");
    let m = c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    std::fs::write(c.p(m, "a"), b"before").expect("write");
    pg.down();
    // An operation while the database is down waits (the server retries) or fails cleanly.
    let path = c.p(m, "b");
    let during = std::thread::spawn(move || std::fs::write(path, b"during").map_err(|e| e.raw_os_error()));
    std::thread::sleep(Duration::from_secs(2));
    pg.up();
    match during.join().expect("thread") {
        Ok(()) => assert_eq!(std::fs::read(c.p(m, "b")).expect("read"), b"during"),
        Err(e) => assert_eq!(e, Some(libc::EIO), "a failure while the database was down is EIO"),
    }
    // After the restart everything works again, and nothing committed before was lost.
    assert_eq!(std::fs::read(c.p(m, "a")).expect("read after restart"), b"before");
    std::fs::write(c.p(m, "c"), b"after").expect("write after restart");
    std::fs::rename(c.p(m, "c"), c.p(m, "d")).expect("rename after restart");
    let out = c.cli_as(&c.token_file, &["volume", "list"]);
    assert!(out.status.success(), "control plane after restart: {}", String::from_utf8_lossy(&out.stderr));
}

/// PostgreSQL crashes right after a client opened a file: the open was an asynchronous
/// commit, which the crash may lose. Each server records its clients' opens again once it
/// sees the database restarted, and meanwhile unlinks leave destruction to the reaper, so a
/// file another client unlinks through the other server lives on while it is open, after the
/// grace too, and goes at its last close.
#[test]
#[ignore = "starts its own PostgreSQL: scripts/test runs it with --ignored"]
fn open_files_outlive_a_postgres_crash() {
    let (pg, mut c) = on_private_postgres("pgcrash");
    // Asynchronous commits reach the disk within the WAL writer's delay: a long one makes the
    // crash lose the open below (unless something else flushes the log first).
    let set = std::process::Command::new("psql")
        .args(["-q", &pg.pg_url(), "-c", "ALTER SYSTEM SET wal_writer_delay = '10s'", "-c", "SELECT pg_reload_conf()"])
        .output()
        .expect("psql");
    assert!(set.status.success(), "psql: {}", String::from_utf8_lossy(&set.stderr));
    c.allow_log("postgres");
    let peer = c.start_peer();
    let other = c.peers[peer].0.clone();
    let a = c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let b = c.mount(&["--server", &other, "--attr-ttl", "0", "--entry-ttl", "0"]);
    let data = random_bytes(7, 3 * MIB as usize);
    write_synced_at(&c.p(b, "held"), 0, &data).expect("write through B");
    // Opened through server A (a lazy commit), and the database crashes at once.
    let mut held = File::open(c.p(a, "held")).expect("open through A");
    pg.crash();
    pg.up();
    // Unlinked through server B, which finds the database restarted.
    std::fs::remove_file(c.p(b, "held")).expect("unlink through B");
    // Past the grace, B's reaper has looked at the file again: it is still open through A.
    std::thread::sleep(strata_meta::RESTART_GRACE + Duration::from_secs(3));
    let meta = held.metadata().expect("fstat of the open, unlinked file");
    assert_eq!(meta.nlink(), 0, "unlinked");
    assert_eq!(meta.len(), data.len() as u64);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut held, &mut got).expect("read of the open, unlinked file");
    assert_bytes_eq(&got, &data, "open file after the crash, unlink and grace");
    drop(held);
    let logs = format!(
        "{}{}",
        c.server_log(),
        std::fs::read_to_string(c.dir.join(format!("peer{peer}.log"))).unwrap_or_default()
    );
    assert!(logs.contains("PostgreSQL restarted"), "a server noticed the restart:\n{logs}");
    // Both servers carry on: a new file through each, seen through the other.
    std::fs::write(c.p(a, "after-a"), b"a").expect("write through A");
    std::fs::write(c.p(b, "after-b"), b"b").expect("write through B");
    assert_eq!(std::fs::read(c.p(b, "after-a")).expect("read through B"), b"a");
    assert_eq!(std::fs::read(c.p(a, "after-b")).expect("read through A"), b"b");
}

/// The S3 store goes away for a while. A mount with a short `--store-retry-timeout` gets EIO
/// (reads of uncached data, fsync of new data) and carries on once the store is back; a mount
/// with a long one waits. Nothing committed is corrupted either way.
#[test]
#[ignore = "starts its own SeaweedFS S3 (needs the AWS_* credentials of scripts/s3.sh): scripts/test runs it with --ignored"]
fn s3_outage_gives_eio_or_waits_and_never_corrupts() {
    let s3 = services::ScriptedServer::s3();
    let mut c = Cluster::with_opts("s3out", Opts::default());
    c.allow_log("store");
    c.allow_log("S3");
    c.allow_log("EIO");
    c.allow_log("error");
    let prefix = format!("outage-{}", std::process::id());
    c.s3_class("outage", &s3.endpoint(), &prefix);
    c.cli(&["volume", "create", "s3vol", "--class", "outage"]);
    let mount = |c: &mut Cluster, name: &str, retry: &str| {
        let mp = c.dir.join(name);
        std::fs::create_dir(&mp).expect("mkdir");
        let tfp = c.token_file.clone();
        c.mount_as("s3vol", &tfp, &mp, &["--store-retry-timeout", retry, "--cache-size", "8M", "--attr-ttl", "0"])
    };
    let quick = mount(&mut c, "quick", "2s");
    let patient = mount(&mut c, "patient", "10m");
    let writer = mount(&mut c, "writer", "10m");
    let old = random_bytes(1, 6 * MIB as usize);
    let old2 = random_bytes(2, 6 * MIB as usize);
    write_synced_at(&c.p(writer, "old"), 0, &old).expect("write old");
    write_synced_at(&c.p(writer, "old2"), 0, &old2).expect("write old2");

    s3.down();
    // Quick: reading data it never cached fails with EIO, and so does fsync of new data.
    let t = Instant::now();
    let e = std::fs::read(c.p(quick, "old")).map_err(|e| e.raw_os_error());
    assert_eq!(e.err(), Some(Some(libc::EIO)), "read with the store gone");
    assert!(t.elapsed() < Duration::from_secs(60), "EIO after {:?}", t.elapsed());
    let new = random_bytes(3, 5 * MIB as usize);
    assert_eq!(write_synced_at(&c.p(quick, "new"), 0, &new), Err(libc::EIO), "fsync with the store gone");
    // Patient: the read waits for the store.
    let path = c.p(patient, "old2");
    let waiting = std::thread::spawn(move || std::fs::read(path).map_err(|e| e.raw_os_error()));
    std::thread::sleep(Duration::from_secs(4));
    assert!(!waiting.is_finished(), "the patient read waits for the store");
    s3.up();
    let got = waiting.join().expect("thread").expect("the patient read completes once the store is back");
    assert_bytes_eq(&got, &old2, "read that waited");
    // Quick carries on, and what was committed is intact everywhere.
    assert_bytes_eq(&read_all(&c.p(quick, "old")), &old, "read after the store came back");
    write_synced_at(&c.p(quick, "new2"), 0, &new).expect("write after the store came back");
    assert_bytes_eq(&read_all(&c.p(writer, "new2")), &new, "new data after the outage");
    // The file whose fsync failed holds either nothing committed or its whole data, never a mix
    // of garbage: every byte present matches what was written or is zero.
    let partial = read_all(&c.p(writer, "new"));
    for (i, (g, w)) in partial.iter().zip(new.iter()).enumerate() {
        assert!(g == w || *g == 0, "byte {i} of the failed file is garbage");
    }
}
