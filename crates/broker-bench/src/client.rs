//! A deliberately small HTTP/1.1 client: one keep-alive TCP connection per simulated client,
//! requests written in one `write`, responses parsed in place. A general client (reqwest,
//! hyper's) would spend more of the shared cores than the server under test, and hide
//! what a connection costs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The bytes were not an HTTP/1.1 response we understand.
    #[error("bad response: {0}")]
    Protocol(&'static str),
    /// A status other than the one the scenario needs.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The body, as text.
        body: String,
    },
}

/// A response: status and body.
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The whole body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON, or a `Status` error when the status is not 200.
    pub fn ok_json(self) -> Result<serde_json::Value, ClientError> {
        if self.status != 200 {
            return Err(ClientError::Status {
                status: self.status,
                body: String::from_utf8_lossy(&self.body).into_owned(),
            });
        }
        serde_json::from_slice(&self.body).map_err(|_| ClientError::Protocol("body is not JSON"))
    }
}

/// One keep-alive connection: plain TCP, or TLS over it (`Conn<TlsStream<TcpStream>>`).
pub struct Conn<S = TcpStream> {
    stream: S,
    host: String,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// Refuses to load anything but this machine, unless the operator said otherwise.
pub fn check_target(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; pass --allow-remote to load another machine"
        ))
    }
}

impl Conn {
    /// Connects with Nagle off (requests are single writes; waiting would only add latency).
    pub async fn connect(addr: SocketAddr) -> Result<Conn, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn::over(stream, addr))
    }
}

impl Conn<tokio_rustls::client::TlsStream<TcpStream>> {
    /// Connects and completes a TLS handshake (the connector's ALPN should offer `http/1.1`
    /// only: this client speaks nothing else).
    pub async fn connect_tls(
        addr: SocketAddr,
        tls: &crate::tls::Client,
    ) -> Result<Self, ClientError> {
        let stream = tls.connect(addr).await?;
        Ok(Conn::over(stream, addr))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A connection over an already connected stream to `addr`.
    pub fn over(stream: S, addr: SocketAddr) -> Conn<S> {
        Conn {
            stream,
            host: addr.to_string(),
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
        }
    }

    /// Sends one request and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, ClientError> {
        self.out.clear();
        write_head(&mut self.out, method, path, &self.host, headers);
        if !body.is_empty() || method == "POST" {
            self.out
                .extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        let head = read_head(&mut self.stream, &mut self.buf).await?;
        let body = match head.framing {
            Framing::Length(n) => {
                while self.buf.len() < n {
                    fill(&mut self.stream, &mut self.buf).await?;
                }
                let body = self.buf[..n].to_vec();
                self.buf.drain(..n);
                body
            }
            Framing::Chunked => {
                let mut dechunk = Dechunker::default();
                let mut body = Vec::new();
                loop {
                    let used = dechunk.feed(&self.buf, &mut body)?;
                    self.buf.drain(..used);
                    if dechunk.done {
                        break;
                    }
                    fill(&mut self.stream, &mut self.buf).await?;
                }
                body
            }
            Framing::UntilClose => return Err(ClientError::Protocol("response without length")),
        };
        Ok(Response {
            status: head.status,
            body,
        })
    }

    /// `POST path` with a JSON body and optional bearer token, expecting 200 and JSON back.
    pub async fn post_json(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let body = serde_json::to_vec(body).expect("JSON values serialise");
        self.request("POST", path, &headers, &body).await?.ok_json()
    }
}

fn write_head(out: &mut Vec<u8>, method: &str, path: &str, host: &str, headers: &[(&str, &str)]) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
}

async fn fill(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Result<(), ClientError> {
    buf.reserve(4096);
    let n = stream.read_buf(buf).await?;
    if n == 0 {
        return Err(ClientError::Closed);
    }
    Ok(())
}

/// Reads up to the end of the response head, leaving what follows it in `buf`.
async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<Head, ClientError> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end + 4);
            return Ok(head);
        }
        if buf.len() > 64 * 1024 {
            return Err(ClientError::Protocol("response head over 64 KiB"));
        }
        fill(stream, buf).await?;
    }
}

