//! Two (or three) clients mounting one volume: what one writes and closes, the other reads back
//! exactly; namespace changes on one are visible on the other; concurrent writers on both land
//! intact; appends and truncation.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::time::Duration;

use common::*;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 64 * MIB;
const BLOCK: u64 = 4 * MIB;

fn write_file(path: &std::path::Path, data: &[u8], piece: usize) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for c in data.chunks(piece.max(1)) {
        f.write_all(c).expect("write");
    }
    drop(f);
}

#[test]
fn data_written_on_one_client_reads_back_on_the_other() {
    let c = Cluster::with_mounts("data", 2);
    let (a, b) = (0, 1);

    // A few MiB of pseudo-random data in odd-sized writes (not block aligned).
    let rnd = random_bytes(1, 5 * MIB as usize + 12345);
    write_file(&c.p(a, "random.bin"), &rnd, 131_071);
    // Empty file.
    File::create(c.p(a, "empty")).expect("create empty");
    // Exactly one block.
    let block = random_bytes(2, BLOCK as usize);
    write_file(&c.p(a, "block.bin"), &block, MIB as usize);
    // One byte over a block, one byte under.
    let over = random_bytes(3, BLOCK as usize + 1);
    write_file(&c.p(a, "block_plus_1.bin"), &over, MIB as usize);
    let under = random_bytes(4, BLOCK as usize - 1);
    write_file(&c.p(a, "block_minus_1.bin"), &under, MIB as usize);

    // Sparse: 1 MiB at 0, a hole, then data straddling the first chunk boundary (64 MiB).
    let head = random_bytes(5, MIB as usize);
    let tail_off = CHUNK - 100 * 1024;
    let tail = random_bytes(6, MIB as usize + 7);
    {
        let f = File::create(c.p(a, "sparse.bin")).expect("create sparse");
        f.write_all_at(&head, 0).expect("write head");
        f.write_all_at(&tail, tail_off).expect("write tail");
    }
    let sparse_len = tail_off + tail.len() as u64;

    // Reads on B.
    assert_bytes_eq(&read_all(&c.p(b, "random.bin")), &rnd, "random.bin on B");
    assert_eq!(std::fs::metadata(c.p(b, "empty")).expect("stat empty").len(), 0);
    assert!(read_all(&c.p(b, "empty")).is_empty());
    assert_bytes_eq(&read_all(&c.p(b, "block.bin")), &block, "block.bin on B");
    assert_bytes_eq(&read_all(&c.p(b, "block_plus_1.bin")), &over, "block_plus_1.bin on B");
    assert_bytes_eq(&read_all(&c.p(b, "block_minus_1.bin")), &under, "block_minus_1.bin on B");

    let sp = c.p(b, "sparse.bin");
    assert_eq!(std::fs::metadata(&sp).expect("stat sparse").len(), sparse_len, "sparse size on B");
    assert_bytes_eq(&read_at(&sp, 0, head.len()), &head, "sparse head on B");
    let mut off = head.len() as u64;
    while off < tail_off {
        let n = (8 * MIB).min(tail_off - off) as usize;
        let got = read_at(&sp, off, n);
        assert_eq!(got.len(), n, "short read in the hole at {off}");
        if let Some(p) = got.iter().position(|&x| x != 0) {
            panic!("hole of sparse.bin holds non-zero byte at {}", off + p as u64);
        }
        off += n as u64;
    }
    assert_bytes_eq(&read_at(&sp, tail_off, tail.len() + 100), &tail, "sparse tail (crossing 64 MiB) on B");
    // Unaligned reads straddling the chunk boundary.
    let at = CHUNK - 3;
    let want = &tail[(at - tail_off) as usize..(at - tail_off) as usize + 10];
    assert_bytes_eq(&read_at(&sp, at, 10), want, "10 bytes across the chunk boundary");

    // An overwrite in the middle of an existing file, read after reopening on B.
    let patch = random_bytes(7, 10_000);
    {
        let f = OpenOptions::new().write(true).open(c.p(a, "random.bin")).expect("reopen");
        f.write_all_at(&patch, MIB + 3).expect("patch");
    }
    let mut want = rnd.clone();
    want[(MIB + 3) as usize..(MIB + 3) as usize + patch.len()].copy_from_slice(&patch);
    assert_bytes_eq(&read_all(&c.p(b, "random.bin")), &want, "patched random.bin on B");
    assert_bytes_eq(&read_all(&c.p(a, "random.bin")), &want, "patched random.bin on A");
}

