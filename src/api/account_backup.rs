//! `AccountBackup`: a point-in-time copy of every project of one account.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;

use super::{ActivityEntry, ByteSize, ItemOutcome, NotificationStatus, Progress};

/// Take a backup of an account now: every project's manifests, volume
/// snapshots and database dumps, stored in the operator's repository.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rewind.dev",
    version = "v1alpha1",
    kind = "AccountBackup",
    plural = "accountbackups",
    shortname = "ab",
    category = "rewind",
    status = "AccountBackupStatus",
    doc = "A point-in-time backup of every project (namespace) of one account.",
    printcolumn(name = "Account", type_ = "string", json_path = ".spec.account"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.logicalSize.human"
    ),
    printcolumn(name = "Added", type_ = "string", json_path = ".status.size.human"),
    printcolumn(
        name = "Restorable-Until",
        type_ = "string",
        json_path = ".status.restorableUntil"
    ),
    printcolumn(name = "Notes", type_ = "string", json_path = ".spec.notes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("an AccountBackup's spec is immutable: create a new backup instead"))]
pub struct AccountBackupSpec {
    /// The account to back up: every namespace labelled `rewind.dev/account=<account>` is one of its projects.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 63").message("account must be a valid label value: lower-case letters, digits and '-', at most 63 characters"))]
    pub account: String,
    /// A name for people, shown by `kubectl rewind`. At most 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub display_name: Option<String>,
    /// Free text: why this backup was taken. Shown everywhere the backup is listed. At most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub notes: Option<String>,
    /// How long the backup stays restorable after it completes, as a Go duration (`168h`, `90m`). Then it expires and is garbage-collected.
    #[serde(default = "default_ttl")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')").message("ttl must be a duration such as 168h, 36h30m or 90m"))]
    pub ttl: GoDuration,
    /// The VolumeSnapshotClass for every PVC; when empty, the default class of each PVC's CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Database dumps over pod exec.
    #[serde(default)]
    pub databases: DatabasesSpec,
    /// What happens to volume data besides the CSI snapshot.
    #[serde(default)]
    pub volumes: VolumesSpec,
    /// Selects the Secrets that are resource tokens, in addition to those labelled `rewind.dev/token=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_selector: Option<LabelSelector>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Seven days: the default `ttl` of a backup.
pub fn default_ttl() -> GoDuration {
    GoDuration::from("168h")
}

fn default_true() -> bool {
    true
}

/// Whether and how databases are dumped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabasesSpec {
    /// Dump every pod annotated `rewind.dev/database`. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for DatabasesSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// What a backup does with each PVC's data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumesSpec {
    /// Copy each volume's files from its snapshot into the repository (a mover pod on a node),
    /// so the backup survives the loss of the storage system and of the cluster. Default true;
    /// false keeps snapshot-only backups, restorable only while the storage system holds them.
    #[serde(default = "default_true")]
    pub copy_to_repository: bool,
}

impl Default for VolumesSpec {
    fn default() -> Self {
        Self {
            copy_to_repository: true,
        }
    }
}

/// Where a backup stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for another operation of the same account, or for a busy project.
    Queued,
    /// Copying data into the repository.
    Running,
    /// Every item was backed up.
    Completed,
    /// The backup is restorable, but some items failed; `status.failed` says which and why.
    PartiallyFailed,
    /// Nothing restorable was produced; the Ready condition says why.
    Failed,
    /// Past `restorableUntil`; its data is being or has been released.
    Expired,
}

impl BackupPhase {
    /// The phase as the API spells it (`Completed`, `PartiallyFailed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Completed => "Completed",
            Self::PartiallyFailed => "PartiallyFailed",
            Self::Failed => "Failed",
            Self::Expired => "Expired",
        }
    }

    /// A backup in this phase will not change phase again on its own (except by expiring).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::PartiallyFailed | Self::Failed | Self::Expired
        )
    }

    /// A backup in this phase can be restored from.
    pub fn is_restorable(self) -> bool {
        matches!(self, Self::Completed | Self::PartiallyFailed)
    }
}

/// What one project contributed to a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    /// The project (namespace) name.
    pub name: String,
    /// Manifests stored.
    pub resources: u64,
    /// Volumes snapshotted.
    pub volumes: u64,
    /// Databases dumped.
    pub databases: u64,
    /// Logical bytes of this project's manifests and dumps.
    pub bytes: u64,
    /// Items of this project that failed.
    pub failed: u64,
    /// Manifests stored per kind (`ConfigMap`, `Deployment.apps`): the first 100 kinds, the
    /// objects of any further kinds counted under `*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, u64>,
    /// The resource tokens (Secrets) a restore gives new values, names only: the first 100
    /// (tokenCount counts them all; a status lists at most 1000 over all its projects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// How many resource tokens the project holds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token_count: u64,
    /// The namespace's Pod Security Admission labels (`pod-security.kubernetes.io/*`): a restored
    /// namespace carries them, so the copy is no weaker than its source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_security: BTreeMap<String, String>,
    /// The repository stream holding this project's manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

impl ProjectSummary {
    /// How many kinds `kinds` names before it counts the rest under [`Self::OTHER_KINDS`].
    pub const KIND_LIMIT: usize = 100;
    /// The key of `kinds` counting the objects of the kinds beyond the first [`Self::KIND_LIMIT`].
    pub const OTHER_KINDS: &'static str = "*";
    /// How many token names `tokens` keeps.
    pub const TOKEN_NAME_LIMIT: usize = 100;

