//! Where bytes live: file offsets to chunks, chunks to visible slice segments, slices to blocks.
//!
//! A chunk's slice list is ordered oldest first and later slices cover earlier ones, so the
//! bytes visible at a position come from the newest slice covering it, or zeros if none does.

use strata_types::{CHUNK_SIZE, Slice};

/// One piece of a chunk range: `len` bytes at chunk offset `pos`, from a slice or a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset within the chunk.
    pub pos: u32,
    /// Length in bytes.
    pub len: u32,
    /// Where the bytes come from.
    pub src: Source,
}

/// The origin of a segment's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Zeros.
    Hole,
    /// Bytes of a stored slice starting at `off` within it.
    Data {
        /// Slice id.
        id: u64,
        /// Stored slice size.
        size: u32,
        /// Offset within the stored slice.
        off: u32,
    },
}

/// Splits a file range into per-chunk pieces: (chunk index, offset in chunk, length).
pub fn chunk_pieces(offset: u64, len: u64) -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    let mut off = offset;
    let end = offset.saturating_add(len);
    while off < end {
        let idx = off / CHUNK_SIZE;
        let in_chunk = off % CHUNK_SIZE;
        let n = (CHUNK_SIZE - in_chunk).min(end - off);
        out.push((idx as u32, in_chunk as u32, n as u32));
        off += n;
    }
    out
}

/// The visible segments of `[pos, pos + len)` of a chunk, in order, covering the range exactly.
pub fn visible(slices: &[Slice], pos: u32, len: u32) -> Vec<Segment> {
    let end = pos as u64 + len as u64;
    let mut segs: Vec<Segment> = vec![Segment { pos, len, src: Source::Hole }];
    for s in slices {
        let (s_start, s_end) = (s.pos as u64, s.pos as u64 + s.len as u64);
        let (a, b) = (s_start.max(pos as u64), s_end.min(end));
        if a >= b {
            continue;
        }
        let mut next = Vec::with_capacity(segs.len() + 2);
        for g in segs {
            let (g0, g1) = (g.pos as u64, g.pos as u64 + g.len as u64);
            if g1 <= a || g0 >= b {
                next.push(g);
                continue;
            }
            if g0 < a {
                next.push(Segment { pos: g.pos, len: (a - g0) as u32, src: g.src });
            }
            if g1 > b {
                let skip = (b - g0) as u32;
                next.push(Segment { pos: b as u32, len: (g1 - b) as u32, src: shift(g.src, skip) });
            }
        }
        let src = if s.id == 0 {
            Source::Hole
        } else {
            Source::Data { id: s.id, size: s.size, off: s.off + (a - s_start) as u32 }
        };
        next.push(Segment { pos: a as u32, len: (b - a) as u32, src });
        next.sort_by_key(|g| g.pos);
        segs = next;
    }
    merge_holes(segs)
}

fn shift(src: Source, by: u32) -> Source {
    match src {
        Source::Hole => Source::Hole,
        Source::Data { id, size, off } => Source::Data { id, size, off: off + by },
    }
}

fn merge_holes(segs: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segs.len());
    for g in segs {
        if let Some(last) = out.last_mut()
            && last.src == Source::Hole
            && g.src == Source::Hole
        {
            last.len += g.len;
            continue;
        }
        out.push(g);
    }
    out
}

/// Blocks of a stored slice: (block index, block length).
pub fn slice_blocks(size: u32, block_size: u32) -> impl Iterator<Item = (u32, u32)> {
    let n = size.div_ceil(block_size.max(1));
    (0..n).map(move |i| (i, (size - i * block_size).min(block_size)))
}

/// Object key of one block of a slice in a volume.
pub fn block_key(volume: u32, id: u64, idx: u32, len: u32) -> String {
    format!("v{volume}/chunks/{}/{}/{id}_{idx}_{len}", id / 1_000_000, id / 1_000)
}

/// What a block key names (`.../{id}_{index}_{length}`): slice id, block index, length.
pub fn parse_block_key(key: &str) -> Option<(u64, u32, u32)> {
    let name = key.rsplit('/').next()?;
    let mut parts = name.split('_');
    let id = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    let len = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((id, index, len))
}

/// The slice id a block key names (`.../{id}_{index}_{length}`), if it is one.
pub fn slice_of_key(key: &str) -> Option<u64> {
    parse_block_key(key).map(|(id, _, _)| id)
}

/// The (uncompressed) length a block key names, if it is one.
pub fn block_len_of_key(key: &str) -> Option<u32> {
    parse_block_key(key).map(|(_, _, len)| len)
}

/// Largest block a key may name: a block never spans more than one chunk.
pub const MAX_BLOCK_LEN: u32 = strata_types::CHUNK_SIZE as u32;

