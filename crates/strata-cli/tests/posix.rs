//! POSIX behaviour of one mount: open flags, I/O at offsets, directories, renames, links,
//! attributes, xattrs, statfs, fsync, name limits and permission checks, with the errnos POSIX
//! (and Linux) define.

mod common;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use common::*;

const MIB: u64 = 1 << 20;

fn one_mount(name: &str) -> Cluster {
    let mut c = Cluster::new(name);
    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    c
}

fn put(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn ino(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display())).ino()
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> i64 {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: valid NUL-terminated paths; AT_FDCWD with absolute paths.
    unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) }
}

#[test]
fn open_flags_and_io_at_offsets() {
    let c = one_mount("open");
    let f = c.p(0, "f");
    put(&f, b"hello world");

    // O_CREAT|O_EXCL on an existing file.
    assert_eq!(err_of(OpenOptions::new().write(true).create_new(true).open(&f)), libc::EEXIST);
    // ... and on a dangling symlink (POSIX: fails, does not follow).
    std::os::unix::fs::symlink("nowhere", c.p(0, "dangling")).expect("symlink");
    assert_eq!(err_of(OpenOptions::new().write(true).create_new(true).open(c.p(0, "dangling"))), libc::EEXIST);
    // O_CREAT|O_EXCL on a new name creates it.
    OpenOptions::new().write(true).create_new(true).open(c.p(0, "new")).expect("O_EXCL create");
    assert_eq!(std::fs::metadata(c.p(0, "new")).expect("stat").len(), 0);
    // Opening a missing file without O_CREAT.
    assert_eq!(err_of(File::open(c.p(0, "missing"))), libc::ENOENT);
    // A path through a regular file.
    assert_eq!(err_of(File::open(c.p(0, "f/x"))), libc::ENOTDIR);

    // O_TRUNC empties the file at open.
    {
        let mut t = OpenOptions::new().write(true).truncate(true).open(&f).expect("O_TRUNC");
        assert_eq!(t.metadata().expect("fstat").len(), 0, "size right after O_TRUNC");
        t.write_all(b"abc").expect("write");
    }
    assert_eq!(std::fs::read(&f).expect("read"), b"abc");
    // O_TRUNC on a large file, then a short rewrite: nothing of the old data survives.
    put(&f, &random_bytes(1, 5 * MIB as usize));
    {
        let mut t = OpenOptions::new().write(true).truncate(true).open(&f).expect("O_TRUNC");
        t.write_all(b"xyz").expect("write");
    }
    assert_eq!(std::fs::read(&f).expect("read"), b"xyz");
    // O_CREAT|O_TRUNC on an existing file.
    {
        let mut t = OpenOptions::new().write(true).create(true).truncate(true).open(&f).expect("O_CREAT|O_TRUNC");
        t.write_all(b"12345").expect("write");
    }
    assert_eq!(std::fs::read(&f).expect("read"), b"12345");

    // O_APPEND: every write lands at the end, whatever the offset.
    {
        let mut a = OpenOptions::new().append(true).open(&f).expect("O_APPEND");
        a.seek(SeekFrom::Start(0)).expect("seek");
        a.write_all(b"678").expect("append");
        assert_eq!(a.stream_position().expect("tell"), 8);
    }
    assert_eq!(std::fs::read(&f).expect("read"), b"12345678");

    // Writes and reads at offsets, reads past the end.
    {
        let rw = OpenOptions::new().read(true).write(true).open(&f).expect("open rw");
        rw.write_all_at(b"AB", 3).expect("pwrite inside");
        rw.write_all_at(b"END", 20).expect("pwrite past end");
        let mut buf = [0u8; 23];
        rw.read_exact_at(&mut buf, 0).expect("pread");
        assert_eq!(&buf, b"123AB678\0\0\0\0\0\0\0\0\0\0\0\0END");
        let mut tail = [0u8; 10];
        assert_eq!(rw.read_at(&mut tail, 21).expect("short pread"), 2, "short read at the end");
        assert_eq!(rw.read_at(&mut tail, 23).expect("pread at EOF"), 0);
        assert_eq!(rw.read_at(&mut tail, 1 << 40).expect("pread far past EOF"), 0);
    }
    assert_eq!(std::fs::metadata(&f).expect("stat").len(), 23);

    // Sparse file with data at 10 MiB and at 200 MiB (four chunks in).
    let s = c.p(0, "sparse");
    {
        let sf = File::create(&s).expect("create");
        sf.write_all_at(b"ten", 10 * MIB).expect("pwrite 10M");
        sf.write_all_at(b"two hundred", 200 * MIB).expect("pwrite 200M");
    }
    assert_eq!(std::fs::metadata(&s).expect("stat").len(), 200 * MIB + 11);
    assert_eq!(read_at(&s, 10 * MIB - 2, 7), b"\0\0ten\0\0");
    assert_eq!(read_at(&s, 200 * MIB - 1, 100), b"\0two hundred");
    assert!(read_at(&s, 64 * MIB - 10, 20).iter().all(|&x| x == 0));

    // ftruncate down and up.
    {
        let t = OpenOptions::new().read(true).write(true).open(&s).expect("open");
        t.set_len(10 * MIB + 1).expect("ftruncate down");
        assert_eq!(t.metadata().expect("fstat").len(), 10 * MIB + 1);
        t.set_len(10 * MIB + 100).expect("ftruncate up");
        let mut buf = [1u8; 100];
        t.read_exact_at(&mut buf, 10 * MIB).expect("read");
        assert_eq!(&buf[..3], b"t\0\0");
        assert!(buf[1..].iter().all(|&x| x == 0), "re-grown bytes must be zero");
        t.set_len(0).expect("ftruncate to 0");
    }
    assert_eq!(std::fs::metadata(&s).expect("stat").len(), 0);
    // ftruncate on a read-only descriptor.
    {
        let r = File::open(&f).expect("open ro");
        assert_eq!(err_of(r.set_len(1)), libc::EINVAL, "ftruncate on O_RDONLY fd");
    }
    // write on a read-only descriptor.
    {
        let mut r = File::open(&f).expect("open ro");
        assert_eq!(err_of(r.write(b"x")), libc::EBADF);
    }

    // fallocate: plain extends the size, KEEP_SIZE does not, hole punching is refused.
    {
        let fa =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(c.p(0, "falloc")).expect("open");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&fa);
        // SAFETY: valid descriptor.
        assert_eq!(unsafe { libc::fallocate(fd, 0, 0, 3 * MIB as i64) }, 0, "fallocate: {}", errname(errno()));
        assert_eq!(fa.metadata().expect("fstat").len(), 3 * MIB);
        // SAFETY: as above.
        let rc = unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 5 * MIB as i64) };
        assert_eq!(rc, 0, "fallocate KEEP_SIZE: {}", errname(errno()));
        assert_eq!(fa.metadata().expect("fstat").len(), 3 * MIB);
        // SAFETY: as above.
        let rc = unsafe { libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, 4096) };
        assert_errno(rc as i64, libc::EOPNOTSUPP, "fallocate PUNCH_HOLE");
        assert!(read_at(&c.p(0, "falloc"), 0, 3 * MIB as usize).iter().all(|&x| x == 0));
    }

    // unlink.
    std::fs::remove_file(&f).expect("unlink");
    assert_eq!(err_of(std::fs::metadata(&f)), libc::ENOENT);
    assert_eq!(err_of(std::fs::remove_file(&f)), libc::ENOENT);
}

