//! The gateway's state: exports attached to volumes, the write verifier, and directory
//! listings in use (the dispatch of calls is in `dispatch.rs`, the NFS procedures in `nfs.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use nfs3_types::nfs3::nfsstat3;
use strata_types::{Attr, Ctx};
use strata_vfs::{DirEntry, Vfs};

use crate::export::ExportSpec;
use crate::files::OpenFiles;
use crate::handle::{HandleError, HandleKey, export_of};

/// One export, attached to its volume.
pub struct Export {
    /// Its rules.
    pub spec: ExportSpec,
    /// The volume's client file system.
    pub vfs: Arc<Vfs>,
    /// The exported directory's inode.
    pub root: u64,
    /// Issues and checks this export's handles.
    pub key: HandleKey,
    /// Files open for NFS clients.
    pub files: Arc<OpenFiles>,
    /// `fsid` in attributes: the volume's id.
    pub fsid: u64,
}

/// A directory listing as it arrives: pages in name order, "." and ".." first, appended by a
/// fetch that runs ahead of the client paging through them.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    pages: Vec<Arc<Vec<DirEntry>>>,
    /// How the fetch ended; `None` while pages are still coming.
    end: Option<Result<(), nfsstat3>>,
}

impl Progress {
    fn push(&mut self, page: Vec<DirEntry>) {
        self.pages.push(Arc::new(page));
    }

    /// The entries from position `start` on that have arrived, with their positions.
    pub(crate) fn from(&self, start: usize) -> impl Iterator<Item = (usize, &DirEntry)> {
        let (mut first, mut base) = (0, 0);
        while first < self.pages.len() && base + self.pages[first].len() <= start {
            base += self.pages[first].len();
            first += 1;
        }
        self.pages[first..]
            .iter()
            .flat_map(|p| p.iter())
            .enumerate()
            .skip(start.saturating_sub(base))
            .map(move |(i, e)| (base + i, e))
    }

    /// The listed directory's own attributes (those of its "." entry).
    pub(crate) fn dir_attr(&self) -> Option<Attr> {
        self.pages.first().and_then(|p| p.first()).and_then(|e| e.attr)
    }

    /// How the fetch ended, once it has.
    pub(crate) fn end(&self) -> Option<Result<(), nfsstat3>> {
        self.end
    }
}

struct Listing {
    verf: u64,
    progress: watch::Receiver<Progress>,
    at: Instant,
}

/// Listings kept for clients paging through a directory.
const LISTINGS: usize = 1024;
/// How long a listing is paged from before it is read again.
const LISTING_TTL: Duration = Duration::from_secs(30);
/// Entries fetched before the first reply: a few replies' worth, so that the client's first
/// calls are answered while the rest of a large directory is still being read.
const FIRST_PAGE: u32 = 128;
/// Entries per later fetch: small enough that the fetches keep ahead of a client reading
/// 50 entries per call, large enough that few calls go to the server.
const NEXT_PAGE: u32 = 512;

/// The gateway: exports and protocol state shared by all connections.
pub struct Gateway {
    pub(crate) exports: Vec<Arc<Export>>,
    /// WRITE/COMMIT verifier: new at every start, so clients resend unstable writes a restart
    /// may have lost.
    pub(crate) verf: [u8; 8],
    pub(crate) port: u16,
    listings: Mutex<HashMap<(u32, u64), Listing>>,
    next_listing: std::sync::atomic::AtomicU64,
    /// How long attributes and name lookups are reused (0: always asked).
    pub(crate) attr_ttl: Duration,
}

