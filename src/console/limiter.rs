//! Login attempts, rate-limited: failures are counted per client address and per user name
//! within a window; past the limit every attempt (even a right password) is answered 429
//! until the oldest failure leaves the window. Kept across configuration reloads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most (addresses plus names); past it the stalest are forgotten.
const MAX_KEYS: usize = 10_000;

/// Failed logins by key (`ip:…` or `user:…`), each a list of instants within the window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    /// Locked only to read or update the counts, never across a password check.
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    /// `Err(wait)` when any of `keys` has `limit` failures within `window` before `now`.
    pub fn check(
        &self,
        keys: &[String],
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut wait = None;
        for key in keys {
            let Some(times) = failures.get(key) else {
                continue;
            };
            let recent: Vec<&Instant> = times
                .iter()
                .filter(|t| now.duration_since(**t) < window)
                .collect();
            if recent.len() >= usize::try_from(limit).unwrap_or(usize::MAX)
                && let Some(oldest) = recent.iter().min()
            {
                let left = window.saturating_sub(now.duration_since(**oldest));
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Counts one failure for each of `keys`.
    pub fn fail(&self, keys: &[String], window: Duration, now: Instant) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < window));
        }
        for key in keys {
            if failures.len() >= MAX_KEYS && !failures.contains_key(key) {
                continue;
            }
            let times = failures.entry(key.clone()).or_default();
            times.retain(|t| now.duration_since(*t) < window);
            times.push(now);
        }
    }

    /// Forgets the failures of `keys` (a successful login).
    pub fn succeed(&self, keys: &[String]) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn err_locked_after_the_limit_then_free_after_the_window() {
        let limiter = LoginLimiter::default();
        let keys = vec!["ip:10.0.0.1".to_string(), "user:alice".to_string()];
        let start = Instant::now();
        for n in 0..3 {
            assert_eq!(
                limiter.check(&keys, 3, WINDOW, start),
                Ok(()),
                "attempt {n}"
            );
            limiter.fail(&keys, WINDOW, start);
        }
        let later = start + Duration::from_secs(100);
        assert_eq!(
            limiter.check(&keys, 3, WINDOW, later),
            Err(Duration::from_secs(200))
        );
        // Another address for the same user is locked too (per-name count).
        assert!(
            limiter
                .check(&["user:alice".to_string()], 3, WINDOW, later)
                .is_err()
        );
        assert_eq!(
            limiter.check(&keys, 3, WINDOW, start + WINDOW),
            Ok(()),
            "free once the failures left the window"
        );
    }

    #[test]
    fn ok_success_forgets() {
        let limiter = LoginLimiter::default();
        let keys = vec!["user:bob".to_string()];
        let now = Instant::now();
        limiter.fail(&keys, WINDOW, now);
        limiter.succeed(&keys);
        assert_eq!(limiter.check(&keys, 1, WINDOW, now), Ok(()));
    }
}
