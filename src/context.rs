//! What every reconcile gets: the client, the repository, the locks, metrics and settings.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::account_lock::AccountLocks;
use crate::metrics::Metrics;

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
    /// Where backup data lives.
    pub store: Arc<dyn crate::backup::store::SnapshotStore>,
}

impl Context {
    /// The reporter every event names.
    pub fn reporter(identity: &str) -> Reporter {
        Reporter {
            controller: "rewind-operator".into(),
            instance: Some(identity.to_string()),
        }
    }
}
