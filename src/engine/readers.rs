//! The threads that read the segment files for history pages and for streams catching up.
//!
//! A fixed few, at a lower CPU priority than the runtime's workers, the writer and the
//! password hashing. A filtered history page may look at 100,000 records; one user with its
//! four pages in flight, each on a thread of tokio's blocking pool at the same priority as
//! everything else, took a quarter of every other client's inserts on a 2-core machine. Niced,
//! the readers take what the request path leaves, and run at full speed when it leaves all.
//! Their number also bounds how many read buffers exist at once (it was a semaphore before).
//!
//! Reads wait in one queue per tenant, and the threads take the tenants in turn: one tenant's
//! hundred streams catching up (each read up to 100,000 records) would otherwise keep every
//! other tenant's pages waiting behind all of them, first come first served.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// How much lower the readers' priority is (`nice`: CFS then gives a busy reader about a
/// tenth of the share of a busy request worker).
const READER_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The reads waiting, by tenant, and the order the tenants take turns in.
#[derive(Default)]
struct Queue {
    waiting: HashMap<Box<str>, VecDeque<Job>>,
    /// Every tenant with a read waiting, once; the next turn is the front one's.
    turns: VecDeque<Box<str>>,
    /// The readers were dropped: the threads end once nothing waits.
    closed: bool,
}

impl Queue {
    fn push(&mut self, tenant: &str, job: Job) {
        match self.waiting.get_mut(tenant) {
            Some(jobs) => jobs.push_back(job),
            None => {
                self.waiting.insert(tenant.into(), VecDeque::from([job]));
                self.turns.push_back(tenant.into());
            }
        }
    }

    /// The front tenant's oldest read; the tenant goes to the back if it has more.
    fn next(&mut self) -> Option<Job> {
        let tenant = self.turns.pop_front()?;
        let jobs = self.waiting.get_mut(&tenant)?;
        let job = jobs.pop_front();
        if jobs.is_empty() {
            self.waiting.remove(&tenant);
        } else {
            self.turns.push_back(tenant);
        }
        job
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so a panic never poisons it; if it did, the queue
        // itself would still be whole (every change to it is one call).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reading threads; they end when this is dropped.
pub(crate) struct Readers {
    shared: Arc<Shared>,
}

impl Readers {
    /// Starts `threads` reading threads.
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        for n in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("broker-reader-{n}"))
                .spawn(move || {
                    if !super::sched::nice_this_thread(READER_NICE) {
                        tracing::debug!("a reader stays at the normal priority");
                    }
                    loop {
                        let job = {
                            let mut queue = shared.lock();
                            loop {
                                if let Some(job) = queue.next() {
                                    break job;
                                }
                                if queue.closed {
                                    return;
                                }
                                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                            }
                        };
                        // A panic ends the job (its caller sees `None`), not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Readers { shared })
    }

    /// Runs `read` for `tenant` on a reading thread, once one is free and the tenants queued
    /// before it had a turn each; `None` if it panicked.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        tenant: &str,
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
        self.shared.lock().push(tenant, job);
        self.shared.ready.notify_one();
        result.await.ok()
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
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
            .run("t", || {
                (own_nice(), std::thread::current().name().map(str::to_owned))
            })
            .await
            .unwrap();
        assert_eq!(nice, (here + READER_NICE).min(19));
        assert!(name.unwrap().starts_with("broker-reader-"));
        for _ in 0..3 {
            assert_eq!(
                readers.run("t", || -> u8 { panic!("a bad read") }).await,
                None
            );
        }
        // A read whose caller left before it began is not run: both threads are held at a
        // gate while it is queued and its caller hangs up.
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = Arc::new(std::sync::Barrier::new(3));
        let hold = || {
            let gate = Arc::clone(&gate);
            Box::pin(readers.run("t", move || {
                gate.wait();
            }))
        };
        let (mut first, mut second) = (hold(), hold());
        assert!(futures_util::poll!(&mut first).is_pending());
        assert!(futures_util::poll!(&mut second).is_pending());
        let mut gone = Box::pin(readers.run("t", {
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
            readers.run("t", {
                let barrier = Arc::clone(&barrier);
                move || barrier.wait().is_leader()
            }),
            readers.run("t", {
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

    #[tokio::test]
    async fn tenants_take_turns() {
        // One thread, held at a gate while tenant a queues five reads and then b one.
        let readers = Readers::start(1).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let mut held = Box::pin(readers.run("c", {
            let gate = Arc::clone(&gate);
            move || {
                gate.wait();
            }
        }));
        assert!(futures_util::poll!(&mut held).is_pending());
        let read = |tenant: &'static str, n: usize| {
            let order = Arc::clone(&order);
            Box::pin(readers.run(tenant, move || {
                order.lock().unwrap().push(format!("{tenant}{n}"));
            }))
        };
        let mut reads: Vec<_> = (1..=5).map(|n| read("a", n)).collect();
        reads.push(read("b", 1));
        for r in &mut reads {
            assert!(futures_util::poll!(r).is_pending());
        }
        gate.wait();
        held.await.unwrap();
        for r in reads {
            r.await.unwrap();
        }
        // First come first served would run b's read last, after all of a's.
        assert_eq!(*order.lock().unwrap(), ["a1", "b1", "a2", "a3", "a4", "a5"],);
        // The queue forgets a tenant with nothing waiting.
        let queue = readers.shared.lock();
        assert!(queue.waiting.is_empty() && queue.turns.is_empty());
    }
}
