//! `broker log …`: tools that work on a log directory. Each prints a one-line summary at the
//! end and a progress bar on long work when stderr is a terminal.

pub mod compact;
pub mod dump;
pub mod migrate;
pub mod replay;
pub mod verify;

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::LogCommand;

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
        .map(|segments| {
            segments
                .iter()
                .filter_map(|(_, p)| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
