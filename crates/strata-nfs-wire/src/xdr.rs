//! Bounded XDR decoding of what clients send.
//!
//! Replies are built from `nfs3_types`' structures (in `strata-nfs`), but arguments are decoded
//! here: that crate's decoders allocate whatever length a message claims before reading it (a
//! 4-byte length field can ask for 4 GiB), and every byte here comes from the network. This
//! decoder never allocates more than the bytes actually present and checks each field's protocol
//! maximum.

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The message ended inside a field.
    #[error("message truncated")]
    Truncated,
    /// A variable-length field is longer than the protocol allows.
    #[error("field of {len} bytes exceeds its maximum of {max}")]
    TooLong {
        /// Claimed length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// A discriminant or boolean has a value the protocol does not define.
    #[error("invalid value {0} for an enumeration")]
    BadEnum(u32),
    /// Bytes remain after the last field.
    #[error("{0} unexpected bytes after the arguments")]
    Trailing(usize),
}

/// Decodes XDR from a received message, never reading past its end.
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// A decoder over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf }
    }

    /// Bytes not yet decoded.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless everything was decoded.
    pub fn finish(&self) -> Result<(), XdrError> {
        if self.buf.is_empty() { Ok(()) } else { Err(XdrError::Trailing(self.buf.len())) }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if self.buf.len() < n {
            return Err(XdrError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    /// A boolean (only 0 and 1 are valid).
    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadEnum(v)),
        }
    }

    /// Fixed-length opaque data of `N` bytes (padded to 4).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let b = self.take(N)?;
        self.take(pad(N))?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// Variable-length opaque data of at most `max` bytes, borrowed from the message.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], XdrError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        let b = self.take(len)?;
        self.take(pad(len))?;
        Ok(b)
    }
}

/// Padding after `len` bytes of opaque data.
pub fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Appends a big-endian u32.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_respects_bounds_and_padding() {
        let msg = [0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 7];
        let mut d = Decoder::new(&msg);
        assert_eq!(d.opaque(8).unwrap(), b"abc");
        assert_eq!(d.u32().unwrap(), 7);
        d.finish().unwrap();

        // A length beyond the maximum is refused before anything is read or allocated.
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(Decoder::new(&huge).opaque(64), Err(XdrError::TooLong { .. })));
        // A length within the maximum but beyond the message is truncation.
        let short = [0, 0, 0, 9, 1, 2];
        assert_eq!(Decoder::new(&short).opaque(64), Err(XdrError::Truncated));
    }

    #[test]
    fn bools_are_strict_and_trailing_bytes_are_reported() {
        assert_eq!(Decoder::new(&[0, 0, 0, 2]).bool(), Err(XdrError::BadEnum(2)));
        let mut d = Decoder::new(&[0, 0, 0, 1, 9]);
        assert!(d.bool().unwrap());
        assert_eq!(d.finish(), Err(XdrError::Trailing(1)));
    }

    #[test]
    fn u64_is_big_endian() {
        let mut d = Decoder::new(&[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(d.u64().unwrap(), (1 << 32) | 2);
    }
}
