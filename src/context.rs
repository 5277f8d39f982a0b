//! What every reconcile gets: the client, the repository, the locks, metrics and settings.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::account_lock::AccountLocks;
use crate::metrics::Metrics;

/// How long single steps of a backup may take before they count as failed.
#[derive(Clone, Copy, Debug)]
pub struct StepTimeouts {
    /// A volume snapshot becoming readyToUse.
    pub snapshot: Duration,
    /// One database dump.
    pub dump: Duration,
    /// One pre- or post-backup hook (a pod may shorten it with rewind.dev/hook-timeout).
    pub hook: Duration,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        Self {
            snapshot: Duration::from_secs(600),
            dump: Duration::from_secs(3600),
            hook: Duration::from_secs(60),
        }
    }
}

/// Shared, read-only state of the running operator.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Per-account operation locks.
    pub locks: AccountLocks,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Publishes Kubernetes Events as the operator.
    pub recorder: Recorder,
    /// A Running operation older than this fails.
    pub operation_timeout: Duration,
    /// Limits of the single steps of a backup.
    pub step_timeouts: StepTimeouts,
    /// The operator's namespace (leases, temporary snapshot references).
    pub namespace: String,
    /// The operator-wide limit on Running backups.
    pub backup_limit: crate::backup_limit::RunningLimit,
    /// Where backup data lives.
    pub store: Arc<dyn crate::archive::store::SnapshotStore>,
    /// Delivers webhook notifications of outcomes, when configured.
    pub notifier: Option<crate::notify::Notifier>,
    /// Every AccountBackup, from the one shared watch (`crate::reflectors`).
    pub backups: kube::runtime::reflector::Store<crate::api::AccountBackup>,
    /// Consecutive reconcile failures per object: how soon each is retried.
    pub backoff: crate::retry::Backoff,
    /// Mover pods, or why there are none (volumes then stay snapshots only).
    pub movers: crate::mover::settings::Movers,
}

impl Context {
    /// How soon to retry an object whose reconcile failed: its backoff, but a Running operation
    /// (`running_since` its start) no later than its operation deadline.
    pub fn retry_after_failure(
        &self,
        uid: &str,
        permanent: bool,
        running_since: Option<Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>>,
    ) -> Duration {
        let left = running_since.map(|started| {
            crate::status::time_left(started, jiff::Timestamp::now(), self.operation_timeout)
        });
        crate::retry::within_deadline(self.backoff.failed(uid, permanent), left)
    }

    /// The reporter every event names.
    pub fn reporter(identity: &str) -> Reporter {
        Reporter {
            controller: "rewind-operator".into(),
            instance: Some(identity.to_string()),
        }
    }
}
