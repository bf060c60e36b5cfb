//! `strata gateway nfs` driven by independent NFSv3 clients: libnfs's tools (nfs-cp, nfs-ls,
//! nfs-cat) for whole-file work and the `nfs3_client` crate for every procedure, export rules,
//! credentials and malformed input. Data written through NFS is checked on FUSE mounts of the
//! same volume, and the other way round.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{ConnectError, MountError, Nfs3Connection, Nfs3ConnectionBuilder};

type Conn = Nfs3Connection<TokioIo<tokio::net::TcpStream>>;

fn libnfs(tool: &str, args: &[&str]) -> std::process::Output {
    run_cmd(Command::new(tool).args(args))
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

async fn connect(port: u16, export: &str, uid: u32, gid: u32) -> Result<Conn, ConnectError> {
    let cred = opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::borrowed(b"it"),
        uid,
        gid,
        gids: vec![gid],
    });
    Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", export)
        .mount_port(port)
        .nfs3_port(port)
        .connect_from_privileged_port(false)
        .credential(cred)
        .mount()
        .await
}

fn fh(data: &[u8]) -> nfs_fh3 {
    nfs_fh3 { data: Opaque::owned(data.to_vec()) }
}

fn name(n: &str) -> filename3<'static> {
    filename3(Opaque::owned(n.as_bytes().to_vec()))
}

fn dirop<'a>(dir: &nfs_fh3, n: &str) -> diropargs3<'a> {
    diropargs3 { dir: dir.clone(), name: name(n) }
}

fn code<T, E>(r: &Nfs3Result<T, E>) -> nfsstat3 {
    match r {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((s, _)) => *s,
    }
}

fn mode_sattr(mode: u32) -> sattr3 {
    sattr3 { mode: Nfs3Option::Some(mode), ..Default::default() }
}

