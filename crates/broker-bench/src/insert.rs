//! `insert`: C keep-alive connections insert as fast as they are answered for D seconds.
//! With `--tls`, the same over HTTPS, once per protocol (HTTP/1.1, HTTP/2), against the
//! ceiling over HTTPS and Broker serving the same self-signed certificate.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Ctx;
use crate::client::Conn;
use crate::report::Row;
use crate::stats::Latencies;
use crate::target::ScratchDir;
use crate::tls::{self, Protocol, SelfSigned};

/// What one insert load measured.
#[derive(Default)]
pub struct InsertResult {
    /// Acknowledged (200) inserts.
    pub ok: u64,
    /// Non-200 answers and failed connections.
    pub errors: u64,
    /// Request latencies of the acknowledged ones.
    pub latencies: Latencies,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl InsertResult {
    /// Acknowledged inserts per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The row of a table: rate, latencies, errors.
    pub fn row(mut self, server: &str, connections: usize) -> Row {
        let rate = self.rate();
        let (p50, p99, max) = self.latencies.summary();
        Row::default()
            .with("server", server)
            .with("connections", connections)
            .with("inserts_per_s", rate)
            .with("p50_ms", p50)
            .with("p99_ms", p99)
            .with("max_ms", max)
            .with("errors", self.errors)
    }
}

/// How the clients reach the server.
#[derive(Clone)]
pub enum Via {
    /// HTTP/1.1 over TCP.
    Plain,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    Https1(tls::Client),
    /// HTTP/2 over TLS (ALPN `h2`): one connection per client, one request in flight on it.
    H2(tls::Client),
}

/// Runs `connections` inserting clients against `addr` until `until`, connection `i` using
/// `tokens[i % len]`.
pub async fn load(
    addr: SocketAddr,
    tokens: &[String],
    connections: usize,
    duration: Duration,
) -> InsertResult {
    load_via(addr, tokens, connections, duration, &Via::Plain).await
}

/// [`load`], the clients reaching the server `via` TCP, HTTPS or HTTP/2 over TLS.
pub async fn load_via(
    addr: SocketAddr,
    tokens: &[String],
    connections: usize,
    duration: Duration,
    via: &Via,
) -> InsertResult {
    let start = Instant::now();
    let until = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let auth = format!("Bearer {}", tokens[i % tokens.len()]);
        let via = via.clone();
        tasks.push(tokio::spawn(async move {
            match via {
                Via::Plain => one_client(|| Conn::connect(addr), auth, i, until).await,
                Via::Https1(tls) => {
                    let tls = &tls;
                    one_client(|| Conn::connect_tls(addr, tls), auth, i, until).await
                }
                Via::H2(tls) => one_h2_client(addr, &tls, auth, i, until).await,
            }
        }));
    }
    let mut total = InsertResult::default();
    for task in tasks {
        if let Ok(r) = task.await {
            total.ok += r.ok;
            total.errors += r.errors;
            total.latencies.merge(r.latencies);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// The body of insert `n` of client `i`.
fn insert_body(body: &mut Vec<u8>, i: usize, n: u64) {
    body.clear();
    let _ = write!(body, r#"{{"event":"e{}","data":{{"n":{n}}}}}"#, i % 16);
}

async fn one_client<S, C, F, E>(connect: C, auth: String, i: usize, until: Instant) -> InsertResult
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Fn() -> F,
    F: Future<Output = Result<Conn<S>, E>>,
{
    let mut r = InsertResult::default();
    let mut conn = None;
    let mut n = 0u64;
    let mut body = Vec::with_capacity(64);
    while Instant::now() < until {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect().await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    r.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        insert_body(&mut body, i, n);
        n += 1;
        let sent = Instant::now();
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        match c.request("POST", "/insert", &headers, &body).await {
            Ok(resp) if resp.status == 200 => {
                r.ok += 1;
                r.latencies.push(sent.elapsed());
            }
            Ok(_) => r.errors += 1,
            Err(_) => {
                r.errors += 1;
                conn = None;
            }
        }
    }
    r
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_connect(addr: SocketAddr, tls: &tls::Client) -> Result<H2Sender, String> {
    let stream = tls.connect(addr).await.map_err(|e| e.to_string())?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends with an error when the server goes; the next request reports it.
        let _ = conn.await;
    });
    Ok(send)
}

/// One HTTP/2 client: its own TLS connection, one insert in flight at a time (as the
/// HTTP/1.1 clients, so that the two protocols' figures compare).
async fn one_h2_client(
    addr: SocketAddr,
    tls: &tls::Client,
    auth: String,
    i: usize,
    until: Instant,
) -> InsertResult {
    let mut r = InsertResult::default();
    let uri: hyper::Uri = format!("https://{addr}/insert")
        .parse()
        .expect("an address makes a valid URI");
    let mut sender: Option<H2Sender> = None;
    let mut n = 0u64;
    let mut body = Vec::with_capacity(64);
    while Instant::now() < until {
        let send = match sender.as_mut() {
            Some(s) => s,
            None => match h2_connect(addr, tls).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    r.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        insert_body(&mut body, i, n);
        n += 1;
        let req = hyper::Request::post(uri.clone())
            .header("authorization", auth.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(&body)))
            .expect("valid request parts");
        let sent = Instant::now();
        let answered = match send.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                // The whole body, as the HTTP/1.1 client reads it.
                match resp.into_body().collect().await {
                    Ok(_) => Ok(status),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match answered {
            Ok(status) if status == 200 => {
                r.ok += 1;
                r.latencies.push(sent.elapsed());
            }
            Ok(_) => r.errors += 1,
            Err(_) => {
                r.errors += 1;
                sender = None;
            }
        }
    }
    r
}

/// `insert --tls`: for each protocol, the ceiling over HTTPS, then Broker serving the same
/// certificate under each fsync policy, `runs` times; `of_ceiling` is against the ceiling
/// of the same protocol.
pub async fn scenario_tls(
    ctx: &Ctx,
    connections: usize,
    protocols: &[Protocol],
) -> Result<Vec<Row>, String> {
    if ctx.external.is_some() {
        return Err(
            "insert --tls starts its own servers (with its own certificate); it cannot use --url"
                .into(),
        );
    }
    let dir = ScratchDir::new(ctx.scratch.as_deref(), "tls").map_err(|e| e.to_string())?;
    let cert = SelfSigned::generate(&dir.0)?;
    // Users are created over HTTPS/1.1 (Broker refuses nothing over it; a client for setup).
    let setup = cert.client(Protocol::Http1)?;
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let mut rows = Vec::new();
        for &protocol in protocols {
            let client = cert.client(protocol)?;
            let via = match protocol {
                Protocol::Http1 => Via::Https1(client.clone()),
                Protocol::H2 => Via::H2(client.clone()),
            };
            let ceiling = ctx.ceiling_tls(&cert)?;
            probe(&ceiling, &client, protocol).await?;
            let r = load_via(
                ceiling.addr(),
                &["ceiling".into()],
                connections,
                ctx.duration,
                &via,
            )
            .await;
            rows.push(protocol_row(
                r.row(&format!("ceiling {}", protocol.label()), connections),
                protocol,
            ));
            drop(ceiling);
            for fsync in &ctx.fsync {
                let server = ctx.broker(fsync, &broker_tls_args(&cert))?;
                probe(&server, &client, protocol).await?;
                let token = server.jwt_for_new_user_tls(&setup, "t0").await?;
                let r = load_via(server.addr(), &[token], connections, ctx.duration, &via).await;
                let label =
                    server
                        .label()
                        .replacen("broker", &format!("broker {}", protocol.label()), 1);
                rows.push(protocol_row(r.row(&label, connections), protocol));
            }
        }
        runs.push(rows);
    }
    Ok(with_fraction_per_protocol(
        crate::report::medians(runs),
        "inserts_per_s",
    ))
}

/// Fails unless `server` agrees to `protocol` by ALPN: the load would count every refused
/// connection as an error and measure nothing.
async fn probe(
    server: &crate::Server,
    client: &tls::Client,
    protocol: Protocol,
) -> Result<(), String> {
    client
        .connect(server.addr())
        .await
        .map(drop)
        .map_err(|e| format!("{} over TLS at {}: {e}", protocol.label(), server.addr()))
}

/// Puts `protocol` second, after `server`.
fn protocol_row(row: Row, protocol: Protocol) -> Row {
    let mut out = Row::default();
    for (k, v) in row.0 {
        out.set(&k, v);
        if k == "server" {
            out.set("protocol", protocol.label().into());
        }
    }
    out
}

/// Broker's flags for HTTPS with the certificate files (`--auto_cert false` is among the
/// flags every started Broker gets), and a JWT secret of its own: `--secure` refuses the
/// default one.
fn broker_tls_args(cert: &SelfSigned) -> Vec<String> {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    vec![
        "--secure".into(),
        "true".into(),
        "--cert_path".into(),
        cert.cert_path.display().to_string(),
        "--key_path".into(),
        cert.key_path.display().to_string(),
        "--jwt_secret".into(),
        secret,
    ]
}

/// Adds `of_ceiling` (this row's `key` over that of the `ceiling …` row of the same
/// `protocol`) to every row that has both.
fn with_fraction_per_protocol(mut rows: Vec<Row>, key: &str) -> Vec<Row> {
    let baselines: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.text("server").is_some_and(|s| s.starts_with("ceiling")))
        .filter_map(|r| Some((r.text("protocol")?.to_owned(), r.num(key)?)))
        .collect();
    for row in &mut rows {
        let base = row
            .text("protocol")
            .and_then(|p| baselines.iter().find(|(bp, _)| bp == p))
            .map(|(_, b)| *b);
        if let (Some(b), Some(x)) = (base, row.num(key)) {
            row.set("of_ceiling", crate::report::round(x / b.max(1e-9)));
        }
    }
    rows
}

/// The scenario: the baseline, then Broker under each fsync policy, `runs` times.
pub async fn scenario(ctx: &Ctx, connections: usize) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let mut rows = Vec::new();
        let ceiling = ctx.ceiling()?;
        let r = load(
            ceiling.addr(),
            &["ceiling".into()],
            connections,
            ctx.duration,
        )
        .await;
        rows.push(r.row("ceiling", connections));
        drop(ceiling);
        for fsync in &ctx.fsync {
            let server = ctx.broker(fsync, &[])?;
            let token = server.jwt_for_new_user("t0").await?;
            let r = load(server.addr(), &[token], connections, ctx.duration).await;
            rows.push(r.row(&server.label(), connections));
        }
        runs.push(rows);
    }
    Ok(crate::with_fraction(
        crate::report::medians(runs),
        "inserts_per_s",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(server: &str, protocol: Option<Protocol>, rate: f64) -> Row {
        let r = Row::default()
            .with("server", server)
            .with("inserts_per_s", rate);
        match protocol {
            Some(p) => protocol_row(r, p),
            None => r,
        }
    }

    #[test]
    fn each_protocol_is_a_fraction_of_its_own_ceiling() {
        let rows = with_fraction_per_protocol(
            vec![
                row("ceiling https/1.1", Some(Protocol::Http1), 1000.0),
                row(
                    "broker https/1.1 fsync=always",
                    Some(Protocol::Http1),
                    250.0,
                ),
                row("ceiling h2", Some(Protocol::H2), 500.0),
                row("broker h2 fsync=always", Some(Protocol::H2), 250.0),
                row("broker h2 fsync=never", None, 250.0),
            ],
            "inserts_per_s",
        );
        let of = |i: usize| rows[i].num("of_ceiling");
        assert_eq!(of(0), Some(1.0));
        assert_eq!(of(1), Some(0.25));
        assert_eq!(of(2), Some(1.0));
        assert_eq!(of(3), Some(0.5));
        assert_eq!(of(4), None, "no protocol, no baseline");
        assert_eq!(rows[1].text("protocol"), Some("https/1.1"));
        let keys: Vec<&str> = rows[3].0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[..2], ["server", "protocol"]);
    }

    #[test]
    fn insert_bodies_are_json() {
        let mut body = Vec::new();
        insert_body(&mut body, 17, 42);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["event"], "e1");
        assert_eq!(v["data"]["n"], 42);
    }
}
