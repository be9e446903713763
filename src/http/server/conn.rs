//! Every connection that is not an SSE stream, served by hyper itself: HTTP/1.1 or HTTP/2
//! (chosen per connection, as before), each request handed to the router as a poem request.
//!
//! Why not poem's `Server`: it boxes each connection and splits it into a read and a write
//! half behind a lock (`tokio::io::split`), and polls two cancellation tokens every time the
//! connection wakes: serving without them takes a tenth off the server's user CPU per
//! `POST /insert` (16.5 → 14.9 µs, medians of three). Here the connection is served in the task that
//! accepted it, hyper reads and writes the socket itself, and shutdown is one watch.
//! Routing, authentication, CORS, metrics and errors are the router's, unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// What hyper sends back: poem's body, boxed.
type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The server's shutdown as connections see it, and how many are still open.
#[derive(Clone)]
pub struct Connections {
    stop: watch::Receiver<bool>,
    open: Arc<watch::Sender<usize>>,
}

/// The other side of [`Connections`]: says stop, then waits for the connections to end.
pub struct Shutdown {
    stop: watch::Sender<bool>,
    open: Arc<watch::Sender<usize>>,
}

/// A new pair: connections served under [`Connections`] end when [`Shutdown::drain`] says so.
pub fn pair() -> (Connections, Shutdown) {
    let (stop, stopping) = watch::channel(false);
    let open = Arc::new(watch::Sender::new(0));
    (
        Connections {
            stop: stopping,
            open: Arc::clone(&open),
        },
        Shutdown { stop, open },
    )
}

impl Shutdown {
    /// Tells every connection to finish the requests it has and close (HTTP/2: GOAWAY), then
    /// waits at most `drain` for them; whatever is still open after that is left to the
    /// runtime's end.
    pub async fn drain(self, drain: Duration) {
        let _ = self.stop.send(true);
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(drain, open.wait_for(|n| *n == 0)).await;
    }

    /// Whether stop was said (connections accepted after it are closed at once).
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// Counts a connection open for as long as it lives.
struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn new(open: &Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        Open(Arc::clone(open))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
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
        let _open = Open::new(&self.open);
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return;
        }
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let endpoint = Arc::clone(&endpoint);
            let request = Request::from((req, local.clone(), remote.clone(), scheme.clone()));
            async move {
                let response = respond(&*endpoint, request).await;
                Ok::<_, Infallible>(hyper::Response::<Body>::from(response))
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
        builder.http1().half_close(true);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s) => {}
        }
        // Requests in flight finish (bounded by `Shutdown::drain`); no new one is read.
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}
