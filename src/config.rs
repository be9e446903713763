//! Flags, in two stages: [`Cli`] as clap parses it, then [`Config`], validated and resolved.
//! Request handlers only ever see a [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::engine::FsyncPolicy;

/// `broker`: serve (no subcommand) or work on a log (`broker log …`).
#[derive(Debug, Parser)]
#[command(
    name = "broker",
    version,
    about = "A real-time backend in one binary: users, identity and events over Server-Sent Events, on an append-only log.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A tool instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server flags.
    #[command(flatten)]
    pub serve: ServeFlags,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and maintain the log.
    #[command(subcommand)]
    Log(crate::tool::cli::LogCommand),
}

/// The server's flags: 15.x names and defaults, plus new ones with sensible defaults.
/// Each can also be set as `BROKER_<FLAG>` in the environment.
#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct ServeFlags {
    /// Port to listen on [default: 8080, or 443 with --secure true].
    #[arg(long, env = "BROKER_PORT")]
    pub port: Option<u16>,
    /// Address to listen on. The default serves this machine only; `0.0.0.0` (or `::`) serves
    /// the network and requires a real --admin_token and --jwt_secret.
    #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// Origins whose pages may call from a browser: `*` for any (never the admin routes,
    /// never with cookies), or a comma-separated list (`https://app.example,…`).
    #[arg(long, env = "BROKER_ORIGIN", default_value = "*")]
    pub origin: String,
    /// This server's own origin(s) as browsers reach it (`https://broker.example`,
    /// comma-separated): pages served from it (the console) are same-origin. A browser that
    /// names another host in `Host` is refused (DNS rebinding); IP addresses and `localhost`
    /// are always known.
    #[arg(long, env = "BROKER_PUBLIC_ORIGIN")]
    pub public_origin: Option<String>,
    /// Reverse proxies whose forwarding header (--trusted_proxy_header) is believed
    /// (comma-separated addresses or CIDR blocks, e.g. `127.0.0.1,10.0.0.0/8`). Headers from
    /// anyone else are ignored.
    #[arg(long, env = "BROKER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
    /// The header the trusted proxies write the client into: `x-forwarded-for` (with
    /// `X-Forwarded-Proto`; nginx, HAProxy, Caddy, Traefik, cloud load balancers) or
    /// `forwarded` (RFC 7239). Only that one is read: the other passes through a proxy
    /// untouched, as the client sent it.
    #[arg(
        long,
        env = "BROKER_TRUSTED_PROXY_HEADER",
        value_enum,
        default_value_t = ProxyHeader::XForwardedFor
    )]
    pub trusted_proxy_header: ProxyHeader,
    /// With --secure: how long browsers must reach this host over HTTPS only
    /// (`Strict-Transport-Security: max-age=<secs>`, this host only, no preload); 0 sends no
    /// such header. A proxy that terminates TLS in front of Broker sends its own.
    #[arg(long, env = "BROKER_HSTS_MAX_AGE_SECS", default_value_t = 31_536_000)]
    pub hsts_max_age_secs: u64,
    /// Lifetime of a JWT issued at login, in seconds.
    #[arg(long, env = "BROKER_JWT_EXPIRY", default_value_t = 86_400)]
    pub jwt_expiry: u64,
    /// Secret for signing JWTs (HS256), at least 32 bytes off loopback (`openssl rand -hex 32`).
    /// The default is refused off loopback and with --secure.
    #[arg(
        long,
        env = "BROKER_JWT_SECRET",
        default_value = "secret",
        hide_env_values = true
    )]
    pub jwt_secret: String,
    /// Serve HTTPS.
    #[arg(long, env = "BROKER_SECURE", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub secure: bool,
    /// With --secure: obtain certificates automatically (ACME).
    #[arg(long, env = "BROKER_AUTO_CERT", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auto_cert: bool,
    /// With --secure and --auto_cert false: PEM private key.
    #[arg(long, env = "BROKER_KEY_PATH", default_value = "certs/private_key.pem")]
    pub key_path: PathBuf,
    /// With --secure and --auto_cert false: PEM certificate chain.
    #[arg(long, env = "BROKER_CERT_PATH", default_value = "certs/chain.pem")]
    pub cert_path: PathBuf,
    /// Directory for ACME account and certificate cache.
    #[arg(long, env = "BROKER_CERTS", default_value = "certs")]
    pub certs: PathBuf,
    /// Data directory: the log lives in <db>/log.
    #[arg(long, env = "BROKER_DB", default_value = "db")]
    pub db: PathBuf,
    /// Domain name for automatic certificates.
    #[arg(long, env = "BROKER_DOMAIN")]
    pub domain: Option<String>,
    /// Token required by the admin endpoints (`openssl rand -hex 32`). The default is refused
    /// off loopback and with --secure.
    #[arg(
        long,
        env = "BROKER_ADMIN_TOKEN",
        default_value = "letmein",
        hide_env_values = true
    )]
    pub admin_token: String,
    /// Refuse weak passwords (zxcvbn score below 3).
    #[arg(long, env = "BROKER_PASSWORD_CHECKER", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub password_checker: bool,
    /// Scopes are permissions on event names: inserting E needs `E:write` or `*:write`, and
    /// streams carry only the names a user holds `E:read` or `*:read` for (off: 15.x, where
    /// scopes are only handed on in /verify).
    #[arg(long, env = "BROKER_ENFORCE_SCOPES", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enforce_scopes: bool,
    /// Validity of password-reset codes, in seconds.
    #[arg(long, env = "BROKER_TOTP_DURATION", default_value_t = 300)]
    pub totp_duration: u64,
    /// When to fsync: `always` (before every acknowledgement, group commit), `interval:<ms>`
    /// (acknowledge once written, fsync at most every <ms>), or `never` (tests only).
    #[arg(long, env = "BROKER_FSYNC", default_value = "always")]
    pub fsync: FsyncPolicy,
    /// The log: `embedded` (the segmented log under --db) or `nats://host:4222[,nats://…]`,
    /// a NATS JetStream stream several broker nodes share (--db then holds this node's copy).
    // Its value may carry a NATS user and password (`nats://user:pass@host`): `--help` must
    // not print it from the environment (found by an attack review).
    #[arg(
        long,
        env = "BROKER_LOG",
        default_value = "embedded",
        hide_env_values = true
    )]
    pub log: String,
    /// The JetStream stream's name with `--log nats://…` (its subjects are `<name>.>`).
    #[arg(long, env = "BROKER_LOG_STREAM", default_value = "broker")]
    pub log_stream: String,
    /// Replicas of the stream when this node creates it (3 on a NATS cluster; at most 5).
    #[arg(long, env = "BROKER_LOG_REPLICAS", default_value_t = 1)]
    pub log_replicas: usize,
    /// With `--log nats://…`: a NATS `.creds` file (user JWT and NKey seed) to authenticate
    /// with.
    #[arg(long, env = "BROKER_LOG_CREDS")]
    pub log_creds: Option<PathBuf>,
    /// With `--log nats://…`: a NATS authentication token (prefer BROKER_LOG_TOKEN: a flag
    /// shows in the process list).
    #[arg(long, env = "BROKER_LOG_TOKEN", hide_env_values = true)]
    pub log_token: Option<String>,
    /// With `--log nats://…`: PEM root certificates the NATS servers' certificates must chain
    /// to; TLS is then required.
    #[arg(long, env = "BROKER_LOG_TLS_CA")]
    pub log_tls_ca: Option<PathBuf>,
    /// With `--log nats://…`: a PEM client certificate for NATS servers that verify clients
    /// (with --log_tls_key); TLS is then required.
    #[arg(long, env = "BROKER_LOG_TLS_CERT")]
    pub log_tls_cert: Option<PathBuf>,
    /// The PEM private key of --log_tls_cert.
    #[arg(long, env = "BROKER_LOG_TLS_KEY")]
    pub log_tls_key: Option<PathBuf>,
    /// Start a new log segment once the active one passes this many bytes.
    #[arg(long, env = "BROKER_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,
    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, env = "BROKER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Bytes of request bodies the server holds at once while awaiting their rest (bodies
    /// that arrive whole hold none); a body past it gets 503 with retry-after. Default: 64 MiB,
    /// or 16 × --max_body_bytes if larger.
    #[arg(long, env = "BROKER_MAX_BODY_BYTES_IN_FLIGHT")]
    pub max_body_bytes_in_flight: Option<usize>,
    /// The same per client address (IPv6: per /64), at least --max_body_bytes; past it, 429.
    /// Default: 4 MiB, or --max_body_bytes if larger.
    #[arg(long, env = "BROKER_MAX_BODY_BYTES_PER_IP")]
    pub max_body_bytes_per_ip: Option<usize>,
    /// Send an SSE keep-alive comment after this many idle seconds.
    #[arg(long, env = "BROKER_SSE_KEEPALIVE_SECS", default_value_t = 15)]
    pub sse_keepalive_secs: u64,
    /// The `retry:` (milliseconds) SSE clients are told to wait before reconnecting.
    #[arg(long, env = "BROKER_SSE_RETRY_MS", default_value_t = 3000)]
    pub sse_retry_ms: u64,
    /// Recent events kept in memory per tenant for live subscribers; slower ones read the log.
    #[arg(long, env = "BROKER_SSE_BUFFER", default_value_t = 1024)]
    pub sse_buffer: usize,
    /// …and at most this many bytes of them per tenant.
    #[arg(long, env = "BROKER_SSE_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub sse_buffer_bytes: usize,
    /// Argon2 hashes computed at once (default: one less than the cores, at least 1, so a
    /// flood of logins leaves a core for inserts and streams).
    #[arg(long, env = "BROKER_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Biscuit root private key (Ed25519, hex). Default: created on first start in
    /// <db>/biscuit.key (mode 0600) and kept there.
    #[arg(long, env = "BROKER_BISCUIT_PRIVATE_KEY", hide_env_values = true)]
    pub biscuit_private_key: Option<String>,
    /// Failed passwords or reset codes per (username, client address) within
    /// --failure_window_secs before 429.
    #[arg(long, env = "BROKER_MAX_FAILURES", default_value_t = 5)]
    pub max_failures: usize,
    /// Failed passwords or reset codes per username from all addresses within the window
    /// before 429 (higher than --max_failures, so one attacker cannot lock a user out).
    #[arg(long, env = "BROKER_MAX_FAILURES_PER_USER", default_value_t = 50)]
    pub max_failures_per_user: usize,
    /// Failed passwords or reset codes per client address within the window before 429;
    /// wrong admin tokens count in a bucket of their own with the same limit.
    #[arg(long, env = "BROKER_MAX_FAILURES_PER_ADDRESS", default_value_t = 20)]
    pub max_failures_per_address: usize,
    /// Password checks (Argon2) allowed to wait for a hashing slot; beyond it, 503 with
    /// retry-after instead of an unbounded queue.
    #[arg(long, env = "BROKER_HASH_QUEUE", default_value_t = 128)]
    pub hash_queue: usize,
    /// The window, in seconds, in which failures count.
    #[arg(long, env = "BROKER_FAILURE_WINDOW_SECS", default_value_t = 60)]
    pub failure_window_secs: u64,
    /// ACME directory URL. Let's Encrypt staging, for trials:
    /// https://acme-staging-v02.api.letsencrypt.org/directory
    #[arg(
        long,
        env = "BROKER_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub acme_directory: String,
    /// Contact email given to the ACME server.
    #[arg(long, env = "BROKER_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// Extra PEM root certificates to trust for the ACME directory (a private ACME CA).
    #[arg(long, env = "BROKER_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,
    /// Learn the clock offset from NTP servers in the background.
    #[arg(long, env = "BROKER_NTP", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ntp: bool,
    /// NTP servers, comma-separated (`host`, `host:port`, `ip:port`), tried in order.
    #[arg(
        long,
        env = "BROKER_NTP_SERVERS",
        default_value = "time.cloudflare.com,pool.ntp.org",
        value_delimiter = ','
    )]
    pub ntp_servers: Vec<String>,
    /// Seconds between NTP synchronisations.
    #[arg(long, env = "BROKER_NTP_INTERVAL_SECS", default_value_t = 1024)]
    pub ntp_interval_secs: u64,
    /// Log line format: `text` or `json`.
    #[arg(long, env = "BROKER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Serve `/metrics` to requests bearing this token (`Authorization: Bearer <token>`).
    #[arg(long, env = "BROKER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serve `/metrics` on this separate address (plain HTTP, e.g. 127.0.0.1:9090): open on
    /// loopback, else it needs --metrics_token; with the token set, it is asked for there too.
    #[arg(long, env = "BROKER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Open connections at most (TLS handshakes in progress included); more are closed at
    /// accept.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,
    /// Open connections per client address at most (IPv6: per /64), checked at accept before
    /// any TLS handshake; 0 = no cap (many users share one address behind NAT). A public
    /// server without a proxy in front: e.g. 256.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Every request head and body must arrive within this many seconds, on a new connection
    /// and on each later request of a keep-alive one (slow headers or bodies are cut off).
    #[arg(long, env = "BROKER_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// A connection whose client accepts no byte of a pending write (an SSE stream nobody
    /// reads, a response nobody fetches) for this many seconds is closed.
    #[arg(long, env = "BROKER_SSE_WRITE_TIMEOUT_SECS", default_value_t = 30)]
    pub sse_write_timeout_secs: u64,
    /// Distinct event names per tenant at most; an insert of a new name beyond it gets 429
    /// (existing names keep working). The snapshot and compaction keep one event per name.
    #[arg(long, env = "BROKER_MAX_EVENT_NAMES", default_value_t = crate::state::TenantLimits::DEFAULT.event_names)]
    pub max_event_names: usize,
    /// Bytes a tenant's latest events (one per event name) may hold together — their data,
    /// and per name its length plus 64 — 1 to 1 GiB; an insert that would bring them past it gets 413 (one that adds no bytes, such
    /// as smaller data for an existing name, does not). They are kept in memory for good and
    /// sent to every new stream of the tenant: this is what bounds a tenant's standing memory.
    #[arg(
        long,
        env = "BROKER_MAX_TENANT_SNAPSHOT_BYTES",
        default_value_t = crate::state::TenantLimits::DEFAULT.snapshot_bytes
    )]
    pub max_tenant_snapshot_bytes: usize,
    /// How long an `Idempotency-Key` of /insert or /admin_insert answers retries with the
    /// first insert's id and cursor (per caller; at most 1000 keys per caller are kept).
    #[arg(long, env = "BROKER_IDEMPOTENCY_WINDOW_SECS", default_value_t = 86_400)]
    pub idempotency_window_secs: u64,
    /// Inserts per second per user (a token bucket with a burst of twice the rate; beyond,
    /// 429 with retry-after); 0 = no limit. A public server: e.g. 50.
    #[arg(long, env = "BROKER_MAX_INSERTS_PER_SEC", default_value_t = 0)]
    pub max_inserts_per_sec: u32,
    /// Below this much free space on the log's filesystem, inserts and user creation get 507
    /// (reads, logins and streams go on); writes resume by themselves once space is freed.
    #[arg(long, env = "BROKER_MIN_FREE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub min_free_bytes: u64,
    /// Connections with no traffic for this many seconds are closed (SSE keep-alives count).
    #[arg(long, env = "BROKER_IDLE_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_timeout_secs: u64,
    /// Open SSE streams per user at most; more get 429.
    #[arg(long, env = "BROKER_MAX_SSE_PER_USER", default_value_t = 100)]
    pub max_sse_per_user: usize,
    /// Store a checkpoint of the projections (in <db>/checkpoints) after this many records…
    #[arg(long, env = "BROKER_CHECKPOINT_RECORDS", default_value_t = 100_000)]
    pub checkpoint_records: u64,
    /// …or after this many seconds with new records.
    #[arg(long, env = "BROKER_CHECKPOINT_SECS", default_value_t = 300)]
    pub checkpoint_secs: u64,
    /// Retention: compact by itself every --compact_interval_secs with the rules of
    /// `POST /compact`, keeping whole what is younger than this age (`7d`, `12h`, `30m`,
    /// `90s`) or from this cursor on. Off by default.
    #[arg(long, env = "BROKER_RETAIN")]
    pub retain: Option<String>,
    /// Seconds between the compactions of --retain.
    #[arg(long, env = "BROKER_COMPACT_INTERVAL_SECS", default_value_t = 3600)]
    pub compact_interval_secs: u64,
}