#[test]
fn directories_and_their_errnos() {
    let c = one_mount("dirs");
    let d = c.p(0, "d");
    std::fs::create_dir(&d).expect("mkdir");
    assert_eq!(err_of(std::fs::create_dir(&d)), libc::EEXIST, "mkdir existing");
    put(&c.p(0, "file"), b"x");
    assert_eq!(err_of(std::fs::create_dir(c.p(0, "file"))), libc::EEXIST, "mkdir over a file");
    assert_eq!(err_of(std::fs::create_dir(c.p(0, "no/such"))), libc::ENOENT, "mkdir in a missing dir");
    assert_eq!(err_of(std::fs::create_dir(c.p(0, "file/sub"))), libc::ENOTDIR, "mkdir under a file");

    std::fs::create_dir(d.join("sub1")).expect("mkdir sub1");
    std::fs::create_dir(d.join("sub2")).expect("mkdir sub2");
    put(&d.join("f"), b"data");
    assert_eq!(std::fs::metadata(&d).expect("stat").nlink(), 4, "nlink = 2 + subdirectories");
    let mut names: Vec<String> =
        std::fs::read_dir(&d).expect("readdir").map(|e| e.expect("e").file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, ["f", "sub1", "sub2"]);
    // "." and ".." appear in the raw listing and point at the right inodes.
    assert_eq!(ino(&d.join(".")), ino(&d));
    assert_eq!(ino(&d.join("sub1/..")), ino(&d));
    assert_eq!(ino(&d.join("..")), ino(c.mp(0)));

    assert_eq!(err_of(std::fs::remove_dir(&d)), libc::ENOTEMPTY, "rmdir non-empty");
    assert_eq!(err_of(std::fs::remove_dir(d.join("f"))), libc::ENOTDIR, "rmdir of a file");
    assert_eq!(err_of(std::fs::remove_file(d.join("sub1"))), libc::EISDIR, "unlink of a dir");
    assert_eq!(err_of(std::fs::remove_dir(d.join("nope"))), libc::ENOENT, "rmdir missing");
    let dot = cpath(&d.join("sub1/."));
    // SAFETY: valid path.
    assert_errno(unsafe { libc::rmdir(dot.as_ptr()) } as i64, libc::EINVAL, "rmdir d/sub1/.");

    std::fs::remove_dir(d.join("sub1")).expect("rmdir sub1");
    assert_eq!(std::fs::metadata(&d).expect("stat").nlink(), 3);
    std::fs::remove_file(d.join("f")).expect("unlink f");
    std::fs::remove_dir(d.join("sub2")).expect("rmdir sub2");
    std::fs::remove_dir(&d).expect("rmdir d");
    assert_eq!(err_of(std::fs::metadata(&d)), libc::ENOENT);

    // Many entries: the listing is complete.
    let many = c.p(0, "many");
    std::fs::create_dir(&many).expect("mkdir");
    for i in 0..300 {
        File::create(many.join(format!("entry-{i:04}"))).expect("create");
    }
    let n = std::fs::read_dir(&many).expect("readdir").count();
    assert_eq!(n, 300);
}

