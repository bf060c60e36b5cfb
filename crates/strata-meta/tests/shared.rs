//! Client state shared through the engine: two `Meta` instances on one store behave like two
//! servers on one database. Runs on a SQLite file by default and on PostgreSQL when
//! `STRATA_TEST_PG_URL` is set.

mod common;

use std::time::Duration;

use common::*;
use strata_meta::locks::LockKind::{Read, Unlock, Write};
use strata_meta::sessions::SessionInfo;
use strata_meta::*;

fn root() -> Ctx {
    Ctx::root()
}

fn truncate(m: &Meta, f: Ino, size: u64) {
    m.setattr(&root(), f, &SetAttr { size: Some(size), ..Default::default() }).expect("truncate");
}

fn session(id: u64, server: &str) -> SessionInfo {
    let now = Timespec::now();
    SessionInfo {
        id,
        volume: 1,
        volume_name: "v".into(),
        client: format!("client-{id}"),
        since: now,
        last_seen: now,
        server: server.into(),
        version: "0.1.0".into(),
        peer: String::new(),
    }
}

#[test]
fn an_inode_open_through_one_server_survives_unlink_through_another() {
    let fs = TestFs::shared();
    let (a, b) = (&fs.meta, fs.another());
    assert!(a.is_shared() && b.is_shared());
    let vol = fs.volume("v");
    let r = vol.root;
    let (f, s1) = file_with_slice(a, r, "f", 8192);
    assert_eq!(a.open(1, f).unwrap().size, 8192);
    a.open(1, f).unwrap();

    b.unlink(&root(), r, b"f").unwrap();
    // Still there for the client of A: attributes, slices, and its blocks are held.
    let at = b.getattr(f).unwrap();
    assert_eq!((at.nlink, at.size), (0, 8192));
    assert_eq!(a.read_chunk(f, 0).unwrap(), vec![s1]);
    truncate(&b, f, 0);
    assert_eq!(collectable_ids(&b), Vec::<u64>::new(), "B must not collect what A's client may read");

    a.close(1, f).unwrap();
    assert_eq!(b.getattr(f).unwrap().nlink, 0, "one open is left");
    a.close(1, f).unwrap();
    assert_eq!(b.getattr(f), Err(MetaError::NotFound), "the last close destroys it");
    assert_eq!(collectable_ids(&b), vec![s1.id]);
    assert_eq!(b.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });
}

#[test]
fn the_collector_of_one_server_holds_blocks_of_files_open_through_another() {
    let fs = TestFs::shared();
    let (a, b) = (&fs.meta, fs.another());
    let r = fs.volume("v").root;
    let (f, s1) = file_with_slice(a, r, "f", 4096);
    a.open(7, f).unwrap();
    // An overwrite through B drops the only reference to s1; A's client may still read it.
    truncate(&b, f, 0);
    let s2 = slice(&b, 0, 10);
    b.commit_writes(f, &[(0, s2)]).unwrap();
    assert_eq!(collectable_ids(&b), Vec::<u64>::new());
    assert_eq!(collectable_ids(a), Vec::<u64>::new());
    a.close(7, f).unwrap();
    assert_eq!(collectable_ids(&b), vec![s1.id]);

    // Opens through both servers: the file is held until both closed.
    a.open(8, f).unwrap();
    b.open(9, f).unwrap();
    b.unlink(&root(), r, b"f").unwrap();
    a.close(8, f).unwrap();
    assert_eq!(a.getattr(f).unwrap().nlink, 0);
    b.close(9, f).unwrap();
    assert_eq!(a.getattr(f), Err(MetaError::NotFound));
    assert_eq!(collectable_ids(a), vec![s1.id, s2.id]);
}

