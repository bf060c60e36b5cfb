//! Block compression: how a block's bytes are stored in the object store.
//!
//! A volume's storage class chooses a [`Codec`]. With [`Codec::None`] a stored object is the
//! block's bytes exactly, as it always was (and writers may fill block files in place). With a
//! compressing codec every stored object is *framed*: a 16-byte header, then the payload.
//!
//! ```text
//! offset size  field
//!      0    4  magic        b"SBLK"
//!      4    1  version      1
//!      5    1  codec id     0 = stored raw, 1 = LZ4 block format, 2 = one Zstandard frame
//!      6    2  flags        0 (reserved; readers refuse other values)
//!      8    4  length       uncompressed length, u32 little-endian
//!     12    4  checksum     CRC-32 (IEEE) of the uncompressed bytes, u32 little-endian
//!     16    …  payload      codec 0: the bytes themselves; 1: LZ4 block (no size prefix,
//!                           no frame); 2: a standard zstd frame (`zstd -d` reads it once the
//!                           header is cut off)
//! ```
//!
//! A block is stored raw (codec id 0, still framed) when compressing it would not save at
//! least 1/32 of its size: incompressible data (already compressed, random, encrypted) then
//! costs 16 bytes and no decompression. Empty blocks are framed too (a header alone).
//!
//! Block keys keep naming the *uncompressed* length (`{id}_{index}_{length}`). Decoding is
//! strict: the header must be intact, its length must equal the length the key names, the
//! payload must decode to exactly that many bytes, and the checksum must match; anything else
//! is a [`BlockError::Corrupt`], never file content. Which decoder runs is decided by the
//! header, not by the volume's current setting.

use std::cell::RefCell;

use bytes::Bytes;

use crate::error::{BlockError, Result};

/// Size of the header of a framed (compressed-volume) block.
pub const HEADER: usize = 16;
/// First bytes of a framed block.
pub const MAGIC: [u8; 4] = *b"SBLK";
/// Current format version.
pub const VERSION: u8 = 1;
/// Zstandard level used for `zstd` volumes (zstd's own default).
pub const ZSTD_LEVEL: i32 = 3;

const ID_RAW: u8 = 0;
const ID_LZ4: u8 = 1;
const ID_ZSTD: u8 = 2;

/// How blocks of a volume are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as written, unframed.
    #[default]
    None,
    /// LZ4 (fast), framed.
    Lz4,
    /// Zstandard (smaller), framed.
    Zstd,
}

impl Codec {
    /// The codec a volume's `compression` setting names (`""` and `"none"` mean none).
    pub fn parse(name: &str) -> Result<Codec> {
        match name {
            "" | "none" => Ok(Codec::None),
            "lz4" => Ok(Codec::Lz4),
            "zstd" => Ok(Codec::Zstd),
            other => Err(BlockError::UnknownCodec(other.to_string())),
        }
    }

    /// Its name, as a volume's `compression` setting says it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// Whether stored objects are framed (and differ from the block's bytes).
    pub fn is_compressing(self) -> bool {
        self != Codec::None
    }

    /// The object to store for a block. Blocks are at most 4 GiB (lengths are `u32`).
    pub fn encode(self, data: &Bytes) -> Bytes {
        match self {
            Codec::None => data.clone(),
            Codec::Lz4 | Codec::Zstd => Bytes::from(frame(self, data)),
        }
    }

    /// The block's bytes from a stored object, checked against the `want` bytes its key names.
    pub fn decode(self, key: &str, want: usize, stored: Bytes) -> Result<Bytes> {
        match self {
            Codec::None if stored.len() == want => Ok(stored),
            Codec::None => Err(BlockError::Short { key: key.to_string(), got: stored.len(), want }),
            Codec::Lz4 | Codec::Zstd => {
                unframe(&stored, want).map_err(|reason| BlockError::Corrupt { key: key.to_string(), reason })
            }
        }
    }
}

/// Whether compressing saved enough to be worth decompressing later.
fn worth_it(raw: usize, compressed: usize) -> bool {
    compressed < raw - raw / 32
}

fn header(id: u8, data: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = id;
    h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    h
}

fn frame(codec: Codec, data: &[u8]) -> Vec<u8> {
    let compressed = match codec {
        Codec::Lz4 => {
            let mut out = vec![0u8; HEADER + lz4_flex::block::get_maximum_output_size(data.len())];
            lz4_flex::block::compress_into(data, &mut out[HEADER..]).ok().map(|n| (ID_LZ4, out, n))
        }
        Codec::Zstd => {
            let mut out = vec![0u8; HEADER + zstd::zstd_safe::compress_bound(data.len())];
            zstd_compress(data, &mut out[HEADER..]).map(|n| (ID_ZSTD, out, n))
        }
        Codec::None => None,
    };
    let mut out = match compressed {
        Some((id, mut out, n)) if worth_it(data.len(), n) => {
            out.truncate(HEADER + n);
            out[..HEADER].copy_from_slice(&header(id, data));
            return out;
        }
        _ => Vec::with_capacity(HEADER + data.len()),
    };
    out.extend_from_slice(&header(ID_RAW, data));
    out.extend_from_slice(data);
    out
}

