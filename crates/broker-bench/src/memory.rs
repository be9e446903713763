//! `memory`: what the state costs. The server's RSS once it serves a seeded log, for an
//! almost empty log, for U users in one tenant, and for the same U users spread over T
//! tenants with one event each: bytes per user and per tenant are the differences. Every
//! server replays its log whole (no checkpoint), and the figure includes every copy of the
//! state the server keeps.

use std::time::Duration;

use crate::Ctx;
use crate::report::Row;
use crate::seed::Seed;
use crate::target::{ScratchDir, proc};

/// RSS of a server serving a fresh log seeded with `seed`, once it settled.
async fn rss_serving(
    ctx: &Ctx,
    scratch: &ScratchDir,
    label: &str,
    seed: Seed,
) -> Result<u64, String> {
    let db = scratch.0.join(label);
    crate::seed::write(&db, seed)?;
    let (mut server, _) = crate::restart::time_to_serve(ctx, &db).await?;
    // A long replay is followed by a checkpoint in the background (a clone of the state and
    // its encoding): read once the RSS has held still for a second, within a minute.
    let pid = server.pid.ok_or("no server pid")?;
    let read = || proc::rss_bytes(pid).ok_or("cannot read the server's RSS");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut rss = read()?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = read()?;
        let still = now.abs_diff(rss) <= rss / 100;
        rss = now;
        if still || std::time::Instant::now() >= deadline {
            break;
        }
    }
    server.stop()?;
    let _ = std::fs::remove_dir_all(&db);
    Ok(rss)
}

/// The scenario: bytes per user and per tenant, medians of the runs.
pub async fn scenario(ctx: &Ctx, users: u64, tenants: u64) -> Result<Vec<Row>, String> {
    let scratch = ScratchDir::new(ctx.scratch.as_deref(), "memory").map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let seed = |users, tenants, events| Seed {
            users,
            tenants,
            events,
            names: 1,
        };
        let empty = rss_serving(ctx, &scratch, "empty", seed(1, 1, 0)).await?;
        let with_users = rss_serving(ctx, &scratch, "users", seed(users, 1, 0)).await?;
        let with_tenants =
            rss_serving(ctx, &scratch, "tenants", seed(users, tenants, tenants)).await?;
        let per_user = with_users.saturating_sub(empty) as f64 / users.max(1) as f64;
        let per_tenant = with_tenants.saturating_sub(with_users) as f64 / tenants.max(1) as f64;
        runs.push(vec![
            Row::default()
                .with("users", users)
                .with("tenants", tenants)
                .with("rss_empty_mib", empty as f64 / 1048576.0)
                .with("rss_users_mib", with_users as f64 / 1048576.0)
                .with("rss_tenants_mib", with_tenants as f64 / 1048576.0)
                .with("bytes_per_user", per_user)
                .with("bytes_per_tenant", per_tenant),
        ]);
    }
    Ok(crate::report::medians(runs))
}
