//! How a failing exchange waits before it is tried again: exponential backoff, capped, with
//! "equal jitter" so that peers failing together do not retry in lockstep, and a limit after
//! which a message is given up (a dead letter).
//!
//! One policy for every retry loop: the delivery workers of both transports (`mllp`, `file`,
//! whose `[outbound.NAME]` keys `retry_initial`, `retry_max`, `max_attempts` fill it) and the
//! Posos client (doubling from its first pause, no jitter, its own attempt count).

use std::hash::BuildHasher;
use std::time::Duration;

/// How a destination backs off after a failed attempt: exponential, capped, with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// Factor between two successive waits; values below 1 are taken as 1.
    pub multiplier: f64,
    /// Attempts (sends that reached or may have reached the receiver) before a message becomes
    /// a dead letter; 0 means never give up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th consecutive failure, before jitter:
    /// `initial × multiplier^(failures − 1)`, at most `max`.
    pub fn base_delay(&self, failures: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let seconds = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The base delay with "equal jitter": somewhere in `[base / 2, base]`, picked by `unit`
    /// in `[0, 1)`, so destinations failing together do not retry in lockstep.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let base = self.base_delay(failures);
        let half = base / 2;
        // `mul_f64` panics on NaN: a bad `unit` counts as no jitter.
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        half + half.mul_f64(unit)
    }

    /// [`RetryPolicy::delay`] with a fresh random `unit`: what a worker waits after the
    /// `failures`-th failure of message (or connection) `salt`.
    pub fn jittered(&self, failures: u32, salt: i64) -> Duration {
        // A fresh `RandomState` is seeded differently each time: cheap randomness for jitter.
        let hash = std::hash::RandomState::new().hash_one((salt, failures));
        let unit = (hash >> 11) as f64 / (1_u64 << 53) as f64;
        self.delay(failures, unit)
    }

    /// Whether a message that has now failed `attempts` times becomes a dead letter.
    pub fn gives_up(&self, attempts: u32) -> bool {
        self.max_attempts != 0 && attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            max_attempts: 3,
        }
    }

    #[rstest]
    #[case::ok_first(1, 100)]
    #[case::ok_second(2, 200)]
    #[case::ok_third(3, 400)]
    #[case::ok_capped(5, 1000)]
    #[case::ok_huge_exponent(u32::MAX, 1000)]
    #[case::ok_zero_failures(0, 100)]
    fn ok_base_delay_grows_and_caps(#[case] failures: u32, #[case] millis: u64) {
        assert_eq!(policy().base_delay(failures), Duration::from_millis(millis));
    }

    #[rstest]
    #[case::ok_low(0.0, 200)]
    #[case::ok_mid(0.5, 300)]
    #[case::ok_high(1.0, 400)]
    #[case::ok_clamped(7.0, 400)]
    #[case::ok_nan(f64::NAN, 200)]
    fn ok_jitter_stays_within_half_and_full(#[case] unit: f64, #[case] millis: u64) {
        let delay = policy().delay(3, unit);
        assert_eq!(delay, Duration::from_millis(millis));
    }

    #[test]
    fn ok_multiplier_below_one_is_constant() {
        let policy = RetryPolicy {
            multiplier: 0.5,
            ..policy()
        };
        assert_eq!(policy.base_delay(4), Duration::from_millis(100));
    }

    #[rstest]
    #[case::ok_below(2, 3, false)]
    #[case::ok_at(3, 3, true)]
    #[case::ok_above(4, 3, true)]
    #[case::ok_unlimited(1000, 0, false)]
    fn ok_gives_up_at_the_limit(#[case] attempts: u32, #[case] max: u32, #[case] gives_up: bool) {
        let policy = RetryPolicy {
            max_attempts: max,
            ..policy()
        };
        assert_eq!(policy.gives_up(attempts), gives_up);
    }

    #[test]
    fn ok_jittered_stays_within_half_and_full() {
        for failures in 1..6 {
            let base = policy().base_delay(failures);
            let delay = policy().jittered(failures, 42);
            assert!(delay >= base / 2 && delay <= base, "{delay:?} for {base:?}");
        }
    }
}
