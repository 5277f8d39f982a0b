//! Prometheus metrics. Labels are bounded (controller, result, category, phase); the
//! exception is `account` on the last-success gauge and the finished-backups counter, which
//! the alert "no successful backup for 26 h" and the dashboard need, and which grow with
//! tenants, not objects. `charts/rewind/dashboards/rewind.json` queries only what is here.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::BackupPhase;

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

/// Labels of a finished backup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedBackupLabels {
    /// The account.
    pub account: String,
    /// Completed, PartiallyFailed or Failed.
    pub phase: &'static str,
}

/// Labels naming a phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The phase.
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
    /// Backups that finished, by account and final phase.
    pub backups_finished: Family<FinishedBackupLabels, Counter>,
    /// AccountBackups in the cluster by phase (Queued is the queue's length), from the shared cache.
    pub backups_by_phase: Family<PhaseLabels, Gauge>,
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
        let backups_finished = Family::<FinishedBackupLabels, Counter>::default();
        registry.register(
            "backups_finished",
            "Backups that finished, by account and final phase",
            backups_finished.clone(),
        );
        let backups_by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "account_backups",
            "AccountBackups in the cluster by phase (Queued: waiting for a slot or a lock)",
            backups_by_phase.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            operation_duration,
            backup_logical_bytes,
            backup_stored_bytes,
            last_successful_backup,
            backups_finished,
            backups_by_phase,
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

    /// Counts a finished backup of `account` in `phase`.
    pub fn record_finished(&self, account: &str, phase: BackupPhase) {
        self.backups_finished
            .get_or_create(&FinishedBackupLabels {
                account: account.to_string(),
                phase: phase.as_str(),
            })
            .inc();
    }

    /// Sets the per-phase counts of AccountBackups from `backups` (every phase, zeros included).
    pub fn count_phases(&self, backups: impl Iterator<Item = Option<BackupPhase>>) {
        use BackupPhase::*;
        let mut counts = std::collections::BTreeMap::new();
        for phase in [Queued, Running, Completed, PartiallyFailed, Failed, Expired] {
            counts.insert(phase.as_str(), 0i64);
        }
        for phase in backups {
            // A backup without a phase yet waits to be queued.
            *counts.entry(phase.unwrap_or(Queued).as_str()).or_default() += 1;
        }
        for (phase, count) in counts {
            self.backups_by_phase
                .get_or_create(&PhaseLabels { phase })
                .set(count);
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

    #[test]
    fn finished_backups_count_by_account_and_the_queue_by_phase() {
        let metrics = Metrics::default();
        metrics.record_finished("acme", BackupPhase::Completed);
        metrics.record_finished("acme", BackupPhase::Completed);
        metrics.count_phases(
            [None, Some(BackupPhase::Queued), Some(BackupPhase::Running)].into_iter(),
        );
        let text = metrics.render();
        assert!(
            text.contains("rewind_backups_finished_total{account=\"acme\",phase=\"Completed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("rewind_account_backups{phase=\"Queued\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("rewind_account_backups{phase=\"Failed\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn every_metric_the_dashboard_queries_is_one_the_operator_exports() {
        let dashboard = include_str!("../charts/rewind/dashboards/rewind.json");
        let parsed: serde_json::Value =
            serde_json::from_str(dashboard).expect("the dashboard is JSON");
        assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
        // Families appear in the exposition once they have a child: give each one.
        let metrics = Metrics::default();
        metrics.record_finished("acme", BackupPhase::Completed);
        metrics.count_phases(std::iter::empty());
        metrics.record_success("acme", 1.0);
        metrics
            .reconciles
            .get_or_create(&ReconcileLabels {
                controller: "accountbackup",
                result: "error",
                category: "kubernetes",
            })
            .inc();
        metrics
            .operation_duration
            .get_or_create(&OperationLabels {
                operation: "backup",
                phase: "Completed",
            })
            .observe(1.0);
        let exported: Vec<String> = metrics
            .render()
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split_whitespace().next().map(str::to_string))
            .collect();
        let mut queried = 0;
        for (at, _) in dashboard.match_indices("rewind_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                exported.iter().any(|e| e == base),
                "the dashboard queries {name}, which the operator does not export (exported: {exported:?})"
            );
            queried += 1;
        }
        assert!(queried >= 6, "the dashboard queries the operator's metrics");
    }
}
