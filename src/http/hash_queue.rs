//! The queue in front of Argon2: at most `--hash_concurrency` password checks run at once,
//! at most `--hash_queue` wait, and the ones that waited least in line lately go first.
//!
//! Why not first come, first served: Argon2 is the server's dearest work (~40 ms of a core),
//! so a few dozen checks a second fill any queue. An attack review held the queue full from
//! 200 addresses with wrong passwords, or from 10 with the right passwords of three accounts
//! of its own (which no failure limit counts): every other user's login got 503, for as long
//! as the flood went on. Here each waiting check has a rank — how many checks its address
//! started within the failure window (one refused at a full line counts once a window), and
//! for ties how many its address's network (IPv4 /24, IPv6 /48) started — and the lowest rank
//! runs next; when the queue is full, a newcomer of a lower rank takes the place of the
//! highest-ranked waiter, which gets the 503 instead. A flood's addresses rank higher with
//! every check they send; a user's occasional login ranks near zero and gets the next turn.
//! Checks the server itself vouches for (the admin's new passwords, a reset whose code was
//! right) rank zero.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::auth::throttle::Key;

/// Keys whose checks are counted at most (~40 bytes each); beyond, the expired ones are
/// dropped, and if all are live the counts start afresh.
const MAX_KEYS: usize = 100_000;

/// The password-check queue (see the module comment).
pub(super) struct HashQueue {
    concurrency: usize,
    places: usize,
    window_ms: i64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    running: usize,
    waiting: Vec<Waiter>,
    next_seq: u64,
    /// Checks started per key in the current window.
    work: HashMap<Key, Work, foldhash::quality::RandomState>,
}

struct Waiter {
    rank: Rank,
    seq: u64,
    /// Sent `()` when the check may run (the running place is handed over); dropped when
    /// a newcomer of a lower rank took its place.
    go: oneshot::Sender<()>,
}

#[derive(Clone, Copy)]
struct Work {
    since_ms: i64,
    checks: u32,
}

/// A check's rank: the checks each of its keys started in the window, compared key by key
/// (the address's count first, the network's breaks its ties). Empty for checks the server
/// vouches for, which go first.
type Rank = Vec<u32>;

/// The queue is full of checks that rank no higher than this one: 503.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Full;

/// A running check's place, handed to the next waiter when dropped. It goes into the
/// blocking task with the check itself: held by the request's future, it was freed when a
/// client cancelled the request (an HTTP/2 `RST_STREAM`) while Argon2 ran on, and an attack
/// review ran 15-35 checks at once where 1 was allowed, 580 MB of Argon2 memory.
pub(super) struct Running {
    queue: Arc<HashQueue>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.queue.release();
    }
}

/// Where [`HashQueue::join`] put a check.
enum Entry {
    Now(Running),
    Later(Waiting),
}

/// A check waiting in line: if it is dropped after its turn came (its client hung up at that
/// very moment), the place it was handed goes on to the next.
struct Waiting {
    queue: Arc<HashQueue>,
    turn: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            turn.close();
            if turn.try_recv().is_ok() {
                self.queue.release();
            }
        }
    }
}

