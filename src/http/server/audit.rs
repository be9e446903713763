//! The audit trail: every refused credential (401) and every throttled attempt (429) is
//! logged with the client's address (through trusted proxies), so an operator can see an
//! attack and whom to block. An attack must not flood the log in turn: past
//! [`LINES_PER_SECOND`] lines in a second the rest are counted and reported in one line.

use std::net::IpAddr;

use poem::http::StatusCode;

pub use crate::log_budget::LogBudget;

/// Failure lines written per second at most.
pub const LINES_PER_SECOND: u32 = 20;

/// The rate-limited failure log.
#[derive(Debug)]
pub struct Audit {
    budget: LogBudget,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            budget: LogBudget::new(LINES_PER_SECOND),
        }
    }
}

impl Audit {
    /// Logs a refused request (rate-limited).
    pub fn failure(&self, now_ms: i64, status: StatusCode, path: &str, client: IpAddr) {
        let (write, held_back) = self.budget.admit(now_ms);
        if held_back > 0 {
            tracing::warn!(
                suppressed = held_back,
                "more refused requests in the last second than the audit log writes"
            );
        }
        if write {
            tracing::warn!(%client, status = status.as_u16(), path, "request refused");
        }
    }
}

/// Logs a refused credential (401) or a throttled attempt (429) with its client.
pub fn record(audit: &Audit, status: StatusCode, path: &str, client: IpAddr) {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        audit.failure(now_ms, status, path, client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_capped_per_second_and_the_rest_reported() {
        let budget = LogBudget::new(LINES_PER_SECOND);
        let written = (0..100).filter(|_| budget.admit(5_000).0).count();
        assert_eq!(written, LINES_PER_SECOND as usize);
        assert_eq!(
            budget.admit(6_000),
            (true, 100 - u64::from(LINES_PER_SECOND))
        );
        assert_eq!(budget.admit(6_001), (true, 0));
    }
}