#[test]
fn rename_semantics() {
    let c = one_mount("rename");
    let p = |s: &str| c.p(0, s);
    std::fs::create_dir(p("d1")).expect("mkdir");
    std::fs::create_dir(p("d2")).expect("mkdir");

    // Replacing a file: the target name now holds the source inode and data.
    put(&p("a"), b"A");
    put(&p("b"), b"B");
    let ia = ino(&p("a"));
    std::fs::rename(p("a"), p("b")).expect("rename over file");
    assert_eq!(std::fs::read(p("b")).expect("read"), b"A");
    assert_eq!(ino(&p("b")), ia);
    assert_eq!(err_of(std::fs::metadata(p("a"))), libc::ENOENT);

    // Across directories, with a directory: nlink of both parents and ".." follow.
    std::fs::create_dir(p("d1/sub")).expect("mkdir");
    put(&p("d1/sub/f"), b"inner");
    assert_eq!(std::fs::metadata(p("d1")).expect("stat").nlink(), 3);
    std::fs::rename(p("d1/sub"), p("d2/moved")).expect("rename dir across dirs");
    assert_eq!(std::fs::metadata(p("d1")).expect("stat").nlink(), 2);
    assert_eq!(std::fs::metadata(p("d2")).expect("stat").nlink(), 3);
    assert_eq!(ino(&p("d2/moved/..")), ino(&p("d2")));
    assert_eq!(std::fs::read(p("d2/moved/f")).expect("read"), b"inner");
    std::fs::rename(p("b"), p("d1/b")).expect("rename file across dirs");
    assert_eq!(std::fs::read(p("d1/b")).expect("read"), b"A");

    // Directory onto an empty directory replaces it; onto a non-empty one fails.
    std::fs::create_dir(p("empty")).expect("mkdir");
    std::fs::create_dir(p("full")).expect("mkdir");
    put(&p("full/x"), b"x");
    std::fs::create_dir(p("src")).expect("mkdir");
    assert_eq!(err_of(std::fs::rename(p("src"), p("full"))), libc::ENOTEMPTY, "dir onto non-empty dir");
    std::fs::rename(p("src"), p("empty")).expect("dir onto empty dir");
    assert_eq!(err_of(std::fs::metadata(p("src"))), libc::ENOENT);
    // File onto directory and directory onto file.
    put(&p("plain"), b"p");
    assert_eq!(err_of(std::fs::rename(p("plain"), p("empty"))), libc::EISDIR, "file onto dir");
    assert_eq!(err_of(std::fs::rename(p("empty"), p("plain"))), libc::ENOTDIR, "dir onto file");
    // Missing source.
    assert_eq!(err_of(std::fs::rename(p("nope"), p("x"))), libc::ENOENT);
    // A directory into its own subdirectory.
    std::fs::create_dir_all(p("top/mid/low")).expect("mkdir -p");
    assert_eq!(err_of(std::fs::rename(p("top"), p("top/mid/low/top"))), libc::EINVAL, "dir into own subdir");
    assert_eq!(err_of(std::fs::rename(p("top"), p("top/inside"))), libc::EINVAL, "dir into itself");
    // Renaming onto itself (and onto a hard link of itself) is a no-op.
    std::fs::rename(p("plain"), p("plain")).expect("rename to itself");
    std::fs::hard_link(p("plain"), p("plain2")).expect("link");
    std::fs::rename(p("plain"), p("plain2")).expect("rename onto own hard link");
    assert_eq!(std::fs::read(p("plain")).expect("both names stay"), b"p");
    assert_eq!(std::fs::read(p("plain2")).expect("both names stay"), b"p");

    // renameat2 RENAME_NOREPLACE.
    put(&p("n1"), b"n1");
    put(&p("n2"), b"n2");
    assert_errno(renameat2(&p("n1"), &p("n2"), libc::RENAME_NOREPLACE), libc::EEXIST, "RENAME_NOREPLACE onto existing");
    assert_eq!(std::fs::read(p("n2")).expect("read"), b"n2", "target untouched");
    assert_eq!(renameat2(&p("n1"), &p("n3"), libc::RENAME_NOREPLACE), 0, "RENAME_NOREPLACE to a new name");
    assert_eq!(std::fs::read(p("n3")).expect("read"), b"n1");
    assert_eq!(err_of(std::fs::metadata(p("n1"))), libc::ENOENT);

    // renameat2 RENAME_EXCHANGE: a file and a directory swap places.
    std::fs::create_dir(p("xd")).expect("mkdir");
    put(&p("xd/inner"), b"in dir");
    let (i2, id) = (ino(&p("n2")), ino(&p("xd")));
    assert_eq!(renameat2(&p("n2"), &p("xd"), libc::RENAME_EXCHANGE), 0, "RENAME_EXCHANGE: {}", errname(errno()));
    assert_eq!(ino(&p("n2")), id);
    assert_eq!(ino(&p("xd")), i2);
    assert_eq!(std::fs::read(p("xd")).expect("read"), b"n2");
    assert_eq!(std::fs::read(p("n2/inner")).expect("read"), b"in dir");
    // Across directories.
    assert_eq!(renameat2(&p("n3"), &p("d1/b"), libc::RENAME_EXCHANGE), 0, "RENAME_EXCHANGE across dirs");
    assert_eq!(std::fs::read(p("n3")).expect("read"), b"A");
    assert_eq!(std::fs::read(p("d1/b")).expect("read"), b"n1");
    assert_errno(renameat2(&p("n3"), &p("missing"), libc::RENAME_EXCHANGE), libc::ENOENT, "exchange with missing");
    assert_errno(
        renameat2(&p("n3"), &p("xd"), libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE),
        libc::EINVAL,
        "EXCHANGE|NOREPLACE",
    );
}