#[test]
fn locks_conflict_across_servers() {
    let fs = TestFs::shared();
    let (a, b) = (&fs.meta, fs.another());
    let f = mkfile(a, &root(), fs.volume("v").root, "f", 0o644).unwrap();
    assert!(a.lock_set(f, (1, 1), 0, 99, Write, 100).unwrap());
    assert!(!b.lock_set(f, (2, 1), 50, 60, Read, 200).unwrap(), "A's write lock blocks B's reader");
    let held = b.lock_test(f, (2, 1), 50, 60, Read).unwrap().expect("a conflicting lock");
    assert_eq!((held.pid, held.start, held.end, held.kind), (100, 0, 99, Write));
    assert!(b.lock_set(f, (2, 1), 100, 200, Read, 200).unwrap(), "beyond A's range");
    // Unlocking the middle through the other server splits A's range.
    assert!(b.lock_set(f, (1, 1), 40, 59, Unlock, 100).unwrap());
    assert!(b.lock_set(f, (2, 1), 45, 50, Write, 200).unwrap());
    assert!(!a.lock_set(f, (1, 1), 0, 45, Write, 100).unwrap());
    a.lock_release(f, (2, 1)).unwrap();
    assert!(a.lock_set(f, (1, 1), 0, 45, Write, 100).unwrap());
    // Ending a session through either server drops its locks everywhere.
    b.end_session(1).unwrap();
    assert_eq!(a.lock_test(f, (3, 1), 0, u64::MAX, Write).unwrap(), None);
    assert!(a.lock_set(f, (3, 1), 0, u64::MAX, Write, 300).unwrap());
}

#[test]
fn sessions_expire_by_their_last_heartbeat_on_any_server() {
    let fs = TestFs::shared();
    let (a, b) = (&fs.meta, fs.another());
    let r = fs.volume("v").root;
    let f = mkfile(a, &root(), r, "f", 0o644).unwrap();
    assert!(!a.register_session(session(1, "a"), &[]).unwrap());
    assert!(!a.register_session(session(2, "a"), &[]).unwrap());
    assert!(b.touch_session(1, "b").unwrap(), "a session registered through A is known to B");
    assert!(!b.touch_session(3, "b").unwrap());
    assert_eq!((b.session_volume(1).unwrap(), b.session_volume(3).unwrap()), (Some(1), None), "its volume too");
    // Session 1 opens and locks through B (it failed over), then falls silent.
    b.open(1, f).unwrap();
    assert!(b.lock_set(f, (1, 5), 0, 10, Write, 1).unwrap());
    b.unlink(&root(), r, b"f").unwrap();

    let timeout = Duration::from_millis(1500);
    std::thread::sleep(Duration::from_millis(1000));
    // Session 2 keeps beating, but only towards B.
    assert!(b.touch_session(2, "b").unwrap());
    assert_eq!(a.expire_sessions(timeout).unwrap(), Vec::new(), "nobody is silent long enough yet");
    std::thread::sleep(Duration::from_millis(700));
    let dead: Vec<u64> = a.expire_sessions(timeout).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(dead, vec![1], "A ends the silent session, not the one that beats towards B");
    assert_eq!(b.expire_sessions(timeout).unwrap(), Vec::new(), "ended once");
    assert_eq!(b.getattr(f), Err(MetaError::NotFound), "its open file went with it");
    assert_eq!(b.lock_test(f, (9, 9), 0, 10, Write).unwrap(), None, "and its lock");
    let left: Vec<(u64, String)> = b.sessions().unwrap().into_iter().map(|s| (s.id, s.server)).collect();
    assert_eq!(left, vec![(2, "b".to_string())]);
    assert!(!a.touch_session(1, "a").unwrap(), "the client must re-register");

    // Re-registering an unknown session re-announces what it holds open; a known one keeps
    // its records as they are.
    let g = mkfile(a, &root(), r, "g", 0o644).unwrap();
    assert!(!b.register_session(session(1, "b"), &[g]).unwrap());
    assert!(a.register_session(session(1, "a"), &[g]).unwrap());
    a.unlink(&root(), r, b"g").unwrap();
    b.close(1, g).unwrap();
    assert_eq!(a.getattr(g), Err(MetaError::NotFound), "opened once, closed once");
    assert_eq!(b.end_session(2).unwrap().map(|s| s.id), Some(2));
    assert_eq!(a.sessions().unwrap().len(), 1);
}