/// Close-to-open with the default 1 s attribute cache: B has the file's attributes cached, A
/// rewrites the file (same size, longer, shorter) and closes, B opens right after and must read
/// exactly the new contents.
#[test]
fn close_to_open_with_cached_attributes() {
    let c = Cluster::with_mounts("cto", 2);
    let (a, b) = (0, 1);
    let mut failures = Vec::new();
    let versions = [("same size", 300_000), ("same size again", 300_000), ("longer", 700_000), ("shorter", 1000)];
    let v0 = random_bytes(10, 300_000);
    write_file(&c.p(a, "f"), &v0, 65536);
    assert_bytes_eq(&read_all(&c.p(b, "f")), &v0, "first version on B");
    for (i, (what, len)) in versions.iter().enumerate() {
        // B has fresh cached attributes (and pages) of the previous version.
        let _ = std::fs::metadata(c.p(b, "f")).expect("stat on B");
        let v = random_bytes(11 + i as u64, *len);
        write_file(&c.p(a, "f"), &v, 65536);
        let got = read_all(&c.p(b, "f"));
        if got != v {
            failures.push(format!(
                "{what}: B read {} bytes (want {}), first difference at {:?}",
                got.len(),
                v.len(),
                got.iter().zip(&v).position(|(x, y)| x != y)
            ));
        }
    }
    assert!(failures.is_empty(), "close-to-open violated on B right after close on A:\n{}", failures.join("\n"));
}

#[test]
fn renames_and_unlinks_on_one_client_are_visible_on_the_other() {
    let mut c = Cluster::new("names");
    let a = c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let b = c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let d = c.mount(&[]); // default 1 s caches: sees changes once they expire

    std::fs::create_dir(c.p(a, "dir")).expect("mkdir");
    std::fs::create_dir(c.p(a, "other")).expect("mkdir other");
    let data = random_bytes(20, 100_000);
    write_file(&c.p(a, "dir/x"), &data, 8192);
    write_file(&c.p(a, "victim"), b"victim", 10);
    write_file(&c.p(a, "target"), b"old target", 10);

    // B and D look everything up (filling their caches).
    for m in [b, d] {
        assert_bytes_eq(&read_all(&c.p(m, "dir/x")), &data, "dir/x");
        assert_eq!(read_all(&c.p(m, "victim")), b"victim");
        assert_eq!(read_all(&c.p(m, "target")), b"old target");
    }

    // Rename within a directory, across directories, over an existing file; unlink.
    std::fs::rename(c.p(a, "dir/x"), c.p(a, "dir/y")).expect("rename x->y");
    std::fs::rename(c.p(a, "dir/y"), c.p(a, "other/z")).expect("rename across dirs");
    write_file(&c.p(a, "source"), b"new target", 10);
    std::fs::rename(c.p(a, "source"), c.p(a, "target")).expect("rename over target");
    std::fs::remove_file(c.p(a, "victim")).expect("unlink");
    std::fs::rename(c.p(a, "dir"), c.p(a, "dir2")).expect("rename dir");

    let check = |m: usize| {
        assert_eq!(err_of(std::fs::metadata(c.p(m, "dir/x"))), libc::ENOENT, "dir/x gone on mount {m}");
        assert_eq!(err_of(std::fs::metadata(c.p(m, "dir"))), libc::ENOENT, "dir renamed on mount {m}");
        assert!(std::fs::metadata(c.p(m, "dir2")).expect("dir2").is_dir());
        assert_eq!(err_of(std::fs::metadata(c.p(m, "dir2/y"))), libc::ENOENT);
        assert_bytes_eq(&read_all(&c.p(m, "other/z")), &data, "other/z");
        assert_eq!(read_all(&c.p(m, "target")), b"new target", "target replaced on mount {m}");
        assert_eq!(err_of(std::fs::metadata(c.p(m, "source"))), libc::ENOENT);
        assert_eq!(err_of(File::open(c.p(m, "victim"))), libc::ENOENT, "victim unlinked on mount {m}");
        let mut names: Vec<String> = std::fs::read_dir(c.mp(m))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dir2", "other", "target"], "listing on mount {m}");
    };
    check(b);
    std::thread::sleep(Duration::from_millis(1200));
    check(d);

    // An open file unlinked by the other client stays readable where it is open.
    let keep = random_bytes(21, 3 * MIB as usize);
    write_file(&c.p(a, "kept"), &keep, MIB as usize);
    let f = File::open(c.p(b, "kept")).expect("open on B");
    std::fs::remove_file(c.p(a, "kept")).expect("unlink on A");
    assert_eq!(err_of(std::fs::metadata(c.p(b, "kept"))), libc::ENOENT);
    let mut got = vec![0u8; keep.len()];
    f.read_exact_at(&mut got, 0).expect("read unlinked file on B");
    assert_bytes_eq(&got, &keep, "unlinked-but-open file on B");
    drop(f);
}

