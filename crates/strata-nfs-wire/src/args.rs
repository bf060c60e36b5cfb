//! Decoding of the NFSv3, MOUNT and portmapper procedures' arguments (RFC 1813, RFC 1833),
//! bounded.

use crate::xdr::{Decoder, XdrError};

/// Longest handle a client may send (NFS3_FHSIZE).
pub const FH_MAX: usize = 64;
/// Longest name decoded; longer than 255 is answered with NFS3ERR_NAMETOOLONG by the handlers.
pub const NAME_MAX_DECODE: usize = 4096;
/// Longest symbolic link target or mount path.
pub const PATH_MAX: usize = 4096;
/// Largest WRITE payload decoded (a record cannot hold more anyway).
pub const DATA_MAX: usize = crate::rpc::MAX_RECORD;

/// A time to set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetTime3 {
    /// Leave it.
    #[default]
    Keep,
    /// The server's current time.
    Now,
    /// This time (seconds, nanoseconds).
    At(u32, u32),
}

/// An `sattr3`: attributes to set, `None` leaves one alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sattr {
    /// Permission bits (`0o7777`).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size.
    pub size: Option<u64>,
    /// Access time.
    pub atime: SetTime3,
    /// Modification time.
    pub mtime: SetTime3,
}

/// A directory handle and a name in it.
#[derive(Debug, PartialEq, Eq)]
pub struct DirOp<'a> {
    /// The directory.
    pub dir: &'a [u8],
    /// The name.
    pub name: &'a [u8],
}

/// How CREATE treats an existing file.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateHow {
    /// Create, or use the existing file (attributes applied).
    Unchecked(Sattr),
    /// Fail if it exists.
    Guarded(Sattr),
    /// Exactly-once creation identified by a verifier.
    Exclusive([u8; 8]),
}

/// What MKNOD makes.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Character device (attributes, major, minor).
    Chr(Sattr, u32, u32),
    /// Block device (attributes, major, minor).
    Blk(Sattr, u32, u32),
    /// Socket.
    Sock(Sattr),
    /// FIFO.
    Fifo(Sattr),
    /// A type MKNOD cannot make (regular, directory, link): NFS3ERR_BADTYPE.
    Other,
}