#[test]
fn shared_opens_survive_a_server_restart() {
    let mut fs = TestFs::shared();
    let vol = fs.volume("v");
    let f = mkfile(&fs.meta, &root(), vol.root, "f", 0o644).unwrap();
    fs.meta.open(6, f).unwrap();
    fs.meta.unlink(&root(), vol.root, b"f").unwrap();
    fs.reopen();
    // Unlike local state, the open is remembered: the orphan reaper leaves the file alone.
    assert_eq!(fs.meta.reap_orphans().unwrap(), 0);
    assert_eq!(fs.meta.getattr(f).unwrap().nlink, 0);
    fs.meta.close_session(6).unwrap();
    assert_eq!(fs.meta.getattr(f), Err(MetaError::NotFound));
    assert_eq!(fs.meta.usage(vol.id).unwrap(), Usage { bytes: 0, inodes: 1 });
}

#[test]
fn a_volume_open_through_another_server_cannot_be_deleted() {
    let fs = TestFs::shared();
    let (a, b) = (&fs.meta, fs.another());
    let vol = fs.volume("v");
    let f = mkfile(a, &root(), vol.root, "f", 0o644).unwrap();
    a.open(1, f).unwrap();
    assert!(matches!(b.delete_volume("v"), Err(MetaError::Busy(_))));
    a.close(1, f).unwrap();
    b.delete_volume("v").unwrap();
}

/// The two servers of [`unrecorded_opens`] tests: opens through A may go unrecorded.
fn unrecorded_pair(fs: &TestFs, grace: Duration) -> (&Meta, Meta) {
    let (a, b) = (&fs.meta, fs.another());
    let started = Timespec::now();
    for (m, name) in [(a, "a"), (&b, "b")] {
        m.set_unrecorded_opens(true);
        m.set_relay_heard(true);
        m.set_open_grace(grace);
        m.report_server(name, "test", started).unwrap();
    }
    (a, b)
}

#[test]
fn an_unrecorded_open_is_recorded_when_its_doom_note_is_heard() {
    let fs = TestFs::shared();
    let grace = Duration::from_millis(300);
    let (a, b) = unrecorded_pair(&fs, grace);
    let r = fs.volume("v").root;
    let (f, s1) = file_with_slice(a, r, "f", 8192);
    a.register_session(session(1, "a"), &[]).unwrap();

    assert_eq!(a.open(1, f).unwrap().size, 8192);
    assert!(a.has_unrecorded_opens(), "a plain open writes no record");
    a.close(1, f).unwrap();
    assert!(!a.has_unrecorded_opens(), "and its close writes nothing either");

    a.open(1, f).unwrap();
    b.unlink(&root(), r, b"f").unwrap();
    assert_eq!(b.doomed_count(), 1, "the unlink leaves the destruction to the reaper");
    assert_eq!(b.reap_doomed().unwrap(), 0, "nothing goes within the grace");
    // What A's relay does when the unlink's doom note arrives.
    assert_eq!(a.record_opens(Some(&[f])).unwrap(), 1);
    assert!(!a.has_unrecorded_opens());
    std::thread::sleep(grace + Duration::from_millis(50));
    assert_eq!(b.reap_doomed().unwrap(), 0, "the recorded open keeps the file");
    assert_eq!(b.getattr(f).unwrap().nlink, 0);
    assert_eq!(a.read_chunk(f, 0).unwrap(), vec![s1]);

    // Its close (a recorded one now) leaves it to the reaper too, after the grace.
    a.close(1, f).unwrap();
    assert_eq!(a.reap_doomed().unwrap(), 0);
    assert!(a.getattr(f).is_ok());
    std::thread::sleep(grace + Duration::from_millis(50));
    assert_eq!(a.reap_doomed().unwrap(), 1);
    assert_eq!(b.getattr(f), Err(MetaError::NotFound));
}

