//! Status building blocks shared by the three kinds: progress, sizes, items and the activity log.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How far an operation has come.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Items (resources, volumes, databases) finished so far, failed ones included.
    pub items_done: u64,
    /// Items the operation found to work on; grows while projects are discovered.
    pub items_total: u64,
    /// Bytes handled so far (read from the cluster by a backup, from the repository by a restore).
    pub bytes_done: u64,
    /// Bytes the operation will handle, when known in advance (a restore knows it from its backup).
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub bytes_total: u64,
    /// When the operation should finish at the rate so far; set once enough is done to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion_time: Option<Time>,
}

fn is_zero_bytes(value: &u64) -> bool {
    *value == 0
}

/// A size in bytes with a human-readable rendering for printer columns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByteSize {
    /// Exact number of bytes.
    pub bytes: u64,
    /// The same size for people, e.g. `1.4 GiB`.
    pub human: String,
}

impl ByteSize {
    /// A size with its human rendering filled in.
    pub fn new(bytes: u64) -> Self {
        Self {
            bytes,
            human: human_bytes(bytes),
        }
    }
}

/// Renders a byte count with binary units, one decimal: `0 B`, `512 B`, `1.5 KiB`, `3.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// One object an operation skipped, failed on, or left out, with why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemOutcome {
    /// The project (namespace) the item belongs to.
    pub project: String,
    /// The item's kind, e.g. `PersistentVolumeClaim`, `Ingress`, `Database`.
    pub kind: String,
    /// The item's name.
    pub name: String,
    /// Why it was skipped, left out or failed, and what to do about it.
    pub reason: String,
}

/// Severity of an activity entry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActivityLevel {
    /// A step happened as expected.
    Info,
    /// Something needs attention but the operation goes on.
    Warning,
    /// A step failed.
    Error,
}

/// One timestamped line of an operation's activity log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEntry {
    /// When it happened.
    pub time: Time,
    /// info, warning or error.
    pub level: ActivityLevel,
    /// What happened, in words an admin can act on.
    pub message: String,
}

/// Delivery of the webhook notification of an operation's outcome (written by the notifier's
/// own field manager, so the controllers' status writes never erase it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    /// The outcome (phase) the webhook accepted a notification of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_phase: Option<String>,
    /// When the webhook accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Time>,
    /// Failed deliveries of the current outcome; the operator gives up after five.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: u32,
    /// When the last delivery was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
    /// Why the last delivery failed (the URL is never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
