//! Quota and `statfs`: the volume's capacity and use as the server last reported them.

use std::sync::atomic::Ordering;

use strata_proto::pb;
use strata_proto::wire::Method;

use super::{StatFs, Vfs};
use crate::error::{Result, VfsError};
use crate::writer::FileWriter;

impl Vfs {
    /// Refuses a write that would take the volume past its byte quota (EDQUOT at `write`, not
    /// only at `close`), from the use the server last reported plus what this client has
    /// buffered. The server checks again at commit; this only makes the common case prompt.
    /// Returns the growth the write adds, already counted as pending.
    pub(super) fn quota_check(&self, ino: u64, w: &FileWriter, off: u64, len: u64) -> Result<u64> {
        let cap = self.quota_capacity.load(Ordering::Relaxed);
        if cap == 0 {
            return Ok(0);
        }
        let size = self.file_size(ino).unwrap_or(0).max(w.end);
        let round = |n: u64| n.div_ceil(4096) * 4096;
        let growth = round(off + len).saturating_sub(round(size));
        if growth == 0 {
            return Ok(0);
        }
        let used = self.quota_used.load(Ordering::Relaxed);
        let pending = self.pending_growth.fetch_add(growth, Ordering::Relaxed);
        if used.saturating_add(pending).saturating_add(growth) > cap {
            self.pending_growth.fetch_sub(growth, Ordering::Relaxed);
            return Err(VfsError::errno_msg(libc::EDQUOT, "disk quota exceeded"));
        }
        Ok(growth)
    }

    /// Asks the server for the volume's capacity and use, for the quota check at write.
    pub(super) async fn refresh_quota(&self) -> Result<pb::StatFsResp> {
        let r =
            self.client.call::<_, pb::StatFsResp>(Method::StatFs, |_| pb::StatFsReq { volume: self.volume.id }).await?;
        self.quota_capacity.store(r.capacity, Ordering::Relaxed);
        self.quota_used.store(r.used_bytes, Ordering::Relaxed);
        Ok(r)
    }

    /// Volume size and use; an unlimited volume reports the block store's disk.
    pub async fn statfs(&self) -> Result<StatFs> {
        self.qos.op().await;
        if self.volume.read_only {
            // A snapshot never changes: what it held when taken, and no room for more.
            let v = &self.volume;
            return Ok(StatFs { total: v.used_bytes, free: 0, files: v.used_inodes, ffree: 0 });
        }
        let r = self.refresh_quota().await?;
        let (total, free) = if r.capacity > 0 {
            (r.capacity, r.capacity.saturating_sub(r.used_bytes))
        } else {
            let (t, f) = self.store_disk().unwrap_or((1 << 50, 1 << 50));
            (t.max(r.used_bytes), f)
        };
        let (files, ffree) = if r.inode_limit > 0 {
            (r.inode_limit, r.inode_limit.saturating_sub(r.used_inodes))
        } else {
            (r.used_inodes + (1 << 32), 1 << 32)
        };
        Ok(StatFs { total, free, files, ffree })
    }

    pub(super) fn store_disk(&self) -> Option<(u64, u64)> {
        // Blocks served by the server: a directory of that name here is not where they are.
        if !self.store.is_local() {
            return None;
        }
        let path = self.volume.store.strip_prefix("file://")?;
        let st = nix_statvfs(path)?;
        Some(st)
    }
}

fn nix_statvfs(path: &str) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}