impl Gateway {
    /// A gateway over attached exports, answering the portmapper with `port`; attributes and
    /// lookups are reused for `attr_ttl` (as a FUSE mount's kernel does), so another client's
    /// change shows after at most that long, while this gateway's own changes show at once.
    pub fn new(exports: Vec<Arc<Export>>, port: u16, attr_ttl: Duration) -> Arc<Self> {
        let mut verf = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut verf);
        Arc::new(Gateway {
            exports,
            verf,
            port,
            listings: Mutex::new(HashMap::new()),
            next_listing: std::sync::atomic::AtomicU64::new(1),
            attr_ttl,
        })
    }

    /// The exports.
    pub fn exports(&self) -> &[Arc<Export>] {
        &self.exports
    }

    /// The export and inode a handle names, for a client at `peer`.
    pub(crate) fn resolve(&self, fh: &[u8], peer: IpAddr) -> Result<(Arc<Export>, u64), nfsstat3> {
        let id = export_of(fh).map_err(|_| nfsstat3::NFS3ERR_BADHANDLE)?;
        let ex = self.exports.iter().find(|e| e.key.export_id() == id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        if !ex.spec.allows(peer) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let ino = ex.key.decode(fh).map_err(|e| match e {
            HandleError::Malformed => nfsstat3::NFS3ERR_BADHANDLE,
            HandleError::Stale => nfsstat3::NFS3ERR_STALE,
        })?;
        Ok((ex.clone(), ino))
    }

    /// A directory's entries: the listing a client is paging through (same verifier), or a
    /// fresh one. A client continuing with a verifier the gateway no longer has gets a fresh
    /// listing from the same position rather than an error, as most servers do.
    ///
    /// A fresh listing holds the directory's first page at once; the rest is fetched in the
    /// background, page by page, while the client reads the first.
    pub(crate) async fn listing(
        &self,
        ex: &Export,
        ctx: &Ctx,
        dir: u64,
        cookie: u64,
        verf: u64,
        plus: bool,
    ) -> Result<(u64, watch::Receiver<Progress>), nfsstat3> {
        let key = (ex.key.export_id(), dir);
        if cookie != 0 {
            let m = self.listings.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = m.get(&key).filter(|l| l.verf == verf && l.at.elapsed() < LISTING_TTL) {
                return Ok((l.verf, l.progress.clone()));
            }
        }
        let page =
            ex.vfs.list_dir(ctx, dir, plus, &[], FIRST_PAGE).await.map_err(|e| crate::attr::handle_status(&e))?;
        ex.vfs.listing_started(dir);
        let after = page.next_after();
        let mut first = Vec::with_capacity(page.entries.len() + 2);
        first.extend(ex.vfs.dots(dir, page.dir));
        first.extend(page.entries);
        let mut progress = Progress::default();
        progress.push(first);
        if after.is_none() {
            progress.end = Some(Ok(()));
        }
        let (tx, rx) = watch::channel(progress);
        if let Some(after) = after {
            tokio::spawn(fetch_rest(ex.vfs.clone(), ctx.clone(), dir, plus, after, tx));
        }
        let verf = self.next_listing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut m = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= LISTINGS {
            m.retain(|_, l| l.at.elapsed() < LISTING_TTL);
            if m.len() >= LISTINGS
                && let Some(oldest) = m.iter().min_by_key(|(_, l)| l.at).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        m.insert(key, Listing { verf, progress: rx.clone(), at: Instant::now() });
        Ok((verf, rx))
    }

    /// Closes files idle for `idle`, committing what was written to them.
    pub async fn close_idle(&self, idle: Duration) -> usize {
        let mut n = 0;
        for e in &self.exports {
            n += e.files.close_idle(idle).await;
        }
        n
    }
}

/// Fetches a directory's pages after the name `after` into `tx` until the last, or until
/// nobody reads the listing any more.
async fn fetch_rest(vfs: Arc<Vfs>, ctx: Ctx, dir: u64, plus: bool, mut after: Vec<u8>, tx: watch::Sender<Progress>) {
    loop {
        if tx.is_closed() {
            return;
        }
        match vfs.list_dir(&ctx, dir, plus, &after, NEXT_PAGE).await {
            Ok(page) => {
                let next = page.next_after();
                let done = next.is_none();
                tx.send_modify(|p| {
                    p.push(page.entries);
                    if done {
                        p.end = Some(Ok(()));
                    }
                });
                match next {
                    Some(n) => after = n,
                    None => return,
                }
            }
            Err(e) => {
                tx.send_modify(|p| p.end = Some(Err(crate::attr::handle_status(&e))));
                return;
            }
        }
    }
}
