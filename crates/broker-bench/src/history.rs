//! `history`: a tenant of N events (seeded), then `GET /events` pages as fast as a few
//! connections ask: pages per second and latency, for pages from random cursors oldest first,
//! the newest page, and pages filtered to one name of 16. A page must cost what it returns,
//! so the figures should hardly move between 1,000 and 1,000,000 events.

use std::time::{Duration, Instant};

use crate::Ctx;
use crate::client::Conn;
use crate::report::Row;
use crate::seed::Seed;
use crate::stats::Latencies;

/// Connections asking for pages at once.
const CONNECTIONS: usize = 4;
/// Events per page.
const LIMIT: u64 = 100;
/// Distinct names in the seeded tenant (a filtered page wants one of them).
const NAMES: u64 = 16;

/// Which pages are asked for.
#[derive(Clone, Copy)]
enum Pages {
    /// `after=<random cursor>`.
    After,
    /// No cursor: the newest page.
    Newest,
    /// `after=<random cursor>&event=e3`.
    Filtered,
}

impl Pages {
    fn name(self) -> &'static str {
        match self {
            Pages::After => "after_random",
            Pages::Newest => "newest",
            Pages::Filtered => "after_random_filtered",
        }
    }

    fn query(self, after: u64) -> String {
        match self {
            Pages::After => format!("/events?after={after}&limit={LIMIT}"),
            Pages::Newest => format!("/events?limit={LIMIT}"),
            Pages::Filtered => format!("/events?after={after}&limit={LIMIT}&event=e3"),
        }
    }
}

/// A cheap pseudo-random sequence (xorshift): the generator must not be what is measured.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Asks for `pages` pages for `duration` over [`CONNECTIONS`] connections.
async fn measure(
    addr: std::net::SocketAddr,
    token: &str,
    events: u64,
    pages: Pages,
    duration: Duration,
) -> Result<(u64, u64, Latencies), String> {
    let mut tasks = Vec::new();
    let start = Instant::now();
    for k in 0..CONNECTIONS {
        let auth = format!("Bearer {token}");
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
            let mut latencies = Latencies::default();
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (k as u64 + 1);
            while start.elapsed() < duration {
                // Cursor 1 is the user; the events are 2..=events+1.
                let after = 1 + next_random(&mut seed) % events.max(1);
                let sent = Instant::now();
                let r = conn
                    .request(
                        "GET",
                        &pages.query(after),
                        &[("authorization", auth.as_str())],
                        b"",
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                latencies.push(sent.elapsed());
                if r.status == 200 {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            Ok::<_, String>((ok, errors, latencies))
        }));
    }
    let (mut ok, mut errors, mut all) = (0, 0, Latencies::default());
    for task in tasks {
        let (o, e, l) = task.await.map_err(|e| e.to_string())??;
        ok += o;
        errors += e;
        all.merge(l);
    }
    Ok((ok, errors, all))
}

/// Waits until the first checkpoint after the start holds the seeded events in its index: the
/// seeded log has none, and the start's replay indexes them at the next checkpoint, which the
/// one insert here makes due (`--checkpoint_records 1`). Seen from outside as a deep page
/// turning fast; gives up after 60 s (the rows then measure the bounded scan).
async fn await_index(addr: std::net::SocketAddr, token: &str, events: u64) -> Result<(), String> {
    let auth = format!("Bearer {token}");
    let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
    let body = br#"{"event":"warm","data":0}"#;
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    conn.request("POST", "/insert", &headers, body)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let deep = format!("/events?after={}&limit={LIMIT}", events / 2);
    while Instant::now() < deadline {
        let sent = Instant::now();
        conn.request("GET", &deep, &[("authorization", auth.as_str())], b"")
            .await
            .map_err(|e| e.to_string())?;
        if sent.elapsed() < Duration::from_millis(20) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// The scenario: for each size, a seeded one-tenant log, then each kind of page.
pub async fn scenario(ctx: &Ctx, sizes: &[u64]) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let mut rows = Vec::new();
        for &events in sizes {
            let seed = Seed {
                users: 1,
                tenants: 1,
                events,
                names: NAMES,
            };
            let extra = ["--checkpoint_records".to_owned(), "1".to_owned()];
            let server = ctx.seeded_broker(&ctx.fsync[0], seed, &extra)?;
            let token = server.jwt_for("u0").await?;
            await_index(server.addr(), &token, events).await?;
            for pages in [Pages::After, Pages::Newest, Pages::Filtered] {
                let (ok, errors, mut latencies) =
                    measure(server.addr(), &token, events, pages, ctx.duration).await?;
                let (p50, p99, max) = latencies.summary();
                rows.push(
                    Row::default()
                        .with("server", server.label())
                        .with("events", events)
                        .with("pages", pages.name())
                        .with("pages_per_s", ok as f64 / ctx.duration.as_secs_f64())
                        .with("p50_ms", p50)
                        .with("p99_ms", p99)
                        .with("max_ms", max)
                        .with("errors", errors),
                );
            }
        }
        runs.push(rows);
    }
    Ok(crate::report::medians(runs))
}
