//! `broker-bench`: the load generator Broker ships. It speaks Broker's HTTP API over real
//! keep-alive connections (one per simulated client), measures every scenario against a
//! baseline server started in the same run, and prints a table (or, with `--json`, one JSON
//! line per scenario). `scripts/bench.sh` runs the suite and writes `bench/results.md`.

mod ceiling;
mod client;
mod fanout;
mod history;
mod idle;
mod insert;
mod login;
mod memory;
mod report;
mod restart;
mod resume;
mod seed;
mod stats;
mod target;
mod tenants;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use report::Row;
use target::{ScratchDir, Target};

#[derive(Parser)]
#[command(
    name = "broker-bench",
    version,
    about = "Load generator and benchmarks for Broker"
)]
struct Cli {
    /// Load a server that is already running instead of starting one per run.
    #[arg(long, global = true)]
    url: Option<String>,
    /// The process id of the `--url` server (for the `idle` scenario's /proc readings).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// The admin token of the `--url` server.
    #[arg(long, global = true, default_value = "letmein")]
    admin_token: String,
    /// Allow a `--url` that is not a loopback address.
    #[arg(long, global = true)]
    allow_remote: bool,
    /// The broker binary to start (default: the one beside this binary).
    #[arg(long, global = true)]
    broker: Option<PathBuf>,
    /// An extra flag for every Broker this starts (repeatable), e.g.
    /// `--broker-arg=--log=nats://127.0.0.1:4222`; `{n}` becomes a number unique to each
    /// start (`--broker-arg=--log_stream=bench{n}`: a fresh stream per run).
    #[arg(long, global = true, allow_hyphen_values = true)]
    broker_arg: Vec<String>,
    /// The fsync policies to run Broker with, comma-separated.
    #[arg(long, global = true, default_value = "always", value_delimiter = ',')]
    fsync: Vec<String>,
    /// Runs of each measurement; figures are their medians.
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    /// Seconds of load per measurement.
    #[arg(long, global = true, default_value_t = 5.0)]
    duration: f64,
    /// Where data directories go (default: the system temp dir).
    #[arg(long, global = true)]
    scratch: Option<PathBuf>,
    /// Worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Print one JSON line per scenario instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// The baseline alone: the request rate a minimal hyper server reaches here.
    Ceiling {
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// C connections insert for D seconds: inserts/s, latency p50/p99/max, errors.
    Insert {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Over HTTPS instead (scenario `insert_tls`): a self-signed certificate made at
        /// start, served by the ceiling and by Broker, once per `--protocols`.
        #[arg(long)]
        tls: bool,
        /// With `--tls`: the protocols, each offered alone by ALPN (`http1`: one keep-alive
        /// connection per client; `h2`: one connection per client, one request in flight).
        #[arg(
            long,
            default_value = "http1,h2",
            value_delimiter = ',',
            requires = "tls"
        )]
        protocols: Vec<tls::Protocol>,
    },
    /// S subscribers of one tenant, a publisher at R inserts/s: publish-to-delivery latency,
    /// delivered vs expected.
    Fanout {
        /// Subscriber counts, paired with `--rate`.
        #[arg(long, default_value = "200,1000", value_delimiter = ',')]
        subscribers: Vec<usize>,
        /// Inserts per second, paired with `--subscribers`.
        #[arg(long, default_value = "200,20", value_delimiter = ',')]
        rate: Vec<u64>,
        /// Then raise the rate with this many subscribers until p99 passes 50 ms.
        #[arg(long)]
        ramp: Option<usize>,
        /// Subscribers filter on the published name (`/sse?event=fan`) while as many inserts
        /// of another name go to the same tenant.
        #[arg(long)]
        filter: bool,
        /// Several broker nodes on one shared log (needs `--broker-arg=--log=nats://…`): the
        /// same subscribers spread over this many nodes, against one node holding them all.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// N open SSE connections: server RSS per connection, CPU while idle, sockets freed.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds of idleness measured.
        #[arg(long, default_value_t = 5)]
        idle_secs: u64,
    },
    /// A tenant of N events (seeded), then `GET /events` pages: pages/s and latency.
    History {
        #[arg(long, default_value = "1000,1000000", value_delimiter = ',')]
        events: Vec<u64>,
    },
    /// K events in the log, then a subscriber with an old Last-Event-ID: catch-up events/s.
    Resume {
        #[arg(long, default_value_t = 200_000)]
        events: u64,
    },
    /// Insert and fan-out with many tenants and users: the cost must stay flat.
    Tenants {
        #[arg(long, default_value = "1,100,10000", value_delimiter = ',')]
        tenants: Vec<u64>,
        #[arg(long, default_value = "10,100000", value_delimiter = ',')]
        users: Vec<u64>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 200)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
    /// A log of M records: time to serve after a full replay and from a checkpoint.
    Restart {
        #[arg(long, default_value_t = 10_000_000)]
        records: u64,
    },
    /// What the state costs: server RSS per user and per tenant, from seeded logs.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        users: u64,
        #[arg(long, default_value_t = 100_000)]
        tenants: u64,
    },
    /// Inserts and fan-out with and without a burst of logins beside them.
    Login {
        /// Logins per second in the burst.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 200)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        fanout_rate: u64,
    },
    /// Writes a log of seeded users and events into a new data directory (to try restarts,
    /// compaction or the log tool on a big log).
    Seed {
        /// The data directory to create (must not exist).
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        users: u64,
        #[arg(long, default_value_t = 100)]
        tenants: u64,
        #[arg(long, default_value_t = 64)]
        names: u64,
    },
    /// Runs the baseline server (what the scenarios start as `ceiling`).
    #[command(hide = true)]
    ServeCeiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Serve HTTPS with this PEM certificate (and `--tls-key`).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

