//! `broker log compact`: offline on the files, or through a running server (`--url`).

use std::path::Path;

use super::ToolError;
use crate::engine::Engine;
use crate::engine::compaction::Retain;
use crate::log::compact::CompactReport;

/// One line about a compaction.
pub fn summary(r: &CompactReport) -> String {
    format!(
        "{} segments compacted into {}: {} → {} records, {} → {} bytes; exact resume from cursor {} on",
        r.segments_replaced,
        r.segments_written,
        r.records_before,
        r.records_after,
        r.bytes_before,
        r.bytes_after,
        r.horizon
    )
}

/// Where the admin token for `--url` comes from: never the command line, which every local
/// user can read in `ps`.
pub const ADMIN_TOKEN_ENV: &str = "BROKER_ADMIN_TOKEN";

/// Runs the subcommand. `token_flag` is `--admin_token`, which is refused.
pub fn run(
    db: &Path,
    retain: &str,
    url: Option<&str>,
    token_flag: Option<&str>,
) -> Result<(), ToolError> {
    if token_flag.is_some() {
        return Err(ToolError::Usage(format!(
            "--admin_token on the command line is refused: other users of this machine can read command lines (ps); set {ADMIN_TOKEN_ENV} in the environment instead"
        )));
    }
    let retain_parsed: Retain = retain.parse().map_err(ToolError::Usage)?;
    // Checked before anything connects: a refused URL never sees the token, nor a packet.
    let remote_target = url
        .map(token_target)
        .transpose()
        .map_err(|e| ToolError::Usage(format!("--url: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ToolError::io("the async runtime"))?;
    if let (Some(url), Some(target)) = (url, remote_target) {
        let token = match std::env::var(ADMIN_TOKEN_ENV) {
            Ok(token) if !token.is_empty() => token,
            _ => {
                return Err(ToolError::Usage(format!(
                    "--url needs the server's admin token in {ADMIN_TOKEN_ENV}"
                )));
            }
        };
        return runtime.block_on(remote(url, &target, &token, retain));
    }
    let options = crate::engine::EngineOptions {
        dir: db.join("log"),
        fsync: crate::engine::FsyncPolicy::Always,
        // What the server would use: it sets the largest segment read and written.
        segment_bytes: super::segment_bytes(),
        recent_per_tenant: 1,
        recent_bytes_per_tenant: 1 << 20,
        min_free_bytes: 0,
        checkpoints: None,
        checkpoint_records: u64::MAX,
        checkpoint_interval: std::time::Duration::MAX,
        shared: false,
        idempotency_window_ms: crate::state::idempotency::DEFAULT_WINDOW_MS,
        tenant_limits: crate::state::TenantLimits::DEFAULT,
    };
    runtime.block_on(async {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let (engine, _) = Engine::open(options, std::sync::Arc::new(now))?;
        let spinner = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = indicatif::ProgressBar::new_spinner().with_message("compacting");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let outcome = engine.compact(retain_parsed, now()).await;
        // While this process still holds the log's lock: no server has the store open.
        let rewritten = match &outcome {
            Ok(report) if report.segments_replaced > 0 => {
                rewrite_checkpoints(&db.join("checkpoints"), engine.cursor())
            }
            _ => Ok(()),
        };
        spinner.finish_and_clear();
        engine.shutdown().await;
        let report = outcome?;
        rewritten?;
        println!("{}: {}", db.join("log").display(), summary(&report));
        Ok(())
    })
}

/// The server's checkpoint store, if there is one, rewritten without its projections: they
/// may hold users whose records this compaction erased (see `engine::compaction`).
fn rewrite_checkpoints(path: &Path, newest: u64) -> Result<(), ToolError> {
    if !path.exists() {
        return Ok(());
    }
    let store = crate::engine::checkpoint::Checkpoints::open(path)?;
    store.rewrite(newest)?;
    Ok(())
}

/// Where `--url` points, split for a plain HTTP/1.1 request.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to (port 80 when the URL gives none).
    pub connect: String,
    /// The `Host` header: the URL's authority as written.
    pub host: String,
    /// The path prefix, without a trailing `/` (empty for the root).
    pub path: String,
}

/// Checks that the admin token may be sent to `url`, and splits it. Only a loopback host is
/// accepted: the request is plain HTTP, so on any other host the token would cross a network
/// in clear. `https://` is not refused on those grounds but is not implemented by this
/// minimal client.
pub fn token_target(url: &str) -> Result<Target, String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| format!("{url} is not a URL (http://127.0.0.1:<port>)"))?;
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "{url}: https:// is not supported by this tool; run it on the server's machine with http://127.0.0.1:<port>"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("{url}: only http:// to a loopback address"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(format!("{url}: credentials in the URL are not supported"));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{url}: cannot read the host and port"))?;
    if !is_loopback(host) {
        return Err(format!(
            "refusing to send the admin token to {host}: http:// is unencrypted, so the token would cross the network in clear; run the tool on the server's machine with http://127.0.0.1:<port> (or localhost, [::1])"
        ));
    }
    let connect = match port {
        Some(port) => format!("{}:{port}", bracketed(host)),
        None => format!("{}:80", bracketed(host)),
    };
    Ok(Target {
        connect,
        host: authority.to_owned(),
        path: path.trim_end_matches('/').to_owned(),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → (host without brackets, port).
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Asks a running server to compact (it swaps segments while it keeps serving).
async fn remote(url: &str, target: &Target, token: &str, retain: &str) -> Result<(), ToolError> {
    let body = serde_json::json!({ "admin_token": token, "retain": retain }).to_string();
    match post_json(target, "/compact", &body).await {
        Ok((200, reply)) => {
            println!("{url}: {reply}");
            Ok(())
        }
        Ok((status, reply)) => Err(ToolError::Refused {
            url: url.to_owned(),
            status,
            reply,
        }),
        Err(why) => Err(ToolError::Unreachable {
            url: url.to_owned(),
            why,
        }),
    }
}

/// A minimal HTTP/1.1 POST over a plain TCP connection (the tool talks to a local server).
async fn post_json(target: &Target, route: &str, body: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = format!("{}{route}", target.path);
    let host = &target.host;
    let mut stream = tokio::net::TcpStream::connect(&target.connect)
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

#[cfg(test)]
mod tests {
    use super::{Target, token_target};

    fn target(connect: &str, host: &str, path: &str) -> Target {
        Target {
            connect: connect.into(),
            host: host.into(),
            path: path.into(),
        }
    }

    #[test]
    fn loopback_urls_are_accepted() {
        assert_eq!(
            token_target("http://127.0.0.1:8080"),
            Ok(target("127.0.0.1:8080", "127.0.0.1:8080", ""))
        );
        assert_eq!(
            token_target("http://localhost:8080/"),
            Ok(target("localhost:8080", "localhost:8080", ""))
        );
        assert_eq!(
            token_target("HTTP://[::1]:9000/broker/"),
            Ok(target("[::1]:9000", "[::1]:9000", "/broker"))
        );
        assert_eq!(
            token_target("http://localhost"),
            Ok(target("localhost:80", "localhost", ""))
        );
        assert!(token_target("http://127.0.0.2:1").is_ok());
    }

    #[test]
    fn other_hosts_are_refused_and_named() {
        for (url, host) in [
            ("http://example.invalid:1", "example.invalid"),
            ("http://10.0.0.5:8080/", "10.0.0.5"),
            ("http://127.0.0.1.example.com:80", "127.0.0.1.example.com"),
            ("http://localhost.example.com", "localhost.example.com"),
            ("http://[2001:db8::1]:80", "2001:db8::1"),
            ("http://0.0.0.0:8080", "0.0.0.0"),
        ] {
            let err = token_target(url).unwrap_err();
            assert!(
                err.contains(host) && err.contains("in clear"),
                "{url}: {err}"
            );
        }
        assert!(token_target("http://user:pw@127.0.0.1:1").is_err());
        assert!(token_target("ftp://127.0.0.1:1").is_err());
        assert!(token_target("127.0.0.1:8080").is_err());
        assert!(token_target("http://127.0.0.1:notaport").is_err());
    }
}
