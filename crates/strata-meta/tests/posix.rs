//! POSIX semantics of the metadata layer, one case at a time, with the exact error each
//! refusal must give: directory and name errors, renames, link counts, open-but-unlinked files,
//! truncation holes, extended attributes, set-gid inheritance and permission checks.

mod common;

use common::*;
use strata_meta::error::libc_consts as errno;
use strata_meta::*;
use strata_meta::{RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE, access};

const C: u64 = CHUNK_SIZE;

fn root() -> Ctx {
    Ctx::root()
}

fn err<T: std::fmt::Debug>(r: Result<T>) -> MetaError {
    r.expect_err("the operation should have failed")
}

fn ino_of(m: &Meta, parent: Ino, name: &str) -> Result<Ino> {
    m.lookup(&root(), parent, name.as_bytes()).map(|r| r.0)
}

fn chmod(m: &Meta, ino: Ino, mode: u32, uid: u32, gid: u32) {
    m.setattr(&root(), ino, &SetAttr { mode: Some(mode), uid: Some(uid), gid: Some(gid), ..Default::default() })
        .expect("chmod/chown as root");
}

fn truncate(m: &Meta, ctx: &Ctx, ino: Ino, size: u64) -> Result<Attr> {
    m.setattr(ctx, ino, &SetAttr { size: Some(size), ..Default::default() })
}

fn hole(pos: u32, len: u32) -> Slice {
    Slice { pos, id: 0, size: 0, off: 0, len }
}

#[test]
fn rmdir_of_a_non_empty_directory_is_enotempty() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    mkfile(m, &root(), d, "f", 0o644).unwrap();
    let e = err(m.rmdir(&root(), r, b"d"));
    assert_eq!(e, MetaError::NotEmpty);
    assert_eq!(e.errno(), errno::ENOTEMPTY);
    assert_eq!(ino_of(m, r, "d"), Ok(d), "a refused rmdir leaves the directory");
    assert_eq!(m.getattr(r).unwrap().nlink, 3);

    // A subdirectory counts as content too.
    m.unlink(&root(), d, b"f").unwrap();
    mkdir(m, &root(), d, "sub", 0o755).unwrap();
    assert_eq!(m.rmdir(&root(), r, b"d"), Err(MetaError::NotEmpty));
    m.rmdir(&root(), d, b"sub").unwrap();

    assert_eq!(m.rmdir(&root(), d, b".."), Err(MetaError::NotEmpty));
    assert!(matches!(m.rmdir(&root(), d, b"."), Err(MetaError::Invalid(_))));
    m.rmdir(&root(), r, b"d").unwrap();
    assert_eq!(m.getattr(d), Err(MetaError::NotFound));
    assert_eq!(m.getattr(r).unwrap().nlink, 2);
    assert_eq!(m.rmdir(&root(), r, b"d"), Err(MetaError::NotFound));
    assert_eq!(m.usage(fs.meta.volume("v").unwrap().id).unwrap(), Usage { bytes: 0, inodes: 1 });
}

#[test]
fn unlink_of_a_directory_is_eisdir() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    let e = err(m.unlink(&root(), r, b"d"));
    assert_eq!(e, MetaError::IsDir);
    assert_eq!(e.errno(), errno::EISDIR);
    assert_eq!(ino_of(m, r, "d"), Ok(d));
    assert_eq!(m.getattr(r).unwrap().nlink, 3);
    assert_eq!(m.unlink(&root(), r, b"missing"), Err(MetaError::NotFound));
}

#[test]
fn operations_on_a_non_directory_are_enotdir() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let f = mkfile(m, &root(), r, "f", 0o644).unwrap();
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    let l = symlink(m, &root(), r, "l", "d").unwrap();

    for parent in [f, l] {
        let e = err(mkfile(m, &root(), parent, "x", 0o644));
        assert_eq!((e.clone(), e.errno()), (MetaError::NotDir, errno::ENOTDIR));
        assert_eq!(mkdir(m, &root(), parent, "x", 0o755), Err(MetaError::NotDir));
        assert_eq!(m.lookup(&root(), parent, b"x").map(|x| x.0), Err(MetaError::NotDir));
        assert_eq!(m.readdir(&root(), parent, false), Err(MetaError::NotDir));
        assert_eq!(m.unlink(&root(), parent, b"x"), Err(MetaError::NotDir));
        assert_eq!(m.rmdir(&root(), parent, b"x"), Err(MetaError::NotDir));
        assert_eq!(m.link(&root(), f, parent, b"x").map(|_| ()), Err(MetaError::NotDir));
        assert_eq!(m.rename(&root(), parent, b"x", r, b"y", 0), Err(MetaError::NotDir));
        assert_eq!(m.rename(&root(), r, b"f", parent, b"y", 0), Err(MetaError::NotDir));
    }
    // rmdir of a file, and a directory renamed over a file.
    assert_eq!(m.rmdir(&root(), r, b"f"), Err(MetaError::NotDir));
    assert_eq!(m.rmdir(&root(), r, b"l"), Err(MetaError::NotDir));
    assert_eq!(m.rename(&root(), r, b"d", r, b"f", 0), Err(MetaError::NotDir));
    assert_eq!((ino_of(m, r, "f"), ino_of(m, r, "d")), (Ok(f), Ok(d)));
    assert_eq!(m.getattr(r).unwrap().nlink, 3);
}

#[test]
fn creating_an_existing_name_is_eexist() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    let f = mkfile(m, &root(), r, "f", 0o644).unwrap();
    let e = err(mkdir(m, &root(), r, "d", 0o755));
    assert_eq!((e.clone(), e.errno()), (MetaError::Exists, errno::EEXIST));
    assert_eq!(mkdir(m, &root(), r, "f", 0o755), Err(MetaError::Exists));
    assert_eq!(mkfile(m, &root(), r, "f", 0o644), Err(MetaError::Exists), "exclusive create");
    assert_eq!(symlink(m, &root(), r, "f", "x"), Err(MetaError::Exists));
    // Without `excl`, an existing regular file is opened instead; anything else is EEXIST.
    let (ino, _, created) = m.mknod(&root(), r, b"f", FileType::File, 0o644, 0, 0, b"", false).unwrap();
    assert_eq!((ino, created), (f, false));
    let nonexcl_dir = m.mknod(&root(), r, b"d", FileType::File, 0o644, 0, 0, b"", false);
    assert_eq!(nonexcl_dir.map(|x| x.0), Err(MetaError::Exists));
    assert_eq!(m.link(&root(), f, r, b"d").map(|_| ()), Err(MetaError::Exists));
    assert_eq!(m.getattr(f).unwrap().nlink, 1);
    assert_eq!(m.rename(&root(), r, b"f", r, b"d", RENAME_NOREPLACE), Err(MetaError::Exists));

    // RENAME_NOREPLACE refuses an existing target even when it is another link of the source.
    m.link(&root(), f, d, b"g").unwrap();
    assert_eq!(m.rename(&root(), r, b"f", d, b"g", RENAME_NOREPLACE), Err(MetaError::Exists));
    assert_eq!(m.rename(&root(), r, b"f", r, b"f", RENAME_NOREPLACE), Err(MetaError::Exists));
    // Without the flag, renaming onto another link of the same inode does nothing.
    m.rename(&root(), r, b"f", d, b"g", 0).unwrap();
    assert_eq!((ino_of(m, r, "f"), ino_of(m, d, "g")), (Ok(f), Ok(f)));
    assert_eq!(m.getattr(f).unwrap().nlink, 2);

    // "." and ".." always exist: they can be neither created nor linked nor renamed to.
    for dot in [".", ".."] {
        assert_eq!(mkdir(m, &root(), d, dot, 0o755), Err(MetaError::Exists), "mkdir {dot}");
        assert_eq!(mkfile(m, &root(), d, dot, 0o644), Err(MetaError::Exists), "create {dot}");
        assert_eq!(symlink(m, &root(), d, dot, "x"), Err(MetaError::Exists), "symlink {dot}");
        assert_eq!(m.link(&root(), f, d, dot.as_bytes()).map(|_| ()), Err(MetaError::Exists), "link {dot}");
        assert!(m.rename(&root(), r, b"f", d, dot.as_bytes(), 0).is_err(), "rename to {dot}");
    }
    assert_eq!(names(m, d), vec!["g"]);
    assert_eq!(ino_of(m, d, ".."), Ok(r));
    assert_eq!(m.getattr(f).unwrap().nlink, 2);
}

