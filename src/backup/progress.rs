//! Progress of a running backup written to its status, at most every few seconds.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Api;
use tracing::debug;

use crate::api::{AccountBackup, AccountBackupStatus, ActivityLevel, Progress, ProjectSummary};
use crate::status::{apply_status, push_activity};

/// How often progress is written while items stream by.
const WRITE_INTERVAL: Duration = Duration::from_secs(3);

/// Accumulates progress and writes it to the backup's status.
pub struct ProgressReporter {
    api: Api<AccountBackup>,
    name: String,
    status: AccountBackupStatus,
    items_of_finished_projects: u64,
    bytes_of_finished_projects: u64,
    last_write: Instant,
}

impl ProgressReporter {
    /// Starts from the backup's current (Running) status.
    pub fn new(api: Api<AccountBackup>, name: String, status: AccountBackupStatus) -> Self {
        Self {
            api,
            name,
            status,
            items_of_finished_projects: 0,
            bytes_of_finished_projects: 0,
            last_write: Instant::now(),
        }
    }

    /// Notes that the current project has handled `items` items and `bytes` bytes so far.
    pub async fn add_items(&mut self, items: u64, bytes: u64) {
        let done = self.items_of_finished_projects + items;
        let progress = self.status.progress.get_or_insert_with(Progress::default);
        progress.items_done = done;
        progress.items_total = progress.items_total.max(done);
        progress.bytes_done = self.bytes_of_finished_projects + bytes;
        if self.last_write.elapsed() >= WRITE_INTERVAL {
            self.write().await;
        }
    }

    /// Records a finished project in the activity log and writes at once.
    pub async fn project_done(&mut self, summary: &ProjectSummary) {
        self.items_of_finished_projects += summary.resources + summary.failed;
        self.bytes_of_finished_projects += summary.bytes;
        let level = if summary.failed == 0 {
            ActivityLevel::Info
        } else {
            ActivityLevel::Warning
        };
        push_activity(
            &mut self.status.activity,
            level,
            format!(
                "project {} done: {} resources, {} failed, {}",
                summary.name,
                summary.resources,
                summary.failed,
                crate::api::human_bytes(summary.bytes)
            ),
            Timestamp::now(),
        );
        // Bounded like the final status: the first projects listed, all of them counted.
        if self.status.projects.len() < crate::status::ITEM_LIST_LIMIT {
            let listed = crate::status::summary_for_status(&self.status.projects, summary);
            self.status.projects.push(listed);
        }
        self.status.project_count += 1;
        self.write().await;
    }

    /// The status as accumulated, to build the final status from.
    pub fn into_status(self) -> AccountBackupStatus {
        self.status
    }

    async fn write(&mut self) {
        self.last_write = Instant::now();
        // Progress is best effort: a failed write is retried with the next one.
        if let Err(err) = apply_status(&self.api, &self.name, &self.status).await {
            debug!(error = %err, "writing progress failed");
        }
    }
}
