//! Snapshots and clones in the metadata layer: a snapshot reads as the volume was, refuses
//! writes, keeps the slices it saw until it goes, and costs one record; clones copy the tree
//! and share every slice.

mod common;

use common::*;
use strata_meta::*;

fn root() -> Ctx {
    Ctx::root()
}

fn ids(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[test]
fn a_snapshot_reads_as_the_volume_was() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("v");
    let d = mkdir(m, &root(), vol.root, "d", 0o755).unwrap();
    let (f, s1) = file_with_slice(m, d, "f", 4096);
    let (g, sg) = file_with_slice(m, vol.root, "g", 8192);
    symlink(m, &root(), vol.root, "l", "d/f").unwrap();
    m.setxattr(f, b"user.k", b"one", 0).unwrap();
    let snap = m.create_snapshot("v", "s1", None).unwrap();
    assert_eq!((snap.bytes, snap.inodes), (m.usage(vol.id).unwrap().bytes, m.usage(vol.id).unwrap().inodes));

    // After it: overwrite f, delete g, add h, change an xattr, rename d.
    let s2 = slice(m, 0, 100);
    m.commit_writes(f, &[(0, s2)]).unwrap();
    m.compact_chunk(f, 0, &[s1, s2], slice(m, 0, 4096)).unwrap();
    m.unlink(&root(), vol.root, b"g").unwrap();
    mkfile(m, &root(), vol.root, "h", 0o644).unwrap();
    m.setxattr(f, b"user.k", b"two", 0).unwrap();
    m.rename(&root(), vol.root, b"d", vol.root, b"e", 0).unwrap();
    assert_eq!(names(m, vol.root), ["e", "h", "l"]);

    let r = snap.root(&vol);
    assert_eq!(names(m, r), ["d", "g", "l"]);
    let (vd, da) = m.lookup(&root(), r, b"d").unwrap();
    assert_eq!(view_ino(snap.epoch, d), vd);
    assert_eq!(da.parent, r);
    let (vf, fa) = m.lookup(&root(), vd, b"f").unwrap();
    assert_eq!(fa.size, 4096);
    assert_eq!(m.read_chunk(vf, 0).unwrap(), vec![s1]);
    assert_eq!(m.getxattr(vf, b"user.k").unwrap(), b"one");
    assert_eq!(m.listxattr(vf).unwrap(), vec![b"user.k".to_vec()]);
    let (vl, _) = m.lookup(&root(), r, b"l").unwrap();
    assert_eq!(m.readlink(vl).unwrap(), b"d/f");
    let (vg, ga) = m.lookup(&root(), r, b"g").unwrap();
    assert_eq!((ga.size, m.read_chunk(vg, 0).unwrap()), (8192, vec![sg]));
    assert_eq!(m.lookup(&root(), r, b"h").unwrap_err(), MetaError::NotFound);
    let plus = m.readdir(&root(), r, true).unwrap();
    assert_eq!(plus.iter().map(|e| e.attr.unwrap().size).collect::<Vec<_>>(), vec![da.size, 8192, 3]);

    // Writes through the snapshot are refused.
    assert_eq!(mkfile(m, &root(), r, "x", 0o644).unwrap_err(), MetaError::ReadOnly);
    assert_eq!(m.commit_writes(vf, &[(0, slice(m, 0, 1))]).unwrap_err(), MetaError::ReadOnly);
    assert_eq!(m.unlink(&root(), vd, b"f").unwrap_err(), MetaError::ReadOnly);
    assert_eq!(m.setxattr(vf, b"user.z", b"1", 0).unwrap_err(), MetaError::ReadOnly);

    // The slices the snapshot holds are not collectable; the live volume's garbage is.
    let _ = g;
    let pending = ids(collectable_ids(m));
    assert!(!pending.contains(&s1.id) && !pending.contains(&sg.id), "{pending:?}");
    assert!(pending.contains(&s2.id), "{pending:?}");
    let space = m.snapshot_space(&snap).unwrap();
    assert_eq!(space.held_bytes, 4096 + 8192, "{space:?}");
    let live = m.referenced_slices().unwrap();
    assert!(live.contains(&s1.id) && live.contains(&sg.id));

    // Deleting it frees them and makes its inodes stale.
    m.delete_snapshot("v", "s1", None).unwrap();
    let pending = ids(collectable_ids(m));
    assert!(pending.contains(&s1.id) && pending.contains(&sg.id), "{pending:?}");
    assert_eq!(m.getattr(r).unwrap_err(), MetaError::NotFound);
    assert!(m.list_snapshots("v").unwrap().is_empty());
}

