//! Recording this server's unrecorded opens when the relay says so: a doom note names inodes
//! it holds open without a record, a session moved to another server, or notes may have gone
//! unheard (see `strata-meta`'s `open.rs` for why an open may go unrecorded and what the
//! records protect).

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use strata_meta::Meta;

use crate::changes::OpenNote;

/// Records the opens the relay's notes name, until the relay goes away. Notes that arrived
/// together are recorded in one transaction; a failure is retried until it succeeds (the
/// destruction they guard waits `strata_meta::OPEN_GRACE`).
pub fn record_noted_opens(meta: Arc<Meta>, rx: Receiver<OpenNote>, me: String) {
    while let Ok(first) = rx.recv() {
        let mut all = false;
        let mut inos = Vec::new();
        for n in std::iter::once(first).chain(rx.try_iter()) {
            match n {
                OpenNote::Lost => all = true,
                OpenNote::Doomed(v) => inos.extend(v),
                OpenNote::Moved(session, to) => {
                    // A session that came to another server: its opens here are recorded, and
                    // its next call here makes it announce them.
                    let mut warned = false;
                    while let Err(e) = meta.session_moved(session, &to, &me) {
                        if !warned {
                            tracing::warn!(error = %e, session, "cannot record the open files of a session that moved; retrying");
                            warned = true;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        let mut warned = false;
        while meta.has_unrecorded_opens() {
            let r = if all { meta.record_opens(None) } else { meta.record_opens(Some(&inos)) };
            match r {
                Ok(_) => break,
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot record open files named by a doom note; retrying");
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