#[test]
fn hard_and_symbolic_links() {
    let c = one_mount("links");
    let p = |s: &str| c.p(0, s);
    put(&p("orig"), b"shared data");
    std::fs::create_dir(p("d")).expect("mkdir");
    std::fs::hard_link(p("orig"), p("d/link")).expect("link");
    let (m1, m2) = (std::fs::metadata(p("orig")).expect("stat"), std::fs::metadata(p("d/link")).expect("stat"));
    assert_eq!(m1.ino(), m2.ino());
    assert_eq!((m1.nlink(), m2.nlink()), (2, 2));
    // Data written through one name is read through the other.
    {
        let f = OpenOptions::new().write(true).open(p("d/link")).expect("open link");
        f.write_all_at(b"SHARED", 0).expect("write");
    }
    assert_eq!(std::fs::read(p("orig")).expect("read"), b"SHARED data");
    assert_eq!(err_of(std::fs::hard_link(p("orig"), p("d/link"))), libc::EEXIST, "link onto existing name");
    assert_eq!(err_of(std::fs::hard_link(p("d"), p("dirlink"))), libc::EPERM, "hard link to a directory");
    assert_eq!(err_of(std::fs::hard_link(p("missing"), p("x"))), libc::ENOENT);
    std::fs::hard_link(p("orig"), p("third")).expect("link");
    assert_eq!(std::fs::metadata(p("orig")).expect("stat").nlink(), 3);
    std::fs::remove_file(p("orig")).expect("unlink");
    assert_eq!(std::fs::metadata(p("d/link")).expect("stat").nlink(), 2);
    std::fs::remove_file(p("third")).expect("unlink");
    assert_eq!(std::fs::metadata(p("d/link")).expect("stat").nlink(), 1);
    assert_eq!(std::fs::read(p("d/link")).expect("read"), b"SHARED data");

    // Symbolic links.
    let target = "d/link";
    std::os::unix::fs::symlink(target, p("sym")).expect("symlink");
    assert_eq!(std::fs::read_link(p("sym")).expect("readlink").to_str(), Some(target));
    let l = std::fs::symlink_metadata(p("sym")).expect("lstat");
    assert!(l.file_type().is_symlink());
    assert_eq!(l.len(), target.len() as u64, "symlink size is the target length");
    assert_eq!(std::fs::read(p("sym")).expect("read through symlink"), b"SHARED data");
    assert_eq!(std::fs::metadata(p("sym")).expect("stat").ino(), ino(&p("d/link")));
    assert_eq!(err_of(std::os::unix::fs::symlink("x", p("sym"))), libc::EEXIST, "symlink onto existing");
    std::os::unix::fs::symlink("/no/such/place", p("dangling")).expect("dangling symlink");
    assert_eq!(err_of(std::fs::metadata(p("dangling"))), libc::ENOENT);
    assert_eq!(err_of(std::fs::read_link(p("d/link"))), libc::EINVAL, "readlink of a file");
    let long: String = "x/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long, p("longsym")).expect("long symlink target");
    assert_eq!(std::fs::read_link(p("longsym")).expect("readlink").to_str(), Some(long.as_str()));
    // A symlink to a directory, traversed.
    std::os::unix::fs::symlink("d", p("dsym")).expect("symlink to dir");
    assert_eq!(std::fs::read(p("dsym/link")).expect("read via dir symlink"), b"SHARED data");
    std::fs::remove_file(p("sym")).expect("unlink symlink");
    assert!(std::fs::metadata(p("d/link")).is_ok(), "target survives the symlink");
}