#[test]
fn names_of_256_bytes_are_enametoolong() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let ok_name = "n".repeat(NAME_MAX);
    let long = "n".repeat(NAME_MAX + 1);
    let f = mkfile(m, &root(), r, &ok_name, 0o644).unwrap();
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();

    let e = err(mkfile(m, &root(), r, &long, 0o644));
    assert_eq!((e.clone(), e.errno()), (MetaError::NameTooLong, errno::ENAMETOOLONG));
    assert_eq!(mkdir(m, &root(), r, &long, 0o755), Err(MetaError::NameTooLong));
    assert_eq!(symlink(m, &root(), r, &long, "t"), Err(MetaError::NameTooLong));
    assert_eq!(m.link(&root(), f, d, long.as_bytes()).map(|_| ()), Err(MetaError::NameTooLong));
    assert_eq!(m.lookup(&root(), r, long.as_bytes()).map(|x| x.0), Err(MetaError::NameTooLong));
    assert_eq!(m.unlink(&root(), r, long.as_bytes()), Err(MetaError::NameTooLong));
    assert_eq!(m.rmdir(&root(), r, long.as_bytes()), Err(MetaError::NameTooLong));
    assert_eq!(m.rename(&root(), r, ok_name.as_bytes(), r, long.as_bytes(), 0), Err(MetaError::NameTooLong));
    assert_eq!(m.rename(&root(), r, long.as_bytes(), r, b"x", 0), Err(MetaError::NameTooLong));
    // A symlink target longer than PATH_MAX is refused the same way.
    let target = "t".repeat(PATH_MAX + 1);
    assert_eq!(symlink(m, &root(), r, "l", &target), Err(MetaError::NameTooLong));
    symlink(m, &root(), r, "l", &"t".repeat(PATH_MAX)).unwrap();

    assert_eq!(names(m, r), vec!["d".to_string(), "l".to_string(), ok_name.clone()]);
    assert_eq!(ino_of(m, r, &ok_name), Ok(f));
    assert_eq!(m.getattr(f).unwrap().nlink, 1);
    // Empty names and names with '/' or NUL are not names at all.
    for bad in [&b""[..], b"a/b", b"a\0b"] {
        assert!(matches!(m.mknod(&root(), r, bad, FileType::File, 0o644, 0, 0, b"", true), Err(MetaError::Invalid(_))));
    }
}

#[test]
fn links_and_renames_between_volumes_are_exdev() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let (v1, v2) = (fs.volume("one"), fs.volume("two"));
    let f = mkfile(m, &root(), v1.root, "f", 0o644).unwrap();
    mkfile(m, &root(), v2.root, "g", 0o644).unwrap();
    let d = mkdir(m, &root(), v1.root, "d", 0o755).unwrap();

    let e = err(m.link(&root(), f, v2.root, b"f"));
    assert_eq!((e.clone(), e.errno()), (MetaError::CrossDevice, errno::EXDEV));
    for flags in [0, RENAME_NOREPLACE] {
        assert_eq!(m.rename(&root(), v1.root, b"f", v2.root, b"f", flags), Err(MetaError::CrossDevice));
        assert_eq!(m.rename(&root(), v1.root, b"d", v2.root, b"d", flags), Err(MetaError::CrossDevice));
    }
    assert_eq!(m.rename(&root(), v1.root, b"f", v2.root, b"g", 0), Err(MetaError::CrossDevice));
    assert_eq!(m.rename(&root(), v1.root, b"f", v2.root, b"g", RENAME_EXCHANGE), Err(MetaError::CrossDevice));

    assert_eq!(names(m, v1.root), vec!["d", "f"]);
    assert_eq!(names(m, v2.root), vec!["g"]);
    assert_eq!(m.getattr(f).unwrap().nlink, 1);
    assert_eq!(m.getattr(d).unwrap().parent, v1.root);
    assert_eq!(m.usage(v1.id).unwrap().inodes, 3);
    assert_eq!(m.usage(v2.id).unwrap().inodes, 2);
}

#[test]
fn moving_a_directory_into_its_own_subtree_is_einval() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let a = mkdir(m, &root(), r, "a", 0o755).unwrap();
    let b = mkdir(m, &root(), a, "b", 0o755).unwrap();
    let c = mkdir(m, &root(), b, "c", 0o755).unwrap();

    for (into, flags) in [(a, 0), (b, 0), (c, 0), (c, RENAME_NOREPLACE), (c, RENAME_EXCHANGE)] {
        let e = err(m.rename(&root(), r, b"a", into, b"x", flags));
        assert!(matches!(e, MetaError::Invalid(_)), "a into {into} ({flags}): {e:?}");
        assert_eq!(e.errno(), errno::EINVAL);
    }
    // Exchanging a directory with one of its descendants, either way round.
    assert!(matches!(m.rename(&root(), r, b"a", b, b"c", RENAME_EXCHANGE), Err(MetaError::Invalid(_))));
    assert!(matches!(m.rename(&root(), b, b"c", r, b"a", RENAME_EXCHANGE), Err(MetaError::Invalid(_))));
    // Replacing an ancestor of the source: it is not empty.
    assert_eq!(m.rename(&root(), b, b"c", r, b"a", 0), Err(MetaError::NotEmpty));

    for (dir, parent, nlink) in [(a, r, 3), (b, a, 3), (c, b, 2)] {
        let at = m.getattr(dir).unwrap();
        assert_eq!((at.parent, at.nlink), (parent, nlink));
    }
    assert_eq!(m.getattr(r).unwrap().nlink, 3);
    // Moving within the tree but not below itself is fine.
    m.rename(&root(), b, b"c", r, b"c", 0).unwrap();
    assert_eq!(m.getattr(c).unwrap().parent, r);
    assert_eq!((m.getattr(b).unwrap().nlink, m.getattr(r).unwrap().nlink), (2, 4));
}

