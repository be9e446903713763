//! `insert`: C keep-alive connections insert as fast as they are answered for D seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Ctx;
use crate::client::Conn;
use crate::report::Row;
use crate::stats::Latencies;

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

/// Runs `connections` inserting clients against `addr` until `until`, connection `i` using
/// `tokens[i % len]`.
pub async fn load(
    addr: SocketAddr,
    tokens: &[String],
    connections: usize,
    duration: Duration,
) -> InsertResult {
    let start = Instant::now();
    let until = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let auth = format!("Bearer {}", tokens[i % tokens.len()]);
        tasks.push(tokio::spawn(async move {
            one_client(addr, auth, i, until).await
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

async fn one_client(addr: SocketAddr, auth: String, i: usize, until: Instant) -> InsertResult {
    let mut r = InsertResult::default();
    let mut conn = None;
    let mut n = 0u64;
    let mut body = Vec::with_capacity(64);
    while Instant::now() < until {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    r.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        body.clear();
        use std::io::Write;
        let _ = write!(body, r#"{{"event":"e{}","data":{{"n":{n}}}}}"#, i % 16);
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