#[test]
fn an_open_of_a_doomed_inode_is_recorded_at_once() {
    let fs = TestFs::shared();
    let grace = Duration::from_millis(200);
    let (a, b) = unrecorded_pair(&fs, grace);
    let r = fs.volume("v").root;
    let (f, _) = file_with_slice(a, r, "f", 4096);
    a.register_session(session(1, "a"), &[]).unwrap();
    b.register_session(session(2, "b"), &[]).unwrap();
    b.open(2, f).unwrap();
    b.unlink(&root(), r, b"f").unwrap();
    // The doom note went by before this open (by handle, say): nlink 0 makes it record.
    assert_eq!(a.open(1, f).unwrap().nlink, 0);
    assert!(!a.has_unrecorded_opens());
    b.close(2, f).unwrap();
    b.record_opens(None).unwrap();
    std::thread::sleep(grace + Duration::from_millis(50));
    b.reap_doomed().unwrap();
    assert!(b.getattr(f).is_ok(), "A's open keeps the file");
    a.close(1, f).unwrap();
    std::thread::sleep(grace + Duration::from_millis(50));
    assert_eq!(a.reap_doomed().unwrap(), 1);
    assert_eq!(b.getattr(f), Err(MetaError::NotFound));
}

#[test]
fn a_created_file_is_open_unrecorded_until_its_doom_note_is_heard() {
    let fs = TestFs::shared();
    let grace = Duration::from_millis(200);
    let (a, b) = unrecorded_pair(&fs, grace);
    let r = fs.volume("v").root;
    a.register_session(session(1, "a"), &[]).unwrap();
    let create = |name: &[u8], excl: bool| {
        a.mknod_open(1, &root(), r, name, FileType::File, 0o644, 0, 0, b"", excl, None)
            .map(|c| (c.ino, c.attr, c.created))
    };
    let (f, _, made) = create(b"n", true).unwrap();
    assert!(made);
    assert!(a.has_unrecorded_opens(), "the creator's open has no record");
    // Creates that make nothing leave no open behind.
    assert_eq!(create(b"n", true).map(|_| ()), Err(MetaError::Exists));
    assert_eq!(
        a.mknod_open(1, &root(), 999_999, b"x", FileType::File, 0o644, 0, 0, b"", true, None).map(|_| ()),
        Err(MetaError::NotFound)
    );
    a.close(1, f).unwrap();
    assert!(!a.has_unrecorded_opens(), "closed: nothing is left, and nothing was written");
    // Open-or-create of the existing file: an open like any other.
    let (g, _, made) = create(b"n", false).unwrap();
    assert_eq!((g, made), (f, false));

    let (h, _, _) = create(b"held", true).unwrap();
    b.unlink(&root(), r, b"held").unwrap();
    a.record_opens(Some(&[h])).unwrap();
    std::thread::sleep(grace + Duration::from_millis(50));
    assert_eq!(b.reap_doomed().unwrap(), 0, "the creator's open, recorded on the note, keeps the file");
    assert_eq!(a.getattr(h).unwrap().nlink, 0);
    a.close(1, h).unwrap();
    std::thread::sleep(grace + Duration::from_millis(50));
    assert_eq!(a.reap_doomed().unwrap(), 1);
    assert_eq!(b.getattr(h), Err(MetaError::NotFound));
    a.close(1, g).unwrap();
    assert!(!a.has_unrecorded_opens());
}

