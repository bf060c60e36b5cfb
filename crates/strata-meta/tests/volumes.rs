//! Volumes: byte and inode quotas (refusals leave nothing half-applied), quota changes, and
//! deleting a volume with either reclaim policy.

mod common;

use common::*;
use strata_meta::error::libc_consts as errno;
use strata_meta::*;

const C: u64 = CHUNK_SIZE;
const MIB: u64 = 1 << 20;

fn root() -> Ctx {
    Ctx::root()
}

fn truncate(m: &Meta, ino: Ino, size: u64) -> Result<Attr> {
    m.setattr(&root(), ino, &SetAttr { size: Some(size), ..Default::default() })
}

#[test]
fn journaled_blocks_go_with_their_commit() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = m.create_volume("j", &NewVolume { capacity: MIB, ..Default::default() }).unwrap();
    let f = mkfile(m, &root(), vol.root, "f", 0o644).unwrap();
    let a = slice(m, 0, 4096);
    let ka = format!("v{}/chunks/0/0/{}_0_4096", vol.id, a.id);
    let c = m.commit_writes_with(f, &[(0, a)], &[(ka.clone(), vec![1; 4096])], true).unwrap();
    // The commit reports what it left, read in its own transaction.
    assert_eq!((c.attr.size, c.chunk_slices.clone(), c.used_bytes, c.capacity), (4096, vec![(0, 1)], 4096, MIB));
    assert_eq!(m.journaled(None, 10).unwrap(), vec![(ka.clone(), vec![1; 4096])]);
    let (a2, a3) = (slice(m, 4096, 4096), slice(m, 8192, 4096));
    let c = m.commit_writes_with(f, &[(0, a2), (0, a3)], &[], false).unwrap();
    assert_eq!((c.chunk_slices.clone(), c.used_bytes), (vec![(0, 3)], 3 * 4096), "{c:?}");
    assert_eq!(m.usage(vol.id).unwrap().bytes, c.used_bytes);
    // A refused commit journals nothing either.
    let b = slice(m, 0, 2 * MIB as u32);
    let kb = format!("v{}/chunks/0/0/{}_0_4096", vol.id, b.id);
    assert_eq!(
        m.commit_writes_with(f, &[(0, b)], &[(kb, vec![2; 4096])], true).map(|c| c.attr.size),
        Err(MetaError::Quota)
    );
    assert_eq!(m.journaled(None, 10).unwrap().len(), 1);
    assert_eq!(m.journaled(None, 0).unwrap().len(), 0);
    assert!(m.journaled(Some(&ka), 10).unwrap().is_empty(), "nothing after the only one");
    assert_eq!(m.journaled(Some("v0"), 10).unwrap().len(), 1);
    // Readers find the copy until the server has written the block's file.
    assert_eq!(m.journaled_block(&ka).unwrap(), Some(vec![1; 4096]));
    let other = format!("v{}/chunks/0/0/{}_0_4096", vol.id, a2.id);
    assert_eq!(m.journaled_among(&[other.clone(), ka.clone()]).unwrap(), vec![ka.clone()]);
    m.forget_journaled(std::slice::from_ref(&ka)).unwrap();
    assert!(m.journaled(None, 10).unwrap().is_empty());
    assert_eq!(m.journaled_block(&ka).unwrap(), None);
    assert!(m.journaled_among(&[other, ka]).unwrap().is_empty());
    assert_eq!(m.read_chunk(f, 0).unwrap(), vec![a, a2, a3]);
}

