//! `restart`: a log of M records; time from process start to the first successful request,
//! replaying everything and starting from a checkpoint.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::Ctx;
use crate::client::Conn;
use crate::report::Row;
use crate::seed::Seed;
use crate::target::{ScratchDir, Target, broker_args};

/// Starts the server on `db` and polls `GET /` until it answers 200: the time to serve.
pub(crate) async fn time_to_serve(
    ctx: &Ctx,
    db: &std::path::Path,
) -> Result<(Target, Duration), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut args = broker_args(db, &ctx.fsync[0], &[]);
    let at = args.iter().position(|a| a == "--port").expect("port flag") + 1;
    args[at] = port.to_string();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let target = Target::spawn_unwaited(&ctx.broker_bin, &args, addr)?;
    let deadline = start + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(mut c) = Conn::connect(addr).await
            && c.request("GET", "/", &[], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        {
            return Ok((target, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Err("the server did not answer within 600 s".into())
}

/// The scenario: seed once, then per run a full replay (checkpoints removed) and a start
/// from the checkpoint the previous graceful stop wrote.
pub async fn scenario(ctx: &Ctx, records: u64) -> Result<Vec<Row>, String> {
    let scratch = ScratchDir::new(ctx.scratch.as_deref(), "restart").map_err(|e| e.to_string())?;
    let db = scratch.0.join("db");
    let seed_start = Instant::now();
    // Mostly events, as logs are: a thousand users, 100 tenants, 64 names each.
    let users = 1000.min(records);
    crate::seed::write(
        &db,
        Seed {
            users,
            tenants: 100,
            events: records - users,
            names: 64,
        },
    )?;
    let seeded = seed_start.elapsed();
    let log_bytes = dir_bytes(&db.join("log"));
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let _ = std::fs::remove_dir_all(db.join("checkpoints"));
        let (mut server, replay) = time_to_serve(ctx, &db).await?;
        server.stop()?;
        let (mut server, from_checkpoint) = time_to_serve(ctx, &db).await?;
        server.stop()?;
        runs.push(vec![
            Row::default()
                .with("start", "full replay")
                .with("records", records)
                .with("log_mib", log_bytes as f64 / 1048576.0)
                .with("serving_after_s", replay.as_secs_f64())
                .with("records_per_s", records as f64 / replay.as_secs_f64()),
            Row::default()
                .with("start", "from checkpoint")
                .with("records", records)
                .with("log_mib", log_bytes as f64 / 1048576.0)
                .with("serving_after_s", from_checkpoint.as_secs_f64())
                .with(
                    "records_per_s",
                    records as f64 / from_checkpoint.as_secs_f64(),
                ),
        ]);
    }
    let mut rows = crate::report::medians(runs);
    for row in &mut rows {
        row.set("seed_s", crate::report::round(seeded.as_secs_f64()));
    }
    Ok(rows)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
