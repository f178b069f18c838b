//! The numbers a loop reports: a failure rate with its confidence bound, and percentiles.

use serde::Serialize;

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The upper end of the Wilson score interval (95%) for `failures` in `trials`: with
/// 0 failures in 100 cycles the true failure rate is below 3.7% with 95% confidence. `None`
/// with no trials.
///
/// ```
/// use quiesce::repeat::wilson_upper;
/// let bound = wilson_upper(0, 100).unwrap();
/// assert!((bound - 0.0370).abs() < 0.0005, "{bound}");
/// ```
pub fn wilson_upper(failures: u64, trials: u64) -> Option<f64> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = failures as f64 / n;
    let z2 = Z95 * Z95;
    let centre = p + z2 / (2.0 * n);
    let spread = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre + spread) / (1.0 + z2 / n)).min(1.0))
}

/// p50, p95, p99 and max of a set of durations in ms (nearest rank).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// `None` with no samples.
    pub fn of(samples: &[u64]) -> Option<Percentiles> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Percentiles {
            samples: sorted.len(),
            p50: nearest_rank(&sorted, 0.50)?,
            p95: nearest_rank(&sorted, 0.95)?,
            p99: nearest_rank(&sorted, 0.99)?,
            max: *sorted.last()?,
        })
    }
}

/// The nearest-rank `q` quantile of sorted `samples`.
pub fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bound_matches_published_values() {
        // 0/10: 0.2775; 1/100: 0.0545; 20/100: 0.2888 (Wilson 1927, as tabulated by
        // Newcombe 1998).
        for (failures, trials, want) in [(0, 10, 0.2775), (1, 100, 0.0545), (20, 100, 0.2888)] {
            let got = wilson_upper(failures, trials).unwrap();
            assert!((got - want).abs() < 0.0005, "{failures}/{trials}: {got}");
        }
        assert_eq!(wilson_upper(0, 0), None);
        assert!(wilson_upper(10, 10).unwrap() <= 1.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(&samples).unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50, 95, 99, 100));
        let one = Percentiles::of(&[7]).unwrap();
        assert_eq!((one.p50, one.p99, one.max, one.samples), (7, 7, 7, 1));
        assert_eq!(Percentiles::of(&[]), None);
    }
}