/// Checks that `path` is a regular file this process can open: a FIFO given as a certificate
/// hung the start in its `open` (found by an attack review), so the type is checked first.
fn readable_file(path: &std::path::Path) -> std::io::Result<()> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::File::open(path).map(drop)
}

/// The longest `--jwt_expiry`, and any other duration flag: ten years, in seconds.
pub const MAX_JWT_EXPIRY: u64 = 10 * 365 * 86_400;

/// Which forwarding header trusted proxies write (`--trusted_proxy_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProxyHeader {
    /// `X-Forwarded-For`, with `X-Forwarded-Proto`.
    #[default]
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded` (`for=`, `proto=`).
    #[value(name = "forwarded")]
    Forwarded,
}

/// An address block such as `10.0.0.0/8`, `::1/128` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR block (like 10.0.0.0/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0-{max}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Which origins may call from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// `--origin *`: every origin, without credentials.
    Any,
    /// These exact origins (`scheme://host[:port]`), with credentials.
    Only(Vec<String>),
}

impl CorsPolicy {
    /// Reads `--origin`: `*`, or a comma-separated list of origins.
    pub fn from_flag(flag: &str) -> Self {
        if flag.trim() == "*" {
            return CorsPolicy::Any;
        }
        CorsPolicy::Only(
            flag.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    /// Whether a page of `origin` may call.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            CorsPolicy::Any => true,
            CorsPolicy::Only(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// How the server speaks TLS.
#[derive(Debug, Clone)]
pub enum Tls {
    /// Plain HTTP.
    Off,
    /// A certificate and key from files, reloaded when they change or on SIGHUP.
    Files {
        /// PEM certificate chain.
        cert_path: PathBuf,
        /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
        key_path: PathBuf,
    },
    /// Certificates obtained and renewed by ACME (TLS-ALPN-01).
    Acme {
        /// Names to certify.
        domains: Vec<String>,
        /// ACME directory URL.
        directory: String,
        /// Contact email.
        email: Option<String>,
        /// Account and certificate cache directory.
        cache: PathBuf,
        /// Extra roots to trust for the directory.
        ca_file: Option<PathBuf>,
    },
}

/// A flag value that cannot be used, with a sentence saying what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The validated configuration, in groups: handlers read `config.limits.max_body_bytes`.
#[derive(Clone)]
pub struct Config {
    /// Where and how the server is reached, and by whom.
    pub listen: Listen,
    /// Tokens, secrets and password checks.
    pub identity: Identity,
    /// What one client, user or tenant may cost (see the README's limits table).
    pub limits: Limits,
    /// Server-Sent Events.
    pub sse: Sse,
    /// The log and what is kept beside it.
    pub storage: Storage,
    /// `/metrics`.
    pub metrics: MetricsConfig,
    /// The clock's NTP synchronisation.
    pub ntp: Ntp,
    /// `json` or `text` log lines.
    pub log_json: bool,
}

/// Where and how the server is reached, and by whom.
#[derive(Clone)]
pub struct Listen {
    /// Where to listen.
    pub addr: SocketAddr,
    /// TLS mode.
    pub tls: Tls,
    /// `--origin`, parsed.
    pub cors: CorsPolicy,
    /// This server's own origins (`--public_origin`).
    pub public_origins: Vec<String>,
    /// Host names (no port) browsers may use to reach this server besides IP literals and
    /// `localhost`: those of `--public_origin` and `--domain`.
    pub known_hosts: Vec<String>,
    /// `--trusted_proxies`.
    pub trusted_proxies: Vec<Cidr>,
    /// `--trusted_proxy_header`.
    pub trusted_proxy_header: ProxyHeader,
    /// The `Strict-Transport-Security` value every answer over our own TLS carries
    /// (`--hsts_max_age_secs`; none when 0).
    pub hsts: Option<String>,
}

/// Tokens, secrets and password checks.
#[derive(Clone)]
pub struct Identity {
    /// JWT lifetime in seconds.
    pub jwt_expiry: u64,
    /// JWT signing secret.
    pub jwt_secret: Vec<u8>,
    /// Admin token.
    pub admin_token: String,
    /// The secret flags left at their well-known defaults (allowed on loopback only).
    pub default_secrets: Vec<&'static str>,
    /// Password-reset code validity in seconds.
    pub totp_duration: u64,
    /// zxcvbn check on passwords.
    pub password_checker: bool,
    /// Scopes gate inserts and streams (see [`crate::auth::scopes`]).
    pub enforce_scopes: bool,
    /// Biscuit root private key in hex, if given by flag.
    pub biscuit_private_key: Option<String>,
    /// Concurrent Argon2 computations.
    pub hash_concurrency: usize,
    /// Argon2 checks that may wait for a slot.
    pub hash_queue: usize,
}

/// What one client, user or tenant may cost (see the README's limits table).
#[derive(Clone)]
pub struct Limits {
    /// Body limit.
    pub max_body_bytes: usize,
    /// Bytes of bodies held while their rest is awaited, in all and per address.
    pub max_body_bytes_in_flight: usize,
    /// See `max_body_bytes_in_flight`.
    pub max_body_bytes_per_ip: usize,
    /// Connection cap.
    pub max_connections: usize,
    /// Connection cap per client address, 0 = none.
    pub max_connections_per_ip: usize,
    /// Deadline for each request head and body.
    pub request_timeout: Duration,
    /// Deadline for a pending write to make progress.
    pub sse_write_timeout: Duration,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
    /// SSE streams per user.
    pub max_sse_per_user: usize,
    /// Distinct event names per tenant.
    pub max_event_names: usize,
    /// Bytes of data of a tenant's latest events, all names together.
    pub max_tenant_snapshot_bytes: usize,
    /// How long an insert's `Idempotency-Key` answers retries.
    pub idempotency_window: Duration,
    /// Inserts per second per user, 0 = unlimited.
    pub max_inserts_per_sec: u32,
    /// Failures allowed per username per window.
    pub max_failures: usize,
    /// Failures allowed per username from all addresses per window.
    pub max_failures_per_user: usize,
    /// Failures allowed per client address per window.
    pub max_failures_per_address: usize,
    /// The failure window.
    pub failure_window: Duration,
}

/// Server-Sent Events.
#[derive(Clone)]
pub struct Sse {
    /// SSE keep-alive period.
    pub sse_keepalive: Duration,
    /// SSE `retry:` in milliseconds.
    pub sse_retry_ms: u64,
    /// Recent events per tenant in memory.
    pub sse_buffer: usize,
    /// Bytes of recent events per tenant in memory.
    pub sse_buffer_bytes: usize,
}

/// The log and what is kept beside it.
#[derive(Clone)]
pub struct Storage {
    /// Data directory.
    pub db: PathBuf,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Segment size.
    pub segment_bytes: u64,
    /// The shared JetStream stream, when several nodes share one log.
    pub shared_log: Option<crate::engine::StreamOptions>,
    /// Checkpoint after this many records.
    pub checkpoint_records: u64,
    /// Checkpoint after this much time.
    pub checkpoint_interval: Duration,
    /// Free-space floor of the log's filesystem.
    pub min_free_bytes: u64,
    /// Retention (`--retain`): compact by itself with this, every `compact_interval`.
    pub retain: Option<crate::engine::compaction::Retain>,
    /// Time between the compactions of `retain`.
    pub compact_interval: Duration,
}

/// `/metrics`.
#[derive(Clone)]
pub struct MetricsConfig {
    /// Bearer token for `/metrics` on the main listener.
    pub metrics_token: Option<String>,
    /// A separate listener for `/metrics`.
    pub metrics_addr: Option<SocketAddr>,
}

/// The clock's NTP synchronisation.
#[derive(Clone)]
pub struct Ntp {
    /// NTP servers, empty when NTP is off.
    pub ntp_servers: Vec<String>,
    /// Seconds between NTP synchronisations.
    pub ntp_interval: Duration,
}

impl std::fmt::Debug for Config {
    // Secrets stay out of every log line, even a debug print of the whole config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.listen.addr)
            .field("db", &self.storage.db)
            .field("fsync", &self.storage.fsync)
            .field("jwt_secret", &"***")
            .field("admin_token", &"***")
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The log directory inside the data directory.
    pub fn log_dir(&self) -> PathBuf {
        self.storage.db.join("log")
    }

    /// How to open the engine on this configuration's log.
    pub fn engine_options(&self) -> crate::engine::EngineOptions {
        crate::engine::EngineOptions {
            dir: self.log_dir(),
            fsync: self.storage.fsync,
            segment_bytes: self.storage.segment_bytes,
            shared: self.storage.shared_log.is_some(),
            recent_per_tenant: self.sse.sse_buffer,
            recent_bytes_per_tenant: self.sse.sse_buffer_bytes,
            min_free_bytes: self.storage.min_free_bytes,
            checkpoints: Some(self.storage.db.join("checkpoints")),
            checkpoint_records: self.storage.checkpoint_records,
            checkpoint_interval: self.storage.checkpoint_interval,
            idempotency_window_ms: i64::try_from(self.limits.idempotency_window.as_millis())
                .unwrap_or(i64::MAX),
            tenant_limits: crate::state::TenantLimits {
                event_names: self.limits.max_event_names,
                snapshot_bytes: self.limits.max_tenant_snapshot_bytes,
            },
        }
    }

    /// Where the biscuit root key is kept unless given by flag.
    pub fn biscuit_key_path(&self) -> PathBuf {
        self.storage.db.join("biscuit.key")
    }
}

impl ServeFlags {
    /// Checks the flags and resolves defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        if self.secure {
            if self.jwt_secret == DEFAULT_JWT_SECRET {
                return Err(ConfigError(
                    "--secure true with the default --jwt_secret: set --jwt_secret (or BROKER_JWT_SECRET) to a long random value".into(),
                ));
            }
            if self.admin_token == DEFAULT_ADMIN_TOKEN {
                return Err(ConfigError(
                    "--secure true with the default --admin_token: set --admin_token (or BROKER_ADMIN_TOKEN) to a long random value".into(),
                ));
            }
        }
        let tls = if !self.secure {
            Tls::Off
        } else if self.auto_cert {
            let domains: Vec<String> = self
                .domain
                .iter()
                .flat_map(|d| d.split(','))
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty())
                .collect();
            if domains.is_empty() {
                return Err(ConfigError(
                    "--secure true --auto_cert true needs --domain <name> (the name the certificate is for); or give a certificate with --auto_cert false --cert_path --key_path".into(),
                ));
            }
            if let Some(ca) = &self.acme_ca_file
                && !ca.is_file()
            {
                return Err(ConfigError(format!(
                    "--acme_ca_file {}: no such file",
                    ca.display()
                )));
            }
            Tls::Acme {
                domains,
                directory: self.acme_directory.clone(),
                email: self.acme_email.clone(),
                cache: self.certs.clone(),
                ca_file: self.acme_ca_file.clone(),
            }
        } else {
            for (flag, path) in [
                ("--cert_path", &self.cert_path),
                ("--key_path", &self.key_path),
            ] {
                if let Err(e) = readable_file(path) {
                    return Err(ConfigError(format!(
                        "{flag} {}: cannot read it ({e}); give a PEM file, or use --auto_cert true --domain <name>",
                        path.display()
                    )));
                }
            }
            Tls::Files {
                cert_path: self.cert_path.clone(),
                key_path: self.key_path.clone(),
            }
        };
        check_origin("--origin", &self.origin)?;
        let public_origins = match &self.public_origin {
            Some(flag) if flag.trim() == "*" => {
                return Err(ConfigError(
                    "--public_origin must name this server's origin (like https://broker.example), not *".into(),
                ));
            }
            Some(flag) => {
                check_origin("--public_origin", flag)?;
                origins(flag)
            }
            None => Vec::new(),
        };
        let mut known_hosts: Vec<String> = public_origins
            .iter()
            .filter_map(|o| o.split_once("://"))
            .map(|(_, host)| host_without_port(host).to_ascii_lowercase())
            .collect();
        if let Tls::Acme { domains, .. } = &tls {
            known_hosts.extend(domains.iter().map(|d| d.to_ascii_lowercase()));
        }
        // A block as wide as the private ranges at most: a wider one believes what any
        // client writes into the header, so each could rotate its address past every limit.
        if let Some(wide) = self
            .trusted_proxies
            .iter()
            .find(|c| c.prefix < if c.net.is_ipv4() { 8 } else { 7 })
        {
            return Err(ConfigError(format!(
                "--trusted_proxies {}/{} would believe any client's forwarding header, so every client could name its own address; name your proxies' addresses or their network (at most a /8, or /7 for IPv6)",
                wide.net, wide.prefix
            )));
        }
        // The blocks together too (a review listed all 256 /8s): at most two /8s' worth of
        // IPv4 addresses (10/8 and 127/8, say), and two /7s' of IPv6.
        let (mut v4, mut v6) = (0u64, 0u128);
        for block in &self.trusted_proxies {
            if block.net.is_ipv4() {
                v4 = v4.saturating_add(1u64 << (32 - u32::from(block.prefix)));
            } else {
                v6 = v6.saturating_add(
                    1u128
                        .checked_shl(128 - u32::from(block.prefix))
                        .unwrap_or(u128::MAX),
                );
            }
        }
        if v4 > 1 << 25 || v6 > 1 << 122 {
            return Err(ConfigError(
                "--trusted_proxies together span more than two /8s of IPv4 addresses (or two /7s of IPv6): they would believe most clients' forwarding headers, so those clients could name their own addresses; name your proxies' addresses or their network".into(),
            ));
        }
        let per_ip = self
            .max_body_bytes_per_ip
            .unwrap_or((4 << 20).max(self.max_body_bytes));
        let in_flight = self
            .max_body_bytes_in_flight
            .unwrap_or((64 << 20).max(self.max_body_bytes.saturating_mul(16)));
        if per_ip < self.max_body_bytes || in_flight < per_ip {
            return Err(ConfigError(format!(
                "--max_body_bytes_per_ip ({per_ip}) must be at least --max_body_bytes ({}), and --max_body_bytes_in_flight ({in_flight}) at least --max_body_bytes_per_ip: else a body of the largest size could never arrive slowly",
                self.max_body_bytes
            )));
        }
        let default_secrets = check_secrets(&self)?;
        if self.metrics_token.as_deref() == Some("") {
            return Err(ConfigError("--metrics_token must not be empty".into()));
        }
        if self.jwt_secret.is_empty() {
            return Err(ConfigError("--jwt_secret must not be empty".into()));
        }
        if self.admin_token.is_empty() {
            return Err(ConfigError("--admin_token must not be empty".into()));
        }
        if self.jwt_expiry == 0 {
            return Err(ConfigError("--jwt_expiry must be at least 1 second".into()));
        }
        // Durations are added to the clock as seconds and as instants: past ten years a huge
        // value wrapped (every token born expired) or panicked on every connection (an attack
        // review's findings).
        for (flag, secs) in [
            ("--jwt_expiry", self.jwt_expiry),
            ("--totp_duration", self.totp_duration),
            ("--sse_keepalive_secs", self.sse_keepalive_secs),
            ("--sse_retry_ms", self.sse_retry_ms / 1000),
            ("--failure_window_secs", self.failure_window_secs),
            ("--ntp_interval_secs", self.ntp_interval_secs),
            ("--request_timeout_secs", self.request_timeout_secs),
            ("--sse_write_timeout_secs", self.sse_write_timeout_secs),
            ("--idempotency_window_secs", self.idempotency_window_secs),
            ("--idle_timeout_secs", self.idle_timeout_secs),
            ("--checkpoint_secs", self.checkpoint_secs),
            ("--compact_interval_secs", self.compact_interval_secs),
            ("--hsts_max_age_secs", self.hsts_max_age_secs),
        ] {
            if secs > MAX_JWT_EXPIRY {
                return Err(ConfigError(format!(
                    "{flag} must be at most ten years ({MAX_JWT_EXPIRY} seconds)"
                )));
            }
        }
        const MAX_BODY: usize = 16 * 1024 * 1024;
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY {
            return Err(ConfigError(format!(
                "--max_body_bytes must be between 1 and {MAX_BODY}"
            )));
        }
        const MAX_SNAPSHOT: usize = 1 << 30;
        if self.max_tenant_snapshot_bytes == 0 || self.max_tenant_snapshot_bytes > MAX_SNAPSHOT {
            return Err(ConfigError(format!(
                "--max_tenant_snapshot_bytes must be between 1 and {MAX_SNAPSHOT} (1 GiB): it is how many bytes of data a tenant's latest events (one per event name) may hold together"
            )));
        }
        let shared_log = shared_log(&self)?;
        if self.segment_bytes < 4096 {
            return Err(ConfigError("--segment_bytes must be at least 4096".into()));
        }
        if self.totp_duration < 30 {
            return Err(ConfigError(
                "--totp_duration must be at least 30 seconds".into(),
            ));
        }
        if self.idle_timeout_secs <= self.sse_keepalive_secs {
            return Err(ConfigError(format!(
                "--idle_timeout_secs ({}) must be longer than --sse_keepalive_secs ({}), or idle SSE streams would be cut",
                self.idle_timeout_secs, self.sse_keepalive_secs
            )));
        }
        if self.sse_keepalive_secs == 0 {
            return Err(ConfigError(
                "--sse_keepalive_secs must be at least 1".into(),
            ));
        }
        let retain = self
            .retain
            .as_deref()
            .map(|r| r.parse().map_err(|e| ConfigError(format!("--{e}"))))
            .transpose()?;
        if self.idempotency_window_secs == 0 {
            return Err(ConfigError(
                "--idempotency_window_secs must be at least 1 (it is how long a retry with the same Idempotency-Key is answered)".into(),
            ));
        }
        if self.compact_interval_secs == 0 {
            return Err(ConfigError(
                "--compact_interval_secs must be at least 1 (it is the time between the compactions of --retain)".into(),
            ));
        }
        let port = self.port.unwrap_or(if self.secure { 443 } else { 8080 });
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Config {
            listen: Listen {
                addr: SocketAddr::new(self.listen, port),
                tls,
                cors: CorsPolicy::from_flag(&self.origin),
                public_origins,
                known_hosts,
                trusted_proxies: self.trusted_proxies,
                trusted_proxy_header: self.trusted_proxy_header,
                hsts: (self.hsts_max_age_secs > 0)
                    .then(|| format!("max-age={}", self.hsts_max_age_secs)),
            },
            identity: Identity {
                jwt_expiry: self.jwt_expiry,
                jwt_secret: self.jwt_secret.into_bytes(),
                admin_token: self.admin_token,
                default_secrets,
                totp_duration: self.totp_duration,
                password_checker: self.password_checker,
                enforce_scopes: self.enforce_scopes,
                biscuit_private_key: self.biscuit_private_key,
                hash_concurrency: self
                    .hash_concurrency
                    .unwrap_or(cores.saturating_sub(1))
                    .max(1),
                hash_queue: self.hash_queue,
            },
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_body_bytes_in_flight: in_flight,
                max_body_bytes_per_ip: per_ip,
                max_connections: self.max_connections.max(1),
                max_connections_per_ip: self.max_connections_per_ip,
                request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
                sse_write_timeout: Duration::from_secs(self.sse_write_timeout_secs.max(1)),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                max_sse_per_user: self.max_sse_per_user.max(1),
                max_event_names: self.max_event_names.max(1),
                max_tenant_snapshot_bytes: self.max_tenant_snapshot_bytes,
                idempotency_window: Duration::from_secs(self.idempotency_window_secs),
                max_inserts_per_sec: self.max_inserts_per_sec,
                max_failures: self.max_failures.max(1),
                max_failures_per_user: self.max_failures_per_user.max(1),
                max_failures_per_address: self.max_failures_per_address.max(1),
                failure_window: Duration::from_secs(self.failure_window_secs.max(1)),
            },
            sse: Sse {
                sse_keepalive: Duration::from_secs(self.sse_keepalive_secs),
                sse_retry_ms: self.sse_retry_ms,
                sse_buffer: self.sse_buffer.max(1),
                sse_buffer_bytes: self.sse_buffer_bytes.max(1),
            },
            storage: Storage {
                db: self.db,
                // With a shared log the stream is the durable copy (a write is acknowledged after
                // JetStream's ack); the local copy is a cache refetched after a crash, so it is
                // fsynced once a second whatever --fsync says.
                fsync: if shared_log.is_some() {
                    FsyncPolicy::Interval(Duration::from_secs(1))
                } else {
                    self.fsync
                },
                segment_bytes: self.segment_bytes,
                shared_log,
                checkpoint_records: self.checkpoint_records.max(1),
                checkpoint_interval: Duration::from_secs(self.checkpoint_secs.max(1)),
                min_free_bytes: self.min_free_bytes,
                retain,
                compact_interval: Duration::from_secs(self.compact_interval_secs),
            },
            metrics: MetricsConfig {
                metrics_token: self.metrics_token,
                metrics_addr: self.metrics_addr,
            },
            ntp: Ntp {
                ntp_servers: if self.ntp {
                    self.ntp_servers
                } else {
                    Vec::new()
                },
                ntp_interval: Duration::from_secs(self.ntp_interval_secs.max(16)),
            },
            log_json: self.log_format == "json",
        })
    }
}