#[test]
fn byte_quota_refuses_growth_and_changes_nothing() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = m.create_volume("q", &NewVolume { capacity: MIB, ..Default::default() }).unwrap();
    let f = mkfile(m, &root(), vol.root, "f", 0o644).unwrap();
    let a = slice(m, 0, 512 * 1024);
    m.commit_writes(f, &[(0, a)]).unwrap();

    // A write that would pass the capacity fails whole: no slice recorded, size and usage kept.
    let (b, c) = (slice(m, 0, 10), slice(m, 512 * 1024, 600 * 1024));
    let e = m.commit_writes(f, &[(0, b), (0, c)]).unwrap_err();
    assert_eq!((e.clone(), e.errno()), (MetaError::Quota, errno::EDQUOT));
    assert_eq!(m.read_chunk(f, 0).unwrap(), vec![a]);
    assert_eq!(m.getattr(f).unwrap().size, 512 * 1024);
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 512 * 1024, inodes: 2 });
    // Extending by truncate is charged the same way (sizes round up to 4 KiB).
    assert_eq!(truncate(m, f, MIB + 1).map(|a| a.size), Err(MetaError::Quota));
    assert_eq!(m.getattr(f).unwrap().size, 512 * 1024);
    truncate(m, f, MIB).unwrap();
    assert_eq!(m.usage(vol.id).unwrap().bytes, MIB);
    // At the limit: overwriting inside the file still works, growing does not.
    let d = slice(m, 4096, 4096);
    m.commit_writes(f, &[(0, d)]).unwrap();
    assert_eq!(m.commit_writes(f, &[(0, slice(m, MIB as u32, 1))]).map(|a| a.size), Err(MetaError::Quota));
    let g = mkfile(m, &root(), vol.root, "g", 0o644).unwrap();
    assert_eq!(m.commit_writes(g, &[(0, slice(m, 0, 1))]).map(|a| a.size), Err(MetaError::Quota));
    assert_eq!(m.read_chunk(g, 0).unwrap(), vec![]);
    // Shrinking frees room again.
    truncate(m, f, 4096).unwrap();
    m.commit_writes(g, &[(0, slice(m, 0, 1))]).unwrap();
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 8192, inodes: 3 });
    // Other volumes are not limited by this one.
    let free = fs.volume("free");
    let h = mkfile(m, &root(), free.root, "h", 0o644).unwrap();
    m.commit_writes(h, &[(1, slice(m, 0, 1))]).unwrap();
    assert_eq!(m.usage(free.id).unwrap().bytes, C + 4096);
}

#[test]
fn inode_quota_refuses_new_inodes_and_changes_nothing() {
    let fs = TestFs::new();
    let m = &fs.meta;
    // The root counts: three inodes means two more.
    let vol = m.create_volume("q", &NewVolume { inode_limit: 3, ..Default::default() }).unwrap();
    let r = vol.root;
    let f = mkfile(m, &root(), r, "f", 0o644).unwrap();
    let d = mkdir(m, &root(), r, "d", 0o755).unwrap();
    for kind in [FileType::File, FileType::Dir, FileType::Symlink] {
        let e = m.mknod(&root(), d, b"x", kind, 0o755, 0, 0, b"t", true).map(|x| x.0).unwrap_err();
        assert_eq!((e.clone(), e.errno()), (MetaError::Quota, errno::EDQUOT), "{kind:?}");
    }
    assert_eq!(names(m, d), Vec::<String>::new());
    assert_eq!(m.getattr(d).unwrap().nlink, 2, "a refused mkdir leaves the parent's link count");
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 3 });
    // Links and renames need no inode.
    m.link(&root(), f, d, b"g").unwrap();
    m.rename(&root(), r, b"f", d, b"f", 0).unwrap();
    // Opening an existing file without O_EXCL is no creation either.
    let (ino, _, created) = m.mknod(&root(), d, b"f", FileType::File, 0o644, 0, 0, b"", false).unwrap();
    assert_eq!((ino, created), (f, false));
    // Freeing an inode makes room.
    m.unlink(&root(), d, b"f").unwrap();
    m.unlink(&root(), d, b"g").unwrap();
    mkfile(m, &root(), d, "new", 0o644).unwrap();
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 3 });
}

