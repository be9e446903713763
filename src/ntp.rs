//! Keeping the clock right: a background task learns the offset of local time from SNTP
//! servers and stores it in the [`Clock`]. Requests only ever read the offset; they never
//! wait on the network. Unreachable servers leave the offset as it was (0 at start) and are
//! reported once, not on every attempt. An offset beyond [`MAX_OFFSET_MS`] is not applied
//! and is reported once too: one answering server must not be able to move token lifetimes
//! and TOTP windows by days.

use std::net::SocketAddr;
use std::time::Duration;

use sntpc::{NtpContext, StdTimestampGen};
use sntpc_net_tokio::UdpSocketWrapper;
use tokio::net::UdpSocket;

use crate::auth::Clock;

/// How long one server may take to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest offset from the system clock that is applied (5 minutes). A system clock
/// that far off is an operator's problem to fix; an NTP answer that far off is more likely
/// a wrong or spoofed server, and applying it would expire every JWT or revive old ones.
pub const MAX_OFFSET_MS: i64 = 5 * 60 * 1000;

/// Whether an NTP offset is small enough to apply.
pub fn within_bound(offset_ms: i64) -> bool {
    offset_ms.unsigned_abs() <= MAX_OFFSET_MS.unsigned_abs()
}

/// Why one server gave no offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Its name did not resolve (or resolved to nothing).
    #[error("cannot resolve: {0}")]
    Resolve(String),
    /// The local UDP socket could not be made or connected.
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    /// Nothing came back in time.
    #[error("no answer")]
    NoAnswer,
    /// What came back is no usable SNTP answer.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

/// No server of the list gave an offset: each with why.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|(server, why)| format!("{server}: {why}")).collect::<Vec<_>>().join("; "))]
pub struct NoServer(pub Vec<(String, QueryError)>);

/// The outcome of the last attempt, so that a warning is logged when the situation changes
/// and not on every interval.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    TooFar,
    Unreachable,
}

/// Queries `servers` now and then every `every`, until the process ends.
pub fn spawn(clock: Clock, servers: Vec<String>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = Outcome::Applied;
        loop {
            let outcome = match sync_once(&servers).await {
                Ok((server, offset_ms)) if within_bound(offset_ms) => {
                    clock.set_offset_ms(offset_ms);
                    tracing::info!(%server, offset_ms, "clock synchronised with NTP");
                    Outcome::Applied
                }
                Ok((server, offset_ms)) => {
                    if last != Outcome::TooFar {
                        tracing::warn!(
                            %server,
                            offset_ms,
                            max_offset_ms = MAX_OFFSET_MS,
                            "NTP offset beyond ±5 minutes not applied; keeping the system clock and the current offset (check the NTP server, or fix the system clock)"
                        );
                    }
                    Outcome::TooFar
                }
                Err(why) => {
                    if last != Outcome::Unreachable {
                        tracing::warn!(reason = %why, "no NTP server answered; keeping the current clock offset");
                    }
                    Outcome::Unreachable
                }
            };
            last = outcome;
            tokio::time::sleep(every).await;
        }
    })
}

/// The offset, in milliseconds, reported by the first server that answers.
pub async fn sync_once(servers: &[String]) -> Result<(String, i64), NoServer> {
    let mut failures = Vec::new();
    for server in servers {
        // Resolving has no timeout of its own; the whole query gets twice an answer's.
        let why = match tokio::time::timeout(QUERY_TIMEOUT * 2, query(server)).await {
            Ok(Ok(offset_ms)) => return Ok((server.clone(), offset_ms)),
            Ok(Err(e)) => e,
            Err(_) => QueryError::NoAnswer,
        };
        failures.push((server.clone(), why));
    }
    Err(NoServer(failures))
}

/// `host`, `host:port`, `ip` or `ip:port`, with port 123 when none is given.
fn target(server: &str) -> String {
    if server.parse::<SocketAddr>().is_ok() {
        return server.to_owned();
    }
    if let Ok(ip) = server.parse::<std::net::IpAddr>() {
        return SocketAddr::new(ip, 123).to_string();
    }
    if server
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        return server.to_owned();
    }
    format!("{server}:123")
}

async fn query(server: &str) -> Result<i64, QueryError> {
    let addr = tokio::net::lookup_host(target(server))
        .await
        .map_err(|e| QueryError::Resolve(e.to_string()))?
        .next()
        .ok_or_else(|| QueryError::Resolve("no address".into()))?;
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal address");
    let socket = UdpSocket::bind(local).await?;
    // A connected socket turns "port unreachable" into an immediate error instead of a wait.
    socket.connect(addr).await?;
    let socket = UdpSocketWrapper::from(socket);
    let context = NtpContext::new(StdTimestampGen::default());
    let result = tokio::time::timeout(QUERY_TIMEOUT, sntpc::get_time(addr, &socket, context))
        .await
        .map_err(|_| QueryError::NoAnswer)?
        .map_err(|e| QueryError::BadAnswer(format!("{e:?}")))?;
    Ok(result.offset() / 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_beyond_five_minutes_are_out_of_bound() {
        use super::within_bound;
        assert!(within_bound(0));
        assert!(within_bound(150_000));
        assert!(within_bound(-150_000));
        assert!(within_bound(300_000));
        assert!(within_bound(-300_000));
        assert!(!within_bound(300_001));
        assert!(!within_bound(-300_001));
        assert!(!within_bound(86_400_000));
        assert!(!within_bound(i64::MIN));
        assert!(!within_bound(i64::MAX));
    }

    #[test]
    fn targets() {
        assert_eq!(super::target("pool.ntp.org"), "pool.ntp.org:123");
        assert_eq!(super::target("127.0.0.1:9123"), "127.0.0.1:9123");
        assert_eq!(super::target("127.0.0.1"), "127.0.0.1:123");
        assert_eq!(super::target("::1"), "[::1]:123");
        assert_eq!(super::target("time.example:5000"), "time.example:5000");
    }
}