#[test]
fn rename_replaces_a_file_atomically() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("v");
    let r = vol.root;
    let old = mkfile(m, &root(), r, "target", 0o644).unwrap();
    let new = mkfile(m, &root(), r, "source", 0o644).unwrap();
    let (s1, s2, s3) = (slice(m, 0, 5000), slice(m, 100, 10), slice(m, 0, 3));
    m.commit_writes(old, &[(0, s1), (0, s2), (1, s3)]).unwrap();
    let s4 = slice(m, 0, 100);
    m.commit_writes(new, &[(0, s4)]).unwrap();
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: (C + 4096) + 4096, inodes: 3 });

    m.rename(&root(), r, b"source", r, b"target", 0).unwrap();
    assert_eq!(ino_of(m, r, "target"), Ok(new));
    assert_eq!(ino_of(m, r, "source"), Err(MetaError::NotFound));
    assert_eq!(names(m, r), vec!["target"]);
    assert_eq!(m.getattr(old), Err(MetaError::NotFound), "the replaced inode is gone");
    assert_eq!(m.read_chunk(old, 0), Err(MetaError::NotFound), "and so are its chunks");
    assert_eq!(m.read_chunk(new, 0).unwrap(), vec![s4]);
    let pending = m.collectable(usize::MAX).unwrap();
    let mut ids: Vec<u64> = pending.iter().map(|p| p.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![s1.id, s2.id, s3.id]);
    for (_, p) in &pending {
        assert_eq!((p.volume, p.ino), (vol.id, old));
    }
    assert_eq!(pending.iter().find(|p| p.0 == s1.id).unwrap().1.size, 5000);
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 4096, inodes: 2 });

    // A replaced target that is still open lives on, and its slices wait for the last close.
    m.forget_pending(&ids).unwrap();
    let other = mkfile(m, &root(), r, "other", 0o644).unwrap();
    let s5 = slice(m, 0, 1);
    m.commit_writes(new, &[(0, s5)]).unwrap();
    m.open(9, new).unwrap();
    m.rename(&root(), r, b"other", r, b"target", 0).unwrap();
    assert_eq!(ino_of(m, r, "target"), Ok(other));
    assert_eq!(m.getattr(new).unwrap().nlink, 0);
    assert_eq!(m.read_chunk(new, 0).unwrap(), vec![s4, s5]);
    assert_eq!(collectable_ids(m), Vec::<u64>::new());
    m.close(9, new).unwrap();
    assert_eq!(m.getattr(new), Err(MetaError::NotFound));
    assert_eq!(collectable_ids(m), vec![s4.id, s5.id]);
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 2 });

    // Replacing one link of a multiply linked file only drops that link.
    let f = mkfile(m, &root(), r, "f", 0o644).unwrap();
    m.link(&root(), f, r, b"f2").unwrap();
    m.rename(&root(), r, b"target", r, b"f2", 0).unwrap();
    assert_eq!(m.getattr(f).unwrap().nlink, 1);
    assert_eq!(ino_of(m, r, "f2"), Ok(other));
}

#[test]
fn rename_over_an_empty_directory() {
    let fs = TestFs::new();
    let vol = fs.volume("v");
    let (m, r) = (&fs.meta, vol.root);
    let a = mkdir(m, &root(), r, "a", 0o755).unwrap();
    mkdir(m, &root(), a, "x", 0o755).unwrap();
    let b = mkdir(m, &root(), r, "b", 0o755).unwrap();
    assert_eq!(m.getattr(r).unwrap().nlink, 4);
    m.rename(&root(), r, b"a", r, b"b", 0).unwrap();
    assert_eq!(ino_of(m, r, "b"), Ok(a));
    assert_eq!(m.getattr(b), Err(MetaError::NotFound));
    assert_eq!(m.getattr(r).unwrap().nlink, 3);
    assert_eq!(names(m, a), vec!["x"]);
    assert_eq!(m.usage(vol.id).unwrap().inodes, 3);

    // Across directories: parents' link counts and the moved directory's ".." follow.
    let p = mkdir(m, &root(), r, "p", 0o755).unwrap();
    let q = mkdir(m, &root(), r, "q", 0o755).unwrap();
    let d = mkdir(m, &root(), p, "d", 0o755).unwrap();
    let e = mkdir(m, &root(), q, "e", 0o755).unwrap();
    m.rename(&root(), p, b"d", q, b"e", 0).unwrap();
    assert_eq!(m.getattr(e), Err(MetaError::NotFound));
    assert_eq!((m.getattr(p).unwrap().nlink, m.getattr(q).unwrap().nlink), (2, 3));
    assert_eq!(m.getattr(d).unwrap().parent, q);
    assert_eq!(ino_of(m, d, ".."), Ok(q));

    // Not over a non-empty directory, not a file over a directory, not a directory over a file.
    mkfile(m, &root(), d, "f", 0o644).unwrap();
    let e = err(m.rename(&root(), r, b"p", q, b"e", 0));
    assert_eq!((e.clone(), e.errno()), (MetaError::NotEmpty, errno::ENOTEMPTY));
    assert_eq!(m.rename(&root(), d, b"f", r, b"p", 0), Err(MetaError::IsDir));
    assert_eq!(m.rename(&root(), r, b"p", d, b"f", 0), Err(MetaError::NotDir));
    assert_eq!(m.getattr(p).unwrap().parent, r);
    assert_eq!(m.getattr(r).unwrap().nlink, 5);
}

#[test]
fn rename_exchange_swaps_entries() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let p = mkdir(m, &root(), r, "p", 0o755).unwrap();
    let q = mkdir(m, &root(), r, "q", 0o755).unwrap();
    let d = mkdir(m, &root(), p, "d", 0o755).unwrap();
    let f = mkfile(m, &root(), q, "f", 0o644).unwrap();
    m.rename(&root(), p, b"d", q, b"f", RENAME_EXCHANGE).unwrap();
    assert_eq!((ino_of(m, p, "d"), ino_of(m, q, "f")), (Ok(f), Ok(d)));
    assert_eq!(m.getattr(d).unwrap().parent, q);
    assert_eq!((m.getattr(p).unwrap().nlink, m.getattr(q).unwrap().nlink), (2, 3));
    assert_eq!(m.getattr(f).unwrap().nlink, 1);
    assert_eq!(m.rename(&root(), p, b"d", q, b"missing", RENAME_EXCHANGE), Err(MetaError::NotFound));
    assert!(matches!(
        m.rename(&root(), p, b"d", q, b"f", RENAME_EXCHANGE | RENAME_NOREPLACE),
        Err(MetaError::Invalid(_))
    ));
}

