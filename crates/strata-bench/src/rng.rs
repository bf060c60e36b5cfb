//! Deterministic pseudo-random choices: shuffled read orders and record offsets.
//!
//! Seeded, so a run can be repeated exactly and a worker process can regenerate its share of
//! the work from a few numbers instead of receiving it.

/// A splitmix64 generator: tiny, fast, and good enough to spread reads over a file.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed` and `stream` (e.g. a worker's number): different streams of one
    /// seed give unrelated sequences.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Self { state: seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03) };
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `0..n` (`n > 0`), without modulo bias (rejection sampling).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Shuffles `items` in place (Fisher-Yates): every order equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// `0..count` in a shuffled order: one epoch's visiting order of a dataset.
pub fn shuffled(seed: u64, epoch: u64, count: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..count).collect();
    Rng::new(seed, epoch).shuffle(&mut v);
    v
}

/// The `count` record offsets a worker reads: uniform over the whole records of a
/// `file_size`-byte file, aligned to `record_size` (a record never crosses the end).
pub fn record_offsets(seed: u64, worker: u64, file_size: u64, record_size: u64, count: u64) -> Vec<u64> {
    let records = file_size / record_size.max(1);
    if records == 0 {
        return Vec::new();
    }
    let mut rng = Rng::new(seed, 0x5245_434F_5244 ^ worker);
    (0..count).map(|_| rng.below(records) * record_size).collect()
}

/// Splits `0..len` into consecutive ranges of at most `range` bytes.
pub fn ranges(len: u64, range: u64) -> Vec<(u64, u64)> {
    let step = range.max(1);
    (0..len.div_ceil(step)).map(|i| (i * step, step.min(len - i * step))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_deterministic() {
        let a = shuffled(1, 0, 1000);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, shuffled(1, 0, 1000));
        assert_ne!(a, shuffled(1, 1, 1000), "another epoch, another order");
        assert_ne!(a, shuffled(2, 0, 1000), "another seed, another order");
        assert_ne!(a, sorted, "actually shuffled");
        assert!(shuffled(1, 0, 0).is_empty());
        assert_eq!(shuffled(1, 0, 1), [0]);
    }

    #[test]
    fn shuffle_is_roughly_uniform() {
        // Where element 0 lands over many shuffles of 4: each slot about a quarter of the time.
        let mut counts = [0u32; 4];
        let mut rng = Rng::new(9, 9);
        for _ in 0..8000 {
            let mut v = [0u8, 1, 2, 3];
            rng.shuffle(&mut v);
            counts[v.iter().position(|&x| x == 0).expect("present")] += 1;
        }
        assert!(counts.iter().all(|&c| (1700..2300).contains(&c)), "{counts:?}");
    }

    #[test]
    fn record_offsets_are_aligned_in_range_and_spread() {
        let size = 10 * 2048 + 100; // the partial record at the end is never read
        let offs = record_offsets(3, 0, size, 2048, 5000);
        assert_eq!(offs.len(), 5000);
        assert!(offs.iter().all(|&o| o % 2048 == 0 && o + 2048 <= size));
        let mut seen = offs.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 10, "every record is hit");
        assert_ne!(offs, record_offsets(3, 1, size, 2048, 5000), "workers differ");
        assert_eq!(offs, record_offsets(3, 0, size, 2048, 5000));
        assert!(record_offsets(3, 0, 100, 2048, 5).is_empty());
    }

    #[test]
    fn below_stays_below() {
        let mut r = Rng::new(0, 0);
        for n in [1u64, 2, 3, 7, 1 << 40, u64::MAX] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
            }
        }
    }

    #[test]
    fn ranges_cover_exactly() {
        assert_eq!(ranges(10, 4), [(0, 4), (4, 4), (8, 2)]);
        assert_eq!(ranges(8, 4), [(0, 4), (4, 4)]);
        assert!(ranges(0, 4).is_empty());
    }
}
