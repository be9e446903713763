//! The baseline: a minimal in-memory HTTP/1.1 server on plain hyper (what poem runs on),
//! answering the same requests the scenarios send, with no storage, no auth and no JSON
//! beyond what the load generator reads. Whatever rate it reaches is the most the machine
//! and the load generator allow; every Broker figure is also reported as a fraction of it.
//!
//! With a certificate it serves HTTPS instead: tokio-rustls in front (ALPN `h2` and
//! `http/1.1`, as Broker offers), hyper-util's auto builder choosing HTTP/2 or HTTP/1.1 per
//! connection (as poem serves Broker).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

type Body = BoxBody<Bytes, Infallible>;

struct Shared {
    cursor: AtomicU64,
    feed: broadcast::Sender<Bytes>,
}

/// Serves until the process is killed; prints `ceiling listening on http://ADDR` (or
/// `https://`, with `tls`) first.
pub async fn serve(addr: SocketAddr, tls: Option<rustls::ServerConfig>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("ceiling listening on {scheme}://{}", listener.local_addr()?);
    let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    let shared = Arc::new(Shared {
        cursor: AtomicU64::new(0),
        // Deep enough that the fan-out ramp measures queueing, not lag-drops.
        feed: broadcast::channel(1 << 16).0,
    });
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let shared = shared.clone();
        if let Some(acceptor) = acceptor.clone() {
            tokio::spawn(async move {
                // A failed handshake is the client's problem; the baseline reports nothing.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req| handle(shared.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            continue;
        }
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            // Errors are clients going away; the baseline has nothing to report about them.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(match (parts.method, path.as_str()) {
        (Method::POST, "/insert") => {
            // Parse like a real server would, so the baseline pays for JSON too.
            let parsed: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) => return Ok(json(400, r#"{"error":"bad JSON"}"#.into())),
            };
            let cursor = shared.cursor.fetch_add(1, Ordering::Relaxed) + 1;
            let event = parsed["event"].as_str().unwrap_or("e");
            let frame = format!("id: {cursor}\nevent: {event}\ndata: {}\n\n", parsed["data"]);
            let _ = shared.feed.send(Bytes::from(frame));
            json(200, format!(r#"{{"id":"{cursor}","cursor":{cursor}}}"#))
        }
        (Method::POST, "/create_user") => json(200, r#"{"id":"ceiling"}"#.into()),
        (Method::POST, "/login") => json(200, r#"{"jwt":"ceiling"}"#.into()),
        (Method::GET, "/sse") => sse(shared.feed.subscribe()),
        (Method::GET | Method::HEAD, "/") => {
            let cursor = shared.cursor.load(Ordering::Relaxed);
            json(200, format!(r#"{{"status":"ok","cursor":{cursor}}}"#))
        }
        _ => json(404, r#"{"error":"not found"}"#.into()),
    })
}

fn json(status: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static response parts are valid")
}

fn sse(rx: broadcast::Receiver<Bytes>) -> Response<Body> {
    let first = Bytes::from_static(b"retry: 3000\n\n");
    let frames = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(first) = first {
            return Some((Ok(Frame::data(first)), (None, rx)));
        }
        loop {
            match rx.recv().await {
                Ok(frame) => return Some((Ok(Frame::data(frame)), (None, rx))),
                // A lagging subscriber of the baseline skips ahead; the ramp reports loss.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("static response parts are valid")
}