#[test]
fn deleting_a_newer_snapshot_keeps_what_an_older_one_reads() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("v");
    let (f, a) = file_with_slice(m, vol.root, "f", 4096);
    let old = m.create_snapshot("v", "old", None).unwrap();
    let new = m.create_snapshot("v", "new", None).unwrap();
    // Changed only after the newer one: the version is saved for it alone.
    let b = slice(m, 0, 4096);
    m.commit_writes(f, &[(0, b)]).unwrap();
    m.compact_chunk(f, 0, &[a, b], slice(m, 0, 4096)).unwrap();
    m.delete_snapshot("v", "new", None).unwrap();
    let vf = view_ino(old.epoch, f);
    assert_eq!(m.read_chunk(vf, 0).unwrap(), vec![a]);
    assert!(!collectable_ids(m).contains(&a.id));
    assert_eq!(m.getattr(view_ino(new.epoch, f)).unwrap_err(), MetaError::NotFound);
    m.delete_snapshot("v", "old", None).unwrap();
    assert!(collectable_ids(m).contains(&a.id));
}

#[test]
fn a_snapshot_costs_one_record() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("v");
    for i in 0..200 {
        file_with_slice(m, vol.root, &format!("f{i}"), 4096);
    }
    let before = m.referenced_slices().unwrap().len();
    let s = m.create_snapshot("v", "s", None).unwrap();
    // Nothing was copied: no versions exist until something changes.
    assert_eq!(m.snapshot_space(&s).unwrap().held_bytes, 0);
    assert_eq!(m.referenced_slices().unwrap().len(), before);
    assert_eq!(m.create_snapshot("v", "s", None).unwrap_err(), MetaError::Exists);
    assert!(m.delete_volume("v").is_err(), "a volume with snapshots is not deleted");
}

#[test]
fn a_clone_shares_slices_and_lives_on_its_own() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("src");
    let d = mkdir(m, &root(), vol.root, "d", 0o755).unwrap();
    let (f, a) = file_with_slice(m, d, "f", 4096);
    m.link(&root(), f, vol.root, b"hard").unwrap();
    symlink(m, &root(), d, "l", "f").unwrap();
    m.setxattr(f, b"user.k", b"v", 0).unwrap();
    m.create_volume("dst", &NewVolume::default()).unwrap();
    let c = m.clone_volume("dst", "src", None).unwrap();
    assert!(!c.building);
    assert_eq!(c.origins.first().map(|o| o.0), Some(vol.id));
    assert_eq!(c.block_volume(a.id), vol.id);
    assert_eq!(names(m, c.root), ["d", "hard"]);
    let (cd, _) = m.lookup(&root(), c.root, b"d").unwrap();
    let (cf, cfa) = m.lookup(&root(), cd, b"f").unwrap();
    let (ch, _) = m.lookup(&root(), c.root, b"hard").unwrap();
    assert_eq!((cf, cfa.nlink, cfa.volume), (ch, 2, c.id), "hard links stay links");
    assert_eq!(m.read_chunk(cf, 0).unwrap(), vec![a]);
    assert_eq!(m.getxattr(cf, b"user.k").unwrap(), b"v");
    assert_eq!(m.usage(c.id).unwrap(), m.usage(vol.id).unwrap());
    // The temporary snapshot is gone.
    assert!(m.list_snapshots("src").unwrap().is_empty());
    // Both sides drop the slice: only then is it collectable, under the source's name.
    m.unlink(&root(), d, b"f").unwrap();
    m.unlink(&root(), vol.root, b"hard").unwrap();
    assert!(!collectable_ids(m).contains(&a.id));
    mkfile(m, &root(), cd, "new", 0o644).unwrap();
    assert_eq!(names(m, d), ["l"]);
    m.delete_volume("dst").unwrap();
    let pending = m.collectable(100).unwrap();
    let p = pending.iter().find(|(id, _)| *id == a.id).expect("collectable after both let go");
    assert_eq!(p.1.volume, vol.id);
}

