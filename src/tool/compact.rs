//! `broker log compact`: offline on the files, or through a running server (`--url`).

use std::path::Path;

use crate::engine::Engine;
use crate::engine::compaction::Retain;
use crate::log::compact::CompactReport;

/// One line about a compaction.
pub fn summary(r: &CompactReport) -> String {
    format!(
        "{} segments compacted: {} → {} records, {} → {} bytes; exact resume from cursor {} on",
        r.segments_replaced,
        r.records_before,
        r.records_after,
        r.bytes_before,
        r.bytes_after,
        r.horizon
    )
}

/// Runs the subcommand.
pub fn run(db: &Path, retain: &str, url: Option<&str>, admin_token: Option<&str>) -> i32 {
    let retain_parsed: Retain = match retain.parse() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Some(url) = url {
        let Some(token) = admin_token else {
            eprintln!("--url needs --admin_token (or BROKER_ADMIN_TOKEN)");
            return 2;
        };
        return runtime.block_on(remote(url, token, retain));
    }
    let mut options = crate::engine::EngineOptions {
        dir: db.join("log"),
        fsync: crate::engine::FsyncPolicy::Always,
        segment_bytes: u64::MAX,
        recent_per_tenant: 1,
        checkpoints: None,
        checkpoint_records: u64::MAX,
        checkpoint_interval: std::time::Duration::MAX,
        shared: false,
    };
    options.segment_bytes = 64 * 1024 * 1024;
    runtime.block_on(async {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let engine = match Engine::open(options, std::sync::Arc::new(now)) {
            Ok((engine, _)) => engine,
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        };
        let spinner = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = indicatif::ProgressBar::new_spinner().with_message("compacting");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let outcome = engine.compact(retain_parsed, now()).await;
        spinner.finish_and_clear();
        engine.shutdown().await;
        match outcome {
            Ok(report) => {
                println!("{}: {}", db.join("log").display(), summary(&report));
                0
            }
            Err(e) => {
                eprintln!("compaction failed: {e}");
                1
            }
        }
    })
}

/// Asks a running server to compact (it swaps segments while it keeps serving).
async fn remote(url: &str, token: &str, retain: &str) -> i32 {
    let body = serde_json::json!({ "admin_token": token, "retain": retain }).to_string();
    let request = format!("{}/compact", url.trim_end_matches('/'));
    match post_json(&request, &body).await {
        Ok((200, reply)) => {
            println!("{url}: {reply}");
            0
        }
        Ok((status, reply)) => {
            eprintln!("{url} answered {status}: {reply}");
            1
        }
        Err(e) => {
            eprintln!("cannot reach {url}: {e}");
            1
        }
    }
}

/// A minimal HTTP/1.1 POST over a plain TCP connection (the tool talks to a local server).
async fn post_json(url: &str, body: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs (run it next to the server)")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}
