//! `fanout`: S subscribers of one tenant, a publisher at R inserts/s whose events carry their
//! send time; publish-to-delivery latency and an exact account of what each subscriber got.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};

use crate::client::{Conn, SseStream};
use crate::report::Row;
use crate::stats::Latencies;
use crate::{Ctx, now_micros};

/// The event name the publisher uses; subscribers ignore every other.
const EVENT: &str = "fan";

/// One fan-out load.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Subscribers (one connection each).
    pub subscribers: usize,
    /// Inserts per second.
    pub rate: u64,
    /// How long to publish.
    pub duration: Duration,
    /// Subscribers ask for `?event=fan` only, and each insert of `fan` has an insert of
    /// another name beside it: what a filtered subscriber of a busy tenant costs.
    pub filter: bool,
}

/// What a fan-out load measured.
#[derive(Default)]
pub struct FanoutResult {
    /// Inserts acknowledged.
    pub published: u64,
    /// Inserts that failed.
    pub publish_errors: u64,
    /// Acknowledged events × subscribers.
    pub expected: u64,
    /// Distinct acknowledged events received, over all subscribers.
    pub delivered: u64,
    /// Acknowledged events some subscriber never received.
    pub lost: u64,
    /// Events received twice (same sequence, or an `id:` not above the previous one).
    pub duplicated: u64,
    /// Publish-to-delivery latencies.
    pub latencies: Latencies,
    /// How long each insert took to be acknowledged, while the server fanned out.
    pub insert_latencies: Latencies,
    /// How long publishing took.
    pub elapsed: Duration,
}

impl FanoutResult {
    /// The table row.
    pub fn row(mut self, server: &str, load: Load) -> Row {
        let (p50, p99, max) = self.latencies.summary();
        let (insert_p50, insert_p99, _) = self.insert_latencies.summary();
        Row::default()
            .with("server", server)
            .with("subscribers", load.subscribers)
            .with("rate", load.rate)
            .with("filter", load.filter)
            .with("published", self.published)
            .with("expected", self.expected)
            .with("delivered", self.delivered)
            .with("lost", self.lost)
            .with("duplicated", self.duplicated)
            .with(
                "deliveries_per_s",
                self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9),
            )
            .with("p50_ms", p50)
            .with("p99_ms", p99)
            .with("max_ms", max)
            .with("publish_errors", self.publish_errors)
            .with("insert_p50_ms", insert_p50)
            .with("insert_p99_ms", insert_p99)
    }
}

struct Tally {
    seen: Vec<u8>,
    count: u64,
    duplicated: u64,
    latencies: Latencies,
}

/// Subscribes, publishes at the load's rate, waits (bounded) for every acknowledged event
/// to reach every subscriber, and accounts for each.
pub async fn load(
    addr: SocketAddr,
    sub_token: &str,
    pub_token: &str,
    load: Load,
) -> Result<FanoutResult, String> {
    load_across(addr, &[addr], sub_token, pub_token, load).await
}

/// [`load`] with the publisher on `addr` and the subscribers spread evenly over `nodes`
/// (several broker nodes on one shared log).
pub async fn load_across(
    addr: SocketAddr,
    nodes: &[SocketAddr],
    sub_token: &str,
    pub_token: &str,
    load: Load,
) -> Result<FanoutResult, String> {
    let run = uuid::Uuid::new_v4().as_u128() as u64 >> 12;
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..load.subscribers).map(|_| AtomicU64::new(0)).collect());
    let auth = format!("Bearer {sub_token}");
    // The baseline has no filters: it sends its subscribers everything, and they skip.
    let path = if load.filter && sub_token != "ceiling" {
        "/sse?event=fan"
    } else {
        "/sse"
    };
    let mut subs = Vec::with_capacity(load.subscribers);
    // Connect in waves so the listen backlog is never what is being measured.
    for wave in (0..load.subscribers).collect::<Vec<_>>().chunks(100) {
        let mut opening = Vec::new();
        for &i in wave {
            let auth = auth.clone();
            let node = nodes[i % nodes.len()];
            opening.push(tokio::spawn(async move {
                SseStream::open(node, path, &[("authorization", auth.as_str())]).await
            }));
        }
        for task in opening {
            let stream = task
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("subscribing: {e}"))?;
            subs.push(stream);
        }
    }
    let mut tallies = Vec::with_capacity(subs.len());
    for (i, stream) in subs.into_iter().enumerate() {
        let stop = stop_rx.clone();
        let progress = progress.clone();
        tallies.push(tokio::spawn(subscriber(stream, run, stop, progress, i)));
    }
    // Subscriptions are live once their response head arrived; a short settle lets the
    // snapshot frames of every stream drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let insert_latencies = Arc::new(Mutex::new(Latencies::default()));
    let errors = Arc::new(AtomicU64::new(0));
    let publishers = (load.rate / 50).clamp(1, 32);
    let total = load.rate * load.duration.as_secs_f64() as u64;
    let start = Instant::now();
    let mut pubs = Vec::new();
    for k in 0..publishers {
        let auth = format!("Bearer {pub_token}");
        let acked = acked.clone();
        let insert_latencies = insert_latencies.clone();
        let errors = errors.clone();
        pubs.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut seq = k;
            while seq < total {
                let due = start + Duration::from_secs_f64(seq as f64 / load.rate as f64);
                tokio::time::sleep_until(due.into()).await;
                if conn.is_none() {
                    conn = Conn::connect(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    seq += publishers;
                    continue;
                };
                let body = format!(
                    r#"{{"event":"{EVENT}","data":{{"run":{run},"seq":{seq},"t":{}}}}}"#,
                    now_micros()
                );
                let headers = [
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ];
                let sent = Instant::now();
                match c
                    .request("POST", "/insert", &headers, body.as_bytes())
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        insert_latencies.lock().await.push(sent.elapsed());
                        acked.lock().await.push(seq);
                        if load.filter {
                            let noise = br#"{"event":"noise","data":{"skip":true}}"#;
                            if c.request("POST", "/insert", &headers, noise).await.is_err() {
                                conn = None;
                            }
                        }
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
                seq += publishers;
            }
        }));
    }
    for p in pubs {
        p.await.map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed();
    let acked = std::mem::take(&mut *acked.lock().await);
    let published = acked.len() as u64;
    // Bounded wait for the stragglers: every subscriber must have seen every acked event.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && progress
            .iter()
            .any(|p| p.load(Ordering::Relaxed) < published)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut result = FanoutResult {
        published,
        publish_errors: errors.load(Ordering::Relaxed),
        expected: published * load.subscribers as u64,
        elapsed,
        insert_latencies: std::mem::take(&mut *insert_latencies.lock().await),
        ..Default::default()
    };
    for t in tallies {
        let tally = t.await.map_err(|e| e.to_string())?;
        for seq in &acked {
            if tally.seen.get(*seq as usize).copied().unwrap_or(0) == 0 {
                result.lost += 1;
            } else {
                result.delivered += 1;
            }
        }
        result.duplicated += tally.duplicated;
        result.latencies.merge(tally.latencies);
    }
    Ok(result)
}

