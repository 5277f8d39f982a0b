//! How soon a failed reconcile runs again: transient failures back off exponentially, permanent
//! ones wait long (something outside must change first). The failure counts are only timing:
//! losing them in a restart starts the backoff over, nothing else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first retry of a transient failure.
const FIRST: Duration = Duration::from_secs(5);
/// The longest wait between retries of a transient failure.
const LONGEST: Duration = Duration::from_secs(300);
/// The wait after a permanent failure (a refused request, a bug): retried rarely, not hammered.
const PERMANENT: Duration = Duration::from_secs(900);

/// The wait before retry number `attempt` (1 = the first retry) (pure).
pub fn delay(attempt: u32, permanent: bool) -> Duration {
    if permanent {
        return PERMANENT;
    }
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    FIRST.saturating_mul(factor).min(LONGEST)
}

/// The wait before retrying a Running operation: never past its deadline, so the retry that
/// finds it overdue fails it on time instead of leaving it Running (pure). `left` is what
/// remains of the operation timeout; None for an object that is not Running.
pub fn within_deadline(wait: Duration, left: Option<Duration>) -> Duration {
    match left {
        Some(left) => wait.min(left + Duration::from_secs(1)),
        None => wait,
    }
}

/// Consecutive failures per object (by uid), shared by a controller's reconciles.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts one more failure of `key`; the wait before its next try.
    pub fn failed(&self, key: &str, permanent: bool) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let attempt = failures.entry(key.to_string()).or_insert(0);
        *attempt = attempt.saturating_add(1);
        delay(*attempt, permanent)
    }

    /// `key` reconciled fine: its next failure starts the backoff over.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_from_five_seconds_to_five_minutes() {
        assert_eq!(delay(1, false), Duration::from_secs(5));
        assert_eq!(delay(2, false), Duration::from_secs(10));
        assert_eq!(delay(4, false), Duration::from_secs(40));
        assert_eq!(delay(7, false), Duration::from_secs(300));
        assert_eq!(delay(u32::MAX, false), Duration::from_secs(300));
    }

    #[test]
    fn a_running_operation_is_retried_no_later_than_its_deadline() {
        let five_minutes = Duration::from_secs(300);
        assert_eq!(
            within_deadline(five_minutes, Some(Duration::from_secs(40))),
            Duration::from_secs(41)
        );
        assert_eq!(
            within_deadline(five_minutes, Some(Duration::ZERO)),
            Duration::from_secs(1)
        );
        assert_eq!(
            within_deadline(Duration::from_secs(5), Some(Duration::from_secs(40))),
            Duration::from_secs(5)
        );
        assert_eq!(within_deadline(five_minutes, None), five_minutes);
    }

    #[test]
    fn permanent_failures_wait_long_whatever_the_count() {
        assert_eq!(delay(1, true), Duration::from_secs(900));
    }

    #[test]
    fn a_success_starts_the_backoff_over_for_that_object_only() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("a", false), Duration::from_secs(5));
        assert_eq!(backoff.failed("a", false), Duration::from_secs(10));
        assert_eq!(backoff.failed("b", false), Duration::from_secs(5));
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a", false), Duration::from_secs(5));
        assert_eq!(backoff.failed("b", false), Duration::from_secs(10));
    }
}
