//! A resumed copy first asks the repository whether an earlier attempt already committed.
//!
//! An operator that stops between committing a backup's snapshot and writing its status leaves
//! a Running backup whose data is safely stored. Copying again would store a second snapshot and
//! orphan the first one (and the volume snapshots it names). Instead the resumed attempt adopts
//! the newest committed snapshot of the same backup UID, from its recorded outcome, and releases
//! any other attempt.

use jiff::Timestamp;

use super::error::BackupError;
use crate::archive::layout::{BACKUP_UID_METADATA, BackupOutcome, OUTCOME_STREAM, read_outcome};
use crate::archive::store::{SnapshotStore, StoreError, StoredSnapshot};

/// What earlier attempts of one backup left in the repository (pure): the newest one that
/// recorded its outcome, to adopt, and every other one, to release.
pub fn earlier_attempts<'a>(
    snapshots: &'a [StoredSnapshot],
    uid: &str,
) -> (Option<&'a StoredSnapshot>, Vec<&'a StoredSnapshot>) {
    let mut ours: Vec<&StoredSnapshot> = snapshots
        .iter()
        .filter(|s| s.metadata.get(BACKUP_UID_METADATA).map(String::as_str) == Some(uid))
        .collect();
    ours.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    let adopt = ours
        .iter()
        .rposition(|s| s.streams.iter().any(|stream| stream == OUTCOME_STREAM))
        .map(|at| ours.remove(at));
    (adopt, ours)
}

/// The outcome an earlier attempt of backup `uid` committed, if any; other attempts are released.
pub async fn committed_earlier(
    store: &dyn SnapshotStore,
    uid: &str,
) -> Result<Option<(BackupOutcome, Timestamp)>, BackupError> {
    let repository = |err: StoreError| BackupError::Repository(err.message);
    let snapshots = store.list().await.map_err(repository)?;
    let (adopt, release) = earlier_attempts(&snapshots, uid);
    for extra in release {
        store.release(&extra.id).await.map_err(repository)?;
    }
    let Some(adopt) = adopt else {
        return Ok(None);
    };
    read_outcome(store, &adopt.id)
        .await
        .map(Some)
        .map_err(repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str, created: &str, uid: &str, with_outcome: bool) -> StoredSnapshot {
        crate::backup::sync::stored_snapshot(
            id,
            created,
            &[(BACKUP_UID_METADATA, uid)],
            with_outcome,
        )
    }

    #[test]
    fn a_backup_without_committed_attempts_copies() {
        let snapshots = [snapshot("a", "2026-11-23T10:00:00Z", "other", true)];
        let (adopt, release) = earlier_attempts(&snapshots, "mine");
        assert!(adopt.is_none());
        assert!(
            release.is_empty(),
            "another backup's snapshot is never touched"
        );
    }

    #[test]
    fn the_newest_committed_attempt_is_adopted_and_older_ones_released() {
        let snapshots = [
            snapshot("first", "2026-11-23T10:00:00Z", "mine", true),
            snapshot("other", "2026-11-23T10:30:00Z", "theirs", true),
            snapshot("second", "2026-11-23T11:00:00Z", "mine", true),
        ];
        let (adopt, release) = earlier_attempts(&snapshots, "mine");
        assert_eq!(adopt.map(|s| s.id.as_str()), Some("second"));
        let released: Vec<&str> = release.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(released, ["first"]);
    }

    #[test]
    fn an_attempt_that_did_not_record_its_outcome_is_released_not_adopted() {
        let snapshots = [
            snapshot("complete", "2026-11-23T10:00:00Z", "mine", true),
            snapshot("partial", "2026-11-23T11:00:00Z", "mine", false),
        ];
        let (adopt, release) = earlier_attempts(&snapshots, "mine");
        assert_eq!(adopt.map(|s| s.id.as_str()), Some("complete"));
        assert_eq!(release.len(), 1);
        assert_eq!(release[0].id, "partial");
    }
}
