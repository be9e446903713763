//! Latency samples and the figures reported from them.

use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Default, Clone)]
pub struct Latencies(pub Vec<u32>);

impl Latencies {
    /// Records one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }

    /// Adds another set's samples.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 without samples.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let at = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[at] as f64 / 1000.0
    }

    /// p50, p99 and max in milliseconds.
    pub fn summary(&mut self) -> (f64, f64, f64) {
        (
            self.quantile_ms(0.5),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0),
        )
    }
}

/// The median of some runs' figures (the middle one; the mean of the two middle ones).
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_medians() {
        let mut l = Latencies((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(l.summary(), (51.0, 99.0, 100.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }
}
