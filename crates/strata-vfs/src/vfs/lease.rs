//! Leases renewed by the server's change stream: a task keeps a `Watch` call open (a long
//! poll), forgets what other sessions changed as soon as the server tells, and renews the
//! leases of the directory listings and attributes this client holds (see `dircache.rs`).
//!
//! Bound: a change made by another client, through any server of the store, reaches this
//! client when the server answers the watch (milliseconds). If the stream stops (server gone,
//! relay between servers broken, client too far behind), leases are no longer renewed and end
//! `RENEWAL` after the last renewal, at most; a stream that lost track drops every listing.

use std::sync::Weak;
use std::time::{Duration, Instant};

use strata_proto::pb;
use strata_proto::wire::Method;

use super::Vfs;
use crate::error::VfsError;

/// How long one watch call waits for changes on the server.
const WAIT_MS: u32 = 1000;

/// Pause after a failed watch call before the next.
const RETRY: Duration = Duration::from_millis(500);

/// Follows the server's changes of the volume for as long as the file system lives.
pub(super) async fn watch_changes(vfs: Weak<Vfs>) {
    let (mut epoch, mut after) = (0u64, 0u64);
    let mut warned = false;
    loop {
        let Some((client, volume)) = vfs.upgrade().map(|v| (v.client.clone(), v.volume.id)) else { return };
        let sent = Instant::now();
        let res = client
            .call::<_, pb::WatchResp>(Method::Watch, |session| pb::WatchReq {
                volume,
                epoch,
                after,
                wait_ms: WAIT_MS,
                origin: session,
            })
            .await;
        drop(client);
        let Some(v) = vfs.upgrade() else { return };
        match res {
            Ok(r) if r.lost || r.epoch != epoch => {
                if epoch != 0 {
                    tracing::debug!("the server's change stream lost track; dropping cached listings");
                }
                v.lose_leases();
                // Lost again in the epoch it already knew: the server cannot vouch for its
                // stream now (its relay is silent). Asking again at once would only spin.
                let again = r.lost && r.epoch == epoch;
                (epoch, after) = (r.epoch, r.seq);
                if again {
                    drop(v);
                    tokio::time::sleep(RETRY).await;
                }
            }
            Ok(r) => {
                let me = v.client.session();
                for (ino, origin) in r.inos.iter().zip(r.origins.iter().chain(std::iter::repeat(&0))) {
                    if *origin == 0 || *origin != me {
                        v.changed_elsewhere(*ino);
                    }
                }
                after = r.seq;
                v.dircache.renew(sent);
                warned = false;
            }
            Err(VfsError::Server(m)) if m.contains("Unimplemented") => {
                tracing::info!("the server has no change stream (an older server): cached listings last --attr-ttl");
                return;
            }
            Err(e) => {
                if !warned {
                    tracing::debug!(error = %e, "watching the server's changes");
                    warned = true;
                }
                drop(v);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

impl Vfs {
    /// Another session changed `ino`'s entries or attributes.
    fn changed_elsewhere(&self, ino: u64) {
        self.dircache.drop_dir(ino);
        self.expire_attr(ino);
    }

    /// What changed meanwhile is not known: no listing or leased attribute is used any more.
    fn lose_leases(&self) {
        self.dircache.unrenew();
        self.dircache.clear();
        self.attrs_stale_now();
    }
}