#[test]
fn creates_and_unlinks_answer_the_parent_as_they_left_it_whatever_volume_is_guessed() {
    let fs = TestFs::shared();
    let a = &fs.meta;
    let (v, w) = (fs.volume("v"), fs.volume("w"));
    let r = v.root;
    // The guess only decides what is read ahead: right, wrong (another volume, or none at
    // all) and missing guesses must all give the same answers.
    for (i, vol) in [Some(v.id), Some(w.id), Some(999), None].into_iter().enumerate() {
        let name = format!("f{i}");
        let before = a.usage(v.id).unwrap();
        let c = a.mknod_open(0, &root(), r, name.as_bytes(), FileType::File, 0o644, 0, 0, b"", true, vol).unwrap();
        assert!(c.created, "{vol:?}");
        assert_eq!(c.parent, a.getattr(r).unwrap(), "{vol:?}: the parent after the create");
        assert_eq!(a.usage(v.id).unwrap().inodes, before.inodes + 1, "{vol:?}");
        let again = a.mknod_open(0, &root(), r, name.as_bytes(), FileType::File, 0o644, 0, 0, b"", false, vol).unwrap();
        assert_eq!((again.ino, again.created, &again.parent), (c.ino, false, &c.parent), "{vol:?}: open-or-create");
        let p = a.unlink_in(&root(), r, name.as_bytes(), vol).unwrap();
        assert_eq!(p, a.getattr(r).unwrap(), "{vol:?}: the parent after the unlink");
        assert!(p.mtime >= c.parent.mtime);
        assert_eq!(a.usage(v.id).unwrap().inodes, before.inodes, "{vol:?}");
        assert_eq!(a.usage(w.id).unwrap().inodes, 1, "{vol:?}: the other volume is not charged");
    }
    // The quota check reads the volume's record, read ahead or not.
    let used = a.usage(v.id).unwrap().inodes;
    a.set_volume_quota("v", None, Some(used)).unwrap();
    for vol in [Some(v.id), Some(w.id), None] {
        let r = a.mknod_open(0, &root(), r, b"over", FileType::File, 0o644, 0, 0, b"", true, vol);
        assert_eq!(r.map(|_| ()), Err(MetaError::Quota), "{vol:?}");
    }
}

#[test]
fn a_known_session_announcing_its_opens_has_them_recorded() {
    let fs = TestFs::shared();
    let (a, b) = unrecorded_pair(&fs, Duration::from_millis(200));
    let r = fs.volume("v").root;
    let (f, _) = file_with_slice(a, r, "f", 4096);
    a.register_session(session(1, "a"), &[]).unwrap();
    a.open(1, f).unwrap();
    a.open(1, f).unwrap();
    // A goes away with its unrecorded opens, and the file is unlinked through B: while the
    // session still names A, nothing is destroyed.
    a.forget_server("a").unwrap();
    assert!(!b.opens_accounted().unwrap());
    b.unlink(&root(), r, b"f").unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(b.reap_doomed().unwrap(), 0);
    assert_eq!(b.doomed_count(), 1, "held for the session of a server that is gone");
    // The client's first call to B is refused, so it registers again there, naming what it
    // has open.
    assert!(!b.touch_session(1, "b").unwrap(), "B asks the session to announce its opens");
    assert!(b.register_session(session(1, "b"), &[f, f]).unwrap(), "the session was known");
    assert!(b.touch_session(1, "b").unwrap());
    assert!(b.opens_accounted().unwrap());
    assert_eq!(b.reap_doomed().unwrap(), 0);
    assert_eq!(b.getattr(f).unwrap().nlink, 0, "the announced opens keep the file");
    b.close(1, f).unwrap();
    b.close(1, f).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(b.reap_doomed().unwrap(), 1, "both opens were recorded, and both closed");
}