/// `--log`: `embedded`, or a comma-separated list of `nats://host:port` URLs, with the
/// stream's name, replicas, credentials and TLS. A URL's userinfo (`user:password@` or
/// `token@`) becomes the stream's credentials, and URLs are only ever quoted redacted.
fn shared_log(flags: &ServeFlags) -> Result<Option<crate::engine::StreamOptions>, ConfigError> {
    use crate::engine::jetstream::{redacted, split_userinfo};
    use crate::engine::{NatsAuth, NatsTls};
    if flags.log == "embedded" {
        let given = [
            ("--log_creds", flags.log_creds.is_some()),
            ("--log_token", flags.log_token.is_some()),
            ("--log_tls_ca", flags.log_tls_ca.is_some()),
            ("--log_tls_cert", flags.log_tls_cert.is_some()),
            ("--log_tls_key", flags.log_tls_key.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            return Err(ConfigError(format!(
                "{flag} is for a shared log: it needs --log nats://…"
            )));
        }
        return Ok(None);
    }
    let mut servers = Vec::new();
    let mut url_auth: Option<NatsAuth> = None;
    for server in flags.log.split(',').map(str::trim) {
        let shown = redacted(server);
        if !server.starts_with("nats://") {
            return Err(ConfigError(format!(
                "--log: {shown:?} is neither `embedded` nor a nats://host:port URL"
            )));
        }
        let (bare, auth) = split_userinfo(server);
        let host = &bare["nats://".len()..];
        if host.is_empty() || host.contains('/') {
            return Err(ConfigError(format!(
                "--log: {shown:?} must be nats://host:port or nats://user:password@host:port"
            )));
        }
        if let Some(auth) = auth {
            if url_auth.as_ref().is_some_and(|first| *first != auth) {
                return Err(ConfigError(
                    "--log: the URLs carry different credentials; give the same ones in each, or use --log_token or --log_creds".into(),
                ));
            }
            url_auth = Some(auth);
        }
        servers.push(bare);
    }
    let stream = &flags.log_stream;
    let valid = !stream.is_empty()
        && stream.len() <= 64
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ConfigError(format!(
            "--log_stream: {stream:?} must be 1-64 letters, digits, '-' or '_'"
        )));
    }
    if !(1..=5).contains(&flags.log_replicas) {
        return Err(ConfigError("--log_replicas must be between 1 and 5".into()));
    }
    for (flag, path) in [
        ("--log_creds", &flags.log_creds),
        ("--log_tls_ca", &flags.log_tls_ca),
        ("--log_tls_cert", &flags.log_tls_cert),
        ("--log_tls_key", &flags.log_tls_key),
    ] {
        if let Some(path) = path
            && let Err(e) = readable_file(path)
        {
            return Err(ConfigError(format!(
                "{flag} {}: cannot read it ({e})",
                path.display()
            )));
        }
    }
    let mut auths = Vec::new();
    if let Some(auth) = url_auth {
        auths.push(("a user or token in --log", auth));
    }
    if let Some(token) = &flags.log_token {
        if token.is_empty() {
            return Err(ConfigError("--log_token must not be empty".into()));
        }
        auths.push(("--log_token", NatsAuth::Token(token.clone())));
    }
    if let Some(path) = &flags.log_creds {
        // Read now, so a wrong file fails the start with the flag's name, not a NATS error.
        let creds = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "--log_creds {}: cannot read it ({e})",
                path.display()
            ))
        })?;
        if let Err(e) = async_nats::ConnectOptions::with_credentials(&creds) {
            return Err(ConfigError(format!(
                "--log_creds {}: not a NATS credentials file ({e})",
                path.display()
            )));
        }
        auths.push(("--log_creds", NatsAuth::Creds(path.clone())));
    }
    if let [(first, _), (second, _), ..] = auths.as_slice() {
        return Err(ConfigError(format!(
            "{first} and {second} both give NATS credentials: use one"
        )));
    }
    let client = match (&flags.log_tls_cert, &flags.log_tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError("--log_tls_cert needs --log_tls_key".into())),
        (None, Some(_)) => return Err(ConfigError("--log_tls_key needs --log_tls_cert".into())),
    };
    let tls = (flags.log_tls_ca.is_some() || client.is_some()).then(|| NatsTls {
        ca: flags.log_tls_ca.clone(),
        client,
    });
    Ok(Some(crate::engine::StreamOptions {
        servers,
        name: stream.to_owned(),
        replicas: flags.log_replicas,
        auth: auths.pop().map_or(NatsAuth::None, |(_, auth)| auth),
        tls,
    }))
}

