//! Reply records: encoded headers and results, then (for READ) the file's bytes as the block
//! cache holds them, sent together with vectored writes so that data is never copied here.

use std::io::{IoSlice, Write};

use bytes::Bytes;

/// One framed reply record.
#[derive(Debug, Default)]
pub struct Reply {
    /// Record mark, RPC header and encoded result (for READ, up to the data's length word).
    pub head: Vec<u8>,
    /// Bytes sent after `head`: a READ's data and its XDR padding.
    pub data: Vec<Bytes>,
}

/// The XDR padding of opaque data of each length modulo 4.
static PAD: [u8; 3] = [0; 3];

impl Reply {
    /// A reply whose record is all in `record` (already framed).
    pub fn framed(record: Vec<u8>) -> Self {
        Reply { head: record, data: Vec::new() }
    }

    /// Appends opaque data after the head (whose length word the caller wrote), then its padding.
    pub fn push_opaque(&mut self, segments: Vec<Bytes>) {
        let len: usize = segments.iter().map(Bytes::len).sum();
        self.data = segments;
        let pad = (4 - len % 4) % 4;
        if pad > 0 {
            self.data.push(Bytes::from_static(&PAD[..pad]));
        }
    }

    /// Sets the record mark (the first 4 bytes of `head`) for the whole record, as the last
    /// fragment.
    pub fn seal(&mut self) {
        let len = self.head.len() - 4 + self.data.iter().map(Bytes::len).sum::<usize>();
        let mark = len as u32 | 0x8000_0000;
        self.head[..4].copy_from_slice(&mark.to_be_bytes());
    }

    /// The whole record in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        for d in &self.data {
            v.extend_from_slice(d);
        }
        v
    }

    /// Writes the whole record.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        if self.data.is_empty() {
            return w.write_all(&self.head);
        }
        let mut slices: Vec<IoSlice<'_>> =
            std::iter::once(IoSlice::new(&self.head)).chain(self.data.iter().map(|d| IoSlice::new(d))).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match w.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `step` bytes per call, to exercise partial vectored writes.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(left);
                self.got.extend_from_slice(&b[..k]);
                left -= k;
                n += k;
                if left == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn record_is_head_data_and_padding_under_one_mark() {
        let mut r = Reply { head: vec![0, 0, 0, 0, 9, 9], data: Vec::new() };
        r.push_opaque(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
        r.seal();
        let want = [0x80, 0, 0, 10, 9, 9, b'a', b'b', b'c', b'd', b'e', 0, 0, 0];
        assert_eq!(r.to_vec(), want);
        for step in [1, 3, 5, 100] {
            let mut w = Trickle { got: Vec::new(), step };
            r.write_to(&mut w).expect("write");
            assert_eq!(w.got, want, "step {step}");
        }
    }

    #[test]
    fn aligned_data_gets_no_padding() {
        let mut r = Reply { head: vec![0; 4], data: Vec::new() };
        r.push_opaque(vec![Bytes::from_static(b"abcd")]);
        r.seal();
        assert_eq!(r.to_vec(), [0x80, 0, 0, 4, b'a', b'b', b'c', b'd']);
    }
}