#[test]
fn quotas_cannot_shrink_below_use() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("v");
    let f = mkfile(m, &root(), vol.root, "f", 0o644).unwrap();
    m.commit_writes(f, &[(0, slice(m, 0, 5000))]).unwrap();
    mkdir(m, &root(), vol.root, "d", 0o755).unwrap();
    assert_eq!(m.usage(vol.id).unwrap(), Usage { bytes: 8192, inodes: 3 });

    let e = m.set_volume_quota("v", Some(4096), None).unwrap_err();
    assert!(matches!(e, MetaError::Invalid(_)), "{e:?}");
    assert_eq!(e.errno(), errno::EINVAL);
    assert!(matches!(m.set_volume_quota("v", None, Some(2)), Err(MetaError::Invalid(_))));
    // A refused change changes nothing, even the half that was acceptable.
    assert!(matches!(m.set_volume_quota("v", Some(MIB), Some(2)), Err(MetaError::Invalid(_))));
    let v = m.volume("v").unwrap();
    assert_eq!((v.capacity, v.inode_limit), (0, 0));

    let v = m.set_volume_quota("v", Some(8192), Some(3)).unwrap();
    assert_eq!((v.capacity, v.inode_limit), (8192, 3));
    assert_eq!(m.volume("v").unwrap(), v);
    assert_eq!(mkfile(m, &root(), vol.root, "g", 0o644), Err(MetaError::Quota));
    assert_eq!(m.commit_writes(f, &[(0, slice(m, 8192, 1))]).map(|a| a.size), Err(MetaError::Quota));
    // Zero lifts a limit.
    let v = m.set_volume_quota("v", Some(0), Some(0)).unwrap();
    assert_eq!((v.capacity, v.inode_limit), (0, 0));
    mkfile(m, &root(), vol.root, "g", 0o644).unwrap();
    assert_eq!(m.set_volume_quota("nope", Some(1), None).map(|v| v.id), Err(MetaError::NoVolume("nope".into())));
}

#[test]
fn volume_names_are_unique_and_checked() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let v = fs.volume("data-1.x_y");
    let e = m.create_volume("data-1.x_y", &NewVolume::default()).unwrap_err();
    assert_eq!((e.clone(), e.errno()), (MetaError::VolumeExists("data-1.x_y".into()), errno::EEXIST));
    for bad in ["", "-lead", "has space", "a/b", &"x".repeat(254)] {
        assert!(matches!(m.create_volume(bad, &NewVolume::default()), Err(MetaError::Invalid(_))), "{bad:?}");
    }
    assert_eq!(m.volume("missing").map(|v| v.id), Err(MetaError::NoVolume("missing".into())));
    assert_eq!(m.volume_by_id(v.id).unwrap(), v);
    let listed = m.list_volumes().unwrap();
    assert_eq!(listed, vec![(v.clone(), Usage { bytes: 0, inodes: 1 })]);
    let root_attr = m.getattr(v.root).unwrap();
    assert_eq!((root_attr.kind, root_attr.nlink, root_attr.parent, root_attr.volume), (FileType::Dir, 2, v.root, v.id));
}

/// A small tree with data: two directories, a file linked from both, a symlink, an xattr.
fn populate(m: &Meta, vol: &Volume) -> (Vec<Ino>, Vec<u64>) {
    let r = vol.root;
    let a = mkdir(m, &root(), r, "a", 0o755).unwrap();
    let b = mkdir(m, &root(), a, "b", 0o755).unwrap();
    let f = mkfile(m, &root(), b, "f", 0o644).unwrap();
    let g = mkfile(m, &root(), r, "g", 0o644).unwrap();
    let l = symlink(m, &root(), a, "l", "b/f").unwrap();
    m.link(&root(), f, r, b"f-again").unwrap();
    m.setxattr(f, b"user.k", b"v", 0).unwrap();
    let (s1, s2, s3) = (slice(m, 0, 100), slice(m, 0, 200), slice(m, 7, 300));
    m.commit_writes(f, &[(0, s1), (2, s2)]).unwrap();
    m.commit_writes(g, &[(0, s3)]).unwrap();
    (vec![r, a, b, f, g, l], vec![s1.id, s2.id, s3.id])
}

