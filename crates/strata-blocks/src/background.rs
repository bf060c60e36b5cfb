//! One low-priority thread for background disk work of the server (writing and syncing the
//! files of journaled blocks, deleting collected blocks). It runs at the lowest CPU priority,
//! so a burst of such work (thousands of small files after a create storm) takes only CPU that
//! no call in progress wants, instead of slowing the calls clients wait for.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

static WORKER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Nice value of the background thread (the lowest priority).
const NICE: i32 = 19;

fn worker() -> &'static Mutex<Sender<Job>> {
    WORKER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new().name("strata-background".into()).spawn(move || {
            // SAFETY: plain system calls; on Linux a nice value is per thread, and lowering
            // one's own priority is always allowed.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                tracing::warn!(error = %e, "background thread runs at normal priority");
            }
            for job in rx {
                // A panicking job must not take the thread (and every later job) with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no background thread; background work runs on the blocking pool");
        }
        Mutex::new(tx)
    })
}

/// Runs `f` on the background thread and waits for its result; on the runtime's blocking pool
/// when that thread cannot be used. `None` if `f` panicked.
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let rejected = match worker().lock() {
        Ok(s) => s.send(job).err().map(|e| e.0),
        Err(_) => Some(job),
    };
    if let Some(job) = rejected {
        tokio::task::spawn_blocking(job).await.ok()?;
    }
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn jobs_run_at_low_priority_and_survive_a_panic() {
        let nice = super::run(|| {
            // SAFETY: reads this thread's own nice value.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        })
        .await;
        assert_eq!(nice, Some(super::NICE));
        assert_eq!(super::run(|| -> i32 { panic!("a failing job") }).await, None);
        assert_eq!(super::run(|| 7).await, Some(7), "the thread outlives a panicking job");
    }
}
