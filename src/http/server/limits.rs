//! Connection limits against hostile clients, applied to the TCP connection before anything
//! else (a TLS handshake included):
//! - a cap on open connections (`--max_connections`) and, optionally, per client address
//!   (`--max_connections_per_ip`), checked at accept — a TLS handshake in progress holds a
//!   slot like any connection;
//! - a deadline for every request head and body (`--request_timeout_secs`): armed at accept
//!   and again at the first byte of each later request on a keep-alive connection, cleared
//!   by the first byte of the response (slow-loris headers or bodies, first or tenth request);
//! - a write deadline (`--sse_write_timeout_secs`): a connection whose socket accepts no byte
//!   of a pending write for that long is closed and its memory freed (a stream nobody reads);
//! - the idle timeout (`--idle_timeout_secs`).
//!
//! Bodies are bounded by `--max_body_bytes`; SSE streams per user by `--max_sse_per_user`.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use super::audit::LogBudget;

/// Open connections per capped address.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The limits every accepted connection is admitted under, shared by the plain and the TLS
/// accept loops.
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    per_ip: PerIp,
    max_per_ip: usize,
    timeouts: Timeouts,
    refusals: Arc<LogBudget>,
}

/// The deadlines of an admitted connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request head and body must arrive within this.
    pub request: Duration,
    /// A pending write must make progress within this.
    pub write: Duration,
    /// A connection without traffic is closed after this.
    pub idle: Duration,
}

/// A connection's hold on its slots, given back when the connection ends.
struct Ticket {
    _permit: OwnedSemaphorePermit,
    ip: Option<(IpAddr, PerIp)>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((ip, per_ip)) = &self.ip {
            let mut counts = per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(ip);
                }
            }
        }
    }
}

impl Admission {
    /// At most `max` connections (and `max_per_ip` per address, 0 = no cap) under `timeouts`.
    pub fn new(max: usize, max_per_ip: usize, timeouts: Timeouts) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max.max(1))),
            per_ip: Default::default(),
            max_per_ip,
            timeouts,
            refusals: Arc::new(LogBudget::new(1)),
        }
    }

    /// `io` from `peer` under the limits, or `None` (then dropped at once: it costs nothing
    /// more) when a cap is reached.
    pub fn admit<T>(&self, io: T, peer: Option<IpAddr>) -> Option<Limited<T>> {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.refused(peer, "--max_connections");
            return None;
        };
        let ip = match (peer, self.max_per_ip) {
            (Some(peer), max) if max > 0 => {
                let key = super::client::block(peer);
                let mut counts = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                let n = counts.entry(key).or_insert(0);
                if *n >= max {
                    drop(counts);
                    self.refused(Some(peer), "--max_connections_per_ip");
                    return None;
                }
                *n += 1;
                Some((key, Arc::clone(&self.per_ip)))
            }
            _ => None,
        };
        Some(Limited::new(
            io,
            Ticket {
                _permit: permit,
                ip,
            },
            self.timeouts,
        ))
    }

    /// One log line per second at most: a flood of refused connections must not flood the log.
    fn refused(&self, peer: Option<IpAddr>, limit: &'static str) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (write, held_back) = self.refusals.admit(now_ms);
        if write {
            match peer {
                Some(peer) => {
                    tracing::warn!(%peer, limit, also_refused_last_second = held_back, "connection refused")
                }
                None => tracing::warn!(
                    limit,
                    also_refused_last_second = held_back,
                    "connection refused"
                ),
            }
        }
    }
}

/// Wraps a plain acceptor: each connection is admitted under the [`Admission`] limits.
pub struct LimitedAcceptor<A> {
    inner: A,
    admission: Admission,
}

impl<A: Acceptor> LimitedAcceptor<A> {
    /// Limits `inner`.
    pub fn new(inner: A, admission: Admission) -> Self {
        LimitedAcceptor { inner, admission }
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
            let peer = remote.as_socket_addr().map(|a| a.ip());
            if let Some(io) = self.admission.admit(io, peer) {
                return Ok((io, local, remote, scheme));
            }
        }
    }
}

/// A connection holding one of the limited slots.
pub struct Limited<T> {
    inner: T,
    _ticket: Ticket,
    request_timeout: Duration,
    /// Armed while a request is arriving: from accept, or from the first byte read after a
    /// response, until the first byte of the next response.
    deadline: Option<Pin<Box<Sleep>>>,
    /// A response was written since the deadline was last armed: the next byte read starts
    /// a new request.
    answered: bool,
    write_timeout: Duration,
    /// Armed while a write waits on a socket that accepts nothing.
    write_stall: Option<Pin<Box<Sleep>>>,
    idle: Idle,
}

impl<T> Limited<T> {
    fn new(inner: T, ticket: Ticket, timeouts: Timeouts) -> Self {
        Limited {
            inner,
            _ticket: ticket,
            request_timeout: timeouts.request,
            deadline: Some(Box::pin(tokio::time::sleep(timeouts.request))),
            answered: false,
            write_timeout: timeouts.write,
            write_stall: None,
            idle: Idle {
                after: timeouts.idle,
                last: Instant::now(),
                timer: None,
            },
        }
    }

    /// Notes the outcome of a write: progress clears the deadlines; a write that cannot go on
    /// arms the stall timer and fails once it fires.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.deadline = None;
                self.answered = true;
                self.write_stall = None;
                self.idle.last = Instant::now();
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                let after = self.write_timeout;
                let stall = self
                    .write_stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client accepted nothing for --sse_write_timeout_secs",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
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
                    if self.answered && self.deadline.is_none() {
                        // The first byte of a later request on this connection: it too
                        // must arrive whole in time.
                        self.answered = false;
                        self.deadline = Some(Box::pin(tokio::time::sleep(self.request_timeout)));
                    }
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
        self.after_write(cx, written)
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
        self.after_write(cx, written)
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
