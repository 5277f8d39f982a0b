//! The notifier's shell, called by the backup and restore controllers on a finished object:
//! observe (the recorded delivery, fresh from the API server) → decide (due? retry when?) →
//! apply (POST, record, event) → report.

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::Recorder;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::apply::{self, Notifier};
use super::decide::{self, Step};
use super::notice::Notified;
use super::observe;

/// Requeue after the shortest of `waits`; with none, wait for a change.
pub fn sooner_of(waits: &[Option<Duration>]) -> kube::runtime::controller::Action {
    match waits.iter().flatten().min() {
        Some(wait) => kube::runtime::controller::Action::requeue(*wait),
        None => kube::runtime::controller::Action::await_change(),
    }
}

/// Notifies outcome `phase` of `object` when it is due and records the delivery in its status.
/// Returns when to look again (a failed delivery waiting for its retry), if ever. The recorded
/// delivery is read again from the API server before sending, so a reconcile on a stale
/// cached object does not notify twice.
pub async fn notify_outcome<K>(
    notifier: Option<&Notifier>,
    recorder: &Recorder,
    api: &Api<K>,
    object: &K,
    phase: &str,
) -> Option<Duration>
where
    K: Notified + Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let notifier = notifier?;
    if !object.wants_notice() {
        return None;
    }
    let name = object.name_any();
    if decide::next_step(phase, object.notification().as_ref(), Timestamp::now()) == Step::Nothing {
        return None;
    }
    let recorded = match observe::recorded(api, &name).await {
        Ok(recorded) => recorded,
        Err(err) => {
            warn!(object = %name, error = %err, "reading the notification state failed; retrying");
            return Some(Duration::from_secs(10));
        }
    };
    let now = Timestamp::now();
    match decide::next_step(phase, recorded.as_ref(), now) {
        Step::Nothing => None,
        Step::RetryIn(wait) => Some(wait),
        Step::Send => {
            let result = notifier.deliver(&object.notice(phase)).await;
            if let Err(err) = &result {
                warn!(object = %name, phase, category = err.category(), error = %err, "webhook notification failed");
            } else {
                info!(object = %name, phase, "webhook notified");
            }
            let status = decide::after_delivery(
                phase,
                recorded.as_ref(),
                result.map_err(|e| e.to_string()),
                now,
            );
            let report = decide::report(phase, &status);
            if let Err(err) = apply::record(api, &name, &status).await {
                warn!(object = %name, error = %err, "recording the notification failed; retrying");
                return Some(Duration::from_secs(10));
            }
            crate::events::publish(
                recorder,
                object,
                "Notify",
                report.event_type,
                report.reason,
                report.note,
            )
            .await;
            report.retry
        }
    }
}
