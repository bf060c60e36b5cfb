//! Open files: opening, creating, closing and the handles the front-ends hold.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use strata_proto::conv::slice_from_pb;
use strata_proto::pb;
use strata_proto::wire::Method;
use strata_types::{Attr, Ctx, FileType, SetAttr, Slice};

use super::{Handle, Opened, Seen, Vfs, attr_of};
use crate::client::Client;
use crate::error::{Result, VfsError};

impl Vfs {
    /// Opens a file (close-to-open: with attributes fresh from the server).
    pub async fn open(&self, ctx: &Ctx, ino: u64, flags: i32) -> Result<Opened> {
        self.qos.op().await;
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let r =
            self.client.call::<_, pb::OpenResp>(Method::Open, |session| pb::OpenReq { session, ino, write }).await?;
        let (_, mut a) = attr_of(r.attr)?;
        let chunk0: Vec<Slice> = r.chunk0.iter().map(slice_from_pb).collect();
        self.client.opened(ino);
        if flags & libc::O_TRUNC != 0 && write && a.kind == FileType::File {
            match self.setattr(ctx, ino, &SetAttr { size: Some(0), ..Default::default() }).await {
                Ok(na) => a = na,
                Err(e) => {
                    self.close_ino(ino).await;
                    return Err(e);
                }
            }
        }
        let seen = self.observe(ino, &a);
        let keep = seen == Seen::Same && self.writer(ino).is_none();
        if a.size > 0 && flags & libc::O_TRUNC == 0 {
            Self::lock(&self.inodes).entry(ino).or_default().chunks.entry(0).or_insert_with(|| Arc::new(chunk0));
        }
        let fh = self.add_handle(Handle { ino, write, read: Mutex::default(), dir: None, counted: true });
        Ok(Opened { fh, keep_cache: keep, changed: seen == Seen::Changed })
    }

    /// Opens for writing a file this client has just created, without a call to the server:
    /// creating it proved the right to write it. The server does not count it as open here, so
    /// the file goes at once if another client unlinks it (as over NFS, which has no opens).
    pub fn open_created(&self, ino: u64) -> u64 {
        self.add_handle(Handle { ino, write: true, read: Mutex::default(), dir: None, counted: false })
    }

    /// Creates and opens a regular file (`O_EXCL` honoured).
    pub async fn create(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(u64, Attr, u64)> {
        // One operation: `make` counts it.
        let excl = flags & libc::O_EXCL != 0;
        let (ino, mut a, created) =
            self.make(ctx, parent, name, FileType::File, mode, umask, 0, &[], excl, true).await?;
        self.client.opened(ino);
        let acc = flags & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        if !created && flags & libc::O_TRUNC != 0 && write {
            a = self.setattr(ctx, ino, &SetAttr { size: Some(0), ..Default::default() }).await?;
        }
        self.observe(ino, &a);
        let fh = self.add_handle(Handle { ino, write, read: Mutex::default(), dir: None, counted: true });
        Ok((ino, a, fh))
    }

    /// Called at each `close` of a descriptor: commits buffered writes.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        if self.qos.is_limited()
            && let Some(w) = self.writer(h.ino)
            && w.lock().await.is_dirty()
        {
            // Only a flush with something to commit reaches the server.
            self.qos.op().await;
        }
        self.commit(h.ino, false).await
    }

    /// Makes a file's data durable.
    pub async fn fsync(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        self.qos.op().await;
        self.commit(h.ino, true).await
    }

    /// Tells the server a file was closed. Nothing waits on the answer (it only matters for
    /// files unlinked while open and for block collection), so closes are queued and sent in
    /// batches by a background task.
    pub(super) async fn close_ino(&self, ino: u64) {
        // Still open to the server until the close is sent: a session registering again
        // meanwhile announces it (the close that follows then takes it off).
        self.pending_closes.fetch_add(1, Ordering::Relaxed);
        if self.closes.send(ino).is_err() {
            self.client.closed(ino);
            self.pending_closes.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes over handle `fh` that an earlier process serving the same kernel connection gave
    /// out (a FUSE worker replaced under a live mount): the file or directory is opened again
    /// under that number, so the kernel's open descriptors keep working.
    pub async fn adopt(&self, fh: u64, ino: u64, write: bool) -> Result<()> {
        if self.handle(fh).is_ok() {
            return Ok(());
        }
        let root = Ctx::root();
        let a = self.getattr(ino).await?;
        let new = if a.kind == FileType::Dir {
            self.opendir(&root, ino, true).await?
        } else {
            // The kernel's descriptor may have been opened for writing even if the first call
            // seen here is a read or an fsync: open for writing where the file allows it.
            match self.open(&root, ino, libc::O_RDWR).await {
                Ok(o) => o.fh,
                Err(e) if write => return Err(e),
                Err(_) => self.open(&root, ino, libc::O_RDONLY).await?.fh,
            }
        };
        let extra = {
            let mut hs = Self::lock(&self.handles);
            let h = hs.remove(&new);
            match (h, hs.contains_key(&fh)) {
                (Some(h), false) => {
                    hs.insert(fh, h);
                    None
                }
                // Another thread adopted it first: give this opening back.
                (h, _) => h,
            }
        };
        if let Some(h) = extra {
            Self::lock(&self.handles).insert(new, h);
            if a.kind == FileType::Dir {
                self.releasedir(new);
            } else {
                self.release(new).await?;
            }
        }
        tracing::debug!(fh, ino, write, "adopted a handle of an earlier worker");
        Ok(())
    }

    /// Numbers new handles from `base` on, above every number an earlier process serving the
    /// same kernel connection gave out.
    pub fn number_handles_from(&self, base: u64) {
        self.next_fh.fetch_max(base, Ordering::Relaxed);
    }

    /// Releases a handle (last close of a descriptor): commits anything left and closes.
    pub async fn release(&self, fh: u64) -> Result<()> {
        let h = Self::lock(&self.handles).remove(&fh).ok_or_else(|| VfsError::from_errno(libc::EBADF))?;
        let res = self.commit(h.ino, false).await;
        let still_open = Self::lock(&self.handles).values().any(|o| o.ino == h.ino);
        if !still_open {
            let mut m = Self::lock(&self.writers);
            let idle = m.get(&h.ino).is_some_and(|w| w.try_lock().is_ok_and(|g| !g.is_dirty()));
            if idle {
                m.remove(&h.ino);
            }
        }
        if h.counted {
            self.close_ino(h.ino).await;
        }
        res
    }
}

/// Sends queued closes, as many per call as have piled up.
pub(super) async fn send_closes(
    client: Arc<Client>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(first) = rx.recv().await {
        let mut inos = vec![first];
        while inos.len() < 4096
            && let Ok(more) = rx.try_recv()
        {
            inos.push(more);
        }
        let n = inos.len();
        let res =
            client.call::<_, pb::Empty>(Method::Close, |session| pb::CloseReq { session, inos: inos.clone() }).await;
        if let Err(e) = res {
            tracing::warn!(files = n, error = %e, "closes not recorded by the server");
        }
        for ino in &inos {
            client.closed(*ino);
        }
        pending.fetch_sub(n, Ordering::Relaxed);
    }
}