/// The well-known defaults of the secret flags: anyone can forge tokens or act as the admin
/// with them, so they are allowed on loopback only.
const DEFAULT_JWT_SECRET: &str = "secret";
const DEFAULT_ADMIN_TOKEN: &str = "letmein";
/// The shortest secret (`--jwt_secret`, `--admin_token`, `--metrics_token`) accepted off
/// loopback: HS256's key is as strong as its length, and a token as hard to guess.
const MIN_SECRET: usize = 32;

/// Refuses default or short secrets where the network can reach them; returns the flags
/// still at their defaults (on loopback with no proxy in front, where they are only warned
/// about).
fn check_secrets(flags: &ServeFlags) -> Result<Vec<&'static str>, ConfigError> {
    let mut defaults = Vec::new();
    if flags.jwt_secret == DEFAULT_JWT_SECRET {
        defaults.push("--jwt_secret");
    }
    if flags.admin_token == DEFAULT_ADMIN_TOKEN {
        defaults.push("--admin_token");
    }
    check_metrics_listener(flags)?;
    // A reverse proxy on this machine forwards the network to a loopback server, which
    // `--listen` cannot tell; these flags say so (an attack review: nginx in front of a
    // loopback Broker with `--jwt_secret secret` let anyone forge any user's JWT, and a
    // logged error was all it got).
    let exposed = if !flags.listen.is_loopback() {
        format!("--listen {} serves the network", flags.listen)
    } else if !flags.trusted_proxies.is_empty() {
        "--trusted_proxies says a reverse proxy forwards the network to this server".to_owned()
    } else if flags.public_origin.is_some() {
        "--public_origin says the network reaches this server through a proxy".to_owned()
    } else {
        return Ok(defaults);
    };
    let make = "make one with `openssl rand -hex 32`";
    if let Some(flag) = defaults.first() {
        let fix = if flags.listen.is_loopback() {
            ""
        } else {
            ", or listen on 127.0.0.1"
        };
        return Err(ConfigError(format!(
            "{exposed}, but {flag} is still the well-known default: set {flag} (or BROKER_{}) to a long random value ({make}){fix}",
            flag.trim_start_matches('-').to_ascii_uppercase()
        )));
    }
    // The admin and metrics tokens too: their wrong guesses are limited per address only,
    // and an attack review made 4,000 guesses in 1.3 s from 200 addresses; a one-character
    // token was accepted. The next reviews' were 32 of one letter, a word repeated,
    // `0123456789abcdef` twice, and one secret with an `x` added as another.
    let secrets = [
        ("--jwt_secret", Some(flags.jwt_secret.as_str())),
        ("--admin_token", Some(flags.admin_token.as_str())),
        ("--metrics_token", flags.metrics_token.as_deref()),
    ];
    check_strong(&secrets, &exposed)?;
    if let Some(hex) = &flags.biscuit_private_key
        && !strong(hex.trim())
    {
        return Err(ConfigError(format!(
            "--biscuit_private_key follows a pattern (such as all zeros, or a sequence): anyone could guess it and mint biscuits ({exposed}; leave it unset and Broker makes one in <db>/biscuit.key)"
        )));
    }
    Ok(defaults)
}

