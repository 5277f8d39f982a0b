//! Progress of a running restore written to its status, at most every few seconds: items and
//! bytes done against the totals its backup recorded, and the estimated completion time.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Api;
use tracing::debug;

use super::decide::status::progressed;
use crate::api::{ProjectRestore, ProjectRestoreStatus};
use crate::status::apply_status;

/// How often progress is written while items stream by.
const WRITE_INTERVAL: Duration = Duration::from_secs(3);

/// Counts what the restore has done and writes it to the restore's status now and then.
pub struct ProgressWriter {
    api: Api<ProjectRestore>,
    name: String,
    status: ProjectRestoreStatus,
    items: u64,
    bytes: u64,
    last_write: Instant,
}

impl ProgressWriter {
    /// Starts from the restore's current (Running) status.
    pub fn new(api: Api<ProjectRestore>, name: String, status: ProjectRestoreStatus) -> Self {
        Self {
            api,
            name,
            status,
            items: 0,
            bytes: 0,
            last_write: Instant::now(),
        }
    }

    /// Notes `items` more items done and `bytes` more bytes read from the repository.
    pub async fn add(&mut self, items: u64, bytes: u64) {
        self.items += items;
        self.bytes += bytes;
        if self.last_write.elapsed() >= WRITE_INTERVAL {
            self.last_write = Instant::now();
            let status = progressed(
                self.status.clone(),
                self.items,
                self.bytes,
                Timestamp::now(),
            );
            // Progress is best effort: a failed write is retried at the next interval.
            match apply_status(&self.api, &self.name, &status).await {
                Ok(_) => self.status = status,
                Err(err) => debug!(error = %err, "writing restore progress failed"),
            }
        }
    }

    /// Bytes read so far (the final status records them).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
