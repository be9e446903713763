//! `resume`: a log of K events, then one subscriber with an old `Last-Event-ID`: how fast it
//! catches up, and that it gets every event once, in order.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Ctx;
use crate::client::SseStream;
use crate::report::Row;
use crate::seed::Seed;

/// Reads from `after` to `last` inclusive; returns the row.
pub async fn catch_up(
    addr: SocketAddr,
    token: &str,
    after: u64,
    last: u64,
    label: &str,
) -> Result<Row, String> {
    let auth = format!("Bearer {token}");
    let resume = after.to_string();
    let start = Instant::now();
    let mut stream = SseStream::open(
        addr,
        "/sse",
        &[
            ("authorization", auth.as_str()),
            ("last-event-id", resume.as_str()),
        ],
    )
    .await
    .map_err(|e| format!("subscribing: {e}"))?;
    let mut expect = after + 1;
    let mut out_of_order = 0u64;
    let mut received = 0u64;
    let mut first_event = None;
    while expect <= last {
        let event = stream
            .next_within(Duration::from_secs(30))
            .await
            .map_err(|e| format!("after {received} events: {e}"))?
            .ok_or("the stream ended early")?;
        let Some(id) = event.id else { continue };
        first_event.get_or_insert_with(|| start.elapsed());
        if id != expect {
            out_of_order += 1;
        }
        expect = id + 1;
        received += 1;
    }
    let elapsed = start.elapsed();
    Ok(Row::default()
        .with("server", label)
        .with("events", received)
        .with("out_of_order", out_of_order)
        .with(
            "first_event_ms",
            first_event.unwrap_or_default().as_secs_f64() * 1000.0,
        )
        .with("seconds", elapsed.as_secs_f64())
        .with(
            "events_per_s",
            received as f64 / elapsed.as_secs_f64().max(1e-9),
        ))
}

/// The scenario: a seeded log of `events` events in one tenant, read from its start.
pub async fn scenario(ctx: &Ctx, events: u64) -> Result<Vec<Row>, String> {
    let seed = Seed {
        users: 1,
        tenants: 1,
        events,
        names: 16,
    };
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let server = ctx.seeded_broker(&ctx.fsync[0], seed, &[])?;
        let token = server.jwt_for("u0").await?;
        // Cursor 1 is the user; the events are 2..=events+1.
        let row = catch_up(server.addr(), &token, 1, events + 1, &server.label()).await?;
        runs.push(vec![row]);
    }
    Ok(crate::report::medians(runs))
}
