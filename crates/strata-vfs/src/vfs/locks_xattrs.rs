//! Extended attributes and advisory locks.

use std::time::{Duration, Instant};

use strata_proto::pb;
use strata_proto::wire::Method;

use super::Vfs;
use crate::error::{Result, VfsError};

/// Names of extended attributes a client answers itself and never stores (the FUSE mount's
/// cache controls, `strata.warmup` and its neighbours): they cannot be set or removed, and are
/// not listed.
pub const VIRTUAL_XATTR_PREFIX: &[u8] = b"strata.";

fn reserved(name: &[u8]) -> Result<()> {
    if name.starts_with(VIRTUAL_XATTR_PREFIX) {
        return Err(VfsError::errno_msg(libc::EPERM, "strata.* extended attributes are the client's own"));
    }
    Ok(())
}

/// Kind of a [`ByteLock`] that releases.
pub const UNLOCK: u32 = 2;

/// A byte-range lock as a front-end asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteLock {
    /// The lock owner within this client (the kernel's lock-owner id).
    pub owner: u64,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
    /// 0 read, 1 write, [`UNLOCK`].
    pub kind: u32,
    /// The process that holds or asks for it.
    pub pid: u32,
}

impl ByteLock {
    fn request(&self, session: u64, ino: u64) -> pb::LockReq {
        pb::LockReq {
            session,
            ino,
            owner: self.owner,
            start: self.start,
            end: self.end,
            kind: self.kind,
            pid: self.pid,
        }
    }
}

impl Vfs {
    /// Value of an extended attribute.
    pub async fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::BytesResp>(Method::GetXattr, |_| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: Vec::new(),
                flags: 0,
                origin: 0,
            })
            .await?;
        Ok(r.data)
    }

    /// Names of the extended attributes.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.qos.op().await;
        let mut names =
            self.client.call::<_, pb::ListXattrResp>(Method::ListXattr, |_| pb::InoReq { ino }).await?.names;
        names.retain(|n| !n.starts_with(VIRTUAL_XATTR_PREFIX));
        Ok(names)
    }

    /// Sets an extended attribute.
    pub async fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        reserved(name)?;
        self.qos.op().await;
        self.client
            .call::<_, pb::Empty>(Method::SetXattr, |session| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: value.to_vec(),
                flags,
                origin: session,
            })
            .await?;
        // The change time moved: a leased copy of the attributes is stale.
        self.expire_attr(ino);
        Ok(())
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        reserved(name)?;
        self.qos.op().await;
        self.client
            .call::<_, pb::Empty>(Method::RemoveXattr, |session| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: Vec::new(),
                flags: 0,
                origin: session,
            })
            .await?;
        self.expire_attr(ino);
        Ok(())
    }

    /// The first lock of another owner that would conflict with `lock` (POSIX semantics), if
    /// any; its owner is not told (0).
    pub async fn getlk(&self, ino: u64, lock: &ByteLock) -> Result<Option<ByteLock>> {
        self.qos.op().await;
        let r = self.client.call::<_, pb::LockResp>(Method::GetLock, |session| lock.request(session, ino)).await?;
        Ok((r.kind != UNLOCK).then_some(ByteLock { owner: 0, start: r.start, end: r.end, kind: r.kind, pid: r.pid }))
    }

    /// Takes or releases a lock; with `wait`, retries until granted.
    pub async fn setlk(&self, ino: u64, lock: &ByteLock, wait: bool) -> Result<()> {
        self.qos.op().await;
        let mut delay = Duration::from_millis(5);
        let started = Instant::now();
        loop {
            let res = self.client.call::<_, pb::Empty>(Method::SetLock, |session| lock.request(session, ino)).await;
            match res {
                Err(e) if wait && e.errno() == libc::EAGAIN => {
                    if started.elapsed() > Duration::from_secs(60) {
                        delay = Duration::from_millis(500);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// Drops the locks an owner holds on a file (on close).
    pub async fn release_locks(&self, ino: u64, owner: u64) -> Result<()> {
        self.client
            .call::<_, pb::Empty>(Method::ReleaseLocks, |session| pb::ReleaseLocksReq { session, ino, owner })
            .await?;
        Ok(())
    }
}