/// The volume of a well-formed block key, or `None` for anything else. Only keys exactly as
/// [`block_key`] writes them pass (decimal numbers without signs or leading zeros, the right
/// directory levels, a length of 1 byte to [`MAX_BLOCK_LEN`]), so a key that arrives over the
/// network names a block file of its volume and nothing else: no `..`, no absolute paths, no
/// other prefixes.
pub fn volume_of_block_key(key: &str) -> Option<u32> {
    let rest = key.strip_prefix('v')?;
    let (vol, rest) = rest.split_once('/')?;
    if vol.is_empty() || !vol.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let vol: u32 = vol.parse().ok()?;
    let (id, idx, len) = parse_block_key(rest)?;
    if len == 0 || len > MAX_BLOCK_LEN {
        return None;
    }
    // Re-deriving the key rejects every non-canonical spelling of the same numbers.
    (block_key(vol, id, idx, len) == key).then_some(vol)
}

/// Object key prefix of every block of a volume.
pub fn volume_prefix(volume: u32) -> String {
    format!("v{volume}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sl(pos: u32, id: u64, len: u32) -> Slice {
        Slice { pos, id, size: len, off: 0, len }
    }

    #[test]
    fn newer_slice_covers_older() {
        let v = visible(&[sl(0, 1, 100), sl(10, 2, 20)], 0, 100);
        assert_eq!(
            v,
            vec![
                Segment { pos: 0, len: 10, src: Source::Data { id: 1, size: 100, off: 0 } },
                Segment { pos: 10, len: 20, src: Source::Data { id: 2, size: 20, off: 0 } },
                Segment { pos: 30, len: 70, src: Source::Data { id: 1, size: 100, off: 30 } },
            ]
        );
    }

    #[test]
    fn gaps_are_holes() {
        let v = visible(&[sl(50, 1, 10)], 40, 30);
        assert_eq!(v[0], Segment { pos: 40, len: 10, src: Source::Hole });
        assert_eq!(v[2], Segment { pos: 60, len: 10, src: Source::Hole });
    }

    #[test]
    fn chunk_pieces_split_at_boundaries() {
        let p = chunk_pieces(CHUNK_SIZE - 10, 30);
        assert_eq!(p, vec![(0, (CHUNK_SIZE - 10) as u32, 10), (1, 0, 20)]);
    }

    #[test]
    fn keys_name_their_slice() {
        assert_eq!(slice_of_key(&block_key(3, 1_234_567, 2, 99)), Some(1_234_567));
        assert_eq!(slice_of_key("v3/chunks/1/1234/12_0_4.tmp"), None);
        assert_eq!(slice_of_key("v3/chunks/1/1234/12_0"), None);
        assert_eq!(block_len_of_key(&block_key(3, 1_234_567, 2, 99)), Some(99));
        assert_eq!(parse_block_key(&block_key(3, 7, 2, 99)), Some((7, 2, 99)));
        assert_eq!(block_len_of_key("k"), None);
    }

    #[test]
    fn only_well_formed_block_keys_name_a_volume() {
        assert_eq!(volume_of_block_key(&block_key(3, 1_234_567, 2, 99)), Some(3));
        assert_eq!(volume_of_block_key(&block_key(u32::MAX, 7, 0, MAX_BLOCK_LEN)), Some(u32::MAX));
        for bad in [
            "",
            "v3",
            "v/chunks/0/0/7_0_9",
            "/v3/chunks/0/0/7_0_9",
            "v3/chunks/0/0/../../../../etc/passwd",
            "v3/chunks/0/0/../0/7_0_9",
            "v3/../v4/chunks/0/0/7_0_9",
            "v3/chunks/0/0/./7_0_9",
            "v3/chunks/0/0//7_0_9",
            "v3//chunks/0/0/7_0_9",
            "v3/chunks/0/1/7_0_9",
            "v3/other/0/0/7_0_9",
            "x3/chunks/0/0/7_0_9",
            "v03/chunks/0/0/7_0_9",
            "v+3/chunks/0/0/7_0_9",
            "v3/chunks/0/0/07_0_9",
            "v3/chunks/0/0/+7_0_9",
            "v3/chunks/0/0/7_0_9/",
            "v3/chunks/0/0/7_0_9.tmp",
            "v3/chunks/0/0/7_0_0",
            "v3/chunks/0/0/7_0_67108865",
            "v3/chunks/0/0/7_0_9\0",
            "v99999999999/chunks/0/0/7_0_9",
            ".strata-store-id",
            "meta.db",
            "../blocks/v3/chunks/0/0/7_0_9",
        ] {
            assert_eq!(volume_of_block_key(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn blocks_of_a_slice() {
        let b: Vec<_> = slice_blocks(10, 4).collect();
        assert_eq!(b, vec![(0, 4), (1, 4), (2, 2)]);
        assert_eq!(slice_blocks(0, 4).count(), 0);
    }
}