/// Refuses secrets (`(flag, value)`) that are short, follow a pattern, or are one another
/// (or one holds the other, in any case): `exposed` says why they must be strong.
fn check_strong(secrets: &[(&str, Option<&str>)], exposed: &str) -> Result<(), ConfigError> {
    let make = "make one with `openssl rand -hex 32`";
    for &(flag, secret) in secrets {
        let Some(secret) = secret else { continue };
        if secret.len() < MIN_SECRET {
            return Err(ConfigError(format!(
                "{flag} is {} bytes; where the network reaches the server it must be at least {MIN_SECRET} ({exposed}; {make})",
                secret.len()
            )));
        }
        if !strong(secret) {
            return Err(ConfigError(format!(
                "{flag} follows a pattern a guesser tries early (words, repeats, sequences; zxcvbn estimates fewer than 10^{STRONG_GUESSES_LOG10} guesses) ({exposed}; {make})"
            )));
        }
    }
    for (i, &(flag, secret)) in secrets.iter().enumerate() {
        for &(other, other_secret) in &secrets[i + 1..] {
            if let (Some(a), Some(b)) = (secret, other_secret) {
                check_apart((flag, a), (other, b))?;
            }
        }
    }
    Ok(())
}

/// Refuses two secrets of which one holds the other, in any case: whoever reads the
/// scraper's token, or a leaked JWT secret, would also hold the admin API.
fn check_apart((flag, a): (&str, &str), (other, b): (&str, &str)) -> Result<(), ConfigError> {
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    if a.contains(&b) || b.contains(&a) {
        return Err(ConfigError(format!(
            "{flag} and {other} are the same, or one holds the other; each must be a secret of its own (make one with `openssl rand -hex 32`)"
        )));
    }
    Ok(())
}

