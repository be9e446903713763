//! A budget of log lines per second, for lines an attacker can cause (refused requests,
//! messages of a shared stream that are no records): past it the rest are counted, and
//! reported in one line the next second.

use std::sync::Mutex;

/// A budget of log lines per second, for lines an attacker can cause.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    second: i64,
    lines: u32,
    suppressed: u64,
}

impl LogBudget {
    /// `per_second` lines a second at most.
    pub fn new(per_second: u32) -> Self {
        LogBudget {
            per_second,
            window: Mutex::default(),
        }
    }

    /// Whether a line may be written at `now_ms`, and how many were held back in the second
    /// before (to report once).
    pub fn admit(&self, now_ms: i64) -> (bool, u64) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let second = now_ms.div_euclid(1000);
        let mut held_back = 0;
        if second != w.second {
            held_back = std::mem::take(&mut w.suppressed);
            w.second = second;
            w.lines = 0;
        }
        if w.lines < self.per_second {
            w.lines += 1;
            (true, held_back)
        } else {
            w.suppressed += 1;
            (false, held_back)
        }
    }
}