#[test]
fn data_volume_versions_outlive_their_source() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("src");
    let (f, a) = file_with_slice(m, vol.root, "f", 4096);
    let d = m.create_datavolume("ds", "cluster", "src", "a dataset").unwrap();
    assert_eq!(d.versions.len(), 1);
    let b = slice(m, 0, 4096);
    m.commit_writes(f, &[(0, b)]).unwrap();
    let d = m.update_datavolume("ds").unwrap();
    let (v1, v2) = (d.version(Some(1)).unwrap().clone(), d.version(None).unwrap().clone());
    assert_eq!(v2.number, 2);
    assert_eq!(m.read_chunk(view_ino(v1.epoch, f), 0).unwrap(), vec![a]);
    assert_eq!(m.read_chunk(view_ino(v2.epoch, f), 0).unwrap(), vec![a, b]);
    assert_eq!(m.datavolume_of_epoch(v2.epoch).unwrap().map(|d| d.name), Some("ds".to_string()));
    // Its snapshots are not the user's to delete, and do not keep the volume from going.
    assert!(m.delete_snapshot("src", &v1.snapshot, None).is_err());
    m.delete_volume("src").unwrap();
    assert!(m.volume("src").is_err());
    assert!(m.list_volumes().unwrap().is_empty());
    assert_eq!(m.read_chunk(view_ino(v1.epoch, f), 0).unwrap(), vec![a]);
    assert!(!collectable_ids(m).contains(&a.id));
    assert!(m.update_datavolume("ds").is_err());
    m.delete_datavolume_version("ds", 1).unwrap();
    assert_eq!(m.read_chunk(view_ino(v2.epoch, f), 0).unwrap(), vec![a, b]);
    m.delete_datavolume("ds").unwrap();
    let pending = collectable_ids(m);
    assert!(pending.contains(&a.id) && pending.contains(&b.id), "{pending:?}");
    assert!(m.volume_by_id(vol.id).is_err(), "the kept record goes with the last snapshot");
}

#[test]
fn paging_a_snapshot_directory_whose_names_all_changed() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("v");
    m.create_snapshot("v", "s0", None).unwrap();
    let f = mkfile(m, &root(), vol.root, "a", 0o644).unwrap();
    m.link(&root(), f, vol.root, b"dd").unwrap();
    let s2 = m.create_snapshot("v", "s2", None).unwrap();
    m.unlink(&root(), vol.root, b"a").unwrap();
    m.unlink(&root(), vol.root, b"dd").unwrap();
    mkfile(m, &root(), vol.root, "c", 0o644).unwrap();
    let r = s2.root(&vol);
    let p = m.readdir_page(&root(), r, false, b"", 1).unwrap();
    let names: Vec<_> = p.entries.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
    assert_eq!((names, p.more), (vec!["a".to_string()], true));
    let p = m.readdir_page(&root(), r, false, b"a", 1).unwrap();
    let names: Vec<_> = p.entries.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
    assert_eq!((names, p.more), (vec!["dd".to_string()], false));
}

/// A directory of a snapshot that was empty then, with an entry created after it: asking
/// whether the snapshot's directory is empty (an rmdir through the snapshot) reads one entry
/// at a time, and the saved version of the entry just read sorts after the next page's start.
/// It must end (EROFS), not scan the same version forever.
#[test]
fn emptiness_of_a_snapshot_directory_with_later_entries_ends() {
    let fs = TestFs::new();
    let m = &fs.meta;
    let vol = fs.volume("v");
    let d = mkdir(m, &root(), vol.root, "d", 0o755).unwrap();
    let snap = m.create_snapshot("v", "s1", None).unwrap();
    mkfile(m, &root(), d, "a", 0o644).unwrap();
    mkfile(m, &root(), d, "b", 0o644).unwrap();
    let r = snap.root(&vol);
    let (vd, _) = m.lookup(&root(), r, b"d").unwrap();
    assert!(names(m, vd).is_empty());
    let (tx, rx) = std::sync::mpsc::channel();
    let url = fs.url.clone();
    std::thread::spawn(move || {
        let m = open_url_mode(&url, StateMode::Local);
        let _ = tx.send(m.rmdir(&Ctx::root(), r, b"d"));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("rmdir through a snapshot never ended");
    assert_eq!(got.unwrap_err(), MetaError::ReadOnly);
}
