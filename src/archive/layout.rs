//! The layout of one backup's repository snapshot: stream names, metadata keys and the outcome
//! record. A reader needs nothing else to find a project's manifests or a database dump.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;
use tokio::io::AsyncReadExt;

use super::store::{SnapshotStore, StoreError};
use crate::api::{
    AccountBackup, AccountBackupStatus, DatabaseDumpRecord, ItemOutcome, ProjectSummary,
    VolumeSnapshotRecord,
};

/// The stream that records a backup's outcome, written just before the snapshot commits.
pub const OUTCOME_STREAM: &str = "backup/outcome.json";
/// Snapshot metadata key of the backup's spec (JSON).
pub const SPEC_METADATA: &str = "spec";
/// Snapshot metadata key of the schedule that created the backup, if any.
pub const SCHEDULE_METADATA: &str = "schedule";
/// Snapshot metadata key of the AccountBackup UID a snapshot belongs to.
pub const BACKUP_UID_METADATA: &str = "backup-uid";

/// Snapshot metadata key of a volume copy (the repository snapshot a backup mover writes): the
/// UID of the AccountBackup it belongs to. Deliberately not [`BACKUP_UID_METADATA`]: a resumed
/// backup releases every snapshot of its UID but the one that records its outcome.
pub const VOLUME_OF_BACKUP_METADATA: &str = "volume-of-backup-uid";
/// Snapshot metadata key of a volume copy: the project (namespace) of the PVC.
pub const VOLUME_PROJECT_METADATA: &str = "project";
/// Snapshot metadata key of a volume copy: the PVC's name.
pub const VOLUME_PVC_METADATA: &str = "pvc";

/// Snapshot metadata key of a database dump a worker pod wrote into a snapshot of its own: the
/// UID of the AccountBackup it belongs to. Not [`BACKUP_UID_METADATA`], for the same reason as
/// [`VOLUME_OF_BACKUP_METADATA`].
pub const DUMP_OF_BACKUP_METADATA: &str = "dump-of-backup-uid";
/// Snapshot metadata key of a dump: the database pod's name (beside [`VOLUME_PROJECT_METADATA`]).
pub const DUMP_POD_METADATA: &str = "pod";
/// Every metadata key that ties a snapshot of its own (a volume copy, a dump) to its backup:
/// what releasing a backup's data looks for besides its recorded snapshots.
pub const DATA_OF_BACKUP_METADATA: [&str; 2] = [VOLUME_OF_BACKUP_METADATA, DUMP_OF_BACKUP_METADATA];

/// Whether a snapshot with this metadata is a volume copy or a dump of backup `uid` (pure):
/// what releasing that backup's data releases besides its recorded snapshots.
pub fn is_data_of_backup(metadata: &BTreeMap<String, String>, uid: &str) -> bool {
    !uid.is_empty()
        && DATA_OF_BACKUP_METADATA
            .iter()
            .any(|key| metadata.get(*key).map(String::as_str) == Some(uid))
}

/// The outcome of a backup of thousands of items is far below this; a larger stream is refused.
const OUTCOME_LIMIT: u64 = 64 * 1024 * 1024;

/// The stream name of a project's manifests.
pub fn manifest_stream(project: &str) -> String {
    format!("projects/{project}/manifests.jsonl")
}

/// The stream name of one database pod's dump.
pub fn dump_stream(project: &str, pod: &str) -> String {
    format!("projects/{project}/databases/{pod}.dump")
}