#[test]
fn modes_owners_and_times() {
    let c = one_mount("attrs");
    let f = c.p(0, "f");
    put(&f, b"x");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(std::fs::metadata(&f).expect("stat").mode() & 0o7777, 0o640);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).expect("chmod setuid");
    assert_eq!(std::fs::metadata(&f).expect("stat").mode() & 0o7777, 0o4755);
    {
        let h = File::open(&f).expect("open");
        h.set_permissions(std::fs::Permissions::from_mode(0o600)).expect("fchmod");
        assert_eq!(h.metadata().expect("fstat").mode() & 0o7777, 0o600);
    }
    std::os::unix::fs::chown(&f, Some(1000), Some(2000)).expect("chown");
    let m = std::fs::metadata(&f).expect("stat");
    assert_eq!((m.uid(), m.gid()), (1000, 2000));
    std::os::unix::fs::chown(&f, None, Some(3000)).expect("chgrp");
    let m = std::fs::metadata(&f).expect("stat");
    assert_eq!((m.uid(), m.gid()), (1000, 3000));
    // New files belong to the creator (root here) and get the mode given (0600 survives any umask).
    let g = c.p(0, "g");
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(&g).expect("create 0600");
    let m = std::fs::metadata(&g).expect("stat");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 0, 0o600));
    std::fs::create_dir(c.p(0, "dir")).expect("mkdir");
    std::fs::set_permissions(c.p(0, "dir"), std::fs::Permissions::from_mode(0o1777)).expect("chmod sticky");
    assert_eq!(std::fs::metadata(c.p(0, "dir")).expect("stat").mode() & 0o7777, 0o1777);

    // The creator's umask applies to the mode given at creation.
    let umask = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("Umask:").map(|v| u32::from_str_radix(v.trim(), 8).expect("umask")))
        .expect("Umask line");
    File::create(c.p(0, "masked")).expect("create 0666");
    assert_eq!(std::fs::metadata(c.p(0, "masked")).expect("stat").mode() & 0o777, 0o666 & !umask, "umask applied");
    // A set-group-ID directory hands its group (and, to subdirectories, the bit) down.
    let sg = c.p(0, "sgid");
    std::fs::create_dir(&sg).expect("mkdir");
    std::os::unix::fs::chown(&sg, None, Some(4000)).expect("chgrp");
    std::fs::set_permissions(&sg, std::fs::Permissions::from_mode(0o2775)).expect("chmod g+s");
    File::create(sg.join("file")).expect("create in sgid dir");
    std::fs::create_dir(sg.join("sub")).expect("mkdir in sgid dir");
    assert_eq!(std::fs::metadata(sg.join("file")).expect("stat").gid(), 4000, "file inherits the dir's group");
    let sub = std::fs::metadata(sg.join("sub")).expect("stat");
    assert_eq!(sub.gid(), 4000, "subdir inherits the dir's group");
    assert_ne!(sub.mode() & 0o2000, 0, "subdir inherits the set-group-ID bit");

    // utimensat with nanoseconds round-trips exactly.
    let cp = cpath(&f);
    let ts = [
        libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 123_456_789 },
        libc::timespec { tv_sec: 1_500_000_000, tv_nsec: 987_654_321 },
    ];
    // SAFETY: valid path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", errname(errno()));
    let m = std::fs::metadata(&f).expect("stat");
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789), "atime");
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 987_654_321), "mtime");
    // UTIME_OMIT keeps a time; whole seconds before 1970 round-trip.
    let ts2 = [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: -86_400, tv_nsec: 0 }];
    // SAFETY: as above.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), ts2.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", errname(errno()));
    let m = std::fs::metadata(&f).expect("stat");
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789), "atime kept by UTIME_OMIT");
    assert_eq!((m.mtime(), m.mtime_nsec()), (-86_400, 0), "mtime one day before the epoch");
    // UTIME_NOW.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let ts3 = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
    ];
    // SAFETY: as above.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), ts3.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat now: {}", errname(errno()));
    let m = std::fs::metadata(&f).expect("stat");
    assert!((m.mtime() - now).abs() <= 5 && (m.atime() - now).abs() <= 5, "UTIME_NOW sets the current time");

    // Writing updates mtime and ctime; chmod updates ctime only.
    let old = std::fs::metadata(&g).expect("stat");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&g, b"new data").expect("write");
    let new = std::fs::metadata(&g).expect("stat");
    assert!((new.mtime(), new.mtime_nsec()) > (old.mtime(), old.mtime_nsec()), "mtime advances on write");
    assert!((new.ctime(), new.ctime_nsec()) > (old.ctime(), old.ctime_nsec()), "ctime advances on write");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let after = std::fs::metadata(&g).expect("stat");
    assert_eq!((after.mtime(), after.mtime_nsec()), (new.mtime(), new.mtime_nsec()), "chmod keeps mtime");
    assert!((after.ctime(), after.ctime_nsec()) > (new.ctime(), new.ctime_nsec()), "chmod advances ctime");
    // Creating an entry updates the directory's mtime.
    let d0 = std::fs::metadata(c.p(0, "dir")).expect("stat");
    std::thread::sleep(std::time::Duration::from_millis(20));
    File::create(c.p(0, "dir/new")).expect("create");
    let d1 = std::fs::metadata(c.p(0, "dir")).expect("stat");
    assert!((d1.mtime(), d1.mtime_nsec()) > (d0.mtime(), d0.mtime_nsec()), "dir mtime advances on create");
}

/// Timestamps before 1970 with a fractional second: (-86400 s, +5 ns) is one day minus 5 ns
/// before the epoch and must read back as exactly that.
#[test]
fn times_before_the_epoch_with_nanoseconds() {
    let c = one_mount("epoch");
    let f = c.p(0, "f");
    put(&f, b"x");
    let cp = cpath(&f);
    let ts = [libc::timespec { tv_sec: -1, tv_nsec: 500_000_000 }, libc::timespec { tv_sec: -86_400, tv_nsec: 5 }];
    // SAFETY: valid path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", errname(errno()));
    let m = std::fs::metadata(&f).expect("stat");
    assert_eq!(
        [(m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec())],
        [(-1, 500_000_000), (-86_400, 5)],
        "atime and mtime before the epoch"
    );
}

fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> i64 {
    let (p, n) = (cpath(path), CString::new(name).expect("name"));
    // SAFETY: valid C strings and a value buffer of the given length.
    unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags) as i64 }
}

fn getxattr(path: &Path, name: &str, size: usize) -> (i64, Vec<u8>) {
    let (p, n) = (cpath(path), CString::new(name).expect("name"));
    let mut buf = vec![0u8; size];
    // SAFETY: as above; the buffer has `size` bytes.
    let rc = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) as i64 };
    if rc >= 0 && size > 0 {
        buf.truncate(rc as usize);
    }
    (rc, buf)
}

fn listxattr(path: &Path) -> Vec<String> {
    let p = cpath(path);
    let mut buf = vec![0u8; 4096];
    // SAFETY: as above.
    let rc = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(rc >= 0, "listxattr: {}", errname(errno()));
    // SAFETY: size query.
    let size = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(size, rc, "listxattr size query");
    let mut names: Vec<String> = buf[..rc as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn extended_attributes() {
    let c = one_mount("xattr");
    let f = c.p(0, "f");
    put(&f, b"x");
    assert_eq!(listxattr(&f), Vec::<String>::new());
    assert_eq!(setxattr(&f, "user.one", b"first", 0), 0, "setxattr: {}", errname(errno()));
    let bin = [0u8, 1, 2, 0, 255];
    assert_eq!(setxattr(&f, "user.bin", &bin, 0), 0);
    assert_eq!(setxattr(&f, "user.empty", b"", 0), 0, "empty value: {}", errname(errno()));
    assert_eq!(getxattr(&f, "user.one", 100), (5, b"first".to_vec()));
    assert_eq!(getxattr(&f, "user.bin", 100), (5, bin.to_vec()));
    assert_eq!(getxattr(&f, "user.empty", 100).0, 0);
    assert_eq!(getxattr(&f, "user.one", 0).0, 5, "size query");
    let (rc, _) = getxattr(&f, "user.one", 2);
    assert_errno(rc, libc::ERANGE, "getxattr into a small buffer");
    assert_eq!(listxattr(&f), ["user.bin", "user.empty", "user.one"]);

    // Flags.
    assert_errno(setxattr(&f, "user.one", b"again", libc::XATTR_CREATE), libc::EEXIST, "XATTR_CREATE on existing");
    assert_errno(setxattr(&f, "user.none", b"v", libc::XATTR_REPLACE), libc::ENODATA, "XATTR_REPLACE on missing");
    assert_eq!(setxattr(&f, "user.one", b"replaced", libc::XATTR_REPLACE), 0);
    assert_eq!(setxattr(&f, "user.two", b"created", libc::XATTR_CREATE), 0);
    assert_eq!(getxattr(&f, "user.one", 100), (8, b"replaced".to_vec()));
    assert_errno(getxattr(&f, "user.missing", 100).0, libc::ENODATA, "getxattr missing");

    // Remove.
    let (p, n) = (cpath(&f), CString::new("user.one").expect("name"));
    // SAFETY: valid C strings.
    assert_eq!(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }, 0);
    // SAFETY: as above.
    assert_errno(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } as i64, libc::ENODATA, "removexattr missing");
    assert_eq!(listxattr(&f), ["user.bin", "user.empty", "user.two"]);

    // A large value and a directory's xattrs.
    let big = random_bytes(3, 60_000);
    assert_eq!(setxattr(&f, "user.big", &big, 0), 0, "60 KB value: {}", errname(errno()));
    assert_eq!(getxattr(&f, "user.big", 65536), (big.len() as i64, big.clone()));
    std::fs::create_dir(c.p(0, "d")).expect("mkdir");
    assert_eq!(setxattr(&c.p(0, "d"), "user.dir", b"on a dir", 0), 0);
    assert_eq!(getxattr(&c.p(0, "d"), "user.dir", 100), (8, b"on a dir".to_vec()));
    // Xattrs follow the inode through a rename and a hard link.
    std::fs::rename(&f, c.p(0, "g")).expect("rename");
    std::fs::hard_link(c.p(0, "g"), c.p(0, "h")).expect("link");
    assert_eq!(getxattr(&c.p(0, "h"), "user.two", 100), (7, b"created".to_vec()));
}

