//! `idle`: N open SSE connections that receive nothing: server memory per connection, CPU
//! while idle, and whether every socket is freed when its client goes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Ctx;
use crate::client::SseStream;
use crate::report::Row;
use crate::target::proc;

/// Opens `n` streams against the server `pid`, idles `idle`, closes them; one row.
pub async fn measure(
    addr: SocketAddr,
    pid: u32,
    token: &str,
    n: usize,
    idle: Duration,
    label: &str,
) -> Result<Row, String> {
    let auth = format!("Bearer {token}");
    // Warm up: the first streams allocate per-tenant and per-thread structures once.
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(open(addr, &auth).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = proc::rss_bytes(pid).ok_or("cannot read the server's RSS")?;
    let fds_before = proc::fds(pid).ok_or("cannot read the server's descriptors")?;
    let mut streams = Vec::with_capacity(n);
    let started = Instant::now();
    for wave in 0..n.div_ceil(500) {
        let mut opening = Vec::new();
        for _ in 0..(n - wave * 500).min(500) {
            let auth = auth.clone();
            opening.push(tokio::spawn(async move { open(addr, &auth).await }));
        }
        for task in opening {
            streams.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = proc::rss_bytes(pid).ok_or("cannot read the server's RSS")?;
    let ticks_before = proc::cpu_ticks(pid).ok_or("cannot read the server's CPU time")?;
    tokio::time::sleep(idle).await;
    let ticks_after = proc::cpu_ticks(pid).ok_or("cannot read the server's CPU time")?;
    let fds_open = proc::fds(pid).unwrap_or(0);
    let held = fds_open.saturating_sub(fds_before);
    drop(streams);
    drop(warm);
    // Bounded wait for the server to notice every close.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fds_after = proc::fds(pid).unwrap_or(usize::MAX);
    while Instant::now() < deadline && fds_after > fds_before.saturating_sub(50) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = proc::fds(pid).unwrap_or(usize::MAX);
    }
    let rss_closed = proc::rss_bytes(pid).unwrap_or(0);
    let per_conn = rss_open.saturating_sub(rss_before) as f64 / n as f64;
    let cpu = (ticks_after - ticks_before) as f64 / 100.0 / idle.as_secs_f64() * 100.0;
    Ok(Row::default()
        .with("server", label)
        .with("connections", n)
        .with("held", held)
        .with("open_s", open_secs)
        .with("rss_before_mib", rss_before as f64 / 1048576.0)
        .with("rss_open_mib", rss_open as f64 / 1048576.0)
        .with("bytes_per_conn", per_conn)
        .with("idle_cpu_pct", cpu)
        .with(
            "fds_left_after_close",
            fds_after.saturating_sub(fds_before.saturating_sub(50)),
        )
        .with("rss_closed_mib", rss_closed as f64 / 1048576.0))
}

async fn open(addr: SocketAddr, auth: &str) -> Result<SseStream, String> {
    let mut s = SseStream::open(addr, "/sse", &[("authorization", auth)])
        .await
        .map_err(|e| format!("opening a stream: {e}"))?;
    // Nothing to read on an empty tenant but `retry:`; read nothing more, like an idle tab.
    let _ = tokio::time::timeout(Duration::from_millis(1), s.next()).await;
    Ok(s)
}

/// The scenario: the baseline and Broker, `runs` times.
pub async fn scenario(ctx: &Ctx, n: usize, idle: Duration) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let mut rows = Vec::new();
        let ceiling = ctx.ceiling()?;
        let pid = ceiling.pid().ok_or("no pid for the baseline")?;
        rows.push(measure(ceiling.addr(), pid, "ceiling", n, idle, "ceiling").await?);
        drop(ceiling);
        // Keep-alive comments (every 15 s by default) are traffic, not idling: space them
        // beyond the measured window so it sees the connections idle.
        let server = ctx.broker(&ctx.fsync[0], &["--sse_keepalive_secs".into(), "60".into()])?;
        let pid = server
            .pid()
            .ok_or("pass --server-pid for an external server")?;
        let token = server.jwt_for_new_user("t0").await?;
        rows.push(measure(server.addr(), pid, &token, n, idle, &server.label()).await?);
        runs.push(rows);
    }
    Ok(crate::with_fraction(
        crate::report::medians(runs),
        "bytes_per_conn",
    ))
}
