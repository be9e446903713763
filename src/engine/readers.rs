//! The threads that read the segment files for history pages and for streams catching up.
//!
//! A fixed few, at a lower CPU priority than the runtime's workers, the writer and the
//! password hashing. A filtered history page may look at 100,000 records; one user with its
//! four pages in flight, each on a thread of tokio's blocking pool at the same priority as
//! everything else, took a quarter of every other client's inserts on a 2-core machine. Niced,
//! the readers take what the request path leaves, and run at full speed when it leaves all.
//! Their number also bounds how many read buffers exist at once (it was a semaphore before).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};

/// How much lower the readers' priority is (`nice`: CFS then gives a busy reader about a
/// tenth of the share of a busy request worker).
const READER_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The reading threads; they end when this is dropped.
pub(crate) struct Readers {
    jobs: mpsc::Sender<Job>,
}

impl Readers {
    /// Starts `threads` reading threads.
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("broker-reader-{n}"))
                .spawn(move || {
                    if !super::sched::nice_this_thread(READER_NICE) {
                        tracing::debug!("a reader stays at the normal priority");
                    }
                    loop {
                        // The lock only while taking a job: the others wait for the next.
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else { return };
                        // A panic ends the job (its caller sees `None`), not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Readers { jobs })
    }

    /// Runs `read` on a reading thread once one is free; `None` if it panicked.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        read: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller gone while the job waited (a client that hung up) is not read for:
            // an attack review queued 30,000 reads of resumes it had dropped at once, and
            // every other tenant's pages and catch-ups waited minutes behind them.
            if done.is_closed() {
                return;
            }
            let _ = done.send(read());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::sched::tests::own_nice;

    #[tokio::test]
    async fn reads_run_niced_off_the_runtime_and_a_panic_costs_no_thread() {
        let readers = Readers::start(2).unwrap();
        let here = own_nice();
        let (nice, name) = readers
            .run(|| (own_nice(), std::thread::current().name().map(str::to_owned)))
            .await
            .unwrap();
        assert_eq!(nice, (here + READER_NICE).min(19));
        assert!(name.unwrap().starts_with("broker-reader-"));
        for _ in 0..3 {
            assert_eq!(readers.run(|| -> u8 { panic!("a bad read") }).await, None);
        }
        // A read whose caller left before it began is not run: both threads are held at a
        // gate while it is queued and its caller hangs up.
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = Arc::new(std::sync::Barrier::new(3));
        let hold = || {
            let gate = Arc::clone(&gate);
            Box::pin(readers.run(move || {
                gate.wait();
            }))
        };
        let (mut first, mut second) = (hold(), hold());
        assert!(futures_util::poll!(&mut first).is_pending());
        assert!(futures_util::poll!(&mut second).is_pending());
        let mut gone = Box::pin(readers.run({
            let ran = Arc::clone(&ran);
            move || ran.store(true, std::sync::atomic::Ordering::SeqCst)
        }));
        assert!(futures_util::poll!(&mut gone).is_pending());
        drop(gone);
        gate.wait();
        assert_eq!((first.await, second.await), (Some(()), Some(())));
        // Both threads still serve, two reads at once (and after them, the gone one's turn).
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (a, b) = tokio::join!(
            readers.run({
                let barrier = Arc::clone(&barrier);
                move || barrier.wait().is_leader()
            }),
            readers.run({
                let barrier = Arc::clone(&barrier);
                move || barrier.wait().is_leader()
            }),
        );
        assert_ne!(a.unwrap(), b.unwrap());
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "a read ran for a caller that had gone"
        );
    }
}
