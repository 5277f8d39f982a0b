//! Prometheus metrics. Labels are bounded (controller, result, category); the
//! one exception is `account` on the last-success gauge, which the alert
//! "no successful backup for 26 h" needs and which grows with tenants, not objects.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// accountbackup, backupschedule or projectrestore.
    pub controller: &'static str,
    /// ok or error.
    pub result: &'static str,
    /// The error category (`none` on success).
    pub category: &'static str,
}

/// Labels of a finished operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// backup or restore.
    pub operation: &'static str,
    /// The final phase.
    pub phase: &'static str,
}

/// Labels naming an account.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The account.
    pub account: String,
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Reconciles by controller, result and error category.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Wall time of finished backups and restores.
    pub operation_duration: Family<OperationLabels, Histogram>,
    /// Logical bytes read from the cluster by backups.
    pub backup_logical_bytes: Counter,
    /// Bytes backups added to the repository.
    pub backup_stored_bytes: Counter,
    /// Unix time of each account's last successful backup.
    pub last_successful_backup: Family<AccountLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rewind");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller, result and error category",
            reconciles.clone(),
        );
        let operation_duration = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 14))
        });
        registry.register(
            "operation_duration_seconds",
            "Wall time of finished backups and restores",
            operation_duration.clone(),
        );
        let backup_logical_bytes = Counter::default();
        registry.register(
            "backup_logical_bytes",
            "Bytes read from the cluster by backups",
            backup_logical_bytes.clone(),
        );
        let backup_stored_bytes = Counter::default();
        registry.register(
            "backup_stored_bytes",
            "Bytes backups added to the repository",
            backup_stored_bytes.clone(),
        );
        let last_successful_backup = Family::<AccountLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "Unix time of the account's last Completed backup",
            last_successful_backup.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            operation_duration,
            backup_logical_bytes,
            backup_stored_bytes,
            last_successful_backup,
        }
    }
}

impl Metrics {
    /// Records a successful backup of `account` that completed at `completed_at` (seconds since
    /// the epoch), keeping the newest: fed by every reconcile of a Completed backup, so after a
    /// restart the gauge comes back from the cluster, not from the process's memory.
    pub fn record_success(&self, account: &str, completed_at: f64) {
        let gauge = self.last_successful_backup.get_or_create(&AccountLabels {
            account: account.to_string(),
        });
        if gauge.get() < completed_at {
            gauge.set(completed_at);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_the_rewind_prefix() {
        let metrics = Metrics::default();
        metrics
            .reconciles
            .get_or_create(&ReconcileLabels {
                controller: "accountbackup",
                result: "ok",
                category: "none",
            })
            .inc();
        metrics
            .last_successful_backup
            .get_or_create(&AccountLabels {
                account: "acme".into(),
            })
            .set(1_700_000_000.0);
        metrics.record_success("globex", 1_700_000_500.0);
        metrics.record_success("globex", 1_700_000_100.0);
        let text = metrics.render();
        assert!(
            text.contains(
                "rewind_last_successful_backup_timestamp_seconds{account=\"globex\"} 1700000500"
            ),
            "an older success never moves the gauge back: {text}"
        );
        assert!(text.contains("rewind_reconciles_total{controller=\"accountbackup\",result=\"ok\",category=\"none\"} 1"), "{text}");
        assert!(
            text.contains(
                "rewind_last_successful_backup_timestamp_seconds{account=\"acme\"} 1700000000"
            ),
            "{text}"
        );
    }
}
