//! Connections whose first request is `GET /sse` are served here instead of by hyper.
//!
//! Why: an SSE connection lives for hours and mostly idles. Through hyper it keeps an 8 KiB
//! read buffer and an 8 KiB header buffer, poem's per-connection tasks and the whole request
//! for its lifetime (measured: ~28 KB of server RSS per idle stream), and hyper does not
//! notice a client that went away until a later write fails (up to two keep-alive periods).
//! Here the connection is parsed once with `httparse`, the request goes through the very same
//! router (auth, CORS, metrics, errors: nothing is duplicated), and a streaming answer is
//! written as chunks straight to the socket while a 32-byte probe watches for the client
//! closing. Every other connection — and any request this module is unsure of — is handed to
//! hyper untouched ([`super::conn`]), with the bytes already read replayed in front of the
//! socket.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::conn::Connections;

/// A request head bigger than this is left to hyper (which has its own limit and answer).
const MAX_HEAD: usize = 16 * 1024;
/// Headers this module parses at most; more goes to hyper.
const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection say.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub enum Class {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// Anything but a plain `GET /sse`: hyper's.
    Other,
    /// A complete `GET /sse…` HTTP/1.1 head without a body, `len` bytes long.
    Sse { len: usize },
}

fn classify(head: &[u8]) -> Class {
    // `GET ` and the stream route's path (a test keeps this equal to `sse::PATH`).
    const PREFIX: &[u8] = b"GET /sse";
    let n = head.len().min(PREFIX.len());
    if head[..n] != PREFIX[..n] {
        return Class::Other;
    }
    if head.len() <= PREFIX.len() {
        return Class::NeedMore;
    }
    if !matches!(head[PREFIX.len()], b' ' | b'?') {
        return Class::Other;
    }
    // Lines ended by a bare LF are HTTP/1.1 all the same (RFC 9112 §2.2 lets a server take
    // them, and hyper does): such a head would never show a CRLF CRLF here, so it goes to
    // hyper at once instead of waiting for one until the request deadline.
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Class::Other;
    }
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if head.len() > MAX_HEAD {
            Class::Other
        } else {
            Class::NeedMore
        };
    };
    let len = end + 4;
    if len != head.len() {
        // Pipelined bytes after the head: hyper's business.
        return Class::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(parsed)) if parsed == len => {}
        _ => return Class::Other,
    }
    if req.version != Some(1) {
        return Class::Other;
    }
    let has_body_or_upgrade = req.headers.iter().any(|h| {
        let name = h.name;
        (name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
    });
    if has_body_or_upgrade {
        Class::Other
    } else {
        Class::Sse { len }
    }
}

/// Builds the poem request of a head [`classify`] accepted.
fn request(head: &[u8], local: LocalAddr, remote: RemoteAddr, scheme: Scheme) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let mut builder = poem::http::Request::builder()
        .method(poem::http::Method::GET)
        .uri(req.path?)
        .version(poem::http::Version::HTTP_11);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some(Request::from_parts(
        (parts, local, remote, scheme).into(),
        poem::Body::empty(),
    ))
}

/// For `broker::fuzzing::sse_head`, which holds the properties: [`classify`], the request
/// [`request`] builds from a head served here, and the size past which no head is awaited.
#[doc(hidden)]
pub fn classify_for_fuzzing(head: &[u8]) -> (Class, Option<Request>, usize) {
    let class = classify(head);
    let built = match class {
        Class::Sse { .. } => request(
            head,
            LocalAddr::default(),
            RemoteAddr::default(),
            Scheme::HTTP,
        ),
        _ => None,
    };
    (class, built, MAX_HEAD)
}

/// Reads a new connection's first request head and serves it here or hands it to hyper.
pub async fn route<Io, E>(
    mut io: Io,
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: Scheme,
    hyper: Connections,
    endpoint: Arc<E>,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Endpoint<Output = Response> + 'static,
{
    let mut head = Vec::with_capacity(1024);
    loop {
        match io.read_buf(&mut head).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match classify(&head) {
            Class::NeedMore => continue,
            Class::Other => {
                let io = Rewind::new(head, io);
                return hyper.serve(io, local, remote, scheme, endpoint).await;
            }
            Class::Sse { .. } => {
                let Some(req) = request(&head, local.clone(), remote.clone(), scheme.clone())
                else {
                    let io = Rewind::new(head, io);
                    return hyper.serve(io, local, remote, scheme, endpoint).await;
                };
                drop(head);
                // Boxed: inlined, the router's future would size this task's allocation for
                // the stream's whole life, though it finishes at once.
                let response = Box::pin(super::conn::respond(&*endpoint, req)).await;
                let _ = respond(&mut io, response).await;
                return;
            }
        }
    }
}

/// Writes `response`: an event stream as chunks until it ends or the client goes away,
/// anything else (an error answer) whole, then closes.
async fn respond<Io>(io: &mut Io, response: Response) -> io::Result<()>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let streaming = response.status() == poem::http::StatusCode::OK
        && response
            .content_type()
            .is_some_and(|t| t.starts_with(crate::http::routes::sse::CONTENT_TYPE));
    let (parts, body) = response.into_parts();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == poem::http::header::CONTENT_LENGTH
            || name == poem::http::header::TRANSFER_ENCODING
            || name == poem::http::header::CONNECTION
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n");
    if !streaming {
        let body = body.into_bytes().await.unwrap_or_default();
        head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        head.extend_from_slice(b"connection: close\r\n\r\n");
        head.extend_from_slice(&body);
        io.write_all(&head).await?;
        io.flush().await?;
        return io.shutdown().await;
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    drop(parts);
    io.write_all(&head).await?;
    io.flush().await?;
    drop(head);
    let mut frames = Box::pin(body.into_bytes_stream());
    // Bytes a client sends on a stream are not requests we answer; reading them only
    // tells us when it has gone. An EventSource sends nothing, so a client that sends more
    // than a little is cut off: read and dropped 32 bytes at a time without an end, 300 MB
    // of junk cost the server 38 times the CPU they cost the client (an attack review).
    let mut probe = [0u8; 512];
    let mut junk = 0usize;
    loop {
        tokio::select! {
            biased;
            read = io.read(&mut probe) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => {
                    junk += n;
                    if junk > MAX_SENT_ON_STREAM {
                        return Ok(());
                    }
                }
            },
            frame = frames.next() => match frame {
                Some(Ok(bytes)) if bytes.is_empty() => {}
                Some(Ok(bytes)) => {
                    write_chunk(io, &bytes).await?;
                    io.flush().await?;
                }
                Some(Err(_)) | None => {
                    io.write_all(b"0\r\n\r\n").await?;
                    io.flush().await?;
                    return io.shutdown().await;
                }
            },
        }
    }
}