fn parse_head(head: &[u8]) -> Result<Head, ClientError> {
    let text = std::str::from_utf8(head).map_err(|_| ClientError::Protocol("head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or(ClientError::Protocol("no HTTP/1.1 status line"))?;
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| ClientError::Protocol("bad content-length"))?;
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Ok(Head { status, framing })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Undoes `transfer-encoding: chunked` incrementally.
#[derive(Default)]
struct Dechunker {
    /// Bytes left in the current chunk.
    remaining: usize,
    /// The CRLF after a chunk's data is still to come.
    trailer: bool,
    /// The zero-size chunk was read; the trailer section follows.
    last: bool,
    done: bool,
}

impl Dechunker {
    /// Consumes what it can of `input`, appending chunk data to `out`; returns bytes used.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ClientError> {
        let mut at = 0;
        while !self.done && at < input.len() {
            if self.remaining > 0 {
                let n = self.remaining.min(input.len() - at);
                out.extend_from_slice(&input[at..at + n]);
                self.remaining -= n;
                at += n;
                if self.remaining == 0 {
                    self.trailer = true;
                }
            } else if self.last {
                // After the last chunk: trailer lines, then an empty line.
                let Some(end) = find(&input[at..], b"\r\n") else {
                    break;
                };
                at += end + 2;
                self.done = end == 0;
            } else if self.trailer {
                if input.len() - at < 2 {
                    break;
                }
                if &input[at..at + 2] != b"\r\n" {
                    return Err(ClientError::Protocol("chunk not followed by CRLF"));
                }
                at += 2;
                self.trailer = false;
            } else {
                let Some(end) = find(&input[at..], b"\r\n") else {
                    break;
                };
                let line = std::str::from_utf8(&input[at..at + end])
                    .map_err(|_| ClientError::Protocol("chunk size not UTF-8"))?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| ClientError::Protocol("bad chunk size"))?;
                at += end + 2;
                if size == 0 {
                    self.last = true;
                } else {
                    self.remaining = size;
                }
            }
        }
        Ok(at)
    }
}

/// One SSE event as a subscriber sees it.
#[derive(Debug, Default, Clone)]
pub struct Event {
    /// The `id:` field (the cursor), if any.
    pub id: Option<u64>,
    /// The `event:` field.
    pub event: String,
    /// The `data:` field.
    pub data: String,
}

/// An open `text/event-stream` response.
pub struct SseStream {
    stream: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    /// Bytes of `body` already parsed into events.
    parsed: usize,
    dechunk: Dechunker,
}

impl SseStream {
    /// `GET path` with these headers; fails unless the answer is a 200 event stream.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, ClientError> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut out = Vec::with_capacity(256);
        write_head(&mut out, "GET", path, &addr.to_string(), headers);
        out.extend_from_slice(b"accept: text/event-stream\r\n\r\n");
        stream.write_all(&out).await?;
        let mut raw = Vec::with_capacity(4096);
        let head = read_head(&mut stream, &mut raw).await?;
        if head.status != 200 {
            return Err(ClientError::Status {
                status: head.status,
                body: String::from_utf8_lossy(&raw).into_owned(),
            });
        }
        if !matches!(head.framing, Framing::Chunked) {
            return Err(ClientError::Protocol("event stream is not chunked"));
        }
        Ok(SseStream {
            stream,
            raw,
            body: Vec::with_capacity(4096),
            parsed: 0,
            dechunk: Dechunker::default(),
        })
    }

    /// The next event (comments and `retry:` skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(event) = self.parse_one() {
                return Ok(Some(event));
            }
            if self.dechunk.done {
                return Ok(None);
            }
            if !self.raw.is_empty() {
                let used = self.dechunk.feed(&self.raw, &mut self.body)?;
                self.raw.drain(..used);
                if used > 0 {
                    continue;
                }
            }
            match fill(&mut self.stream, &mut self.raw).await {
                Ok(()) => {}
                Err(ClientError::Closed) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`SseStream::next`], failing after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        tokio::time::timeout(timeout, self.next())
            .await
            .map_err(|_| ClientError::Protocol("no event within the timeout"))?
    }

    fn parse_one(&mut self) -> Option<Event> {
        loop {
            let rest = &self.body[self.parsed..];
            let end = find(rest, b"\n\n")?;
            let block = &rest[..end];
            self.parsed += end + 2;
            let mut event = Event::default();
            let mut any = false;
            for line in block.split(|b| *b == b'\n') {
                let line = std::str::from_utf8(line).unwrap_or_default();
                if let Some(v) = line.strip_prefix("id: ") {
                    event.id = v.parse().ok();
                    any = true;
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event.event = v.to_owned();
                    any = true;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    event.data = v.to_owned();
                    any = true;
                }
            }
            if self.parsed > 64 * 1024 {
                self.body.drain(..self.parsed);
                self.parsed = 0;
            }
            if any {
                return Some(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let mut pending = wire[..split].to_vec();
            let used = d.feed(&pending, &mut out).unwrap();
            pending.drain(..used);
            pending.extend_from_slice(&wire[split..]);
            let used = d.feed(&pending, &mut out).unwrap();
            assert_eq!(used, pending.len(), "split at {split}");
            assert!(d.done);
            assert_eq!(out, b"hello, world");
        }
    }

    #[test]
    fn refuses_a_bad_chunk_size() {
        let mut d = Dechunker::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn refuses_remote_targets_unless_allowed() {
        let remote: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert!(check_target(remote, false).is_err());
        assert!(check_target(remote, true).is_ok());
        assert!(check_target("127.0.0.1:80".parse().unwrap(), false).is_ok());
    }
}
