//! How long a coordination Lease has looked the same to this replica, on its own monotonic
//! clock: how leader election and the account locks judge that another replica stopped renewing,
//! never by comparing that node's timestamps with our wall clock.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;

/// How long the lease record has stayed the same, on this replica's monotonic clock.
#[derive(Debug, Default)]
pub struct LeaseObserver {
    seen: Option<(String, std::time::Instant)>,
}

impl LeaseObserver {
    /// Notes the record just read at `now` (monotonic, injected); how long it has been unchanged
    /// (zero when it is new to us).
    pub fn observe(&mut self, current: Option<&LeaseSpec>, now: std::time::Instant) -> Duration {
        let record = current
            .map(|spec| {
                format!(
                    "{:?}|{:?}|{:?}",
                    spec.holder_identity,
                    spec.renew_time.as_ref().map(|t| t.0),
                    spec.acquire_time.as_ref().map(|t| t.0)
                )
            })
            .unwrap_or_default();
        match &self.seen {
            Some((seen, since)) if *seen == record => now.saturating_duration_since(*since),
            _ => {
                self.seen = Some((record, now));
                Duration::ZERO
            }
        }
    }
}
