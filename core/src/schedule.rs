//! Time-based ramps: a version's weight as a pure function of its schedule and the
//! clock, so every proxy computes the same weight without talking to the others.

use crate::units::FULL_WEIGHT_BASIS_POINTS;
// The time formats moved to `units`; the CLI and the tests still name them here.
pub use crate::units::{
    civil_from_days, format_duration, format_rfc3339, parse_duration, parse_rfc3339,
};

/// A validated ramp: at `start + steps[i].after_ms` the weight becomes
/// `steps[i].weight_basis_points` (or starts rising linearly towards the next step
/// when `interpolate`). Before the first step the weight is 0; after the last it
/// stays at the last step's weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Unix time in milliseconds.
    pub start_ms: i64,
    pub steps: Vec<Step>,
    pub interpolate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub after_ms: u64,
    pub weight_basis_points: u32,
}

impl Schedule {
    /// The weight at `now_ms` (unix ms), in basis points, rounded down to a whole
    /// number of buckets so that it maps to an exact bucket range.
    #[inline]
    pub fn weight_at(&self, now_ms: i64, buckets: u32) -> u32 {
        // In i128: `after` goes up to u64::MAX ms, so `start + after` may lie beyond
        // i64; such a step is simply never reached (it must not wrap into the past).
        let at = |step: &Step| i128::from(self.start_ms) + i128::from(step.after_ms);
        let now = i128::from(now_ms);
        let Some(current) = self.steps.iter().rposition(|s| at(s) <= now) else {
            return 0;
        };
        let step = self.steps[current];
        let Some(next) = self.steps.get(current + 1).filter(|_| self.interpolate) else {
            return step.weight_basis_points;
        };
        let (t0, t1) = (at(&step), at(next));
        let span = (t1 - t0).max(1) as u128;
        let rise = u128::from(next.weight_basis_points - step.weight_basis_points);
        let done = (now - t0) as u128;
        let weight = step.weight_basis_points + (rise * done / span) as u32;
        let granularity = (FULL_WEIGHT_BASIS_POINTS / buckets.max(1)).max(1);
        weight / granularity * granularity
    }

    /// The highest weight the schedule reaches: its last step's.
    #[inline]
    pub fn max_weight(&self) -> u32 {
        self.steps.last().map_or(0, |s| s.weight_basis_points)
    }

    /// When the ramp ends: the time of its last step, after which the weight stays
    /// at the last step's (unix ms; `i64::MAX` if that lies beyond what fits).
    #[inline]
    pub fn end_ms(&self) -> i64 {
        self.steps.last().map_or(self.start_ms, |s| {
            i64::try_from(s.after_ms).map_or(i64::MAX, |after| self.start_ms.saturating_add(after))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_796_115_600_000; // 2026-12-01T09:00:00Z

    fn ramp(interpolate: bool) -> Schedule {
        let step = |after_s: u64, pct: u32| Step {
            after_ms: after_s * 1000,
            weight_basis_points: pct * 100,
        };
        Schedule {
            start_ms: START,
            steps: vec![
                step(0, 1),
                step(600, 5),
                step(1800, 25),
                step(3600, 50),
                step(7200, 100),
            ],
            interpolate,
        }
    }

    #[test]
    fn the_weight_is_zero_before_start_and_steps_at_each_step() {
        let r = ramp(false);
        let at = |s: i64| r.weight_at(START + s * 1000, 10_000);
        assert_eq!(r.weight_at(START - 1, 10_000), 0);
        assert_eq!(r.weight_at(i64::MIN, 10_000), 0);
        assert_eq!(at(0), 100);
        assert_eq!(at(599), 100);
        assert_eq!(at(600), 500);
        assert_eq!(at(1799), 500);
        assert_eq!(at(1800), 2500);
        assert_eq!(at(3600), 5000);
        assert_eq!(at(7199), 5000);
        assert_eq!(at(7200), 10_000);
        assert_eq!(at(1_000_000), 10_000);
        assert_eq!(r.weight_at(i64::MAX, 10_000), 10_000);
        assert_eq!(r.max_weight(), 10_000);
    }

    #[test]
    fn interpolation_rises_linearly_between_steps_in_whole_buckets() {
        let r = ramp(true);
        let at = |ms: i64, buckets| r.weight_at(START + ms, buckets);
        assert_eq!(at(0, 10_000), 100);
        assert_eq!(at(300_000, 10_000), 300); // halfway from 1% to 5%
        assert_eq!(at(600_000, 10_000), 500);
        assert_eq!(at(1_200_000, 10_000), 1500); // halfway from 5% to 25%
        assert_eq!(at(7_200_000, 10_000), 10_000);
        // 1% + 4% * 1/3 = 2.333..% -> 2.33% with 10000 buckets, 2.3% with 1000, 2% with 100.
        assert_eq!(at(200_000, 10_000), 233);
        assert_eq!(at(200_000, 1000), 230);
        assert_eq!(at(200_000, 100), 200);
        // Never decreasing, second by second.
        let mut last = 0;
        for s in -10..8000 {
            let w = at(s * 1000, 10_000);
            assert!(w >= last, "weight fell at {s}s");
            last = w;
        }
    }

    #[test]
    fn a_first_step_after_start_leaves_zero_until_it() {
        let r = Schedule {
            start_ms: START,
            steps: vec![Step {
                after_ms: 60_000,
                weight_basis_points: 1000,
            }],
            interpolate: true,
        };
        assert_eq!(r.weight_at(START + 59_999, 10_000), 0);
        assert_eq!(r.weight_at(START + 60_000, 10_000), 1000);
        assert_eq!(r.end_ms(), START + 60_000);
    }
}