async fn subscriber(
    mut stream: SseStream,
    run: u64,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Vec<AtomicU64>>,
    me: usize,
) -> Tally {
    let mut tally = Tally {
        seen: Vec::new(),
        count: 0,
        duplicated: 0,
        latencies: Latencies::default(),
    };
    let mut last_id = 0u64;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.changed() => break,
        };
        let Ok(Some(event)) = event else { break };
        if event.event != EVENT {
            continue;
        }
        let now = now_micros();
        // A scan, not a JSON parse: the generator shares the cores with the server, and at
        // tens of thousands of deliveries a second its own parsing would be what we measure.
        if number_after(&event.data, "\"run\":") != Some(run) {
            continue;
        }
        if let Some(id) = event.id {
            if id <= last_id {
                tally.duplicated += 1;
                continue;
            }
            last_id = id;
        }
        let (Some(seq), Some(t)) = (
            number_after(&event.data, "\"seq\":"),
            number_after(&event.data, "\"t\":"),
        ) else {
            continue;
        };
        let seq = seq as usize;
        if seq >= tally.seen.len() {
            tally.seen.resize((seq + 1).next_power_of_two(), 0);
        }
        if tally.seen[seq] != 0 {
            tally.duplicated += 1;
            continue;
        }
        tally.seen[seq] = 1;
        tally.count += 1;
        tally
            .latencies
            .push(Duration::from_micros(now.saturating_sub(t)));
        progress[me].store(tally.count, Ordering::Relaxed);
    }
    tally
}

/// The unsigned integer right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// The scenario: each (subscribers, rate) pair against the baseline and Broker, then, with
/// `ramp`, rates raised until p99 passes 50 ms.
pub async fn scenario(
    ctx: &Ctx,
    pairs: &[(usize, u64)],
    ramp: Option<usize>,
    filter: bool,
    nodes: usize,
) -> Result<Vec<Row>, String> {
    if nodes > 1 {
        return across_nodes(ctx, pairs, nodes).await;
    }
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let mut rows = Vec::new();
        for &(subscribers, rate) in pairs {
            let l = Load {
                subscribers,
                rate,
                duration: ctx.duration,
                filter,
            };
            let ceiling = ctx.ceiling()?;
            let r = load(ceiling.addr(), "ceiling", "ceiling", l).await?;
            rows.push(r.row("ceiling", l));
            drop(ceiling);
            for fsync in &ctx.fsync {
                let server = ctx.broker(fsync, &[])?;
                let token = server.jwt_for_new_user("t0").await?;
                let r = load(server.addr(), &token, &token, l).await?;
                rows.push(r.row(&server.label(), l));
            }
        }
        runs.push(rows);
    }
    let mut rows = crate::report::medians(runs);
    if let Some(subscribers) = ramp {
        let ceiling = ctx.ceiling()?;
        rows.push(ramp_up(ceiling.addr(), "ceiling", "ceiling", subscribers).await?);
        drop(ceiling);
        for fsync in &ctx.fsync {
            let server = ctx.broker(fsync, &[])?;
            let token = server.jwt_for_new_user("t0").await?;
            rows.push(ramp_up(server.addr(), &server.label(), &token, subscribers).await?);
        }
        rows = crate::with_fraction(rows, "max_deliveries_per_s");
    }
    Ok(rows)
}