/// What every scenario needs: how to get a server, and the run's settings.
pub struct Ctx {
    external: Option<(SocketAddr, Option<u32>, String)>,
    broker_bin: PathBuf,
    broker_args: Vec<String>,
    fsync: Vec<String>,
    runs: usize,
    duration: Duration,
    scratch: Option<PathBuf>,
}

/// A server under load and what to drop with it.
pub struct Server {
    target: Target,
    label: String,
    _dir: Option<ScratchDir>,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.target.addr
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.target.pid
    }

    /// How tables name it (`broker fsync=always`, `ceiling`, …).
    pub fn label(&self) -> String {
        self.label.clone()
    }

    /// Creates a fresh user in `tenant`; returns its name.
    pub async fn new_user(&self, tenant: &str) -> Result<String, String> {
        let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
        self.target
            .user_jwt(&name, tenant)
            .await
            .map_err(|e| format!("creating a user: {e}"))?;
        Ok(name)
    }

    /// A JWT of a fresh user in `tenant` (the baseline accepts anything).
    pub async fn jwt_for_new_user(&self, tenant: &str) -> Result<String, String> {
        let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
        self.target
            .user_jwt(&name, tenant)
            .await
            .map_err(|e| format!("creating a user: {e}"))
    }

    /// A JWT of a fresh user in `tenant`, created and logged in over HTTPS.
    pub async fn jwt_for_new_user_tls(
        &self,
        tls: &tls::Client,
        tenant: &str,
    ) -> Result<String, String> {
        let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let mut conn = client::Conn::connect_tls(self.addr(), tls)
            .await
            .map_err(|e| format!("connecting over TLS: {e}"))?;
        self.target
            .user_jwt_over(&mut conn, &name, tenant)
            .await
            .map_err(|e| format!("creating a user: {e}"))
    }

    /// A JWT of an existing (seeded) user.
    pub async fn jwt_for(&self, username: &str) -> Result<String, String> {
        let mut conn = client::Conn::connect(self.addr())
            .await
            .map_err(|e| e.to_string())?;
        self.target
            .login(&mut conn, username)
            .await
            .map_err(|e| format!("logging {username} in: {e}"))
    }
}