#[test]
fn link_counts_follow_links_and_unlinks() {
    let fs = TestFs::new();
    let vol = fs.volume("v");
    let (m, r) = (&fs.meta, vol.root);
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    assert_eq!((m.getattr(r).unwrap().nlink, m.getattr(d).unwrap().nlink), (3, 2));
    mkdir(m, &root(), d, "sub", 0o755).unwrap();
    assert_eq!(m.getattr(d).unwrap().nlink, 3);
    let f = mkfile(m, &root(), r, "f", 0o644).unwrap();
    assert_eq!(m.link(&root(), f, r, b"g").unwrap().nlink, 2);
    assert_eq!(m.link(&root(), f, d, b"h").unwrap().nlink, 3);
    assert_eq!(m.getattr(f).unwrap().nlink, 3);
    assert_eq!(m.usage(vol.id).unwrap().inodes, 4, "links are not inodes");
    let e = err(m.link(&root(), d, r, b"dlink"));
    assert_eq!((e.clone(), e.errno()), (MetaError::Perm, errno::EPERM));

    let s = slice(m, 0, 10);
    m.commit_writes(f, &[(0, s)]).unwrap();
    m.unlink(&root(), r, b"g").unwrap();
    assert_eq!(m.getattr(f).unwrap().nlink, 2);
    m.unlink(&root(), r, b"f").unwrap();
    assert_eq!(m.getattr(f).unwrap().nlink, 1);
    assert_eq!(ino_of(m, d, "h"), Ok(f));
    assert_eq!(collectable_ids(m), Vec::<u64>::new(), "data stays while a link does");
    m.unlink(&root(), d, b"h").unwrap();
    assert_eq!(m.getattr(f), Err(MetaError::NotFound));
    assert_eq!(collectable_ids(m), vec![s.id]);
    assert_eq!(m.link(&root(), f, r, b"again").map(|_| ()), Err(MetaError::NotFound));
    m.rmdir(&root(), d, b"sub").unwrap();
    assert_eq!(m.getattr(d).unwrap().nlink, 2);
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 2 });
}

#[test]
fn an_unlinked_open_inode_lives_until_its_last_close() {
    let mut fs = TestFs::new();
    let vol = fs.volume("v");
    let r = vol.root;
    let m = &fs.meta;
    let (f, s1) = file_with_slice(m, r, "f", 8192);
    assert_eq!(m.open(1, f).unwrap().size, 8192);
    m.open(2, f).unwrap();
    m.unlink(&root(), r, b"f").unwrap();

    assert_eq!(ino_of(m, r, "f"), Err(MetaError::NotFound));
    let a = m.getattr(f).unwrap();
    assert_eq!((a.nlink, a.size), (0, 8192));
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 8192, inodes: 2 });
    // Still readable, writable and truncatable through the open handles.
    let s2 = slice(m, 8192, 100);
    assert_eq!(m.commit_writes(f, &[(0, s2)]).unwrap().size, 8292);
    assert_eq!(m.read_chunk(f, 0).unwrap(), vec![s1, s2]);
    truncate(m, &root(), f, 0).unwrap();
    // The freed slices wait: an open file may still read them.
    assert_eq!(collectable_ids(m), Vec::<u64>::new());
    let s3 = slice(m, 0, 1);
    m.commit_writes(f, &[(0, s3)]).unwrap();
    assert_eq!(m.link(&root(), f, r, b"back").map(|_| ()), Err(MetaError::NotFound));

    m.close(1, f).unwrap();
    m.close(1, f).unwrap(); // a second close by the same session is a no-op
    assert_eq!(m.getattr(f).unwrap().nlink, 0, "session 2 still has it open");
    m.close(2, f).unwrap();
    assert_eq!(m.getattr(f), Err(MetaError::NotFound));
    assert_eq!(m.read_chunk(f, 0), Err(MetaError::NotFound));
    assert_eq!(collectable_ids(m), vec![s1.id, s2.id, s3.id]);
    assert!(m.collectable(usize::MAX).unwrap().iter().all(|(_, p)| p.ino == f && p.volume == vol.id));
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });

    // close_session closes every open of a session at once.
    let g = mkfile(m, &root(), r, "g", 0o644).unwrap();
    m.open(3, g).unwrap();
    m.open(3, g).unwrap();
    m.unlink(&root(), r, b"g").unwrap();
    m.close_session(4).unwrap();
    assert_eq!(m.getattr(g).unwrap().nlink, 0);
    m.close_session(3).unwrap();
    assert_eq!(m.getattr(g), Err(MetaError::NotFound));

    // Opening a missing inode fails and leaves nothing open.
    assert_eq!(m.open(5, g).map(|a| a.nlink), Err(MetaError::NotFound));

    // A restart forgets who had what open: the orphan waits for `reap_orphans`.
    let h = mkfile(m, &root(), r, "h", 0o644).unwrap();
    let s4 = slice(m, 0, 1);
    m.commit_writes(h, &[(0, s4)]).unwrap();
    m.open(6, h).unwrap();
    m.unlink(&root(), r, b"h").unwrap();
    fs.reopen();
    let m = &fs.meta;
    assert_eq!(m.getattr(h).unwrap().nlink, 0);
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 4096, inodes: 2 });
    assert_eq!(m.reap_orphans().unwrap(), 1);
    assert_eq!(m.getattr(h), Err(MetaError::NotFound));
    assert!(collectable_ids(m).contains(&s4.id));
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });
    assert_eq!(m.reap_orphans().unwrap(), 0);
}

