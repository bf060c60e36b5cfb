//! Decoding of the NFSv3 and MOUNT procedures' arguments (RFC 1813), bounded.

use strata_meta::{SetAttr, SetTime, Timespec};

use crate::xdr::{Decoder, XdrError};

/// Longest handle a client may send (NFS3_FHSIZE).
pub const FH_MAX: usize = 64;
/// Longest name decoded; longer than 255 is answered with NFS3ERR_NAMETOOLONG by the handlers.
pub const NAME_MAX_DECODE: usize = 4096;
/// Longest symbolic link target or mount path.
pub const PATH_MAX: usize = 4096;

/// A directory handle and a name in it.
#[derive(Debug)]
pub struct DirOp<'a> {
    /// The directory.
    pub dir: &'a [u8],
    /// The name.
    pub name: &'a [u8],
}

/// How CREATE treats an existing file.
#[derive(Debug)]
pub enum CreateHow {
    /// Create, or use the existing file (attributes applied).
    Unchecked(SetAttr),
    /// Fail if it exists.
    Guarded(SetAttr),
    /// Exactly-once creation identified by a verifier.
    Exclusive([u8; 8]),
}

/// What MKNOD makes.
#[derive(Debug)]
pub enum NodeKind {
    /// Character device.
    Chr(SetAttr, u32, u32),
    /// Block device.
    Blk(SetAttr, u32, u32),
    /// Socket.
    Sock(SetAttr),
    /// FIFO.
    Fifo(SetAttr),
    /// A type MKNOD cannot make (regular, directory, link): NFS3ERR_BADTYPE.
    Other,
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

    fn time(&mut self) -> Result<Timespec, XdrError> {
        let sec = self.u32()?;
        let nsec = self.u32()?;
        // Clients send nanoseconds below one billion; clamp rather than refuse a sloppy one.
        Ok(Timespec { sec: i64::from(sec), nsec: nsec.min(999_999_999) })
    }

    fn set_time(&mut self) -> Result<Option<SetTime>, XdrError> {
        match self.u32()? {
            0 => Ok(None),
            1 => Ok(Some(SetTime::Now)),
            2 => Ok(Some(SetTime::At(self.time()?))),
            v => Err(XdrError::BadEnum(v)),
        }
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, XdrError> {
        Ok(if self.bool()? { Some(self.u32()?) } else { None })
    }

    /// An `sattr3`.
    pub fn sattr(&mut self) -> Result<SetAttr, XdrError> {
        let mode = self.opt_u32()?.map(|m| m & 0o7777);
        let uid = self.opt_u32()?;
        let gid = self.opt_u32()?;
        let size = if self.bool()? { Some(self.u64()?) } else { None };
        let atime = self.set_time()?;
        let mtime = self.set_time()?;
        Ok(SetAttr { mode, uid, gid, size, atime, mtime })
    }

    /// A `sattrguard3`: the ctime the client expects.
    pub fn guard(&mut self) -> Result<Option<Timespec>, XdrError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::put_u32;

    #[test]
    fn sattr_with_every_field() {
        let mut m = Vec::new();
        for v in [1u32, 0o4755, 1, 7, 1, 8, 1, 0, 100, 2, 5, 6, 1] {
            put_u32(&mut m, v);
        }
        let s = Decoder::new(&m).sattr().unwrap();
        assert_eq!(s.mode, Some(0o4755));
        assert_eq!((s.uid, s.gid, s.size), (Some(7), Some(8), Some(100)));
        assert_eq!(s.atime, Some(SetTime::At(Timespec { sec: 5, nsec: 6 })));
        assert_eq!(s.mtime, Some(SetTime::Now));
    }

    #[test]
    fn bad_discriminants_are_errors() {
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
}
