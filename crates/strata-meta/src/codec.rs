//! Value encodings. Hot records (entries, slice lists) use fixed layouts so that appending a
//! slice is a byte append and listing a directory decodes nothing but what it returns.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{MetaError, Result};
use crate::types::{FileType, Ino, Slice};

/// Bytes per encoded slice.
pub const SLICE_LEN: usize = 24;

/// Encodes a record with postcard.
pub fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| MetaError::Corrupt(format!("encode: {e}")))
}

/// Decodes a postcard record.
pub fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(b)?)
}

/// Encodes a directory entry's value: inode and type.
pub fn enc_entry(ino: Ino, kind: FileType) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(&ino.to_be_bytes());
    v[8] = kind.code() as u8;
    v
}

/// Decodes a directory entry's value.
pub fn dec_entry(v: &[u8]) -> Result<(Ino, FileType)> {
    let bad = || MetaError::Corrupt("directory entry".into());
    let ino = u64::from_be_bytes(v.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let kind = FileType::from_code(u32::from(*v.get(8).ok_or_else(bad)?)).ok_or_else(bad)?;
    Ok((ino, kind))
}

/// Appends one slice to an encoded slice list.
pub fn push_slice(buf: &mut Vec<u8>, s: &Slice) {
    buf.extend_from_slice(&s.pos.to_be_bytes());
    buf.extend_from_slice(&s.id.to_be_bytes());
    buf.extend_from_slice(&s.size.to_be_bytes());
    buf.extend_from_slice(&s.off.to_be_bytes());
    buf.extend_from_slice(&s.len.to_be_bytes());
}

/// Decodes an encoded slice list.
pub fn dec_slices(buf: &[u8]) -> Result<Vec<Slice>> {
    if !buf.len().is_multiple_of(SLICE_LEN) {
        return Err(MetaError::Corrupt(format!("slice list of {} bytes", buf.len())));
    }
    Ok(buf
        .chunks_exact(SLICE_LEN)
        .map(|c| {
            let u32_at = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            let mut id = [0u8; 8];
            id.copy_from_slice(&c[4..12]);
            Slice { pos: u32_at(0), id: u64::from_be_bytes(id), size: u32_at(12), off: u32_at(16), len: u32_at(20) }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_round_trip() -> Result<()> {
        let a = Slice { pos: 1, id: u64::MAX - 3, size: 77, off: 5, len: 9 };
        let b = Slice { pos: 0, id: 0, size: 0, off: 0, len: u32::MAX };
        let mut buf = Vec::new();
        push_slice(&mut buf, &a);
        push_slice(&mut buf, &b);
        assert_eq!(dec_slices(&buf)?, vec![a, b]);
        assert!(dec_slices(&buf[..5]).is_err());
        Ok(())
    }

    #[test]
    fn entry_round_trip() -> Result<()> {
        let v = enc_entry(42, FileType::Symlink);
        assert_eq!(dec_entry(&v)?, (42, FileType::Symlink));
        assert!(dec_entry(&v[..3]).is_err());
        Ok(())
    }
}