    /// Counts one stored object of `kind` (pure).
    pub fn count_object(&mut self, kind: &str) {
        let key = if self.kinds.contains_key(kind) || self.kinds.len() < Self::KIND_LIMIT {
            kind
        } else {
            Self::OTHER_KINDS
        };
        *self.kinds.entry(key.to_string()).or_default() += 1;
    }

    /// Counts one resource token, keeping its name while there is room (pure).
    pub fn count_token(&mut self, name: &str) {
        self.token_count += 1;
        if self.tokens.len() < Self::TOKEN_NAME_LIMIT {
            self.tokens.push(name.to_string());
        }
    }
}

/// A physical volume snapshot the backup owns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotRecord {
    /// The project the PVC belongs to.
    pub project: String,
    /// The PVC's name.
    pub pvc: String,
    /// The CSI driver that holds the snapshot.
    pub driver: String,
    /// The driver's handle of the physical snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Bytes a volume restored from it needs at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<String>,
    /// The PVC's requested size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_size: Option<String>,
    /// The PVC's StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The PVC's access modes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// The VolumeSnapshotClass used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class: Option<String>,
    /// The snapshot was readyToUse and is now independent of the namespace.
    pub ready: bool,
    /// The volume's files copied into the repository; absent for a snapshot-only backup or a
    /// copy that failed (`status.failed` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_copy: Option<VolumeCopyRecord>,
}

/// A volume's files in the repository, as its mover wrote them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeCopyRecord {
    /// The repository snapshot holding the tree stream.
    pub snapshot: String,
    /// The tree stream's name in it.
    pub stream: String,
    /// Regular files copied.
    pub files: u64,
    /// Their bytes (the volume's file sizes, holes included).
    pub bytes: u64,
    /// What the copy added to the repository (new chunks, compressed and sealed).
    pub stored_bytes: u64,
    /// When the copy finished (RFC 3339).
    pub finished_at: String,
}

/// A database dump stored in the repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseDumpRecord {
    /// The project the pod belongs to.
    pub project: String,
    /// The database pod.
    pub pod: String,
    /// The container the dump ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The workload that runs the pod (`Deployment/db`, `StatefulSet/db`, `Pod/db`): a restore
    /// loads the dump into the restored pod of the same workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// postgres, mysql or custom.
    pub engine: String,
    /// The repository stream holding the dump.
    pub stream: String,
    /// Bytes of the dump.
    pub bytes: u64,
    /// SHA-256 of the dump, hex.
    pub sha256: String,
    /// The repository snapshot holding `stream` when a worker pod wrote the dump into a snapshot
    /// of its own (docs/volumes.md, "Database workers"); absent: the backup's own snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// Status of an AccountBackup, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountBackupStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Queued, Running, Completed, PartiallyFailed, Failed or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// While Queued: what the backup waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_behind: Option<String>,
    /// When the backup started copying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// How many copy attempts started (more than one: the operator stopped mid-copy and resumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_attempts: Option<u32>,
    /// When the backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Until when the backup can be restored (completion + ttl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restorable_until: Option<Time>,
    /// Who asked for the backup (user or BackupSchedule), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Items and bytes done so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// What this backup added to the repository: new bytes only, after deduplication,
    /// compression and encryption (column ADDED). A second backup of unchanged data adds about
    /// nothing; that is not an empty backup — see logicalSize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    /// What this backup holds: the bytes of its manifests and dumps as read from the cluster,
    /// before deduplication and compression (column SIZE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_size: Option<ByteSize>,
    /// The repository snapshot holding this backup's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_snapshot: Option<String>,
    /// Per-project summary: the first 100 (projectCount says how many there are; the
    /// backup's outcome record in the repository lists them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<ProjectSummary>,
    /// How many projects the backup holds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub project_count: u64,
    /// The physical volume snapshots this backup owns: the first 100 (the repository's outcome
    /// record lists them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshots: Vec<VolumeSnapshotRecord>,
    /// How many physical volume snapshots the backup owns.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub volume_snapshot_count: u64,
    /// The database dumps this backup holds: the first 100 (the repository's outcome record
    /// lists them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_dumps: Vec<DatabaseDumpRecord>,
    /// How many database dumps the backup holds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub database_dump_count: u64,
    /// Items left out on purpose (e.g. PVCs labelled `rewind.dev/exclude=true`). At most 100 listed:
    /// beyond that a last entry of kind `More` counts the rest (the repository's outcome record has all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<ItemOutcome>,
    /// Items that failed, each with its reason. At most 100 listed, like `excluded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<ItemOutcome>,
    /// Free-form labels recorded with the repository snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The webhook notification of the outcome, when notifications are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationStatus>,
    /// Standard conditions; `Ready` is True once the backup is restorable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The activity log, newest last, bounded in length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity: Vec<ActivityEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_summary_counts_every_object_but_names_at_most_100_kinds() {
        let mut summary = ProjectSummary::default();
        for kind in 0..150 {
            summary.count_object(&format!("Kind{kind}"));
        }
        summary.count_object("Kind0");
        assert_eq!(summary.kinds.len(), ProjectSummary::KIND_LIMIT + 1);
        assert_eq!(summary.kinds["Kind0"], 2);
        assert_eq!(summary.kinds[ProjectSummary::OTHER_KINDS], 50);
        assert_eq!(summary.kinds.values().sum::<u64>(), 151);
    }

    #[test]
    fn a_project_summary_counts_every_token_but_names_at_most_100() {
        let mut summary = ProjectSummary::default();
        for token in 0..250 {
            summary.count_token(&format!("key-{token}"));
        }
        assert_eq!(summary.token_count, 250);
        assert_eq!(summary.tokens.len(), ProjectSummary::TOKEN_NAME_LIMIT);
        assert_eq!(summary.tokens[0], "key-0");
    }
}
