//! The `broker` binary: serve, or run a `broker log …` tool.

use std::process::ExitCode;
use std::sync::Arc;

use broker::auth::Clock;
use broker::config::{Cli, Command, Config, LogCommand};
use broker::engine::Engine;
use broker::http::{self, App};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Some(Command::Log(LogCommand::Verify { db })) => {
            ExitCode::from(broker::tool::verify::run(&db) as u8)
        }
        None => match cli.serve.validate() {
            Ok(config) => serve(config),
            Err(e) => {
                eprintln!("broker: {e}");
                ExitCode::from(2)
            }
        },
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

async fn run(config: Config) -> Result<(), String> {
    let clock = Clock::default();
    let stamp = clock.clone();
    let (engine, report) = Engine::open(config.engine_options(), Arc::new(move || stamp.now_ms()))
        .map_err(|e| format!("cannot open the log in {}: {e}", config.log_dir().display()))?;
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
        "log replayed"
    );
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts read this line to learn the port (with --port 0).
    println!("broker listening on http://{addr}");
    tracing::info!(%addr, "listening");
    let biscuit = match &config.biscuit_private_key {
        Some(hex) => broker::auth::biscuit::key_from_hex(hex)
            .map_err(|e| format!("--biscuit_private_key: {e}"))?,
        None => broker::auth::biscuit::load_or_create(&config.biscuit_key_path())?,
    };
    let app = App::new(engine.clone(), config, clock, biscuit);
    let stopping = engine.clone();
    let stop = async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing streams, finishing requests, flushing the log");
        stopping.close_subscriptions();
    };
    let served = http::serve(listener, app, stop).await;
    engine.shutdown().await;
    tracing::info!("stopped");
    served.map_err(|e| format!("server error: {e}"))
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