/// zxcvbn's estimate of the guesses a secret takes, as a power of ten, below which it is
/// refused: its estimates stop at 10^19.3 (2^64), which 32 random hex digits reach and
/// patterns (`changeme` ×4: 10^8; `0123456789abcdef` ×2: 10^4.5) are far from.
const STRONG_GUESSES_LOG10: u32 = 19;

/// Whether `secret` is long and unpatterned enough that no limit on wrong guesses is needed
/// to keep it: what the network may be served with.
pub fn unguessable(secret: &str) -> bool {
    secret.len() >= MIN_SECRET && strong(secret)
}

/// Whether zxcvbn estimates `secret` at 10^[`STRONG_GUESSES_LOG10`] guesses or more. Only
/// the first 256 bytes are looked at (its cost grows with the length), on a character
/// boundary: a longer secret is at least as strong as its start.
fn strong(secret: &str) -> bool {
    let mut end = secret.len().min(256);
    while !secret.is_char_boundary(end) {
        end -= 1;
    }
    zxcvbn::zxcvbn(&secret[..end], &[]).guesses_log10() >= f64::from(STRONG_GUESSES_LOG10)
}

/// Refuses a `--metrics_addr` the network reaches without a strong `--metrics_token` of its
/// own: the metrics tell anyone the write rate, the users' count and the failed logins.
fn check_metrics_listener(flags: &ServeFlags) -> Result<(), ConfigError> {
    let Some(addr) = flags.metrics_addr else {
        return Ok(());
    };
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let exposed = format!("--metrics_addr {addr} serves the network");
    match &flags.metrics_token {
        None => Err(ConfigError(format!(
            "{exposed}: set --metrics_token (or BROKER_METRICS_TOKEN; make one with `openssl rand -hex 32`), which scrapers send as `Authorization: Bearer`, or serve metrics on 127.0.0.1"
        ))),
        Some(token) => {
            check_strong(&[("--metrics_token", Some(token.as_str()))], &exposed)?;
            // Not checked for strength here (on loopback they may be weak), only for being
            // the token: whoever reads the scraper's configuration must not hold them.
            for other in [
                ("--admin_token", flags.admin_token.as_str()),
                ("--jwt_secret", flags.jwt_secret.as_str()),
            ] {
                check_apart(("--metrics_token", token), other)?;
            }
            Ok(())
        }
    }
}

