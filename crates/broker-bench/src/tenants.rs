//! `tenants`: the insert and fan-out loads again with many tenants and many users in the
//! log; the cost must stay flat.

use std::time::Duration;

use crate::fanout::{self, Load};
use crate::report::Row;
use crate::seed::Seed;
use crate::{Ctx, insert};

/// The scenario: every (tenants, users) pair, seeded, then the two loads.
pub async fn scenario(
    ctx: &Ctx,
    tenants: &[u64],
    users: &[u64],
    connections: usize,
    fan: (usize, u64),
) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let mut rows = Vec::new();
        for &t in tenants {
            for &u in users {
                let seed = Seed {
                    users: u,
                    tenants: t,
                    // Every tenant has a snapshot (4 names) and history behind it.
                    events: (t * 8).max(1000),
                    names: 4,
                };
                let server = ctx.seeded_broker(&ctx.fsync[0], seed, &[])?;
                // Writers spread over tenants (user i is in tenant i % t).
                let mut tokens = Vec::new();
                for i in 0..u.min(8) {
                    tokens.push(server.jwt_for(&format!("u{i}")).await?);
                }
                let r = insert::load(server.addr(), &tokens, connections, ctx.duration).await;
                let inserts = r.rate();
                let mut lat = r.latencies;
                let insert_p99 = lat.quantile_ms(0.99);
                let l = Load {
                    subscribers: fan.0,
                    rate: fan.1,
                    duration: ctx.duration.min(Duration::from_secs(5)),
                    filter: false,
                };
                let mut f = fanout::load(server.addr(), &tokens[0], &tokens[0], l).await?;
                let (_, fan_p99, fan_max) = f.latencies.summary();
                rows.push(
                    Row::default()
                        .with("server", server.label())
                        .with("tenants", t)
                        .with("users", u)
                        .with("inserts_per_s", inserts)
                        .with("insert_p99_ms", insert_p99)
                        .with("fanout_p99_ms", fan_p99)
                        .with("fanout_max_ms", fan_max)
                        .with("lost", f.lost)
                        .with("duplicated", f.duplicated),
                );
            }
        }
        runs.push(rows);
    }
    let mut rows = crate::report::medians(runs);
    // Flatness: each figure against the first (fewest tenants and users) configuration.
    if let Some(base) = rows.first().cloned() {
        for row in &mut rows {
            for (key, name) in [
                ("inserts_per_s", "inserts_vs_first"),
                ("fanout_p99_ms", "fanout_p99_vs_first"),
            ] {
                if let (Some(x), Some(b)) = (row.num(key), base.num(key)) {
                    row.set(name, crate::report::round(x / b.max(1e-9)));
                }
            }
        }
    }
    Ok(rows)
}
