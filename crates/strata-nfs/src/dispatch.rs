//! The dispatch of one RPC record to the NFS, MOUNT and portmapper programs.

use std::net::IpAddr;

use nfs3_types::mount::{dirpath, export_node, exports, fhandle3, mountres3, mountres3_ok, mountstat3};
use nfs3_types::xdr_codec::{List, Opaque};
use strata_nfs_wire::rpc::{self, Accept, Call};
use strata_nfs_wire::{MountCall, PortmapCall, XdrError, decode_mount, decode_portmap};

use strata_types::FileType;

use crate::gateway::Gateway;
use crate::nfs::Outcome;
use crate::reply::Reply;
use crate::xdr::{pack_into, put_u32};

/// Program numbers.
pub const PORTMAP: u32 = 100_000;
/// Program numbers.
pub const NFS: u32 = 100_003;
/// Program numbers.
pub const MOUNT: u32 = 100_005;

impl Gateway {
    /// Answers one call with a framed reply record; `None` when nothing can be answered.
    pub async fn dispatch(&self, peer: IpAddr, record: &[u8]) -> Option<Reply> {
        let mut call = match rpc::parse_call(record) {
            Ok(c) => c,
            Err(rpc::BadCall::RpcMismatch(xid)) => return Some(Reply::framed(rpc::frame(rpc::rpc_mismatch(xid)))),
            Err(rpc::BadCall::BadCred(xid)) => {
                return Some(Reply::framed(rpc::frame(rpc::auth_error(xid, rpc::AUTH_BADCRED))));
            }
            Err(rpc::BadCall::NotACall | rpc::BadCall::Unanswerable(_)) => return None,
        };
        if call.flavor != rpc::AUTH_NULL && call.flavor != rpc::AUTH_UNIX {
            return Some(Reply::framed(rpc::frame(rpc::auth_error(call.xid, rpc::AUTH_TOOWEAK))));
        }
        let xid = call.xid;
        let reply = match (call.prog, call.vers) {
            (NFS, 3) => {
                // Record mark (set below) and accepted-reply header, then the result in place.
                let mut out = Reply { head: Vec::with_capacity(512), data: Vec::new() };
                out.head.extend_from_slice(&[0; 4]);
                out.head.extend_from_slice(&rpc::accepted(xid, Accept::Success));
                let cred = call.cred.clone();
                let t = std::time::Instant::now();
                let outcome = self.nfs(peer, cred.as_ref(), call.proc_, &mut call.args, &mut out).await;
                crate::metrics::nfs(call.proc_, t);
                return Some(match outcome {
                    Outcome::Done => {
                        out.seal();
                        out
                    }
                    Outcome::Garbage(e) => Reply::framed(rpc::frame(garbage(xid, call.prog, call.proc_, &e))),
                    Outcome::NoProc => Reply::framed(rpc::frame(rpc::accepted(xid, Accept::ProcUnavail))),
                });
            }
            (MOUNT, 3) => {
                let t = std::time::Instant::now();
                let r = self.mount(peer, &mut call).await;
                crate::metrics::mount(t);
                match r {
                    Ok(Some(body)) => success(xid, &body),
                    Ok(None) => rpc::accepted(xid, Accept::ProcUnavail),
                    Err(e) => garbage(xid, call.prog, call.proc_, &e),
                }
            }
            (PORTMAP, 2) => match self.portmap(&mut call) {
                Ok(Some(body)) => success(xid, &body),
                Ok(None) => rpc::accepted(xid, Accept::ProcUnavail),
                Err(e) => garbage(xid, call.prog, call.proc_, &e),
            },
            (NFS | MOUNT, _) => rpc::accepted(xid, Accept::ProgMismatch(3, 3)),
            (PORTMAP, _) => rpc::accepted(xid, Accept::ProgMismatch(2, 2)),
            _ => rpc::accepted(xid, Accept::ProgUnavail),
        };
        Some(Reply::framed(rpc::frame(reply)))
    }

