//! When to deliver an outcome's webhook notification: once per outcome, retried with backoff,
//! given up after a few failures. Pure: the status and the time are given.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use kube::runtime::events::EventType;

use crate::api::NotificationStatus;

/// Failed deliveries after which the operator gives up on an outcome.
pub const MAX_ATTEMPTS: u32 = 5;

/// What to do about the notification of an outcome now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delivered already, or given up.
    Nothing,
    /// Deliver it now.
    Send,
    /// The last delivery failed; try again after this long.
    RetryIn(Duration),
}

/// The wait after the `failures`-th failed delivery: 10 s, 30 s, 90 s, 270 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(10 * 3u64.pow(failures.saturating_sub(1).min(6)))
}

/// What to do for outcome `phase` given what was delivered so far.
pub fn next_step(phase: &str, status: Option<&NotificationStatus>, now: Timestamp) -> Step {
    let Some(status) = status else {
        return Step::Send;
    };
    if status.sent_phase.as_deref() == Some(phase) || status.failed_attempts >= MAX_ATTEMPTS {
        return Step::Nothing;
    }
    match &status.last_attempt_at {
        Some(Time(last)) if status.failed_attempts > 0 => {
            let due = last.as_second() + backoff(status.failed_attempts).as_secs() as i64;
            let wait = due - now.as_second();
            if wait > 0 {
                Step::RetryIn(Duration::from_secs(wait as u64))
            } else {
                Step::Send
            }
        }
        _ => Step::Send,
    }
}

/// The status after a delivery of outcome `phase` at `now` (`Err` holds why it failed).
pub fn after_delivery(
    phase: &str,
    previous: Option<&NotificationStatus>,
    result: Result<(), String>,
    now: Timestamp,
) -> NotificationStatus {
    match result {
        Ok(()) => NotificationStatus {
            sent_phase: Some(phase.to_string()),
            sent_at: Some(Time(now)),
            failed_attempts: 0,
            last_attempt_at: Some(Time(now)),
            last_error: None,
        },
        Err(error) => NotificationStatus {
            sent_phase: previous.and_then(|p| p.sent_phase.clone()),
            sent_at: previous.and_then(|p| p.sent_at.clone()),
            failed_attempts: previous.map_or(0, |p| p.failed_attempts) + 1,
            last_attempt_at: Some(Time(now)),
            last_error: Some(error),
        },
    }
}

/// What to say about a delivery, and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Normal for a delivery, Warning for a failure.
    pub event_type: EventType,
    /// `Notified` or `NotificationFailed`.
    pub reason: &'static str,
    /// The event's text (never the URL: errors do not carry it).
    pub note: String,
    /// When to try again, if the notifier has not given up.
    pub retry: Option<Duration>,
}

/// The report of a delivery of outcome `phase` whose result is recorded in `status` (pure).
pub fn report(phase: &str, status: &NotificationStatus) -> Report {
    if status.failed_attempts == 0 {
        return Report {
            event_type: EventType::Normal,
            reason: "Notified",
            note: format!("webhook notified of {phase}"),
            retry: None,
        };
    }
    let error = status.last_error.as_deref().unwrap_or("unknown error");
    let gave_up = status.failed_attempts >= MAX_ATTEMPTS;
    let mut note = format!("webhook notification of {phase} failed: {error}");
    if gave_up {
        note.push_str(&format!("; gave up after {MAX_ATTEMPTS} attempts"));
    }
    Report {
        event_type: EventType::Warning,
        reason: "NotificationFailed",
        note,
        retry: (!gave_up).then(|| backoff(status.failed_attempts)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    #[test]
    fn an_outcome_never_notified_is_sent_and_a_delivered_one_is_not_sent_again() {
        assert_eq!(next_step("Completed", None, at(100)), Step::Send);
        let sent = after_delivery("Completed", None, Ok(()), at(100));
        assert_eq!(next_step("Completed", Some(&sent), at(200)), Step::Nothing);
    }

    #[test]
    fn a_failed_delivery_is_retried_after_a_growing_wait_and_given_up_after_five() {
        let mut status = after_delivery("Failed", None, Err("HTTP 500".into()), at(100));
        assert_eq!(status.failed_attempts, 1);
        assert_eq!(status.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(
            next_step("Failed", Some(&status), at(104)),
            Step::RetryIn(Duration::from_secs(6))
        );
        assert_eq!(next_step("Failed", Some(&status), at(110)), Step::Send);
        status = after_delivery("Failed", Some(&status), Err("timeout".into()), at(110));
        assert_eq!(
            next_step("Failed", Some(&status), at(110)),
            Step::RetryIn(Duration::from_secs(30))
        );
        for _ in 0..3 {
            status = after_delivery("Failed", Some(&status), Err("refused".into()), at(1000));
        }
        assert_eq!(status.failed_attempts, MAX_ATTEMPTS);
        assert_eq!(
            next_step("Failed", Some(&status), at(100_000)),
            Step::Nothing
        );
    }

    #[test]
    fn a_success_after_failures_clears_the_error() {
        let failed = after_delivery("Completed", None, Err("HTTP 503".into()), at(100));
        let sent = after_delivery("Completed", Some(&failed), Ok(()), at(120));
        assert_eq!(sent.failed_attempts, 0);
        assert_eq!(sent.last_error, None);
        assert_eq!(sent.sent_phase.as_deref(), Some("Completed"));
    }

    #[test]
    fn backoff_grows_threefold_from_ten_seconds() {
        let waits: Vec<u64> = (1..=4).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![10, 30, 90, 270]);
    }

    #[test]
    fn a_failed_delivery_is_reported_with_its_retry_until_the_notifier_gives_up() {
        let now = Timestamp::from_second(0).expect("time");
        let delivered = after_delivery("Completed", None, Ok(()), now);
        let ok = report("Completed", &delivered);
        assert_eq!((ok.reason, ok.retry), ("Notified", None));
        let mut status = after_delivery("Failed", None, Err("HTTP 500".into()), now);
        let first = report("Failed", &status);
        assert_eq!(first.event_type, EventType::Warning);
        assert!(first.note.contains("HTTP 500"));
        assert_eq!(first.retry, Some(backoff(1)));
        for _ in 1..MAX_ATTEMPTS {
            status = after_delivery("Failed", Some(&status), Err("HTTP 500".into()), now);
        }
        let last = report("Failed", &status);
        assert_eq!(last.retry, None, "no retry after the last attempt");
        assert!(last.note.contains("gave up after 5 attempts"));
    }
}