impl HashQueue {
    /// `concurrency` checks at once, `places` waiting, ranks counted over `window_ms`.
    pub(super) fn new(concurrency: usize, places: usize, window_ms: i64) -> Self {
        HashQueue {
            concurrency: concurrency.max(1),
            places,
            window_ms: window_ms.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change under the lock is a few plain steps that cannot panic halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place to run a check for `keys` (the caller's address, its pair; none for checks
    /// the server vouches for) once its turn comes, or [`Full`]. The check joins the line
    /// when this is called, not when the future is first polled.
    pub(super) fn enter(
        self: &Arc<Self>,
        keys: &[Key],
        now_ms: i64,
    ) -> impl Future<Output = Result<Running, Full>> + 'static {
        let entry = self.join(keys, now_ms);
        async move {
            let mut waiting = match entry {
                Err(full) => return Err(full),
                Ok(Entry::Now(running)) => return Ok(running),
                Ok(Entry::Later(waiting)) => waiting,
            };
            let outcome = waiting.turn.as_mut().expect("set by join").await;
            waiting.turn = None;
            match outcome {
                Ok(()) => Ok(Running {
                    queue: Arc::clone(&waiting.queue),
                }),
                Err(_) => Err(Full),
            }
        }
    }

    fn join(self: &Arc<Self>, keys: &[Key], now_ms: i64) -> Result<Entry, Full> {
        let mut inner = self.lock();
        let rank: Rank = keys
            .iter()
            .map(|k| inner.checks(k, now_ms, self.window_ms))
            .collect();
        if inner.running < self.concurrency {
            inner.running += 1;
            inner.count(keys, now_ms, self.window_ms);
            return Ok(Entry::Now(Running {
                queue: Arc::clone(self),
            }));
        }
        // Waiters whose clients left hold no place.
        inner.waiting.retain(|w| !w.go.is_closed());
        if inner.waiting.len() >= self.places {
            // The waiter that ranks highest, the newest of those: out, if it ranks above
            // this one.
            let worst = inner
                .waiting
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| (&w.rank, w.seq))
                .map(|(at, w)| (at, w.rank.clone()));
            match worst {
                Some((at, worst)) if worst > rank => {
                    // Dropping its sender answers it `Full`.
                    inner.waiting.swap_remove(at);
                }
                _ => {
                    // Seen, though not counted: an address refused at the door stayed fresh
                    // (rank 0) for its next try, and an attack review kept a full line of
                    // rank-0 checks from a few hundred addresses used again and again. Only
                    // once a window: a page in a user's browser sent 8,000 refused logins
                    // from the user's own address, each counted, and ranked the user last.
                    inner.see(keys, now_ms, self.window_ms);
                    return Err(Full);
                }
            }
        }
        inner.count(keys, now_ms, self.window_ms);
        let (go, turn) = oneshot::channel();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.waiting.push(Waiter { rank, seq, go });
        Ok(Entry::Later(Waiting {
            queue: Arc::clone(self),
            turn: Some(turn),
        }))
    }

    /// A running place is free: it goes to the lowest-ranked waiter (the oldest of those)
    /// still there, or is given back.
    fn release(&self) {
        let mut inner = self.lock();
        loop {
            let best = inner
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| (&w.rank, w.seq))
                .map(|(at, _)| at);
            let Some(at) = best else { break };
            let waiter = inner.waiting.swap_remove(at);
            if waiter.go.send(()).is_ok() {
                return;
            }
        }
        inner.running = inner.running.saturating_sub(1);
    }

    /// Checks running and waiting.
    #[cfg(test)]
    fn load(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.running, inner.waiting.len())
    }
}

impl Inner {
    fn checks(&self, key: &Key, now_ms: i64, window_ms: i64) -> u32 {
        self.work
            .get(key)
            .filter(|w| now_ms - w.since_ms < window_ms)
            .map_or(0, |w| w.checks)
    }

    /// Marks `keys` as seen in this window: a count of at least 1.
    fn see(&mut self, keys: &[Key], now_ms: i64, window_ms: i64) {
        let unseen: Vec<Key> = keys
            .iter()
            .filter(|k| self.checks(k, now_ms, window_ms) == 0)
            .copied()
            .collect();
        self.count(&unseen, now_ms, window_ms);
    }

