//! Extended attributes and advisory locks.

use std::time::{Duration, Instant};

use strata_proto::pb;
use strata_proto::wire::Method;

use super::Vfs;
use crate::error::Result;

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
            })
            .await?;
        Ok(r.data)
    }

    /// Names of the extended attributes.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.qos.op().await;
        Ok(self.client.call::<_, pb::ListXattrResp>(Method::ListXattr, |_| pb::InoReq { ino }).await?.names)
    }

    /// Sets an extended attribute.
    pub async fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        self.qos.op().await;
        self.client
            .call::<_, pb::Empty>(Method::SetXattr, |_| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: value.to_vec(),
                flags,
            })
            .await?;
        Ok(())
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        self.qos.op().await;
        self.client
            .call::<_, pb::Empty>(Method::RemoveXattr, |_| pb::XattrReq {
                ino,
                name: name.to_vec(),
                value: Vec::new(),
                flags: 0,
            })
            .await?;
        Ok(())
    }

    /// The first lock that would conflict (POSIX semantics), if any.
    pub async fn getlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: u32,
        pid: u32,
    ) -> Result<Option<(u32, u64, u64, u32)>> {
        self.qos.op().await;
        let r = self
            .client
            .call::<_, pb::LockResp>(Method::GetLock, |session| pb::LockReq {
                session,
                ino,
                owner,
                start,
                end,
                kind,
                pid,
            })
            .await?;
        Ok(if r.kind == 2 { None } else { Some((r.kind, r.start, r.end, r.pid)) })
    }

    /// Takes or releases a lock; with `wait`, retries until granted.
    #[allow(clippy::too_many_arguments)]
    pub async fn setlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        kind: u32,
        pid: u32,
        wait: bool,
    ) -> Result<()> {
        self.qos.op().await;
        let mut delay = Duration::from_millis(5);
        let started = Instant::now();
        loop {
            let res = self
                .client
                .call::<_, pb::Empty>(Method::SetLock, |session| pb::LockReq {
                    session,
                    ino,
                    owner,
                    start,
                    end,
                    kind,
                    pid,
                })
                .await;
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