#[test]
fn truncating_down_then_up_reads_zeros() {
    let fs = TestFs::new();
    let vol = fs.volume("v");
    let m = &fs.meta;
    let (f, s1) = file_with_slice(m, vol.root, "f", 10_000);
    truncate(m, &root(), f, 3000).unwrap();
    assert_eq!(m.read_chunk(f, 0).unwrap(), vec![s1, hole(3000, 7000)], "a hole covers the cut-off tail");
    assert_eq!(truncate(m, &root(), f, 20_000).unwrap().size, 20_000);
    assert_eq!(m.read_chunk(f, 0).unwrap(), vec![s1, hole(3000, 7000)], "extending adds nothing");
    assert_eq!(collectable_ids(m), Vec::<u64>::new(), "s1 still holds the first 3000 bytes");
    assert_eq!(m.usage(vol.id).unwrap().bytes, 20_480);
    // Cutting inside the hole covers up to the old end again.
    truncate(m, &root(), f, 1000).unwrap();
    assert_eq!(m.read_chunk(f, 0).unwrap(), vec![s1, hole(3000, 7000), hole(1000, 19_000)]);

    // Across chunks.
    let g = mkfile(m, &root(), vol.root, "g", 0o644).unwrap();
    let (a, b, c) = (slice(m, 0, 1000), slice(m, 0, 5000), slice(m, 100, 100));
    assert_eq!(m.commit_writes(g, &[(0, a), (1, b), (2, c)]).unwrap().size, 2 * C + 200);
    truncate(m, &root(), g, C + 100).unwrap();
    assert_eq!(m.read_chunk(g, 2).unwrap(), vec![]);
    assert_eq!(m.read_chunk(g, 1).unwrap(), vec![b, hole(100, (C - 100) as u32)]);
    assert_eq!(collectable_ids(m), vec![c.id]);
    truncate(m, &root(), g, 100).unwrap();
    assert_eq!(m.read_chunk(g, 1).unwrap(), vec![]);
    assert_eq!(m.read_chunk(g, 0).unwrap(), vec![a, hole(100, (C - 100) as u32)]);
    assert_eq!(collectable_ids(m), vec![b.id, c.id]);
    truncate(m, &root(), g, 3 * C).unwrap();
    for idx in 1..3 {
        assert_eq!(m.read_chunk(g, idx).unwrap(), vec![]);
    }
    // A cut on a chunk boundary needs no hole; a cut to zero drops everything.
    let h = mkfile(m, &root(), vol.root, "h", 0o644).unwrap();
    let (d, e) = (slice(m, 0, 10), slice(m, 0, 10));
    m.commit_writes(h, &[(0, d), (1, e)]).unwrap();
    truncate(m, &root(), h, C).unwrap();
    assert_eq!(m.read_chunk(h, 0).unwrap(), vec![d]);
    assert_eq!(m.read_chunk(h, 1).unwrap(), vec![]);
    truncate(m, &root(), h, 0).unwrap();
    assert_eq!(m.read_chunk(h, 0).unwrap(), vec![]);
    assert_eq!(collectable_ids(m), vec![b.id, c.id, d.id, e.id]);
    assert_eq!(m.getattr(h).unwrap().size, 0);

    // Sizes past the largest file, and truncating a directory or a symlink, are refused.
    let e = err(truncate(m, &root(), h, MAX_FILE_SIZE + 1));
    assert_eq!((e.clone(), e.errno()), (MetaError::TooBig, errno::EFBIG));
    assert_eq!(truncate(m, &root(), vol.root, 0).map(|a| a.size), Err(MetaError::IsDir));
    let l = symlink(m, &root(), vol.root, "l", "h").unwrap();
    assert!(matches!(truncate(m, &root(), l, 0), Err(MetaError::Invalid(_))));
}

#[test]
fn xattr_create_and_replace_flags() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let f = mkfile(m, &root(), r, "f", 0o644).unwrap();
    assert_eq!(m.getxattr(f, b"user.a"), Err(MetaError::NoAttr));
    assert_eq!(MetaError::NoAttr.errno(), errno::ENODATA);
    let e = err(m.setxattr(f, b"user.a", b"1", XATTR_REPLACE));
    assert_eq!(e, MetaError::NoAttr, "replace needs an existing attribute");
    m.setxattr(f, b"user.a", b"1", XATTR_CREATE).unwrap();
    let e = err(m.setxattr(f, b"user.a", b"2", XATTR_CREATE));
    assert_eq!((e.clone(), e.errno()), (MetaError::Exists, errno::EEXIST));
    assert_eq!(m.getxattr(f, b"user.a").unwrap(), b"1");
    m.setxattr(f, b"user.a", b"2", XATTR_REPLACE).unwrap();
    assert_eq!(m.getxattr(f, b"user.a").unwrap(), b"2");
    m.setxattr(f, b"user.a", b"", 0).unwrap();
    assert_eq!(m.getxattr(f, b"user.a").unwrap(), b"");
    m.setxattr(f, b"user.b", b"x", 0).unwrap();
    assert_eq!(m.listxattr(f).unwrap(), vec![b"user.a".to_vec(), b"user.b".to_vec()]);
    m.removexattr(f, b"user.a").unwrap();
    assert_eq!(m.removexattr(f, b"user.a"), Err(MetaError::NoAttr));
    assert_eq!(m.listxattr(f).unwrap(), vec![b"user.b".to_vec()]);

    let long = vec![b'x'; 256];
    assert_eq!(m.setxattr(f, &long, b"v", 0), Err(MetaError::Range));
    assert_eq!(m.getxattr(f, &long), Err(MetaError::Range));
    assert_eq!(m.setxattr(f, b"", b"v", 0), Err(MetaError::Range));
    assert_eq!(m.setxattr(f, b"user.big", &vec![0u8; 65537], 0), Err(MetaError::TooBig));
    m.setxattr(f, b"user.big", &vec![0u8; 65536], 0).unwrap();
    assert_eq!(m.getxattr(NEVER, b"user.a"), Err(MetaError::NotFound));
    assert_eq!(m.setxattr(NEVER, b"user.a", b"", 0), Err(MetaError::NotFound));

    // Attributes go with their inode.
    m.unlink(&root(), r, b"f").unwrap();
    assert_eq!(m.listxattr(f), Err(MetaError::NotFound));
    let g = mkfile(m, &root(), r, "f", 0o644).unwrap();
    assert_eq!(m.listxattr(g).unwrap(), Vec::<Vec<u8>>::new());
}

const NEVER: Ino = 1 << 40;

#[test]
fn set_gid_directories_pass_on_their_group() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let shared = mkdir(m, &root(), r, "shared", 0o755).unwrap();
    chmod(m, shared, 0o2777, 0, 500);
    let u = user(1000, 1000);

    let d = mkdir(m, &u, shared, "d", 0o755).unwrap();
    let a = m.getattr(d).unwrap();
    assert_eq!((a.uid, a.gid, a.mode), (1000, 500, 0o2755), "subdirectories inherit group and set-gid");
    let f = mkfile(m, &u, shared, "f", 0o644).unwrap();
    let a = m.getattr(f).unwrap();
    assert_eq!((a.gid, a.mode), (500, 0o644), "files inherit the group but not the bit");
    let l = symlink(m, &u, shared, "l", "f").unwrap();
    assert_eq!(m.getattr(l).unwrap().gid, 500);
    // Inheritance goes on down.
    let dd = mkdir(m, &u, d, "dd", 0o700).unwrap();
    let a = m.getattr(dd).unwrap();
    assert_eq!((a.gid, a.mode), (500, 0o2700));
    // A non-member may not create a set-gid file in a group it is not in ...
    let g = mkfile(m, &u, shared, "g", 0o2755).unwrap();
    assert_eq!(m.getattr(g).unwrap().mode, 0o755);
    // ... a member may.
    let member = Ctx { groups: vec![500], ..user(1001, 1001) };
    let h = mkfile(m, &member, shared, "h", 0o2755).unwrap();
    assert_eq!(m.getattr(h).unwrap().mode, 0o2755);
    // Outside a set-gid directory, new inodes take the caller's group.
    let plain = mkdir(m, &u, r, "plain", 0o755).unwrap();
    let a = m.getattr(plain).unwrap();
    assert_eq!((a.gid, a.mode), (1000, 0o755));
    // The umask applies to the requested mode.
    let (ino, _, _) = m.mknod(&u, plain, b"masked", FileType::File, 0o666, 0o027, 0, b"", true).unwrap();
    assert_eq!(m.getattr(ino).unwrap().mode, 0o640);
}

