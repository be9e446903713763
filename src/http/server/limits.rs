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
//! Bodies are bounded by `--max_body_bytes`; SSE streams per user by `--max_sse_per_user`;
//! what the kernel holds for a connection that does not read by [`SEND_BUFFER_BYTES`].

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

/// The kernel send buffer of every connection (`SO_SNDBUF`, set on the listening socket,
/// whose connections inherit it; Linux counts twice this for its own bookkeeping). Left to
/// the kernel, the buffer grows to `tcp_wmem`'s maximum (4 MiB here) as soon as a client
/// stops reading: an attack review's streams that never read held 3.9 MB of kernel memory
/// each, 390 MB for one user's hundred. 256 KiB still keeps 20 Mbit/s in flight at 100 ms.
pub const SEND_BUFFER_BYTES: u32 = 256 * 1024;

/// A listening socket on `addr`, as tokio's `TcpListener::bind` makes it (address reuse, a
/// backlog of 1,024), with every connection's send buffer bounded ([`SEND_BUFFER_BYTES`]).
pub fn listen(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER_BYTES)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

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
    write_timeout: Duration,
    /// Armed while a write waits on a socket that accepts nothing.
    write_stall: Option<Pin<Box<Sleep>>>,
    reading: ReadDeadlines,
}

impl<T> Limited<T> {
    fn new(inner: T, ticket: Ticket, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Limited {
            inner,
            _ticket: ticket,
            write_timeout: timeouts.write,
            write_stall: None,
            reading: ReadDeadlines {
                request_after: timeouts.request,
                idle_after: timeouts.idle,
                last: now,
                request: Some(now + timeouts.request),
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
                self.reading.answered();
                self.write_stall = None;
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

/// The read side's two deadlines, a request's (armed from accept, or from the first byte
/// read after a response, until the first byte of the next response) and the idle
/// timeout, as instants; one timer per connection fires at or before the earlier of them.
///
/// Why lazily: a timer made and dropped per request cost an allocation, two clock reads
/// and two turns of the runtime's one timer lock (shared by every thread) per request. Here
/// reads and writes only note times; the timer is armed while a read waits and is never
/// late, only early: a new request's deadline is later than the last one's unless the
/// timer was moved past it meanwhile, which `read` undoes. An early timer is
/// moved forward once it fires.
struct ReadDeadlines {
    request_after: Duration,
    idle_after: Duration,
    /// The last byte read or written.
    last: Instant,
    /// When the request being read must be whole; `None` once it is answered.
    request: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

/// Which deadline passed.
enum Expired {
    Request,
    Idle,
}

impl Expired {
    fn error(self) -> io::Error {
        let why = match self {
            Expired::Request => "no complete request within --request_timeout_secs",
            Expired::Idle => "idle for --idle_timeout_secs",
        };
        io::Error::new(io::ErrorKind::TimedOut, why)
    }
}

impl ReadDeadlines {
    /// Bytes came in at `now`; the first after an answer starts a request, due
    /// `request_after` later.
    fn read(&mut self, now: Instant) {
        self.last = now;
        if self.request.is_none() {
            let due = now + self.request_after;
            self.request = Some(due);
            if let Some(timer) = self.timer.as_mut()
                && timer.deadline() > due.into()
            {
                timer.as_mut().reset(due.into());
            }
        }
    }

    /// A response made progress: the request is answered.
    fn answered(&mut self) {
        self.request = None;
        self.last = Instant::now();
    }

    /// What passed by `now`, if anything.
    fn expired(&self, now: Instant) -> Option<Expired> {
        if self.request.is_some_and(|due| now >= due) {
            Some(Expired::Request)
        } else if now >= self.last + self.idle_after {
            Some(Expired::Idle)
        } else {
            None
        }
    }

    /// The earlier deadline.
    fn due(&self) -> Instant {
        let idle = self.last + self.idle_after;
        self.request.map_or(idle, |request| request.min(idle))
    }

    /// A passed deadline, checked only once the timer has fired (no clock read otherwise):
    /// a client that trickles bytes is cut even if a read never has to wait.
    fn passed(&self) -> Option<Expired> {
        match &self.timer {
            Some(timer) if timer.is_elapsed() => self.expired(Instant::now()),
            _ => None,
        }
    }

    /// Ready with the deadline that passed; pending (the timer armed) otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        loop {
            let due = self.due();
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due.into())));
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    if let Some(expired) = self.expired(Instant::now()) {
                        return Poll::Ready(expired);
                    }
                    // Early: traffic or an answer moved the deadlines on. Re-arm.
                    let due = self.due();
                    if let Some(timer) = self.timer.as_mut() {
                        timer.as_mut().reset(due.into());
                    }
                }
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
        if let Some(expired) = self.reading.passed() {
            return Poll::Ready(Err(expired.error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.reading.read(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.reading.poll_expired(cx) {
                Poll::Ready(expired) => Poll::Ready(Err(expired.error())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const REQUEST: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_millis(1500);

    /// A server side under the limits (request 300 ms, idle 1.5 s) and its client.
    fn pair() -> (Limited<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let admission = Admission::new(
            10,
            0,
            Timeouts {
                request: REQUEST,
                write: Duration::from_secs(5),
                idle: IDLE,
            },
        );
        (admission.admit(server, None).unwrap(), client)
    }

    /// Reads from `server` until an error; the error's text and when it came.
    async fn cut(server: &mut Limited<DuplexStream>) -> (String, Duration) {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return (e.to_string(), started.elapsed()),
                Err(_) => panic!("no deadline within 5 s"),
            }
        }
    }

    #[tokio::test]
    async fn a_trickled_first_request_is_cut_at_its_deadline() {
        let (mut server, mut client) = pair();
        let trickle = tokio::spawn(async move {
            for _ in 0..40 {
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let (why, after) = cut(&mut server).await;
        assert!(why.contains("--request_timeout_secs"), "{why}");
        assert!(after < REQUEST * 2, "{after:?}");
        trickle.abort();
    }

    #[tokio::test]
    async fn answered_requests_are_never_cut_while_they_keep_coming() {
        let (mut server, mut client) = pair();
        let mut buf = [0u8; 64];
        // Three request timeouts' worth of requests, each answered within its own.
        let started = Instant::now();
        while started.elapsed() < REQUEST * 3 {
            client.write_all(b"request").await.unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"request");
            tokio::time::sleep(Duration::from_millis(40)).await;
            server.write_all(b"answer").await.unwrap();
            let n = client.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"answer");
        }
        // Quiet and answered: what ends it is the idle timeout, counted from the answer.
        let (why, after) = cut(&mut server).await;
        assert!(why.contains("--idle_timeout_secs"), "{why}");
        assert!(after >= IDLE - Duration::from_millis(50), "{after:?}");
        assert!(after < IDLE * 2, "{after:?}");
    }

    #[tokio::test]
    async fn a_request_after_a_long_pause_gets_its_own_deadline() {
        let (mut server, mut client) = pair();
        let mut buf = [0u8; 64];
        client.write_all(b"first").await.unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        server.write_all(b"answer").await.unwrap();
        // Wait on the read past the first deadline: the timer fires early, and is moved on
        // to the idle timeout, later than the next request's deadline.
        let waited = tokio::time::timeout(REQUEST * 2, server.read(&mut buf)).await;
        assert!(waited.is_err(), "{waited:?}");
        client.write_all(b"second, never finished").await.unwrap();
        let (why, after) = cut(&mut server).await;
        assert!(why.contains("--request_timeout_secs"), "{why}");
        // Without the timer moved back it would come at the idle timeout, 0.9 s on.
        assert!(after < REQUEST * 3 / 2, "{after:?}");
    }
}