/// `localhost:8080` → `localhost`, `[::1]:8080` → `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The origins of a checked origin list, normalised as browsers send them.
fn origins(flag: &str) -> Vec<String> {
    flag.split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// `--origin` is `*` or a comma-separated list of origins as browsers send them
/// (`scheme://host[:port]`, no path): anything else would silently never match.
fn check_origin(name: &str, flag: &str) -> Result<(), ConfigError> {
    if flag.trim() == "*" {
        return Ok(());
    }
    let mut any = false;
    for origin in flag.split(',').map(|o| o.trim().trim_end_matches('/')) {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match host {
            Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']) => {
                any = true;
            }
            _ => {
                return Err(ConfigError(format!(
                    "{name}: {origin:?} is not an origin; use a comma-separated list like https://app.example,http://localhost:3000"
                )));
            }
        }
    }
    if any {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{name} must not be empty: give a list of origins"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("broker").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn both_flag_forms_and_defaults() {
        let cli = parse(&["--port=9000", "--jwt_secret", "s3", "--secure", "false"]);
        let config = cli.serve.validate().unwrap();
        assert_eq!(config.listen.addr.port(), 9000);
        assert_eq!(config.identity.jwt_secret, b"s3");
        assert_eq!(config.identity.admin_token, "letmein");
        assert_eq!(config.storage.fsync, FsyncPolicy::Always);
        let config = parse(&[]).serve.validate().unwrap();
        assert_eq!(config.listen.addr.port(), 8080);
        assert_eq!(config.identity.jwt_expiry, 86_400);
        assert_eq!(config.identity.totp_duration, 300);
    }

    #[test]
    fn a_fifo_given_as_a_certificate_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("chain.pem");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let fifo = fifo.to_str().unwrap().to_owned();
        let secret = "9f86d081884c7d659a2feaa0c55ad015".to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let args = [
                "--secure",
                "true",
                "--auto_cert",
                "false",
                "--cert_path",
                &fifo,
                "--key_path",
                &fifo,
                "--jwt_secret",
                &secret,
                "--admin_token",
                &secret,
            ];
            let _ = tx.send(parse(&args).serve.validate().err().map(|e| e.0));
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the check waited on the FIFO")
            .expect("a FIFO accepted as a certificate");
        assert!(
            refused.contains("--cert_path") && refused.contains("not a regular file"),
            "{refused}"
        );
    }

    #[test]
    fn the_tenant_snapshot_budget_is_bounded() {
        let config = parse(&[]).serve.validate().unwrap();
        assert_eq!(config.limits.max_tenant_snapshot_bytes, 16 * 1024 * 1024);
        let gib = (1usize << 30).to_string();
        let config = parse(&["--max_tenant_snapshot_bytes", &gib])
            .serve
            .validate()
            .unwrap();
        assert_eq!(config.limits.max_tenant_snapshot_bytes, 1 << 30);
        for bad in ["0", "1073741825"] {
            let Err(e) = parse(&["--max_tenant_snapshot_bytes", bad])
                .serve
                .validate()
            else {
                panic!("--max_tenant_snapshot_bytes {bad} accepted");
            };
            assert!(e.0.contains("--max_tenant_snapshot_bytes"), "{}", e.0);
        }
    }

    #[test]
    fn jwt_expiry_is_bounded() {
        let ten_years = MAX_JWT_EXPIRY.to_string();
        assert!(
            parse(&["--jwt_expiry", &ten_years])
                .serve
                .validate()
                .is_ok()
        );
        for bad in ["0", "315360001", "18446744073709551615"] {
            let Err(e) = parse(&["--jwt_expiry", bad]).serve.validate() else {
                panic!("--jwt_expiry {bad} accepted");
            };
            assert!(e.0.contains("--jwt_expiry"), "{}", e.0);
        }
        // Every duration: a huge timeout panicked on every connection.
        for flag in [
            "--request_timeout_secs",
            "--idle_timeout_secs",
            "--sse_write_timeout_secs",
            "--totp_duration",
            "--checkpoint_secs",
            "--idempotency_window_secs",
        ] {
            let Err(e) = parse(&[flag, "9223372036854775807"]).serve.validate() else {
                panic!("{flag} 2^63-1 accepted");
            };
            assert!(e.0.contains(flag), "{}", e.0);
        }
    }

    #[test]
    fn default_or_short_secrets_are_refused_off_loopback() {
        let config = parse(&[]).serve.validate().unwrap();
        assert!(config.listen.addr.ip().is_loopback(), "loopback by default");
        assert_eq!(
            config.identity.default_secrets,
            ["--jwt_secret", "--admin_token"]
        );
        let long = "9f86d081884c7d659a2feaa0c55ad015";
        for (args, needle) in [
            (&["--listen", "0.0.0.0"][..], "--jwt_secret"),
            (
                &["--listen", "0.0.0.0", "--jwt_secret", long][..],
                "--admin_token",
            ),
            (
                &[
                    "--listen",
                    "::",
                    "--jwt_secret",
                    "short",
                    "--admin_token",
                    "x",
                ][..],
                "at least 32",
            ),
        ] {
            let err = parse(args).serve.validate().unwrap_err();
            assert!(err.0.contains(needle), "{args:?}: {err}");
            assert!(err.0.contains("openssl rand -hex 32"), "{err}");
        }
        for (flag, short) in [("--admin_token", "t"), ("--metrics_token", "m")] {
            let mut args = vec!["--listen", "0.0.0.0", "--jwt_secret", long];
            if flag == "--metrics_token" {
                args.extend(["--admin_token", long]);
            }
            args.extend([flag, short]);
            let err = parse(&args).serve.validate().unwrap_err();
            assert!(
                err.0.contains(flag) && err.0.contains("at least 32"),
                "{args:?}: {err}"
            );
        }
        let ok = parse(&[
            "--listen",
            "0.0.0.0",
            "--jwt_secret",
            long,
            "--admin_token",
            "3a7bd3e2360a3d29eea436fcfb7e44c7",
            "--metrics_token",
            "c3ab8ff13720e8ad9047dd39466b3c89",
        ])
        .serve
        .validate()
        .unwrap();
        assert!(ok.identity.default_secrets.is_empty());
        // On loopback a short secret is allowed (tests, trials) but still reported.
        assert!(parse(&["--jwt_secret", "s"]).serve.validate().is_ok());
        // A metrics listener the network reaches needs a long token.
        for (args, refused) in [
            (
                &["--metrics_addr", "0.0.0.0:9090"][..],
                Some("--metrics_token"),
            ),
            (
                &["--metrics_addr", "[::]:9090", "--metrics_token", "short"][..],
                Some("--metrics_token is 5 bytes"),
            ),
            (
                &["--metrics_addr", "0.0.0.0:9090", "--metrics_token", long][..],
                None,
            ),
            (&["--metrics_addr", "127.0.0.1:9090"][..], None),
        ] {
            match (parse(args).serve.validate(), refused) {
                (Err(e), Some(needle)) => assert!(e.0.contains(needle), "{args:?}: {e}"),
                (Ok(_), None) => {}
                (other, _) => panic!("{args:?}: {:?}", other.map(|_| ())),
            }
        }
        // Long but made up, or one secret in two places (a later attack review).
        let exposed = ["--listen", "0.0.0.0"];
        let other = "3a7bd3e2360a3d29eea436fcfb7e44c7";
        for (secrets, needle) in [
            (
                vec!["--jwt_secret", &"a".repeat(40), "--admin_token", long],
                "--jwt_secret follows a pattern",
            ),
            (
                vec!["--jwt_secret", long, "--admin_token", &"secret".repeat(6)],
                "--admin_token follows a pattern",
            ),
            (
                vec!["--jwt_secret", long, "--admin_token", long],
                "--jwt_secret and --admin_token are the same",
            ),
            (
                vec![
                    "--jwt_secret",
                    long,
                    "--admin_token",
                    other,
                    "--metrics_token",
                    other,
                ],
                "--admin_token and --metrics_token are the same",
            ),
            (
                vec![
                    "--jwt_secret",
                    long,
                    "--admin_token",
                    other,
                    "--biscuit_private_key",
                    &"00".repeat(32),
                ],
                "--biscuit_private_key follows a pattern",
            ),
        ] {
            let args = [&exposed[..], &secrets[..]].concat();
            let err = parse(&args).serve.validate().unwrap_err();
            assert!(err.0.contains(needle), "{args:?}: {err}");
        }
        assert!(unguessable(long) && unguessable(other));
        assert!(!unguessable("letmein") && !unguessable(&"ab".repeat(20)));
        // What the next review started with: patterns that pass a count of characters, one
        // secret as another with a letter added or in upper case, a patterned biscuit key,
        // and a metrics listener with a weak or shared token beside a loopback main port.
        for pattern in [
            "0123456789abcdef0123456789abcdef",
            "changeme-changeme-changeme-changeme",
            "passwordpasswordpassword12345678",
            "abcdefghijklmnopqrstuvwxyzabcdefgh",
        ] {
            assert!(!unguessable(pattern), "{pattern}");
            let args = [
                &exposed[..],
                &["--jwt_secret", pattern, "--admin_token", other],
            ]
            .concat();
            let err = parse(&args).serve.validate().unwrap_err();
            assert!(err.0.contains("follows a pattern"), "{pattern}: {err}");
        }
        let upper = long.to_uppercase();
        let longer = format!("{long}x");
        for admin in [upper.as_str(), longer.as_str()] {
            let args = [
                &exposed[..],
                &["--jwt_secret", long, "--admin_token", admin],
            ]
            .concat();
            let err = parse(&args).serve.validate().unwrap_err();
            assert!(err.0.contains("one holds the other"), "{admin}: {err}");
        }
        let key = format!("{}{}", "0".repeat(57), "1234567");
        let args = [
            &exposed[..],
            &[
                "--jwt_secret",
                long,
                "--admin_token",
                other,
                "--biscuit_private_key",
                &key,
            ],
        ]
        .concat();
        assert!(parse(&args).serve.validate().is_err());
        for token in [&"a".repeat(32), long, other] {
            let args = [
                "--jwt_secret",
                long,
                "--admin_token",
                other,
                "--metrics_addr",
                "[::ffff:127.0.0.1]:9090",
                "--metrics_token",
                token,
            ];
            assert!(parse(&args).serve.validate().is_err(), "{token}");
        }
        // On loopback with nothing in front, they are allowed (tests, trials).
        assert!(
            parse(&["--jwt_secret", long, "--admin_token", long])
                .serve
                .validate()
                .is_ok()
        );
        // Behind a reverse proxy the network reaches a loopback server: the same rules.
        for proxy in [
            &["--trusted_proxies", "127.0.0.1"][..],
            &["--public_origin", "https://broker.example"][..],
        ] {
            for (secrets, needle) in [
                (&[][..], "--jwt_secret is still the well-known default"),
                (
                    &["--jwt_secret", long][..],
                    "--admin_token is still the well-known default",
                ),
                (
                    &["--jwt_secret", long, "--admin_token", "t"][..],
                    "--admin_token is 1 bytes",
                ),
            ] {
                let args = [proxy, secrets].concat();
                let err = parse(&args).serve.validate().unwrap_err();
                assert!(err.0.contains(needle), "{args:?}: {err}");
                assert!(err.0.contains(proxy[0]), "{args:?}: {err}");
                assert!(!err.0.contains("listen on 127.0.0.1"), "{err}");
            }
            let args = [proxy, &["--jwt_secret", long, "--admin_token", other][..]].concat();
            let ok = parse(&args).serve.validate().unwrap();
            assert!(ok.identity.default_secrets.is_empty());
        }
    }

    #[test]
    fn body_budgets_follow_the_body_limit_and_never_undercut_it() {
        let limits = parse(&[]).serve.validate().unwrap().limits;
        assert_eq!(
            (
                limits.max_body_bytes_per_ip,
                limits.max_body_bytes_in_flight
            ),
            (4 << 20, 64 << 20)
        );
        // A larger body limit raises the defaults with it.
        let limits = parse(&["--max_body_bytes", "16777216"])
            .serve
            .validate()
            .unwrap()
            .limits;
        assert_eq!(
            (
                limits.max_body_bytes_per_ip,
                limits.max_body_bytes_in_flight
            ),
            (16 << 20, 256 << 20)
        );
        // Set below what one body may be, they are refused, naming the flags.
        for args in [
            &["--max_body_bytes_per_ip", "1000"][..],
            &["--max_body_bytes_in_flight", "1000"][..],
            &[
                "--max_body_bytes",
                "8388608",
                "--max_body_bytes_per_ip",
                "4194304",
            ][..],
        ] {
            let err = parse(args).serve.validate().unwrap_err();
            assert!(err.0.contains("--max_body_bytes_per_ip"), "{args:?}: {err}");
        }
    }

    #[test]
    fn public_origins_and_trusted_proxies() {
        let config = parse(&[
            "--public_origin",
            "https://Broker.example, http://10.0.0.5:8080",
            "--trusted_proxies",
            "127.0.0.1,10.0.0.0/8",
            "--jwt_secret",
            "9f86d081884c7d659a2feaa0c55ad015",
            "--admin_token",
            "3a7bd3e2360a3d29eea436fcfb7e44c7",
        ])
        .serve
        .validate()
        .unwrap();
        assert_eq!(config.listen.known_hosts, ["broker.example", "10.0.0.5"]);
        assert_eq!(config.listen.trusted_proxies.len(), 2);
        assert!(
            parse(&["--public_origin", "*"])
                .serve
                .validate()
                .unwrap_err()
                .0
                .contains("--public_origin")
        );
        assert!(Cli::try_parse_from(["broker", "--trusted_proxies", "10.0.0.0/40"]).is_err());
        // Blocks that together span more than a /8 do too.
        let every_8: Vec<String> = (0..=255).map(|a| format!("{a}.0.0.0/8")).collect();
        let err = parse(&["--trusted_proxies", &every_8.join(",")])
            .serve
            .validate()
            .unwrap_err();
        assert!(err.0.contains("together"), "{err}");
        // A block wider than the private ranges believes any client's header.
        for wide in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "fc00::/6"] {
            let err = parse(&["--trusted_proxies", wide])
                .serve
                .validate()
                .unwrap_err();
            assert!(err.0.contains("any client"), "{wide}: {err}");
        }
        let long = "9f86d081884c7d659a2feaa0c55ad015";
        let secrets = [
            "--jwt_secret",
            long,
            "--admin_token",
            "3a7bd3e2360a3d29eea436fcfb7e44c7",
        ];
        for narrow in ["10.0.0.0/8", "fc00::/7", "127.0.0.1"] {
            let args = [&["--trusted_proxies", narrow][..], &secrets[..]].concat();
            assert!(parse(&args).serve.validate().is_ok(), "{narrow}");
        }
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("a.example:80"), "a.example");
        assert_eq!(host_without_port("a.example"), "a.example");
    }

    #[test]
    fn origins_must_be_origins() {
        for ok in [
            "*",
            "https://app.example",
            "http://localhost:3000, https://a.example/",
        ] {
            assert!(parse(&["--origin", ok]).serve.validate().is_ok(), "{ok}");
        }
        for bad in [
            "app.example",
            "https://a.example/path",
            "ftp://x",
            "",
            "https://",
        ] {
            let err = parse(&["--origin", bad]).serve.validate().unwrap_err();
            assert!(err.0.contains("--origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn default_secrets_refused_when_secure() {
        let err = parse(&["--secure", "true"]).serve.validate().unwrap_err();
        assert!(err.0.contains("--jwt_secret"), "{err}");
        let err = parse(&["--secure", "--jwt_secret", "long-and-random"])
            .serve
            .validate()
            .unwrap_err();
        assert!(err.0.contains("--admin_token"), "{err}");
    }

    #[test]
    fn tls_modes_and_their_errors() {
        let secrets = ["--jwt_secret", "j-s", "--admin_token", "a-t"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = secrets.iter().chain(extra).copied().collect();
            parse(&args).serve.validate()
        };
        let err = with(&["--secure", "true"]).unwrap_err();
        assert!(err.0.contains("--domain"), "{err}");
        let config = with(&["--secure", "true", "--domain", "example.com"]).unwrap();
        assert_eq!(config.listen.addr.port(), 443);
        assert!(
            matches!(config.listen.tls, Tls::Acme { ref domains, .. } if domains == &["example.com"])
        );
        let err = with(&[
            "--secure",
            "true",
            "--auto_cert",
            "false",
            "--cert_path",
            "/nonexistent/chain.pem",
        ])
        .unwrap_err();
        assert!(
            err.0.contains("--cert_path /nonexistent/chain.pem"),
            "{err}"
        );
        assert!(matches!(with(&[]).unwrap().listen.tls, Tls::Off));
    }

    #[test]
    fn shared_log_flags() {
        let with = |extra: &[&str]| parse(extra).serve.validate();
        assert!(with(&[]).unwrap().storage.shared_log.is_none());
        let config = with(&[
            "--log",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            "--log_stream",
            "events-1",
            "--log_replicas",
            "3",
        ])
        .unwrap();
        let shared = config.storage.shared_log.clone().unwrap();
        assert_eq!(shared.servers.len(), 2);
        assert_eq!((shared.name.as_str(), shared.replicas), ("events-1", 3));
        let options = config.engine_options();
        assert!(options.shared);
        assert_eq!(options.fsync, FsyncPolicy::Interval(Duration::from_secs(1)));
        for (flags, needle) in [
            (&["--log", "kafka://x:1"][..], "--log"),
            (&["--log", "nats://"][..], "--log"),
            (
                &["--log", "nats://h:1", "--log_stream", "a.b"][..],
                "--log_stream",
            ),
            (
                &["--log", "nats://h:1", "--log_replicas", "0"][..],
                "--log_replicas",
            ),
        ] {
            let err = with(flags).unwrap_err();
            assert!(err.0.contains(needle), "{flags:?}: {err}");
        }
    }

    #[test]
    fn shared_log_credentials_and_tls() {
        use crate::engine::{NatsAuth, NatsTls};
        let with = |extra: &[&str]| parse(extra).serve.validate();
        let shared = |extra: &[&str]| with(extra).unwrap().storage.shared_log.unwrap();

        // A URL's userinfo becomes the credentials; the URLs keep none, and nothing prints it.
        let options = shared(&[
            "--log",
            "nats://broker:hunter2@127.0.0.1:4222,nats://broker:hunter2@127.0.0.1:4223",
        ]);
        assert_eq!(
            options.servers,
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        assert_eq!(
            options.auth,
            NatsAuth::UserPassword {
                user: "broker".into(),
                password: "hunter2".into()
            }
        );
        assert!(!format!("{options:?}").contains("hunter2"), "{options:?}");
        let options = shared(&["--log", "nats://s3cr%40t@h:1"]);
        assert_eq!(options.auth, NatsAuth::Token("s3cr@t".into()));
        assert_eq!(options.tls, None);
        let options = shared(&["--log", "nats://h:1", "--log_token", "t0k3n"]);
        assert_eq!(options.auth, NatsAuth::Token("t0k3n".into()));
        assert!(!format!("{options:?}").contains("t0k3n"), "{options:?}");

        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "not checked here: the TLS handshake reads it").unwrap();
        let pem = pem.to_str().unwrap();
        let options = shared(&[
            "--log",
            "nats://h:1",
            "--log_tls_ca",
            pem,
            "--log_tls_cert",
            pem,
            "--log_tls_key",
            pem,
        ]);
        assert_eq!(
            options.tls,
            Some(NatsTls {
                ca: Some(pem.into()),
                client: Some((pem.into(), pem.into()))
            })
        );
        let creds = dir.path().join("node.creds");
        std::fs::write(
            &creds,
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJqd3QiLCJhbGciOiJlZDI1NTE5\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\nSUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM\n------END USER NKEY SEED------\n",
        )
        .unwrap();
        let creds = creds.to_str().unwrap();
        let options = shared(&["--log", "nats://h:1", "--log_creds", creds]);
        assert_eq!(options.auth, NatsAuth::Creds(creds.into()));

        for (flags, needle) in [
            (
                &["--log", "nats://h:1", "--log_creds", "/nonexistent/x.creds"][..],
                "--log_creds /nonexistent/x.creds",
            ),
            (
                &["--log", "nats://h:1", "--log_creds", pem][..],
                "not a NATS credentials file",
            ),
            (
                &["--log", "nats://h:1", "--log_tls_ca", "/nonexistent/ca.pem"][..],
                "--log_tls_ca /nonexistent/ca.pem",
            ),
            (
                &["--log", "nats://h:1", "--log_tls_cert", pem][..],
                "--log_tls_cert needs --log_tls_key",
            ),
            (
                &["--log", "nats://h:1", "--log_tls_key", pem][..],
                "--log_tls_key needs --log_tls_cert",
            ),
            (
                &["--log", "nats://h:1", "--log_token", ""][..],
                "--log_token",
            ),
            (&["--log_token", "t"][..], "--log_token is for a shared log"),
            (
                &["--log_tls_ca", pem][..],
                "--log_tls_ca is for a shared log",
            ),
            (
                &["--log", "nats://u:p@h:1", "--log_token", "t"][..],
                "use one",
            ),
            (
                &[
                    "--log",
                    "nats://h:1",
                    "--log_token",
                    "t",
                    "--log_creds",
                    creds,
                ][..],
                "use one",
            ),
            (
                &["--log", "nats://u:hunter2@h:1,nats://u:other@h:2"][..],
                "different credentials",
            ),
            (&["--log", "nats://u:hunter2@h:1/x"][..], "nats://***@h:1/x"),
            (&["--log", "nats://u:hunter2@"][..], "nats://***@"),
            (&["--log", "http://u:hunter2@h:1"][..], "http://***@h:1"),
        ] {
            let err = with(flags).unwrap_err();
            assert!(err.0.contains(needle), "{flags:?}: {err}");
            assert!(!err.0.contains("hunter2"), "{flags:?}: {err}");
        }
    }

    #[test]
    fn fsync_policies() {
        assert_eq!(
            parse(&["--fsync", "interval:5"]).serve.fsync,
            FsyncPolicy::Interval(Duration::from_millis(5))
        );
        assert!(Cli::try_parse_from(["broker", "--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn log_subcommand() {
        let cli = parse(&["log", "verify", "--db", "/tmp/x"]);
        assert!(matches!(
            cli.command,
            Some(Command::Log(crate::tool::cli::LogCommand::Verify { .. }))
        ));
    }
}