#[test]
fn deleting_a_volume_with_delete_reclaims_everything() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("gone");
    let keep = fs.volume("kept");
    let (inos, ids) = populate(m, &vol);
    let (kept_inos, _) = populate(m, &keep);
    let kept_usage = m.usage(keep.id).unwrap();

    // Not while a file of it is open.
    m.open(1, inos[3]).unwrap();
    assert!(matches!(m.delete_volume("gone"), Err(MetaError::Busy(_))));
    assert_eq!(m.volume("gone").unwrap(), vol);
    m.close(1, inos[3]).unwrap();
    assert_eq!(collectable_ids(m), Vec::<u64>::new());
    // Open files of other volumes do not matter.
    m.open(2, kept_inos[3]).unwrap();

    assert_eq!(m.delete_volume("gone").unwrap(), vol);
    assert_eq!(m.volume("gone").map(|v| v.id), Err(MetaError::NoVolume("gone".into())));
    assert!(m.volume_by_id(vol.id).is_err());
    for ino in &inos {
        assert_eq!(m.getattr(*ino), Err(MetaError::NotFound), "inode {ino} of the deleted volume");
        assert_eq!(m.read_chunk(*ino, 0), Err(MetaError::NotFound));
        assert_eq!(m.listxattr(*ino), Err(MetaError::NotFound));
    }
    let pending = m.collectable(usize::MAX).unwrap();
    let mut got: Vec<u64> = pending.iter().map(|p| p.0).collect();
    got.sort_unstable();
    assert_eq!(got, ids, "every slice of the volume waits for block deletion");
    assert!(pending.iter().all(|(_, p)| p.volume == vol.id));
    assert_eq!(m.usage(vol.id).unwrap(), Usage::default());
    assert_eq!(m.delete_volume("gone").map(|v| v.id), Err(MetaError::NoVolume("gone".into())));

    // The other volume is untouched.
    assert_eq!(m.usage(keep.id).unwrap(), kept_usage);
    for ino in &kept_inos {
        m.getattr(*ino).unwrap();
    }
    m.close(2, kept_inos[3]).unwrap();
    assert_eq!(m.list_volumes().unwrap().into_iter().map(|v| v.0.name).collect::<Vec<_>>(), vec!["kept"]);
    // The name is free again, for a new, empty volume.
    let again = fs.volume("gone");
    assert_ne!((again.id, again.root), (vol.id, vol.root));
    assert_eq!(names(m, again.root), Vec::<String>::new());
}

#[test]
fn deleting_a_volume_with_retain_keeps_its_data() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = m.create_volume("kept", &NewVolume { reclaim: Reclaim::Retain, ..Default::default() }).unwrap();
    assert_eq!(vol.reclaim, Reclaim::Retain);
    let (inos, _) = populate(m, &vol);
    let usage = m.usage(vol.id).unwrap();

    assert_eq!(m.delete_volume("kept").unwrap(), vol);
    assert_eq!(m.volume("kept").map(|v| v.id), Err(MetaError::NoVolume("kept".into())));
    assert!(m.list_volumes().unwrap().is_empty());
    // Nothing was destroyed and nothing waits for deletion.
    for ino in &inos {
        assert_eq!(m.getattr(*ino).unwrap().volume, vol.id);
    }
    assert_eq!(m.read_chunk(inos[3], 2).unwrap().len(), 1);
    assert_eq!(collectable_ids(m), Vec::<u64>::new());
    assert_eq!(m.usage(vol.id).unwrap(), usage);
    // The name may be reused by a new volume; the retained tree stays apart from it.
    let again = fs.volume("kept");
    assert_ne!(again.id, vol.id);
    assert_eq!(names(m, again.root), Vec::<String>::new());
    assert_eq!(names(m, vol.root), vec!["a", "f-again", "g"]);
}

