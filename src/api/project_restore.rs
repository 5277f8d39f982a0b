//! `ProjectRestore`: brings projects of a backup back as new, isolated namespaces.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActivityEntry, ItemOutcome, NotificationStatus, Progress};
use crate::duration::GoDuration;

fn default_true() -> bool {
    true
}

/// Restore projects of an AccountBackup into new namespaces. Never overwrites anything.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rewind.dev",
    version = "v1alpha1",
    kind = "ProjectRestore",
    plural = "projectrestores",
    shortname = "pr",
    category = "rewind",
    status = "ProjectRestoreStatus",
    doc = "Restores projects of an AccountBackup into new, isolated namespaces; the original projects are left untouched.",
    printcolumn(name = "Account", type_ = "string", json_path = ".spec.account"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backup"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progressSummary"
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a ProjectRestore's spec is immutable: create a new restore instead"))]
pub struct ProjectRestoreSpec {
    /// The account whose backup is restored. Must be the backup's account: admission lets only that
    /// account's owners (group `rewind:owners:<account>`) and platform admins create the restore,
    /// and the operator refuses a restore whose backup belongs to another account.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 63").message("account must be a valid label value: lower-case letters, digits and '-', at most 63 characters"))]
    pub account: String,
    /// The AccountBackup to restore from.
    #[x_kube(validation = Rule::new("size(self) > 0").message("backup must name an AccountBackup"))]
    pub backup: String,
    /// Which projects of the backup to restore. Default: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// New namespace per project (project → namespace). Default `<project>-restore-<short id>`. Each must not exist yet,
    /// must not be a system namespace (`default`, `kube-*`) and must differ from every other target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "target_namespaces_schema")]
    #[x_kube(
        validation = Rule::new("self.all(k, self[k].matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self[k]) <= 63)").message("every target namespace must be a valid namespace name: lower-case letters, digits and '-', at most 63 characters"),
        validation = Rule::new("self.all(k, self[k] != 'default' && !self[k].startsWith('kube-'))").message("a target namespace cannot be a system namespace (default, kube-*): choose a new name"),
        validation = Rule::new("self.all(k, self.all(j, j == k || self[j] != self[k]))").message("two projects cannot be restored into the same namespace: give each its own target")
    )]
    pub target_namespaces: BTreeMap<String, String>,
    /// Delete the restored namespaces this long after the restore completes (Go duration, e.g. `24h`): a look-around copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')").message("expireAfter must be a duration such as 24h or 90m"))]
    pub expire_after: Option<GoDuration>,
    /// Stream database dumps into the restored database pods. Default true.
    #[serde(default = "default_true")]
    pub restore_databases: bool,
    /// Restore PVC contents from the backup. Default true.
    #[serde(default = "default_true")]
    pub restore_volumes: bool,
    /// Where volume contents come from: `Auto` (default) — the CSI snapshot while the storage
    /// system still has it (fast), else the backup's copy in the repository; `Snapshot` — the
    /// snapshot only; `Repository` — the repository copy only (a mover pod fills a new volume).
    #[serde(default)]
    pub volume_source: VolumeSource,
}

/// Where a restored PVC's contents come from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeSource {
    /// The snapshot when it is still there, else the repository copy.
    #[default]
    Auto,
    /// The CSI snapshot only.
    Snapshot,
    /// The repository copy only.
    Repository,
}

/// At most 64 targets, each at most a namespace name long: bounds that keep the admission rules
/// on `targetNamespaces` within the API server's CEL cost budget.
fn target_namespaces_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 63}
    })
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Where a restore stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RestorePhase {
    /// Waiting for another operation of the same account.
    Queued,
    /// Creating namespaces, objects, volumes and databases.
    Running,
    /// Every item was restored.
    Completed,
    /// The namespaces exist but some items failed; `status.failed` says which and why.
    PartiallyFailed,
    /// Nothing was restored; the Ready condition says why.
    Failed,
}

impl RestorePhase {
    /// The phase as the API spells it (`Completed`, `PartiallyFailed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Completed => "Completed",
            Self::PartiallyFailed => "PartiallyFailed",
            Self::Failed => "Failed",
        }
    }
}

/// Counts of what a restore recreated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredCounts {
    /// Manifests created.
    pub resources: u64,
    /// PVCs restored from snapshots.
    pub volumes: u64,
    /// Databases loaded.
    pub databases: u64,
    /// Token Secrets regenerated.
    pub tokens: u64,
}

/// A token Secret whose values were regenerated; never its values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegeneratedToken {
    /// The restored namespace.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The keys that got new values.
    pub keys: Vec<String>,
}

/// Status of a ProjectRestore, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRestoreStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Queued, Running, Completed, PartiallyFailed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// While Queued: what the restore waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_behind: Option<String>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the restore finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// When the restored namespaces will be deleted (from `expireAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Project → the namespace it is restored into.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_namespaces: BTreeMap<String, String>,
    /// Items done / total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// `done/total` for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_summary: Option<String>,
    /// What was recreated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<RestoredCounts>,
    /// Items not restored on purpose, with why (e.g. an Ingress that would take the original's host).
    /// At most 100 listed: beyond that a last entry of kind `More` counts the rest (the operator's log lists all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<ItemOutcome>,
    /// Items restored with a change that keeps the copy inert (a Job or CronJob suspended, a
    /// LoadBalancer or NodePort Service made ClusterIP, external-DNS annotations removed), each with what changed.
    /// At most 100 listed, like `skipped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjusted: Vec<ItemOutcome>,
    /// Items that failed, each with its reason. At most 100 listed, like `skipped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<ItemOutcome>,
    /// Token Secrets and keys that have new values (never the values): the first 100;
    /// regeneratedTokenCount says how many there are (the operator's log lists every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regenerated_tokens: Vec<RegeneratedToken>,
    /// How many token Secrets got new values.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub regenerated_token_count: u64,
    /// Things to know about the restored project (e.g. excluded PVCs created empty): the first
    /// 100, the last one saying how many more the operator's log lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The webhook notification of the outcome, when notifications are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationStatus>,
    /// Standard conditions; `Ready` is True once the restore completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The activity log, newest last, bounded in length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity: Vec<ActivityEntry>,
}