/// The metadata recorded with the repository snapshot of `backup`, started at `now`.
pub fn snapshot_metadata(backup: &AccountBackup, now: Timestamp) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    metadata.insert("account".into(), backup.spec.account.clone());
    metadata.insert("backup".into(), backup.name_any());
    if let Some(uid) = &backup.metadata.uid {
        metadata.insert(BACKUP_UID_METADATA.into(), uid.clone());
    }
    if let Some(notes) = &backup.spec.notes {
        metadata.insert("notes".into(), notes.clone());
    }
    if let Some(name) = &backup.spec.display_name {
        metadata.insert("display-name".into(), name.clone());
    }
    if let Some(requested_by) = backup.status.as_ref().and_then(|s| s.requested_by.clone()) {
        metadata.insert("requested-by".into(), requested_by);
    }
    metadata.insert("ttl".into(), backup.spec.ttl.to_string());
    if let Ok(spec) = serde_json::to_string(&backup.spec) {
        metadata.insert(SPEC_METADATA.into(), spec);
    }
    if let Some(schedule) = backup.labels().get(crate::api::SCHEDULE_LABEL) {
        metadata.insert(SCHEDULE_METADATA.into(), schedule.clone());
    }
    metadata.insert("started-at".into(), now.to_string());
    metadata
}

/// What the copy step produced. Also stored in the snapshot (stream [`OUTCOME_STREAM`]) so a
/// lost AccountBackup object can be rebuilt from the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackupOutcome {
    /// The repository snapshot written.
    pub snapshot_id: String,
    /// Per project.
    pub projects: Vec<ProjectSummary>,
    /// Items that failed, with reasons.
    pub failed: Vec<ItemOutcome>,
    /// Bytes read from the cluster.
    pub logical_bytes: u64,
    /// Bytes added to the repository.
    pub stored_bytes: u64,
    /// Items handled (stored or failed).
    pub items: u64,
    /// Physical volume snapshots now owned by the backup.
    pub volume_snapshots: Vec<VolumeSnapshotRecord>,
    /// Database dumps stored.
    pub database_dumps: Vec<DatabaseDumpRecord>,
    /// Items left out on purpose.
    pub excluded: Vec<ItemOutcome>,
    /// Things that went wrong but did not fail an item (hooks with on-error continue).
    pub warnings: Vec<String>,
}

/// What the outcome stream holds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedOutcome {
    /// When the copy step finished (RFC 3339).
    completed_at: String,
    /// Its result.
    outcome: BackupOutcome,
}

/// The bytes of the outcome stream.
pub fn encode_outcome(
    outcome: &BackupOutcome,
    completed_at: Timestamp,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&RecordedOutcome {
        completed_at: completed_at.to_string(),
        outcome: outcome.clone(),
    })
}

/// Reads the outcome stream back: the copy step's result and when it finished.
pub fn decode_outcome(bytes: &[u8]) -> Result<(BackupOutcome, Timestamp), String> {
    let recorded: RecordedOutcome = serde_json::from_slice(bytes)
        .map_err(|err| format!("the snapshot's {OUTCOME_STREAM} is not readable: {err}"))?;
    let completed_at = recorded
        .completed_at
        .parse()
        .map_err(|err| format!("the snapshot's completion time is not readable: {err}"))?;
    Ok((recorded.outcome, completed_at))
}

/// The outcome snapshot `snapshot_id` recorded, with its id filled in. A snapshot that is gone,
/// records no readable outcome or an absurdly large one is a permanent error; an unreachable
/// repository is a transient one.
pub async fn read_outcome(
    store: &dyn SnapshotStore,
    snapshot_id: &str,
) -> Result<(BackupOutcome, Timestamp), StoreError> {
    let reader = store.read_stream(snapshot_id, OUTCOME_STREAM).await?;
    let mut bytes = Vec::new();
    reader
        .take(OUTCOME_LIMIT + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|err| StoreError {
            message: format!("reading {OUTCOME_STREAM} of {snapshot_id}: {err}"),
            permanent: false,
        })?;
    if bytes.len() as u64 > OUTCOME_LIMIT {
        return Err(StoreError {
            message: format!(
                "{OUTCOME_STREAM} of {snapshot_id} is larger than {OUTCOME_LIMIT} bytes"
            ),
            permanent: true,
        });
    }
    let (mut outcome, completed_at) = decode_outcome(&bytes).map_err(|message| StoreError {
        message,
        permanent: true,
    })?;
    outcome.snapshot_id = snapshot_id.to_string();
    Ok((outcome, completed_at))
}