#[test]
fn a_store_written_by_a_newer_strata_is_refused() {
    let mut fs = TestFs::new();
    fs.volume("data");
    let version = |url: &str| {
        let kv = strata_meta::kv::open(url).expect("engine");
        let mut v = None;
        kv.read(&mut |t| {
            v = t.get(strata_meta::keys::SCHEMA)?;
            Ok(())
        })
        .expect("read");
        v
    };
    assert_eq!(version(&fs.url), Some(SCHEMA_VERSION.to_string().into_bytes()), "a new store records its version");
    // Reopening a store of this version works, and leaves the version alone.
    fs.reopen();
    let newer = (SCHEMA_VERSION + 1).to_string();
    strata_meta::kv::open(&fs.url)
        .expect("engine")
        .write(true, &mut |t| t.put(strata_meta::keys::SCHEMA, newer.as_bytes()))
        .expect("write");
    let err = match Meta::with_mode(strata_meta::kv::open(&fs.url).expect("engine"), fs.mode) {
        Ok(_) => panic!("a store of schema version {newer} was opened"),
        Err(e) => e,
    };
    assert_eq!(err, MetaError::NewerStore { what: "schema", found: SCHEMA_VERSION + 1, supported: SCHEMA_VERSION });
    assert!(err.to_string().contains("newer Strata"), "{err}");
    assert_eq!(err.errno(), strata_meta::error::libc_consts::EIO);
    assert_eq!(version(&fs.url), Some(newer.into_bytes()), "the refusal changed nothing");
    // A garbled version is corruption, not a version.
    strata_meta::kv::open(&fs.url)
        .expect("engine")
        .write(true, &mut |t| t.put(strata_meta::keys::SCHEMA, b"x"))
        .expect("write");
    assert!(matches!(
        Meta::with_mode(strata_meta::kv::open(&fs.url).expect("engine"), fs.mode),
        Err(MetaError::Corrupt(_))
    ));
    // Back to this version for the harness's own cleanup.
    strata_meta::kv::open(&fs.url)
        .expect("engine")
        .write(true, &mut |t| t.put(strata_meta::keys::SCHEMA, SCHEMA_VERSION.to_string().as_bytes()))
        .expect("write");
    if fs.url.starts_with("postgres") {
        // PostgreSQL's own tables carry a version too: newer tables are refused, not migrated down.
        let mut c = postgres::Client::connect(&fs.url, postgres::NoTls).expect("connect");
        let have: i32 = c.query_one("SELECT version FROM strata_schema", &[]).expect("version").get(0);
        c.execute("UPDATE strata_schema SET version = $1", &[&(have + 1)]).expect("bump");
        match strata_meta::kv::open(&fs.url) {
            Err(MetaError::NewerStore { what, found, supported }) => {
                assert_eq!((what, found, supported), ("PostgreSQL tables", have as u32 + 1, have as u32))
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("newer PostgreSQL tables were opened"),
        }
        let after: i32 = c.query_one("SELECT version FROM strata_schema", &[]).expect("version").get(0);
        assert_eq!(after, have + 1, "the refusal changed nothing");
        c.execute("UPDATE strata_schema SET version = $1", &[&have]).expect("restore");
    }
}

#[test]
fn deleting_a_large_deep_volume_takes_several_batches_and_reclaims_everything() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("big");
    // More entries than one removal batch, in nested directories, with hard links between
    // directories (a link's inode goes only with its last name).
    let mut inos = vec![vol.root];
    let mut ids = Vec::new();
    let mut parent = vol.root;
    for depth in 0..4 {
        let d = mkdir(m, &root(), parent, &format!("d{depth}"), 0o755).unwrap();
        inos.push(d);
        for i in 0..200 {
            let f = mkfile(m, &root(), d, &format!("f{i}"), 0o644).unwrap();
            inos.push(f);
            if i % 50 == 0 {
                let s = slice(m, 0, 10 + i);
                m.commit_writes(f, &[(0, s)]).unwrap();
                ids.push(s.id);
                m.link(&root(), f, vol.root, format!("link-{depth}-{i}").as_bytes()).unwrap();
            }
        }
        parent = d;
    }
    ids.sort_unstable();
    assert_eq!(m.delete_volume("big").unwrap(), vol);
    assert!(m.volume_by_id(vol.id).is_err(), "the record goes once the tree is removed");
    for ino in &inos {
        assert_eq!(m.getattr(*ino), Err(MetaError::NotFound), "inode {ino} of the deleted volume");
    }
    let mut got: Vec<u64> = m.collectable(usize::MAX).unwrap().iter().map(|p| p.0).collect();
    got.sort_unstable();
    assert_eq!(got, ids, "every slice of the volume waits for block deletion");
    assert_eq!(m.usage(vol.id).unwrap(), Usage::default());
    assert_eq!(m.resume_volume_removals().unwrap(), 0, "nothing left to resume");
}