#[test]
fn statfs_fsync_and_name_limits() {
    let c = {
        let mut c = Cluster::with_opts(
            "statfs",
            Opts {
                volume_args: vec!["--capacity".into(), "1G".into(), "--inodes".into(), "1000".into()],
                ..Default::default()
            },
        );
        c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
        c
    };
    let statvfs = || {
        let p = cpath(c.mp(0));
        // SAFETY: zeroed out-parameter of the right type, valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::statvfs(p.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs: {}", errname(errno()));
        st
    };
    let st = statvfs();
    assert!(st.f_bsize > 0 && st.f_frsize > 0);
    assert_eq!(st.f_blocks * st.f_frsize, 1 << 30, "total = the 1 GiB capacity");
    assert!(st.f_bfree <= st.f_blocks && st.f_bavail <= st.f_bfree, "free <= total");
    assert_eq!(st.f_files, 1000, "inodes = the quota");
    assert!(st.f_ffree < st.f_files && st.f_ffree > 900);
    assert_eq!(st.f_namemax, 255);

    // Writing 8 MiB and fsyncing shows up in the free space; fsync/fdatasync succeed.
    let f = c.p(0, "f");
    {
        let mut h = File::create(&f).expect("create");
        h.write_all(&random_bytes(1, 8 * MIB as usize)).expect("write");
        h.sync_all().expect("fsync");
        h.write_all(b"more").expect("write");
        h.sync_data().expect("fdatasync");
    }
    let st2 = statvfs();
    let used = (st.f_bfree - st2.f_bfree) * st2.f_frsize;
    assert!(used >= 8 * MIB, "free space dropped by {used} bytes after writing 8 MiB");
    assert_eq!(st.f_ffree - st2.f_ffree, 1, "one inode used");
    // fsync of a read-only descriptor and of a directory.
    File::open(&f).expect("open").sync_all().expect("fsync read-only fd");
    File::open(c.mp(0)).expect("open dir").sync_all().expect("fsync dir");

    // Names: 255 bytes work, 256 fail.
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    put(&c.p(0, &n255), b"long");
    assert_eq!(std::fs::read(c.p(0, &n255)).expect("read"), b"long");
    assert!(std::fs::read_dir(c.mp(0)).expect("readdir").any(|e| e.expect("e").file_name() == n255.as_str()));
    assert_eq!(err_of(File::create(c.p(0, &n256))), libc::ENAMETOOLONG, "create with a 256-byte name");
    assert_eq!(err_of(std::fs::create_dir(c.p(0, &n256))), libc::ENAMETOOLONG, "mkdir with a 256-byte name");
    assert_eq!(err_of(std::fs::metadata(c.p(0, &n256))), libc::ENAMETOOLONG, "lookup of a 256-byte name");
    assert_eq!(err_of(std::fs::rename(c.p(0, &n255), c.p(0, &n256))), libc::ENAMETOOLONG, "rename to 256 bytes");
    assert_eq!(err_of(std::os::unix::fs::symlink("t", c.p(0, &n256))), libc::ENAMETOOLONG);
    assert_eq!(err_of(std::fs::hard_link(c.p(0, &n255), c.p(0, &n256))), libc::ENAMETOOLONG);
    std::fs::remove_file(c.p(0, &n255)).expect("unlink");
}