impl Ctx {
    /// The baseline server, started fresh.
    pub fn ceiling(&self) -> Result<Server, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let target = Target::spawn(&me, &["serve-ceiling".into()])?;
        Ok(Server {
            target,
            label: "ceiling".into(),
            _dir: None,
        })
    }

    /// The baseline server over HTTPS with `cert`, started fresh.
    pub fn ceiling_tls(&self, cert: &tls::SelfSigned) -> Result<Server, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let args = [
            "serve-ceiling".to_owned(),
            "--tls-cert".into(),
            cert.cert_path.display().to_string(),
            "--tls-key".into(),
            cert.key_path.display().to_string(),
        ];
        Ok(Server {
            target: Target::spawn(&me, &args)?,
            label: "ceiling".into(),
            _dir: None,
        })
    }

    /// `extra` and the `--broker-arg` flags, `{n}` replaced by a number unique to this call.
    fn with_broker_args(&self, extra: &[String]) -> Vec<String> {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unique = format!("{}x{n}", std::process::id());
        extra
            .iter()
            .cloned()
            .chain(self.broker_args.iter().map(|a| a.replace("{n}", &unique)))
            .collect()
    }

    fn label(&self, fsync: &str) -> String {
        match self
            .broker_args
            .iter()
            .find_map(|a| a.strip_prefix("--log="))
        {
            Some(log) if log.starts_with("nats://") => {
                let replicas = self
                    .broker_args
                    .iter()
                    .find_map(|a| a.strip_prefix("--log_replicas="))
                    .unwrap_or("1");
                let servers = log.split(',').count();
                let plural = if servers == 1 { "" } else { "s" };
                format!("broker log=nats R{replicas} ({servers} NATS server{plural})")
            }
            _ => format!("broker fsync={fsync}"),
        }
    }

    /// Broker with `fsync`, on a fresh data directory (or the `--url` server).
    pub fn broker(&self, fsync: &str, extra: &[String]) -> Result<Server, String> {
        if let Some((addr, pid, token)) = &self.external {
            return Ok(Server {
                target: Target::external(*addr, *pid, token.clone()),
                label: "broker (--url)".into(),
                _dir: None,
            });
        }
        let dir = ScratchDir::new(self.scratch.as_deref(), "db").map_err(|e| e.to_string())?;
        let args = target::broker_args(&dir.0, fsync, &self.with_broker_args(extra));
        Ok(Server {
            target: Target::spawn(&self.broker_bin, &args)?,
            label: self.label(fsync),
            _dir: Some(dir),
        })
    }

    /// `count` broker nodes on one shared log (the `--broker-arg` flags, `{n}` the same for
    /// all: one stream), each on a fresh data directory.
    pub fn brokers(&self, count: usize) -> Result<Vec<Server>, String> {
        let shared = self.with_broker_args(&[]);
        (0..count)
            .map(|_| {
                let dir =
                    ScratchDir::new(self.scratch.as_deref(), "db").map_err(|e| e.to_string())?;
                let args = target::broker_args(&dir.0, "never", &shared);
                Ok(Server {
                    target: Target::spawn(&self.broker_bin, &args)?,
                    label: self.label("never"),
                    _dir: Some(dir),
                })
            })
            .collect()
    }

    /// Broker on a data directory whose log was seeded first.
    pub fn seeded_broker(
        &self,
        fsync: &str,
        seed: seed::Seed,
        extra: &[String],
    ) -> Result<Server, String> {
        if self.external.is_some() {
            return Err("this scenario seeds its own log; it cannot use --url".into());
        }
        let dir = ScratchDir::new(self.scratch.as_deref(), "db").map_err(|e| e.to_string())?;
        seed::write(&dir.0, seed)?;
        let args = target::broker_args(&dir.0, fsync, &self.with_broker_args(extra));
        Ok(Server {
            target: Target::spawn(&self.broker_bin, &args)?,
            label: self.label(fsync),
            _dir: Some(dir),
        })
    }
}

/// Microseconds since this process started: the clock publish and delivery share.
pub fn now_micros() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Adds `of_ceiling` (this row's `key` over the baseline row's) to every row that has `key`.
pub fn with_fraction(mut rows: Vec<Row>, key: &str) -> Vec<Row> {
    let load = |r: &Row| (r.num("subscribers"), r.num("rate"));
    let baselines: Vec<Row> = rows
        .iter()
        .filter(|r| r.text("server") == Some("ceiling") && r.num(key).is_some())
        .cloned()
        .collect();
    for row in &mut rows {
        // The baseline of the same load (same subscribers and rate), else the first one.
        let base = baselines
            .iter()
            .find(|b| load(b) == load(row))
            .or(baselines.first());
        if let (Some(b), Some(x)) = (base.and_then(|b| b.num(key)), row.num(key)) {
            row.set("of_ceiling", report::round(x / b.max(1e-9)));
        }
    }
    rows
}