#[test]
fn permission_bits_decide_for_owner_group_and_others() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    chmod(m, d, 0o750, 10, 20);
    let owner = user(10, 99);
    let member = Ctx { groups: vec![20], ..user(11, 99) };
    let other = user(12, 99);

    // The owner has rwx.
    let f = mkfile(m, &owner, d, "f", 0o640).unwrap();
    assert_eq!(m.readdir(&owner, d, false).unwrap().len(), 1);
    // The group has r-x: it may look and list, not create or remove.
    assert_eq!(m.lookup(&member, d, b"f").unwrap().0, f);
    assert_eq!(m.readdir(&member, d, false).unwrap().len(), 1);
    let e = err(mkfile(m, &member, d, "g", 0o644));
    assert_eq!((e.clone(), e.errno()), (MetaError::Access, errno::EACCES));
    assert_eq!(m.unlink(&member, d, b"f"), Err(MetaError::Access));
    assert_eq!(m.rename(&member, d, b"f", d, b"g", 0), Err(MetaError::Access));
    assert_eq!(m.link(&member, f, d, b"g").map(|_| ()), Err(MetaError::Access));
    // Others have nothing.
    assert_eq!(m.lookup(&other, d, b"f").map(|x| x.0), Err(MetaError::Access));
    assert_eq!(m.readdir(&other, d, false), Err(MetaError::Access));
    // The same caller without checks (the kernel checked already) is let through.
    assert_eq!(m.lookup(&Ctx { check: false, ..other.clone() }, d, b"f").unwrap().0, f);
    // Root passes every bit.
    let root_ck = checked_root();
    assert_eq!(m.readdir(&root_ck, d, false).unwrap().len(), 1);
    mkfile(m, &root_ck, d, "byroot", 0o600).unwrap();
    m.unlink(&root_ck, d, b"byroot").unwrap();

    // The file is rw-r-----: the group may not truncate it, the owner may.
    assert_eq!(truncate(m, &member, f, 10).map(|a| a.size), Err(MetaError::Access));
    assert_eq!(m.getattr(f).unwrap().size, 0);
    truncate(m, &owner, f, 10).unwrap();
    // Only the owner (or root) changes mode; only root gives a file away; the owner may
    // change the group only to one of its own groups.
    let chmod_req = SetAttr { mode: Some(0o666), ..Default::default() };
    assert_eq!(m.setattr(&member, f, &chmod_req).map(|_| ()), Err(MetaError::Perm));
    assert_eq!(MetaError::Perm.errno(), errno::EPERM);
    m.setattr(&owner, f, &chmod_req).unwrap();
    let give = SetAttr { uid: Some(11), ..Default::default() };
    assert_eq!(m.setattr(&owner, f, &give).map(|_| ()), Err(MetaError::Perm));
    let to_other_group = SetAttr { gid: Some(77), ..Default::default() };
    assert_eq!(m.setattr(&owner, f, &to_other_group).map(|_| ()), Err(MetaError::Perm));
    assert_eq!(m.setattr(&owner, f, &SetAttr { gid: Some(99), ..Default::default() }).unwrap().gid, 99);
    assert_eq!(m.setattr(&root_ck, f, &give).unwrap().uid, 11);
    let a = m.getattr(f).unwrap();
    assert_eq!((a.uid, a.gid, a.mode, a.size), (11, 99, 0o666, 10));

    // Write and search on the parent are both needed to remove: r-x or -wx alone is not enough.
    chmod(m, d, 0o730, 10, 20);
    assert_eq!(m.readdir(&member, d, false), Err(MetaError::Access));
    m.rename(&member, d, b"f", d, b"f2", 0).unwrap();
    m.unlink(&member, d, b"f2").unwrap();

    // Root may not execute a file nobody may execute, but may search any directory.
    let da = m.getattr(d).unwrap();
    let mut fa = m.getattr(mkfile(m, &root(), r, "x", 0o644).unwrap()).unwrap();
    assert_eq!(access(&root_ck, &fa, 1), Err(MetaError::Access));
    fa.mode = 0o100;
    assert_eq!(access(&root_ck, &fa, 1), Ok(()));
    let mut da0 = da;
    da0.mode = 0;
    assert_eq!(access(&root_ck, &da0, 7), Ok(()));
    assert_eq!(access(&other, &da0, 0), Ok(()), "an empty mask asks nothing");
}

#[test]
fn sticky_directories_protect_other_users_entries() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let tmp = mkdir(m, &root(), r, "tmp", 0o755).unwrap();
    chmod(m, tmp, 0o1777, 0, 0);
    let (alice, bob, carol) = (user(10, 10), user(11, 11), user(12, 12));
    mkfile(m, &alice, tmp, "a", 0o666).unwrap();
    mkfile(m, &bob, tmp, "b", 0o666).unwrap();
    mkdir(m, &alice, tmp, "ad", 0o777).unwrap();

    let e = err(m.unlink(&bob, tmp, b"a"));
    assert_eq!((e.clone(), e.errno()), (MetaError::Perm, errno::EPERM));
    assert_eq!(m.rmdir(&bob, tmp, b"ad"), Err(MetaError::Perm));
    assert_eq!(m.rename(&bob, tmp, b"a", tmp, b"mine", 0), Err(MetaError::Perm), "moving it away");
    assert_eq!(m.rename(&bob, tmp, b"b", tmp, b"a", 0), Err(MetaError::Perm), "replacing it");
    assert_eq!(names(m, tmp), vec!["a", "ad", "b"]);
    // Each user may remove their own; the directory's owner and root may remove anything.
    m.rename(&bob, tmp, b"b", tmp, b"b2", 0).unwrap();
    m.unlink(&alice, tmp, b"a").unwrap();
    assert_eq!(m.unlink(&carol, tmp, b"b2"), Err(MetaError::Perm));
    chmod(m, tmp, 0o1777, 12, 0);
    m.unlink(&carol, tmp, b"b2").unwrap();
    m.rmdir(&checked_root(), tmp, b"ad").unwrap();
    assert_eq!(names(m, tmp), Vec::<String>::new());
}

#[test]
fn collectable_is_not_starved_by_slices_of_open_files() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    // An open file truncated to nothing: its (older, lower-numbered) slices must wait.
    let f = mkfile(m, &root(), r, "log", 0o644).unwrap();
    let held: Vec<Slice> = (0..5).map(|i| slice(m, i * 10, 10)).collect();
    m.commit_writes(f, &held.iter().map(|s| (0, *s)).collect::<Vec<_>>()).unwrap();
    m.open(1, f).unwrap();
    truncate(m, &root(), f, 0).unwrap();
    // A file deleted later: its slice may go now.
    let g = mkfile(m, &root(), r, "g", 0o644).unwrap();
    let s = slice(m, 0, 10);
    m.commit_writes(g, &[(0, s)]).unwrap();
    m.unlink(&root(), r, b"g").unwrap();

    for limit in [1, 2, 5, 6, usize::MAX] {
        let got: Vec<u64> = m.collectable(limit).unwrap().into_iter().map(|p| p.0).collect();
        assert_eq!(got, vec![s.id], "collectable({limit})");
    }
    m.close(1, f).unwrap();
    assert_eq!(m.collectable(2).unwrap().len(), 2, "the limit still holds");
    assert_eq!(collectable_ids(m).len(), 6);
}