thread_local! {
    static ZSTD_C: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses with a context kept per thread (creating one costs more than a small block).
/// `None` if zstd failed, in which case the block is stored raw.
fn zstd_compress(data: &[u8], out: &mut [u8]) -> Option<usize> {
    ZSTD_C.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?);
        }
        let res = c.as_mut()?.compress_to_buffer(data, out);
        if let Err(e) = &res {
            tracing::debug!(error = %e, "zstd compression failed; storing the block raw");
            *c = None;
        }
        res.ok()
    })
}

fn zstd_decompress(payload: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    ZSTD_D.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else {
            return zstd::bulk::Decompressor::new()?.decompress_to_buffer(payload, out);
        };
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        let Some(dec) = d.as_mut() else { return Err(std::io::Error::other("no zstd context")) };
        let res = dec.decompress_to_buffer(payload, out);
        if res.is_err() {
            // A failed frame may leave the context mid-frame: start afresh next time.
            *d = None;
        }
        res
    })
}

/// Checks and decodes a framed block; the error says what is wrong with it.
fn unframe(stored: &Bytes, want: usize) -> std::result::Result<Bytes, String> {
    if stored.len() < HEADER {
        return Err(format!("{} bytes, too short for the {HEADER}-byte block header", stored.len()));
    }
    let (h, payload) = stored.split_at(HEADER);
    let decoded = |out: Vec<u8>, n: usize, what: &str| {
        if n == want {
            Ok(Bytes::from(out))
        } else {
            Err(format!("{what} payload decoded to {n} bytes, expected {want}"))
        }
    };
    if h[..4] != MAGIC {
        return Err("no block header (bad magic)".into());
    }
    if h[4] != VERSION {
        return Err(format!("block format version {} is not supported (this build reads {VERSION})", h[4]));
    }
    if h[6] != 0 || h[7] != 0 {
        return Err(format!("unknown header flags {:#06x}", u16::from_le_bytes([h[6], h[7]])));
    }
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if len != want {
        return Err(format!("header says {len} bytes, the block's name says {want}"));
    }
    let crc = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    let data = match h[5] {
        ID_RAW if payload.len() == want => stored.slice(HEADER..),
        ID_RAW => return Err(format!("raw payload of {} bytes, expected {want}", payload.len())),
        ID_LZ4 => {
            let mut out = vec![0u8; want];
            let n = lz4_flex::block::decompress_into(payload, &mut out).map_err(|e| format!("lz4: {e}"))?;
            decoded(out, n, "lz4")?
        }
        ID_ZSTD => {
            let mut out = vec![0u8; want];
            let n = zstd_decompress(payload, &mut out).map_err(|e| format!("zstd: {e}"))?;
            decoded(out, n, "zstd")?
        }
        id => return Err(format!("unknown codec id {id}")),
    };
    if crc32fast::hash(&data) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Codec; 3] = [Codec::None, Codec::Lz4, Codec::Zstd];

    /// Compressible but not trivial: text-like, repeating with variation.
    fn texty(n: usize) -> Bytes {
        let words: [&[u8]; 6] = [b"tensor ", b"gradient ", b"epoch ", b"shard ", b"loss=0.0123 ", b"\n"];
        let mut v = Vec::with_capacity(n);
        let mut i = 0usize;
        while v.len() < n {
            v.extend_from_slice(words[(i * 7 + i / 5) % words.len()]);
            i += 1;
        }
        v.truncate(n);
        Bytes::from(v)
    }

    /// Incompressible: xorshift noise.
    fn noise(n: usize) -> Bytes {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        Bytes::from(
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<_>>(),
        )
    }

    fn round_trip(c: Codec, data: &Bytes) -> Bytes {
        let stored = c.encode(data);
        c.decode("k", data.len(), stored).expect("round trip")
    }

    #[test]
    fn names_parse_back() {
        for c in ALL {
            assert_eq!(Codec::parse(c.name()).expect("parse"), c);
        }
        assert_eq!(Codec::parse("").expect("empty"), Codec::None);
        assert!(matches!(Codec::parse("brotli"), Err(BlockError::UnknownCodec(_))));
    }

    #[test]
    fn every_codec_round_trips_empty_small_and_4mib() {
        for c in ALL {
            for data in [Bytes::new(), Bytes::from_static(b"x"), texty(1000), texty(4 << 20), noise(4 << 20)] {
                assert_eq!(round_trip(c, &data), data, "{c:?}, {} bytes", data.len());
            }
        }
    }

    #[test]
    fn compressible_blocks_shrink_and_are_framed() {
        let data = texty(4 << 20);
        for c in [Codec::Lz4, Codec::Zstd] {
            let stored = c.encode(&data);
            assert_eq!(stored[..4], MAGIC);
            assert!(stored.len() < data.len() / 4, "{c:?} stored {} bytes", stored.len());
        }
        assert_eq!(Codec::None.encode(&data), data, "no compression: the object is the block");
    }

    #[test]
    fn incompressible_blocks_are_stored_raw_in_a_frame() {
        let data = noise(1 << 20);
        for c in [Codec::Lz4, Codec::Zstd] {
            let stored = c.encode(&data);
            assert_eq!(stored.len(), HEADER + data.len(), "{c:?}");
            assert_eq!(stored[5], ID_RAW);
            assert_eq!(&stored[HEADER..], &data[..]);
        }
    }

    #[test]
    fn empty_block_is_a_header_alone() {
        for c in [Codec::Lz4, Codec::Zstd] {
            let stored = c.encode(&Bytes::new());
            assert_eq!(stored.len(), HEADER);
            assert!(c.decode("k", 0, stored.clone()).expect("empty").is_empty());
            assert!(matches!(c.decode("k", 1, stored), Err(BlockError::Corrupt { .. })));
        }
    }

    type Damage = Box<dyn Fn(&mut Vec<u8>)>;

    fn corrupt(c: Codec, data: &Bytes, damage: impl Fn(&mut Vec<u8>)) -> BlockError {
        let mut stored = c.encode(data).to_vec();
        damage(&mut stored);
        match c.decode("v1/chunks/0/0/9_0_1", data.len(), Bytes::from(stored)) {
            Ok(got) => panic!("{c:?}: damaged block decoded to {} bytes of data", got.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn damaged_objects_are_errors_not_data() {
        for data in [texty(256 << 10), noise(64 << 10)] {
            for c in [Codec::Lz4, Codec::Zstd] {
                let n = c.encode(&data).len();
                let cases: Vec<(&str, Damage)> = vec![
                    ("truncated payload", Box::new(|s: &mut Vec<u8>| s.truncate(s.len() - 10))),
                    ("truncated to half", Box::new(|s: &mut Vec<u8>| s.truncate(s.len() / 2))),
                    ("truncated header", Box::new(|s: &mut Vec<u8>| s.truncate(HEADER - 1))),
                    ("empty object", Box::new(|s: &mut Vec<u8>| s.clear())),
                    ("flipped payload byte", Box::new(move |s: &mut Vec<u8>| s[HEADER + (n - HEADER) / 2] ^= 0x40)),
                    ("flipped last byte", Box::new(|s: &mut Vec<u8>| *s.last_mut().expect("byte") ^= 1)),
                    ("trailing junk", Box::new(|s: &mut Vec<u8>| s.extend_from_slice(b"junk"))),
                    ("bad magic", Box::new(|s: &mut Vec<u8>| s[0] = b'X')),
                    ("future version", Box::new(|s: &mut Vec<u8>| s[4] = 9)),
                    ("unknown codec", Box::new(|s: &mut Vec<u8>| s[5] = 77)),
                    ("flags", Box::new(|s: &mut Vec<u8>| s[6] = 1)),
                    ("length field", Box::new(|s: &mut Vec<u8>| s[8] ^= 1)),
                    ("checksum field", Box::new(|s: &mut Vec<u8>| s[12] ^= 1)),
                ];
                for (what, damage) in cases {
                    let e = corrupt(c, &data, damage);
                    assert!(matches!(e, BlockError::Corrupt { .. }), "{c:?} {what}: {e}");
                    assert!(e.to_string().contains("9_0_1"), "the error names the block: {e}");
                }
            }
        }
    }

    #[test]
    fn wrong_expected_length_is_an_error() {
        let data = texty(5000);
        for c in [Codec::Lz4, Codec::Zstd] {
            let stored = c.encode(&data);
            assert!(matches!(c.decode("k", 4999, stored.clone()), Err(BlockError::Corrupt { .. })));
            assert!(matches!(c.decode("k", 5001, stored), Err(BlockError::Corrupt { .. })));
        }
        assert!(matches!(Codec::None.decode("k", 4999, data), Err(BlockError::Short { .. })));
    }

    #[test]
    fn unframed_data_is_refused_by_compressed_volumes() {
        let data = texty(5000);
        for c in [Codec::Lz4, Codec::Zstd] {
            assert!(matches!(c.decode("k", data.len(), data.clone()), Err(BlockError::Corrupt { .. })));
        }
    }

    #[test]
    fn the_header_not_the_setting_picks_the_decoder() {
        let data = texty(10_000);
        let stored = Codec::Zstd.encode(&data);
        assert_eq!(Codec::Lz4.decode("k", data.len(), stored).expect("decode"), data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_round_trip(data in prop::collection::vec(any::<u8>(), 0..70_000), rep in 0usize..8) {
            // Some inputs repeat themselves, so the compressed forms are exercised too.
            let mut v = data.clone();
            for _ in 0..rep {
                v.extend_from_slice(&data);
            }
            let data = Bytes::from(v);
            for c in ALL {
                let stored = c.encode(&data);
                prop_assert_eq!(c.decode("k", data.len(), stored).expect("round trip"), data.clone());
            }
        }
    }
}