fn main() {
    let cli = Cli::parse();
    if let Scenario::ServeCeiling {
        listen,
        tls_cert,
        tls_key,
    } = cli.scenario
    {
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => match tls::server_config(&cert, &key) {
                Ok(config) => Some(config),
                Err(e) => {
                    eprintln!("ceiling: {e}");
                    std::process::exit(1);
                }
            },
            _ => None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        if let Err(e) = rt.block_on(ceiling::serve(listen, tls)) {
            eprintln!("ceiling: {e}");
            std::process::exit(1);
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("broker-bench: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    now_micros();
    let external = match &cli.url {
        Some(url) => {
            let hostport = url
                .strip_prefix("http://")
                .ok_or(
                    "--url must be http://HOST:PORT (`insert --tls` starts its own HTTPS servers)",
                )?
                .trim_end_matches('/');
            let addr = tokio::net::lookup_host(hostport)
                .await
                .map_err(|e| format!("--url {url}: {e}"))?
                .next()
                .ok_or_else(|| format!("--url {url}: no address"))?;
            client::check_target(addr, cli.allow_remote)?;
            Some((addr, cli.server_pid, cli.admin_token.clone()))
        }
        None => None,
    };
    let ctx = Ctx {
        external,
        broker_bin: cli.broker.clone().unwrap_or_else(target::default_broker),
        broker_args: cli.broker_arg.clone(),
        fsync: cli.fsync.clone(),
        runs: cli.runs.max(1),
        duration: Duration::from_secs_f64(cli.duration.max(0.1)),
        scratch: cli.scratch.clone(),
    };
    let (name, rows) = match cli.scenario {
        Scenario::Ceiling { connections } => {
            let mut runs = Vec::new();
            for _ in 0..ctx.runs {
                let server = ctx.ceiling()?;
                let r = insert::load(server.addr(), &["x".into()], connections, ctx.duration).await;
                runs.push(vec![r.row("ceiling", connections)]);
            }
            ("ceiling", report::medians(runs))
        }
        Scenario::Insert {
            connections,
            tls: false,
            ..
        } => ("insert", insert::scenario(&ctx, connections).await?),
        Scenario::Insert {
            connections,
            tls: true,
            protocols,
        } => (
            // Its own scenario name, so bench/results.jsonl keeps both.
            "insert_tls",
            insert::scenario_tls(&ctx, connections, &protocols).await?,
        ),
        Scenario::Fanout {
            subscribers,
            rate,
            ramp,
            filter,
            nodes,
        } => {
            if subscribers.len() != rate.len() {
                return Err("--subscribers and --rate pair up: give as many of each".into());
            }
            if nodes > 1 && (ramp.is_some() || filter || ctx.external.is_some()) {
                return Err("--nodes starts its own nodes, without --ramp or --filter".into());
            }
            if nodes > 1
                && !ctx
                    .broker_args
                    .iter()
                    .any(|a| a.starts_with("--log=nats://"))
            {
                return Err("--nodes needs a shared log: --broker-arg=--log=nats://…".into());
            }
            let pairs: Vec<(usize, u64)> = subscribers.into_iter().zip(rate).collect();
            // Its own scenario name, so bench/results.jsonl keeps both rows.
            (
                if filter {
                    "fanout_filtered"
                } else if nodes > 1 {
                    "fanout_nodes"
                } else {
                    "fanout"
                },
                fanout::scenario(&ctx, &pairs, ramp, filter, nodes).await?,
            )
        }
        Scenario::Idle {
            connections,
            idle_secs,
        } => (
            "idle",
            idle::scenario(&ctx, connections, Duration::from_secs(idle_secs)).await?,
        ),
        Scenario::History { events } => ("history", history::scenario(&ctx, &events).await?),
        Scenario::Resume { events } => ("resume", resume::scenario(&ctx, events).await?),
        Scenario::Tenants {
            tenants,
            users,
            connections,
            subscribers,
            rate,
        } => (
            "tenants",
            tenants::scenario(&ctx, &tenants, &users, connections, (subscribers, rate)).await?,
        ),
        Scenario::Restart { records } => ("restart", restart::scenario(&ctx, records).await?),
        Scenario::Memory { users, tenants } => {
            ("memory", memory::scenario(&ctx, users, tenants).await?)
        }
        Scenario::Login {
            rate,
            connections,
            subscribers,
            fanout_rate,
        } => (
            "login",
            login::scenario(&ctx, rate, connections, (subscribers, fanout_rate)).await?,
        ),
        Scenario::Seed {
            db,
            events,
            users,
            tenants,
            names,
        } => {
            if db.exists() {
                return Err(format!(
                    "{} exists; seed writes a new data directory",
                    db.display()
                ));
            }
            let seed = seed::Seed {
                users,
                tenants,
                events,
                names,
            };
            let last = seed::write(&db, seed)?;
            println!("seeded {} with {last} records", db.display());
            return Ok(());
        }
        Scenario::ServeCeiling { .. } => unreachable!("handled before the runtime starts"),
    };
    if cli.json {
        println!("{}", report::json_line(name, &rows));
    } else {
        report::print_table(name, &rows);
    }
    Ok(())
}