/// A decoded NFSv3 call.
#[derive(Debug, PartialEq, Eq)]
pub enum NfsCall<'a> {
    /// NULL.
    Null,
    /// GETATTR.
    Getattr(&'a [u8]),
    /// SETATTR with an optional ctime guard (seconds, nanoseconds).
    Setattr(&'a [u8], Sattr, Option<(u32, u32)>),
    /// LOOKUP.
    Lookup(DirOp<'a>),
    /// ACCESS with the bits asked about.
    Access(&'a [u8], u32),
    /// READLINK.
    Readlink(&'a [u8]),
    /// READ (offset, count).
    Read(&'a [u8], u64, u32),
    /// WRITE.
    Write {
        /// The file.
        fh: &'a [u8],
        /// Where.
        offset: u64,
        /// Bytes the client says it sends.
        count: u32,
        /// UNSTABLE (0), DATA_SYNC (1) or FILE_SYNC (2).
        stable: u32,
        /// The bytes.
        data: &'a [u8],
    },
    /// CREATE.
    Create(DirOp<'a>, CreateHow),
    /// MKDIR.
    Mkdir(DirOp<'a>, Sattr),
    /// SYMLINK (attributes, target).
    Symlink(DirOp<'a>, Sattr, &'a [u8]),
    /// MKNOD.
    Mknod(DirOp<'a>, NodeKind),
    /// REMOVE.
    Remove(DirOp<'a>),
    /// RMDIR.
    Rmdir(DirOp<'a>),
    /// RENAME (from, to).
    Rename(DirOp<'a>, DirOp<'a>),
    /// LINK (file, new name).
    Link(&'a [u8], DirOp<'a>),
    /// READDIR (cookie, verifier, count).
    Readdir(&'a [u8], u64, [u8; 8], u32),
    /// READDIRPLUS (cookie, verifier, dircount, maxcount).
    Readdirplus(&'a [u8], u64, [u8; 8], u32, u32),
    /// FSSTAT.
    Fsstat(&'a [u8]),
    /// FSINFO.
    Fsinfo(&'a [u8]),
    /// PATHCONF.
    Pathconf(&'a [u8]),
    /// COMMIT (offset, count).
    Commit(&'a [u8], u64, u32),
}

impl NfsCall<'_> {
    /// Whether the procedure changes the file system (refused on read-only exports).
    pub fn changes(&self) -> bool {
        matches!(
            self,
            NfsCall::Setattr(..)
                | NfsCall::Write { .. }
                | NfsCall::Create(..)
                | NfsCall::Mkdir(..)
                | NfsCall::Symlink(..)
                | NfsCall::Mknod(..)
                | NfsCall::Remove(..)
                | NfsCall::Rmdir(..)
                | NfsCall::Rename(..)
                | NfsCall::Link(..)
        )
    }
}

/// A decoded MOUNT v3 call.
#[derive(Debug, PartialEq, Eq)]
pub enum MountCall<'a> {
    /// NULL.
    Null,
    /// MNT of a path.
    Mnt(&'a [u8]),
    /// DUMP.
    Dump,
    /// UMNT of a path.
    Umnt(&'a [u8]),
    /// UMNTALL.
    UmntAll,
    /// EXPORT.
    Export,
}

/// A decoded portmapper v2 call.
#[derive(Debug, PartialEq, Eq)]
pub enum PortmapCall {
    /// NULL.
    Null,
    /// GETPORT (program, version, protocol).
    GetPort(u32, u32, u32),
    /// DUMP.
    Dump,
}

impl<'a> Decoder<'a> {
    /// An `nfs_fh3`.
    pub fn fh(&mut self) -> Result<&'a [u8], XdrError> {
        self.opaque(FH_MAX)
    }

    /// A `diropargs3`.
    pub fn dirop(&mut self) -> Result<DirOp<'a>, XdrError> {
        Ok(DirOp { dir: self.fh()?, name: self.opaque(NAME_MAX_DECODE)? })
    }

    fn time(&mut self) -> Result<(u32, u32), XdrError> {
        let sec = self.u32()?;
        let nsec = self.u32()?;
        // Clients send nanoseconds below one billion; clamp rather than refuse a sloppy one.
        Ok((sec, nsec.min(999_999_999)))
    }

    fn set_time(&mut self) -> Result<SetTime3, XdrError> {
        match self.u32()? {
            0 => Ok(SetTime3::Keep),
            1 => Ok(SetTime3::Now),
            2 => {
                let (s, n) = self.time()?;
                Ok(SetTime3::At(s, n))
            }
            v => Err(XdrError::BadEnum(v)),
        }
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, XdrError> {
        Ok(if self.bool()? { Some(self.u32()?) } else { None })
    }

    /// An `sattr3`.
    pub fn sattr(&mut self) -> Result<Sattr, XdrError> {
        let mode = self.opt_u32()?.map(|m| m & 0o7777);
        let uid = self.opt_u32()?;
        let gid = self.opt_u32()?;
        let size = if self.bool()? { Some(self.u64()?) } else { None };
        let atime = self.set_time()?;
        let mtime = self.set_time()?;
        Ok(Sattr { mode, uid, gid, size, atime, mtime })
    }

    /// A `sattrguard3`: the ctime the client expects.
    pub fn guard(&mut self) -> Result<Option<(u32, u32)>, XdrError> {
        if self.bool()? { Ok(Some(self.time()?)) } else { Ok(None) }
    }

    /// A `createhow3`.
    pub fn createhow(&mut self) -> Result<CreateHow, XdrError> {
        match self.u32()? {
            0 => Ok(CreateHow::Unchecked(self.sattr()?)),
            1 => Ok(CreateHow::Guarded(self.sattr()?)),
            2 => Ok(CreateHow::Exclusive(self.fixed::<8>()?)),
            v => Err(XdrError::BadEnum(v)),
        }
    }

    /// A `mknoddata3`.
    pub fn mknoddata(&mut self) -> Result<NodeKind, XdrError> {
        Ok(match self.u32()? {
            4 => NodeKind::Chr(self.sattr()?, self.u32()?, self.u32()?),
            3 => NodeKind::Blk(self.sattr()?, self.u32()?, self.u32()?),
            6 => NodeKind::Sock(self.sattr()?),
            7 => NodeKind::Fifo(self.sattr()?),
            1 | 2 | 5 => NodeKind::Other,
            v => return Err(XdrError::BadEnum(v)),
        })
    }
}

/// Decodes the arguments of NFSv3 procedure `proc_`; `None` for an unknown procedure. The
/// arguments must use the whole message.
pub fn decode_nfs<'a>(proc_: u32, d: &mut Decoder<'a>) -> Result<Option<NfsCall<'a>>, XdrError> {
    let call = match proc_ {
        0 => NfsCall::Null,
        1 => NfsCall::Getattr(d.fh()?),
        2 => NfsCall::Setattr(d.fh()?, d.sattr()?, d.guard()?),
        3 => NfsCall::Lookup(d.dirop()?),
        4 => NfsCall::Access(d.fh()?, d.u32()?),
        5 => NfsCall::Readlink(d.fh()?),
        6 => NfsCall::Read(d.fh()?, d.u64()?, d.u32()?),
        7 => {
            let fh = d.fh()?;
            let offset = d.u64()?;
            let count = d.u32()?;
            let stable = d.u32()?;
            if stable > 2 {
                return Err(XdrError::BadEnum(stable));
            }
            NfsCall::Write { fh, offset, count, stable, data: d.opaque(DATA_MAX)? }
        }
        8 => NfsCall::Create(d.dirop()?, d.createhow()?),
        9 => NfsCall::Mkdir(d.dirop()?, d.sattr()?),
        10 => NfsCall::Symlink(d.dirop()?, d.sattr()?, d.opaque(PATH_MAX)?),
        11 => NfsCall::Mknod(d.dirop()?, d.mknoddata()?),
        12 => NfsCall::Remove(d.dirop()?),
        13 => NfsCall::Rmdir(d.dirop()?),
        14 => NfsCall::Rename(d.dirop()?, d.dirop()?),
        15 => NfsCall::Link(d.fh()?, d.dirop()?),
        16 => NfsCall::Readdir(d.fh()?, d.u64()?, d.fixed::<8>()?, d.u32()?),
        17 => NfsCall::Readdirplus(d.fh()?, d.u64()?, d.fixed::<8>()?, d.u32()?, d.u32()?),
        18 => NfsCall::Fsstat(d.fh()?),
        19 => NfsCall::Fsinfo(d.fh()?),
        20 => NfsCall::Pathconf(d.fh()?),
        21 => NfsCall::Commit(d.fh()?, d.u64()?, d.u32()?),
        _ => return Ok(None),
    };
    d.finish()?;
    Ok(Some(call))
}

/// Decodes the arguments of MOUNT v3 procedure `proc_`; `None` for an unknown procedure.
pub fn decode_mount<'a>(proc_: u32, d: &mut Decoder<'a>) -> Result<Option<MountCall<'a>>, XdrError> {
    let call = match proc_ {
        0 => MountCall::Null,
        1 => MountCall::Mnt(d.opaque(PATH_MAX)?),
        2 => MountCall::Dump,
        3 => MountCall::Umnt(d.opaque(PATH_MAX)?),
        4 => MountCall::UmntAll,
        5 => MountCall::Export,
        _ => return Ok(None),
    };
    d.finish()?;
    Ok(Some(call))
}

/// Decodes the arguments of portmapper v2 procedure `proc_`; `None` for one not answered.
pub fn decode_portmap(proc_: u32, d: &mut Decoder<'_>) -> Result<Option<PortmapCall>, XdrError> {
    let call = match proc_ {
        0 => PortmapCall::Null,
        3 => {
            let (prog, vers, prot) = (d.u32()?, d.u32()?, d.u32()?);
            let _port = d.u32()?;
            PortmapCall::GetPort(prog, vers, prot)
        }
        4 => PortmapCall::Dump,
        _ => return Ok(None),
    };
    d.finish()?;
    Ok(Some(call))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::put_u32;
    use proptest::prelude::*;

    #[test]
    fn sattr_with_every_field() {
        let mut m = Vec::new();
        for v in [1u32, 0o4755, 1, 7, 1, 8, 1, 0, 100, 2, 5, 6, 1] {
            put_u32(&mut m, v);
        }
        let s = Decoder::new(&m).sattr().unwrap();
        assert_eq!(s.mode, Some(0o4755));
        assert_eq!((s.uid, s.gid, s.size), (Some(7), Some(8), Some(100)));
        assert_eq!(s.atime, SetTime3::At(5, 6));
        assert_eq!(s.mtime, SetTime3::Now);
    }

    #[test]
    fn bad_discriminants_and_lengths_are_errors() {
        let mut m = Vec::new();
        put_u32(&mut m, 3);
        assert_eq!(Decoder::new(&m).createhow().unwrap_err(), XdrError::BadEnum(3));
        let mut m = Vec::new();
        put_u32(&mut m, 9);
        assert_eq!(Decoder::new(&m).mknoddata().unwrap_err(), XdrError::BadEnum(9));
        let mut m = Vec::new();
        put_u32(&mut m, 65);
        assert!(matches!(Decoder::new(&m).fh(), Err(XdrError::TooLong { .. })));
    }

    #[test]
    fn write_arguments_and_trailing_bytes() {
        let mut m = Vec::new();
        for v in [4u32, 0xdead_beef, 0, 10, 3, 2, 3] {
            put_u32(&mut m, v);
        }
        m.extend_from_slice(b"abc\0");
        let call = decode_nfs(7, &mut Decoder::new(&m)).unwrap().unwrap();
        assert_eq!(
            call,
            NfsCall::Write { fh: &[0xde, 0xad, 0xbe, 0xef], offset: 10, count: 3, stable: 2, data: b"abc" }
        );
        assert!(call.changes());
        m.push(0);
        assert!(matches!(decode_nfs(7, &mut Decoder::new(&m)), Err(XdrError::Trailing(1))));
        assert_eq!(decode_nfs(22, &mut Decoder::new(&[])).unwrap(), None);
    }

    proptest! {
        // Whatever arrives, decoding ends in a value or an error, never reading out of bounds;
        // a decoded call never borrows more bytes than arrived.
        #[test]
        fn arbitrary_bytes_never_panic(proc_ in 0u32..24, bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_nfs(proc_, &mut Decoder::new(&bytes));
            let _ = decode_mount(proc_, &mut Decoder::new(&bytes));
            let _ = decode_portmap(proc_, &mut Decoder::new(&bytes));
        }
    }
}
