//! Connection limits against hostile clients: a cap on open connections and a deadline for a
//! new connection's first request (slow-loris headers or bodies), for plain and TLS alike,
//! and the idle timeout. Bodies are bounded by `--max_body_bytes`; SSE streams per user by
//! `--max_sse_per_user`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Wraps an acceptor: at most `max` connections at once (more are closed at accept), each
/// must have started its first response within `first_response`, and one without reads or
/// writes for `idle` is closed.
pub struct LimitedAcceptor<A> {
    inner: A,
    slots: Arc<Semaphore>,
    first_response: Duration,
    idle: Duration,
}

impl<A: Acceptor> LimitedAcceptor<A> {
    /// Limits `inner`.
    pub fn new(inner: A, max: usize, first_response: Duration, idle: Duration) -> Self {
        LimitedAcceptor {
            inner,
            slots: Arc::new(Semaphore::new(max.max(1))),
            first_response,
            idle,
        }
    }
}

impl<A: Acceptor> Acceptor for LimitedAcceptor<A> {
    type Io = Limited<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (io, local, remote, scheme) = self.inner.accept().await?;
            // Over the limit the connection is dropped at once: it costs nothing more.
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                tracing::warn!(%remote, "connection refused: --max_connections reached");
                continue;
            };
            let io = Limited {
                inner: io,
                _permit: permit,
                deadline: Some(Box::pin(tokio::time::sleep(self.first_response))),
                idle: Idle {
                    after: self.idle,
                    last: Instant::now(),
                    timer: None,
                },
            };
            return Ok((io, local, remote, scheme));
        }
    }
}

/// A connection holding one of the limited slots.
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    /// Until the first response byte is written.
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Idle,
}

/// The idle timeout, checked lazily: every read and write only notes the time; the timer is
/// armed while a read waits and, when it fires early (there was traffic since), moved
/// forward once. (poem's own idle timeout wakes a second task on every read and write.)
struct Idle {
    after: Duration,
    last: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Idle {
    /// Ready(()) when the connection has been idle for `after`.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let due = self.last + self.after;
            // Armed once; `last` only moves on, so the timer is never late, only early.
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due.into())));
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= self.last + self.after => {
                    return Poll::Ready(());
                }
                // Traffic moved `last` on while the timer ran: re-arm at the new due time.
                Poll::Ready(()) => timer.as_mut().reset(due.into()),
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request within --request_timeout_secs",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.idle.last = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.idle.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle for --idle_timeout_secs",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.deadline = None;
            self.idle.last = Instant::now();
        }
        written
    }

    // Delegated so hyper sees a vectored writer: it then queues body chunks (at most 16)
    // instead of copying them into one buffer of up to ~400 KiB per connection, which a
    // client that stops reading would otherwise pin.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.deadline = None;
            self.idle.last = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