/// What a stream's client may send after its request before the stream is closed: an
/// EventSource sends nothing; a little slack for a client that pipelines a stray CRLF.
pub const MAX_SENT_ON_STREAM: usize = 4096;

/// One chunk (`size CRLF data CRLF`) in as few writes as the socket allows.
async fn write_chunk<Io: AsyncWrite + Unpin>(io: &mut Io, data: &[u8]) -> io::Result<()> {
    let mut size = [0u8; 18];
    let n = {
        use std::io::Write;
        let mut cursor = io::Cursor::new(&mut size[..]);
        write!(cursor, "{:x}\r\n", data.len())?;
        cursor.position() as usize
    };
    let mut slices = [
        IoSlice::new(&size[..n]),
        IoSlice::new(data),
        IoSlice::new(b"\r\n"),
    ];
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let written = io.write_vectored(bufs).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, written);
    }
    Ok(())
}

/// A connection with bytes already read from it put back in front.
pub struct Rewind<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(prefix: Vec<u8>, inner: T) -> Self {
        Rewind {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                // Replayed: give the memory back for the connection's remaining life.
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// Accepts from `acceptor` until `stop` turns true, routing each connection by its first
/// request (each on its own task, so a slow client never holds up the next accept).
pub async fn accept_loop<A, E>(
    mut acceptor: A,
    hyper: Connections,
    endpoint: Arc<E>,
    mut stop: watch::Receiver<bool>,
) where
    A: Acceptor,
    A::Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Endpoint<Output = Response> + 'static,
{
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            accepted = acceptor.accept() => match accepted {
                Ok((io, local, remote, scheme)) => {
                    tokio::spawn(route(io, local, remote, scheme, hyper.clone(), endpoint.clone()));
                }
                Err(e) => {
                    // Out of descriptors or a failed TLS handshake: keep serving the others.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_the_stream_routes_path() {
        let prefix = format!("GET {}", crate::http::routes::sse::PATH);
        assert!(classify(prefix.as_bytes()) == Class::NeedMore);
        assert!(classify(format!("{prefix} HTTP/1.1\r\n\r\n").as_bytes()) != Class::Other);
    }

    fn sse_head(extra: &str) -> Vec<u8> {
        format!("GET /sse HTTP/1.1\r\nhost: x\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn only_plain_sse_gets_requests_are_taken() {
        let head = sse_head("authorization: Bearer t\r\n");
        assert_eq!(classify(&head), Class::Sse { len: head.len() });
        let q = b"GET /sse?last_event_id=3 HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(classify(q), Class::Sse { len: q.len() });
        for other in [
            &b"POST /insert HTTP/1.1\r\n\r\n"[..],
            b"GET /sset HTTP/1.1\r\n\r\n",
            b"GET /ssex",
            b"HEAD /sse HTTP/1.1\r\n\r\n",
            b"GET /sse HTTP/1.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /sse HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /sse HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                classify(other),
                Class::Other,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn partial_heads_wait_for_more_and_giant_ones_go_to_hyper() {
        assert_eq!(classify(b"GE"), Class::NeedMore);
        assert_eq!(classify(b"GET /sse"), Class::NeedMore);
        assert_eq!(
            classify(b"GET /sse HTTP/1.1\r\nhost: x\r\n"),
            Class::NeedMore
        );
        // Bare LF line ends: hyper's, whole or not.
        assert_eq!(classify(b"GET /sse HTTP/1.1\nhost: x\n\n"), Class::Other);
        assert_eq!(classify(b"GET /sse HTTP/1.1\nhost"), Class::Other);
        let mut giant = b"GET /sse HTTP/1.1\r\nx: ".to_vec();
        giant.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(classify(&giant), Class::Other);
    }

    #[test]
    fn the_request_carries_path_query_and_headers() {
        let head = b"GET /sse?last_event_id=9 HTTP/1.1\r\nhost: x\r\nlast-event-id: 4\r\n\r\n";
        let req = request(
            head,
            LocalAddr::default(),
            RemoteAddr::default(),
            Scheme::HTTP,
        )
        .unwrap();
        assert_eq!(req.uri().path(), "/sse");
        assert_eq!(req.uri().query(), Some("last_event_id=9"));
        assert_eq!(req.headers()["last-event-id"], "4");
    }

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_the_socket() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(b"hello".to_vec(), b);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn chunks_are_framed() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_chunk(&mut a, b"id: 1\n\n").await.unwrap();
        drop(a);
        let mut out = Vec::new();
        b.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"7\r\nid: 1\n\n\r\n");
    }
}
