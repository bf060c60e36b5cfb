//! Open files on behalf of stateless NFS clients: READ and WRITE name a file, not an open
//! descriptor, so the gateway opens files on first use, keeps them while they are used and
//! closes them (committing buffered writes) after a quiet while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_types::Ctx;
use strata_vfs::{Result, Vfs};

struct Slot {
    fh: u64,
    used: Instant,
    /// Held by every operation using `fh`; a slot is only closed when nobody holds it.
    busy: Arc<()>,
}

/// A descriptor in use; the slot stays open while this lives.
pub struct InUse {
    /// The VFS descriptor.
    pub fh: u64,
    _busy: Arc<()>,
}

/// The files one VFS has open for NFS clients, for reading and for writing separately (a
/// read-only token may read but never open for writing).
pub struct OpenFiles {
    vfs: Arc<Vfs>,
    slots: Mutex<HashMap<(u64, bool), Slot>>,
}

impl OpenFiles {
    /// An empty table over `vfs`.
    pub fn new(vfs: Arc<Vfs>) -> Arc<Self> {
        Arc::new(OpenFiles { vfs, slots: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, bool), Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A descriptor of `ino` open for reading or writing, opened now if needed.
    pub async fn get(&self, ino: u64, write: bool) -> Result<InUse> {
        {
            let mut m = self.lock();
            // A file open for writing reads as well: a client reading back what it wrote
            // needs no second open.
            let key = if write || m.contains_key(&(ino, false)) { (ino, write) } else { (ino, true) };
            if let Some(s) = m.get_mut(&key) {
                s.used = Instant::now();
                return Ok(InUse { fh: s.fh, _busy: s.busy.clone() });
            }
        }
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let opened = self.vfs.open(&Ctx::root(), ino, flags).await?;
        let raced = {
            let mut m = self.lock();
            match m.get_mut(&(ino, write)) {
                Some(s) => {
                    s.used = Instant::now();
                    Some(InUse { fh: s.fh, _busy: s.busy.clone() })
                }
                None => {
                    let busy = Arc::new(());
                    m.insert((ino, write), Slot { fh: opened.fh, used: Instant::now(), busy: busy.clone() });
                    return Ok(InUse { fh: opened.fh, _busy: busy });
                }
            }
        };
        // Another request opened it meanwhile: use that one, close ours.
        let _ = self.vfs.release(opened.fh).await;
        raced.ok_or_else(|| strata_vfs::VfsError::from_errno(libc::EBADF))
    }

    /// Takes a file the gateway just created as open for writing (see [`Vfs::open_created`]),
    /// so the WRITEs that follow need no open.
    pub fn created(&self, ino: u64) {
        self.lock().entry((ino, true)).or_insert_with(|| Slot {
            fh: self.vfs.open_created(ino),
            used: Instant::now(),
            busy: Arc::new(()),
        });
    }

    /// Closes descriptors unused for `idle` (all of them with `Duration::ZERO`); returns how
    /// many were closed. Errors of the commits on close are logged: NFS clients learn of lost
    /// writes at COMMIT, which commits first.
    pub async fn close_idle(&self, idle: Duration) -> usize {
        let victims: Vec<u64> = {
            let mut m = self.lock();
            let keys: Vec<(u64, bool)> = m
                .iter()
                .filter(|(_, s)| s.used.elapsed() >= idle && Arc::strong_count(&s.busy) == 1)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| m.remove(k)).map(|s| s.fh).collect()
        };
        for fh in &victims {
            match self.vfs.release(*fh).await {
                Ok(()) => {}
                // Removed meanwhile (a file the gateway created is not held open against an
                // unlink, as NFS has no opens): what it buffered went with it.
                Err(e) if e.errno() == libc::ENOENT => tracing::debug!(error = %e, "closed a removed file"),
                Err(e) => tracing::warn!(error = %e, "closing a file for NFS clients failed"),
            }
        }
        victims.len()
    }

    /// Closes the descriptors of one inode (it was removed).
    pub async fn forget(&self, ino: u64) {
        let fhs: Vec<u64> = {
            let mut m = self.lock();
            let idle: Vec<bool> = [true, false]
                .into_iter()
                .filter(|w| m.get(&(ino, *w)).is_some_and(|s| Arc::strong_count(&s.busy) == 1))
                .collect();
            idle.into_iter().filter_map(|w| m.remove(&(ino, w))).map(|s| s.fh).collect()
        };
        for fh in fhs {
            let _ = self.vfs.release(fh).await;
        }
    }
}
