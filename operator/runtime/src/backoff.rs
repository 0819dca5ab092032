//! Per-key exponential backoff with jitter.
//!
//! After the `n`th consecutive failure of one key, the runtime waits
//! `min(max, base * 2^(n-1))`, shortened by a random fraction of at most
//! `jitter` so that keys failing together (an AWS throttle, a database blip)
//! do not retry in lockstep. The count of failures lives with the key in the
//! [`WorkQueue`](crate::WorkQueue) and resets on the first success, so one
//! failing key never slows down another, and a key that recovers starts again
//! from `base`.
//!
//! [`Backoff::delay`] is a pure function of the failure count and a random
//! unit value, so the schedule is testable without time or randomness.

use std::time::Duration;

/// The shape of the retry delay after consecutive failures of one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure (before jitter). Default: 1 second.
    pub base: Duration,
    /// The longest delay, however many failures. Default: 5 minutes.
    pub max: Duration,
    /// The largest fraction of the delay that jitter may remove, in `0.0..=1.0`
    /// (values outside are clamped). `0.0` gives a deterministic schedule;
    /// the default `0.5` spreads each delay over `[d/2, d]` ("equal jitter").
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(5 * 60),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before retrying after `failures` consecutive failures, before
    /// jitter: `min(max, base * 2^(failures-1))`, and `Duration::ZERO` for zero
    /// failures. Never overflows.
    #[must_use]
    pub fn ceiling(&self, failures: u32) -> Duration {
        let Some(exponent) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(exponent).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// The delay before retrying after `failures` consecutive failures, with
    /// jitter drawn from `unit` (a random number in `0.0..=1.0`; values outside
    /// are clamped).
    ///
    /// The result lies in `[ceiling * (1 - jitter), ceiling]` where `ceiling`
    /// is [`Backoff::ceiling`].
    #[must_use]
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(failures);
        let jitter = clamp_unit(self.jitter) * clamp_unit(unit);
        ceiling.mul_f64(1.0 - jitter)
    }
}

/// Clamps to `0.0..=1.0`, mapping NaN to `0.0`.
fn clamp_unit(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delay_doubles_per_failure_up_to_the_maximum() {
        let backoff = Backoff {
            base: secs(1),
            max: secs(300),
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=10).map(|n| backoff.delay(n, 0.7)).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300].map(secs).to_vec()
        );
        assert_eq!(backoff.delay(0, 0.0), Duration::ZERO);
    }

    #[test]
    fn huge_failure_counts_saturate_at_the_maximum() {
        let backoff = Backoff::default();
        assert_eq!(backoff.ceiling(u32::MAX), backoff.max);
        assert_eq!(backoff.ceiling(40), backoff.max);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let backoff = Backoff::default();
        for failures in 1..=12 {
            let ceiling = backoff.ceiling(failures);
            for step in 0..=100 {
                let unit = f64::from(step) / 100.0;
                let delay = backoff.delay(failures, unit);
                assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
                assert!(delay >= ceiling / 2, "{delay:?} < {ceiling:?}/2");
            }
        }
    }

    #[test]
    fn out_of_range_jitter_and_unit_values_are_clamped() {
        let backoff = Backoff {
            jitter: 7.0,
            ..Backoff::default()
        };
        assert_eq!(backoff.delay(3, 2.0), Duration::ZERO);
        assert_eq!(backoff.delay(3, -1.0), secs(4));
        assert_eq!(backoff.delay(3, f64::NAN), secs(4));
    }
}