#[test]
fn attribute_changes_follow_ownership_rules() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let owner = Ctx { groups: vec![20, 21], ..user(10, 20) };
    let writer = Ctx { groups: vec![20], ..user(11, 20) };
    let other = user(12, 99);
    let f = mkfile(m, &owner, r, "f", 0o664).unwrap();

    // Setting explicit times needs ownership; "now" needs only write permission.
    let at = |sec| SetAttr { mtime: Some(SetTime::At(Timespec { sec, nsec: 0 })), ..Default::default() };
    let now = SetAttr { atime: Some(SetTime::Now), mtime: Some(SetTime::Now), ..Default::default() };
    assert_eq!(m.setattr(&writer, f, &at(5)).map(|_| ()), Err(MetaError::Perm));
    m.setattr(&writer, f, &now).unwrap();
    assert_eq!(m.setattr(&other, f, &now).map(|_| ()), Err(MetaError::Access));
    assert_eq!(m.setattr(&owner, f, &at(5)).unwrap().mtime, Timespec { sec: 5, nsec: 0 });
    assert_eq!(m.getattr(f).unwrap().mtime.sec, 5);

    // A change of group by a non-root owner clears set-uid, and set-gid when group-executable.
    m.setattr(&owner, f, &SetAttr { mode: Some(0o6775), ..Default::default() }).unwrap();
    let a = m.setattr(&owner, f, &SetAttr { gid: Some(21), ..Default::default() }).unwrap();
    assert_eq!((a.gid, a.mode), (21, 0o775));
    m.setattr(&owner, f, &SetAttr { mode: Some(0o2745), ..Default::default() }).unwrap();
    let a = m.setattr(&owner, f, &SetAttr { gid: Some(20), ..Default::default() }).unwrap();
    assert_eq!(a.mode, 0o2745, "set-gid without group execute is kept");
    // chmod by an owner outside the file's group drops set-gid.
    m.setattr(&root(), f, &SetAttr { gid: Some(77), ..Default::default() }).unwrap();
    let a = m.setattr(&owner, f, &SetAttr { mode: Some(0o2755), ..Default::default() }).unwrap();
    assert_eq!(a.mode, 0o755);

    // Moving a directory to another parent rewrites its "..": that needs write permission on
    // the directory itself, not only on both parents.
    let p = mkdir(m, &root(), r, "p", 0o777).unwrap();
    let q = mkdir(m, &root(), r, "q", 0o777).unwrap();
    let d = mkdir(m, &owner, p, "d", 0o755).unwrap();
    assert_eq!(m.rename(&other, p, b"d", q, b"d", 0), Err(MetaError::Access));
    m.rename(&other, p, b"d", p, b"renamed", 0).unwrap();
    m.rename(&owner, p, b"renamed", q, b"d", 0).unwrap();
    assert_eq!(m.getattr(d).unwrap().parent, q);
}

#[test]
fn special_files_and_odd_lookups() {
    let fs = TestFs::new();
    let vol = fs.volume("v");
    let (m, r) = (&fs.meta, vol.root);
    for (name, kind) in [("fifo", FileType::Fifo), ("sock", FileType::Socket), ("chr", FileType::CharDev)] {
        let (ino, a, created) = m.mknod(&root(), r, name.as_bytes(), kind, 0o640, 0, 0x0501, b"", true).unwrap();
        assert!(created);
        assert_eq!((a.kind, a.nlink, a.rdev, a.size, a.st_mode()), (kind, 1, 0x0501, 0, kind.mode_bits() | 0o640));
        assert_eq!(m.getattr(ino).unwrap(), a);
        assert!(matches!(m.commit_writes(ino, &[(0, slice(m, 0, 1))]), Err(MetaError::Invalid(_))));
        assert!(matches!(m.readlink(ino), Err(MetaError::Invalid(_))));
    }
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 4 });
    m.unlink(&root(), r, b"fifo").unwrap();
    assert_eq!(names(m, r), vec!["chr", "sock"]);

    // A symlink's size is its target's length; an empty target is refused.
    let l = symlink(m, &root(), r, "l", "some/where").unwrap();
    assert_eq!((m.getattr(l).unwrap().size, m.readlink(l).unwrap()), (10, b"some/where".to_vec()));
    assert_eq!(symlink(m, &root(), r, "empty", ""), Err(MetaError::NotFound));
    // "." and ".." resolve without entries; the root is its own parent.
    assert_eq!(m.lookup(&root(), r, b".").unwrap().0, r);
    assert_eq!(m.lookup(&root(), r, b"..").unwrap().0, r);
    // Inside a removed directory nothing can be created.
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    m.rmdir(&root(), r, b"d").unwrap();
    assert_eq!(mkfile(m, &root(), d, "x", 0o644), Err(MetaError::NotFound));
    assert_eq!(m.lookup(&root(), d, b"x").map(|x| x.0), Err(MetaError::NotFound));
    assert_eq!(m.readdir(&root(), d, false), Err(MetaError::NotFound));
}

#[test]
fn deferred_destruction_gives_usage_back_at_once_and_the_rest_when_reaped() {
    let mut fs = TestFs::new();
    let vol = fs.volume("v");
    let r = vol.root;
    let m = &fs.meta;
    m.set_defer_destroy(true);
    let (f, s1) = file_with_slice(m, r, "f", 8192);
    m.unlink(&root(), r, b"f").unwrap();
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });
    if m.is_shared() {
        // Shared state never defers: the unlink destroyed the file.
        assert_eq!(m.getattr(f), Err(MetaError::NotFound));
        assert_eq!(m.doomed_count(), 0);
        return;
    }
    // Gone by name and from the usage, its rows and slices still there.
    assert_eq!(ino_of(m, r, "f"), Err(MetaError::NotFound));
    assert_eq!(m.getattr(f).unwrap().nlink, 0);
    assert!(!collectable_ids(m).contains(&s1.id));
    assert_eq!(m.doomed_count(), 1);
    assert_eq!(m.reap_doomed().unwrap(), 1);
    assert_eq!(m.getattr(f), Err(MetaError::NotFound));
    assert!(collectable_ids(m).contains(&s1.id));
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });
    assert_eq!(m.reap_doomed().unwrap(), 0);

    // Writes committed after the unlink (buffered before it) are given back by the reaping.
    let g = mkfile(m, &root(), r, "g", 0o644).unwrap();
    m.commit_writes(g, &[(0, slice(m, 0, 4096))]).unwrap();
    m.unlink(&root(), r, b"g").unwrap();
    m.commit_writes(g, &[(0, slice(m, 0, 8192))]).unwrap();
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 4096, inodes: 1 });
    assert_eq!(m.reap_doomed().unwrap(), 1);
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });

    // Opened by inode before the reaping: it lives until the last close.
    let k = mkfile(m, &root(), r, "k", 0o644).unwrap();
    m.unlink(&root(), r, b"k").unwrap();
    m.open(7, k).unwrap();
    assert_eq!(m.reap_doomed().unwrap(), 0);
    assert_eq!(m.getattr(k).unwrap().nlink, 0);
    m.close(7, k).unwrap();
    assert_eq!(m.getattr(k), Err(MetaError::NotFound));
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });

    // A restart before the reaping loses nothing: the restart's reaping destroys it, without
    // giving its usage back twice.
    let h = mkfile(m, &root(), r, "h", 0o644).unwrap();
    let s4 = slice(m, 0, 4096);
    m.commit_writes(h, &[(0, s4)]).unwrap();
    m.unlink(&root(), r, b"h").unwrap();
    fs.reopen();
    let m = &fs.meta;
    assert_eq!(m.doomed_count(), 0);
    assert_eq!(m.getattr(h).unwrap().nlink, 0);
    assert_eq!(m.reap_orphans().unwrap(), 1);
    assert_eq!(m.getattr(h), Err(MetaError::NotFound));
    assert!(collectable_ids(m).contains(&s4.id));
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });
}

