//! Property tests of the data layout: for any sequence of slices written into a chunk (later
//! ones covering earlier ones, holes from truncation), `visible` must describe exactly the
//! bytes a plain byte-array model holds, and the block arithmetic must cover every slice byte
//! exactly once.

use proptest::prelude::*;
use strata_blocks::layout::{Source, chunk_pieces, slice_blocks, visible};
use strata_types::{CHUNK_SIZE, Slice};

/// What a byte of the model holds: zero, or byte `off` of stored slice `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Byte {
    Zero,
    Of { id: u64, off: u32 },
}

const SPAN: u32 = 4096;

fn slice_strategy() -> impl Strategy<Value = Vec<Slice>> {
    prop::collection::vec((0..SPAN, 1..SPAN, 0..64u32, prop::bool::weighted(0.15)), 0..40).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (pos, len, extra, hole))| {
                let len = len.min(SPAN - pos).max(1);
                if hole {
                    Slice { pos, id: 0, size: 0, off: 0, len }
                } else {
                    // A visible range somewhere inside a larger stored slice.
                    Slice { pos, id: i as u64 + 1, size: len + extra * 2, off: extra, len }
                }
            })
            .collect()
    })
}

fn model(slices: &[Slice]) -> Vec<Byte> {
    let mut m = vec![Byte::Zero; SPAN as usize];
    for s in slices {
        for k in 0..s.len {
            m[(s.pos + k) as usize] = if s.id == 0 { Byte::Zero } else { Byte::Of { id: s.id, off: s.off + k } };
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn visible_matches_the_byte_model(slices in slice_strategy(), from in 0..SPAN, len in 1..SPAN) {
        let len = len.min(SPAN - from);
        let want = model(&slices);
        let segs = visible(&slices, from, len);
        // Segments tile the range exactly, in order.
        let mut at = from;
        for g in &segs {
            prop_assert_eq!(g.pos, at);
            prop_assert!(g.len > 0);
            at += g.len;
        }
        prop_assert_eq!(at, from + len);
        // Every byte comes from where the model says.
        for g in &segs {
            for k in 0..g.len {
                let got = match g.src {
                    Source::Hole => Byte::Zero,
                    Source::Data { id, size, off } => {
                        prop_assert!(off + k < size, "read past the stored slice");
                        Byte::Of { id, off: off + k }
                    }
                };
                prop_assert_eq!(got, want[(g.pos + k) as usize]);
            }
        }
        // Adjacent holes are merged.
        for w in segs.windows(2) {
            prop_assert!(!(w[0].src == Source::Hole && w[1].src == Source::Hole));
        }
    }

    #[test]
    fn blocks_cover_a_slice_exactly_once(size in 0u32..(20 << 20), bs in prop::sample::select(vec![65536u32, 1 << 20, 4 << 20])) {
        let blocks: Vec<(u32, u32)> = slice_blocks(size, bs).collect();
        let total: u64 = blocks.iter().map(|(_, l)| u64::from(*l)).sum();
        prop_assert_eq!(total, u64::from(size));
        for (n, (i, l)) in blocks.iter().enumerate() {
            prop_assert_eq!(*i as usize, n);
            prop_assert!(*l > 0 && *l <= bs);
            if n + 1 < blocks.len() {
                prop_assert_eq!(*l, bs, "only the last block may be short");
            }
        }
    }

    #[test]
    fn chunk_pieces_tile_a_file_range(off in 0u64..(4 * CHUNK_SIZE), len in 0u64..(3 * CHUNK_SIZE)) {
        let pieces = chunk_pieces(off, len);
        let mut at = off;
        for (idx, pos, n) in &pieces {
            prop_assert_eq!(u64::from(*idx) * CHUNK_SIZE + u64::from(*pos), at);
            prop_assert!(*n > 0 && u64::from(*pos) + u64::from(*n) <= CHUNK_SIZE);
            at += u64::from(*n);
        }
        prop_assert_eq!(at, off + len);
    }
}