/// Whether the status holds every project, volume snapshot, dump and excluded item of the
/// backup (pure): the status keeps the first ones of each list and a count (or, for excluded
/// items, a last entry saying how many more); a count of 0 is an older status that kept them all.
pub fn lists_complete(status: &AccountBackupStatus) -> bool {
    let complete = |listed: usize, count: u64| count == 0 || listed as u64 >= count;
    complete(status.projects.len(), status.project_count)
        && complete(status.volume_snapshots.len(), status.volume_snapshot_count)
        && complete(status.database_dumps.len(), status.database_dump_count)
        && status
            .excluded
            .last()
            .is_none_or(|item| item.kind != crate::status::MORE_KIND)
}

/// `backup` with its projects, volume snapshots and dumps listed in full: as it is when its
/// status holds them all, otherwise completed from the outcome record in the repository.
pub async fn with_complete_lists(
    store: &dyn SnapshotStore,
    mut backup: AccountBackup,
) -> Result<AccountBackup, StoreError> {
    let Some(status) = backup.status.as_mut() else {
        return Ok(backup);
    };
    if lists_complete(status) {
        return Ok(backup);
    }
    let Some(snapshot) = status.repository_snapshot.clone() else {
        return Ok(backup);
    };
    let (outcome, _) = read_outcome(store, &snapshot).await?;
    status.projects = outcome.projects;
    status.volume_snapshots = outcome.volume_snapshots;
    status.database_dumps = outcome.database_dumps;
    status.excluded = outcome.excluded;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backups_volume_copies_and_dumps_are_its_data_and_its_own_snapshot_is_not() {
        let meta = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(is_data_of_backup(
            &meta(&[(VOLUME_OF_BACKUP_METADATA, "uid-1"), ("pvc", "data")]),
            "uid-1"
        ));
        assert!(is_data_of_backup(
            &meta(&[(DUMP_OF_BACKUP_METADATA, "uid-1"), ("pod", "db-0")]),
            "uid-1"
        ));
        assert!(!is_data_of_backup(
            &meta(&[(DUMP_OF_BACKUP_METADATA, "uid-2")]),
            "uid-1"
        ));
        assert!(!is_data_of_backup(
            &meta(&[(BACKUP_UID_METADATA, "uid-1")]),
            "uid-1"
        ));
        assert!(!is_data_of_backup(
            &meta(&[(DUMP_OF_BACKUP_METADATA, "")]),
            ""
        ));
    }

    #[test]
    fn the_outcome_survives_the_round_trip_through_the_repository() {
        let outcome = BackupOutcome {
            items: 7,
            logical_bytes: 1234,
            warnings: vec!["hook slow".into()],
            ..BackupOutcome::default()
        };
        let at: Timestamp = "2026-11-01T03:00:09Z".parse().expect("time");
        let bytes = encode_outcome(&outcome, at).expect("encode");
        let (back, completed) = decode_outcome(&bytes).expect("decode");
        assert_eq!(back, outcome);
        assert_eq!(completed, at);
        assert!(decode_outcome(b"{").is_err());
    }

    #[test]
    fn a_status_with_fewer_records_than_its_counts_is_completed_from_the_repository() {
        let mut status = AccountBackupStatus::default();
        assert!(lists_complete(&status), "nothing to list");
        status.volume_snapshot_count = 250;
        status.volume_snapshots = vec![VolumeSnapshotRecord::default(); 100];
        assert!(!lists_complete(&status));
        status.volume_snapshots = vec![VolumeSnapshotRecord::default(); 250];
        assert!(lists_complete(&status));
        status.project_count = 0;
        status.projects = vec![ProjectSummary::default(); 3];
        assert!(
            lists_complete(&status),
            "an older status without counts kept them all"
        );
    }
}