#[test]
fn permission_checks_for_a_non_root_user() {
    const NOBODY: u32 = 65534;
    let c = one_mount("perm");
    let p = |s: &str| c.p(0, s);
    put(&p("public"), b"readable");
    std::fs::set_permissions(p("public"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    put(&p("secret"), b"secret");
    std::fs::set_permissions(p("secret"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::create_dir(p("rootdir")).expect("mkdir");
    std::fs::set_permissions(p("rootdir"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    put(&p("rootdir/inside"), b"x");
    std::fs::create_dir(p("open")).expect("mkdir");
    std::fs::set_permissions(p("open"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::create_dir(p("sticky")).expect("mkdir");
    std::fs::set_permissions(p("sticky"), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    put(&p("sticky/roots"), b"x");
    std::fs::create_dir(p("noexec")).expect("mkdir");
    put(&p("noexec/f"), b"x");
    std::fs::set_permissions(p("noexec"), std::fs::Permissions::from_mode(0o766)).expect("chmod");

    // Each check runs in a child that is uid/gid 65534 and returns 0 on success or the errno.
    let try_open = |path: &Path, flags: i32| {
        let cp = cpath(path);
        as_user(NOBODY, NOBODY, move || {
            // SAFETY: raw syscalls on a path prepared before fork.
            let fd = unsafe { libc::open(cp.as_ptr(), flags, 0o644) };
            if fd < 0 { errno() } else { 0 }
        })
    };
    let try_call = |f: &(dyn Fn() -> i32 + Sync)| as_user(NOBODY, NOBODY, || if f() < 0 { errno() } else { 0 });

    assert_eq!(try_open(&p("public"), libc::O_RDONLY), 0, "nobody reads a 0644 file");
    assert_eq!(try_open(&p("public"), libc::O_WRONLY), libc::EACCES, "nobody writes a root 0644 file");
    assert_eq!(try_open(&p("public"), libc::O_RDWR), libc::EACCES);
    assert_eq!(try_open(&p("secret"), libc::O_RDONLY), libc::EACCES, "nobody reads a root 0600 file");
    assert_eq!(try_open(&p("rootdir/new"), libc::O_WRONLY | libc::O_CREAT), libc::EACCES, "create in root 0755 dir");
    assert_eq!(try_open(&p("rootdir/inside"), libc::O_RDONLY), 0, "read in a 0755 dir");
    assert_eq!(try_open(&p("noexec/f"), libc::O_RDONLY), libc::EACCES, "traverse a dir without x");
    let mk = cpath(&p("rootdir/sub"));
    // SAFETY: raw syscall on a prepared path.
    assert_eq!(try_call(&|| unsafe { libc::mkdir(mk.as_ptr(), 0o755) }), libc::EACCES, "mkdir in root 0755 dir");
    let un = cpath(&p("rootdir/inside"));
    // SAFETY: as above.
    assert_eq!(try_call(&|| unsafe { libc::unlink(un.as_ptr()) }), libc::EACCES, "unlink in root 0755 dir");
    let ch = cpath(&p("public"));
    // SAFETY: as above.
    assert_eq!(try_call(&|| unsafe { libc::chmod(ch.as_ptr(), 0o777) }), libc::EPERM, "chmod of root's file");
    // SAFETY: as above.
    assert_eq!(try_call(&|| unsafe { libc::chown(ch.as_ptr(), NOBODY, NOBODY) }), libc::EPERM, "chown to self");
    let st = cpath(&p("sticky/roots"));
    // SAFETY: as above.
    assert_eq!(try_call(&|| unsafe { libc::unlink(st.as_ptr()) }), libc::EPERM, "unlink root's file in a sticky dir");
    // In a 0777 directory nobody may create, and owns what it creates.
    assert_eq!(try_open(&p("open/mine"), libc::O_WRONLY | libc::O_CREAT), 0, "create in a 0777 dir");
    let m = std::fs::metadata(p("open/mine")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "new file owned by its creator");
    let mine = cpath(&p("open/mine"));
    // SAFETY: as above.
    assert_eq!(try_call(&|| unsafe { libc::chmod(mine.as_ptr(), 0o600) }), 0, "chmod of own file");
    assert_eq!(std::fs::metadata(p("open/mine")).expect("stat").mode() & 0o777, 0o600);
    // Root still reads everything.
    assert_eq!(std::fs::read(p("secret")).expect("root reads 0600"), b"secret");
}

#[test]
fn unlinked_open_file_stays_readable_until_closed() {
    let c = one_mount("orphan");
    let path = c.p(0, "f");
    let data = random_bytes(9, 6 * MIB as usize + 1);
    put(&path, &data);
    let mut f = OpenOptions::new().read(true).write(true).open(&path).expect("open");
    std::fs::remove_file(&path).expect("unlink");
    assert_eq!(err_of(std::fs::metadata(&path)), libc::ENOENT);
    assert_eq!(f.metadata().expect("fstat").nlink(), 0, "nlink 0 after unlink");
    let mut got = Vec::new();
    f.read_to_end(&mut got).expect("read after unlink");
    assert_bytes_eq(&got, &data, "unlinked-but-open file");
    // It stays writable too.
    f.write_all_at(b"still here", 100).expect("write after unlink");
    f.sync_all().expect("fsync after unlink");
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 100).expect("read back");
    assert_eq!(&buf, b"still here");
    // A new file by the same name is a different file.
    put(&path, b"new");
    assert_eq!(std::fs::read(&path).expect("read new"), b"new");
    f.read_exact_at(&mut buf, 100).expect("old file unaffected");
    assert_eq!(&buf, b"still here");
    drop(f);
    assert_eq!(std::fs::read(&path).expect("read new"), b"new");
}

#[test]
fn byte_and_inode_quotas() {
    let mut c = Cluster::with_opts(
        "quota",
        Opts {
            volume_args: vec!["--capacity".into(), "8M".into(), "--inodes".into(), "10".into()],
            ..Default::default()
        },
    );
    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    // Writing 16 MiB into an 8 MiB volume fails with EDQUOT at write, fsync or close.
    let f = File::create(c.p(0, "big")).expect("create");
    let chunk = random_bytes(1, MIB as usize);
    let mut err = None;
    for i in 0..16u64 {
        if let Err(e) = f.write_all_at(&chunk, i * MIB) {
            err = e.raw_os_error();
            break;
        }
    }
    if err.is_none() {
        err = f.sync_all().err().and_then(|e| e.raw_os_error());
    }
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: closing the descriptor we own.
    let rc = unsafe { libc::close(fd) };
    if err.is_none() && rc != 0 {
        err = Some(errno());
    }
    assert_eq!(err, Some(libc::EDQUOT), "16 MiB into an 8 MiB volume");
    let size = std::fs::metadata(c.p(0, "big")).expect("stat").len();
    assert!(size <= 8 * MIB, "{size} bytes committed past an 8 MiB quota");
    std::fs::remove_file(c.p(0, "big")).expect("unlink");

    // Ten inodes, the root included: nine more names, then EDQUOT.
    let mut made = 0;
    let e = loop {
        match File::create(c.p(0, &format!("f{made}"))) {
            Ok(_) => made += 1,
            Err(e) => break e.raw_os_error(),
        }
        assert!(made <= 20, "the inode quota never bites");
    };
    assert_eq!(e, Some(libc::EDQUOT), "create beyond the inode quota");
    assert_eq!(made, 9, "files created under a 10-inode quota (root counts)");
    assert_eq!(err_of(std::fs::create_dir(c.p(0, "d"))), libc::EDQUOT, "mkdir beyond the inode quota");
    std::fs::remove_file(c.p(0, "f0")).expect("unlink frees an inode");
    File::create(c.p(0, "again")).expect("create after freeing one");
}