/// Several broker nodes on one shared log (`--broker-arg=--log=nats://…`): each pair's
/// subscribers spread evenly over `nodes` nodes, the publisher on the first, against one node
/// with all of them; each node's peak resident memory during the load.
async fn across_nodes(ctx: &Ctx, pairs: &[(usize, u64)], nodes: usize) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        let mut rows = Vec::new();
        for &(subscribers, rate) in pairs {
            let l = Load {
                subscribers,
                rate,
                duration: ctx.duration,
                filter: false,
            };
            for count in [1, nodes] {
                let servers = ctx.brokers(count)?;
                let token = servers[0].jwt_for_new_user("t0").await?;
                let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr()).collect();
                // Every node must know the user before its subscribers connect.
                for &node in &addrs[1..] {
                    wait_until_known(node, &token).await?;
                }
                // Each node's peak resident memory while its subscribers are connected.
                let pids: Vec<u32> = servers.iter().filter_map(|s| s.target.pid).collect();
                let (stop, mut stopped) = watch::channel(false);
                let sampler = tokio::spawn(async move {
                    let mut peak = vec![0u64; pids.len()];
                    loop {
                        for (p, pid) in peak.iter_mut().zip(&pids) {
                            *p = (*p).max(crate::target::proc::rss_bytes(*pid).unwrap_or(0));
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = stopped.changed() => return peak,
                        }
                    }
                });
                let r = load_across(addrs[0], &addrs, &token, &token, l).await;
                let _ = stop.send(true);
                let peak = sampler.await.map_err(|e| e.to_string())?;
                let r = r?;
                let rss: Vec<f64> = peak
                    .into_iter()
                    .map(|b| b as f64 / (1024.0 * 1024.0))
                    .collect();
                let max_rss = rss.iter().copied().fold(0.0, f64::max);
                let mean_rss = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
                rows.push(
                    r.row(&servers[0].label(), l)
                        .with("nodes", count)
                        .with("subscribers_per_node", subscribers.div_ceil(count))
                        .with("rss_mib_per_node_max", max_rss)
                        .with("rss_mib_per_node_mean", mean_rss),
                );
            }
        }
        runs.push(rows);
    }
    Ok(crate::report::medians(runs))
}

/// Waits (bounded) until the node at `addr` accepts `token`: it has folded the user.
async fn wait_until_known(addr: SocketAddr, token: &str) -> Result<(), String> {
    let auth = format!("Bearer {token}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if SseStream::open(addr, "/sse", &[("authorization", auth.as_str())])
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the node at {addr} never accepted the user's token"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Doubles the rate (then refines between the last good and first bad) until publish-to-
/// delivery p99 passes 50 ms or events are lost; reports the best delivery rate below that.
async fn ramp_up(
    addr: SocketAddr,
    label: &str,
    token: &str,
    subscribers: usize,
) -> Result<Row, String> {
    let step = Duration::from_secs(3);
    let mut good: Option<(u64, FanoutResult)> = None;
    let mut bad: Option<u64> = None;
    let mut rate = 50u64;
    for _ in 0..10 {
        let l = Load {
            subscribers,
            rate,
            duration: step,
            filter: false,
        };
        let mut r = load(addr, token, token, l).await?;
        let p99 = r.latencies.quantile_ms(0.99);
        let ok = p99 <= 50.0 && r.lost == 0 && r.duplicated == 0 && r.publish_errors == 0;
        if ok {
            good = Some((rate, r));
        } else {
            bad = Some(rate);
        }
        rate = match (good.as_ref().map(|g| g.0), bad) {
            (Some(g), None) => g * 2,
            (Some(g), Some(b)) if b > g + g / 8 => (g + b) / 2,
            (None, Some(b)) if b > 10 => b / 2,
            _ => break,
        };
    }
    let (best_rate, mut best) = good.ok_or("even the lowest rate missed p99 ≤ 50 ms")?;
    let (_, p99, max) = best.latencies.summary();
    let delivered = best.delivered as f64 / best.elapsed.as_secs_f64().max(1e-9);
    Ok(Row::default()
        .with("server", label)
        .with("subscribers", subscribers)
        .with("rate", best_rate)
        .with("max_deliveries_per_s", delivered)
        .with("p99_ms", p99)
        .with("max_ms", max)
        .with(
            "first_failing_rate",
            bad.map(|b| b as f64).unwrap_or(f64::NAN),
        ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_found_by_key() {
        let data = r#"{"run":12,"seq":3,"t":456}"#;
        assert_eq!(super::number_after(data, "\"run\":"), Some(12));
        assert_eq!(super::number_after(data, "\"seq\":"), Some(3));
        assert_eq!(super::number_after(data, "\"t\":"), Some(456));
        assert_eq!(super::number_after(data, "\"x\":"), None);
    }
}