#[test]
fn readdir_plus_gives_every_entry_its_own_attributes() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    let mut made = Vec::new();
    for i in 0..300u32 {
        let name = format!("f{i:04}");
        let ino = mkfile(m, &root(), d, &name, 0o600 | (i % 64)).unwrap();
        truncate(m, &root(), ino, u64::from(i) * 7).unwrap();
        made.push((name, ino));
    }
    let sub = mkdir(m, &root(), d, "sub", 0o700).unwrap();
    // A second name for one file: both entries carry that inode's attributes (nlink 2).
    m.link(&root(), made[5].1, d, b"zz-link").unwrap();
    let plus = m.readdir(&root(), d, true).unwrap();
    let names: Vec<&[u8]> = plus.iter().map(|e| e.name.as_slice()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries come in name order");
    assert_eq!(plus.len(), 302);
    for e in &plus {
        let a = e.attr.as_ref().expect("readdir plus carries attributes");
        assert_eq!(*a, m.getattr(e.ino).unwrap(), "attributes of {:?}", String::from_utf8_lossy(&e.name));
    }
    let link = plus.iter().find(|e| e.name == b"zz-link").expect("the link is listed");
    assert_eq!((link.ino, link.attr.as_ref().map(|a| (a.nlink, a.size))), (made[5].1, Some((2, 35))));
    assert_eq!(plus.iter().find(|e| e.ino == sub).map(|e| e.kind), Some(FileType::Dir));
    let plain = m.readdir(&root(), d, false).unwrap();
    assert!(plain.iter().all(|e| e.attr.is_none()));
    assert_eq!(
        plain.iter().map(|e| (&e.name, e.ino)).collect::<Vec<_>>(),
        plus.iter().map(|e| (&e.name, e.ino)).collect::<Vec<_>>()
    );
}

#[test]
fn directory_pages_join_into_the_whole_listing() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    for i in 0..250u32 {
        mkfile(m, &root(), d, &format!("f{i:04}"), 0o644).unwrap();
    }
    // "f0010" is a prefix of nothing listed but sorts before "f0010x": names after it follow.
    mkfile(m, &root(), d, "f0010x", 0o644).unwrap();
    let whole = m.readdir(&root(), d, true).unwrap();
    for limit in [1usize, 7, 100, 251, 252, 1000] {
        let (mut joined, mut after, mut calls) = (Vec::new(), Vec::new(), 0);
        loop {
            let page = m.readdir_page(&root(), d, true, &after, limit).unwrap();
            calls += 1;
            assert!(page.entries.len() <= limit, "a page holds at most its limit");
            assert_eq!(page.dir, m.getattr(d).unwrap(), "pages carry the directory's attributes");
            assert_eq!(page.more, joined.len() + page.entries.len() < whole.len(), "limit {limit}");
            if let Some(e) = page.entries.last() {
                after = e.name.clone();
            }
            joined.extend(page.entries);
            if !page.more {
                break;
            }
        }
        assert_eq!(joined, whole, "pages of {limit} join into the listing");
        assert_eq!(calls, whole.len().div_ceil(limit).max(1), "limit {limit}");
    }
    // After a name that is not in the directory: from the next name on.
    let page = m.readdir_page(&root(), d, false, b"f0009zzz", 2).unwrap();
    let names: Vec<&[u8]> = page.entries.iter().map(|e| e.name.as_slice()).collect();
    assert_eq!(names, [b"f0010".as_slice(), b"f0010x"]);
    assert!(page.more);
    // After the last name: an empty last page.
    let page = m.readdir_page(&root(), d, false, b"f0249", 10).unwrap();
    assert!(page.entries.is_empty() && !page.more);
    // A file is no directory to page through.
    let f = whole[0].ino;
    assert_eq!(m.readdir_page(&root(), f, false, b"", 5).map(|p| p.more), Err(MetaError::NotDir));
}

#[test]
fn conditional_rename_is_a_compare_and_swap() {
    let fs = TestFs::new();
    let (m, r) = (&fs.meta, fs.volume("v").root);
    let old = mkfile(m, &root(), r, "key", 0o644).unwrap();
    let seen = FileIdentity::of(old, &m.getattr(old).unwrap());
    let tmp1 = mkfile(m, &root(), r, "tmp1", 0o644).unwrap();
    let tmp2 = mkfile(m, &root(), r, "tmp2", 0o644).unwrap();
    let on = |t| RenameIf { target: Some(t), source: None };
    // The first writer that saw `old` replaces it; the second, holding the same view, is refused.
    m.rename_if(&root(), r, b"tmp1", r, b"key", 0, on(seen)).unwrap();
    let e = err(m.rename_if(&root(), r, b"tmp2", r, b"key", 0, on(seen)));
    assert_eq!(e.errno(), errno::ECANCELED);
    assert_eq!((ino_of(m, r, "key"), ino_of(m, r, "tmp2")), (Ok(tmp1), Ok(tmp2)));
    // The same inode changed since it was seen (a write through a mount) does not match either.
    let seen1 = FileIdentity::of(tmp1, &m.getattr(tmp1).unwrap());
    m.setattr(&root(), tmp1, &SetAttr { size: Some(3), ..Default::default() }).unwrap();
    assert_eq!(err(m.rename_if(&root(), r, b"tmp2", r, b"key", 0, on(seen1))).errno(), errno::ECANCELED);
    // A missing target does not match; a source condition guards the source the same way.
    assert_eq!(err(m.rename_if(&root(), r, b"tmp2", r, b"none", 0, on(seen1))).errno(), errno::ECANCELED);
    let src = RenameIf { source: Some(seen1), target: None };
    assert_eq!(err(m.rename_if(&root(), r, b"key", r, b"gone", 0, src)).errno(), errno::ECANCELED);
    let now1 = FileIdentity::of(tmp1, &m.getattr(tmp1).unwrap());
    m.rename_if(&root(), r, b"key", r, b"gone", 0, RenameIf { source: Some(now1), target: None }).unwrap();
    assert_eq!(ino_of(m, r, "gone"), Ok(tmp1));
}
