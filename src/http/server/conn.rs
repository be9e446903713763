//! Every connection that is not an SSE stream, served by hyper itself: HTTP/1.1 or HTTP/2
//! (chosen per connection, as before), each request handed to the router as a poem request.
//!
//! Why not poem's `Server`: it boxes each connection and splits it into a read and a write
//! half behind a lock (`tokio::io::split`), and polls two cancellation tokens every time the
//! connection wakes: serving without them takes a tenth off the server's user CPU per
//! `POST /insert` (16.5 → 14.9 µs, medians of three). Here the connection is served in the task that
//! accepted it, hyper reads and writes the socket itself, and shutdown is one flag per
//! connection ([`Stops`]).
//! Routing, authentication, CORS, metrics and errors are the router's, unchanged.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Bytes of its answer an HTTP/2 stream may buffer beyond what its client has taken.
pub const H2_SEND_BUFFER: usize = 64 * 1024;

/// HTTP/2 streams a connection may have open at once.
pub const H2_MAX_STREAMS: u32 = 100;

/// The most an HTTP/1.1 connection buffers of what it reads: a request head must fit (a
/// larger one gets 431), and a body is read through it in pieces. hyper's default (~400 KiB)
/// let a head held open pin that much per connection, uncounted: an attack review held
/// 3,000 such heads, 1.1 GB, without an account. 32 KiB is twice what the direct SSE path
/// takes of a head.
pub const H1_MAX_BUF: usize = 32 * 1024;

/// What hyper sends back: poem's body, boxed.
type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The server's shutdown as connections see it, and how many are still open.
#[derive(Clone)]
pub struct Connections {
    stops: Arc<Stops>,
    /// How long an HTTP/2 answer may wait on its client (`--sse_write_timeout_secs`, see
    /// [`super::stalls`]).
    untaken: Duration,
}

/// The other side of [`Connections`]: says stop, then waits for the connections to end.
pub struct Shutdown {
    stop: watch::Sender<bool>,
    stops: Arc<Stops>,
}

/// A new pair: connections served under [`Connections`] end when [`Shutdown::drain`] says so;
/// an HTTP/2 one also when an answer waited `untaken` on its client.
pub fn pair(untaken: Duration) -> (Connections, Shutdown) {
    let stops = Arc::new(Stops::default());
    (
        Connections {
            stops: Arc::clone(&stops),
            untaken,
        },
        Shutdown {
            stop: watch::Sender::new(false),
            stops,
        },
    )
}

impl Shutdown {
    /// Tells every connection to finish the requests it has and close (HTTP/2: GOAWAY), then
    /// waits at most `drain` for them; whatever is still open after that is left to the
    /// runtime's end.
    pub async fn drain(self, drain: Duration) {
        let _ = self.stop.send(true);
        self.stops.say();
        let mut open = self.stops.open.subscribe();
        let _ = tokio::time::timeout(drain, open.wait_for(|n| *n == 0)).await;
    }

    /// Whether stop was said (the accept loop stops taking connections).
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// The stop signal, one flag per open connection; their number is what `drain` waits on.
///
/// Why not a `watch` each connection waits on: a connection's task polls its stop future
/// every time it wakes (about three times per request), and a `watch`'s waiting future
/// takes a lock shared with other connections on every poll; a flag of its own costs a
/// load and a compare-exchange on memory nobody else touches until shutdown.
#[derive(Default)]
struct Stops {
    said: AtomicBool,
    next: AtomicU64,
    flags: Mutex<HashMap<u64, Arc<Flag>>>,
    /// How many flags there are: the connections still open.
    open: watch::Sender<usize>,
}

/// One connection's stop: set once, with the connection's task to wake.
#[derive(Default)]
struct Flag {
    said: AtomicBool,
    waker: AtomicWaker,
}

impl Stops {
    /// Sets every connection's flag and wakes it; connections registered later see `said`.
    fn say(&self) {
        self.said.store(true, Ordering::SeqCst);
        for flag in self.lock().values() {
            flag.said.store(true, Ordering::Release);
            flag.waker.wake();
        }
    }

