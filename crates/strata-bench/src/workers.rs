//! A tiny work-sharing pool over an index range, on scoped std threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};

/// Runs `work(&mut state, i)` for every `i` in `0..count` on `threads` threads.
///
/// Each thread makes its own `state` with `init` (e.g. a buffer) and takes the next index from
/// a shared counter, so slow operations do not leave other threads idle. The first error stops
/// all threads after their current operation and is returned.
pub fn for_each_index<S, I, F>(threads: usize, count: u64, init: I, work: F) -> Result<()>
where
    I: Fn() -> S + Sync,
    F: Fn(&mut S, u64) -> Result<()> + Sync,
{
    if count == 0 {
        return Ok(());
    }
    let threads = threads.clamp(1, usize::try_from(count).unwrap_or(usize::MAX));
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        let mut spawn_error = None;
        for t in 0..threads {
            let spawned = std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn_scoped(scope, || -> Result<()> {
                    let mut state = init();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        if let Err(e) = work(&mut state, i) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
                .context("spawning a worker thread");
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        let mut first_error = spawn_error;
        for h in handles {
            let outcome = h.join().unwrap_or_else(|_| Err(anyhow!("a worker thread panicked")));
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn visits_each_index_once() {
        let seen = Mutex::new(Vec::new());
        for_each_index(
            3,
            1000,
            || (),
            |_, i| {
                seen.lock().map_err(|_| anyhow!("poisoned"))?.push(i);
                Ok(())
            },
        )
        .expect("no error");
        let mut v = seen.into_inner().expect("not poisoned");
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn zero_items_and_more_threads_than_items() {
        for_each_index(4, 0, || (), |_, _| Err(anyhow!("never called"))).expect("no work");
        let n = AtomicU64::new(0);
        for_each_index(
            16,
            2,
            || (),
            |_, _| {
                n.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
        )
        .expect("no error");
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn first_error_is_returned_and_stops_work() {
        let done = AtomicU64::new(0);
        let err = for_each_index(
            2,
            1_000_000,
            || (),
            |_, i| {
                done.fetch_add(1, Ordering::Relaxed);
                if i == 10 { Err(anyhow!("boom at {i}")) } else { Ok(()) }
            },
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("boom at 10"));
        assert!(done.load(Ordering::Relaxed) < 1_000_000);
    }
}
