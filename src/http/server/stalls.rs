//! HTTP/2 answers a client leaves untaken: a connection one of whose answers has waited longer
//! than `--sse_write_timeout_secs` for the client to take any of it is closed.
//!
//! Why this and not the connection's write deadline (`limits`): over HTTP/2 the socket keeps
//! moving while a stream's answer sits still. A client that opens no flow-control window (a
//! `SETTINGS_INITIAL_WINDOW_SIZE` of 0) and answers PINGs kept every answer it asked for on
//! the server, each as large as a history page, for as long as it liked. HTTP/1.1 answers are
//! the socket's own, and the write deadline sees them.
//!
//! How: hyper takes a stream's next frame only when the client has room for it, so an answer
//! that handed hyper a frame (or was just made) and has not been asked for the next waits on
//! the client; one that is asked and has nothing (a quiet SSE stream) waits on the server and
//! is not counted. Large frames are handed over 64 KiB at a time, so a slow client that reads
//! is asked again well within the limit. A watchdog per connection runs a one-second timer
//! only while some answer waits on the client: idle connections cost no wake-up.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Bytes handed to hyper per frame at most (see the module comment).
const SLICE: usize = 64 * 1024;

/// The answers of one HTTP/2 connection.
pub struct Watch {
    /// Times are milliseconds since this, plus one (0: not waiting).
    base: Instant,
    answers: Mutex<Vec<Weak<Waiting>>>,
    /// Set when an answer starts waiting on the client while the watchdog sleeps without a
    /// timer; `waker` wakes it. (A flag and a waker, not a `Notify`: a live watchdog is
    /// polled every time its connection's task wakes, and a `Notify`'s poll takes a lock.)
    armed: AtomicBool,
    waker: AtomicWaker,
    /// Whether the connection has served an HTTP/2 request: until then the watchdog costs
    /// one load each time its connection's task wakes, and registers nothing.
    live: AtomicBool,
}

/// Since when an answer waits on the client, or 0.
struct Waiting {
    since: AtomicU64,
}

impl Watch {
    /// A connection's watch, with no answer yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Watch {
            base: Instant::now(),
            answers: Mutex::new(Vec::new()),
            armed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            live: AtomicBool::new(false),
        })
    }

    /// The connection serves an HTTP/2 request: the watchdog starts watching. Called on the
    /// connection's own task (hyper calls the service there), which writes the answer's
    /// head later and so polls the watchdog again.
    pub fn live(&self) {
        self.live.store(true, Ordering::Relaxed);
    }

    /// An answer waits on the client: wakes the watchdog if it sleeps without a timer.
    fn arm(&self) {
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Ready once [`Watch::arm`] was called since the last time.
    fn armed(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.armed.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Armed between the swap and the register: its wake may have gone to the old one.
            if self.armed.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Waiting>>> {
        // A panic while holding it leaves a list that is still whole.
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `body`, watched: it waits on the client from now until hyper first asks for a frame.
    pub fn watch<B>(self: &Arc<Self>, body: B) -> Watched<B> {
        let waiting = Arc::new(Waiting {
            since: AtomicU64::new(self.now()),
        });
        {
            let mut answers = self.lock();
            answers.retain(|w| w.strong_count() > 0);
            answers.push(Arc::downgrade(&waiting));
        }
        self.arm();
        Watched {
            inner: body,
            rest: None,
            waiting,
            watch: Arc::clone(self),
        }
    }

    /// The longest any answer has waited on the client now, if one does.
    fn longest_wait(&self) -> Option<Duration> {
        let now = self.now();
        let mut answers = self.lock();
        answers.retain(|w| w.strong_count() > 0);
        answers
            .iter()
            .filter_map(Weak::upgrade)
            .map(|w| w.since.load(Ordering::Acquire))
            .filter(|since| *since != 0)
            .map(|since| Duration::from_millis(now.saturating_sub(since)))
            .max()
    }

    /// Ready once an answer has waited on the client longer than `limit`: the connection is
    /// then closed. Sleeps without a timer while no answer waits.
    pub async fn stalled(&self, limit: Duration) {
        std::future::poll_fn(|_| {
            if self.live.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        loop {
            while let Some(waited) = self.longest_wait() {
                if waited >= limit {
                    return;
                }
                let rest = limit - waited;
                tokio::time::sleep(rest.clamp(Duration::from_millis(1), Duration::from_secs(1)))
                    .await;
            }
            // An answer that starts waiting after the look above has set the flag: no loss.
            self.armed().await;
        }
    }
}

/// An HTTP/2 answer's body under a [`Watch`].
pub struct Watched<B> {
    inner: B,
    /// What is left of a frame larger than [`SLICE`].
    rest: Option<Bytes>,
    waiting: Arc<Waiting>,
    watch: Arc<Watch>,
}

impl<B> Watched<B> {
    /// A frame goes to hyper: the next waits on the client until hyper asks for it.
    fn handed(&self, piece: Bytes) -> Frame<Bytes> {
        self.waiting
            .since
            .store(self.watch.now(), Ordering::Release);
        self.watch.arm();
        Frame::data(piece)
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        // Asked: the client had room.
        this.waiting.since.store(0, Ordering::Release);
        if let Some(rest) = &mut this.rest {
            let piece = rest.split_to(rest.len().min(SLICE));
            if rest.is_empty() {
                this.rest = None;
            }
            return Poll::Ready(Some(Ok(this.handed(piece))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() > SLICE {
                        let piece = data.split_to(SLICE);
                        this.rest = Some(data);
                        Poll::Ready(Some(Ok(this.handed(piece))))
                    } else {
                        Poll::Ready(Some(Ok(this.handed(data))))
                    }
                }
                Err(trailers) => Poll::Ready(Some(Ok(trailers))),
            },
            // Pending: it waits on the server (an SSE stream between events); the end or an
            // error: done.
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.as_ref().map_or(0, |r| r.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn a_large_frame_goes_in_slices_and_the_body_is_whole() {
        let watch = Watch::new();
        let data = Bytes::from(vec![7u8; 3 * SLICE + 5]);
        let mut body = watch.watch(Full::new(data.clone()));
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            sizes.push(piece.len());
            got.extend_from_slice(&piece);
        }
        assert_eq!(sizes, [SLICE, SLICE, SLICE, 5]);
        assert_eq!(got, data);
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_http2_requests_is_never_watched() {
        let watch = Watch::new();
        let _untaken = watch.watch(Full::new(Bytes::from_static(b"page")));
        let limit = Duration::from_secs(1);
        let stalled = tokio::time::timeout(Duration::from_secs(60), watch.stalled(limit)).await;
        assert!(
            stalled.is_err(),
            "a connection that never went live stalled"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_left_untaken_stalls_the_connection_and_one_taken_does_not() {
        let watch = Watch::new();
        watch.live();
        let limit = Duration::from_secs(5);
        // Taken whole: nothing waits on the client.
        let mut taken = watch.watch(Full::new(Bytes::from_static(b"ok")));
        while taken.frame().await.is_some() {}
        assert_eq!(watch.longest_wait(), None);
        drop(taken);
        assert_eq!(watch.longest_wait(), None);
        // Never asked for: stalled after the limit, not before.
        let untaken = watch.watch(Full::new(Bytes::from_static(b"page")));
        let stalled = tokio::time::timeout(Duration::from_secs(4), watch.stalled(limit)).await;
        assert!(stalled.is_err(), "stalled before the limit");
        let stalled = tokio::time::timeout(Duration::from_secs(3), watch.stalled(limit)).await;
        assert!(stalled.is_ok(), "not stalled after the limit");
        drop(untaken);
    }
}