    /// A flag for a new connection, already set if stop was said.
    fn register(self: &Arc<Self>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let flag = Arc::new(Flag::default());
        {
            let mut flags = self.lock();
            flags.insert(id, Arc::clone(&flag));
            self.open.send_replace(flags.len());
        }
        // After the insert: a `say` that took the lock first has set `said` before it.
        if self.said.load(Ordering::SeqCst) {
            flag.said.store(true, Ordering::Release);
        }
        Registered {
            stops: Arc::clone(self),
            id,
            flag,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Flag>>> {
        // A panic while holding it leaves a map that is still whole.
        self.flags.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's place among the [`Stops`], given up when the connection ends.
struct Registered {
    stops: Arc<Stops>,
    id: u64,
    flag: Arc<Flag>,
}

impl Registered {
    /// Whether stop was said.
    fn said(&self) -> bool {
        self.flag.said.load(Ordering::Acquire)
    }

    /// Ready once stop is said.
    fn stopped(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.said() {
                return Poll::Ready(());
            }
            self.flag.waker.register(cx.waker());
            // Set between the load and the register: `say` may have woken the old waker.
            if self.said() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut flags = self.stops.lock();
        flags.remove(&self.id);
        self.stops.open.send_replace(flags.len());
    }
}

/// `req`'s answer from `endpoint`: its error, if it gives one, as the error's response.
///
/// Not boxed: the router does its work up to the route before it returns its future, which
/// holds only what the answer needs (`server::front`), and hyper keeps one allocation per
/// connection for the future of the request in flight; the route's own future is boxed
/// there. (Before, the router's future was 6.6 KB, boxed per request here.)
pub fn respond<E: Endpoint<Output = Response>>(
    endpoint: &E,
    req: Request,
) -> impl Future<Output = Response> + Send + '_ {
    let answer = endpoint.call(req);
    async move { answer.await.unwrap_or_else(|err| err.into_response()) }
}

/// What every request of one connection is served with.
struct Connection<E> {
    endpoint: Arc<E>,
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: Scheme,
}

impl Connections {
    /// Serves `io` until the client closes it or shutdown finishes its requests.
    pub async fn serve<Io, E>(
        &self,
        io: Io,
        local: LocalAddr,
        remote: RemoteAddr,
        scheme: Scheme,
        endpoint: Arc<E>,
    ) where
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        E: Endpoint<Output = Response> + 'static,
    {
        let stop = self.stops.register();
        if stop.said() {
            return;
        }
        // Each request's future holds the connection's own handle: a clone of the endpoint's
        // `Arc`, shared by every connection, counted on a cache line both cores wrote on
        // every request.
        let this = Arc::new(Connection {
            endpoint,
            local,
            remote,
            scheme,
        });
        let watch = super::stalls::Watch::new();
        let watching = Arc::clone(&watch);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let this = Arc::clone(&this);
            // Only HTTP/2 answers can sit still while the socket moves (see `stalls`).
            let watch = (req.version() == hyper::Version::HTTP_2).then(|| {
                watching.live();
                Arc::clone(&watching)
            });
            let request = Request::from((
                req,
                this.local.clone(),
                this.remote.clone(),
                this.scheme.clone(),
            ));
            async move {
                let response =
                    hyper::Response::<Body>::from(respond(&*this.endpoint, request).await);
                Ok::<_, Infallible>(match watch {
                    Some(watch) => response.map(|body| Body::new(watch.watch(body))),
                    None => response,
                })
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that shuts its sending side once its request is out (`nc -N`, HTTP/1.0
        // habits) still gets its answer; hyper's default drops the request unanswered. It also
        // spares a read while each request is in flight, which found the read buffer shared
        // with that request's headers and allocated a new 8 KiB one per request (-7 % of an
        // insert's instructions). The price: a client that goes away is seen at the next
        // write, not at once. A stream opened as a connection's first request is served in
        // `streams`, which watches for the close; one opened on a reused HTTP/1.1 connection
        // is served here, and a vanished client is seen within two `--sse_keepalive_secs`.
        builder.http1().half_close(true).max_buf_size(H1_MAX_BUF);
        // HTTP/2: hyper's defaults let each of 200 streams buffer 400 KiB of its answer in
        // user space while the client takes nothing, so answers that fit were handed over
        // whole and left every count of what is in flight (history pages, stream chunks):
        // one user pinned 350 MB in 8.5 s (an attack review). 64 KiB per stream is the
        // protocol's own default window, and 100 streams what browsers expect at least.
        builder
            .http2()
            .max_send_buf_size(H2_SEND_BUFFER)
            .max_concurrent_streams(H2_MAX_STREAMS);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.stopped() => {}
            // Dropping the connection frees every answer it held.
            _ = watch.stalled(self.untaken) => {
                tracing::debug!("an HTTP/2 answer waited on its client for --sse_write_timeout_secs; connection closed");
                return;
            }
        }
        // Requests in flight finish (bounded by `Shutdown::drain`); no new one is read.
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::EndpointExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn endpoint() -> Arc<impl Endpoint<Output = Response>> {
        Arc::new(poem::endpoint::make_sync(|_| "ok").map_to_response())
    }

    fn serve(connections: &Connections, io: DuplexStream) -> tokio::task::JoinHandle<()> {
        let connections = connections.clone();
        tokio::spawn(async move {
            connections
                .serve(
                    io,
                    LocalAddr::default(),
                    RemoteAddr::default(),
                    Scheme::HTTP,
                    endpoint(),
                )
                .await
        })
    }

    /// Everything the server sends until it closes (bounded by 5 s).
    async fn until_closed(client: &mut DuplexStream) -> String {
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut all));
        assert!(read.await.is_ok(), "still open after 5 s");
        String::from_utf8_lossy(&all).into_owned()
    }

    #[tokio::test]
    async fn stop_closes_idle_keep_alive_connections_and_refuses_new_ones() {
        let (connections, shutdown) = pair(Duration::from_secs(30));
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..3 {
            let (server, mut client) = tokio::io::duplex(4096);
            served.push(serve(&connections, server));
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = client.read(&mut buf).await.unwrap();
            let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("ok"), "{answer}");
            clients.push(client);
        }
        // One of them closed by its client first: it leaves the stop's list.
        drop(clients.pop());
        served.pop().unwrap().await.unwrap();
        let started = std::time::Instant::now();
        shutdown.drain(Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        for (mut client, served) in clients.into_iter().zip(served) {
            assert_eq!(until_closed(&mut client).await, "");
            served.await.unwrap();
        }
        assert!(connections.stops.lock().is_empty());
        assert_eq!(*connections.stops.open.borrow(), 0);
        // After stop, a new connection is closed unanswered.
        let (server, mut client) = tokio::io::duplex(4096);
        let late = serve(&connections, server);
        let _ = client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(until_closed(&mut client).await, "");
        late.await.unwrap();
    }
}