    fn count(&mut self, keys: &[Key], now_ms: i64, window_ms: i64) {
        if self.work.len() + keys.len() > MAX_KEYS {
            self.work.retain(|_, w| now_ms - w.since_ms < window_ms);
            // Never all at once (every flooding address would rank 0 again): first the keys
            // of one check, which rank nobody above a newcomer.
            if self.work.len() + keys.len() > MAX_KEYS {
                self.work.retain(|_, w| w.checks > 1);
            }
            if self.work.len() + keys.len() > MAX_KEYS {
                self.work.clear();
            }
        }
        for key in keys {
            let work = self.work.entry(*key).or_insert(Work {
                since_ms: now_ms,
                checks: 0,
            });
            if now_ms - work.since_ms >= window_ms {
                *work = Work {
                    since_ms: now_ms,
                    checks: 0,
                };
            }
            work.checks = work.checks.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: i64 = 60_000;

    fn key(n: u8) -> Key {
        [n; 16]
    }

    /// Runs a check for `keys` to its end at once (to give the keys a rank).
    async fn past_checks(queue: &Arc<HashQueue>, keys: &[Key], n: usize) {
        for _ in 0..n {
            drop(queue.enter(keys, 0).await.unwrap());
        }
    }

    #[tokio::test]
    async fn the_lowest_rank_runs_next_and_the_oldest_among_equals() {
        let queue = Arc::new(HashQueue::new(1, 8, WINDOW));
        past_checks(&queue, &[key(1)], 5).await;
        past_checks(&queue, &[key(2)], 2).await;
        let running = queue.enter(&[key(9)], 0).await.unwrap();
        let mut a = Box::pin(queue.enter(&[key(1)], 0));
        let mut b = Box::pin(queue.enter(&[key(2)], 0));
        let mut c = Box::pin(queue.enter(&[key(3)], 0));
        let mut d = Box::pin(queue.enter(&[key(4)], 0));
        for w in [&mut a, &mut b, &mut c, &mut d] {
            assert!(futures_util::poll!(w).is_pending());
        }
        assert_eq!(queue.load(), (1, 4));
        drop(running);
        // c and d rank 0 (c came first), then b (2), then a (5).
        let c = c.await.unwrap();
        assert!(futures_util::poll!(&mut d).is_pending());
        drop(c);
        let d = d.await.unwrap();
        assert!(futures_util::poll!(&mut b).is_pending());
        drop(d);
        let b = b.await.unwrap();
        assert!(futures_util::poll!(&mut a).is_pending());
        drop(b);
        drop(a.await.unwrap());
        assert_eq!(queue.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_full_queue_takes_a_lower_rank_in_place_of_the_highest() {
        let queue = Arc::new(HashQueue::new(1, 2, WINDOW));
        past_checks(&queue, &[key(1)], 3).await;
        let _running = queue.enter(&[key(1)], 0).await.unwrap();
        // The flood's address fills the places.
        let mut first = Box::pin(queue.enter(&[key(1)], 0));
        let mut second = Box::pin(queue.enter(&[key(1)], 0));
        assert!(futures_util::poll!(&mut first).is_pending());
        assert!(futures_util::poll!(&mut second).is_pending());
        // One more of the flood: no place, and it outranks nobody.
        assert_eq!(queue.enter(&[key(1)], 0).await.err(), Some(Full));
        // A user's first check takes the newest flood check's place.
        let mut user = Box::pin(queue.enter(&[key(7)], 0));
        assert!(futures_util::poll!(&mut user).is_pending());
        assert_eq!(second.await.err(), Some(Full));
        assert!(futures_util::poll!(&mut first).is_pending());
        assert_eq!(queue.load(), (1, 2));
        // Another user's first check takes the other flood check's place.
        let mut other = Box::pin(queue.enter(&[key(5)], 0));
        assert!(futures_util::poll!(&mut other).is_pending());
        assert_eq!(first.await.err(), Some(Full));
        // Now every waiter ranks 0: a newcomer of rank 0 finds no place.
        assert_eq!(queue.enter(&[key(6)], 0).await.err(), Some(Full));
        assert_eq!(queue.load(), (1, 2));
        drop(user);
        drop(other);
    }

    #[tokio::test]
    async fn ranks_count_within_the_window() {
        let queue = Arc::new(HashQueue::new(1, 4, WINDOW));
        past_checks(&queue, &[key(1)], 3).await;
        let _running = queue.enter(&[key(9)], WINDOW).await.unwrap();
        // A window later key 1 ranks 0 again, as a fresh key does, and counts afresh.
        let mut stale = Box::pin(queue.enter(&[key(1)], WINDOW));
        assert!(futures_util::poll!(&mut stale).is_pending());
        let inner = queue.lock();
        assert_eq!(inner.checks(&key(1), WINDOW, WINDOW), 1);
        assert_eq!(inner.waiting[0].rank, [0]);
        drop(inner);
        drop(stale);
    }

    #[tokio::test]
    async fn a_waiter_gone_at_its_turn_hands_the_place_on() {
        let queue = Arc::new(HashQueue::new(1, 4, WINDOW));
        let running = queue.enter(&[key(1)], 0).await.unwrap();
        let mut gone = Box::pin(queue.enter(&[key(2)], 0));
        let mut next = Box::pin(queue.enter(&[key(3)], 0));
        assert!(futures_util::poll!(&mut gone).is_pending());
        assert!(futures_util::poll!(&mut next).is_pending());
        // The place goes to `gone`, whose client leaves before it runs.
        drop(running);
        drop(gone);
        drop(next.await.unwrap());
        assert_eq!(queue.load(), (0, 0));
        // A waiter that left before its turn is skipped.
        let running = queue.enter(&[key(1)], 0).await.unwrap();
        let mut left = Box::pin(queue.enter(&[key(2)], 0));
        assert!(futures_util::poll!(&mut left).is_pending());
        drop(left);
        drop(running);
        assert_eq!(queue.load(), (0, 0));
    }

    /// Tenth attack review: a check refused at the door was not counted, so its address
    /// stayed fresh and came back at rank 0, again and again.
    #[tokio::test]
    async fn a_check_refused_at_the_door_counts_too() {
        let queue = Arc::new(HashQueue::new(1, 1, WINDOW));
        let _running = queue.enter(&[key(1)], 0).await.unwrap();
        let mut waiting = Box::pin(queue.enter(&[key(2)], 0));
        assert!(futures_util::poll!(&mut waiting).is_pending());
        assert_eq!(queue.enter(&[key(3)], 0).await.err(), Some(Full));
        assert_eq!(queue.lock().checks(&key(3), 0, WINDOW), 1);
        // Once a window: a page in a user's browser sending thousands of refused logins
        // from the user's address ranked the user last (eleventh attack review).
        for _ in 0..100 {
            assert_eq!(queue.enter(&[key(3)], 0).await.err(), Some(Full));
        }
        assert_eq!(queue.lock().checks(&key(3), 0, WINDOW), 1);
        drop(waiting);
    }

    /// The address's count ranks first and the network's breaks ties: a fresh address in a
    /// busy network goes before an address that already checked, however quiet its network
    /// (a flood from inside a user's /24 ranked the user with the flood: 0 of 24 logins).
    #[tokio::test]
    async fn the_address_ranks_first_and_its_network_breaks_ties() {
        let queue = Arc::new(HashQueue::new(1, 2, WINDOW));
        // The user's network (key 10) is busy; the flood's address (key 1) checked once.
        past_checks(&queue, &[key(2), key(10)], 30).await;
        past_checks(&queue, &[key(1), key(11)], 1).await;
        let _running = queue.enter(&[key(9), key(19)], 0).await.unwrap();
        let mut flood_a = Box::pin(queue.enter(&[key(1), key(11)], 0));
        let mut flood_b = Box::pin(queue.enter(&[key(1), key(11)], 0));
        assert!(futures_util::poll!(&mut flood_a).is_pending());
        assert!(futures_util::poll!(&mut flood_b).is_pending());
        // A fresh address of the busy network: [0, 30] < [2, 3].
        let mut user = Box::pin(queue.enter(&[key(3), key(10)], 0));
        assert!(futures_util::poll!(&mut user).is_pending());
        assert_eq!(flood_b.await.err(), Some(Full));
        // Another fresh address of a quiet network goes first among rank-0 addresses.
        let mut quiet = Box::pin(queue.enter(&[key(4), key(12)], 0));
        assert!(futures_util::poll!(&mut quiet).is_pending());
        assert_eq!(flood_a.await.err(), Some(Full));
        let order = {
            let inner = queue.lock();
            let mut ranks: Vec<Rank> = inner.waiting.iter().map(|w| w.rank.clone()).collect();
            ranks.sort();
            ranks
        };
        assert_eq!(order, [vec![0, 0], vec![0, 30]]);
        drop(user);
        drop(quiet);
    }

    /// A full table of counts drops the keys of one check first, not every count at once
    /// (after which every flooding address ranked 0 again).
    #[test]
    fn a_full_table_keeps_the_counts_that_rank_someone() {
        let mut inner = Inner::default();
        inner.count(&[key(1)], 0, WINDOW);
        inner.count(&[key(1)], 0, WINDOW);
        for n in 0..MAX_KEYS as u32 {
            let mut k = [0; 16];
            k[..4].copy_from_slice(&n.to_le_bytes());
            k[15] = 0xff;
            inner.count(&[k], 0, WINDOW);
        }
        assert_eq!(inner.checks(&key(1), 0, WINDOW), 2);
        assert!(inner.work.len() < MAX_KEYS);
    }
}
