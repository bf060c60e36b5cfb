//! Per-mount quality of service: token buckets limiting the bytes per second read and written
//! through the file system and the operations per second sent to the server or the block store.
//!
//! A limit of 0 means none: the bucket does not exist and an operation pays one branch. A
//! bucket holds at most one second's worth of tokens (the burst) and starts full. An operation
//! that finds too few tokens takes them anyway (the bucket goes into debt) and sleeps until the
//! debt is paid back: callers are served in arrival order, a request larger than the burst
//! still goes through (it waits longer), and nothing ever fails or spins.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled at `rate` tokens per second, holding at most `rate`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available; negative when callers are waiting for tokens they already took.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens per second; `None` for 0 (unlimited).
    pub fn new(rate: u64) -> Option<Self> {
        (rate > 0).then(|| TokenBucket {
            rate: rate as f64,
            state: Mutex::new(Bucket { tokens: rate as f64, last: Instant::now() }),
        })
    }

    /// Tokens per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Takes `n` tokens and says how long the caller must wait before using them.
    pub fn reserve(&self, n: u64) -> Duration {
        let now = Instant::now();
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.rate);
        b.last = now;
        b.tokens -= n as f64;
        if b.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-b.tokens / self.rate) }
    }

    /// Takes `n` tokens, sleeping until they are paid for.
    pub async fn take(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The limits of one mount.
#[derive(Debug, Default)]
pub struct Qos {
    bytes: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

impl Qos {
    /// Limits of `bytes_per_sec` and `ops_per_sec` (0 = unlimited).
    pub fn new(bytes_per_sec: u64, ops_per_sec: u64) -> Self {
        Qos { bytes: TokenBucket::new(bytes_per_sec), ops: TokenBucket::new(ops_per_sec) }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.bytes.is_some() || self.ops.is_some()
    }

    /// The bytes-per-second limit (0 = none).
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes.as_ref().map_or(0, TokenBucket::rate)
    }

    /// The operations-per-second limit (0 = none).
    pub fn ops_per_sec(&self) -> u64 {
        self.ops.as_ref().map_or(0, TokenBucket::rate)
    }

    /// Waits for one operation's turn.
    #[inline]
    pub async fn op(&self) {
        if let Some(b) = &self.ops {
            b.take(1).await;
        }
    }

    /// Waits for one operation moving `n` bytes of file data (a read or a write).
    #[inline]
    pub async fn data(&self, n: u64) {
        if self.bytes.is_none() && self.ops.is_none() {
            return;
        }
        // Reserve both before sleeping, so the two waits overlap instead of adding up.
        let a = self.ops.as_ref().map_or(Duration::ZERO, |b| b.reserve(1));
        let b = match &self.bytes {
            Some(b) if n > 0 => b.reserve(n),
            _ => Duration::ZERO,
        };
        let wait = a.max(b);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const MIB: u64 = 1 << 20;

    #[tokio::test(start_paused = true)]
    async fn bytes_are_paced_after_the_burst() {
        let q = Qos::new(5 * MIB, 0);
        let t0 = Instant::now();
        // The bucket starts full: one second's worth goes at once.
        for _ in 0..5 {
            q.data(MIB).await;
        }
        assert!(t0.elapsed() < Duration::from_millis(1), "burst: {:?}", t0.elapsed());
        // Then 10 MiB at 5 MiB/s take 2 s.
        let t1 = Instant::now();
        for _ in 0..10 {
            q.data(MIB).await;
        }
        let took = t1.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_at_most_one_second() {
        let q = Qos::new(5 * MIB, 0);
        q.data(5 * MIB).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let t = Instant::now();
        q.data(10 * MIB).await;
        let took = t.elapsed();
        // Only 5 MiB were saved up, however long the mount idled.
        assert!(took >= Duration::from_millis(990) && took <= Duration::from_millis(1010), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_larger_than_the_burst_waits_instead_of_failing() {
        let q = Qos::new(MIB, 0);
        let t = Instant::now();
        q.data(3 * MIB).await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ops_are_limited() {
        let q = Qos::new(0, 100);
        let t = Instant::now();
        for _ in 0..300 {
            q.op().await;
        }
        // 100 at once (the burst), 200 more at 100/s.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn data_operations_count_against_the_ops_limit_too() {
        let q = Qos::new(0, 10);
        let t = Instant::now();
        for _ in 0..30 {
            q.data(1).await;
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let q = std::sync::Arc::new(Qos::new(4 * MIB, 0));
        q.data(4 * MIB).await; // empty the burst
        let t = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    for _ in 0..4 {
                        q.data(256 << 10).await;
                    }
                })
            })
            .collect();
        for h in tasks {
            h.await.expect("task");
        }
        // 8 MiB in all at 4 MiB/s.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_costs_nothing() {
        let q = Qos::new(0, 0);
        assert!(!q.is_limited());
        let t = Instant::now();
        for _ in 0..100_000 {
            // Completes on its first poll: no timer, no yield.
            assert!(q.data(1 << 30).now_or_never().is_some());
            assert!(q.op().now_or_never().is_some());
        }
        assert_eq!(t.elapsed(), Duration::ZERO);
        // A limited bucket with tokens left also completes at once.
        let q = Qos::new(MIB, 10);
        assert!(q.data(1000).now_or_never().is_some());
        assert!(q.op().now_or_never().is_some());
    }

    #[test]
    fn unlimited_is_cheap_in_real_time() {
        let q = Qos::new(0, 0);
        let t = std::time::Instant::now();
        for i in 0..1_000_000u64 {
            let _ = std::hint::black_box(&q).data(i).now_or_never();
            let _ = std::hint::black_box(&q).op().now_or_never();
        }
        // Two million calls; even an unoptimized build does this in well under a second.
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(TokenBucket::new(0).is_none());
        let q = Qos::new(7, 0);
        assert_eq!((q.bytes_per_sec(), q.ops_per_sec()), (7, 0));
    }
}
