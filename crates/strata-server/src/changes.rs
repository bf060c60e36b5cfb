//! Which inodes changed, for clients that cache directories and attributes under leases
//! (the `Watch` call; the client side is `strata-vfs/src/dircache.rs`).
//!
//! Every namespace or attribute change made through this server is noted here: the inode whose
//! entries or attributes changed, its volume and the session that made it (so that a client
//! skips its own changes, which it applied to its caches itself). With several servers on one
//! PostgreSQL database, each note also goes to every other server through `LISTEN`/`NOTIFY`
//! (`relay_through_postgres`), so a client learns of changes made through any of them. A
//! `Watch` call waits until changes after the client's position are there, or up to the time it
//! asks for, so a client hears of a change within milliseconds; each answer renews its leases.
//!
//! The log holds the last [`KEEP`] changes. A client whose position fell out of it, or that
//! watched another process (a restart, a failover) or across a break of the relay (the epoch
//! changed), is told it lost track and drops its caches. A relay that has not heard its own
//! heartbeat for [`RELAY_SILENT`] answers every watch with "lost": leases are renewed only while
//! changes through other servers are known to arrive.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strata_proto::pb;

/// Changes kept for clients that are behind.
const KEEP: usize = 65_536;

/// Longest wait of one watch call.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL channel of change notes (and of the metadata's doom notes).
const CHANNEL: &str = strata_meta::NOTE_CHANNEL;

/// What the relay tells the keeper of this server's unrecorded opens (`strata_meta::Meta::
/// record_opens`).
#[derive(Debug)]
pub enum OpenNote {
    /// A transaction doomed data of these inodes.
    Doomed(Vec<u64>),
    /// Notes may have gone unheard.
    Lost,
    /// A session registered with a server (named).
    Moved(u64, String),
}

/// How often the relay proves itself alive with a note of its own.
const RELAY_BEAT: Duration = Duration::from_millis(500);

/// A relay silent this long is taken as broken.
const RELAY_SILENT: Duration = Duration::from_secs(2);

/// A listening connection silent this long is given up and made again.
const RELAY_RECONNECT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct Change {
    seq: u64,
    volume: u32,
    ino: u64,
    origin: u64,
}

struct Log {
    changes: VecDeque<Change>,
    /// Position of the last change noted.
    last: u64,
}