async fn create(c: &mut Conn, dir: &nfs_fh3, n: &str, mode: u32) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    let r = c
        .create(&CREATE3args { where_: dirop(dir, n), how: createhow3::GUARDED(mode_sattr(mode)) })
        .await
        .expect("rpc");
    match r {
        Nfs3Result::Ok(ok) => {
            let Nfs3Option::Some(h) = ok.obj else { panic!("CREATE without a handle") };
            let Nfs3Option::Some(a) = ok.obj_attributes else { panic!("CREATE without attributes") };
            Ok((h, a))
        }
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

async fn write(c: &mut Conn, f: &nfs_fh3, off: u64, data: &[u8], stable: stable_how) -> Result<WRITE3resok, nfsstat3> {
    let r = c
        .write(&WRITE3args {
            file: f.clone(),
            offset: off,
            count: data.len() as u32,
            stable,
            data: Opaque::borrowed(data),
        })
        .await
        .expect("rpc");
    match r {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

async fn nfs_read_all(c: &mut Conn, f: &nfs_fh3) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let r = c.read(&READ3args { file: f.clone(), offset: out.len() as u64, count: 1 << 20 }).await.expect("rpc");
        let Nfs3Result::Ok(ok) = r else { panic!("READ failed: {:?}", code(&r)) };
        out.extend_from_slice(ok.data.as_ref());
        if ok.eof || ok.data.is_empty() {
            return out;
        }
    }
}

async fn lookup(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(nfs_fh3, Option<fattr3>), nfsstat3> {
    match c.lookup(&LOOKUP3args { what: dirop(dir, n) }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => {
            let a = match ok.obj_attributes {
                Nfs3Option::Some(a) => Some(a),
                Nfs3Option::None => None,
            };
            Ok((ok.object, a))
        }
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

async fn getattr(c: &mut Conn, f: &nfs_fh3) -> Result<fattr3, nfsstat3> {
    match c.getattr(&GETATTR3args { object: f.clone() }).await.expect("rpc") {
        Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

/// Every name in a directory, paging READDIRPLUS (or READDIR) with a small reply size.
async fn list(c: &mut Conn, dir: &nfs_fh3, plus: bool, max: u32) -> Vec<String> {
    let mut at = Paging::default();
    list_pages(c, dir, plus, max, usize::MAX, &mut at).await
}

/// Where a client paging through a directory is.
#[derive(Default)]
struct Paging {
    cookie: u64,
    verf: cookieverf3,
    eof: bool,
}

/// The names of up to `replies` more replies of a listing, continuing from `at`.
async fn list_pages(c: &mut Conn, dir: &nfs_fh3, plus: bool, max: u32, replies: usize, at: &mut Paging) -> Vec<String> {
    let mut names = Vec::new();
    let (mut cookie, mut verf) = (at.cookie, at.verf);
    for _ in 0..replies {
        let (entries, eof, v): (Vec<(String, u64)>, bool, cookieverf3) = if plus {
            let r = c
                .readdirplus(&READDIRPLUS3args {
                    dir: dir.clone(),
                    cookie,
                    cookieverf: verf,
                    dircount: max,
                    maxcount: max,
                })
                .await
                .expect("rpc");
            let Nfs3Result::Ok(ok) = r else { panic!("READDIRPLUS: {:?}", code(&r)) };
            for e in &ok.reply.entries.0 {
                let n = String::from_utf8_lossy(e.name.as_ref()).into_owned();
                if n != ".." {
                    assert!(matches!(e.name_attributes, Nfs3Option::Some(_)), "{n}: READDIRPLUS without attributes");
                    assert!(matches!(e.name_handle, Nfs3Option::Some(_)), "{n}: READDIRPLUS without a handle");
                }
            }
            let list = ok.reply.entries.0.iter().map(|e| (String::from_utf8_lossy(e.name.as_ref()).into(), e.cookie));
            (list.collect(), ok.reply.eof, ok.cookieverf)
        } else {
            let r =
                c.readdir(&READDIR3args { dir: dir.clone(), cookie, cookieverf: verf, count: max }).await.expect("rpc");
            let Nfs3Result::Ok(ok) = r else { panic!("READDIR: {:?}", code(&r)) };
            let list = ok.reply.entries.0.iter().map(|e| (String::from_utf8_lossy(e.name.as_ref()).into(), e.cookie));
            (list.collect(), ok.reply.eof, ok.cookieverf)
        };
        verf = v;
        if let Some((_, last)) = entries.last() {
            cookie = *last;
        }
        names.extend(entries.into_iter().map(|(n, _)| n));
        (at.cookie, at.verf, at.eof) = (cookie, verf, eof);
        if eof {
            break;
        }
    }
    names
}

/// A dataset copied in with nfs-cp is listed by nfs-ls and read byte-exact on a FUSE mount of
/// the volume; a file written and renamed on FUSE is seen by NFS clients; nfs-cp copies back out
/// exactly.
#[test]
fn libnfs_tools_and_fuse_see_the_same_files() {
    let mut c = Cluster::with_mounts("nfs-tools", 1);
    let vol = c.volume.clone();
    let mut g = Gateway::nfs(&mut c, &[&format!("/data={vol},squash=none")], &[]);
    std::fs::create_dir(c.p(0, "ds")).expect("mkdir on FUSE");

    let local = c.dir.join("local");
    std::fs::create_dir(&local).expect("mkdir");
    let mut files = vec![("big.bin".to_string(), random_bytes(1, 5 * 1024 * 1024 + 123))];
    for i in 0..12 {
        files.push((format!("small-{i:02}.txt"), random_bytes(100 + i, 1000 + i as usize * 777)));
    }
    for (n, data) in &files {
        let p = local.join(n);
        std::fs::write(&p, data).expect("write local");
        ok(&libnfs("nfs-cp", &[p.to_str().expect("utf8"), &g.nfs_url(&format!("/data/ds/{n}"))]), "nfs-cp in");
    }
    let listing = ok(&libnfs("nfs-ls", &[&g.nfs_url("/data/ds")]), "nfs-ls");
    for (n, data) in &files {
        let line =
            listing.lines().find(|l| l.ends_with(&format!(" {n}"))).unwrap_or_else(|| panic!("{n} not in {listing}"));
        assert!(line.contains(&format!(" {} ", data.len())), "size of {n} in {line:?}");
        assert_bytes_eq(&read_all(&c.p(0, &format!("ds/{n}"))), data, &format!("{n} on FUSE"));
    }

    // FUSE → NFS: contents, then a rename (no attribute caching in the gateway: seen at once).
    let fdata = random_bytes(9, 3 * 1024 * 1024 + 5);
    std::fs::write(c.p(0, "ds/from-fuse.bin"), &fdata).expect("write on FUSE");
    let got = libnfs("nfs-cat", &[&g.nfs_url("/data/ds/from-fuse.bin")]);
    assert_bytes_eq(&got.stdout, &fdata, "nfs-cat of a FUSE-written file");
    let rt = rt();
    let port = g.port;
    let before = rt.block_on(async {
        let mut n = connect(port, "/data", 0, 0).await.expect("mount");
        let root = n.root_nfs_fh3();
        let (ds, _) = lookup(&mut n, &root, "ds").await.expect("LOOKUP ds");
        let (f, _) = lookup(&mut n, &ds, "from-fuse.bin").await.expect("LOOKUP before the rename");
        getattr(&mut n, &f).await.expect("GETATTR").fileid
    });
    std::fs::rename(c.p(0, "ds/from-fuse.bin"), c.p(0, "ds/renamed.bin")).expect("rename on FUSE");
    let listing = ok(&libnfs("nfs-ls", &[&g.nfs_url("/data/ds")]), "nfs-ls after rename");
    assert!(listing.contains(" renamed.bin") && !listing.contains("from-fuse.bin"), "{listing}");
    // Lookups are reused for the attribute lifetime (1 s): after it, the old name is gone.
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(async {
        let mut n = connect(port, "/data", 0, 0).await.expect("mount");
        let root = n.root_nfs_fh3();
        let (ds, _) = lookup(&mut n, &root, "ds").await.expect("LOOKUP ds");
        assert_eq!(lookup(&mut n, &ds, "from-fuse.bin").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT);
        let (f, _) = lookup(&mut n, &ds, "renamed.bin").await.expect("LOOKUP after the rename");
        assert_eq!(getattr(&mut n, &f).await.expect("GETATTR").fileid, before, "same file, new name");
    });

    // NFS → local, byte-exact.
    let back = c.dir.join("back.bin");
    ok(&libnfs("nfs-cp", &[&g.nfs_url("/data/ds/big.bin"), back.to_str().expect("utf8")]), "nfs-cp out");
    assert_bytes_eq(&read_all(&back), &files[0].1, "copied out");
    assert!(g.alive());
    g.stop();
}

/// A client that listed a directory and goes on looking names up in it after the gateway's
/// names expired gets them from one fresh reading of the whole directory, which shows another
/// client's changes (renamed, removed, created, rewritten) exactly as single lookups would; a
/// remembered name is never given to a caller who may not search its directory.
#[test]
fn listed_directories_are_read_again_whole() {
    let mut c = Cluster::with_opts("nfs-refresh", Opts::default());
    c.mount(&["--attr-ttl", "0", "--entry-ttl", "0"]);
    let vol = c.volume.clone();
    std::fs::create_dir(c.p(0, "ds")).expect("mkdir on FUSE");
    for i in 0..40 {
        std::fs::write(c.p(0, &format!("ds/f{i:02}")), vec![i as u8; 100 + i]).expect("write on FUSE");
    }
    std::fs::create_dir(c.p(0, "locked")).expect("mkdir on FUSE");
    std::fs::write(c.p(0, "locked/x"), b"x").expect("write on FUSE");
    std::fs::set_permissions(c.p(0, "locked"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let mut g = Gateway::nfs(&mut c, &[&format!("/v={vol},squash=none")], &["--attr-ttl", "300ms"]);
    g.env = vec![("RUST_LOG".into(), "strata_nfs=debug,strata_vfs=debug".into())];
    g.restart(&mut c);
    let port = g.port;
    let rt = rt();
    let ttl = Duration::from_millis(400);
    let ids = rt.block_on(async {
        let mut n = connect(port, "/v", 0, 0).await.expect("mount");
        let root = n.root_nfs_fh3();
        let (ds, _) = lookup(&mut n, &root, "ds").await.expect("LOOKUP ds");
        assert_eq!(list(&mut n, &ds, true, 64 << 10).await.len(), 42, "40 files, . and ..");
        let mut ids = Vec::new();
        for i in 0..40 {
            let (f, _) = lookup(&mut n, &ds, &format!("f{i:02}")).await.expect("LOOKUP");
            ids.push(getattr(&mut n, &f).await.expect("GETATTR").fileid);
        }
        // A name remembered for root is not one for a caller who may not search "locked".
        let (locked, _) = lookup(&mut n, &root, "locked").await.expect("LOOKUP locked");
        lookup(&mut n, &locked, "x").await.expect("LOOKUP locked/x as root");
        let mut other = connect(port, "/v", 1000, 1000).await.expect("mount as 1000");
        assert_eq!(lookup(&mut other, &locked, "x").await.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
        ids
    });

    // Another client changes the directory; the gateway's names expire.
    std::fs::rename(c.p(0, "ds/f00"), c.p(0, "ds/g00")).expect("rename on FUSE");
    std::fs::remove_file(c.p(0, "ds/f01")).expect("unlink on FUSE");
    std::fs::write(c.p(0, "ds/f40"), b"new").expect("create on FUSE");
    std::fs::write(c.p(0, "ds/f02"), vec![9u8; 5000]).expect("rewrite on FUSE");
    std::thread::sleep(ttl);
    rt.block_on(async {
        let mut n = connect(port, "/v", 0, 0).await.expect("mount");
        let root = n.root_nfs_fh3();
        let (ds, _) = lookup(&mut n, &root, "ds").await.expect("LOOKUP ds");
        assert_eq!(lookup(&mut n, &ds, "f00").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT, "renamed away");
        let (g00, _) = lookup(&mut n, &ds, "g00").await.expect("LOOKUP g00");
        assert_eq!(getattr(&mut n, &g00).await.expect("GETATTR").fileid, ids[0], "same file, new name");
        assert_eq!(lookup(&mut n, &ds, "f01").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT, "removed");
        let (f40, _) = lookup(&mut n, &ds, "f40").await.expect("LOOKUP f40");
        assert_eq!(nfs_read_all(&mut n, &f40).await, b"new");
        let (f02, a) = lookup(&mut n, &ds, "f02").await.expect("LOOKUP f02");
        assert_eq!(a.map(|a| a.size), Some(5000), "attributes from the fresh reading");
        assert_eq!(nfs_read_all(&mut n, &f02).await, vec![9u8; 5000]);
        for (i, id) in ids.iter().enumerate().skip(3) {
            let (f, a) = lookup(&mut n, &ds, &format!("f{i:02}")).await.expect("LOOKUP");
            assert_eq!(a.map(|a| a.size), Some(100 + i as u64));
            assert_eq!(getattr(&mut n, &f).await.expect("GETATTR").fileid, *id);
        }
    });
    let log = std::fs::read_to_string(&g.log).expect("gateway log");
    let refreshes: Vec<&str> = log.lines().filter(|l| l.contains("read a directory's names again")).collect();
    assert!(
        refreshes.iter().any(|l| l.contains("entries=40")),
        "no refresh of the 40-entry directory:\n{}",
        tail(&g.log, 30)
    );
    g.stop();
}

/// Every NFSv3 procedure through an independent client, with results checked against the
/// FUSE view: stable storage (UNSTABLE + COMMIT, verifier), exclusive CREATE retried, paged
/// listings, quota in FSSTAT, stale handles after REMOVE, handles valid across a restart.
#[test]
fn every_procedure() {
    let mut c = Cluster::with_opts(
        "nfs-procs",
        Opts { volume_args: vec!["--capacity".into(), "1G".into()], ..Default::default() },
    );
    c.mount(&[]);
    let vol = c.volume.clone();
    let mut g = Gateway::nfs(&mut c, &[&format!("/v={vol},squash=none")], &[]);
    let port = g.port;
    let rt = rt();
    let (root, file_fh, verf1) = rt.block_on(async {
        let mut n = connect(port, "/v", 0, 0).await.expect("mount");
        let root = n.root_nfs_fh3();
        n.null().await.expect("NULL");
        let ra = getattr(&mut n, &root).await.expect("GETATTR root");
        assert_eq!(ra.type_, ftype3::NF3DIR);

        // FSINFO, FSSTAT (the volume's quota), PATHCONF.
        let Nfs3Result::Ok(fi) = n.fsinfo(&FSINFO3args { fsroot: root.clone() }).await.expect("rpc") else {
            panic!("FSINFO")
        };
        assert_eq!((fi.rtmax, fi.wtmax), (1 << 20, 1 << 20));
        let Nfs3Result::Ok(fs) = n.fsstat(&FSSTAT3args { fsroot: root.clone() }).await.expect("rpc") else {
            panic!("FSSTAT")
        };
        assert_eq!(fs.tbytes, 1 << 30, "FSSTAT reports the volume's quota");
        let Nfs3Result::Ok(pc) = n.pathconf(&PATHCONF3args { object: root.clone() }).await.expect("rpc") else {
            panic!("PATHCONF")
        };
        assert_eq!(pc.name_max, 255);

        // CREATE (guarded), UNSTABLE writes, COMMIT, READ.
        let (f, fa) = create(&mut n, &root, "data.bin", 0o640).await.expect("CREATE");
        assert_eq!(fa.mode, 0o640);
        assert_eq!(create(&mut n, &root, "data.bin", 0o640).await.unwrap_err(), nfsstat3::NFS3ERR_EXIST);
        let data = random_bytes(5, 2 * 1024 * 1024 + 77);
        let mut verf = None;
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            let w = write(&mut n, &f, (i << 20) as u64, chunk, stable_how::UNSTABLE).await.expect("WRITE");
            assert_eq!(w.count as usize, chunk.len());
            assert!(verf.is_none_or(|v| v == w.verf), "verifier changed between writes");
            verf = Some(w.verf);
        }
        let Nfs3Result::Ok(cm) = n.commit(&COMMIT3args { file: f.clone(), offset: 0, count: 0 }).await.expect("rpc")
        else {
            panic!("COMMIT")
        };
        assert_eq!(Some(cm.verf), verf, "COMMIT and WRITE verifiers agree");
        assert_bytes_eq(&nfs_read_all(&mut n, &f).await, &data, "READ back");
        let w = write(&mut n, &f, 10, b"sync", stable_how::FILE_SYNC).await.expect("FILE_SYNC write");
        assert_eq!(w.committed, stable_how::FILE_SYNC);

        // SETATTR: size and mode; a guard with the wrong ctime is refused.
        let s = sattr3 { size: Nfs3Option::Some(1000), mode: Nfs3Option::Some(0o600), ..Default::default() };
        let r = n
            .setattr(&SETATTR3args { object: f.clone(), new_attributes: s.clone(), guard: Nfs3Option::None })
            .await
            .expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);
        let a = getattr(&mut n, &f).await.expect("GETATTR");
        assert_eq!((a.size, a.mode), (1000, 0o600));
        let bad = Nfs3Option::Some(nfstime3 { seconds: 1, nseconds: 2 });
        let r = n.setattr(&SETATTR3args { object: f.clone(), new_attributes: s, guard: bad }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3ERR_NOT_SYNC);

        // ACCESS: root gets read/modify; a stranger with mode 0600 gets nothing.
        let Nfs3Result::Ok(ac) = n.access(&ACCESS3args { object: f.clone(), access: 0x3f }).await.expect("rpc") else {
            panic!("ACCESS")
        };
        assert_eq!(ac.access & 0x0d, 0x0d);

        // MKDIR, SYMLINK + READLINK, MKNOD (FIFO), LINK, RENAME.
        let r = n.mkdir(&MKDIR3args { where_: dirop(&root, "d"), attributes: mode_sattr(0o750) }).await.expect("rpc");
        let Nfs3Result::Ok(md) = r else { panic!("MKDIR: {:?}", code(&r)) };
        let Nfs3Option::Some(d) = md.obj else { panic!("MKDIR without handle") };
        let r = n
            .symlink(&SYMLINK3args {
                where_: dirop(&d, "ln"),
                symlink: symlinkdata3 {
                    symlink_attributes: sattr3::default(),
                    symlink_data: nfspath3::from(b"../data.bin".as_slice()),
                },
            })
            .await
            .expect("rpc");
        let Nfs3Result::Ok(sl) = r else { panic!("SYMLINK: {:?}", code(&r)) };
        let Nfs3Option::Some(lnk) = sl.obj else { panic!("SYMLINK without handle") };
        let Nfs3Result::Ok(rl) = n.readlink(&READLINK3args { symlink: lnk }).await.expect("rpc") else {
            panic!("READLINK")
        };
        assert_eq!(rl.data.as_ref(), b"../data.bin");
        let r = n
            .mknod(&MKNOD3args { where_: dirop(&d, "fifo"), what: mknoddata3::NF3FIFO(mode_sattr(0o600)) })
            .await
            .expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);
        let r = n.mknod(&MKNOD3args { where_: dirop(&d, "reg"), what: mknoddata3::default }).await;
        // A type MKNOD cannot make is refused (or the client could not even send it).
        if let Ok(r) = r {
            assert_eq!(code(&r), nfsstat3::NFS3ERR_BADTYPE);
        }
        let r = n.link(&LINK3args { file: f.clone(), link: dirop(&d, "hard") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);
        assert_eq!(getattr(&mut n, &f).await.expect("GETATTR").nlink, 2);
        let r = n.rename(&RENAME3args { from: dirop(&d, "hard"), to: dirop(&root, "hard-moved") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);

        // LOOKUP: names, "." and ".." (not above the export's root), missing names.
        let (hm, _) = lookup(&mut n, &root, "hard-moved").await.expect("LOOKUP");
        assert_eq!(getattr(&mut n, &hm).await.expect("GETATTR").fileid, fa.fileid);
        let (up, _) = lookup(&mut n, &d, "..").await.expect("LOOKUP ..");
        assert_eq!(getattr(&mut n, &up).await.expect("GETATTR").fileid, ra.fileid);
        let (up, _) = lookup(&mut n, &root, "..").await.expect("LOOKUP .. at root");
        assert_eq!(getattr(&mut n, &up).await.expect("GETATTR").fileid, ra.fileid);
        assert_eq!(lookup(&mut n, &root, "missing").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT);
        assert_eq!(lookup(&mut n, &root, &"x".repeat(256)).await.unwrap_err(), nfsstat3::NFS3ERR_NAMETOOLONG);

        // Exclusive CREATE: a retransmission (same verifier) succeeds, another verifier fails.
        let v = createverf3([1, 2, 3, 4, 5, 6, 7, 8]);
        for _ in 0..2 {
            let r = n
                .create(&CREATE3args { where_: dirop(&root, "excl"), how: createhow3::EXCLUSIVE(v) })
                .await
                .expect("rpc");
            assert_eq!(code(&r), nfsstat3::NFS3_OK, "exclusive create (retried)");
        }
        let other = createverf3([9; 8]);
        let r = n
            .create(&CREATE3args { where_: dirop(&root, "excl"), how: createhow3::EXCLUSIVE(other) })
            .await
            .expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3ERR_EXIST);

        // Paged listings with small replies, READDIR and READDIRPLUS: enough names that the
        // gateway fetches them from the server in several pages while the client reads.
        const NAMES: usize = 1300;
        let entry = |i: usize| format!("entry-{i:04}-{}", "n".repeat(i % 40));
        for i in 0..NAMES {
            create(&mut n, &d, &entry(i), 0o644).await.expect("CREATE");
        }
        let mut want: Vec<String> = (0..NAMES).map(entry).collect();
        want.extend([".", "..", "fifo", "ln"].map(String::from));
        want.sort();
        for (plus, max) in [(false, 1024), (true, 1024), (true, 65536)] {
            let mut names = list(&mut n, &d, plus, max).await;
            names.sort();
            assert_eq!(names, want, "listing (plus={plus}, replies of {max} bytes)");
        }
        // The directory changes while a client pages through it: every name there all along is
        // listed exactly once.
        let mut at = Paging::default();
        let mut names = list_pages(&mut n, &d, true, 4096, 1, &mut at).await;
        assert!(!at.eof && names.len() > 2, "{names:?}");
        for i in [1, NAMES / 2, NAMES - 1] {
            let r = n.remove(&REMOVE3args { object: dirop(&d, &entry(i)) }).await.expect("rpc");
            assert_eq!(code(&r), nfsstat3::NFS3_OK);
        }
        for new in ["entry-0000-new", "zzz-new"] {
            create(&mut n, &d, new, 0o644).await.expect("CREATE");
        }
        names.extend(list_pages(&mut n, &d, true, 4096, usize::MAX, &mut at).await);
        assert!(at.eof);
        for w in &want {
            let seen = names.iter().filter(|x| *x == w).count();
            let removed = [1, NAMES / 2, NAMES - 1].iter().any(|i| entry(*i) == *w);
            assert!(seen == 1 || (removed && seen == 0), "{w} listed {seen} times");
        }
        for i in [1, NAMES / 2, NAMES - 1] {
            create(&mut n, &d, &entry(i), 0o644).await.expect("CREATE");
        }
        for new in ["entry-0000-new", "zzz-new"] {
            let r = n.remove(&REMOVE3args { object: dirop(&d, new) }).await.expect("rpc");
            assert_eq!(code(&r), nfsstat3::NFS3_OK);
        }

        // REMOVE, RMDIR (not empty, then empty); the removed file's handle is stale.
        let (victim, _) = create(&mut n, &root, "victim", 0o644).await.expect("CREATE");
        write(&mut n, &victim, 0, b"bye", stable_how::UNSTABLE).await.expect("WRITE");
        let r = n.remove(&REMOVE3args { object: dirop(&root, "victim") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);
        assert_eq!(getattr(&mut n, &victim).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
        let r = n.rmdir(&RMDIR3args { object: dirop(&root, "d") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3ERR_NOTEMPTY);
        n.mkdir(&MKDIR3args { where_: dirop(&root, "empty"), attributes: sattr3::default() }).await.expect("rpc");
        let r = n.rmdir(&RMDIR3args { object: dirop(&root, "empty") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);

        // A handle that was never issued is refused.
        let mut forged = f.data.to_vec();
        forged[12] ^= 1;
        assert_eq!(getattr(&mut n, &fh(&forged)).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
        assert_eq!(getattr(&mut n, &fh(b"short")).await.unwrap_err(), nfsstat3::NFS3ERR_BADHANDLE);
        (root, f, verf.expect("writes"))
    });

    // The FUSE view agrees.
    let on_fuse = read_all(&c.p(0, "data.bin"));
    assert_eq!(on_fuse.len(), 1000);
    assert_eq!(&on_fuse[10..14], b"sync");
    let md = std::fs::symlink_metadata(c.p(0, "d/fifo")).expect("fifo on FUSE");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()));
    assert_eq!(std::fs::read_link(c.p(0, "d/ln")).expect("link on FUSE"), Path::new("../data.bin"));

    // After a restart: the same handles work, and the write verifier changed.
    g.restart(&mut c);
    rt.block_on(async {
        let mut n = connect(port, "/v", 0, 0).await.expect("mount after restart");
        assert_eq!(n.root_nfs_fh3(), root, "root handle stable across restarts");
        let a = getattr(&mut n, &file_fh).await.expect("old handle after restart");
        assert_eq!(a.size, 1000);
        let w = write(&mut n, &file_fh, 0, b"again", stable_how::UNSTABLE).await.expect("WRITE after restart");
        assert_ne!(w.verf, verf1, "write verifier changes at restart");
        let Nfs3Result::Ok(_) =
            n.commit(&COMMIT3args { file: file_fh.clone(), offset: 0, count: 0 }).await.expect("rpc")
        else {
            panic!("COMMIT")
        };
    });
    g.stop();
    assert_eq!(&read_all(&c.p(0, "data.bin"))[..5], b"again");
}

async fn mkdir(c: &mut Conn, dir: &nfs_fh3, n: &str) -> nfs_fh3 {
    let r = c.mkdir(&MKDIR3args { where_: dirop(dir, n), attributes: mode_sattr(0o755) }).await.expect("rpc");
    let Nfs3Result::Ok(md) = r else { panic!("MKDIR {n}: {:?}", code(&r)) };
    let Nfs3Option::Some(d) = md.obj else { panic!("MKDIR without handle") };
    d
}

/// Every procedure on a directory or file that was deleted (through the gateway, or by another
/// client a moment ago, while the gateway's caches still hold it) answers NFS3ERR_STALE, as
/// RFC 1813 and nfs-ganesha do: Linux clients redo a path lookup on ESTALE, not on ENOENT.
#[test]
fn deleted_directories_and_files_are_stale() {
    let mut c = Cluster::new("nfs-stale");
    c.mount(&[]);
    let vol = c.volume.clone();
    // The default attribute lifetime: the gateway's caches still know what was deleted.
    let mut g = Gateway::nfs(&mut c, &[&format!("/v={vol},squash=none")], &[]);
    let port = g.port;
    let fuse = |p: &str| c.p(0, p);
    rt().block_on(async {
        let mut n = connect(port, "/v", 0, 0).await.expect("mount");
        let root = n.root_nfs_fh3();
        let stale = nfsstat3::NFS3ERR_STALE;

        // Deleted through the gateway itself.
        let d = mkdir(&mut n, &root, "mine").await;
        create(&mut n, &d, "f", 0o644).await.expect("CREATE");
        assert_eq!(lookup(&mut n, &d, "f").await.map(|_| ()), Ok(()));
        let r = n.remove(&REMOVE3args { object: dirop(&d, "f") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);
        assert_eq!(lookup(&mut n, &d, "f").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT, "a missing name");
        let r = n.rmdir(&RMDIR3args { object: dirop(&root, "mine") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK);
        assert_eq!(lookup(&mut n, &d, "f").await.unwrap_err(), stale, "LOOKUP in a removed directory");

        // Deleted by another client (the FUSE mount) just now.
        let d = mkdir(&mut n, &root, "theirs").await;
        let (kept, _) = create(&mut n, &root, "kept", 0o644).await.expect("CREATE");
        create(&mut n, &d, "x", 0o644).await.expect("CREATE");
        getattr(&mut n, &d).await.expect("GETATTR");
        std::fs::remove_file(fuse("theirs/x")).expect("rm on FUSE");
        std::fs::remove_dir(fuse("theirs")).expect("rmdir on FUSE");
        // (A name the gateway looked up itself may still be answered from its cache, for at
        // most --attr-ttl, like any attribute.)
        assert_eq!(lookup(&mut n, &d, "other").await.unwrap_err(), stale, "LOOKUP");
        let r = n
            .setattr(&SETATTR3args { object: d.clone(), new_attributes: mode_sattr(0o700), guard: Nfs3Option::None })
            .await
            .expect("rpc");
        assert_eq!(code(&r), stale, "SETATTR");
        assert_eq!(create(&mut n, &d, "new", 0o644).await.unwrap_err(), stale, "CREATE");
        let r = n.mkdir(&MKDIR3args { where_: dirop(&d, "sub"), attributes: sattr3::default() }).await.expect("rpc");
        assert_eq!(code(&r), stale, "MKDIR");
        let r = n
            .symlink(&SYMLINK3args {
                where_: dirop(&d, "ln"),
                symlink: symlinkdata3 {
                    symlink_attributes: sattr3::default(),
                    symlink_data: nfspath3::from(b"target".as_slice()),
                },
            })
            .await
            .expect("rpc");
        assert_eq!(code(&r), stale, "SYMLINK");
        let r = n
            .mknod(&MKNOD3args { where_: dirop(&d, "fifo"), what: mknoddata3::NF3FIFO(mode_sattr(0o600)) })
            .await
            .expect("rpc");
        assert_eq!(code(&r), stale, "MKNOD");
        let r = n.remove(&REMOVE3args { object: dirop(&d, "x") }).await.expect("rpc");
        assert_eq!(code(&r), stale, "REMOVE");
        let r = n.rmdir(&RMDIR3args { object: dirop(&d, "sub") }).await.expect("rpc");
        assert_eq!(code(&r), stale, "RMDIR");
        let r = n.rename(&RENAME3args { from: dirop(&root, "kept"), to: dirop(&d, "moved") }).await.expect("rpc");
        assert_eq!(code(&r), stale, "RENAME into it");
        let r = n.link(&LINK3args { file: kept.clone(), link: dirop(&d, "hard") }).await.expect("rpc");
        assert_eq!(code(&r), stale, "LINK into it");
        assert_eq!(getattr(&mut n, &d).await.unwrap_err(), stale, "GETATTR");
        // A missing name in a directory that exists is still NOENT.
        assert_eq!(lookup(&mut n, &root, "theirs").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT);

        // COMMIT of unstable writes to a file another client deleted: STALE at once and later
        // alike (the gateway closes its handle after a while; the answer does not change).
        let (f, _) = create(&mut n, &root, "doomed", 0o644).await.expect("CREATE");
        write(&mut n, &f, 0, b"unstable", stable_how::UNSTABLE).await.expect("WRITE");
        std::fs::remove_file(fuse("doomed")).expect("rm on FUSE");
        for wait in [0, 3] {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            let r = n.commit(&COMMIT3args { file: f.clone(), offset: 0, count: 0 }).await.expect("rpc");
            assert_eq!(code(&r), stale, "COMMIT {wait} s after the delete");
        }
    });
    g.stop();
}

/// Export rules: allow-lists refuse at MOUNT, read-only exports refuse changes with
/// NFS3ERR_ROFS, root and all squash map ids, subdirectory exports stay inside, an export with
/// a viewer token has exactly that token's rights, and Unix permissions hold for other users.
#[test]
fn export_rules() {
    let mut c = Cluster::with_mounts("nfs-rules", 1);
    let vol = c.volume.clone();
    std::fs::create_dir(c.p(0, "sub")).expect("mkdir");
    std::fs::write(c.p(0, "sub/inside.txt"), b"inside").expect("write");
    std::fs::write(c.p(0, "secret.txt"), b"root only").expect("write");
    std::fs::set_permissions(c.p(0, "secret.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let viewer = c.issue_token("viewer-t", "viewer");
    let mut g = Gateway::nfs(
        &mut c,
        &[
            &format!("/rw={vol}"),
            &format!("/ro={vol},ro,squash=none"),
            &format!("/far={vol},allow=10.99.0.0/16"),
            &format!("/all={vol},squash=all,anonuid=4242,anongid=4243"),
            &format!("/sub={vol}:/sub,squash=none"),
            &format!("/view={vol},squash=none,token-file={}", viewer.display()),
        ],
        &[],
    );
    let port = g.port;
    let rt = rt();
    rt.block_on(async {
        // Outside the allow-list: refused at MOUNT.
        match connect(port, "/far", 0, 0).await {
            Err(ConnectError::Mount(MountError::Denied(st))) => {
                assert_eq!(st as u32, nfs3_client::nfs3_types::mount::mountstat3::MNT3ERR_ACCES as u32)
            }
            Err(e) => panic!("unexpected error mounting /far: {e:?}"),
            Ok(_) => panic!("/far mounted from an address outside its allow-list"),
        }
        match connect(port, "/nowhere", 0, 0).await {
            Err(ConnectError::Mount(MountError::Denied(_))) => {}
            other => panic!("unknown export: {:?}", other.err()),
        }

        // Read-only: reads work, every change is NFS3ERR_ROFS.
        let mut n = connect(port, "/ro", 0, 0).await.expect("mount /ro");
        let root = n.root_nfs_fh3();
        let (inside, _) = lookup(&mut n, &root, "secret.txt").await.expect("LOOKUP");
        assert_eq!(nfs_read_all(&mut n, &inside).await, b"root only");
        assert_eq!(create(&mut n, &root, "new", 0o644).await.unwrap_err(), nfsstat3::NFS3ERR_ROFS);
        assert_eq!(write(&mut n, &inside, 0, b"x", stable_how::FILE_SYNC).await.unwrap_err(), nfsstat3::NFS3ERR_ROFS);
        let r = n.remove(&REMOVE3args { object: dirop(&root, "secret.txt") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3ERR_ROFS);
        let r = n
            .setattr(&SETATTR3args {
                object: inside.clone(),
                new_attributes: mode_sattr(0o777),
                guard: Nfs3Option::None,
            })
            .await
            .expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3ERR_ROFS);
        let r = n.mkdir(&MKDIR3args { where_: dirop(&root, "d"), attributes: sattr3::default() }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3ERR_ROFS);
        let Nfs3Result::Ok(ac) = n.access(&ACCESS3args { object: root.clone(), access: 0x3f }).await.expect("rpc")
        else {
            panic!("ACCESS")
        };
        assert_eq!(ac.access & 0x1c, 0, "ACCESS offers no change on a read-only export");

        // Root squash (the default): uid 0 acts as 65534; cannot read a root-only file.
        let mut n = connect(port, "/rw", 0, 0).await.expect("mount /rw");
        let root = n.root_nfs_fh3();
        let (_, a) = create(&mut n, &root, "by-root", 0o644).await.expect("CREATE as squashed root");
        assert_eq!((a.uid, a.gid), (65534, 65534));
        let (secret, _) = lookup(&mut n, &root, "secret.txt").await.expect("LOOKUP");
        let r = n.read(&READ3args { file: secret.clone(), offset: 0, count: 100 }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3ERR_ACCES, "squashed root reads a 0600 root file");
        // A plain user: own files yes, others' 0600 files no.
        let mut u = connect(port, "/rw", 1000, 1000).await.expect("mount as uid 1000");
        let (mine, a) = create(&mut u, &root, "by-1000", 0o600).await.expect("CREATE as 1000");
        assert_eq!((a.uid, a.gid), (1000, 1000));
        write(&mut u, &mine, 0, b"mine", stable_how::FILE_SYNC).await.expect("owner writes");
        assert_eq!(write(&mut u, &secret, 0, b"x", stable_how::FILE_SYNC).await.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
        let r = u.remove(&REMOVE3args { object: dirop(&root, "by-root") }).await.expect("rpc");
        assert_eq!(code(&r), nfsstat3::NFS3_OK, "the volume root is world-writable");

        // All squash: everyone is the anonymous ids.
        let mut n = connect(port, "/all", 1000, 1000).await.expect("mount /all");
        let root = n.root_nfs_fh3();
        let (_, a) = create(&mut n, &root, "by-all", 0o644).await.expect("CREATE squashed");
        assert_eq!((a.uid, a.gid), (4242, 4243));

        // Subdirectory export: its root is the directory, ".." stays there.
        let mut n = connect(port, "/sub", 0, 0).await.expect("mount /sub");
        let root = n.root_nfs_fh3();
        let (f, _) = lookup(&mut n, &root, "inside.txt").await.expect("LOOKUP inside");
        assert_eq!(nfs_read_all(&mut n, &f).await, b"inside");
        let (up, _) = lookup(&mut n, &root, "..").await.expect("LOOKUP ..");
        assert_eq!(up, root, "'..' of a subdirectory export is its root");
        assert_eq!(lookup(&mut n, &root, "secret.txt").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT);
        // A handle of another export does not work here... but it is just another export's
        // handle, answered by that export's rules (same gateway).

        // A viewer token: reads work, writes are refused by the server.
        let mut n = connect(port, "/view", 0, 0).await.expect("mount /view");
        let root = n.root_nfs_fh3();
        let (f, _) = lookup(&mut n, &root, "secret.txt").await.expect("LOOKUP");
        assert_eq!(nfs_read_all(&mut n, &f).await, b"root only");
        assert_eq!(create(&mut n, &root, "viewer-new", 0o644).await.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
        assert_eq!(write(&mut n, &f, 0, b"x", stable_how::FILE_SYNC).await.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
    });
    // libnfs agrees about the allow-list.
    let out = libnfs("nfs-ls", &[&g.nfs_url("/far")]);
    assert!(!out.status.success(), "nfs-ls of a refused export succeeded");
    // Owners as FUSE sees them.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(c.p(0, "by-all")).expect("stat").uid(), 4242);
    assert_eq!(std::fs::metadata(c.p(0, "by-1000")).expect("stat").uid(), 1000);
    assert!(g.alive());
    g.stop();
}

fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [xid, 0, 2, prog, vers, proc_, 0, 0, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(args);
    m
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut r = (body.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
    r.extend_from_slice(body);
    r
}

/// Sends one record and reads one reply record (words of it).
fn exchange(port: u16, body: &[u8]) -> Option<Vec<u32>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(&record(body)).expect("send");
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).ok()?;
    let len = (u32::from_be_bytes(hdr) & 0x7fff_ffff) as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).ok()?;
    Some(buf.chunks(4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], *w.get(3).unwrap_or(&0)])).collect())
}

/// The connection is closed by the gateway (EOF or reset) within a few seconds.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Malformed records get an error reply or a closed connection, never a crash or a hang, and
/// the gateway serves well-formed clients afterwards.
#[test]
fn malformed_rpc() {
    let mut c = Cluster::new("nfs-bad");
    let vol = c.volume.clone();
    let mut g = Gateway::nfs(&mut c, &[&format!("/v={vol}")], &[]);
    let port = g.port;
    const NFS: u32 = 100_003;
    // GETATTR with a handle longer than NFS3_FHSIZE: GARBAGE_ARGS (accept_stat 4).
    let mut args = 1000u32.to_be_bytes().to_vec();
    args.extend_from_slice(&[0u8; 1000]);
    let r = exchange(port, &call(1, NFS, 3, 1, &args)).expect("reply");
    assert_eq!((r[0], r[1], r[2], r[5]), (1, 1, 0, 4), "garbage args: {r:?}");
    // Truncated arguments.
    let r = exchange(port, &call(2, NFS, 3, 6, &[0, 0, 0, 8, 1, 2])).expect("reply");
    assert_eq!(r[5], 4, "truncated args: {r:?}");
    // RPC version 3: MSG_DENIED / RPC_MISMATCH (2..2).
    let mut m = call(3, NFS, 3, 0, &[]);
    m[8..12].copy_from_slice(&3u32.to_be_bytes());
    let r = exchange(port, &m).expect("reply");
    assert_eq!(&r[..6], &[3, 1, 1, 0, 2, 2], "rpc mismatch: {r:?}");
    // Unknown program, unsupported version, unknown procedure.
    let r = exchange(port, &call(4, 200_000, 1, 0, &[])).expect("reply");
    assert_eq!(r[5], 1, "PROG_UNAVAIL: {r:?}");
    let r = exchange(port, &call(5, NFS, 4, 0, &[])).expect("reply");
    assert_eq!(&r[5..8], &[2, 3, 3], "PROG_MISMATCH: {r:?}");
    let r = exchange(port, &call(6, NFS, 3, 99, &[])).expect("reply");
    assert_eq!(r[5], 3, "PROC_UNAVAIL: {r:?}");
    // AUTH_UNIX with 17 groups: AUTH_ERROR / AUTH_BADCRED.
    let mut cred = Vec::new();
    for v in [0u32, 0, 0, 0, 17] {
        cred.extend_from_slice(&v.to_be_bytes());
    }
    cred.extend_from_slice(&[0u8; 68]);
    let mut m = Vec::new();
    for v in [7u32, 0, 2, NFS, 3, 0, 1, cred.len() as u32] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(&cred);
    m.extend_from_slice(&[0u8; 8]);
    let r = exchange(port, &m).expect("reply");
    assert_eq!(&r[..5], &[7, 1, 1, 1, 1], "bad credential: {r:?}");

    // A record claiming 2 GiB: the connection is closed, nothing is allocated for it.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(&0xffff_ffffu32.to_be_bytes()).expect("send");
    assert!(closed(&mut s), "oversized record: connection left open");
    // A record too short for a call header: closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(&record(&[1, 2, 3])).expect("send");
    assert!(closed(&mut s), "short record: connection left open");
    // A truncated record, then the client goes away.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(&100u32.to_be_bytes()).expect("send");
    s.write_all(&[0u8; 10]).expect("send");
    drop(s);
    // Random garbage records of many sizes (deterministic).
    for i in 0..60u64 {
        let junk = random_bytes(1000 + i, (i as usize * 37) % 700 + 8);
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = s.write_all(&record(&junk));
        s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let mut b = [0u8; 256];
        let _ = s.read(&mut b);
    }
    // The portmapper answer: NFS and MOUNT v3 over TCP are on this port, anything else nowhere.
    let getport = |prog: u32, vers: u32| {
        let mut args = Vec::new();
        for v in [prog, vers, 6, 0] {
            args.extend_from_slice(&v.to_be_bytes());
        }
        exchange(port, &call(11, 100_000, 2, 3, &args)).expect("GETPORT reply")
    };
    assert_eq!(getport(NFS, 3)[6], u32::from(port), "GETPORT of NFS v3");
    assert_eq!(getport(100_005, 3)[6], u32::from(port), "GETPORT of MOUNT v3");
    assert_eq!(getport(100_021, 4)[6], 0, "GETPORT of NLM");
    // 200 calls sent at once on one connection (as a kernel client pipelines them): every one
    // is answered, though their arrival woke only one of the connection's workers.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let burst: Vec<u8> = (1000..1200u32).flat_map(|xid| record(&call(xid, NFS, 3, 0, &[]))).collect();
    s.write_all(&burst).expect("send the burst");
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let mut hdr = [0u8; 4];
        s.read_exact(&mut hdr).expect("a reply to every pipelined call");
        let mut body = vec![0u8; (u32::from_be_bytes(hdr) & 0x7fff_ffff) as usize];
        s.read_exact(&mut body).expect("reply body");
        answered.insert(u32::from_be_bytes([body[0], body[1], body[2], body[3]]));
    }
    assert_eq!(answered, (1000..1200u32).collect(), "each pipelined call answered once");
    // Still serving: NULL answers and a client works.
    let r = exchange(port, &call(9, NFS, 3, 0, &[])).expect("NULL reply");
    assert_eq!(&r[..6], &[9, 1, 0, 0, 0, 0], "NULL: {r:?}");
    let rt = rt();
    rt.block_on(async {
        let mut n = connect(port, "/v", 0, 0).await.expect("mount after garbage");
        let root = n.root_nfs_fh3();
        getattr(&mut n, &root).await.expect("GETATTR after garbage");
    });
    assert!(g.alive(), "gateway died:\n{}", tail(&g.log, 30));
    c.allow_log("closing the connection");
    g.stop();
}

/// Past `--max-connections`, a new connection is closed at once and served ones go on; a
/// closed connection frees its place.
#[test]
fn connections_beyond_the_limit_are_closed() {
    let mut c = Cluster::new("nfs-limit");
    c.allow_log("refused a connection: too many connections");
    let vol = c.volume.clone();
    let mut g = Gateway::nfs(&mut c, &[&format!("/v={vol},squash=none")], &["--max-connections", "1"]);
    // The launcher's readiness probe took the place for a moment: wait until it is free.
    let url = g.nfs_url("/v/");
    assert!(wait_until(Duration::from_secs(10), || libnfs("nfs-ls", &[&url]).status.success()), "nfs-ls");
    // The held connection is served: a NULL call is answered. nfs-ls has exited, but the
    // gateway frees its place only once it has seen that connection close, so the first try
    // may still be refused.
    let mut held = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", g.port)) else { return false };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut hdr = [0u8; 4];
            let served = s.write_all(&record(&call(7, 100_003, 3, 0, &[]))).is_ok() && s.read_exact(&mut hdr).is_ok();
            if served {
                held = Some(s);
            }
            served
        }),
        "NULL reply on the held connection"
    );
    let s = held.expect("held connection");
    // One more is closed by the gateway without an answer.
    let mut extra = TcpStream::connect(("127.0.0.1", g.port)).expect("connect");
    extra.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = extra.write_all(&record(&call(8, 100_003, 3, 0, &[])));
    let mut b = [0u8; 4];
    let got = extra.read(&mut b);
    assert!(
        matches!(got, Ok(0))
            || got
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut),
        "a connection past the limit was answered: {got:?}"
    );
    assert!(!libnfs("nfs-ls", &[&url]).status.success(), "nfs-ls past the limit succeeded");
    let log = std::fs::read_to_string(&g.log).expect("gateway log");
    assert!(log.contains("too many connections"), "no log line for the refused connection:\n{log}");
    // Closing the held one frees its place.
    drop(s);
    assert!(
        wait_until(Duration::from_secs(10), || libnfs("nfs-ls", &[&url]).status.success()),
        "nfs-ls after the held connection closed"
    );
    assert!(g.alive());
    g.stop();
}
