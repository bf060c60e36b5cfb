//! Per-mount quality of service: token buckets limiting the bytes per second read and written
//! through the file system and the operations per second sent to the server or the block store.
//!
//! A limit of 0 means none: an operation pays one atomic load and a branch. A bucket holds at
//! most one second's worth of tokens (the burst) and starts full. An operation that finds too
//! few tokens takes them anyway (the bucket goes into debt) and sleeps until the debt is paid
//! back: callers are served in arrival order, a request larger than the burst still goes
//! through (it waits longer), and nothing ever fails or spins.
//!
//! Limits change in place ([`Qos::set`]): a mount takes up a new limit of its volume (the
//! server reports it with each heartbeat) without remounting. Callers already sleeping keep
//! their wait; the next ones pay at the new rate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled at `rate` tokens per second, holding at most `rate`; a rate of 0 is
/// no limit.
#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens per second, 0 for none. Read without the lock on every operation.
    rate: AtomicU64,
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
        (rate > 0).then(|| TokenBucket::with_rate(rate))
    }

    /// A full bucket of `rate` tokens per second, 0 for unlimited (until [`set_rate`]).
    ///
    /// [`set_rate`]: TokenBucket::set_rate
    pub fn with_rate(rate: u64) -> Self {
        TokenBucket {
            rate: AtomicU64::new(rate),
            state: Mutex::new(Bucket { tokens: rate as f64, last: Instant::now() }),
        }
    }

    /// Tokens per second (0: unlimited).
    #[inline]
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate (0: unlimited). Tokens saved up so far are kept up to the new burst;
    /// a bucket that was unlimited starts full.
    pub fn set_rate(&self, rate: u64) {
        let now = Instant::now();
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.rate.load(Ordering::Relaxed);
        if old == rate {
            return;
        }
        if old == 0 {
            b.tokens = rate as f64;
        } else {
            // Settle what the old rate earned until now, then cap at the new burst.
            let refill = now.saturating_duration_since(b.last).as_secs_f64() * old as f64;
            b.tokens = (b.tokens + refill).min(old as f64).min(rate as f64);
        }
        b.last = now;
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Takes `n` tokens and says how long the caller must wait before using them.
    pub fn reserve(&self, n: u64) -> Duration {
        if self.rate() == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Read again under the lock: `set_rate` changes it under the lock.
        let rate = self.rate.load(Ordering::Relaxed) as f64;
        if rate == 0.0 {
            return Duration::ZERO;
        }
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(rate);
        b.last = now;
        b.tokens -= n as f64;
        if b.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-b.tokens / rate) }
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
#[derive(Debug)]
pub struct Qos {
    /// Whether either bucket has a rate: the one load an unlimited mount's operations pay.
    limited: AtomicBool,
    bytes: TokenBucket,
    ops: TokenBucket,
}

impl Default for Qos {
    fn default() -> Self {
        Qos::new(0, 0)
    }
}

impl Qos {
    /// Limits of `bytes_per_sec` and `ops_per_sec` (0 = unlimited).
    pub fn new(bytes_per_sec: u64, ops_per_sec: u64) -> Self {
        Qos {
            limited: AtomicBool::new(bytes_per_sec > 0 || ops_per_sec > 0),
            bytes: TokenBucket::with_rate(bytes_per_sec),
            ops: TokenBucket::with_rate(ops_per_sec),
        }
    }

    /// Changes the limits in place (0 = unlimited); returns whether they changed.
    pub fn set(&self, bytes_per_sec: u64, ops_per_sec: u64) -> bool {
        if (self.bytes_per_sec(), self.ops_per_sec()) == (bytes_per_sec, ops_per_sec) {
            return false;
        }
        self.bytes.set_rate(bytes_per_sec);
        self.ops.set_rate(ops_per_sec);
        self.limited.store(bytes_per_sec > 0 || ops_per_sec > 0, Ordering::Relaxed);
        true
    }

    /// Whether any limit is set.
    #[inline]
    pub fn is_limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }

    /// The bytes-per-second limit (0 = none).
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes.rate()
    }

    /// The operations-per-second limit (0 = none).
    pub fn ops_per_sec(&self) -> u64 {
        self.ops.rate()
    }

    /// Waits for one operation's turn.
    #[inline]
    pub async fn op(&self) {
        if !self.is_limited() {
            return;
        }
        self.ops.take(1).await;
    }

    /// Waits for one operation moving `n` bytes of file data (a read or a write).
    #[inline]
    pub async fn data(&self, n: u64) {
        if !self.is_limited() {
            return;
        }
        // Reserve both before sleeping, so the two waits overlap instead of adding up.
        let a = self.ops.reserve(1);
        let b = if n > 0 { self.bytes.reserve(n) } else { Duration::ZERO };
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

    #[tokio::test(start_paused = true)]
    async fn limits_change_in_place() {
        let q = Qos::new(0, 0);
        assert!(!q.is_limited());
        // Unlimited: 100 MiB go at once.
        let t = Instant::now();
        q.data(100 * MIB).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
        // Limited to 1 MiB/s: the bucket starts full, then 2 MiB more take 2 s.
        assert!(q.set(MIB, 0));
        assert!(!q.set(MIB, 0), "the same limits change nothing");
        assert!(q.is_limited());
        assert_eq!((q.bytes_per_sec(), q.ops_per_sec()), (MIB, 0));
        let t = Instant::now();
        for _ in 0..3 {
            q.data(MIB).await;
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
        // Faster: 4 MiB/s. Nothing was saved up (the bucket was just emptied), so 8 MiB take 2 s.
        q.set(4 * MIB, 0);
        let t = Instant::now();
        for _ in 0..8 {
            q.data(MIB).await;
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
        // Slower after a long idle: the saved-up tokens are capped at the new burst.
        tokio::time::sleep(Duration::from_secs(60)).await;
        q.set(MIB, 0);
        let t = Instant::now();
        q.data(3 * MIB).await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010), "took {took:?}");
        // And back to unlimited.
        assert!(q.set(0, 0));
        assert!(!q.is_limited());
        let t = Instant::now();
        q.data(100 * MIB).await;
        q.op().await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