    /// The MOUNT program (RFC 1813, appendix I).
    async fn mount(&self, peer: IpAddr, call: &mut Call<'_>) -> Result<Option<Vec<u8>>, XdrError> {
        let Some(m) = decode_mount(call.proc_, &mut call.args)? else { return Ok(None) };
        let mut out = Vec::new();
        match m {
            MountCall::Null | MountCall::UmntAll | MountCall::Umnt(_) => {}
            MountCall::Mnt(path) => {
                let res = self.mnt(peer, call.cred.as_ref(), path).await;
                let shown = String::from_utf8_lossy(path);
                match &res {
                    Ok(_) => tracing::info!(client = %peer, path = %shown, "mounted"),
                    Err(st) => tracing::info!(client = %peer, path = %shown, status = %st, "mount refused"),
                }
                let reply = match res {
                    Ok(fh) => mountres3::Ok(mountres3_ok {
                        fhandle: fhandle3(Opaque::owned(fh)),
                        auth_flavors: vec![rpc::AUTH_UNIX, rpc::AUTH_NULL],
                    }),
                    Err(st) => mountres3::Err(st),
                };
                pack_into(&mut out, &reply);
            }
            // The gateway keeps no list of mounts.
            MountCall::Dump => put_u32(&mut out, 0),
            MountCall::Export => {
                let list: exports = List(
                    self.exports
                        .iter()
                        .map(|e| export_node {
                            ex_dir: dirpath(Opaque::owned(e.spec.path.clone().into_bytes())),
                            ex_groups: List(
                                e.spec
                                    .allow
                                    .iter()
                                    .map(|n| nfs3_types::mount::name(Opaque::owned(n.to_string().into_bytes())))
                                    .collect(),
                            ),
                        })
                        .collect(),
                );
                pack_into(&mut out, &list);
            }
        }
        Ok(Some(out))
    }

    /// MNT: the handle of an export's directory (or of a directory below it).
    async fn mnt(&self, peer: IpAddr, cred: Option<&rpc::UnixCred>, path: &[u8]) -> Result<Vec<u8>, mountstat3> {
        let path = std::str::from_utf8(path).map_err(|_| mountstat3::MNT3ERR_INVAL)?;
        let path = crate::export::normalize(path).ok_or(mountstat3::MNT3ERR_INVAL)?;
        let ex = self
            .exports
            .iter()
            .filter(|e| path == e.spec.path || e.spec.path == "/" || path.starts_with(&format!("{}/", e.spec.path)))
            .max_by_key(|e| e.spec.path.len())
            .ok_or(mountstat3::MNT3ERR_NOENT)?;
        if !ex.spec.allows(peer) {
            return Err(mountstat3::MNT3ERR_ACCES);
        }
        let ctx = ex.spec.ctx(cred);
        let mut ino = ex.root;
        for part in path[ex.spec.path.len()..].split('/').filter(|p| !p.is_empty()) {
            let (next, a) = ex.vfs.lookup(&ctx, ino, part.as_bytes()).await.map_err(|e| match e.errno() {
                libc::ENOENT => mountstat3::MNT3ERR_NOENT,
                libc::EACCES | libc::EPERM => mountstat3::MNT3ERR_ACCES,
                libc::ENOTDIR => mountstat3::MNT3ERR_NOTDIR,
                _ => mountstat3::MNT3ERR_IO,
            })?;
            if a.kind != FileType::Dir {
                return Err(mountstat3::MNT3ERR_NOTDIR);
            }
            ino = next;
        }
        Ok(ex.key.encode(ino))
    }

    /// Enough of the portmapper (version 2) for clients to find the gateway's one port.
    fn portmap(&self, call: &mut Call<'_>) -> Result<Option<Vec<u8>>, XdrError> {
        let Some(p) = decode_portmap(call.proc_, &mut call.args)? else { return Ok(None) };
        let mut out = Vec::new();
        const TCP: u32 = 6;
        match p {
            PortmapCall::Null => {}
            PortmapCall::GetPort(prog, vers, prot) => {
                let served = prot == TCP && (prog == NFS || prog == MOUNT) && vers == 3;
                put_u32(&mut out, if served { u32::from(self.port) } else { 0 });
            }
            PortmapCall::Dump => {
                for (prog, vers) in [(NFS, 3), (MOUNT, 3), (PORTMAP, 2)] {
                    put_u32(&mut out, 1);
                    for v in [prog, vers, TCP, u32::from(self.port)] {
                        put_u32(&mut out, v);
                    }
                }
                put_u32(&mut out, 0);
            }
        }
        Ok(Some(out))
    }
}

fn success(xid: u32, body: &[u8]) -> Vec<u8> {
    let mut r = rpc::accepted(xid, Accept::Success);
    r.extend_from_slice(body);
    r
}

fn garbage(xid: u32, prog: u32, proc_: u32, e: &XdrError) -> Vec<u8> {
    tracing::debug!(prog, proc_, error = %e, "undecodable arguments");
    rpc::accepted(xid, Accept::GarbageArgs)
}
