//! Deterministic file content.
//!
//! Every file written by the `files` workload holds a pseudo-random byte stream that is a pure
//! function of `(seed, file id, byte offset)`. Reading a file back can therefore check every
//! byte without keeping anything in memory, and a block served from the wrong file or the wrong
//! offset is caught, not only a block of zeros.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser: a cheap, well-mixed bijection on `u64`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The content of one file: byte `o` is byte `o % 8` (little endian) of word `o / 8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    key: u64,
}

impl Pattern {
    /// The pattern of file `file_id` under `seed`.
    pub fn new(seed: u64, file_id: u64) -> Self {
        Self { key: splitmix64(seed ^ splitmix64(file_id)) }
    }

    fn word(&self, index: u64) -> u64 {
        splitmix64(self.key.wrapping_add(index.wrapping_mul(GOLDEN)))
    }

    /// Fills `buf` with the bytes found at `offset..offset + buf.len()` of the file.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut done = 0;
        while done < buf.len() {
            let word = self.word(pos / 8).to_le_bytes();
            let start = (pos % 8) as usize;
            let n = (8 - start).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&word[start..start + n]);
            done += n;
            pos += n as u64;
        }
    }

    /// Checks that `buf` holds the bytes at `offset..offset + buf.len()` of the file.
    ///
    /// Returns the file offset of the first wrong byte, with the byte expected and the byte
    /// found, or `None` when all bytes match.
    pub fn first_mismatch(&self, offset: u64, buf: &[u8]) -> Option<Mismatch> {
        let mut pos = offset;
        let mut done = 0;
        while done < buf.len() {
            let word = self.word(pos / 8).to_le_bytes();
            let start = (pos % 8) as usize;
            let n = (8 - start).min(buf.len() - done);
            let want = &word[start..start + n];
            let got = &buf[done..done + n];
            if want != got {
                let k = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or_default();
                return Some(Mismatch { offset: pos + k as u64, expected: want[k], found: got[k] });
            }
            done += n;
            pos += n as u64;
        }
        None
    }
}

/// The first byte of a read-back buffer that differs from the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Offset of the byte in the file.
    pub offset: u64,
    /// The byte the pattern has there.
    pub expected: u8,
    /// The byte read back.
    pub found: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(p: &Pattern, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        p.fill(offset, &mut v);
        v
    }

    #[test]
    fn deterministic() {
        let a = Pattern::new(7, 42);
        let b = Pattern::new(7, 42);
        assert_eq!(bytes(&a, 0, 4096), bytes(&b, 0, 4096));
    }

    #[test]
    fn files_and_seeds_differ() {
        let base = bytes(&Pattern::new(7, 42), 0, 64);
        assert_ne!(base, bytes(&Pattern::new(7, 43), 0, 64));
        assert_ne!(base, bytes(&Pattern::new(8, 42), 0, 64));
        // Different offsets of the same file differ too (no short period).
        let long = bytes(&Pattern::new(7, 42), 0, 1 << 16);
        assert_ne!(long[..4096], long[4096..8192]);
    }

    #[test]
    fn not_trivially_compressible() {
        let v = bytes(&Pattern::new(1, 1), 0, 1 << 16);
        let zeros = v.iter().filter(|&&b| b == 0).count();
        // About 1/256 of random bytes are zero; allow a wide margin.
        assert!(zeros < v.len() / 64, "{zeros} zero bytes");
    }

    #[test]
    fn unaligned_fill_matches_aligned_stream() {
        let p = Pattern::new(3, 9);
        let whole = bytes(&p, 0, 200);
        for start in 0..40u64 {
            for len in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 100] {
                let part = bytes(&p, start, len);
                assert_eq!(part, whole[start as usize..start as usize + len]);
            }
        }
    }

    #[test]
    fn verify_accepts_own_output() {
        let p = Pattern::new(5, 1234);
        for offset in [0u64, 1, 7, 8, 4095, 65536] {
            let v = bytes(&p, offset, 5000);
            assert_eq!(p.first_mismatch(offset, &v), None);
        }
    }

    #[test]
    fn verify_reports_first_wrong_byte() {
        let p = Pattern::new(5, 1234);
        let mut v = bytes(&p, 100, 1000);
        let good = v[333];
        v[333] ^= 0x40;
        v[900] ^= 0x01;
        assert_eq!(p.first_mismatch(100, &v), Some(Mismatch { offset: 433, expected: good, found: good ^ 0x40 }));
    }

    #[test]
    fn verify_rejects_other_file_and_other_offset() {
        let p = Pattern::new(5, 1);
        let q = Pattern::new(5, 2);
        let other_file = bytes(&q, 0, 4096);
        assert!(p.first_mismatch(0, &other_file).is_some());
        let other_offset = bytes(&p, 4096, 4096);
        assert!(p.first_mismatch(0, &other_offset).is_some());
        assert!(p.first_mismatch(0, &[0u8; 4096]).is_some());
    }
}