#[test]
fn concurrent_writers_on_both_clients() {
    let c = Cluster::with_mounts("conc", 2);
    std::fs::create_dir(c.p(0, "out")).expect("mkdir");
    const PER_CLIENT: usize = 3;
    let size = 3 * MIB as usize + 777;
    std::thread::scope(|s| {
        for m in 0..2 {
            for t in 0..PER_CLIENT {
                let path = c.p(m, &format!("out/m{m}-t{t}"));
                s.spawn(move || {
                    let seed = (m * 100 + t) as u64;
                    let data = random_bytes(seed, size);
                    let sizes = random_bytes(seed + 1000, 4096);
                    let mut f = File::create(&path).expect("create");
                    let mut off = 0;
                    let mut i = 0;
                    while off < data.len() {
                        let n = (1 + (usize::from(sizes[i % sizes.len()]) << 10)).min(data.len() - off);
                        f.write_all(&data[off..off + n]).expect("write");
                        off += n;
                        i += 1;
                    }
                    f.sync_all().expect("fsync");
                });
            }
        }
    });
    for reader in 0..2 {
        let mut names: Vec<String> = std::fs::read_dir(c.p(reader, "out"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["m0-t0", "m0-t1", "m0-t2", "m1-t0", "m1-t1", "m1-t2"]);
        for m in 0..2 {
            for t in 0..PER_CLIENT {
                let want = random_bytes((m * 100 + t) as u64, size);
                let got = read_all(&c.p(reader, &format!("out/m{m}-t{t}")));
                assert_bytes_eq(&got, &want, &format!("out/m{m}-t{t} read on mount {reader}"));
            }
        }
    }
}

#[test]
fn appends_and_truncation_seen_by_the_other_client() {
    let c = Cluster::with_mounts("append", 2);
    let (a, b) = (0, 1);
    let path = c.p(a, "log");
    let mut want = Vec::new();
    for i in 0..5 {
        let mut f = OpenOptions::new().append(true).create(true).open(&path).expect("open append");
        let rec = format!("record {i}: {}\n", "x".repeat(i * 1000));
        f.write_all(rec.as_bytes()).expect("append");
        // O_APPEND writes go to the end even after seeking back.
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(b"tail\n").expect("append after seek");
        want.extend_from_slice(rec.as_bytes());
        want.extend_from_slice(b"tail\n");
    }
    // Two descriptors appending alternately.
    let mut f1 = OpenOptions::new().append(true).open(&path).expect("open 1");
    let mut f2 = OpenOptions::new().append(true).open(&path).expect("open 2");
    for i in 0..4 {
        f1.write_all(format!("one {i}\n").as_bytes()).expect("write 1");
        f2.write_all(format!("two {i}\n").as_bytes()).expect("write 2");
        want.extend_from_slice(format!("one {i}\ntwo {i}\n").as_bytes());
    }
    drop(f1);
    drop(f2);
    assert_bytes_eq(&read_all(&c.p(b, "log")), &want, "appended log on B");
    // B appends too, A reads.
    {
        let mut f = OpenOptions::new().append(true).open(c.p(b, "log")).expect("open append on B");
        f.write_all(b"from B\n").expect("append on B");
    }
    want.extend_from_slice(b"from B\n");
    assert_bytes_eq(&read_all(&c.p(a, "log")), &want, "log with B's append on A");

    // Truncate down, then up: the re-grown range reads as zeros on both clients.
    let data = random_bytes(30, 3 * MIB as usize);
    write_file(&c.p(a, "t"), &data, MIB as usize);
    let cut = MIB + 5;
    {
        let f = OpenOptions::new().write(true).open(c.p(a, "t")).expect("open");
        f.set_len(cut).expect("ftruncate down");
        assert_eq!(f.metadata().expect("fstat").len(), cut);
    }
    assert_eq!(std::fs::metadata(c.p(b, "t")).expect("stat on B").len(), cut);
    assert_bytes_eq(&read_all(&c.p(b, "t")), &data[..cut as usize], "truncated file on B");
    let grown = 5 * MIB;
    {
        let f = OpenOptions::new().write(true).open(c.p(a, "t")).expect("open");
        f.set_len(grown).expect("ftruncate up");
    }
    let mut want_t = data[..cut as usize].to_vec();
    want_t.resize(grown as usize, 0);
    assert_bytes_eq(&read_all(&c.p(b, "t")), &want_t, "truncated-then-grown file on B");
    assert_bytes_eq(&read_all(&c.p(a, "t")), &want_t, "truncated-then-grown file on A");

    // truncate(2) by path on B, with buffered writes before it on B.
    {
        let f = OpenOptions::new().write(true).custom_flags(0).open(c.p(b, "t")).expect("open on B");
        f.write_all_at(b"BBBB", 10).expect("write on B");
        let cpath = cpath(&c.p(b, "t"));
        // SAFETY: valid path.
        let rc = unsafe { libc::truncate(cpath.as_ptr(), 12) };
        assert_eq!(rc, 0, "truncate(2): {}", errname(errno()));
    }
    let mut want_t2 = data[..12].to_vec();
    want_t2[10..12].copy_from_slice(b"BB");
    assert_bytes_eq(&read_all(&c.p(a, "t")), &want_t2, "file truncated by path on B, read on A");
    assert_eq!(std::fs::metadata(c.p(a, "t")).expect("stat").size(), 12);
}

/// A file renamed by the other client while open for writing keeps receiving the writes.
#[test]
fn rename_while_open_for_writing() {
    let mut c = Cluster::new("renameopen");
    let a = c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let b = c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    std::fs::create_dir(c.p(a, "dst")).expect("mkdir");
    let data = random_bytes(40, 2 * MIB as usize + 9);
    let mut f = File::create(c.p(a, "src")).expect("create");
    f.write_all(&data[..MIB as usize]).expect("first half");
    f.flush().expect("flush");
    std::fs::rename(c.p(b, "src"), c.p(b, "dst/renamed")).expect("rename on B");
    f.write_all(&data[MIB as usize..]).expect("second half after the rename");
    drop(f);
    assert_eq!(err_of(std::fs::metadata(c.p(a, "src"))), libc::ENOENT);
    assert_bytes_eq(&read_all(&c.p(b, "dst/renamed")), &data, "renamed file on B");
    assert_bytes_eq(&read_all(&c.p(a, "dst/renamed")), &data, "renamed file on A");
}

/// Stores through a shared writable mapping on A reach B once unmapped and closed.
#[test]
fn mmap_writes_reach_the_other_client() {
    let c = Cluster::with_mounts("mmap", 2);
    let (a, b) = (0, 1);
    let len = 3 * MIB as usize + 4096;
    let data = random_bytes(50, len);
    {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(c.p(a, "m")).expect("open");
        f.set_len(len as u64).expect("set_len");
        // SAFETY: mapping a file we hold open, of the length just set; unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", errname(errno()));
        // SAFETY: `p` maps `len` writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>(), len);
            assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0, "msync: {}", errname(errno()));
            assert_eq!(libc::munmap(p, len), 0);
        }
    }
    assert_bytes_eq(&read_all(&c.p(b, "m")), &data, "mmap-written file on B");
    // And a read-only mapping on B sees the same bytes.
    let f = File::open(c.p(b, "m")).expect("open on B");
    // SAFETY: read-only mapping of an open file of `len` bytes.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&f), 0)
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap on B: {}", errname(errno()));
    // SAFETY: `p` maps `len` readable bytes until munmap.
    let same = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) } == data.as_slice();
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(p, len) };
    assert!(same, "mapped contents on B differ");
}

#[test]
fn cold_lookups_read_the_directory_whole_and_follow_the_other_client() {
    let c = Cluster::with_mounts("dircache", 2);
    listings_follow_other_clients(&c, 0, 1, &c.addr);
}
