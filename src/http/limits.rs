//! Connection limits against hostile clients: a cap on open connections and a deadline for a
//! new connection's first request (slow-loris headers or bodies), for plain and TLS alike.
//! Idle connections are closed by poem's idle timeout; bodies are bounded by
//! `--max_body_bytes`; SSE streams per user by `--max_sse_per_user`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Wraps an acceptor: at most `max` connections at once (more are closed at accept), and each
/// must have started its first response within `first_response`.
pub struct LimitedAcceptor<A> {
    inner: A,
    slots: Arc<Semaphore>,
    first_response: Duration,
}

impl<A: Acceptor> LimitedAcceptor<A> {
    /// Limits `inner`.
    pub fn new(inner: A, max: usize, first_response: Duration) -> Self {
        LimitedAcceptor {
            inner,
            slots: Arc::new(Semaphore::new(max.max(1))),
            first_response,
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