/// On PostgreSQL, the unlink's transaction itself sends the doom note, with its commit.
#[test]
fn an_unlink_sends_its_doom_note_with_its_commit() {
    let fs = TestFs::shared();
    if !fs.url.starts_with("postgres") {
        eprintln!("skipped: doom notes need PostgreSQL (set STRATA_TEST_PG_URL)");
        return;
    }
    let (a, b) = unrecorded_pair(&fs, Duration::from_millis(200));
    let r = fs.volume("v").root;
    let (f, _) = file_with_slice(a, r, "f", 4096);
    let mut listener = postgres::Client::connect(&fs.url, postgres::NoTls).expect("connect to PostgreSQL");
    listener.batch_execute(&format!("LISTEN {}", NOTE_CHANNEL)).unwrap();
    b.unlink(&root(), r, b"f").unwrap();
    use postgres::fallible_iterator::FallibleIterator;
    let mut heard = Vec::new();
    let mut n = listener.notifications();
    let mut it = n.timeout_iter(Duration::from_secs(5));
    while let Some(note) = it.next().unwrap() {
        heard.push(note.payload().to_string());
        if heard.iter().any(|p| parse_doom_note(p).is_some_and(|v| v.contains(&f))) {
            break;
        }
    }
    assert!(heard.contains(&doom_note(f)), "heard {heard:?}");
}

#[test]
fn the_only_server_destroys_at_once() {
    let fs = TestFs::shared();
    let a = &fs.meta;
    a.set_unrecorded_opens(true);
    a.set_relay_heard(true);
    a.set_open_grace(Duration::from_secs(60));
    a.report_server("a", "test", Timespec::now()).unwrap();
    a.register_session(session(1, "a"), &[]).unwrap();
    assert!(a.refresh_sole("a").unwrap());
    let r = fs.volume("v").root;
    let (f, _) = file_with_slice(a, r, "f", 4096);
    let (g, _) = file_with_slice(a, r, "g", 4096);
    a.open(1, f).unwrap();
    assert!(a.has_unrecorded_opens());
    a.unlink(&root(), r, b"f").unwrap();
    a.unlink(&root(), r, b"g").unwrap();
    // The reaper (every 20 ms in a server) takes what is open nowhere, without a grace.
    assert_eq!(a.reap_doomed().unwrap(), 1);
    assert_eq!(a.getattr(g), Err(MetaError::NotFound), "open nowhere: destroyed");
    assert_eq!(a.getattr(f).unwrap().nlink, 0, "open here, unrecorded: kept");
    // Closed before the unlink's doom note came back: the reaper takes it, without a grace.
    a.close(1, f).unwrap();
    assert_eq!(a.reap_doomed().unwrap(), 1);
    assert_eq!(a.getattr(f), Err(MetaError::NotFound));
    // A second server: the first is not alone any more, and destruction waits.
    let b = fs.another();
    b.report_server("b", "test", Timespec::now()).unwrap();
    assert!(!a.refresh_sole("a").unwrap());
    assert_eq!(a.open_grace(), Duration::from_secs(60));
}

#[test]
fn a_session_that_moves_has_its_opens_recorded_where_it_was() {
    let fs = TestFs::shared();
    let (a, b) = unrecorded_pair(&fs, Duration::from_millis(200));
    let r = fs.volume("v").root;
    let (f, _) = file_with_slice(a, r, "f", 4096);
    a.register_session(session(1, "a"), &[]).unwrap();
    a.open(1, f).unwrap();
    assert!(a.has_unrecorded_opens());
    // The client fails over to B and announces its open there; A hears B's moved note.
    assert!(b.register_session(session(1, "b"), &[f]).unwrap());
    assert_eq!(a.session_moved(1, "a", "a").unwrap(), 0, "a note of A's own is no move");
    assert_eq!(a.session_moved(1, "b", "a").unwrap(), 1);
    assert!(!a.has_unrecorded_opens());
    assert!(!a.touch_session(1, "a").unwrap(), "coming back to A, it announces its opens again");
    // One open, recorded once (B's count and A's are the same open): one close through B
    // lets the unlinked file go.
    b.close(1, f).unwrap();
    b.unlink(&root(), r, b"f").unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(b.reap_doomed().unwrap(), 1);
    assert_eq!(b.getattr(f), Err(MetaError::NotFound));
}
