//! `broker log …`: tools that work on a log directory. Each prints a one-line summary at the
//! end and a progress bar on long work when stderr is a terminal.

pub mod cli;
pub mod compact;
pub mod dump;
pub mod migrate;
pub mod replay;
pub mod verify;

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use cli::LogCommand;

/// Runs a `broker log` subcommand; returns the process exit code.
pub fn run(command: LogCommand) -> i32 {
    match command {
        LogCommand::Verify { db } => verify::run(&db),
        LogCommand::Dump {
            db,
            from,
            to,
            tenant,
            kind,
        } => dump::run(&db, from, to, tenant.as_deref(), kind.as_deref()),
        LogCommand::Replay { db, to, check } => replay::run(&db, to, check),
        LogCommand::Compact {
            db,
            retain,
            url,
            admin_token,
        } => compact::run(&db, &retain, url.as_deref(), admin_token.as_deref()),
        LogCommand::Migrate { db } => migrate::run(&db),
    }
}

/// The environment variable of the server's `--segment_bytes`, which the tools honour too.
pub const SEGMENT_BYTES_ENV: &str = "BROKER_SEGMENT_BYTES";

/// The `--segment_bytes` the tools assume: `BROKER_SEGMENT_BYTES` when it is set (as for the
/// server), else the server's default of 64 MiB. It only decides the largest segment file a
/// tool reads whole ([`crate::log::segment::max_len`]: 160 MiB by default).
pub fn segment_bytes() -> u64 {
    std::env::var(SEGMENT_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(crate::log::segment::DEFAULT_SEGMENT_BYTES)
}

/// A byte-counting progress bar, drawn only when a person is watching.
pub fn progress(total_bytes: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Total size of the segment files in `dir`.
pub fn log_bytes(dir: &std::path::Path) -> u64 {
    crate::log::segment::list(dir)
        .map(|segments| crate::log::disk_usage(segments.iter().map(|(_, p)| p.as_path())).bytes)
        .unwrap_or(0)
}