/// The change log of this server (see the module's documentation).
pub struct Changes {
    /// Changes with the epoch when the log started or lost track (random).
    epoch: AtomicU64,
    log: Mutex<Log>,
    /// The last position, for waiting watchers.
    last: tokio::sync::watch::Sender<u64>,
    /// Woken with every change, for watchers waiting on their own thread.
    noted: std::sync::Condvar,
    /// Notes to send to the other servers, when there are any.
    relay: Mutex<Option<std::sync::mpsc::Sender<String>>>,
    /// When the relay last heard a note (its own heartbeat included); `None` without a relay.
    heard: Mutex<Option<Instant>>,
    /// This server, as its notes name it.
    server: String,
    /// Where doom notes and losses of track go, when anybody takes them.
    opens: Mutex<Option<std::sync::mpsc::Sender<OpenNote>>>,
    /// Whether the relay's listening connection is up.
    listening: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn new_epoch() -> u64 {
    rand::random::<u64>() | 1
}

impl Changes {
    /// An empty log of server `server`.
    pub fn new(server: &str) -> Self {
        Changes {
            epoch: AtomicU64::new(new_epoch()),
            log: Mutex::new(Log { changes: VecDeque::new(), last: 0 }),
            last: tokio::sync::watch::channel(0).0,
            noted: std::sync::Condvar::new(),
            relay: Mutex::new(None),
            heard: Mutex::new(None),
            server: server.to_string(),
            opens: Mutex::new(None),
            listening: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sends every doom note heard, and every loss of track, to `tx`.
    pub fn send_open_notes(&self, tx: std::sync::mpsc::Sender<OpenNote>) {
        *lock(&self.opens) = Some(tx);
    }

    fn tell_opens(&self, n: OpenNote) {
        if let Some(tx) = lock(&self.opens).as_ref() {
            let _ = tx.send(n);
        }
    }

    /// Whether this server hears every server's notes now: its relay listens and heard from
    /// the database within [`RELAY_SILENT`]. Always `false` without a relay.
    pub fn relay_heard(&self) -> bool {
        self.listening.load(Ordering::Relaxed) && lock(&self.heard).is_some_and(|t| t.elapsed() <= RELAY_SILENT)
    }

    /// Notes that `inos` of `volume` changed by a call of session `origin` (0: unknown).
    pub fn note(&self, volume: u32, origin: u64, inos: &[u64]) {
        if inos.is_empty() {
            return;
        }
        self.append(volume, origin, inos);
        if let Some(tx) = lock(&self.relay).as_ref() {
            let list: Vec<String> = inos.iter().map(u64::to_string).collect();
            let _ = tx.send(format!("{}|{volume}|{origin}|{}", self.server, list.join(",")));
        }
    }

    fn append(&self, volume: u32, origin: u64, inos: &[u64]) {
        let mut log = lock(&self.log);
        for &ino in inos {
            log.last += 1;
            let seq = log.last;
            log.changes.push_back(Change { seq, volume, ino, origin });
        }
        while log.changes.len() > KEEP {
            log.changes.pop_front();
        }
        let last = log.last;
        drop(log);
        self.noted.notify_all();
        self.last.send_replace(last);
    }

    /// Every client loses track: what changed meanwhile is not known (a relay break).
    fn lose_track(&self) {
        self.tell_opens(OpenNote::Lost);
        self.epoch.store(new_epoch(), Ordering::Relaxed);
        let last = lock(&self.log).last;
        self.last.send_replace(last);
    }

    /// Changes of the watch's volume after `after`, but the watcher's own: the position
    /// scanned to and (inode, origin) pairs; `None` when changes after `after` are no longer
    /// in the log. (Waking a watcher for its own changes would cost a round trip per change:
    /// a create loop would pay one per file.)
    fn since(&self, r: &pb::WatchReq, after: u64) -> Option<(u64, Vec<(u64, u64)>)> {
        let log = lock(&self.log);
        if after > log.last {
            return None;
        }
        let first = log.changes.front().map_or(log.last + 1, |c| c.seq);
        if after + 1 < first {
            return None;
        }
        let skip = (after + 1 - first) as usize;
        let found = log
            .changes
            .iter()
            .skip(skip)
            .filter(|c| (c.volume == r.volume || c.volume == 0) && (r.origin == 0 || c.origin != r.origin))
            .map(|c| (c.ino, c.origin))
            .collect();
        Some((log.last, found))
    }

    fn relay_silent(&self) -> bool {
        lock(&self.heard).is_some_and(|t| t.elapsed() > RELAY_SILENT)
    }

    /// Answers a watch: the changes of the volume after the client's position, waiting up to
    /// the time asked for (at most [`MAX_WAIT`]) until there are some.
    pub async fn watch(&self, r: &pb::WatchReq) -> pb::WatchResp {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(r.wait_ms.into()).min(MAX_WAIT);
        let mut rx = self.last.subscribe();
        let mut after = r.after;
        loop {
            let epoch = self.epoch.load(Ordering::Relaxed);
            let lost = |at: u64| pb::WatchResp { epoch, seq: at, inos: Vec::new(), origins: Vec::new(), lost: true };
            if r.epoch != epoch || self.relay_silent() {
                return lost(lock(&self.log).last);
            }
            // Marked seen before reading the log: a change noted after the read wakes the wait.
            rx.borrow_and_update();
            let Some((last, found)) = self.since(r, after) else { return lost(lock(&self.log).last) };
            if !found.is_empty() || tokio::time::Instant::now() >= deadline {
                let (inos, origins) = found.into_iter().unzip();
                return pb::WatchResp { epoch, seq: last, inos, origins, lost: false };
            }
            after = last;
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                let last = lock(&self.log).last;
                return pb::WatchResp { epoch, seq: last, inos: Vec::new(), origins: Vec::new(), lost: false };
            }
        }
    }

    /// [`Changes::watch`] waiting on the calling thread.
    pub fn watch_blocking(&self, r: &pb::WatchReq) -> pb::WatchResp {
        let deadline = Instant::now() + Duration::from_millis(r.wait_ms.into()).min(MAX_WAIT);
        let mut after = r.after;
        loop {
            let epoch = self.epoch.load(Ordering::Relaxed);
            let lost = |at: u64| pb::WatchResp { epoch, seq: at, inos: Vec::new(), origins: Vec::new(), lost: true };
            if r.epoch != epoch || self.relay_silent() {
                return lost(lock(&self.log).last);
            }
            let Some((last, found)) = self.since(r, after) else { return lost(lock(&self.log).last) };
            let now = Instant::now();
            if !found.is_empty() || now >= deadline {
                let (inos, origins) = found.into_iter().unzip();
                return pb::WatchResp { epoch, seq: last, inos, origins, lost: false };
            }
            after = last;
            // Waits for a change after `last` (noted under the log's lock, so none is missed).
            let log = lock(&self.log);
            if log.last == last {
                let _ = self.noted.wait_timeout(log, deadline - now);
            }
        }
    }

    /// Sends this server's notes to the other servers on PostgreSQL database `url`, and notes
    /// theirs here, on two threads with connections of their own. A break of either connection
    /// makes every client lose track (changes may have gone unheard).
    pub fn relay_through_postgres(self: &Arc<Self>, url: &str) {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        *lock(&self.relay) = Some(tx);
        *lock(&self.heard) = Some(Instant::now());
        let me = self.clone();
        let listen_url = url.to_string();
        std::thread::Builder::new()
            .name("strata-changes-in".into())
            .spawn(move || me.listen(&listen_url))
            .map_err(|e| tracing::error!(error = %e, "cannot start the change relay"))
            .ok();
        let me = self.clone();
        let notify_url = url.to_string();
        std::thread::Builder::new()
            .name("strata-changes-out".into())
            .spawn(move || me.send_notes(&notify_url, rx))
            .map_err(|e| tracing::error!(error = %e, "cannot start the change relay"))
            .ok();
    }

    fn connect(url: &str) -> Result<postgres::Client, postgres::Error> {
        let mut cfg: postgres::Config = url.parse()?;
        cfg.connect_timeout(Duration::from_secs(10));
        cfg.keepalives_idle(Duration::from_secs(5));
        cfg.connect(postgres::NoTls)
    }

    fn listen(self: Arc<Self>, url: &str) {
        let mut warned = false;
        loop {
            let res: Result<(), postgres::Error> = Self::connect(url).and_then(|mut c| {
                c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                if warned {
                    tracing::info!("change relay listening again");
                    warned = false;
                }
                // Notes sent while nobody listened are lost.
                self.listening.store(true, Ordering::Relaxed);
                self.lose_track();
                use postgres::fallible_iterator::FallibleIterator;
                let mut n = c.notifications();
                let mut last_heard = Instant::now();
                loop {
                    // A new iterator per wait: postgres's `TimeoutIter` never re-arms its
                    // timer after it fires, so a kept one answers "nothing" at once forever
                    // after the first quiet beat, and this thread spun without reading notes.
                    match n.timeout_iter(RELAY_BEAT).next() {
                        Ok(Some(note)) => {
                            last_heard = Instant::now();
                            *lock(&self.heard) = Some(last_heard);
                            self.take(note.payload());
                        }
                        // Not even our own beats: the connection is dead without having said
                        // so (no reset from a vanished peer); connect again.
                        Ok(None) if last_heard.elapsed() > RELAY_RECONNECT => return Ok(()),
                        Ok(None) => {}
                        Err(e) => return Err(e),
                    }
                }
            });
            self.listening.store(false, Ordering::Relaxed);
            match res {
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "change relay cannot listen; clients' caches expire meanwhile");
                    warned = true;
                }
                Ok(()) if !warned => {
                    tracing::warn!(
                        "change relay heard nothing, not even its own heartbeat, for {RELAY_RECONNECT:?}; listening again"
                    );
                    warned = true;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Notes a change another server relayed.
    fn take(&self, payload: &str) {
        if let Some(inos) = strata_meta::parse_doom_note(payload) {
            self.tell_opens(OpenNote::Doomed(inos));
            return;
        }
        if let Some((session, to)) = strata_meta::parse_moved_note(payload) {
            if to != self.server {
                self.tell_opens(OpenNote::Moved(session, to));
            }
            return;
        }
        let mut parts = payload.splitn(4, '|');
        let (Some(server), Some(volume), Some(origin), Some(inos)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if server == self.server {
            return;
        }
        let (Ok(volume), Ok(origin)) = (volume.parse::<u32>(), origin.parse::<u64>()) else { return };
        let inos: Vec<u64> = inos.split(',').filter_map(|i| i.parse().ok()).collect();
        self.append(volume, origin, &inos);
    }

    /// Sends this server's notes (and, when idle, a beat) to the channel; a note that cannot
    /// be sent is tried again, in order, until it is.
    fn send_notes(self: Arc<Self>, url: &str, rx: std::sync::mpsc::Receiver<String>) {
        let beat = format!("{}|beat", self.server);
        let mut client: Option<postgres::Client> = None;
        let mut pending: Option<String> = None;
        let mut warned = false;
        loop {
            let note = match pending.take() {
                Some(n) => n,
                None => match rx.recv_timeout(RELAY_BEAT) {
                    Ok(n) => n,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => beat.clone(),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                },
            };
            let mut why = String::new();
            if client.is_none() {
                client = Self::connect(url).map_err(|e| why = e.to_string()).ok();
            }
            let sent = match client.as_mut() {
                Some(c) => {
                    c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &note]).map(|_| ()).map_err(|e| e.to_string())
                }
                None => Err(why),
            };
            match sent {
                Ok(()) => warned = false,
                Err(why) => {
                    if !warned {
                        tracing::warn!(error = %why, "change relay cannot notify the other servers; retrying");
                        warned = true;
                    }
                    client = None;
                    if note != beat {
                        pending = Some(note);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(epoch: u64, after: u64, wait_ms: u32) -> pb::WatchReq {
        pb::WatchReq { volume: 7, epoch, after, wait_ms, origin: 0 }
    }

    #[tokio::test]
    async fn a_watch_gets_the_changes_after_its_position_of_its_volume() {
        let c = Arc::new(Changes::new("s1"));
        let first = c.watch(&req(0, 0, 0)).await;
        assert!(first.lost, "a new watcher learns the epoch");
        let epoch = first.epoch;
        c.note(7, 42, &[100, 101]);
        c.note(8, 42, &[200]);
        let r = c.watch(&req(epoch, first.seq, 1000)).await;
        assert!(!r.lost);
        assert_eq!((r.inos.as_slice(), r.origins.as_slice()), (&[100, 101][..], &[42, 42][..]));
        let waiter = {
            let c = c.clone();
            let seq = r.seq;
            tokio::spawn(async move { c.watch(&req(epoch, seq, 2000)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.note(8, 1, &[300]);
        c.note(7, 1, &[102]);
        let r = waiter.await.expect("watch");
        assert_eq!(r.inos, [102], "woken by its volume's change only");
        let idle = c.watch(&req(epoch, r.seq, 30)).await;
        assert!(!idle.lost && idle.inos.is_empty() && idle.seq == r.seq);
        assert!(c.watch(&req(epoch + 2, r.seq, 0)).await.lost, "another epoch");
    }

    #[tokio::test]
    async fn a_watcher_is_not_woken_by_its_own_changes() {
        let c = Arc::new(Changes::new("s1"));
        let epoch = c.watch(&req(0, 0, 0)).await.epoch;
        let mine = move |after: u64, wait_ms: u32| pb::WatchReq { origin: 42, ..req(epoch, after, wait_ms) };
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.watch(&mine(0, 2000)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.note(7, 42, &[100]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "its own change does not end the wait");
        c.note(7, 9, &[101]);
        let r = waiter.await.expect("watch");
        assert_eq!((r.inos, r.origins), (vec![101], vec![9]), "another session's change does");
        let r = c.watch_blocking(&mine(0, 0));
        assert_eq!(r.inos, [101], "the blocking watch leaves its own out too");
        assert_eq!(c.watch_blocking(&req(epoch, 0, 0)).inos, [100, 101], "a watch without an origin gets all");
    }

    #[test]
    fn a_blocking_watch_wakes_at_a_change() {
        let c = Arc::new(Changes::new("s1"));
        let first = c.watch_blocking(&req(0, 0, 0));
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.watch_blocking(&req(first.epoch, first.seq, 3000)));
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        c.note(7, 3, &[5]);
        let r = t.join().expect("watch");
        assert_eq!((r.inos, r.origins), (vec![5], vec![3]));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_watcher_too_far_behind_loses_track() {
        let c = Changes::new("s1");
        let epoch = c.watch(&req(0, 0, 0)).await.epoch;
        let inos: Vec<u64> = (0..(KEEP as u64 + 10)).collect();
        c.note(7, 1, &inos);
        assert!(c.watch(&req(epoch, 0, 0)).await.lost);
        c.take("s2|7|5|9,10");
        c.take("s1|7|5|11");
        c.take("garbage");
        let r = c.watch(&req(epoch, KEEP as u64 + 10, 0)).await;
        assert_eq!(r.inos, [9, 10], "another server's notes only");
    }
}
