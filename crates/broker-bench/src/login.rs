//! `login`: inserts and fan-out with and without a burst of Argon2id logins beside them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::client::Conn;
use crate::fanout::{self, Load};
use crate::report::Row;
use crate::stats::Latencies;
use crate::target::PASSWORD;
use crate::{Ctx, insert};

/// Logs `username` in `rate` times a second for `duration`, open loop over a few
/// connections; returns (successes, failures, latencies).
async fn logins(
    addr: SocketAddr,
    username: String,
    rate: u64,
    duration: Duration,
) -> (u64, u64, Latencies) {
    let conns = 16u64;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Latencies::default()));
    let total = rate * duration.as_secs();
    let start = Instant::now();
    let body = serde_json::json!({"username": username, "password": PASSWORD}).to_string();
    let mut tasks = Vec::new();
    for k in 0..conns {
        let (ok, failed, lat, body) = (ok.clone(), failed.clone(), lat.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut n = k;
            while n < total {
                let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                n += conns;
                if conn.is_none() {
                    conn = Conn::connect(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let sent = Instant::now();
                let headers = [("content-type", "application/json")];
                match c.request("POST", "/login", &headers, body.as_bytes()).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        lat.lock().await.push(sent.elapsed());
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let lat = std::mem::take(&mut *lat.lock().await);
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        lat,
    )
}

/// The scenario: the mixed load alone, then with `rate` logins/s beside it.
pub async fn scenario(
    ctx: &Ctx,
    rate: u64,
    connections: usize,
    fan: (usize, u64),
) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let server = ctx.broker(&ctx.fsync[0], &[])?;
        let token = server.jwt_for_new_user("t0").await?;
        let login_user = server.new_user("t1").await?;
        let mut rows = Vec::new();
        for with_logins in [false, true] {
            let l = Load {
                subscribers: fan.0,
                rate: fan.1,
                duration: ctx.duration,
                filter: false,
            };
            let addr = server.addr();
            let tokens = [token.clone()];
            let burst = async {
                if with_logins {
                    logins(addr, login_user.clone(), rate, ctx.duration).await
                } else {
                    (0, 0, Latencies::default())
                }
            };
            let (ins, fan_result, (ok, failed, mut login_lat)) = tokio::join!(
                insert::load(addr, &tokens, connections, ctx.duration),
                fanout::load(addr, &token, &token, l),
                burst
            );
            let mut f = fan_result?;
            let (_, login_p99, _) = login_lat.summary();
            rows.push(
                Row::default()
                    .with("server", server.label())
                    .with("logins_per_s", if with_logins { rate } else { 0 })
                    .with("inserts_per_s", ins.rate())
                    .with("fanout_p99_ms", f.latencies.quantile_ms(0.99))
                    .with("fanout_lost", f.lost)
                    .with("logins_ok", ok)
                    .with("logins_failed", failed)
                    .with("login_p50_ms", login_lat.quantile_ms(0.5))
                    .with("login_p99_ms", login_p99),
            );
        }
        runs.push(rows);
    }
    let mut rows = crate::report::medians(runs);
    if let (Some(a), Some(b)) = (
        rows.first().and_then(|r| r.num("inserts_per_s")),
        rows.get(1).and_then(|r| r.num("inserts_per_s")),
    ) {
        rows[1].set("inserts_vs_without", crate::report::round(b / a.max(1e-9)));
    }
    Ok(rows)
}
