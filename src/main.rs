//! The `broker` binary: serve, or run a `broker log …` tool.

use std::process::ExitCode;
use std::sync::Arc;

use broker::auth::Clock;
use broker::config::{Cli, Command, Config, Tls};
use broker::engine::Engine;
use broker::http::{self, App};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Everything this process creates (log segments, checkpoints, LOCK, biscuit.key, the ACME
    // cache) holds or guards secrets, and several writers (fjall, rustls-acme) pick their own
    // modes: a umask is the one place that covers them all, for the server and the tools.
    // SAFETY: umask(2) only replaces a process-wide integer and returns the old one; it cannot
    // fail, touches no memory of ours, and no thread has been started yet that creates files.
    #[cfg(unix)]
    unsafe {
        libc::umask(0o077);
    }
    // glibc raises its mmap threshold to the size of the largest block freed, after which
    // large request bodies (up to --max_body_bytes) come from per-thread arenas that keep
    // the freed space: 20 bodies of 1 MB left 8-17 MB of RSS behind. A fixed threshold keeps
    // every block of 128 KiB or more in its own mapping, returned to the system when freed
    // (measured: +1.8 MB instead).
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists,
    // with a valid parameter number and value.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    // A file-size limit (`ulimit -f`, systemd's LimitFSIZE=) reached by a log segment would
    // kill the server mid-batch with SIGXFSZ; ignored, the write fails with EFBIG instead and
    // is answered like a full disk (503, `/ready` not ready) while everything else goes on.
    // SAFETY: signal(2) with SIG_IGN installs no handler of ours; it only sets the signal's
    // disposition, before any other thread exists.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    // One crypto provider for every TLS user (server, ACME client), chosen before any is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Some(Command::Log(command)) => {
            init_logs(cli.serve.log_format == "json");
            match broker::tool::run(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("broker log: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        // Validation logs nothing: its errors are printed here, and logging starts in the
        // format the validated configuration says.
        None => match cli.serve.validate() {
            Ok(config) => {
                init_logs(config.log_json);
                serve(config)
            }
            Err(e) => {
                eprintln!("broker: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// The most the NATS client may log, whatever `RUST_LOG` says: at debug it prints whole
/// messages and requests (`{:?}`), at trace its `CONNECT` with the password; shared-log
/// messages hold password hashes and TOTP secrets.
const NATS_CLIENT_CAP: &str = "async_nats=info";

/// Log lines to stderr, as text or JSON; levels from `RUST_LOG` (the NATS client's capped).
fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,fjall=warn,lsm_tree=warn"))
        .add_directive(NATS_CLIENT_CAP.parse().expect("a valid directive"));
    // Colours only for a person at a terminal: journald, files and tests get plain text.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("broker: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why the server could not start or stopped with a fault; printed by [`serve`] alone.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The data directory could not be prepared.
    #[error("{0}")]
    DataDir(String),
    /// A shared stream's local copy started without its stream.
    #[error(
        "{0} is a node's local copy of a shared JetStream stream: start with the same --log nats://… and --log_stream, or move the directory away to start a standalone log"
    )]
    SharedCopyAlone(std::path::PathBuf),
    /// The log could not be opened.
    #[error("cannot open the log in {0}: {1}")]
    Open(std::path::PathBuf, broker::engine::EngineError),
    /// The shared stream could not be joined.
    #[error(transparent)]
    Attach(#[from] broker::engine::StreamError),
    /// The biscuit root key could not be had.
    #[error(transparent)]
    BiscuitKey(#[from] broker::auth::biscuit::KeyError),
    /// The TLS certificate could not be loaded or ordered.
    #[error("{0}")]
    Certificate(String),
    /// A socket could not be bound or served.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// An I/O error with what was being done.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

async fn run(config: Config) -> Result<(), StartError> {
    if !config.identity.default_secrets.is_empty() {
        // Refused at validation wherever the network reaches the server (off loopback, or
        // behind a proxy that `--trusted_proxies` or `--public_origin` tells of).
        tracing::warn!(
            flags = %config.identity.default_secrets.join(", "),
            "serving with well-known default secrets: fine on this machine only; set them (openssl rand -hex 32) before the network can reach this server"
        );
    }
    broker::files::prepare_data_dir(&config.storage.db).map_err(StartError::DataDir)?;
    if config.storage.shared_log.is_none() && broker::log::is_shared(&config.log_dir()) {
        // Writing to it alone would fork the shared history: the copy would grow records no
        // other node has, under cursors the stream gives to other records.
        return Err(StartError::SharedCopyAlone(config.log_dir()));
    }
    let clock = Clock::default();
    let stamp = clock.clone();
    let (engine, report) = Engine::open(config.engine_options(), Arc::new(move || stamp.now_ms()))
        .map_err(|e| StartError::Open(config.log_dir(), e))?;
    for repair in &report.repairs {
        tracing::warn!(
            file = %repair.path.display(),
            offset = repair.offset,
            removed_bytes = repair.removed,
            reason = %repair.reason,
            "cut a torn tail off the log (the remains of a crash; nothing acknowledged was in it)"
        );
    }
    tracing::info!(
        records = report.records,
        cursor = report.cursor,
        checkpoint = ?report.checkpoint,
        "log replayed"
    );
    if let Some(shared) = &config.storage.shared_log {
        // Listen only once this node has folded everything the stream held: a login on any
        // node then sees every user created before it started.
        engine.attach_stream(shared).await?;
        tracing::info!(
            stream = %shared.name,
            cursor = engine.cursor(),
            "following the shared JetStream log"
        );
    }
    // Everything that can fail on a bad file is loaded before the socket is bound, so that
    // "listening" means ready: the biscuit key, and a certificate given as files. (ACME
    // certificates are obtained through the listener itself, so they start after it.)
    let biscuit = match &config.identity.biscuit_private_key {
        Some(hex) => broker::auth::biscuit::key_from_hex("--biscuit_private_key", hex)?,
        None => broker::auth::biscuit::load_or_create(&config.biscuit_key_path())?,
    };
    let files = match &config.listen.tls {
        Tls::Files {
            cert_path,
            key_path,
        } => {
            broker::files::warn_if_open(key_path, "the TLS private key");
            Some(
                http::tls::FileCert::load(cert_path.clone(), key_path.clone())
                    .map_err(StartError::Certificate)?,
            )
        }
        _ => None,
    };
    let listener = http::server::limits::listen(config.listen.addr)
        .map_err(io(format!("cannot listen on {}", config.listen.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(io("cannot read the listening address"))?;
    // Bound before the line below, which says the server is ready: scrapers may come at once.
    let metrics_listener = match config.metrics.metrics_addr {
        Some(metrics_addr) => Some((
            metrics_addr,
            http::server::limits::listen(metrics_addr).map_err(io(format!(
                "cannot listen on --metrics_addr {metrics_addr}"
            )))?,
        )),
        None => None,
    };
    // Tests and scripts read this line to learn the port (with --port 0).
    let scheme = if matches!(config.listen.tls, Tls::Off) {
        "http"
    } else {
        "https"
    };
    println!("broker listening on {scheme}://{addr}");
    tracing::info!(%addr, "listening");
    if !config.ntp.ntp_servers.is_empty() {
        broker::ntp::spawn(
            clock.clone(),
            config.ntp.ntp_servers.clone(),
            config.ntp.ntp_interval,
        );
    }
    if let Some(retain) = config.storage.retain {
        engine.spawn_retention(retain, config.storage.compact_interval);
        tracing::info!(
            ?retain,
            every_secs = config.storage.compact_interval.as_secs(),
            "retention on: compacting by itself"
        );
    }
    let tls = config.listen.tls.clone();
    let app = App::new(engine.clone(), config, clock, biscuit);
    // Every listener stops on the same signal; SSE streams get their final frame first.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = engine.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing streams, finishing requests, flushing the log");
        stopping.close_subscriptions();
        let _ = stop_tx.send(true);
    });
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    if let Some((metrics_addr, metrics_listener)) = metrics_listener {
        tracing::info!(addr = %metrics_addr, "serving /metrics");
        let acceptor = poem::listener::TcpAcceptor::from_tokio(metrics_listener)
            .map_err(io("--metrics_addr"))?;
        tokio::spawn(http::serve_with(
            acceptor,
            http::metrics_router(app.clone()),
            stop(stop_rx.clone()),
            None,
        ));
    }
    let served = match (tls, files) {
        (Tls::Files { .. }, Some(files)) => {
            app.metrics.serve_certificate(Arc::clone(&files));
            files.watch();
            http::serve_tls(
                listener,
                http::tls::CertSource::Files(files),
                app,
                stop(stop_rx),
            )
            .await
        }
        (
            Tls::Acme {
                domains,
                directory,
                email,
                cache,
                ca_file,
            },
            _,
        ) => {
            let source = http::tls::acme(
                &domains,
                &directory,
                email.as_deref(),
                &cache,
                ca_file.as_deref(),
            )
            .await
            .map_err(StartError::Certificate)?;
            http::serve_tls(listener, source, app, stop(stop_rx)).await
        }
        _ => http::serve(listener, app, stop(stop_rx)).await,
    };
    engine.shutdown().await;
    tracing::info!("stopped");
    served.map_err(io("server error"))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
